"""Transposed convolution vs torch (F.conv_transpose2d / aten.convolution_backward) at ANCHORS.md's
shapes: forward, dgrad (grad of the input) and wgrad (grad of the weight) timed separately.

FLOPs are useful MACs only (x2): for each spatial dimension the (input position, kernel tap)
pairs whose output position lands inside the output, times N * C_in * C_out/groups. Inserted
zeros and taps falling into the cropped padding are not counted."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.harness import Bench, with_env
from rnnkern.ops import conv_transpose as ops


@dataclass
class Case:
    name: str
    dtype: torch.dtype
    n: int
    cin: int
    cout: int
    hw: int
    k: int
    s: int
    p: int
    channels_last: bool = False


GPU_CASES = [
    Case("fp32 NCHW 256->256 k4s2p1 N8 64->128", torch.float32, 8, 256, 256, 64, 4, 2, 1),
    Case("bf16 CL 256->256 k4s2p1 N8 64->128", torch.bfloat16, 8, 256, 256, 64, 4, 2, 1, True),
    Case("bf16 CL U-Net 1024->512 k2s2 N8 32->64", torch.bfloat16, 8, 1024, 512, 32, 2, 2, 0, True),
    Case("fp32 FCN-32s head 21->21 k64s32 N8 16->544", torch.float32, 8, 21, 21, 16, 64, 32, 0),
    Case("fp32 FCN upscore 21->21 k4s2 N8 64->130", torch.float32, 8, 21, 21, 64, 4, 2, 0),
    Case("fp32 FCN-8s upscore8 21->21 k16s8 N8 64->520", torch.float32, 8, 21, 21, 64, 16, 8, 0),
]
# CPU (2 cores here): the same families, scaled to run in seconds
CPU_CASES = [
    Case("fp32 NCHW 64->64 k4s2p1 N4 32->64", torch.float32, 4, 64, 64, 32, 4, 2, 1),
    Case("fp32 CL 64->64 k4s2p1 N4 32->64", torch.float32, 4, 64, 64, 32, 4, 2, 1, True),
    Case("fp32 U-Net 256->128 k2s2 N4 16->32", torch.float32, 4, 256, 128, 16, 2, 2, 0),
    Case("fp32 FCN-32s head 21->21 k64s32 N2 8->288", torch.float32, 2, 21, 21, 8, 64, 32, 0),
    Case("fp32 FCN upscore 21->21 k4s2 N4 32->66", torch.float32, 4, 21, 21, 32, 4, 2, 0),
]


def useful_macs(c: Case) -> int:
    out = ops.output_size(c.hw, c.k, c.s, c.p, 0, 1)
    pairs = sum(1 for i in range(c.hw) for t in range(c.k) if 0 <= i * c.s - c.p + t < out)
    return c.n * c.cin * c.cout * pairs * pairs


def _benches(c: Case, device: str) -> list[Bench]:
    """One case's three passes; a function so every closure binds this case's tensors."""
    x = torch.randn(c.n, c.cin, c.hw, c.hw, device=device, dtype=c.dtype)
    w = torch.randn(c.cin, c.cout, c.k, c.k, device=device, dtype=c.dtype) / (c.cin * c.k) ** 0.5
    if c.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    st, pd, op, dl = [c.s, c.s], [c.p, c.p], [0, 0], [1, 1]
    gy = torch.randn_like(F.conv_transpose2d(x, w, None, c.s, c.p))
    flops = 2.0 * useful_macs(c)

    def torch_bwd(mask):
        return torch.ops.aten.convolution_backward(gy, x, w, None, st, pd, dl, True, op, 1, mask)

    def passes(suffix: str = "", **env) -> list[Bench]:
        """The three passes, ours under `env` (another form of the same op, named by `suffix`)."""
        return [
            Bench("conv_transpose", c.name + suffix, "fwd",
                  with_env(lambda: ops.conv_transpose2d_forward(x, w, None, st, pd, op, 1, dl), **env),
                  lambda: F.conv_transpose2d(x, w, None, c.s, c.p), "TFLOP/s", flops),
            Bench("conv_transpose", c.name + suffix, "dgrad",
                  with_env(lambda: ops.conv_transpose2d_backward_input(gy, w, list(x.shape), st, pd, op, 1, dl), **env),
                  lambda: torch_bwd([True, False, False]), "TFLOP/s", flops),
            Bench("conv_transpose", c.name + suffix, "wgrad",
                  with_env(lambda: ops.conv_transpose2d_backward_weight(gy, x, list(w.shape), st, pd, op, 1, dl, False),
                           **env),
                  lambda: torch_bwd([False, True, False]), "TFLOP/s", flops),
        ]

    out = passes()
    if device == "cuda" and c.k == c.s and c.p == 0:
        # kernel <= stride, no padding: one GEMM on cuBLAS (csrc/conv_gemm.h); the same passes on the engine
        out += passes(" engine", RNNKERN_CONV_GEMM="0")
    if device == "cuda" and (c.k, c.s, c.p) == (4, 2, 1):
        # the three passes on the engine with mma.sync alone, and with Hopper's wgmma everywhere (sm_90a)
        out += passes(" mma", RNNKERN_CONV_MMA="mma")
        out += passes(" wgmma", RNNKERN_CONV_MMA="wgmma")
        out += passes(" wgmma n64", RNNKERN_CONV_MMA="wgmma", RNNKERN_CONV_WGMMA_N="64")
        # the forward (the engine's grad_input gather, one stride phase a launch) and dgrad (a strided
        # convolution's forward) on TMA im2col loads (sm_90a): 16-bit's default (there: on 128-column
        # tiles, the width the default did not take), TF32 through channels_last copies (opt-in);
        # the wgrad is not TMA's
        env = (dict(RNNKERN_CONV_MMA="tma", RNNKERN_CONV_TMA_N="128") if c.channels_last
               else dict(RNNKERN_CONV_MMA="tma", RNNKERN_CONV_NCHW="transpose"))
        out += [b for b in passes(" tma n128" if c.channels_last else " via CL tma", **env) if b.pass_ != "wgrad"]
        # ... at the default width with its CTAs in pairs sharing the weight tile, with the forward's
        # four stride phases in one launch, both, and fours with one launch (opt-in)
        base = dict(RNNKERN_CONV_MMA="tma", **({} if c.channels_last else dict(RNNKERN_CONV_NCHW="transpose")))
        for name, env in ((" pair", dict(RNNKERN_CONV_TMA_CLUSTER="2")), (" batch", dict(RNNKERN_CONV_TMA_BATCH="1")),
                          (" pair batch", dict(RNNKERN_CONV_TMA_CLUSTER="2", RNNKERN_CONV_TMA_BATCH="1")),
                          (" quad batch", dict(RNNKERN_CONV_TMA_CLUSTER="4", RNNKERN_CONV_TMA_BATCH="1"))):
            label = (" tma" if c.channels_last else " via CL tma") + name
            out += [b for b in passes(label, **base, **env) if b.pass_ != "wgrad"]
        if not c.channels_last:  # ... and TF32's copies on layout_copy.cuh's tiled transpose (opt-in)
            out += [b for b in passes(" via CL tma copy kernel", **base, RNNKERN_CONV_LAYOUT_COPY="kernel")
                    if b.pass_ != "wgrad"]
    if device == "cuda" and (c.k, c.s, c.p) == (4, 2, 1) and not c.channels_last:
        # NCHW on the channels_last kernels through copies (fp32: opt-in), and those on wgmma
        out += passes(" via CL", RNNKERN_CONV_NCHW="transpose")
        out += passes(" via CL wgmma", RNNKERN_CONV_NCHW="transpose", RNNKERN_CONV_MMA="wgmma")
        # ... with those copies on layout_copy.cuh's tiled transpose instead of ATen's copy (opt-in)
        out += passes(" via CL copy kernel", RNNKERN_CONV_NCHW="transpose", RNNKERN_CONV_LAYOUT_COPY="kernel")
    if device == "cuda" and c.p == 0 and c.k % c.s == 0 and c.s % 4 == 0 and not c.channels_last:
        # the FCN upsamplers' block GEMMs against the general kernels they replaced (fwd, dgrad, wgrad)
        out += passes(" general", RNNKERN_CONVT_FCN="general")
    return out


def cases(device: str, quick: bool) -> list[Bench]:
    out = []
    for c in (GPU_CASES if device == "cuda" else CPU_CASES)[: 2 if quick else None]:
        out += _benches(c, device)
    return out
