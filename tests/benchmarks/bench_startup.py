"""How long `python -m app` takes to reach an interactive window (a script, not a test).

    .venv/bin/python tests/benchmarks/bench_startup.py [--runs 5]

Each run starts a fresh `python -m app` with POCKET_NLP_STARTUP_PROBE=1: the app shows its window, and on the
first turn of the event loop (the window is up and answering input) prints a timestamp and which heavy modules
are loaded, then quits. The figure is launch → that timestamp, wall clock, including the interpreter start.
Uses the X display when DISPLAY is set (e.g. under xvfb-run), else Qt's offscreen platform. Target: < 2 s.
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

ROOT = Path(__file__).resolve().parents[2]

import machine  # noqa: E402  (tests/benchmarks/machine.py: CPU model and ISA flags)


def one_run(python: str) -> tuple[float, str]:
    env = dict(os.environ, POCKET_NLP_STARTUP_PROBE="1")
    if not env.get("DISPLAY"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory() as home:
        env.setdefault("POCKET_NLP_HOME", str(Path(home) / "store"))
        env["XDG_CONFIG_HOME"] = str(Path(home) / "config")  # fresh settings: default geometry, no recents
        start = time.time()
        out = subprocess.run([python, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("POCKET_NLP_INTERACTIVE")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"the app did not report being interactive (exit {out.returncode}):\n{out.stderr[-2000:]}")
    parts = lines[0].split()
    return float(parts[1]) - start, (parts[2] if len(parts) > 2 else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    one_run(args.python)  # warm the OS file cache; not counted
    times = []
    heavy = ""
    for _ in range(args.runs):
        seconds, heavy = one_run(args.python)
        times.append(seconds)
    platform = "X display " + os.environ["DISPLAY"] if os.environ.get("DISPLAY") else "offscreen"
    print(f"python -m app → interactive window ({platform}, {os.cpu_count()} CPUs, {args.runs} runs): "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f} s, max {max(times):.2f} s "
          f"(target < 2 s)")
    print(f"heavy modules already imported by then (by background workers; the GUI thread imports none): "
          f"{heavy or 'none'}")
    return 0 if statistics.median(times) < 2.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
