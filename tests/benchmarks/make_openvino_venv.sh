#!/usr/bin/env bash
# A separate venv with OpenVINO and NNCF for bench_int8.py's OpenVINO columns (FP32, and NNCF's static INT8).
#
#   bash tests/benchmarks/make_openvino_venv.sh [VENV [EP_VENV]]
#        (defaults /tmp/pocket-openvino-venv and /tmp/pocket-ovep-venv)
#
# Its own venv, like make_optimum_venv.sh for Optimum: NNCF brings its own pins (numpy, onnx, scipy...) that
# the app's venv should not take on, and the app never imports OpenVINO. No torch: OpenVINO reads the ONNX
# export and NNCF quantizes the OpenVINO model.
#
# EP_VENV is a second venv for the optional "OpenVINO through ONNX Runtime" row: onnxruntime at the app venv's
# version plus the onnxruntime-ep-openvino plugin (a 53 MB wheel that bundles its own OpenVINO libraries, so it
# stays out of VENV, whose openvino package has another copy). Skipped with a note if it cannot install.
set -euo pipefail
VENV="${1:-/tmp/pocket-openvino-venv}"
EP_VENV="${2:-/tmp/pocket-ovep-venv}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install openvino nncf onnx numpy
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("openvino", "nncf", "onnx", "numpy"):
    print(f"{name} {md.version(name)}")
import nncf  # noqa: F401  (fails loudly if the install is incomplete)
import openvino as ov
print("OpenVINO devices:", ov.Core().available_devices)
PY
echo "OpenVINO venv ready: $VENV"

ORT_VERSION="$("$ROOT/.venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)"
python3 -m venv "$EP_VENV"
"$EP_VENV/bin/python" -m pip install --quiet --upgrade pip
if "$EP_VENV/bin/python" -m pip install "onnxruntime${ORT_VERSION:+==$ORT_VERSION}" onnxruntime-ep-openvino numpy; then
    "$EP_VENV/bin/python" - <<'PY'
import onnxruntime as ort
import onnxruntime_ep_openvino as ovep
ort.register_execution_provider_library("openvino", ovep.get_library_path())
devices = [d.ep_metadata.get("ov_device") for d in ort.get_ep_devices() if d.ep_name == ovep.get_ep_name()]
print(f"onnxruntime {ort.__version__}; OpenVINO EP devices: {devices or 'none (the plugin lists Intel devices only)'}")
PY
    echo "OpenVINO EP venv ready: $EP_VENV"
else
    echo "make_openvino_venv: onnxruntime-ep-openvino did not install for onnxruntime ${ORT_VERSION:-latest};" \
         "the benchmark skips its row." >&2
fi
