"""The fused vanilla-RNN op (rnnkern::rnn_forward / rnn_backward) and rnnkern.functional.rnn*.

The op is checked against a plain-PyTorch loop reference (autograd for its gradients), in fp64
tightly and in fp32 against the fp64 reference by relative norm error (DESIGN.md). Module-level
comparisons with torch.nn.RNN live in test_rnn_module.py.
"""
import random

import pytest
import torch

from rnnkern import functional as RF
from rnnkern import nn as RN
from rnnkern.ops import rnn as rnn_ops
from tests.utils import CPU_HAS_AVX512, DEVICES, TOL, TOL_TF32, rel_err

FWD = torch.ops.rnnkern.rnn_forward.default
BWD = torch.ops.rnnkern.rnn_backward.default

# fp32 means true fp32 here unless a test turns TF32 on (the tensor-core kernel's tests)
pytestmark = pytest.mark.usefixtures("strict_fp32")


# ----------------------------------------------------------------------------------------------
# helpers

def _rng():
    return random.Random(torch.initial_seed())


def _act(relu):
    return torch.relu if relu else torch.tanh


def ref_layer(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """Step-by-step reference with the op's contract: finished sequences keep their state and
    emit zeros. Differentiable, so autograd gives the reference gradients."""
    T, B = x.shape[:2]
    act = _act(relu)
    lens = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    lens = lens.to(x.device)
    h = h0
    outs = []
    for t in range(T):
        pre = x[t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            pre = pre + b_ih + b_hh
        hn = act(pre)
        live = (lens > t).unsqueeze(1)
        h = torch.where(live, hn, h)
        outs.append(torch.where(live, hn, torch.zeros_like(hn)))
    out = torch.stack(outs, 0) if T > 0 else x.new_zeros(0, B, w_hh.shape[0])
    return out, h


def ref_preacts(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu):
    """All pre-activations the reference computes (to keep relu cases away from the kink)."""
    T, B = x.shape[:2]
    lens = torch.full((B,), T, dtype=torch.long) if lengths is None else lengths
    h, pres = h0, []
    for t in range(T):
        pre = x[t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            pre = pre + b_ih + b_hh
        live = (lens > t).unsqueeze(1)
        pres.append(pre[lens > t])
        h = torch.where(live, _act(relu)(pre), h)
    return torch.cat([p.reshape(-1) for p in pres]) if pres else x.new_zeros(0)


def rand_lengths(rng, B, T, *, allow_zero=True):
    lo = 0 if allow_zero else 1
    return torch.tensor(sorted((rng.randint(lo, T) for _ in range(B)), reverse=True), dtype=torch.long)


def make_args(T, B, I, H, *, bias=True, dtype=torch.float64, device="cpu", scale=None):
    s = scale if scale is not None else 1.0 / max(H, 1) ** 0.5
    x = torch.randn(T, B, I, dtype=dtype, device=device)
    h0 = torch.randn(B, H, dtype=dtype, device=device) * 0.5
    w_ih = (torch.rand(H, I, dtype=dtype, device=device) * 2 - 1) * s
    w_hh = (torch.rand(H, H, dtype=dtype, device=device) * 2 - 1) * s
    if bias:
        b_ih = (torch.rand(H, dtype=dtype, device=device) * 2 - 1) * s
        b_hh = (torch.rand(H, dtype=dtype, device=device) * 2 - 1) * s
    else:
        b_ih = b_hh = None
    return x, h0, w_ih, w_hh, b_ih, b_hh


def _leaf(t, dtype=None, device=None):
    if t is None:
        return None
    return t.detach().to(dtype=dtype or t.dtype, device=device or t.device).clone().requires_grad_(True)


def _fwd_bwd(fn, tensors, lengths, relu, g_out, g_hn):
    """Run fn(*tensors, lengths, relu) -> (out, h_n), backprop (g_out, g_hn); return
    out, h_n and the grads of every non-None tensor."""
    out, hn = fn(*tensors, lengths, relu)
    loss = (out * g_out.to(out)).sum() + (hn * g_hn.to(hn)).sum()
    live = [t for t in tensors if t is not None]
    grads = torch.autograd.grad(loss, live, allow_unused=False)
    return out.detach(), hn.detach(), [g.detach() for g in grads]


def _cases(n):
    return list(range(n))


# ----------------------------------------------------------------------------------------------
# op vs reference

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", _cases(10))
def test_op_matches_reference(device, dtype, case):
    rng = _rng()
    T, B = rng.choice([1, 2, 5, 9]), rng.choice([1, 2, 3, 6])
    I, H = rng.choice([1, 3, 5, 7]), rng.choice([1, 3, 5, 9])
    bias, relu = rng.random() < 0.6, rng.random() < 0.5
    lengths = rand_lengths(rng, B, T) if rng.random() < 0.5 else None
    args64 = make_args(T, B, I, H, bias=bias)
    g_out = torch.randn(T, B, H, dtype=torch.float64)
    g_hn = torch.randn(B, H, dtype=torch.float64)

    ref_out, ref_hn, ref_grads = _fwd_bwd(ref_layer, [_leaf(a) for a in args64], lengths, relu, g_out, g_hn)
    ours = [_leaf(a, dtype, device) for a in args64]
    out, hn, grads = _fwd_bwd(rnn_ops.rnn_forward, ours, lengths, relu, g_out.to(device), g_hn.to(device))

    assert out.dtype == dtype and out.device.type == device and out.shape == (T, B, H)
    assert hn.dtype == dtype and hn.shape == (B, H)
    tol = TOL[dtype]
    assert rel_err(out.cpu(), ref_out) < tol
    assert rel_err(hn.cpu(), ref_hn) < tol
    names = ["input", "hx", "w_ih", "w_hh", "b_ih", "b_hh"]
    for name, g, r in zip(names, grads, ref_grads):
        assert g.shape == r.shape, name
        assert rel_err(g.cpu(), r) < tol, name


def test_op_both_bias_grads_equal_and_distinct():
    x, h0, w_ih, w_hh, b_ih, b_hh = (_leaf(a) for a in make_args(4, 3, 5, 7))
    out, hn = rnn_ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    (out.sum() + hn.sum()).backward()
    assert torch.equal(b_ih.grad, b_hh.grad)
    assert b_ih.grad.data_ptr() != b_hh.grad.data_ptr()


def test_op_only_hn_or_only_output_used():
    """grad_output / grad_hn arriving as None (unused output) must be treated as zeros."""
    args = make_args(5, 3, 4, 6)
    lengths = torch.tensor([5, 3, 1])
    for use in ("out", "hn"):
        ref = [_leaf(a) for a in args]
        ours = [_leaf(a) for a in args]
        r_out, r_hn = ref_layer(*ref, lengths, False)
        o_out, o_hn = rnn_ops.rnn_forward(*ours, lengths, False)
        (r_out if use == "out" else r_hn).square().sum().backward()
        (o_out if use == "out" else o_hn).square().sum().backward()
        for a, b in zip(ours, ref):
            assert rel_err(a.grad, b.grad) < 1e-12


def test_op_time_zero():
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(0, 3, 4, 5)
    out, hn = rnn_ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    assert out.shape == (0, 3, 5)
    assert torch.equal(hn, h0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("T,B,I,H", [(4, 2, 3, 0), (4, 0, 3, 5), (3, 2, 0, 4)])
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_op_empty_dims_forward_and_backward(monkeypatch, device, dtype, T, B, I, H, tf32, with_lengths):
    """Zero hidden units, an empty batch or zero input features: the right shapes, the values
    the reference gives (zeros where nothing contributes) and gradients of matching shape; with
    cudnn.allow_tf32 too (CUDA fp32 then takes the TF32 cuBLAS products, with empty sums), and
    with variable lengths (h_n gathered from an output with no columns at H = 0)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    tol = TOL_TF32 if tf32 and dtype == torch.float32 else TOL[dtype]
    args = [a.to(device) for a in make_args(T, B, I, H, dtype=dtype)]
    lengths = torch.tensor([T, T - 1][:B], dtype=torch.long) if with_lengths else None
    leaves = [a.detach().requires_grad_() for a in args]
    out, hn = rnn_ops.rnn_forward(*leaves, lengths, False)
    ref_out, ref_hn = ref_layer(*args, lengths, False)
    assert out.shape == (T, B, H) and hn.shape == (B, H)
    assert rel_err(out, ref_out) < tol and rel_err(hn, ref_hn) < tol
    grads = torch.autograd.grad((out * 1.5).sum() + hn.sum(), leaves)
    ref_leaves = [a.detach().requires_grad_() for a in args]
    ro, rh = ref_layer(*ref_leaves, lengths, False)
    ref_grads = torch.autograd.grad((ro * 1.5).sum() + rh.sum(), ref_leaves, allow_unused=True)
    for g, r, a in zip(grads, ref_grads, args):
        assert g.shape == a.shape
        assert rel_err(g, torch.zeros_like(a) if r is None else r) < tol


# ----------------------------------------------------------------------------------------------
# variable lengths

@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_op_lengths_semantics(relu, dtype):
    T, B, I, H = 7, 5, 3, 5
    lengths = torch.tensor([7, 5, 5, 1, 0])
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, I, H, dtype=dtype)
    out, hn = rnn_ops.rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, lengths, relu)
    for b, n in enumerate(lengths.tolist()):
        # outputs past the length: exactly zero
        assert torch.equal(out[n:, b], torch.zeros_like(out[n:, b]))
        # h_n: exactly the state at the last valid step (h0 for an empty sequence)
        assert torch.equal(hn[b], out[n - 1, b] if n > 0 else h0[b])
        if n == 0:
            continue
        # the same as running the sequence alone
        o1, h1 = rnn_ops.rnn_forward(x[:n, b:b + 1].contiguous(), h0[b:b + 1].contiguous(), w_ih, w_hh, b_ih,
                                     b_hh, None, relu)
        torch.testing.assert_close(out[:n, b], o1[:, 0], rtol=TOL[dtype] * 10, atol=TOL[dtype])
        torch.testing.assert_close(hn[b], h1[0], rtol=TOL[dtype] * 10, atol=TOL[dtype])


def test_op_lengths_padding_does_not_matter():
    """Values of x past a sequence's length affect nothing; their gradient is exactly zero."""
    T, B, I, H = 6, 4, 3, 5
    lengths = torch.tensor([6, 4, 2, 0])
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, I, H)
    mask = (torch.arange(T).unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(-1)
    x2 = torch.where(mask, x, torch.randn_like(x) * 100)
    xa, xb = _leaf(x), _leaf(x2)
    oa, ha = rnn_ops.rnn_forward(xa, h0, w_ih, w_hh, b_ih, b_hh, lengths, False)
    ob, hb = rnn_ops.rnn_forward(xb, h0, w_ih, w_hh, b_ih, b_hh, lengths, False)
    assert torch.equal(oa, ob) and torch.equal(ha, hb)
    g = torch.randn_like(oa)
    (oa * g).sum().backward()
    (ob * g).sum().backward()
    assert torch.equal(xa.grad, xb.grad)
    assert torch.equal(xa.grad[~mask.expand_as(x)], torch.zeros_like(xa.grad[~mask.expand_as(x)]))


def test_op_lengths_grads_match_separate_runs():
    T, B, I, H = 6, 4, 3, 5
    lengths = torch.tensor([6, 3, 3, 1])
    args = make_args(T, B, I, H)
    ours = [_leaf(a) for a in args]
    out, hn = rnn_ops.rnn_forward(*ours, lengths, True)
    (out.square().sum() + hn.sin().sum()).backward()
    acc = [torch.zeros_like(a) for a in args]
    for b, n in enumerate(lengths.tolist()):
        x, h0, *ws = args
        xb, hb = _leaf(x[:n, b:b + 1].contiguous()), _leaf(h0[b:b + 1].contiguous())
        wsb = [_leaf(w) for w in ws]
        o1, h1 = rnn_ops.rnn_forward(xb, hb, *wsb, None, True)
        (o1.square().sum() + h1.sin().sum()).backward()
        acc[0][:n, b] += xb.grad[:, 0]
        acc[1][b] += hb.grad[0]
        for k, w in enumerate(wsb):
            acc[2 + k] += w.grad
    for a, r in zip(ours, acc):
        assert rel_err(a.grad, r) < 1e-12


@pytest.mark.parametrize("relu", [False, True])
def test_rnn_layer_reverse_with_lengths(relu):
    """reverse=True runs each sequence backwards inside its own length; padding stays zero."""
    T, B, I, H = 6, 4, 3, 5
    lengths = torch.tensor([6, 4, 4, 1])
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, I, H)
    nl = "relu" if relu else "tanh"
    out, hn = RF.rnn_layer(x, h0, w_ih, w_hh, b_ih, b_hh, nl, lengths, reverse=True)
    for b, n in enumerate(lengths.tolist()):
        xr = x[:n, b:b + 1].flip(0)
        o1, h1 = ref_layer(xr, h0[b:b + 1], w_ih, w_hh, b_ih, b_hh, None, relu)
        torch.testing.assert_close(out[:n, b], o1.flip(0)[:, 0], rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(hn[b], h1[0], rtol=1e-12, atol=1e-13)
        assert torch.equal(out[n:, b], torch.zeros_like(out[n:, b]))


# ----------------------------------------------------------------------------------------------
# gradcheck

def _gradcheck_args(T, B, I, H, bias, relu, lengths):
    """fp64 leaves; for relu, resample until no pre-activation is within 0.05 of the kink."""
    for _ in range(200):
        args = make_args(T, B, I, H, bias=bias, scale=0.8)
        if not relu or ref_preacts(*args, lengths, relu).abs().min() > 0.05:
            return [_leaf(a) for a in args]
    raise AssertionError("could not draw relu inputs away from 0")


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("lengths", [None, [3, 2, 0], [3, 3, 1]])
def test_op_gradcheck(relu, bias, lengths):
    lengths = None if lengths is None else torch.tensor(lengths)
    T, B, I, H = 3, 3, 2, 3
    args = _gradcheck_args(T, B, I, H, bias, relu, lengths)
    live = [a for a in args if a is not None]

    def f(*ts):
        full = list(ts) if bias else list(ts) + [None, None]
        return rnn_ops.rnn_forward(*full, lengths, relu)

    assert torch.autograd.gradcheck(f, live, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_op_gradcheck_hn_only():
    lengths = torch.tensor([4, 2])
    args = _gradcheck_args(4, 2, 3, 2, True, False, lengths)
    assert torch.autograd.gradcheck(lambda *ts: rnn_ops.rnn_forward(*ts, lengths, False)[1], args)


def test_functional_rnn_gradcheck_bidirectional_lengths():
    T, B, I, H, L = 3, 3, 2, 2, 2
    lengths = torch.tensor([3, 2, 1])
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(2 * L, B, H, dtype=torch.float64, requires_grad=True)
    ws = []
    for layer in range(L):
        for _ in range(2):
            i = I if layer == 0 else 2 * H
            ws += [torch.randn(H, i, dtype=torch.float64) * 0.5, torch.randn(H, H, dtype=torch.float64) * 0.5,
                   torch.randn(H, dtype=torch.float64) * 0.5, torch.randn(H, dtype=torch.float64) * 0.5]
    ws = [w.requires_grad_() for w in ws]

    def f(x, hx, *flat):
        groups = [flat[k:k + 4] for k in range(0, len(flat), 4)]
        return RF.rnn(x, hx, groups, "tanh", L, bidirectional=True, lengths=lengths)

    assert torch.autograd.gradcheck(f, [x, hx, *ws])


# ----------------------------------------------------------------------------------------------
# opcheck

def _opcheck_samples():
    rng = _rng()
    samples = []
    for bias, lengths, relu in [(True, None, False), (False, None, True), (True, [5, 3, 3, 0], False),
                                (False, [5, 5, 2, 1], True)]:
        T, B = 5, 4
        I, H = rng.choice([3, 5]), rng.choice([3, 7])
        args = [_leaf(a) for a in make_args(T, B, I, H, bias=bias)]
        lens = None if lengths is None else torch.tensor(lengths)
        samples.append((args, lens, relu, bias))
    return samples


def test_opcheck_forward():
    for args, lens, relu, _ in _opcheck_samples():
        torch.library.opcheck(FWD, (*args, lens, relu))


def test_opcheck_backward():
    for args, lens, relu, bias in _opcheck_samples():
        x, h0, w_ih, w_hh = (a.detach() for a in args[:4])
        out, hn = rnn_ops.rnn_forward(*[None if a is None else a.detach() for a in args], lens, relu)
        torch.library.opcheck(BWD, (torch.randn_like(out), torch.randn_like(hn), x, h0, w_ih, w_hh, out, lens,
                                    relu, bias))


def test_opcheck_noncontiguous_input():
    """A time-major view of a batch-first tensor (what nn.RNN(batch_first=True) passes to the op):
    the fake kernels must report the strides the real kernels produce."""
    T, B, I, H = 5, 3, 4, 6
    x = torch.randn(B, T, I, dtype=torch.float64).transpose(0, 1)
    _, h0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, I, H)
    torch.library.opcheck(FWD, (x.requires_grad_(), _leaf(h0), _leaf(w_ih), _leaf(w_hh), _leaf(b_ih), _leaf(b_hh),
                                None, False))
    out, hn = rnn_ops.rnn_forward(x.detach(), h0, w_ih, w_hh, b_ih, b_hh, None, False)
    torch.library.opcheck(BWD, (torch.randn_like(out), torch.randn_like(hn), x.detach(), h0, w_ih, w_hh, out, None,
                                False, True))
    # no steps, and a transposed W_hh: grad_w_hh is zeros, contiguous as the fake says
    x0, out0 = torch.randn(0, B, I, dtype=torch.float64), torch.randn(0, B, H, dtype=torch.float64)
    torch.library.opcheck(BWD, (out0, torch.randn_like(hn), x0, h0, w_ih, w_hh.t().contiguous().t(), out0, None,
                                False, False))


# ----------------------------------------------------------------------------------------------
# determinism

@pytest.mark.parametrize("device", DEVICES)
def test_op_backward_bitwise_repeatable(device):
    T, B, I, H = 24, 16, 33, 65
    lengths = torch.tensor(sorted(torch.randint(1, T + 1, (B,)).tolist(), reverse=True))
    args = make_args(T, B, I, H, dtype=torch.float32, device=device)
    g_out = torch.randn(T, B, H, device=device)
    g_hn = torch.randn(B, H, device=device)
    runs = []
    for _ in range(2):
        out, hn, grads = _fwd_bwd(rnn_ops.rnn_forward, [_leaf(a) for a in args], lengths, False, g_out, g_hn)
        runs.append([out, hn, *grads])
    for a, b in zip(*runs):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# functional API vs torch

@pytest.mark.parametrize("case", _cases(4))
def test_functional_rnn_matches_torch(case):
    rng = _rng()
    I, H, L = rng.choice([3, 5]), rng.choice([3, 7]), rng.randint(1, 3)
    bidir, bias, nl = rng.random() < 0.5, rng.random() < 0.5, rng.choice(["tanh", "relu"])
    m = torch.nn.RNN(I, H, L, nonlinearity=nl, bias=bias, bidirectional=bidir).double()
    D = 2 if bidir else 1
    x = torch.randn(6, 3, I, dtype=torch.float64)
    hx = torch.randn(L * D, 3, H, dtype=torch.float64)
    n = 4 if bias else 2
    groups = [m._flat_weights[k:k + n] for k in range(0, len(m._flat_weights), n)]
    out, hn = RF.rnn(x, hx, groups, nl, L, bidirectional=bidir)
    r_out, r_hn = m(x, hx)
    assert rel_err(out, r_out) < 1e-12 and rel_err(hn, r_hn) < 1e-12


@pytest.mark.parametrize("nl", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("batched", [False, True])
def test_functional_rnn_cell_matches_torch(nl, bias, batched):
    I, H = 5, 7
    x = torch.randn(*([4] if batched else []), I, dtype=torch.float64)
    hx = torch.randn(*([4] if batched else []), H, dtype=torch.float64)
    w_ih, w_hh = torch.randn(H, I, dtype=torch.float64), torch.randn(H, H, dtype=torch.float64)
    b_ih, b_hh = (torch.randn(H, dtype=torch.float64), torch.randn(H, dtype=torch.float64)) if bias else (None, None)
    cell = torch.rnn_relu_cell if nl == "relu" else torch.rnn_tanh_cell
    for h in (hx, None):
        got = RF.rnn_cell(x, h, w_ih, w_hh, b_ih, b_hh, nl)
        href = h if h is not None else torch.zeros_like(hx)
        if batched:
            want = cell(x, href, w_ih, w_hh, b_ih, b_hh)
        else:
            want = cell(x.unsqueeze(0), href.unsqueeze(0), w_ih, w_hh, b_ih, b_hh).squeeze(0)
        assert got.shape == want.shape
        assert rel_err(got, want) < 1e-12


# ----------------------------------------------------------------------------------------------
# bad inputs

def _err(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_op_bad_inputs():
    T, B, I, H = 4, 3, 5, 6
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(T, B, I, H)
    f = rnn_ops.rnn_forward
    RE = RuntimeError
    _err(RE, "3-D", lambda: f(x[0], h0, w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "weight_ih", lambda: f(x, h0, w_ih[:, :-1], w_hh, b_ih, b_hh, None, False))
    _err(RE, "weight_ih", lambda: f(x[..., :-1], h0, w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "weight_hh", lambda: f(x, h0, w_ih, w_hh[:, :-1], b_ih, b_hh, None, False))
    _err(RE, "hx", lambda: f(x, h0[:-1], w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "hx", lambda: f(x, h0[:, :-1], w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "hx", lambda: f(x, h0.unsqueeze(0), w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "both biases", lambda: f(x, h0, w_ih, w_hh, b_ih, None, None, False))
    _err(RE, "biases", lambda: f(x, h0, w_ih, w_hh, b_ih[:-1], b_hh[:-1], None, False))
    _err(RE, "dtype", lambda: f(x, h0.float(), w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "dtype", lambda: f(x.float(), h0, w_ih, w_hh, b_ih, b_hh, None, False))
    _err(RE, "dtype", lambda: f(x, h0, w_ih, w_hh, b_ih.float(), b_hh.float(), None, False))
    # integer tensors throughout
    xi, hi = torch.ones(T, B, I, dtype=torch.long), torch.ones(B, H, dtype=torch.long)
    wi, wh = torch.ones(H, I, dtype=torch.long), torch.ones(H, H, dtype=torch.long)
    for relu in (False, True):
        _err(RE, "float32 and float64|Long", lambda: f(xi, hi, wi, wh, None, None, None, relu))
    # integer input with float parameters
    _err(RE, "dtype", lambda: f(x.long(), h0, w_ih, w_hh, None, None, None, False))
    # the backward op called directly with gradients unlike the outputs
    out, hn = FWD(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    g, gh = torch.randn_like(out), torch.randn_like(hn)
    for bad in ((g.float(), gh, out), (g, gh.float(), out), (g, gh, out.float())):
        _err(RE, "must match the input's dtype", lambda: BWD(*bad[:2], x, h0, w_ih, w_hh, bad[2], None, False, True))


def test_op_bad_lengths():
    T, B, I, H = 4, 3, 5, 6
    args = make_args(T, B, I, H)
    f = rnn_ops.rnn_forward
    _err(RuntimeError, "outside", lambda: f(*args, torch.tensor([5, 2, 1]), False))
    _err(RuntimeError, "outside", lambda: f(*args, torch.tensor([4, 2, -1]), False))
    _err(RuntimeError, "non-increasing", lambda: f(*args, torch.tensor([2, 4, 1]), False))
    _err(RuntimeError, "non-increasing", lambda: f(*args, torch.tensor([4, 1, 2]), False))
    _err(RuntimeError, "size B", lambda: f(*args, torch.tensor([4, 2]), False))
    _err(RuntimeError, "int64", lambda: f(*args, torch.tensor([4, 2, 1], dtype=torch.int32), False))
    _err(RuntimeError, "1-D", lambda: f(*args, torch.tensor([[4, 2, 1]]), False))


def test_functional_bad_inputs():
    x, h0, w_ih, w_hh, b_ih, b_hh = make_args(4, 3, 5, 6)
    _err(ValueError, "nonlinearity", lambda: RF.rnn_layer(x, h0, w_ih, w_hh, b_ih, b_hh, "sigmoid"))
    _err(ValueError, "nonlinearity", lambda: RF.rnn_cell(x[0], h0, w_ih, w_hh, b_ih, b_hh, "gelu"))
    _err(ValueError, "nonlinearity", lambda: RF.rnn(x, h0.unsqueeze(0), [(w_ih, w_hh)], "Tanh"))
    _err(ValueError, "weight groups", lambda: RF.rnn(x, h0.unsqueeze(0), [(w_ih, w_hh)], num_layers=2))
    _err(ValueError, "weight groups", lambda: RF.rnn(x, h0.unsqueeze(0), [(w_ih, w_hh)], bidirectional=True))
    for group in ((w_ih, w_hh, torch.randn(w_hh.shape[0])), (w_ih,), (w_ih, w_hh, b_ih, b_hh, b_hh)):
        _err(ValueError, "weight group 0 must be", lambda: RF.rnn(x, h0.unsqueeze(0), [group]))


# ----------------------------------------------------------------------------------------------
# persistent CUDA kernel vs the general path (csrc/cuda/rnn.cu chooses; RNNKERN_RNN_PATH forces)

def _cuda_args(T, B, H, seed_scale=0.9):
    f64 = dict(device="cuda", dtype=torch.float64)
    return [torch.randn(T, B, H, **f64), torch.randn(B, H, **f64) * 0.5, torch.randn(H, H, **f64) / H ** 0.5,
            torch.randn(H, H, **f64) * (seed_scale / H ** 0.5), torch.randn(H, **f64) * 0.1,
            torch.randn(H, **f64) * 0.1]


def _run_with_env(monkeypatch, tensors, lengths, relu, g, gh, **env):
    """The op's forward and all gradients (for upstream g, gh) with the environment variables
    `env` set (the kernels read RNNKERN_RNN_PATH / RNNKERN_RNN_BARRIER per call)."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    tensors = [a.detach().requires_grad_() for a in tensors]
    out, hn = FWD(*tensors, lengths, relu)
    grads = torch.autograd.grad((out * g.to(out.dtype)).sum() + (hn * gh.to(hn.dtype)).sum(), tensors)
    return [out, hn, *grads]


# ReLU's derivative jumps at 0: in low precision (bf16, fp16, TF32) a pre-activation within rounding
# of 0 can take the other branch, an O(1) change of that element's gradient, and the relative norm
# error then grows as the square root of the fraction of elements flipped (seen on an H200: 0.02 to
# 0.07 where tanh gives 1e-3). Forward outputs stay continuous; ReLU gradients in low precision get
# this allowance on top of the rule (the general path flips other elements than the kernel does).
# True fp32 flips too once there are millions of pre-activations: at T64 B64 H1024 (4M of them,
# about 1.6e-6 of which lie within fp32 rounding of 0) dx was off by 4.4e-4 on an H200.
RELU_GRAD_SLACK, RELU_GRAD_SLACK_FP32 = 0.05, 5e-3


def _slack(relu, dtype, i, tf32=False):
    """Extra tolerance for result i of _run_with_env (0 out, 1 h_n, 2.. gradients); fp32 that ran
    as TF32 counts as low precision."""
    if not relu or i < 2 or dtype == torch.float64:
        return 0.0
    return RELU_GRAD_SLACK_FP32 if dtype == torch.float32 and not tf32 else RELU_GRAD_SLACK


def _assert_ran_persistent(err, H):
    """A forced persistent run falls back to the general path when it does not fit, silently but
    for the RNNKERN_DEBUG log; where choose_rnn_path's rule (at most 16 rows of W_hh per CTA, one
    CTA per SM) says H fits, the comparisons below must really have run the persistent kernel."""
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    if H <= 16 * sms:
        assert "-> persistent path" in err and "general path" not in err, err


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,B,H", [(37, 5, 300), (64, 64, 1024), (16, 1, 2048), (8, 3, 7)])
@pytest.mark.parametrize("relu", [False, True])
def test_persistent_matches_general_and_fp64(strict_fp32, monkeypatch, capfd, dtype, T, B, H, relu):
    """The FMA kernel (true fp32; bf16/fp16 with fp32 accumulation) against the general path
    and fp64; the tensor-core kernel has its own tests below. TF32 off: with it on, the GEMMs
    around the recurrence would be TF32 (cuDNN's rule) and fp32 could not be held to 1e-5."""
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    monkeypatch.setenv("RNNKERN_RNN_MATH", "fma")
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)

    def run(tensors, path):
        return _run_with_env(monkeypatch, tensors, None, relu, g, gh, RNNKERN_RNN_PATH=path)

    ref = run(args, "general")  # fp64 always takes the general path
    low = [a.to(dtype) for a in args]
    capfd.readouterr()
    pers, pers2 = run(low, "persistent"), run(low, "persistent")
    _assert_ran_persistent(capfd.readouterr().err, H)
    gen = run(low, "general")
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    for i, (p, p2, q, r) in enumerate(zip(pers, pers2, gen, ref)):
        slack = _slack(relu, dtype, i)
        assert torch.equal(p, p2)  # bitwise repeatable
        assert rel_err(p, r) < tol + slack, i
        # never more than 2x the general (cuBLAS) path's error, plus a floor for exact cases
        assert rel_err(p, r) <= 2 * rel_err(q, r) + (1e-6 if dtype == torch.float32 else 1e-3) + slack, i


@pytest.mark.cuda
@pytest.mark.parametrize("B", [8, 70], ids=["persistent", "general"])
def test_cuda_lengths_need_no_host_sync(B):
    """A PackedSequence forward and backward (lengths inside the op, two layers, both directions)
    only enqueues work: the lengths-derived indices travel through pinned memory, so under
    torch.cuda.set_sync_debug_mode("error") nothing waits for the GPU. Results as without it."""
    m = RN.RNN(16, 32, num_layers=2, bidirectional=True).cuda()
    lengths = torch.randint(1, 12, (B,)).sort(descending=True).values
    x = torch.randn(12, B, 16, device="cuda")
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths)
    out0, h0 = m(packed)  # first calls may query the device and fill caches
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, h = m(packed)
        (out.data.sum() + h.sum()).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out.data, out0.data) and torch.equal(h, h0)


@pytest.mark.cuda
@pytest.mark.parametrize("B", [8, 70], ids=["persistent", "general"])
def test_cuda_fp32_ignores_the_matmul_tf32_flag(strict_fp32, matmul_tf32, monkeypatch, B):
    """cudnn.allow_tf32 off, torch's matmul TF32 flag on: the RNN's products (the input projection,
    the general path's steps, the gradients) stay in true fp32, as cuDNN's RNN does under those
    flags. TF32 would miss fp64 by ~1e-3 at H = 256; true fp32 by ~1e-6."""
    T, H = 6, 256
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    ref = _run_with_env(monkeypatch, args, None, False, g, gh)
    ours = _run_with_env(monkeypatch, [a.float() for a in args], None, False, g, gh)
    for i, (p, r) in enumerate(zip(ours, ref)):
        assert rel_err(p, r) < 2e-5, (i, rel_err(p, r))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("relu", [False, True])
def test_cuda_general_path_raw_steps(strict_fp32, monkeypatch, capfd, dtype, relu):
    """B > 64 takes the general path, whose CUDA steps are one cuBLAS product and one kernel on
    raw pointers (csrc/cuda/rnn.cu, CudaRecurrence): against fp64 (the ATen steps), with sorted
    lengths that form multi-step runs of equal row counts with fewer rows than B (the backward's
    strided grad_output copy has height > 1 there), T and 0 among them; then an out.sum()
    upstream gradient."""
    T, B, H = 13, 70, 48
    lengths = torch.tensor([13] * 10 + [9] * 20 + [4] * 25 + [1] * 14 + [0])
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    ref = _run_with_env(monkeypatch, args, lengths, relu, g, gh)
    capfd.readouterr()
    ours = _run_with_env(monkeypatch, [a.to(dtype) for a in args], lengths, relu, g, gh)
    err = capfd.readouterr().err
    assert "-> general path (batch outside [1, 64]" in err, err
    tol = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 5e-3}[dtype]  # bf16: as the other general-path tests

    def slack(i):  # fp32 at 43k pre-activations: a flip is unlikely enough to hold it to 1e-5
        return 0.0 if dtype == torch.float32 else _slack(relu, dtype, i)

    for i, (p, r) in enumerate(zip(ours, ref)):
        assert p.dtype == dtype
        assert rel_err(p, r) < tol + slack(i), i
    for b, n in enumerate(lengths.tolist()):
        assert torch.equal(ours[0][n:, b], torch.zeros_like(ours[0][n:, b]))
    low = [a.to(dtype).detach().requires_grad_() for a in args]
    out, hn = FWD(*low, lengths, relu)
    (out.sum() + hn.sum()).backward()
    high = [a.detach().requires_grad_() for a in args]
    out64, hn64 = FWD(*high, lengths, relu)
    (out64.sum() + hn64.sum()).backward()
    for i, (a, b) in enumerate(zip(low, high)):
        assert rel_err(a.grad, b.grad) < tol + slack(i + 2), i


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_cuda_general_path_step_graphs_bitwise(monkeypatch, capfd, dtype, tf32, with_lengths):
    """By default (RNNKERN_RNN_GRAPH unset) the general path's runs of steps are captured as a CUDA
    graph the second time their buffers recur and replayed after that (csrc/cuda/rnn.cu,
    StepGraphCache). Same kernels, same cuBLAS workspace size: every call, plain, capturing or
    replaying, gives the bits of the plain loop (RNNKERN_RNN_GRAPH=0), forward and all gradients;
    the log shows captures in both directions."""
    if tf32 and dtype != torch.float32:
        pytest.skip("TF32 applies to fp32 only")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    T, B, H = 20, 72, 40  # B > 64: the general path; runs of >= 8 steps (kMinGraphSteps)
    lengths = torch.tensor([20] * 30 + [11] * 40 + [3] * 2) if with_lengths else None
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    plain = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_GRAPH="0")
    monkeypatch.delenv("RNNKERN_RNN_GRAPH")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    capfd.readouterr()
    for call in range(4):  # plain (first sight), capture, replay, replay
        got = _run_with_env(monkeypatch, args, lengths, False, g, gh)
        for i, (a, b) in enumerate(zip(got, plain)):
            assert torch.equal(a, b), (call, i)
        del got, a, b  # every result freed, so the next call's buffers (the graph key) can recur
    err = capfd.readouterr().err
    assert "rnn forward steps" in err and "rnn backward steps" in err, err  # captured both ways


def _warm_up_for_capture(fn):
    """fn() three times on a side stream, as torch.cuda.graph asks before a capture."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)


@pytest.mark.cuda
def test_cuda_step_graphs_inside_a_users_graph_capture(monkeypatch):
    """Under the user's own CUDA graph capture (torch.cuda.graph, torch.compile's reduce-overhead)
    the step graphs (on by default) stand aside (no nested capture). Two captures share a memory
    pool, so the second sees the first one's buffers again (a recurring key, which would otherwise
    start a capture of our own inside the user's); both replay correctly."""
    monkeypatch.delenv("RNNKERN_RNN_GRAPH", raising=False)
    T, B, H = 16, 70, 32
    args = [a.float() for a in _cuda_args(T, B, H)]
    expected = FWD(*args, None, False)
    _warm_up_for_capture(lambda: FWD(*args, None, False))
    pool, ptrs, graphs = torch.cuda.graph_pool_handle(), [], []
    for _ in range(2):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            out, hn = FWD(*args, None, False)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, expected[0]) and torch.equal(hn, expected[1])
        ptrs.append(out.data_ptr())
        graphs.append(graph)
        del out, hn
    assert ptrs[0] == ptrs[1]  # the recurring key this test is about


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["persistent", "general"])
def test_cuda_users_graph_capture_with_lengths(monkeypatch, path):
    """A forward with lengths inside the user's CUDA graph: the rows derived from the lengths reach
    the GPU from pinned staging buffers (no host sync, so capture is legal). Replays after other
    pinned copies have run, which would be handed a staging block freed after the capture, still
    give the eager result."""
    monkeypatch.setenv("RNNKERN_RNN_PATH", path)
    T, B, H = 12, 6, 40
    args = [a.float() for a in _cuda_args(T, B, H)]
    lengths = torch.tensor([12, 9, 9, 4, 1, 0])
    expected = FWD(*args, lengths, False)
    _warm_up_for_capture(lambda: FWD(*args, lengths, False))
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, hn = FWD(*args, lengths, False)
    for _ in range(3):
        torch.full((B,), 3, dtype=torch.int64).pin_memory().to("cuda", non_blocking=True)
        torch.full((T,), 3, dtype=torch.int32).pin_memory().to("cuda", non_blocking=True)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, expected[0]) and torch.equal(hn, expected[1])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_persistent_variable_lengths(monkeypatch, capfd, dtype):
    """Lengths inside the FMA kernel: finished rows zeroed, dL/dh_n entering at each
    sequence's last step; must equal the general path and the fp64 reference."""
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    monkeypatch.setenv("RNNKERN_RNN_MATH", "fma")
    T, B, H = 23, 6, 257
    lengths = torch.tensor([23, 20, 20, 7, 1, 0])
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)

    def run(tensors, path):
        return _run_with_env(monkeypatch, tensors, lengths, False, g, gh, RNNKERN_RNN_PATH=path)

    ref = run(args, "general")
    low = [a.to(dtype) for a in args]
    capfd.readouterr()
    pers = run(low, "persistent")
    _assert_ran_persistent(capfd.readouterr().err, H)
    gen = run(low, "general")
    assert torch.equal(pers[0][7:, 3:], torch.zeros_like(pers[0][7:, 3:]))  # past each length: zeros
    tol = 1e-5 if dtype == torch.float32 else 5e-2
    for p, q, r in zip(pers, gen, ref):
        assert rel_err(p, r) < tol
        assert rel_err(p, r) <= 2 * rel_err(q, r) + (1e-6 if dtype == torch.float32 else 1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H,B", [(7, 5), (256, 5), (256, 40), (300, 5), (1024, 5)])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("barriers", ["waiting", "exchange"])
def test_persistent_barriers_bitwise_equal(monkeypatch, capfd, dtype, H, B, with_lengths, barriers):
    """grid.sync (the default), the flag barrier and (RNNKERN_RNN_BARRIER=cluster, sm_90, H <= 256)
    the one-cluster launch only change how CTAs wait, and (one cluster) where h_{t-1} is read
    from (the shared memory of the CTA that computed it, through distributed shared memory,
    instead of L2); the exchange (its own parameter, marked) waits on step-tagged fp32 words
    instead of a barrier. Each output is still one warp's fixed-order sum, so all of them give the
    same bits. B = 40 takes 4 sequences per warp. The log must name the barrier that ran. (Unknown
    values are an error: test_cuda_rnn_env_is_checked.)"""
    T = 19
    lengths = torch.linspace(19, 0, B).round().long() if with_lengths else None
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    cluster = "cluster" if torch.cuda.get_device_capability()[0] >= 9 and H <= 256 else "grid"
    # RNNKERN_RNN_BARRIER -> the barrier logged ("": set but empty, read as unset: the default)
    expected = ({"grid": "grid", "flag": "flag", "cluster": cluster, "": "grid"} if barriers == "waiting"
                else {"grid": "grid", "exchange": "exchange"})
    runs = {}
    for barrier, logged in expected.items():
        capfd.readouterr()
        runs[barrier] = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_PATH="persistent",
                                      RNNKERN_RNN_MATH="fma", RNNKERN_RNN_BARRIER=barrier)
        err = capfd.readouterr().err
        assert f"-> persistent path (fits, barrier {logged}," in err and "general path" not in err, err
    for barrier, run in runs.items():
        assert all(torch.equal(a, b) for a, b in zip(runs["grid"], run)), barrier


@pytest.mark.cuda
@pytest.mark.parametrize("barrier", ["grid", "flag", "exchange"])
def test_persistent_cta_cap_bitwise_equal(monkeypatch, capfd, barrier):
    """RNNKERN_RNN_CTAS=n caps the FMA kernel's grid (more rows a CTA, fewer barrier arrivals):
    each output is still one warp's fixed-order sum, so the bits do not change; a cap that leaves
    more than 16 rows a CTA takes the general path (logged); a bad value is an error naming it."""
    T, B, H = 11, 5, 256
    args = [a.float() for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    env = dict(RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH="fma", RNNKERN_RNN_BARRIER=barrier)
    base = _run_with_env(monkeypatch, args, None, False, g, gh, **env)
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    for ctas in ("64", "16"):
        capfd.readouterr()
        got = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_CTAS=ctas, **env)
        assert "-> persistent path (fits" in capfd.readouterr().err
        assert all(torch.equal(a, b) for a, b in zip(base, got))
    capfd.readouterr()
    got = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_CTAS="8", **env)
    assert "general path" in capfd.readouterr().err
    assert all(rel_err(b, a) < TOL_TF32 for a, b in zip(base, got))  # (its products may run in TF32)
    monkeypatch.setenv("RNNKERN_RNN_CTAS", "lots")
    with pytest.raises(RuntimeError, match="RNNKERN_RNN_CTAS"):
        _run_with_env(monkeypatch, args, None, False, g, gh, **env)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H", [300, 1024])
def test_persistent_batch_tiles_bitwise_equal(monkeypatch, capfd, dtype, H):
    """FMA kernel: B = 8, 16, 32, 64 run 1, 2, 4, 8 sequences per warp at a time (the log names the tile);
    a sequence's outputs and dz must not depend on which tile or batch it ran in. W_ih = I keeps
    the cuBLAS GEMMs around the kernel exact, so only the kernel's own arithmetic is compared."""
    T = 11
    args = _cuda_args(T, 64, H)
    args[2] = torch.eye(H, device="cuda", dtype=torch.float64)  # input projection and dx exact in any GEMM algorithm
    args = [a.to(dtype) for a in args]
    g, gh = torch.randn(T, 64, H, device="cuda"), torch.randn(64, H, device="cuda")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    monkeypatch.setenv("RNNKERN_RNN_MATH", "fma")  # the tensor-core kernel has no batch tiles
    full = _run_with_env(monkeypatch, args, None, True, g, gh, RNNKERN_RNN_PATH="persistent")
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    rows = -(-H // sms)  # H > 256: the grid barrier's spread over every SM (choose_rnn_path)
    tile = {B: max(t for t in (1, 2, 4, 8) if t <= -(-B // 8) and rows * t <= 64) for B in (8, 16, 32)}
    for B in (8, 16, 32):
        capfd.readouterr()
        sub = [args[0][:, :B], args[1][:B], *args[2:]]
        part = _run_with_env(monkeypatch, sub, None, True, g[:, :B], gh[:B], RNNKERN_RNN_PATH="persistent")
        assert f"batch tile {tile[B]})" in capfd.readouterr().err
        assert torch.equal(part[0], full[0][:, :B]) and torch.equal(part[1], full[1][:B])  # output, h_n
        assert torch.equal(part[2], full[2][:, :B])  # d input = dz (W_ih = I): the kernel's own result


def _cudnn_rnn(tensors, g, gh):
    """torch.nn.RNN (cuDNN) on the op's arguments: output, h_n and the gradients in the op's
    argument order, for upstream g, gh."""
    x, h0, w_ih, w_hh, b_ih, b_hh = (a.detach() for a in tensors)
    rnn = torch.nn.RNN(x.shape[2], h0.shape[1], device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for p, v in zip((rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0), (w_ih, w_hh, b_ih, b_hh)):
            p.copy_(v)
    x, h0 = x.requires_grad_(), h0.requires_grad_()
    out, hn = rnn(x, h0.unsqueeze(0))
    loss = (out * g.to(out.dtype)).sum() + (hn[0] * gh.to(hn.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, h0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0])
    return [out, hn[0], *grads]


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("math", ["fma", "mma"])
def test_persistent_long_sequence_accuracy(monkeypatch, dtype, math):
    """T=1024 (issue 4), both persistent kernels, against an fp64 reference. True fp32: within
    DESIGN.md's 1e-5. TF32 (the tensor-core kernel with cudnn.allow_tf32, as cuDNN's RNN runs by
    default): no worse than twice cuDNN's own TF32 error on the same problem. bf16: no worse than
    twice the general (cuBLAS) path's error."""
    T, B, H = 1024, 16, 512
    tf32 = dtype == torch.float32 and math == "mma"
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", tf32)
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    ref = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_PATH="general")
    low = [a.to(dtype) for a in args]
    pers = _run_with_env(monkeypatch, low, None, False, g, gh, RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH=math)
    other = _cudnn_rnn(low, g, gh) if tf32 else _run_with_env(monkeypatch, low, None, False, g, gh,
                                                              RNNKERN_RNN_PATH="general")
    for p, q, r in zip(pers, other, ref):
        if dtype == torch.float32 and not tf32:
            assert rel_err(p, r) < TOL[torch.float32]
        assert rel_err(p, r) <= 2 * rel_err(q, r) + (1e-6 if dtype == torch.float32 else 1e-3)


def _mma_row_bytes(k, elem):
    """Bytes a shared-memory operand row of k elements takes in the tensor-core kernels (rnn.cu's
    mma_ldk): k * elem / 4 words, padded to 8 (mod 32) words."""
    words = k * elem // 4
    return (words + (40 - words % 32) % 32) * 4


def _mma_expected(dtype, B, H):
    """Whether choose_rnn_path must pick the tensor-core kernel under RNNKERN_RNN_MATH=mma with
    TF32 allowed: sm_90 and the shared-memory budget of csrc/cuda/rnn.cu's mma_partition."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    if torch.cuda.get_device_capability()[0] < 9 or B > 256:
        return False
    elem, fk = (4, 8) if dtype == torch.float32 else (2, 16)
    kslice = -(-(-(-H // 8)) // fk) * fk
    most = 1 if H <= 256 else max(1, props.multi_processor_count // 8)
    units = -(-(-(-H // most)) // 16) * 16
    b16 = -(-B // 16) * 16
    smem = (units + b16) * _mma_row_bytes(kslice, elem) + b16 * (units + 4) * 4
    optin = getattr(props, "shared_memory_per_block_optin", 227 * 1024)
    return smem <= optin


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
# B > 64 (up to 256) reaches the tensor-core kernel only when forced, as here
@pytest.mark.parametrize("T,B,H", [(37, 16, 300), (20, 64, 1024), (9, 3, 7), (12, 33, 256), (6, 16, 2048), (23, 20, 100),
                                   (7, 100, 256), (5, 200, 512)])
@pytest.mark.parametrize("relu,with_lengths", [(False, False), (False, True), (True, True)])
def test_persistent_tensor_cores(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths):
    """The tensor-core kernel (k split over a cluster of 8 CTAs, partial sums added through
    distributed shared memory; one cluster for H <= 256, the flag barrier across several above):
    bitwise repeatable; fp32 runs it as TF32 (cudnn.allow_tf32 on) within DESIGN.md's 5e-3 of
    fp64; bf16/fp16 within twice the general path's error. With lengths (sorted, T and 0 among
    them) outputs past each length are zero. The log must show it ran, without falling back,
    where it fits."""
    err = _check_tensor_core_kernel(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths,
                                    RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH="mma")
    if _mma_expected(dtype, B, H):
        precision = {torch.float32: "tf32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]
        assert f"-> persistent path (fits, tensor cores {precision}," in err, err
        assert "-> FMA kernel" not in err and "general path" not in err, err


def _check_tensor_core_kernel(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths, **env):
    """Runs the op's forward and gradients twice under `env` (TF32 allowed, RNNKERN_DEBUG on) and
    checks them: bitwise repeatable, fp32 (TF32) within DESIGN.md's 5e-3 of fp64, bf16 / fp16 within
    twice the general path's error, zeros past each length (sorted, T and 0 among them). Returns
    the two runs' debug log."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    lengths = None
    if with_lengths:
        lengths = torch.sort(torch.randint(0, T + 1, (B,)), descending=True).values
        lengths[-1], lengths[0] = 0, T  # (B = 1: one sequence of T steps)
    args = _cuda_args(T, B, H)
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    ref = _run_with_env(monkeypatch, args, lengths, relu, g, gh, RNNKERN_RNN_PATH="general")
    low = [a.to(dtype) for a in args]
    capfd.readouterr()
    runs = [_run_with_env(monkeypatch, low, lengths, relu, g, gh, **env) for _ in range(2)]
    err = capfd.readouterr().err
    gen = _run_with_env(monkeypatch, low, lengths, relu, g, gh, RNNKERN_RNN_PATH="general")
    if lengths is not None:
        for b, n in enumerate(lengths.tolist()):
            assert torch.equal(runs[0][0][n:, b], torch.zeros_like(runs[0][0][n:, b]))
    for i, (p, p2, q, r) in enumerate(zip(*runs, gen, ref)):
        slack = _slack(relu, dtype, i, tf32=True)
        assert torch.equal(p, p2)  # bitwise repeatable
        if dtype == torch.float32:
            assert rel_err(p, r) < TOL_TF32 + slack, i
        else:
            assert rel_err(p, r) <= 2 * rel_err(q, r) + 1e-3 + slack, i
    return err


@pytest.mark.cuda
@pytest.mark.untried
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,B,H", [(37, 8, 256), (20, 16, 200), (9, 3, 7), (12, 1, 64), (7, 13, 129), (15, 16, 256),
                                   (11, 8, 300), (13, 8, 512), (6, 16, 640), (9, 5, 1000), (8, 8, 1024)])
@pytest.mark.parametrize("relu,with_lengths", [(False, False), (False, True), (True, True)])
def test_persistent_on_chip(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths):
    """The on-chip kernel (RNNKERN_RNN_PATH=cta: W_hh in one SM's shared memory, or over a cluster of
    up to 16 CTAs, 64 rows each, with h_t all-gathered through distributed shared memory; fp32 as
    TF32 in 16- and 8-bit planes), forward and backward: it runs where it fits, bitwise repeatable,
    fp32 (TF32) within DESIGN.md's 5e-3 of fp64, bf16 / fp16 within twice the general path's error,
    zeros past each length."""
    monkeypatch.delenv("RNNKERN_RNN_CLUSTER", raising=False)
    monkeypatch.delenv("RNNKERN_RNN_ON_CHIP_W", raising=False)
    err = _check_tensor_core_kernel(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths, RNNKERN_RNN_PATH="cta")
    expected = _on_chip_expected(dtype, H)
    assert f"-> on-chip kernel: {expected}" in err, err
    if expected.startswith("fits"):
        assert "on-chip grid" not in err and "on-chip cluster grid" not in err, err  # no fallback from it


def _on_chip_expected(dtype, H, ctas=None, registers=False, B=1):
    """What the on-chip kernel's log says at this H (csrc/cuda/rnn.cu's choose_on_chip and
    on_chip_smem: each CTA holds H_pad / ctas rows of W, fp32 as 3-byte TF32 planes; one copy of h, two
    in a cluster; the partial sums): by default one CTA per 64 rows on sm_90, one CTA (H <= 256) before."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    slabs = -(-H // 64)
    hpad = 64 * slabs
    clusters = torch.cuda.get_device_capability()[0] >= 9
    if slabs > 16:
        return "H > 1024"
    if not clusters and ctas is None and slabs > 4:
        return "H > 256 needs sm_90 clusters"
    if ctas is None:
        ctas = slabs if clusters else 1
    if ctas > 1 and not clusters:
        return "RNNKERN_RNN_CLUSTER > 1 needs sm_90 clusters"
    if ctas > 16 or slabs % ctas or slabs // ctas > 4 or (ctas > 1 and slabs // ctas == 4):
        return "RNNKERN_RNN_CLUSTER does not split H_pad into 64-256 rows a CTA (256: one CTA)"
    rows = hpad // ctas
    elem = 4 if dtype == torch.float32 else 2
    row = _mma_row_bytes(hpad, elem)
    optin = getattr(props, "shared_memory_per_block_optin", 227 * 1024)
    if registers:  # rnn_on_chip_wreg_kernel: B <= 8, 64 rows a CTA, a quarter of k a warp in <= 16 k-steps
        if B > 8:
            return "W_hh in registers holds batch <= 8"
        if rows != 64 and not clusters:
            return "W_hh in registers above H 64 needs sm_90 clusters"
        if rows != 64 or hpad // 4 // (8 if elem == 4 else 16) > 16:
            return "W_hh in registers needs 64 rows a CTA and H <= 512 (fp32) / 1024 (16-bit)"
        if (2 if ctas > 1 else 1) * 16 * row + 3 * 64 * 24 * 4 > optin:
            return "h exceeds shared memory"
        return f"fits ({ctas} CTA(s), 64 rows each, W in registers)"
    w_bytes = 3 * rows * hpad if elem == 4 else rows * _mma_row_bytes(hpad, 2)
    smem = w_bytes + (2 if ctas > 1 else 1) * 16 * row + 16 * (rows + 8) * 4
    if smem > optin:
        return "W_hh and h exceed shared memory"
    return f"fits ({ctas} CTA(s), {rows} rows each)"


@pytest.mark.cuda
@pytest.mark.untried
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,B,H", [(9, 3, 7), (12, 1, 64), (7, 8, 129), (20, 6, 200), (11, 8, 300), (13, 8, 512),
                                   (6, 4, 640), (9, 5, 1000), (8, 8, 1024), (7, 13, 129), (5, 16, 512)])
@pytest.mark.parametrize("relu,with_lengths", [(False, True), (True, False)])
def test_on_chip_w_registers(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths):
    """RNNKERN_RNN_ON_CHIP_W=registers: the on-chip kernel with W_hh as the MMA's A operand held in
    registers (64 rows a CTA, a quarter of k a warp, h as the n8 operand: B <= 8), forward and
    backward: it runs where it fits (fp32 to H512, 16-bit to H1024; before sm_90 one CTA to H64) and
    says why elsewhere (B 13 and 16 too), bitwise repeatable, within tolerance."""
    monkeypatch.delenv("RNNKERN_RNN_CLUSTER", raising=False)
    monkeypatch.setenv("RNNKERN_RNN_ON_CHIP_W", "registers")
    err = _check_tensor_core_kernel(monkeypatch, capfd, dtype, T, B, H, relu, with_lengths, RNNKERN_RNN_PATH="cta")
    expected = _on_chip_expected(dtype, H, registers=True, B=B)
    assert f"-> on-chip kernel: {expected}" in err, err
    if expected.startswith("fits"):
        assert "on-chip grid" not in err and "on-chip cluster grid" not in err, err  # no fallback from it


@pytest.mark.cuda
@pytest.mark.untried
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_chip_cluster_sizes(monkeypatch, capfd, dtype):
    """RNNKERN_RNN_CLUSTER=n runs the on-chip kernel on n CTAs of H_pad / n rows (H256 on 1, 2 and 4:
    four, two and one n8 tiles a warp; H384 on 2: three; H512 on 4 and 8), one CTA's two
    __syncthreads or a cluster's all-gather, each within tolerance and bitwise repeatable, where it
    fits (fp32 at 192 rows does not); a count that does not split H_pad into 64-256 rows a CTA (3 at
    H512: 8 slabs; 1: 512 rows) or asks a cluster of 256-row CTAs (2 at H512) is declined with the
    reason, and another kernel gives the right result."""
    monkeypatch.delenv("RNNKERN_RNN_ON_CHIP_W", raising=False)
    for H, ctas in [(256, 1), (256, 2), (256, 4), (384, 2), (512, 4), (512, 8), (512, 3), (512, 1), (512, 2)]:
        monkeypatch.setenv("RNNKERN_RNN_CLUSTER", str(ctas))
        err = _check_tensor_core_kernel(monkeypatch, capfd, dtype, 10, 8, H, False, True, RNNKERN_RNN_PATH="cta")
        expected = _on_chip_expected(dtype, H, ctas)
        assert f"-> on-chip kernel: {expected}" in err, (H, ctas, err)


@pytest.mark.cuda
def test_on_chip_declines_what_it_cannot_hold(monkeypatch, capfd):
    """RNNKERN_RNN_PATH=cta on a shape the on-chip kernel does not take (B > 16, H > 1024, fp32 with
    TF32 off) says why and runs another kernel, with the right result."""
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    for allow, (T, B, H), why in [(True, (5, 17, 64), "batch > 16"), (True, (5, 4, 1100), "H > 1024"),
                                  (False, (5, 4, 64), "fp32 with TF32 off")]:
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow)
        args = _cuda_args(T, B, H)
        g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
        gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
        ref = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_PATH="general")
        capfd.readouterr()
        out = _run_with_env(monkeypatch, [a.float() for a in args], None, False, g, gh, RNNKERN_RNN_PATH="cta")
        err = capfd.readouterr().err
        assert f"-> on-chip kernel: {why}" in err, err
        tol = TOL_TF32 if allow else TOL[torch.float32]
        assert max(rel_err(p, r) for p, r in zip(out, ref)) < tol + _slack(False, torch.float32, 0, tf32=allow)


@pytest.mark.cuda
def test_fp32_tensor_cores_follow_cudnn_allow_tf32(monkeypatch, capfd):
    """fp32 takes tensor cores only as TF32 and only when torch.backends.cudnn.allow_tf32 allows
    it (the flag that governs cuDNN's RNN), even when RNNKERN_RNN_MATH=mma asks for them."""
    T, B, H = 7, 64, 512
    args = [a.float() for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    ref = _run_with_env(monkeypatch, [a.double() for a in args], None, False, g, gh, RNNKERN_RNN_PATH="general")
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    for allow in (False, True):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow)
        capfd.readouterr()
        out = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH="mma")
        err = capfd.readouterr().err
        if not allow:
            assert "[tensor cores: fp32 with TF32 off]" in err, err
            assert max(rel_err(p, r) for p, r in zip(out, ref)) < TOL[torch.float32]
        elif torch.cuda.get_device_capability()[0] >= 9:
            assert "tensor cores tf32" in err, err


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["general", "persistent"])
def test_fp32_gemms_follow_cudnn_allow_tf32(monkeypatch, capfd, path):
    """The input projection, the general path's per-step products and the gradient GEMMs run in
    TF32 exactly when cudnn.allow_tf32 is on (logged; within DESIGN.md's 5e-3 of fp64), in true
    fp32 otherwise (1e-5). x and W_ih arrive as transposed views and I != H, so the cuBLAS calls
    see every operand layout."""
    T, B, I, H = 13, 24, 37, 200
    args = _cuda_args(T, B, H)
    args[0] = torch.randn(B, T, I, device="cuda", dtype=torch.float64).transpose(0, 1)
    args[2] = torch.randn(I, H, device="cuda", dtype=torch.float64).t() / I ** 0.5
    g = torch.randn(T, B, H, device="cuda", dtype=torch.float64)
    gh = torch.randn(B, H, device="cuda", dtype=torch.float64)
    ref = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_PATH="general")
    low = [a.float() for a in args]
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    for allow in (False, True):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", allow)
        capfd.readouterr()
        got = _run_with_env(monkeypatch, low, None, False, g, gh, RNNKERN_RNN_PATH=path)
        assert ("rnn GEMMs in TF32" in capfd.readouterr().err) == allow
        tol = TOL_TF32 if allow else TOL[torch.float32]
        for p, r in zip(got, ref):
            assert rel_err(p, r) < tol


# ----------------------------------------------------------------------------------------------
# the CPU's register-blocked AVX-512 step (fp32) vs its ATen step (csrc/cpu/rnn.cpp chooses: the
# AVX-512 step where its packing pays; RNNKERN_RNN_PATH=avx512 / general forces one, and these small
# shapes force it). On a CPU without AVX-512 both runs take the ATen step and the comparisons still
# hold.

# B covers the 8-row tile and its remainders, H the 32-column panel and ragged ends
@pytest.mark.parametrize("T,B,H", [(9, 1, 7), (13, 8, 32), (11, 19, 33), (6, 16, 300), (5, 3, 96)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_cpu_avx512_step_matches_general_and_fp64(monkeypatch, T, B, H, relu, with_lengths):
    rng = _rng()
    lengths = rand_lengths(rng, B, T) if with_lengths else None
    args = [a for a in make_args(T, B, H + 3, H)]
    g, gh = torch.randn(T, B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    ref = _run_with_env(monkeypatch, args, lengths, relu, g, gh, RNNKERN_RNN_PATH="general")
    f32 = [a.float() for a in args]
    fast, fast2 = (_run_with_env(monkeypatch, f32, lengths, relu, g, gh, RNNKERN_RNN_PATH="avx512") for _ in range(2))
    gen = _run_with_env(monkeypatch, f32, lengths, relu, g, gh, RNNKERN_RNN_PATH="general")
    for p, p2, q, r in zip(fast, fast2, gen, ref):
        assert torch.equal(p, p2)  # bitwise repeatable
        assert rel_err(p, r) < TOL[torch.float32]
        assert rel_err(p, r) <= 2 * rel_err(q, r) + 1e-6
    if with_lengths:  # past each length: zeros
        for b, n in enumerate(lengths.tolist()):
            assert not fast[0][n:, b].any()


@pytest.mark.skipif(not CPU_HAS_AVX512, reason="the choice exists on AVX-512 CPUs only")
@pytest.mark.parametrize("T,B,H,step", [(1, 1, 512, "general"), (4, 8, 256, "general"), (64, 8, 256, "avx512"),
                                        (16, 32, 128, "avx512")])
def test_cpu_step_choice_repays_packing(monkeypatch, capfd, T, B, H, step):
    # a one-token call (sampling) must not pay ~0.2 ms packing W_hh for one step; long runs do
    args = [a.float() for a in make_args(T, B, 16, H)]
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    capfd.readouterr()
    out, hn = FWD(*args, None, False)
    BWD(torch.randn_like(out), torch.randn_like(hn), *args[:4], out, None, False, True)
    log = capfd.readouterr().err
    assert log.count(f"{step} step") == 2, log


def test_cpu_avx512_step_noncontiguous_operands(monkeypatch):
    """Transposed / strided views for every operand of both ops, float32 (the AVX-512 step packs or
    copies what it needs), against the same values made contiguous."""
    T, B, I, H = 6, 5, 7, 40
    x, h0, w_ih, w_hh, b_ih, b_hh = (a.float() for a in make_args(T, B, I, H))
    views = [x.transpose(0, 1).contiguous().transpose(0, 1), h0.t().contiguous().t(), w_ih.t().contiguous().t(),
             w_hh.t().contiguous().t(), torch.stack([b_ih, b_ih], 1)[:, 0], torch.stack([b_hh, b_hh], 1)[:, 0]]
    assert not any(v.is_contiguous() for v in views)
    g = torch.randn(B, T, H).transpose(0, 1)
    gh = torch.randn(H, B).t()
    monkeypatch.setenv("RNNKERN_RNN_PATH", "avx512")
    # bitwise on the AVX-512 step; MKL (the general step) may pick other kernels for strided operands
    same = torch.equal if CPU_HAS_AVX512 else (lambda a, b: rel_err(a, b) < 1e-6)
    out, hn = FWD(*views, None, False)
    out_c, hn_c = FWD(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    assert same(out, out_c) and same(hn, hn_c)
    grads = BWD(g, gh, views[0], views[1], views[2], views[3], out.transpose(0, 1).contiguous().transpose(0, 1),
                None, False, True)
    grads_c = BWD(g.contiguous(), gh.contiguous(), x, h0, w_ih, w_hh, out_c, None, False, True)
    for a, b in zip(grads, grads_c):
        assert same(a, b)


@pytest.mark.parametrize("H", [96, 512])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_cpu_avx512_step_thread_count_independent(monkeypatch, H, with_lengths):
    """With several threads one OpenMP region spans each run of steps with equal live rows, the
    threads splitting the panels and meeting once per step; every output element is still one
    tile's sequential k-sum, so 1 and 2 threads give identical bits (lengths cut the runs)."""
    T, B = 7, 9
    args = [a.float() for a in make_args(T, B, 16, H)]
    lengths = torch.tensor([7, 7, 6, 6, 6, 3, 2, 2, 0]) if with_lengths else None
    g, gh = torch.randn(T, B, H), torch.randn(B, H)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_PATH="avx512")
        torch.set_num_threads(2)
        two = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_PATH="avx512")
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_cpu_tanh_accuracy_and_special_values():
    """The fused tanh against fp64 over 1e-10..30 (both signs): within 2 ulp of the fp32 result
    (torch's is within 0.6); inf saturates to +-1 and NaN propagates."""
    H = 64
    v = torch.cat([torch.logspace(-10, 1.5, 3000), torch.linspace(0.3, 0.7, 2000), torch.rand(2000) * 10,
                   torch.tensor([0.0, 8.9, 9.0, 9.1, 9.9, 10.0, 10.1, 30.0, 1e-30, 1e-40])])
    v = torch.cat([v, -v])
    x = torch.zeros((v.numel() + H - 1) // H * H)
    x[: v.numel()] = v
    x = x.view(-1, 1, H)
    eye, zero = torch.eye(H), torch.zeros(H, H)
    out, _ = FWD(x, torch.zeros(1, H), eye, zero, None, None, None, False)  # tanh(x I^T) = tanh(x)
    ref = torch.tanh(x.double())
    t32 = torch.tanh(x).abs()
    ulp = (t32.nextafter(torch.tensor(float("inf"))) - t32).double()
    assert ((out.double() - ref).abs() / ulp).max().item() <= 2.0
    special = torch.zeros(H)
    special[:3] = torch.tensor([float("inf"), -float("inf"), float("nan")])  # via the bias: no inf * 0 in a GEMM
    out, _ = FWD(torch.zeros(1, 1, H), torch.zeros(1, H), eye, zero, special, torch.zeros(H), None, False)
    assert out[0, 0, 0].item() == 1.0 and out[0, 0, 1].item() == -1.0 and out[0, 0, 2].isnan()
    out, _ = FWD(torch.zeros(1, 1, H), torch.zeros(1, H), eye, zero, special, torch.zeros(H), None, True)
    assert out[0, 0, 0].item() == float("inf") and out[0, 0, 1].item() == 0.0 and out[0, 0, 2].isnan()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["", "general", "avx512"])
def test_relu_with_non_finite_values_matches_torch(monkeypatch, device, path):
    """relu as torch's on NaN and inf: relu(NaN) = NaN forward, and backward zeroes the gradient only
    where the output is <= 0 (threshold_backward), so it passes through a NaN output. Outputs,
    h_n and every gradient against torch.nn.RNN (on the CPU, fp64) with the same weights: the
    NaN positions alike, the finite values close. CPU: the AVX-512 step (RNNKERN_RNN_PATH=avx512)
    and the general one; CUDA: the default path (at B8 H64, the persistent kernel)."""
    if path and device != "cpu":
        pytest.skip("RNNKERN_RNN_PATH=general|avx512 picks a CPU step")
    monkeypatch.setenv("RNNKERN_RNN_PATH", path)
    torch.manual_seed(0)
    theirs = torch.nn.RNN(8, 64, nonlinearity="relu").double()
    ours = RN.RNN(8, 64, nonlinearity="relu").to(device)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(40, 8, 8)
    x[10, 3, 0] = float("nan")
    x[5, 1, 2] = float("inf")
    x[7, 6, 4] = -float("inf")
    gy = torch.randn(40, 8, 64)
    results = []
    for m, dt, dev in ((theirs, torch.float64, "cpu"), (ours, torch.float32, device)):
        xi = x.to(dev, dt).requires_grad_()
        out, hn = m(xi)
        grads = torch.autograd.grad((out * gy.to(dev, dt)).sum() + hn.sum(), [xi, *m.parameters()])
        results.append([t.detach().double().cpu() for t in (out, hn, *grads)])
    names = ["output", "h_n", "grad_input"] + [n for n, _ in theirs.named_parameters()]
    for name, want, got in zip(names, *results):
        assert torch.equal(want.isnan(), got.isnan()), name
        assert torch.equal(want.isinf(), got.isinf()), name
        finite = want.isfinite()  # (none in grad_weight_hh: every h_{t-1} of sequence 3 is NaN from step 11)
        assert finite.any() or name == "weight_hh_l0", name
        if finite.any():
            assert rel_err(got[finite], want[finite]) < 1e-4, (name, rel_err(got[finite], want[finite]))


def test_cpu_step_choice_is_logged(monkeypatch, capfd):
    x, h0, w_ih, w_hh, b_ih, b_hh = (a.float() for a in make_args(3, 2, 4, 5))
    monkeypatch.setenv("RNNKERN_DEBUG", "1")
    monkeypatch.setenv("RNNKERN_RNN_PATH", "avx512")
    FWD(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    expected = "avx512 step" if CPU_HAS_AVX512 else "general step"
    assert expected in capfd.readouterr().err
    monkeypatch.setenv("RNNKERN_RNN_PATH", "general")
    FWD(x, h0, w_ih, w_hh, b_ih, b_hh, None, False)
    assert "general step (RNNKERN_RNN_PATH=general)" in capfd.readouterr().err
    FWD(x.double(), h0.double(), w_ih.double(), w_hh.double(), b_ih.double(), b_hh.double(), None, False)
    assert "general step" in capfd.readouterr().err


@pytest.mark.parametrize("relu", [False, True])
def test_double_backward(relu):
    """A backward with create_graph=True (gradient penalties, Hessian-vector products) gives
    differentiable gradients: gradgradcheck in fp64, with biases and with lengths; and the
    module's second-order gradients equal torch.nn.RNN's."""
    torch.manual_seed(0)
    T, B, I, H = 4, 3, 3, 5
    leaves = [torch.randn(*s, dtype=torch.double, requires_grad=True)
              for s in ((T, B, I), (B, H), (H, I), (H, H), (H,), (H,))]
    for lengths in (None, torch.tensor([4, 2, 0])):
        assert torch.autograd.gradgradcheck(
            lambda *a: rnn_ops.rnn_forward(*a, lengths, relu), leaves, eps=1e-6, atol=1e-5)
    ours = RN.RNN(I, H, 2, nonlinearity="relu" if relu else "tanh", bidirectional=True).double()
    theirs = torch.nn.RNN(I, H, 2, nonlinearity="relu" if relu else "tanh", bidirectional=True).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.double, requires_grad=True)
    second = []
    for m in (ours, theirs):
        (g,) = torch.autograd.grad(m(x)[0].square().sum(), x, create_graph=True)
        second.append(torch.autograd.grad(g.square().sum(), [x, *m.parameters()]))
    for a, b in zip(*second):
        torch.testing.assert_close(a, b)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,B,H", [(torch.float32, 192, 1024), (torch.bfloat16, 128, 2048), (torch.bfloat16, 16, 300)])
def test_persistent_tensor_cores_default_keeps_them(monkeypatch, dtype, B, H):
    """RNNKERN_RNN_BARRIER unset, the tensor-core kernel across clusters takes the exchange, whose
    second partial-sum buffer does not fit shared memory at every shape the flag barrier's one
    buffer does (fp32 B192 H1024 and bf16 B128 H2048 on an H100 / H200, by rnn.cu's mma_partition):
    there the default keeps the tensor cores with the flag barrier. Wherever the flag barrier runs
    them, the default runs them too, exchange or flag, with the same bits."""
    if not _mma_expected(dtype, B, H):
        pytest.skip("the tensor-core kernel does not run this shape here")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setenv("RNNKERN_RNN_TRACE", "1")
    T = 5
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    env = dict(RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH="mma")
    flag = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_BARRIER="flag", **env)
    if not rnn_ops.step_trace()[0].startswith("tensor-core kernel, flag,"):
        pytest.skip("the flag barrier's form does not run this shape here (one cluster, or no co-residency)")
    default = _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_BARRIER="", **env)
    kernel = rnn_ops.step_trace()[0]  # (the backward's launch)
    assert kernel.startswith(("tensor-core kernel, exchange,", "tensor-core kernel, flag,")), kernel
    assert all(torch.equal(a, b) for a, b in zip(flag, default))


@pytest.mark.cuda
@pytest.mark.parametrize("math,dtype,B,H", [("fma", torch.float32, 8, 256), ("mma", torch.bfloat16, 16, 512)])
def test_cuda_step_trace(monkeypatch, math, dtype, B, H):
    """RNNKERN_RNN_TRACE=1 (scripts/rnn_step_trace.py): the persistent kernels stamp every step of
    the first and the last CTA, in order, with the kernel named; tracing changes no bit of the
    results; without a persistent launch (the general path) the kernel is ""."""
    if math == "mma" and torch.cuda.get_device_capability() < (9, 0):
        pytest.skip("the tensor-core kernel needs sm_90 (thread-block clusters)")
    T = 20
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    env = dict(RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH=math)
    plain = _run_with_env(monkeypatch, args, None, False, g, gh, **env)
    monkeypatch.setenv("RNNKERN_RNN_TRACE", "1")
    traced = _run_with_env(monkeypatch, args, None, False, g, gh, **env)
    assert all(torch.equal(a, b) for a, b in zip(plain, traced))
    kernel, stamps = rnn_ops.step_trace()  # the backward's launch, the last one
    assert kernel.startswith("FMA kernel" if math == "fma" else "tensor-core kernel"), kernel
    assert stamps.shape == (2, 64, 8) and stamps.dtype == torch.int64
    phases = 2 if math == "fma" else 5
    for cta in stamps:
        used = cta[:T, : 2 + phases]
        assert (used[1:] > 0).all(), used  # (step 0 of the tensor-core kernel skips its MMA phases)
        clocks = used[1:, 1:]
        assert (clocks[:, 1:] >= clocks[:, :-1]).all()  # phases end in order within a step ...
        assert (used[2:, 0] >= used[1:-1, 0]).all() and (used[2:, 1] > used[1:-1, -1]).all()  # ... and steps follow
        assert (cta[T:] == 0).all()
    _run_with_env(monkeypatch, args, None, False, g, gh, RNNKERN_RNN_PATH="general")
    assert rnn_ops.step_trace()[0] == ""


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T,B,H,with_lengths", [(37, 16, 300, False), (20, 64, 1024, True), (6, 8, 2048, True)])
def test_persistent_tensor_cores_exchange_bitwise_equal(monkeypatch, capfd, dtype, T, B, H, with_lengths):
    """The tensor-core kernel across clusters with the exchange (no flag barrier: h_{t-1} staged
    from step-tagged words; its default, and RNNKERN_RNN_BARRIER=exchange) gives the flag
    barrier's bits, forward and backward. The step trace names the kernel that launched (the log
    states the choice before launch_mma may re-partition)."""
    if not _mma_expected(dtype, B, H):
        pytest.skip("the tensor-core kernel does not run this shape here (sm_90 and its shared memory)")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setenv("RNNKERN_RNN_TRACE", "1")
    lengths = torch.linspace(T, 0, B).round().long() if with_lengths else None
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    runs = {}
    for barrier in ("flag", "exchange", ""):  # "": unset, the default
        runs[barrier] = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_PATH="persistent",
                                      RNNKERN_RNN_MATH="mma", RNNKERN_RNN_BARRIER=barrier)
        kernel = rnn_ops.step_trace()[0]  # (the backward's launch)
        assert kernel.startswith(f"tensor-core kernel, {barrier or 'exchange'},"), kernel
    assert all(torch.equal(a, b) for run in runs.values() for a, b in zip(runs["flag"], run))


@pytest.mark.cuda
@pytest.mark.parametrize("math,dtype,B,H", [("fma", torch.float32, 12, 256), ("fma", torch.bfloat16, 40, 300),
                                            ("mma", torch.float32, 16, 300), ("mma", torch.bfloat16, 20, 1024)])
def test_exchange_with_sequences_ending_early(monkeypatch, math, dtype, B, H):
    """RNNKERN_RNN_BARRIER=exchange where sequences finish at different steps and all before T (live
    rows drop to 0): finished rows are not exchanged (a finished row's zero must not overwrite a word
    a slower reader still waits for), and the results keep the default barrier's bits."""
    if math == "mma" and not _mma_expected(dtype, B, H):
        pytest.skip("the tensor-core kernel does not run this shape here")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    T = 30
    lengths = torch.linspace(T - 6, 0, B).round().long()
    args = [a.to(dtype) for a in _cuda_args(T, B, H)]
    g, gh = torch.randn(T, B, H, device="cuda"), torch.randn(B, H, device="cuda")
    env = dict(RNNKERN_RNN_PATH="persistent", RNNKERN_RNN_MATH=math, RNNKERN_RNN_TRACE="1")
    base = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_BARRIER="flag", **env)
    got = _run_with_env(monkeypatch, args, lengths, False, g, gh, RNNKERN_RNN_BARRIER="exchange", **env)
    kernel = rnn_ops.step_trace()[0]  # the exchange barrier really ran (the backward's launch)
    assert kernel.startswith(("FMA kernel" if math == "fma" else "tensor-core kernel") + ", exchange,"), kernel
    assert all(torch.equal(a, b) for a, b in zip(base, got))


@pytest.mark.cuda
@pytest.mark.parametrize("var,value", [("RNNKERN_RNN_BARRIER", "flags"), ("RNNKERN_RNN_GRAPH", "off"),
                                       ("RNNKERN_RNN_PATH", "fused"), ("RNNKERN_RNN_MATH", "tf32"),
                                       ("RNNKERN_RNN_TRACE", "yes"), ("RNNKERN_RNN_ON_CHIP_W", "regs")])
def test_cuda_rnn_env_is_checked(monkeypatch, var, value):
    """A mistyped RNNKERN_RNN_* override is an error naming the variable and its values, not a silent
    fall back to the default (rnn.cu's check_rnn_env); unset or empty is the default."""
    m = RN.RNN(8, 16).cuda()
    x = torch.randn(12, 2, 8, device="cuda")
    monkeypatch.setenv(var, value)
    with pytest.raises(RuntimeError, match=f"{var} must be one of"):
        m(x)
    monkeypatch.setenv(var, "")
    m(x)


# ----------------------------------------------------------------------------------------------
# the tensor-core kernels' index arithmetic, replayed on the CPU

@pytest.mark.parametrize("script", ["check_rnn_mma", "check_rnn_on_chip"])
def test_rnn_index_replays(script, capsys):
    """The numpy replays of the tensor-core RNN kernels' index arithmetic (run without a GPU: they
    check it against the documented PTX layouts, not the kernels).

    check_rnn_mma: rnn_persistent_mma_kernel's MMA phase (the w_s fill and h_s staging in mma_k_position's order, mma_partial_sums / mma_tile_block's 8-byte loads,
    pipelined k-loop and float2 stores) on the PTX mma.sync fragment layouts: the partial sums equal
    h @ W.T, every output written once, no padding read, no load bank conflicts; with one cluster, the
    reduce's writes of h_t into the ranks' h_s (no restaging after step 0) equal the staging from
    global memory on the next step's live rows, over steps where live shrinks and grows; and its
    mutants are caught; its anchors fail it when rnn.cu's formulas change.

    check_rnn_on_chip: rnn_on_chip_kernel, all ranks of a 1-16 CTA cluster over 3-4 steps (each
    rank's rows of W in mma_k_position's order, fp32 as swizzled TF32 hi16 / lo8 planes; both
    k-halves' pipelined mma.sync loads, one tile a warp's two accumulators, part_s, the epilogue, h_t
    all-gathered into every rank's next h_s buffer) on the PTX mma.sync fragment layouts: the registers
    equal PTX's layouts of W / h, acc + part_s equals h @ W.T, the outputs equal the reference
    recurrence, every rank's next buffer equals a fresh staging of h_t, no access unordered by the
    barriers, no load bank conflicts, on_chip_smem and choose_on_chip agree; and likewise
    rnn_on_chip_wreg_kernel (W_hh in registers as the A operand, h as B; 4 m tiles x 4 k quarters,
    part_s's quarters, B <= 8): its registers equal PTX's A layout of W and hold each
    element once, its h loads PTX's B layout, the outputs the recurrence, choose_on_chip's registers
    branch the kernel's guard; its mutants are caught; its anchors fail it when rnn.cu's formulas
    change."""
    import pathlib
    import runpy
    try:
        runpy.run_path(str(pathlib.Path(__file__).resolve().parents[2] / "scripts" / f"{script}.py"),
                       run_name="__main__")
    except SystemExit as e:  # the scripts exit 1 on a mismatch
        assert e.code in (0, None), capsys.readouterr().out
    out = capsys.readouterr().out
    assert "ok" in out and "MISMATCH" not in out, out
