"""rnnkern transposed convolution vs torch.nn.functional.conv_transpose1d/2d and fp64 references."""
import itertools
import random

import pytest
import torch
import torch.nn.functional as F

import rnnkern.functional as RF
import rnnkern.nn as RN
from rnnkern.ops import conv_transpose as ops
from rnnkern.ops._validate import channels_last_output
from tests.utils import CPU_HAS_AVX512, DEVICES, TOL, TOL_TF32, rel_err

LAYOUTS = ["nchw", "channels_last"]


def _layout(t, layout):
    return t.contiguous(memory_format=torch.channels_last) if layout == "channels_last" and t.dim() == 4 else t


def _draw_output_padding(rng: random.Random, s, d):
    """A random output_padding torch accepts: below max(stride, dilation) in each dimension."""
    return [rng.randint(0, max(s[i], d[i]) - 1) for i in range(len(s))]


def _output_nonempty(size, k, s, p, op, d):
    return min(ops.output_size(size[i], k[i], s[i], p[i], op[i], d[i]) for i in range(len(size))) >= 1


def random_case(rng: random.Random, nd: int):
    """Random geometry: checkerboard k % s != 0, output_padding, groups, dilation, odd sizes."""
    while True:
        g = rng.choice([1, 1, 2, 3])
        cin, cout = g * rng.randint(1, 3), g * rng.randint(1, 3)
        k = [rng.randint(1, 5) for _ in range(nd)]
        s = [rng.randint(1, 3) for _ in range(nd)]
        d = [rng.choice([1, 1, 2]) for _ in range(nd)]
        p = [rng.randint(0, 2) for _ in range(nd)]
        op = _draw_output_padding(rng, s, d)
        size = [rng.randint(1, 7) for _ in range(nd)]
        if _output_nonempty(size, k, s, p, op, d):
            return dict(n=rng.randint(1, 3), cin=cin, cout=cout, g=g, k=k, s=s, d=d, p=p, op=op, size=size)


def make(c, nd, dtype, device, bias=True):
    x = torch.randn(c["n"], c["cin"], *c["size"], dtype=dtype, device=device)
    w = torch.randn(c["cin"], c["cout"] // c["g"], *c["k"], dtype=dtype, device=device)
    b = torch.randn(c["cout"], dtype=dtype, device=device) if bias else None
    return x, w, b


def run_both(fn_ours, fn_ref, x, w, b, c, grad_seed_like=None):
    """Forward + all gradients of ours (input dtype) and the fp64 torch reference."""
    args = (c["s"], c["p"], c["op"], c["g"], c["d"])
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    y = fn_ours(leaves[0], leaves[1], leaves[2] if b is not None else None, *args)
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, w, b) if t is not None]
    y_ref = fn_ref(ref_leaves[0], ref_leaves[1], ref_leaves[2] if b is not None else None, *args)
    gy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, leaves, gy.to(y.dtype))
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, gy)
    return y, y_ref, grads, grads_ref


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nd", [1, 2])
def test_random_vs_torch(strict_fp32, device, dtype, layout, nd):
    # (true fp32: the 1e-5 tolerances below are fp32's; e.g. k <= s cases run on cuBLAS, in TF32 by default)
    rng = random.Random(torch.randint(0, 2**31, ()).item())
    fn, ref = (RF.conv_transpose1d, F.conv_transpose1d) if nd == 1 else (RF.conv_transpose2d, F.conv_transpose2d)
    for _ in range(12):
        c = random_case(rng, nd)
        x, w, b = make(c, nd, dtype, device, bias=rng.random() < 0.7)
        x = _layout(x, layout)
        y, y_ref, grads, grads_ref = run_both(fn, ref, x, w, b, c)
        assert y.shape == y_ref.shape and y.dtype == dtype
        assert rel_err(y, y_ref) < TOL[dtype], c
        for g, gr, name in zip(grads, grads_ref, ["input", "weight", "bias"]):
            assert g.shape == gr.shape
            assert rel_err(g, gr) < TOL[dtype], (name, c)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (5, 3, 1, 2), (4, 2, 1, 0), (2, 2, 0, 0), (64, 32, 16, 0),
                                      (3, 1, 1, 0), (1, 3, 0, 2)])
def test_checkerboard_and_named_shapes(device, k, s, p, op):
    """k not divisible by s (uneven overlap), U-Net k == s, FCN-style 2f/f/f/2, stride 1, 1x1."""
    x = torch.randn(2, 5, 3, 4, device=device, dtype=torch.float64)
    w = torch.randn(5, 3, k, k, device=device, dtype=torch.float64)
    b = torch.randn(3, device=device, dtype=torch.float64)
    c = dict(s=[s, s], p=[p, p], op=[op, op], g=1, d=[1, 1])
    y, y_ref, grads, grads_ref = run_both(RF.conv_transpose2d, F.conv_transpose2d, x, w, b, c)
    assert rel_err(y, y_ref) < 1e-12
    for g, gr in zip(grads, grads_ref):
        assert rel_err(g, gr) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_blocked_paths(device, layout):
    """Sizes that split the CPU kernels' work into several pixel chunks (crossing image rows) and
    output-channel blocks, and the CUDA kernels' work into several tiles and K splits."""
    x = _layout(torch.randn(3, 8, 13, 12, device=device, dtype=torch.float64), layout)
    w = torch.randn(8, 48, 5, 5, device=device, dtype=torch.float64)
    b = torch.randn(96, device=device, dtype=torch.float64)
    c = dict(s=[2, 3], p=[2, 1], op=[1, 0], g=2, d=[1, 1])
    y, y_ref, grads, grads_ref = run_both(RF.conv_transpose2d, F.conv_transpose2d, x, w, b, c)
    assert rel_err(y, y_ref) < 1e-12
    for g, gr in zip(grads, grads_ref):
        assert rel_err(g, gr) < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_fp64(device):
    x = torch.randn(2, 4, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, dtype=torch.float64, device=device, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, device=device, requires_grad=True)
    f = lambda x, w, b: RF.conv_transpose2d(x, w, b, (2, 3), (1, 0), (1, 2), 2, (1, 2))  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, w, b))
    assert torch.autograd.gradgradcheck(f, (x, w, b))
    x1 = torch.randn(1, 2, 4, dtype=torch.float64, device=device, requires_grad=True)
    w1 = torch.randn(2, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: RF.conv_transpose1d(x, w, None, 2, 1, 1), (x1, w1))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    kw = dict(dtype=torch.float64, device=device)
    x = torch.randn(2, 4, 3, 5, **kw, requires_grad=True)
    w = torch.randn(4, 3, 3, 2, **kw, requires_grad=True)
    b = torch.randn(6, **kw, requires_grad=True)
    args = ([2, 1], [1, 0], [1, 0], 2, [1, 2])
    y = ops.conv_transpose2d_forward(x, w, b, *args)
    gy = torch.randn_like(y).requires_grad_()
    torch.library.opcheck(ops.conv_transpose2d_forward, (x, w, b, *args))
    torch.library.opcheck(ops.conv_transpose2d_forward, (x.contiguous(memory_format=torch.channels_last), w, None,
                                                         *args))
    torch.library.opcheck(ops.conv_transpose2d_backward_input, (gy, w, list(x.shape), *args))
    torch.library.opcheck(ops.conv_transpose2d_backward_weight, (gy, x, list(w.shape), *args, True))
    torch.library.opcheck(ops.conv_transpose2d_backward_weight, (gy, x, list(w.shape), *args, False))
    # 16-bit channels_last slices (not dense): the fp32 detour keeps the layout the fake kernels say
    for dtype in (torch.bfloat16, torch.float16):
        xs = torch.randn(1, 8, 6, 7, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)[:, ::2]
        ws = torch.randn(4, 3, 3, 3, dtype=dtype, device=device)
        plain = ([1, 1], [0, 0], [0, 0], 1, [1, 1])
        torch.library.opcheck(ops.conv_transpose2d_forward, (xs, ws, None, *plain))
        gys = torch.randn(1, 6, 8, 9, dtype=dtype, device=device).contiguous(memory_format=torch.channels_last)[:, ::2]
        torch.library.opcheck(ops.conv_transpose2d_backward_input, (gys, ws, [1, 4, 6, 7], *plain))
        torch.library.opcheck(ops.conv_transpose2d_backward_weight, (gys, xs, list(ws.shape), *plain, True))


def test_lecture_1d_matrix_example():
    """conv_transpose1d (k3 s2 p1) of a length-2 signal == C^T z, with C the matrix of the
    conv1d (k3 s2 p1) that maps length 3 (or 4) to length 2."""
    w = torch.randn(3, dtype=torch.float64)
    z = torch.randn(2, dtype=torch.float64)
    for length, op in [(3, 0), (4, 1)]:
        C = torch.zeros(2, length, dtype=torch.float64)
        for j in range(2):          # output position of the conv
            for t in range(3):      # kernel tap: reads x[j*2 - 1 + t]
                i = 2 * j - 1 + t
                if 0 <= i < length:
                    C[j, i] = w[t]
        x = torch.randn(length, dtype=torch.float64)
        assert torch.allclose(F.conv1d(x.view(1, 1, -1), w.view(1, 1, 3), stride=2, padding=1).view(-1), C @ x)
        y = RF.conv_transpose1d(z.view(1, 1, 2), w.view(1, 1, 3), stride=2, padding=1, output_padding=op)
        assert y.shape == (1, 1, length)
        torch.testing.assert_close(y.view(-1), C.t() @ z, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_layout_and_noncontiguous(device):
    x = torch.randn(2, 6, 5, 7, device=device).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 4, 3, 3, device=device)
    y = RF.conv_transpose2d(x, w, None, 2, 1, 1)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert rel_err(y, F.conv_transpose2d(x.double(), w.double(), None, 2, 1, 1)) < 1e-5
    y2 = RF.conv_transpose2d(x.contiguous(), w, None, 2, 1, 1)
    assert y2.is_contiguous()
    xt = torch.randn(2, 7, 5, 6, device=device).transpose(1, 3)[:, :, ::1, 1:]  # odd strides
    y3 = RF.conv_transpose2d(xt, w[:, :, :, :2], None, (1, 2))
    assert rel_err(y3, F.conv_transpose2d(xt.double(), w[:, :, :, :2].double(), None, (1, 2))) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_unbatched(strict_fp32, device):
    w = torch.randn(3, 2, 3, 3, device=device, requires_grad=True)
    b = torch.randn(2, device=device, requires_grad=True)
    x = torch.randn(0, 3, 4, 5, device=device, requires_grad=True)
    y = RF.conv_transpose2d(x, w, b, 2, 1)
    assert y.shape == F.conv_transpose2d(x, w, b, 2, 1).shape == (0, 2, 7, 9)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad, torch.zeros_like(b))
    xu = torch.randn(3, 4, 5, device=device)
    # fp64 references: on a GPU torch's fp32 conv may run in TF32 (cudnn.allow_tf32 is on by default)
    ref = F.conv_transpose2d(xu.double(), w.double(), b.double(), 2)
    assert rel_err(RF.conv_transpose2d(xu, w, b, 2), ref) < 1e-5
    x1 = torch.randn(3, 6, device=device)
    w1 = torch.randn(3, 4, 2, device=device)
    assert rel_err(RF.conv_transpose1d(x1, w1, None, 2), F.conv_transpose1d(x1.double(), w1.double(), None, 2)) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_with_empty_images(device):
    """An empty batch returns an empty result wherever torch's does: images of no pixels in or out
    (an input of 0 rows, or padding that leaves an output of 0 x 0); a negative output size and an
    empty image in a non-empty batch still raise. Gradients of an empty batch are zeros."""
    w = torch.randn(2, 3, 3, 3, device=device, requires_grad=True)
    b = torch.randn(3, device=device, requires_grad=True)
    for xs, kw in (((0, 2, 2, 2), dict(padding=2)), ((0, 2, 0, 5), {}), ((0, 2, 0, 0), dict(padding=1))):
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(xs, device=device).contiguous(memory_format=fmt).requires_grad_()
            y = RF.conv_transpose2d(x, w, b, **kw)
            assert y.shape == F.conv_transpose2d(x, w, b, **kw).shape, (xs, kw)
            y.sum().backward()
            assert x.grad.shape == x.shape and not w.grad.any() and not b.grad.any()
    assert RF.conv_transpose1d(torch.randn(0, 2, 0, device=device), w[..., 0]).shape == (0, 3, 2)
    with pytest.raises(ValueError, match="too small"):
        RF.conv_transpose2d(torch.randn(0, 2, 1, 1, device=device), w, padding=5)
    with pytest.raises(ValueError, match="too small"):
        RF.conv_transpose2d(torch.randn(1, 2, 2, 2, device=device), w, padding=2)
    with pytest.raises(ValueError, match="spatial size"):
        RF.conv_transpose2d(torch.randn(1, 2, 0, 5, device=device), w)


@pytest.mark.skipif(not CPU_HAS_AVX512, reason="the direct AVX-512 kernels run only where the CPU has AVX-512")
def test_long_reduction_accuracy_matches_torch():
    """The FCN-32s head's grad_input (k64 s32: 64 x 64 taps x 64 channels = 262,144 terms an output)
    on the direct kernels: each chunk of the reduction is summed on its own and then added, so the
    fp32 error stays at torch's level (a running sum over the whole reduction ran ~14x torch's)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 21, 2, 2, generator=g)
    w = torch.randn(21, 64, 64, 64, generator=g)
    gy = torch.randn(1, 64, 64, 64, generator=g)
    ref = F.conv2d(gy.double(), w.double(), stride=32, padding=16)  # the exact grad_input
    errs = []
    for fn in (RF.conv_transpose2d, F.conv_transpose2d):
        xx = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad(fn(xx, w, None, 32, 16), xx, gy)
        errs.append((gx.double() - ref).abs().max().item())
    assert errs[0] <= 3 * errs[1], errs


def test_weight_with_no_channels_raises():
    """torch refuses an empty weight ("non-empty weight tensor expected"); so do we, in the forward."""
    with pytest.raises(ValueError, match="non-zero sizes"):
        RF.conv_transpose2d(torch.randn(1, 2, 3, 3), torch.randn(2, 0, 3, 3))
    with pytest.raises(ValueError, match="non-zero sizes"):
        RF.conv_transpose2d(torch.randn(1, 0, 3, 3), torch.randn(0, 2, 3, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_output_layout_follows_a_channels_last_weight(device):
    """torch returns channels_last when the weight is, whatever the input; an input contiguous in
    both layouts (one channel, 1 x 1 images) leaves our kernels no layout to follow, so the op makes
    the output channels_last itself. Checked against torch's own layouts (transposed and plain)."""
    cl = torch.channels_last
    for xs, ws in (((2, 1, 5, 5), (8, 1, 3, 3)), ((2, 3, 1, 1), (8, 3, 3, 3)), ((2, 3, 5, 5), (8, 3, 3, 3))):
        for x_fmt, w_fmt in itertools.product((torch.contiguous_format, cl), repeat=2):
            x = torch.randn(xs, device=device, dtype=torch.float64).contiguous(memory_format=x_fmt)
            wt = torch.randn(ws[1], ws[0], 3, 3, device=device, dtype=torch.float64).contiguous(memory_format=w_fmt)
            w = torch.randn(ws, device=device, dtype=torch.float64).contiguous(memory_format=w_fmt)
            for ours, theirs in ((RF.conv_transpose2d(x, wt, None, 2), F.conv_transpose2d(x, wt, None, 2)),
                                 (RF.conv2d(x, w, None, 1, 1), F.conv2d(x, w, None, 1, 1))):
                for fmt in (torch.contiguous_format, cl):
                    assert ours.is_contiguous(memory_format=fmt) == theirs.is_contiguous(memory_format=fmt), (
                        xs, ws, x_fmt, w_fmt, fmt, ours.stride(), theirs.stride())
                torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x = torch.randn(5, 8, 9, 9, device=device, requires_grad=True)
    w = torch.randn(8, 8, 4, 4, device=device, requires_grad=True)
    outs = []
    for _ in range(2):
        y = RF.conv_transpose2d(x, w, None, 2, 1)
        outs.append((y, *torch.autograd.grad(y, (x, w), torch.ones_like(y))))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_reduced_precision_cpu():
    """bf16/fp16 on the CPU compute in fp32 and round once: no worse than 2x torch's error."""
    for dtype in (torch.bfloat16, torch.float16):
        x = torch.randn(2, 8, 6, 6)
        w = torch.randn(8, 4, 3, 3) / 8
        ref = F.conv_transpose2d(x.double(), w.double(), None, 2, 1)
        ours = RF.conv_transpose2d(x.to(dtype), w.to(dtype), None, 2, 1)
        theirs = F.conv_transpose2d(x.to(dtype), w.to(dtype), None, 2, 1)
        assert ours.dtype == dtype
        assert rel_err(ours, ref) <= 2 * rel_err(theirs, ref) + 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("pipeline", ["0", "1"])
@pytest.mark.parametrize("dtype,k,s", [(torch.bfloat16, 2, 2), (torch.bfloat16, 16, 8), (torch.float32, 16, 8)])
def test_cuda_subpixel_forward_engine_forms(monkeypatch, pipeline, dtype, k, s):
    """The sub-pixel forward (k = J s: a stride-1 convolution on the engine whose epilogue stores
    each value pixel-shuffled; channels_last, so the FCN block forward does not take it) with the
    engine's single stage (RNNKERN_CONV_PIPELINE=0, its default here) and its cp.async ring (=1:
    the pairing that had not run on a GPU when the ring became the engine's default elsewhere):
    no worse than 2x torch's error (TF32's for fp32). k == s would go to cuBLAS (conv_gemm.h):
    RNNKERN_CONV_GEMM=0 keeps it on the engine."""
    monkeypatch.setenv("RNNKERN_CONV_PIPELINE", pipeline)
    monkeypatch.setenv("RNNKERN_CONV_GEMM", "0")
    x = torch.randn(2, 32, 9, 11, device="cuda").contiguous(memory_format=torch.channels_last)
    w = torch.randn(32, 12, k, k, device="cuda") / (32 * (k // s) ** 2) ** 0.5
    b = torch.randn(12, device="cuda")
    ref = F.conv_transpose2d(x.double(), w.double(), b.double(), s)
    ours = RF.conv_transpose2d(x.to(dtype), w.to(dtype), b.to(dtype), s)
    theirs = F.conv_transpose2d(x.to(dtype), w.to(dtype), b.to(dtype), s)
    assert ours.dtype == dtype and ours.is_contiguous(memory_format=torch.channels_last)
    floor = TOL_TF32 if dtype == torch.float32 else 0.0
    assert rel_err(ours, ref) <= max(2 * rel_err(theirs, ref), floor) + 1e-4, rel_err(ours, ref)


@pytest.mark.cuda
@pytest.mark.parametrize("groups,gemm", [(2, ""), (1, "0")])
def test_cuda_k_eq_s_one_output_channel_a_group(monkeypatch, groups, gemm):
    """k == s == 2 with one output channel a group (C_out / groups * s^2 = 4 shuffled channels) is
    too narrow for the sub-pixel form (the engine sends products under 8 columns to its direct
    kernel, which has no shuffled epilogue): it must take another path, not fail an assertion.
    (groups = 1 goes to cuBLAS unless RNNKERN_CONV_GEMM=0.)"""
    monkeypatch.setenv("RNNKERN_CONV_GEMM", gemm)
    x = torch.randn(2, 16, 5, 7, device="cuda", dtype=torch.float64)
    w = torch.randn(16, 1, 2, 2, device="cuda", dtype=torch.float64)
    ref = F.conv_transpose2d(x, w, None, 2, groups=groups)
    for dtype in (torch.float32, torch.bfloat16):
        for layout in LAYOUTS:
            ours = RF.conv_transpose2d(_layout(x.to(dtype), layout), w.to(dtype), None, 2, groups=groups)
            assert rel_err(ours, ref) < (TOL_TF32 if dtype == torch.float32 else 1e-2), (dtype, layout)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_reduced_precision(dtype, layout):
    x = _layout(torch.randn(4, 32, 9, 11, device="cuda"), layout)
    w = torch.randn(32, 16, 4, 4, device="cuda") / 16
    b = torch.randn(16, device="cuda")
    xs, ws, bs = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    xr, wr, br = [t.double().requires_grad_() for t in (x, w, b)]
    xt, wt, bt = [t.to(dtype).requires_grad_() for t in (x, w, b)]
    ys = RF.conv_transpose2d(xs, ws, bs, 2, 1)
    yr = F.conv_transpose2d(xr, wr, br, 2, 1)
    yt = F.conv_transpose2d(xt, wt, bt, 2, 1)
    assert ys.dtype == dtype
    assert rel_err(ys, yr) <= 2 * rel_err(yt, yr) + 1e-4
    gy = torch.randn_like(yr)
    gs = torch.autograd.grad(ys, (xs, ws, bs), gy.to(dtype))
    gr = torch.autograd.grad(yr, (xr, wr, br), gy)
    gt = torch.autograd.grad(yt, (xt, wt, bt), gy.to(dtype))
    for a, r, t in zip(gs, gr, gt):
        assert rel_err(a, r) <= 2 * rel_err(t, r) + 1e-4


@pytest.mark.cuda
def test_cuda_fcn32_head_and_unet():
    """The two special shapes of the CUDA engine: k64 s32 (long-K dgrad, split-K) and k == s."""
    for cin, cout, k, s, hw in [(21, 21, 64, 32, 4), (64, 32, 2, 2, 8)]:
        x = torch.randn(2, cin, hw, hw, device="cuda", dtype=torch.float64)
        w = torch.randn(cin, cout, k, k, device="cuda", dtype=torch.float64)
        c = dict(s=[s, s], p=[0, 0], op=[0, 0], g=1, d=[1, 1])
        y, y_ref, grads, grads_ref = run_both(RF.conv_transpose2d, F.conv_transpose2d, x, w, None, c)
        assert rel_err(y, y_ref) < 1e-12
        for g, gr in zip(grads, grads_ref):
            assert rel_err(g, gr) < 1e-12
        # split-K partials are summed in a fixed order: bitwise reproducible
        gy = torch.randn_like(y_ref)
        args = ([s, s], [0, 0], [0, 0], 1, [1, 1])
        d1 = ops.conv_transpose2d_backward_input(gy, w, list(x.shape), *args)
        d2 = ops.conv_transpose2d_backward_input(gy, w, list(x.shape), *args)
        w1, _ = ops.conv_transpose2d_backward_weight(gy, x, list(w.shape), *args, False)
        w2, _ = ops.conv_transpose2d_backward_weight(gy, x, list(w.shape), *args, False)
        assert torch.equal(d1, d2) and torch.equal(w1, w2)


# FCN upsampler shapes (k = J s, no padding): (n, cin, cout, k, s, size). FCN-32s / 16s / 8s
# heads; J = 1; J = 3 with J^2 C_in over several tiles; a non-square kernel; M past one 128-block
# tile; unequal strides (sH sW = 32).
_FCN_CASES = [(2, 21, 21, (64, 64), (32, 32), (4, 5)), (2, 21, 21, (32, 32), (16, 16), (6, 3)),
              (2, 21, 21, (16, 16), (8, 8), (9, 7)), (3, 40, 5, (8, 8), (8, 8), (5, 1)),
              (1, 40, 3, (24, 24), (8, 8), (2, 3)), (2, 16, 12, (16, 24), (8, 8), (5, 3)),
              (2, 8, 4, (16, 16), (8, 8), (11, 12)), (2, 6, 5, (8, 16), (4, 8), (5, 4))]


@pytest.mark.cuda
@pytest.mark.parametrize("case", _FCN_CASES)
def test_cuda_fcn_block_dgrad(monkeypatch, case):
    """grad_input of the FCN upsamplers as one block GEMM on TF32 tensor cores
    (fcn_dgrad_block_kernel, fp32 under cudnn.allow_tf32; scripts/check_fcn_block_gemms.py replays
    its index math): within TOL_TF32 of fp64 torch and of the split-K SIMT kernel
    (RNNKERN_CONVT_FCN=general, RNNKERN_CONVT_PATH=simt), bitwise repeatable; a non-contiguous
    grad_output takes the SIMT kernel and agrees; a bad RNNKERN_CONVT_FCN is rejected."""
    n, cin, cout, k, s, size = case
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = torch.randn(n, cin, *size, device="cuda", dtype=torch.float64, requires_grad=True)
    w = torch.randn(cin, cout, *k, device="cuda", dtype=torch.float64) / (cout * k[0] * k[1] / (s[0] * s[1])) ** 0.5
    y = F.conv_transpose2d(x, w, None, s)
    gy = torch.randn_like(y)
    (ref,) = torch.autograd.grad(y, x, gy)
    args = (list(s), [0, 0], [0, 0], 1, [1, 1])
    gy32, w32 = gy.float(), w.float()
    got = ops.conv_transpose2d_backward_input(gy32, w32, list(x.shape), *args)
    assert got.shape == x.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert rel_err(got, ref) < TOL_TF32, rel_err(got, ref)
    assert torch.equal(got, ops.conv_transpose2d_backward_input(gy32, w32, list(x.shape), *args))
    strided = torch.empty(gy32.shape[:-1] + (gy32.shape[-1] + 4,), device="cuda")[..., 2:-2].copy_(gy32)
    assert rel_err(ops.conv_transpose2d_backward_input(strided, w32, list(x.shape), *args), ref) < TOL_TF32
    monkeypatch.setenv("RNNKERN_CONVT_FCN", "general")
    general = ops.conv_transpose2d_backward_input(gy32, w32, list(x.shape), *args)
    assert rel_err(general, ref) < TOL_TF32 and rel_err(got, general) < TOL_TF32
    monkeypatch.setenv("RNNKERN_CONVT_FCN", "fast")
    with pytest.raises(RuntimeError, match="RNNKERN_CONVT_FCN"):
        ops.conv_transpose2d_backward_input(gy32, w32, list(x.shape), *args)
    monkeypatch.delenv("RNNKERN_CONVT_FCN")
    monkeypatch.setenv("RNNKERN_CONVT_PATH", "simt")
    simt = ops.conv_transpose2d_backward_input(gy32, w32, list(x.shape), *args)
    assert rel_err(simt, ref) < TOL_TF32 and rel_err(got, simt) < TOL_TF32


@pytest.mark.cuda
@pytest.mark.parametrize("case", _FCN_CASES)
def test_cuda_fcn_block_forward(monkeypatch, case):
    """The FCN upsamplers' forward as one block GEMM on TF32 tensor cores
    (fcn_forward_block_kernel, fp32 NCHW under cudnn.allow_tf32), with and without bias and on a
    strided input: within TOL_TF32 of fp64 torch, of the engine's sub-pixel form (channels_last
    input; RNNKERN_CONVT_FCN=general) and of the SIMT kernel (RNNKERN_CONVT_PATH=simt); bitwise
    repeatable."""
    n, cin, cout, k, s, size = case
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = torch.randn(n, cin, *size, device="cuda", dtype=torch.float64)
    w = torch.randn(cin, cout, *k, device="cuda", dtype=torch.float64) / (cin * k[0] * k[1] / (s[0] * s[1])) ** 0.5
    b = torch.randn(cout, device="cuda", dtype=torch.float64)
    for bias in (b, None):
        ref = F.conv_transpose2d(x, w, bias, s)
        args = (w.float(), None if bias is None else bias.float(), list(s), [0, 0], [0, 0], 1, [1, 1])
        got = ops.conv_transpose2d_forward(x.float(), *args)
        assert got.shape == ref.shape and got.is_contiguous()
        assert rel_err(got, ref) < TOL_TF32, rel_err(got, ref)
        assert torch.equal(got, ops.conv_transpose2d_forward(x.float(), *args))
        strided = torch.empty(n, cin, size[0], size[1] + 3, device="cuda")[..., 1:-2].copy_(x)
        assert rel_err(ops.conv_transpose2d_forward(strided, *args), ref) < TOL_TF32
        cl = ops.conv_transpose2d_forward(x.float().contiguous(memory_format=torch.channels_last), *args)
        assert rel_err(cl, ref) < TOL_TF32
    monkeypatch.setenv("RNNKERN_CONVT_FCN", "general")
    assert rel_err(ops.conv_transpose2d_forward(x.float(), *args), ref) < TOL_TF32
    monkeypatch.delenv("RNNKERN_CONVT_FCN")
    monkeypatch.setenv("RNNKERN_CONVT_PATH", "simt")
    assert rel_err(ops.conv_transpose2d_forward(x.float(), *args), ref) < TOL_TF32


@pytest.mark.cuda
@pytest.mark.parametrize("case", _FCN_CASES)
def test_cuda_fcn_block_wgrad(monkeypatch, case):
    """grad_weight of the FCN upsamplers as one block GEMM on TF32 tensor cores
    (fcn_wgrad_block_kernel + fcn_wgrad_finish_kernel, fp32 under cudnn.allow_tf32, J^2 C_in <= 128:
    (40, J = 3) keeps the SIMT kernel; scripts/check_fcn_block_gemms.py replays its index math):
    within TOL_TF32 of fp64 torch and of the SIMT kernel (RNNKERN_CONVT_FCN=general), bitwise
    repeatable, on a strided input too; a non-contiguous grad_output takes the SIMT kernel and
    agrees; grad_bias alongside."""
    n, cin, cout, k, s, size = case
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = torch.randn(n, cin, *size, device="cuda", dtype=torch.float64)
    w = torch.randn(cin, cout, *k, device="cuda", dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, device="cuda", dtype=torch.float64, requires_grad=True)
    y = F.conv_transpose2d(x, w, b, s)
    gy = torch.randn_like(y)
    ref_w, ref_b = torch.autograd.grad(y, (w, b), gy)
    args = (list(s), [0, 0], [0, 0], 1, [1, 1])
    x32, gy32, shape = x.float(), gy.float(), list(w.shape)
    gw, gb = ops.conv_transpose2d_backward_weight(gy32, x32, shape, *args, True)
    assert gw.shape == w.shape and gw.dtype == torch.float32 and gw.is_contiguous()
    assert rel_err(gw, ref_w) < TOL_TF32, rel_err(gw, ref_w)
    assert rel_err(gb, ref_b) < TOL[torch.float32]
    assert torch.equal(gw, ops.conv_transpose2d_backward_weight(gy32, x32, shape, *args, False)[0])
    strided = torch.empty(n, cin, size[0], size[1] + 3, device="cuda")[..., 1:-2].copy_(x32)
    assert rel_err(ops.conv_transpose2d_backward_weight(gy32, strided, shape, *args, False)[0], ref_w) < TOL_TF32
    gy_strided = torch.empty(gy32.shape[:-1] + (gy32.shape[-1] + 4,), device="cuda")[..., 2:-2].copy_(gy32)
    assert rel_err(ops.conv_transpose2d_backward_weight(gy_strided, x32, shape, *args, False)[0], ref_w) < TOL_TF32
    monkeypatch.setenv("RNNKERN_CONVT_FCN", "general")
    general = ops.conv_transpose2d_backward_weight(gy32, x32, shape, *args, False)[0]
    assert rel_err(general, ref_w) < TOL_TF32 and rel_err(gw, general) < TOL_TF32


@pytest.mark.cuda
def test_cuda_fcn_block_forward_runs(monkeypatch):
    """The FCN-32s head at the benchmark's size (N8, 16x16 -> 544x544): 19 row tiles x 168 column
    tiles over one wave of blocks, so most blocks' runs cross a row tile (A reloaded mid-run), and
    the columns end on a partial tile at k16 s8 (C_out s^2 = 1344). Both against fp64 torch."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    for n, size, k, s in [(8, 16, 64, 32), (2, 40, 16, 8)]:
        x = torch.randn(n, 21, size, size, device="cuda", dtype=torch.float64)
        w = torch.randn(21, 21, k, k, device="cuda", dtype=torch.float64) / (21 * 4) ** 0.5
        b = torch.randn(21, device="cuda", dtype=torch.float64)
        ref = F.conv_transpose2d(x, w, b, s)
        got = ops.conv_transpose2d_forward(x.float(), w.float(), b.float(), [s, s], [0, 0], [0, 0], 1, [1, 1])
        assert rel_err(got, ref) < TOL_TF32, (n, size, k, s, rel_err(got, ref))


@pytest.mark.cuda
def test_cuda_fcn_block_misaligned_weight(monkeypatch):
    """A weight that is a view 4 bytes into a flat buffer cannot feed the block GEMMs' 16-byte
    copies: both passes take the general kernels and still agree with torch."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    x = torch.randn(2, 21, 3, 4, device="cuda")
    flat = torch.randn(21 * 21 * 64 * 64 + 1, device="cuda") / 64
    w = flat[1:].view(21, 21, 64, 64)  # (a view: dividing it would copy into an aligned tensor)
    assert w.is_contiguous() and w.data_ptr() % 16 != 0
    args = ([32, 32], [0, 0], [0, 0], 1, [1, 1])
    y = ops.conv_transpose2d_forward(x, w, None, *args)
    assert rel_err(y, F.conv_transpose2d(x.double(), w.double(), None, 32)) < TOL_TF32
    gy = torch.randn_like(y)
    gx = ops.conv_transpose2d_backward_input(gy, w, list(x.shape), *args)
    xd = x.double().requires_grad_()
    (want,) = torch.autograd.grad(F.conv_transpose2d(xd, w.double(), None, 32), xd, gy.double())
    assert rel_err(gx, want) < TOL_TF32


def test_fcn_block_gemms_replay():
    """The numpy replay of the two FCN block GEMMs (copies, fragments, split-K, finishing sum,
    float2 stores) matches torch's conv_transpose2d and its grad_input (runs without a GPU: it
    checks the index arithmetic, not the kernels)."""
    import importlib.util
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "check_fcn_block_gemms.py"
    spec = importlib.util.spec_from_file_location("check_fcn_block_gemms", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main()


def _gather_case(rng: random.Random):
    """Random geometry for the CUDA forward's gather engine: strides 1-3 (k % s != 0 included),
    dilation, output_padding, groups, ragged sizes; channel groups mostly wide enough (>= 8) for
    the tiled tensor-core kernel, sometimes narrow (its direct kernel), counts off the vector width."""
    while True:
        g = rng.choice([1, 1, 2])
        cin, cout = g * rng.choice([3, 8, 12, 16, 40]), g * rng.choice([5, 8, 9, 16, 24, 72])
        k = [rng.randint(1, 5), rng.randint(1, 5)]
        s = [rng.randint(1, 3), rng.randint(1, 3)]
        d = [rng.choice([1, 1, 2, 3]), rng.choice([1, 2])]
        p = [rng.randint(0, 2), rng.randint(0, 2)]
        op = _draw_output_padding(rng, s, d)
        size = [rng.randint(1, 12), rng.randint(1, 12)]
        if _output_nonempty(size, k, s, p, op, d):
            return dict(n=rng.randint(1, 3), cin=cin, cout=cout, g=g, k=k, s=s, d=d, p=p, op=op, size=size)


# named forward shapes: FCN-32s head (k64 s32, 21 channels, with and without its p16), FCN
# upscore k4 s2 21->21, the k4s2p1 of ANCHORS.md (narrowed), a 3x3/2 checkerboard with
# output_padding, and U-Net's 2x2/2 (one GEMM: cuBLAS on CUDA, csrc/conv_gemm.h; the kShuffle kernel
# under RNNKERN_CONVT_PATH=simt)
_NAMED = [dict(n=2, cin=21, cout=21, g=1, k=[64, 64], s=[32, 32], d=[1, 1], p=[16, 16], op=[0, 0], size=[5, 6]),
          dict(n=1, cin=21, cout=21, g=1, k=[64, 64], s=[32, 32], d=[1, 1], p=[0, 0], op=[3, 0], size=[3, 2]),
          dict(n=2, cin=21, cout=21, g=1, k=[4, 4], s=[2, 2], d=[1, 1], p=[0, 0], op=[0, 0], size=[9, 11]),
          dict(n=2, cin=64, cout=48, g=1, k=[4, 4], s=[2, 2], d=[1, 1], p=[1, 1], op=[0, 0], size=[16, 13]),
          dict(n=2, cin=32, cout=24, g=2, k=[3, 3], s=[2, 2], d=[1, 1], p=[1, 1], op=[1, 1], size=[7, 9]),
          dict(n=2, cin=32, cout=16, g=1, k=[2, 2], s=[2, 2], d=[1, 1], p=[0, 0], op=[0, 0], size=[6, 5]),
          # k = s = 1 with >= 8 channels: no shuffle at all (not the sub-pixel path, which needs s >= 2)
          dict(n=2, cin=8, cout=12, g=1, k=[1, 1], s=[1, 1], d=[1, 1], p=[0, 0], op=[0, 0], size=[5, 7]),
          # k = J * s, no padding (the FCN upsampling layers): the CUDA forward's sub-pixel convolution
          dict(n=2, cin=21, cout=21, g=1, k=[64, 64], s=[32, 32], d=[1, 1], p=[0, 0], op=[0, 0], size=[3, 4]),
          dict(n=2, cin=16, cout=12, g=2, k=[16, 24], s=[8, 8], d=[1, 1], p=[0, 0], op=[0, 0], size=[5, 3]),
          dict(n=1, cin=8, cout=10, g=1, k=[12, 4], s=[4, 4], d=[1, 1], p=[0, 0], op=[0, 0], size=[3, 1]),
          # ... except with < 8 input channels per group (the depthwise bilinear upsampler): phase path
          dict(n=1, cin=3, cout=3, g=1, k=[16, 16], s=[8, 8], d=[1, 1], p=[0, 0], op=[0, 0], size=[3, 2]),
          dict(n=1, cin=21, cout=21, g=21, k=[64, 64], s=[32, 32], d=[1, 1], p=[0, 0], op=[0, 0], size=[2, 3])]


def _fwd_args(c):
    return c["s"], c["p"], c["op"], c["g"], c["d"]


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["fp32", "tf32", "bf16", "fp16", "fp64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_gather_forward(monkeypatch, mode, layout):
    """The CUDA forward on conv.cu's engine (phase-major gather; k = J * s without padding as a
    sub-pixel convolution + shuffle) vs F.conv_transpose2d: fp32 with TF32 off (tight), tf32
    (TOL_TF32), bf16 / fp16 (at most 2x torch's own error vs fp64), fp64."""
    dtype = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16,
             "fp64": torch.float64}[mode]
    rng = random.Random(torch.initial_seed())
    cases = [_gather_case(rng) for _ in range(10)] + _NAMED
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", mode == "tf32")
    for c in cases:
        x, w, b = make(c, 2, torch.float32, "cuda", bias=rng.random() < 0.7)
        w = w / (c["cin"] // c["g"] * c["k"][0] * c["k"][1] / (c["s"][0] * c["s"][1])) ** 0.5
        ref = F.conv_transpose2d(x.double(), w.double(), None if b is None else b.double(), *_fwd_args(c))
        cast = [None if t is None else t.to(dtype) for t in (x, w, b)]
        y = RF.conv_transpose2d(_layout(cast[0], layout), cast[1], cast[2], *_fwd_args(c))
        assert y.shape == ref.shape and y.dtype == dtype, c
        # the layout rule: channels_last only where the input is channels_last and not also plain
        # contiguous (an input with H = W = 1 is both, and gives a contiguous result)
        fmt = torch.channels_last if channels_last_output(_layout(cast[0], layout)) else torch.contiguous_format
        assert y.is_contiguous(memory_format=fmt), c
        if mode in ("bf16", "fp16"):
            theirs = F.conv_transpose2d(_layout(cast[0], layout), cast[1], cast[2], *_fwd_args(c))
            tol = 2 * rel_err(theirs, ref) + 1e-4
        else:
            tol = {"fp32": TOL[torch.float32], "tf32": TOL_TF32, "fp64": TOL[torch.float64]}[mode]
        assert rel_err(y, ref) < tol, (mode, rel_err(y, ref), tol, c)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_forward_simt_fallback(strict_fp32, monkeypatch, dtype, layout):
    """RNNKERN_CONVT_PATH=simt (the kFwd SIMT kernel of conv_transpose.cu) and the default gather
    engine agree (TF32 off; bf16 both within 2x torch's error), and a bad value is rejected. _NAMED[5]
    is the U-Net's k2 s2: the kShuffle SIMT kernel against the cuBLAS route."""
    rng = random.Random(torch.initial_seed())
    for c in [_gather_case(rng) for _ in range(6)] + _NAMED[:2] + [_NAMED[5]]:
        x, w, b = make(c, 2, dtype, "cuda")
        x = _layout(x, layout)
        monkeypatch.delenv("RNNKERN_CONVT_PATH", raising=False)
        y_gather = RF.conv_transpose2d(x, w, b, *_fwd_args(c))
        monkeypatch.setenv("RNNKERN_CONVT_PATH", "simt")
        y_simt = RF.conv_transpose2d(x, w, b, *_fwd_args(c))
        monkeypatch.setenv("RNNKERN_CONVT_PATH", "gather")
        assert torch.equal(RF.conv_transpose2d(x, w, b, *_fwd_args(c)), y_gather)
        assert y_simt.shape == y_gather.shape and y_simt.stride() == y_gather.stride()
        if dtype == torch.bfloat16:
            ref = F.conv_transpose2d(x.double(), w.double(), b.double(), *_fwd_args(c))
            tol = 2 * rel_err(F.conv_transpose2d(x, w, b, *_fwd_args(c)), ref) + 1e-4
            assert rel_err(y_simt, ref) < tol and rel_err(y_gather, ref) < tol, c
        else:
            assert rel_err(y_gather, y_simt) < TOL[dtype], c
    monkeypatch.setenv("RNNKERN_CONVT_PATH", "fast")
    with pytest.raises(RuntimeError, match="RNNKERN_CONVT_PATH"):
        RF.conv_transpose2d(x, w, b, *_fwd_args(c))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_cuda_backward_engine_and_simt_agree(strict_fp32, monkeypatch, dtype, layout):
    """grad_input / grad_weight run on conv.cu's engine (the conv forward of grad_output and the
    conv grad_weight) where the stride product is <= 16 and the strided conv maps back to x's
    size, else on conv_transpose.cu's split-K SIMT kernels (the FCN-32s head, output_padding >=
    stride); RNNKERN_CONVT_PATH=simt forces the latter everywhere. Both must match fp64 torch
    (bf16: within 2x torch's own error) and give the same layouts."""
    rng = random.Random(torch.initial_seed())
    for c in [_gather_case(rng) for _ in range(6)] + _NAMED:
        x, w, b = make(c, 2, dtype, "cuda")
        x = _layout(x, layout)
        gy = _layout(torch.randn_like(F.conv_transpose2d(x, w, b, *_fwd_args(c))), layout)
        grads = {}
        for path in ("gather", "simt"):
            monkeypatch.setenv("RNNKERN_CONVT_PATH", path)
            leaves = [t.detach().requires_grad_() for t in (x, w, b)]
            y = RF.conv_transpose2d(*leaves, *_fwd_args(c))
            grads[path] = torch.autograd.grad(y, leaves, gy)
        ref_leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
        ref = torch.autograd.grad(F.conv_transpose2d(*ref_leaves, *_fwd_args(c)), ref_leaves, gy.double())
        if dtype == torch.bfloat16:
            tl = [t.detach().requires_grad_() for t in (x, w, b)]
            torch_grads = torch.autograd.grad(F.conv_transpose2d(*tl, *_fwd_args(c)), tl, gy)
        for i, r in enumerate(ref):
            tol = 2 * rel_err(torch_grads[i], r) + 1e-4 if dtype == torch.bfloat16 else TOL[dtype]
            for path in ("gather", "simt"):
                assert rel_err(grads[path][i], r) < tol, (path, i, c)
            assert grads["gather"][i].stride() == grads["simt"][i].stride(), (i, c)


class UpBlock(torch.nn.Module):
    """U-Net decoder step: 2x2/2 transposed conv, concat the skip, 3x3 conv + ReLU."""

    def __init__(self, cin, cout):
        super().__init__()
        self.up = RN.ConvTranspose2d(cin, cout, 2, stride=2)
        self.conv = torch.nn.Conv2d(2 * cout, cout, 3, padding=1)

    def forward(self, x, skip):
        return torch.relu(self.conv(torch.cat([self.up(x), skip], 1)))


def test_torch_compile_unet_up_block():
    torch._dynamo.reset()
    block = UpBlock(8, 4)
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    skip = torch.randn(2, 4, 10, 12)
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    y = compiled(x, skip)
    y_ref = block(x, skip)
    torch.testing.assert_close(y, y_ref)
    g = torch.autograd.grad(y.sum(), (x, block.up.weight, block.up.bias))
    g_ref = torch.autograd.grad(y_ref.sum(), (x, block.up.weight, block.up.bias))
    for a, b in zip(g, g_ref):
        torch.testing.assert_close(a, b)


def test_modules_drop_in():
    for torch_cls, our_cls, shape, kw in [
        (torch.nn.ConvTranspose2d, RN.ConvTranspose2d, (2, 6, 5, 4),
         dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 0), output_padding=(1, 0), groups=2, dilation=(1, 2))),
        (torch.nn.ConvTranspose1d, RN.ConvTranspose1d, (2, 4, 7), dict(kernel_size=3, stride=2, padding=1, bias=False)),
    ]:
        ref = torch_cls(shape[1], 6, **kw)
        ours = our_cls(shape[1], 6, **kw)
        assert isinstance(ours, torch_cls)
        assert repr(ours) == repr(ref)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(shape)
        torch.testing.assert_close(ours(x), ref(x))
        # output_size picks output_padding the way torch does (and rejects what torch rejects)
        default = ref(x).shape[2:]
        want = [d - op + s - 1 for d, op, s in zip(default, ours.output_padding, ours.stride)]  # op = s - 1
        torch.testing.assert_close(ours(x, output_size=want), ref(x, output_size=want))
        with pytest.raises(ValueError):
            ours(x, output_size=[s + 10 for s in default])


def test_bilinear_upsampling_weight():
    """stride f, kernel 2f, padding f/2 with the bilinear weight == bilinear interpolation inside."""
    f, c = 4, 3
    w = RN.bilinear_upsampling_weight(c, c, 2 * f)
    assert w.shape == (c, c, 2 * f, 2 * f) and w.dtype == torch.float32
    assert torch.count_nonzero(w[0, 1]) == 0
    x = torch.randn(1, c, 6, 7)
    y = RF.conv_transpose2d(x, w, None, f, f // 2)
    ref = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape
    torch.testing.assert_close(y[..., f:-f, f:-f], ref[..., f:-f, f:-f], rtol=1e-5, atol=1e-5)
    m = RN.ConvTranspose2d(c, c, 2 * f, stride=f, padding=f // 2, bias=False)
    RN.bilinear_(m.weight)
    torch.testing.assert_close(m.weight.detach(), w)



@pytest.mark.parametrize("cin,cout", [(5, 3), (2, 4)])
def test_bilinear_upsampling_weight_unequal_channels(cin, cout):
    """in != out channels: channel i upsamples into channel i for i < min(in, out); the channels
    past that get zero kernels (no IndexError for in > out)."""
    w = RN.bilinear_upsampling_weight(cin, cout, 4)
    assert w.shape == (cin, cout, 4, 4)
    square = RN.bilinear_upsampling_weight(1, 1, 4)[0, 0]
    n = min(cin, cout)
    for i in range(cin):
        for j in range(cout):
            assert torch.equal(w[i, j], square if i == j < n else torch.zeros(4, 4)), (i, j)

@pytest.mark.parametrize("fn", [RF.conv_transpose2d, F.conv_transpose2d])
def test_bad_inputs_raise(fn):
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises((RuntimeError, ValueError)):                 # output_padding >= stride and >= dilation
        fn(x, w, None, 2, 1, 2)
    with pytest.raises((RuntimeError, ValueError)):                 # channel mismatch (weight.size(0) != C_in)
        fn(torch.randn(2, 5, 5, 5), w)
    with pytest.raises((RuntimeError, ValueError)):                 # C_in not divisible by groups
        fn(x, w, None, 1, 0, 0, 3)
    with pytest.raises((RuntimeError, ValueError)):                 # wrong dims
        fn(torch.randn(2, 4, 5, 5, 1), w)
    with pytest.raises((RuntimeError, TypeError)):                  # mixed dtypes
        fn(x, w.double())
    with pytest.raises((RuntimeError, ValueError)):                 # bias of the wrong size
        fn(x, w, torch.randn(4))


def test_error_messages_name_the_argument():
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match="output_padding"):
        RF.conv_transpose2d(x, w, None, 2, 1, 2)
    with pytest.raises(ValueError, match="output_padding"):
        RF.conv_transpose1d(torch.randn(2, 4, 5), w[..., 0], None, 1, 0, 1, 1, 1)
    with pytest.raises(ValueError, match="weight.size\\(0\\)"):
        RF.conv_transpose2d(torch.randn(2, 5, 5, 5), w)
    with pytest.raises(ValueError, match="groups"):
        RF.conv_transpose2d(x, w, None, 1, 0, 0, 3)
    with pytest.raises(ValueError, match="input must be 3-D or 4-D"):
        RF.conv_transpose2d(torch.randn(4, 5), w)
    with pytest.raises(ValueError, match="weight must be 3-D"):
        RF.conv_transpose1d(torch.randn(2, 4, 5), w)
    with pytest.raises(TypeError, match="weight has dtype"):
        RF.conv_transpose2d(x, w.double())
    with pytest.raises(TypeError, match="bias has dtype"):
        RF.conv_transpose2d(x, w, torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="bias must have 3"):
        RF.conv_transpose2d(x, w, torch.randn(4))
    with pytest.raises(ValueError, match="stride must be >= 1"):
        RF.conv_transpose2d(x, w, None, 0)
    with pytest.raises(ValueError, match="too small"):
        RF.conv_transpose2d(torch.randn(1, 4, 1, 1), w, None, 1, 2)
    with pytest.raises(RuntimeError, match="meta"):
        RF.conv_transpose2d(x, w.to("meta"))
    with pytest.raises(ValueError, match="output size"):        # out of the reachable range (module)
        RN.ConvTranspose2d(4, 3, 3, stride=2)(x, output_size=[20, 20])
    with pytest.raises(TypeError, match="floating"):
        RF.conv_transpose2d(x.long(), w)


@pytest.mark.parametrize("blocking", ["default", "small"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_wide_channels_direct_path(monkeypatch, layout, blocking):
    """>= 16 output channels per group in fp32: the CPU's phase-decomposed direct forward and the
    grad_input run on the conv engine, over random stride / dilation / output_padding / groups,
    partial channel vectors and rows wider than one pixel block; "small": reduction chunks and row
    bands forced small (RNNKERN_CONV_CHUNK_BYTES / _BAND_PIXELS: many chunks, ragged bands)."""
    rng = random.Random(torch.initial_seed())
    monkeypatch.setenv("RNNKERN_CONV_CPU_FORWARD", "direct")  # small inputs would take the GEMM engine
    for _ in range(6):
        if blocking == "small":
            monkeypatch.setenv("RNNKERN_CONV_CHUNK_BYTES", str(rng.choice([1, 5000])))
            monkeypatch.setenv("RNNKERN_CONV_BAND_PIXELS", str(rng.choice([1, 30])))
        g = rng.choice([1, 1, 2])
        c = dict(n=rng.randint(1, 2), cin=g * rng.randint(1, 9), cout=g * rng.choice([16, 21, 40]), g=g,
                 k=[rng.randint(1, 5), rng.randint(1, 5)], s=[rng.randint(1, 3), rng.randint(1, 4)],
                 d=[rng.choice([1, 2]), rng.choice([1, 3])], p=[rng.randint(0, 2), rng.randint(0, 2)],
                 size=[rng.randint(1, 7), rng.randint(20, 40)])
        c["op"] = _draw_output_padding(rng, c["s"], c["d"])
        if not _output_nonempty(c["size"], c["k"], c["s"], c["p"], c["op"], c["d"]):
            continue
        x, w, b = make(c, 2, torch.float32, "cpu", bias=rng.random() < 0.5)
        y, y_ref, grads, grads_ref = run_both(RF.conv_transpose2d, F.conv_transpose2d, _layout(x, layout), w, b, c)
        assert y.shape == y_ref.shape and rel_err(y, y_ref) < TOL[torch.float32], c
        for gr, rr in zip(grads, grads_ref):
            assert rel_err(gr, rr) < TOL[torch.float32], c


@pytest.mark.parametrize("layout", LAYOUTS)
def test_wide_input_channels_direct_wgrad(layout):
    """fp32 grad_weight on the conv engine's direct wgrad kernel (the strided convolution of
    grad_output that produces x) with >= 16 input channels per group (the vectorised side; the
    test above covers wide output channels), ragged counts, stride / dilation / output_padding /
    groups, against fp64 torch; and the same bits with 1 and 2 threads."""
    rng = random.Random(torch.initial_seed())
    threads = torch.get_num_threads()
    try:
        for _ in range(6):
            g = rng.choice([1, 1, 2])
            c = dict(n=rng.randint(1, 3), cin=g * rng.choice([16, 17, 40, 64]), cout=g * rng.choice([3, 16, 21]), g=g,
                     k=[rng.randint(1, 5), rng.randint(1, 5)], s=[rng.randint(1, 3), rng.randint(1, 4)],
                     d=[rng.choice([1, 2]), rng.choice([1, 3])], p=[rng.randint(0, 2), rng.randint(0, 2)],
                     size=[rng.randint(1, 9), rng.randint(10, 40)])
            c["op"] = _draw_output_padding(rng, c["s"], c["d"])
            if not _output_nonempty(c["size"], c["k"], c["s"], c["p"], c["op"], c["d"]):
                continue
            x, w, _ = make(c, 2, torch.float64, "cpu", bias=False)
            y = F.conv_transpose2d(x, w, None, c["s"], c["p"], c["op"], c["g"], c["d"])
            gy = torch.randn_like(y)
            ref = torch.ops.aten.convolution_backward(gy, x, w, None, c["s"], c["p"], c["d"], True, c["op"], c["g"],
                                                      [False, True, False])[1]
            outs = []
            for t in (1, 2):
                torch.set_num_threads(t)
                outs.append(ops.conv_transpose2d_backward_weight(_layout(gy.float(), layout), _layout(x.float(), layout),
                                                                 list(w.shape), c["s"], c["p"], c["op"], c["g"], c["d"],
                                                                 False)[0])
            assert rel_err(outs[0], ref) < TOL[torch.float32], c
            assert torch.equal(outs[0], outs[1]), c
    finally:
        torch.set_num_threads(threads)


def test_autocast_cpu_bf16():
    """Under CPU autocast torch's transposed convolution runs in bf16 (fp32 weights included); so
    does ours, so a bf16 activation from a torch Conv2d feeds it (the U-Net decoder pattern)."""
    torch.manual_seed(0)
    conv, up = torch.nn.Conv2d(4, 6, 3), RN.ConvTranspose2d(6, 4, 2, 2)
    ref = torch.nn.ConvTranspose2d(6, 4, 2, 2)
    ref.load_state_dict(up.state_dict())
    x = torch.randn(2, 4, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, y_ref = up(conv(x)), ref(conv(x))
        y1 = RF.conv_transpose1d(torch.randn(1, 4, 5), torch.randn(4, 2, 3))
    assert y.dtype == y_ref.dtype == y1.dtype == torch.bfloat16
    assert rel_err(y, y_ref) < 2e-2


@pytest.mark.parametrize("engine", ["", "direct", "gemm"], ids=["by_size", "direct", "gemm"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("k,s,cin", [(2, 2, 256), (2, 2, 520), (4, 2, 128), (4, 2, 260), (3, 2, 600)])
def test_cpu_wide_reductions(monkeypatch, layout, k, s, cin, engine):
    """fp32 transposed convolutions with wide reductions (a phase's C_in x its taps up to 2400;
    several reduction chunks from 520 channels) on the CPU: by size (a 5x6 input is below the
    direct kernels' pixel count), each engine forced (RNNKERN_CONV_CPU_FORWARD), with all
    gradients, against fp64 torch."""
    monkeypatch.setenv("RNNKERN_CONV_CPU_FORWARD", engine)
    c = dict(n=1, cin=cin, cout=48, g=1, k=[k, k], s=[s, s], d=[1, 1], p=[k // 2 - 1 if k > 2 else 0] * 2,
             op=[0, 0], size=[5, 6])
    x, w, b = make(c, 2, torch.float32, "cpu", bias=True)
    y, y_ref, grads, grads_ref = run_both(RF.conv_transpose2d, F.conv_transpose2d, _layout(x, layout), w, b, c)
    assert y.shape == y_ref.shape and rel_err(y, y_ref) < TOL[torch.float32], c
    for gr, rr in zip(grads, grads_ref):
        assert rel_err(gr, rr) < TOL[torch.float32], c


@pytest.mark.parametrize("k,size,engine", [(4, (1, 8, 16), "direct"), (4, (1, 8, 8), "gemm"), (2, (2, 8, 8), "direct"),
                                           (2, (1, 4, 4), "gemm")])
def test_cpu_forward_engine_choice(monkeypatch, capfd, k, size, engine):
    # which engine a size gets (RNNKERN_DEBUG=1 logs it: the GEMM engine below 128 input pixels a
    # call), so a threshold that stops applying shows up
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    capfd.readouterr()
    n, h, w = size
    RF.conv_transpose2d(torch.randn(n, 64, h, w), torch.randn(64, 32, k, k), stride=2)
    assert f"conv_transpose2d_forward (cpu): {engine} engine" in capfd.readouterr().err
