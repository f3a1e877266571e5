"""FP32 ONNX from our torch-free exporter vs transformers, for every architecture × head, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from app.core.errors import InvalidModelError, UnsupportedModelError
from app.core.export import ExportConfig, export_model
from app.core.hub import ModelRef, local_source
from conftest import shared_model
from parity import max_abs_diff, padded_batch, run_onnx, run_reference
from tinymodels import FAMILIES, HEADS, load_reference, make_tiny_model

TOL = 1e-4


def export(folder: Path, out: Path, **config):
    return export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(**config))


def check_parity(folder: Path, out: Path, *, lengths=(11, 7, 3), **config) -> dict[str, float]:
    result = export(folder, out, **config)
    ref = load_reference(folder)
    feed = padded_batch(ref.config.vocab_size, ref.config.pad_token_id or 0, lengths=lengths)
    diffs = max_abs_diff(run_onnx(result.onnx_path, feed), run_reference(ref, feed, result.spec.input_names),
                         feed["attention_mask"])
    assert diffs and max(diffs.values()) < TOL, diffs
    return diffs


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("family", FAMILIES)
def test_fp32_matches_transformers(tiny_models, tmp_path, family, head):
    check_parity(tiny_models(family, head), tmp_path / "onnx")


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "electra"])
def test_fused_graph_matches_transformers(tiny_models, tmp_path, family):
    check_parity(tiny_models(family, "sequence-classification"), tmp_path / "onnx", fused=True)
    ops = {n.op_type for n in onnx.load(tmp_path / "onnx" / "model.onnx").graph.node}
    assert {"MultiHeadAttention", "LayerNormalization"} <= ops and "Softmax" not in ops
    assert ops & {"BiasGelu", "FastGelu"}


@pytest.mark.parametrize("opset", [14, 18, 21])
@pytest.mark.parametrize("fused", [False, True])
def test_every_supported_opset_runs(tiny_models, tmp_path, opset, fused):
    # opset 18 counts the parts of an equal Split (num_outputs): QA's start/end and the packed QKV
    check_parity(tiny_models("bert", "question-answering"), tmp_path / "onnx", opset=opset, fused=fused)


def test_inputs_outputs_and_dynamic_axes(tiny_models, tmp_path):
    for family, inputs in (("bert", ["input_ids", "attention_mask", "token_type_ids"]),
                           ("distilbert", ["input_ids", "attention_mask"]),
                           ("roberta", ["input_ids", "attention_mask"])):
        result = export(tiny_models(family, "question-answering"), tmp_path / family)
        model = onnx.load(result.onnx_path)
        onnx.checker.check_model(model)
        assert [i.name for i in model.graph.input] == inputs
        assert [o.name for o in model.graph.output] == ["start_logits", "end_logits"]
        dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == ["batch_size", "sequence_length"]


def test_odd_models_match(tmp_path):
    """Multi-label, 5 labels, the tanh GELU, odd sizes, long positions, FP16 and BF16 checkpoints."""
    cases = {
        "multilabel": dict(family="bert", head="sequence-classification", num_labels=5, multi_label=True),
        "gelu_new": dict(family="roberta", head="sequence-classification", hidden_act="gelu_new"),
        "relu": dict(family="electra", head="token-classification", hidden_act="relu"),
        "long": dict(family="bert", head="base", max_positions=600, hidden=48, heads=6),
        "fp16": dict(family="distilbert", head="sequence-classification", dtype="float16"),
        "bf16": dict(family="roberta", head="question-answering", dtype="bfloat16"),
    }
    for name, opts in cases.items():
        folder = make_tiny_model(tmp_path / name, opts.pop("family"), opts.pop("head"), **opts)
        # FP16/BF16 references run in FP32 on the same (rounded) weights, so the tolerance holds.
        check_parity(folder, tmp_path / name / "onnx")


def test_export_writes_runtime_files_and_manifest(tiny_models, tmp_path):
    folder = tiny_models("bert", "sequence-classification")
    result = export(folder, tmp_path / "out")
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= files
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["export"]["opset"] == 17
    assert manifest["spec"]["labels"] == ["NEGATIVE", "POSITIVE", "NEUTRAL"]
    assert len(manifest["source"]["weights_sha256"]["model.safetensors"]) == 64
    assert manifest["tool"]["name"] == "pocket-nlp"
    assert result.onnx_bytes == (tmp_path / "out" / "model.onnx").stat().st_size
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_sharded_checkpoint(tiny_models, tmp_path):
    """A model saved in shards (model-0000x-of-0000y.safetensors + index) exports like the single file."""
    from safetensors.numpy import load_file, save_file

    src = tiny_models("bert", "question-answering")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (sharded / name).write_bytes((src / name).read_bytes())
    tensors = load_file(src / "model.safetensors")
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for file, part in shards.items():
        save_file({k: tensors[k] for k in part}, sharded / file)
    index = {"metadata": {}, "weight_map": {k: f for f, part in shards.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    a = run_onnx(export(src, tmp_path / "a").onnx_path, padded_batch(100, 0))
    b = run_onnx(export(sharded, tmp_path / "b").onnx_path, padded_batch(100, 0))
    np.testing.assert_array_equal(a["start_logits"], b["start_logits"])


def test_no_torch_or_transformers_in_the_app(tiny_models, tmp_path):
    folder = tiny_models("roberta", "sequence-classification")
    code = f"""
import sys
import app, app.cli, app.core.export, app.core.hub, app.core.spec
from app.core.export import export_model
from app.core.hub import resolve
export_model(resolve({str(folder)!r}), __import__('pathlib').Path({str(tmp_path / 'o')!r}))
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))
assert not bad, bad
print('clean')
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "clean" in out.stdout, out.stderr


def test_cli_export_json(tiny_models, tmp_path):
    folder = tiny_models("electra", "question-answering")
    out = subprocess.run([sys.executable, "-m", "app", "export", str(folder), "--out", str(tmp_path / "o"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert Path(summary["onnx_path"]).is_file()
    assert summary["manifest"]["spec"]["task"] == "question-answering"


# --- bad input: a specific error, a message that says what to do, no partial output ---------------

def _copy(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in src.iterdir():
        if p.is_file():
            (dest / p.name).write_bytes(p.read_bytes())
    return dest


def _expect_error(folder: Path, out: Path, error: type, *words: str):
    with pytest.raises(error) as info:
        export_model(local_source(ModelRef.parse(str(folder))), out)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    return message


def test_missing_config(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert", "base"), tmp_path / "m")
    (folder / "config.json").unlink()
    _expect_error(folder, tmp_path / "out", InvalidModelError, "config.json")


def test_truncated_and_corrupt_weights(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert", "base"), tmp_path / "m")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    _expect_error(folder, tmp_path / "out", InvalidModelError, "truncated", "Re-download")
    weights.write_bytes(data[:8] + b"{not json" + data[17:])
    _expect_error(folder, tmp_path / "out", InvalidModelError, "corrupt")
    weights.write_bytes(b"\x01")
    _expect_error(folder, tmp_path / "out", InvalidModelError, "truncated")


def test_missing_and_misshaped_tensors_listed_together(tiny_models, tmp_path):
    from safetensors.numpy import load_file, save_file

    folder = _copy(tiny_models("bert", "sequence-classification"), tmp_path / "m")
    tensors = load_file(folder / "model.safetensors")
    del tensors["bert.encoder.layer.1.attention.self.key.weight"]
    tensors["classifier.weight"] = np.zeros((7, 32), np.float32)
    save_file(tensors, folder / "model.safetensors")
    message = _expect_error(folder, tmp_path / "out", InvalidModelError, "layer.1.attention.self.key.weight",
                            "classifier.weight")
    assert "expected [3, 32]" in message


def test_unknown_architecture(tiny_models, tmp_path):
    folder = _copy(tiny_models("bert", "base"), tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    message = _expect_error(folder, tmp_path / "out", UnsupportedModelError, "t5", "DistilBert")
    assert len(message) < 400  # one sentence; the whole list travels with the error for "what is supported"
    with pytest.raises(UnsupportedModelError) as info:
        export_model(local_source(ModelRef.parse(str(folder))), tmp_path / "out")
    assert {"BertForSequenceClassification", "DistilBertForQuestionAnswering"} <= set(info.value.supported)
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["BertForMultipleChoice"]}))
    _expect_error(folder, tmp_path / "out", UnsupportedModelError, "BertForMultipleChoice")


def test_not_a_model_folder_and_pickle_only(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidModelError, match="not a model folder"):
        local_source(ModelRef.parse(str(empty)))
    (empty / "config.json").write_text("{}")
    (empty / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsupportedModelError, match="never loads pickles"):
        local_source(ModelRef.parse(str(empty)))


def test_unwritable_output(tiny_models, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    from app.core.errors import ExportError

    with pytest.raises(ExportError, match="Cannot write"):
        export(tiny_models("bert", "base"), blocker / "out")


def test_cancel_leaves_nothing(tiny_models, tmp_path):
    import threading

    from app.core.errors import CancelledError

    cancel = threading.Event()
    events = []

    def progress(p):
        events.append(p)
        if p.unit == "B" and p.done > 0:
            cancel.set()

    with pytest.raises(CancelledError):
        export_model(local_source(ModelRef.parse(str(tiny_models("bert", "base")))), tmp_path / "out",
                     progress=progress, cancel=cancel)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


# --- real checkpoints and full size ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["minilm-sst2", "minilm-squad"])
def test_real_checkpoints_match(tmp_path, name):
    folder = shared_model(name)
    result = export(folder, tmp_path / "onnx")
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    texts = ["A gripping, beautifully acted film.", "Dull.", "It is neither as funny nor as moving as it wants to be, "
             "but the cast is charming and the last act lands."]
    enc = tok(texts, padding=True, return_tensors="np")
    feed = {k: v.astype(np.int64) for k, v in enc.items()}
    diffs = max_abs_diff(run_onnx(result.onnx_path, feed),
                         run_reference(load_reference(folder), feed, result.spec.input_names), feed["attention_mask"])
    assert max(diffs.values()) < TOL, diffs


@pytest.mark.slow
def test_bert_base_size(tmp_path):
    folder = make_tiny_model(tmp_path / "bert-base", "bert", "sequence-classification", hidden=768, layers=12,
                             heads=12, intermediate=3072, max_positions=512, vocab_size=30522)
    check_parity(folder, tmp_path / "onnx", lengths=(128, 64, 9))
