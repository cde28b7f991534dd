"""The cases of scripts/gpu_profile.sh (Nsight Compute): what each one runs, and which of its kernel
launches ncu profiles. Each case builds its tensors, runs `warmup` iterations of its calls, then the
profiled iteration, then `warmup + 1` spare iterations (unprofiled when the counts below are right;
they keep a miscounted skip from running past the end of the program). Every iteration's wall time
is printed: the profiled one is the slow one (ncu replays each profiled kernel dozens of times).

  python3 scripts/profile_driver.py --list             the case names, in run order
  python3 scripts/profile_driver.py --ncu-args CASE    ncu's launch filter for CASE, one argument a line
  python3 scripts/profile_driver.py CASE               run CASE (on the GPU, under ncu: gpu_profile.sh)
      [--device cpu] [--set KEY=VALUE ...]             dry run on the CPU / another size (a size can
                                                       change the kernel a case reaches: check the log)
  python3 scripts/profile_driver.py --summarize DIR    one line per profiled kernel from DIR/*.raw.csv

--list, --ncu-args and --summarize import neither torch nor rnnkern.

How ncu picks launches: --kernel-name regex:R keeps the launches whose kernel's function name
contains a match of R; --launch-skip S then passes over the first S of THOSE (launches of other
kernels are not counted) and --launch-count C profiles the next C. So for each case,
  S = warmup * per_iter + first,
where per_iter is how many launches of a matching kernel one iteration makes. The counts in the
table below come from the host code named in each comment; if one is wrong, the log's
'==PROF== Profiling "<kernel>"' lines and the slow iteration show which launches were taken.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Callable


# ---- what each case runs -----------------------------------------------------------------------
# setup(device, **params) builds the tensors and returns the calls of one iteration, in order.
# Imports of torch / rnnkern stay inside, so the table can be read without them.

def rnn(device, dtype, B, H, T, backward=True):
    """rnnkern.nn.RNN(H, H), one layer, input size H, (T, B, H) input; forward + backward, or a
    forward under no_grad."""
    import torch
    import rnnkern.nn
    dt = getattr(torch, dtype)
    m = rnnkern.nn.RNN(H, H).to(device, dt)
    x = torch.randn(T, B, H, device=device, dtype=dt, requires_grad=backward)

    def forward():
        with torch.no_grad():
            m(x)

    def forward_backward():
        y, _ = m(x)
        y.sum().backward()
    return [forward_backward if backward else forward]


def conv(device, dtype, channels_last, n, cin, cout, hw, d, passes=("fwd",)):
    """3x3 'same' convolution with dilation d, as bench/conv.py calls it: the forward op and/or the
    grad-weight op (no bias)."""
    import torch
    import rnnkern.functional  # noqa: F401  registers torch.ops.rnnkern.*
    dt = getattr(torch, dtype)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(n, cin, hw, hw, device=device, dtype=dt).contiguous(memory_format=fmt)
    w = (torch.randn(cout, cin, 3, 3, device=device, dtype=dt) / (9 * cin) ** 0.5).contiguous(memory_format=fmt)
    gy = torch.randn(n, cout, hw, hw, device=device, dtype=dt).contiguous(memory_format=fmt)
    s, p4, dd = [1, 1], [d, d, d, d], [d, d]
    ops = torch.ops.rnnkern
    calls = {"fwd": lambda: ops.conv2d_forward.default(x, w, None, s, p4, dd, 1),
             "wgrad": lambda: ops.conv2d_backward_weight.default(gy, x, list(w.shape), s, p4, dd, 1, False)}
    return [calls[p] for p in passes]


def conv_transpose(device, dtype, n, cin, cout, hw, k, s, p, passes=("fwd", "dgrad", "wgrad")):
    """conv_transpose2d as bench/conv_transpose.py calls it: the forward, grad-input and
    grad-weight ops."""
    import torch
    from rnnkern.ops import conv_transpose as ops
    dt = getattr(torch, dtype)
    x = torch.randn(n, cin, hw, hw, device=device, dtype=dt)
    w = torch.randn(cin, cout, k, k, device=device, dtype=dt) / (cin * k) ** 0.5
    out = ops.output_size(hw, k, s, p, 0, 1)
    gy = torch.randn(n, cout, out, out, device=device, dtype=dt)  # (not through F.conv_transpose2d: no cuDNN launch)
    st, pd, op, dl = [s, s], [p, p], [0, 0], [1, 1]
    calls = {"fwd": lambda: ops.conv_transpose2d_forward(x, w, None, st, pd, op, 1, dl),
             "dgrad": lambda: ops.conv_transpose2d_backward_input(gy, w, list(x.shape), st, pd, op, 1, dl),
             "wgrad": lambda: ops.conv_transpose2d_backward_weight(gy, x, list(w.shape), st, pd, op, 1, dl, False)}
    return [calls[q] for q in passes]


def max_unpool(device, dtype, n, c, h, w):
    """2x2 max-unpool of max_pool2d's output, (n, c, h, w) -> (n, c, 2h, 2w): the forward op, then the
    backward op (called directly, as autograd would: no extra forward to build a graph)."""
    import torch
    import torch.nn.functional as F
    from rnnkern.ops import max_unpool as ops
    dt = getattr(torch, dtype)
    x = torch.randn(n, c, 2 * h, 2 * w, device=device, dtype=dt)
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    g = torch.randn_like(x)
    return [lambda: ops.max_unpool_forward(pooled, idx, ops.MODE_INDICES, [2, 2], [2, 2], [0, 0], [2 * h, 2 * w]),
            lambda: ops.max_unpool_backward(g, idx, ops.MODE_INDICES, [n, c, h, w], [2, 2], [2, 2], [0, 0])]


@dataclass(frozen=True)
class Case:
    what: str
    setup: Callable
    params: dict
    kernels: str        # ncu --kernel-name regex (function names); "" = every kernel
    per_iter: int       # launches of matching kernels in one iteration
    count: int          # launches profiled
    first: int = 0      # matching launches passed over inside the profiled iteration
    warmup: int = 2
    env: dict = field(default_factory=dict)

    def skip(self) -> int:
        return self.warmup * self.per_iter + self.first


RNN_DEBUG = {"RNNKERN_DEBUG": "1"}  # csrc/cuda/rnn.cu logs the path and kernel each call takes
# the bf16 channels_last conv forward the gather kernel's forms are profiled on (N8 256->256 64x64 3x3 d1)
BF16_CL_D1 = dict(dtype="bfloat16", channels_last=True, n=8, cin=256, cout=256, hw=64, d=1)

CASES = {
    # Persistent RNN (csrc/cuda/rnn.cu): rnn_forward_cuda launches the persistent kernel ONCE per
    # forward (launch_persistent: rnn_persistent_mma_kernel, or rnn_persistent_kernel when the
    # tensor cores do not apply or cannot launch), rnn_backward_cuda once per backward; the input
    # projection, dz's setup and the weight gradients are cuBLAS / ATen kernels. So regex
    # rnn_persistent matches 2 launches an iteration (forward, backward), skip = 2 * warmup, and
    # count 2 takes the forward and the backward of the profiled iteration.
    "rnn-fp32-B8-H256": Case(
        "FMA persistent kernel (B < 16 at H < 512: no tensor cores), its default step barrier", rnn,
        dict(dtype="float32", B=8, H=256, T=256), "rnn_persistent", per_iter=2, count=2, env=RNN_DEBUG),
    # the same shape on one 16-CTA cluster, h exchanged through distributed shared memory
    "rnn-fp32-B8-H256-cluster": Case(
        "FMA persistent kernel on one cluster (RNNKERN_RNN_BARRIER=cluster)", rnn,
        dict(dtype="float32", B=8, H=256, T=256), "rnn_persistent", per_iter=2, count=2,
        env={**RNN_DEBUG, "RNNKERN_RNN_BARRIER": "cluster"}),
    "rnn-fp32-B64-H1024": Case(
        "tensor-core persistent kernel, tf32 (cudnn.allow_tf32), exchange words across clusters", rnn,
        dict(dtype="float32", B=64, H=1024, T=256), "rnn_persistent", per_iter=2, count=2, env=RNN_DEBUG),
    "rnn-bf16-B64-H1024": Case(
        "tensor-core persistent kernel, bf16", rnn,
        dict(dtype="bfloat16", B=64, H=1024, T=256), "rnn_persistent", per_iter=2, count=2, env=RNN_DEBUG),
    # General path (B > 64): per step one cublasGemmEx (cuBLAS's kernel, named nvjet_* or *gemm*
    # depending on the library build, sometimes with a split-K reduction after it) and one
    # rnn_step_epilogue_kernel (CudaRecurrence::forward). No name filter, so every kernel counts:
    # before step 0 come torch.randn of x, hx's zeros, b_ih + b_hh, the bias copy and the
    # projection GEMM (~5-6 launches), then 2-3 a step. No warm-up iteration: skipping 40 launches
    # lands at step ~12-18 of the one forward, with cuBLAS's handle, heuristics and module loads
    # behind it, and count 6 takes 2-3 whole steps (GEMM, any reduction, epilogue). Any skip from
    # ~10 to ~500 lands inside that forward, so this needs no exact count.
    "rnn-fp32-B256-H1024": Case(
        "general path (B > 64): one cuBLAS TF32 GEMM + one epilogue kernel per step, forward", rnn,
        dict(dtype="float32", B=256, H=1024, T=256, backward=False), "", per_iter=0, count=6, first=40,
        warmup=0, env=RNN_DEBUG),
    # Convolution engine (csrc/cuda/conv.cu): conv2d_forward_cuda -> launch_gather launches ONE
    # gather_conv_kernel (>= 8 channels per group on both sides: no direct kernel);
    # conv2d_backward_weight_cuda -> launch_wgrad launches ONE wgrad_kernel, then
    # wgrad_reduce_kernel (no match: the regex needs "wgrad_kernel" contiguous). The weight
    # permutes are ATen copies.
    "conv-tf32-NCHW-256-64x64-d1": Case(
        "gather_conv_kernel forward (wgmma, 128 x 128 tiles, on sm_90a) + wgrad_kernel (mma.sync), tf32 NCHW N8 "
        "256->256 64x64 3x3 d1", conv,
        dict(dtype="float32", channels_last=False, n=8, cin=256, cout=256, hw=64, d=1, passes=("fwd", "wgrad")),
        "gather_conv_kernel|wgrad_kernel", per_iter=2, count=2),
    # bf16 channels_last's default forward: gather_tma_kernel (TMA im2col loads, one producer thread,
    # two consumer warpgroups on wgmma) on 128 x 256 tiles (tma_tile_n), 0.79x cuDNN on an H200
    # (bench/NOTES.md, twentieth session): whether its mainloop runs near the MMA rate or waits on L2
    "conv-bf16-CL-256-64x64-d1": Case(
        "gather_tma_kernel forward (TMA im2col + wgmma, 128 x 256 tiles on sm_90a), bf16 channels_last N8 256->256 "
        "64x64 3x3 d1", conv,
        BF16_CL_D1,
        "gather_tma_kernel", per_iter=1, count=1),
    "conv-bf16-CL-256-64x64-d1-tma-n128": Case(
        "gather_tma_kernel forward on 128 x 128 tiles (RNNKERN_CONV_TMA_N=128), bf16 channels_last N8 256->256 "
        "64x64 3x3 d1", conv,
        BF16_CL_D1,
        "gather_tma_kernel", per_iter=1, count=1, env={"RNNKERN_CONV_TMA_N": "128"}),
    # ... and with its CTAs in pairs sharing the weight tile through multicast copies (opt-in): whether
    # the L2 -> SM bytes, two thirds of them the weight's at 256 columns, were what bound it
    "conv-bf16-CL-256-64x64-d1-tma-pair": Case(
        "gather_tma_kernel forward in CTA pairs (RNNKERN_CONV_TMA_CLUSTER=2, multicast weight tile), bf16 "
        "channels_last N8 256->256 64x64 3x3 d1", conv,
        BF16_CL_D1,
        "gather_tma_kernel", per_iter=1, count=1, env={"RNNKERN_CONV_TMA_CLUSTER": "2"}),
    # the same forward on the gather kernels TMA replaced: wgmma on the cp.async ring (the default
    # before, RNNKERN_CONV_MMA=wgmma) and mma.sync (RNNKERN_CONV_MMA=mma), which ran 0-13% apart on
    # an H200 (bench/NOTES.md, eighteenth session)
    "conv-bf16-CL-256-64x64-d1-wgmma": Case(
        "gather_conv_kernel forward on wgmma (RNNKERN_CONV_MMA=wgmma: the cp.async ring, 128 x 128 tiles), bf16 "
        "channels_last N8 256->256 64x64 3x3 d1", conv,
        BF16_CL_D1,
        "gather_conv_kernel", per_iter=1, count=1, env={"RNNKERN_CONV_MMA": "wgmma"}),
    "conv-bf16-CL-256-64x64-d1-mma": Case(
        "gather_conv_kernel forward on mma.sync (RNNKERN_CONV_MMA=mma: 128 x 64 tiles), bf16 channels_last N8 "
        "256->256 64x64 3x3 d1", conv,
        BF16_CL_D1,
        "gather_conv_kernel", per_iter=1, count=1, env={"RNNKERN_CONV_MMA": "mma"}),
    "conv-tf32-NCHW-256-64x64-d1-mma": Case(
        "gather_conv_kernel forward on mma.sync (RNNKERN_CONV_MMA=mma: 128 x 64 tiles), tf32 NCHW N8 "
        "256->256 64x64 3x3 d1", conv,
        dict(dtype="float32", channels_last=False, n=8, cin=256, cout=256, hw=64, d=1),
        "gather_conv_kernel", per_iter=1, count=1, env={"RNNKERN_CONV_MMA": "mma"}),
    "conv-tf32-NCHW-2048-32x32-d18": Case(
        "gather_conv_kernel forward, ASPP-like tf32 NCHW N8 2048->256 32x32 3x3 d18 (8x16 pixel tiles)", conv,
        dict(dtype="float32", channels_last=False, n=8, cin=2048, cout=256, hw=32, d=18),
        "gather_conv_kernel", per_iter=1, count=1),
    # FCN-32s head, k64 s32 p0 (csrc/cuda/conv_transpose.cu), fp32 under TF32: the forward is ONE
    # fcn_forward_block_kernel, the grad-input ONE fcn_dgrad_block_kernel then ONE
    # fcn_dgrad_finish_kernel, the grad-weight ONE fcn_wgrad_block_kernel then ONE
    # fcn_wgrad_finish_kernel. 5 an iteration.
    "convt-fp32-FCN32s-head": Case(
        "FCN-32s head fp32 NCHW 21->21 k64 s32 N8 16x16->544: forward (fcn_forward_block_kernel) + grad-input "
        "(fcn_dgrad_block_kernel, split-K, and fcn_dgrad_finish_kernel) + grad-weight (fcn_wgrad_block_kernel and "
        "fcn_wgrad_finish_kernel)", conv_transpose,
        dict(dtype="float32", n=8, cin=21, cout=21, hw=16, k=64, s=32, p=0),
        "fcn_forward_block_kernel|fcn_dgrad_block_kernel|fcn_dgrad_finish_kernel|fcn_wgrad_block_kernel|"
        "fcn_wgrad_finish_kernel", per_iter=5, count=5),
    # max_unpool (csrc/cuda/max_unpool.cu): dense 2x2 with OH = 2H, OW = 2W: the forward launches
    # ONE unpool_gather2x2[_pairs]_kernel (then the fix-up kernel, which returns at once for
    # max_pool's indices and is not counted here), the backward ONE
    # unpool_backward_dense[_pairs]_kernel (the pair kernels: NCHW, even width, as here). 2 an
    # iteration.
    "unpool-fp32-NCHW-8x64x256x256": Case(
        "max_unpool 2x2 fp32 NCHW (8,64,256,256)->512x512: forward + backward", max_unpool,
        dict(dtype="float32", n=8, c=64, h=256, w=256),
        "unpool_gather2x2|unpool_backward_dense", per_iter=2, count=2),
}


def ncu_args(case: Case) -> list[str]:
    args = ["--kernel-name", f"regex:{case.kernels}"] if case.kernels else []
    return args + ["--launch-skip", str(case.skip()), "--launch-count", str(case.count)]


# ---- running a case ----------------------------------------------------------------------------

def _value(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def run(name: str, device: str = "cuda", overrides: dict | None = None) -> None:
    case = CASES[name]
    # RNNKERN_* variables force paths in csrc/cuda/*.cu, which would change which kernels run:
    # the defaults here, plus the case's own
    for k in [k for k in os.environ if k.startswith("RNNKERN_")]:
        os.environ.pop(k)
    os.environ.update(case.env)
    import torch
    torch.manual_seed(0)
    params = {**case.params, **(overrides or {})}
    calls = case.setup(device, **params)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    try:  # (the flag the tf32 paths follow; newer torch may warn about the old name)
        tf32 = torch.backends.cudnn.allow_tf32
    except Exception as e:  # noqa: BLE001  informational only
        tf32 = f"? ({e})"
    print(f"{name}: {case.what}\n  {params}\n  {gpu}, torch {torch.__version__}, cudnn.allow_tf32={tf32}, "
          f"ncu: {' '.join(ncu_args(case))}", flush=True)
    labels = ["warm-up"] * case.warmup + ["profiled"] + ["spare"] * (case.warmup + 1)
    times = []
    for label in labels:
        t0 = time.perf_counter()
        for call in calls:
            call()
        sync()
        times.append(f"{label} {1e3 * (time.perf_counter() - t0):.1f}")
    print(f"  iterations (ms): {', '.join(times)}", flush=True)


# ---- summary of the reports --------------------------------------------------------------------
# From `ncu --import R --page raw --csv` (gpu_profile.sh writes CASE.raw.csv): a header row of
# metric names, then (usually) a row of units, then one row per profiled kernel.

COLUMNS = [  # (label, metric)
    ("time", "gpu__time_duration.sum"),
    ("SM%", "sm__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("mem%", "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"),
    ("DRAM%", "dram__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("occ%", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("issue%", "smsp__issue_active.avg.pct_of_peak_sustained_active"),
]
# WarpStateStats' stall reasons (cycles per issued instruction), else SourceCounters' samples
STALLS = [re.compile(r"^smsp__average_warps_issue_stalled_([a-z_]+)_per_issue_active\.ratio$"),
          re.compile(r"^smsp__pcsamp_warps_issue_stalled_([a-z_]+)$")]
BANK = "l1tex__data_bank_conflicts_pipe_lsu_mem_shared"    # shared-memory bank conflicts
WAVES = "l1tex__data_pipe_lsu_wavefronts_mem_shared"       # shared-memory wavefronts


def _num(text):
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def _kernel(name: str) -> str:
    """'void rnnkern::(anonymous namespace)::k<float, 1>(P)' -> 'k<float, 1>'."""
    name = name.replace("(anonymous namespace)::", "").removeprefix("void ")
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the parameter list: the first '(' outside the template arguments
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            cut = i
            break
    name = re.sub(r"^(\w+::)+", "", name[:cut])
    return name if len(name) <= 60 else name[:57] + "..."


def _rows(path: str):
    """(metric -> column, units row or None, data rows) of a raw-page CSV."""
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    col = {n: i for i, n in enumerate(rows[head])}
    units = rows[head + 1] if head + 1 < len(rows) and _num(rows[head + 1][0]) is None else None
    return col, units, rows[head + (2 if units else 1):]


def summarize(directory: str) -> None:
    order = {n: i for i, n in enumerate(CASES)}
    files = sorted(glob.glob(os.path.join(directory, "*.raw.csv")),
                   key=lambda f: (order.get(os.path.basename(f)[:-len(".raw.csv")], len(order)), f))
    print("case | kernel | " + " | ".join(label for label, _ in COLUMNS) +
          " | top stalls | shared bank conflicts / wavefronts")
    for path in files:
        case = os.path.basename(path)[:-len(".raw.csv")]
        try:
            col, units, data = _rows(path)
        except (OSError, StopIteration, csv.Error) as e:
            print(f"{case} | (no kernel table in {os.path.basename(path)}{': ' + str(e) if str(e) else ''})")
            continue
        for r in data:
            def get(metric):
                return r[col[metric]] if metric in col and col[metric] < len(r) else ""

            def total(metric):  # the .sum, else loads + stores
                parts = [_num(get(metric + ".sum"))]
                if parts[0] is None:
                    parts = [_num(get(f"{metric}_op_{op}.sum")) for op in ("ld", "st")]
                return "" if None in parts else f"{sum(parts):.0f}"
            cells = [get(m) + (f" {units[col[m]]}" if label == "time" and units and m in col else "")
                     for label, m in COLUMNS]
            stalls = []
            for pattern in STALLS:
                stalls = sorted(((_num(r[i]) or 0.0, m.group(1)) for n, i in col.items()
                                 if (m := pattern.match(n)) and i < len(r) and "not_issued" not in n
                                 and m.group(1) != "selected"), reverse=True)  # (selected: the issue itself)
                if stalls:
                    break
            print(f"{case} | {_kernel(get('Kernel Name'))} | " + " | ".join(cells) + " | " +
                  ", ".join(f"{s} {v:.3g}" for v, s in stalls[:4]) + f" | {total(BANK)} / {total(WAVES)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", nargs="?", choices=list(CASES))
    p.add_argument("--list", action="store_true", help="print the case names")
    p.add_argument("--ncu-args", metavar="CASE", choices=list(CASES), help="print ncu's launch filter for CASE")
    p.add_argument("--summarize", metavar="DIR", help="one line per profiled kernel of DIR/*.raw.csv")
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of the calls")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a case parameter")
    args = p.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
    elif args.ncu_args:
        print("\n".join(ncu_args(CASES[args.ncu_args])))
    elif args.summarize:
        summarize(args.summarize)
    elif args.case:
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep or key not in CASES[args.case].params:
                p.error(f"--set {item}: expected KEY=VALUE with KEY one of {sorted(CASES[args.case].params)}")
            overrides[key] = _value(value)
        run(args.case, args.device, overrides)
    else:
        p.error("name a case, or --list / --ncu-args CASE / --summarize DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
