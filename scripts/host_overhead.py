"""Host time of one call, rnnkern's layers against torch's (the GPU's host side, or the CPU).

The benchmark's per-call times include the host's time before the first kernel starts; on an
H200 host that was ~180 us for the FCN head's grad_input against ~95 us for its forward, and ~70
us more than torch for max_unpool (bench/NOTES.md, seventh session). This times the host side
alone, layer by layer: the registered operator (`torch.ops.rnnkern.*`, through torch's
dispatcher and the C++ autograd kernel, what the functional layer and autograd call), and
(max_unpool) the user's functional + autograd path, and (RNN) the module, with torch's own op
beside each. The GPU is kept busy first, so launches queue and the host's time is not the GPU's
(except where an op reads a result back: max_unpool's forward checks its index flags). On the CPU the shapes are
tiny, so that the kernels' own time does not hide the layers'.

    python scripts/host_overhead.py            (GPU if visible; --device cpu for the CPU)
"""
import argparse
import pathlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import rnnkern
import rnnkern.functional as RF
from rnnkern.ops import conv_transpose as ct
from rnnkern.ops import max_unpool as mu

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository, for bench/
from bench.harness import switches  # noqa: E402  (RNNKERN_* switches for a block)


def host_us(fn, device, calls=40, reps=7):
    """Median over reps of the host's microseconds per call, `calls` calls in a row."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
            busy = torch.randn(4096, 4096, device=device)
            for _ in range(20):  # ~tens of ms of queued GPU work: the calls below only enqueue
                busy = busy @ busy
                busy = busy / busy.norm()
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    if device == "cuda":
        torch.cuda.synchronize()
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    dev = ap.parse_args().device
    torch.backends.cudnn.allow_tf32 = True
    gpu = dev == "cuda"
    rows = []
    # transposed conv: the FCN-32s head (k64 s32, 21 -> 21) on the GPU, a k4 s2 p1 toy on the CPU
    if gpu:
        x, w, stride, pad = torch.randn(8, 21, 16, 16, device=dev), torch.randn(21, 21, 64, 64, device=dev) / 64, 32, 0
    else:
        x, w, stride, pad = torch.randn(1, 4, 4, 4), torch.randn(4, 4, 4, 4), 2, 1
    args = ([stride] * 2, [pad] * 2, [0, 0], 1, [1, 1])
    gy = torch.randn_like(F.conv_transpose2d(x, w, None, stride, pad))
    convt = f"convT {'head' if gpu else 'k4s2'}"
    rows += [(f"{convt} fwd", "op", host_us(lambda: ct.conv_transpose2d_forward(x, w, None, *args), dev)),
             (f"{convt} fwd", "torch F", host_us(lambda: F.conv_transpose2d(x, w, None, stride, pad), dev)),
             (f"{convt} dgrad", "op",
              host_us(lambda: ct.conv_transpose2d_backward_input(gy, w, list(x.shape), *args), dev)),
             (f"{convt} dgrad", "torch aten", host_us(lambda: torch.ops.aten.convolution_backward(
                 gy, x, w, None, [stride] * 2, [pad] * 2, [1, 1], True, [0, 0], 1, [True, False, False]), dev))]
    # conv forward: bf16 channels_last N8 256 -> 256 64x64 3x3 (the TMA gather's row; its weight's K-major
    # copy each call, or with RNNKERN_CONV_TMA_WEIGHT=inplace a channels_last weight read in place) on the
    # GPU, fp32 (1, 8, 6, 6) on the CPU
    if gpu:
        xc = torch.randn(8, 256, 64, 64, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        wc = torch.randn(256, 256, 3, 3, device=dev, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    else:
        xc, wc = torch.randn(1, 8, 6, 6), torch.randn(8, 8, 3, 3)
    conv = f"conv fwd {'bf16 CL d1' if gpu else '8x6x6'}"
    rows.append((conv, "functional", host_us(lambda: RF.conv2d(xc, wc, None, 1, 1), dev)))
    with switches(RNNKERN_CONV_TMA_WEIGHT="inplace"):
        rows.append((conv, "w inplace", host_us(lambda: RF.conv2d(xc, wc, None, 1, 1), dev)))
    rows.append((conv, "torch F", host_us(lambda: F.conv2d(xc, wc, None, 1, 1), dev)))
    # the modules a network calls, at sizes whose kernels are short (layers of a small net, or a
    # GPU's host side): rnnkern's against torch's, the same parameters
    xs, x1 = torch.randn(1, 8, 8, 8, device=dev), torch.randn(1, 8, 16, device=dev)
    for name, ours, theirs, inp in (
            ("conv2d module", rnnkern.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1), xs),
            ("conv1d module", rnnkern.nn.Conv1d(8, 8, 3, padding=1), torch.nn.Conv1d(8, 8, 3, padding=1), x1),
            ("convT2d module", rnnkern.nn.ConvTranspose2d(8, 8, 4, 2, 1), torch.nn.ConvTranspose2d(8, 8, 4, 2, 1), xs)):
        ours.to(dev).load_state_dict(theirs.to(dev).state_dict())
        with torch.no_grad():
            rows += [(name, "ours", host_us(lambda: ours(inp), dev)), (name, "torch", host_us(lambda: theirs(inp), dev))]
    # max_unpool 2x2, fp32 NCHW: (8, 64, 180, 240) on the GPU, (1, 2, 4, 4) on the CPU
    a = torch.randn(8, 64, 360, 480, device=dev) if gpu else torch.randn(1, 2, 8, 8)
    pooled, idx = F.max_pool2d(a, 2, return_indices=True)
    p = pooled.detach().requires_grad_()
    y_ours, y_torch = RF.max_unpool2d(p, idx, 2), F.max_unpool2d(p, idx, 2)
    g = torch.randn_like(y_ours)
    mode, size, out_hw = mu.MODE_INDICES, list(pooled.shape), list(a.shape[2:])
    rows += [("unpool fwd", "op", host_us(lambda: mu.max_unpool_forward(pooled, idx, mode, [2, 2], [2, 2], [0, 0],
                                                                         out_hw), dev)),
             ("unpool fwd", "functional", host_us(lambda: RF.max_unpool2d(p, idx, 2), dev)),
             ("unpool fwd", "unchecked", host_us(lambda: RF.max_unpool2d(p, idx, 2, check_indices=False), dev)),
             ("unpool fwd", "torch F", host_us(lambda: F.max_unpool2d(p, idx, 2), dev)),
             ("unpool bwd", "op", host_us(lambda: mu.max_unpool_backward(g, idx, mode, size, [2, 2], [2, 2], [0, 0]),
                                          dev)),
             ("unpool bwd", "autograd", host_us(lambda: torch.autograd.grad(y_ours, p, g, retain_graph=True), dev)),
             ("unpool bwd", "torch autograd",
              host_us(lambda: torch.autograd.grad(y_torch, p, g, retain_graph=True), dev))]
    # RNN forward, bf16 T256 B8 H512 on the GPU (the bench row whose lone call ran 120-240 us over its
    # queued time on an H200, bench/NOTES.md eighteenth session), fp32 T4 B2 H8 on the CPU: the
    # registered op, the module, torch's module. A host sync inside ours would show here as ~the
    # GPU time of a call (~1 ms) instead of tens of microseconds.
    from rnnkern.ops import rnn as rnn_ops
    T, B, H, dt = (256, 8, 512, torch.bfloat16) if gpu else (4, 2, 8, torch.float32)
    ours_m, theirs_m = rnnkern.nn.RNN(H, H).to(dev, dt), torch.nn.RNN(H, H).to(dev, dt)
    xr = torch.randn(T, B, H, device=dev, dtype=dt)
    ra = [xr, torch.zeros(B, H, device=dev, dtype=dt), ours_m.weight_ih_l0, ours_m.weight_hh_l0, ours_m.bias_ih_l0,
          ours_m.bias_hh_l0]
    rnn = f"rnn fwd {'bf16 T256 B8 H512' if gpu else 'T4 B2 H8'}"
    with torch.no_grad():
        rows += [(rnn, "op", host_us(lambda: rnn_ops.rnn_forward(*ra, None, False), dev)),
                 (rnn, "module", host_us(lambda: ours_m(xr), dev)),
                 (rnn, "torch module", host_us(lambda: theirs_m(xr), dev))]
        # one token through a 2-layer H256 RNN: a language model's sampling step
        ours_m, theirs_m = rnnkern.nn.RNN(256, 256, 2).to(dev), torch.nn.RNN(256, 256, 2).to(dev)
        x1, h1 = torch.randn(1, 1, 256, device=dev), torch.zeros(2, 1, 256, device=dev)
        rows += [("rnn step 2x H256", "module", host_us(lambda: ours_m(x1, h1), dev)),
                 ("rnn step 2x H256", "torch module", host_us(lambda: theirs_m(x1, h1), dev))]
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"host us per call ({name}, torch {torch.__version__})")
    for op, layer, us in rows:
        print(f"  {op:18} {layer:15} {us:8.1f}")


if __name__ == "__main__":
    main()
