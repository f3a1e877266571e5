"""The accuracy guard: try settings fastest first, compare each with FP32 on the calibration set, keep the first
that meets the target (or none: the model stays FP32, with the reason)."""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from app.core import cpu
from app.core.errors import QuantizationError
from app.core.progress import ProgressFn, check_cancel, report
from app.core.quantize.calibrate import Calibration, collect
from app.core.quantize.config import Agreement, Candidate, GuardTarget, QuantizeConfig, QuantizeResult
from app.core.quantize.matmul import quantize_matmuls, quantized_weight
from app.core.quantize.model import Model
from app.core.quantize.rewrite import outlier_channels, rewrite

log = logging.getLogger(__name__)


def head_nodes(model: Model, calibration: Calibration) -> set[str]:
    """Task-head MatMuls (pooler, classifier, QA span scorer): one row per example or a handful of outputs.

    They cost nothing in FP32 and their outputs are the answer itself, so they are never quantized.
    """
    return {n.name for n in model.weighted_matmuls() if n.input[0] in calibration.per_example
            or model.shape(n.input[1])[-1] < 32}


def sensitivity(model: Model, calibration: Calibration, config: QuantizeConfig) -> list[tuple[str, float]]:
    """Each quantizable node's relative output error when only it is fake-quantized (worst first)."""
    scores = []
    for n in model.weighted_matmuls():
        x = calibration.activations.get(n.input[0])
        if x is None:
            continue
        w = model.load(n.input[1]).astype(np.float32)  # (in, out)
        if config.split_outliers:
            channels = outlier_channels(calibration.peaks[n.input[0]], config.outlier_ratio,
                                        config.max_outlier_channels)
            x = x.copy()
            x[:, channels] = 0
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        step = (hi - lo) / 255 or 1.0
        xq = np.round((x - lo) / step) * step + lo
        q, scale, zero = quantized_weight(w, config)
        wq = (q.astype(np.float32) - zero.astype(np.float32)) * scale  # what the INT8 kernel multiplies by
        exact = x @ w
        err = float(np.linalg.norm(exact - xq @ wq) / (np.linalg.norm(exact) or 1.0))
        scores.append((n.name, err))
    return sorted(scores, key=lambda s: -s[1])


def compare(spec, reference: list[dict], outputs: list[dict], feeds: list[dict]) -> Agreement:
    """Agreement and mean cosine between INT8 outputs and the FP32 reference, as the model's task measures them."""
    from app.core.tasks import get_task

    same, cos = get_task(spec.task).agreement(spec, reference, outputs, feeds)
    return Agreement(float(np.mean(same)), float(np.mean(cos)), len(same))


def validate(int8_model: Path | bytes, calibration: Calibration, *, spec,
             target: GuardTarget | None = None, threads: int | None = None,
             cancel: threading.Event | None = None, chunk: int = 32) -> Agreement:
    """Compare the INT8 model with the FP32 reference on the calibration set.

    With a target, stops as soon as more examples disagree than the target allows: a failing setting
    costs a fraction of a full pass (the agreement then covers the examples run so far).
    """
    from app.core.tasks import get_task
    from app.core.tasks.runner import new_session

    session = new_session(int8_model if isinstance(int8_model, bytes) else str(int8_model), threads)
    names = [o.name for o in session.get_outputs()]
    if get_task(spec.task).whole_set_agreement:  # e.g. nearest neighbours among all the examples
        chunk, target = len(calibration.feeds), None
    total = sum(len(f["attention_mask"]) for f in calibration.feeds)
    allowed = None if target is None else (1 - target.min_agreement) * total
    same = cosine = examples = 0.0
    for lo in range(0, len(calibration.feeds), chunk):
        check_cancel(cancel)
        feeds = calibration.feeds[lo:lo + chunk]
        part = compare(spec, calibration.reference[lo:lo + chunk],
                       [dict(zip(names, session.run(None, f))) for f in feeds], feeds)
        same, cosine = same + part.agreement * part.examples, cosine + part.cosine * part.examples
        examples += part.examples
        if allowed is not None and examples - same > allowed + 1e-9:
            break
    return Agreement(same / examples, cosine / examples, int(examples)) if examples else Agreement(1.0, 1.0, 0)


def candidate_ladder(base: QuantizeConfig = QuantizeConfig(), *,
                     saturating: bool | None = None) -> list[QuantizeConfig]:
    """Settings to try, fastest first (`saturating`: this CPU's u8×s8 products saturate, cpu.u8s8_saturates()).

    Every extra op costs time on small models, so the ladder starts with everything in INT8 and no outlier
    handling, then scales LayerNorm outlier channels (one Mul per LayerNorm) and sends ever more of the
    other outlier channels through FP32 side paths (four small ops per MatMul).

    On x86 CPUs without VNNI, u8×s8 products of 8-bit weights are summed in int16 and saturate on inputs a
    calibration set of a hundred texts rarely shows: on an AVX2 EPYC, minilm-sst2 passed the guard at 99.5% and
    gave 99.05-99.2% on 2,000 held-out SST-2 sentences. There every rung has uint8 weights, which MLAS sums
    exactly (u8×u8 in int32; about 15% slower than int8 there), starting with outlier handling on (98.6% held
    out without it, 99.6% with it), and the last rung has 7-bit int8 weights, which cannot saturate.
    """
    saturating = cpu.u8s8_saturates() if saturating is None else saturating
    wide = dict(outlier_ratio=2.0, max_outlier_channels=16)
    if saturating:
        exact = for_this_cpu(base, saturating)
        return [exact, replace(exact, **wide), replace(base, **wide, reduce_range=True)]
    plain = replace(base, scale_outliers=False, split_outliers=False)
    return [plain, replace(base, outlier_ratio=6.0), base, replace(base, **wide, reduce_range=True)]


def for_this_cpu(base: QuantizeConfig, saturating: bool | None = None) -> QuantizeConfig:
    """`base` with uint8 weights where u8×s8 products saturate (`saturating`, default cpu.u8s8_saturates())."""
    saturating = cpu.u8s8_saturates() if saturating is None else saturating
    return replace(base, weight_type="uint8") if saturating else base


def keep_fp32_base() -> QuantizeConfig:
    """The settings of the last-resort rungs besides the nodes they keep in FP32, also those the nodes are ranked
    with: the defaults with a zero point per weight column (uint8 weights where u8×s8 saturates, else int8).

    A zero point costs nothing measurable where u8×s8 is exact (VNNI, AMX: the sums are int32) and puts each
    column's [min, max] on all 255 levels. Only models the symmetric rungs fail get it: minilm-conll's entities
    on 3,250 CoNLL sentences, one node kept, 98.68% → 99.26% identical; but on models that pass earlier it moved
    which near-ties flip the other way (minilm-sst2 held out 99.70 → 99.35%, all-MiniLM-L6-v2's top-1 97.71 →
    97.26%).
    """
    return for_this_cpu(QuantizeConfig(symmetric=False))


def keep_fp32_ladder(order: list[str]) -> list[QuantizeConfig]:
    """The last resort, slower rungs: ever more of the most sensitive nodes (`order`) entirely in FP32, on
    `keep_fp32_base()`."""
    base = keep_fp32_base()
    ladder = []
    for k in (1, 2, 3, 4, 6, 8, 12, 16, 24):
        if k > max(1, len(order) // 3):
            break
        ladder.append(replace(base, keep_fp32=tuple(order[:k])))
    return ladder


def build_int8(base: Model, config: QuantizeConfig, calibration: Calibration,
               head: set[str] = frozenset()) -> tuple[Model, dict[str, int]]:
    """The INT8 candidate for `config` (weights still lazy) and the outlier channels it treated per MatMul."""
    model = base.copy()
    side_nodes, treated = rewrite(model, config, calibration, head)
    quantize_matmuls(model, config, set(config.keep_fp32) | set(side_nodes) | set(head))
    return model, treated


def quantize_model(fp32_path: Path, out_path: Path, calibration: Calibration, *, spec,
                   target: GuardTarget = GuardTarget(),
                   force: QuantizeConfig | None = None, threads: int | None = None,
                   progress: ProgressFn | None = None, cancel: threading.Event | None = None) -> QuantizeResult:
    """Quantize `fp32_path` to `out_path` with the fastest setting that meets `target` on the calibration set.

    With `force`, that one setting is used and measured (and written even if below target).
    When nothing meets the target, `out_path` is not written and the result says why. Each candidate is
    streamed to a file beside `out_path` and validated from there; the chosen one is renamed into place.
    """
    out_path = Path(out_path)
    candidate_file = out_path.with_name(f".candidate-{os.getpid()}.onnx")
    data_name = out_path.name + ".data"  # what the chosen candidate's external data (> 2 GB) is called
    try:
        report(progress, "quantize", 0, None, "running the FP32 model on the calibration set")
        base = Model.read(fp32_path)
        if not calibration.reference:
            collect(fp32_path, calibration, model=base, threads=threads)
        check_cancel(cancel)
        head = head_nodes(base, calibration)
        candidates: list[Candidate] = []

        def attempt(config: QuantizeConfig, step: int, steps: int | None) -> int:
            """Write the candidate for `config`, validate it, record it; returns its size in bytes."""
            check_cancel(cancel)
            report(progress, "quantize", step, steps, f"trying {config.describe()}")
            start = time.perf_counter()
            model, treated = build_int8(base, config, calibration, head)
            size = model.save(candidate_file, data_name=data_name, check_cancel=lambda: check_cancel(cancel))
            del model
            report(progress, "validate", step, steps, f"comparing with FP32: {config.describe()}")
            agreement = validate(candidate_file, calibration, spec=spec, target=None if force else target,
                                 threads=threads, cancel=cancel)
            candidates.append(Candidate(config, agreement, agreement.meets(target), time.perf_counter() - start,
                                        treated))
            log.info("candidate %s: agreement %.4f cosine %.5f", config.describe(), agreement.agreement,
                     agreement.cosine)
            return size

        def first_passing(ladder: list[QuantizeConfig]) -> int | None:
            for step, config in enumerate(ladder):
                size = attempt(config, step, len(ladder))
                if candidates[-1].passed or force:  # forced settings are kept even below target: the expert chose
                    return size
            return None

        size = first_passing([force] if force else candidate_ladder())
        if size is None and not force:  # the last resort; the sensitivity ranking is costly, so only now
            ranked = sensitivity(base, calibration, keep_fp32_base())  # with the weights the rungs will have
            size = first_passing(keep_fp32_ladder([name for name, _ in ranked if name not in head]))
        chosen = candidates[-1] if size is not None else None
        if size is not None:
            os.replace(candidate_file, out_path)
        else:
            out_path.with_name(data_name).unlink(missing_ok=True)
        report(progress, "validate", 1, 1, "done")
        return QuantizeResult(chosen=chosen, candidates=tuple(candidates), target=target,
                              calibration=calibration.description, onnx_bytes=size or 0,
                              outlier_channels=chosen.outlier_channels if chosen else {},
                              int8_path=cpu.int8_path())
    except (OSError, RuntimeError, ValueError) as e:
        if isinstance(e, QuantizationError):
            raise
        out_path.unlink(missing_ok=True)
        out_path.with_name(data_name).unlink(missing_ok=True)
        raise QuantizationError(f"Quantizing {fp32_path} failed: {e}. The FP32 model is unaffected.") from e
    finally:
        candidate_file.unlink(missing_ok=True)
