"""The headless face of Pocket NLP: every GUI action as a command (`python -m app ...`).

With no arguments it opens the GUI. Each subcommand is a `_cmd_*` function over the same core calls the
GUI uses; progress goes to stderr, results to stdout (`--json` for machines).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from app import __version__
from app.core.errors import CancelledError, PocketError
from app.core.progress import Progress


class ProgressBar:
    """Renders the core's Progress stream as one line per stage on stderr."""

    def __init__(self, stream=sys.stderr, enabled: bool = True):
        self.stream = stream
        self.enabled = enabled
        self.stage = None
        self.last_draw = 0.0
        self.tty = getattr(stream, "isatty", lambda: False)()

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        new_stage = p.stage != self.stage
        finished = p.total is not None and p.done >= p.total
        if not new_stage and not finished and now - self.last_draw < (0.1 if self.tty else 2.0):
            return
        if new_stage and self.stage is not None and self.tty:
            self.stream.write("\n")
        self.stage, self.last_draw = p.stage, now
        if p.fraction is not None:
            width = 24
            filled = int(round(width * p.fraction))
            amount = (f"{p.done / 1e6:.1f}/{p.total / 1e6:.1f} MB" if p.unit == "B"
                      else f"{p.done:g}/{p.total:g}")
            line = f"{p.stage:>9} [{'#' * filled}{'.' * (width - filled)}] {amount} {p.message}"
        else:
            line = f"{p.stage:>9} {p.message}"
        self.stream.write(("\r" + line[:110].ljust(110)) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty and self.stage is not None:
            self.stream.write("\n")
            self.stream.flush()
        self.stage = None


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _cmd_export(args) -> int:
    from app.core.export import ExportConfig, export_model
    from app.core.hub import resolve

    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    try:
        source = resolve(args.model, progress=bar)
        if source.notice:
            print(source.notice, file=sys.stderr)
        result = export_model(source, Path(args.out), ExportConfig(opset=args.opset), progress=bar)
    finally:
        bar.close()
    if args.json:
        _print_json(result.to_dict())
    else:
        print(f"Exported {source.name} ({result.spec.architecture}, {result.spec.task}) to {result.onnx_path}")
        print(f"  {result.onnx_bytes / 1e6:.1f} MB, opset {result.opset}, {result.seconds:.1f} s")
    return 0


def _entry(model: str, bar, *, threads: int | None = None):
    """MODEL → a sound store entry: the one it names or whose content it has, else converted now. Says which
    entry answers, on stderr."""
    from app.core.store import ConvertConfig, convert, find_entry

    _clean_store()
    try:
        entry = find_entry(model)
        if entry is None:
            print(f"Converting {model} first (download, export, quantize)...", file=sys.stderr)
            entry = convert(model, ConvertConfig(threads=threads), progress=bar)
    finally:
        bar.close()
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.manifest.get("created", 0)))
    revision = f", revision {entry.revision[:12]}" if entry.revision else ""
    print(f"Using {entry.path.name} ({entry.name}{revision}, converted {when})", file=sys.stderr)
    return entry


def _clean_store() -> None:
    """Remove what killed conversions left in the store, and say how much space that gave back."""
    from app.core.store import clean_leftovers

    removed, reclaimed = clean_leftovers()
    if removed:
        print(f"Removed {removed} leftover(s) of interrupted conversions from the store ({reclaimed / 1e6:.1f} MB).",
              file=sys.stderr)


def _load_runner_pair(entry, threads: int | None):
    """A store entry → (FP32 runner, INT8 runner)."""
    from app.core.errors import QuantizationError
    from app.core.tasks.runner import Runner

    if entry.int8_dir is None:
        raise QuantizationError(f"{entry.name} has no INT8 model: {entry.summary()} To keep INT8 anyway, run "
                                f"`python -m app convert {entry.source.get('ref', entry.name)} --force-int8`.")
    return Runner.load(entry.fp32_dir, threads=threads), Runner.load(entry.int8_dir, threads=threads)


def _read_text_file(name: str, option: str) -> str:
    """The whole file (or stdin for '-') as UTF-8 text, for --text-file / --context-file."""
    from app.core.errors import InputError

    try:
        data = sys.stdin.buffer.read() if name == "-" else Path(name).expanduser().read_bytes()
    except OSError as e:
        raise InputError(f"{option} {name}: cannot be read ({e.strerror or e}).") from e
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{option} {'(stdin)' if name == '-' else name}: not valid UTF-8 at byte {e.start} "
                         f"({data[e.start:e.start + 1]!r}). Save the file as UTF-8.") from e


def _checked_text(value: str | None, option: str) -> str | None:
    """A text given on the command line; one with bytes that are not UTF-8 (the shell passed them through) is
    refused by name instead of failing later as "too long"."""
    from app.core.errors import InputError

    if value is None:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"{option}: the text is not valid UTF-8 at character {e.start + 1}. Give UTF-8 text, or "
                         f"put it in a UTF-8 file and use {option}-file.") from e
    return value


def _side_by_side(rows: list[tuple[str, str, str]]) -> None:
    width = max(len(r[1]) for r in rows) + 3
    for name, a, b in rows:
        print(f"{name:<12}{a:<{width}}{b}")


def _cmd_predict(args) -> int:
    from app.core.errors import InputError
    from app.core.tasks import get_task
    from app.core.tasks.base import PredictRequest

    texts = [_checked_text(t, "--text") for t in args.text or ()]
    texts += [_read_text_file(f, "--text-file") for f in args.text_file or ()]
    context = _checked_text(args.context, "--context")
    if args.context_file:
        context = _read_text_file(args.context_file, "--context-file")
    request = PredictRequest(texts=tuple(texts), text_pair=_checked_text(args.text_pair, "--text-pair"),
                             question=_checked_text(args.question, "--question"), context=context, query=args.query, top_k=args.top_k,
                             max_answer_len=args.max_answer_len, allow_no_answer=args.allow_no_answer,
                             aggregation=args.aggregation, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    if not request.texts and request.question is None and request.prompt is None:
        raise InputError("Give --text (classification, named entities, embeddings), --question with --context "
                         "(question answering) or --prompt (text generation).")
    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    try:
        entry = _entry(args.model, bar, threads=args.threads)
        task = get_task(entry.task)
        if args.labels is not None:  # zero-shot: the candidate labels scored by an NLI classifier
            from dataclasses import asdict

            from app.core.tasks.zero_shot import ZeroShotRequest, parse_labels, require_nli

            require_nli(entry.task, entry.manifest["spec"].get("labels") or (), entry.name)
            task = get_task("zero-shot-classification")
            request = ZeroShotRequest(**asdict(request), labels=parse_labels(args.labels),
                                      hypothesis_template=args.template, multi_label=args.multi_label)
            task.check(request)  # its own words: the labels and template, not "a zero-shot model ..."
        try:
            task.check(request)
        except InputError as e:
            raise InputError(f"{entry.name} is a {task.name} model ({task.title.lower()}). {e}") from e
        fp32, int8 = _load_runner_pair(entry, args.threads)
    finally:
        bar.close()
    out = {name: task.predict(runner, request) for name, runner in (("fp32", fp32), ("int8", int8))}
    agree = task.agree(out["fp32"], out["int8"])
    if args.json:
        _print_json({"task": task.name, "agree": agree, **{k: task.result_json(v) for k, v in out.items()}})
        return 0
    _side_by_side([("", "FP32", "INT8"), *task.result_rows(out["fp32"], out["int8"])])
    print("FP32 and INT8 agree." if agree else "FP32 and INT8 DISAGREE.")
    return 0


def _cmd_eval(args) -> int:
    from app.core.eval import evaluate
    from app.core.store import save_result
    from app.core.verdict import verdict
    from app.core.tasks import get_task

    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    cancel = threading.Event()
    try:
        entry = _entry(args.model, bar, threads=args.threads)
        task = get_task(entry.task)
        zero_shot = {}
        if args.labels is not None:  # zero-shot: the candidate labels scored by an NLI classifier
            from app.core.tasks.zero_shot import require_nli

            require_nli(entry.task, entry.manifest["spec"].get("labels") or (), entry.name)
            task, zero_shot = get_task("zero-shot-classification"), {"labels": args.labels, "template": args.template}
        data = task.load_data(Path(args.data), format=args.format, text_column=args.text_column,
                              pair_column=args.pair_column, label_column=args.label_column, **zero_shot)
        fp32, int8 = _load_runner_pair(entry, args.threads)
        result = (task.evaluate if zero_shot else evaluate)(fp32, int8, data, limit=args.limit, progress=bar,
                                                            cancel=cancel)
    finally:
        bar.close()
    save_result(entry, evaluation=result.to_dict())
    judged = verdict(entry.manifest, result.to_dict())
    if args.json:
        _print_json(result.to_dict() | {"verdict": judged.to_dict()})
        return 0
    print(f"{result.examples} examples from {result.data_path.name} ({result.task})")
    rows = [("", "FP32", "INT8", "INT8-FP32")]
    for metric in result.fp32.metrics:
        scale = task.metrics.get(metric, (metric, 1.0))[1]
        a, b = result.fp32.metrics[metric] * scale, result.int8.metrics[metric] * scale
        rows.append((metric, f"{a:.2f}", f"{b:.2f}", f"{b - a:+.2f}"))
    rows.append(("ms/example", f"{result.fp32.mean_latency_ms:.2f}", f"{result.int8.mean_latency_ms:.2f}", ""))
    for name, *cells in rows:
        print(f"{name:<14}" + "".join(f"{c:>12}" for c in cells))
    means = result.details.get("agreement_means")
    print(f"agreement: {100 * result.agreement:.2f}% " + (f"of {means}" if means else task.agreement_words)
          + f" ({result.n_disagreements} disagreements)")
    greedy = result.details.get("greedy_continuation")  # text generation
    if greedy and greedy["prompts"]:
        print(f"greedy continuations of {greedy['prompts']} prompts from the file: INT8 follows FP32 for "
              f"{greedy['mean_tokens_until_difference']:.1f} of {greedy['new_tokens']} tokens on average, "
              f"{100 * greedy['identical']:.0f}% identical")
    for warning in result.details.get("data_warnings") or ():
        print(f"warning: {warning}")
    if result.labels_matched_by:
        print(f"gold labels matched to the model's labels by {result.labels_matched_by}")
    for d in result.disagreements[: args.show]:
        text = d.input if len(d.input) <= 70 else d.input[:67] + "..."
        gold = " | ".join(d.gold) if d.gold else "(no answer)"
        print(f"  {d.where}: FP32 {d.fp32!r} vs INT8 {d.int8!r}, gold {gold!r}: {text}")
    print(f"Verdict: {judged.badge}. {judged.sentence}")
    return 0


def _convert_config(args):
    from app.core.quantize import GuardTarget, QuantizeConfig
    from app.core.store import ConvertConfig

    forced = (args.force_int8 or args.weight_type or args.asymmetric or args.per_tensor or args.reduce_range
              or args.no_outlier_handling or args.keep_fp32)
    force = QuantizeConfig(weight_type=args.weight_type or "int8", symmetric=not args.asymmetric,
                           per_channel=not args.per_tensor,
                           reduce_range=args.reduce_range, scale_outliers=not args.no_outlier_handling,
                           split_outliers=not args.no_outlier_handling,
                           keep_fp32=tuple(args.keep_fp32 or ())) if forced else None
    return ConvertConfig(target=GuardTarget(min_agreement=args.min_agreement, min_cosine=args.min_cosine),
                         force=force, calibration_file=Path(args.calibration) if args.calibration else None,
                         threads=args.threads, reuse=not args.no_reuse)


def _cmd_convert(args) -> int:
    from app.core.store import convert
    from app.core.verdict import entry_verdict

    config = _convert_config(args)
    _clean_store()
    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    try:
        entry = convert(args.model, config, progress=bar)
    finally:
        bar.close()
    if args.json:
        _print_json({"entry": str(entry.path), "summary": entry.summary(), **entry.manifest,
                     "verdict": entry_verdict(entry).to_dict()})
        return 0
    q = entry.manifest["quantization"]
    files = entry.manifest["files"]
    print(entry.summary())
    print(f"  stored in {entry.path}")
    print(f"  FP32 {files['fp32_bytes'] / 1e6:.1f} MB"
          + (f", INT8 {files['int8_bytes'] / 1e6:.1f} MB" if entry.int8_dir else ""))
    print("  fusions: " + ", ".join(f"{n} {op}" for op, n in entry.manifest["optimize"]["fusions"].items()))
    if isinstance(entry.manifest.get("head"), dict) and entry.manifest["head"].get("description"):
        print(f"  head: {entry.manifest['head']['description']}")
    print(f"  accuracy guard ({q['calibration']}): {q['explanation']}")
    for c in q["candidates"]:
        a = c["agreement"]
        mark = "chosen" if q["chosen"] and c["settings"] == q["chosen"]["settings"] else ("ok" if c["passed"] else "below target")
        print(f"    - {c['settings']}: {a['agreement']:.2%} same answer, cosine {a['cosine']:.4f} ({mark})")
    judged = entry_verdict(entry)
    print(f"Verdict: {judged.badge}. {judged.sentence}")
    return 0


def _cmd_bench(args) -> int:
    from app.core.bench import BenchConfig, benchmark
    from app.core.store import save_result

    config = BenchConfig(batch=args.batch, seq_len=args.seq_len, runs=args.runs, threads=args.threads)
    bar = ProgressBar(sys.stderr, enabled=not args.quiet)
    try:
        entry = _entry(args.model, bar, threads=args.threads)
        result = benchmark(entry, config, progress=bar)
    finally:
        bar.close()
    save_result(entry, bench=result.to_dict())
    if args.json:
        _print_json(result.to_dict())
        return 0
    a, b, r = result.fp32, result.int8, result.ratios()
    print(f"{result.model}: batch {config.batch} x {config.seq_len} tokens, {config.resolved_threads} threads, "
          f"{config.runs} runs each")
    rows = [("", "FP32", "INT8", "INT8 vs FP32"),
            ("file size", f"{a.file_bytes / 1e6:.1f} MB", b and f"{b.file_bytes / 1e6:.1f} MB", r and f"{r['size']:.2f}x smaller"),
            ("load time", f"{a.load_ms:.0f} ms", b and f"{b.load_ms:.0f} ms", r and f"{r['load']:.2f}x faster"),
            ("memory", f"{a.memory_bytes / 1e6:.0f} MB", b and f"{b.memory_bytes / 1e6:.0f} MB", r and f"{r['memory']:.2f}x less"),
            ("latency p50", f"{a.p50_ms:.1f} ms", b and f"{b.p50_ms:.1f} ms", r and f"{r['p50']:.2f}x faster"),
            ("latency p95", f"{a.p95_ms:.1f} ms", b and f"{b.p95_ms:.1f} ms", r and f"{r['p95']:.2f}x faster"),
            ("throughput", f"{a.throughput:.1f}/s", b and f"{b.throughput:.1f}/s", r and f"{r['throughput']:.2f}x more")]
    for name, *cells in rows:
        print(f"{name:<13}" + "".join(f"{c or '-':>16}" for c in cells))
    if result.engine:
        e = result.engine
        print(f"{'engine':<13}{e.runtime}, {e.provider} (both models)")
        if b is not None:
            print(f"{'INT8 kernels':<13}{e.kernels_text()}; MLAS INT8 path on this CPU: {e.int8_path}")
    if b is None:
        print("INT8 was not kept for this model (the accuracy guard kept FP32); see `python -m app convert`.")
    return 0


def _zero_shot_arguments(p, *, multi_label: bool) -> None:
    from app.core.tasks.zero_shot import DEFAULT_TEMPLATE

    zs = p.add_argument_group("zero-shot classification (an NLI classifier, e.g. DeBERTa-v3 MNLI)")
    zs.add_argument("--labels", help='candidate labels, comma-separated: "sports, politics, science"')
    zs.add_argument("--template", default=DEFAULT_TEMPLATE,
                    help=f"the hypothesis, {{}} is the label ({DEFAULT_TEMPLATE!r})")
    if multi_label:
        zs.add_argument("--multi-label", action="store_true", help="labels are independent: each scored "
                                                                   "entailment vs contradiction")


def _cmd_list(args) -> int:
    from app.core.store import list_entries, load_results, store_root

    _clean_store()
    entries = list_entries()
    if args.json:
        _print_json({"store": str(store_root()), "entries": [
            {"folder": e.path.name, "path": str(e.path), "name": e.name, "task": e.task, "revision": e.revision,
             "status": "damaged" if e.damaged else "stale" if e.stale else "ok", "problem": e.problem or None,
             "stale": e.stale or None, "fp32_bytes": e.model_bytes("fp32"), "int8_bytes": e.model_bytes("int8"),
             "created": e.manifest.get("created"), "results": load_results(e)} for e in entries]})
        return 0
    if not entries:
        print(f"No converted models in {store_root()}. Convert one with `python -m app convert MODEL`.")
        return 0
    print(f"{len(entries)} converted model(s) in {store_root()}:")
    for e in entries:
        if e.damaged:
            print(f"  {e.path.name}  DAMAGED: {e.problem}; {e.fix()}")
            continue
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.manifest.get("created", 0)))
        int8 = f"INT8 {e.model_bytes('int8') / 1e6:.1f} MB" if e.int8_dir else "INT8 not kept"
        print(f"  {e.path.name}  {e.name} ({e.task}), FP32 {e.model_bytes('fp32') / 1e6:.1f} MB, {int8}, {when}")
        if e.stale:
            print(f"      stale: {e.stale}; `python -m app convert {e.source.get('ref')}` converts it again")
    return 0


def _cmd_delete(args) -> int:
    from app.core.errors import ModelNotFoundError
    from app.core.store import delete_entry, list_entries, store_root

    entries = list_entries(staleness=False)
    for model in args.models:
        matches = [e for e in entries if model in (e.path.name, str(e.path))
                   or (Path(model).expanduser().resolve() == e.path.resolve())]
        if not matches:
            matches = [e for e in entries if model in (e.name, e.source.get("ref"))]
        if not matches:
            raise ModelNotFoundError(f"No converted model {model!r} in {store_root()}. `python -m app list` shows "
                                     "their folder names.")
        if len(matches) > 1:
            raise ModelNotFoundError(f"{model!r} names several converted models "
                                     f"({', '.join(e.path.name for e in matches)}); give the folder name.")
        delete_entry(matches[0])
        entries.remove(matches[0])
        print(f"Deleted {matches[0].path.name} ({matches[0].name}). The model it came from was not touched.")
    return 0


def _cmd_report(args) -> int:
    from app.core.report import entry_report, write_html, write_json

    entry = _entry(args.model, ProgressBar(sys.stderr, enabled=not args.quiet))
    report = entry_report(entry)
    out = Path(args.out)
    (write_json if out.suffix.lower() == ".json" else write_html)(report, out)
    if not report["bench"] and not report["evaluation"]:
        print("Nothing measured yet for this model: the report shows the conversion only. Run `python -m app bench "
              "MODEL` and `python -m app eval MODEL --data FILE` first for speed and accuracy.", file=sys.stderr)
    print(f"Report written: {out}")
    return 0


def _cmd_inspect(args) -> int:
    from app.core.precisions import code_snippet, node_precisions

    entry = _entry(args.model, ProgressBar(sys.stderr, enabled=not args.quiet))
    folder = entry.int8_dir or entry.fp32_dir
    if args.code:
        print(code_snippet(folder, entry.manifest.get("spec") or {}), end="")
        return 0
    rows = node_precisions(entry.int8_dir / "model.onnx", entry.manifest["quantization"]) if entry.int8_dir else []
    if args.json:
        _print_json({"entry": str(entry.path), "folder": str(folder), "nodes": [r.to_dict() for r in rows]})
        return 0
    if not rows:
        print(f"{entry.name}: no INT8 model was kept, so every part runs in FP32 ({folder}).")
        return 0
    int8 = sum(r.precision == "INT8" for r in rows)
    print(f"{entry.name}: {int8} of the {len(rows)} heavy parts run in INT8 ({folder}):")
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"  {r.name:<{width}}  {r.precision}  {r.why}")
    print("Run it elsewhere: `python -m app inspect MODEL --code` prints a program that needs only onnxruntime, "
          "tokenizers and numpy.")
    return 0


def _number(kind, lo=None, hi=None, *, what: str = "", above: bool = False):
    """An argparse type: `kind` within [lo, hi] (`above`: > lo); out-of-range values are usage errors (exit 2)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        low = lo is not None and (value <= lo if above else value < lo)
        if value != value or low or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                bounds = f"above {lo:g} and at most {hi:g}" if above else f"between {lo:g} and {hi:g}"
            else:
                bounds = (f"above {lo:g}" if above else f"at least {lo:g}") if lo is not None else f"at most {hi:g}"
            raise argparse.ArgumentTypeError(f"{text} is out of range: {what or 'it'} must be {bounds}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


COUNT = _number(int, 1, what="a count")
THREADS = _number(int, 1, 1024, what="the thread count")
FRACTION = _number(float, 0.0, 1.0, what="a fraction")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pocket-nlp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pocket-nlp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("export", help="export a model to FP32 ONNX without PyTorch")
    p.add_argument("model", help="Hub id (org/name[@rev]), Hub URL or local folder")
    p.add_argument("--out", required=True, help="output folder (model.onnx, tokenizer, config, manifest.json)")
    p.add_argument("--opset", type=_number(int, 14, 21, what="the opset"), default=17)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("convert", help="download, export, fuse, quantize to INT8 and validate into the store")
    p.add_argument("model", help="Hub id (org/name[@rev]), Hub URL or local folder")
    p.add_argument("--calibration", help="your own texts for the accuracy guard: .txt (one per line), TSV, CSV, "
                                         "JSONL or SQuAD JSON")
    p.add_argument("--min-agreement", type=FRACTION, default=0.995, help="guard target: same answer as FP32 (0..1)")
    p.add_argument("--min-cosine", type=FRACTION, default=0.995, help="guard target: mean score cosine (0..1)")
    expert = p.add_argument_group("forced settings (experts; any of these skips the guard's search)")
    expert.add_argument("--force-int8", action="store_true", help="keep INT8 with the default settings")
    expert.add_argument("--weight-type", choices=["int8", "uint8"])
    expert.add_argument("--asymmetric", action="store_true",
                        help="int8 weights with a zero point per column (uint8 weights always have one)")
    expert.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor, not per channel")
    expert.add_argument("--reduce-range", action="store_true", help="7-bit weights (no u8*s8 saturation)")
    expert.add_argument("--no-outlier-handling", action="store_true",
                        help="plain INT8: outlier channels neither scaled through LayerNorms nor kept in FP32")
    expert.add_argument("--keep-fp32", nargs="+", metavar="NODE", help="node names to leave in FP32")
    p.add_argument("--threads", type=THREADS, default=None)
    p.add_argument("--no-reuse", action="store_true", help="convert again even if a valid entry exists")
    p.add_argument("--json", action="store_true", help="print the manifest on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("bench", help="FP32 vs INT8: size, load time, memory, latency, throughput, and the engine "
                                      "and INT8 kernels that ran them")
    p.add_argument("model", help="a converted model (store entry) or anything `convert` accepts")
    p.add_argument("--batch", type=_number(int, 1, 4096, what="the batch size"), default=1)
    p.add_argument("--seq-len", type=COUNT, default=128)
    p.add_argument("--runs", type=_number(int, 2, 100000, what="the number of runs"), default=30)
    p.add_argument("--threads", type=THREADS, default=None, help="default: the physical cores")
    p.add_argument("--json", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("predict", help="run FP32 and INT8 side by side on one input")
    p.add_argument("model", help="converted model (a folder with fp32/ and int8/)")
    p.add_argument("--text", action="append", help="a text to classify, tag or embed (repeat it for several)")
    p.add_argument("--text-file", action="append", metavar="FILE",
                   help="a UTF-8 file whose whole content is one text ('-' reads stdin); repeat it for several")
    p.add_argument("--text-pair", help="second text, for sentence-pair models (NLI, paraphrase)")
    p.add_argument("--question", help="question to answer from --context")
    p.add_argument("--context", help="text the answer comes from (any length; read in overlapping windows)")
    p.add_argument("--context-file", metavar="FILE", help="read --context from a UTF-8 file ('-' reads stdin)")
    p.add_argument("--top-k", type=COUNT, default=None, help="labels or answers to show (default: all labels, 1 answer); "
                                                           "text generation: sample from the k likeliest tokens")
    p.add_argument("--max-answer-len", type=COUNT, default=15, help="longest answer in tokens")
    p.add_argument("--allow-no-answer", action="store_true", help="allow 'no answer' (SQuAD 2.0 models)")
    p.add_argument("--query", help="embedding models: rank the --text documents by similarity to this query")
    p.add_argument("--aggregation", choices=["none", "simple", "first", "average", "max"], default="simple",
                   help="named entities: how sub-word tags are grouped into entities (as transformers' pipeline)")
    _zero_shot_arguments(p, multi_label=True)
    gen = p.add_argument_group("text generation (GPT-2): greedy unless --temperature, --top-k or --top-p is given")
    gen.add_argument("--prompt", help="the text to continue")
    gen.add_argument("--max-new-tokens", type=_number(int, 1, 100000, what="the number of new tokens"), default=None,
                     help="tokens to generate (default 32; it stops earlier at the end-of-text token)")
    gen.add_argument("--temperature", type=_number(float, 0.0, 100.0, what="the temperature"), default=None,
                     help="sample at this temperature (0: greedy)")
    gen.add_argument("--top-p", type=_number(float, 0.0, 1.0, what="top-p", above=True), default=None,
                     help="sample from the smallest set with this probability")
    gen.add_argument("--seed", type=_number(int, 0, 2**32 - 1, what="the seed"), default=None,
                     help="random seed: the same seed gives the same sample")
    p.add_argument("--threads", type=THREADS, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("eval", help="measure FP32 and INT8 on a labelled file")
    p.add_argument("model", help="converted model (a folder with fp32/ and int8/)")
    p.add_argument("--data", required=True, help="GLUE TSV, CSV or JSONL (text[, text_pair], label), SQuAD JSON, "
                                             "CoNLL (word ... TAG), a BEIR folder or an STS TSV")
    p.add_argument("--limit", type=COUNT, default=None, help="only the first N examples")
    p.add_argument("--format", choices=["auto", "tsv", "csv", "jsonl", "squad"], default="auto")
    p.add_argument("--text-column", help="column with the text (default: detected)")
    p.add_argument("--pair-column", help="column with the second text (default: detected)")
    p.add_argument("--label-column", help="column with the gold label, by name or id (default: detected)")
    p.add_argument("--show", type=_number(int, 0, what="the number to show"), default=10, help="disagreeing examples to list")
    _zero_shot_arguments(p, multi_label=False)
    p.add_argument("--threads", type=THREADS, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("list", help="the converted models in the store (damaged and stale ones marked)")
    p.add_argument("--json", action="store_true", help="print a machine-readable list on stdout")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("delete", help="delete converted models from the store (the originals are kept)")
    p.add_argument("models", nargs="+", metavar="MODEL", help="an entry's folder name (see `list`) or the model "
                                                              "it was converted from")
    p.set_defaults(func=_cmd_delete)

    p = sub.add_parser("inspect", help="which parts of the INT8 model are INT8 and which stayed FP32, and why; "
                                       "--code prints a program that runs the model folder with onnxruntime alone")
    p.add_argument("model", help="a converted model (store entry) or anything `convert` accepts")
    p.add_argument("--code", action="store_true", help="print the code that runs the model instead")
    p.add_argument("--json", action="store_true", help="print a machine-readable list on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("report", help="write the FP32 vs INT8 report (HTML, or JSON for a .json name), as the GUI's "
                                      "Compare page exports it, with what bench and eval measured")
    p.add_argument("model", help="a converted model (store entry) or anything `convert` accepts")
    p.add_argument("--out", required=True, help="the report file (.html or .json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from app.gui import run_gui

        return run_gui()
    if argv[0] == "--self-test":  # the install check the packaged app runs (app/selftest.py)
        from app.selftest import main as self_test

        return self_test(argv[1:])
    parser = build_parser()
    debug = "--debug" in argv  # accepted anywhere on the line, before or after the command
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # huggingface_hub's own retry warnings: the one-line error or notice says what counts
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # read when it is imported: no import at start-up
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except CancelledError as e:
        print(f"Cancelled: {e}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head` closed stdout: what it wanted was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("Interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except PocketError as e:
        if args.debug:
            raise
        _fail(args, type(e).__name__, str(e))
        return 1
    except Exception as e:  # noqa: BLE001 - a user never sees a traceback unless they ask with --debug
        if args.debug:
            raise
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        _fail(args, type(e).__name__, f"Unexpected {type(e).__name__}: {str(e).strip() or 'no details'}. Run again "
                                       "with --debug for the traceback, and report it if it persists.")
        return 1


def _fail(args, kind: str, message: str) -> None:
    try:
        if getattr(args, "json", False):
            _print_json({"error": kind, "message": message})
        print(f"Error: {message}", file=sys.stderr)
    except BrokenPipeError:
        pass
