"""FP32 vs INT8 reports: one dict → JSON, or a self-contained HTML page with inline SVG charts.

`build_report(model=..., bench=..., evaluation=...)` takes plain dicts (a BenchResult's and an EvalResult's
`to_dict()`), so the report can be written from the GUI, the CLI or a saved JSON alike. `comparison_rows` and
`headline` are the plain-words figures both the GUI table and the report show ("4.0x smaller, 2.3x faster, the
same answer on 99.6% of examples"). The HTML needs nothing installed to read: no scripts, no external files,
charts drawn here as SVG. Pure Python, no Qt.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
import json
import math
import os
from pathlib import Path

from app import __version__

FP32_COLOR = "#5b7db1"
INT8_COLOR = "#e07b39"

# (key in a bench side, label, unit, lower is better)
BENCH_METRICS = (("file_bytes", "File size", "MB", True), ("load_ms", "Load time", "ms", True),
                 ("memory_bytes", "Memory", "MB", True), ("p50_ms", "Latency p50", "ms", True),
                 ("p95_ms", "Latency p95", "ms", True), ("throughput", "Throughput", "examples/s", False))


# What each measure means, in plain words: tooltips in the app, hover titles in the HTML report.
GLOSSARY = {
    "file_bytes": "How much disk space the model file takes.",
    "load_ms": "How long it takes to open the model before its first answer (measured in a fresh process).",
    "memory_bytes": "How much memory the loaded model adds to the program that runs it.",
    "p50_ms": "Latency p50 (the median): half of the model calls were faster than this.",
    "p95_ms": "Latency p95: 95 of 100 model calls were at least this fast; the slow tail a user may notice.",
    "throughput": "How many examples the model answers per second, one call after another.",
    "agreement": "The share of your examples on which INT8 gives exactly the answer FP32 gives.",
    "score": "How sure the model is of its answer, from 0 to 1 (for labels, the probability).",
    "batch": "How many texts go into one model call.",
    "seq_len": "How many tokens (word pieces) each text has in the benchmark; longer texts take longer.",
}


def glossary(key: str, name: str = "") -> str:
    """The plain-words meaning of a measure (a bench key, "agreement", or a task metric's display name)."""
    if key in GLOSSARY:
        return GLOSSARY[key]
    return (f"{name}: how often the model's answer matches the expected one in your labelled file, as the "
            "standard benchmark for this task counts it." if name else "")


def _task_metrics(evaluation: dict) -> dict[str, tuple[str, float]]:
    """The evaluated task's metrics: key → (display name, factor to % or points)."""
    from app.core.tasks import TASKS, get_task

    task = evaluation.get("task")
    return get_task(task).metrics if task in TASKS else {}


# --- numbers ---------------------------------------------------------------------------------------------------

def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _scaled(key: str, v: float | None) -> float | None:
    if v is None:
        return None
    return v / 1e6 if key.endswith("_bytes") else v


def format_value(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "%":
        return f"{v:.1f}%"
    if unit == "MB":
        return f"{v:.1f} MB"
    if unit == "ms":
        return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"
    if unit == "examples/s":
        return f"{v:.1f}/s"
    return f"{v:.4g}"


def ratio_words(fp32: float | None, int8: float | None, *, lower_is_better: bool, unit: str) -> str:
    """'4.0x smaller' / '2.3x faster' / '+0.4 points'; '–' when a side is missing."""
    if fp32 is None or int8 is None:
        return "–"
    if unit == "%":
        d = int8 - fp32
        return "same" if abs(d) < 0.05 else f"{d:+.1f} points"
    if fp32 <= 0 or int8 <= 0:
        return "–"
    factor = fp32 / int8 if lower_is_better else int8 / fp32
    if abs(factor - 1) < 0.05:
        return "about the same"
    if unit == "MB":
        return f"{factor:.1f}x smaller" if factor > 1 else f"{1 / factor:.1f}x larger"
    if unit in ("ms", "examples/s"):
        return f"{factor:.1f}x faster" if factor > 1 else f"{1 / factor:.1f}x slower"
    return f"{factor:.1f}x better" if factor > 1 else f"{1 / factor:.1f}x worse"


def comparison_rows(bench: dict | None, evaluation: dict | None = None) -> list[dict]:
    """One row per metric: {metric, unit, fp32, int8, ratio} (numbers in display units: MB, ms, %)."""
    rows = []
    if bench:
        a, b = bench.get("fp32") or {}, bench.get("int8") or {}
        for key, name, unit, lower in BENCH_METRICS:
            v32, v8 = _scaled(key, _num(a.get(key))), _scaled(key, _num(b.get(key)))
            if v32 is None and v8 is None:
                continue
            rows.append({"metric": name, "key": key, "unit": unit, "fp32": v32, "int8": v8,
                         "ratio": ratio_words(v32, v8, lower_is_better=lower, unit=unit)})
    if evaluation:
        agreement = _num(evaluation.get("agreement"))
        if agreement is not None:
            rows.append({"metric": "Same answer as FP32", "key": "agreement", "unit": "%", "fp32": None,
                         "int8": agreement * 100, "ratio": f"{agreement:.1%} of {evaluation.get('examples', '?')}"})
        m32 = ((evaluation.get("fp32") or {}).get("metrics")) or {}
        m8 = ((evaluation.get("int8") or {}).get("metrics")) or {}
        for key, (name, scale) in _task_metrics(evaluation).items():
            v32, v8 = _num(m32.get(key)), _num(m8.get(key))
            if v32 is None and v8 is None:
                continue
            v32, v8 = (v * scale if v is not None else None for v in (v32, v8))  # in % or points
            rows.append({"metric": name, "key": key, "unit": "%", "fp32": v32, "int8": v8,
                         "ratio": ratio_words(v32, v8, lower_is_better=False, unit="%")})
    return rows


def headline(bench: dict | None, evaluation: dict | None = None, agreement: float | None = None) -> str:
    """'4.0x smaller, 2.3x faster, the same answer on 99.6% of examples' from what is known."""
    parts = []
    rows = {r["key"]: r for r in comparison_rows(bench, evaluation)}
    size, p50 = rows.get("file_bytes"), rows.get("p50_ms")
    if size and size["fp32"] and size["int8"]:
        parts.append(ratio_words(size["fp32"], size["int8"], lower_is_better=True, unit="MB"))
    if p50 and p50["fp32"] and p50["int8"]:
        speed = ratio_words(p50["fp32"], p50["int8"], lower_is_better=True, unit="ms")
        parts.append("about as fast" if speed == "about the same" else speed)
    if evaluation and _num(evaluation.get("agreement")) is not None:
        agreement = float(evaluation["agreement"])
    if agreement is not None:
        parts.append(f"the same answer on {agreement * 100:.1f}% of examples")
    if not parts:
        return ""
    text = ", ".join(parts)
    return text[0].upper() + text[1:]


# --- the report ------------------------------------------------------------------------------------------------

def build_report(*, model: dict, bench: dict | None = None, evaluation: dict | None = None,
                 verdict: dict | None = None, created: str | None = None) -> dict:
    """Everything a report says, as one JSON-ready dict."""
    if not isinstance(model, dict) or not model.get("name"):
        raise ValueError("model: needs at least a 'name'")
    return {
        "format": "pocket-nlp-report/1",
        "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "app_version": __version__,
        "model": model,
        "verdict": verdict,
        "headline": headline(bench, evaluation, _num(model.get("agreement"))),
        "comparison": comparison_rows(bench, evaluation),
        "bench": bench,
        "evaluation": evaluation,
    }


def entry_report(entry, *, bench: dict | None = None, evaluation: dict | None = None) -> dict:
    """The report of a store entry: what the GUI's Compare page and `python -m app report` write alike. Without
    `bench`/`evaluation`, the measurements kept with the entry are used (the last benchmark, the latest
    evaluation)."""
    from app.core.store import load_results
    from app.core.verdict import verdict

    kept = load_results(entry)
    bench = bench if bench is not None else kept["bench"]
    evaluation = evaluation if evaluation is not None else next(iter(kept["evaluations"]), None)
    model = {"name": str(entry.name), "revision": entry.revision, "task": entry.task, "path": str(entry.path),
             "summary": entry.summary(), "fp32_bytes": entry.model_bytes("fp32"),
             "int8_bytes": entry.model_bytes("int8") if entry.int8_dir else 0,
             "quantization": entry.manifest.get("quantization")}
    return build_report(model=model, bench=bench, evaluation=evaluation,
                        verdict=verdict(entry.manifest, evaluation).to_dict())


def _atomic_write(path: Path, text: str) -> Path:
    from app.core.errors import InputError

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise InputError(f"Cannot write the report to {path} ({e.strerror or e}). Choose a file in a folder you can "
                         "write to.") from e
    return path


def write_json(report: dict, path: Path) -> Path:
    return _atomic_write(path, json.dumps(report, indent=2, default=str) + "\n")


def write_html(report: dict, path: Path) -> Path:
    return _atomic_write(path, render_html(report))


def write_reports(report: dict, path: Path) -> tuple[Path, Path]:
    """`path` with .html and .json suffixes: the two files someone without the app can read."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix.lower() in (".html", ".htm", ".json") else path
    return write_html(report, stem.with_suffix(".html")), write_json(report, stem.with_suffix(".json"))


# --- SVG charts ------------------------------------------------------------------------------------------------

def _e(x) -> str:
    return html.escape(str(x), quote=True)


def svg_bars(title: str, unit: str, fp32: float | None, int8: float | None, *, width: int = 300,
             height: int = 200) -> str:
    """Two vertical bars (FP32, INT8) with their values on top."""
    values = [v for v in (fp32, int8) if v is not None]
    top = max(values) if values else 1.0
    top = top if top > 0 else 1.0
    pad_top, pad_bottom, bar_w = 44, 30, 70
    plot_h = height - pad_top - pad_bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">{_e(title)}</text>',
             f'<line x1="20" y1="{height - pad_bottom}" x2="{width - 20}" y2="{height - pad_bottom}" '
             'stroke="#999" stroke-width="1"/>']
    for i, (name, v, color) in enumerate((("FP32", fp32, FP32_COLOR), ("INT8", int8, INT8_COLOR))):
        cx = width * (i + 1) / 3
        h = 0 if v is None else max(1.0, plot_h * v / top)
        y = height - pad_bottom - h
        parts.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" rx="3" '
                     f'fill="{color}"><title>{name}: {_e(format_value(v, unit))}</title></rect>')
        parts.append(f'<text x="{cx:.1f}" y="{y - 6:.1f}" text-anchor="middle" font-size="12">'
                     f'{_e(format_value(v, unit))}</text>')
        parts.append(f'<text x="{cx:.1f}" y="{height - 10}" text-anchor="middle" font-size="12">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: list[float], lo: float, hi: float, bins: int) -> list[int]:
    counts = [0] * bins
    span = (hi - lo) or 1.0
    for v in values:
        counts[min(bins - 1, max(0, int((v - lo) / span * bins)))] += 1
    return counts


def svg_latency_distribution(fp32: list[float], int8: list[float], *, bins: int = 24, width: int = 640,
                             height: int = 240) -> str:
    """Overlaid histograms of per-run latencies (ms) for both models."""
    values = [v for v in (*fp32, *int8) if _num(v) is not None]
    title = "Latency distribution (ms per run)"
    if not values:
        return ""
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo * 0.95, hi * 1.05 + 1e-6
    left, right, pad_top, pad_bottom = 40, 16, 40, 34
    plot_w, plot_h = width - left - right, height - pad_top - pad_bottom
    c32, c8 = histogram(list(fp32), lo, hi, bins), histogram(list(int8), lo, hi, bins)
    top = max(max(c32), max(c8), 1)
    bw = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
             f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">{title}</text>',
             f'<line x1="{left}" y1="{height - pad_bottom}" x2="{width - right}" y2="{height - pad_bottom}" '
             'stroke="#999"/>']
    for counts, color in ((c32, FP32_COLOR), (c8, INT8_COLOR)):
        for i, c in enumerate(counts):
            if not c:
                continue
            h = plot_h * c / top
            parts.append(f'<rect x="{left + i * bw:.1f}" y="{height - pad_bottom - h:.1f}" width="{bw - 1:.1f}" '
                         f'height="{h:.1f}" fill="{color}" fill-opacity="0.6"/>')
    for frac in (0, 0.5, 1):
        x = left + plot_w * frac
        parts.append(f'<text x="{x:.1f}" y="{height - pad_bottom + 16}" text-anchor="middle" font-size="11">'
                     f'{lo + (hi - lo) * frac:.2f}</text>')
    parts.append(f'<text x="{left - 6}" y="{pad_top + 4}" text-anchor="end" font-size="11">{top}</text>')
    for i, (name, color) in enumerate((("FP32", FP32_COLOR), ("INT8", INT8_COLOR))):
        x = width - right - 140 + i * 70
        parts.append(f'<rect x="{x}" y="26" width="12" height="12" fill="{color}"/>'
                     f'<text x="{x + 16}" y="36" font-size="12">{name}</text>')
    parts.append("</svg>")
    return "".join(parts)


# --- HTML ------------------------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.5 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #1d1f23;
       background: #f3f4f6; }
main { max-width: 980px; margin: 0 auto; padding: 32px 24px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 10px; }
.muted { color: #5c626b; } .card { background: #fff; border: 1px solid #dcdfe4; border-radius: 10px;
       padding: 16px 20px; margin: 12px 0; }
.headline { font-size: 22px; font-weight: 600; color: #1d1f23; }
.verdict .badge { font-weight: 700; padding: 2px 10px; border-radius: 999px; color: #fff; margin-right: 6px; }
.verdict.ready .badge { background: #2f7d6d; } .verdict.check .badge { background: #b7791f; }
.verdict.keep .badge { background: #b83232; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: 7px 10px;
       border-bottom: 1px solid #e5e7eb; } th { font-weight: 600; } td.num { text-align: right;
       font-variant-numeric: tabular-nums; }
.charts { display: flex; flex-wrap: wrap; gap: 12px; } .charts svg { background: #fff; border: 1px solid #dcdfe4;
       border-radius: 10px; } svg text { fill: #1d1f23; font-family: inherit; }
code { background: #eef0f3; padding: 1px 5px; border-radius: 4px; }
@media (prefers-color-scheme: dark) {
  body { background: #1e2125; color: #e6e6e6; } .card, .charts svg { background: #2a2e34; border-color: #3a3f46; }
  .muted { color: #a9aeb5; } th, td { border-color: #3a3f46; } svg text { fill: #e6e6e6; }
  code { background: #30343a; } .headline { color: #7fc4b4; }
}
"""


def render_html(report: dict) -> str:
    model = report.get("model") or {}
    bench, evaluation = report.get("bench"), report.get("evaluation")
    name = model.get("name", "model")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>Pocket NLP report: {_e(name)}</title><style>{_CSS}</style></head><body><main>",
           f"<h1>{_e(name)}: FP32 vs INT8</h1>",
           f'<p class="muted">{_e(str(model.get("task", "")).replace("-", " ").capitalize())}'
           f'{" · revision " + _e(str(model["revision"])[:12]) if model.get("revision") else ""}'
           f' · report made {_e(report.get("created", ""))} with Pocket NLP {_e(report.get("app_version", ""))}</p>']
    v = report.get("verdict")
    if isinstance(v, dict) and v.get("badge"):
        kind = {"Ready to use": "ready", "Keep FP32": "keep"}.get(v["badge"], "check")
        basis = ("measured on your data" if (v.get("evidence") or {}).get("your_data")
                 else "from the built-in test examples only")
        out.append(f'<div class="card verdict {kind}"><span class="badge">{_e(v["badge"])}</span> '
                   f'{_e(v.get("sentence", ""))} <span class="muted">({basis})</span></div>')
    if report.get("headline"):
        out.append(f'<div class="card"><div class="headline">{_e(report["headline"])}</div>')
        if model.get("summary"):
            out.append(f'<p class="muted">{_e(model["summary"])}</p>')
        out.append("</div>")
    elif model.get("summary"):
        out.append(f'<div class="card"><p>{_e(model["summary"])}</p></div>')
    rows = report.get("comparison") or []
    if rows:
        out.append('<h2>Side by side</h2><div class="card"><table><thead><tr><th>Measure</th><th>FP32 (original)</th>'
                   "<th>INT8 (small)</th><th>INT8 vs FP32</th></tr></thead><tbody>")
        for r in rows:
            out.append(f"<tr><td title='{_e(glossary(r['key'], r['metric']))}'>{_e(r['metric'])}</td><td class='num'>{_e(format_value(r['fp32'], r['unit']))}</td>"
                       f"<td class='num'>{_e(format_value(r['int8'], r['unit']))}</td><td>{_e(r['ratio'])}</td></tr>")
        out.append("</tbody></table></div>")
    if bench:
        by_key = {r["key"]: r for r in rows}
        charts = [svg_bars(title, unit, by_key[key]["fp32"], by_key[key]["int8"])
                  for key, title, unit in (("file_bytes", "File size (MB)", "MB"), ("memory_bytes", "Memory (MB)", "MB"),
                                           ("p50_ms", "Latency p50 (ms)", "ms"), ("p95_ms", "Latency p95 (ms)", "ms"))
                  if key in by_key]
        dist = svg_latency_distribution(list((bench.get("fp32") or {}).get("latencies_ms") or []),
                                        list((bench.get("int8") or {}).get("latencies_ms") or []))
        if charts or dist:
            out.append('<h2>Charts</h2><div class="charts">' + "".join(charts) + dist + "</div>")
        config = bench.get("config") or {}
        if config:
            settings = ", ".join(f"{k.replace('_', ' ')} {v if v is not None else 'auto'}" for k, v in config.items())
            out.append(f'<p class="muted">Benchmark settings: {_e(settings)}.</p>')
        if bench.get("machine"):
            out.append(f'<p class="muted">Machine: {_e(bench["machine"])}</p>')
    if evaluation:
        out.append(f"<h2>Evaluation on {_e(Path(str(evaluation.get('data', ''))).name)}</h2>")
        out.append(f'<div class="card"><p>{_e(evaluation.get("examples", "?"))} examples; INT8 gives the same answer '
                   f'as FP32 on {float(evaluation.get("agreement", 0)):.1%} of them '
                   f'({_e(evaluation.get("n_disagreements", 0))} differ).</p>')
        dis = evaluation.get("disagreements") or []
        if dis:
            out.append("<table><thead><tr><th>Where</th><th>Input</th><th>Expected</th><th>FP32</th><th>INT8</th>"
                       "</tr></thead><tbody>")
            total = int(evaluation.get("n_disagreements") or len(dis))
            if total > 20:
                out.append(f'<p class="muted">The first 20 of the {total} examples where they differ:</p>')
            for d in dis[:20]:
                text = str(d.get("input", ""))
                text = text if len(text) <= 140 else text[:137] + "…"
                out.append(f"<tr><td>{_e(d.get('where', ''))}</td><td>{_e(text)}</td>"
                           f"<td>{_e(', '.join(map(str, d.get('gold') or [])))}</td><td>{_e(d.get('fp32', ''))}</td>"
                           f"<td>{_e(d.get('int8', ''))}</td></tr>")
            out.append("</tbody></table>")
        out.append("</div>")
    quant = model.get("quantization")
    if isinstance(quant, dict) and quant:
        words = quant.get("explanation") or quant.get("choice") or ""
        if words:
            out.append(f"<h2>How INT8 was made</h2><div class='card'><p>{_e(words)}</p></div>")
    out.append('<p class="muted">FP32 is the original precision; INT8 stores weights in 8 bits, about four times '
               "smaller. Latency is the time for one model call; p95 means 95% of calls were at least this fast."
               "</p></main></body></html>")
    return "\n".join(out)
