"""Calls every CUDA kernel once on small odd shapes, forward and backward, for compute-sanitizer
(memcheck / racecheck) in scripts/gpu_check.sh. Each op family registers a function below.
    python scripts/sanitize_driver.py [unpool|rnn|conv|conv_transpose ...]   (default: all)"""
import itertools
import pathlib
import sys

import torch
import torch.nn.functional as F

import rnnkern
import rnnkern.functional as RF
from rnnkern.ops.rnn import rnn_forward

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # the repository, for bench/
from bench.harness import switches  # noqa: E402  (RNNKERN_* switches for a block)


def unpool(dev):
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            x = torch.randn(2, 3, 9, 11, device=dev, dtype=dtype).contiguous(memory_format=fmt)
            for k, s, p in ((2, 2, 0), (3, 2, 1)):
                pooled, idx = F.max_pool2d(x, k, s, p, return_indices=True)
                pooled.requires_grad_()
                y = RF.max_unpool2d(pooled, idx, k, s, p, output_size=x.shape[-2:])
                y.backward(torch.randn_like(y))
            z = x.requires_grad_()
            RF.unpool_nearest2d(z, 2).sum().backward()
            RF.bed_of_nails2d(z, 3).sum().backward()
            # even sizes, output exactly 2H x 2W: the dense 2x2 kernels (forward and backward);
            # 4 channels take the channels_last pairs kernels, 3 the one-channel ones
            for channels in (3, 4):
                xe = torch.randn(2, channels, 10, 12, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                pooled, idx = F.max_pool2d(xe, 2, return_indices=True)
                pooled = pooled.contiguous(memory_format=fmt).requires_grad_()
                RF.max_unpool2d(pooled, idx.contiguous(memory_format=fmt), 2).backward(torch.randn_like(xe))
                RF.unpool_nearest2d(pooled.detach(), 2)
            # hand-built indices outside their window: the gather's fix-up pass (one warp a plane)
            pooled = torch.randn(2, 3, 4, 5, device=dev, dtype=dtype)
            idx = torch.randperm(8 * 10, device=dev)[:20].view(4, 5).expand(2, 3, 4, 5).contiguous()
            RF.max_unpool2d(pooled, idx, 2)
            # unchecked, with indices out of range on both sides: dropped, never written
            idx[0, 1, 2, 3], idx[1, 2, 0, 0] = 80, -7
            RF.max_unpool2d(pooled.contiguous(memory_format=fmt), idx.contiguous(memory_format=fmt), 2,
                            check_indices=False)


def rnn(dev):
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        for nl in ("tanh", "relu"):
            m = rnnkern.nn.RNN(7, 33, num_layers=2, nonlinearity=nl, bidirectional=True).to(dev, dtype)
            x = torch.randn(9, 5, 7, device=dev, dtype=dtype, requires_grad=True)
            out, h = m(x)
            (out.float().sum() + h.float().sum()).backward()
        lengths = torch.tensor([9, 6, 6, 2, 1])
        packed = torch.nn.utils.rnn.pack_padded_sequence(x.detach(), lengths)
        m(packed)[0].data.float().sum().backward()
    # the op itself: several rows per CTA with a ragged last CTA (H=300), over 48 KB of dynamic
    # shared memory (H=2049: 16 fp32 rows per CTA on 132 SMs), lengths with a zero
    for H in (300, 2049):
        for dtype in (torch.float32, torch.bfloat16):
            T, B, I = 3, 5, 8
            args = [torch.randn(T, B, I), torch.randn(B, H), torch.randn(H, I) / I ** 0.5,
                    torch.randn(H, H) / H ** 0.5, torch.randn(H), torch.randn(H)]
            args = [a.to(dev, dtype).requires_grad_() for a in args]
            for lengths in (None, torch.tensor([3, 2, 2, 1, 0])):
                out, hn = rnn_forward(*args, lengths, False)
                (out.float().sum() + hn.float().sum()).backward()
    # every step barrier: grid.sync (the default), the flag barrier, one cluster (sm_90, H <= 256)
    # (no barrier, the exchange words: rnn_exchange below)
    for barrier in ("grid", "flag", "cluster"):
        with switches(RNNKERN_RNN_BARRIER=barrier):
            _rnn_fma(dev, torch.tensor([4, 2, 0]))
    # the tensor-core kernel (sm_90): one cluster (H=100), several with the exchange words (H=300,
    # the default where two partial-sum buffers fit; rnn_exchange too) and several with the flag
    # barrier (H=300 forced: the default where they do not fit; its per-step reuse of the partial
    # sums is ordered through global memory only), tf32 / bf16 / fp16, B of 17 (a ragged 16-row
    # tile), lengths with a zero
    torch.backends.cudnn.allow_tf32 = True
    with switches(RNNKERN_RNN_MATH="mma"):
        for H in (100, 300):
            _rnn_tensor_cores(dev, H)
        with switches(RNNKERN_RNN_BARRIER="flag"):
            _rnn_tensor_cores(dev, 300)
    # B > 64: the general path's raw steps (one cuBLAS product + one kernel each), lengths with
    # runs of equal row counts and a zero, stride-0 upstream gradients
    for dtype in (torch.float32, torch.bfloat16):
        args = [a.to(dev, dtype).requires_grad_() for a in (torch.randn(5, 67, 6), torch.randn(67, 33),
                                                            torch.randn(33, 6), torch.randn(33, 33) / 33 ** 0.5,
                                                            torch.randn(33), torch.randn(33))]
        out, hn = rnn_forward(*args, torch.tensor([5] * 20 + [3] * 30 + [1] * 16 + [0]), True)
        (out.float().sum() + hn.float().sum()).backward()
    # the same steps as CUDA graphs (RNNKERN_RNN_GRAPH=1): runs of >= 8 steps, captured on the
    # second call with the same buffers, replayed after (grads cleared each call, so the
    # allocator hands the same blocks back)
    args = [a.to(dev).requires_grad_() for a in (torch.randn(12, 67, 6), torch.randn(67, 33), torch.randn(33, 6),
                                                 torch.randn(33, 33) / 33 ** 0.5, torch.randn(33), torch.randn(33))]
    with switches(RNNKERN_RNN_GRAPH="1"):
        for _ in range(5):
            out, hn = rnn_forward(*args, None, False)
            torch.autograd.grad(out.sum() + hn.sum(), args)
            del out, hn


def conv(dev):
    # >= 8 channels per group reaches the implicit-GEMM kernels (tf32 on and off); 6 groups of 1
    # the direct depthwise kernels
    for tf32 in (True, False):
        torch.backends.cudnn.allow_tf32 = tf32
        for fmt in (torch.contiguous_format, torch.channels_last):
            for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
                x = torch.randn(2, 24, 13, 11, device=dev, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
                for stride, pad, dil, groups in ((1, 1, 1, 1), (2, 3, 3, 3), (1, 12, 12, 1), (1, 1, 1, 24)):
                    w = torch.randn(24, 24 // groups, 3, 3, device=dev, dtype=dtype,
                                    requires_grad=True)
                    b = torch.randn(w.shape[0], device=dev, dtype=dtype, requires_grad=True)
                    y = RF.conv2d(x, w, b, stride, pad, dil, groups)
                    y.backward(torch.randn_like(y))
                # 8 x 16 pixel tiles of the forward (padding >= 16 columns, output >= 32 wide)
                xw = torch.randn(1, 8, 12, 40, device=dev, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
                ww = torch.randn(9, 8, 3, 3, device=dev, dtype=dtype, requires_grad=True)
                RF.conv2d(xw, ww, None, 1, 18, 18).sum().backward()
                w1 = torch.randn(16, 24, 5, device=dev, dtype=dtype, requires_grad=True)
                RF.conv1d(x.detach()[:, :, 0], w1, None, 1, 4, 2).sum().backward()
    # the tensor-core forms: the single stage behind a register prefetch (RNNKERN_CONV_PIPELINE=0)
    # and the cp.async ring forced on (the default's) (wgmma: conv_wgmma)
    _conv_tensor_core_forms(dev, ({"RNNKERN_CONV_PIPELINE": "0"}, {"RNNKERN_CONV_PIPELINE": "1"}))
    # NCHW through channels_last copies (RNNKERN_CONV_NCHW=transpose), and a transposed
    # convolution's gather forward that way
    _conv_tensor_core_forms(dev, ({"RNNKERN_CONV_NCHW": "transpose"},), fmts=(torch.contiguous_format,))
    with switches(RNNKERN_CONV_NCHW="transpose"):
        RF.conv_transpose2d(torch.randn(2, 16, 5, 7, device=dev), torch.randn(16, 8, 3, 3, device=dev), None, 2, 1)


def _conv_tensor_core_forms(dev, envs, fmts=(torch.contiguous_format, torch.channels_last), ring_only=False):
    """tf32 in both layouts, bf16 channels_last with 16-byte channel runs (18 channels break the
    runs: 4-byte copies), strides, dilation, under each environment of `envs` (ring_only: leave out
    what runs no cp.async ring, 16-bit NCHW and 16-bit without 16-byte runs)."""
    torch.backends.cudnn.allow_tf32 = True
    for env in envs:
        with switches(**env):
            for fmt, dtype, cin in itertools.product(fmts, (torch.float32, torch.bfloat16), (24, 18)):
                if ring_only and dtype != torch.float32 and (fmt != torch.channels_last or cin % 8):
                    continue
                x = torch.randn(2, cin, 13, 11, device=dev, dtype=dtype).contiguous(memory_format=fmt)
                x.requires_grad_()
                for stride, pad, dil in ((1, 1, 1), (2, 3, 3), (1, 12, 12)):
                    w = torch.randn(20, cin, 3, 3, device=dev, dtype=dtype, requires_grad=True)
                    y = RF.conv2d(x, w, None, stride, pad, dil)
                    y.backward(torch.randn_like(y))


def conv_transpose(dev):
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            x = torch.randn(2, 4, 7, 9, device=dev, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            for k, stride, pad, opad, dil, groups in ((4, 2, 1, 0, 1, 1), (3, 2, 1, 1, 1, 2), (2, 2, 0, 0, 1, 1),
                                                      (5, 3, 2, 2, 1, 4), (3, 1, 2, 0, 2, 1)):
                w = torch.randn(4, 6 // groups if 6 % groups == 0 else 2, k, k, device=dev, dtype=dtype,
                                requires_grad=True)
                y = RF.conv_transpose2d(x, w, None, stride, pad, opad, groups, dil)
                y.backward(torch.randn_like(y))
            w1 = torch.randn(4, 3, 3, device=dev, dtype=dtype, requires_grad=True)
            RF.conv_transpose1d(x.detach()[:, :, 0], w1, None, 2, 1).sum().backward()
    # k = J * s without padding: the sub-pixel convolution (>= 8 input channels per group; groups,
    # channels_last) and, with 4 per group, the phase path it leaves to conv.cu's direct kernel
    for fmt in (torch.contiguous_format, torch.channels_last):
        for cin in (16, 8):
            x = torch.randn(2, cin, 5, 3, device=dev).contiguous(memory_format=fmt).requires_grad_()
            w = torch.randn(cin, 5, 16, 24, device=dev, requires_grad=True)
            RF.conv_transpose2d(x, w, torch.randn(10, device=dev), 8, 0, 0, 2).sum().backward()
    # the sub-pixel forward on the engine's cp.async ring (opt-in there: RNNKERN_CONV_PIPELINE=1),
    # tf32 and bf16 channels_last; k == s on the engine too (RNNKERN_CONV_GEMM=0), not cuBLAS
    with switches(RNNKERN_CONV_PIPELINE="1", RNNKERN_CONV_GEMM="0"):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(2, 16, 5, 7, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
            RF.conv_transpose2d(x, torch.randn(16, 8, 16, 16, device=dev, dtype=dtype), None, 8)
            RF.conv_transpose2d(x, torch.randn(16, 8, 2, 2, device=dev, dtype=dtype), None, 2)
    # kernel <= stride on cuBLAS (csrc/conv_gemm.h): every dtype and layout, patches with a
    # leftover row / column, 1x1, and the transposed convolution with and without a bias
    for fmt in (torch.contiguous_format, torch.channels_last):
        for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            x = torch.randn(2, 12, 7, 9, device=dev, dtype=dtype).contiguous(memory_format=fmt).requires_grad_()
            for k in (1, 2, 3):
                w = torch.randn(10, 12, k, k, device=dev, dtype=dtype, requires_grad=True)
                b = torch.randn(10, device=dev, dtype=dtype, requires_grad=True)
                RF.conv2d(x, w, b, k).sum().backward()
                wt = torch.randn(12, 5, k, k, device=dev, dtype=dtype, requires_grad=True)
                RF.conv_transpose2d(x, wt, b[:5] if k != 2 else None, k).sum().backward()
    # the FCN-32s head shape, small batch
    x = torch.randn(1, 21, 5, 6, device=dev, requires_grad=True)
    w = torch.randn(21, 21, 64, 64, device=dev, requires_grad=True)
    RF.conv_transpose2d(x, w, None, 32, 16).sum().backward()
    # without padding its grad_input is the block GEMM (fcn_dgrad_block_kernel, fp32 under TF32):
    # the head itself, and Q = 9 * 40 over four tiles with M = 2 * 13 * 14 past one tile
    torch.backends.cudnn.allow_tf32 = True
    RF.conv_transpose2d(x, w, None, 32).sum().backward()
    x = torch.randn(2, 40, 11, 12, device=dev, requires_grad=True)
    w = torch.randn(40, 3, 24, 24, device=dev, requires_grad=True)
    RF.conv_transpose2d(x, w, None, 8).sum().backward()
    # the block forward with runs of two tiles, some crossing into the next row tile (A reloaded):
    # 32 row tiles x 11 column tiles (the last one partial) over one wave of blocks; its
    # grad_weight (fcn_wgrad_block_kernel) over 11 column tiles x ~24 splits of m
    x = torch.randn(4, 4, 30, 30, device=dev)
    w = torch.randn(4, 21, 16, 16, device=dev, requires_grad=True)
    RF.conv_transpose2d(x, w, torch.randn(21, device=dev), 8).sum().backward()


def _rnn_fma(dev, lengths):
    """The FMA persistent kernel (H 33 and 256: one CTA's rows and many), forward and backward."""
    for H in (33, 256):
        args = [a.to(dev).requires_grad_() for a in (torch.randn(4, 3, 5), torch.randn(3, H), torch.randn(H, 5),
                                                     torch.randn(H, H) / H ** 0.5, torch.randn(H), torch.randn(H))]
        out, hn = rnn_forward(*args, lengths, True)
        (out.sum() + hn.sum()).backward()


def _rnn_tensor_cores(dev, H):
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        args = [a.to(dev, dtype).requires_grad_() for a in (torch.randn(4, 17, 6), torch.randn(17, H),
                                                            torch.randn(H, 6), torch.randn(H, H) / H ** 0.5,
                                                            torch.randn(H), torch.randn(H))]
        for lengths in (None, torch.tensor([4] * 5 + [3] * 6 + [1] * 5 + [0])):
            out, hn = rnn_forward(*args, lengths, False)
            (out.float().sum() + hn.float().sum()).backward()


def rnn_exchange(dev):
    """RNNKERN_RNN_BARRIER=exchange (no step barrier: step-tagged words), last and on its own: a
    reader that waits too long traps, which would end the run before the other families."""
    with switches(RNNKERN_RNN_BARRIER="exchange"):
        _rnn_fma(dev, torch.tensor([3, 2, 0]))  # lengths ending before T
        torch.backends.cudnn.allow_tf32 = True
        with switches(RNNKERN_RNN_MATH="mma"):  # the tensor-core kernel across clusters
            _rnn_tensor_cores(dev, 300)


def rnn_on_chip(dev):
    """RNNKERN_RNN_PATH=cta (opt-in): the on-chip kernel on one CTA at H 7, 129 and 256 (the fp32
    planes fill 192 KB of shared memory), and on clusters (sm_90, 64 rows a CTA) of 3, 8 and 16 CTAs
    at H 129, 512 and 1000 (16-bit; fp32 to H 512) and of 2 CTAs of 192 rows at H 384; with W_hh in
    registers (RNNKERN_RNN_ON_CHIP_W=registers, B <= 8) on one CTA at H 7 and clusters at H 129, 512
    and 1000; B 3 to 16, tf32 / bf16 / fp16, lengths with a zero, forward and backward."""
    torch.backends.cudnn.allow_tf32 = True
    # (the CPU dry run, tests/test_gpu_check.py, takes every shape)
    clusters = torch.device(dev).type != "cuda" or torch.cuda.get_device_capability(dev)[0] >= 9
    shapes = [(7, 3, "1", "shared"), (129, 16, "1", "shared"), (256, 16, "1", "shared"), (7, 3, "", "registers")]
    if clusters:
        shapes += [(129, 3, "", "shared"), (512, 16, "", "shared"), (1000, 3, "", "shared"), (384, 16, "2", "shared"),
                   (129, 8, "", "registers"), (512, 3, "", "registers"), (1000, 8, "", "registers")]
    for H, B, ctas, weights in shapes:
        with switches(RNNKERN_RNN_PATH="cta", RNNKERN_RNN_CLUSTER=ctas, RNNKERN_RNN_ON_CHIP_W=weights):
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                if dtype == torch.float32 and (H > 640 or ctas == "2" or (weights == "registers" and H > 512)):
                    continue  # fp32 holds H <= 640 on chip (512 in registers), and 192 rows a CTA only alone
                args = [a.to(dev, dtype).requires_grad_() for a in (torch.randn(4, B, 6), torch.randn(B, H),
                                                                    torch.randn(H, 6), torch.randn(H, H) / H ** 0.5,
                                                                    torch.randn(H), torch.randn(H))]
                for lengths in (None, torch.tensor([4] + [3] * (B - 2) + [0])):
                    out, hn = rnn_forward(*args, lengths, False)
                    (out.float().sum() + hn.float().sum()).backward()


def conv_wgmma(dev):
    """The gather and grad_weight kernels on Hopper's warpgroup MMA (RNNKERN_CONV_MMA=wgmma, sm_90a;
    elsewhere these run mma.sync again) on 128 x 128 and 128 x 64 tiles (forced: these shapes have
    <= 64 channels, which would pick 64), and the ring's k order in tap groups (4 of a 3x3
    kernel's 9 taps a group: the tables rebuilt between groups, on wgmma and mma.sync), last and
    on their own as rnn_exchange."""
    _conv_tensor_core_forms(dev, ({"RNNKERN_CONV_MMA": "wgmma", "RNNKERN_CONV_WGMMA_N": "128"},
                                  {"RNNKERN_CONV_MMA": "wgmma", "RNNKERN_CONV_WGMMA_N": "64",
                                   "RNNKERN_CONV_TAP_GROUP": "4"},
                                  {"RNNKERN_CONV_PIPELINE": "1", "RNNKERN_CONV_TAP_GROUP": "4"}), ring_only=True)


def conv_tma(dev):
    """The forward and grad_input on TMA im2col loads and wgmma (RNNKERN_CONV_MMA=tma, sm_90a;
    elsewhere the default kernels run) on 128- and 256-column tiles: tf32 / bf16 channels_last at
    stride 1, a ragged tile crossing images, channels short of a 128-byte chunk, dilation 12 (skipped
    taps), groups of whole chunks, the 8 x 16 pixel tiles of dilation 18, a stride-2 grad_input and
    transposed convolution (stride phases); and the grad_weight on TMA loads (wgrad_tma_kernel: bf16
    channels_last on the same shapes, its skipped k-steps at dilation 12 and 18, a stride-2 one; TF32
    NCHW with a row stride and at dilation 6); last and on its own as rnn_exchange. At 256 columns
    again with the CTAs in pairs sharing the weight tile (RNNKERN_CONV_TMA_CLUSTER=2: multicast
    copies, barriers armed across the pair, a half of B past the output channels never loaded) and
    the stride phases batched into launches (RNNKERN_CONV_TMA_BATCH=1); at 128 columns in clusters
    of four."""
    torch.backends.cudnn.allow_tf32 = True
    for tile_n, cluster, batch in (("128", "1", "0"), ("256", "1", "0"), ("256", "2", "1"), ("128", "4", "0")):
        with switches(RNNKERN_CONV_MMA="tma", RNNKERN_CONV_TMA_N=tile_n, RNNKERN_CONV_TMA_CLUSTER=cluster,
                      RNNKERN_CONV_TMA_BATCH=batch):
            for dtype in (torch.float32, torch.bfloat16):
                # (20 output channels: element stores, and a 16-bit grad_input the gather kernel runs)
                # (512 output channels: four 128-channel tiles, the 16-bit grad_weight's clusters of 4)
                for cin, cout, groups, pad, dil in ((24, 20, 1, 1, 1), (40, 136, 1, 12, 12), (128, 128, 2, 1, 1),
                                                    (64, 512, 1, 1, 1)):
                    x = torch.randn(3, cin, 13, 11, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
                    w = torch.randn(cout, cin // groups, 3, 3, device=dev, dtype=dtype, requires_grad=True)
                    b = torch.randn(cout, device=dev, dtype=dtype)
                    y = RF.conv2d(x.requires_grad_(), w, b, 1, pad, dil, groups)
                    y.backward(torch.randn_like(y))  # grad_input: the TMA kernel on the flipped taps where it can
                # a strided grad_input and a transposed convolution's forward: a problem a stride phase,
                # four in one launch
                xs = torch.randn(2, 24, 9, 10, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
                ws = torch.randn(16, 24, 3, 3, device=dev, dtype=dtype, requires_grad=True)
                y = RF.conv2d(xs.requires_grad_(), ws, None, 2, 1)
                y.backward(torch.randn_like(y))
                RF.conv_transpose2d(xs.detach(), torch.randn(24, 16, 4, 4, device=dev, dtype=dtype), None, 2, 1, 1)
                # 8 x 16 pixel tiles (padding >= 16 columns, output >= 32 wide), ragged in both directions
                x = torch.randn(1, 24, 13, 41, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
                w18 = torch.randn(24, 24, 3, 3, device=dev, dtype=dtype, requires_grad=True)
                y = RF.conv2d(x.requires_grad_(), w18, None, 1, 18, 18)
                y.backward(torch.randn_like(y))
            # the TF32 NCHW grad_weight on tiled 4-D loads: a row stride, a ragged last 32-column block,
            # dilation 6 (skipped rows and blocks)
            for stride, pad, dil, width in (((2, 1), 1, 1, 44), ((1, 1), 6, 6, 36)):
                x = torch.randn(2, 24, 11, width, device=dev, requires_grad=True)
                w = torch.randn(40, 24, 3, 3, device=dev, requires_grad=True)
                y = RF.conv2d(x, w, None, stride, pad, dil)
                y.backward(torch.randn_like(y))


def conv_layout_copy(dev):
    """RNNKERN_CONV_LAYOUT_COPY=kernel (opt-in; csrc/cuda/layout_copy.cuh): the NCHW operands of the
    channels_last kernels (RNNKERN_CONV_NCHW=transpose) copied both ways by the tiled transpose, in
    2- and 4-byte elements, with channel and pixel counts off the 32 x 32 tile (the ragged edges'
    guards) and a transposed convolution's forward; last and on its own as rnn_exchange."""
    torch.backends.cudnn.allow_tf32 = True
    with switches(RNNKERN_CONV_NCHW="transpose", RNNKERN_CONV_LAYOUT_COPY="kernel"):
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(2, 40, 9, 37, device=dev, dtype=dtype, requires_grad=True)
            w = torch.randn(24, 40, 3, 3, device=dev, dtype=dtype, requires_grad=True)
            y = RF.conv2d(x, w, None, 1, 1)
            y.backward(torch.randn_like(y))
            RF.conv_transpose2d(x.detach(), torch.randn(40, 24, 3, 3, device=dev, dtype=dtype), None, 2, 1)


CHECKS = [unpool, rnn, conv, conv_transpose, conv_wgmma, rnn_exchange, conv_tma, rnn_on_chip, conv_layout_copy]

if __name__ == "__main__":
    # `sanitize_driver.py [NAME ...]`: only those families (default: all)
    wanted = sys.argv[1:] or [c.__name__ for c in CHECKS]
    unknown = set(wanted) - {c.__name__ for c in CHECKS}
    if unknown:
        sys.exit(f"unknown check(s) {sorted(unknown)}; choose from {[c.__name__ for c in CHECKS]}")
    for check in (c for c in CHECKS if c.__name__ in wanted):
        check("cuda")
        torch.cuda.synchronize()
        print(f"sanitize: {check.__name__} ok")
