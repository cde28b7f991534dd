#!/usr/bin/env bash
# Nsight Compute on the RNN kernels whose per-step time misses its model (bench/NOTES.md, "First GPU
# runs"): stall reasons, issue rates and memory traffic of the last profiled launch of each kernel.
# Run after a build (scripts/gpu_check.sh's build step, or a carried _C).
#   scripts/gpu_profile.sh [OUTDIR] [CASE...]   (default cases: every one in scripts/profile_driver.py)
# Leaves the GPU's clocks alone (--clock-control none), as the lent machines require.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-./gpu-out}}
shift || true
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || CASES=(rnn-fp32-B8-H256 rnn-fp32-B64-H1024 rnn-bf16-B64-H1024 rnn-fp32-B256-H1024)
SECTIONS="--section SpeedOfLight --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy"
for c in "${CASES[@]}"; do
  # persistent cases: a forward and a backward launch each iteration; skip the 2 warm-up
  # iterations, profile the third's pair. B256 (general path): per-step products and epilogue
  # kernels, a few from the middle of the first forward.
  case $c in
    *B256*) pick=(--kernel-name regex:'rnn_step_epilogue|gemm' --launch-skip 20 --launch-count 6) ;;
    *) pick=(--kernel-name regex:rnn_persistent --launch-skip 4 --launch-count 2) ;;
  esac
  timeout -k 10 240 "$NCU" --clock-control none "${pick[@]}" $SECTIONS --export "$OUTDIR/$c" --force-overwrite \
    $PY scripts/profile_driver.py "$c" > "$OUTDIR/$c.txt" 2>&1
  echo "$c: rc=$?"
done
