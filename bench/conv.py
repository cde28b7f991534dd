"""Dilated 3x3 (and 1x1) convolution vs torch (cuDNN on GPU, oneDNN on CPU) at ANCHORS.md's shapes:
forward, grad-input (dgrad) and grad-weight (wgrad) as separate passes, each side calling its
own kernel for exactly that pass (torch: aten.convolution_backward with one output mask).

FLOPs count useful MACs only: for every tap, the output pixels whose read lands on real input
(not padding), x 2 x C_in/groups x C_out. At 32x32 with dilation 18 that is ~39% of the 3x3 work.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

import rnnkern.functional as RF
from bench.harness import Bench, with_env

FWD = torch.ops.rnnkern.conv2d_forward.default
DGRAD = torch.ops.rnnkern.conv2d_backward_input.default
WGRAD = torch.ops.rnnkern.conv2d_backward_weight.default


@dataclass
class Case:
    dtype: torch.dtype
    channels_last: bool
    n: int
    cin: int
    cout: int
    hw: int
    dilation: int
    no_cudnn: bool = False  # compare against torch with cuDNN disabled (its native CUDA path)
    variant: str = ""       # ours in another form of the same kernels (VARIANTS), for comparison
    k: int = 3              # square kernel, 'same' padding d (k - 1) / 2
    groups: int = 1         # cin (= cout) for a depthwise convolution


# Other forms of the same op, selected per call by environment variables (the default: 16-bit
# forward / grad_input on TMA im2col loads + wgmma where they run (conv.cu's tma_wanted), else on the
# cp.async ring: wgmma for the forward / grad_input on 128-column tiles except fp32 channels_last,
# mma.sync + ldmatrix elsewhere; 16-bit NCHW through channels_last copies; GEMM-shaped convolutions
# on cuBLAS):
VARIANTS = {"cp.async": {"RNNKERN_CONV_PIPELINE": "1"},   # the ring forced on (the default where it applies)
            "mma": {"RNNKERN_CONV_MMA": "mma"},           # mma.sync everywhere (the default before wgmma's)
            "wgmma": {"RNNKERN_CONV_MMA": "wgmma"},       # Hopper's warpgroup MMA everywhere it runs (sm_90a) ...
            "wgmma n64": {"RNNKERN_CONV_MMA": "wgmma",    # ... on the mma.sync form's 128 x 64 tiles
                          "RNNKERN_CONV_WGMMA_N": "64"},
            # the ring's k order in groups of 9 taps (gathered pixels reused through L1; wgmma's default) on
            # mma.sync, and wgmma tap by tap (the mma.sync default's order)
            "taps 9": {"RNNKERN_CONV_TAP_GROUP": "9"},
            "wgmma taps 1": {"RNNKERN_CONV_MMA": "wgmma", "RNNKERN_CONV_TAP_GROUP": "1"},
            "engine": {"RNNKERN_CONV_GEMM": "0"},         # a 1x1 convolution on the engine instead of cuBLAS
            # NCHW operands through channels_last copies on the channels_last kernels (TF32: opt-in) ...
            "via CL": {"RNNKERN_CONV_NCHW": "transpose"},
            "via CL wgmma": {"RNNKERN_CONV_NCHW": "transpose",  # ... and those on wgmma
                             "RNNKERN_CONV_MMA": "wgmma"},
            "native": {"RNNKERN_CONV_NCHW": "native"},    # 16-bit NCHW on the NCHW kernels (bf16 row below)
            # the forward and grad_input on TMA im2col loads + wgmma for every dtype it takes (TF32 too;
            # rows below) ...
            "tma": {"RNNKERN_CONV_MMA": "tma"},
            "tma n128": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_N": "128"},  # ... on 128 x 128 tiles
            "tma n256": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_N": "256"},  # ... on 128 x 256 tiles
            "via CL tma": {"RNNKERN_CONV_NCHW": "transpose", "RNNKERN_CONV_MMA": "tma"},  # ... TF32 NCHW through copies
            # the grad_weight on TMA loads + wgmma (wgrad_tma_kernel: 16-bit channels_last, TF32 NCHW;
            # opt-in, rows below)
            "tma wgrad": {"RNNKERN_CONV_MMA": "tma"},
            "tma wgrad pair": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_CLUSTER": "2"},  # ... in CTA pairs
            # the forward and grad_input with the TMA gather's CTAs in pairs sharing the weight tile
            # (gather_tma_kernel's CM = 2, opt-in; rows below)
            "tma pair": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_CLUSTER": "2"},
            "tma quad": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_CLUSTER": "4"},  # ... in fours
            # the forward's map reading a channels_last weight in place instead of a K-major copy (opt-in;
            # every case's weight has its input's layout; grad_input still copies, a control)
            "tma w inplace": {"RNNKERN_CONV_MMA": "tma", "RNNKERN_CONV_TMA_WEIGHT": "inplace"},
            # NCHW operands' channels_last copies on layout_copy.cuh's tiled transpose instead of ATen's
            # copy (opt-in; rows below): 16-bit's default through copies, and TF32's on TMA loads
            "copy kernel": {"RNNKERN_CONV_LAYOUT_COPY": "kernel"},
            "via CL tma copy kernel": {"RNNKERN_CONV_NCHW": "transpose", "RNNKERN_CONV_MMA": "tma",
                                       "RNNKERN_CONV_LAYOUT_COPY": "kernel"}}
TMA_ONLY = ("tma", "tma n128", "tma n256", "via CL tma", "tma wgrad", "tma wgrad pair", "tma pair", "tma quad",
            "tma w inplace", "via CL tma copy kernel")  # (their own rows below)
WGRAD_ONLY = ("tma wgrad", "tma wgrad pair")  # (their forward and dgrad are the default's)
# variants that change nothing for channels_last operands
NCHW_ONLY = ("via CL", "via CL wgmma", "via CL tma", "copy kernel", "via CL tma copy kernel")
GATHER_ONLY = ("taps 9", "wgmma taps 1", "tma pair", "tma quad", "tma w inplace")  # forward and dgrad, not wgrad
# (the TMA forms' grad_weight is wgrad_tma_kernel for 16-bit channels_last and TF32 NCHW, the
# default's elsewhere)

GPU_CASES = (
    [Case(torch.float32, False, 8, 256, 256, 64, d) for d in (1, 2, 6, 12, 18)]
    + [Case(torch.bfloat16, True, 8, 256, 256, 64, d) for d in (1, 2, 6, 12, 18)]
    + [Case(torch.float32, False, 8, 2048, 256, 32, d) for d in (6, 12, 18)]      # ASPP head
    + [Case(torch.bfloat16, True, 8, 2048, 256, 32, d) for d in (6, 12, 18)]
    + [Case(torch.float32, False, 8, 256, 256, 64, 6, no_cudnn=True)]
    # fp32 channels_last: how far the engine's 16-byte channel runs beat NCHW's 4-byte copies (a
    # transpose to channels_last in front of the NCHW kernels would cost ~20 us here)
    + [Case(torch.float32, True, 8, 256, 256, 64, 1, variant=v) for v in ("", "wgmma")]
    + [Case(dt, cl, 8, cin, 256, hw, d, variant=v) for v in VARIANTS
       for dt, cl, cin, hw, d in ((torch.float32, False, 256, 64, 1), (torch.bfloat16, True, 256, 64, 1),
                                  (torch.float32, False, 2048, 32, 18), (torch.bfloat16, True, 2048, 32, 18))
       if v not in ("engine", "native", "copy kernel") + TMA_ONLY and not (cl and v in NCHW_ONLY)]
    # the TMA gather, 16-bit's default: against the wgmma gather it replaced (d1 and d18 above) ...
    + [Case(torch.bfloat16, True, 8, 256, 256, 64, d, variant="wgmma") for d in (2, 6, 12)]
    + [Case(torch.bfloat16, True, 8, 2048, 256, 32, d, variant="wgmma") for d in (6, 12)]
    + [Case(torch.bfloat16, False, 8, 256, 256, 64, 1, variant="wgmma")]
    # ... and at the tile width the default did not take (tma_tile_n: 256 columns where the grid still
    # gives every SM a tile: the 64x64 rows; 128 at the ASPP's 32x32)
    + [Case(torch.bfloat16, True, 8, cin, 256, hw, d, variant=v)
       for cin, hw, d, v in ((256, 64, 1, "tma n128"), (2048, 32, 6, "tma n256"), (2048, 32, 18, "tma n256"))]
    # the grad_weight on TMA loads (opt-in), every bf16 channels_last and TF32 NCHW row
    + [Case(dt, dt == torch.bfloat16, 8, cin, 256, hw, d, variant="tma wgrad") for dt in (torch.bfloat16, torch.float32)
       for cin, hw, ds in ((256, 64, (1, 2, 6, 12, 18)), (2048, 32, (6, 12, 18))) for d in ds]
    # ... and in CTA pairs sharing the input's boxes (16-bit; the 256 output channels are two 128-channel tiles)
    + [Case(torch.bfloat16, True, 8, cin, 256, hw, d, variant="tma wgrad pair") for cin, hw, d in ((256, 64, 1),
                                                                                                  (256, 64, 6),
                                                                                                  (2048, 32, 18))]
    # the TMA gather's CTA pairs (opt-in) on every bf16 row the default runs it on, and TF32 channels_last
    + [Case(torch.bfloat16, True, 8, cin, 256, hw, d, variant="tma pair")
       for cin, hw, ds in ((256, 64, (1, 2, 6, 12, 18)), (2048, 32, (6, 12, 18))) for d in ds]
    + [Case(dt, cl, 8, 256, 256, 64, 1, variant="tma pair") for dt, cl in ((torch.bfloat16, False), (torch.float32, True))]
    + [Case(torch.bfloat16, True, 8, cin, 256, hw, d, variant=v) for cin, hw, d in ((256, 64, 1), (256, 64, 6),
                                                                                   (2048, 32, 18))
       for v in ("tma quad", "tma w inplace")]
    # TF32 (opt-in): channels_last at both widths, and NCHW (ANCHORS' parity row) through channels_last copies
    + [Case(torch.float32, True, 8, 256, 256, 64, 1, variant=v) for v in ("tma", "tma n128")]
    + [Case(torch.float32, False, 8, cin, 256, hw, d, variant="via CL tma") for cin, hw, d in ((256, 64, 1), (2048, 32, 18))]
    # bf16 NCHW: no 2-byte cp.async, so its NCHW tiles take the single-stage form (native); the
    # default runs it through channels_last copies
    + [Case(torch.bfloat16, False, 8, 256, 256, 64, 1, variant=v) for v in ("", "native", "copy kernel")]
    # ... and TF32 NCHW through copies on TMA loads, with the transpose kernel's copies (opt-in)
    + [Case(torch.float32, False, 8, cin, 256, hw, d, variant="via CL tma copy kernel")
       for cin, hw, d in ((256, 64, 1), (2048, 32, 18))]
    # the ASPP head's 1x1 branch: one GEMM (cuBLAS, csrc/conv_gemm.h), and the same on the engine
    + [Case(dt, cl, 8, 2048, 256, 32, 1, variant=v, k=1) for v in ("", "engine")
       for dt, cl in ((torch.float32, False), (torch.bfloat16, True))]
)
CPU_CASES = (
    [Case(torch.float32, False, 2, 64, 64, 32, d) for d in (1, 2, 6, 12, 18)]
    + [Case(torch.float32, True, 2, 64, 64, 32, d) for d in (1, 6, 18)]
    + [Case(torch.float32, False, 1, 256, 64, 32, d) for d in (6, 12, 18)]         # small ASPP
    # deeper stages' widths, where the direct kernels' reduction blocking matters (bench/NOTES.md,
    # fourteenth session): 256 -> 256, 512 -> 512 at 8x8, the ASPP head's 2048 -> 256 at 16x16
    + [Case(torch.float32, False, 1, 256, 256, 32, 1), Case(torch.float32, False, 1, 512, 512, 8, 1),
       Case(torch.float32, False, 1, 2048, 256, 16, 6)]
    # beyond ANCHORS.md (seventeenth session): depthwise 3x3 in both layouts, a 3x3 head with fewer
    # output channels than a vector, a narrow layer (the demo's FCN-8s at base width 8), a 1x1 bottleneck
    + [Case(torch.float32, cl, 8, 64, 64, 32, 1, groups=64) for cl in (False, True)]
    + [Case(torch.float32, False, 8, 64, 11, 8, 1), Case(torch.float32, False, 8, 8, 8, 64, 1),
       Case(torch.float32, False, 1, 256, 64, 28, 1, k=1)]
    # narrow channels_last (eighteenth session: through NCHW copies, conv.cpp's kNarrowCopies)
    + [Case(torch.float32, True, 8, 4, 4, 64, 1), Case(torch.float32, True, 8, 8, 8, 64, 1)]
)


def useful_flops(c: Case) -> float:
    """2 x MACs that read real input, 'same' padding (p = d (k - 1) / 2), stride 1."""
    k = c.k

    def valid(t):  # output positions whose tap-t read is inside the input
        off = t * c.dilation - c.dilation * (k - 1) // 2
        return max(0, min(c.hw, c.hw - off) - max(0, -off))
    per_img = sum(valid(r) * valid(s) for r in range(k) for s in range(k))
    return 2.0 * c.n * per_img * c.cin * c.cout / c.groups


def _name(c: Case) -> str:
    dt = {torch.float32: "tf32" if torch.cuda.is_available() else "fp32", torch.bfloat16: "bf16"}[c.dtype]
    vs = (" vs no-cuDNN" if c.no_cudnn else "") + (f" {c.variant}" if c.variant else "")
    kind = ("1x1" if c.k == 1 else f"d{c.dilation}") + (" depthwise" if c.groups > 1 else "")
    return f"{dt} {'CL' if c.channels_last else 'NCHW'} N{c.n} {c.cin}->{c.cout} {c.hw}x{c.hw} {kind}{vs}"


def _torch_backward(gy, x, w, d, p, mask, no_cudnn, groups=1):
    def run():
        with torch.backends.cudnn.flags(enabled=not no_cudnn):
            return torch.ops.aten.convolution_backward(gy, x, w, None, [1, 1], [p, p], [d, d], False, [0, 0], groups,
                                                       mask)
    return run


def cases(device: str, quick: bool) -> list[Bench]:
    out = []
    table = GPU_CASES if device == "cuda" else CPU_CASES
    if quick:
        table = table[:: max(1, len(table) // 4)]
    for c in table:
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        x = torch.randn(c.n, c.cin, c.hw, c.hw, device=device, dtype=c.dtype).contiguous(memory_format=fmt)
        cg, g = c.cin // c.groups, c.groups
        w = torch.randn(c.cout, cg, c.k, c.k, device=device, dtype=c.dtype) / (c.k * c.k * cg) ** 0.5
        w = w.contiguous(memory_format=fmt)
        d, p = c.dilation, c.dilation * (c.k - 1) // 2
        gy = torch.randn(c.n, c.cout, c.hw, c.hw, device=device, dtype=c.dtype).contiguous(memory_format=fmt)
        s, p4, dd = [1, 1], [p, p, p, p], [d, d]  # bound as lambda defaults below: each case its own
        flops, name = useful_flops(c), _name(c)

        def theirs_fwd(x=x, w=w, d=d, p=p, nc=c.no_cudnn, g=g):
            with torch.backends.cudnn.flags(enabled=not nc):
                return F.conv2d(x, w, None, 1, p, d, g)

        env = VARIANTS.get(c.variant, {})
        if c.variant not in WGRAD_ONLY:
            out.append(Bench("conv", name, "fwd",
                             with_env(lambda x=x, w=w, d=d, p=p, g=g: RF.conv2d(x, w, None, 1, p, d, g), **env),
                             theirs_fwd, "TFLOP/s", flops))
            out.append(Bench("conv", name, "dgrad",
                             with_env(lambda gy=gy, w=w, xs=list(x.shape), s=s, p4=p4, dd=dd, g=g:
                                      DGRAD(gy, w, xs, s, p4, dd, g), **env),
                             _torch_backward(gy, x, w, d, p, [True, False, False], c.no_cudnn, g), "TFLOP/s", flops))
        tma_wgrad_runs = c.channels_last != (c.dtype == torch.float32)  # (16-bit channels_last, TF32 NCHW)
        if c.variant in GATHER_ONLY or (c.variant in TMA_ONLY and not tma_wgrad_runs):
            continue
        out.append(Bench("conv", name, "wgrad",
                         with_env(lambda gy=gy, x=x, ws=list(w.shape), s=s, p4=p4, dd=dd, g=g:
                                  WGRAD(gy, x, ws, s, p4, dd, g, False), **env),
                         _torch_backward(gy, x, w, d, p, [False, True, False], c.no_cudnn, g), "TFLOP/s", flops))
    return out
