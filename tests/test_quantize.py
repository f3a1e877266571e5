"""INT8 quantization with the accuracy guard, the graph rewrites it relies on, and the store around it."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.core.calibration import build_calibration
from app.core.errors import CancelledError, ExportError, StoreError
from app.core.quantize import (Calibration, GuardTarget, Model, QuantizeConfig, collect, compare, outlier_channels,
                               rewrite, validate)
from app.core.quantize.rewrite import _per_row_int8
from app.core.spec import load_spec
from app.core.store import ConvertConfig, convert, delete_entry, find_entry, list_entries, store_root
from app.core.tasks.runner import new_session
from conftest import shared_data, shared_model


def _convert(folder: Path, root: Path, **config):
    return convert(str(folder), ConvertConfig(**config), root=root)


@pytest.fixture(scope="module")
def bert_entry(tiny_models, tmp_path_factory):
    return _convert(tiny_models("bert", "sequence-classification"), tmp_path_factory.mktemp("store"),
                    force=QuantizeConfig())


def test_convert_writes_a_complete_entry(bert_entry):
    entry = bert_entry
    assert (entry.fp32_dir / "model.onnx").is_file() and (entry.int8_dir / "model.onnx").is_file()
    for d in (entry.fp32_dir, entry.int8_dir):
        assert {"config.json", "tokenizer.json"} <= {p.name for p in d.iterdir()}
    m = entry.manifest
    assert m["optimize"]["fusions"] == {"MultiHeadAttention": 2, "LayerNormalization": 5, "BiasGelu": 2}
    q = m["quantization"]
    assert q["chosen"]["config"]["weight_type"] == "int8" and q["candidates"]
    assert 0 <= q["chosen"]["agreement"]["agreement"] <= 1
    assert m["files"]["int8_bytes"] < m["files"]["fp32_bytes"]
    assert entry.summary().startswith("tiny-bert-sequence-classification: INT8 is")
    nodes = {n.name: n for n in onnx.load(entry.int8_dir / "model.onnx").graph.node}
    quantized = [n for n in nodes.values() if n.op_type == "DynamicQuantizeMatMul"]
    assert quantized and any(len(n.input) == 5 for n in quantized)  # the bias Add folded into the MatMul
    assert nodes["/pooler/MatMul"].op_type == nodes["/classifier/MatMul"].op_type == "MatMul"  # head stays FP32


def test_built_in_calibration_is_thinned_for_large_models(bert_entry):
    import dataclasses

    spec = load_spec(bert_entry.fp32_dir)
    whole = build_calibration(bert_entry.fp32_dir, spec)
    assert whole.description == "built-in, 394 texts and phrases"
    large = dataclasses.replace(spec, num_layers=12, hidden_size=768, intermediate_size=3072)  # BERT-base
    thinned = build_calibration(bert_entry.fp32_dir, large)
    assert 80 < len(thinned.feeds) < 200 and thinned.description.startswith("built-in, ") and " of 394 " in \
        thinned.description
    own = build_calibration(bert_entry.fp32_dir, large, examples=["a text"] * 1000)  # a user's file: whole
    assert len(own.feeds) == 1000


def test_models_are_read_and_written_one_tensor_at_a_time(bert_entry, tmp_path, monkeypatch):
    """read_model locates the large initializers without loading them; write_model streams them back, inline or,
    past protobuf's limit (lowered here), as external data; a probe refers to them where they lie."""
    import app.core.onnxfile as onnxfile

    monkeypatch.setattr(onnxfile, "EAGER_BELOW", 1024)  # the tiny model's tensors count as large
    path = bert_entry.fp32_dir / "model.onnx"
    original = onnx.load(path)
    model = Model.read(path)
    assert not model.proto.graph.initializer and set(model.weights) == {t.name for t in original.graph.initializer}
    stored = [t for t in model.weights.values() if t.file is not None]
    assert stored and all(t.file == path.resolve() for t in stored)
    model.save(tmp_path / "copy.onnx")
    copy = onnx.load(tmp_path / "copy.onnx")
    assert copy.graph.node == original.graph.node and not (tmp_path / "copy.onnx.data").exists()
    arrays = {t.name: onnx.numpy_helper.to_array(t) for t in original.graph.initializer}
    for t in copy.graph.initializer:
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(t), arrays[t.name])

    monkeypatch.setattr(onnxfile, "PROTOBUF_LIMIT", 100_000)
    (tmp_path / "ext").mkdir()
    size = model.save(tmp_path / "ext" / "model.onnx")
    assert (tmp_path / "ext" / "model.onnx.data").stat().st_size > (tmp_path / "ext" / "model.onnx").stat().st_size
    assert size == sum(f.stat().st_size for f in (tmp_path / "ext").iterdir())
    external = Model.read(tmp_path / "ext" / "model.onnx")
    assert {t.file.name for t in external.weights.values() if t.file} == {"model.onnx.data"}
    for name, t in external.weights.items():
        np.testing.assert_array_equal(t.load(), arrays[name])

    spec = load_spec(bert_entry.fp32_dir)
    inline, ext = build_calibration(bert_entry.fp32_dir, spec), build_calibration(bert_entry.fp32_dir, spec)
    collect(path, inline)
    collect(tmp_path / "ext" / "model.onnx", ext)  # the probe beside an external-data model
    assert inline.peaks.keys() == ext.peaks.keys() and not list(tmp_path.glob("ext/.probe*"))
    for a, b in zip(inline.reference, ext.reference):
        np.testing.assert_array_equal(a["logits"], b["logits"])
    with pytest.raises(ValueError, match="not an ONNX model"):
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07\x3a\x7f")
        onnxfile.read_model(tmp_path / "bad.onnx")


def test_external_data_must_lie_beside_the_model(tmp_path):
    from app.core.onnxfile import read_model

    tensor = onnx.numpy_helper.from_array(np.zeros((200, 200), np.float32), "w")
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../../etc/passwd")
    graph = onnx.helper.make_graph([], "g", [], [], initializer=[tensor])
    onnx.save(onnx.helper.make_model(graph), tmp_path / "model.onnx")
    with pytest.raises(ValueError, match="not a file beside the model"):
        read_model(tmp_path / "model.onnx")


def test_a_model_past_protobufs_limit_converts_end_to_end(tiny_models, tmp_path, monkeypatch):
    """Over 2 GB (the limit lowered here), FP32 and INT8 keep their weights in model.onnx.data: converted,
    checksummed, run, and a damaged data file is caught."""
    import app.core.onnxfile as onnxfile
    from app.core.errors import DamagedEntryError
    from app.core.store import load_entry, verify_entry
    from app.core.tasks.runner import Runner

    monkeypatch.setattr(onnxfile, "PROTOBUF_LIMIT", 20_000)
    entry = _convert(tiny_models("bert", "sequence-classification"), tmp_path, force=QuantizeConfig())
    for d in (entry.fp32_dir, entry.int8_dir):
        assert (d / "model.onnx.data").stat().st_size > (d / "model.onnx").stat().st_size
        assert f"{d.name}/model.onnx.data" in entry.manifest["checksums"]
        assert not [p.name for p in d.iterdir() if p.name.startswith(".")]
    assert entry.manifest["files"]["fp32_bytes"] == onnxfile.file_bytes(entry.fp32_dir / "model.onnx")
    assert entry.manifest["files"]["int8_bytes"] == onnxfile.file_bytes(entry.int8_dir / "model.onnx")
    fp32, int8 = (Runner.load(d) for d in (entry.fp32_dir, entry.int8_dir))
    assert fp32.classify("a fine film")[0].label == int8.classify("a fine film")[0].label
    data = entry.int8_dir / "model.onnx.data"
    damaged = bytearray(data.read_bytes())
    damaged[100] ^= 0xFF
    data.write_bytes(bytes(damaged))
    with pytest.raises(DamagedEntryError):
        verify_entry(load_entry(entry.path))


def test_int8_answers_like_fp32_on_tiny_models(tiny_models, tmp_path):
    for family, head in (("roberta", "question-answering"), ("distilbert", "token-classification"),
                         ("electra", "base")):
        entry = _convert(tiny_models(family, head), tmp_path / "store", force=QuantizeConfig())
        spec = load_spec(entry.fp32_dir)
        cal = build_calibration(entry.fp32_dir, spec)
        collect(entry.fp32_dir / "model.onnx", cal)
        agreement = validate(entry.int8_dir / "model.onnx", cal, spec=spec)
        assert agreement.cosine > 0.95, (family, head, agreement)


def test_asymmetric_int8_weights_put_each_column_on_every_level(tiny_models, tmp_path):
    """A zero point per column: each column's [min, max] on -128..127, never a coarser step than symmetric, and
    ONNX Runtime's INT8 ops (QAttention, DynamicQuantizeMatMul) apply it."""
    from app.core.quantize.matmul import quantized_weight

    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32) + np.linspace(-1, 3, 32, dtype=np.float32)
    q, scale, zero = quantized_weight(w, QuantizeConfig(symmetric=False))
    _, symmetric_scale, _ = quantized_weight(w, QuantizeConfig())
    assert q.dtype == zero.dtype == np.int8 and zero.shape == scale.shape == (32,)
    assert np.all(np.abs((q.astype(np.float32) - zero) * scale - w) <= scale / 2 + 1e-6)
    assert np.all(scale <= symmetric_scale + 1e-9) and np.any(zero != 0)
    assert q.min() == -128 and q.max() == 127

    entry = _convert(tiny_models("bert", "question-answering"), tmp_path, force=QuantizeConfig(symmetric=False))
    assert "int8 asymmetric weights" in str(entry.manifest)
    model = onnx.load(str(entry.int8_dir / "model.onnx"))
    assert {"QAttention", "DynamicQuantizeMatMul"} <= {n.op_type for n in model.graph.node}
    assert any(t.name.endswith("_zero_point") and numpy_helper.to_array(t).any() for t in model.graph.initializer)
    spec = load_spec(entry.fp32_dir)
    cal = build_calibration(entry.fp32_dir, spec)
    collect(entry.fp32_dir / "model.onnx", cal)
    assert validate(entry.int8_dir / "model.onnx", cal, spec=spec).cosine > 0.95


def test_guard_keeps_fp32_when_no_setting_meets_the_target(tiny_models, tmp_path):
    entry = _convert(tiny_models("bert", "question-answering"), tmp_path,
                     target=GuardTarget(min_agreement=1.0, min_cosine=1.0))
    assert entry.int8_dir is None
    q = entry.manifest["quantization"]
    assert not q["passed"] and len(q["candidates"]) >= 4
    assert "kept in FP32" in q["explanation"] and "kept in FP32" in entry.summary()


def test_outlier_scaling_split_and_row_embeddings_are_exact_before_quantization(tiny_models, tmp_path):
    """The rewrites must not change FP32 answers: only quantization may."""
    entry = _convert(tiny_models("bert", "token-classification"), tmp_path, force=QuantizeConfig())
    spec = load_spec(entry.fp32_dir)
    cal = build_calibration(entry.fp32_dir, spec)
    collect(entry.fp32_dir / "model.onnx", cal)
    model = Model.read(entry.fp32_dir / "model.onnx")
    side, treated = rewrite(model, QuantizeConfig(scale_ratio=1.1, outlier_ratio=1.5, quantize_embeddings=False), cal)
    # The low ratios scale every LayerNorm-fed MatMul input and split the GELU-fed ones.
    restores = [n for n in model.nodes if n.op_type == "Mul" and n.name.endswith("/restore")]
    assert side and restores and len(treated) == len(side) + len(restores)
    # A GELU zeroes its own outlier channels (bias -1e6 there) instead of a Mul by a 0/1 mask after it.
    gelus = {n.output[0] for n in model.nodes if n.op_type == "BiasGelu"}
    assert [n for n in model.nodes if n.name.endswith("/outliers/BiasGelu")]
    assert not [n for n in model.nodes if n.op_type == "Mul" and n.input[0] in gelus]
    model.save(tmp_path / "rewritten.onnx")
    rewritten = Calibration(cal.feeds)
    collect(tmp_path / "rewritten.onnx", rewritten)
    for a, b in zip(cal.reference, rewritten.reference):
        np.testing.assert_allclose(a["logits"], b["logits"], atol=1e-4)
    model = Model.read(entry.fp32_dir / "model.onnx")
    rewrite(model, QuantizeConfig(split_outliers=False), cal)  # int8 embedding rows, one scale per row
    model.save(tmp_path / "embeddings.onnx")
    assert validate(tmp_path / "embeddings.onnx", cal, spec=spec).cosine > 0.999
    # Each table is read by one GatherBlockQuantized whose block is the whole row: the per-row int8 numbers.
    tables = [n for n in model.nodes if n.op_type == "GatherBlockQuantized"]
    assert tables and not [n for n in model.nodes if n.op_type == "Cast" and "/int8/" in n.name]
    name = tables[0].input[0].removesuffix(".uint8")
    table = Model.read(entry.fp32_dir / "model.onnx").load(name)
    q, scale = _per_row_int8(table, 127)
    ids = np.array([[0, 3, len(table) - 1]], np.int64)
    graph = helper.make_graph([tables[0]], "g", [helper.make_tensor_value_info(tables[0].input[1], TensorProto.INT64,
                                                                             [1, 3])],
                              [helper.make_tensor_value_info(tables[0].output[0], TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(model.load(name + ".uint8"), name + ".uint8"),
                               numpy_helper.from_array(model.load(name + ".scale"), name + ".scale")])
    session = new_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.microsoft", 1)])
                          .SerializeToString())
    np.testing.assert_array_equal(session.run(None, {tables[0].input[1]: ids})[0], (q * scale)[ids])


def test_outlier_channels():
    x = np.ones((10, 8), np.float32)
    x[3, 5], x[1, 2] = 40.0, 9.0
    peak = np.abs(x).max(axis=0)
    assert outlier_channels(peak, ratio=4.0, limit=8) == [5, 2]
    assert outlier_channels(peak, ratio=4.0, limit=1) == [5]
    assert outlier_channels(peak, ratio=50.0, limit=8) == []


def _spec(task: str):
    from types import SimpleNamespace

    return SimpleNamespace(task=task, multi_label=False, labels=())


def test_compare_counts_label_and_span_flips():
    feeds = [{"attention_mask": np.ones((2, 4), np.int64)}]
    ref = [{"logits": np.array([[2.0, -1.0], [0.1, 0.0]])}]
    out = [{"logits": np.array([[1.9, -1.1], [0.0, 0.1]])}]
    a = compare(_spec("text-classification"), ref, out, feeds)
    assert a.agreement == 0.5 and a.examples == 2
    start = np.array([[0.0, 5.0, 0.0, 0.0]])
    end = np.array([[0.0, 0.0, 5.0, 0.0]])
    qa_feeds = [{"attention_mask": np.ones((1, 4), np.int64)}]
    same = compare(_spec("question-answering"), [{"start_logits": start, "end_logits": end}],
                   [{"start_logits": start + 0.01, "end_logits": end}], qa_feeds)
    elsewhere = np.array([[0.0, 0.0, 0.0, 9.0]])
    shorter = compare(_spec("question-answering"), [{"start_logits": start, "end_logits": end}],
                      [{"start_logits": start, "end_logits": end[:, ::-1]}], qa_feeds)  # span (1, 1) inside (1, 2)
    moved = compare(_spec("question-answering"), [{"start_logits": start, "end_logits": end}],
                    [{"start_logits": elsewhere, "end_logits": elsewhere}], qa_feeds)  # span (3, 3)
    assert same.agreement == 1.0 and shorter.agreement == 1.0 and moved.agreement == 0.0


def test_quantize_config_validates_fields():
    with pytest.raises(ValueError, match="weight_type"):
        QuantizeConfig(weight_type="int4")
    with pytest.raises(ValueError, match="min_agreement"):
        GuardTarget(min_agreement=2)


# --- the store -----------------------------------------------------------------------------------------------

def test_store_root_follows_pocket_nlp_home(tmp_path, monkeypatch):
    monkeypatch.setenv("POCKET_NLP_HOME", str(tmp_path / "elsewhere"))
    assert store_root() == tmp_path / "elsewhere"


def test_valid_entry_is_reused_and_listed(tiny_models, tmp_path):
    folder = tiny_models("distilbert", "sequence-classification")
    first = _convert(folder, tmp_path, force=QuantizeConfig())
    stamp = (first.path / "manifest.json").stat().st_mtime_ns
    again = _convert(folder, tmp_path, force=QuantizeConfig())
    assert again.path == first.path and (again.path / "manifest.json").stat().st_mtime_ns == stamp
    assert [e.path for e in list_entries(tmp_path)] == [first.path]
    assert find_entry(str(folder), tmp_path).path == first.path
    assert find_entry(first.path.name, tmp_path).path == first.path
    other = _convert(folder, tmp_path, force=QuantizeConfig(reduce_range=True))  # new settings: rebuilt
    assert other.manifest["request"] != first.manifest["request"] and len(list_entries(tmp_path)) == 1
    delete_entry(other)
    assert list_entries(tmp_path) == [] and [p.name for p in tmp_path.iterdir() if p.name != ".hashes.json"] == []


def test_cancel_leaves_the_store_as_it_was(tiny_models, tmp_path):
    cancel = threading.Event()

    def progress(p):
        if p.stage == "quantize":
            cancel.set()

    with pytest.raises(CancelledError):
        convert(str(tiny_models("bert", "sequence-classification")), ConvertConfig(), progress=progress,
                cancel=cancel, root=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.name != ".hashes.json"] == []  # only the hash cache


def test_second_conversion_of_the_same_model_is_refused(tiny_models, tmp_path):
    folder = tiny_models("electra", "sequence-classification")
    started = threading.Event()
    release = threading.Event()
    errors = []

    def slow_progress(p):
        if p.stage == "quantize" and not started.is_set():
            started.set()
            release.wait(30)

    def first():
        try:
            _convert_with(folder, tmp_path, slow_progress)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def _convert_with(f, root, progress):
        convert(str(f), ConvertConfig(force=QuantizeConfig()), progress=progress, root=root)

    worker = threading.Thread(target=first)
    worker.start()
    assert started.wait(60)
    code = ("import sys; from app.core.store import convert; from app.core.errors import StoreError\n"
            f"try:\n    convert({str(folder)!r}, root=__import__('pathlib').Path({str(tmp_path)!r}))\n"
            "except StoreError as e:\n    print('refused:', e); sys.exit(3)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    release.set()
    worker.join(60)
    assert out.returncode == 3 and "already being converted" in out.stdout, out.stdout + out.stderr
    assert not errors and len(list_entries(tmp_path)) == 1


def test_full_disk_and_unwritable_store_leave_nothing(tiny_models, tmp_path, monkeypatch):
    import errno

    from app.core.export import graph

    folder = tiny_models("bert", "base")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(StoreError, match="Cannot create the model store"):
        convert(str(folder), root=blocker / "store")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(graph.Graph, "save", full)
    root = tmp_path / "store"
    with pytest.raises((StoreError, ExportError)) as info:
        convert(str(folder), root=root)
    assert "space" in str(info.value).lower() or "disk" in str(info.value).lower()
    assert [p.name for p in root.iterdir() if p.name != ".hashes.json"] == []


def test_cpus_whose_u8s8_products_saturate_get_a_ladder_that_cannot():
    """x86 without VNNI sums u8×s8 pairs in int16: there every rung has uint8 (exact) or 7-bit weights."""
    from app.core.quantize import candidate_ladder, keep_fp32_ladder

    saturating = candidate_ladder(saturating=True)
    assert all(c.weight_type == "uint8" or c.reduce_range for c in saturating)
    assert saturating[0].scale_outliers and saturating[-1].reduce_range
    assert candidate_ladder(saturating=False)[0].weight_type == "int8"  # VNNI, AMX, ARM: the fastest first
    assert all(c.weight_type == candidate_ladder()[0].weight_type and not c.symmetric
               for c in keep_fp32_ladder(list("abcdef")))


# --- real checkpoint -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_real_sst2_guard_keeps_99_5_percent_agreement(tmp_path):
    """The guard's choice on minilm-sst2 agrees with FP32 on >= 99.5% of SST-2 (one example at a time)."""
    import csv

    folder, data = shared_model("minilm-sst2"), shared_data("sst2_eval_2000.tsv")
    entry = _convert(folder, tmp_path)
    assert entry.int8_dir is not None, entry.summary()
    with open(data, encoding="utf-8") as f:
        texts = [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]
    spec = load_spec(entry.fp32_dir)
    cal = build_calibration(entry.fp32_dir, spec, examples=texts)
    collect(entry.fp32_dir / "model.onnx", cal, sample_tokens=16)
    agreement = validate(entry.int8_dir / "model.onnx", cal, spec=spec)
    assert agreement.agreement >= 0.995, agreement
    assert entry.manifest["files"]["int8_bytes"] <= 0.27 * entry.manifest["files"]["fp32_bytes"]


def test_real_conll_guard_quantizes_and_keeps_entities(tmp_path):
    """minilm-conll gets INT8 on every CPU (FP32's near-ties, which any setting tips, do not veto it), and on
    600 CoNLL-2003 sentences its entities are those of FP32 in >= 99% of sentences, F1 within 0.3 points."""
    from app.core.tasks import ner
    from app.core.tasks.runner import Runner

    entry = _convert(shared_model("minilm-conll"), tmp_path)
    assert entry.int8_dir is not None, entry.summary()
    fp32, int8 = Runner.load(entry.fp32_dir, threads=2), Runner.load(entry.int8_dir, threads=2)
    data = ner.load_conll(shared_data("conll2003_valid.txt"), labels=fp32.spec.labels)
    result = ner.evaluate_ner(fp32, int8, data, limit=600)
    assert result.agreement >= 0.99, result.disagreements[:3]
    assert result.fp32.metrics["f1"] - result.int8.metrics["f1"] <= 0.3


def test_the_guard_measures_entities_and_embeddings_their_own_way(tiny_models, tmp_path):
    """NER: identical entity spans; embeddings: the same nearest neighbour over the whole calibration set."""
    ner = _convert(tiny_models("bert", "token-classification"), tmp_path / "ner", force=QuantizeConfig())
    spec = load_spec(ner.fp32_dir)
    cal = build_calibration(ner.fp32_dir, spec)
    assert cal.description.startswith("built-in, ") and "sentences" in cal.description
    collect(ner.fp32_dir / "model.onnx", cal)
    assert validate(ner.fp32_dir / "model.onnx", cal, spec=spec).agreement == 1.0  # FP32 against itself
    emb = _convert(tiny_models("bert", "base"), tmp_path / "emb", force=QuantizeConfig())
    assert emb.manifest["head"]["mode"] == "mean" and "default" in emb.manifest["head"]["description"]
    spec = load_spec(emb.fp32_dir)
    cal = build_calibration(emb.fp32_dir, spec)
    collect(emb.fp32_dir / "model.onnx", cal)
    whole = validate(emb.int8_dir / "model.onnx", cal, spec=spec, target=GuardTarget(min_agreement=1.0))
    assert whole.examples == len(cal.feeds)  # no early stop: neighbours need every example
