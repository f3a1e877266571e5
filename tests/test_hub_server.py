"""Downloads from a real Hub server: olah, a self-hosted Hugging Face mirror, serving git repos offline.

What `tests/test_hub.py` checks against the hand-written FakeHub, checked here against olah's own answers
(resolve routes, HEAD metadata, chunked bodies, no Range support) behind `olahfixtures.OlahHub`: progress in real
bytes, a revision, sharded weights, a repo that disappears mid-download, the server killed mid-file (resumed
on restart, or a clean OfflineError, also from the CLI) and cancel. After every failure the HF cache holds no
snapshot that looks complete and the store holds no entry or partial folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from itertools import pairwise
from pathlib import Path

import pytest

from app.core.errors import CancelledError, ModelNotFoundError, OfflineError, PocketError
from app.core.hub import cached_models, resolve
from app.core.quantize import QuantizeConfig
from app.core.store import ConvertConfig, convert, list_entries
from olahfixtures import REPO, SHARDED, make_olah_hub

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def olah(tmp_path_factory, tiny_models):
    hub = make_olah_hub(tmp_path_factory.mktemp("olah"), tiny_models("bert", "sequence-classification"))
    yield hub
    hub.kill()


@pytest.fixture
def hub(olah, tmp_path, monkeypatch):
    """The olah server as HF_ENDPOINT, online, with an empty HF cache of this test's own and 4 KiB chunks."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # read once, at import
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 4096)  # progress every 4 KiB
    monkeypatch.setenv("HF_ENDPOINT", olah.url)
    if not olah.running:
        olah.start()
    olah.requests.clear()
    olah.sent.clear()
    olah.chunk_size, olah.chunked, olah.kill_at = 4096, True, None
    yield olah
    olah.chunked, olah.kill_at = True, None
    if not olah.running:
        olah.start()


def _needed(files: dict[str, bytes]) -> dict[str, bytes]:
    """What a conversion downloads: everything but the README and the pickle."""
    return {k: v for k, v in files.items() if k not in ("README.md", "pytorch_model.bin")}


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "hf" / "hub"


def _assert_nothing_half_written(cache: Path, repo_id: str, store: Path | None = None) -> None:
    """No snapshot that looks complete, no partial blob, no ref, no dangling link; no entry or partial folder in the
    store (if given)."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    assert not list(repo.glob("snapshots/*/config.json")), "a snapshot looks complete"
    assert not list(repo.rglob("*.incomplete")), "a partial blob was left in the HF cache"
    assert not (repo / "refs").exists() or not list((repo / "refs").rglob("*"))
    for link in repo.glob("snapshots/*/**/*"):
        assert link.is_dir() or link.exists(), f"{link} points at a missing blob"
    assert cached_models(cache) == []
    if store is not None:
        kept = [p.name for p in store.iterdir() if p.is_dir()] if store.exists() else []
        assert kept == [] and list_entries(store) == [], f"the store kept {kept}"


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "Traceback" not in text
    assert isinstance(error, PocketError)
    return text


def _offline_finds_nothing(monkeypatch, repo_id: str) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="not in your Hugging Face cache"):
        resolve(repo_id)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")


def _retry_pause(monkeypatch, seconds: float) -> None:
    """huggingface_hub sleeps 1 s before each of its 5 retries of a cut download: less when the server stays dead,
    more when it comes back (olah takes about a second to start, longer on a busy machine)."""
    import huggingface_hub.file_download as fd

    class Time:
        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(_):
            time.sleep(seconds)

    monkeypatch.setattr(fd, "time", Time())


# --------------------------------------------------------------------------------------------------------------

def test_download_reports_real_bytes(hub, tmp_path):
    files = _needed(hub.commits[REPO][-1])
    events = []
    source = resolve(REPO, progress=events.append)
    assert source.revision == hub.shas[REPO][-1] and source.notice == ""
    assert source.path == _cache(tmp_path) / "models--acme--tiny-bert" / "snapshots" / source.revision
    assert sorted(p.name for p in source.path.iterdir()) == sorted(files)
    for name, data in files.items():
        assert (source.path / name).read_bytes() == data, name
    assert sorted(hub.downloads()) == sorted(files)  # neither the README nor the pickle
    # progress: bytes of one stage, monotone, per 4 KiB chunk, ending exactly at the needed files' sizes
    total = sum(len(v) for v in files.values())
    assert {(e.stage, e.unit) for e in events} == {("download", "B")}
    counted = [e for e in events if e.total is not None]
    assert {e.total for e in counted} == {total} and counted[-1].done == total
    assert [e.done for e in counted] == sorted(e.done for e in counted)
    during = [e.done for e in counted if e.message == f"Downloading {WEIGHTS}"]
    assert len(during) >= len(files[WEIGHTS]) // 4096 and 0 < during[0] < len(files[WEIGHTS])
    # again: the cache answers, no file body is fetched twice
    hub.requests.clear()
    again = resolve(REPO)
    assert again.path == source.path and hub.downloads() == []
    assert [m.repo_id for m in cached_models()] == [REPO]


def test_a_revision_a_short_sha_a_pull_request_and_a_url(hub, tmp_path):
    v1, v2 = hub.shas[REPO]
    old = resolve(f"{REPO}@v1")
    assert old.revision == v1 and "pocket_revision" not in json.loads((old.path / "config.json").read_text())
    assert (_cache(tmp_path) / "models--acme--tiny-bert" / "refs" / "v1").read_text() == v1
    assert resolve(f"{REPO}@{v1[:10]}").path == old.path
    assert resolve(f"{REPO}@refs/pr/1").path == old.path  # a pull request's ref, as the Hub's conversion bot opens
    assert (_cache(tmp_path) / "models--acme--tiny-bert" / "refs" / "refs" / "pr" / "1").read_text() == v1
    new = resolve(f"https://huggingface.co/{REPO}/tree/main")
    assert new.revision == v2 and json.loads((new.path / "config.json").read_text())["pocket_revision"] == 2
    assert {m.revision for m in cached_models()} == {v1, v2}
    with pytest.raises(ModelNotFoundError) as info:
        resolve(f"{REPO}@no-such-branch")
    assert "has no revision 'no-such-branch'" in _one_line(info.value)
    with pytest.raises(ModelNotFoundError) as info:
        resolve("acme/no-such-model")
    assert "acme/no-such-model was not found on the Hub" in _one_line(info.value)


def test_sharded_weights_download_and_convert(hub, tmp_path):
    files = hub.commits[SHARDED][0]
    events = []
    entry = convert(SHARDED, ConvertConfig(force=QuantizeConfig()), progress=events.append, root=tmp_path / "store")
    source = resolve(SHARDED)  # from the cache now
    shards = sorted(n for n in files if n.startswith("model-0000"))
    assert [p.name for p in source.weight_files] == shards
    assert all(p.read_bytes() == files[p.name] for p in source.weight_files)
    downloads = [e for e in events if e.stage == "download" and e.total is not None]
    assert downloads[-1].done == downloads[-1].total == sum(len(v) for v in files.values())
    assert sorted(hub.downloads()) == sorted(files)
    assert entry.revision == hub.shas[SHARDED][0] and (entry.fp32_dir / "model.onnx").is_file()
    assert [e.path for e in list_entries(tmp_path / "store")] == [entry.path]


def test_repo_disappearing_mid_download(hub, tmp_path, monkeypatch):
    repo_id = "acme/vanishing"
    files = hub.commits[REPO][0]
    hub.add(repo_id, [files])
    gone = tmp_path / "gone"

    def progress(event):
        if event.message == f"Downloading {WEIGHTS}" and event.done > 0 and not gone.exists():
            shutil.move(str(hub.repo_path(repo_id)), gone)  # deleted on the server while its weights stream

    store = tmp_path / "store"
    with pytest.raises(PocketError) as info:
        convert(repo_id, progress=progress, root=store)
    message = _one_line(info.value)
    assert isinstance(info.value, ModelNotFoundError)
    assert message.startswith(f"A file of {repo_id} disappeared from the Hub during the download. Try again")
    _assert_nothing_half_written(_cache(tmp_path), repo_id, store)
    _offline_finds_nothing(monkeypatch, repo_id)
    shutil.move(str(gone), hub.repo_path(repo_id))  # back: the next try completes
    assert resolve(repo_id).weight_files[0].read_bytes() == files[WEIGHTS]


def test_server_killed_mid_file_resumes_when_it_comes_back(hub, tmp_path, monkeypatch):
    files = _needed(hub.commits[REPO][-1])
    _retry_pause(monkeypatch, 2.5)
    hub.kill_at = (WEIGHTS, 3 * 4096)  # the server dies with 12 KiB of the weights sent
    events = []
    restarted = threading.Event()

    def restart():
        if hub.killed.wait(20):
            time.sleep(0.2)  # down for a moment
            hub.start()
            restarted.set()

    helper = threading.Thread(target=restart)
    helper.start()
    try:
        source = resolve(REPO, progress=events.append)
    finally:
        helper.join(30)
    assert restarted.is_set()
    assert source.weight_files[0].read_bytes() == files[WEIGHTS]
    for name, data in files.items():
        assert hashlib.sha256((source.path / name).read_bytes()).digest() == hashlib.sha256(data).digest(), name
    assert hub.downloads().count(WEIGHTS) == 2  # cut, then fetched again (olah ignores Range: from the start)
    # progress: back to 0 when the file restarts, never counting the cut bytes twice, ending at the total
    counted = [e for e in events if e.total is not None]
    assert counted[-1].done == sum(len(v) for v in files.values())
    during = [e.done for e in counted if e.message == f"Downloading {WEIGHTS}"]  # the weights come first
    assert max(during) == len(files[WEIGHTS]) and any(b < a for a, b in pairwise(during))


def test_server_killed_for_good_mid_file(hub, tmp_path, monkeypatch):
    _retry_pause(monkeypatch, 0.01)
    hub.kill_at = (WEIGHTS, 3 * 4096)
    store = tmp_path / "store"
    with pytest.raises(OfflineError) as info:
        convert(REPO, root=store)
    assert hub.killed.is_set()
    message = _one_line(info.value)
    assert message.startswith(f"The Hugging Face Hub cannot be reached (cannot connect to {hub.url})")
    assert f"{REPO} is not in your Hugging Face cache" in message
    _assert_nothing_half_written(_cache(tmp_path), REPO, store)
    _offline_finds_nothing(monkeypatch, REPO)
    hub.start()
    assert resolve(REPO).weight_files[0].read_bytes() == hub.commits[REPO][-1][WEIGHTS]


def test_server_killed_while_updating_keeps_the_cached_copy(hub, tmp_path, monkeypatch):
    from safetensors.numpy import load, save

    repo_id = "acme/updated"
    first = hub.commits[REPO][0]
    retrained = save({k: v * 2 for k, v in load(first[WEIGHTS]).items()}, metadata={"format": "pt"})
    old, new = hub.add(repo_id, [first, first | {WEIGHTS: retrained}])
    hub.move_ref(repo_id, "main", 0)
    assert resolve(repo_id).revision == old
    hub.move_ref(repo_id, "main", 1)  # a new commit with new weights; it dies part-way through them
    _retry_pause(monkeypatch, 0.01)
    hub.kill_at = (WEIGHTS, 3 * 4096)
    source = resolve(repo_id)
    assert source.revision == old and source.weight_files[0].read_bytes() == first[WEIGHTS]
    assert source.notice == ("The Hub cannot be reached; using the copy of acme/updated in your Hugging Face cache "
                             f"(revision {old[:7]}).")
    repo = _cache(tmp_path) / "models--acme--updated"
    assert not (repo / "snapshots" / new / "config.json").exists() and not list(repo.rglob("*.incomplete"))
    assert [m.revision for m in cached_models()] == [old]


def test_cancel_mid_file_then_download_again(hub, tmp_path, monkeypatch):
    files = _needed(hub.commits[REPO][-1])
    cancel = threading.Event()
    events = []

    def progress(event):
        events.append(event)
        if event.message == f"Downloading {WEIGHTS}" and event.done > 0:
            cancel.set()

    store = tmp_path / "store"
    with pytest.raises(CancelledError) as info:
        convert(REPO, progress=progress, cancel=cancel, root=store)
    assert _one_line(info.value) == "Cancelled by the user; nothing was written."
    assert 0 < events[-1].done < len(files[WEIGHTS])  # stopped part-way through the weights
    _assert_nothing_half_written(_cache(tmp_path), REPO, store)
    _offline_finds_nothing(monkeypatch, REPO)
    events.clear()
    source = resolve(REPO, progress=events.append)
    assert source.weight_files[0].read_bytes() == files[WEIGHTS]
    assert events[-1].done == events[-1].total == sum(len(v) for v in files.values())


def test_a_transfer_cut_short_says_so(hub, tmp_path, monkeypatch):
    hub.chunked = False  # an HTTP/1.0 proxy in between: a cut body just ends early, the file looks short
    hub.kill_at = (WEIGHTS, 3 * 4096)
    with pytest.raises(OfflineError) as info:
        resolve(REPO)
    message = _one_line(info.value)
    _assert_nothing_half_written(_cache(tmp_path), REPO)
    _offline_finds_nothing(monkeypatch, REPO)
    assert not re.search(r"\(\w*(Error|Exception)\)", message), message  # a reason in words, not a class name


def test_cli_server_killed_mid_file_says_one_line(hub, tmp_path):
    hub.kill_at = (WEIGHTS, 3 * 4096)
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(_cache(tmp_path)), "HF_HUB_OFFLINE": "0",
           "POCKET_NLP_HOME": str(tmp_path / "store")}
    run = subprocess.run([sys.executable, "-m", "app", "convert", REPO], cwd=Path(__file__).parents[1], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    said = [line.strip() for line in re.split(r"[\r\n]", run.stderr) if line.strip()]
    said = [line for line in said if not re.match(r"(download|export|optimize|quantize|validate)\b", line)]
    assert len(said) == 1, said
    assert f"The Hugging Face Hub cannot be reached (cannot connect to {hub.url})" in said[0]
    _assert_nothing_half_written(_cache(tmp_path), REPO, tmp_path / "store")
