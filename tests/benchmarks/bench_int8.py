"""Benchmark (not a test): our INT8 against our fused FP32, PyTorch FP32/INT8 and Optimum's avx2 INT8 preset.

Everything is measured in ONE run, on a BERT-base-shaped checkpoint with random weights (built here with
tests/tinymodels.py), batch 1 × sequence 128, 2 threads:

- latency (median and p95 of many runs) of five engines: PyTorch FP32 (transformers), PyTorch dynamic
  INT8 (`torch.ao.quantization.quantize_dynamic` on the Linear layers), our fused FP32 and our INT8 (ONNX
  Runtime, the files `convert` stores), and Optimum's avx2 INT8 preset (ONNX Runtime, the same
  onnxruntime as ours, only the model file differs);
- file sizes, and the resident memory of a loaded session (RSS after session creation minus RSS before,
  each model in a fresh process);
- the wall time of a whole `python -m app convert FOLDER` against Optimum's export + quantize, as whole
  processes.

How latency is measured, and why:
- Each engine runs in its OWN long-lived child process, driven by the parent over a pipe. ONNX Runtime's
  intra-op threads spin after each run and PyTorch's OpenMP threads spin after each parallel region;
  engines sharing one process (or two engines of one library) steal the 2 cores from each other through
  those spinning threads — a MiniLM FP32 looked 46 ms instead of 18 ms that way. Separate processes also
  keep each engine's allocator and thread pools of its own. ORT sessions are created with
  `session.intra_op.allow_spinning = 0` so an idle engine never burns a core, and the parent waits
  `--gap` seconds between blocks so PyTorch's OpenMP spin-wait (short by default) has ended.
- Interleaved in blocks: each round gives every engine one block (2 warm-up runs, then `--runs` timed
  runs); the engine order rotates from round to round. All engines thus see the same machine state, and
  noise from other load on the machine spreads over all of them. The figures are still noisy on a shared
  2-core machine: compare ratios from one run, not absolute numbers across runs.
- The parent imports nothing heavy: Linux counts the parent's RSS at fork in a child's ru_maxrss.

Optimum lives in its own venv (`bash tests/benchmarks/make_optimum_venv.sh`, default /tmp/pocket-optimum-venv)
because optimum[onnxruntime] pins transformers < 4.58; without it the Optimum columns are skipped with a note.
If the accuracy guard keeps a random-weight model in FP32, INT8 is forced with the default QuantizeConfig and
the output says so. Usage:

    .venv/bin/python tests/benchmarks/bench_int8.py [--rounds 5 --runs 10 --convert-runs 1 --workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import machine  # noqa: E402  (tests/benchmarks/machine.py: CPU model and ISA flags)

ROOT = Path(__file__).resolve().parents[2]
OPTIMUM_VENV = Path("/tmp/pocket-optimum-venv")
SEQ, BATCH = 128, 1

MAKE_CHECKPOINT = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from tinymodels import make_tiny_model
make_tiny_model(sys.argv[1], "bert", "sequence-classification", hidden=768, layers=12, heads=12,
                intermediate=3072, max_positions=512, vocab_size=30522)
"""

OURS_FORCED_CONVERT = """
import json, sys
from pathlib import Path
from app.core.store import ConvertConfig, convert
from app.core.quantize import QuantizeConfig
entry = convert(sys.argv[1], ConvertConfig(force=QuantizeConfig(), reuse=False), root=Path(sys.argv[2]))
print(json.dumps({"entry": str(entry.path)}))
"""

OPTIMUM_QUANTIZE = """
import sys
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
quantizer = ORTQuantizer.from_pretrained(sys.argv[1])
quantizer.quantize(save_dir=sys.argv[2],
                   quantization_config=AutoQuantizationConfig.avx2(is_static=False, per_channel=True))
"""

# One engine per process: loads once, then answers "N" on stdin with N timings (ms) as a JSON line.
ENGINE = """
import json, sys, time
import numpy as np
kind, path, threads, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)
ids = rng.integers(1000, 30000, size=(1, seq)).astype(np.int64)  # (batch, seq)
arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
if kind.startswith("torch"):
    import torch, transformers
    torch.set_num_threads(threads)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    if kind == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    feeds = {k: torch.from_numpy(v) for k, v in arrays.items()}
    def once():
        with torch.inference_mode():
            model(**feeds)
else:
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {i.name: arrays[i.name] for i in session.get_inputs()}
    def once():
        session.run(None, feeds)
print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    once(); once()  # warm-up
    times = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1000)
    print(json.dumps(times), flush=True)
"""

# Resident memory of one loaded session, in a fresh process.
SESSION_MEMORY = """
import json, sys
import numpy as np
import onnxruntime as ort

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
so = ort.SessionOptions()
so.intra_op_num_threads = int(sys.argv[2])
so.add_session_config_entry("session.intra_op.allow_spinning", "0")
so.log_severity_level = 3
before = rss()
session = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
loaded = rss()
ids = np.full((1, int(sys.argv[3])), 1000, np.int64)
arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
session.run(None, {i.name: arrays[i.name] for i in session.get_inputs()})
print(json.dumps({"session_mb": loaded - before, "after_run_mb": rss() - before}))
"""


def run_child(cmd: list[str], *, env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of one child process (reaped by wait4 for its rusage)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if status != 0:
            raise SystemExit(f"{' '.join(map(str, cmd[:6]))} failed:\n{err.read().decode(errors='replace')[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def entry_in(store: Path) -> Path:
    entries = [p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "manifest.json").is_file()]
    if len(entries) != 1:
        raise SystemExit(f"expected one store entry in {store}, found {entries}")
    return entries[0]


def onnx_bytes(model: Path) -> int:
    """model.onnx plus its external data files, if any."""
    return sum(f.stat().st_size for f in model.parent.iterdir() if f.name.startswith(model.name))


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


class Engine:
    def __init__(self, kind: str, path: Path, python: str, threads: int):
        self.proc = subprocess.Popen([python, "-c", ENGINE, kind, str(path), str(threads), str(SEQ)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise SystemExit(f"engine {kind} did not start:\n{self.proc.stderr.read()[-3000:]}")
        self.times: list[float] = []

    def block(self, runs: int) -> None:
        self.proc.stdin.write(f"{runs}\n")
        self.proc.stdin.flush()
        self.times += json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def interleave(specs: dict[str, tuple[str, Path, str]], args) -> dict[str, "Engine"]:
    """One process per engine; `args.rounds` rounds of one block of `args.runs` runs each, the order rotating."""
    engines: dict[str, Engine] = {}
    try:
        for label, (kind, path, python) in specs.items():
            engines[label] = Engine(kind, path, python, args.threads)
        labels = list(engines)
        for r in range(args.rounds):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                time.sleep(args.gap)
                engines[label].block(args.runs)
    finally:
        for e in engines.values():
            e.close()
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (one block per engine each)")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per block (after 2 warm-up runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of idle between blocks")
    parser.add_argument("--convert-runs", type=int, default=1,
                        help="whole-process convert timings per tool; 0 reuses the files of an earlier run in --workdir")
    parser.add_argument("--mem-runs", type=int, default=2, help="fresh processes per model for session memory")
    parser.add_argument("--optimum-venv", type=Path, default=OPTIMUM_VENV)
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the checkpoint between runs")
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    folder = work / "bert-base"
    if not (folder / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-c", MAKE_CHECKPOINT, str(folder)], check=True, stderr=subprocess.DEVNULL)

    opt_python, opt_cli = args.optimum_venv / "bin" / "python", args.optimum_venv / "bin" / "optimum-cli"
    have_optimum = opt_python.is_file() and opt_cli.is_file()
    if not have_optimum:
        notes.append(f"Optimum columns skipped: no venv at {args.optimum_venv} "
                     "(bash tests/benchmarks/make_optimum_venv.sh creates it).")

    # --- whole-process conversion, interleaved; the last run's files are the ones benchmarked ----------------
    conv = {"ours": [], "optimum": []}
    store = opt_dir = None
    runs = args.convert_runs
    if runs == 0:  # latency, size and memory only, on the files an earlier run left in --workdir
        stores = sorted(p for p in work.glob("store-[0-9]*") if p.is_dir())
        opts = sorted(p for p in work.glob("optimum-[0-9]*") if (p / "int8").is_dir())
        if stores and (opts or not have_optimum):
            store, opt_dir = stores[-1], (opts[-1] if opts else None)
            notes.append(f"convert not timed (--convert-runs 0): reused {store}" + (f" and {opt_dir}" if opt_dir else ""))
        else:
            runs = 1
    for i in range(runs):
        for path in (store, opt_dir):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)  # keep the disk small: only the last run's files stay
        store = work / f"store-{i}"
        env = dict(os.environ, POCKET_NLP_HOME=str(store))
        conv["ours"].append(run_child([sys.executable, "-m", "app", "convert", str(folder), "-q", "--no-reuse"],
                                      env=env)[:2])
        if have_optimum:
            opt_dir = work / f"optimum-{i}"
            w1, r1, _ = run_child([str(opt_cli), "export", "onnx", "--model", str(folder), "--task",
                                   "text-classification", str(opt_dir / "onnx")])
            w2, r2, _ = run_child([str(opt_python), "-c", OPTIMUM_QUANTIZE, str(opt_dir / "onnx"), str(opt_dir / "int8")])
            conv["optimum"].append((w1 + w2, max(r1, r2), w1, w2))

    entry = entry_in(store)
    manifest = json.loads((entry / "manifest.json").read_text())
    quant = manifest.get("quantization", {})
    fp32_model = entry / "fp32" / "model.onnx"
    int8_model = entry / "int8" / "model.onnx"
    guard_choice = (quant.get("chosen") or {}).get("settings")
    if not int8_model.is_file():
        notes.append(f"The accuracy guard kept this random-weight model in FP32 ({quant.get('explanation')}); "
                     "INT8 forced with ConvertConfig(force=QuantizeConfig()) for the speed and size figures.")
        forced = work / "store-forced"
        shutil.rmtree(forced, ignore_errors=True)
        run_child([sys.executable, "-c", OURS_FORCED_CONVERT, str(folder), str(forced)])
        int8_model = entry_in(forced) / "int8" / "model.onnx"
        guard_choice = "forced: " + (json.loads((entry_in(forced) / "manifest.json").read_text())
                                     ["quantization"]["chosen"]["settings"])
    opt_model = None
    if have_optimum:
        found = sorted((opt_dir / "int8").glob("*.onnx"))
        opt_model = found[0] if found else None

    # --- latency: one process per engine, blocks interleaved ----------------------------------------------
    specs = [("torch-fp32", "PyTorch FP32", folder, sys.executable),
             ("torch-int8", "PyTorch dynamic INT8", folder, sys.executable),
             ("ort", "ours fused FP32 (ORT)", fp32_model, sys.executable),
             ("ort", "ours INT8 (ORT)", int8_model, sys.executable)]
    if opt_model:
        specs.append(("ort", "Optimum avx2 INT8 (ORT)", opt_model, sys.executable))
    engines = interleave({label: (kind, path, python) for kind, label, path, python in specs}, args)
    lat = {label: (statistics.median(e.times), pct(e.times, 0.95), len(e.times)) for label, e in engines.items()}

    # --- session memory, each model in a fresh process, interleaved ------------------------------------------
    models = {"ours fused FP32": fp32_model, "ours INT8": int8_model}
    if opt_model:
        models["Optimum avx2 INT8"] = opt_model
    mem: dict[str, list[dict]] = {k: [] for k in models}
    for _ in range(args.mem_runs):
        for name, path in models.items():
            mem[name].append(json.loads(run_child([sys.executable, "-c", SESSION_MEMORY, str(path),
                                                   str(args.threads), str(SEQ)])[2]))
    sizes = {name: onnx_bytes(path) for name, path in models.items()}

    # --- report ---------------------------------------------------------------------------------------------
    print(f"BERT-base shape (random weights), batch {BATCH} x sequence {SEQ}, {args.threads} threads, "
          f"{os.cpu_count()} CPUs; {args.rounds} interleaved rounds x {args.runs} runs per engine, one process each")
    print(f"our INT8 settings: {guard_choice}")
    print(f"\n{'latency':<26} {'median ms':>10} {'p95 ms':>8} {'runs':>5}")
    for label, (med, p95, n) in lat.items():
        print(f"{label:<26} {med:>10.1f} {p95:>8.1f} {n:>5}")
    print(f"\n{'model':<20} {'file MB':>8} {'session MB':>11} {'after 1 run MB':>15}")
    for name in models:
        s = statistics.median(m["session_mb"] for m in mem[name])
        a = statistics.median(m["after_run_mb"] for m in mem[name])
        print(f"{name:<20} {sizes[name] / 1e6:>8.1f} {s:>11.0f} {a:>15.0f}")
    if conv["ours"]:
        print(f"\n{'whole convert':<34} {'wall s (median)':>16} {'peak RSS MB':>12}")
        ours_wall = statistics.median(c[0] for c in conv["ours"])
        print(f"{'pocket-nlp convert':<34} {ours_wall:>16.1f} {max(c[1] for c in conv['ours']):>12.0f}")
    if conv["ours"] and conv["optimum"]:
        opt_wall = statistics.median(c[0] for c in conv["optimum"])
        detail = (f"optimum export {statistics.median(c[2] for c in conv['optimum']):.0f} s + quantize "
                  f"{statistics.median(c[3] for c in conv['optimum']):.0f} s")
        print(f"{'Optimum export + avx2 quantize':<34} {opt_wall:>16.1f} {max(c[1] for c in conv['optimum']):>12.0f}"
              f"  ({detail})")

    int8 = lat["ours INT8 (ORT)"][0]
    print("\nratios (goal in brackets)")

    def ratio(text: str, value: float, goal: float, higher: bool = True) -> None:
        ok = value >= goal if higher else value <= goal
        print(f"  {text:<52} {value:6.2f}  ({'>=' if higher else '<='} {goal:.2f}) {'met' if ok else 'NOT met'}")

    ratio("INT8 speed-up over our fused FP32", lat["ours fused FP32 (ORT)"][0] / int8, 2.0)
    ratio("INT8 speed-up over PyTorch FP32", lat["PyTorch FP32"][0] / int8, 3.0)
    print(f"  {'(INT8 speed-up over PyTorch dynamic INT8)':<52} {lat['PyTorch dynamic INT8'][0] / int8:6.2f}")
    if "Optimum avx2 INT8 (ORT)" in lat:
        ratio("INT8 speed-up over Optimum avx2 INT8", lat["Optimum avx2 INT8 (ORT)"][0] / int8, 1.5)
    ratio("INT8 file / FP32 file", sizes["ours INT8"] / sizes["ours fused FP32"], 0.26, higher=False)
    s_fp32 = statistics.median(m["session_mb"] for m in mem["ours fused FP32"])
    s_int8 = statistics.median(m["session_mb"] for m in mem["ours INT8"])
    ratio("INT8 session memory / FP32 session memory", s_int8 / s_fp32, 0.35, higher=False)
    if conv["ours"] and conv["optimum"]:
        ratio("convert wall time ours / Optimum export + quantize", ours_wall / opt_wall, 0.5, higher=False)
    for note in notes:
        print(f"note: {note}")
    print("note: a shared 2-core machine; medians move by up to ~30% from run to run, ratios within a run less.")


if __name__ == "__main__":
    main()
