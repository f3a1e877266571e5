"""Use it: which nodes are INT8 and why, and a code snippet that runs an entry's folder with onnxruntime alone."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.core.precisions import code_snippet, node_precisions
from app.core.quantize import QuantizeConfig
from app.core.store import ConvertConfig, convert


@pytest.mark.parametrize("family, head", [("bert", "sequence-classification"), ("distilbert", "question-answering"),
                                          ("roberta", "token-classification"), ("bert", "base")])
def test_the_snippet_runs_the_int8_folder_on_its_own(tiny_models, tmp_path, family, head):
    entry = convert(str(tiny_models(family, head)), ConvertConfig(force=QuantizeConfig(keep_fp32=())),
                    root=tmp_path / "store")
    code = code_snippet(entry.int8_dir, entry.manifest["spec"])
    assert "import torch" not in code and "transformers" not in code
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip(), run.stderr


def test_the_snippet_generates_text_with_a_decoder(tmp_path):
    from conftest import shared_model

    entry = convert(str(shared_model("tinygpt2-en")), root=tmp_path / "store")
    folder = entry.int8_dir or entry.fp32_dir  # FP32 where the guard refuses INT8 (x86 without VNNI)
    run = subprocess.run([sys.executable, "-c", code_snippet(folder, entry.manifest["spec"])],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.startswith("The city council approved"), run.stderr


def test_inspect_from_the_command_line(tiny_models, tmp_path, monkeypatch, capsys):
    from app.cli import main

    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "store"))
    folder = str(tiny_models("bert", "sequence-classification"))
    assert main(["inspect", folder, "-q"]) == 0
    out = capsys.readouterr().out
    assert "run in INT8" in out and "FP32" in out
    assert main(["inspect", folder, "--code", "-q"]) == 0
    assert "import onnxruntime" in capsys.readouterr().out


def test_inspect_lists_int8_and_fp32_nodes_with_reasons(tiny_models, tmp_path):
    entry = convert(str(tiny_models("bert", "sequence-classification")), root=tmp_path / "store")
    rows = node_precisions(entry.int8_dir / "model.onnx", entry.manifest["quantization"])
    precisions = {r.precision for r in rows}
    assert precisions == {"INT8", "FP32"} and all(r.why for r in rows)
    assert any(r.op == "DynamicQuantizeMatMul" for r in rows)
    assert any("task head" in r.why for r in rows if r.precision == "FP32")
