"""The benchmark engine and the convert / bench / predict commands on tiny models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.core.bench import BenchConfig, benchmark, quantized_kernels
from app.core.cpu import int8_path
from app.core.errors import InputError
from app.core.quantize import QuantizeConfig
from app.core.store import ConvertConfig, convert


@pytest.fixture(scope="module")
def entry(tiny_models, tmp_path_factory):
    return convert(str(tiny_models("roberta", "sequence-classification")), ConvertConfig(force=QuantizeConfig()),
                   root=tmp_path_factory.mktemp("store"))


def test_benchmark_measures_both_models(entry):
    events = []
    result = benchmark(entry, BenchConfig(batch=2, seq_len=16, runs=4, threads=1), progress=events.append)
    for m in (result.fp32, result.int8):
        assert m.file_bytes > 0 and m.load_ms > 0 and len(m.latencies_ms) == 4
        assert m.p95_ms >= m.p50_ms > 0 and m.throughput > 0
    ratios = result.ratios()
    assert set(ratios) == {"size", "load", "memory", "p50", "p95", "throughput"}
    assert ratios["size"] > 1
    assert events[-1].done == events[-1].total
    data = result.to_dict()
    assert data["config"]["threads"] == 1 and data["int8"]["p50_ms"] > 0
    engine = data["engine"]
    assert engine["runtime"].startswith("onnxruntime ") and engine["provider"] == "CPUExecutionProvider"
    assert engine["int8_kernels"] == quantized_kernels(entry.int8_dir / "model.onnx")
    assert engine["int8_kernels"].get("DynamicQuantizeMatMul", 0) + engine["int8_kernels"].get("MatMulInteger", 0) > 0
    assert engine["int8_path"] == int8_path() and json.loads(json.dumps(data))["engine"] == engine


def test_engine_reports_kernels_and_the_cpus_int8_path(entry):
    assert quantized_kernels(entry.fp32_dir / "model.onnx") == {}  # FP32 runs no quantized kernel
    xeon = {"avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
    assert int8_path(xeon) == "AMX"
    assert int8_path(xeon - {"amx_tile", "amx_int8"}) == "AVX-512 VNNI"
    assert int8_path({"avx2", "avx_vnni"}) == "AVX-VNNI"
    assert "can saturate" in int8_path({"avx2", "fma"})  # the guard's 7-bit rung is for these CPUs
    assert int8_path(None).startswith("unknown")  # flags unreadable: said, not guessed
    assert int8_path() != ""


def test_bench_config_rejects_bad_values(entry):
    with pytest.raises(ValueError, match="runs"):
        BenchConfig(runs=0)
    with pytest.raises(InputError, match="longer than this model accepts"):
        benchmark(entry, BenchConfig(seq_len=4096, runs=1))


def test_cli_convert_bench_predict(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "store"))
    folder = str(tiny_models("bert", "question-answering"))

    def run(*args):
        out = subprocess.run([sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        return out

    converted = json.loads(run("convert", folder, "--force-int8", "--json", "-q").stdout)
    assert converted["quantization"]["chosen"] and converted["optimize"]["fusions"]
    plain = run("convert", folder, "--force-int8").stdout  # reused: same entry, plain words
    assert "INT8 is" in plain and "accuracy guard" in plain
    bench = json.loads(run("bench", folder, "--runs", "2", "--seq-len", "16", "--json", "-q").stdout)
    assert bench["ratios"]["size"] > 1 and bench["engine"]["provider"] == "CPUExecutionProvider"
    table = run("bench", folder, "--runs", "2", "--seq-len", "16", "-q").stdout
    assert "latency p50" in table and "x smaller" in table
    assert "CPUExecutionProvider" in table and "DynamicQuantizeMatMul" in table and "MLAS INT8 path" in table
    answer = run("predict", folder, "--question", "Where is the film?", "--context", "The film is in Paris.").stdout
    assert "FP32" in answer and "INT8" in answer


def test_cli_error_is_readable(tmp_path):
    out = subprocess.run([sys.executable, "-m", "app", "convert", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and out.stderr.startswith("Error: ") and "config.json" in out.stderr
    assert "Traceback" not in out.stderr
