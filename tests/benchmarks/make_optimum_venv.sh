#!/usr/bin/env bash
# A separate venv with Optimum (ONNX Runtime extra) for the benchmarks' comparison columns.
#
#   bash tests/benchmarks/make_optimum_venv.sh [VENV]     (default /tmp/pocket-optimum-venv)
#
# Its own venv because optimum[onnxruntime] pins transformers < 4.58 while the app's test venv has
# transformers 5. torch is installed FIRST and pinned to 2.13.0 (the CPU wheel on this machine's disk) and
# stays pinned through a constraints file while Optimum installs: any other torch spec makes pip download
# gigabytes of CUDA wheels. If pip reports that Optimum needs another torch, this script stops there.
set -euo pipefail
VENV="${1:-/tmp/pocket-optimum-venv}"
TORCH_VERSION=2.13.0

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install "torch==$TORCH_VERSION"
"$VENV/bin/python" -c "import torch, sys; v = torch.__version__; print('torch', v); sys.exit(0 if v.startswith('$TORCH_VERSION') else 1)"

PIN="$(mktemp)"
trap 'rm -f "$PIN"' EXIT
echo "torch==$TORCH_VERSION" >"$PIN"
if ! "$VENV/bin/python" -m pip install --constraint "$PIN" 'optimum[onnxruntime]'; then
    echo "make_optimum_venv: optimum[onnxruntime] could not install with torch==$TORCH_VERSION pinned;" \
         "pin an Optimum release that accepts it instead of letting pip fetch another torch." >&2
    exit 1
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "transformers", "optimum", "onnxruntime", "onnx"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (not installed)")
from optimum.onnxruntime import ORTQuantizer  # noqa: F401  (fails loudly if the extra is incomplete)
from optimum.onnxruntime.configuration import AutoQuantizationConfig  # noqa: F401
PY
test -x "$VENV/bin/optimum-cli"
echo "Optimum venv ready: $VENV"
