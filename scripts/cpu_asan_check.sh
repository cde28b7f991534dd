#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer: builds rnnkern._C (CPU only) with -fsanitize=address in
# a git worktree of HEAD (commit first: uncommitted changes are not in it; this checkout's build is
# untouched), then runs pytest there with libasan preloaded (and libstdc++, whose __cxa_throw
# ASan's interceptor must find, or the first C++ exception aborts). Only rnnkern's code is
# instrumented; every heap allocation (torch's included) gets redzones. Masked AVX-512 loads and
# stores are not checked (they are builtins, not plain accesses); unmasked vector loads are.
#
#   scripts/cpu_asan_check.sh [pytest args]      (default: tests/ops tests/models)
#
# PYTHON: the interpreter with torch (default .venv/bin/python). ~2 min to build, ~2 min to test.
# (Tests that initialise CUDA abort under ASan's shadow layout; the defaults never do.)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"  # absolute, the venv's link kept (not realpath)
wt=${ASAN_WORKTREE:-/tmp/rnnkern-asan}
report=${ASAN_REPORT:-/tmp/rnnkern-asan-report}
[ $# -gt 0 ] || set -- tests/ops tests/models

git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
git worktree add -q --detach "$wt" HEAD
trap 'git worktree remove --force "$wt"' EXIT
cd "$wt"
echo "building an ASan rnnkern._C in $wt (log: $wt/build/asan.log)"
mkdir -p build
flags="-fsanitize=address -fno-omit-frame-pointer"
RNNKERN_BUILD_CUDA=0 CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-fsanitize=address" \
  "$py" setup.py -q build_ext --inplace --build-temp build/asan > build/asan.log 2>&1 ||
  { tail -n 30 build/asan.log; exit 1; }

rm -f "$report".*
rc=0
LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so.6)" \
  ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$report" PYTHONPATH="$wt" \
  "$py" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if compgen -G "$report.*" > /dev/null; then
  echo "AddressSanitizer reported (pytest's capture hides it; full report in $report.*):"
  head -n 40 "$report".*
  exit 1
fi
exit $rc
