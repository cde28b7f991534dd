#!/usr/bin/env bash
# One run on a GPU machine: build with that machine's torch, run the CUDA tests, run
# compute-sanitizer (memcheck + racecheck) over every CUDA kernel, run the benchmarks, and leave
# logs + JSON in OUTDIR. Installs nothing (the GPU machine may have no network).
#   scripts/gpu_check.sh [OUTDIR]        (default: $OUT, else ./gpu-out)
#   GPU_CHECK_STEPS="tests bench"        run a subset (the build always runs): tests memcheck racecheck bench
#                                        (a device call is capped at 10 minutes; split the run if needed)
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-./gpu-out}}
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability())))")}
declare -A status
want() { [[ " ${GPU_CHECK_STEPS:-tests memcheck racecheck bench} " == *" $1 "* ]]; }

step() {  # step NAME LOGFILE CMD...
  local name=$1 log=$2; shift 2
  local t0=$(date +%s)
  echo "=== $name: $*" | tee "$OUTDIR/$log"
  "$@" >> "$OUTDIR/$log" 2>&1
  local rc=$?
  status[$name]="rc=$rc $(( $(date +%s) - t0 ))s"
  tail -n 15 "$OUTDIR/$log"
  return $rc
}

step build build.log env FORCE_CUDA=1 $PY setup.py build_ext --inplace || { echo "build failed"; exit 1; }
$PY -m rnnkern.cli info --json > "$OUTDIR/info.json" 2>&1
# timeouts: a wrong co-residency assumption in a grid-synchronised kernel would hang, not fail
# (-k: SIGKILL if a process stuck in a CUDA call ignores the TERM)
TO="timeout -k 10"
# Only the CUDA-marked tests: the CPU suite needs no GPU and runs everywhere else.
# GPU_CHECK_PYTEST_ARGS="" runs the whole suite. A per-test limit (thread method: it works while
# the main thread is stuck in a CUDA call) dumps the stacks of a hung test into the log.
PYTEST_ARGS=${GPU_CHECK_PYTEST_ARGS--m cuda}
$PY -c "import pytest_timeout" 2>/dev/null && PYTEST_ARGS="$PYTEST_ARGS --timeout 240 --timeout-method thread"
want tests && step tests tests.log $TO 420 $PY -m pytest -q -p no:cacheprovider $PYTEST_ARGS tests --junitxml="$OUTDIR/junit.xml"
SAN=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" 2>/dev/null || true)
if [ -n "$SAN" ]; then
  # instrument rnnkern's own kernels only (torch's and cuBLAS's are not ours to check, and
  # instrumenting them all is slow), where this compute-sanitizer has the filter
  SAN_ARGS="--error-exitcode 3"
  [[ $("$SAN" --help 2>&1) == *--kernel-name* ]] && SAN_ARGS="$SAN_ARGS --kernel-name kns=rnnkern"
  want memcheck && step memcheck memcheck.log $TO 300 "$SAN" --tool memcheck $SAN_ARGS $PY scripts/sanitize_driver.py
  want racecheck && step racecheck racecheck.log $TO 300 "$SAN" --tool racecheck $SAN_ARGS $PY scripts/sanitize_driver.py
else
  status[memcheck]="compute-sanitizer not found"
fi
want bench && step bench bench.log $TO 300 $PY -m rnnkern.cli bench --device cuda --json "$OUTDIR/bench.json" --plot "$OUTDIR/bench.png"

echo
echo "== gpu_check summary ($($PY -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)'))"
for k in build tests memcheck racecheck bench; do printf '%-10s %s\n' "$k" "${status[$k]:-skipped}"; done | tee "$OUTDIR/summary.txt"
