"""argparse `type=` parsers with bounds, shared by every command line (rnnkern.cli, lm, seg and
the demos): a bad value becomes a usage error naming the option, never a traceback."""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def int_at_least(lo: int, why: str = ""):
    def parse(v: str) -> int:
        i = int(v)
        if i < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}{f' ({why})' if why else ''}, got {v}")
        return i
    parse.__name__ = "int"  # argparse names the type in "invalid int value"
    return parse


def float_above(lo: float, inclusive: bool = False):
    def parse(v: str) -> float:
        f = float(v)
        if not (f >= lo if inclusive else f > lo):  # written so that NaN fails too
            raise argparse.ArgumentTypeError(f"must be {'>=' if inclusive else '>'} {lo:g}, got {v}")
        return f
    parse.__name__ = "float"
    return parse


def check_output_file(parser: argparse.ArgumentParser, option: str, path) -> None:
    """A usage error, before any work (a benchmark or a training run takes minutes), when `path`
    cannot be written: a directory, a missing directory, no permission."""
    path = Path(path)
    if path.is_dir():
        parser.error(f"{option} {path}: is a directory")
    parent = path.parent
    if not parent.is_dir():
        parser.error(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        parser.error(f"{option} {path}: not writable")


def check_output_dir(parser: argparse.ArgumentParser, option: str, path) -> None:
    """A usage error when the run directory `path` (created if missing) is an existing file or
    lies under one."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                parser.error(f"{option} {path}: {p} is a file, not a directory")
            break


def require_visible_device(parser: argparse.ArgumentParser, device: str | None) -> None:
    """A usage error when `--device cuda` asks for a GPU that torch cannot see."""
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible to torch")


positive_int, nonnegative_int = int_at_least(1), int_at_least(0)
positive_float, nonnegative_float = float_above(0.0), float_above(0.0, inclusive=True)
