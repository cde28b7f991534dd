"""Max-unpool (and nearest / bed-of-nails unpooling) against torch's ops and rnnkern.reference.

Unpooling only moves values, so forward results (and the gather backward) are compared for exact
equality; only the nearest backward (a window sum) uses a tolerance.
"""
import random

import pytest
import torch
import torch.nn.functional as TF
from torch import nn

import rnnkern
from rnnkern import functional as RF
from rnnkern import reference
from rnnkern.ops import max_unpool as unpool_ops
from tests.utils import DEVICES

FWD = torch.ops.rnnkern.max_unpool_forward.default
BWD = torch.ops.rnnkern.max_unpool_backward.default
MODE_INDICES, MODE_BED_OF_NAILS, MODE_NEAREST = (unpool_ops.MODE_INDICES, unpool_ops.MODE_BED_OF_NAILS,
                                                 unpool_ops.MODE_NEAREST)


# ----------------------------------------------------------------------------------------------
# helpers

def _rng():
    # conftest seeds torch per test node; derive Python's RNG from it so cases are reproducible
    return random.Random(torch.initial_seed())


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _default_size(in_sizes, k, s, p):
    return [(in_sizes[d] - 1) * s[d] + k[d] - 2 * p[d] for d in range(len(k))]


def _pool(x, nd, k, s, p):
    pool = TF.max_pool1d if nd == 1 else TF.max_pool2d
    return pool(x, k, s, p, return_indices=True)


def _torch_unpool(nd, v, i, k, s, p, out_size):
    """torch's op; half types run in fp32 and are cast back (unpool only moves values)."""
    f = TF.max_unpool1d if nd == 1 else TF.max_unpool2d
    if v.dtype in (torch.float16, torch.bfloat16):
        return f(v.float(), i, k, s, p, out_size).to(v.dtype)
    return f(v, i, k, s, p, out_size)


def _rand_cfg(nd, rng, *, kind="any"):
    """Random (kernel, stride, padding, input spatial size) valid for max_pool{nd}d.
    kind: 'tile' (kernel == stride, no padding: the gather path), 'overlap' (kernel > stride),
    'sparse' (kernel < stride), 'any'."""
    if kind == "any":
        kind = rng.choice(["tile", "overlap", "sparse"])
    k, s, p, size = [], [], [], []
    for _ in range(nd):
        if kind == "tile":
            kk = rng.randint(1, 4)
            ss, pp = kk, 0
        elif kind == "overlap":
            kk = rng.randint(2, 4)
            ss = rng.randint(1, kk - 1)
            pp = rng.randint(0, kk // 2)
        else:  # sparse
            kk = rng.randint(1, 3)
            ss = rng.randint(kk + 1, kk + 2)
            pp = rng.randint(0, kk // 2)
        lo = max(1, kk - 2 * pp)
        k.append(kk), s.append(ss), p.append(pp), size.append(rng.randint(lo, lo + 9))
    return k, s, p, size


def _unique_idx(batch_shape, spatial, plane, device="cpu"):
    """(batch..., *spatial) int64 indices, unique per plane, drawn from [0, plane)."""
    m = 1
    for d in spatial:
        m *= d
    assert m <= plane
    nplanes = 1
    for d in batch_shape:
        nplanes *= d
    rows = [torch.randperm(plane)[:m] for _ in range(nplanes)]
    idx = torch.stack(rows) if rows else torch.empty(0, m, dtype=torch.long)
    return idx.reshape(*batch_shape, *spatial).to(device)


# ----------------------------------------------------------------------------------------------
# forward vs torch: indices from real max_pool

FLOATS = [torch.float32, torch.float64]
HALFS = [torch.bfloat16, torch.float16]

FIXED_2D = [  # (N, C, H, W, kernel, stride, padding)
    (2, 3, 8, 8, 2, 2, 0),            # tile, exact
    (2, 3, 7, 9, 2, 2, 0),            # tile, odd sizes (output_size needed)
    (1, 2, 9, 11, 3, 3, 0),
    (2, 2, 7, 10, (2, 3), (2, 3), 0),  # tile, anisotropic
    (1, 4, 1, 9, (1, 2), (1, 2), 0),   # H == 1
    (2, 3, 9, 9, 3, 2, 1),            # overlapping, padded
    (1, 2, 6, 7, 3, 1, 1),            # overlapping, stride 1
    (2, 2, 10, 11, 2, 3, 0),          # kernel < stride
    (1, 3, 9, 8, 1, 2, 0),            # kernel 1, stride 2
    (3, 5, 5, 5, 5, 5, 0),            # single window
    (2, 3, 8, 8, 2, 2, 1),            # kernel == stride with padding (scatter path)
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS + HALFS)
@pytest.mark.parametrize("cfg", FIXED_2D, ids=lambda c: "x".join(map(str, c[:4])) + f"-k{c[4]}s{c[5]}p{c[6]}")
def test_unpool2d_fixed_vs_torch(cfg, dtype, device):
    n, c, h, w, k, s, p = cfg
    x = torch.randn(n, c, h, w, device=device)
    v, i = _pool(x, 2, k, s, p)
    v = v.to(dtype)
    for out_size in (x.shape, x.shape[-2:]):
        out = RF.max_unpool2d(v, i, k, s, p, output_size=list(out_size))
        exp = _torch_unpool(2, v, i, k, s, p, out_size)
        assert out.dtype == dtype and out.shape == x.shape
        assert torch.equal(out, exp)
    # the unpooled tensor holds exactly the pooled maxima at their positions, zeros elsewhere
    plane = out.flatten(2)
    assert torch.equal(plane.gather(2, i.flatten(2)), v.flatten(2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tile", "overlap", "sparse"])
@pytest.mark.parametrize("rep", range(4))
def test_unpool2d_random_vs_torch(kind, rep, device):
    rng = _rng()
    k, s, p, (h, w) = _rand_cfg(2, rng, kind=kind)
    n, c = rng.randint(1, 3), rng.randint(1, 5)
    dtype = rng.choice(FLOATS + HALFS)
    x = torch.randn(n, c, h, w, device=device)
    v, i = _pool(x, 2, k, s, p)
    v = v.to(dtype)
    unbatched = rng.random() < 0.3
    if unbatched:
        v, i, x = v[0], i[0], x[0]
    out_size = rng.choice([list(x.shape), list(x.shape[-2:])])
    # torch takes 2 or 4 entries; rnnkern also takes the unbatched input's own 3-entry shape
    torch_size = out_size if len(out_size) != 3 else out_size[-2:]
    out = RF.max_unpool2d(v, i, k, s, p, output_size=out_size)
    exp = _torch_unpool(2, v, i, k, s, p, torch_size)
    assert out.shape == x.shape
    assert torch.equal(out, exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tile", "overlap", "sparse"])
@pytest.mark.parametrize("rep", range(3))
def test_unpool1d_random_vs_torch(kind, rep, device):
    rng = _rng()
    k, s, p, (l,) = _rand_cfg(1, rng, kind=kind)
    n, c = rng.randint(1, 3), rng.randint(1, 5)
    dtype = rng.choice(FLOATS + HALFS)
    x = torch.randn(n, c, l, device=device)
    v, i = _pool(x, 1, k, s, p)
    v = v.to(dtype)
    if rng.random() < 0.3:
        v, i, x = v[0], i[0], x[0]
    out_size = rng.choice([list(x.shape), list(x.shape[-1:])])
    torch_size = out_size if len(out_size) != 2 else out_size[-1:]  # torch takes 1 or 3 entries
    out = RF.max_unpool1d(v, i, k, s, p, output_size=out_size)
    exp = _torch_unpool(1, v, i, k, s, p, torch_size)
    assert out.shape == x.shape
    assert torch.equal(out, exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS + HALFS)
def test_unpool1d_fixed_vs_torch(dtype, device):
    for (n, c, l, k, s, p) in [(2, 3, 11, 2, 2, 0), (1, 2, 10, 3, 2, 1), (2, 2, 13, 2, 3, 0), (1, 1, 1, 1, 1, 0)]:
        x = torch.randn(n, c, l, device=device)
        v, i = _pool(x, 1, k, s, p)
        v = v.to(dtype)
        for out_size in (list(x.shape), [l]):
            out = RF.max_unpool1d(v, i, k, s, p, output_size=out_size)
            assert torch.equal(out, _torch_unpool(1, v, i, k, s, p, out_size))


@pytest.mark.parametrize("device", DEVICES)
def test_default_output_size(device):
    # no output_size: (in - 1) * s + k - 2p, same as torch
    x = torch.randn(2, 3, 8, 12, device=device)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    out = RF.max_unpool2d(v, i, 2)
    assert out.shape == (2, 3, 8, 12)
    assert torch.equal(out, TF.max_unpool2d(v, i, 2))
    # stride defaults to kernel_size
    assert torch.equal(RF.max_unpool2d(v, i, (2, 2)), out)
    x1 = torch.randn(2, 3, 12, device=device)
    v1, i1 = TF.max_pool1d(x1, 3, return_indices=True)
    assert torch.equal(RF.max_unpool1d(v1, i1, 3), TF.max_unpool1d(v1, i1, 3))
    # output_size in the valid range other than the pooled input's size
    v, i = TF.max_pool2d(torch.randn(1, 2, 6, 6, device=device), 2, return_indices=True)
    for size in ([5, 7], [7, 5], [1, 2, 7, 7]):
        assert torch.equal(RF.max_unpool2d(v, i, 2, output_size=size), TF.max_unpool2d(v, i, 2, output_size=size))


# ----------------------------------------------------------------------------------------------
# forward vs torch: hand-built unique indices (anywhere in the plane: the scatter fallback)

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tile", "overlap", "sparse"])
@pytest.mark.parametrize("rep", range(3))
def test_unpool2d_handbuilt_unique_vs_torch(kind, rep, device):
    rng = _rng()
    k, s, p, (h, w) = _rand_cfg(2, rng, kind=kind)
    hp = (h + 2 * p[0] - k[0]) // s[0] + 1
    wp = (w + 2 * p[1] - k[1]) // s[1] + 1
    oh, ow = h, w  # always a valid output_size for this pooling
    if oh * ow < hp * wp:  # padded stride-1 pooling: fewer outputs than inputs; drop the padding
        p = [0, 0]
        oh, ow = _default_size([hp, wp], k, s, p)
        oh, ow = oh + s[0] - 1, ow + s[1] - 1  # largest valid output_size
    assert oh * ow >= hp * wp
    n, c = rng.randint(1, 3), rng.randint(1, 4)
    dtype = rng.choice(FLOATS + HALFS)
    v = torch.randn(n, c, hp, wp, device=device).to(dtype)
    i = _unique_idx((n, c), (hp, wp), oh * ow, device)
    out = RF.max_unpool2d(v, i, k, s, p, output_size=[oh, ow])
    assert torch.equal(out, _torch_unpool(2, v, i, k, s, p, [oh, ow]))
    assert torch.equal(out, reference.max_unpool2d(v, i, (oh, ow)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_unpool2d_one_index_leaves_window(dtype, device):
    # kernel == stride (gather path) with all indices from max_pool except one moved into an
    # unused slot of another window: the kernel must notice and fall back to the scatter
    x = torch.randn(2, 3, 8, 10, device=device, dtype=dtype)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    out0 = TF.max_unpool2d(v, i, 2)
    used = set(i[1, 2].flatten().tolist())
    free = next(t for t in range(80) if t not in used and (t // 10) // 2 != 0)  # not in window (0, 0)
    i = i.clone()
    i[1, 2, 0, 0] = free
    out = RF.max_unpool2d(v, i, 2)
    assert torch.equal(out, TF.max_unpool2d(v, i, 2))
    assert not torch.equal(out, out0)
    assert out[1, 2].flatten()[free] == v[1, 2, 0, 0]


@pytest.mark.parametrize("device", DEVICES)
def test_unpool1d_handbuilt_unique_vs_torch(device):
    for (l_in, k, s, p, l_out) in [(5, 2, 2, 0, 10), (6, 3, 2, 1, 11), (4, 2, 3, 0, 11), (3, 1, 1, 0, 3)]:
        v = torch.randn(2, 3, l_in, device=device, dtype=torch.float64)
        i = _unique_idx((2, 3), (l_in,), l_out, device)
        out = RF.max_unpool1d(v, i, k, s, p, output_size=[l_out])
        assert torch.equal(out, TF.max_unpool1d(v, i, k, s, p, output_size=[l_out]))


# ----------------------------------------------------------------------------------------------
# duplicate indices: the last input element in flat (h, w) order of its (n, c) plane wins

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 3, 0), (1, 1, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_duplicate_indices_last_wins(k, s, p, channels_last, device):
    n, c, h, w = 2, 3, 5, 6
    oh, ow = _default_size([h, w], _pair(k), _pair(s), _pair(p))
    v = torch.randn(n, c, h, w, device=device)
    i = torch.randint(0, min(7, oh * ow), (n, c, h, w), device=device)  # many collisions
    if channels_last:
        v = v.to(memory_format=torch.channels_last)
        i = i.to(memory_format=torch.channels_last)
    out = RF.max_unpool2d(v, i, k, s, p)
    exp = reference.max_unpool2d(v.cpu().contiguous(), i.cpu().contiguous(), (oh, ow))
    assert torch.equal(out.cpu(), exp)
    # explicit check of the rule for one plane
    flat_v, flat_i = v[1, 2].flatten().cpu(), i[1, 2].flatten().cpu()
    for t in set(flat_i.tolist()):
        last = max(j for j in range(flat_i.numel()) if flat_i[j] == t)
        assert out[1, 2].flatten()[t].item() == flat_v[last].item()


@pytest.mark.parametrize("device", DEVICES)
def test_duplicate_indices_tile_path(device):
    # kernel == stride: a duplicate always leaves its window, so the gather must fall back
    v = torch.arange(1, 1 + 2 * 9, dtype=torch.float32, device=device).reshape(1, 2, 3, 3)
    i = torch.zeros(1, 2, 3, 3, dtype=torch.long, device=device)
    i[0, 1] = 5
    out = RF.max_unpool2d(v, i, 2)
    exp = torch.zeros(1, 2, 36, device=device)
    exp[0, 0, 0] = v[0, 0, 2, 2]
    exp[0, 1, 5] = v[0, 1, 2, 2]
    assert torch.equal(out, exp.reshape(1, 2, 6, 6))
    assert torch.equal(out.cpu(), reference.max_unpool2d(v.cpu(), i.cpu(), (6, 6)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("idx_format", [torch.contiguous_format, torch.channels_last])
def test_output_smaller_than_window_grid(device, idx_format):
    """Called directly, the op takes an output_size below H * sh (the Python layer never passes
    one). Every input's index is still placed or rejected, whatever the indices' layout: the
    kernel == stride paths that read only the window grid hand over to the scatter (a
    channels_last input with NCHW indices once dropped the inputs outside the grid silently)."""
    v = torch.arange(1, 19, dtype=torch.float32, device=device).reshape(1, 2, 3, 3)
    v = v.contiguous(memory_format=torch.channels_last)
    # inputs inside the 2 x 2 window grid point into their own windows (the gather's own case);
    # those in row 2 / column 2 have no window and point at output (0, 0) or (3, 3)
    i = torch.zeros(1, 2, 3, 3, dtype=torch.long)
    for c in range(2):
        for h in range(3):
            for w in range(3):
                i[0, c, h, w] = (2 * h + (h + c) % 2) * 4 + 2 * w + w % 2 if h < 2 and w < 2 else 15 * c
    i = i.to(device).contiguous(memory_format=idx_format)
    out = FWD(v, i, MODE_INDICES, [2, 2], [2, 2], [0, 0], [4, 4])
    assert torch.equal(out.cpu(), reference.max_unpool2d(v.cpu(), i.cpu(), (4, 4)))
    i[0, 0, 2, 0] = 99  # outside the window grid (row 2 of a 2-row grid) and out of range
    with pytest.raises(IndexError, match="out of range"):
        FWD(v, i, MODE_INDICES, [2, 2], [2, 2], [0, 0], [4, 4])


@pytest.mark.parametrize("device", DEVICES)
def test_duplicate_indices_1d_last_wins(device):
    v = torch.randn(2, 3, 9, device=device, dtype=torch.float64)
    i = torch.randint(0, 5, (2, 3, 9), device=device)
    out = RF.max_unpool1d(v, i, 2, output_size=[18])
    exp = reference.max_unpool2d(v.cpu().unsqueeze(2), i.cpu().unsqueeze(2), (1, 18)).squeeze(2)
    assert torch.equal(out.cpu(), exp)


# ----------------------------------------------------------------------------------------------
# layouts, non-contiguous inputs, empty tensors

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (2, 3, 0)])
def test_channels_last(k, s, p, dtype, device):
    x = torch.randn(2, 5, 9, 7, device=device).to(memory_format=torch.channels_last)
    v, i = TF.max_pool2d(x, k, s, p, return_indices=True)
    v = v.to(dtype).contiguous(memory_format=torch.channels_last)
    i = i.contiguous(memory_format=torch.channels_last)
    assert not v.is_contiguous()
    out = RF.max_unpool2d(v, i, k, s, p, output_size=x.shape)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    exp = _torch_unpool(2, v.contiguous(), i.contiguous(), k, s, p, x.shape)
    assert torch.equal(out, exp)
    # mixed layouts: channels_last input with contiguous indices, and the reverse
    assert torch.equal(RF.max_unpool2d(v, i.contiguous(), k, s, p, output_size=x.shape), exp)
    out2 = RF.max_unpool2d(v.contiguous(), i, k, s, p, output_size=x.shape)
    assert out2.is_contiguous() and torch.equal(out2, exp)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    x = torch.randn(3, 8, 9, 11, device=device, dtype=torch.float64)
    v, i = TF.max_pool2d(x, 3, 2, 1, return_indices=True)
    exp = TF.max_unpool2d(v, i, 3, 2, 1, output_size=x.shape)
    # transposed storage (same logical values)
    vt = v.transpose(-1, -2).contiguous().transpose(-1, -2)
    it = i.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not vt.is_contiguous() and not it.is_contiguous()
    assert torch.equal(RF.max_unpool2d(vt, it, 3, 2, 1, output_size=x.shape), exp)
    assert torch.equal(RF.max_unpool2d(vt, i, 3, 2, 1, output_size=x.shape), exp)
    # channel / batch slices
    vs, is_ = v[1:, 1::3], i[1:, 1::3]
    assert not vs.is_contiguous()
    assert torch.equal(RF.max_unpool2d(vs, is_, 3, 2, 1, output_size=x.shape[-2:]), exp[1:, 1::3])
    # permuted batch/channel dims
    vp, ip = v.transpose(0, 1), i.transpose(0, 1)
    expp = TF.max_unpool2d(vp.contiguous(), ip.contiguous(), 3, 2, 1, output_size=x.shape[-2:])
    assert torch.equal(RF.max_unpool2d(vp, ip, 3, 2, 1, output_size=x.shape[-2:]), expp)
    # expanded (stride-0) batch
    ve, ie = v[:1].expand(4, -1, -1, -1), i[:1].expand(4, -1, -1, -1)
    out = RF.max_unpool2d(ve, ie, 3, 2, 1, output_size=x.shape[-2:])
    assert torch.equal(out, exp[:1].expand(4, -1, -1, -1))
    # 1-D: transposed (N, L, C) storage
    x1 = torch.randn(2, 13, 4, device=device).transpose(1, 2)
    v1, i1 = TF.max_pool1d(x1.contiguous(), 2, return_indices=True)
    v1t, i1t = v1.transpose(1, 2).contiguous().transpose(1, 2), i1.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(RF.max_unpool1d(v1t, i1t, 2, output_size=[13]), TF.max_unpool1d(v1, i1, 2, output_size=[13]))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 0, 4, 5), (0, 0, 4, 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_empty(shape, channels_last, device):
    v = torch.randn(shape, device=device, requires_grad=True)
    i = torch.zeros(shape, dtype=torch.long, device=device)
    if channels_last:
        v = v.detach().to(memory_format=torch.channels_last).requires_grad_()
    out = RF.max_unpool2d(v, i, 2)
    assert out.shape == (shape[0], shape[1], 8, 10) and out.numel() == 0
    assert out.device == v.device and out.dtype == v.dtype
    out.sum().backward()
    assert v.grad.shape == v.shape
    out1 = RF.max_unpool1d(v.detach()[..., 0, :], i[..., 0, :], 3, output_size=[shape[-1] * 3])
    assert out1.shape == (shape[0], shape[1], 15)
    assert RF.unpool_nearest2d(v.detach(), 2).shape == (shape[0], shape[1], 8, 10)
    assert RF.bed_of_nails2d(v.detach(), 3).shape == (shape[0], shape[1], 12, 15)


# ----------------------------------------------------------------------------------------------
# gradients

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["tile", "overlap", "sparse"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_grad_vs_torch(kind, channels_last, device):
    rng = _rng()
    k, s, p, (h, w) = _rand_cfg(2, rng, kind=kind)
    x = torch.randn(2, 3, h, w, device=device, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    v, i = TF.max_pool2d(x, k, s, p, return_indices=True)
    g = torch.randn(x.shape, device=device, dtype=torch.float64)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
    grads = []
    for f in (RF.max_unpool2d, TF.max_unpool2d):
        vv = v.detach().clone().requires_grad_()
        f(vv, i, k, s, p, output_size=x.shape).backward(g)
        grads.append(vv.grad)
    assert torch.equal(grads[0], grads[1])
    # backward is a gather: grad at every index
    assert torch.equal(grads[0], g.flatten(2).gather(2, i.flatten(2)).view_as(v))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_grad_duplicates_and_dtypes(dtype, device):
    # duplicates: every input gets grad_output at its index (torch's rule too)
    v = torch.randn(2, 3, 4, 5, device=device).to(dtype).requires_grad_()
    i = torch.randint(0, 6, (2, 3, 4, 5), device=device)
    g = torch.randn(2, 3, 8, 10, device=device).to(dtype)
    RF.max_unpool2d(v, i, 2).backward(g)
    vt = v.detach().float().requires_grad_()
    TF.max_unpool2d(vt, i, 2).backward(g.float())
    assert v.grad.dtype == dtype
    assert torch.equal(v.grad, vt.grad.to(dtype))


@pytest.mark.parametrize("device", DEVICES)
def test_grad_1d_and_unbatched(device):
    x = torch.randn(3, 11, device=device, dtype=torch.float64)
    v, i = TF.max_pool1d(x, 3, 2, 1, return_indices=True)
    g = torch.randn(3, 11, device=device, dtype=torch.float64)
    grads = []
    for f in (RF.max_unpool1d, TF.max_unpool1d):
        vv = v.detach().clone().requires_grad_()
        f(vv, i, 3, 2, 1, output_size=[11]).backward(g)
        grads.append(vv.grad)
    assert torch.equal(grads[0], grads[1])
    x = torch.randn(4, 7, 6, device=device, dtype=torch.float64)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    vv = v.detach().clone().requires_grad_()
    RF.max_unpool2d(vv, i, 2, output_size=[7, 6]).sum().backward()  # expanded (stride-0) grad_output
    assert torch.equal(vv.grad, torch.ones_like(v))


@pytest.mark.parametrize("k,s,p,hw,out_hw", [(2, 2, 0, (2, 3), (4, 6)), (3, 2, 1, (3, 2), (5, 4)),
                                              (2, 3, 0, (2, 2), (5, 6))])
def test_gradcheck_gradgradcheck(k, s, p, hw, out_hw):
    v = torch.randn(1, 2, *hw, dtype=torch.float64, requires_grad=True)
    i = _unique_idx((1, 2), hw, out_hw[0] * out_hw[1])
    f = lambda t: RF.max_unpool2d(t, i, k, s, p, output_size=list(out_hw))  # noqa: E731
    assert torch.autograd.gradcheck(f, (v,))
    assert torch.autograd.gradgradcheck(f, (v,))


def test_gradcheck_gradgradcheck_channels_last_and_1d():
    # real max_pool indices (kernel == stride: unique), channels_last
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64).to(memory_format=torch.channels_last)
    vp, ip = TF.max_pool2d(x, 2, return_indices=True)
    vp = vp.detach().requires_grad_()
    g = lambda t: RF.max_unpool2d(t, ip, 2)  # noqa: E731
    assert torch.autograd.gradcheck(g, (vp,))
    assert torch.autograd.gradgradcheck(g, (vp,))
    # 1-D, unbatched
    v1 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    i1 = _unique_idx((2,), (3,), 7)
    h = lambda t: RF.max_unpool1d(t, i1, 2, 2, 0, output_size=[7])  # noqa: E731
    assert torch.autograd.gradcheck(h, (v1,))
    assert torch.autograd.gradgradcheck(h, (v1,))


def test_gradcheck_nearest_and_bed_of_nails():
    for fn in (RF.unpool_nearest2d, RF.bed_of_nails2d):
        for s in (2, (1, 3)):
            x = torch.randn(1, 1, 2, 3, dtype=torch.float64, requires_grad=True)
            f = lambda t: fn(t, s)  # noqa: E731
            assert torch.autograd.gradcheck(f, (x,))
            assert torch.autograd.gradgradcheck(f, (x,))


def test_backward_op_double_backward_is_forward():
    # the backward op's own autograd: d/d(grad_output) of a gather is the scatter (the forward)
    x = torch.randn(1, 2, 4, 6, dtype=torch.float64)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    go = torch.randn(1, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    gi = BWD(go, i, MODE_INDICES, list(v.shape), [2, 2], [2, 2], [0, 0])
    assert torch.equal(gi, go.detach().flatten(2).gather(2, i.flatten(2)).view_as(v))
    ggi = torch.randn_like(gi)
    (ggo,) = torch.autograd.grad(gi, go, ggi)
    assert torch.equal(ggo, TF.max_unpool2d(ggi, i, 2))


def test_double_backward_unchecked_drops_out_of_range():
    """check_indices=False drops out-of-range indices; the double backward (d grad_input /
    d grad_output, a scatter through the same indices) drops them too instead of raising."""
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    i = torch.tensor([[[[0, 3, 99], [13, -1, 23]], [[1, 500, 9], [14, 17, 22]]]])  # out of range: 99, -1, 500
    out = RF.max_unpool2d(x, i, 2, check_indices=False)
    go = torch.randn_like(out, requires_grad=True)
    (gx,) = torch.autograd.grad(out, x, go, create_graph=True)
    v = torch.randn_like(gx)
    (ggo,) = torch.autograd.grad(gx, go, v)
    keep = (i >= 0) & (i < out[0, 0].numel())
    exp = torch.zeros_like(out).flatten(2)
    exp.scatter_add_(2, torch.where(keep, i, 0).flatten(2), torch.where(keep, v, 0).flatten(2))
    assert torch.equal(ggo, exp.view_as(out))

    # the same through torch.func (the ops' Python autograd.Functions)
    def gx_of(g):
        return torch.func.vjp(lambda a: RF.max_unpool2d(a, i, 2, check_indices=False), x.detach())[1](g)[0]
    assert torch.equal(torch.func.vjp(gx_of, go.detach())[1](v)[0], exp.view_as(out))


# ----------------------------------------------------------------------------------------------
# opcheck (schema, fake, autograd registration, AOT dispatch)

def _opcheck_fwd_samples():
    samples = []
    x = torch.randn(2, 3, 6, 7)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    samples.append((v.requires_grad_(), i, MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 7]))
    xc = torch.randn(2, 4, 7, 5).to(memory_format=torch.channels_last)
    vc, ic = TF.max_pool2d(xc, 3, 2, 1, return_indices=True)
    vc, ic = vc.contiguous(memory_format=torch.channels_last), ic.contiguous(memory_format=torch.channels_last)
    samples.append((vc.requires_grad_(), ic, MODE_INDICES, [3, 3], [2, 2], [1, 1], [7, 5]))
    samples.append((torch.randn(1, 2, 3, 3, dtype=torch.float64), _unique_idx((1, 2), (3, 3), 20), MODE_INDICES,
                    [2, 3], [2, 3], [0, 0], [4, 5]))
    samples.append((torch.randn(2, 3, 3, 4, requires_grad=True), None, MODE_NEAREST, [2, 2], [2, 2], [0, 0], [6, 8]))
    xb = torch.randn(1, 3, 2, 3).to(memory_format=torch.channels_last).requires_grad_()
    samples.append((xb, None, MODE_BED_OF_NAILS, [3, 2], [3, 2], [0, 0], [6, 6]))
    j = i.clone()
    j[1, 2, 0, 1], j[0, 0, 2, 2] = 42, 5  # out of range (dropped, unchecked), outside its window
    samples.append((v.detach().clone().requires_grad_(), j, MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 7], False))
    return samples


def _opcheck_bwd_samples():
    samples = []
    x = torch.randn(2, 3, 6, 7)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    samples.append((torch.randn(2, 3, 6, 7, requires_grad=True), i, MODE_INDICES, list(v.shape), [2, 2], [2, 2],
                    [0, 0]))
    xc = torch.randn(2, 4, 7, 5).to(memory_format=torch.channels_last)
    vc, ic = TF.max_pool2d(xc, 3, 2, 1, return_indices=True)
    go = torch.randn(2, 4, 7, 5).to(memory_format=torch.channels_last).requires_grad_()
    samples.append((go, ic.contiguous(memory_format=torch.channels_last), MODE_INDICES, list(vc.shape), [3, 3],
                    [2, 2], [1, 1]))
    samples.append((torch.randn(2, 3, 6, 8, requires_grad=True), None, MODE_NEAREST, [2, 3, 3, 4], [2, 2], [2, 2],
                    [0, 0]))
    samples.append((torch.randn(1, 3, 6, 6, dtype=torch.float64), None, MODE_BED_OF_NAILS, [1, 3, 2, 3], [3, 2],
                    [3, 2], [0, 0]))
    return samples


@pytest.mark.parametrize("sample", range(6))
def test_opcheck_forward(sample):
    args = _opcheck_fwd_samples()[sample]
    torch.library.opcheck(FWD, args)


@pytest.mark.parametrize("sample", range(4))
def test_opcheck_backward(sample):
    args = _opcheck_bwd_samples()[sample]
    torch.library.opcheck(BWD, args)


def test_fake_layout_matches_real():
    from torch._subclasses.fake_tensor import FakeTensorMode
    for args in _opcheck_fwd_samples():
        args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
        real = FWD(*args)
        mode = FakeTensorMode()
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with mode:
            fake = FWD(*fargs)
        assert fake.shape == real.shape and fake.stride() == real.stride() and fake.dtype == real.dtype


# ----------------------------------------------------------------------------------------------
# torch.compile over a SegNet-style block

class _SegNetBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.unpool = rnnkern.nn.MaxUnpool2d(2)
        self.dec = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.enc(x))
        v, i = TF.max_pool2d(y, 2, return_indices=True)
        return self.dec(self.unpool(v, i, output_size=y.shape))


def test_compile_segnet_block_fullgraph():
    torch._dynamo.reset()
    model = _SegNetBlock().double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    eager_out = model(x)
    eager_out.square().sum().backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # aot_eager: dynamo + fake tensors + AOT autograd (the parts the custom ops must support)
    # without inductor's C++ codegen, which costs about a minute on 2 CPU cores
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager_out, rtol=1e-10, atol=1e-10)
    out.square().sum().backward()
    for g, ge in zip([p.grad for p in model.parameters()], eager_grads):
        torch.testing.assert_close(g, ge, rtol=1e-10, atol=1e-10)


def test_export_keeps_a_dynamic_batch_in_output_size():
    """output_size taken from a tensor's shape under torch.export (non-strict) with a dynamic batch:
    the size's symbolic entries stay symbolic (int() would specialise the batch to the example's)."""
    from torch.export import Dim, export
    model = _SegNetBlock().double()
    ep = export(model, (torch.randn(2, 3, 8, 10, dtype=torch.float64),),
                dynamic_shapes={"x": {0: Dim("batch", min=2, max=16)}})
    x = torch.randn(5, 3, 8, 10, dtype=torch.float64)
    torch.testing.assert_close(ep.module()(x), model(x), rtol=1e-12, atol=1e-12)


def test_cpu_autocast_runs_in_float32():
    """torch's CPU autocast runs max-unpooling in fp32 (bf16 / fp16 inputs come out fp32; fp64 stays)."""
    v, i = TF.max_pool2d(torch.randn(1, 2, 4, 4), 2, return_indices=True)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            ours, theirs = RF.max_unpool2d(v.to(dtype), i, 2), TF.max_unpool2d(v.to(dtype), i, 2)
            assert ours.dtype == theirs.dtype == torch.float32
            assert torch.equal(ours, theirs)
            assert RF.max_unpool2d(v.double(), i, 2).dtype == torch.float64


def test_compile_graph_contains_custom_op():
    torch._dynamo.reset()
    from torch._dynamo.testing import CompileCounterWithBackend
    cnt = CompileCounterWithBackend("eager")
    x = torch.randn(1, 2, 6, 6)
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    f = torch.compile(lambda a, b: RF.max_unpool2d(a, b, 2) * 2, backend=cnt, fullgraph=True)
    assert torch.equal(f(v, i), TF.max_unpool2d(v, i, 2) * 2)
    assert cnt.frame_count == 1
    targets = [str(n.target) for g in cnt.graphs for n in g.graph.nodes]
    assert any("max_unpool_forward" in t for t in targets)


# ----------------------------------------------------------------------------------------------
# nn modules

@pytest.mark.parametrize("args", [(2,), (3, 2, 1), ((2, 3), (1, 2), (0, 1)), (3, None, 1)])
def test_module2d_fields_and_outputs(args):
    ours, theirs = rnnkern.nn.MaxUnpool2d(*args), nn.MaxUnpool2d(*args)
    for name in ("kernel_size", "stride", "padding"):
        assert tuple(getattr(ours, name)) == tuple(getattr(theirs, name))
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)
    k, s, p = theirs.kernel_size, theirs.stride, theirs.padding
    x = torch.randn(2, 3, 9, 8)
    v, i = TF.max_pool2d(x, k, s, p, return_indices=True)
    for out_size in (x.shape, x.shape[-2:]):
        assert torch.equal(ours(v, i, output_size=out_size), theirs(v, i, output_size=out_size))
    assert torch.equal(ours(v[0], i[0], output_size=x.shape[-2:]), theirs(v[0], i[0], output_size=x.shape[-2:]))
    assert list(ours.parameters()) == [] and ours.state_dict().keys() == theirs.state_dict().keys()


@pytest.mark.parametrize("args", [(2,), (3, 2, 1), (2, 3), (3, None, 1)])
def test_module1d_fields_and_outputs(args):
    ours, theirs = rnnkern.nn.MaxUnpool1d(*args), nn.MaxUnpool1d(*args)
    for name in ("kernel_size", "stride", "padding"):
        assert tuple(getattr(ours, name)) == tuple(getattr(theirs, name))
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)
    k, s, p = theirs.kernel_size, theirs.stride, theirs.padding
    x = torch.randn(2, 3, 13)
    v, i = TF.max_pool1d(x, k, s, p, return_indices=True)
    for out_size in (x.shape, x.shape[-1:]):
        assert torch.equal(ours(v, i, output_size=out_size), theirs(v, i, output_size=out_size))
    assert torch.equal(ours(v[0], i[0], output_size=[13]), theirs(v[0], i[0], output_size=[13]))


# ----------------------------------------------------------------------------------------------
# nearest and bed-of-nails unpooling

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", FLOATS + HALFS)
@pytest.mark.parametrize("s", [1, 2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_and_bed_of_nails_values(s, dtype, channels_last, device):
    x = torch.randn(2, 3, 5, 7, device=device).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    near = RF.unpool_nearest2d(x, s)
    assert near.shape == (2, 3, 5 * s, 7 * s)
    assert torch.equal(near, TF.interpolate(x.float(), scale_factor=s, mode="nearest").to(dtype))
    assert torch.equal(near, reference.unpool_nearest2d(x, s))
    bed = RF.bed_of_nails2d(x, s)
    assert torch.equal(bed, reference.bed_of_nails2d(x, s))
    if channels_last:
        assert near.is_contiguous(memory_format=torch.channels_last)
        assert bed.is_contiguous(memory_format=torch.channels_last)
    # unbatched and non-contiguous inputs
    assert torch.equal(RF.unpool_nearest2d(x[1], s), reference.unpool_nearest2d(x[1:2], s)[0])
    assert torch.equal(RF.bed_of_nails2d(x[1], s), reference.bed_of_nails2d(x[1:2], s)[0])
    xt = x.transpose(-1, -2)
    assert torch.equal(RF.unpool_nearest2d(xt, s), reference.unpool_nearest2d(xt.contiguous(), s))
    assert torch.equal(RF.bed_of_nails2d(xt, s), reference.bed_of_nails2d(xt.contiguous(), s))


@pytest.mark.parametrize("device", DEVICES)
def test_nearest_anisotropic(device):
    x = torch.randn(1, 2, 3, 4, device=device)
    out = RF.unpool_nearest2d(x, (2, 3))
    assert torch.equal(out, TF.interpolate(x, scale_factor=(2, 3), mode="nearest"))
    bed = RF.bed_of_nails2d(x, (2, 3))
    exp = torch.zeros(1, 2, 6, 12, device=device)
    exp[:, :, ::2, ::3] = x
    assert torch.equal(bed, exp)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_and_bed_of_nails_output_larger_than_grid(s, channels_last, device):
    """Called directly with an output_size past the last window (up to H * s + s - 1), the op
    fills the rows / columns no input window covers with zeros (and reads no input past row H)."""
    # x is rows 0..2 of a 4-row tensor of ones: a read past row H would find ones, not zeros
    big = torch.ones(2, 3, 4, 4, device=device)
    big[:, :, :3] = torch.randn(2, 3, 3, 4, device=device)
    x = big[:, :, :3]
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    oh, ow = 3 * s + s - 1, 4 * s + 1
    for mode, ref in ((MODE_NEAREST, reference.unpool_nearest2d), (MODE_BED_OF_NAILS, reference.bed_of_nails2d)):
        out = FWD(x, None, mode, [s, s], [s, s], [0, 0], [oh, ow])
        exp = torch.zeros(2, 3, oh, ow, device=device)
        exp[:, :, :3 * s, :4 * s] = ref(x.contiguous(), s)
        assert torch.equal(out, exp), mode


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("s", [2, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_nearest_and_bed_of_nails_grads(s, channels_last, device):
    x = torch.randn(2, 3, 4, 5, device=device, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    g = torch.randn(2, 3, 4 * s, 5 * s, device=device, dtype=torch.float64)
    for ours, ref in ((RF.unpool_nearest2d, reference.unpool_nearest2d), (RF.bed_of_nails2d, reference.bed_of_nails2d)):
        a = x.detach().clone().requires_grad_()
        b = x.detach().clone().requires_grad_()
        ours(a, s).backward(g)
        ref(b, s).backward(g)
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    # nearest: the grad is the window sum
    a = x.detach().clone().requires_grad_()
    RF.unpool_nearest2d(a, s).backward(g)
    torch.testing.assert_close(a.grad, TF.avg_pool2d(g, s) * (s * s), rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# bad inputs

def _pooled(device="cpu"):
    x = torch.randn(2, 3, 6, 8, device=device)
    return TF.max_pool2d(x, 2, return_indices=True)


def _raises(exc, match, fn, *args, **kw):
    with pytest.raises(exc, match=match):
        fn(*args, **kw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
@pytest.mark.parametrize("bad", [48, 10 ** 9, -1, -(10 ** 9)])
def test_index_out_of_range(bad, k, s, p, device):
    v, i = _pooled(device)
    oh, ow = _default_size([3, 4], (k, k), (s, s), (p, p))
    i = torch.randint(0, oh * ow, i.shape, device=device)  # valid for this geometry
    assert RF.max_unpool2d(v, i, k, s, p).shape == (2, 3, oh, ow)
    for cl in (False, True):
        j = i.clone()
        j[1, 2, 2, 3] = bad if bad != 48 else oh * ow  # first index past the plane
        vv = v
        if cl:
            vv, j = v.contiguous(memory_format=torch.channels_last), j.contiguous(memory_format=torch.channels_last)
        with pytest.raises((IndexError, RuntimeError), match="index"):
            RF.max_unpool2d(vv, j, k, s, p)
    j = i[:, :, 0].clone()
    j[0, 0, 0] = bad if bad != 48 else 8
    with pytest.raises((IndexError, RuntimeError), match="index"):
        RF.max_unpool1d(v[:, :, 0], j, 2, output_size=[8])


def test_index_error_type_and_message():
    v, i = _pooled()
    j = i.clone()
    j[0, 0, 0, 0] = 1000
    with pytest.raises(IndexError, match=r"out of range \[0, 48\)"):
        RF.max_unpool2d(v, j, 2)
    # also a RuntimeError, as torch's error for the same indices: code written against torch.nn
    # that catches RuntimeError still catches it, through the module too
    with pytest.raises(RuntimeError, match=r"out of range \[0, 48\)"):
        rnnkern.nn.MaxUnpool2d(2)(v, j)
    with pytest.raises(RuntimeError):
        torch.nn.MaxUnpool2d(2)(v, j)


def _unpool_dropping_out_of_range(v, i, out_hw):
    """reference.max_unpool2d with out-of-range elements sent to a spare slot that is cut off."""
    plane = out_hw[0] * out_hw[1]
    j = torch.where((i >= 0) & (i < plane), i, plane)
    n, c = v.shape[:2]
    out = reference.max_unpool2d(v.reshape(n, c, 1, -1), j.reshape(n, c, 1, -1), (1, plane + 1))
    return out[..., :plane].reshape(n, c, *out_hw)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 3, 0)])
@pytest.mark.parametrize("layout", ["nchw", "cl", "cl_values_nchw_indices"])
def test_check_indices_false_drops_out_of_range(k, s, p, layout, device):
    """check_indices=False: no IndexError; elements with out-of-range indices are dropped, the
    others land by the usual rule (last wins), on both backends and every kernel path."""
    n, c, h, w = 2, 4, 4, 6  # even width and channels: CUDA's paired 2x2 kernels too
    oh, ow = _default_size([h, w], (k, k), (s, s), (p, p))
    v = torch.randn(n, c, h, w, device=device)
    i = torch.randint(-3, oh * ow + 3, (n, c, h, w), device=device)  # collisions, some out of range
    i[0, 0, 0, 0], i[1, 2, 3, 4] = -1, oh * ow
    if layout != "nchw":
        v = v.contiguous(memory_format=torch.channels_last)
    if layout == "cl":
        i = i.contiguous(memory_format=torch.channels_last)
    with pytest.raises(IndexError, match="out of range"):
        RF.max_unpool2d(v, i, k, s, p)
    out = RF.max_unpool2d(v, i, k, s, p, check_indices=False)
    exp = _unpool_dropping_out_of_range(v.cpu().contiguous(), i.cpu().contiguous(), (oh, ow))
    assert torch.equal(out.cpu(), exp)
    module = rnnkern.nn.MaxUnpool2d(k, s, p, check_indices=False)
    assert torch.equal(module(v, i), out)
    i1 = i[:, :, :1] % (2 * w + 2) - 1  # in [-1, 2w]: the plane is [0, 2w)
    out1 = RF.max_unpool1d(v[:, :, 0], i1[:, :, 0], 2, check_indices=False)
    exp1 = _unpool_dropping_out_of_range(v[:, :, :1].cpu().contiguous(), i1.cpu().contiguous(), (1, 2 * w))
    assert torch.equal(out1.cpu(), exp1[:, :, 0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("layout", ["nchw", "cl", "cl_values_nchw_indices", "strided"])
@pytest.mark.parametrize("k", [(1, 1), (2, 2), (3, 3), (4, 2), (2, 3)], ids=lambda k: f"k{k[0]}x{k[1]}")
@pytest.mark.parametrize("larger", [False, True], ids=["default_size", "larger_size"])
def test_indices_leaving_their_window_fix_up(larger, k, layout, check, device):
    """kernel == stride (the gather) with indices all over the plane: the result must be the
    scatter's. On CUDA the checked call reruns as the scatter and the unchecked one runs the
    gather's fix-up kernel; on the CPU channels_last values with NCHW indices take the gather and
    its fix-up (the other layouts scatter). A small index range, so an outside-window element often
    targets an output whose own window's element also targets it, from before or after it; with
    the larger output_size some targets lie in the partial windows past the input grid."""
    n, c, h, w = 2, 4, 5, 6
    oh, ow = h * k[0] + (k[0] - 1 if larger else 0), w * k[1] + (k[1] - 1 if larger else 0)
    v = torch.randn(n, c, h, w, device=device)
    i = torch.randint(0, min(oh * ow, 3 * k[0] * ow), (n, c, h, w), device=device)
    i[0, 1, 1, 2] = oh * ow - 1  # the last output element (in a partial window when larger)
    if layout in ("cl", "cl_values_nchw_indices"):
        v = v.contiguous(memory_format=torch.channels_last)
    if layout == "cl":
        i = i.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        v = torch.randn(n, c, h, 2 * w, device=device)[..., ::2]
    out = RF.max_unpool2d(v, i, k, output_size=[oh, ow], check_indices=check)
    assert torch.equal(out.cpu(), reference.max_unpool2d(v.cpu().contiguous(), i.cpu().contiguous(), (oh, ow)))
    # the case the rule is about, built by hand in plane (1, 2): element (0, 1) leaves its window
    # for the target of window (2, 2), whose own element points there too and comes later; and
    # element (4, 5) (later) leaves its window for the target of window (1, 1)
    j = i.clone()
    rows, cols = torch.arange(h, device=device)[:, None], torch.arange(w, device=device)
    j[1, 2] = rows * k[0] * ow + cols * k[1]  # the plane's other elements: their own windows' top-left
    t22, t11 = (2 * k[0]) * ow + 2 * k[1], k[0] * ow + k[1]
    j[1, 2, 0, 1], j[1, 2, 2, 2] = t22, t22
    j[1, 2, 4, 5], j[1, 2, 1, 1] = t11, t11
    out = RF.max_unpool2d(v, j, k, output_size=[oh, ow], check_indices=check)
    assert out[1, 2].flatten()[t22] == v[1, 2, 2, 2] and out[1, 2].flatten()[t11] == v[1, 2, 4, 5]
    assert torch.equal(out.cpu(), reference.max_unpool2d(v.cpu().contiguous(), j.cpu().contiguous(), (oh, ow)))


def test_check_indices_argument():
    v, i = _pooled()
    _raises(TypeError, "check_indices must be a bool", RF.max_unpool2d, v, i, 2, check_indices=1)
    module = rnnkern.nn.MaxUnpool2d(2, check_indices=False)
    assert repr(module) == "MaxUnpool2d(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), check_indices=False)"
    assert repr(rnnkern.nn.MaxUnpool1d(2)) == repr(nn.MaxUnpool1d(2))
    assert module.state_dict().keys() == nn.MaxUnpool2d(2).state_dict().keys()
    assert "bool check_indices=True" in str(FWD._schema)
    old = rnnkern.nn.MaxUnpool2d(2)
    del old.check_indices  # as unpickled from before the argument existed: the class default
    assert torch.equal(old(v, i), TF.max_unpool2d(v, i, 2)) and repr(old) == repr(nn.MaxUnpool2d(2))
    import pickle
    assert pickle.loads(pickle.dumps(module)).check_indices is False


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.float32, torch.uint8])
def test_indices_dtype(dtype):
    v, i = _pooled()
    _raises(TypeError, "indices.*int64", RF.max_unpool2d, v, i.to(dtype), 2)
    _raises(TypeError, "indices.*int64", RF.max_unpool1d, v[:, :, 0], i[:, :, 0].to(dtype), 2)


def test_indices_shape_mismatch():
    v, i = _pooled()
    _raises(ValueError, "indices shape", RF.max_unpool2d, v, i[:, :, :2], 2)
    _raises(ValueError, "indices shape", RF.max_unpool2d, v, i[0], 2)
    _raises(ValueError, "indices shape", RF.max_unpool2d, v, i.transpose(-1, -2), 2)
    _raises(ValueError, "indices shape", RF.max_unpool1d, v[:, :, 0], i[:, :1, 0], 2)
    _raises(TypeError, "indices", RF.max_unpool2d, v, i.tolist(), 2)


def test_negative_default_output_size():
    """padding larger than the default size allows (here -1): a ValueError naming the size, as
    torch's (not the kernel's RuntimeError)."""
    for fn, v in ((RF.max_unpool2d, torch.randn(1, 1, 1, 1)), (RF.max_unpool1d, torch.randn(1, 1, 1))):
        with pytest.raises(ValueError, match="non-negative"):
            fn(v, torch.zeros_like(v, dtype=torch.long), 1, 1, 1)


def test_wrong_dims():
    v, i = _pooled()
    _raises(ValueError, "input must be 3-D or 4-D", RF.max_unpool2d, v[0, 0], i[0, 0], 2)
    _raises(ValueError, "input must be 3-D or 4-D", RF.max_unpool2d, v[None], i[None], 2)
    _raises(ValueError, "input must be 2-D or 3-D", RF.max_unpool1d, v, i, 2)
    _raises(ValueError, "input must be 2-D or 3-D", RF.max_unpool1d, v[0, 0, 0], i[0, 0, 0], 2)
    _raises(ValueError, "input must be 3-D or 4-D", RF.unpool_nearest2d, v[0, 0], 2)
    _raises(ValueError, "input must be 3-D or 4-D", RF.bed_of_nails2d, v[None], 2)
    _raises(TypeError, "input", RF.max_unpool2d, v.tolist(), i, 2)


@pytest.mark.parametrize("size", [[2, 8], [6, 10], [3, 4, 7], [8], [1, 2, 3, 4, 5], [2, 3, 6, 2]])
def test_invalid_output_size(size):
    v, i = _pooled()
    with pytest.raises(ValueError) as theirs:
        TF.max_unpool2d(v, i, 2, output_size=size)
    with pytest.raises(ValueError, match="output_size") as ours:
        RF.max_unpool2d(v, i, 2, output_size=size)
    assert str(theirs.value) in str(ours.value)  # same rule, same wording (ours adds the op name)


@pytest.mark.parametrize("size", [[6], [14], [1, 2], [2, 3, 4, 5]])
def test_invalid_output_size_1d(size):
    v, i = TF.max_pool1d(torch.randn(2, 3, 10), 2, return_indices=True)
    with pytest.raises(ValueError):
        TF.max_unpool1d(v, i, 2, output_size=size)
    with pytest.raises(ValueError, match="output_size"):
        RF.max_unpool1d(v, i, 2, output_size=size)


def test_valid_output_size_edges():
    # strictly inside (default - s, default + s)
    v = torch.randn(1, 2, 3, 3)
    for size in ([5, 5], [7, 7], [5, 7]):
        i = _unique_idx((1, 2), (3, 3), size[0] * size[1])
        out = RF.max_unpool2d(v, i, 2, output_size=size)
        assert out.shape[-2:] == tuple(size)
        assert torch.equal(out, TF.max_unpool2d(v, i, 2, output_size=size))
    i = _unique_idx((1, 2), (3, 3), 25)
    for size in ([4, 6], [6, 8]):
        with pytest.raises(ValueError, match="output_size"):
            RF.max_unpool2d(v, i, 2, output_size=size)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_input(dtype):
    v, i = _pooled()
    _raises(TypeError, "input must be a floating-point", RF.max_unpool2d, v.to(dtype), i, 2)
    _raises(TypeError, "input must be a floating-point", RF.max_unpool1d, v[:, :, 0].to(dtype), i[:, :, 0], 2)
    _raises(TypeError, "input must be a floating-point", RF.unpool_nearest2d, v.to(dtype), 2)
    _raises(TypeError, "input must be a floating-point", RF.bed_of_nails2d, v.to(dtype), 2)


def test_bad_kernel_stride_padding():
    v, i = _pooled()
    _raises(ValueError, "kernel_size", RF.max_unpool2d, v, i, 0)
    _raises(ValueError, "kernel_size", RF.max_unpool2d, v, i, (2, 2, 2))
    _raises(TypeError, "kernel_size", RF.max_unpool2d, v, i, None)
    _raises(ValueError, "stride", RF.max_unpool2d, v, i, 2, 0)
    _raises(ValueError, "stride", RF.max_unpool2d, v, i, 2, -1)
    _raises(ValueError, "padding", RF.max_unpool2d, v, i, 2, 2, -1)
    _raises(ValueError, "kernel_size", RF.unpool_nearest2d, v, 0)
    _raises(ValueError, "kernel_size", RF.bed_of_nails2d, v, (2, 2, 2))
    _raises(ValueError, "stride", RF.max_unpool1d, v[:, :, 0], i[:, :, 0], 2, 0)


def test_op_level_checks():
    # direct calls of the custom ops: C++ checks, clear messages, no crash
    v, i = _pooled()
    _raises(RuntimeError, "mode", FWD, v, i, 3, [2, 2], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "indices are required", FWD, v, None, MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "kernel == stride", FWD, v, None, MODE_NEAREST, [3, 3], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "int64", FWD, v, i.int(), MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "indices shape", FWD, v, i[:1], MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "4-D", FWD, v[0], i[0], MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])
    _raises(RuntimeError, "output_size", FWD, v, i, MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, -1])
    _raises(RuntimeError, "positive", FWD, v, i, MODE_INDICES, [0, 2], [2, 2], [0, 0], [6, 8])
    _raises(IndexError, "out of range", FWD, v, i, MODE_INDICES, [2, 2], [2, 2], [0, 0], [5, 5])
    go = torch.randn(2, 3, 6, 8)
    _raises(RuntimeError, "grad_output", BWD, go[0], i, MODE_INDICES, list(v.shape), [2, 2], [2, 2], [0, 0])
    _raises(RuntimeError, "batch/channels", BWD, go[:1], i, MODE_INDICES, list(v.shape), [2, 2], [2, 2], [0, 0])
    _raises(RuntimeError, "input_size", BWD, go, i, MODE_INDICES, [2, 3, 3], [2, 2], [2, 2], [0, 0])


@pytest.mark.cuda
def test_cpu_cuda_mix():
    v, i = _pooled("cuda")
    _raises(RuntimeError, "indices is on cpu but input is on cuda", RF.max_unpool2d, v, i.cpu(), 2)
    _raises(RuntimeError, "indices is on cuda.* but input is on cpu", RF.max_unpool2d, v.cpu(), i, 2)
    _raises(RuntimeError, "indices", FWD, v, i.cpu(), MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])


# ----------------------------------------------------------------------------------------------
# CUDA-only

@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1)])
def test_cuda_forward_deterministic_with_duplicates(k, s, p, channels_last):
    n, c, h, w = 4, 16, 33, 37
    oh, ow = _default_size([h, w], (k, k), (s, s), (p, p))
    v = torch.randn(n, c, h, w, device="cuda")
    i = torch.randint(0, 97, (n, c, h, w), device="cuda")  # heavy collisions
    if channels_last:
        v, i = v.to(memory_format=torch.channels_last), i.to(memory_format=torch.channels_last)
    first = RF.max_unpool2d(v, i, k, s, p)
    for _ in range(5):
        again = RF.max_unpool2d(v, i, k, s, p)
        assert torch.equal(again.view(torch.int32), first.view(torch.int32))  # bitwise
    exp = reference.max_unpool2d(v.cpu().contiguous(), i.cpu().contiguous(), (oh, ow))
    assert torch.equal(first.cpu(), exp)
    assert torch.equal(first.cpu(), RF.max_unpool2d(v.cpu(), i.cpu(), k, s, p))  # CPU == CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS + HALFS)
def test_cuda_matches_cpu(dtype):
    x = torch.randn(3, 5, 17, 19)
    for (k, s, p) in [(2, 2, 0), (3, 2, 1), (2, 3, 0)]:
        v, i = TF.max_pool2d(x, k, s, p, return_indices=True)
        v = v.to(dtype)
        cpu = RF.max_unpool2d(v, i, k, s, p, output_size=x.shape)
        gpu = RF.max_unpool2d(v.cuda(), i.cuda(), k, s, p, output_size=x.shape)
        assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.cuda
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_op_edge_geometries_match_cpu(channels_last):
    # direct op calls that the functional layer refuses: an output smaller than the window grid
    # of the input (kernel == stride; inputs past the grid still land, or raise when out of
    # range), and an empty input plane with a non-empty output
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    v = torch.randn(2, 3, 4, 5).contiguous(memory_format=fmt)
    i = _unique_idx((2, 3), (4, 5), 6 * 8).contiguous(memory_format=fmt)
    args = (MODE_INDICES, [2, 2], [2, 2], [0, 0], [6, 8])
    cpu = FWD(v, i, *args)
    assert torch.equal(FWD(v.cuda(), i.cuda(), *args).cpu(), cpu)
    assert torch.equal(cpu, reference.max_unpool2d(v.contiguous(), i.contiguous(), (6, 8)))
    j = i.clone()
    j[1, 2, 3, 4] = 48  # an input outside the 3 x 4 window grid, index one past the plane
    with pytest.raises(IndexError, match="out of range"):
        FWD(v.cuda(), j.cuda(), *args)
    v0, i0 = torch.randn(2, 3, 0, 5, device="cuda"), torch.zeros(2, 3, 0, 5, dtype=torch.long, device="cuda")
    out = FWD(v0, i0, MODE_INDICES, [3, 3], [2, 2], [0, 0], [1, 9])
    assert out.shape == (2, 3, 1, 9) and not out.any()


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS + HALFS)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("width", [22, 24])
@pytest.mark.parametrize("channels", [5, 6])
def test_cuda_dense_2x2_path(dtype, channels_last, width, channels):
    """The dense 2x2 kernels (even sizes, output exactly 2H x 2W, tensors dense in the output's
    layout; 32-bit index math) against the CPU op and torch, forward and backward, all three
    unpooling forms; an index that leaves its window still takes the scatter, one out of range
    still raises. Pooled width 11 (odd) and 12 (even: NCHW takes two windows a thread); 5 and 6
    channels (even: channels_last takes two channels of a window a thread)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, channels, 34, width).contiguous(memory_format=fmt)
    v, i = TF.max_pool2d(x, 2, 2, return_indices=True)
    v, i = v.to(dtype).contiguous(memory_format=fmt), i.contiguous(memory_format=fmt)
    vc, ic = v.cuda(), i.cuda()
    out = RF.max_unpool2d(vc, ic, 2)
    assert out.is_contiguous(memory_format=fmt)
    assert torch.equal(out.cpu(), RF.max_unpool2d(v, i, 2))
    assert torch.equal(out, TF.max_unpool2d(vc.contiguous(), ic.contiguous(), 2))
    g = torch.randn(out.shape, dtype=dtype, device="cuda").contiguous(memory_format=fmt)
    gi = BWD(g, ic, MODE_INDICES, list(v.shape), [2, 2], [2, 2], [0, 0])
    assert torch.equal(gi.cpu(), BWD(g.cpu(), i, MODE_INDICES, list(v.shape), [2, 2], [2, 2], [0, 0]))
    for form in (RF.unpool_nearest2d, RF.bed_of_nails2d):
        assert torch.equal(form(vc, 2).cpu(), form(v, 2))
    j = i.clone()
    j[2, 4, 16, 10] = 0  # far outside its window: the scatter (last writer wins), as on the CPU
    assert torch.equal(RF.max_unpool2d(vc, j.cuda(), 2).cpu(), RF.max_unpool2d(v, j, 2))
    j[0, 0, 0, 0] = 34 * width  # one past the plane
    with pytest.raises(IndexError, match="out of range"):
        RF.max_unpool2d(vc, j.cuda(), 2)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_cuda_unchecked_forward_never_syncs(dtype, channels_last):
    """check_indices=False reads nothing back: it runs under torch.cuda.set_sync_debug_mode
    ("error") on every gather kernel, indices leaving their windows included; the checked call
    syncs (so the mode does catch it)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    cases = []
    for (c, w, k) in [(6, 24, 2), (5, 22, 2), (4, 18, 3)]:  # pairs, single 2x2, general gather
        x = torch.randn(2, c, 12, w, device="cuda").contiguous(memory_format=fmt)
        v, i = TF.max_pool2d(x, k, return_indices=True)
        v, i = v.to(dtype).contiguous(memory_format=fmt), i.contiguous(memory_format=fmt)
        j = i.clone()
        j[1, 2, 1, 1] = 0  # leaves its window
        cases += [(v, i, k), (v, j, k)]
    expected = [RF.max_unpool2d(v.cpu(), i.cpu(), k) for v, i, k in cases]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        outs = [RF.max_unpool2d(v, i, k, check_indices=False) for v, i, k in cases]
        with pytest.raises(RuntimeError, match="synchroniz"):
            RF.max_unpool2d(*cases[0][:2], 2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for out, exp in zip(outs, expected):
        assert torch.equal(out.cpu(), exp)


@pytest.mark.cuda
def test_cuda_graph_capture_drops_out_of_range_and_fixes_up():
    """Under CUDA-graph capture the flags cannot be read: the gather, its fix-up pass and the
    dropping of out-of-range indices all run inside the graph."""
    x = torch.randn(2, 6, 16, 20, device="cuda")
    v, i = TF.max_pool2d(x, 2, return_indices=True)
    i = i.clone()
    i[0, 1, 2, 3], i[1, 5, 7, 9], i[1, 0, 0, 0] = 7, 320, -5  # outside its window, out of range x 2
    exp = _unpool_dropping_out_of_range(v.cpu(), i.cpu(), (16, 20))
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        RF.max_unpool2d(v, i, 2, check_indices=False)  # warm-up outside capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = RF.max_unpool2d(v, i, 2)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out.cpu(), exp)
