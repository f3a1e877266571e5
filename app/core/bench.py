"""FP32 vs INT8 of one converted model, measured in the same run.

File size; session load time and resident memory, each measured in a fresh process so the figures are
clean; latency p50/p95 after warm-up at a chosen batch × sequence length, interleaved in blocks so both
models see the same machine state; throughput. Sessions do not spin their threads between runs:
with spinning, the idle session's threads steal cores from the one being timed. The result also says which
engine ran them: the onnxruntime version and execution provider, the quantized kernels in the INT8 graph and
the INT8 path that ONNX Runtime's MLAS takes on this CPU (read from its ISA flags).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.core import cpu
from app.core.errors import BenchError, InputError
from app.core.progress import ProgressFn, check_cancel, report
from app.core.tasks.runner import new_session


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


@dataclass(frozen=True)
class BenchConfig:
    batch: int = 1
    seq_len: int = 128
    runs: int = 30  # timed runs per model
    warmup: int = 3
    threads: int | None = None  # None: the physical cores

    def __post_init__(self):
        for name, low in (("batch", 1), ("seq_len", 2), ("runs", 1), ("warmup", 0)):
            if getattr(self, name) < low:
                raise ValueError(f"{name}: must be at least {low} (got {getattr(self, name)})")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads: must be at least 1 (got {self.threads})")

    @property
    def resolved_threads(self) -> int:
        return self.threads or physical_cores()


@dataclass(frozen=True)
class ModelBench:
    label: str  # "FP32" or "INT8"
    file_bytes: int
    load_ms: float
    memory_bytes: int  # resident memory the loaded session adds to a fresh process
    latencies_ms: tuple[float, ...]
    batch: int

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95))

    @property
    def throughput(self) -> float:
        """Sequences per second at the median latency."""
        return 1000.0 * self.batch / self.p50_ms

    def to_dict(self) -> dict:
        return asdict(self) | {"p50_ms": self.p50_ms, "p95_ms": self.p95_ms, "throughput": self.throughput}


def quantized_kernels(onnx_path: Path) -> dict[str, int]:
    """Node count of each quantized op type in a graph file (its weights are not read), most frequent first."""
    from app.core.onnxfile import read_model  # onnx: not in the spawned load-time children
    from app.core.precisions import INT8_OPS

    quantized = {*INT8_OPS, "DynamicQuantizeLinear"}  # and the activation quantizer in front of QAttention
    counts = Counter(n.op_type for n in read_model(onnx_path)[0].graph.node if n.op_type in quantized)
    return dict(counts.most_common())


@dataclass(frozen=True)
class EngineInfo:
    runtime: str  # "onnxruntime 1.32.0"
    provider: str  # the execution provider the sessions ran on
    int8_kernels: dict[str, int]  # quantized op type -> nodes in the INT8 graph; empty without INT8
    int8_path: str  # MLAS's INT8 GEMM path on this CPU (app.core.cpu.int8_path: "AVX-512 VNNI", "AMX"...)

    def kernels_text(self) -> str:
        return ", ".join(f"{n} {op}" for op, n in self.int8_kernels.items()) or "none"


def engine_info(session, int8_path: Path | None) -> EngineInfo:
    """What ran a benchmark: `session`'s runtime and provider, the INT8 graph's kernels and the CPU's MLAS path."""
    import onnxruntime

    return EngineInfo(runtime=f"onnxruntime {onnxruntime.__version__}", provider=session.get_providers()[0],
                      int8_kernels=quantized_kernels(int8_path) if int8_path else {},
                      int8_path=cpu.int8_path())


@dataclass(frozen=True)
class BenchResult:
    model: str
    config: BenchConfig
    fp32: ModelBench
    int8: ModelBench | None  # None when the model was kept in FP32
    engine: EngineInfo | None = None

    def ratios(self) -> dict[str, float]:
        """FP32 / INT8 for sizes and times (higher is better for INT8), INT8 / FP32 for throughput."""
        if self.int8 is None:
            return {}
        a, b = self.fp32, self.int8
        return {"size": a.file_bytes / b.file_bytes, "load": a.load_ms / b.load_ms,
                "memory": a.memory_bytes / max(b.memory_bytes, 1), "p50": a.p50_ms / b.p50_ms,
                "p95": a.p95_ms / b.p95_ms, "throughput": b.throughput / a.throughput}

    def to_dict(self) -> dict:
        return {"model": self.model, "config": asdict(self.config) | {"threads": self.config.resolved_threads},
                "fp32": self.fp32.to_dict(), "int8": self.int8.to_dict() if self.int8 else None,
                "ratios": self.ratios(), "engine": asdict(self.engine) if self.engine else None}


def _load_in_child(onnx_path: str, threads: int, feed: dict, queue) -> None:
    """Runs in a fresh process: load time and the memory the session adds (after one run), or the reason it
    failed, as one line (nothing is printed: the parent reports it)."""
    try:
        import onnxruntime  # noqa: F401 - imported before `before`: the session's own memory is what counts
        import psutil

        before = psutil.Process().memory_info().rss
        start = time.perf_counter()
        session = new_session(onnx_path, threads)
        load_ms = (time.perf_counter() - start) * 1000
        session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})
        queue.put(("ok", load_ms, psutil.Process().memory_info().rss - before))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent as its reason
        queue.put(("error", f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}", 0))


def _fresh_process_load(onnx_path: Path, threads: int, feed: dict) -> tuple[float, int]:
    """Load time and memory measured in a fresh process; its failure (or death) raises here within seconds."""
    import queue as queues

    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_load_in_child, args=(str(onnx_path), threads, feed, queue), daemon=True)
    proc.start()
    try:
        while True:
            try:
                status, a, b = queue.get(timeout=0.5)
                break
            except queues.Empty:
                if not proc.is_alive():  # died without a word (killed, out of memory, a crash in native code)
                    try:
                        status, a, b = queue.get(timeout=1)
                        break
                    except queues.Empty:
                        raise BenchError(f"Loading {onnx_path} in a fresh process failed: the process ended with "
                                         f"exit code {proc.exitcode}. Convert the model again "
                                         "(`python -m app convert MODEL --no-reuse`).") from None
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    if status != "ok":
        raise BenchError(f"Loading {onnx_path} in a fresh process failed ({a}). If the file is damaged, convert "
                         "the model again (`python -m app convert MODEL --no-reuse`).")
    return a, b


def _feed(spec, config: BenchConfig, vocab_size: int) -> dict[str, np.ndarray]:
    if config.seq_len > spec.max_sequence_length:
        raise InputError(f"seq_len: {config.seq_len} is longer than this model accepts "
                         f"({spec.max_sequence_length} tokens).")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, max(vocab_size, 6), (config.batch, config.seq_len), dtype=np.int64)  # (batch, seq)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    # a decoder with a KV cache (GPT-2): the prompt pass, positions 0..S-1 and an empty past (only what the graph asks
    # for is fed)
    empty = np.zeros((config.batch, spec.num_heads, 0, spec.hidden_size // spec.num_heads), np.float32)
    return feed | {"position_ids": np.broadcast_to(np.arange(config.seq_len), ids.shape).copy()} | {
        f"past_key_values.{i}.{kv}": empty for i in range(spec.num_layers) for kv in ("key", "value")}


def benchmark(entry, config: BenchConfig = BenchConfig(), *, progress: ProgressFn | None = None,
              cancel: threading.Event | None = None) -> BenchResult:
    """Benchmark a store entry's FP32 and INT8 models side by side."""
    from app.core.onnxfile import file_bytes
    from app.core.spec import load_spec

    spec = load_spec(entry.fp32_dir)
    feed = _feed(spec, config, spec.vocab_size)
    threads = config.resolved_threads
    models = [("FP32", entry.fp32_dir / "model.onnx")]
    if entry.int8_dir:
        models.append(("INT8", entry.int8_dir / "model.onnx"))
    steps = len(models) + config.runs
    loads = {}
    for i, (label, path) in enumerate(models):
        check_cancel(cancel)
        report(progress, "bench", i, steps, f"loading {label} in a fresh process")
        loads[label] = _fresh_process_load(path, threads, feed)
    sessions = {label: new_session(str(path), threads) for label, path in models}
    feeds = {label: {i.name: feed[i.name] for i in s.get_inputs()} for label, s in sessions.items()}
    times: dict[str, list[float]] = {label: [] for label in sessions}
    block = 3
    done = 0
    while done < config.runs:
        check_cancel(cancel)
        n = min(block, config.runs - done)
        for label, session in sessions.items():
            for _ in range(config.warmup if done == 0 else 1):
                session.run(None, feeds[label])
            for _ in range(n):
                start = time.perf_counter()
                session.run(None, feeds[label])
                times[label].append((time.perf_counter() - start) * 1000)
        done += n
        report(progress, "bench", len(models) + done, steps, f"timed {done}/{config.runs} runs of each model")
    results = {label: ModelBench(label, file_bytes(path), loads[label][0], loads[label][1],
                                 tuple(times[label]), config.batch) for label, path in models}
    engine = engine_info(sessions["INT8" if "INT8" in sessions else "FP32"], dict(models).get("INT8"))
    return BenchResult(model=entry.name, config=config, fp32=results["FP32"], int8=results.get("INT8"), engine=engine)
