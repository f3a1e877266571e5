"""The local model store, and `convert`: download → export → fuse → quantize → validate, into one entry.

Entries live in `models/` when run from a checkout, in the user data directory when installed, or in
`$POCKET_NLP_HOME`. An entry is identified by its **content**: the sha256 of every file that changes answers
(weights or an exported graph, config.json, tokenizer and pooling files) — a folder typed on the command line is
resolved to its content every time, so another folder of the same name, retrained weights or edited labels are
never answered by an old conversion. The settings a conversion ran with (`request`) are part of the identity too:
a convert with other settings rebuilds the entry. Folder names hold no `@` (Optimum and transformers read such a
path as a Hub id with a revision), so `fp32/` and `int8/` load in other tools as they are:

  <org>_<name>_<content12>/                     manifest.json  (source, spec, identity, checksums, guard, timings)
                           fp32/model.onnx + config + tokenizer      int8/model.onnx + config + tokenizer

Every entry is validated when it is read (manifest schema, every file present with the size written; sha256 on
load): a damaged entry is listed as damaged with its fix, skipped by lookups of other models and replaced by a
plain `convert`. An entry is built in a hidden `.<name>.partial-<pid>-*` folder and renamed into place when
complete; a lock file stops two conversions of one model at once. Leftovers of killed conversions (partials,
swapped-out folders, stale locks of dead processes) are removed at the next store access. The modules:

  identity   content digests (sha256, remembered by stat) and folder names
  entries    StoreEntry, validation, find / list / delete
  results    what bench and eval measured, kept with the entry
  leftovers  crash-safe cleanup and the conversion lock
  convert    the conversion itself
"""

from app.core.store.convert import FUSED_OPS, ConvertConfig, convert
from app.core.store.entries import (LAYOUT, StoreEntry, delete_entry, find_entry, list_entries, load_entry, store_root,
                                    verify_entry)
from app.core.store.identity import Hashes, content_id, entry_dirname
from app.core.store.leftovers import clean_leftovers
from app.core.store.results import latest_evaluation, load_results, machine_summary, save_result

__all__ = ["FUSED_OPS", "LAYOUT", "ConvertConfig", "Hashes", "StoreEntry", "clean_leftovers", "content_id", "convert",
           "delete_entry", "entry_dirname", "find_entry", "latest_evaluation", "list_entries", "load_entry",
           "load_results", "machine_summary", "save_result", "store_root", "verify_entry"]
