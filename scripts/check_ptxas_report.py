"""Fail a CUDA build whose ptxas report shows a kernel losing what it was written for.

`make cuda-check` builds with RNNKERN_PTXAS_REPORT=1 (nvcc -Xptxas=-v) and passes its log here:

  * "wgmma.mma_async instructions are serialized due to ..." (C7518, C7515 and their kin, one code
    per reason): ptxas waits for every wgmma right after issuing it, so the tensor cores idle
    through each one's latency. It happens silently (an info line, no warning), e.g. when a
    __trap() sits in a divergent branch of the kernel (conv.cu's copy_run_async once did: C7518).
  * register spills (local-memory stores / loads) in any kernel.

Usage: python scripts/check_ptxas_report.py build/pip-cuda.log
"""
import argparse
import re
import shutil
import subprocess
import sys

SERIALIZED = re.compile(r"\((?P<code>C\d+)\).*wgmma\.mma_async instructions are serialized due to (?P<why>.*?)"
                        r"(?: in the function '(?P<fn>[^']+)')?\.?\s*$")
PROPERTIES = re.compile(r"Function properties for (?P<fn>\S+)")
SPILLS = re.compile(r"(?P<stores>\d+) bytes spill stores, (?P<loads>\d+) bytes spill loads")
COMPILING = re.compile(r"Compiling entry function '(?P<fn>[^']+)' for '(?P<arch>[^']+)'")


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return list(names)
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout
    return out.splitlines()


def scan(lines):
    """(entries compiled, [(fn, why)] serialised wgmma, [(fn, stores, loads)] spills)."""
    entries, serialized, spills = 0, [], []
    props_of = None
    for line in lines:
        if COMPILING.search(line):
            entries += 1
        if m := SERIALIZED.search(line):
            serialized.append((m["fn"] or "(function not named)", f"{m['code']}: {m['why']}"))
        if m := PROPERTIES.search(line):
            props_of = m["fn"]
            continue
        if props_of is not None:
            if (m := SPILLS.search(line)) and (int(m["stores"]) or int(m["loads"])):
                spills.append((props_of, int(m["stores"]), int(m["loads"])))
            props_of = None
    return entries, serialized, spills


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", help="a build log with nvcc's -Xptxas=-v output")
    args = ap.parse_args()
    with open(args.log, errors="replace") as f:
        entries, serialized, spills = scan(f)
    if entries == 0:
        print(f"check_ptxas_report: no ptxas report in {args.log} (built without RNNKERN_PTXAS_REPORT=1?)")
        return 1
    bad = False
    for (fn, why), name in zip(serialized, demangle([fn for fn, _ in serialized])):
        print(f"ptxas serialises wgmma ({why}): {name}")
        bad = True
    for (fn, st, ld), name in zip(spills, demangle([fn for fn, _, _ in spills])):
        print(f"register spills ({st} B stored, {ld} B loaded): {name}")
        bad = True
    print(f"check_ptxas_report: {entries} kernel compilations, {len(serialized)} with serialised wgmma, "
          f"{len(spills)} with spills")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
