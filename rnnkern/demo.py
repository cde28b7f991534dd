"""`make demo`: a short tour of rnnkern on whatever this machine has (CPU or GPU).

1. what was built; 2. a char-RNN on the embedded King James Bible, trained for a short budget
and sampled; 3. a small segmentation net on Fashion-MNIST composites; 4. a kernel benchmark
table against torch's own ops."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rnnkern._argtypes import positive_float, require_visible_device


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rnnkern.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lm-seconds", type=positive_float, default=150.0, help="char-RNN training budget (default: 150)")
    p.add_argument("--seg-seconds", type=positive_float, default=120.0, help="segmentation training budget (default: 120)")
    p.add_argument("--skip", nargs="*", default=[], choices=["lm", "seg", "bench"])
    args = p.parse_args(argv)
    require_visible_device(p, args.device)
    t0 = time.time()

    from rnnkern.cli import main as cli
    print("== 1/4  rnnkern info")
    cli(["info"])

    if "lm" not in args.skip:
        print(f"\n== 2/4  char-RNN language model on the KJV corpus ({args.lm_seconds:.0f} s budget, {args.device})")
        from rnnkern.models.language.demo import run_demo as lm_demo
        lm_demo(device=args.device, seconds=args.lm_seconds)

    if "seg" not in args.skip:
        print(f"\n== 3/4  segmentation on Fashion-MNIST composites ({args.seg_seconds:.0f} s budget, {args.device})")
        from rnnkern.models.segmentation.demo import run_demo as seg_demo
        seg_demo(device=args.device, seconds=args.seg_seconds)

    if "bench" not in args.skip:
        print("\n== 4/4  kernels vs torch (quick benchmark)")
        root = Path(__file__).resolve().parent.parent
        if (root / "bench" / "harness.py").is_file():
            # one thread on the CPU: on a busy 2-core machine two OpenMP threads can stall for
            # seconds per call (bench/NOTES.md), on either side of the comparison
            cli(["bench", "--quick", "--device", args.device] + (["--threads", "1"] if args.device == "cpu" else []))
        else:
            print("bench/ not found next to the package (installed from a wheel?); skipped")
    print(f"\ndemo finished in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
