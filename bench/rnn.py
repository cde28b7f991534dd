"""Fused vanilla RNN vs torch.nn.RNN (cuDNN on GPU, ATen on CPU), T=256 (one T=1024 row on GPU), input size = H,
same weights, forward and forward+backward. Metric: us per time step."""
from __future__ import annotations

import torch

import rnnkern.nn
from bench.harness import Bench, with_env

# (dtype, B, H, T): issue 4's grid (fp32 and bf16, B in {8, 64}, H in {512, 1024}, T=256), cuDNN's
# persistent small-H case (B8 H256), the GEMM-bound B256 H1024, H=2048 and a T=1024 row
GPU_CASES = [
    (torch.float32, 8, 256, 256), (torch.float32, 8, 512, 256), (torch.float32, 8, 1024, 256),
    (torch.float32, 64, 512, 256), (torch.float32, 64, 1024, 256), (torch.float32, 256, 1024, 256),
    (torch.float32, 8, 2048, 256), (torch.float32, 8, 1024, 1024),
    (torch.bfloat16, 8, 512, 256), (torch.bfloat16, 8, 1024, 256), (torch.bfloat16, 64, 512, 256),
    (torch.bfloat16, 64, 1024, 256), (torch.bfloat16, 256, 1024, 256), (torch.bfloat16, 8, 2048, 256),
]
CPU_CASES = [(torch.float32, 8, 256, 256), (torch.float32, 16, 512, 256)]
# GPU forward rows re-run under forced settings (csrc/cuda/rnn.cu), to measure each choice against
# the default: the FMA kernel's step barrier (default grid.sync; one cluster where W_hh fits
# one, i.e. H <= 256 on sm_90, when forced) and the arithmetic (default: tensor cores at B >= 16,
# or B >= 8 where H >= 512, in bf16/fp16 and in fp32 when cudnn.allow_tf32, as here; the FMA
# kernel below that), the FMA kernel's grid capped at fewer CTAs (RNNKERN_RNN_CTAS), and the on-chip
# kernel (RNNKERN_RNN_PATH=cta, opt-in: one cluster of H_pad / 64 CTAs by default, RNNKERN_RNN_CLUSTER=1
# one CTA; RNNKERN_RNN_ON_CHIP_W=registers W_hh in registers) at every B8 shape it holds
ENV_CASES = {
    (torch.float32, 8, 256, 256): [{"RNNKERN_RNN_BARRIER": "exchange"},
                                   {"RNNKERN_RNN_BARRIER": "cluster"}, {"RNNKERN_RNN_BARRIER": "flag"},
                                   {"RNNKERN_RNN_MATH": "mma"}, {"RNNKERN_RNN_PATH": "cta"},
                                   {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_CLUSTER": "1"},
                                   {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_ON_CHIP_W": "registers"}, {"RNNKERN_RNN_CTAS": "64"},
                                   {"RNNKERN_RNN_CTAS": "32"}, {"RNNKERN_RNN_CTAS": "32", "RNNKERN_RNN_BARRIER": "flag"}],
    # the tensor-core kernel across clusters: the exchange (step-tagged words, only the cluster
    # barrier before the reduce; its default) against the flag barrier; the FMA kernel's exchange
    (torch.float32, 8, 512, 256): [{"RNNKERN_RNN_BARRIER": "flag"},
                                   {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "exchange"},
                                   {"RNNKERN_RNN_PATH": "cta"}, {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_ON_CHIP_W": "registers"}],
    (torch.float32, 8, 1024, 256): [{"RNNKERN_RNN_MATH": "fma"},
                                    {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "flag"},
                                    {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "exchange"}],
    (torch.float32, 64, 1024, 256): [{"RNNKERN_RNN_MATH": "fma"}, {"RNNKERN_RNN_BARRIER": "flag"}],
    (torch.float32, 64, 512, 256): [{"RNNKERN_RNN_MATH": "fma"}],
    (torch.bfloat16, 8, 512, 256): [{"RNNKERN_RNN_MATH": "fma"},
                                    {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "flag"},
                                    {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "exchange"},
                                    {"RNNKERN_RNN_PATH": "cta"}, {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_CLUSTER": "4"},
                                    {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_ON_CHIP_W": "registers"}],
    (torch.bfloat16, 8, 1024, 256): [{"RNNKERN_RNN_BARRIER": "flag"},
                                     {"RNNKERN_RNN_MATH": "fma", "RNNKERN_RNN_BARRIER": "exchange"},
                                     {"RNNKERN_RNN_PATH": "cta"}, {"RNNKERN_RNN_PATH": "cta", "RNNKERN_RNN_ON_CHIP_W": "registers"}],
    (torch.bfloat16, 64, 1024, 256): [{"RNNKERN_RNN_MATH": "fma"}, {"RNNKERN_RNN_BARRIER": "flag"}],
    # above B = 64 the tensor-core kernel runs only when forced (csrc/cuda/rnn.cu, kMmaMaxBatch);
    # fp32 B256 H1024 does not fit its shared memory, bf16 does. RNNKERN_RNN_GRAPH=0: the general
    # path's steps launched one by one instead of replayed as CUDA graphs (host-bound, ~25 us a step)
    (torch.float32, 256, 1024, 256): [{"RNNKERN_RNN_GRAPH": "0"}],
    (torch.bfloat16, 256, 1024, 256): [{"RNNKERN_RNN_MATH": "mma"}, {"RNNKERN_RNN_GRAPH": "0"}],
}

def cases(device: str, quick: bool) -> list[Bench]:
    out = []
    for dtype, B, H, T in (GPU_CASES if device == "cuda" else CPU_CASES)[: 2 if quick else None]:
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
        if device == "cuda":
            for env in ENV_CASES.get((dtype, B, H, T), ()):
                label = " ".join(f"{k.removeprefix('RNNKERN_RNN_').lower()}={v}" for k, v in env.items())
                out.append(Bench("rnn", f"{name} {label}", "fwd", with_env(fwd(ours), **env), fwd(ref), "us/step", T))
                out.append(Bench("rnn", f"{name} {label}", "fwd+bwd", with_env(fwd_bwd(ours), **env), fwd_bwd(ref),
                                 "us/step", T))
    return out
