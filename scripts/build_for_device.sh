#!/usr/bin/env bash
# Build rnnkern/_C for the lent GPU machines here, so a device call spends no time compiling:
# their image has Python 3.12 and torch 2.11.0+cu130 (.library/device/KINDS.md), and an extension
# must be built against the torch it is loaded into. Makes a venv with that pair (once), builds
# sm_90 in place (the dev builds' .so for this machine's Python stays beside it) and strips host
# debug info (the carried tree is capped at 64 MiB). Then, in the device call:
#   carry: rnnkern/_C.cpython-312-x86_64-linux-gnu.so, rnnkern/_build_info.py
#   command: GPU_CHECK_PREBUILT=1 GPU_CHECK_PACK=$OUT/gpu-check.tgz scripts/gpu_check.sh /tmp/gc
# (gpu_check.sh builds there anyway if the carried module does not import or names another torch.)
# rnnkern/_build_info.py then describes this build until the next dev build rewrites it.
# DEVICE_TESTS=1 then runs the CPU test suite here under that torch and Python (the device's
# versions; the suite's CUDA tests skip), so a Python-side incompatibility shows before device time.
#   scripts/build_for_device.sh            env: DEVICE_TORCH (2.11.0), DEVICE_PYTHON (python3.12), VENV,
#                                               DEVICE_TESTS
set -euo pipefail
cd "$(dirname "$0")/.."
torch_version=${DEVICE_TORCH:-2.11.0}
venv=${VENV:-/tmp/rnnkern-device-venv}
py=${DEVICE_PYTHON:-$(command -v python3.12 || ls "$(pyenv root 2>/dev/null)"/versions/3.12*/bin/python3.12 2>/dev/null | head -n 1)}
[ -n "$py" ] || { echo "no python3.12 found (set DEVICE_PYTHON)"; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$torch_version')" 2>/dev/null; then
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q "torch==$torch_version" numpy pybind11 ninja setuptools wheel
fi
FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-2} CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} \
  "$venv/bin/python" setup.py -q build_ext --inplace --build-temp build/device
so=$(ls rnnkern/_C.cpython-312-*.so)
strip --strip-debug "$so"
"$venv/bin/python" -c "import rnnkern; i = rnnkern.info(); print('built', i['built_with_torch'], 'archs', i['cuda_archs'])"
echo "carry: $so rnnkern/_build_info.py ($(du -h "$so" | cut -f1))"
if [ "${DEVICE_TESTS:-0}" = 1 ]; then
  "$venv/bin/pip" install -q pytest tqdm matplotlib expecttest
  "$venv/bin/python" -m pytest -q -p no:cacheprovider tests
fi
