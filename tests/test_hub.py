"""app.core.hub: model references, the HF cache, offline behaviour and real downloads from a local fake Hub.

Layer 1 lays models into a temporary HF cache and resolves them offline / with an unreachable Hub.
Layer 2 downloads through huggingface_hub from `hubfixtures.FakeHub` on 127.0.0.1 (no network).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from app.core import hub
from app.core.errors import (AccessDeniedError, CancelledError, InvalidModelError, ModelNotFoundError, OfflineError,
                             StoreError, UnsupportedModelError)
from app.core.hub import ModelRef, cached_models, resolve, select_files
from hubfixtures import FakeHub, closed_port_url, folder_files, lay_in_cache

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "acme/tiny-bert"


# --------------------------------------------------------------------------------------------------------------
# ModelRef.parse

@pytest.mark.parametrize("text, repo_id, revision", [
    ("acme/tiny-bert", "acme/tiny-bert", None),
    ("  acme/tiny-bert  ", "acme/tiny-bert", None),
    ("acme/tiny-bert@v1.0", "acme/tiny-bert", "v1.0"),
    ("acme/tiny-bert@" + SHA, "acme/tiny-bert", SHA),
    ("acme/tiny-bert@refs/pr/1", "acme/tiny-bert", "refs/pr/1"),
    ("Acme_Labs/Tiny.BERT_v2", "Acme_Labs/Tiny.BERT_v2", None),
    ("bert-base-uncased", "bert-base-uncased", None),
    ("bert-base-uncased@main", "bert-base-uncased", "main"),
    ("https://huggingface.co/acme/tiny-bert", "acme/tiny-bert", None),
    ("https://huggingface.co/acme/tiny-bert/", "acme/tiny-bert", None),
    ("http://huggingface.co/acme/tiny-bert", "acme/tiny-bert", None),
    ("https://www.huggingface.co/acme/tiny-bert", "acme/tiny-bert", None),
    ("huggingface.co/acme/tiny-bert", "acme/tiny-bert", None),
    ("https://hf.co/acme/tiny-bert", "acme/tiny-bert", None),
    ("https://huggingface.co/acme/tiny-bert/tree/main", "acme/tiny-bert", "main"),
    ("https://huggingface.co/acme/tiny-bert/tree/" + SHA, "acme/tiny-bert", SHA),
    ("https://huggingface.co/acme/tiny-bert/tree/v2/onnx", "acme/tiny-bert", "v2"),
    ("https://huggingface.co/acme/tiny-bert/tree/refs%2Fpr%2F3", "acme/tiny-bert", "refs/pr/3"),
    ("https://huggingface.co/acme/tiny-bert/blob/main/config.json", "acme/tiny-bert", "main"),
    ("https://huggingface.co/acme/tiny-bert/resolve/abc1234/model.safetensors", "acme/tiny-bert", "abc1234"),
    ("https://huggingface.co/acme/tiny-bert?library=transformers", "acme/tiny-bert", None),
    ("https://huggingface.co/acme/tiny-bert#model-card", "acme/tiny-bert", None),
    ("https://huggingface.co/bert-base-uncased", "bert-base-uncased", None),
])
def test_parse_hub_refs(text, repo_id, revision):
    ref = ModelRef.parse(text)
    assert (ref.repo_id, ref.revision, ref.path, ref.is_local) == (repo_id, revision, None, False)
    assert ref.text == text.strip()


@pytest.mark.parametrize("text", [
    "", "   ", "acme/tiny/bert", "acme//tiny", "acme/tiny-bert@", "acme/..", "acme/a--b", "-acme/x", "acme/x.",
    "https://huggingface.co/datasets/acme/corpus", "https://huggingface.co/spaces/acme/demo",
    "https://huggingface.co/models?search=bert", "https://example.com/acme/tiny-bert",
    "https://huggingface.co/acme/tiny-bert/discussions/1", "./no-such-folder", "/no/such/folder", "~/no-such-folder",
    "acme/" + "x" * 100, "acme tiny", "acme/tiny bert",
])
def test_parse_rejects_bad_refs(text):
    with pytest.raises(ModelNotFoundError) as info:
        ModelRef.parse(text)
    assert str(info.value)


def test_parse_local_folders(tmp_path, monkeypatch):
    folder = tmp_path / "my model"
    folder.mkdir()
    for text in (str(folder), str(folder) + "/", f"{tmp_path}/./my model"):
        ref = ModelRef.parse(text)
        assert ref.is_local and ref.path == folder.resolve() and ref.repo_id is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "acme" / "tiny-bert").mkdir(parents=True)
    assert ModelRef.parse("acme/tiny-bert").path == (tmp_path / "acme" / "tiny-bert").resolve()  # a folder wins
    assert ModelRef.parse("./my model").path == folder.resolve()
    (tmp_path / "bert-base-uncased").write_text("not a folder")
    with pytest.raises(InvalidModelError, match="is a file"):
        ModelRef.parse("bert-base-uncased")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ModelRef.parse("~/my model").path == folder.resolve()


def test_label_and_import_is_cheap():
    assert ModelRef.parse("acme/x@v1").label == "acme/x@v1" and ModelRef.parse("acme/x").label == "acme/x"
    import subprocess
    import sys
    code = "import sys, app.core.hub; print('huggingface_hub' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------------------------
# select_files: decided from the listing, before anything is downloaded

def test_select_files_keeps_only_what_a_conversion_needs():
    listing = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
               "onnx/model.onnx", "README.md", ".gitattributes", "tokenizer.json", "vocab.txt",
               "tokenizer_config.json", "special_tokens_map.json", "training_args.bin", "modules.json",
               "1_Pooling/config.json", "coreml/model.mlmodel"]
    assert select_files(listing) == ["model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                     "special_tokens_map.json", "vocab.txt", "modules.json", "1_Pooling/config.json",
                                     "config.json"]
    sharded = ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "pytorch_model.bin.index.json"]
    assert select_files(sharded) == ["model.safetensors.index.json", "config.json"]  # shards come from the index


@pytest.mark.parametrize("listing, match", [
    (["config.json", "pytorch_model.bin", "vocab.txt"], "pickle"),
    (["config.json", "pytorch_model.bin.index.json", "pytorch_model-00001-of-00002.bin"], "pickle"),
    (["config.json", "tf_model.h5"], "TensorFlow/Flax"),
    (["config.json", "flax_model.msgpack"], "TensorFlow/Flax"),
    (["config.json", "README.md"], "no model.safetensors"),
    (["model.safetensors"], "no config.json"),
])
def test_select_files_refuses(listing, match):
    with pytest.raises(UnsupportedModelError, match=match):
        select_files(listing, where="acme/x")


# --------------------------------------------------------------------------------------------------------------
# Layer 1: a model laid into a temporary HF cache

@pytest.fixture
def cache(monkeypatch, tmp_path) -> Path:
    path = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def bert_files(tiny_models) -> dict[str, bytes]:
    return folder_files(tiny_models("bert", "sequence-classification"))


def _unreachable(monkeypatch, endpoint: str | None = None) -> None:
    """Online as far as huggingface_hub knows, but the Hub endpoint refuses connections."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once, at import
    monkeypatch.setenv("HF_ENDPOINT", endpoint or closed_port_url())


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub.hub_cache_dir() == tmp_path / "c"


@pytest.mark.parametrize("text", [REPO, f"{REPO}@main", f"{REPO}@{SHA}", f"{REPO}@{SHA[:7]}", f"{REPO}@v1",
                                  f"https://huggingface.co/{REPO}", f"https://huggingface.co/{REPO}/tree/{SHA}",
                                  f"https://huggingface.co/{REPO}/tree/v1"])
def test_offline_mode_uses_the_cache(cache, bert_files, text):
    snapshot = lay_in_cache(cache, REPO, bert_files, sha=SHA, refs=("main", "v1"))
    source = resolve(text)
    assert source.path == snapshot and source.revision == SHA
    assert source.weight_files == (snapshot / "model.safetensors",)
    assert source.name == REPO and source.ref.text == text
    assert "HF_HUB_OFFLINE" in source.notice and f"{REPO}" in source.notice and SHA[:7] in source.notice


def test_offline_mode_without_a_cached_copy(cache, bert_files):
    lay_in_cache(cache, REPO, bert_files, sha=SHA)
    for text in ("acme/other", f"{REPO}@v9", f"{REPO}@{'f' * 40}"):
        with pytest.raises(OfflineError, match="HF_HUB_OFFLINE") as info:
            resolve(text)
        assert isinstance(info.value, ConnectionError) and str(cache) in str(info.value)


def test_offline_mode_ignores_an_interrupted_download(cache, bert_files):
    without_weights = {k: v for k, v in bert_files.items() if k != "model.safetensors"}
    lay_in_cache(cache, REPO, without_weights, sha=SHA)
    lay_in_cache(cache, "acme/no-config", {k: v for k, v in bert_files.items() if k != "config.json"})
    for text in (REPO, "acme/no-config"):
        with pytest.raises(OfflineError):
            resolve(text)


def test_offline_mode_refuses_a_cached_pickle(cache, bert_files):
    files = {k: v for k, v in bert_files.items() if k != "model.safetensors"} | {"pytorch_model.bin": b"pickle"}
    lay_in_cache(cache, REPO, files, sha=SHA)
    with pytest.raises(UnsupportedModelError, match="pickle"):
        resolve(REPO)


def test_unreachable_hub_uses_the_cached_copy(cache, bert_files, monkeypatch):
    snapshot = lay_in_cache(cache, REPO, bert_files, sha=SHA, symlinks=False)
    _unreachable(monkeypatch)
    source = resolve(f"https://huggingface.co/{REPO}")
    assert source.path == snapshot and source.revision == SHA
    assert source.notice == ("The Hub cannot be reached; using the copy of acme/tiny-bert in your Hugging Face cache "
                             "(revision 0123456).")


def test_unreachable_hub_without_a_cached_copy(cache, monkeypatch):
    _unreachable(monkeypatch)
    with pytest.raises(OfflineError, match="cannot be reached") as info:
        resolve(REPO)
    message = str(info.value)
    assert REPO in message and "internet connection" in message and "cannot connect to http://127.0.0.1" in message
    assert info.value.__cause__ is not None  # translated at the boundary, cause kept


def test_cached_models_lists_what_we_can_convert(cache, bert_files):
    assert cached_models() == []  # no cache folder yet
    lay_in_cache(cache, REPO, bert_files, sha=SHA, refs=("main",))
    lay_in_cache(cache, "acme/pickle", {"config.json": b"{}", "pytorch_model.bin": b"x"})
    lay_in_cache(cache, "acme/partial", {"config.json": b"{}", "model.safetensors.index.json":
                                         b'{"weight_map": {"a": "model-00001-of-00002.safetensors"}}'})
    lay_in_cache(cache, "acme/no-config", {"model.safetensors": b"x"})
    dataset = cache / "datasets--acme--corpus" / "snapshots" / SHA
    dataset.mkdir(parents=True)
    (dataset / "config.json").write_text("{}")
    (dataset / "model.safetensors").write_text("x")
    (cache / "not-a-repo").mkdir()
    models = cached_models()
    assert [(m.repo_id, m.revision, m.refs) for m in models] == [(REPO, SHA, ("main",))]
    assert models[0].path == cache / "models--acme--tiny-bert" / "snapshots" / SHA
    assert models[0].size == sum(len(v) for v in bert_files.values())
    assert cached_models(cache) == models


# --------------------------------------------------------------------------------------------------------------
# Layer 2: real downloads through huggingface_hub from a fake Hub on 127.0.0.1

@pytest.fixture
def fake_hub(cache, monkeypatch):
    server = FakeHub()
    _unreachable(monkeypatch, server.url)
    yield server
    server.stop()


def _events():
    seen = []
    return seen, seen.append


def test_download_fetches_only_what_is_needed(fake_hub, bert_files, cache):
    extra = {"pytorch_model.bin": b"pickle" * 1000, "tf_model.h5": b"h5" * 1000, "README.md": b"# tiny",
             "onnx/model.onnx": b"onnx" * 100}
    sha = fake_hub.add(REPO, bert_files | extra)
    events, progress = _events()
    source = resolve(REPO, progress=progress)
    assert source.revision == sha and source.notice == ""
    assert source.path == cache / "models--acme--tiny-bert" / "snapshots" / sha
    assert source.weight_files == (source.path / "model.safetensors",)
    assert sorted(fake_hub.downloads()) == sorted(bert_files)  # no .bin, .h5, README or onnx/
    assert sorted(p.name for p in source.path.iterdir()) == sorted(bert_files)
    for name, data in bert_files.items():
        assert (source.path / name).read_bytes() == data
    assert (cache / "models--acme--tiny-bert" / "refs" / "main").read_text() == sha
    # progress: bytes, one stage, monotone, ending at the sum of the needed files' sizes
    total = sum(len(v) for v in bert_files.values())
    assert {(e.stage, e.unit) for e in events} == {("download", "B")}
    counted = [e for e in events if e.total is not None]
    assert all(e.total == total for e in counted) and counted[-1].done == total
    assert [e.done for e in counted] == sorted(e.done for e in counted)
    assert any("model.safetensors" in e.message for e in events)
    # second time: from the cache, no file bodies fetched again
    fake_hub.requests.clear()
    again = resolve(REPO)
    assert again.path == source.path and again.revision == sha and fake_hub.downloads() == []
    assert [m.repo_id for m in cached_models()] == [REPO]


def test_download_a_revision_and_a_url(fake_hub, bert_files, cache):
    old = fake_hub.add(REPO, bert_files, revision="v1")
    new = fake_hub.add(REPO, bert_files | {"vocab.txt": b"[PAD]\n[UNK]\nchanged\n"})
    assert resolve(f"{REPO}@v1").revision == old
    assert (cache / "models--acme--tiny-bert" / "refs" / "v1").read_text() == old
    assert resolve(f"https://huggingface.co/{REPO}/tree/main").revision == new
    assert resolve(f"{REPO}@{old}").path.name == old
    assert not (cache / "models--acme--tiny-bert" / "refs" / old).exists()  # a sha is not a ref
    assert {m.revision for m in cached_models()} == {old, new}


def test_download_sharded_safetensors(fake_hub, bert_files):
    import json
    shards = {"model-00001-of-00002.safetensors": b"a" * 3000, "model-00002-of-00002.safetensors": b"b" * 2000}
    index = json.dumps({"metadata": {"total_size": 5000}, "weight_map": {
        "embeddings.weight": "model-00001-of-00002.safetensors", "encoder.weight": "model-00002-of-00002.safetensors",
        "pooler.weight": "model-00002-of-00002.safetensors"}}).encode()
    files = {k: v for k, v in bert_files.items() if k != "model.safetensors"}
    files |= shards | {"model.safetensors.index.json": index, "pytorch_model-00001-of-00002.bin": b"x" * 9000}
    fake_hub.add(REPO, files)
    events, progress = _events()
    source = resolve(REPO, progress=progress)
    assert [p.name for p in source.weight_files] == sorted(shards)
    assert sorted(fake_hub.downloads()) == sorted(files.keys() - {"pytorch_model-00001-of-00002.bin"})
    assert events[-1].done == events[-1].total == sum(len(v) for k, v in files.items() if not k.endswith(".bin"))


def test_download_refuses_pickle_and_tf_only_repos(fake_hub, bert_files):
    no_weights = {k: v for k, v in bert_files.items() if k != "model.safetensors"}
    fake_hub.add("acme/pickle", no_weights | {"pytorch_model.bin": b"x"})
    fake_hub.add("acme/tf", no_weights | {"tf_model.h5": b"x"})
    with pytest.raises(UnsupportedModelError, match="never loads pickles"):
        resolve("acme/pickle")
    with pytest.raises(UnsupportedModelError, match="TensorFlow/Flax"):
        resolve("acme/tf")
    assert fake_hub.downloads() == []  # refused from the listing alone


def test_pickle_only_repo_uses_the_conversion_bots_pull_request(fake_hub, bert_files):
    no_weights = {k: v for k, v in bert_files.items() if k != "model.safetensors"}
    fake_hub.add("acme/old", no_weights | {"pytorch_model.bin": b"never read"})
    fake_hub.add_pull_request("acme/old", no_weights | {"pytorch_model.bin": b"x"}, author="someone")  # not the bot
    num = fake_hub.add_pull_request("acme/old", bert_files | {"pytorch_model.bin": b"x"})
    source = resolve("acme/old")
    assert f"pull request #{num}" in source.notice and "Nothing was unpickled" in source.notice
    assert [p.name for p in source.weight_files] == ["model.safetensors"]
    assert "pytorch_model.bin" not in fake_hub.downloads()
    assert source.revision == fake_hub.repos["acme/old"].refs[f"refs/pr/{num}"]
    fake_hub.add("acme/older", no_weights | {"pytorch_model.bin": b"x"})  # no pull request: still refused
    with pytest.raises(UnsupportedModelError, match="never loads pickles"):
        resolve("acme/older")


def test_missing_repo_and_revision(fake_hub, bert_files):
    fake_hub.add(REPO, bert_files)
    with pytest.raises(ModelNotFoundError, match="not found on the Hub") as info:
        resolve("acme/nope")
    assert info.value.__cause__ is not None and "RepositoryNotFoundError" in type(info.value.__cause__).__name__
    with pytest.raises(ModelNotFoundError, match="no revision 'v9'"):
        resolve(f"{REPO}@v9")


def test_gated_private_and_bad_token(fake_hub, bert_files):
    fake_hub.add("acme/gated", bert_files, access="gated")
    fake_hub.add("acme/private", bert_files, access="private")
    with pytest.raises(AccessDeniedError, match="accept its licence") as info:
        resolve("acme/gated")
    assert "huggingface-cli login" in str(info.value) and isinstance(info.value, PermissionError)
    with pytest.raises(ModelNotFoundError, match="private model, log in"):
        resolve("acme/private")  # the Hub answers 401 RepoNotFound: it will not say whether the repo exists
    fake_hub.reject_token = True
    with pytest.raises(AccessDeniedError, match="HTTP 401"):
        resolve(REPO, token="hf_wrong")


def test_cancel_mid_file_leaves_no_complete_snapshot(fake_hub, bert_files, cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    fake_hub.chunk_size = 4096
    sha = fake_hub.add(REPO, bert_files)
    cancel = threading.Event()
    events = []

    def progress(event):
        events.append(event)
        if "model.safetensors" in event.message and event.done > 0:
            cancel.set()  # the first chunk of the weights has arrived

    with pytest.raises(CancelledError):
        resolve(REPO, progress=progress, cancel=cancel)
    assert events[-1].done < len(bert_files["model.safetensors"])  # stopped part-way through the file
    repo = cache / "models--acme--tiny-bert"
    assert not list(repo.rglob("*.incomplete"))
    assert not (repo / "refs" / "main").exists() and not (repo / "snapshots" / sha / "config.json").exists()
    assert not (repo / "snapshots" / sha / "model.safetensors").exists()
    assert cached_models() == []
    fake_hub.stop()
    with pytest.raises(OfflineError):  # the partial download is not mistaken for a cached copy
        resolve(REPO)


def test_cancel_before_and_between_files_then_resume(fake_hub, bert_files):
    fake_hub.add(REPO, bert_files)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        resolve(REPO, cancel=cancel)
    assert fake_hub.requests == []
    cancel.clear()

    def progress(event):
        if event.message == "Downloading tokenizer.json":
            cancel.set()  # after the weights, before the tokenizer

    with pytest.raises(CancelledError):
        resolve(REPO, progress=progress, cancel=cancel)
    weights_fetched = fake_hub.downloads()
    assert "model.safetensors" in weights_fetched and "config.json" not in weights_fetched
    fake_hub.requests.clear()
    source = resolve(REPO)  # resumes: the weights are not fetched again
    assert "model.safetensors" not in fake_hub.downloads() and "config.json" in fake_hub.downloads()
    assert source.weight_files[0].read_bytes() == bert_files["model.safetensors"]


def test_server_dying_falls_back_to_the_cache(fake_hub, bert_files):
    sha = fake_hub.add(REPO, bert_files)
    fake_hub.add("acme/other", bert_files)
    first = resolve(REPO)
    fake_hub.stop()
    source = resolve(REPO)
    assert source.path == first.path and source.revision == sha
    assert source.notice.startswith("The Hub cannot be reached; using the copy of acme/tiny-bert")
    with pytest.raises(OfflineError, match="acme/other is not in your Hugging Face cache"):
        resolve("acme/other")


def test_hub_down_answers_503(fake_hub, bert_files):
    fake_hub.add(REPO, bert_files)
    first = resolve(REPO)
    fake_hub.status = 503
    source = resolve(REPO)
    assert source.path == first.path and "cannot be reached" in source.notice
    with pytest.raises(OfflineError, match="HTTP 503"):
        resolve("acme/other")


def test_full_disk(fake_hub, bert_files, cache, monkeypatch):
    import errno

    import huggingface_hub.file_download

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    fake_hub.add(REPO, bert_files)
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", no_space)
    with pytest.raises(StoreError, match="No space left on device.*HF_HUB_CACHE") as info:
        resolve(REPO)
    assert isinstance(info.value, OSError) and info.value.__cause__ is not None
    assert not list(cache.rglob("*.incomplete"))
