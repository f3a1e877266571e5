"""How long the bundled app takes from launch to an interactive main window (target: under 2 s).

    xvfb-run -a -s "-screen 0 1280x800x24" python packaging/measure_startup.py [--runs 5] [--exe dist/PocketNLP/PocketNLP]
    python packaging/measure_startup.py --checkout    # the same measurement for `python -m app`, to compare

Each run starts the executable with POCKET_NLP_STARTUP_PROBE=1 and a fresh, empty store and settings. The app
(app/gui/__init__.py) shows its window and, on the first turn of the event loop after that (the window is up
and answering input), prints `POCKET_NLP_INTERACTIVE <unix time>` and quits. The figure is wall clock from
launch to that time: it includes the bootloader unpacking nothing (one-folder bundle), the interpreter start,
imports and the first paint. The first run is reported apart: it is the one that reads the files from disk when
the OS cache may be cold; the median covers the runs after it. `--cold N` adds N starts with the bundle's files
evicted from the page cache first (what a first start after boot reads from disk; system libraries stay cached).
Uses $DISPLAY when set, else Qt's offscreen platform.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXE = ROOT / "dist" / "PocketNLP" / ("PocketNLP.exe" if sys.platform == "win32" else "PocketNLP")


def one_run(cmd: list[str]) -> float:
    env = dict(os.environ, POCKET_NLP_STARTUP_PROBE="1", HF_HUB_OFFLINE="1")
    if not env.get("DISPLAY") and sys.platform.startswith("linux"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    with tempfile.TemporaryDirectory(prefix="pocket-startup-") as home:
        env.update(POCKET_NLP_HOME=str(Path(home) / "store"), XDG_CONFIG_HOME=str(Path(home) / "config"),
                   HF_HOME=str(Path(home) / "hf"))
        start = time.time()
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("POCKET_NLP_INTERACTIVE")]
    if not lines:
        raise SystemExit(f"{cmd[0]} did not report an interactive window (exit {out.returncode}); is the start-up "
                         f"probe in app/gui/__init__.py?\n{out.stderr[-2000:]}")
    return float(lines[0].split()[1]) - start


def evict(folder: Path) -> None:
    """Drop the folder's files from the OS page cache (Linux; no root needed for unmodified files), so the next
    start reads them from disk as a first start after boot would."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs after the first (default 5)")
    parser.add_argument("--exe", default=str(DEFAULT_EXE), help="the bundled executable")
    parser.add_argument("--checkout", action="store_true", help="measure `python -m app` from this checkout instead")
    parser.add_argument("--cold", type=int, default=0, metavar="N",
                        help="also N cold starts: the bundle's files evicted from the page cache first (Linux)")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "app"] if args.checkout else [args.exe]
    if not args.checkout and not Path(args.exe).is_file():
        raise SystemExit(f"No {args.exe}: build it first (python packaging/build.py).")
    first = one_run(cmd)
    times = [one_run(cmd) for _ in range(args.runs)]
    where = f"X display {os.environ['DISPLAY']}" if os.environ.get("DISPLAY") else "offscreen"
    what = "python -m app" if args.checkout else Path(args.exe).name + " (bundle)"
    print(f"{what} → interactive window ({where}, {os.cpu_count()} CPUs): first run {first:.2f} s; next {args.runs}: "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s (target < 2 s)")
    if args.cold and not args.checkout and hasattr(os, "posix_fadvise"):
        cold = []
        for _ in range(args.cold):
            evict(Path(args.exe).resolve().parent)
            cold.append(one_run(cmd))
        print(f"cold starts (bundle evicted from the page cache, {args.cold} runs): median "
              f"{statistics.median(cold):.2f} s, max {max(cold):.2f} s")
        times += cold
    return 0 if statistics.median(times) < 2.0 else 1


if __name__ == "__main__":
    sys.exit(main())
