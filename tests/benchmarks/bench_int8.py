"""Benchmark (not a test): our INT8 against every engine worth beating on this CPU, at several shapes, in one run.

Everything is measured in ONE run, on a BERT-base-shaped checkpoint with random weights (built here with
tests/tinymodels.py), at the shapes of `--shapes` (batch x sequence; default 1x16, 1x128, 1x384, 8x128), with
2 threads. It prints the CPU model and its ISA flags first (tests/benchmarks/machine.py), and then:

- latency (median and p95), every engine at every shape:
  - PyTorch FP32 (transformers) and PyTorch dynamic INT8 (`torch.ao.quantization.quantize_dynamic`, Linear);
  - ours: the fused FP32 and the INT8 model `convert` stores, in sessions made as the app makes them
    (`app.core.tasks.runner.new_session`), plus the quantized kernels of our INT8 graph and the MLAS INT8 path this
    CPU takes (`app.core.bench`, what `python -m app bench` reports);
  - ONNX Runtime's own pipeline: `onnxruntime.transformers.optimizer.optimize_model` (model_type bert) and then
    `onnxruntime.quantization.quantize_dynamic(per_channel=True)`, on the un-fused FP32 export
    (`python -m app export`);
  - Optimum's dynamic INT8 presets: avx2, and avx512_vnni where the CPU has AVX-512 VNNI (ONNX Runtime, the same
    onnxruntime as ours, only the model file differs);
  - OpenVINO, FP32 (INFERENCE_PRECISION_HINT f32: OpenVINO runs BF16 by default on AMX CPUs, which would not be an
    FP32 column) and NNCF's static INT8 (`nncf.quantize`, 32 calibration samples, model_type TRANSFORMER; OpenVINO's
    own default precision for what stays unquantized). Both read the un-fused export: NNCF quantizes our fused
    graph too (the same 74 FakeQuantize nodes; MultiHeadAttention and BiasGelu are read by OpenVINO's ONNX
    frontend), but its transformer patterns are written for the plain graph, so that is the one compared;
  - optionally OpenVINO through ONNX Runtime (the `onnxruntime-ep-openvino` plugin execution provider) on a QDQ
    INT8 graph (`quantize_static`, QDQ, per-channel, 32 calibration samples): only where the plugin offers a CPU
    device (it lists Intel devices only), otherwise a note says why;
  - the GEMM floor: one ONNX Runtime session per GEMM of a BERT-base layer, each a lone com.microsoft
    DynamicQuantizeMatMul (int8 per-channel weights, as ours) at M = batch x sequence: K x N 768x2304 (our export
    packs Q, K and V into one MatMul), 768x768, 768x3072 and 3072x768; timed the same way and summed x 12 layers.
    That is what the INT8 GEMMs alone cost; everything else in our time is attention, GELU, LayerNorm and copies;
- file sizes and the resident memory of a loaded session (each model in a fresh process, at 1 x 128);
- the wall time and peak RSS of a whole `python -m app convert FOLDER` against Optimum's export + quantize;
- the ratios the issue's "Must reach" names (issue 13), each "met" or "NOT met".

How latency is measured, and why:
- Each engine runs in its OWN long-lived child process, driven by the parent over a pipe. ONNX Runtime's
  intra-op threads spin after each run and PyTorch's OpenMP threads spin after each parallel region;
  engines sharing one process (or two engines of one library) steal the 2 cores from each other through
  those spinning threads — a MiniLM FP32 looked 46 ms instead of 18 ms that way. Separate processes also
  keep each engine's allocator and thread pools of its own. ORT sessions are created as the app's:
  their threads spin during a run and stop when it ends (`session.force_spinning_stop`), so an idle engine
  never burns a core, and the parent waits
  `--gap` seconds between blocks so PyTorch's OpenMP spin-wait (short by default) has ended.
- Interleaved in blocks: each round gives every engine one block per shape (warm-up runs, then the timed
  runs: `--runs` up to 128 tokens a call, fewer for bigger shapes, at least 3); the engine order rotates from
  round to round. All engines thus see the same machine state, and noise from other load on the machine
  spreads over all of them. The figures are still noisy on a shared 2-core machine: compare ratios from one
  run, not absolute numbers across runs.
- The parent imports nothing heavy: Linux counts the parent's RSS at fork in a child's ru_maxrss.

Optimum lives in its own venv (`bash tests/benchmarks/make_optimum_venv.sh`, default /tmp/pocket-optimum-venv)
because optimum[onnxruntime] pins transformers < 4.58; OpenVINO and NNCF in another
(`bash tests/benchmarks/make_openvino_venv.sh`, default /tmp/pocket-openvino-venv, which also makes the
OpenVINO EP venv /tmp/pocket-ovep-venv). Without a venv its columns are skipped with a note.
If the accuracy guard keeps a random-weight model in FP32, INT8 is forced with the default QuantizeConfig and
the output says so. Usage (wrap it in `flock /tmp/pocket-bench.lock` on a shared machine):

    .venv/bin/python tests/benchmarks/bench_int8.py [--shapes 1x16,1x128,1x384,8x128 --rounds 5 --runs 10
        --convert-runs 1 --workdir DIR --skip PyTorch,...]
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
OPENVINO_VENV = Path("/tmp/pocket-openvino-venv")
OVEP_VENV = Path("/tmp/pocket-ovep-venv")
SEQ, BATCH = 128, 1  # the headline shape: memory and the ratios the issue names
LAYERS, HIDDEN, HEADS, FFN = 12, 768, 12, 3072
# The GEMMs of one BERT-base layer as our export writes them (K x N): packed Q/K/V, attention output, FFN in, FFN out
GEMMS = ((HIDDEN, 3 * HIDDEN), (HIDDEN, HIDDEN), (HIDDEN, FFN), (FFN, HIDDEN))
CALIBRATION_SAMPLES = 32

# make_tiny_model's arguments after the folder, for the checkpoints the benchmarks build
BERT_BASE = (f'"bert", "sequence-classification", hidden={HIDDEN}, layers={LAYERS}, heads={HEADS}, '
             f'intermediate={FFN}, max_positions=512, vocab_size=30522')
MAKE_CHECKPOINT = """
import sys
sys.path.insert(0, {tests!r})
from tinymodels import make_tiny_model
make_tiny_model(sys.argv[1], {shape})
"""

OURS_FORCED_CONVERT = """
import json, sys
from pathlib import Path
from app.core.store import ConvertConfig, convert
from app.core.quantize import QuantizeConfig
entry = convert(sys.argv[1], ConvertConfig(force=QuantizeConfig(), reuse=False), root=Path(sys.argv[2]))
print(json.dumps({"entry": str(entry.path)}))
"""

# What `python -m app bench` reports about the engine, for our INT8 graph.
OURS_ENGINE = """
import json, sys
from pathlib import Path
from app.core.bench import engine_info
from app.core.tasks.runner import new_session
engine = engine_info(new_session(sys.argv[1], 1, prepack=False), Path(sys.argv[1]))
print(json.dumps({"runtime": engine.runtime, "provider": engine.provider, "kernels": engine.kernels_text(),
                  "mlas": engine.int8_path}))
"""

OPTIMUM_QUANTIZE = """
import sys
from optimum.onnxruntime import ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig
preset = getattr(AutoQuantizationConfig, sys.argv[3])  # avx2 or avx512_vnni
quantizer = ORTQuantizer.from_pretrained(sys.argv[1])
quantizer.quantize(save_dir=sys.argv[2], quantization_config=preset(is_static=False, per_channel=True))
"""

# ONNX Runtime's own pipeline on the un-fused export: the transformers optimizer, then per-channel dynamic INT8.
ORT_PIPELINE = f"""
import json, sys
from onnxruntime.transformers.optimizer import optimize_model
from onnx import TensorProto
from onnxruntime.quantization import QuantType, quantize_dynamic
src, fused, out = sys.argv[1:4]
model = optimize_model(src, model_type="bert", num_heads={HEADS}, hidden_size={HIDDEN})
fusions = {{k: v for k, v in model.get_fused_operator_statistics().items() if v}}
model.save_model_to_file(fused)
print(json.dumps(fusions), flush=True)
# the fused graph's contrib ops leave some tensors without a type for the quantizer: FP32 is what they are
quantize_dynamic(fused, out, per_channel=True, weight_type=QuantType.QInt8,
                 extra_options={{"DefaultTensorType": TensorProto.FLOAT}})
"""

# Static QDQ INT8 of the un-fused export (for the OpenVINO execution provider, which runs standard QDQ graphs).
QDQ_QUANTIZE = f"""
import sys
import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
src, out, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(1)
class Samples(CalibrationDataReader):
    def __init__(self):
        self.left = {CALIBRATION_SAMPLES}
    def get_next(self):
        if not self.left:
            return None
        self.left -= 1
        ids = rng.integers(1000, 30000, size=(1, seq)).astype(np.int64)  # (batch, seq)
        return {{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}}
quantize_static(src, out, Samples(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
"""

# NNCF's static INT8 on an OpenVINO model read from ONNX, saved as OpenVINO IR.
NNCF_QUANTIZE = f"""
import json, sys
import numpy as np
import nncf
import openvino as ov
src, out, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
model = ov.Core().read_model(src)
names = {{i.get_any_name() for i in model.inputs}}
rng = np.random.default_rng(1)
def sample():
    ids = rng.integers(1000, 30000, size=(1, seq)).astype(np.int64)  # (batch, seq)
    feed = {{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}}
    return {{k: v for k, v in feed.items() if k in names}}
data = nncf.Dataset([sample() for _ in range({CALIBRATION_SAMPLES})])
quantized = nncf.quantize(model, data, model_type=nncf.ModelType.TRANSFORMER, subset_size={CALIBRATION_SAMPLES})
ov.save_model(quantized, out, compress_to_fp16=False)
fq = sum(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())
print(json.dumps({{"fake_quantize": fq, "nncf": nncf.__version__, "openvino": ov.get_version()}}))
"""

# Can ONNX Runtime use OpenVINO through the plugin EP here? One JSON line: the versions and the CPU device or why not.
OVEP_PROBE = """
import json
import onnxruntime as ort
info = {"onnxruntime": ort.__version__}
try:
    import importlib.metadata as md
    import onnxruntime_ep_openvino as ovep
    info["plugin"] = md.version("onnxruntime-ep-openvino")
    ort.register_execution_provider_library("openvino", ovep.get_library_path())
    devices = ort.get_ep_devices()
    info["cpu_vendor"] = next((d.device.vendor for d in devices if d.ep_name == "CPUExecutionProvider"), "?")
    info["ok"] = any(d.ep_name == ovep.get_ep_name() and d.ep_metadata.get("ov_device") == "CPU" for d in devices)
    if not info["ok"]:
        info["why"] = ("it registers but offers no OpenVINO CPU device on this CPU (the plugin lists Intel devices "
                       f"only; this CPU's vendor is {info['cpu_vendor']})")
except Exception as e:  # noqa: BLE001 - a broken or mismatched plugin is a note, never a crash
    info["ok"], info["why"] = False, f"{type(e).__name__}: {str(e).strip()[:300]}"
print(json.dumps(info))
"""

# One engine per process: loads once, prints "ready {info}", then answers "BATCH SEQ N" on stdin with N timings
# (ms) as a JSON line.
ENGINE = f"""
import json, sys, time
import numpy as np
kind, path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
scale = 1  # the GEMM floor times one layer's GEMMs and counts {LAYERS} layers

def arrays(batch, seq):
    ids = rng.integers(1000, 30000, size=(batch, seq)).astype(np.int64)  # (batch, seq)
    return {{"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}}

def ort_options():
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1")  # as the app: spin during a run
    so.add_session_config_entry("session.force_spinning_stop", "1")  # and sleep once it ends
    so.log_severity_level = 3
    return so

if kind.startswith("torch"):
    import torch, transformers
    torch.set_num_threads(threads)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(path).eval()
    if kind == "torch-int8":
        model = torch.ao.quantization.quantize_dynamic(model, {{torch.nn.Linear}}, dtype=torch.qint8)
    info = {{"engine": f"torch {{torch.__version__}}"}}
    def runner(batch, seq):
        feeds = {{k: torch.from_numpy(v) for k, v in arrays(batch, seq).items()}}
        def once():
            with torch.inference_mode():
                model(**feeds)
        return once
elif kind.startswith("openvino"):
    import openvino as ov
    config = {{"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}}
    if kind == "openvino-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"  # OpenVINO's default on AMX CPUs is BF16
    compiled = ov.Core().compile_model(path, "CPU", config)
    request = compiled.create_infer_request()
    names = {{i.get_any_name() for i in compiled.inputs}}
    info = {{"engine": f"openvino {{ov.get_version()}}",
             "precision": compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()}}
    def runner(batch, seq):
        feeds = {{k: v for k, v in arrays(batch, seq).items() if k in names}}
        return lambda: request.infer(feeds)
elif kind == "gemm":
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    scale = {LAYERS}
    sessions = []
    for k, n in {GEMMS!r}:
        w = rng.integers(-127, 128, size=(k, n)).astype(np.int8)  # (K, N) int8, per-channel like ours
        inits = [numpy_helper.from_array(w, "B"), numpy_helper.from_array(np.full(n, 0.01, np.float32), "scale"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "zero"),
                 numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias")]
        node = helper.make_node("DynamicQuantizeMatMul", ["A", "B", "scale", "zero", "bias"], ["Y"], domain="com.microsoft")
        graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["b", "s", k])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", n])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
        sessions.append((k, ort.InferenceSession(model.SerializeToString(), ort_options(), providers=["CPUExecutionProvider"])))
    info = {{"engine": f"onnxruntime {{ort.__version__}}"}}
    def runner(batch, seq):
        feeds = [(s, {{"A": rng.standard_normal((batch, seq, k)).astype(np.float32)}}) for k, s in sessions]
        def once():
            for s, f in feeds:
                s.run(None, f)
        return once
else:  # ours (sessions as the app makes them), ort (plain CPU provider), ovep (OpenVINO through ONNX Runtime)
    import onnxruntime as ort
    if kind == "ours":
        from app.core.tasks.runner import new_session
        session = new_session(path, threads)
    elif kind == "ovep":
        import onnxruntime_ep_openvino as ovep
        ort.register_execution_provider_library("openvino", ovep.get_library_path())
        devices = [d for d in ort.get_ep_devices()
                   if d.ep_name == ovep.get_ep_name() and d.ep_metadata.get("ov_device") == "CPU"]
        so = ort_options()
        so.add_provider_for_devices(devices[:1], {{"load_config": json.dumps({{"CPU": {{"INFERENCE_NUM_THREADS": str(threads)}}}})}})
        session = ort.InferenceSession(path, so)
    else:
        session = ort.InferenceSession(path, ort_options(), providers=["CPUExecutionProvider"])
    info = {{"engine": f"onnxruntime {{ort.__version__}}", "providers": session.get_providers()}}
    names = [i.name for i in session.get_inputs()]
    def runner(batch, seq):
        feeds = {{k: v for k, v in arrays(batch, seq).items() if k in names}}
        return lambda: session.run(None, feeds)
print("ready " + json.dumps(info), flush=True)
runners = {{}}
for line in sys.stdin:
    batch, seq, n, warmup = map(int, line.split())
    once = runners.get((batch, seq)) or runners.setdefault((batch, seq), runner(batch, seq))
    for _ in range(warmup):
        once()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        once()
        times.append((time.perf_counter() - t) * 1000 * scale)
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
from app.core.tasks.runner import session_options
before = rss()
session = ort.InferenceSession(sys.argv[1], session_options(int(sys.argv[2])), providers=["CPUExecutionProvider"])
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


def make_checkpoint(folder: Path, shape: str = BERT_BASE) -> None:
    """A random-weight checkpoint of `shape` in `folder`, unless one is there. Built in a child process: the
    parent stays small, and Linux counts the parent's RSS at fork in a child's ru_maxrss."""
    if not (folder / "model.safetensors").is_file():
        code = MAKE_CHECKPOINT.format(tests=str(ROOT / "tests"), shape=shape)
        subprocess.run([sys.executable, "-c", code, str(folder)], check=True, stderr=subprocess.DEVNULL)


def last_json(out: str) -> dict:
    """The last line of a child's stdout, as JSON (libraries may print above it)."""
    return json.loads(out.strip().splitlines()[-1])


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


def parse_shapes(text: str) -> list[tuple[int, int]]:
    try:
        shapes = [tuple(int(x) for x in part.lower().split("x")) for part in text.split(",") if part.strip()]
    except ValueError:
        shapes = []
    if not shapes or any(len(s) != 2 or min(s) < 1 or s[1] > 512 for s in shapes):
        raise argparse.ArgumentTypeError(f"--shapes: BATCHxSEQ,... with SEQ <= 512, e.g. 1x16,1x128 (got {text!r})")
    return shapes


def shape_name(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def block_size(shape: tuple[int, int], runs: int) -> tuple[int, int]:
    """(timed runs, warm-up runs) of one block: `runs` up to 128 tokens a call, proportionally fewer above (>= 3)."""
    tokens = shape[0] * shape[1]
    return max(3, round(runs * min(1.0, SEQ / tokens))), (2 if tokens <= SEQ else 1)


def has_isa(flag: str) -> bool:
    return flag in machine.flags()


class Engine:
    def __init__(self, kind: str, path: Path, python: str, threads: int):
        self.kind = kind
        self.proc = subprocess.Popen([python, "-c", ENGINE, kind, str(path), str(threads)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"engine {kind} ({path}) did not start:\n{self.proc.stderr.read()[-3000:]}")
        self.info = json.loads(line[len("ready"):] or "{}")
        self.times: dict[tuple[int, int], list[float]] = {}

    def block(self, shape: tuple[int, int], runs: int, warmup: int) -> None:
        self.proc.stdin.write(f"{shape[0]} {shape[1]} {runs} {warmup}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"engine {self.kind} died at {shape_name(shape)}:\n{self.proc.stderr.read()[-3000:]}")
        self.times.setdefault(shape, []).extend(json.loads(line))

    def close(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def interleave(specs: dict[str, tuple[str, Path, str]], shapes: list[tuple[int, int]], args) -> dict[str, Engine]:
    """One process per engine; `args.rounds` rounds, each one block per engine and shape, the engine order rotating."""
    engines: dict[str, Engine] = {}
    try:
        for label, (kind, path, python) in specs.items():
            engines[label] = Engine(kind, path, python, args.threads)
        labels = list(engines)
        for r in range(args.rounds):
            for shape in shapes:
                runs, warmup = block_size(shape, args.runs)
                for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                    time.sleep(args.gap)
                    engines[label].block(shape, runs, warmup)
            print(f"  round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        for e in engines.values():
            e.close()
    return engines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes("1x16,1x128,1x384,8x128"),
                        help="BATCHxSEQ,... (default 1x16,1x128,1x384,8x128); the ratios are at 1x128")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (one block per engine and shape)")
    parser.add_argument("--runs", type=int, default=10,
                        help="timed runs per block up to 128 tokens a call (fewer above; after warm-up runs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gap", type=float, default=0.2, help="seconds of idle between blocks")
    parser.add_argument("--convert-runs", type=int, default=1,
                        help="whole-process convert timings per tool; 0 reuses the files of an earlier run in --workdir")
    parser.add_argument("--mem-runs", type=int, default=2, help="fresh processes per model for session memory")
    parser.add_argument("--optimum-venv", type=Path, default=OPTIMUM_VENV)
    parser.add_argument("--openvino-venv", type=Path, default=OPENVINO_VENV)
    parser.add_argument("--ovep-venv", type=Path, default=OVEP_VENV,
                        help="a venv with onnxruntime and onnxruntime-ep-openvino (optional engine row)")
    parser.add_argument("--qdq", action="store_true",
                        help="also time the static QDQ INT8 graph on ORT's CPU provider and read by OpenVINO directly "
                             "(what the OpenVINO EP would compile; a stand-in where the EP offers no device)")
    parser.add_argument("--skip", default="", help="comma-separated words: engines whose label contains one are left out")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the checkpoint and models between runs")
    args = parser.parse_args()
    print(f"CPU: {machine.describe()}", flush=True)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-int8-"))
    work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    skip = [w.strip().lower() for w in args.skip.split(",") if w.strip()]

    def wanted(label: str) -> bool:
        return not any(w in label.lower() for w in skip)

    folder = work / "bert-base"
    make_checkpoint(folder)

    opt_python, opt_cli = args.optimum_venv / "bin" / "python", args.optimum_venv / "bin" / "optimum-cli"
    have_optimum = opt_python.is_file() and opt_cli.is_file() and wanted("Optimum")
    if not have_optimum and wanted("Optimum"):
        notes.append(f"Optimum columns skipped: no venv at {args.optimum_venv} "
                     "(bash tests/benchmarks/make_optimum_venv.sh creates it).")
    ov_python = args.openvino_venv / "bin" / "python"
    have_openvino = ov_python.is_file() and wanted("OpenVINO")
    if not have_openvino and wanted("OpenVINO"):
        notes.append(f"OpenVINO columns skipped: no venv at {args.openvino_venv} "
                     "(bash tests/benchmarks/make_openvino_venv.sh creates it).")
    presets = ["avx2"] + (["avx512_vnni"] if has_isa("avx512_vnni") else [])
    if not has_isa("avx512_vnni"):
        notes.append("Optimum's avx512_vnni preset skipped: this CPU has no AVX-512 VNNI.")

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
        print(f"converting (run {i + 1}/{runs}): ours", file=sys.stderr, flush=True)
        conv["ours"].append(run_child([sys.executable, "-m", "app", "convert", str(folder), "-q", "--no-reuse"],
                                      env=env)[:2])
        if have_optimum:
            print(f"converting (run {i + 1}/{runs}): Optimum", file=sys.stderr, flush=True)
            opt_dir = work / f"optimum-{i}"
            w1, r1, _ = run_child([str(opt_cli), "export", "onnx", "--model", str(folder), "--task",
                                   "text-classification", str(opt_dir / "onnx")])
            w2, r2, _ = run_child([str(opt_python), "-c", OPTIMUM_QUANTIZE, str(opt_dir / "onnx"), str(opt_dir / "int8"),
                                   "avx2"])
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
    ours_engine = last_json(run_child([sys.executable, "-c", OURS_ENGINE, str(int8_model)])[2])

    # --- the other engines' models, each made by its own tool in a child process ----------------------------
    prep: dict[str, str] = {}  # label -> how it was made (tool, seconds)
    export = work / "export"
    unfused = export / "model.onnx"
    if not unfused.is_file():
        run_child([sys.executable, "-m", "app", "export", str(folder), "--out", str(export), "-q"])
    opt_models: dict[str, Path] = {}
    if have_optimum:
        found = sorted((opt_dir / "int8").glob("*.onnx"))
        if found:
            opt_models["avx2"] = found[0]
        for preset in presets[1:]:
            out = work / f"optimum-{preset}"
            if not sorted(out.glob("*.onnx")):
                run_child([str(opt_python), "-c", OPTIMUM_QUANTIZE, str(opt_dir / "onnx"), str(out), preset])
            opt_models[preset] = sorted(out.glob("*.onnx"))[0]
    ort_int8 = work / "ort-pipeline" / "model_int8.onnx"
    if wanted("ORT pipeline"):
        if not ort_int8.is_file():
            print("preparing: ORT's optimizer + quantize_dynamic", file=sys.stderr, flush=True)
            ort_int8.parent.mkdir(parents=True, exist_ok=True)
            wall, _, out = run_child([sys.executable, "-c", ORT_PIPELINE, str(unfused),
                                      str(ort_int8.parent / "model_fused.onnx"), str(ort_int8)])
            (ort_int8.parent / "fusions.json").write_text(next(x for x in out.splitlines() if x.startswith("{")))
            prep["ORT pipeline"] = f"{wall:.0f} s"
        prep["ORT pipeline"] = ("optimizer fusions " + ", ".join(
            f"{n} {op}" for op, n in json.loads((ort_int8.parent / "fusions.json").read_text()).items())
            + (f"; {prep['ORT pipeline']}" if "ORT pipeline" in prep else ""))
    ov_int8 = work / "openvino" / "nncf_int8.xml"
    if have_openvino:
        if not ov_int8.is_file():
            print("preparing: NNCF INT8", file=sys.stderr, flush=True)
            ov_int8.parent.mkdir(parents=True, exist_ok=True)
            wall, _, out = run_child([str(ov_python), "-c", NNCF_QUANTIZE, str(unfused), str(ov_int8), str(SEQ)])
            (ov_int8.parent / "nncf.json").write_text(json.dumps(last_json(out) | {"seconds": wall}))
        info = json.loads((ov_int8.parent / "nncf.json").read_text())
        prep["OpenVINO+NNCF"] = (f"nncf {info['nncf']}, openvino {info['openvino']}: {info['fake_quantize']} "
                                 f"FakeQuantize on the un-fused export, {info['seconds']:.0f} s")
    ovep_python = args.ovep_venv / "bin" / "python"
    qdq = work / "qdq" / "model_qdq.onnx"
    have_ovep = False
    if wanted("OpenVINO EP"):
        if not ovep_python.is_file():
            notes.append(f"OpenVINO EP row skipped: no venv at {args.ovep_venv} "
                         "(bash tests/benchmarks/make_openvino_venv.sh creates it).")
        else:
            probe = last_json(run_child([str(ovep_python), "-c", OVEP_PROBE])[2])
            label = f"onnxruntime-ep-openvino {probe.get('plugin', '?')} on onnxruntime {probe['onnxruntime']}"
            if not probe["ok"]:
                notes.append(f"OpenVINO EP row skipped: {label}: {probe['why']}.")
            else:
                have_ovep = True
                prep["OpenVINO EP"] = label
    if have_ovep or args.qdq:
        if not qdq.is_file():
            print("preparing: static QDQ INT8", file=sys.stderr, flush=True)
            qdq.parent.mkdir(parents=True, exist_ok=True)
            wall = run_child([sys.executable, "-c", QDQ_QUANTIZE, str(unfused), str(qdq), str(SEQ)])[0]
            (qdq.parent / "seconds").write_text(f"{wall:.0f}")
        made = (f"quantize_static QDQ, per-channel, {CALIBRATION_SAMPLES} samples on the un-fused export, "
                f"{(qdq.parent / 'seconds').read_text() if (qdq.parent / 'seconds').is_file() else '?'} s")
        prep["OpenVINO EP"] = f"{prep['OpenVINO EP']}; {made}" if have_ovep else made
        prep["ORT static QDQ"] = prep["OpenVINO on the QDQ"] = made

    # --- latency: one process per engine, blocks interleaved ----------------------------------------------
    py = sys.executable
    specs = [("torch-fp32", "PyTorch FP32", folder, py),
             ("torch-int8", "PyTorch dynamic INT8", folder, py),
             ("ours", "ours fused FP32", fp32_model, py),
             ("ours", "ours INT8", int8_model, py)]
    if ort_int8.is_file() and wanted("ORT pipeline"):
        specs.append(("ort", "ORT pipeline INT8", ort_int8, py))
    for preset, path in opt_models.items():
        specs.append(("ort", f"Optimum {preset} INT8", path, py))
    if have_openvino:
        specs += [("openvino-f32", "OpenVINO FP32", unfused, str(ov_python)),
                  ("openvino", "OpenVINO+NNCF INT8", ov_int8, str(ov_python))]
    if have_ovep:
        specs.append(("ovep", "OpenVINO EP QDQ INT8", qdq, str(ovep_python)))
    if args.qdq:
        specs.append(("ort", "ORT static QDQ INT8", qdq, py))
        if have_openvino:
            specs.append(("openvino", "OpenVINO on the QDQ INT8", qdq, str(ov_python)))
    specs.append(("gemm", "GEMM floor (INT8)", Path("-"), py))
    specs = [s for s in specs if s[1].startswith("ours") or wanted(s[1])]
    print(f"timing {len(specs)} engines at {', '.join(map(shape_name, args.shapes))}", file=sys.stderr, flush=True)
    engines = interleave({label: (kind, path, python) for kind, label, path, python in specs}, args.shapes, args)
    lat = {shape: {label: (statistics.median(e.times[shape]), pct(e.times[shape], 0.95), len(e.times[shape]))
                   for label, e in engines.items()} for shape in args.shapes}

    # --- session memory, each model in a fresh process, interleaved ------------------------------------------
    models = {"ours fused FP32": fp32_model, "ours INT8": int8_model}
    if ort_int8.is_file() and wanted("ORT pipeline"):
        models["ORT pipeline INT8"] = ort_int8
    if "avx2" in opt_models:
        models["Optimum avx2 INT8"] = opt_models["avx2"]
    mem: dict[str, list[dict]] = {k: [] for k in models}
    for _ in range(args.mem_runs):
        for name, path in models.items():
            mem[name].append(json.loads(run_child([sys.executable, "-c", SESSION_MEMORY, str(path),
                                                   str(args.threads), str(SEQ)])[2]))
    sizes = {name: onnx_bytes(path) for name, path in models.items()}

    # --- report ---------------------------------------------------------------------------------------------
    head_runs = ", ".join(f"{shape_name(s)} {block_size(s, args.runs)[0]}" for s in args.shapes)
    print(f"BERT-base shape (random weights), {args.threads} threads, {os.cpu_count()} CPUs; {args.rounds} "
          f"interleaved rounds, timed runs per block: {head_runs}; one process per engine")
    print(f"our INT8 settings: {guard_choice}")
    print(f"our INT8 engine: {ours_engine['runtime']}, {ours_engine['provider']}; kernels: {ours_engine['kernels']}; "
          f"MLAS INT8 path on this CPU: {ours_engine['mlas']}")
    for label, e in engines.items():
        extra = [e.info.get("engine", "?")]
        if e.info.get("precision"):
            extra.append(f"inference precision {e.info['precision']}")
        if e.info.get("providers"):
            extra.append(e.info["providers"][0])
        made = next((v for k, v in prep.items() if label.startswith(k)), "")
        print(f"  {label:<24} {'; '.join(extra)}" + (f"; {made}" if made else ""))

    ours = "ours INT8"
    for shape in args.shapes:
        print(f"\nlatency at {shape_name(shape)} (batch x sequence) {'median ms':>10} {'p95 ms':>8} {'runs':>5} "
              f"{'x ours INT8':>12}")
        for label, (med, p95, n) in lat[shape].items():
            print(f"  {label:<36} {med:>10.1f} {p95:>8.1f} {n:>5} {med / lat[shape][ours][0]:>12.2f}")
    print(f"\n{'median ms':<24}" + "".join(f"{shape_name(s):>10}" for s in args.shapes))
    for label in engines:
        print(f"  {label:<22}" + "".join(f"{lat[s][label][0]:>10.1f}" for s in args.shapes))
    floor = "GEMM floor (INT8)"
    if floor in engines:
        print("GEMM floor: " + ", ".join(
            f"{shape_name(s)} {lat[s][floor][0]:.1f} ms = "
            f"{2 * s[0] * s[1] * sum(k * n for k, n in GEMMS) * LAYERS / (lat[s][floor][0] / 1000) / 1e12:.2f} "
            f"int8 TOPS (ours INT8 {lat[s][ours][0] / lat[s][floor][0]:.2f}x)" for s in args.shapes))

    print(f"\n{'model':<20} {'file MB':>8} {'session MB':>11} {'after 1 run MB':>15}")
    session_mb = {name: statistics.median(m["session_mb"] for m in mem[name]) for name in models if mem[name]}
    for name in models:
        if args.mem_runs:
            a = statistics.median(m["after_run_mb"] for m in mem[name])
            print(f"{name:<20} {sizes[name] / 1e6:>8.1f} {session_mb[name]:>11.0f} {a:>15.0f}")
        else:
            print(f"{name:<20} {sizes[name] / 1e6:>8.1f} {'(--mem-runs 0)':>27}")
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

    def ratio(text: str, value: float, goal: float, higher: bool = True) -> None:
        ok = value >= goal if higher else value <= goal
        print(f"  {text:<56} {value:6.2f}  ({'>=' if higher else '<='} {goal:.2f}) {'met' if ok else 'NOT met'}")

    def info(text: str, value: float) -> None:
        print(f"  {'(' + text + ')':<56} {value:6.2f}")

    head = (BATCH, SEQ)
    peers = [label for label in engines if label.startswith(("ORT pipeline", "Optimum"))]
    if head in lat:
        at = lat[head]
        int8 = at[ours][0]
        print(f"\nratios at {shape_name(head)} (goal in brackets; speed-up = their latency / ours)")
        if "OpenVINO+NNCF INT8" in at:
            ratio("INT8 latency / OpenVINO+NNCF INT8", int8 / at["OpenVINO+NNCF INT8"][0], 1.0, higher=False)
        if "OpenVINO FP32" in at:
            info("INT8 latency / OpenVINO FP32", int8 / at["OpenVINO FP32"][0])
        for label in ("OpenVINO EP QDQ INT8", "ORT static QDQ INT8", "OpenVINO on the QDQ INT8"):
            if label in at:
                info(f"INT8 latency / {label}", int8 / at[label][0])
        if floor in at:
            ratio("INT8 latency / GEMM floor", int8 / at[floor][0], 1.3, higher=False)
        ratio("INT8 speed-up over our fused FP32", at["ours fused FP32"][0] / int8, 3.5)
        if "PyTorch FP32" in at:
            ratio("INT8 speed-up over PyTorch FP32", at["PyTorch FP32"][0] / int8, 3.0)
        if "PyTorch dynamic INT8" in at:
            info("INT8 speed-up over PyTorch dynamic INT8", at["PyTorch dynamic INT8"][0] / int8)
        for label in peers:
            ratio(f"INT8 speed-up over {label}", at[label][0] / int8, 1.5)
    for shape in args.shapes:
        if shape == head:
            continue
        at = lat[shape]
        print(f"ratios at {shape_name(shape)}")
        for label in peers:
            ratio(f"INT8 speed-up over {label} (ahead)", at[label][0] / at[ours][0], 1.0)
        for label in ("OpenVINO+NNCF INT8", floor):
            if label in at:
                info(f"INT8 latency / {label}", at[ours][0] / at[label][0])
    print("sizes, memory, convert")
    ratio("INT8 file / FP32 file", sizes["ours INT8"] / sizes["ours fused FP32"], 0.26, higher=False)
    if args.mem_runs:
        ratio("INT8 session memory / FP32 session memory", session_mb["ours INT8"] / session_mb["ours fused FP32"],
              0.35, higher=False)
    if conv["ours"]:
        ratio("convert peak RSS / FP32 model size", max(c[1] for c in conv["ours"]) * 2**20 / sizes["ours fused FP32"],
              2.0, higher=False)
    if conv["ours"] and conv["optimum"]:
        ratio("convert wall time ours / Optimum export + quantize", ours_wall / opt_wall, 0.5, higher=False)
    for note in notes:
        print(f"note: {note}")
    print("note: a shared 2-core machine; medians move by up to ~30% from run to run, ratios within a run less.")


if __name__ == "__main__":
    main()
