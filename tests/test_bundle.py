"""The double-click bundle: built from a clean copy of the checkout, it passes its own self-test offscreen.

Slow (a PyInstaller build: about 1.5 minutes on 2 cores) and skipped unless PyInstaller is installed
(`pip install -e ".[bundle]"`). The copy holds only the files git tracks, as a fresh clone would (working-tree
contents, so uncommitted edits are tested too), never dist/, build/, models/ or a venv.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("PyInstaller") is None,
                       reason="PyInstaller is not installed (pip install -e '.[bundle]' to test the bundle)"),
    pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(),
                       reason="needs a git checkout to copy the tracked files from"),
]


def clean_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        src = ROOT / name
        if src.is_file():  # a tracked file deleted in the working tree stays out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for name in ("packaging/build.py", "packaging/pocketnlp.spec", "app/selftest.py"):
        assert (dest / name).is_file(), f"{name} is not tracked by git"
    return dest


def test_bundle_builds_and_passes_its_self_test(tmp_path):
    src = clean_copy(tmp_path / "checkout")
    env = {k: v for k, v in os.environ.items() if k not in ("POCKET_NLP_HOME", "DISPLAY", "WAYLAND_DISPLAY")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    build = subprocess.run([sys.executable, "packaging/build.py", "--no-archive"], cwd=src, env=env,
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, f"build failed:\n{build.stdout[-3000:]}\n{build.stderr[-5000:]}"
    bundle = src / "dist" / "PocketNLP"
    exe = bundle / ("PocketNLP.exe" if sys.platform == "win32" else "PocketNLP")
    assert exe.is_file()

    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file() and not f.is_symlink())
    assert size <= 250e6, f"the bundle is {size / 1e6:.0f} MB unpacked; the budget is 250 MB"
    internal = bundle / "_internal"
    for leaked in ("torch", "transformers", "sympy", "tests"):
        assert not (internal / leaked).exists(), f"{leaked} is in the bundle"
    assert not list(bundle.rglob("__pycache__"))
    assert (internal / "resources" / "icon-256.png").is_file()
    assert (internal / "build_info.json").is_file()

    run = subprocess.run([str(exe), "--self-test"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, f"self-test failed:\n{run.stdout}\n{run.stderr[-5000:]}"
    out = run.stdout
    assert "SELF-TEST PASSED" in out
    assert "(bundle built" in out  # it ran frozen, with its version stamp
    assert out.count("FP32:") == 2 and out.count("INT8:") == 2  # one classification, one answer, both precisions
    assert "gui: main window shown" in out
