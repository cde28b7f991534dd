"""`rnnkern` command line: info | bench | lm | seg."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    import rnnkern
    info = rnnkern.info()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else v}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    # The benchmarks live in the repository's bench/ (next to tests/), not in the wheel.
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "harness.py").is_file():
        print(f"rnnkern bench: no bench/ directory next to the package ({root}); run from a source "
              "checkout installed with `pip install -e .`", file=sys.stderr)
        return 2
    sys.path.insert(0, str(root))
    from bench.harness import run
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    return run(ops=args.ops, device=args.device, quick=args.quick, json_path=args.json, plot_path=args.plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what this build contains (torch, CUDA kernels, archs, ops)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="time rnnkern's kernels against torch's ops side by side")
    p.add_argument("--ops", nargs="+", default=None, help="ops to run (default: all)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if visible")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and only the first cases")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both sides (torch.set_num_threads); default: torch's")
    p.add_argument("--json", metavar="PATH", help="write rows in DESIGN.md's schema")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart of the ratios")
    p.set_defaults(func=_cmd_bench)

    # The model CLIs register themselves; each lives beside its models.
    for modname in ("rnnkern.models.language.cli", "rnnkern.models.segmentation.cli"):
        try:
            mod = __import__(modname, fromlist=["add_parser"])
        except ModuleNotFoundError as e:
            if e.name != modname:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
