"""What was measured, kept with the entry: the last benchmark and the last evaluation of each data file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from app.core.errors import StoreError
from app.core.store.entries import StoreEntry, write_failure

RESULTS = "results.json"  # beside manifest.json; not in the checksums: it grows after the conversion
MAX_EVALUATIONS = 8


def load_results(entry: StoreEntry) -> dict:
    """{"bench": the last benchmark or None, "evaluations": the last evaluation of each data file, newest first};
    each carries `measured_at` and `machine`. An unreadable file reads as nothing measured."""
    try:
        data = json.loads((Path(entry.path) / RESULTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    evaluations = [e for e in data.get("evaluations") or [] if isinstance(e, dict)]
    return {"bench": data.get("bench") if isinstance(data.get("bench"), dict) else None, "evaluations": evaluations}


def latest_evaluation(entry: StoreEntry) -> dict | None:
    """The most recent evaluation kept with the entry (what the verdict and the report rest on), or None."""
    return (load_results(entry)["evaluations"] or [None])[0]


def save_result(entry: StoreEntry, *, bench: dict | None = None, evaluation: dict | None = None) -> dict:
    """Keep a benchmark's or an evaluation's `to_dict()` with the entry (atomically); returns all results."""
    from app.core.export import write_json_atomic

    results = load_results(entry)
    stamp = {"measured_at": time.time(), "machine": machine_summary()}
    if bench is not None:
        results["bench"] = {**bench, **stamp}
    if evaluation is not None:
        others = [e for e in results["evaluations"] if e.get("data") != evaluation.get("data")]
        results["evaluations"] = [{**evaluation, **stamp}, *others][:MAX_EVALUATIONS]
    try:
        write_json_atomic(entry.path / RESULTS, results)
    except OSError as e:
        raise StoreError(write_failure(entry.path.parent, e)) from e
    return results


def machine_summary() -> str:
    """'Intel Xeon ..., 2 cores' — where a measurement was made."""
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count() or 1} logical cores"

