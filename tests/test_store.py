"""A store you can trust: entries identified by content, validated when read, crash-safe, and the CLI's contract.

One test per defect found by trying the store as a user would (issue 14); each failed on the code before it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.core.errors import DamagedEntryError, UnsupportedModelError
from app.core.quantize import QuantizeConfig
from app.core.store import (ConvertConfig, clean_leftovers, convert, find_entry, list_entries, load_entry,
                            load_results, store_root)

FAST = ConvertConfig(force=QuantizeConfig())  # no guard search: these tests are about the store


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _cli(*args, cwd=None, env=None, stdin=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, input=stdin, timeout=timeout)


def _entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != ".hashes.json")


@pytest.fixture()
def root(tmp_path):
    return tmp_path / "store"


@pytest.fixture()
def bert(tiny_models, tmp_path):
    """A private copy of a tiny classifier, free to edit."""
    return _copy(tiny_models("bert", "sequence-classification"), tmp_path / "a" / "model")


# --- identity by content ---------------------------------------------------------------------------------------

def test_another_folder_of_the_same_name_is_not_answered_by_the_old_entry(bert, tiny_models, tmp_path, root):
    first = convert(str(bert), FAST, root=root)
    other = _copy(tiny_models("distilbert", "sequence-classification"), tmp_path / "b" / "model")
    assert find_entry(str(other), root) is None  # same basename, other content: not converted yet
    second = convert(str(other), FAST, root=root)
    assert second.path != first.path and second.manifest["spec"]["model_type"] == "distilbert"
    assert find_entry(str(bert), root).path == first.path and find_entry(str(other), root).path == second.path
    assert "@" not in first.path.name and "--" not in first.path.name  # loads in Optimum as a plain path


def test_edited_labels_or_retrained_weights_make_a_new_entry_and_mark_the_old_one_stale(bert, root):
    first = convert(str(bert), FAST, root=root)
    config = json.loads((bert / "config.json").read_text())
    config["id2label"] = {k: v.lower() for k, v in config["id2label"].items()} | {"1": "good"}
    (bert / "config.json").write_text(json.dumps(config))
    assert find_entry(str(bert), root) is None
    second = convert(str(bert), FAST, root=root)
    assert second.path != first.path
    assert json.loads((second.fp32_dir / "config.json").read_text())["id2label"]["1"] == "good"
    stale = {e.path: e.stale for e in list_entries(root)}
    assert "changed since it was converted" in stale[first.path] and stale[second.path] == ""


def test_other_conversion_settings_rebuild_the_entry(bert, root):
    first = convert(str(bert), FAST, root=root)
    other = convert(str(bert), ConvertConfig(force=QuantizeConfig(reduce_range=True)), root=root)
    assert other.path == first.path and other.manifest["request"] != first.manifest["request"]
    assert other.manifest["identity"]["settings"] != first.manifest["identity"]["settings"]


def test_an_entry_checked_on_another_kind_of_cpu_is_stale_and_converts_again(bert, root, monkeypatch):
    """INT8 chosen where u8×s8 products saturate (x86 without VNNI) or where they do not holds only there."""
    from app.core import cpu

    first = convert(str(bert), FAST, root=root)
    assert first.int8_dir is not None and first.manifest["quantization"]["int8_path"] == cpu.int8_path()
    here = cpu.u8s8_saturates()
    monkeypatch.setattr(cpu, "u8s8_saturates", lambda: not here)  # the store copied to another machine
    stale = {e.path: e.stale for e in list_entries(root)}
    assert "its INT8 was checked on a CPU whose INT8 path is " + cpu.int8_path() in stale[first.path]
    again = convert(str(bert), FAST, root=root)  # not reused: converted for this CPU
    assert again.manifest["request"]["u8s8_saturates"] is (not here) and list_entries(root)[0].stale == ""


# --- damaged entries -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("manifest", ['[]', '{"source": 5}', '{"layout": 2, "spec": {}}', 'not json', "outside"])
def test_a_malformed_manifest_is_listed_as_damaged_and_breaks_nothing_else(bert, tiny_models, root, manifest):
    broken = convert(str(bert), FAST, root=root)
    good = convert(str(tiny_models("electra", "sequence-classification")), FAST, root=root)
    if manifest == "outside":  # a sound shape whose checksums point out of the entry
        data = json.loads((broken.path / "manifest.json").read_text())
        data["checksums"]["fp32/../../../../etc/hostname"] = {"bytes": 1, "sha256": "0" * 64}
        manifest = json.dumps(data)
    (broken.path / "manifest.json").write_text(manifest)
    listed = {e.path: e for e in list_entries(root)}
    assert listed[broken.path].damaged and not listed[good.path].damaged
    assert "convert" in listed[broken.path].summary()
    assert find_entry(str(tiny_models("electra", "sequence-classification")), root).path == good.path
    with pytest.raises(DamagedEntryError, match="damaged"):
        find_entry(broken.path.name, root)
    again = convert(str(bert), FAST, root=root)  # a plain convert replaces it
    assert again.path == broken.path and not load_entry(again.path).damaged


def test_a_truncated_model_file_is_found_and_a_plain_convert_repairs_it(bert, root):
    entry = convert(str(bert), FAST, root=root)
    onnx = entry.int8_dir / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    damaged = load_entry(entry.path)
    assert damaged.damaged and "truncated" in damaged.problem
    assert find_entry(str(bert), root) is None  # skipped: the model is converted again
    repaired = convert(str(bert), FAST, root=root)
    assert not load_entry(repaired.path).damaged and onnx.stat().st_size > 1000


def test_a_changed_file_of_the_same_size_is_caught_by_its_hash(bert, root):
    entry = convert(str(bert), FAST, root=root)
    onnx = entry.int8_dir / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(DamagedEntryError, match="changed since it was written"):
        find_entry(entry.path.name, root)
    assert convert(str(bert), FAST, root=root).path == entry.path  # reuse checks hashes: rebuilt
    assert find_entry(entry.path.name, root) is not None


def test_bench_of_a_broken_model_fails_within_seconds_with_the_childs_reason(bert, root, monkeypatch):
    from app.core.bench import BenchConfig, benchmark
    from app.core.errors import BenchError

    entry = convert(str(bert), FAST, root=root)
    (entry.int8_dir / "model.onnx").write_bytes(b"not a model")
    started = time.monotonic()
    with pytest.raises(BenchError, match="fresh process failed") as info:
        benchmark(entry, BenchConfig(runs=2, seq_len=8))
    assert time.monotonic() - started < 60 and "Traceback" not in str(info.value)


# --- killed conversions ----------------------------------------------------------------------------------------

def test_leftovers_of_a_killed_convert_are_removed_at_the_next_access(bert, root):
    code = ("import sys, time; from pathlib import Path; from app.core import store\n"
            "def slow(p):\n"
            "    if p.stage == 'quantize': print('quantizing', flush=True); time.sleep(600)\n"
            f"store.convert({str(bert)!r}, root=Path({str(root)!r}), progress=slow)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "quantizing"
        assert any(".partial-" in n for n in _entries(root)) and any(n.endswith(".lock") for n in _entries(root))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    listed = _cli("list", env={"POCKET_NLP_HOME": str(root)})
    assert "Removed 2 leftover(s) of interrupted conversions" in listed.stderr and _entries(root) == []
    entry = convert(str(bert), FAST, root=root)
    assert _entries(root) == [entry.path.name]


def test_work_of_a_living_process_is_never_cleaned(root):
    root.mkdir()
    mine = root / f".x_0123.partial-{os.getpid()}-abc"
    mine.mkdir()
    dead = root / ".x_0123.partial-999999999-abc"
    dead.mkdir()
    (dead / "model.onnx").write_bytes(b"x" * 100)
    assert clean_leftovers(root) == (1, 100) and mine.is_dir() and not dead.exists()


# --- sources -----------------------------------------------------------------------------------------------------

def test_a_checkpoint_without_tokenizer_is_refused_before_export_naming_its_folder(bert, root):
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (bert / name).unlink(missing_ok=True)
    with pytest.raises(UnsupportedModelError, match=str(bert)):
        convert(str(bert), FAST, root=root)
    assert not root.exists() or _entries(root) == []


def test_predict_and_bench_accept_an_export_folder(bert, tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "store"))
    out = tmp_path / "exported"
    assert _cli("export", str(bert), "--out", str(out), "-q").returncode == 0
    shutil.rmtree(bert)  # the weights are gone: only the export folder is left
    r = _cli("predict", str(out), "--text", "fine", "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)) >= {"fp32", "int8"} and "Using local_exported_" in r.stderr
    r = _cli("bench", str(out), "--runs", "2", "--seq-len", "8", "--json", "-q")
    assert r.returncode == 0 and json.loads(r.stdout)["int8"] is not None, r.stderr


# --- the CLI's contract ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["bench", "m", "--runs", "0"], ["bench", "m", "--threads", "-1"], ["bench", "m", "--batch", "0"],
    ["bench", "m", "--seq-len", "0"], ["eval", "m", "--data", "x", "--limit", "0"],
    ["convert", "m", "--min-agreement", "1.5"], ["convert", "m", "--min-cosine", "-0.1"],
    ["export", "m", "--out", "o", "--opset", "5"], ["predict", "m", "--text", "t", "--top-k", "0"],
    ["predict", "m", "--text", "t", "--max-answer-len", "0"], ["eval", "m", "--data", "x", "--show", "-1"],
    ["convert", "m", "--min-agreement", "nan"], ["bench", "m", "--runs", "many"],
    ["predict", "m", "--prompt", "p", "--max-new-tokens", "0"], ["predict", "m", "--prompt", "p", "--top-p", "2"],
    ["predict", "m", "--prompt", "p", "--temperature", "-1"], ["predict", "m", "--prompt", "p", "--seed", "-5"]])
def test_out_of_range_numbers_are_usage_errors(args):
    r = _cli(*args, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error:" in r.stderr, r.stderr


def test_no_traceback_unless_debug(monkeypatch, capsys):
    from app import cli

    def boom(args):
        raise RuntimeError("something odd")

    monkeypatch.setattr(cli, "_cmd_list", boom)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Unexpected RuntimeError: something odd" in err and "--debug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError):
        cli.main(["list", "--debug"])


def test_text_from_a_file_stdin_and_invalid_utf8(bert, tmp_path, monkeypatch, capsys):
    from app import cli

    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "store"))
    convert(str(bert), FAST, root=tmp_path / "store")
    long_text = "a fine film " * 20000  # 240 KB: more than a command line holds
    (tmp_path / "t.txt").write_text(long_text, encoding="utf-8")
    r = _cli("predict", str(bert), "--text-file", str(tmp_path / "t.txt"), "--json", "-q")
    assert r.returncode == 0, r.stderr
    r = _cli("predict", str(bert), "--text-file", "-", "--json", "-q", stdin="a fine film")
    assert r.returncode == 0 and json.loads(r.stdout)["fp32"], r.stderr
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    r = _cli("predict", str(bert), "--text-file", str(tmp_path / "bad.txt"), "-q")
    assert r.returncode == 1 and "not valid UTF-8 at byte 3" in r.stderr and "Traceback" not in r.stderr
    assert cli.main(["predict", str(bert), "--text", "caf\udce9", "-q"]) == 1  # a shell passing Latin-1 bytes
    assert "not valid UTF-8" in capsys.readouterr().err


def test_list_delete_and_report_from_the_command_line(bert, tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "store"))
    entry = convert(str(bert), FAST, root=tmp_path / "store")
    data = tmp_path / "d.tsv"
    data.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n")
    r = _cli("eval", str(bert), "--data", str(data), "-q", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"]["evidence"]["your_data"]["examples"] == 2
    assert load_results(entry)["evaluations"][0]["examples"] == 2  # kept with the model
    report = tmp_path / "r.html"
    r = _cli("report", entry.path.name, "--out", str(report), "-q")  # a fresh process: what eval kept
    html = report.read_text()
    assert r.returncode == 0 and "d.tsv" in html and "Check on your data" in html, r.stderr
    assert "only 2 examples were measured" in html and "measured on your data" in html
    r = _cli("list", "--json")
    listed = json.loads(r.stdout)["entries"]
    assert [e["folder"] for e in listed] == [entry.path.name] and listed[0]["status"] == "ok"
    assert "1 converted model" in _cli("list").stdout
    r = _cli("delete", entry.path.name)
    assert r.returncode == 0 and "Deleted" in r.stdout and list_entries(tmp_path / "store") == []
    r = _cli("delete", "nothing-like-it")
    assert r.returncode == 1 and "No converted model" in r.stderr


def test_the_gui_without_a_display_says_what_to_do():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1 and "needs a display" in r.stderr and "--help" in r.stderr, r.stderr


def test_store_root_is_the_environment_one(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "s"))
    assert store_root() == tmp_path / "s"


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    # `python -m app list --json | head -0`: the reader is gone before anything is written
    proc = subprocess.Popen([sys.executable, "-m", "app", "list", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "POCKET_NLP_HOME": str(tmp_path / "s")})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0 and "Traceback" not in err and "Exception ignored" not in err, err
