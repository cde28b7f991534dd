"""`rnnkern` command line: info | bench | lm | seg."""
from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

from rnnkern._argtypes import check_output_file, positive_int, require_visible_device


def _cmd_info(args: argparse.Namespace) -> int:
    import rnnkern
    info = rnnkern.info()
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        width = max(map(len, info))
        for k, v in info.items():
            if isinstance(v, dict):
                v = " ".join(f"{name}={value}" for name, value in v.items())
            print(f"{k:<{width}}  {', '.join(v) if isinstance(v, list) else v}")
    return 0


# The benchmarks live in the repository's bench/ (next to tests/), not in the wheel.
_REPO = Path(__file__).resolve().parent.parent


def _bench_ops() -> list[str] | None:
    """bench/harness.py's OPS, read from its source (importing the harness imports torch and
    needs the repository on sys.path); None when there is no bench/."""
    try:
        tree = ast.parse((_REPO / "bench" / "harness.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "OPS" for t in node.targets):
                return list(ast.literal_eval(node.value))
    except (OSError, SyntaxError, ValueError):
        pass
    return None


def _cmd_bench(args: argparse.Namespace) -> int:
    parser = args.parser
    if _bench_ops() is None:
        print(f"rnnkern bench: no bench/ directory next to the package ({_REPO}); run from a source "
              "checkout installed with `pip install -e .`", file=sys.stderr)
        return 2
    require_visible_device(parser, args.device)
    import torch
    sys.path.insert(0, str(_REPO))
    from bench.harness import auto_json_path, run
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    json_path = args.json
    if json_path == "auto":  # named after the device and thread count set above, in <repo>/bench/results
        json_path = str(auto_json_path(device))
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    if json_path:
        check_output_file(parser, "--json", json_path)
    if args.plot:
        check_output_file(parser, "--plot", args.plot)
    return run(ops=args.ops, device=device, quick=args.quick, json_path=json_path, plot_path=args.plot)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rnnkern", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="what this build contains (torch, CUDA kernels, archs, ops)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    ops = _bench_ops()
    p = sub.add_parser("bench", help="time rnnkern's kernels against torch's ops side by side",
                       description="Time rnnkern's kernels against torch's ops, alternately in one process. "
                                   "ratio = torch ms / rnnkern ms: > 1 means rnnkern is faster. "
                                   "Notes on the cases and results: bench/NOTES.md.")
    p.add_argument("--ops", nargs="+", default=None, choices=ops, metavar="OP",
                   help=f"ops to run: {', '.join(ops)} (default: all)" if ops else "ops to run (default: all)")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if visible")
    p.add_argument("--quick", action="store_true", help="fewer repetitions and only the first cases")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for both sides (torch.set_num_threads); default: torch's")
    p.add_argument("--json", metavar="PATH",
                   help="write the results as JSON ({device, torch, threads, ..., rows: [{op, case, pass, ms, "
                        "torch_ms, ratio, metric, value}]}); 'auto': "
                        "<repo>/bench/results/<device>[-<threads>t]-<yyyymmdd>.json")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart of the ratios")
    p.set_defaults(func=_cmd_bench, parser=p)

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
