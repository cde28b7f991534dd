"""One forward and one forward+backward per named case, for scripts/gpu_profile.sh (ncu). The case
names match bench/rnn.py's rows; warm-up calls run before the profiled ones (ncu's --launch-skip)."""
import argparse

import torch

import rnnkern.nn

CASES = {  # name: (dtype, B, H, T)
    "rnn-fp32-B8-H256": (torch.float32, 8, 256, 256),
    "rnn-fp32-B64-H1024": (torch.float32, 64, 1024, 256),
    "rnn-bf16-B64-H1024": (torch.bfloat16, 64, 1024, 256),
    "rnn-fp32-B256-H1024": (torch.float32, 256, 1024, 256),
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    dtype, B, H, T = CASES[args.case]
    m = rnnkern.nn.RNN(H, H).to("cuda", dtype)
    x = torch.randn(T, B, H, device="cuda", dtype=dtype, requires_grad=True)
    for _ in range(args.warmup + 1):
        y, _ = m(x)
        y.sum().backward()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
