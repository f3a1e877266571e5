"""Dynamic INT8 quantization with ONNX Runtime, guarded by an accuracy check against FP32.

On CPUs without VNNI, INT8 hurts accuracy through a few places: activation outlier channels (a handful
of channels 10x larger than the rest squash every other channel into a few u8 steps), per-tensor
embedding tables, and u8×s8 saturation. The guard measures instead of guessing:

1. Run the FP32 model on a calibration set, recording outputs and the inputs of every MatMul.
2. Rewrite the graph, exactly in FP32: outlier channels of LayerNorm-fed MatMul inputs are scaled into
   range through the LayerNorm (weight rows scaled back up), the other inputs' outlier channels go through
   a tiny FP32 side path (x·W = x_outliers·W_outliers + x_rest·W_rest), and embedding tables become int8
   with one scale per row.
3. Try candidate settings, fastest first (fewer extra ops is faster): quantize (DynamicQuantizeMatMul,
   written directly), run the calibration set one example per call, compare with FP32 (top-1 agreement,
   output cosine, QA span agreement) and keep the first one that meets the target. If none does, the
   model is kept in FP32 with an explanation.

Memory stays near one copy of the model: the FP32 weights are read from the file when needed, the calibration
run refers to them where they lie, and each candidate is streamed to disk one tensor at a time.

Modules: config (settings and results), model (structure + lazy weights), calibrate, rewrite, matmul, guard.
"""

from app.core.quantize.calibrate import Calibration, collect
from app.core.quantize.config import Agreement, Candidate, GuardTarget, QuantizeConfig, QuantizeResult
from app.core.quantize.guard import (build_int8, candidate_ladder, compare, head_nodes, keep_fp32_ladder,
                                     quantize_model, sensitivity, validate)
from app.core.quantize.model import Model
from app.core.quantize.rewrite import outlier_channels, rewrite

__all__ = ["Agreement", "Calibration", "Candidate", "GuardTarget", "Model", "QuantizeConfig", "QuantizeResult",
           "build_int8", "candidate_ladder", "collect", "compare", "head_nodes", "keep_fp32_ladder",
           "outlier_channels", "quantize_model", "rewrite", "sensitivity", "validate"]
