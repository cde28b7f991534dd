"""Fused vanilla RNN vs torch.nn.RNN (cuDNN on GPU, ATen on CPU), T=256, input size = H,
same weights, forward and forward+backward. Metric: us per time step."""
from __future__ import annotations

import torch

import rnnkern.nn
from bench.harness import Bench

T = 256
GPU_CASES = [  # (dtype, B, H)
    (torch.float32, 8, 256), (torch.float32, 8, 512), (torch.float32, 8, 1024), (torch.float32, 64, 512),
    (torch.float32, 64, 1024), (torch.float32, 256, 1024),
    (torch.bfloat16, 8, 512), (torch.bfloat16, 64, 1024), (torch.bfloat16, 256, 1024),
]
CPU_CASES = [(torch.float32, 8, 256), (torch.float32, 16, 512)]


def cases(device: str, quick: bool) -> list[Bench]:
    out = []
    for dtype, B, H in (GPU_CASES if device == "cuda" else CPU_CASES)[: 2 if quick else None]:
        ref = torch.nn.RNN(H, H).to(device, dtype)
        ours = rnnkern.nn.RNN(H, H).to(device, dtype)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, H, device=device, dtype=dtype)
        name = f"{str(dtype).split('.')[-1]} T{T} B{B} H{H}"

        def fwd(m, x=x):
            def run():
                with torch.no_grad():
                    return m(x)
            return run

        def fwd_bwd(m, x=x):
            xg = x.clone().requires_grad_()

            def run():
                y, _ = m(xg)
                y.sum().backward()
            return run

        out.append(Bench("rnn", name, "fwd", fwd(ours), fwd(ref), "us/step", T))
        out.append(Bench("rnn", name, "fwd+bwd", fwd_bwd(ours), fwd_bwd(ref), "us/step", T))
    return out
