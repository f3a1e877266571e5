"""The verdict's rules on constructed evidence: calibration alone never says "Ready", real data decides."""

from __future__ import annotations

import pytest

from app.core.verdict import CHECK, KEEP, READY, verdict, wilson_lower


def _manifest(agreement=1.0, examples=144, passed=True, kept=True):
    chosen = {"agreement": {"agreement": agreement, "cosine": 0.999, "examples": examples}} if kept else None
    return {"quantization": {"passed": passed, "chosen": chosen, "calibration": "built-in, 144 questions",
                             "target": {"min_agreement": 0.995, "min_cosine": 0.995}}}


def _evaluation(n, agreement, fp32_acc, int8_acc, task="text-classification", disagreements=()):
    return {"task": task, "data": "/data/dev.tsv", "examples": n, "agreement": agreement,
            "fp32": {"metrics": {"accuracy": fp32_acc}}, "int8": {"metrics": {"accuracy": int8_acc}},
            "delta": {"accuracy": int8_acc - fp32_acc}, "n_disagreements": len(disagreements),
            "disagreements": list(disagreements)}


def test_calibration_alone_asks_for_the_users_data_even_at_100_percent():
    v = verdict(_manifest(agreement=1.0))
    assert v.badge == CHECK and "144 built-in test examples (100%)" in v.sentence and "your" in v.sentence
    assert "your_data" not in v.evidence and v.evidence["calibration"]["agreement"] == 1.0


def test_real_data_overrules_calibration():
    # the QA case of the issue: 100% on calibration, 94.5% on real SQuAD
    v = verdict(_manifest(agreement=1.0), _evaluation(2000, 0.945, 0.800, 0.797, task="question-answering"))
    assert v.badge == CHECK and "94.5% of your 2000 examples" in v.sentence
    assert v.evidence["your_data"]["agreement"] == 0.945


def test_enough_matching_data_is_ready_to_use():
    v = verdict(_manifest(), _evaluation(872, 0.995, 0.870, 0.868))
    assert v.badge == READY and "99.50% of your 872 examples" in v.sentence and "0.2 points lower" in v.sentence
    assert 0.98 < v.evidence["your_data"]["agreement_at_least"] < 0.995


def test_too_few_examples_are_not_enough():
    v = verdict(_manifest(), _evaluation(40, 1.0, 0.9, 0.9))
    assert v.badge == CHECK and "only 40 examples" in v.sentence


@pytest.mark.parametrize("agreement, fp32, int8", [(0.85, 0.9, 0.9), (0.97, 0.90, 0.87)])
def test_clearly_worse_on_real_data_keeps_fp32(agreement, fp32, int8):
    assert verdict(_manifest(), _evaluation(1000, agreement, fp32, int8)).badge == KEEP


def test_near_ties_are_counted_and_said():
    ties = [{"fp32_score": 0.52}, {"fp32_score": 0.55}, {"fp32_score": 0.97}]
    v = verdict(_manifest(), _evaluation(1000, 0.997, 0.9, 0.9, disagreements=ties))
    assert v.badge == READY and "2 of the differences are examples FP32 itself was unsure about" in v.sentence


def test_guard_kept_fp32_or_forced_int8_below_target():
    assert verdict(_manifest(kept=False)).badge == KEEP
    v = verdict(_manifest(agreement=0.97, passed=False))
    assert v.badge == KEEP and "kept by hand" in v.sentence


def test_wilson_lower_bound():
    assert wilson_lower(1.0, 0) == 0.0
    assert 0.99 < wilson_lower(0.999, 10000) < 0.999
    assert wilson_lower(0.5, 100) == pytest.approx(0.404, abs=0.002)


def test_qa_says_how_many_different_answers_still_overlap():
    diffs = [{"fp32": "Gustave Eiffel", "int8": "Eiffel"}, {"fp32": "1889", "int8": "in Paris"}]
    v = verdict(_manifest(), _evaluation(500, 0.996, 0.8, 0.8, task="question-answering", disagreements=diffs))
    assert "1 of the different answers still overlap" in v.sentence
    assert v.evidence["your_data"]["overlapping_answers"] == 1
