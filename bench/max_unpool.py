"""Max-unpool 2x2 vs F.max_unpool2d at ANCHORS.md's shapes. Bytes: values + int64 indices read,
output written once (fwd); grad_output gathered + grad_input written (bwd). On CUDA, "fwd" is the
default call (it reads the index-check flag back: one host sync) and "fwd-async" the same with
check_indices=False (no sync; torch checks with a device-side assert, which needs none)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

import rnnkern.functional as RF
from bench.harness import Bench

GPU_CASES = [  # (dtype, N, C, H, W, channels_last)
    (torch.float32, 8, 64, 256, 256, False),
    (torch.float32, 8, 64, 180, 240, False),
    (torch.bfloat16, 8, 64, 180, 240, False),
    (torch.bfloat16, 8, 64, 180, 240, True),
    (torch.float32, 8, 64, 180, 240, True),
]
CPU_CASES = [(torch.float32, 4, 64, 128, 128, False), (torch.float32, 4, 64, 128, 128, True)]


def cases(device: str, quick: bool) -> list[Bench]:
    out = []
    for dtype, n, c, h, w, cl in (GPU_CASES if device == "cuda" else CPU_CASES)[: 2 if quick else None]:
        x = torch.randn(n, c, 2 * h, 2 * w, device=device, dtype=dtype)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        pooled, idx = F.max_pool2d(x, 2, return_indices=True)
        elem = x.element_size()
        fwd_bytes = pooled.numel() * (elem + 8) + x.numel() * elem
        name = f"{str(dtype).split('.')[-1]} {'CL' if cl else 'NCHW'} ({n},{c},{h},{w})->{2 * h}x{2 * w}"
        out.append(Bench("max_unpool", name, "fwd", lambda p=pooled, i=idx: RF.max_unpool2d(p, i, 2),
                         lambda p=pooled, i=idx: F.max_unpool2d(p, i, 2), "TB/s" if device == "cuda" else "GB/s",
                         fwd_bytes))
        if device == "cuda":  # check_indices=False: no flag read back, so no host sync (SegNet's call)
            out.append(Bench("max_unpool", name, "fwd-async",
                             lambda p=pooled, i=idx: RF.max_unpool2d(p, i, 2, check_indices=False),
                             lambda p=pooled, i=idx: F.max_unpool2d(p, i, 2), "TB/s", fwd_bytes))
        p = pooled.detach().requires_grad_()
        y_ours, y_torch = RF.max_unpool2d(p, idx, 2), F.max_unpool2d(p, idx, 2)
        g = torch.randn_like(y_ours)
        bwd_bytes = pooled.numel() * (2 * elem + 8)
        out.append(Bench("max_unpool", name, "bwd",
                         lambda y=y_ours, g=g, p=p: torch.autograd.grad(y, p, g, retain_graph=True),
                         lambda y=y_torch, g=g, p=p: torch.autograd.grad(y, p, g, retain_graph=True),
                         "TB/s" if device == "cuda" else "GB/s", bwd_bytes))
    return out
