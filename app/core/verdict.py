"""One honest verdict per model: is the INT8 copy safe to ship? A badge, one plain sentence, and the evidence.

  guard kept FP32 ─────────────────────────────────────────────────────────► Keep FP32
  evaluated on the user's labelled data ─┬─ loses > 2 points, or < 90% same ─► Keep FP32
                                         ├─ ≥ 200 examples, ≥ 98% same,
                                         │  within 1 point of FP32 ────────────► Ready to use
                                         └─ otherwise (few examples, 1–2 points) ► Check on your data
  only the built-in calibration examples ─────────────────────────────────────► Check on your data

Calibration examples are the guard's own test, chosen to cover the task, not the user's data: they never make a
model "Ready to use" on their own, and when real data disagrees, the real data decides. Pure Python, no Qt.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

READY, CHECK, KEEP = "Ready to use", "Check on your data", "Keep FP32"
MIN_EXAMPLES = 200  # fewer labelled examples than this cannot show a 1-point difference
READY_AGREEMENT, KEEP_AGREEMENT = 0.98, 0.90
READY_LOSS, KEEP_LOSS = 1.0, 2.0  # points of the headline metric (accuracy, F1, ...) INT8 may lose
NEAR_TIE = 0.6  # a classification disagreement where FP32's own top score is below this: FP32 was unsure too


@dataclass(frozen=True)
class Verdict:
    badge: str  # READY, CHECK or KEEP
    sentence: str  # one plain sentence why
    evidence: dict = field(default_factory=dict)  # the figures it rests on

    def to_dict(self) -> dict:
        return asdict(self)


def wilson_lower(p: float, n: int, z: float = 1.96) -> float:
    """The lower end of the 95% interval of a share `p` measured on `n` examples."""
    if n <= 0:
        return 0.0
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def headline_metric(evaluation: dict) -> tuple[str, str, float, float] | None:
    """(metric key, display name, FP32 value, INT8 − FP32) in points, for the task's headline metric."""
    from app.core.tasks import TASKS, get_task

    metrics = get_task(evaluation["task"]).metrics if evaluation.get("task") in TASKS else {}
    fp32 = (evaluation.get("fp32") or {}).get("metrics") or {}
    delta = evaluation.get("delta") or {}
    for key, (name, scale) in metrics.items():
        if key in fp32 and key in delta:
            return key, name, fp32[key] * scale, delta[key] * scale
    return None


def _overlap(a: str, b: str) -> bool:
    """Two answer texts that share a word: the same answer with a longer or shorter span."""
    return bool(set(a.lower().split()) & set(b.lower().split()))


def _percent(x: float) -> str:
    """100%, 99.75% (two decimals from 99% up, where the difference matters), 94.5%."""
    return "100%" if x >= 1 else f"{100 * x:.2f}%" if x >= 0.99 else f"{100 * x:.1f}%"


def entry_verdict(entry) -> Verdict:
    """The verdict on what is known of a store entry: its guard and the latest evaluation kept with it."""
    from app.core.store import latest_evaluation

    return verdict(entry.manifest, latest_evaluation(entry))


def verdict(manifest: dict, evaluation: dict | None = None) -> Verdict:
    """The verdict of a store entry's manifest and, when there is one, an evaluation on the user's labelled data
    (`EvalResult.to_dict()`)."""
    q = manifest.get("quantization") or {}
    chosen = q.get("chosen") or {}
    calibration = {"agreement": (chosen.get("agreement") or {}).get("agreement"),
                   "examples": (chosen.get("agreement") or {}).get("examples"),
                   "described_as": q.get("calibration"), "target": (q.get("target") or {}).get("min_agreement")}
    evidence = {"calibration": calibration}
    if not chosen:
        return Verdict(KEEP, "INT8 changed too many answers on the built-in test examples, so Pocket NLP kept only "
                             "the FP32 model.", evidence)
    if evaluation:
        n, agreement = int(evaluation.get("examples") or 0), float(evaluation.get("agreement") or 0.0)
        head = headline_metric(evaluation)
        near_ties = sum(1 for d in evaluation.get("disagreements") or () if evaluation.get("task") ==
                        "text-classification" and float(d.get("fp32_score") or 1) < NEAR_TIE)
        evidence["your_data"] = {"file": evaluation.get("data"), "examples": n, "agreement": agreement,
                                 "agreement_at_least": round(wilson_lower(agreement, n), 4),
                                 "disagreements": evaluation.get("n_disagreements"), "near_ties": near_ties}
        same = f"INT8 gave the same answer as FP32 on {_percent(agreement)} of your {n} examples"
        if head:
            _, name, fp32_value, points = head
            loss = -points
            evidence["your_data"].update(metric=name, fp32=round(fp32_value, 2), change=round(points, 2))
            change = (f"its {name.lower()} is {abs(loss):.1f} points {'lower' if loss > 0 else 'higher'}"
                      if abs(loss) >= 0.05 else f"its {name.lower()} is the same")
        else:
            loss, change = 0.0, ""
        overlapping = sum(1 for d in evaluation.get("disagreements") or () if evaluation.get("task") ==
                          "question-answering" and _overlap(str(d.get("fp32", "")), str(d.get("int8", ""))))
        evidence["your_data"]["overlapping_answers"] = overlapping
        ties = (f" ({overlapping} of the different answers still overlap: the same answer, a word longer or "
                "shorter)" if overlapping else "") + (f" ({near_ties} of the differences {'is an example' if near_ties == 1 else 'are examples'} FP32 "
                "itself was unsure about)" if near_ties else "")
        if loss > KEEP_LOSS or agreement < KEEP_AGREEMENT:
            return Verdict(KEEP, f"On your data INT8 is clearly worse: {same}{ties}" + (f", and {change}" if change
                                                                                        else "") + ".", evidence)
        if n >= MIN_EXAMPLES and agreement >= READY_AGREEMENT and loss <= READY_LOSS:
            return Verdict(READY, f"{same}{ties}" + (f", and {change}" if change else "") + ".", evidence)
        why = (f"only {n} examples were measured; {MIN_EXAMPLES} or more show a 1-point difference" if n < MIN_EXAMPLES
               else f"{change}" if loss > READY_LOSS else f"the answers differ on {_percent(1 - agreement)} of them")
        return Verdict(CHECK, f"{same}{ties}, but {why}.", evidence)
    a, examples = calibration["agreement"], calibration["examples"]
    if not q.get("passed"):
        return Verdict(KEEP, f"INT8 was kept by hand although it gave the same answer as FP32 on only "
                             f"{_percent(a or 0)} of the built-in test examples (the target is "
                             f"{_percent(calibration['target'] or 0)}).", evidence)
    on = f" on {examples} built-in test examples" if examples else " on the built-in test examples"
    figure = f"INT8 gave the same answer as FP32{on} ({_percent(a)})" if a is not None else "INT8 passed the guard"
    return Verdict(CHECK, f"{figure}; those are not your data, so evaluate it on a labelled file of yours before "
                          "shipping.", evidence)
