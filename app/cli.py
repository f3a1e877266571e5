"""The headless face of Pocket NLP: every GUI action as a command (`python -m app ...`).

With no arguments it opens the GUI. Each subcommand is a `_cmd_*` function over the same core calls the
GUI uses; progress goes to stderr, results to stdout (`--json` for machines).
"""

from __future__ import annotations

import argparse
import json
import logging
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


def _print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def _cmd_export(args) -> int:
    from app.core.export import ExportConfig, export_model
    from app.core.hub import resolve

    bar = ProgressBar(enabled=not args.quiet)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pocket-nlp", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"pocket-nlp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("export", help="export a model to FP32 ONNX without PyTorch")
    p.add_argument("model", help="Hub id (org/name[@rev]), Hub URL or local folder")
    p.add_argument("--out", required=True, help="output folder (model.onnx, tokenizer, config, manifest.json)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from app.gui import run_gui

        return run_gui()
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        build_parser().print_help()
        return 2
    try:
        return args.func(args)
    except CancelledError as e:
        print(f"Cancelled: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("Interrupted; nothing half-written was kept.", file=sys.stderr)
        return 130
    except PocketError as e:
        if getattr(args, "json", False):
            _print_json({"error": type(e).__name__, "message": str(e)})
        print(f"Error: {e}", file=sys.stderr)
        return 1
