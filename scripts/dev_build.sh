#!/usr/bin/env bash
# Incremental in-place build for development: `scripts/dev_build.sh [cpu|cuda]`.
# Serialised with a lock (several people may build in this tree at once); CPU and CUDA
# configurations keep separate build dirs so switching does not recompile everything.
# cuda mode compiles for sm_90 only (fast compile check); `make build` does the full build.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-cpu}
py=${PYTHON:-.venv/bin/python}
if [ "$mode" = cuda ]; then
  export FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
else
  export RNNKERN_BUILD_CUDA=0
fi
export MAX_JOBS=${MAX_JOBS:-2}
exec flock /tmp/rnnkern-build.lock "$py" setup.py -q build_ext --inplace --build-temp "build/dev-$mode"
