"""Benchmark (not a test): GPT-2 text generation, FP32 vs INT8, with the KV cache.

1. tinygpt2-en (`../shared/models/tinygpt2-en`, a real small English GPT-2) through `convert` into a temporary
   store, plus INT8 variants forced by hand: time to first token (32-token prompt), tokens/s (128 new tokens),
   and on held-out text (the SQuAD paragraphs of `../shared/data/squad_v1.1_dev_b1.json`, windows of 128
   tokens, stride 64) perplexity and next-token top-1 agreement with FP32.
2. One GEMM at M = 1 (a generation step) and M = 128 (a prompt), GPT-2-small shapes: FP32 MatMul,
   DynamicQuantizeMatMul (what the guard writes), MatMulNBits with 8-bit weights (block 32 / 128, accuracy
   level 4: int8 compute) and weight-only MatMulNBits (accuracy level 0: FP32 compute).
3. A GPT-2-small-shaped model (12 x 768, vocab 50257, random weights): tokens/s at batch 1 for 128 new tokens
   after a 32-token prompt and time to first token for a 128-token prompt, for our FP32 (fused and plain
   graphs), our INT8, PyTorch FP32 `generate` and PyTorch dynamic INT8 (Conv1D turned into Linear), all in this
   run; file sizes.

The machine is a shared 2-core one: compare ratios measured in one run, not absolute figures across runs.
Usage (under the shared lock):

    flock /tmp/pocket-bench.lock .venv/bin/python tests/benchmarks/bench_generation.py [--skip-small] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
TINY = SHARED / "models" / "tinygpt2-en"
SQUAD = SHARED / "data" / "squad_v1.1_dev_b1.json"

import machine


def best_of(fn, runs: int):
    """The fastest of `runs` calls (the others share the machine) and that call's result."""
    best, out = float("inf"), None
    for _ in range(runs):
        start = time.perf_counter()
        value = fn()
        if time.perf_counter() - start < best:
            best, out = time.perf_counter() - start, value
    return best, out


# --- 1. tinygpt2-en ------------------------------------------------------------------------------------------

def held_out_text(work: Path, paragraphs: int) -> Path:
    from app.core.eval import load_squad

    contexts = list(dict.fromkeys(e.context for e in load_squad(SQUAD).examples))[:paragraphs]
    path = work / "squad_b1_paragraphs.txt"
    path.write_text("\n".join(contexts) + "\n", encoding="utf-8")
    return path


def tinygpt2(work: Path, threads: int, runs: int, paragraphs: int) -> None:
    from app.core.calibration import build_calibration
    from app.core.quantize import QuantizeConfig, quantize_model
    from app.core.store import convert
    from app.core.tasks import generation
    from app.core.tasks.runner import Runner

    if not TINY.is_dir() or not SQUAD.is_file():
        print(f"skipping tinygpt2-en: {TINY} or {SQUAD} is missing")
        return
    entry = convert(str(TINY), root=work / "store")
    q = entry.manifest["quantization"]
    print(f"guard ({q['calibration']}): {q['explanation']}")
    fp32_dir = entry.fp32_dir
    spec = Runner.load(fp32_dir).spec
    plain = QuantizeConfig(scale_outliers=False, split_outliers=False)
    variants = {"FP32": fp32_dir / "model.onnx"}
    if entry.int8_dir:
        variants["INT8 (guard's choice)"] = entry.int8_dir / "model.onnx"
    for name, config in (("INT8, FP32 embeddings + LM head", replace(plain, quantize_embeddings=False)),
                         ("INT8, FP32 LM head", replace(plain, keep_fp32=("/lm_head/MatMul",))),
                         ("INT8 per-tensor", replace(plain, per_channel=False))):
        out = fp32_dir / f"{name.replace(' ', '_').replace(',', '').replace('+', '')}.onnx"  # beside its config
        quantize_model(fp32_dir / "model.onnx", out, build_calibration(fp32_dir, spec), spec=spec, force=config)
        variants[name] = out
    data = generation.load_text(held_out_text(work, paragraphs))
    fp32 = Runner.load(fp32_dir, threads=threads)
    prompt = fp32.tokenizer.encode([data.lines[0]], truncation=None)[0].ids[:32]
    print(f"\ntinygpt2-en on {paragraphs} held-out SQuAD paragraphs (windows of 128, stride 64); "
          f"generation: 32-token prompt, 128 new tokens, greedy, {threads} threads, best of {runs}")
    print(f"{'':34}{'MB':>6}{'TTFT ms':>9}{'tok/s':>8}{'ppl':>9}{'ppl ratio':>10}{'next-token same':>17}"
          f"{'greedy same':>13}")
    base_ppl = None
    for name, path in variants.items():
        runner = Runner.load(path.parent, onnx_name=path.name, threads=threads)
        options = generation.GenerationOptions(max_new_tokens=128)
        ttft = min(generation.generate(runner, prompt, replace(options, max_new_tokens=1)).ttft_ms
                   for _ in range(runs * 3))
        _, gen = best_of(lambda: generation.generate(runner, prompt, options), runs)
        result = generation.evaluate_generation(fp32, runner, data, window=128)
        ppl = result.int8.metrics["perplexity"]
        base_ppl = base_ppl or result.fp32.metrics["perplexity"]
        greedy = result.details["greedy_continuation"]
        print(f"{name:34}{path.stat().st_size / 1e6:6.1f}{ttft:9.2f}{gen.tokens_per_s:8.0f}{ppl:9.2f}"
              f"{ppl / base_ppl:10.4f}{100 * result.agreement:16.2f}%"
              f"{greedy['mean_tokens_until_difference']:8.1f}/{greedy['new_tokens']}")


# --- 2. one GEMM at M = 1 and M = 128 ------------------------------------------------------------------------

def gemm_session(kind: str, w: np.ndarray, threads: int, block: int = 32, level: int = 4):
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from app.core.tasks.runner import session_options

    k, n = w.shape
    if kind == "MatMul":
        inits, node = [numpy_helper.from_array(w, "W")], helper.make_node("MatMul", ["x", "W"], ["y"])
    elif kind == "DynamicQuantizeMatMul":
        s = np.abs(w).max(0) / 127
        inits = [numpy_helper.from_array(np.clip(np.round(w / s), -127, 127).astype(np.int8), "W"),
                 numpy_helper.from_array(s.astype(np.float32), "s"), numpy_helper.from_array(np.zeros(n, np.int8), "z")]
        node = helper.make_node(kind, ["x", "W", "s", "z"], ["y"], domain="com.microsoft")
    else:  # MatMulNBits, 8-bit symmetric blocks packed by ONNX Runtime's own quantizer
        from onnxruntime.capi._pybind_state import quantize_matmul_8bits

        blocks = (k + block - 1) // block
        packed, scales = np.zeros((n, blocks, block), np.uint8), np.zeros((n, blocks), np.float32)
        quantize_matmul_8bits(packed, np.ascontiguousarray(w), scales, np.zeros((n, blocks), np.uint8), block, n, k,
                              True)
        inits = [numpy_helper.from_array(packed, "W"), numpy_helper.from_array(scales.reshape(-1), "s")]
        node = helper.make_node(kind, ["x", "W", "s"], ["y"], domain="com.microsoft", K=k, N=n, bits=8,
                                block_size=block, accuracy_level=level)
    graph = helper.make_graph([node], "gemm", [helper.make_tensor_value_info("x", 1, ["M", k])],
                              [helper.make_tensor_value_info("y", 1, ["M", n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), session_options(threads), providers=["CPUExecutionProvider"])


def gemms(threads: int) -> None:
    rng = np.random.default_rng(0)
    kinds = [("MatMul FP32", "MatMul", {}), ("DynamicQuantizeMatMul", "DynamicQuantizeMatMul", {}),
             ("MatMulNBits 8b b32 L4", "MatMulNBits", dict(block=32, level=4)),
             ("MatMulNBits 8b b128 L4", "MatMulNBits", dict(block=128, level=4)),
             ("MatMulNBits 8b b32 L0", "MatMulNBits", dict(block=32, level=0))]
    print(f"\none GEMM, GPT-2-small shapes, {threads} threads: microseconds per call (relative error vs FP32)")
    print(f"{'K x N':>12}{'M':>5}" + "".join(f"{k[0]:>24}" for k in kinds))
    for k, n in ((768, 2304), (768, 3072), (3072, 768), (768, 50257)):
        w = (rng.standard_normal((k, n)) * 0.02).astype(np.float32)
        sessions = [gemm_session(kind, w, threads, **kw) for _, kind, kw in kinds]
        for m in (1, 128):
            x = rng.standard_normal((m, k)).astype(np.float32)
            ref = sessions[0].run(None, {"x": x})[0]
            cells = []
            for s in sessions:
                y = s.run(None, {"x": x})[0]
                reps = max(3, int(2e8 / (m * k * n)))
                t, _ = best_of(lambda: [s.run(None, {"x": x}) for _ in range(reps)], 3)
                cells.append(f"{t / reps * 1e6:10.0f} ({np.linalg.norm(y - ref) / np.linalg.norm(ref):.4f})")
            print(f"{f'{k} x {n}':>12}{m:>5}" + "".join(f"{c:>24}" for c in cells))


# --- 3. GPT-2-small shaped -----------------------------------------------------------------------------------

def gpt2_small(work: Path, threads: int, runs: int) -> None:
    import shutil

    import torch
    import transformers

    from app.core.calibration import build_calibration
    from app.core.export import ExportConfig, export_model
    from app.core.hub import ModelRef, local_source
    from app.core.quantize import QuantizeConfig, quantize_model
    from app.core.tasks import generation
    from app.core.tasks.runner import Runner

    torch.set_num_threads(threads)
    folder = work / "gpt2-small-random"
    folder.mkdir()
    torch.manual_seed(0)
    config = transformers.GPT2Config(eos_token_id=0, bos_token_id=0)  # 12 x 768, 12 heads, 1024 positions, 50257
    model = transformers.GPT2LMHeadModel(config).eval()
    model.config.architectures = ["GPT2LMHeadModel"]
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # a real byte-level BPE (its ids fit the 50257 table)
        shutil.copy2(TINY / name, folder / name)
    source = local_source(ModelRef.parse(str(folder)))
    dirs = {}
    for fused in (True, False):
        out = work / f"small-{'fused' if fused else 'plain'}"
        export_model(source, out, ExportConfig(fused=fused))
        dirs["fused" if fused else "plain"] = out
    spec = Runner.load(dirs["fused"]).spec
    int8 = work / "small-fused" / "int8.onnx"
    quantize_model(dirs["fused"] / "model.onnx", int8, build_calibration(dirs["fused"], spec), spec=spec,
                   force=QuantizeConfig(scale_outliers=False, split_outliers=False))
    fp32_bytes, int8_bytes = (dirs["fused"] / "model.onnx").stat().st_size, int8.stat().st_size
    generation.eos_id = lambda runner: None  # random weights: never stop early, always 128 tokens
    rng = np.random.default_rng(0)
    prompt32, prompt128 = rng.integers(1, 8000, 32).tolist(), rng.integers(1, 8000, 128).tolist()
    options = generation.GenerationOptions(max_new_tokens=128)
    rows = {}
    for name, (folder_, onnx_name) in {"ours FP32 (fused)": (dirs["fused"], "model.onnx"),
                                       "ours FP32 (plain ops)": (dirs["plain"], "model.onnx"),
                                       "ours INT8": (dirs["fused"], "int8.onnx")}.items():
        runner = Runner.load(folder_, onnx_name=onnx_name, threads=threads)
        generation.generate(runner, prompt32, replace(options, max_new_tokens=4))  # warm up
        seconds, _ = best_of(lambda: generation.generate(runner, prompt32, options), runs)
        ttft = min(generation.generate(runner, prompt128, replace(options, max_new_tokens=1)).ttft_ms
                   for _ in range(runs))
        rows[name] = (128 / seconds, ttft)
    linear = torch_linear_copy(model)
    qmodel = torch.ao.quantization.quantize_dynamic(linear, {torch.nn.Linear}, dtype=torch.qint8)
    for name, m in (("PyTorch FP32", model), ("PyTorch dynamic INT8", qmodel)):
        ids32, ids128 = torch.tensor([prompt32]), torch.tensor([prompt128])
        with torch.no_grad():
            m.generate(ids32, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
            seconds, _ = best_of(lambda: m.generate(ids32, attention_mask=torch.ones_like(ids32), max_new_tokens=128,
                                                    min_new_tokens=128, do_sample=False, pad_token_id=0), runs)
            ttft, _ = best_of(lambda: m(ids128, use_cache=True).logits[0, -1].argmax(), runs)
        rows[name] = (128 / seconds, ttft * 1000)
    base_speed, base_ttft = rows["ours FP32 (fused)"]
    print(f"\nGPT-2-small shaped (12 x 768, random weights), batch 1, {threads} threads, best of {runs}: "
          f"FP32 file {fp32_bytes / 1e6:.0f} MB, INT8 {int8_bytes / 1e6:.0f} MB ({100 * int8_bytes / fp32_bytes:.0f}%)")
    print(f"{'':24}{'tokens/s (32 + 128)':>22}{'vs ours FP32':>14}{'TTFT 128-token prompt':>24}{'vs ours FP32':>14}")
    for name, (speed, ttft) in rows.items():
        print(f"{name:24}{speed:22.1f}{speed / base_speed:13.2f}x{ttft:21.1f} ms{base_ttft / ttft:13.2f}x")


def torch_linear_copy(model):
    """The model with every GPT-2 Conv1D as an equivalent nn.Linear (dynamic quantization only touches Linear)."""
    import copy

    import torch
    from transformers.pytorch_utils import Conv1D

    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                linear = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                linear.weight.data, linear.bias.data = child.weight.data.T.contiguous(), child.bias.data
                setattr(parent, name, linear)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paragraphs", type=int, default=200, help="held-out SQuAD paragraphs for perplexity")
    parser.add_argument("--skip-tiny", action="store_true")
    parser.add_argument("--skip-gemm", action="store_true")
    parser.add_argument("--skip-small", action="store_true")
    args = parser.parse_args()
    print(machine.describe())
    with tempfile.TemporaryDirectory(prefix="bench-generation-") as tmp:
        work = Path(tmp)
        if not args.skip_tiny:
            tinygpt2(work, args.threads, args.runs, args.paragraphs)
        if not args.skip_gemm:
            gemms(args.threads)
        if not args.skip_small:
            gpt2_small(work, args.threads, args.runs)


if __name__ == "__main__":
    main()
