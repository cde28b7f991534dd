#!/usr/bin/env bash
# Nsight Compute on the kernels that miss their models (bench/NOTES.md, "First GPU runs"): the RNN's
# persistent kernels and its general path's steps, the convolution engine (gather_conv_kernel,
# wgrad_kernel), the FCN-32s transposed convolution and max_unpool. One ncu run per case of
# scripts/profile_driver.py, whose table says what each case runs and which launches ncu takes.
# Run after a build (scripts/gpu_check.sh's build step, or a carried rnnkern/_C):
#   scripts/gpu_profile.sh [OUTDIR] [CASE...]     default ./gpu-out/profile; every case, in table order
#                                                 (on a device machine keep OUTDIR outside $OUT: ~5 files
#                                                 a case, and a call returns 8; GPU_PROFILE_PACK brings them)
#   GPU_PROFILE_PACK=$OUT/gpu-profile.tgz        pack OUTDIR into this one file after each case (a
#                                                 device call returns at most 8 files; what is packed
#                                                 survives a call that runs out of time). Reports go
#                                                 in while the pack stays under GPU_PROFILE_PACK_MAX_MB
#                                                 (15: a device call returns files of up to 16 MiB),
#                                                 the last case's left out first (text pages all stay)
#   GPU_PROFILE_SECTIONS="SpeedOfLight ..."      ncu sections (default below; any this ncu lacks is dropped)
#   GPU_PROFILE_CASE_TIMEOUT=120                 seconds per case
# or as scripts/gpu_check.sh's step `profile` (GPU_CHECK_STEPS=profile: OUTDIR/profile).
# Per case: CASE.ncu-rep; CASE.log (ncu's and the driver's output: which kernels were profiled, in
# how many passes, each iteration's time); CASE.txt (the details page: every section's metrics and
# ncu's findings); CASE.sass.csv (the source page: per SASS instruction, stall samples and counts);
# CASE.raw.csv (every metric). summary.txt: each case's status, then one line per profiled kernel.
# Time on an H200 (2026-11-26, ncu 2025.3): 14-27 s a case (34 replay passes a kernel); the twelve
# cases should take ~3-5.5 minutes (ten took ~4). The text pages are written in the background while the next case runs.
# The tensor-core RNN kernel fails under ncu's kernel replay (LaunchFailed: its barriers need every
# CTA resident), so its cases end with rc=9; every other case profiles.
# Leaves the GPU's clocks alone (--clock-control none), as the lent machines require.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-./gpu-out/profile}
shift || true
mkdir -p "$OUTDIR"
PY=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
[ -n "$NCU" ] || { echo "ncu not found"; exit 1; }
DRIVER=scripts/profile_driver.py
CASES=("$@")
[ ${#CASES[@]} -gt 0 ] || mapfile -t CASES < <($PY $DRIVER --list)

# Stall reasons (WarpStateStats; per instruction: SourceCounters), issue (SchedulerStats), memory
# traffic and shared-memory bank conflicts (MemoryWorkloadAnalysis + _Tables), pipe use
# (ComputeWorkloadAnalysis), occupancy and its limiters (Occupancy, LaunchStats).
WANT=(${GPU_PROFILE_SECTIONS:-SpeedOfLight WarpStateStats SchedulerStats MemoryWorkloadAnalysis
      MemoryWorkloadAnalysis_Tables ComputeWorkloadAnalysis Occupancy LaunchStats SourceCounters})
HAVE=$("$NCU" --list-sections 2>/dev/null | awk '{print $1}')
SECTIONS=()  # --section flags
NO_SRC=()    # the same without SourceCounters (the retry below)
for s in "${WANT[@]}"; do
  if [ -z "$HAVE" ] || grep -qx "$s" <<<"$HAVE"; then
    SECTIONS+=(--section "$s")
    [ "$s" = SourceCounters ] || NO_SRC+=(--section "$s")
  else
    echo "ncu has no section $s: left out"
  fi
done
if [ ${#SECTIONS[@]} -eq 0 ]; then  # none found: a listing this script does not read; ask for them all
  for s in "${WANT[@]}"; do SECTIONS+=(--section "$s"); [ "$s" = SourceCounters ] || NO_SRC+=(--section "$s"); done
fi
echo "$("$NCU" --version | tail -n 1); sections: ${SECTIONS[*]}" | tee "$OUTDIR/summary.txt"

pack() {  # OUTDIR -> GPU_PROFILE_PACK, replaced atomically; over the cap, reports left out, last case first
  [ -n "${GPU_PROFILE_PACK:-}" ] || return 0
  local cap=$(( ${GPU_PROFILE_PACK_MAX_MB:-15} * 1024 * 1024 )) reps=() excl=() i j
  for ((j = ${#CASES[@]} - 1; j >= 0; j--)); do
    [ -f "$OUTDIR/${CASES[j]}.ncu-rep" ] && reps+=("${CASES[j]}.ncu-rep")
  done
  rm -f "$OUTDIR/left-out-of-pack.txt"
  for ((i = 0; ; i++)); do
    # (exit status 1: a text page was being written meanwhile; the next pack has it whole)
    tar czf "$GPU_PROFILE_PACK.tmp" -C "$OUTDIR" --warning=no-file-changed --warning=no-file-removed \
      --exclude='*.tmp' "${excl[@]}" .
    [ $? -le 1 ] || return 1
    [ "$(stat -c %s "$GPU_PROFILE_PACK.tmp")" -gt "$cap" ] && [ $i -lt ${#reps[@]} ] || break
    echo "${reps[$i]}" >> "$OUTDIR/left-out-of-pack.txt"  # (this list goes in with the next try)
    excl+=(--exclude="${reps[$i]}")
  done
  mv "$GPU_PROFILE_PACK.tmp" "$GPU_PROFILE_PACK"
}

page() {  # page CASE FILE ARGS...: `ncu --import` of CASE's report into OUTDIR/FILE (renamed when complete)
  local rep="$OUTDIR/$1.ncu-rep" out="$OUTDIR/$2"
  shift 2
  if timeout -k 10 120 "$NCU" --import "$rep" "$@" > "$out.tmp" 2>&1; then
    mv "$out.tmp" "$out"
  else
    mv "$out.tmp" "$out.failed"
    return 1
  fi
}
text_pages() {  # CASE: the report, readable without the GUI
  [ -s "$OUTDIR/$1.ncu-rep" ] || return 0
  page "$1" "$1.txt" --page details --print-details all ||
    { page "$1" "$1.txt" --page details && rm -f "$OUTDIR/$1.txt.failed"; }
  page "$1" "$1.raw.csv" --page raw --csv
  page "$1" "$1.sass.csv" --page source --print-source sass --csv
}

profile() {  # profile CASE SECTION_FLAGS...: one ncu run; sets rc, got (launches profiled), want
  local c=$1 pick i
  shift
  mapfile -t pick < <($PY $DRIVER --ncu-args "$c")
  want=0
  for i in "${!pick[@]}"; do [ "${pick[$i]}" = --launch-count ] && want=${pick[$((i + 1))]}; done
  timeout -k 10 "${GPU_PROFILE_CASE_TIMEOUT:-120}" "$NCU" --clock-control none "${pick[@]}" "$@" \
    --export "$OUTDIR/$c" --force-overwrite $PY $DRIVER "$c" > "$OUTDIR/$c.log" 2>&1
  rc=$?
  got=$(grep -c '^==PROF== Profiling' "$OUTDIR/$c.log")
}

RETRY=1
for c in "${CASES[@]}"; do
  if ! $PY $DRIVER --ncu-args "$c" > /dev/null 2>&1; then
    echo "$c: no such case in $DRIVER" | tee -a "$OUTDIR/summary.txt"
    continue
  fi
  t0=$(date +%s)
  profile "$c" "${SECTIONS[@]}"
  note=""
  # SourceCounters patches the kernel's SASS; if ncu reported an error, once more without it
  # (and no more such retries once one fails too: then the error is not SourceCounters')
  if grep -q '^==ERROR==' "$OUTDIR/$c.log" && [ ${#NO_SRC[@]} -lt ${#SECTIONS[@]} ] && [ $RETRY = 1 ]; then
    mv "$OUTDIR/$c.log" "$OUTDIR/$c.first-try.log"
    profile "$c" "${NO_SRC[@]}"
    note=" (ncu reported an error with SourceCounters: this is a rerun without it; see $c.first-try.log)"
    grep -q '^==ERROR==' "$OUTDIR/$c.log" && RETRY=0
  fi
  echo "$c: rc=$rc $(( $(date +%s) - t0 ))s, profiled $got of $want launches$note" | tee -a "$OUTDIR/summary.txt"
  grep -E '^==(PROF== Profiling|ERROR|WARNING)' "$OUTDIR/$c.log" | head -n 8 | sed 's/^/  /'
  text_pages "$c" &
  pack
done
wait
echo "== per kernel (CASE.raw.csv; time, throughputs as % of peak, stalls in cycles per issued instruction)" \
  >> "$OUTDIR/summary.txt"
$PY $DRIVER --summarize "$OUTDIR" >> "$OUTDIR/summary.txt" 2>&1
pack
echo
cat "$OUTDIR/summary.txt"
