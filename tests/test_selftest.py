"""`python -m app --self-test` from the checkout: the check the bundle runs, kept working as the core changes.

The window part (--no-gui is left out only in tests/test_bundle.py) would start its own event loop, which does
not mix with pytest-qt's application; the core part builds, converts and runs two tiny models in a few seconds.
"""

from __future__ import annotations

import json
import os

from app.cli import main
from app.selftest import build_tiny_bert


def test_self_test_passes_from_the_checkout(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "user-store"))
    assert main(["--self-test", "--no-gui"]) == 0
    out = capsys.readouterr().out
    assert "SELF-TEST PASSED" in out
    assert out.count("FP32:") == 2 and out.count("INT8:") == 2
    assert os.environ["POCKET_NLP_HOME"] == str(tmp_path / "user-store")  # restored
    assert not (tmp_path / "user-store").exists()  # the self-test never touches the user's store


def test_tiny_bert_has_the_names_transformers_uses(tmp_path):
    from safetensors.numpy import load_file

    folder = build_tiny_bert(tmp_path / "qa", "qa")
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"]
    tensors = load_file(str(folder / "model.safetensors"))
    assert tensors["bert.encoder.layer.0.attention.self.query.weight"].shape == (32, 32)
    assert tensors["bert.encoder.layer.1.intermediate.dense.weight"].shape == (64, 32)  # [out, in] like Linear
    assert tensors["qa_outputs.weight"].shape == (2, 32)
    assert "bert.pooler.dense.weight" not in tensors
