"""Benchmark harness: every bench/<op>.py exposes `cases(device, quick)` -> list of Bench and the
harness times both sides in one process, alternately, prints a table, writes JSON (device, versions,
threads and one row per case: see `run`) and a PNG chart. Op modules only measure; printing and
plotting happen here."""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

OPS = ["max_unpool", "rnn", "conv_transpose", "conv"]  # each op adds its module name here
# Opt-in forms, forced: their rows are benched after every other op's (they ran on an H200, but a
# kernel that faults loses the CUDA context, and with it every row after it), in this order: the
# RNN exchange last, since a reader that waits in vain traps by design (rnn.cu: kExchangeMaxPolls).
UNTRIED = {"RNNKERN_CONV_TAP_GROUP": "9", "RNNKERN_CONV_MMA": "wgmma", "RNNKERN_RNN_BARRIER": "exchange"}
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Bench:
    op: str
    case: str
    pass_: str                      # "fwd" | "fwd-async" | "fwd+bwd" | "dgrad" | "wgrad" | "bwd"
    ours: Callable[[], object]
    theirs: Callable[[], object]
    metric: str                     # "TB/s" | "GB/s" | "TFLOP/s" | "us/step"
    amount: float                   # bytes, FLOPs or steps per call, for `metric`


@contextlib.contextmanager
def switches(**env):
    """Environment variables set for the block (the ops read their RNNKERN_* switches per call),
    then as they were. Also scripts/sanitize_driver.py's."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


def with_env(fn, **env):
    """fn with environment variables set for the duration of each call (switches)."""
    if not env:
        return fn

    def run():
        with switches(**env):
            return fn()
    run.env = dict(env)  # (read by _run_order and recorded in the rows)
    return run


def _run_order(b: Bench) -> int:
    """0 for forms run on a GPU before; else 1 + the position in UNTRIED of the last form it uses."""
    env = getattr(b.ours, "env", {})
    return max((1 + i for i, (k, v) in enumerate(UNTRIED.items()) if env.get(k) == v), default=0)


def _time_once(fn: Callable[[], object], device: str, calls: int = 1) -> float:
    """ms per call of `calls` calls in a row: CUDA events on GPU, perf_counter on CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / calls
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) * 1e3 / calls


def _alternate(ours: Callable[[], object], theirs: Callable[[], object], reps: int,
               measure: Callable[[Callable[[], object]], float]) -> tuple[float, float]:
    """Median of `reps` measurements of each side, taken alternately (ours, theirs, ours, ...)."""
    times: tuple[list, list] = ([], [])
    for _ in range(reps):
        times[0].append(measure(ours))
        times[1].append(measure(theirs))
    return statistics.median(times[0]), statistics.median(times[1])


def time_pair(ours: Callable[[], object], theirs: Callable[[], object], device: str,
              quick: bool = False) -> tuple[float, float]:
    """Median ms of one call of each side, measured alternately (ours, theirs, ours, ...) after a
    warm-up of both. Whatever drifts during the measurement then moves both sides alike: on an
    H200 the same code's absolute times moved by up to 30-50% between runs (bench/NOTES.md)."""
    warmup, reps = (2, 5) if quick else (5, 25)
    for _ in range(warmup):
        ours()
        theirs()
    if device == "cuda":
        torch.cuda.synchronize()
    return _alternate(ours, theirs, reps, lambda fn: _time_once(fn, device))


def minor_faults(fn: Callable[[], object]) -> int:
    """Minor page faults one call of fn takes (Linux; 0 elsewhere). On the CPU a fresh
    multi-megabyte buffer is a new mapping that faults once per 4 KB page on first touch, and
    which side of an alternating pair gets fresh mappings depends on the allocation history: an
    18.9 MB weight gradient measured 4.6k faults (~6.5 ms) a call on one side or the other
    (bench/NOTES.md, fifteenth session). Recorded per row so such rows can be read."""
    try:
        import resource
    except ImportError:
        return 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def time_queued(ours: Callable[[], object], theirs: Callable[[], object], calls: int = 5,
                reps: int = 3) -> tuple[float, float]:
    """GPU only: median ms per call when `calls` calls are queued back to back between two events
    (alternating sides, `reps` times). Once the host runs ahead of the GPU, its own time per call
    (Python, dispatch, launch) hides behind the GPU's, so this is close to the device time; the
    isolated time of time_pair minus this is the host overhead a lone call exposes."""
    return _alternate(ours, theirs, reps, lambda fn: _time_once(fn, "cuda", calls))


def warm_up_gpu(seconds: float = 0.5) -> None:
    """Run large matrix products for a moment, so the first rows are not timed while the GPU's
    clocks ramp up from idle."""
    a = torch.randn(4096, 4096, device="cuda")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def metric_value(metric: str, amount: float, ms: float) -> float:
    scale = {"TB/s": 1e12, "GB/s": 1e9, "TFLOP/s": 1e12}
    if metric == "us/step":
        return ms * 1e3 / amount
    return amount / (ms * 1e-3) / scale[metric]


def _device_name(device: str) -> str:
    n = torch.get_num_threads()
    return torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({n} thread{'s' if n != 1 else ''})"


def auto_json_path(device: str) -> Path:
    """--json auto: bench/results/<gpu-or-cpu>[-<threads>t]-<yyyymmdd>.json in this repository,
    whatever the working directory."""
    slug = _device_name(device).replace("NVIDIA ", "").split(" (")[0].replace(" ", "-").lower()
    if device == "cpu":
        slug += f"-{torch.get_num_threads()}t"
    return RESULTS / f"{slug}-{time.strftime('%Y%m%d')}.json"


def run(ops: Optional[list[str]] = None, device: Optional[str] = None, quick: bool = False,
        json_path: Optional[str] = None, plot_path: Optional[str] = None) -> int:
    import rnnkern
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        print("rnnkern bench: --device cuda but no GPU is visible", file=sys.stderr)
        return 2
    unknown = [name for name in ops or [] if name not in OPS]
    if unknown:
        print(f"rnnkern bench: unknown op(s) {', '.join(unknown)}; choose from {', '.join(OPS)}", file=sys.stderr)
        return 2
    from tqdm import tqdm
    if device == "cuda":
        warm_up_gpu()
    benches = [b for name in ops or OPS for b in importlib.import_module(f"bench.{name}").cases(device, quick)]
    benches = sorted(benches, key=_run_order)  # (stable: each group in the ops' own order)
    rows, errors = [], []  # errors: rows that raised (an opt-in form that fails), kept apart from the measured
    result = {"device": _device_name(device), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
              "rnnkern": rnnkern.__version__, "host_cpu": _cpu_model(), "threads": torch.get_num_threads(),
              "rows": rows,
              # until the last row: a file left by a run that was stopped (a timeout) says so
              "incomplete": f"the run stopped before its end ({len(benches)} rows planned)"}
    for i, b in enumerate(tqdm(benches, desc="bench", leave=False)):
        if device == "cuda" and i > 0 and b.op != benches[i - 1].op:
            # each op's first rows ran 1-26% (ours) and up to 55% (torch) slower than their identical
            # twins later in one H200 run (bench/NOTES.md, eighteenth session): warm up again
            warm_up_gpu(0.3)
        try:
            ms, torch_ms = time_pair(b.ours, b.theirs, device, quick)
            row = {"op": b.op, "case": b.case, "pass": b.pass_, "ms": round(ms, 4),
                   "torch_ms": round(torch_ms, 4), "ratio": round(torch_ms / ms, 3),
                   "metric": b.metric, "value": round(metric_value(b.metric, b.amount, ms), 3)}
            if getattr(b.ours, "env", None):  # an opt-in form of ours (scripts/bench_variants.py)
                row["env"] = b.ours.env
            if device == "cuda":  # device time per call, for telling host overhead from kernel time
                q, torch_q = time_queued(b.ours, b.theirs)
                row.update(ms_queued=round(q, 4), torch_ms_queued=round(torch_q, 4))
            else:  # page faults of one more alternating call each (part of the times measured)
                row.update(faults=minor_faults(b.ours), torch_faults=minor_faults(b.theirs))
            rows.append(row)
        except Exception as e:
            errors.append({"op": b.op, "case": b.case, "pass": b.pass_, "error": f"{type(e).__name__}: {e}"[:400]})
            result["errors"] = errors
            print(f"rnnkern bench: {b.op} {b.case} {b.pass_} failed: {errors[-1]['error']}", file=sys.stderr)
            if not _context_usable(device):
                result["incomplete"] = f"the CUDA context broke at this row; {len(benches) - i - 1} rows not run"
                print(f"rnnkern bench: {result['incomplete']}", file=sys.stderr)
                break
        if json_path:  # after every row, so a crash keeps what was measured
            _write_json(result, json_path)
    else:  # every row ran
        del result["incomplete"]
    print_table(result)
    if json_path:
        _write_json(result, json_path)
        print(f"wrote {json_path}")
    if plot_path and rows:
        plot(result, plot_path)
        print(f"wrote {plot_path}")
    return 1 if errors else 0


def _write_json(result: dict, path: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def _context_usable(device: str) -> bool:
    """False once a kernel fault (a trap, an illegal address) has made the CUDA context unusable."""
    if device != "cuda":
        return True
    try:
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except Exception:
        return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def print_table(result: dict) -> None:
    print(f"\n{result['device']}  torch {result['torch']}  cudnn {result['cudnn']}")
    queued = any("ms_queued" in r for r in result["rows"])
    # queued: ms per call with calls back to back (time_queued), ours / torch's
    head = (f"{'op':<16}{'case':<44}{'pass':<9}{'rnnkern ms':>11}{'torch ms':>11}{'ratio':>8}"
            + (f"{'queued ms':>20}" if queued else "") + "  value")
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        q = f"{r['ms_queued']:>10.4f}/{r['torch_ms_queued']:<9.4f}" if "ms_queued" in r else " " * 20 * queued
        print(f"{r['op']:<16}{r['case']:<44}{r['pass']:<9}{r['ms']:>11.4f}{r['torch_ms']:>11.4f}"
              f"{r['ratio']:>7.2f}x{q}  {r['value']:.3g} {r['metric']}")
    print("ratio = torch ms / rnnkern ms (> 1: rnnkern is faster); value: rnnkern's, in the unit shown"
          + ("; queued ms: rnnkern / torch per call with calls back to back" if queued else ""))
    for e in result.get("errors", []):
        print(f"FAILED {e['op']} {e['case']} {e['pass']}: {e['error'][:160]}")
    if "incomplete" in result:
        print(f"INCOMPLETE: {result['incomplete']}")


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    labels = [f"{r['op']} {r['case']} {r['pass']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
    ax.barh(range(len(rows)), ratios, color=["tab:green" if x >= 1 else "tab:red" for x in ratios])
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("speed-up over torch (torch ms / rnnkern ms, >1 = rnnkern faster)")
    ax.set_title(f"rnnkern vs torch on {result['device']} (torch {result['torch']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
