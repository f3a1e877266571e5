"""Shared fixtures: offline, isolated Hugging Face environment and tiny models built once per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_MODELS = SHARED / "models"
SHARED_DATA = SHARED / "data"

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def _isolated_hf(tmp_path_factory, monkeypatch):
    """Tests never touch the user's HF cache, token or the network."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path_factory.mktemp("store")))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Factory: tiny_models(family, head) → folder of a tiny random model, built once per session."""
    from tinymodels import make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    cache: dict = {}

    def get(family: str, head: str) -> Path:
        if (family, head) not in cache:
            cache[family, head] = make_tiny_model(root, family, head)
        return cache[family, head]

    return get


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / name
    if not (path / "config.json").is_file():
        pytest.skip(f"real checkpoint {path} is not available (see shared/models/README.md)")
    return path


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"labelled data {path} is not available (see shared/data/README.md)")
    return path
