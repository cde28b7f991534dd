"""The ops' autograd as Python autograd.Functions, for torch.func transforms and forward-mode AD.

The ops' autograd formulas live in C++ (csrc/autograd/<op>.cpp): a C++ node costs ~2-3 us a call
where a Python autograd.Function costs ~30 us (bench/NOTES.md, host overhead). But torch.func
refuses C++ autograd Functions, and they have no forward-mode (jvp) formula. So inside a torch.func
transform (grad, vjp, jacrev, jvp, jacfwd, hessian, vmap) or a torch.autograd.forward_ad dual
level, the op wrappers call the Functions built here instead: the same formulas over the same
ops, plus a jvp for each, and `generate_vmap_rule` so that vmap composes with them.

Each Function's forward calls its op below the Autograd key (the C++ formula must not run, it
would refuse a tangent or a functorch level), and its backward and jvp call the Functions again,
so second derivatives (hessian = jacfwd(jacrev), grad of grad) go through the same formulas.

The batching rules (torch.vmap) of the convolution family are here too; max-unpool's and the
RNN's sit in their op files.
"""
from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch._C._functorch import TransformType, maybe_current_level
from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters


def transform_active() -> bool:
    """Whether the op wrappers must call the Python Functions: a torch.func transform or a
    forward-mode dual level is active. Under torch.compile the ops go in as opaque nodes, as always."""
    if torch.compiler.is_compiling():
        return False
    if maybe_current_level() is not None:
        _refuse_nested_forward_mode()
        return True
    return fwAD._current_level >= 0


def in_transform() -> bool:
    """transform_active without its refusal of nested forward mode: whether a torch.func transform
    or a forward-mode dual level is active (the wrappers' unchecked path stays out of both; the
    checks, then transform_active, run there in the order they always did)."""
    return maybe_current_level() is not None or fwAD._current_level >= 0


def _refuse_nested_forward_mode() -> None:
    # torch drops the outer tangent of a Python autograd.Function's jvp when two torch.func
    # forward-mode levels nest (pytorch/pytorch#197867: jacfwd(jacfwd(f)) comes out wrong, silently).
    # A torch.func.jvp inside a forward_ad dual level torch refuses by itself.
    if sum(i.key() == TransformType.Jvp for i in retrieve_all_functorch_interpreters()) >= 2:
        raise NotImplementedError(
            "rnnkern: nested forward-mode differentiation (jvp of jvp, jacfwd of jacfwd) is not supported: "
            "torch's support for Python autograd.Functions returns wrong higher derivatives there "
            "(pytorch/pytorch#197867). Use torch.func.hessian (jacfwd over jacrev), nested jacrev, or "
            "forward over reverse instead.")


def call_below_autograd(op, *args):
    """op(*args) without its C++ autograd formula: the Function around it is the formula."""
    with torch._C._AutoDispatchBelowADInplaceOrView():
        return op(*args)


class Static:
    """A call's non-tensor arguments as one opaque value. torch.func pairs every input of an
    autograd.Function with a tangent after flattening it as a pytree, and a list argument (stride,
    padding, sizes) would flatten into several."""
    __slots__ = ("args",)

    def __init__(self, *args):
        self.args = args


def jvp_by_reverse_mode(f, primals, tangents):
    """The jvp of f (a function of tensors) at primals, from two reverse passes: u -> J^T u is linear,
    so its own vjp with cotangent v is J v. For formulas written as an ATen recurrence (the RNN's),
    where torch.func.jvp cannot serve: inside a torch.autograd.forward_ad level it would nest a
    second one, which torch refuses."""
    out, vjp_fn = torch.func.vjp(f, *primals)
    u = torch.utils._pytree.tree_map(torch.zeros_like, out)
    _, vjp_of_vjp = torch.func.vjp(vjp_fn, u)
    return vjp_of_vjp(tuple(tangents))[0]


def _add(a, b):
    return b if a is None else a if b is None else a + b


def conv_family_functions(forward_op, input_grad_op, weight_grad_op):
    """The Functions of a convolution-like op family: rnnkern::conv2d_* or rnnkern::conv_transpose2d_*.

    Both families share one shape, with `args` their non-tensor arguments (stride, padding, ...):
      forward_op(x, w, b, *args)                      y = x (*) w + b
      input_grad_op(gy, w, input_size, *args)         bilinear in (gy, w)
      weight_grad_op(gy, x, weight_size, *args, bias_grad) -> (gw, gb), bilinear in (gy, x), gb = sum(gy)
    so each pass's derivatives are the three ops again (as csrc/autograd/conv.cpp and
    conv_transpose.cpp spell out), and each jvp is the op applied to one tangent at a time.
    The Functions take the tensors, then Static(*args) (Forward), Static(input_size, *args)
    (InputGrad) or Static(weight_size, *args, bias_grad) (WeightGrad)."""

    def forward_call(x, w, b, args):
        return Forward.apply(x, w, b, Static(*args))

    def input_grad_call(gy, w, input_size, args):
        return InputGrad.apply(gy, w, Static(list(input_size), *args))

    def weight_grad_call(gy, x, weight_size, args, bias_grad):
        return WeightGrad.apply(gy, x, Static(list(weight_size), *args, bias_grad))

    class Forward(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x, w, b, static):
            return call_below_autograd(forward_op, x, w, b, *static.args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, w, b, static = inputs
            ctx.save_for_backward(x, w)
            ctx.save_for_forward(x, w)
            ctx.args, ctx.has_bias = static.args, b is not None

        @staticmethod
        def backward(ctx, gy):
            x, w = ctx.saved_tensors
            need_x, need_w = ctx.needs_input_grad[:2]
            need_b = ctx.has_bias and ctx.needs_input_grad[2]
            gx = input_grad_call(gy, w, x.shape, ctx.args) if need_x else None
            gw = gb = None
            if need_w:
                gw, gb = weight_grad_call(gy, x, w.shape, ctx.args, need_b)
            elif need_b:
                gb = gy.sum(dim=(0, 2, 3))
            return gx, gw, (gb if need_b else None), None

        @staticmethod
        def jvp(ctx, dx, dw, db, _):
            x, w = ctx.saved_tensors
            t = forward_call(dx, w, None, ctx.args) if dx is not None else None
            if dw is not None:
                t = _add(t, forward_call(x, dw, None, ctx.args))
            if db is not None:
                t = _add(t, db.view(1, -1, 1, 1))
            return t

    class InputGrad(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(gy, w, static):
            return call_below_autograd(input_grad_op, gy, w, *static.args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            gy, w, static = inputs
            ctx.save_for_backward(gy, w)
            ctx.save_for_forward(gy, w)
            ctx.input_size, *ctx.args = static.args

        @staticmethod
        def backward(ctx, ggx):
            gy, w = ctx.saved_tensors
            g_gy = forward_call(ggx, w, None, ctx.args) if ctx.needs_input_grad[0] else None
            g_w = weight_grad_call(gy, ggx, w.shape, ctx.args, False)[0] if ctx.needs_input_grad[1] else None
            return g_gy, g_w, None

        @staticmethod
        def jvp(ctx, dgy, dw, _):
            gy, w = ctx.saved_tensors
            t = input_grad_call(dgy, w, ctx.input_size, ctx.args) if dgy is not None else None
            if dw is not None:
                t = _add(t, input_grad_call(gy, dw, ctx.input_size, ctx.args))
            return t

    class WeightGrad(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(gy, x, static):
            return call_below_autograd(weight_grad_op, gy, x, *static.args)

        @staticmethod
        def setup_context(ctx, inputs, output):
            gy, x, static = inputs
            ctx.save_for_backward(gy, x)
            ctx.save_for_forward(gy, x)
            ctx.weight_size, *ctx.args, ctx.bias_grad = static.args

        @staticmethod
        def backward(ctx, ggw, ggb):
            gy, x = ctx.saved_tensors
            bias = ggb if ctx.bias_grad else None
            g_gy = forward_call(x, ggw, bias, ctx.args) if ctx.needs_input_grad[0] else None
            g_x = input_grad_call(gy, ggw, x.shape, ctx.args) if ctx.needs_input_grad[1] else None
            return g_gy, g_x, None

        @staticmethod
        def jvp(ctx, dgy, dx, _):
            gy, x = ctx.saved_tensors
            tw = tb = None
            if dgy is not None:
                tw, tb = weight_grad_call(dgy, x, ctx.weight_size, ctx.args, ctx.bias_grad)
            if dx is not None:
                tw = _add(tw, weight_grad_call(gy, dx, ctx.weight_size, ctx.args, False)[0])
            if tb is None:  # gb = sum(gy) does not move with x; without bias_grad gb is an empty placeholder
                tb = gy.new_zeros(gy.shape[1] if ctx.bias_grad else 0)
            return tw, tb

    return forward_call, input_grad_call, weight_grad_call


# ---- batching rules (torch.vmap) ---------------------------------------------------------------
# Without them vmap runs an op once per batch entry (torch's fallback, with a warning). Per-sample
# gradients (vmap over grad) are the case that matters: the forward folds the vmapped dimension
# into N, and the weight gradient becomes one grouped call, each batch entry's channels a group of
# their own (as torch's own convolution batching rule does).

def loop_vmap_dim(op, batch, in_dims, args):
    """The batching rule of last resort, what torch's fallback does (without its warning, for ops
    that cannot do better): op once per batch entry, the outputs stacked on dim 0."""
    outs = [op(*[a if d is None else a.select(d, i) for a, d in zip(args, in_dims)]) for i in range(batch)]
    return tuple(torch.stack(o) for o in zip(*outs)), 0


def fold_vmap_dim(t, dim, batch, into, entry_major=True):
    """t with its vmapped dim `dim` (None: not vmapped, so repeated) merged into dim `into` (counted
    without the vmapped dim): index entry * size + i when entry_major, else i * batch + entry."""
    at = into if entry_major else into + 1
    if dim is None:
        t = t.unsqueeze(at).expand(*t.shape[:at], batch, *t.shape[at:])
    else:
        t = t.movedim(dim, at)
    return t.flatten(into, into + 1)


# The CUDA kernels put groups on gridDim.z; a grouped call of more entries runs in chunks.
MAX_GROUPS_PER_CALL = 65535


def _in_chunks(rule, batch, in_dims, tensors, rest, groups):
    """rule(batch, in_dims, *tensors, *rest) -> (outputs, out_dims), over chunks of the batch
    entries when one call would need more than MAX_GROUPS_PER_CALL groups, concatenated."""
    step = max(1, MAX_GROUPS_PER_CALL // groups)
    if batch <= step:
        return rule(batch, in_dims, *tensors, *rest)
    parts = []
    for s in range(0, batch, step):
        n = min(step, batch - s)
        parts.append(rule(n, in_dims, *[t if d is None else t.narrow(d, s, n) for t, d in zip(tensors, in_dims)],
                          *rest))
    outs, dims = [p[0] for p in parts], parts[0][1]
    if isinstance(dims, tuple):  # an output without the vmapped dim (None) is the same in every chunk
        return tuple(o[0] if d is None else torch.cat(o, d) for o, d in zip(zip(*outs), dims)), dims
    return torch.cat(outs, dims), dims


def register_conv_family_vmap(forward_name, input_grad_name, weight_grad_name, forward_op, input_grad_op,
                              weight_grad_op):
    """Batching rules for a convolution-like family (the shape conv_family_functions describes).
    `groups` is args[3] in both families; weight dim 0 is the one groups split (C_out for a
    convolution, C_in for a transposed one), so B batch entries of one call are B * groups groups."""

    def with_groups(args, batch):
        return (*args[:3], args[3] * batch, *args[4:])

    def forward_rule(B, in_dims, x, w, b, *args):
        xd, wd, bd = in_dims
        if wd is None and xd is None:  # only the bias: one call, the biases broadcast below
            y = forward_op(x, w, None, *args).unsqueeze(0)
            out_dim = 0
        elif wd is None:  # one weight: the batch entries are more images
            x = x.movedim(xd, 0)
            y = forward_op(x.flatten(0, 1), w, b if bd is None else None, *args).unflatten(0, x.shape[:2])
            out_dim = 0
        else:  # a weight per batch entry: one call with B * groups groups
            bias = b.repeat(B) if b is not None and bd is None else None
            w = w.movedim(wd, 0).flatten(0, 1)
            y = forward_op(fold_vmap_dim(x, xd, B, 1), w, bias, *with_groups(args, B))
            y = y.unflatten(1, (B, -1))
            out_dim = 1
        if b is not None and bd is not None:
            b = b.movedim(bd, 0)
            y = y + (b.view(B, 1, -1, 1, 1) if out_dim == 0 else b.view(1, B, -1, 1, 1))
        return y, out_dim

    def input_grad_rule(B, in_dims, gy, w, input_size, *args):
        gd, wd = in_dims
        if wd is None:
            gy = gy.movedim(gd, 0)
            size = [B * input_size[0], *input_size[1:]]
            return input_grad_op(gy.flatten(0, 1), w, size, *args).unflatten(0, (B, input_size[0])), 0
        size = [input_size[0], B * input_size[1], *input_size[2:]]
        w = w.movedim(wd, 0).flatten(0, 1)
        gx = input_grad_op(fold_vmap_dim(gy, gd, B, 1), w, size, *with_groups(args, B))
        return gx.unflatten(1, (B, input_size[1])), 1

    def weight_grad_rule(B, in_dims, gy, x, weight_size, *args_and_bias_grad):
        gd, xd = in_dims
        *args, bias_grad = args_and_bias_grad
        size = [B * weight_size[0], *weight_size[1:]]
        gy, x = fold_vmap_dim(gy, gd, B, 1), fold_vmap_dim(x, xd, B, 1)
        gw, gb = weight_grad_op(gy, x, size, *with_groups(args, B), bias_grad)
        gw = gw.unflatten(0, (B, weight_size[0]))
        return ((gw, gb.unflatten(0, (B, -1))), (0, 0)) if bias_grad else ((gw, gb), (0, None))

    torch.library.register_vmap(forward_name, lambda info, in_dims, x, w, b, *args: _in_chunks(
        forward_rule, info.batch_size, in_dims[:3], (x, w, b), args, args[3]))
    torch.library.register_vmap(input_grad_name, lambda info, in_dims, gy, w, *rest: _in_chunks(
        input_grad_rule, info.batch_size, in_dims[:2], (gy, w), rest, rest[4]))
    torch.library.register_vmap(weight_grad_name, lambda info, in_dims, gy, x, *rest: _in_chunks(
        weight_grad_rule, info.batch_size, in_dims[:2], (gy, x), rest, rest[4]))
