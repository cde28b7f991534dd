"""Dilated convolution (rnnkern.functional.conv1d/conv2d, rnnkern.nn.Conv1d/Conv2d) against
torch's F.conv1d/F.conv2d in fp64: forward, grad-input, grad-weight, grad-bias."""
import math
import pathlib
import random
import re

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

from rnnkern import functional as RF
from rnnkern import nn as rnn
from tests.utils import CPU_HAS_AVX512, DEVICES, TOL, TOL_TF32, rel_err

# torch's own 'same' with an even kernel warns that it pads a copy (the reference side only)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

FWD = torch.ops.rnnkern.conv2d_forward.default
DGRAD = torch.ops.rnnkern.conv2d_backward_input.default
WGRAD = torch.ops.rnnkern.conv2d_backward_weight.default


def _rng():
    # conftest seeds torch per test node; derive Python's RNG from it so cases are reproducible
    return random.Random(torch.initial_seed())


def _torch_conv(nd):
    return TF.conv1d if nd == 1 else TF.conv2d


def _rk_conv(nd):
    return RF.conv1d if nd == 1 else RF.conv2d


def _rand_case(rng, nd, *, max_dil=18):
    """Random (shapes, kwargs) valid for F.conv{nd}d: odd sizes, dilation up to max_dil,
    groups / depthwise, int or 'same' / 'valid' padding, strides."""
    kind = rng.choice(["dense", "dense", "grouped", "depthwise"])
    if kind == "dense":
        groups, cin, cout = 1, rng.randint(1, 7), rng.randint(1, 7)
    elif kind == "grouped":
        groups = rng.randint(2, 3)
        cin, cout = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    else:
        groups = cin = rng.randint(1, 6)
        cout = cin * rng.randint(1, 2)
    kernel = [rng.randint(1, 4) for _ in range(nd)]
    dil = [rng.choice([1, 1, 2, 3, rng.randint(4, max_dil)]) for _ in range(nd)]
    pmode = rng.choice(["int", "int", "same", "valid"])
    stride = [1] * nd if pmode == "same" else [rng.choice([1, 1, 2, 3]) for _ in range(nd)]
    if pmode == "int":
        padding = [rng.randint(0, dil[i] * (kernel[i] - 1) // 2 + 1) for i in range(nd)]
        pad_total = [2 * p for p in padding]
    elif pmode == "same":
        padding, pad_total = "same", [0] * nd
    else:
        padding, pad_total = "valid", [0] * nd
    size = []
    for i in range(nd):
        eff = dil[i] * (kernel[i] - 1) + 1
        lo = max(1, eff - pad_total[i]) if pmode != "same" else 1
        size.append(lo + rng.randint(0, 9))
    n = rng.choice([1, 2, 3])
    return (n, cin, *size), (cout, cin // groups, *kernel), dict(stride=stride, padding=padding, dilation=dil,
                                                                  groups=groups)


def _run(nd, x, w, b, kw, gy, ours):
    """Forward + all three gradients through autograd; returns (y, gx, gw, gb)."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    y = (_rk_conv(nd) if ours else _torch_conv(nd))(x, w, b, **kw)
    y.backward(gy)
    return y, x.grad, w.grad, None if b is None else b.grad


def _compare(nd, xs, ws, kw, device, dtype, *, bias=True, layout=torch.contiguous_format, tol=None):
    x = torch.randn(xs, dtype=torch.float64)
    w = torch.randn(ws, dtype=torch.float64)
    b = torch.randn(ws[0], dtype=torch.float64) if bias else None
    y_ref = _torch_conv(nd)(x, w, b, **kw)
    gy = torch.randn_like(y_ref)
    ref = _run(nd, x, w, b, kw, gy, ours=False)
    cast = dict(device=device, dtype=dtype)
    xd = x.to(**cast)
    if layout == torch.channels_last:
        xd = xd.contiguous(memory_format=torch.channels_last)
    got = _run(nd, xd, w.to(**cast), None if b is None else b.to(**cast), kw, gy.to(**cast), ours=True)
    tol = tol if tol is not None else TOL[dtype]
    for name, o, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref):
        if r is None:
            assert o is None
            continue
        assert o.shape == r.shape, (name, o.shape, r.shape)
        assert o.dtype == dtype and o.device.type == device
        assert rel_err(o, r) < tol, (name, rel_err(o, r), xs, ws, kw)
    return got


# ----------------------------------------------------------------------------------------------
# values and gradients vs torch

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("nd", [1, 2])
def test_random_vs_torch(strict_fp32, device, nd):
    rng = _rng()
    for _ in range(40):
        xs, ws, kw = _rand_case(rng, nd)
        _compare(nd, xs, ws, kw, device, torch.float32, bias=rng.random() < 0.7)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("d", [1, 2, 6, 12, 18])
def test_dilated_same_3x3(device, d):
    """The DeepLab/ASPP shape family: 3x3, 'same', dilation up to 18 on maps smaller than the
    dilation (most taps read padding)."""
    for hw in [(13, 17), (32, 32)]:
        _compare(2, (2, 5, *hw), (6, 5, 3, 3), dict(padding="same", dilation=d), device, torch.float64)
        _compare(2, (2, 5, *hw), (6, 5, 3, 3), dict(padding=d, dilation=d), device, torch.float64,
                 layout=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_same_even_kernel_is_asymmetric(device):
    # total padding d*(k-1) odd: torch pads one extra at the bottom/right
    for ks, d in [((2, 4), (1, 3)), ((4, 2), (3, 5)), ((2, 2), (1, 1))]:
        _compare(2, (2, 3, 11, 9), (4, 3, *ks), dict(padding="same", dilation=d), device, torch.float64)
    _compare(1, (2, 3, 10), (4, 3, 4), dict(padding="same", dilation=3), device, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_groups_and_depthwise(device):
    _compare(2, (2, 8, 9, 10), (8, 1, 3, 3), dict(padding=2, dilation=2, groups=8), device, torch.float64)
    _compare(2, (2, 8, 9, 10), (16, 1, 3, 3), dict(padding=1, groups=8), device, torch.float64,
             layout=torch.channels_last)
    _compare(2, (3, 6, 7, 8), (9, 2, 3, 2), dict(stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=3),
             device, torch.float64)
    _compare(1, (2, 4, 15), (4, 1, 5), dict(padding="same", dilation=3, groups=4), device, torch.float64)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_depthwise_fp32(strict_fp32, layout):
    """fp32 depthwise convolutions (on an AVX-512 CPU the channel-vector kernels in channels_last
    and the NCHW weight gradient's vector dot products; the strided NCHW grad_input's plane loop):
    channel counts across vector tails and blocks, strides, dilation, 3x3 and other kernels, a
    channel multiplier; forward and all gradients vs torch in fp64."""
    # (torch's fp64 reference runs group by group: the channel counts are kept small where they can be)
    for c, k, s, d, p, hw, mult in [(17, (3, 3), 1, 1, 1, (9, 11), 1), (33, (3, 3), 2, 1, 1, (12, 13), 1),
                                    (66, (3, 3), 1, 2, 2, (8, 9), 1), (40, (5, 3), (2, 1), 1, (2, 1), (9, 7), 1),
                                    (16, (3, 3), 3, 1, 0, (10, 11), 1), (20, (1, 1), 1, 1, 0, (5, 6), 1),
                                    (12, (3, 3), 1, 1, 1, (7, 7), 2), (5, (3, 3), (1, 2), (2, 1), 2, (6, 13), 1)]:
        _compare(2, (1, c, *hw), (c * mult, 1, *k), dict(stride=s, padding=p, dilation=d, groups=c), "cpu",
                 torch.float32, layout=layout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_depthwise_fp32_bitwise_over_thread_counts(layout):
    """Large enough that the weight gradient splits into parts: every result the same bits on one
    thread and on two."""
    x = torch.randn(4, 70, 40, 36).contiguous(memory_format=layout)
    w, gy = torch.randn(70, 1, 3, 3), torch.randn(4, 70, 20, 18).contiguous(memory_format=layout)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
            y = RF.conv2d(xg, wg, None, stride=2, padding=1, groups=70)
            results.append((y, *torch.autograd.grad(y, (xg, wg), gy)))
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_pointwise_and_strided(device):
    _compare(2, (2, 7, 5, 6), (3, 7, 1, 1), {}, device, torch.float64)
    _compare(2, (2, 7, 5, 6), (3, 7, 1, 1), {}, device, torch.float64, layout=torch.channels_last)
    _compare(2, (2, 3, 11, 12), (4, 3, 3, 3), dict(stride=3, padding=1), device, torch.float64)
    _compare(2, (2, 3, 11, 12), (4, 3, 1, 1), dict(stride=2), device, torch.float64, layout=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transposed", [False, True])
def test_layouts_follow_torch(device, transposed):
    """The output's and grad_input's memory formats against torch's own: a channels_last slice
    (not dense) gives a channels_last output; grad_input takes the input's layout whatever
    grad_output's (torch makes grad_output contiguous in the input's format), including a
    grad_output of 1 x 1 images (contiguous in both layouts). Values against torch in fp64."""
    cl = torch.channels_last
    fn, tfn = (RF.conv_transpose2d, TF.conv_transpose2d) if transposed else (RF.conv2d, TF.conv2d)
    kw = dict(stride=2) if transposed else dict(padding=1)

    def formats(t):
        return t.is_contiguous(), t.is_contiguous(memory_format=cl)

    cases = [(torch.randn(2, 8, 10, 12, dtype=torch.float64).contiguous(memory_format=cl)[..., 1:11], "nchw"),
             (torch.randn(2, 8, 10, 12, dtype=torch.float64).contiguous(memory_format=cl), "nchw"),
             (torch.randn(2, 8, 10, 12, dtype=torch.float64), "cl"),
             (torch.randn(2, 8, 1, 1, dtype=torch.float64).contiguous(memory_format=cl), "nchw")]
    w = torch.randn((8, 6, 3, 3) if transposed else (6, 8, 3, 3), dtype=torch.float64, device=device)
    for x, gy_layout in cases:
        x = x.to(device)
        results = []
        for f in (fn, tfn):
            xi = x.detach().requires_grad_()
            y = f(xi, w, **kw)
            gy = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1)).to(device)
            gy = gy.contiguous(memory_format=cl) if gy_layout == "cl" else gy.contiguous()
            (gx,) = torch.autograd.grad(y, xi, gy)
            results.append((y, gx))
        (y, gx), (ty, tgx) = results
        assert formats(y) == formats(ty), (x.shape, x.stride(), y.stride(), ty.stride())
        assert formats(gx) == formats(tgx), (x.shape, x.stride(), gy_layout, gx.stride(), tgx.stride())
        torch.testing.assert_close(y, ty)
        torch.testing.assert_close(gx, tgx)


@pytest.mark.parametrize("transposed", [False, True])
def test_batched_grads_with_a_channels_last_input(transposed):
    """autograd.grad(is_grads_batched=True) (the legacy vmap, which cannot answer a channels_last
    query) through a convolution of a channels_last input, against torch."""
    fn, tfn = (RF.conv_transpose2d, TF.conv_transpose2d) if transposed else (RF.conv2d, TF.conv2d)
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn((8, 4, 3, 3) if transposed else (4, 8, 3, 3), dtype=torch.float64)
    results = []
    for f in (fn, tfn):
        xi = x.clone().requires_grad_()
        y = f(xi, w, padding=1)
        gys = torch.randn((3, *y.shape), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        (gx,) = torch.autograd.grad(y, xi, gys, is_grads_batched=True)
        results.append(gx)
    assert results[0].shape == (3, *x.shape)
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_half_types(dtype, layout):
    """bf16/fp16: error vs the fp64 reference at most 2x torch's own same-dtype op error."""
    for xs, ws, kw in [((2, 32, 20, 21), (48, 32, 3, 3), dict(padding="same", dilation=6)),
                       ((2, 64, 16, 16), (64, 64, 3, 3), dict(padding=12, dilation=12)),
                       ((3, 12, 13, 9), (12, 4, 3, 3), dict(padding=1, groups=3, stride=2)),
                       ((2, 16, 9, 9), (16, 1, 3, 3), dict(padding=2, dilation=2, groups=16))]:
        x, w, b = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64), torch.randn(
            ws[0], dtype=torch.float64)
        gy = torch.randn_like(TF.conv2d(x, w, b, **kw))
        ref = _run(2, x, w, b, kw, gy, ours=False)
        cast = dict(device="cuda", dtype=dtype)
        xd = x.to(**cast).contiguous(memory_format=layout)
        got = _run(2, xd, w.to(**cast), b.to(**cast), kw, gy.to(**cast).contiguous(memory_format=layout), True)
        theirs = _run(2, xd, w.to(**cast), b.to(**cast), kw, gy.to(**cast).contiguous(memory_format=layout), False)
        for name, o, t, r in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, theirs, ref):
            assert o.dtype == dtype
            assert rel_err(o, r) <= 2 * rel_err(t, r) + 1e-3, (name, rel_err(o, r), rel_err(t, r), kw)
        if layout == torch.channels_last:
            assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.cuda
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_tf32(layout):
    assert torch.backends.cudnn.allow_tf32
    for xs, ws, kw in [((2, 32, 20, 21), (48, 32, 3, 3), dict(padding="same", dilation=6)),
                       ((2, 40, 16, 16), (24, 40, 3, 3), dict(padding=18, dilation=18))]:
        _compare(2, xs, ws, kw, "cuda", torch.float32, layout=layout, tol=TOL_TF32)


def _cuda_vs_fp64(xs, ws, kw, dtype, layout):
    """(y, gx, gw, gb) on CUDA in dtype, the fp64 CPU reference, and per-result tolerances: TOL for
    fp64 and true fp32, TOL_TF32 for fp32 under cudnn.allow_tf32, 2x torch's own same-dtype error
    (+1e-3) for bf16 / fp16."""
    x, w, b = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64), torch.randn(
        ws[0], dtype=torch.float64)
    gy = torch.randn_like(TF.conv2d(x, w, b, **kw))
    ref = _run(2, x, w, b, kw, gy, ours=False)
    cast = dict(device="cuda", dtype=dtype)
    xd, gyd = x.to(**cast).contiguous(memory_format=layout), gy.to(**cast).contiguous(memory_format=layout)
    got = _run(2, xd, w.to(**cast), b.to(**cast), kw, gyd, True)
    if dtype in (torch.bfloat16, torch.float16):
        theirs = _run(2, xd, w.to(**cast), b.to(**cast), kw, gyd, False)
        return got, ref, [2 * rel_err(t, r) + 1e-3 for t, r in zip(theirs, ref)]
    tf32 = dtype == torch.float32 and torch.backends.cudnn.allow_tf32
    return got, ref, [TOL_TF32 if tf32 else TOL[dtype]] * 4


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_random_gemm_path(strict_fp32, dtype, layout):
    """Random geometry with channel groups wide enough (>= 8) for the tiled implicit-GEMM kernels
    (narrower groups take the direct kernels, covered by test_random_vs_torch); channel counts
    both multiples of the 16-byte vector width and not."""
    rng = _rng()
    for _ in range(12):
        groups = rng.choice([1, 1, 2])
        cin, cout = groups * rng.choice([8, 12, 16, 24, 40]), groups * rng.choice([8, 9, 16, 32, 72])
        k = [rng.randint(1, 3), rng.randint(1, 3)]
        dil = [rng.choice([1, 2, 6, 18]), rng.choice([1, 3, 12])]
        stride = [1, 1] if rng.random() < 0.6 else [rng.randint(1, 3), rng.randint(1, 3)]
        pad = [rng.randint(0, dil[i] * (k[i] - 1)) for i in range(2)]
        hw = [max(1, dil[i] * (k[i] - 1) + 1 - 2 * pad[i]) + rng.randint(0, 20) for i in range(2)]
        xs, ws = (rng.randint(1, 3), cin, *hw), (cout, cin // groups, *k)
        kw = dict(stride=stride, padding=pad, dilation=dil, groups=groups)
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, layout)
        for name, o, r, tol in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref, tols):
            assert rel_err(o, r) < tol, (name, rel_err(o, r), tol, xs, ws, kw)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_strided_grad_input_phases(strict_fp32, dtype, layout):
    """Strided grad_input on the tiled kernel's phase-major pixel order (only each stride phase's
    own taps are visited): k < s (phases no tap reaches, which must come out 0), k % s != 0, stride
    and dilation sharing a factor, groups, ragged sizes with input rows no window reads. fp32 with
    TF32 off against TOL; bf16 at most 2x torch's own error."""
    cases = [((2, 16, 11, 13), (24, 16, 1, 1), dict(stride=2)),
             ((2, 24, 17, 10), (16, 24, 3, 3), dict(stride=3, padding=1)),
             ((1, 16, 15, 14), (32, 16, 3, 2), dict(stride=[2, 3], dilation=[2, 3], padding=[2, 0])),
             ((2, 40, 9, 12), (40, 20, 4, 4), dict(stride=2, padding=1, groups=2)),
             ((1, 8, 70, 66), (8, 8, 5, 5), dict(stride=3, dilation=2)),
             ((2, 12, 21, 20), (9, 12, 4, 3), dict(stride=[3, 2], dilation=[3, 1], padding=[1, 2]))]
    for xs, ws, kw in cases:
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, layout)
        assert rel_err(got[1], ref[1]) < tols[1], (rel_err(got[1], ref[1]), tols[1], xs, ws, kw)
        if ws[2:] == (1, 1) and kw["stride"] == 2:  # odd rows / columns: no tap reaches them
            assert torch.all(got[1][:, :, 1::2] == 0) and torch.all(got[1][:, :, :, 1::2] == 0)


@pytest.mark.cuda
def test_cuda_large_tile_shapes(strict_fp32):
    """Shapes that span several tiles in every GEMM dimension (and the split-K wgrad), and the
    forward's two-dimensional pixel tiles at large dilation."""
    for layout in (torch.contiguous_format, torch.channels_last):
        _compare(2, (3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6), "cuda", torch.float32,
                 layout=layout)
        _compare(2, (2, 130, 33, 35), (66, 130, 3, 3), dict(padding="same", dilation=18), "cuda",
                 torch.float32, layout=layout)
        # 8 x 16 pixel tiles (padding >= 16 columns): an exact 32x32 map and a ragged 19x35 output
        _compare(2, (2, 16, 32, 32), (24, 16, 3, 3), dict(padding="same", dilation=18), "cuda",
                 torch.float32, layout=layout)
        _compare(2, (1, 8, 19, 70), (9, 8, 3, 3), dict(padding=20, dilation=20, stride=(1, 2)), "cuda",
                 torch.float32, layout=layout)


def _launched_kernels(fn) -> list[str]:
    """The names of the CUDA kernels fn launches, without spaces, each once."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.key.replace(" ", "") for e in prof.key_averages()]


def _wgmma_runs() -> bool:
    """RNNKERN_CONV_MMA=wgmma takes effect: an sm_90 GPU and an sm_90a build (setup.py)."""
    from rnnkern import _build_info
    return torch.cuda.get_device_capability() == (9, 0) and "9.0a" in (_build_info.CUDA_ARCHS or "").split(";")


@pytest.mark.cuda
@pytest.mark.parametrize("form", ["mma", "mma-pipelined", "wgmma-pipelined", "wgmma-n64-pipelined",
                                  "mma-taps9-pipelined", "wgmma-taps1-pipelined"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cuda_tensor_core_forms(monkeypatch, form, dtype, layout):
    """Every form of the tensor-core tiles: mma.sync + ldmatrix fed by the cp.async pipeline (the
    default's grad_weight; fp32 in any layout, 16-bit channels_last with 16-byte channel runs, the
    rest as without it), the same without it (RNNKERN_CONV_PIPELINE=0) and Hopper's wgmma
    (RNNKERN_CONV_MMA=wgmma, on the ring: forward / grad_input, and grad_weight for fp32 NCHW and
    16-bit channels_last; tiles of 128 columns forced even where the channels are fewer, or 64
    (-n64); skipped without an sm_90 GPU and an sm_90a build), in tf32
    (torch's default cudnn.allow_tf32) and 16-bit, NCHW and channels_last. Forward / grad_input /
    grad_weight between them stage every shared-tile layout the fragment loads handle (A as
    [m][k] or [k][m], B as [k][n] or [n][k]). Shapes span several tiles in every GEMM dimension,
    with ragged edges, a large dilation (skipped taps), a strided grad_input (stride phases) and
    channel counts that break the 16-byte runs (element-wise copies). The ring's k order in tap
    groups (RNNKERN_CONV_TAP_GROUP; 9 on wgmma, 1 elsewhere unless -tapsN says): a 5 x 3 kernel's
    15 taps make a group of 9 and one of 6. 16-bit NCHW runs on its own NCHW kernels here
    (RNNKERN_CONV_NCHW=native; by default it goes through channels_last copies)."""
    assert torch.backends.cudnn.allow_tf32
    if form.startswith("wgmma") and not _wgmma_runs():
        pytest.skip("wgmma needs an sm_90 GPU and an sm_90a build (elsewhere the rows would re-run mma.sync)")
    monkeypatch.setenv("RNNKERN_CONV_MMA", form.split("-")[0])
    monkeypatch.setenv("RNNKERN_CONV_PIPELINE", "1" if form.endswith("-pipelined") else "0")
    monkeypatch.setenv("RNNKERN_CONV_WGMMA_N", "64" if "-n64" in form else "128")
    monkeypatch.setenv("RNNKERN_CONV_NCHW", "native")
    if "-taps" in form:
        monkeypatch.setenv("RNNKERN_CONV_TAP_GROUP", form.split("-taps")[1].split("-")[0])
    else:
        monkeypatch.delenv("RNNKERN_CONV_TAP_GROUP", raising=False)
    cases = [((2, 16, 14, 15), (24, 16, 5, 3), dict(padding=(2, 2), dilation=(1, 2))),
             ((3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6)),
             ((2, 40, 32, 32), (24, 40, 3, 3), dict(padding="same", dilation=18)),
             ((2, 24, 17, 10), (16, 24, 3, 3), dict(stride=3, padding=1)),
             ((2, 18, 15, 13), (20, 18, 3, 3), dict(padding=2, dilation=2)),
             ((1, 16, 12, 12), (18, 16, 3, 3), dict(padding=1))]
    for xs, ws, kw in cases:
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, layout)
        for name, o, r, tol in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref, tols):
            assert rel_err(o, r) < tol, (form, name, rel_err(o, r), tol, xs, ws, kw)


@pytest.mark.cuda
@pytest.mark.parametrize("form", ["mma", "wgmma"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_nchw_via_channels_last(monkeypatch, form, dtype):
    """RNNKERN_CONV_NCHW=transpose (16-bit's default): NCHW operands run on the channels_last kernels through
    channels_last copies (forward, grad_input, grad_weight, and the transposed convolution's gather
    forward) where the tiles run on tensor cores (a depthwise case stays on its direct kernels);
    results as the NCHW kernels' tolerances, returned NCHW, also for a tensor that is contiguous
    in both layouts."""
    assert torch.backends.cudnn.allow_tf32
    if form == "wgmma" and not _wgmma_runs():
        pytest.skip("wgmma needs an sm_90 GPU and an sm_90a build")
    monkeypatch.setenv("RNNKERN_CONV_NCHW", "transpose")
    monkeypatch.setenv("RNNKERN_CONV_MMA", form)
    # the channels_last instances are the ones that run (template argument kCL after the path)
    x = torch.randn(2, 16, 12, 12, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(24, 16, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
    names = _launched_kernels(lambda: RF.conv2d(x, w, None, 1, 2, 2).sum().backward())
    layouts = [re.search(r"(?:gather_conv_kernel|wgrad_kernel)<[^,]+,\(rnnkern::\(anonymousnamespace\)::Path\)\d,(\w+),", n)
               for n in names]
    assert sorted(m.group(1) for m in layouts if m) == ["true"] * 3, names  # forward, grad_input, grad_weight
    for xs, ws, kw in [((3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6)),
                       ((2, 24, 17, 10), (16, 24, 3, 3), dict(stride=3, padding=1)),
                       ((2, 16, 9, 9), (16, 1, 3, 3), dict(padding=2, dilation=2, groups=16)),
                       ((2, 16, 1, 1), (24, 16, 3, 3), dict(padding=1))]:  # both NCHW- and CL-contiguous
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, torch.contiguous_format)
        for name, o, r, tol in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref, tols):
            assert rel_err(o, r) < tol, (form, name, rel_err(o, r), tol, xs, ws, kw)
        assert got[0].is_contiguous() and got[1].is_contiguous()
    # the transposed convolution's forward on the engine's gather (k not divisible by s)
    x, w = torch.randn(2, 40, 9, 11, dtype=torch.float64), torch.randn(40, 24, 3, 3, dtype=torch.float64)
    ref = TF.conv_transpose2d(x, w, stride=2, padding=1)
    cast = dict(device="cuda", dtype=dtype)
    y = RF.conv_transpose2d(x.to(**cast), w.to(**cast), stride=2, padding=1)
    theirs = TF.conv_transpose2d(x.to(**cast), w.to(**cast), stride=2, padding=1)
    tol = TOL_TF32 if dtype == torch.float32 else 2 * rel_err(theirs, ref) + 1e-3
    assert y.is_contiguous() and rel_err(y, ref) < tol, (rel_err(y, ref), tol)


@pytest.mark.cuda
def test_cuda_nchw_env_is_checked(monkeypatch):
    assert torch.backends.cudnn.allow_tf32  # (read where the tiles run on tensor cores)
    monkeypatch.setenv("RNNKERN_CONV_NCHW", "cl")
    x, w = torch.randn(1, 8, 6, 6, device="cuda"), torch.randn(8, 8, 3, 3, device="cuda")
    with pytest.raises(RuntimeError, match="RNNKERN_CONV_NCHW must be 'native' or 'transpose'"):
        RF.conv2d(x, w)


@pytest.mark.cuda
@pytest.mark.untried  # (RNNKERN_CONV_LAYOUT_COPY=kernel has not run on a GPU)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_layout_copy_kernel(monkeypatch, dtype):
    """RNNKERN_CONV_LAYOUT_COPY=kernel (csrc/cuda/layout_copy.cuh): the NCHW operands that run on the
    channels_last kernels (RNNKERN_CONV_NCHW=transpose) are copied by the tiled transpose kernel,
    both ways, instead of ATen's copy. The convolution kernels are bitwise repeatable, so every
    result must equal ATen's copies' bit for bit: forward, grad_input, grad_weight and the
    transposed convolution's forward, over channel and pixel counts that are not multiples of the
    32 x 32 tile, images of one pixel or one row, and a tensor spanning many tiles. Each pass
    copies its two NCHW operands (forward: x in, y out; grad_input: grad_y in, grad_x out;
    grad_weight: x and grad_y in), six launches in all. A non-contiguous input keeps ATen's copy."""
    assert torch.backends.cudnn.allow_tf32
    monkeypatch.setenv("RNNKERN_CONV_NCHW", "transpose")
    monkeypatch.delenv("RNNKERN_CONV_MMA", raising=False)

    def run(xs, ws, kw, mode, *, transposed=False, view=None):
        monkeypatch.setenv("RNNKERN_CONV_LAYOUT_COPY", mode)
        g = torch.Generator().manual_seed(sum(xs) + sum(ws))
        x = torch.randn(xs, generator=g).to("cuda", dtype)
        w = torch.randn(ws, generator=g).to("cuda", dtype)
        if view is not None:
            x = view(x)
        x.requires_grad_(True)
        w.requires_grad_(True)
        fn = RF.conv_transpose2d if transposed else RF.conv2d
        y = fn(x, w, **kw)
        gy = torch.randn(y.shape, generator=g).to("cuda", dtype)
        gx, gw = torch.autograd.grad(y, (x, w), gy)
        assert y.is_contiguous() and gx.is_contiguous()
        return y, gx, gw

    cases = [((2, 40, 9, 11), (24, 40, 3, 3), dict(padding=1), {}),
             ((3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6), {}),  # many tiles, ragged
             ((2, 16, 1, 1), (24, 16, 3, 3), dict(padding=1), {}),                 # one pixel an image
             ((1, 33, 1, 70), (8, 33, 1, 3), dict(padding=(0, 1)), {}),             # one row
             ((2, 40, 9, 11), (40, 24, 3, 3), dict(stride=2, padding=1), dict(transposed=True)),
             ((2, 24, 12, 10), (16, 24, 3, 3), dict(padding=1), dict(view=lambda t: t[:, :, :, ::1][..., :9]))]
    for xs, ws, kw, how in cases:
        want = run(xs, ws, kw, "aten", **how)
        got = run(xs, ws, kw, "kernel", **how)
        for name, a, b in zip(("output", "grad_input", "grad_weight"), got, want):
            assert torch.equal(a, b), (name, xs, ws, kw, (a.float() - b.float()).abs().max().item())

    monkeypatch.setenv("RNNKERN_CONV_LAYOUT_COPY", "kernel")
    x = torch.randn(2, 40, 9, 11, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(24, 40, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
    names = _launched_kernels(lambda: RF.conv2d(x, w, None, 1, 1).sum().backward())
    copies = [n for n in names if "batched_transpose_kernel" in n]
    assert copies, names
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        RF.conv2d(x, w, None, 1, 1).backward(torch.ones(2, 24, 9, 11, device="cuda", dtype=dtype))
        torch.cuda.synchronize()
    launches = sum(e.count for e in prof.key_averages() if "batched_transpose_kernel" in e.key)
    assert launches == 6, launches

    monkeypatch.setenv("RNNKERN_CONV_LAYOUT_COPY", "yes")
    with pytest.raises(RuntimeError, match="RNNKERN_CONV_LAYOUT_COPY must be 'aten' or 'kernel'"):
        RF.conv2d(x, w, None, 1, 1)


@pytest.mark.cuda
@pytest.mark.parametrize("var,value,message", [("RNNKERN_CONV_MMA", "tcgen05", "must be 'mma', 'wgmma' or 'tma'"),
                                               ("RNNKERN_CONV_TAP_GROUP", "10", "must be an integer from 1 to 9"),
                                               ("RNNKERN_CONV_PIPELINE", "yes", "must be '0' or '1'")])
def test_cuda_tensor_core_form_env_is_checked(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    x, w = torch.randn(1, 8, 6, 6, device="cuda", dtype=torch.bfloat16), torch.randn(8, 8, 3, 3, device="cuda",
                                                                                      dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=f"{var} {message}"):
        RF.conv2d(x.contiguous(memory_format=torch.channels_last), w)


@pytest.mark.cuda
@pytest.mark.parametrize("tile_n", [128, 64, "auto"])
@pytest.mark.parametrize("dtype,layout", [(torch.bfloat16, torch.channels_last), (torch.float32, torch.contiguous_format)])
def test_cuda_wgmma_form_is_the_one_that_runs(monkeypatch, dtype, layout, tile_n):
    """On an H100 / H200 with an sm_90a build, RNNKERN_CONV_MMA=wgmma launches the gather and
    grad_weight kernels' wgmma instances (templates ending in `<..., stages, true, tile columns>`)
    for the forward, grad_input and grad_weight, so test_cuda_tensor_core_forms' wgmma rows test
    what they name; RNNKERN_CONV_WGMMA_N picks the tile columns of the gather and of the 16-bit
    channels_last grad_weight (the fp32 NCHW grad_weight keeps 64); unset, 128 above 64 channels
    (the forward's 96 output channels), else 64 (grad_input's 64 input channels)."""
    if not _wgmma_runs():
        pytest.skip("wgmma needs an sm_90 GPU and an sm_90a build")
    monkeypatch.setenv("RNNKERN_CONV_MMA", "wgmma")
    if tile_n == "auto":
        monkeypatch.delenv("RNNKERN_CONV_WGMMA_N", raising=False)
    else:
        monkeypatch.setenv("RNNKERN_CONV_WGMMA_N", str(tile_n))
    fwd_n, dgrad_n = (128, 64) if tile_n == "auto" else (tile_n, tile_n)
    stages = 4 if dtype == torch.float32 else 5  # conv.cu's kWgmmaStages
    x = torch.randn(2, 64, 20, 20, device="cuda", dtype=dtype).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(96, 64, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
    def fwd_bwd():  # (ones_like keeps y's layout; .sum().backward() would hand in a stride-0 gradient)
        y = RF.conv2d(x, w, None, 1, 1)
        y.backward(torch.ones_like(y))
    names = _launched_kernels(fwd_bwd)
    gather = [n for n in names if "gather_conv_kernel" in n]
    for n_cols in {fwd_n, dgrad_n}:
        want = (fwd_n, dgrad_n).count(n_cols)
        assert sum(n.endswith(f",{stages},true,{n_cols}>(rnnkern::(anonymousnamespace)::GatherParams)")
                   for n in gather) == want, (n_cols, gather)
    # grad_weight: K-major operands (fp32 NCHW) or MN-major ones (16-bit channels_last)
    wgrad = [n for n in names if "wgrad_kernel<" in n]
    wgrad_n = dgrad_n if dtype != torch.float32 else 64  # (C_in = 64, as grad_input's columns)
    assert sum(n.endswith(f",{stages},true,{wgrad_n}>(rnnkern::(anonymousnamespace)::WgradParams)")
               for n in wgrad) == 1, wgrad


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,layout", [(torch.bfloat16, torch.channels_last), (torch.bfloat16, torch.contiguous_format),
                                          (torch.float32, torch.contiguous_format), (torch.float32, torch.channels_last)])
def test_cuda_default_form(monkeypatch, dtype, layout):
    """RNNKERN_CONV_MMA and RNNKERN_CONV_NCHW unset (conv.cu's conv_mma_form, tma_wanted,
    nchw_via_channels_last): on an sm_90a build and an sm_90 GPU the bf16 forward (96 output
    channels, 64 input channels: a whole 128-byte chunk) runs the TMA kernel on 128-column tiles,
    the TF32 forward the gather's wgmma instance except for fp32 channels_last; grad_input (64
    columns) and grad_weight run mma.sync; 16-bit NCHW runs the channels_last instances (through
    copies), TF32 NCHW its own. Elsewhere: mma.sync throughout. With RNNKERN_CONV_PIPELINE=0 the
    bf16 forward leaves the TMA kernel too."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # (torch's default: fp32 on the tensor cores)
    for var in ("RNNKERN_CONV_MMA", "RNNKERN_CONV_NCHW", "RNNKERN_CONV_WGMMA_N", "RNNKERN_CONV_PIPELINE",
                "RNNKERN_CONV_TMA_N", "RNNKERN_CONV_TMA_CLUSTER", "RNNKERN_CONV_TMA_BATCH", "RNNKERN_CONV_TMA_WEIGHT"):
        monkeypatch.delenv(var, raising=False)
    x = torch.randn(2, 64, 20, 20, device="cuda", dtype=dtype).contiguous(memory_format=layout).requires_grad_()
    w = torch.randn(96, 64, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
    def fwd_bwd():
        y = RF.conv2d(x, w, None, 1, 1)
        y.backward(torch.ones_like(y))
    names = _launched_kernels(fwd_bwd)
    tma = [n.replace(" ", "") for n in names if "gather_tma_kernel<" in n]
    kernels = [n for n in names if "gather_conv_kernel<" in n or "wgrad_kernel<" in n]
    wgmma = [n for n in kernels if re.search(r",true,(64|128)>\(", n)]
    forward_tma = _wgmma_runs() and dtype == torch.bfloat16
    forward_wgmma = _wgmma_runs() and not forward_tma and not (dtype == torch.float32 and layout == torch.channels_last)
    assert len(tma) == int(forward_tma) and all(",128,1>(" in n for n in tma), names  # (128 columns, CTAs alone)
    assert [n for n in wgmma if "gather_conv_kernel<" in n and n.endswith(",true,128>(rnnkern::(anonymousnamespace)::GatherParams)")] \
        == wgmma and len(wgmma) == int(forward_wgmma), kernels
    kcl = [re.search(r"(?:gather_conv_kernel|wgrad_kernel)<[^,]+,\(rnnkern::\(anonymousnamespace\)::Path\)\d,(\w+),", n)
           for n in kernels]
    want_cl = layout == torch.channels_last or dtype == torch.bfloat16
    assert [m.group(1) for m in kcl if m] == [str(want_cl).lower()] * (3 - int(forward_tma)), kernels
    if forward_tma:
        monkeypatch.setenv("RNNKERN_CONV_PIPELINE", "0")
        assert not [n for n in _launched_kernels(fwd_bwd) if "gather_tma_kernel<" in n]


@pytest.mark.cuda
def test_cuda_tma_default_width(monkeypatch):
    """RNNKERN_CONV_TMA_N unset (conv.cu's tma_tile_n): a 16-bit channels_last forward on the TMA
    gather takes 128 x 256 tiles where the output has >= 256 channels and the 256-column grid still
    gives every SM a tile, else 128 x 128 (fewer pixels; 192 channels); the same convolution
    either way (against fp64 on the bf16 operands)."""
    if not _wgmma_runs():
        pytest.skip("the TMA form needs an sm_90 GPU and an sm_90a build")
    for var in ("RNNKERN_CONV_MMA", "RNNKERN_CONV_TMA_N", "RNNKERN_CONV_PIPELINE", "RNNKERN_CONV_TMA_CLUSTER",
                "RNNKERN_CONV_TMA_BATCH", "RNNKERN_CONV_TMA_WEIGHT"):
        monkeypatch.delenv(var, raising=False)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    side = math.isqrt(128 * sms) + 1  # one side x side image: >= one 128-pixel tile an SM
    for xs, cout, width in [((1, 64, side, side), 256, 256), ((1, 64, side // 2, side // 2), 256, 128),
                            ((1, 64, side, side), 192, 128)]:
        x = torch.randn(xs, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w = torch.randn(cout, 64, 3, 3, device="cuda", dtype=torch.bfloat16)
        names = _launched_kernels(lambda: RF.conv2d(x, w, None, 1, 1))
        widths = {m.group(1) for m in map(re.compile(r"gather_tma_kernel<[^,<>]+,(\d+),1>").search, names) if m}
        assert widths == {str(width)}, (xs, cout, names)
        ref = TF.conv2d(x.double().cpu(), w.double().cpu(), padding=1)
        assert rel_err(RF.conv2d(x, w, None, 1, 1).double().cpu(), ref) < 1e-2, (xs, cout)


@pytest.mark.cuda
@pytest.mark.untried  # (RNNKERN_CONV_TMA_WEIGHT=inplace has not run on a GPU)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_tma_weight_in_place(monkeypatch, dtype):
    """RNNKERN_CONV_TMA_WEIGHT=inplace (conv.cu's prepare_tma_launch): the TMA forward reads a
    channels_last-contiguous weight (G == 1) through its map in place, with no copy kernel, and gives
    the same bits as the copy it replaces (the same bytes reach the same stages); 1 x 3, 5 x 5 and
    3 x 3 kernels, input channels short of a chunk and over two, output channels past a tile; an NCHW
    weight and a grouped one are still copied."""
    if not _wgmma_runs():
        pytest.skip("the TMA form needs an sm_90 GPU and an sm_90a build")
    for var in ("RNNKERN_CONV_MMA", "RNNKERN_CONV_TMA_N", "RNNKERN_CONV_TMA_CLUSTER", "RNNKERN_CONV_TMA_BATCH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RNNKERN_CONV_MMA", "tma")
    cl = torch.channels_last
    for xs, ws, kw, in_place in [((2, 64, 20, 20), (96, 64, 3, 3), dict(padding=1), True),
                                 ((2, 32, 9, 130), (136, 32, 1, 3), dict(padding=(0, 1)), True),
                                 ((1, 136, 23, 19), (264, 136, 5, 5), dict(padding=4, dilation=2), True),
                                 ((2, 128, 16, 16), (256, 64, 3, 3), dict(padding=1, groups=2), False)]:
        x = torch.randn(xs, device="cuda", dtype=dtype).contiguous(memory_format=cl)
        w = torch.randn(ws, device="cuda", dtype=dtype)
        for w_layout, expect_copy in ((cl, not in_place), (torch.contiguous_format, True)):
            wl = w.contiguous(memory_format=w_layout)
            monkeypatch.setenv("RNNKERN_CONV_TMA_WEIGHT", "copy")
            y_copy = RF.conv2d(x, wl, None, **kw)
            monkeypatch.setenv("RNNKERN_CONV_TMA_WEIGHT", "inplace")
            y = RF.conv2d(x, wl, None, **kw)
            assert torch.equal(y, y_copy), (xs, ws, kw, w_layout)
            names = _launched_kernels(lambda: RF.conv2d(x, wl, None, **kw))
            assert any("gather_tma_kernel<" in n for n in names), names
            others = [n for n in names if "gather_tma_kernel<" not in n]
            assert bool(others) == expect_copy, (xs, ws, kw, w_layout, names)
        ref = TF.conv2d(x.double().cpu(), w.double().cpu(), **kw)
        assert rel_err(y.double().cpu(), ref) < 1e-2, (xs, ws, kw)


@pytest.mark.cuda
# (CTA clusters, RNNKERN_CONV_TMA_CLUSTER=2|4, and the stride phases batched into launches,
# RNNKERN_CONV_TMA_BATCH=1, have not run on a GPU)
@pytest.mark.parametrize("cluster,batch", [(1, 0)] + [pytest.param(c, b, marks=pytest.mark.untried)
                                                       for c, b in ((2, 0), (4, 0), (1, 1), (2, 1), (4, 1))])
@pytest.mark.parametrize("tile_n", [128, 256])
# (fp32 stays `untried`: its first H200 run stopped at a wrong expected launch count, six cases in)
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, marks=pytest.mark.untried), torch.bfloat16,
                                   torch.float16])
def test_cuda_tma_gather(monkeypatch, dtype, tile_n, cluster, batch):
    """RNNKERN_CONV_MMA=tma (conv.cu's gather_tma_kernel: TMA im2col loads, wgmma consumers, sm_90a)
    against fp64: the forward of channels_last convolutions (strides through the map's traversal
    strides) and their grad_input (as stride-1 forwards of the flipped taps, one a stride phase:
    tma_problems; grad_weight on the default kernels alongside), with ragged pixel tiles that cross images, output channels
    past one 128-column tile and short of it, input channels short of a 128-byte chunk (read as
    zeros past the map) and several chunks, groups of whole chunks, dilation up to 18 with the
    tiles' all-padding taps skipped (8 x 16 pixel tiles at 32 x 32 and ragged 33 x 35), a one-pixel
    image, padding='same' with an even kernel extent (unequal far-side padding: the map's upper
    corner follows the output size) and padding that differs between H and W, 5x5 and 7x7 kernels,
    stride 2 (phases of one and of two taps) and stride 3 with dilation 2 (a phase with negative
    padding: a positive lower corner), a 1 x 3 kernel at stride 2 (a grad_input phase no tap
    reaches: the gather kernel runs it instead), output channels that break the epilogue's 16-byte
    stores, tiles with no k-step, two column tiles at either width, a strided forward on 8 x 16
    pixel tiles, with and without bias; each case's TMA launches are counted. The
    transposed convolution's forward (k4 s2 with output padding; s3 d2 in groups) is the same
    gather. Which kernels run: the TMA kernel for the forward and the grad_input, one launch a
    stride phase, or up to four a launch (RNNKERN_CONV_TMA_BATCH=1); not for TF32 NCHW (outside its scope; 16-bit NCHW reaches it through its
    channels_last copies). On 128- and 256-column tiles (RNNKERN_CONV_TMA_N), CTAs alone and in
    clusters of 2 or 4 sharing the weight tile (RNNKERN_CONV_TMA_CLUSTER: tile counts that are not
    a multiple leave a cluster's last CTAs idle, the dilated cases' neighbouring tiles have
    different live taps, and the 20- and 264-channel cases have parts of B wholly past the output
    channels: never loaded)."""
    if not _wgmma_runs():
        pytest.skip("the TMA form needs an sm_90 GPU and an sm_90a build")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setenv("RNNKERN_CONV_MMA", "tma")
    monkeypatch.setenv("RNNKERN_CONV_TMA_N", str(tile_n))
    monkeypatch.setenv("RNNKERN_CONV_TMA_CLUSTER", str(cluster))
    monkeypatch.setenv("RNNKERN_CONV_TMA_BATCH", str(batch))
    monkeypatch.delenv("RNNKERN_CONV_TMA_WEIGHT", raising=False)
    cl = torch.channels_last

    def launches_of(phases):  # a pass's TMA launches for its problems (stride phases)
        return -(-phases // 4) if batch else phases
    # (input, weight, arguments, TMA launches of forward + grad_input for 16-bit / for fp32: one a
    # stride phase of grad_input unbatched (launches_of); 0 where tma_plan refuses the pass)
    cases = [((2, 64, 20, 20), (96, 64, 3, 3), dict(padding=1), (2, 2)),
             ((3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6), (2, 2)),
             ((2, 136, 33, 35), (72, 136, 3, 3), dict(padding="same", dilation=18), (2, 2)),
             ((2, 64, 32, 32), (64, 64, 3, 3), dict(padding=18, dilation=18), (2, 2)),
             ((2, 128, 16, 16), (256, 64, 3, 3), dict(padding=1, groups=2), (2, 2)),
             # 1x1 images: NCHW and channels_last strides coincide and torch (and conv_channels_last)
             # read them as NCHW, which TF32 runs natively (no TMA form)
             ((4, 64, 1, 1), (64, 64, 3, 3), dict(padding=1), (2, 0)),
             ((2, 16, 15, 14), (24, 16, 4, 2), dict(padding="same", dilation=(1, 3)), (2, 2)),
             ((1, 40, 23, 19), (48, 40, 5, 5), dict(padding=4, dilation=2), (2, 2)),
             ((2, 32, 12, 13), (40, 32, 7, 7), dict(padding=3), (2, 2)),
             ((2, 24, 9, 130), (16, 24, 1, 3), dict(padding=(0, 1)), (2, 2)),
             ((2, 64, 17, 19), (72, 64, 3, 3), dict(stride=2, padding=1), (1 + launches_of(4),) * 2),
             ((2, 32, 20, 21), (40, 32, 3, 3), dict(stride=3, padding=2, dilation=2), (1 + launches_of(9),) * 2),
             ((2, 64, 16, 15), (64, 64, 1, 3), dict(stride=2, padding=(0, 1)), (1, 1)),
             # 20 output channels: element stores (16-bit), and a 16-bit grad_input whose 20 source
             # channels are not whole 16 bytes (the gather kernel)
             ((2, 32, 11, 12), (20, 32, 3, 3), dict(padding=1), (1, 2)),
             # a 1x1 kernel in wide padding: tiles that read only padding (no k-step: bias or zero);
             # grad_input's phase padding -20 (a positive lower corner)
             ((2, 64, 4, 4), (64, 64, 1, 1), dict(padding=20), (2, 2)),
             # 264 output channels: two column tiles at 128 and at 256
             ((1, 64, 9, 10), (264, 64, 3, 3), dict(padding=1), (2, 2)),
             # a strided forward on 8 x 16 pixel tiles (grad_input: phases no tap reaches, gather kernel)
             ((1, 24, 40, 70), (16, 24, 3, 3), dict(stride=2, padding=18, dilation=18), (1, 1))]

    def tma_launches(fn):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        events = prof.key_averages()
        forms = {m.groups() for m in map(re.compile(r"gather_tma_kernel<[^,<>]+,(\d+),(\d)>").search,
                                         (e.key.replace(" ", "") for e in events)) if m}
        assert forms <= {(str(tile_n), str(cluster))}, forms
        return sum(e.count for e in events if "gather_tma_kernel" in e.key)
    for xs, ws, kw, launches in cases:
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, cl)
        for name, o, r, tol in zip(("output", "grad_input", "grad_weight", "grad_bias"), got, ref, tols):
            assert rel_err(o, r) < tol, (name, rel_err(o, r), tol, xs, ws, kw)
        assert got[0].is_contiguous(memory_format=cl) and got[1].is_contiguous(memory_format=cl)
        xc = torch.randn(xs, device="cuda", dtype=dtype).contiguous(memory_format=cl).requires_grad_()
        wc = torch.randn(ws, device="cuda", dtype=dtype)

        def fwd_bwd_case():
            y = RF.conv2d(xc, wc, None, **kw)
            y.backward(torch.ones_like(y))
        assert tma_launches(fwd_bwd_case) == launches[dtype == torch.float32], (xs, ws, kw)
    x = torch.randn(2, 64, 20, 20, device="cuda", dtype=dtype).contiguous(memory_format=cl).requires_grad_()
    w = torch.randn(96, 64, 3, 3, device="cuda", dtype=dtype, requires_grad=True)
    b = torch.randn(96, device="cuda", dtype=dtype)

    def fwd_bwd(stride=1, x=x):
        y = RF.conv2d(x, w, b, stride, 1)
        y.backward(torch.ones_like(y))

    assert tma_launches(fwd_bwd) == 2  # forward, grad_input
    assert tma_launches(lambda: fwd_bwd(2)) == 1 + launches_of(4)  # the forward, grad_input's four stride phases
    # NCHW: TF32 runs its own NCHW kernels; 16-bit goes through channels_last copies, so TMA again
    xn = x.detach().contiguous().requires_grad_()
    assert tma_launches(lambda: fwd_bwd(1, xn)) == (2 if dtype != torch.float32 else 0)
    # transposed convolutions: the forward is the engine's grad_input gather (stride 1 d2; k4 s2 p1
    # with output padding; s3 d2 in two groups of whole chunks)
    cast = dict(device="cuda", dtype=dtype)
    for (cin, cout, k), (h, wd), args, phases in [((64, 72, 3), (11, 9), (1, 1, 0, 1, 2), 1),
                                                  ((64, 64, 4), (9, 10), (2, 1, 1), 4),
                                                  ((128, 48, 3), (7, 8), (3, 2, 1, 2, 2), 9)]:
        xt = torch.randn(2, cin, h, wd, dtype=torch.float64)
        wt = torch.randn(cin, cout // (args[3] if len(args) > 3 else 1), k, k, dtype=torch.float64)
        xtc = xt.to(**cast).contiguous(memory_format=cl)
        ref = TF.conv_transpose2d(xt, wt, None, *args)
        theirs = TF.conv_transpose2d(xtc, wt.to(**cast), None, *args)
        tol = TOL_TF32 if dtype == torch.float32 else 2 * rel_err(theirs, ref) + 1e-3
        yt = RF.conv_transpose2d(xtc, wt.to(**cast), None, *args)
        assert rel_err(yt, ref) < tol, (rel_err(yt, ref), tol, args)
        assert tma_launches(lambda: RF.conv_transpose2d(xtc, wt.to(**cast), None, *args)) == launches_of(phases), args


def _tma_slot(i, bx, tile_w, tiles_w, Ho, Wo):
    """Slot i of the TMA kernel's pixel tile bx: (linear index of the output base pixel it loads, in
    row-major (n, ho, wo) order, or None for a tile row past the output, never loaded; whether the
    slot is that output pixel itself). Row order: pixel 128 bx + i. 8 x 16 tiles: row i // 16 of the
    tile, column i % 16; a column past the output loads the next pixels in row-major order (the
    map's traversal wraps) and stands for no output pixel."""
    if not tile_w:
        return bx * 128 + i, True
    per_image = tiles_w * ((Ho + 128 // tile_w - 1) // (128 // tile_w))
    t = bx % per_image
    row, col = t // tiles_w * (128 // tile_w) + i // tile_w, t % tiles_w * tile_w + i % tile_w
    if row >= Ho:
        return None, False
    return (bx // per_image * Ho + row) * Wo + col, col < Wo


def _tma_stage_expected(x, w, stride, pad4, dil, groups, bx, by, g, tap, c0, tile_n, tile_w, tiles_w, cluster=1):
    """The bytes gather_tma_kernel's producer should leave in a stage (tma_stage_probe's layout), from
    the convolution's definition: A row i is the base pixel the tile's slot i loads (_tma_slot), read
    at tap (r, s) for channels c0 ... of group g (zeros outside the input and past the channels;
    0xAB for a tile row past the output, never loaded); B row n is output channel by * tile_n + n's weights for
    that tap and those channels. Each 128-byte row's 16-byte chunk j sits at chunk j ^ (row % 8).
    cluster=2 or 4 (a CTA of a cluster): a block past the last tile (an idle CTA) loads no A row,
    and a part of B that starts past the output channels is never loaded: 0xAB there."""
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    Ho = (H + pad4[0] + pad4[2] - dil[0] * (KH - 1) - 1) // stride[0] + 1
    Wo = (W + pad4[1] + pad4[3] - dil[1] * (KW - 1) - 1) // stride[1] + 1
    E = x.element_size()
    BK, Nn, r, s = 128 // E, K // groups, tap // KW, tap % KW
    xp = torch.zeros(N, C + BK, H, W, dtype=x.dtype)  # channels past C read as zeros
    xp[:, :C] = x.cpu()
    a = torch.zeros(128, BK, dtype=x.dtype)
    poison = torch.zeros(128, dtype=torch.bool)
    for i in range(128):
        lin, _ = _tma_slot(i, bx, tile_w, tiles_w, Ho, Wo)
        if lin is None:
            poison[i] = True
            continue
        n, ho, wo = lin // (Ho * Wo), lin // Wo % Ho, lin % Wo
        hs, ws = ho * stride[0] - pad4[0] + r * dil[0], wo * stride[1] - pad4[1] + s * dil[1]
        if n < N and 0 <= hs < H and 0 <= ws < W:
            a[i] = xp[n, g * Cg + c0: g * Cg + c0 + BK, hs, ws]
    if tile_w:
        tiles = N * tiles_w * ((Ho + 128 // tile_w - 1) // (128 // tile_w))
    else:
        tiles = (N * Ho * Wo + 127) // 128
    if bx >= tiles:
        poison[:] = True  # (an idle CTA of a pair)
    b = torch.zeros(tile_n, BK, dtype=x.dtype)
    for n in range(tile_n):
        k = by * tile_n + n
        if k < Nn:
            cols = w.cpu()[g * Nn + k, c0: c0 + BK, r, s]
            b[n, :cols.numel()] = cols
    half = tile_n // cluster
    b_unloaded = [h * half + n for h in range(cluster) if by * tile_n + h * half >= Nn for n in range(half)]

    def swizzled(rows):
        raw = rows.contiguous().view(torch.uint8).view(rows.shape[0], 8, 16)
        out = torch.empty_like(raw)
        for i in range(rows.shape[0]):
            out[i, torch.arange(8) ^ (i % 8)] = raw[i]
        return out.view(-1)
    got_a = swizzled(a).view(128, 128)
    got_a[poison] = 0xAB
    got_b = swizzled(b).view(tile_n, 128)
    got_b[b_unloaded] = 0xAB
    return torch.cat([got_a.view(-1), got_b.view(-1)])


# test_cuda_tma_wgrad's shapes (input, weight, arguments), also replayed by scripts/check_tma_wgrad.py:
# output channels short of a 128-row tile and past two, input channels short of a 64-channel box and
# past one, groups (a box reading the next group's channels into columns never stored), dilation 6
# and 18 (skipped k-steps), 'same' padding with an even kernel extent, strides 2 and 3, 1 x 3, 5 x 5
# and 7 x 7 kernels, enough pixels for several splits, and 9 input channels a group (odd: refused)
TMA_WGRAD_CASES = [((2, 64, 20, 20), (96, 64, 3, 3), dict(padding=1)),
                   ((3, 72, 37, 41), (136, 72, 3, 3), dict(padding=6, dilation=6)),
                   ((2, 136, 33, 35), (72, 136, 3, 3), dict(padding="same", dilation=18)),
                   ((2, 64, 32, 32), (64, 64, 3, 3), dict(padding=18, dilation=18)),
                   ((2, 128, 16, 16), (256, 64, 3, 3), dict(padding=1, groups=2)),
                   ((2, 16, 15, 14), (24, 16, 4, 2), dict(padding="same", dilation=(1, 3))),
                   ((1, 40, 23, 19), (48, 40, 5, 5), dict(padding=4, dilation=2)),
                   ((2, 32, 12, 13), (40, 32, 7, 7), dict(padding=3)),
                   ((2, 24, 9, 130), (16, 24, 1, 3), dict(padding=(0, 1))),
                   ((2, 64, 17, 19), (72, 64, 3, 3), dict(stride=2, padding=1)),
                   ((2, 32, 20, 21), (40, 32, 3, 3), dict(stride=3, padding=2, dilation=2)),
                   ((1, 64, 9, 10), (264, 64, 3, 3), dict(padding=1)),
                   ((1, 256, 12, 11), (64, 256, 3, 3), dict(padding=1)),
                   ((4, 64, 40, 40), (64, 64, 3, 3), dict(padding=1)),
                   ((1, 72, 5, 5), (72, 9, 3, 3), dict(padding=1, groups=8)),
                   # 12 input channels a group: the second group's boxes start 24 bytes into a row
                   ((2, 24, 12, 12), (40, 12, 3, 3), dict(padding=1, groups=2)),
                   # for the TF32 NCHW form: input widths a multiple of 4, output widths of 32 (whole
                   # 32-column blocks), and one ragged (the form refuses it)
                   ((2, 24, 13, 64), (40, 24, 3, 5), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1))),
                   ((1, 64, 20, 64), (72, 64, 3, 3), dict(padding=18, dilation=18)),
                   ((2, 32, 8, 32), (48, 16, 3, 3), dict(padding=1, groups=2)),
                   ((1, 16, 7, 36), (16, 16, 1, 7), dict(padding=(0, 1))),
                   ((1, 16, 7, 40), (16, 16, 1, 7), dict(padding=(0, 9)))]  # (ragged: output width 52)


@pytest.mark.cuda
@pytest.mark.untried
@pytest.mark.parametrize("n", [128, 256])
def test_cuda_wgmma_mn_probe(n):
    """The TMA grad_weight's MN-major wgmma steps alone (rnnkern.ops.conv.wgmma_mn_probe): A^T B
    from shared memory laid out as its copies leave it (128-byte swizzled k rows, 64-column boxes
    8192 bytes apart), through wgmma_desc_mn_sw128's LBO / SBO reading. If test_cuda_tma_wgrad
    fails and this passes, the copies or the split are wrong, not the descriptors. Small integers:
    exact in bf16 products and fp32 sums."""
    if not _wgmma_runs():
        pytest.skip("needs an sm_90 GPU and an sm_90a build")
    from rnnkern.ops.conv import wgmma_mn_probe
    gen = torch.Generator().manual_seed(n)
    a = torch.randint(-4, 5, (64, 64), generator=gen).to(torch.bfloat16)
    b = torch.randint(-4, 5, (64, n), generator=gen).to(torch.bfloat16)
    got = wgmma_mn_probe(a.cuda(), b.cuda()).cpu()
    want = a.double().T @ b.double()
    assert torch.equal(got.double(), want), (got - want).abs().nonzero()[:8]


@pytest.mark.cuda
@pytest.mark.untried
@pytest.mark.parametrize("cluster", ["1", "2", "4"])
@pytest.mark.parametrize("tile_n", ["128", "256", ""])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_cuda_tma_wgrad(monkeypatch, dtype, tile_n, cluster):
    """RNNKERN_CONV_MMA=tma's grad_weight (conv.cu's wgrad_tma_kernel, split over the pixels and
    reduced in order): 16-bit channels_last (gy and the shifted input on TMA loads, both MN-major
    wgmma operands) and TF32 NCHW (rows of 32 pixels on tiled 4-D loads, K-major operands), against
    fp64 on TMA_WGRAD_CASES, with its launches counted (one a call where launch_wgrad_tma takes the
    shape: an even number of input channels a group; TF32 NCHW also input widths a multiple of 4,
    output widths of 32 and unit column stride) and its bits compared run to run; 128- and
    256-column tiles (RNNKERN_CONV_TMA_N;
    unset: 256 at >= 256 input channels a group). 16-bit in clusters of 2 and 4 too
    (RNNKERN_CONV_TMA_CLUSTER: CTAs on neighbouring output-channel tiles sharing the input's boxes,
    where the 128-channel tiles divide into clusters, else of 2 where they do, else alone), with
    extra cases of 2 and 4 such tiles: input channels short of a box and past one, groups, dilation
    and strides."""
    if not _wgmma_runs():
        pytest.skip("the TMA form needs an sm_90 GPU and an sm_90a build")
    if dtype == torch.float32 and cluster != "1":
        pytest.skip("clusters are the 16-bit form's")
    monkeypatch.setenv("RNNKERN_CONV_TMA_CLUSTER", cluster)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setenv("RNNKERN_CONV_MMA", "tma")
    if tile_n:
        monkeypatch.setenv("RNNKERN_CONV_TMA_N", tile_n)
    else:
        monkeypatch.delenv("RNNKERN_CONV_TMA_N", raising=False)
    nchw = dtype == torch.float32
    layout = torch.contiguous_format if nchw else torch.channels_last
    cluster_cases = [((2, 64, 20, 20), (256, 64, 3, 3), dict(padding=1)),
                     ((1, 72, 17, 9), (512, 72, 3, 3), dict(padding=(1, 2), dilation=2)),
                     ((2, 128, 12, 12), (512, 64, 3, 3), dict(padding=1, groups=2)),
                     ((2, 40, 21, 19), (256, 40, 3, 3), dict(stride=2, padding=6, dilation=6))]
    for xs, ws, kw in TMA_WGRAD_CASES + (cluster_cases if cluster != "1" else []):
        got, ref, tols = _cuda_vs_fp64(xs, ws, kw, dtype, layout)
        assert rel_err(got[2], ref[2]) < tols[2], (rel_err(got[2], ref[2]), tols[2], xs, ws, kw)
        x = torch.randn(xs, device="cuda", dtype=dtype).contiguous(memory_format=layout).requires_grad_()
        w = torch.randn(ws, device="cuda", dtype=dtype, requires_grad=True)

        def fwd_bwd():
            y = RF.conv2d(x, w, None, **kw)
            y.backward(torch.ones_like(y))
        names = _launched_kernels(fwd_bwd)
        runs = ws[1] % 2 == 0  # (launch_wgrad_tma's refusals: the float2 stores; TF32 NCHW's 16-byte rows)
        if nchw:
            stride = kw.get("stride", 1)
            runs = runs and xs[3] % 4 == 0 and got[0].shape[3] % 32 == 0 and (stride if isinstance(stride, int)
                                                                              else stride[1]) == 1
        assert sum("wgrad_tma_kernel<" in n for n in names) == int(runs), (xs, ws, kw, names)
        if runs and not nchw:  # the cluster size launch_wgrad_tma picks from the 128-channel tiles
            tiles_m, asked = -(-(ws[0] // kw.get("groups", 1)) // 128), int(cluster)
            cm = asked if tiles_m % asked == 0 else 2 if asked > 1 and tiles_m % 2 == 0 else 1
            assert [m.group(1) for m in map(re.compile(r"wgrad_tma_kernel<[^<>]+?,(\d)>\(").search, names) if m] \
                == [str(cm)], (xs, ws, kw, names)
        # the same bits run to run (an ordered reduction of the splits, no atomics)
        w.grad = None
        fwd_bwd()
        first = w.grad.clone()
        w.grad = None
        fwd_bwd()
        assert torch.equal(first, w.grad), (xs, ws, kw)


@pytest.mark.parametrize("case", range(4))
def test_tma_stage_expected_is_the_convolution(case):
    """test_cuda_tma_stage_probe's reference stages, checked without a GPU: summed over every tap and
    channel chunk, A (unswizzled) times B's transpose is the convolution's output at the tile's
    output pixels and channels (F.conv2d, fp64)."""
    xs, ws, stride, pad4, dil, groups, bx, by, g, tile_w, tiles_w = [
        ((2, 72, 9, 11), (136, 72, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1, 1, 1, 0, 0, 0),
        ((2, 64, 13, 12), (40, 64, 3, 2), [2, 3], [2, 1, 0, 1], [2, 3], 1, 0, 0, 0, 0, 0),
        ((1, 128, 6, 7), (64, 64, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 2, 0, 0, 1, 0, 0),
        ((1, 24, 19, 35), (16, 24, 3, 3), [1, 1], [18, 18, 18, 18], [18, 18], 1, 5, 0, 0, 16, 3)][case]
    tile_n = 128
    x, w = torch.randn(xs), torch.randn(ws)
    K, Cg, KH, KW = ws
    Nn = K // groups
    acc = torch.zeros(128, tile_n, dtype=torch.float64)
    for tap in range(KH * KW):
        for c0 in range(0, Cg, 32):
            st = _tma_stage_expected(x, w, stride, pad4, dil, groups, bx, by, g, tap, c0, tile_n, tile_w, tiles_w)

            def rows(raw, n):
                chunks = raw.view(n, 8, 16)
                return torch.stack([chunks[i, torch.arange(8) ^ (i % 8)] for i in range(n)]).view(n, 128)
            a = rows(st[:128 * 128], 128).contiguous().view(torch.float32).double()
            b = rows(st[128 * 128:], tile_n).contiguous().view(torch.float32).double()
            acc += a @ b.T
    y = TF.conv2d(TF.pad(x.double(), (pad4[1], pad4[3], pad4[0], pad4[2])), w.double(), None, stride, 0, dil, groups)
    Ho, Wo = y.shape[2:]
    checked = 0
    for i in range(128):
        lin, own = _tma_slot(i, bx, tile_w, tiles_w, Ho, Wo)
        if lin is None or not own or lin >= xs[0] * Ho * Wo:
            continue
        n, ho, wo = lin // (Ho * Wo), lin // Wo % Ho, lin % Wo
        cols = min(tile_n, Nn - by * tile_n)
        want = y[n, g * Nn + by * tile_n: g * Nn + by * tile_n + cols, ho, wo]
        assert torch.allclose(acc[i, :cols], want, rtol=1e-9, atol=1e-9), (case, i)
        checked += 1
    assert checked > 0


@pytest.mark.cuda
@pytest.mark.parametrize("cluster", [1, pytest.param(2, marks=pytest.mark.untried),
                                     pytest.param(4, marks=pytest.mark.untried)])
@pytest.mark.parametrize("tile_n", [128, 256])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_tma_stage_probe(dtype, tile_n, cluster):
    """The TMA form's copies alone, byte for byte (rnnkern.ops.conv.tma_stage_probe), against the
    convolution's definition: so that when test_cuda_tma_gather fails, this says whether the copies
    (the im2col map's bounding box, traversal and strides, the offsets, zero fill, the 128-byte
    swizzle, the weight's tiled map) or the products are wrong. Row-order tiles crossing images and
    running past the batch, channels short of a chunk and a second chunk, a strided and dilated
    convolution with unequal padding, groups, 8 x 16 pixel tiles ragged in both directions (rows past
    the output never loaded), a second column tile. cluster=2 or 4: every stage of the probed
    block's cluster (RNNKERN_CONV_TMA_CLUSTER), each with the parts of B all its CTAs multicast into
    it: clusters with idle CTAs (tile counts not a multiple) and with parts of B past the output
    channels."""
    if not _wgmma_runs():
        pytest.skip("the TMA form needs an sm_90 GPU and an sm_90a build")
    from rnnkern.ops.conv import tma_stage_probe
    cl = torch.channels_last
    # (input, weight, stride, padding (top, left, bottom, right), dilation, groups, probes (bx, by, g, tap, c0))
    cases = [((2, 72, 9, 11), (136, 72, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 1,
              [(0, 0, 0, 4, 0), (1, 1, 0, 0, 64), (1, 0, 0, 8, 0)]),
             ((2, 64, 13, 12), (40, 64, 3, 2), [2, 3], [2, 1, 0, 1], [2, 3], 1, [(0, 0, 0, 5, 32), (0, 0, 0, 0, 0)]),
             ((1, 128, 6, 7), (64, 64, 3, 3), [1, 1], [1, 1, 1, 1], [1, 1], 2, [(0, 0, 1, 2, 0)]),
             ((1, 24, 19, 35), (16, 24, 3, 3), [1, 1], [18, 18, 18, 18], [18, 18], 1,
              [(0, 0, 0, 4, 0), (5, 0, 0, 0, 0), (2, 0, 0, 8, 0), (7, 0, 0, 4, 0)])]
    for xs, ws, stride, pad4, dil, groups, probes in cases:
        x = torch.randn(xs, dtype=dtype)
        w = torch.randn(ws, dtype=dtype)
        xc, wc = x.cuda().contiguous(memory_format=cl), w.cuda()
        for bx, by, g, tap, c0 in probes:
            if c0 >= ws[1] or (by * tile_n >= ws[0] // groups):
                continue
            got, tile_w, tiles_w = tma_stage_probe(xc, wc, stride, pad4, dil, groups, bx, by, g, tap, c0, tile_n,
                                                   cluster)
            pair = range(bx // cluster * cluster, bx // cluster * cluster + cluster)
            want = torch.cat([_tma_stage_expected(x, w, stride, pad4, dil, groups, b, by, g, tap, c0, tile_n, tile_w,
                                                  tiles_w, cluster) for b in pair])
            got = got.cpu()
            bad = (got != want).nonzero().flatten()
            assert bad.numel() == 0, (xs, ws, (bx, by, g, tap, c0), "first wrong bytes", bad[:8].tolist(),
                                      got[bad[:8]].tolist(), want[bad[:8]].tolist(), "tile_w", tile_w)
        if xs[3] >= 32:
            assert tile_w == 16, "the dilation-18 case should take 8 x 16 pixel tiles"


@pytest.mark.cuda
@pytest.mark.parametrize("form,var,value,allowed", [("wgmma", "RNNKERN_CONV_WGMMA_N", "256", "'64' or '128'"),
                                                    ("tma", "RNNKERN_CONV_TMA_N", "64", "'128' or '256'"),
                                                    ("tma", "RNNKERN_CONV_TMA_CLUSTER", "3", "one of '1', '2', '4'"),
                                                    ("tma", "RNNKERN_CONV_TMA_BATCH", "4", "'0' or '1'"),
                                                    ("tma", "RNNKERN_CONV_TMA_WEIGHT", "x", "'copy' or 'inplace'")])
def test_cuda_tile_env_is_checked(monkeypatch, form, var, value, allowed):
    """The tile-width switches (and the TMA gather's pair and batch switches) are read where their
    form runs (an sm_90 GPU and an sm_90a build): a bf16 channels_last 3x3 convolution reaches both
    the wgmma gather and the TMA kernel."""
    if not _wgmma_runs():
        pytest.skip(f"{var} is read where the {form} form runs: an sm_90 GPU and an sm_90a build")
    monkeypatch.setenv("RNNKERN_CONV_MMA", form)
    monkeypatch.setenv(var, value)
    x = torch.randn(1, 16, 6, 6, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match=f"{var} must be {allowed}"):
        RF.conv2d(x, torch.randn(16, 16, 3, 3, device="cuda", dtype=torch.bfloat16), None, 1, 1)


@pytest.mark.parametrize("script", ["check_mma_fragments", "check_wgmma_layout", "check_tma_im2col", "check_tma_pair",
                                    "check_tma_wgrad"])
def test_tensor_core_index_replays(script, capsys):
    """The numpy replays of the engine's mma.sync fragments, of its wgmma form's tiles, descriptors
    and accumulators, of the TMA form's im2col maps, swizzled tiles and descriptors, and of the TMA
    grad_weight's MN-major operands, split and reduction (run without a GPU: they check the index
    arithmetic against the documented layouts, not the kernels)."""
    import runpy
    try:
        runpy.run_path(str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / f"{script}.py"),
                       run_name="__main__")
    except SystemExit as e:  # check_mma_fragments exits with its verdict
        assert e.code in (0, None), capsys.readouterr().out
    out = capsys.readouterr().out
    assert "ok" in out and "MISMATCH" not in out, out


# ----------------------------------------------------------------------------------------------
# autograd checks, opcheck, compile

@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_fp64(device):
    opts = dict(device=device, dtype=torch.float64, requires_grad=True)
    cases = [
        (2, (2, 4, 4, 5), (4, 2, 2, 3), dict(stride=(1, 2), padding=(1, 0), dilation=(2, 1), groups=2)),
        (2, (1, 2, 5, 4), (2, 2, 3, 3), dict(padding="same", dilation=2)),
        (2, (1, 2, 3, 4), (2, 1, 2, 2), dict(padding="same", dilation=(1, 3), groups=2)),
        (1, (2, 3, 9), (2, 3, 3), dict(stride=2, padding=2, dilation=3)),
    ]
    for nd, xs, ws, kw in cases:
        x, w, b = torch.randn(xs, **opts), torch.randn(ws, **opts), torch.randn(ws[0], **opts)
        f = lambda x, w, b: _rk_conv(nd)(x, w, b, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, w, b))
        # double backward runs through the backward ops' own autograd (bilinear: exact)
        assert torch.autograd.gradgradcheck(f, (x, w, b), fast_mode=True)


def _op_samples(device):
    opts = dict(device=device, dtype=torch.float32)
    out = []
    for xs, ws, stride, pad, dil, groups, cl in [
        ((2, 4, 7, 6), (6, 2, 3, 3), [1, 1], [2, 2, 2, 2], [2, 2], 2, False),
        ((2, 3, 8, 9), (5, 3, 2, 3), [2, 1], [0, 1, 1, 1], [1, 3], 1, True),
    ]:
        x = torch.randn(xs, **opts)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        w, b = torch.randn(ws, **opts), torch.randn(ws[0], **opts)
        y = FWD(x, w, b, stride, pad, dil, groups)
        gy = torch.randn_like(y)
        out.append((x, w, b, gy, stride, pad, dil, groups))
    return out


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for i, (x, w, b, gy, stride, pad, dil, groups) in enumerate(_op_samples(device)):
        rg = i == 0  # one sample with grads (autograd registration), one without
        xr, wr, br, gyr = (t.detach().requires_grad_(rg) for t in (x, w, b, gy))
        torch.library.opcheck(FWD, (xr, wr, br if rg else None, stride, pad, dil, groups))
        torch.library.opcheck(DGRAD, (gyr, wr, list(x.shape), stride, pad, dil, groups))
        torch.library.opcheck(WGRAD, (gyr, xr, list(w.shape), stride, pad, dil, groups, rg))


class ASPP(nn.Module):
    """DeepLab v3's atrous spatial pyramid pooling head, on rnnkern.nn.Conv2d."""

    def __init__(self, cin, cout, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([rnn.Conv2d(cin, cout, 1, bias=False)] + [
            rnn.Conv2d(cin, cout, 3, padding=r, dilation=r, bias=False) for r in rates])
        self.project = rnn.Conv2d(cout * (len(rates) + 1), cout, 1)

    def forward(self, x):
        return self.project(torch.cat([torch.relu(b(x)) for b in self.branches], dim=1))


@pytest.mark.parametrize("device", DEVICES)
def test_compile_aspp_fullgraph(device):
    torch._dynamo.reset()
    model = ASPP(8, 4).to(device)
    x = torch.randn(2, 8, 13, 11, device=device, requires_grad=True)
    y_eager = model(x)
    gx_eager, = torch.autograd.grad(y_eager.sum(), x)
    # CPU: aot_eager (dynamo fullgraph + the fakes + AOT autograd, without inductor's C++ compile
    # time); CUDA: inductor
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager" if device == "cpu" else "inductor")
    y = compiled(x)
    gx, = torch.autograd.grad(y.sum(), x)
    assert rel_err(y, y_eager) < 1e-5 and rel_err(gx, gx_eager) < 1e-5
    # and torch's own module computes the same thing
    tm = [nn.Conv2d(8, 4, 1, bias=False)] + [nn.Conv2d(8, 4, 3, padding=r, dilation=r, bias=False) for r in (6, 12, 18)]
    for t, m in zip(tm, model.branches):
        t.load_state_dict(m.state_dict())
    tp = nn.Conv2d(16, 4, 1)
    tp.load_state_dict(model.project.state_dict())
    with torch.no_grad():
        y_torch = tp.to(device)(torch.cat([torch.relu(t.to(device)(x)) for t in tm], dim=1))
    assert rel_err(y, y_torch) < (1e-5 if device == "cpu" else TOL_TF32)


# ----------------------------------------------------------------------------------------------
# layouts, strides, edge cases

@pytest.mark.parametrize("device", DEVICES)
def test_channels_last_in_channels_last_out(device):
    x = torch.randn(2, 6, 9, 10, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(4, 6, 3, 3, device=device, requires_grad=True)
    y = RF.conv2d(x, w, None, padding=2, dilation=2)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    y.backward(torch.randn_like(y))
    assert x.grad.is_contiguous(memory_format=torch.channels_last)
    # the fakes agree with the kernels on strides (torch.compile relies on it)
    from torch._subclasses.fake_tensor import FakeTensorMode
    mode = FakeTensorMode()
    fx, fw = mode.from_tensor(x.detach()), mode.from_tensor(w.detach())
    with mode:
        fy = FWD(fx, fw, None, [1, 1], [2, 2, 2, 2], [2, 2], 1)
    assert fy.stride() == y.stride()
    # a channels_last module on channels_last data
    m = rnn.Conv2d(6, 4, 3, padding="same", dilation=3).to(device).to(memory_format=torch.channels_last)
    assert m(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
def test_output_layout_follows_weight_like_torch(device, strict_fp32):
    """An NCHW input with a channels_last weight gives a channels_last output (torch's rule); a
    weight that is merely non-contiguous (a transposed view, a slice) does not. True fp32 on both
    sides (strict_fp32): the values are checked to fp32's tolerance, which TF32 would miss."""
    x = torch.randn(2, 4, 8, 9, device=device)
    for w in (torch.randn(6, 4, 3, 3, device=device), torch.randn(4, 6, 3, 3, device=device)):  # conv, transposed
        conv_ours, conv_torch = (RF.conv2d, TF.conv2d) if w.shape[1] == 4 else (RF.conv_transpose2d,
                                                                                 TF.conv_transpose2d)
        for weight in (w.contiguous(memory_format=torch.channels_last), w.transpose(2, 3), w[:, :, :, :2]):
            ours, theirs = conv_ours(x, weight), conv_torch(x, weight)
            assert ours.shape == theirs.shape
            assert ours.is_contiguous() == theirs.is_contiguous(), (weight.stride(), ours.stride(), theirs.stride())
            assert rel_err(ours, theirs) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    base = torch.randn(3, 10, 14, 17, dtype=torch.float64, device=device)
    x = base[::2, 1:7, ::2, 3:].transpose(2, 3)           # (2, 6, 7, 7) with odd strides
    w = torch.randn(3, 4, 6, 2, dtype=torch.float64, device=device).permute(0, 3, 1, 2)  # (3, 2, 4, 6)
    w = w[:, :, :3, ::2]                                   # (3, 2, 3, 3)
    b = torch.randn(6, dtype=torch.float64, device=device)[::2]
    kw = dict(padding=2, dilation=2, groups=3)
    assert not x.is_contiguous() and not w.is_contiguous() and not b.is_contiguous()
    y = RF.conv2d(x, w, b, **kw)
    yr = TF.conv2d(x.contiguous(), w.contiguous(), b.contiguous(), **kw)
    assert rel_err(y, yr) < TOL[torch.float64]
    # a non-contiguous grad_output (expand) through autograd
    xr, wr = x.detach().requires_grad_(), w.detach().requires_grad_()
    out = RF.conv2d(xr, wr, None, **kw)
    gy = torch.randn(1, out.shape[1], 1, out.shape[3], dtype=torch.float64, device=device).expand_as(out)
    out.backward(gy)
    xt, wt = x.detach().requires_grad_(), w.detach().requires_grad_()
    TF.conv2d(xt, wt, None, **kw).backward(gy.contiguous())
    assert rel_err(xr.grad, xt.grad) < TOL[torch.float64] and rel_err(wr.grad, wt.grad) < TOL[torch.float64]


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch_and_unbatched(device):
    x = torch.randn(0, 4, 7, 8, device=device, requires_grad=True)
    w = torch.randn(6, 4, 3, 3, device=device, requires_grad=True)
    b = torch.randn(6, device=device, requires_grad=True)
    y = RF.conv2d(x, w, b, padding=1, dilation=2)
    assert y.shape == (0, 6, 5, 6)
    y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w)) and torch.equal(b.grad,
                                                                                                   torch.zeros_like(b))
    x3 = torch.randn(4, 7, 8, device=device)
    # fp64 references: on a GPU torch's fp32 conv may run in TF32 (cudnn.allow_tf32 is on by default)
    assert rel_err(RF.conv2d(x3, w, b, padding=1), TF.conv2d(x3.double(), w.double(), b.double(), padding=1)) < 1e-5
    x2, w1 = torch.randn(4, 9, device=device), torch.randn(5, 4, 3, device=device)
    assert rel_err(RF.conv1d(x2, w1, padding="same"), TF.conv1d(x2.double(), w1.double(), padding="same")) < 1e-5


@pytest.mark.parametrize("device", DEVICES)
def test_autocast(device):
    """Under autocast the convolution runs in the autocast dtype, as torch's does."""
    dt = torch.bfloat16
    m = rnn.Conv2d(8, 16, 3, padding=2, dilation=2).to(device)
    t = nn.Conv2d(8, 16, 3, padding=2, dilation=2).to(device)
    t.load_state_dict(m.state_dict())
    x = torch.randn(2, 8, 9, 10, device=device, requires_grad=True)
    with torch.autocast(device_type=device, dtype=dt):
        y, yt = m(x), t(x)
    assert y.dtype == yt.dtype == dt
    assert rel_err(y, yt) < 2e-2
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and m.weight.grad.dtype == torch.float32


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x = torch.randn(5, 16, 19, 23, device=device)
    w = torch.randn(24, 16, 3, 3, device=device)
    y = RF.conv2d(x, w, None, padding=6, dilation=6)
    gy = torch.randn_like(y)
    runs = []
    for _ in range(2):
        runs.append((FWD(x, w, None, [1, 1], [6, 6, 6, 6], [6, 6], 1),
                     DGRAD(gy, w, list(x.shape), [1, 1], [6, 6, 6, 6], [6, 6], 1),
                     *WGRAD(gy, x, list(w.shape), [1, 1], [6, 6, 6, 6], [6, 6], 1, True)))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_backward_input_serves_transposed_conv(device):
    """conv2d_backward_input with an input_size past the minimum is conv_transpose2d with
    output_padding (the published contract the transposed convolution relies on)."""
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64, device=device)
    w = torch.randn(6, 2, 3, 3, dtype=torch.float64, device=device)
    for stride, pad, dil, opad in [((2, 2), (1, 1), (1, 1), (1, 1)), ((3, 2), (0, 2), (2, 1), (2, 0))]:
        ref = TF.conv_transpose2d(x, w, None, stride, pad, opad, 3, dil)
        got = DGRAD(x, w, list(ref.shape), list(stride), [pad[0], pad[1], pad[0], pad[1]], list(dil), 3)
        assert rel_err(got, ref) < TOL[torch.float64]


# ----------------------------------------------------------------------------------------------
# modules

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_module_dropin(device, padding_mode):
    for cls, tcls, xs, kw in [
        (rnn.Conv2d, nn.Conv2d, (2, 4, 11, 12), dict(kernel_size=3, padding="same", dilation=2, groups=2)),
        (rnn.Conv2d, nn.Conv2d, (2, 4, 11, 12), dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
                                                     bias=False)),
        (rnn.Conv1d, nn.Conv1d, (2, 4, 13), dict(kernel_size=4, padding="same", dilation=3)),
        (rnn.Conv1d, nn.Conv1d, (2, 4, 13), dict(kernel_size=3, stride=2, padding=2, groups=4)),
    ]:
        torch.manual_seed(0)
        ours = cls(4, 8, padding_mode=padding_mode, device=device, dtype=torch.float64, **kw)
        torch.manual_seed(0)
        theirs = tcls(4, 8, padding_mode=padding_mode, device=device, dtype=torch.float64, **kw)
        # same constructor, init (same RNG draws), parameter names, repr
        assert repr(ours) == repr(theirs)
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
        for p, q in zip(ours.parameters(), theirs.parameters()):
            assert torch.equal(p, q)
        # state_dicts load both ways
        theirs.load_state_dict(ours.state_dict())
        ours.load_state_dict(theirs.state_dict())
        x = torch.randn(xs, dtype=torch.float64, device=device, requires_grad=True)
        y, yt = ours(x), theirs(x)
        assert rel_err(y, yt) < TOL[torch.float64]
        g = torch.randn_like(y)
        gx, gw = torch.autograd.grad(y, (x, ours.weight), g)
        gxt, gwt = torch.autograd.grad(yt, (x, theirs.weight), g)
        assert rel_err(gx, gxt) < TOL[torch.float64] and rel_err(gw, gwt) < TOL[torch.float64]


# ----------------------------------------------------------------------------------------------
# bad inputs

def _bad_cases():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    return [
        ("channel mismatch", lambda: RF.conv2d(torch.randn(2, 5, 8, 8), w), ValueError, "channel"),
        ("groups not dividing in", lambda: RF.conv2d(x, torch.randn(6, 1, 3, 3), groups=3), ValueError,
         "groups"),
        ("groups not dividing out", lambda: RF.conv2d(x, torch.randn(5, 2, 3, 3), groups=2), ValueError, "groups"),
        ("groups zero", lambda: RF.conv2d(x, w, groups=0), ValueError, "groups"),
        ("kernel > padded input", lambda: RF.conv2d(torch.randn(1, 4, 4, 4), w, padding=1, dilation=3),
         ValueError, "kernel size"),
        ("zero stride", lambda: RF.conv2d(x, w, stride=0), ValueError, "stride"),
        ("negative stride", lambda: RF.conv2d(x, w, stride=(1, -1)), ValueError, "stride"),
        ("zero dilation", lambda: RF.conv2d(x, w, dilation=0), ValueError, "dilation"),
        ("negative padding", lambda: RF.conv2d(x, w, padding=-1), ValueError, "padding"),
        ("bad padding string", lambda: RF.conv2d(x, w, padding="full"), ValueError, "padding"),
        ("same with stride", lambda: RF.conv2d(x, w, stride=2, padding="same"), ValueError, "same"),
        ("wrong input dims", lambda: RF.conv2d(torch.randn(2, 2, 4, 8, 8), w), ValueError, "input"),
        ("wrong weight dims", lambda: RF.conv2d(x, torch.randn(6, 4, 3)), ValueError, "weight"),
        ("conv1d with 2-D weight", lambda: RF.conv1d(torch.randn(2, 4, 9), w), ValueError, "weight"),
        ("bias size", lambda: RF.conv2d(x, w, torch.randn(5)), ValueError, "bias"),
        ("mixed dtypes", lambda: RF.conv2d(x.double(), w), TypeError, "dtype"),
        ("mixed bias dtype", lambda: RF.conv2d(x, w, torch.randn(6, dtype=torch.float64)), TypeError, "bias"),
        ("integer input", lambda: RF.conv2d(x.long(), w.long()), TypeError, "floating"),
        ("stride length", lambda: RF.conv2d(x, w, stride=(1, 1, 1)), ValueError, "stride"),
        ("mixed devices", lambda: RF.conv2d(x, w.to("meta")), RuntimeError, "weight"),
    ]


@pytest.mark.parametrize("case", _bad_cases(), ids=lambda c: c[0])
def test_bad_inputs(case):
    _, fn, exc, match = case
    with pytest.raises(exc, match=match):
        fn()


def test_kernel_boundary_checks():
    """The C++ boundary validates too (direct callers such as the transposed convolution)."""
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    with pytest.raises(RuntimeError, match="groups"):
        FWD(x, torch.randn(6, 1, 3, 3), None, [1, 1], [0, 0, 0, 0], [1, 1], 3)
    with pytest.raises(RuntimeError, match="grad_output"):
        DGRAD(torch.randn(2, 6, 5, 5), w, list(x.shape), [1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="smaller than the dilated kernel"):
        FWD(x, w, None, [1, 1], [0, 0, 0, 0], [5, 5], 1)
    with pytest.raises(RuntimeError, match="padding"):
        FWD(x, w, None, [1, 1], [0, 0, 0], [1, 1], 1)


@pytest.mark.parametrize("dtype,cin,cout", [(torch.float64, 5, 6), (torch.float32, 16, 16)])
@pytest.mark.parametrize("pad", [[0, 1, 3, 1], [1, 0, 1, 3], [3, 1, 0, 1], [1, 3, 1, 0]])
def test_asymmetric_padding_past_kernel_extent(dtype, cin, cout, pad):
    """The ops take 4-entry padding (top, left, bottom, right); one side larger than the dilated
    kernel extent at stride 1 (where grad_input is no longer a convolution of grad_output with
    non-negative padding): forward and both gradients against torch on the padded input."""
    pt, pl, pb, pr = pad
    x = torch.randn(2, cin, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
    ref = TF.conv2d(TF.pad(x, (pl, pr, pt, pb)), w)
    gy = torch.randn_like(ref)
    gx_ref, gw_ref = torch.autograd.grad(ref, (x, w), gy)
    xd, wd, gyd = x.detach().to(dtype), w.detach().to(dtype), gy.to(dtype)
    assert rel_err(FWD(xd, wd, None, [1, 1], pad, [1, 1], 1), ref) < TOL[dtype]
    assert rel_err(DGRAD(gyd, wd, list(x.shape), [1, 1], pad, [1, 1], 1), gx_ref) < TOL[dtype]
    assert rel_err(WGRAD(gyd, xd, list(w.shape), [1, 1], pad, [1, 1], 1, False)[0], gw_ref) < TOL[dtype]


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_wide_channels_direct_path(layout):
    """>= 16 output channels per group in fp32: the CPU's direct AVX-512 path (forward and the
    stride-1 grad_input), over random stride / dilation / asymmetric 'same' padding / groups, with
    partial channel vectors (17, 40) and rows wider than one pixel block."""
    rng = _rng()
    for _ in range(6):
        groups = rng.choice([1, 1, 2])
        cout = groups * rng.choice([16, 17, 40, 70])
        cin = groups * rng.randint(1, 9)
        kernel = [rng.randint(1, 4), rng.randint(1, 4)]
        dil = [rng.choice([1, 2, 5]), rng.choice([1, 3, 7])]
        if rng.random() < 0.5:
            kw = dict(stride=[1, 1], padding="same", dilation=dil, groups=groups)
        else:
            kw = dict(stride=[rng.randint(1, 3), rng.randint(1, 3)], padding=[rng.randint(0, 3), rng.randint(0, 3)],
                      dilation=dil, groups=groups)
        size = [dil[i] * (kernel[i] - 1) + 1 + rng.randint(0, 12) for i in range(2)]
        size[1] += 30
        _compare(2, (rng.randint(1, 2), cin, *size), (cout, cin // groups, *kernel), kw, "cpu", torch.float32,
                 bias=rng.random() < 0.5, layout=layout)


def _wgrad_direct_case(rng):
    """Random fp32 weight-gradient geometry for the CPU's direct AVX-512 wgrad: >= 16 channels per
    group on the output side, the input side or both (partial vectors: 17, 20, 40, 70), groups,
    stride, dilation, asymmetric padding, mixed operand layouts, sometimes rows longer than one
    pixel band."""
    groups = rng.choice([1, 1, 2])
    side = rng.choice(["k", "c", "both"])
    kg = rng.choice([16, 17, 20, 40, 70]) if side != "c" else rng.randint(1, 9)
    cg = rng.choice([16, 17, 20, 40, 70]) if side != "k" else rng.randint(1, 9)
    kernel = [rng.randint(1, 4), rng.randint(1, 4)]
    dil = [rng.choice([1, 2, 5]), rng.choice([1, 3, 7])]
    stride = [rng.randint(1, 3), rng.randint(1, 3)]
    pad = [rng.randint(0, 4) for _ in range(4)]  # top, left, bottom, right
    eff = [dil[i] * (kernel[i] - 1) + 1 for i in range(2)]
    size = [max(1, eff[0] - pad[0] - pad[2]) + rng.randint(0, 10), max(1, eff[1] - pad[1] - pad[3]) + rng.randint(0, 10)]
    if rng.random() < 0.3:
        size[1] += 100 * stride[1]  # output rows longer than one band
    return dict(n=rng.randint(1, 3), groups=groups, cin=groups * cg, cout=groups * kg, kernel=kernel, dil=dil,
                stride=stride, pad=pad, size=size, x_cl=rng.random() < 0.5, gy_cl=rng.random() < 0.5)


def _wgrad_ref(c, x, gy):
    """fp64 torch reference for the asymmetric padding: the padded input with padding 0."""
    pt, pl, pb, pr = c["pad"]
    w = torch.zeros(c["cout"], c["cin"] // c["groups"], *c["kernel"], dtype=torch.float64)
    return torch.ops.aten.convolution_backward(gy, TF.pad(x, (pl, pr, pt, pb)), w, None, c["stride"], [0, 0], c["dil"],
                                               False, [0, 0], c["groups"], [False, True, False])[1]


# The direct wgrad's result slabs (RNNKERN_CONV_WGRAD_SLAB_BYTES): the default size, and slabs of
# one to a few B-channels (ragged last slab, transpose tails).
WGRAD_SLABS = {"default": "", "small": "9000"}


@pytest.mark.parametrize("slabs", list(WGRAD_SLABS))
def test_wide_channels_direct_wgrad(monkeypatch, slabs):
    """fp32 weight gradient on the direct AVX-512 kernel (either channel side vectorised) against
    fp64 torch, random geometry, both layouts of each operand independently, default and small
    result slabs; bias grad too."""
    monkeypatch.setenv("RNNKERN_CONV_WGRAD_SLAB_BYTES", WGRAD_SLABS[slabs])
    rng = _rng()
    for _ in range(10):
        c = _wgrad_direct_case(rng)
        x = torch.randn(c["n"], c["cin"], *c["size"], dtype=torch.float64)
        pt, pl, pb, pr = c["pad"]
        oh = (c["size"][0] + pt + pb - c["dil"][0] * (c["kernel"][0] - 1) - 1) // c["stride"][0] + 1
        ow = (c["size"][1] + pl + pr - c["dil"][1] * (c["kernel"][1] - 1) - 1) // c["stride"][1] + 1
        gy = torch.randn(c["n"], c["cout"], oh, ow, dtype=torch.float64)
        ref = _wgrad_ref(c, x, gy)
        xs = x.float().contiguous(memory_format=torch.channels_last if c["x_cl"] else torch.contiguous_format)
        gys = gy.float().contiguous(memory_format=torch.channels_last if c["gy_cl"] else torch.contiguous_format)
        gw, gb = WGRAD(gys, xs, list(ref.shape), c["stride"], c["pad"], c["dil"], c["groups"], True)
        assert gw.shape == ref.shape and gw.is_contiguous() and gw.dtype == torch.float32
        assert rel_err(gw, ref) < TOL[torch.float32], c
        assert rel_err(gb, gy.sum((0, 2, 3))) < TOL[torch.float32], c


def test_direct_wgrad_thread_count_independent(monkeypatch):
    """The direct wgrad splits work over threads by slabs of channels only, and a slab's size never
    changes the sums: 1 and 2 threads, default and small slabs, all give the same bits (both
    channel sides, a ragged one, rows of two bands, and d = 18 with most taps partly in padding)."""
    threads = torch.get_num_threads()
    try:
        for cin, cout, d, groups in [(64, 64, 18, 1), (70, 20, 2, 1), (40, 34, 1, 2), (9, 48, 3, 1)]:
            x = torch.randn(2, cin, 21, 130)
            gy = torch.randn(2, cout, 21, 130)
            outs = []
            for slabs in WGRAD_SLABS.values():
                monkeypatch.setenv("RNNKERN_CONV_WGRAD_SLAB_BYTES", slabs)
                for t in (1, 2):
                    torch.set_num_threads(t)
                    outs.append(WGRAD(gy, x, [cout, cin // groups, 3, 3], [1, 1], [d] * 4, [d, d], groups, False)[0])
            assert all(torch.equal(outs[0], o) for o in outs[1:]), (cin, cout, d, groups)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_direct_wgrad_cpu(dtype):
    """bf16 / fp16 operands take the fp32 direct wgrad (computed in fp32, rounded once): the
    results come back in the operands' dtype, within 2x torch's own error vs fp64."""
    x = torch.randn(2, 24, 11, 13, dtype=torch.float64)
    gy = torch.randn(2, 32, 11, 13, dtype=torch.float64)
    w = torch.zeros(32, 24, 3, 3, dtype=torch.float64)
    args = ([1, 1], [2, 2], [2, 2], False, [0, 0], 1, [False, True, True])
    _, ref_w, ref_b = torch.ops.aten.convolution_backward(gy, x, w, [32], *args)
    _, th_w, th_b = torch.ops.aten.convolution_backward(gy.to(dtype), x.to(dtype), w.to(dtype), [32], *args)
    gw, gb = WGRAD(gy.to(dtype), x.to(dtype), [32, 24, 3, 3], [1, 1], [2, 2, 2, 2], [2, 2], 1, True)
    assert gw.dtype == gb.dtype == dtype
    assert rel_err(gw, ref_w) <= 2 * rel_err(th_w, ref_w)
    assert rel_err(gb, ref_b) <= 2 * rel_err(th_b, ref_b) + 1e-3


@pytest.mark.cuda
def test_cuda_wgrad_too_many_taps_is_an_error():
    """A kernel of more than 65535 taps does not fit one wgrad launch's grid: a clear error, not
    a raw launch failure."""
    x = torch.randn(1, 1, 256, 257, device="cuda")
    w = torch.randn(1, 1, 256, 257, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match="exceeds one launch"):
        RF.conv2d(x, w).sum().backward()


def test_integer_arguments_like_torch():
    """stride / padding / dilation take ints and numpy integers, never floats (torch raises a
    TypeError; a silent int() would run stride 1.5 as 1); argument errors are ValueError /
    TypeError and also RuntimeError, as torch raises for the same input."""
    import numpy as np
    x, w = torch.randn(1, 2, 9, 9), torch.randn(3, 2, 3, 3)
    torch.testing.assert_close(RF.conv2d(x, w, stride=np.int64(2), dilation=(np.int32(2), 1)),
                               TF.conv2d(x, w, stride=2, dilation=(2, 1)))
    for bad in (dict(stride=(1.5, 1.5)), dict(padding=(1.5, 1)), dict(dilation=2.0)):
        with pytest.raises(TypeError, match="must be an int"):
            RF.conv2d(x, w, **bad)
    with pytest.raises(RuntimeError, match="channel"):  # torch: RuntimeError; ours is also a ValueError
        rnn.Conv2d(4, 6, 3)(torch.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="channel"):
        rnn.Conv2d(4, 6, 3)(torch.randn(2, 5, 8, 8))


def test_jit_trace_same_padding():
    """torch.jit.trace records sizes as tensors; padding='same' still resolves to ints, and the
    trace runs other input sizes like the module."""
    import warnings
    m = rnn.Conv2d(4, 6, 3, padding="same", dilation=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(m, torch.randn(1, 4, 8, 8))
    x = torch.randn(2, 4, 5, 7)
    torch.testing.assert_close(traced(x), m(x))


@pytest.mark.parametrize("engine", ["", "gemm"], ids=["by_size", "gemm"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("channels", [192, 256, 520])
def test_cpu_wide_reductions(strict_fp32, monkeypatch, layout, channels, engine):
    """fp32 3x3 convolutions with wide reductions on the CPU: the direct kernels (several
    reduction chunks at 520 channels), the GEMM engine forced (RNNKERN_CONV_CPU_FORWARD), a weight
    row pitch that is a multiple of 64 floats (the padded pitch), and ragged channel vectors."""
    monkeypatch.setenv("RNNKERN_CONV_CPU_FORWARD", engine)
    _compare(2, (1, channels, 9, 7), (channels + 8, channels, 3, 3), dict(padding=1), "cpu", torch.float32,
             layout=layout)
    _compare(2, (2, channels, 6, 5), (64, channels, 3, 3), dict(padding=2, dilation=2, stride=(1, 2)), "cpu",
             torch.float32, layout=layout, bias=False)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cpu_direct_blocking(strict_fp32, monkeypatch, layout):
    """The direct kernels' reduction chunks and row bands, forced small (RNNKERN_CONV_CHUNK_BYTES,
    RNNKERN_CONV_BAND_PIXELS) so small shapes take many chunks (partial sums reloaded; chunks of
    taps at 1 and 5000 bytes, of channels at 40000 with >= 17 channels), ragged bands and several
    64-channel slices, over random geometry: forward and grad_input vs fp64."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    rng = _rng()
    for _ in range(8):
        monkeypatch.setenv("RNNKERN_CONV_CHUNK_BYTES", str(rng.choice([1, 5000, 40000])))
        monkeypatch.setenv("RNNKERN_CONV_BAND_PIXELS", str(rng.choice([1, 7, 40])))
        groups = rng.choice([1, 1, 2])
        cout, cin = groups * rng.choice([16, 40, 70, 130]), groups * rng.randint(3, 40)
        kernel = [rng.randint(1, 4), rng.randint(2, 4)]
        dil = [rng.choice([1, 2]), rng.choice([1, 3])]
        kw = dict(padding="same", dilation=dil, groups=groups) if rng.random() < 0.5 else \
            dict(stride=[1, rng.randint(1, 2)], padding=[rng.randint(0, 2), rng.randint(0, 2)], dilation=dil,
                 groups=groups)
        size = [dil[i] * (kernel[i] - 1) + 1 + rng.randint(0, 9) for i in range(2)]
        _compare(2, (rng.randint(1, 3), cin, *size), (cout, cin // groups, *kernel), kw, "cpu", torch.float32,
                 bias=rng.random() < 0.5, layout=layout)


@pytest.mark.parametrize("kernel", [(3, 3), (5, 4), (7, 7), (1, 17)])
def test_cpu_direct_grad_input_weight_pack(strict_fp32, kernel):
    """grad_input's flipped weight on the direct kernels: packed by 16 x 16 register transposes of
    (16 channels, up to 16 taps) from a contiguous weight (taps > 16 in several passes; ragged
    channel slices), by gathers from any other strides; both against fp64."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    for groups, cin, cout in [(1, 40, 24), (2, 74, 18), (1, 130, 33)]:
        kw = dict(padding=[kernel[0] // 2, kernel[1] // 2], groups=groups)
        _compare(2, (2, cin, 9, 19), (cout, cin // groups, *kernel), kw, "cpu", torch.float32, bias=False)
        w = torch.randn(cin // groups, cout, *kernel, dtype=torch.float64).transpose(0, 1)  # other strides
        p = kw["padding"]
        gy = torch.randn(2, cout, 9 + 2 * p[0] - kernel[0] + 1, 19 + 2 * p[1] - kernel[1] + 1, dtype=torch.float64)
        ref = torch.ops.aten.convolution_backward(gy, torch.zeros(2, cin, 9, 19, dtype=torch.float64), w, None,
                                                  [1, 1], kw["padding"], [1, 1], False, [0, 0], groups,
                                                  [True, False, False])[0]
        got = DGRAD(gy.float(), w.float(), [2, cin, 9, 19], [1, 1], [p[0], p[1], p[0], p[1]], [1, 1], groups)
        assert rel_err(got, ref) < TOL[torch.float32], (groups, cin, cout)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cpu_direct_narrow_outputs(strict_fp32, layout):
    """Fewer output channels a group than a vector (segmentation heads, narrow nets) on the direct
    kernels: the packed weight's zero columns past Kg, in both layouts, grad_input's transposed
    convolution with few input channels, over random geometry vs fp64."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    rng = _rng()
    for cout, cin, groups in [(1, 8, 1), (2, 5, 1), (3, 16, 1), (11, 64, 1), (4, 4, 1), (6, 6, 2), (10, 3, 1)]:
        kernel = [rng.randint(1, 3), rng.randint(2, 4)]
        dil = [rng.choice([1, 2]), rng.choice([1, 3])]
        kw = dict(stride=[rng.randint(1, 2), 1], padding=[rng.randint(0, 2), rng.randint(0, 2)], dilation=dil,
                  groups=groups)
        size = [dil[i] * (kernel[i] - 1) + 1 + rng.randint(0, 9) for i in range(2)]
        _compare(2, (rng.randint(1, 3), cin, *size), (cout, cin // groups, *kernel), kw, "cpu", torch.float32,
                 bias=rng.random() < 0.5, layout=layout)


@pytest.mark.parametrize("engine", ["", "gemm"], ids=["by_size", "gemm"])
def test_cpu_narrow_nchw_rows(strict_fp32, monkeypatch, engine):
    """NCHW with <= 8 output channels a group and output rows of >= 32 pixels (conv_narrow.h:
    vectors along the row, 4 channels x 4 vectors or 8 x 2, channel counts padded to the block,
    lanes in the padding masked off, the masks set once per tap column), forward and grad_input (whose transposed convolution is
    narrow when the input channels are), and the GEMM engine forced, vs fp64."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    monkeypatch.setenv("RNNKERN_CONV_CPU_FORWARD", engine)
    for xs, ws, kw in [((2, 5, 6, 70), (3, 5, 3, 3), dict(padding=1)),
                       ((1, 16, 9, 37), (7, 16, 2, 3), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
                       ((2, 12, 5, 40), (8, 6, 3, 3), dict(padding="same", groups=2)),
                       ((1, 8, 7, 64), (1, 8, 1, 5), dict(padding=(0, 2))),
                       ((1, 3, 4, 34), (8, 3, 3, 3), {}),
                       ((1, 4, 5, 66), (4, 4, 3, 3), dict(padding=3, dilation=3)),
                       ((1, 2, 3, 40), (2, 2, 1, 17), dict(padding=(0, 8)))]:  # wider than kMaxKW: direct kernels
        _compare(2, xs, ws, kw, "cpu", torch.float32, bias=True)


def test_cpu_narrow_nchw_weight_gradient(strict_fp32, monkeypatch, capfd):
    """The NCHW narrow weight gradient (conv_narrow.h: <= 8 channels a group on both sides, vectors
    along the output row, a task's accumulators per (input channel, kernel row) in a buffer, four
    output rows a pass): vs fp64 with row strides, dilation, padding wider than the kernel, groups
    (the second group's offsets), kernels 1 to 7 columns wide (the 2-channel blocks from 6), a case
    large enough to run tasks concurrently, and the same bits on 1 and 2 threads (the input
    channels split differently across tasks); the debug log shows the route ran."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    cases = [((2, 5, 9, 37), (3, 5, 3, 3), dict(stride=(2, 1), padding=(2, 4), dilation=(1, 2))),
             ((1, 16, 6, 48), (8, 8, 3, 7), dict(padding=(1, 3), groups=2)),
             ((2, 3, 5, 33), (2, 3, 2, 6), dict(padding=(0, 2))),
             ((1, 7, 4, 40), (5, 7, 3, 1), dict(padding=(1, 0), dilation=(2, 1))),
             ((1, 6, 5, 32), (8, 6, 3, 2), dict(padding=(1, 1), dilation=(2, 1))),
             ((1, 4, 7, 35), (6, 4, 2, 4), dict(padding=(1, 2))),
             ((2, 8, 5, 36), (3, 8, 3, 5), dict(padding=2, dilation=(1, 2))),
             ((2, 8, 34, 64), (8, 8, 3, 3), dict(padding=1))]  # > 2^21 MACs: tasks on both threads
    threads = torch.get_num_threads()
    try:
        for xs, ws, kw in cases:
            capfd.readouterr()
            x, gy_shape = torch.randn(xs, dtype=torch.float64), TF.conv2d(torch.randn(xs), torch.randn(ws), **kw).shape
            w = torch.randn(ws, dtype=torch.float64)
            gy = torch.randn(gy_shape, dtype=torch.float64)
            ref = torch.autograd.grad(TF.conv2d(x.requires_grad_(), w.requires_grad_(), **kw), w, gy)[0]
            got = []
            for t in (1, 2):
                torch.set_num_threads(t)
                wf = w.detach().float().requires_grad_()
                got.append(torch.autograd.grad(RF.conv2d(x.detach().float(), wf, **kw), wf, gy.float())[0])
            assert torch.equal(got[0], got[1]), (xs, ws, kw)
            assert rel_err(got[0], ref) < 1e-5, (rel_err(got[0], ref), xs, ws, kw)
            assert "conv2d_backward_weight (cpu): narrow NCHW rows" in capfd.readouterr().err, (xs, ws, kw)
    finally:
        torch.set_num_threads(threads)


def test_cpu_narrow_channels_last_through_nchw(strict_fp32, monkeypatch, capfd):
    """Narrow channels_last layers run the NCHW row kernels on NCHW copies (conv.cpp, kNarrowCopies):
    forward (<= 8 output channels a group, rows >= 64), grad_input (<= 8 input channels, stride 1)
    and grad_weight (Kg x Cg <= 32); each result vs fp64, in channels_last like its operands, and
    the same bits on 1 and 2 threads."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    cl = torch.channels_last
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    # (x, w, kwargs, which of forward / grad_input / grad_weight go through the copies)
    cases = [((2, 4, 6, 64), (4, 4, 3, 3), dict(padding=1), (1, 1, 1)),
             # (8 output channels: grad_weight on conv_narrow.h's channels_last kernel, no copies)
             ((1, 3, 5, 70), (8, 3, 3, 3), dict(padding=(1, 2), dilation=(1, 2)), (1, 1, 0)),
             ((1, 8, 7, 66), (2, 8, 3, 3), dict(stride=(2, 1), padding=(0, 1)), (1, 0, 1)),  # strided grad_input
             ((1, 24, 3, 64), (4, 24, 3, 5), dict(padding=(1, 2)), (1, 0, 0)),  # Cg 24
             # layout_copy.h's transposes: channel counts 5, 7, 13, 16, pixel counts not a multiple of 16
             ((2, 5, 3, 65), (7, 5, 3, 3), dict(padding=1), (1, 1, 0)),  # grad_weight: Kg x Cg 35
             ((1, 13, 2, 67), (3, 13, 1, 3), dict(padding=(0, 1)), (1, 0, 0)),
             ((1, 16, 2, 64), (2, 16, 3, 3), dict(padding=1), (1, 0, 0))]
    threads = torch.get_num_threads()
    try:
        for xs, ws, kw, routes in cases:
            capfd.readouterr()
            x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64)
            stride, pad = kw.get("stride", (1, 1)), kw["padding"]
            pad = [pad, pad] if isinstance(pad, int) else list(pad)
            dil = list(kw.get("dilation", (1, 1)))
            y = TF.conv2d(x, w, **kw)
            gy = torch.randn_like(y)
            ref_gx, ref_gw, _ = torch.ops.aten.convolution_backward(gy, x, w, None, list(stride), pad, dil, False,
                                                                    [0, 0], 1, [True, True, False])
            xf, wf, gyf = (t.float().contiguous(memory_format=cl) for t in (x, w, gy))
            runs = []
            for t in (1, 2):
                torch.set_num_threads(t)
                runs.append((FWD(xf, wf.contiguous(), None, list(stride), pad, dil, 1),
                             DGRAD(gyf, wf.contiguous(), list(xs), list(stride), pad, dil, 1),
                             WGRAD(gyf, xf, list(ws), list(stride), pad, dil, 1, False)[0]))
            for a, b in zip(*runs):
                assert torch.equal(a, b), (xs, ws, kw)
            out, gx, gw = runs[0]
            assert out.is_contiguous(memory_format=cl) and gx.is_contiguous(memory_format=cl)
            for name, o, r in (("output", out, y), ("grad_input", gx, ref_gx), ("grad_weight", gw, ref_gw)):
                assert rel_err(o, r) < 1e-5, (name, rel_err(o, r), xs, ws, kw)
            err = capfd.readouterr().err
            for op, copied in zip(("conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight"), routes):
                assert (f"{op} (cpu): narrow NCHW rows through NCHW copies" in err) == bool(copied), (op, xs, ws, kw)
    finally:
        torch.set_num_threads(threads)


def test_cpu_narrow_channels_last_weight_gradient(strict_fp32, monkeypatch, capfd):
    """The channels_last weight gradient with 8 output channels a group (conv_narrow.h,
    backward_weight_cl_k8: vectors along the output channels; with 8 input channels too, four
    512-bit vectors of channel pairs a tap, two tap rows a pass where their valid rows agree): vs
    fp64 for 2, 3, 5, 7 and 8 input channels, strides, dilation, padding wider than the kernel and 'same' with
    an even kernel, groups, kernels 1 x 5 to 7 x 2, a tap row that reads only padding, images in
    parallel, and the same bits on 1 and 2 threads; the debug log shows the route ran."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    cl = torch.channels_last
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    cases = [((2, 8, 12, 40), (8, 8, 3, 3), dict(padding=1)),
             ((3, 8, 9, 11), (8, 8, 3, 3), dict(padding=0)),  # valid padding: every tap row pairs
             ((1, 3, 7, 33), (8, 3, 3, 3), dict(stride=2, padding=(1, 2))),
             ((2, 5, 10, 9), (8, 5, 2, 4), dict(padding="same", dilation=(2, 1))),
             ((1, 16, 6, 13), (16, 8, 3, 3), dict(padding=2, dilation=2, groups=2)),
             ((1, 2, 5, 17), (8, 2, 1, 5), dict(padding=(0, 6))),
             ((2, 7, 4, 6), (8, 7, 7, 2), dict(padding=(5, 1))),  # rows that read only padding
             ((1, 8, 3, 20), (8, 8, 3, 6), dict(stride=(1, 3), padding=(2, 2))),
             ((8, 8, 16, 16), (8, 8, 3, 3), dict(padding=1))]
    threads = torch.get_num_threads()
    try:
        for xs, ws, kw in cases:
            capfd.readouterr()
            x, w = torch.randn(xs, dtype=torch.float64), torch.randn(ws, dtype=torch.float64)
            gy = torch.randn(TF.conv2d(x, w, **kw).shape, dtype=torch.float64)
            ref = torch.autograd.grad(TF.conv2d(x.requires_grad_(), w.requires_grad_(), **kw), w, gy)[0]
            got = []
            for t in (1, 2):
                torch.set_num_threads(t)
                wf = w.detach().float().requires_grad_()
                y = RF.conv2d(x.detach().float().contiguous(memory_format=cl), wf, **kw)
                got.append(torch.autograd.grad(y, wf, gy.float().contiguous(memory_format=cl))[0])
            assert torch.equal(got[0], got[1]), (xs, ws, kw)
            assert rel_err(got[0], ref) < 1e-5, (rel_err(got[0], ref), xs, ws, kw)
            assert "conv2d_backward_weight (cpu): narrow channels_last, 8 output channels" in capfd.readouterr().err, \
                (xs, ws, kw)
    finally:
        torch.set_num_threads(threads)


def test_cpu_direct_blocking_thread_count_independent(monkeypatch):
    """Reduction chunks depend on the geometry alone, bands on the thread count: 1 and 2 threads
    give the same bits, forward and grad_input, chunked or not."""
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    threads = torch.get_num_threads()
    x, w, gy = torch.randn(2, 150, 13, 17), torch.randn(80, 150, 3, 3), torch.randn(2, 80, 13, 17)
    try:
        for chunk in ("", "5000", "40000"):
            monkeypatch.setenv("RNNKERN_CONV_CHUNK_BYTES", chunk)
            outs = []
            for t in (1, 2):
                torch.set_num_threads(t)
                outs.append((FWD(x, w, None, [1, 1], [1, 1, 1, 1], [1, 1], 1),
                             DGRAD(gy, w, list(x.shape), [1, 1], [1, 1, 1, 1], [1, 1], 1)))
            assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]), chunk
    finally:
        torch.set_num_threads(threads)


def test_cpu_forward_engine_env_is_checked(monkeypatch):
    monkeypatch.setenv("RNNKERN_CONV_CPU_FORWARD", "fast")
    with pytest.raises(RuntimeError, match="RNNKERN_CONV_CPU_FORWARD must be 'direct' or 'gemm'"):
        RF.conv2d(torch.randn(1, 16, 6, 6), torch.randn(16, 16, 3, 3))


@pytest.mark.parametrize("shape", [(1, 64, 12, 12, 64), (1, 256, 6, 6, 256), (1, 512, 4, 4, 128), (2, 8, 12, 12, 4),
                                   (2, 4, 12, 12, 11)])
def test_cpu_forward_engine_choice(monkeypatch, capfd, shape):
    # the choice itself (RNNKERN_DEBUG=1 logs it): fp32 convolutions with >= 2 output channels
    # (NCHW) take the direct kernels at every size, forward and grad_input (results are tested above
    # on both engines); a threshold that comes back shows up here
    if not CPU_HAS_AVX512:
        pytest.skip("the direct kernels need AVX-512")
    n, c, h, w, k = shape
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    capfd.readouterr()
    x = torch.randn(n, c, h, w, requires_grad=True)
    RF.conv2d(x, torch.randn(k, c, 3, 3), padding=1).sum().backward()
    err = capfd.readouterr().err
    assert "conv2d_forward (cpu): direct engine" in err and "conv2d_backward_input (cpu): direct engine" in err
