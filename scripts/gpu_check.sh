#!/usr/bin/env bash
# One run on a GPU machine: build with that machine's torch, run the CUDA tests, run
# compute-sanitizer (memcheck + racecheck) over every CUDA kernel, run the benchmarks, and leave
# logs + JSON in OUTDIR. Installs nothing (the GPU machine may have no network).
#   scripts/gpu_check.sh [OUTDIR]        (default: $OUT, else ./gpu-out; an OUTDIR inside $OUT is
#                                        packed into $OUT/gpu-check.tgz unless GPU_CHECK_PACK says where)
#   GPU_CHECK_STEPS="tests bench"        run a subset (the build always runs): tests memcheck racecheck bench
#                                        (the default; bench includes host_overhead and rnn_trace), and profile (never by default): Nsight Compute
#                                        on the kernels that miss their models, scripts/gpu_profile.sh,
#                                        into OUTDIR/profile, after the rest, alone (~3-5.5 min for all cases)
#                                        (a device call is capped at 10 minutes; split the run if needed)
#   GPU_CHECK_SANITIZE_OPS="rnn conv_transpose"  sanitizer runs over these families only (default: all:
#                                        unpool rnn conv conv_transpose conv_wgmma rnn_exchange)
#   GPU_CHECK_BENCH_OPS="conv_transpose rnn"     bench these ops only (default: all)
#   GPU_CHECK_PROFILE_CASES="conv-bf16-CL-256-64x64-d1 ..."  profile these cases of
#                                        scripts/profile_driver.py only (default: all; 14-27 s a case)
#   GPU_CHECK_PREBUILT=1                 use an rnnkern/_C*.so carried in (built elsewhere against the
#                                        same torch) when it imports with CUDA kernels; else build here
#   GPU_CHECK_PACK=$OUT/gpu-check.tgz   write the logs to OUTDIR outside $OUT and pack them into this one
#                                        file after each phase (a device call returns at most 8 files, and
#                                        what is packed survives a call that runs out of time)
#   GPU_PROFILE_PACK=$OUT/gpu-profile.tgz  the profile step's own pack (reports and text pages, after each
#                                        case); OUTDIR/profile then stays out of GPU_CHECK_PACK
# The profile step alone, on a carried build:
#   GPU_CHECK_PREBUILT=1 GPU_CHECK_STEPS=profile GPU_CHECK_PACK=$OUT/gpu-check.tgz \
#     GPU_PROFILE_PACK=$OUT/gpu-profile.tgz scripts/gpu_check.sh /tmp/gc
# tests, memcheck and racecheck (two processes: racecheck_untried takes the forced opt-in forms'
# families, conv_wgmma, rnn_exchange and conv_tma) run side by side (they only check correctness);
# then the tests marked `untried` alone (tests_untried, part of `tests`: the TMA gather's fp32 cases,
# its CTA clusters, batched stride phases and in-place weight map, and the TMA grad_weight with its
# descriptor probe, RNNKERN_CONV_MMA=tma, not yet run on a GPU);
# bench runs alone (the opt-in forms' rows last).
# Times on an H200 (prebuilt, 16 CPU cores, 2026-11-27/28): tests 79-110 s (-n 12), memcheck 16-25 s,
# racecheck 183 s over unpool + rnn + conv + conv_transpose beside 74 s over the opt-in families
# (142 s over rnn + conv alone), bench 63-67 s (all ops); the three checks overlap, so a whole run
# took 254-332 s, plus ~40 s to start a machine.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-${OUT:-./gpu-out}}
# A device call brings back at most 8 files from $OUT (2026-11-28: a run that logged straight into
# $OUT/gc lost its test logs): logs meant for $OUT go to a scratch folder, packed into one file there.
if [ -n "${OUT:-}" ] && [ -z "${GPU_CHECK_PACK:-}" ] && [[ "$(realpath -m "$OUTDIR")/" == "$(realpath -m "$OUT")/"* ]]; then
  GPU_CHECK_PACK=$OUT/gpu-check.tgz
  OUTDIR=$(mktemp -d /tmp/gpu-check.XXXXXX)
  echo "logs in $OUTDIR, packed into $GPU_CHECK_PACK"
fi
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# the in-place build is imported from the repo root (pytest adds it itself; the sanitizer runs do not)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('.'.join(map(str, torch.cuda.get_device_capability())))")}
pack() {  # OUTDIR -> GPU_CHECK_PACK, replaced atomically (OUTDIR/profile travels in its own pack, if any)
  [ -n "${GPU_CHECK_PACK:-}" ] || return 0
  local skip=()
  [ -n "${GPU_PROFILE_PACK:-}" ] && skip=(--exclude=./profile)
  tar czf "$GPU_CHECK_PACK.tmp" -C "$OUTDIR" "${skip[@]}" . && mv "$GPU_CHECK_PACK.tmp" "$GPU_CHECK_PACK"
}
want() { [[ " ${GPU_CHECK_STEPS:-tests memcheck racecheck bench} " == *" $1 "* ]]; }

step() {  # step NAME CMD...   (log: OUTDIR/NAME.log, status line: OUTDIR/NAME.status)
  local name=$1; shift
  local t0=$(date +%s)
  echo "=== $name: $*" > "$OUTDIR/$name.log"
  "$@" >> "$OUTDIR/$name.log" 2>&1
  local rc=$?
  echo "rc=$rc $(( $(date +%s) - t0 ))s" > "$OUTDIR/$name.status"
  echo "=== $name: rc=$rc"; tail -n 12 "$OUTDIR/$name.log"
  return $rc
}

has_cuda_kernels() {  # the carried build imports here, has CUDA kernels and was built against this torch
  $PY -c "import rnnkern, sys, torch; i = rnnkern.info()
sys.exit(0 if i['cuda_kernels_compiled'] and i['built_with_torch'] == torch.__version__ else 1)"; }
if [ "${GPU_CHECK_PREBUILT:-0}" = 1 ] && has_cuda_kernels; then
  echo "using the carried rnnkern/_C build" | tee "$OUTDIR/build.log"; echo "prebuilt" > "$OUTDIR/build.status"
else
  step build env FORCE_CUDA=1 $PY setup.py build_ext --inplace || { echo "build failed"; pack; exit 1; }
fi
$PY -m rnnkern.cli info --json > "$OUTDIR/info.json" 2>&1
# timeouts: a wrong co-residency assumption in a grid-synchronised kernel would hang, not fail
# (-k: SIGKILL if a process stuck in a CUDA call ignores the TERM)
TO="timeout -k 10"
# Only the CUDA-marked tests: the CPU suite needs no GPU and runs everywhere else.
# GPU_CHECK_PYTEST_ARGS="" runs the whole suite. A per-test limit (thread method: it works while
# the main thread is stuck in a CUDA call) dumps the stacks of a hung test into the log.
PYTEST_ARGS=${GPU_CHECK_PYTEST_ARGS--m cuda}
$PY -c "import pytest_timeout" 2>/dev/null && PYTEST_ARGS="$PYTEST_ARGS --timeout ${GPU_CHECK_TEST_TIMEOUT:-240} --timeout-method thread"
# xdist workers share the one GPU: the suite is many small launches, so this is mostly host time
$PY -c "import xdist" 2>/dev/null && PYTEST_ARGS="$PYTEST_ARGS -n ${GPU_CHECK_WORKERS:-6}"
# the tests of opt-in kernels not yet run on a GPU (marked `untried`) run after everything else,
# alone: one that faults would take the CUDA context of the tests after it in the same process
want tests && step tests $TO ${GPU_CHECK_TESTS_TIMEOUT:-420} env RNNKERN_TEST_UNTRIED=skip $PY -m pytest -v -rfE -p no:cacheprovider $PYTEST_ARGS tests --junitxml="$OUTDIR/junit.xml" &
SAN=$(command -v compute-sanitizer || ls "${CUDA_HOME:-/usr/local/cuda}"/bin/compute-sanitizer \
      /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -n 1)
if [ -n "$SAN" ]; then
  # instrument rnnkern's own kernels only (torch's and cuBLAS's are not ours to check, and
  # instrumenting them all is slow), where this compute-sanitizer has the filter
  SAN_ARGS="--error-exitcode 3"
  [[ $("$SAN" --help 2>&1) == *--kernel-name* ]] && SAN_ARGS="$SAN_ARGS --kernel-name kns=rnnkern"
  SAN_TO=${GPU_CHECK_SANITIZER_TIMEOUT:-300}
  want memcheck && step memcheck $TO $SAN_TO "$SAN" --tool memcheck $SAN_ARGS $PY scripts/sanitize_driver.py ${GPU_CHECK_SANITIZE_OPS:-} &
  # racecheck is the slowest check (its instrumentation runs on the host): by default the forced
  # opt-in forms' families get a process of their own beside the others (sanitize_driver.CHECKS), so
  # neither waits for the other and a timeout in one keeps the other's result
  if [ -n "${GPU_CHECK_SANITIZE_OPS:-}" ]; then
    want racecheck && step racecheck $TO $SAN_TO "$SAN" --tool racecheck $SAN_ARGS $PY scripts/sanitize_driver.py $GPU_CHECK_SANITIZE_OPS &
  else
    want racecheck && step racecheck $TO $SAN_TO "$SAN" --tool racecheck $SAN_ARGS $PY scripts/sanitize_driver.py unpool rnn conv conv_transpose &
    want racecheck && step racecheck_untried $TO $SAN_TO "$SAN" --tool racecheck $SAN_ARGS $PY scripts/sanitize_driver.py conv_wgmma rnn_exchange conv_tma rnn_on_chip conv_layout_copy &
  fi
else
  echo "compute-sanitizer not found" > "$OUTDIR/memcheck.status"
fi
wait
pack
# (packed after each step from here on: a device call that runs out of time keeps all but the step
# it stopped in)
want tests && step tests_untried $TO ${GPU_CHECK_UNTRIED_TIMEOUT:-300} env RNNKERN_TEST_UNTRIED=only $PY -m pytest -v -rfE -p no:cacheprovider $PYTEST_ARGS tests --junitxml="$OUTDIR/junit_untried.xml"
pack
want bench && step bench $TO ${GPU_CHECK_BENCH_TIMEOUT:-300} $PY -m rnnkern.cli bench --device cuda --json "$OUTDIR/bench.json" --plot "$OUTDIR/bench.png" ${GPU_CHECK_BENCH_OPS:+--ops $GPU_CHECK_BENCH_OPS}
pack
# the opt-in forms' rows against the default's (which switches win, and where)
want bench && [ -f "$OUTDIR/bench.json" ] && $PY scripts/bench_variants.py "$OUTDIR/bench.json" > "$OUTDIR/bench_variants.txt" 2>&1
# host time a call, layer by layer (~10 s): what the lone-call bench rows include before a launch
want bench && step host_overhead $TO 120 $PY scripts/host_overhead.py --device cuda
pack
# where a persistent RNN step's time goes, phase by phase (~10 s; ncu cannot replay these kernels)
want bench && step rnn_trace $TO 120 $PY scripts/rnn_step_trace.py --backward --json "$OUTDIR/rnn_trace.json"
pack
# alone on the GPU (ncu serialises and replays kernels); each case packs GPU_PROFILE_PACK as it ends
want profile && step profile $TO ${GPU_CHECK_PROFILE_TIMEOUT:-420} env PYTHON="$PY" scripts/gpu_profile.sh "$OUTDIR/profile" ${GPU_CHECK_PROFILE_CASES:-}

echo
echo "== gpu_check summary ($($PY -c 'import torch; print(torch.cuda.get_device_name(0), torch.__version__)'))"
for k in build tests memcheck racecheck racecheck_untried tests_untried bench host_overhead rnn_trace profile; do
  printf '%-18s %s\n' "$k" "$(cat "$OUTDIR/$k.status" 2>/dev/null || echo skipped)"; done | tee "$OUTDIR/summary.txt"
[ -f "$OUTDIR/profile/summary.txt" ] && { echo; cat "$OUTDIR/profile/summary.txt"; }
pack
