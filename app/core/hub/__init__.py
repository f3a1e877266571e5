"""Model references → a local folder with config.json, safetensors weights and tokenizer files.

A reference is `org/name`, `org/name@revision`, a Hub URL (`https://huggingface.co/org/name`,
`.../tree/REV`) or a local folder. Hub models go through huggingface_hub into the standard HF cache
(`$HF_HUB_CACHE`, default `~/.cache/huggingface/hub`), fetching only what a conversion needs. The modules:

  refs      what the user typed → ModelRef; what was resolved → ModelSource
  files     which files a conversion needs; the one weight-selection rule; pickle-only refused
  cache     the HF cache and huggingface_hub's settings (offline, cache folder, endpoint)
  download  byte progress, Cancel, the conversion-PR fallback, and `resolve`
  failures  the one boundary where huggingface_hub/httpx failures become our errors
  search    Hub search for the Choose page
"""

from app.core.hub.cache import CachedModel, cached_models, hub_cache_dir, hub_endpoint, hub_offline
from app.core.hub.download import resolve
from app.core.hub.files import (PICKLE_WEIGHTS, POOLING_FILES, SAFETENSORS, SAFETENSORS_INDEX, TOKENIZER_FILES,
                                local_source, select_files, weight_files)
from app.core.hub.refs import ModelRef, ModelSource
from app.core.hub.search import HubModel, search_models

__all__ = ["PICKLE_WEIGHTS", "POOLING_FILES", "SAFETENSORS", "SAFETENSORS_INDEX", "TOKENIZER_FILES", "CachedModel",
           "HubModel", "ModelRef", "ModelSource", "cached_models", "hub_cache_dir", "hub_endpoint",
           "hub_offline", "local_source", "resolve", "search_models", "select_files", "weight_files"]
