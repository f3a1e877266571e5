"""Reports: plain-words rows and headline, self-contained HTML with inline SVG charts, JSON that round-trips."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from app.core import report

BENCH = {
    "config": {"batch": 1, "seq_len": 128, "runs": 4, "threads": None},
    "fp32": {"file_bytes": 268_000_000, "load_ms": 410.0, "memory_bytes": 300_000_000, "p50_ms": 23.0,
             "p95_ms": 27.5, "throughput": 43.0, "latencies_ms": [22.0, 23.0, 23.5, 27.5]},
    "int8": {"file_bytes": 67_000_000, "load_ms": 150.0, "memory_bytes": 120_000_000, "p50_ms": 10.0,
             "p95_ms": 12.0, "throughput": 99.0, "latencies_ms": [9.5, 10.0, 10.2, 12.0]},
}
EVAL = {"task": "text-classification", "data": "/data/sst2-dev.tsv", "examples": 500,
        "fp32": {"metrics": {"accuracy": 0.87, "macro_f1": 0.869}},
        "int8": {"metrics": {"accuracy": 0.866, "macro_f1": 0.865}},
        "agreement": 0.996, "n_disagreements": 2,
        "disagreements": [{"where": "line 12", "input": "<b>not</b> bad & fine", "gold": ["POSITIVE"],
                           "fp32": "POSITIVE", "int8": "NEGATIVE", "fp32_score": 0.6, "int8_score": 0.55}]}
MODEL = {"name": "distilbert/sst2 <x>", "revision": "abc1234def", "task": "text-classification",
         "summary": "INT8 is 4.0x smaller.", "quantization": {"explanation": "Per-channel weights kept accuracy."}}


def test_rows_and_headline_speak_plainly():
    rows = {r["key"]: r for r in report.comparison_rows(BENCH, EVAL)}
    assert rows["file_bytes"]["fp32"] == pytest.approx(268.0) and rows["file_bytes"]["ratio"] == "4.0x smaller"
    assert rows["p50_ms"]["ratio"] == "2.3x faster"
    assert rows["throughput"]["ratio"] == "2.3x faster"
    assert rows["accuracy"]["fp32"] == pytest.approx(87.0) and rows["accuracy"]["ratio"] == "-0.4 points"
    assert rows["agreement"]["ratio"].startswith("99.6% of 500")
    assert report.headline(BENCH, EVAL) == "4.0x smaller, 2.3x faster, the same answer on 99.6% of examples"
    assert report.headline(None, None) == ""
    even = {"fp32": dict(BENCH["fp32"], p50_ms=10.0), "int8": dict(BENCH["int8"], p50_ms=10.1)}
    assert report.headline(even) == "4.0x smaller, about as fast"
    assert report.headline(None, None, agreement=1.0) == "The same answer on 100.0% of examples"


def test_ratio_words_edge_cases():
    assert report.ratio_words(None, 3, lower_is_better=True, unit="ms") == "–"
    assert report.ratio_words(10, 10.2, lower_is_better=True, unit="ms") == "about the same"
    assert report.ratio_words(10, 20, lower_is_better=True, unit="ms") == "2.0x slower"
    assert report.ratio_words(0, 1, lower_is_better=True, unit="MB") == "–"
    assert report.ratio_words(90.0, 90.01, lower_is_better=False, unit="%") == "same"


def test_html_is_self_contained_escaped_and_has_valid_svg(tmp_path):
    data = report.build_report(model=MODEL, bench=BENCH, evaluation=EVAL, created="2026-01-01T00:00:00+00:00")
    html_path, json_path = report.write_reports(data, tmp_path / "r.html")
    assert html_path.name == "r.html" and json_path.name == "r.json"
    page = html_path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "distilbert/sst2 &lt;x&gt;" in page and "&lt;b&gt;not&lt;/b&gt; bad &amp; fine" in page
    assert "4.0x smaller, 2.3x faster" in page and "Per-channel weights kept accuracy." in page
    svgs = [s.split("</svg>")[0] + "</svg>" for s in page.split("<svg")[1:]]
    assert len(svgs) == 5  # size, memory, p50, p95, distribution
    for svg in svgs:
        ET.fromstring("<svg" + svg)  # well-formed XML
    again = json.loads(json_path.read_text(encoding="utf-8"))
    assert again["headline"] == data["headline"] and again["bench"] == BENCH and again["evaluation"] == EVAL
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_without_measurements_still_reads_well(tmp_path):
    data = report.build_report(model={"name": "m", "task": "question-answering", "summary": "kept in FP32."})
    page = report.render_html(data)
    assert "kept in FP32." in page and "<svg" not in page
    assert data["comparison"] == [] and data["headline"] == ""
    with pytest.raises(ValueError, match="model"):
        report.build_report(model={})


def test_svg_charts_handle_missing_and_equal_values():
    ET.fromstring(report.svg_bars("Size", "MB", None, 3.0))
    ET.fromstring(report.svg_bars("Size", "MB", 0.0, 0.0))
    ET.fromstring(report.svg_latency_distribution([5.0, 5.0], [5.0]))
    assert report.svg_latency_distribution([], []) == ""
    assert sum(report.histogram([1, 2, 3, 4, 100], 1, 100, 10)) == 5


def test_report_module_never_imports_qt():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, app.core.report; print('PySide6' in sys.modules)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
