"""torch.func transforms and forward-mode AD through every op (rnnkern.ops._transforms).

Each transform of a function built on rnnkern.functional / rnnkern.nn is compared with the same
transform of torch's op, in fp64 (CUDA included: every kernel has an fp64 path). Where torch's own
module cannot take the transform (nn.RNN under vmap or with a PackedSequence inside torch.func),
the reference is plain autograd over torch's module instead. Shapes are tiny: a Hessian is one
backward per input element."""
import random

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._pytree import tree_leaves

import rnnkern.functional as RF
import rnnkern.nn as RNN_NN
from rnnkern.ops import _transforms
from tests.utils import DEVICES

D = torch.float64


def assert_close_trees(ours, ref, tol=1e-10):
    a, b = tree_leaves(ours), tree_leaves(ref)
    assert len(a) == len(b)
    for i, (p, q) in enumerate(zip(a, b)):
        assert p.shape == q.shape, f"leaf {i}: shape {tuple(p.shape)} != {tuple(q.shape)}"
        err = (p - q.to(p.device)).abs().max().item() if p.numel() else 0.0
        scale = max(1.0, q.abs().max().item() if q.numel() else 0.0)
        assert err <= tol * scale, f"leaf {i}: max abs error {err:.3g}"


def _loss(f):
    """A scalar loss with a nonzero second derivative everywhere (sin), of f's output."""
    return lambda *a: f(*a).sin().sum()


def _fw_tangent(f, primals, tangents):
    """f's jvp through torch.autograd.forward_ad (no torch.func)."""
    with fwAD.dual_level():
        out = f(*[fwAD.make_dual(p, t) for p, t in zip(primals, tangents)])
        return fwAD.unpack_dual(out).tangent


def _forward_over_reverse(f, primals, tangents):
    """d/dt grad_x loss(x, w + t dw): a forward-mode tangent through a create_graph backward."""
    x, *rest = primals
    x = x.detach().requires_grad_()
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(rest, tangents[1:])]
        gx, = torch.autograd.grad(_loss(f)(x, *duals), x, create_graph=True)
        return fwAD.unpack_dual(gx).tangent


# ---- the convolution family ------------------------------------------------------------------

def _conv_case(kind, device):
    """(ours, torch's, (x, w, b)): a random configuration of conv / conv_transpose, 1-D or 2-D."""
    r = random.Random(torch.initial_seed())
    nd = 1 if kind.endswith("1d") else 2
    groups = r.choice([1, 2])
    c_in, c_out = groups * r.randint(1, 2), groups * r.randint(1, 2)
    k, s, d = r.randint(1, 3), r.randint(1, 2), r.randint(1, 2)
    spatial = (r.randint(5, 6),) * nd  # >= the largest dilated kernel (5)
    bias = r.random() < 0.7
    if kind.startswith("conv_transpose"):
        p = r.randint(0, (d * (k - 1)) // 2)
        op_ = r.randint(0, max(s, d) - 1)
        kw = dict(stride=s, padding=p, output_padding=op_, groups=groups, dilation=d)
        w = torch.randn(c_in, c_out // groups, *(k,) * nd, dtype=D, device=device)
        ours, ref = getattr(RF, kind), getattr(F, kind)
    else:
        kw = dict(stride=s, padding=r.randint(0, 2), dilation=d, groups=groups)
        w = torch.randn(c_out, c_in // groups, *(k,) * nd, dtype=D, device=device)
        ours, ref = getattr(RF, kind), getattr(F, kind)
    x = torch.randn(2, c_in, *spatial, dtype=D, device=device)
    b = torch.randn(c_out, dtype=D, device=device) if bias else None
    return (lambda x, w, b: ours(x, w, b, **kw)), (lambda x, w, b: ref(x, w, b, **kw)), (x, w, b)


CONV_KINDS = ["conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d"]
CONV_TRANSFORMS = ["grad", "jacrev", "jacfwd", "hessian_weight", "hessian_input", "hessian_mixed", "grad_of_grad",
                   "per_sample_grad", "jvp", "forward_ad", "forward_over_reverse"]


def _conv_transform(name, f, x, w, b):
    args = (x, w) if b is None else (x, w, b)
    g = (lambda x, w, b=None: f(x, w, b))
    nums = tuple(range(len(args)))
    if name == "grad":  # all of them, and the last alone (the bias alone takes a shortcut)
        return grad(_loss(g), argnums=nums)(*args), grad(_loss(g), argnums=nums[-1])(*args)
    if name == "jacrev":
        return jacrev(lambda *a: g(*a).sin().sum(dim=0), argnums=nums)(*args)
    if name == "jacfwd":
        return jacfwd(lambda *a: g(*a).sin().sum(dim=0), argnums=nums)(*args)
    if name == "hessian_weight":
        return hessian(_loss(g), argnums=1)(*args)
    if name == "hessian_input":
        return hessian(lambda x, *rest: _loss(g)(x, *rest), argnums=0)(x[:1], *args[1:])
    if name == "hessian_mixed":  # d/dx of the weight gradient: the weight-gradient pass's own jvp in x
        return jacfwd(jacrev(_loss(g), argnums=1), argnums=0)(x[:1], *args[1:])
    if name == "grad_of_grad":  # every gradient pass differentiated again (a gradient penalty)
        return grad(lambda *a: sum(t.square().sum() for t in grad(_loss(g), argnums=nums)(*a)), argnums=nums)(*args)
    if name == "per_sample_grad":  # vmap over the batch of a per-sample loss's gradient (DP-SGD, ensembles)
        per = grad(lambda x, *p: _loss(g)(x.unsqueeze(0), *p), argnums=tuple(range(1, len(args))))
        return vmap(per, in_dims=(0,) + (None,) * (len(args) - 1))(*args)
    tangents = [a.cos() for a in args]
    if name == "jvp":
        return jvp(g, args, tuple(tangents))
    if name == "forward_ad":
        return _fw_tangent(g, args, tangents)
    if name == "forward_over_reverse":
        return _forward_over_reverse(g, args, tangents)
    raise AssertionError(name)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transform", CONV_TRANSFORMS)
@pytest.mark.parametrize("kind", CONV_KINDS)
def test_conv_family_under_transforms(kind, transform, device):
    ours, ref, (x, w, b) = _conv_case(kind, device)
    assert_close_trees(_conv_transform(transform, ours, x, w, b), _conv_transform(transform, ref, x, w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_conv_vjp_of_channels_last_input(device):
    x = torch.randn(2, 3, 6, 5, dtype=D, device=device).to(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3, dtype=D, device=device)
    g = torch.randn(2, 4, 6, 5, dtype=D, device=device)
    out, fn = vjp(lambda x, w: RF.conv2d(x, w, padding=1), x, w)
    ref_out, ref_fn = vjp(lambda x, w: F.conv2d(x, w, padding=1), x, w)
    assert_close_trees((out, fn(g)), (ref_out, ref_fn(g)))


# ---- max-unpool --------------------------------------------------------------------------------

UNPOOL_TRANSFORMS = ["grad", "jacfwd", "hessian", "per_sample_grad", "jvp", "forward_ad"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("transform", UNPOOL_TRANSFORMS)
@pytest.mark.parametrize("nd", [1, 2])
def test_max_unpool_under_transforms(nd, transform, device):
    pool = F.max_pool1d if nd == 1 else F.max_pool2d
    x = torch.randn(2, 3, *(6,) * nd, dtype=D, device=device)
    v, idx = pool(x, 2, return_indices=True)

    def run(unpool):
        f = (lambda v, i=idx: unpool(v, i, 2))
        if transform == "grad":
            return grad(_loss(f))(v)
        if transform == "jacfwd":
            return jacfwd(lambda v: f(v).sin())(v)
        if transform == "hessian":
            return hessian(lambda v: _loss(f)(v, idx[:1]))(v[:1])
        if transform == "per_sample_grad":
            return vmap(grad(lambda v, i: _loss(f)(v.unsqueeze(0), i.unsqueeze(0))))(v, idx)
        if transform == "jvp":
            return jvp(f, (v,), (v.cos(),))
        return _fw_tangent(f, (v,), (v.cos(),))

    names = {1: "max_unpool1d", 2: "max_unpool2d"}
    assert_close_trees(run(getattr(RF, names[nd])), run(getattr(F, names[nd])))


# ---- the RNN -----------------------------------------------------------------------------------

def _rnn_pair(device, **kw):
    ours = RNN_NN.RNN(3, 4, **kw).to(device, D)
    ref = torch.nn.RNN(3, 4, **kw).to(device, D)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _random_rnn_kwargs(**fixed):
    r = random.Random(torch.initial_seed())
    kw = dict(num_layers=r.choice([1, 2]), nonlinearity=r.choice(["tanh", "relu"]), bias=r.random() < 0.7,
              bidirectional=r.random() < 0.5, batch_first=r.random() < 0.5)
    return {**kw, **fixed}


RNN_TRANSFORMS = ["grad", "jacrev", "jvp", "hessian_w_hh", "hessian_input", "grad_of_grad", "forward_ad",
                  "forward_over_reverse"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("transform", RNN_TRANSFORMS)
def test_rnn_under_transforms(transform, bias, device):
    kw = _random_rnn_kwargs(bias=bias)
    ours, ref = _rnn_pair(device, **kw)
    params = dict(ours.named_parameters())
    T, B = 4, 2
    x = torch.randn(*((B, T) if kw["batch_first"] else (T, B)), 3, dtype=D, device=device)
    dirs = 2 if kw["bidirectional"] else 1
    with_hx = random.Random(torch.initial_seed() + 1).random() < 0.5  # an initial state, or zeros
    hx = torch.randn(kw["num_layers"] * dirs, B, 4, dtype=D, device=device) if with_hx else None
    last_hh = "weight_hh_l0" + ("_reverse" if kw["bidirectional"] else "")

    def run(module):
        def out(p, x):
            return functional_call(module, p, (x, hx))[0]
        if transform == "grad":
            return grad(_loss(out), argnums=(0, 1))(params, x)
        if transform == "jacrev":
            return jacrev(lambda p: out(p, x).sin().sum(dim=(0, 1)))(params)
        if transform == "jvp":
            return jvp(lambda x: functional_call(module, params, (x, hx)), (x,), (x.cos(),))
        if transform == "hessian_w_hh":
            return hessian(lambda w: _loss(out)({**params, last_hh: w}, x))(params[last_hh])
        if transform == "hessian_input":
            return hessian(lambda x: _loss(out)(params, x))(x)
        if transform == "grad_of_grad":
            return grad(lambda p: sum(g.square().sum() for g in grad(_loss(out))(p, x).values()))(params)
        if transform == "forward_ad":
            return _fw_tangent(lambda x: module(x, hx)[0], (x,), (x.cos(),))
        w = params[last_hh]
        return _forward_over_reverse(lambda x, w: out({**params, last_hh: w}, x), (x, w), (x.cos(), w.cos()))

    with torch.backends.cudnn.flags(enabled=False):  # torch's native RNN (cuDNN's has no forward AD,
        want = run(ref)                               # double backward or batching rule)
    assert_close_trees(run(ours), want)


def _autograd_grads(module, loss):
    module.zero_grad()
    loss(module).backward()
    return {k: p.grad.clone() for k, p in module.named_parameters()}


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_per_sample_grads(device):
    # torch's nn.RNN cannot run under vmap; the reference is one autograd pass per sample
    ours, ref = _rnn_pair(device, **_random_rnn_kwargs())
    params = dict(ours.named_parameters())
    x = torch.randn(4, 3, 3, dtype=D, device=device)
    got = vmap(grad(lambda p, xb: functional_call(ours, p, (xb.unsqueeze(1),))[0].sin().sum()),
               in_dims=(None, 1))(params, x)
    per = [_autograd_grads(ref, lambda m: m(x[:, b:b + 1])[0].sin().sum()) for b in range(3)]
    assert_close_trees(got, {k: torch.stack([p[k] for p in per]) for k in params})


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_packed_sequence_grad_and_hessian(device):
    # torch's nn.RNN cannot take a PackedSequence inside torch.func; the reference is plain autograd
    ours, ref = _rnn_pair(device, bidirectional=True)
    params = dict(ours.named_parameters())
    x = torch.randn(5, 3, 3, dtype=D, device=device)
    lengths = [5, 3, 2]

    def loss(module, p):  # h_n too: finished sequences' states must stay put
        out, h_n = functional_call(module, p, (pack_padded_sequence(x, lengths),))
        return out.data.sin().sum() + h_n.sin().sum()

    with torch.backends.cudnn.flags(enabled=False):  # torch's native RNN (cuDNN's has no double backward)
        want_grads = _autograd_grads(ref, lambda m: loss(m, dict(m.named_parameters())))
    assert_close_trees(grad(lambda p: loss(ours, p))(params), want_grads)
    name = "bias_ih_l0_reverse"
    got = hessian(lambda b: loss(ours, {**params, name: b}))(params[name])
    b = params[name].detach().clone().requires_grad_()
    with torch.backends.cudnn.flags(enabled=False):
        g, = torch.autograd.grad(loss(ref, {**dict(ref.named_parameters()), name: b}), b, create_graph=True)
        want = torch.stack([torch.autograd.grad(g[i], b, retain_graph=True)[0] for i in range(g.numel())])
    assert_close_trees(got, want)


@pytest.mark.parametrize("device", DEVICES)
def test_rnn_cell_under_grad_and_jvp(device):
    ours = RNN_NN.RNNCell(3, 4).to(device, D)
    ref = torch.nn.RNNCell(3, 4).to(device, D)
    ref.load_state_dict(ours.state_dict())
    params, x = dict(ours.named_parameters()), torch.randn(2, 3, dtype=D, device=device)
    for f in (lambda m: grad(lambda p: functional_call(m, p, (x,)).sin().sum())(params),
              lambda m: jvp(lambda x: functional_call(m, params, (x,)), (x,), (x.cos(),))):
        assert_close_trees(f(ours), f(ref))


# ---- routing: the C++ formulas stay the path outside transforms --------------------------------

def test_plain_autograd_keeps_the_cpp_formulas():
    # the Python Functions cost ~30 us a call more; only transforms and forward-mode AD take them
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    w = torch.randn(3, 2, 3, 3)
    assert "CppNode" in RF.conv2d(x, w).grad_fn.name()
    assert "CppNode" in RF.conv_transpose2d(x, w.transpose(0, 1)).grad_fn.name()
    v, idx = F.max_pool2d(x, 2, return_indices=True)
    assert "CppNode" in RF.max_unpool2d(v, idx, 2).grad_fn.name()
    out, _ = RNN_NN.RNN(6, 4)(x[0])
    assert "CppNode" in out.grad_fn.name()
    with fwAD.dual_level():  # a dual level open: the Python Function, which has the jvp
        assert "CppNode" not in RF.conv2d(x, w).grad_fn.name()


def test_operator_called_directly_refuses_clearly():
    # the registered operators keep their C++ formulas, which torch.func and forward-mode AD refuse
    # with torch's own messages (the rnnkern.functional / nn entry points route around them)
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    args = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with pytest.raises(RuntimeError, match="functorch"):
        grad(lambda x: torch.ops.rnnkern.conv2d_forward(x, w, None, *args).sum())(x)
    with fwAD.dual_level(), torch.no_grad():
        with pytest.raises(RuntimeError, match="jvp is not implemented"):
            torch.ops.rnnkern.conv2d_forward(fwAD.make_dual(x, torch.randn_like(x)), w, None, *args)


def test_compiled_module_under_grad_matches_eager():
    # torch.compile keeps the ops opaque (its own path); torch.func over an eager module does not
    # change what a compiled call of the same module computes
    m = RNN_NN.Conv2d(2, 3, 3, padding=1).double()
    x = torch.randn(2, 2, 5, 5, dtype=D)
    params = dict(m.named_parameters())
    g_eager = grad(lambda p: functional_call(m, p, (x,)).sin().sum())(params)
    compiled = torch.compile(m, fullgraph=True, backend="eager")
    compiled(x).sin().sum().backward()
    assert_close_trees(g_eager, {k: p.grad for k, p in m.named_parameters()})


# ---- batching rules: vmap of each operator against a loop over the batch entries -----------------

def _vmap_vs_loop(f, in_dims, args, batch):
    got = vmap(f, in_dims=in_dims)(*args)
    rows = [f(*[a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]) for i in range(batch)]
    want = tuple(torch.stack(r) for r in zip(*rows)) if isinstance(rows[0], tuple) else torch.stack(rows)
    assert_close_trees(got, want, tol=1e-12)


def _batched(t, d, batch):
    """t with a batch dimension of size `batch` inserted at d (None: t as it is)."""
    return t if d is None else torch.stack([torch.randn_like(t) for _ in range(batch)], d)


CONV_IN_DIMS = [(0, None, None), (1, None, None), (None, 0, None), (0, 0, None), (2, 1, 0), (None, None, 0),
                (0, None, 0)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunked", [False, True], ids=["one_call", "chunked"])
@pytest.mark.parametrize("in_dims", CONV_IN_DIMS, ids=str)
@pytest.mark.parametrize("transposed", [False, True], ids=["conv", "convT"])
def test_conv_family_batching_rules(transposed, in_dims, chunked, device, monkeypatch):
    r = random.Random(torch.initial_seed())
    B, N, g = 3, r.choice([0, 2]), r.choice([1, 2])
    if chunked:  # (CUDA caps a call at 65535 groups) two entries a call: chunks of 2 and 1
        monkeypatch.setattr(_transforms, "MAX_GROUPS_PER_CALL", 2 * g)
    c_in, c_out = 2 * g, 3 * g
    args = ([2, 1], [1, 0, 1, 0], [1, 2], g) if not transposed else ([2, 1], [1, 0], [1, 0], g, [1, 2])
    name = "conv_transpose2d" if transposed else "conv2d"
    ops = [getattr(torch.ops.rnnkern, f"{name}_{p}").default for p in ("forward", "backward_input", "backward_weight")]
    w_shape = (c_in, c_out // g, 3, 2) if transposed else (c_out, c_in // g, 3, 2)
    x = torch.randn(N, c_in, 5, 6, dtype=D, device=device)
    if r.random() < 0.5:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(w_shape, dtype=D, device=device)
    b = torch.randn(c_out, dtype=D, device=device)
    y = ops[0](x, w, b, *args)
    xd, wd, bd = in_dims
    bx, bw, bb = _batched(x, xd, B), _batched(w, wd, B), _batched(b, bd, B)
    _vmap_vs_loop(lambda x, w, b: ops[0](x, w, b, *args), in_dims, (bx, bw, bb), B)
    # the gradient ops: (grad_output, weight) vmapped as (input, weight) were, (grad_output, input) as
    # (bias or weight, input)
    if (xd, wd) != (None, None):
        gy = _batched(torch.randn_like(y), xd, B)
        _vmap_vs_loop(lambda gy, w: ops[1](gy, w, list(x.shape), *args), (xd, wd), (gy, bw), B)
    gd = bd if wd is None else wd
    for bias_grad in (False, True):
        gyw = _batched(torch.randn_like(y), gd, B)
        _vmap_vs_loop(lambda gy, x: ops[2](gy, x, list(w.shape), *args, bias_grad), (gd, xd), (gyw, bx), B)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("in_dims", [(0, 0), (1, 1), (0, None), (None, 0)], ids=str)
def test_max_unpool_batching_rules(in_dims, device):
    B = 3
    x = torch.randn(2, 3, 6, 6, dtype=D, device=device)
    v, idx = F.max_pool2d(x, 2, return_indices=True)
    vs = _batched(v, in_dims[0], B)
    idxs = idx if in_dims[1] is None else torch.stack(
        [F.max_pool2d(torch.randn_like(x), 2, return_indices=True)[1] for _ in range(B)], in_dims[1])
    fwd, bwd = torch.ops.rnnkern.max_unpool_forward.default, torch.ops.rnnkern.max_unpool_backward.default
    k = ([2, 2], [2, 2], [0, 0])
    _vmap_vs_loop(lambda v, i: fwd(v, i, 0, *k, [6, 6]), in_dims, (vs, idxs), B)
    gy = _batched(torch.randn_like(x), in_dims[0], B)
    _vmap_vs_loop(lambda g, i: bwd(g, i, 0, list(v.shape), *k), in_dims, (gy, idxs), B)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ["input", "input_hx", "input_lengths", "hx_only", "weights"])
def test_rnn_batching_rules(case, device):
    B, T, N, I, H = 3, 4, 3, 2, 5
    x = torch.randn(T, N, I, dtype=D, device=device)
    hx = torch.randn(N, H, dtype=D, device=device)
    ws = [torch.randn(H, I, dtype=D, device=device), torch.randn(H, H, dtype=D, device=device),
          torch.randn(H, dtype=D, device=device), torch.randn(H, dtype=D, device=device)]
    lengths = torch.tensor([4, 3, 1]) if case == "input_lengths" else None
    dims = {"input": (1, None), "input_hx": (0, 1), "input_lengths": (2, None), "hx_only": (None, 0),
            "weights": (0, None)}[case]
    w_dims = (0, 1, None, 0) if case == "weights" else (None,) * 4
    args = (_batched(x, dims[0], B), _batched(hx, dims[1], B), *[_batched(w, d, B) for w, d in zip(ws, w_dims)])
    fwd = torch.ops.rnnkern.rnn_forward.default
    _vmap_vs_loop(lambda *a: fwd(*a, lengths, False), dims + w_dims, args, B)
    out, _ = fwd(x, hx, *ws, lengths, False)
    g = (_batched(torch.randn_like(out), 1, B), _batched(torch.randn_like(hx), 0, B))
    bwd = torch.ops.rnnkern.rnn_backward.default
    _vmap_vs_loop(lambda go, gh: bwd(go, gh, x, hx, ws[0], ws[1], out, lengths, False, True), (1, 0), g, B)


# ---- vmap through the modules, and reverse mode over vmap ----------------------------------------

def _segmenter(nn, device):
    """conv -> relu -> transposed conv, a weight each: an ensemble's member."""
    return torch.nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
                               nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)).to(device, D)


@pytest.mark.parametrize("device", DEVICES)
def test_model_ensemble_under_vmap(device):
    # torch.func.stack_module_state: a weight per member, the second layer's input vmapped off dim 0
    ours = [_segmenter(RNN_NN, device) for _ in range(3)]
    refs = [_segmenter(torch.nn, device) for _ in range(3)]
    for o, r in zip(ours, refs):
        r.load_state_dict(o.state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=D, device=device)

    def ensemble(members):
        params, buffers = torch.func.stack_module_state(members)
        base = members[0]
        return vmap(lambda p, b: functional_call(base, (p, b), (x,)), in_dims=(0, 0))(params, buffers)

    assert_close_trees(ensemble(ours), ensemble(refs))


@pytest.mark.parametrize("device", DEVICES)
def test_vmap_over_a_non_leading_dim(device):
    # inside vmap the per-entry tensors are not contiguous; the layout rule must not ask them
    x = torch.randn(2, 3, 2, 6, 6, dtype=D, device=device)
    w = torch.randn(4, 2, 3, 3, dtype=D, device=device)
    assert_close_trees(vmap(lambda x: RF.conv2d(x, w, padding=1), in_dims=1)(x),
                       vmap(lambda x: F.conv2d(x, w, padding=1), in_dims=1)(x))
    wt = w.transpose(0, 1)  # (C_in 2, C_out 4): a transposed convolution's layout, and a strided one
    assert_close_trees(vmap(lambda x: RF.conv_transpose2d(x, wt, stride=2), in_dims=1)(x),
                       vmap(lambda x: F.conv_transpose2d(x, wt, stride=2), in_dims=1)(x))
    v, idx = F.max_pool2d(x.flatten(0, 1), 2, return_indices=True)
    v, idx = v.unflatten(0, (2, 3)), idx.unflatten(0, (2, 3))
    assert_close_trees(vmap(lambda v, i: RF.max_unpool2d(v, i, 2), in_dims=1)(v, idx),
                       vmap(lambda v, i: F.max_unpool2d(v, i, 2), in_dims=1)(v, idx))


@pytest.mark.parametrize("device", DEVICES)
def test_reverse_mode_over_vmap(device):
    # grad(vmap(f)) and .backward() after vmap: the generated rules' backward, against a loop
    m = RNN_NN.RNN(3, 4, num_layers=2).to(device, D)
    params = {k: v.detach() for k, v in m.named_parameters()}
    xs = torch.randn(3, 5, 2, 3, dtype=D, device=device)  # 3 entries of (T=5, B=2, I=3)

    def loss(p, f):
        return f(lambda x: functional_call(m, p, (x,))[0])(xs).sin().sum()

    got = grad(loss)(params, vmap)
    want = grad(loss)(params, lambda g: (lambda xs: torch.stack([g(x) for x in xs])))
    assert_close_trees(got, want)
    conv = RNN_NN.Conv2d(2, 3, 3).to(device, D)
    y = vmap(conv)(torch.randn(4, 1, 2, 5, 5, dtype=D, device=device))
    y.sin().sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.shape == conv.weight.shape


def test_nested_forward_mode_refused():
    # torch returns wrong higher derivatives for Python autograd.Functions under nested forward
    # mode (pytorch/pytorch#197867); rnnkern refuses instead of returning them
    w = torch.randn(2, 2, 3, 3, dtype=D)
    x = torch.randn(1, 2, 5, 5, dtype=D)
    f = lambda x: RF.conv2d(RF.conv2d(x, w, padding=1).tanh(), w, padding=1).sum()
    with pytest.raises(NotImplementedError, match="nested forward-mode"):
        jacfwd(jacfwd(f))(x)
    with pytest.raises(NotImplementedError, match="nested forward-mode"):
        jvp(lambda x: jvp(f, (x,), (x,))[1], (x,), (x,))
    hessian(f)(x)  # jacfwd over jacrev: one forward level, supported
