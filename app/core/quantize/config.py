"""The guard's settings, targets and results: what a candidate was, what it scored, what was chosen and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal


@dataclass(frozen=True)
class QuantizeConfig:
    """One candidate setting (experts can force one)."""

    weight_type: Literal["int8", "uint8"] = "int8"
    per_channel: bool = True
    symmetric: bool = True  # int8 weights around 0; else [min, max] per column onto -128..127 (uint8: always)
    reduce_range: bool = False  # 7-bit weights: no u8×s8 saturation on AVX2 without VNNI, less precision
    outlier_ratio: float = 4.0  # a channel is an outlier when its peak |x| exceeds ratio × the median channel's
    # A MatMul input fed by a LayerNorm that has outliers gets every channel above `scale_ratio` × the median
    # channel's peak scaled down to it through the LayerNorm's gamma/beta (the weight rows scaled up: exact).
    scale_outliers: bool = True
    scale_ratio: float = 2.0
    # The outlier channels of the other MatMul inputs (GELU outputs) go through a small FP32 side path.
    split_outliers: bool = True
    max_outlier_channels: int = 8
    quantize_embeddings: bool = True  # int8 embedding tables with per-row scales
    keep_fp32: tuple[str, ...] = ()  # node names left in FP32 (the most sensitive ones)

    def __post_init__(self):
        if self.weight_type not in ("int8", "uint8"):
            raise ValueError(f"weight_type: {self.weight_type!r} is not 'int8' or 'uint8'")
        for name in ("outlier_ratio", "scale_ratio"):
            if getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be above 1 (got {getattr(self, name)})")
        if self.max_outlier_channels < 0:
            raise ValueError(f"max_outlier_channels: must be >= 0 (got {self.max_outlier_channels})")

    @property
    def zero_points(self) -> bool:
        """Whether the weights have a zero point per column (or tensor) besides their scale."""
        return self.weight_type == "uint8" or not self.symmetric

    def describe(self) -> str:
        asymmetric = " asymmetric" if self.weight_type == "int8" and self.zero_points else ""
        parts = [f"{self.weight_type}{asymmetric} weights", "per-channel" if self.per_channel else "per-tensor"]
        if self.reduce_range:
            parts.append("reduced range")
        if self.scale_outliers or self.split_outliers:
            how = [f"scaled to {self.scale_ratio:g}x after LayerNorms"] if self.scale_outliers else []
            how += [f"up to {self.max_outlier_channels} in FP32 elsewhere"] if self.split_outliers else []
            parts.append(f"outlier channels (> {self.outlier_ratio:g}x the median) {' and '.join(how)}")
        if not self.quantize_embeddings:
            parts.append("FP32 embeddings")
        if self.keep_fp32:
            parts.append(f"{len(self.keep_fp32)} sensitive node(s) in FP32")
        return ", ".join(parts)


@dataclass(frozen=True)
class GuardTarget:
    min_agreement: float = 0.995  # top-1 / span agreement with FP32 on the calibration set
    min_cosine: float = 0.995  # mean cosine between INT8 and FP32 outputs

    def __post_init__(self):
        for name in ("min_agreement", "min_cosine"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be within 0..1 (got {getattr(self, name)})")


@dataclass(frozen=True)
class Agreement:
    agreement: float  # fraction of examples with the same top-1 label / an overlapping answer span
    cosine: float  # mean cosine similarity of the outputs (class scores; QA start/end logits)
    examples: int

    def meets(self, target: GuardTarget) -> bool:
        return self.agreement >= target.min_agreement and self.cosine >= target.min_cosine


@dataclass(frozen=True)
class Candidate:
    config: QuantizeConfig
    agreement: Agreement
    passed: bool
    seconds: float
    outlier_channels: dict[str, int] = field(default_factory=dict)  # MatMul → outlier channels scaled or split

    def to_dict(self) -> dict:
        return {"settings": self.config.describe(), "config": asdict(self.config), "agreement": asdict(self.agreement),
                "passed": self.passed, "seconds": round(self.seconds, 2)}


@dataclass(frozen=True)
class QuantizeResult:
    chosen: Candidate | None  # None: no setting met the target; the model stays FP32
    candidates: tuple[Candidate, ...]
    target: GuardTarget
    calibration: str  # what the guard ran ("built-in, 100 texts" or the user's file)
    onnx_bytes: int = 0
    outlier_channels: dict[str, int] = field(default_factory=dict)
    int8_path: str = ""  # the CPU's INT8 path the guard measured on (cpu.int8_path): saturating ones differ

    @property
    def passed(self) -> bool:
        return self.chosen is not None and self.chosen.passed

    def explain(self) -> str:
        if self.chosen:
            a = self.chosen.agreement
            below = "" if self.chosen.passed else " That is below the target; these settings were forced."
            return (f"INT8 ({self.chosen.config.describe()}) gives the same answer as FP32 on "
                    f"{a.agreement:.2%} of {a.examples} calibration examples (mean score cosine {a.cosine:.4f}).{below}")
        best = max(self.candidates, key=lambda c: (c.agreement.agreement, c.agreement.cosine), default=None)
        got = f"; the best setting reached {best.agreement.agreement:.2%} (cosine {best.agreement.cosine:.4f})" if best else ""
        return (f"No INT8 setting met the target (agreement >= {self.target.min_agreement:.2%}, cosine >= "
                f"{self.target.min_cosine:.3f}){got}. The model is kept in FP32 so it never gives wrong answers; "
                "lower the target or force settings if you accept the difference.")

    def to_dict(self) -> dict:
        return {"passed": self.passed, "chosen": self.chosen.to_dict() if self.chosen else None,
                "candidates": [c.to_dict() for c in self.candidates], "target": asdict(self.target),
                "calibration": self.calibration, "onnx_bytes": self.onnx_bytes,
                "outlier_channels": self.outlier_channels, "int8_path": self.int8_path,
                "explanation": self.explain()}
