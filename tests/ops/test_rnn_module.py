"""rnnkern.nn.RNN / RNNCell against torch.nn.RNN / RNNCell with the same weights.

fp64: tight (rel_err < 1e-12) against torch's fp64 module; fp32 (and CUDA) against torch's fp64
module on the CPU by relative norm error (< 1e-5); bf16/fp16 on CUDA: error vs the fp64 reference
no more than 2x torch's own same-dtype error (DESIGN.md).
"""
import random

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkern
from rnnkern import functional as RF
from tests.utils import DEVICES, TOL, rel_err

# fp32 is compared at true-fp32 tolerances: TF32 off for rnnkern's kernels and cuDNN alike
pytestmark = pytest.mark.usefixtures("strict_fp32")

F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# helpers

def _rng():
    return random.Random(torch.initial_seed())


def _odd(rng, lo, hi):
    return rng.choice([v for v in range(lo, hi + 1) if v % 2])


def rand_cfg(rng):
    return dict(input_size=_odd(rng, 1, 9), hidden_size=_odd(rng, 1, 11), num_layers=rng.randint(1, 3),
                nonlinearity=rng.choice(["tanh", "relu"]), bias=rng.random() < 0.7,
                batch_first=rng.random() < 0.5, bidirectional=rng.random() < 0.5,
                dropout=rng.choice([0.0, 0.0, 0.4]))


def pair(cfg, dtype=F64, device="cpu"):
    """(torch fp64 CPU reference module, rnnkern module with the same weights in dtype/device)."""
    ref = torch.nn.RNN(**cfg).to(F64).eval()
    ours = rnnkern.nn.RNN(**cfg).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, ours.to(dtype=dtype, device=device)


def _grad_of(p):
    return p.grad if p.grad is not None else torch.zeros_like(p)


def run(mod, x, hx, g_out, g_hn, *, dtype=None, device=None):
    """Forward + backward of sum(out * g_out) + sum(h_n * g_hn). Inputs are cast to dtype/device
    as fresh leaves; returns out, h_n, and a dict of grads: input, hx, every named parameter."""
    dtype = dtype or x.dtype
    device = device or x.device
    mod.zero_grad(set_to_none=True)
    xl = x.detach().to(dtype=dtype, device=device).requires_grad_()
    hl = None if hx is None else hx.detach().to(dtype=dtype, device=device).requires_grad_()
    out, hn = mod(xl, hl)
    loss = (out * g_out.to(out)).sum() + (hn * g_hn.to(hn)).sum()
    loss.backward()
    grads = {"input": xl.grad}
    if hl is not None:
        grads["hx"] = hl.grad
    grads.update({n: _grad_of(p) for n, p in mod.named_parameters()})
    return out.detach(), hn.detach(), grads


def make_inputs(cfg, T, B, *, h0=True, batched=True):
    D = 2 if cfg["bidirectional"] else 1
    L, I, H = cfg["num_layers"], cfg["input_size"], cfg["hidden_size"]
    if batched:
        xs = (B, T, I) if cfg["batch_first"] else (T, B, I)
        hs = (L * D, B, H)
        os = (B, T, D * H) if cfg["batch_first"] else (T, B, D * H)
    else:
        xs, hs, os = (T, I), (L * D, H), (T, D * H)
    x = torch.randn(xs, dtype=F64)
    hx = torch.randn(hs, dtype=F64) * 0.5 if h0 else None
    return x, hx, torch.randn(os, dtype=F64), torch.randn(hs, dtype=F64)


def assert_matches(got, want, tol):
    out, hn, grads = got
    r_out, r_hn, r_grads = want
    assert out.shape == r_out.shape and hn.shape == r_hn.shape
    assert rel_err(out.cpu(), r_out) < tol, "output"
    assert rel_err(hn.cpu(), r_hn) < tol, "h_n"
    assert grads.keys() == r_grads.keys()
    for k in r_grads:
        assert grads[k] is not None, k
        assert grads[k].shape == r_grads[k].shape, k
        assert rel_err(grads[k].cpu(), r_grads[k]) < tol, k


# ----------------------------------------------------------------------------------------------
# state_dict / construction

def test_state_dict_round_trip():
    cfg = dict(input_size=5, hidden_size=7, num_layers=3, bias=True, bidirectional=True)
    t = torch.nn.RNN(**cfg)
    r = rnnkern.nn.RNN(**cfg)
    assert list(t.state_dict().keys()) == list(r.state_dict().keys())
    for (n1, p1), (n2, p2) in zip(t.named_parameters(), r.named_parameters()):
        assert n1 == n2 and p1.shape == p2.shape
    r.load_state_dict(t.state_dict())
    for k, v in t.state_dict().items():
        assert torch.equal(r.state_dict()[k], v)
    r2 = rnnkern.nn.RNN(**cfg)
    t2 = torch.nn.RNN(**cfg)
    t2.load_state_dict(r2.state_dict())
    for k, v in r2.state_dict().items():
        assert torch.equal(t2.state_dict()[k], v)
    assert "weight_hh_l2_reverse" in r.state_dict() and "bias_ih_l0" in r.state_dict()
    assert list(r.state_dict()) == list(t.state_dict())  # same keys in the same order
    assert [p.shape for p in r.parameters()] == [p.shape for p in t.parameters()]
    assert repr(r) == repr(t)


def test_ours_state_dict_into_torch_same_outputs():
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, nonlinearity="relu", bidirectional=True)
    ours = rnnkern.nn.RNN(**cfg).double()
    ref = torch.nn.RNN(**cfg).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(6, 4, 3, dtype=F64)
    o1, h1 = ours(x)
    o2, h2 = ref(x)
    assert rel_err(o1, o2) < 1e-12 and rel_err(h1, h2) < 1e-12


def test_weights_read_fresh_each_call():
    """forward reads the parameters on every call (nothing cached): a parametrized weight, a
    replaced parameter and an in-place update are all seen, as torch.nn.RNN sees them."""
    from torch.nn.utils import parametrize

    class Scale(torch.nn.Module):
        def forward(self, w):
            return 0.5 * w

    cfg = dict(input_size=3, hidden_size=5, num_layers=2)
    ours, ref = rnnkern.nn.RNN(**cfg).double(), torch.nn.RNN(**cfg).double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 3, dtype=F64)
    for m in (ours, ref):
        parametrize.register_parametrization(m, "weight_hh_l1", Scale())
    assert rel_err(ours(x)[0], ref(x)[0]) < 1e-12
    for m in (ours, ref):
        parametrize.remove_parametrizations(m, "weight_hh_l1")
        m.weight_ih_l0 = torch.nn.Parameter(torch.ones(5, 3, dtype=F64))
        with torch.no_grad():
            m.bias_hh_l1.add_(1.0)
    assert rel_err(ours(x)[0], ref(x)[0]) < 1e-12


# ----------------------------------------------------------------------------------------------
# random configs vs torch.nn.RNN

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", list(range(12)))
def test_rnn_matches_torch(device, dtype, case):
    rng = _rng()
    cfg = rand_cfg(rng)
    T, B = rng.choice([1, 2, 5, 8]), rng.choice([1, 2, 3, 5])
    x, hx, g_out, g_hn = make_inputs(cfg, T, B, h0=rng.random() < 0.6)
    ref, ours = pair(cfg, dtype, device)
    want = run(ref, x, hx, g_out, g_hn)
    got = run(ours, x, hx, g_out, g_hn, dtype=dtype, device=device)
    assert got[0].dtype == dtype and got[0].device.type == device
    assert_matches(got, want, TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 4), (6, 1), (1, 1), (5, 0)], ids=["T1", "B1", "T1B1", "B0"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_edge_shapes(device, dtype, shape, bidirectional):
    T, B = shape
    cfg = dict(input_size=3, hidden_size=5, num_layers=2, nonlinearity="tanh", bias=True, batch_first=False,
               bidirectional=bidirectional, dropout=0.0)
    for h0 in (True, False):
        x, hx, g_out, g_hn = make_inputs(cfg, T, B, h0=h0)
        ref, ours = pair(cfg, dtype, device)
        assert_matches(run(ours, x, hx, g_out, g_hn, dtype=dtype, device=device), run(ref, x, hx, g_out, g_hn),
                       TOL[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", list(range(4)))
def test_rnn_unbatched(device, case):
    rng = _rng()
    cfg = rand_cfg(rng)
    T = rng.choice([1, 4, 7])
    for h0 in (True, False):
        x, hx, g_out, g_hn = make_inputs(cfg, T, 1, h0=h0, batched=False)
        ref, ours = pair(cfg, F64, device)
        got = run(ours, x, hx, g_out, g_hn, device=device)
        want = run(ref, x, hx, g_out, g_hn)
        assert got[0].dim() == 2 and got[1].dim() == 2
        assert_matches(got, want, TOL[F64])


def test_rnn_non_contiguous_input():
    cfg = dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True, batch_first=False)
    ref, ours = pair(cfg)
    base = torch.randn(6, 3, 8, dtype=F64)
    x = base[..., ::2]  # non-contiguous (6, 3, 4)
    hx = torch.randn(3, 4, 5, dtype=F64).transpose(0, 1)  # non-contiguous (4, 3, 5)
    g_out, g_hn = torch.randn(6, 3, 10, dtype=F64), torch.randn(4, 3, 5, dtype=F64)
    ours_x, ref_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    o1, h1 = ours(ours_x, hx)
    o2, h2 = ref(ref_x, hx)
    ((o1 * g_out).sum() + (h1 * g_hn).sum()).backward()
    ((o2 * g_out).sum() + (h2 * g_hn).sum()).backward()
    assert rel_err(o1, o2) < 1e-12 and rel_err(h1, h2) < 1e-12
    assert rel_err(ours_x.grad, ref_x.grad) < 1e-12


# ----------------------------------------------------------------------------------------------
# dropout

def test_dropout_eval_is_identity_to_torch():
    cfg = dict(input_size=5, hidden_size=7, num_layers=3, dropout=0.5, bidirectional=True)
    x, hx, g_out, g_hn = make_inputs({**cfg, "batch_first": False}, 6, 3)
    ref, ours = pair(cfg)
    assert_matches(run(ours, x, hx, g_out, g_hn), run(ref, x, hx, g_out, g_hn), TOL[F64])


def test_dropout_train_mode_active():
    cfg = dict(input_size=5, hidden_size=7, num_layers=3, dropout=0.5, bidirectional=True)
    _, ours = pair(cfg)
    x = torch.randn(6, 3, 5, dtype=F64)
    ours.eval()
    o_eval, h_eval = ours(x)
    ours.train()
    torch.manual_seed(1)
    o1, h1 = ours(x)
    torch.manual_seed(1)
    o2, h2 = ours(x)
    torch.manual_seed(2)
    o3, _ = ours(x)
    assert o1.shape == o_eval.shape == (6, 3, 14) and h1.shape == h_eval.shape == (6, 3, 7)
    assert torch.equal(o1, o2) and torch.equal(h1, h2)  # same seed, same masks
    assert not torch.allclose(o1, o_eval)  # dropout is applied in training
    assert not torch.allclose(o1, o3)  # masks are random
    # layer 0 sees no dropout: its h_n (both directions) equals eval mode's
    assert torch.equal(h1[:2], h_eval[:2])
    assert not torch.allclose(h1[2:], h_eval[2:])
    # gradients flow in train mode
    xl = x.clone().requires_grad_()
    o, h = ours(xl)
    (o.sum() + h.sum()).backward()
    assert torch.isfinite(xl.grad).all() and xl.grad.abs().sum() > 0


def test_dropout_single_layer_train_equals_eval():
    with pytest.warns(UserWarning):
        ref, ours = pair(dict(input_size=3, hidden_size=5, num_layers=1, dropout=0.5))
    x = torch.randn(4, 2, 3, dtype=F64)
    ours.eval()
    o_eval, _ = ours(x)
    ours.train()
    o_train, _ = ours(x)
    assert torch.equal(o_eval, o_train)


# ----------------------------------------------------------------------------------------------
# PackedSequence

def _packed_case(rng, cfg, B, T):
    lengths = [rng.randint(1, T) for _ in range(B)]
    lengths[rng.randrange(B)] = 1
    lengths[rng.randrange(B)] = T
    return lengths


def _run_packed(mod, x, lengths, hx, enforce_sorted, g_data, g_hn, *, dtype=F64, device="cpu"):
    mod.zero_grad(set_to_none=True)
    xl = x.detach().to(dtype=dtype, device=device).requires_grad_()
    hl = None if hx is None else hx.detach().to(dtype=dtype, device=device).requires_grad_()
    packed = pack_padded_sequence(xl, torch.tensor(lengths), batch_first=mod.batch_first,
                                  enforce_sorted=enforce_sorted)
    out, hn = mod(packed, hl)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    ((out.data * g_data.to(out.data)).sum() + (hn * g_hn.to(hn)).sum()).backward()
    grads = {"input": xl.grad, **({"hx": hl.grad} if hl is not None else {}),
             **{n: _grad_of(p) for n, p in mod.named_parameters()}}
    return out, hn.detach(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("case", list(range(4)))
def test_packed_sequence(device, dtype, enforce_sorted, case):
    rng = _rng()
    cfg = rand_cfg(rng)
    T, B = rng.randint(2, 8), rng.randint(2, 6)
    lengths = _packed_case(rng, cfg, B, T)
    if enforce_sorted:
        lengths.sort(reverse=True)
    x, hx, _, g_hn = make_inputs(cfg, T, B, h0=rng.random() < 0.6)
    D = 2 if cfg["bidirectional"] else 1
    g_data = torch.randn(sum(lengths), D * cfg["hidden_size"], dtype=F64)
    ref, ours = pair(cfg, dtype, device)
    r_out, r_hn, r_grads = _run_packed(ref, x, lengths, hx, enforce_sorted, g_data, g_hn)
    o_out, o_hn, o_grads = _run_packed(ours, x, lengths, hx, enforce_sorted, g_data, g_hn, dtype=dtype,
                                       device=device)
    assert torch.equal(o_out.batch_sizes, r_out.batch_sizes)
    for a, b in ((o_out.sorted_indices, r_out.sorted_indices), (o_out.unsorted_indices, r_out.unsorted_indices)):
        assert (a is None and b is None) or torch.equal(a.cpu(), b.cpu())
    assert_matches((o_out.data.detach(), o_hn, o_grads), (r_out.data.detach(), r_hn, r_grads), TOL[dtype])


# ----------------------------------------------------------------------------------------------
# RNNCell

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("nl", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batched", [True, False])
def test_rnn_cell_matches_torch(device, dtype, nl, bias, batched):
    I, H, B = 5, 7, 3
    ref = torch.nn.RNNCell(I, H, bias=bias, nonlinearity=nl).double()
    ours = rnnkern.nn.RNNCell(I, H, bias=bias, nonlinearity=nl)
    ours.load_state_dict(ref.state_dict())
    ours.to(dtype=dtype, device=device)
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, dtype=F64)
    for with_h in (True, False):
        hx = torch.randn(*lead, H, dtype=F64) if with_h else None
        g = torch.randn(*lead, H, dtype=F64)
        res = []
        for mod, dt, dev in ((ref, F64, "cpu"), (ours, dtype, device)):
            mod.zero_grad(set_to_none=True)
            xl = x.detach().to(dtype=dt, device=dev).requires_grad_()
            hl = None if hx is None else hx.detach().to(dtype=dt, device=dev).requires_grad_()
            h = mod(xl, hl)
            (h * g.to(h)).sum().backward()
            res.append([h.detach(), xl.grad] + ([hl.grad] if hl is not None else [])
                       + [_grad_of(p) for p in mod.parameters()])
        assert res[1][0].shape == res[0][0].shape and res[1][0].dtype == dtype
        for a, b in zip(res[1], res[0]):
            assert a.shape == b.shape
            assert rel_err(a.cpu(), b) < TOL[dtype]


def test_rnn_cell_bad_inputs():
    c = rnnkern.nn.RNNCell(4, 6)
    with pytest.raises(RuntimeError, match="input_size"):
        c(torch.randn(3, 5))
    with pytest.raises(RuntimeError, match="hx shape"):
        c(torch.randn(3, 4), torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="hx shape"):
        c(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(RuntimeError, match="hx shape"):
        c(torch.randn(4), torch.randn(1, 6))
    with pytest.raises(ValueError, match="1D or 2D"):
        c(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="1D or 2D"):
        c(torch.randn(3, 4), torch.randn(1, 3, 6))
    with pytest.raises(RuntimeError, match="dtype"):
        c(torch.randn(3, 4, dtype=F64))
    with pytest.raises(RuntimeError, match="dtype"):
        c(torch.randint(0, 3, (3, 4)))


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_layer_devices_are_checked(device):
    """Every tensor argument on the input's device, named when it is not; lengths on the CPU."""
    other = "meta" if device == "cpu" else "cpu"
    x, h = torch.randn(5, 2, 4, device=device), torch.zeros(2, 3, device=device)
    w_ih, w_hh, b = torch.randn(3, 4, device=device), torch.randn(3, 3, device=device), torch.zeros(3, device=device)
    args = dict(hx=h, w_ih=w_ih, w_hh=w_hh, b_ih=b, b_hh=b)
    for name in args:
        bad = dict(args, **{name: args[name].to(other)})
        with pytest.raises(RuntimeError, match=f"rnn: {name} is on {other}"):
            RF.rnn_layer(x, **bad)
    if device != "cpu":
        with pytest.raises(ValueError, match="lengths must be a CPU tensor"):
            RF.rnn_layer(x, **args, lengths=torch.tensor([5, 3], device=device))


# ----------------------------------------------------------------------------------------------
# gradcheck through the module

def test_rnn_module_gradcheck_bidirectional_2layer():
    cfg = dict(input_size=3, hidden_size=2, num_layers=2, bidirectional=True, nonlinearity="tanh")
    mod = rnnkern.nn.RNN(**cfg).double()
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in mod.parameters()]
    x = torch.randn(3, 2, 3, dtype=F64, requires_grad=True)
    hx = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)

    def f(x, hx, *ps):
        return functional_call(mod, dict(zip(names, ps)), (x, hx))

    assert torch.autograd.gradcheck(f, (x, hx, *params))


def test_rnn_module_gradcheck_packed():
    mod = rnnkern.nn.RNN(2, 2, num_layers=2, bidirectional=True).double()
    names = [n for n, _ in mod.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in mod.parameters()]
    x = torch.randn(3, 3, 2, dtype=F64, requires_grad=True)
    lengths = torch.tensor([1, 3, 2])

    def f(x, *ps):
        out, hn = functional_call(mod, dict(zip(names, ps)),
                                  (pack_padded_sequence(x, lengths, enforce_sorted=False),))
        return out.data, hn

    assert torch.autograd.gradcheck(f, (x, *params))


# ----------------------------------------------------------------------------------------------
# torch.compile

class _LM(torch.nn.Module):
    def __init__(self, batch_first):
        super().__init__()
        self.emb = torch.nn.Embedding(11, 5)
        self.rnn = rnnkern.nn.RNN(5, 7, num_layers=2, bidirectional=True, batch_first=batch_first)
        self.lin = torch.nn.Linear(14, 11)

    def forward(self, tok, h0):
        out, hn = self.rnn(self.emb(tok), h0)
        return self.lin(out), hn


def _compile_check(batch_first):
    torch._dynamo.reset()
    m = _LM(batch_first)
    tok = torch.randint(0, 11, (3, 6) if batch_first else (6, 3))
    h0 = torch.randn(4, 3, 7)
    res = []
    for fn in (m, torch.compile(m, fullgraph=True)):
        m.zero_grad(set_to_none=True)
        hl = h0.clone().requires_grad_()
        out, hn = fn(tok, hl)
        (out.square().sum() + hn.sum()).backward()
        res.append([out.detach(), hn.detach(), hl.grad] + [p.grad for p in m.parameters()])
    for a, b in zip(*res):
        assert a.shape == b.shape
        assert rel_err(b, a) < 1e-5


def test_compile_fullgraph():
    """torch.compile(fullgraph=True) on a model using rnnkern.nn.RNN, default Dynamo config."""
    _compile_check(batch_first=False)


def test_compile_fullgraph_batch_first():
    """batch_first passes a non-contiguous time-major view to the op: the fakes must report the
    kernels' real output strides."""
    _compile_check(batch_first=True)


# ----------------------------------------------------------------------------------------------
# truncated BPTT

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_truncated_bptt(dtype):
    cfg = dict(input_size=5, hidden_size=9, num_layers=2, nonlinearity="tanh", batch_first=True)
    ref, ours = pair(cfg, dtype)
    ref64 = ref
    B, T, chunk = 3, 24, 6
    x = torch.randn(B, T, 5, dtype=F64)
    h_r = h_o = torch.zeros(2, B, 9, dtype=F64)
    for s in range(0, T, chunk):
        xc = x[:, s:s + chunk]
        g = torch.randn(B, chunk, 9, dtype=F64)
        g_h = torch.randn(2, B, 9, dtype=F64)
        want = run(ref64, xc, h_r, g, g_h)
        got = run(ours, xc, h_o, g, g_h, dtype=dtype)
        assert_matches(got, want, TOL[dtype])
        h_r, h_o = want[1].detach(), got[1].detach()  # carried, detached


# ----------------------------------------------------------------------------------------------
# determinism

def _fwd_bwd_all(mod, x, hx, g):
    mod.zero_grad(set_to_none=True)
    xl, hl = x.clone().requires_grad_(), hx.clone().requires_grad_()
    out, hn = mod(xl, hl)
    ((out * g).sum() + hn.sum()).backward()
    return [out.detach(), hn.detach(), xl.grad, hl.grad] + [p.grad.clone() for p in mod.parameters()]


@pytest.mark.parametrize("device", DEVICES)
def test_backward_bitwise_repeatable(device):
    mod = rnnkern.nn.RNN(33, 64, num_layers=2, bidirectional=True).to(device)
    x = torch.randn(20, 16, 33, device=device)
    hx = torch.randn(4, 16, 64, device=device)
    g = torch.randn(20, 16, 128, device=device)
    a = _fwd_bwd_all(mod, x, hx, g)
    b = _fwd_bwd_all(mod, x, hx, g)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


# ----------------------------------------------------------------------------------------------
# bad inputs

def test_rnn_bad_inputs():
    m = rnnkern.nn.RNN(4, 6, num_layers=2)
    x = torch.randn(5, 3, 4)
    with pytest.raises(RuntimeError, match="input_size|input.size"):
        m(torch.randn(5, 3, 7))
    with pytest.raises(RuntimeError, match="hidden size"):
        m(x, torch.randn(2, 2, 6))
    with pytest.raises(RuntimeError, match="hidden size"):
        m(x, torch.randn(1, 3, 6))
    with pytest.raises(RuntimeError, match="hidden size"):
        m(x, torch.randn(2, 3, 5))
    with pytest.raises(RuntimeError, match="3-D"):
        m(x, torch.randn(2, 6))  # batched input, unbatched hx
    with pytest.raises(RuntimeError, match="2-D"):
        m(torch.randn(5, 4), torch.randn(2, 1, 6))  # unbatched input, batched hx
    # torch.nn.RNN raises ValueError for an input of another dtype; ours is also a TypeError
    for bad in ((x.double(),), (x, torch.randn(2, 3, 6, dtype=F64)), (torch.randint(0, 3, (5, 3, 4)),)):
        for cls in (ValueError, TypeError):
            with pytest.raises(cls, match="dtype"):
                m(*bad)
    with pytest.raises(ValueError, match="2D or 3D"):
        m(torch.randn(1, 5, 3, 4))
    with pytest.raises(ValueError, match="nonlinearity|Unknown"):
        rnnkern.nn.RNN(4, 6, nonlinearity="sigmoid")
    m.nonlinearity = "gelu"  # set after construction: the functional layer must refuse it
    with pytest.raises(ValueError, match="nonlinearity"):
        m(x)


def test_rnn_packed_bad_hx():
    m = rnnkern.nn.RNN(4, 6)
    p = pack_padded_sequence(torch.randn(5, 3, 4), torch.tensor([5, 2, 1]))
    with pytest.raises(RuntimeError, match="hidden size"):
        m(p, torch.randn(1, 2, 6))


# ----------------------------------------------------------------------------------------------
# CUDA half types: error vs fp64 at most 2x torch's own same-dtype error

def _torch_half_run(ref_cfg, state, x, hx, g_out, g_hn, dtype):
    mod = torch.nn.RNN(**ref_cfg).eval()
    mod.load_state_dict(state)
    mod = mod.to(dtype=dtype, device="cuda")
    try:
        return run(mod, x, hx, g_out, g_hn, dtype=dtype, device="cuda")
    except RuntimeError:  # no cuDNN RNN for this dtype: torch's native (cell-loop) implementation
        with torch.backends.cudnn.flags(enabled=False):
            return run(mod, x, hx, g_out, g_hn, dtype=dtype, device="cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", list(range(4)))
def test_rnn_cuda_half_precision(dtype, case):
    rng = _rng()
    cfg = rand_cfg(rng)
    cfg["dropout"] = 0.0
    cfg["input_size"], cfg["hidden_size"] = _odd(rng, 9, 65), _odd(rng, 9, 129)
    T, B = rng.choice([1, 7, 32]), rng.choice([1, 5, 16])
    x, hx, g_out, g_hn = make_inputs(cfg, T, B, h0=rng.random() < 0.6)
    ref, ours = pair(cfg, dtype, "cuda")
    want = run(ref, x, hx, g_out, g_hn)
    got = run(ours, x, hx, g_out, g_hn, dtype=dtype, device="cuda")
    theirs = _torch_half_run(cfg, ref.state_dict(), x, hx, g_out, g_hn, dtype)
    assert got[0].dtype == dtype
    pairs = [("output", got[0], theirs[0], want[0]), ("h_n", got[1], theirs[1], want[1])]
    pairs += [(k, got[2][k], theirs[2][k], want[2][k]) for k in want[2]]
    # ReLU gradients in half precision: a pre-activation within rounding of 0 may take the other
    # branch of the derivative, here or in cuDNN, an O(1) change of one element (seen on an H200:
    # one flip in 3 layers x 7 steps x 115 units gave 0.011 against cuDNN's 5e-4 without one)
    slack = 0.05 if cfg["nonlinearity"] == "relu" else 0.0
    for name, g, t, w in pairs:
        e_ours, e_torch = rel_err(g.cpu(), w), rel_err(t.cpu(), w)
        extra = slack if name not in ("output", "h_n") else 0.0
        assert e_ours <= 2 * e_torch + 1e-7 + extra, f"{name}: rnnkern {e_ours:.3g} vs torch {e_torch:.3g}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rnn_cell_cuda_half_precision(dtype):
    ref = torch.nn.RNNCell(17, 33).double()
    ours = rnnkern.nn.RNNCell(17, 33)
    ours.load_state_dict(ref.state_dict())
    theirs = torch.nn.RNNCell(17, 33)
    theirs.load_state_dict(ref.state_dict())
    ours.to(dtype=dtype, device="cuda")
    theirs.to(dtype=dtype, device="cuda")
    x, hx = torch.randn(9, 17, dtype=F64), torch.randn(9, 33, dtype=F64)
    want = ref(x, hx)
    got = ours(x.to(dtype=dtype, device="cuda"), hx.to(dtype=dtype, device="cuda"))
    th = theirs(x.to(dtype=dtype, device="cuda"), hx.to(dtype=dtype, device="cuda"))
    assert got.dtype == dtype
    assert rel_err(got.cpu(), want.detach()) <= 2 * rel_err(th.cpu(), want.detach()) + 1e-7


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rnn_cuda_half_packed_deterministic(dtype):
    mod = rnnkern.nn.RNN(31, 65, num_layers=2, bidirectional=True).to(dtype=dtype, device="cuda")
    x = torch.randn(12, 7, 31, device="cuda", dtype=dtype)
    lengths = torch.tensor([12, 1, 5, 9, 12, 3, 7])
    res = []
    for _ in range(2):
        mod.zero_grad(set_to_none=True)
        xl = x.clone().requires_grad_()
        out, hn = mod(pack_padded_sequence(xl, lengths, enforce_sorted=False))
        (out.data.float().square().sum() + hn.float().sum()).backward()
        res.append([out.data.detach(), hn.detach(), xl.grad] + [p.grad.clone() for p in mod.parameters()])
    for a, b in zip(*res):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------
# torch.nn.RNN's other surface: reduced precision on the CPU, autocast, attributes

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rnn_reduced_precision_cpu(dtype):
    """bf16 / fp16 on the CPU run the recurrence in fp32 and round once (torch's nn.RNN runs them
    too): outputs and every gradient within 2x torch's own error against fp64, plus a little."""
    cfg = dict(input_size=6, hidden_size=10, num_layers=2, nonlinearity="tanh", bias=True, batch_first=False,
               bidirectional=True, dropout=0.0)
    ref, ours = pair(cfg, dtype=dtype)
    theirs = torch.nn.RNN(**cfg).to(dtype)
    theirs.load_state_dict(ref.state_dict())
    x, hx, g_out, g_hn = make_inputs(cfg, 7, 3)
    r = run(ref, x, hx, g_out, g_hn)
    o = run(ours, x, hx, g_out, g_hn, dtype=dtype)
    t = run(theirs, x, hx, g_out, g_hn, dtype=dtype)
    assert o[0].dtype == dtype and o[2]["weight_hh_l1_reverse"].dtype == dtype
    pairs = {"output": (o[0], r[0], t[0]), "h_n": (o[1], r[1], t[1])}
    pairs.update({f"grad {k}": (o[2][k], r[2][k], t[2][k]) for k in r[2]})
    for name, (got, want, torch_got) in pairs.items():
        assert rel_err(got, want) <= 2 * rel_err(torch_got, want) + 1e-3, name


def test_rnn_and_cell_follow_autocast():
    """Under CPU autocast (bf16) torch's RNN and RNNCell run in bf16 whatever the dtype of their
    parameters and of hx; so do ours, and a bf16 activation from a torch layer feeds them."""
    torch.manual_seed(0)
    rnn, cell = rnnkern.nn.RNN(8, 12, 2), rnnkern.nn.RNNCell(8, 12)
    t_rnn, t_cell = torch.nn.RNN(8, 12, 2), torch.nn.RNNCell(8, 12)
    t_rnn.load_state_dict(rnn.state_dict())
    t_cell.load_state_dict(cell.state_dict())
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(5, 3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, h_n = rnn(lin(x), torch.zeros(2, 3, 12))
        t_out, _ = t_rnn(lin(x), torch.zeros(2, 3, 12))
        h = cell(lin(x[0]))
        t_h = t_cell(lin(x[0]))
    assert out.dtype == h_n.dtype == h.dtype == torch.bfloat16 == t_out.dtype == t_h.dtype
    assert rel_err(out, t_out) < 3e-2 and rel_err(h, t_h) < 3e-2
    out.float().sum().backward()
    assert rnn.weight_ih_l0.grad.dtype == torch.float32  # the parameters stay fp32, as torch's
    from rnnkern import functional as RF
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the one-layer functional form too
        out1, h1 = RF.rnn_layer(x, torch.zeros(3, 12), rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
                                rnn.bias_hh_l0)
    assert out1.dtype == h1.dtype == torch.bfloat16


def test_autocast_leaves_float64_alone():
    """torch's autocast casts floating tensors other than float64: under CPU autocast (bf16) float64
    RNNs, cells, convolutions and transposed convolutions run and return float64, as torch's."""
    from rnnkern import functional as RF
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    img, w, wt = (torch.randn(1, 2, 7, 7, dtype=torch.float64), torch.randn(3, 2, 3, 3, dtype=torch.float64),
                  torch.randn(2, 3, 3, 3, dtype=torch.float64))
    rnn, cell = rnnkern.nn.RNN(4, 3, 2).double(), rnnkern.nn.RNNCell(4, 3).double()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outs = [rnn(x)[0], rnn(x)[1], cell(x[0]), RF.conv2d(img, w, dilation=2), RF.conv_transpose2d(img, wt, stride=2)]
        theirs = [torch.nn.functional.conv2d(img, w, dilation=2), torch.nn.functional.conv_transpose2d(img, wt, stride=2)]
    assert all(o.dtype == torch.float64 for o in outs + theirs), [o.dtype for o in outs + theirs]
    torch.testing.assert_close(outs[3], theirs[0])
    torch.testing.assert_close(outs[4], theirs[1])


def test_rnn_attributes_like_torch():
    """flatten_parameters (a no-op here), mode, proj_size and repr as torch.nn.RNN has them."""
    for cfg in (dict(input_size=4, hidden_size=8), dict(input_size=4, hidden_size=8, nonlinearity="relu",
                                                        num_layers=2, batch_first=True, bidirectional=True)):
        ours, theirs = rnnkern.nn.RNN(**cfg), torch.nn.RNN(**cfg)
        assert repr(ours) == repr(theirs)
        assert ours.mode == theirs.mode and ours.proj_size == theirs.proj_size == 0
        for module in (rnnkern.nn.RNN, torch.nn.RNN):  # proj_size is LSTM's: both refuse it alike
            with pytest.raises(ValueError, match="proj_size argument is only supported for LSTM"):
                module(**cfg, proj_size=2)
        theirs.load_state_dict(ours.state_dict())
        ours.flatten_parameters()
        x = torch.randn(3, 2, 4)
        torch.testing.assert_close(ours(x)[0], theirs(x)[0])
