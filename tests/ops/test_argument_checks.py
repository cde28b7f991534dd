"""The op wrappers call the kernels before checking the argument forms modules pass, and run their
checks only when a kernel refuses (rnnkern.ops._validate: the unchecked path). These tests hold
that path to the verdicts of checking first, over random arguments, bad ones included: the same
exception type and message, or the same result."""
import random

import pytest
import torch

from rnnkern import functional as RF
from rnnkern.ops import conv as conv_ops
from rnnkern.ops import conv_transpose as convt_ops
from rnnkern.ops import max_unpool as unpool_ops

CASES = 400


def _outcome(fn):
    try:
        out = fn()
    except Exception as error:  # noqa: BLE001  (the verdict is the exception)
        return "error", type(error), str(error)
    return "ok", out


def _same_outcome(unchecked, checked, what):
    a, b = _outcome(unchecked), _outcome(checked)
    assert a[0] == b[0], f"{what}: unchecked path {a[:2]} but checked path {b[:2]}"
    if a[0] == "error":
        assert a[1:] == b[1:], f"{what}: {a[1:]} != {b[1:]}"
    else:
        torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
        assert a[1].shape == b[1].shape and a[1].stride() == b[1].stride(), what
    return a[0]


def _pick(rng, good, bad, p_bad=0.15):
    return rng.choice(bad) if rng.random() < p_bad else good


def _tensor(rng, shape, dtype):
    t = torch.randn(shape, dtype=torch.float64)
    if dtype.is_floating_point:
        t = t.to(dtype)
    elif dtype == torch.complex64:
        t = torch.complex(t.float(), t.float())
    else:
        t = (t * 3).to(dtype)
    if rng.random() < 0.1:
        t = t.to("meta")
    elif len(shape) == 4 and rng.random() < 0.2:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


_DTYPES = [torch.float32] * 6 + [torch.float64, torch.int64, torch.complex64, torch.bfloat16]


def _conv_case(rng):
    nd = rng.choice([1, 2])
    n, groups = rng.choice([0, 1, 2]), rng.choice([1, 1, 2])
    cin, cout = groups * rng.randint(1, 3), groups * rng.randint(1, 3)
    k = [rng.randint(1, 3) for _ in range(nd)]
    size = [rng.randint(1, 7) for _ in range(nd)]
    x_shape = _pick(rng, [n, cin, *size], [[cin, *size], [n, cin + 1, *size], [n, cin, *size, 2], [n, cin] + [0] * nd,
                                           [n, cin, *size][:nd]])
    if rng.random() < 0.1 and len(x_shape) == nd + 2:
        x_shape = x_shape[1:]  # unbatched
    w_shape = _pick(rng, [cout, cin // groups, *k], [[cout, cin // groups + 1, *k], [0, cin // groups, *k],
                                                      [cout, cin // groups, *k, 1], [cout, cin // groups] + [0] * nd,
                                                      [cout, cin // groups, *[9] * nd]])
    dtype = rng.choice(_DTYPES)
    x = _tensor(rng, x_shape, dtype)
    w = _tensor(rng, w_shape, _pick(rng, dtype, [torch.float64, torch.float32]))
    bias = None if rng.random() < 0.3 else _tensor(rng, _pick(rng, [cout], [[cout + 1], [1, cout], []]),
                                                   _pick(rng, dtype, [torch.float64]))
    size_arg = lambda lo: _pick(rng, rng.choice([rng.randint(lo, 2), tuple(rng.randint(lo, 2) for _ in range(nd)),
                                                 [rng.randint(lo, 2) for _ in range(nd)]]),
                                [0, -1, (1,) * (nd + 1), 1.5, True, (True,) * nd, "1", None])
    stride, dilation = size_arg(1), size_arg(1)
    padding = rng.choice([size_arg(0), "same", "valid", _pick(rng, "same", ["full", -1, (1, -1)[:nd]])])
    groups = _pick(rng, groups, [0, -1, True, 1.0, 3])
    return f"conv{nd}d", x, w, bias, stride, padding, dilation, groups, nd


def _convt_case(rng):
    nd = rng.choice([1, 2])
    n, groups = rng.choice([0, 1, 2]), rng.choice([1, 1, 2])
    cin, cout_g = groups * rng.randint(1, 3), rng.randint(1, 3)
    k = [rng.randint(1, 4) for _ in range(nd)]
    size = [rng.randint(1, 6) for _ in range(nd)]
    x_shape = _pick(rng, [n, cin, *size], [[cin, *size], [n, cin + 1, *size], [n, cin, *size, 2], [n, cin] + [0] * nd,
                                           [n, cin, *size][:nd]])
    if rng.random() < 0.1 and len(x_shape) == nd + 2:
        x_shape = x_shape[1:]
    w_shape = _pick(rng, [cin, cout_g, *k], [[cin, 0, *k], [0, cout_g, *k], [cin, cout_g, *k, 1],
                                              [cin, cout_g] + [0] * nd, [cin + 1, cout_g, *k]])
    dtype = rng.choice(_DTYPES)
    x = _tensor(rng, x_shape, dtype)
    w = _tensor(rng, w_shape, _pick(rng, dtype, [torch.float64, torch.float32]))
    bias = None if rng.random() < 0.3 else _tensor(rng, _pick(rng, [cout_g * groups], [[cout_g * groups + 1], [1, 2]]),
                                                   _pick(rng, dtype, [torch.float64]))
    size_arg = lambda lo, hi: _pick(rng, rng.choice([rng.randint(lo, hi), tuple(rng.randint(lo, hi) for _ in range(nd)),
                                                     [rng.randint(lo, hi) for _ in range(nd)]]),
                                    [-1, (1,) * (nd + 1), 1.5, True, (True,) * nd, "1", None, "same"])
    stride, dilation = size_arg(1, 3), size_arg(1, 2)
    padding, output_padding = size_arg(0, 3), size_arg(0, 2)
    groups = _pick(rng, groups, [0, -1, True, 1.0, 3])
    return f"conv_transpose{nd}d", x, w, bias, stride, padding, output_padding, groups, dilation, nd


def _unpool_case(rng):
    nd = rng.choice([1, 2])
    n, c = rng.choice([0, 1, 2]), rng.randint(1, 3)
    k = [rng.randint(1, 3) for _ in range(nd)]
    size = [rng.randint(1, 4) for _ in range(nd)]
    x_shape = _pick(rng, [n, c, *size], [[c, *size], [n, c, *size, 2], [n, c] + [0] * nd, [n, c, *size][:nd]])
    if rng.random() < 0.1 and len(x_shape) == nd + 2:
        x_shape = x_shape[1:]
    x = _tensor(rng, x_shape, rng.choice(_DTYPES))
    plane = 1
    for s, kk in zip(size, k):
        plane *= s * kk
    idx_shape = _pick(rng, list(x.shape), [[*x.shape, 1], [max(1, n), c + 1, *size]])
    indices = torch.randint(0, plane + (3 if rng.random() < 0.15 else 0), idx_shape)
    if x.is_meta:
        indices = indices.to("meta")
    elif rng.random() < 0.1:
        indices = _pick(rng, indices, [indices.int(), indices.float(), indices.to("meta")], p_bad=1)
    elif len(idx_shape) == 4 and x.is_contiguous(memory_format=torch.channels_last) and x.dim() == 4:
        indices = indices.contiguous(memory_format=torch.channels_last)
    size_arg = lambda lo, hi: _pick(rng, rng.choice([rng.randint(lo, hi), tuple(rng.randint(lo, hi) for _ in range(nd)),
                                                     [rng.randint(lo, hi) for _ in range(nd)]]),
                                    [-1, 0, (1,) * (nd + 1), 1.5, True, (True,) * nd, "1"])
    kernel = _pick(rng, k if rng.random() < 0.5 else tuple(k), [0, -1, 1.5, (1,) * (nd + 1), True])
    stride = rng.choice([None, None, size_arg(1, 3)])
    padding = size_arg(0, 1)
    default = [(s - 1) * (kk if stride is None else 2) + kk for s, kk in zip(size, k)]
    output_size = rng.choice([None, None, [d + rng.randint(-2, 2) for d in default],
                              _pick(rng, None, [[1] * (nd + 1), "x", 3])])
    check_indices = _pick(rng, rng.random() < 0.8, [0, 1, None, "yes"])
    return (f"max_unpool{nd}d", x, indices, unpool_ops.MODE_INDICES, kernel, stride, padding, output_size, nd,
            check_indices)


def _describe(args) -> str:
    return ", ".join(f"{tuple(a.shape)} {a.dtype} {a.device}" if isinstance(a, torch.Tensor) else repr(a) for a in args)


# each family: a random case (the wrapper's arguments), the wrapper, and checking first
FAMILIES = {
    "conv": (_conv_case, conv_ops.conv, lambda *a: conv_ops._run_conv(*conv_ops.checked_conv_args(*a))),
    "conv_transpose": (_convt_case, convt_ops.conv_transpose,
                       lambda *a: convt_ops._run_conv_transpose(*convt_ops.checked_conv_transpose_args(*a))),
    "max_unpool": (_unpool_case, unpool_ops.max_unpool,
                   lambda *a: unpool_ops._run_max_unpool(*unpool_ops.checked_max_unpool_args(*a))),
}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("family", FAMILIES)
def test_unchecked_path_gives_the_checked_verdicts(family, seed):
    make_case, wrapper, checked_first = FAMILIES[family]
    rng = random.Random(seed)
    seen = set()
    for i in range(CASES):
        args = make_case(rng)
        seen.add(_same_outcome(lambda: wrapper(*args), lambda: checked_first(*args), f"case {i}: {_describe(args)}"))
    assert seen == {"ok", "error"}  # both kinds of verdict were exercised


@pytest.mark.parametrize("call", [
    lambda: RF.conv1d(torch.randn(1, 2, 7), torch.randn(3, 2, 5), dilation=2**63 - 1),
    lambda: RF.conv2d(torch.randn(2, 3, 9, 9), torch.randn(4, 3, 3, 3), dilation=(1, 2**63 - 1)),
    lambda: RF.conv2d(torch.randn(1, 2, 5, 5), torch.randn(2, 2, 3, 3), padding=(2**62, 2**62)),
    lambda: RF.conv_transpose1d(torch.randn(1, 2, 3), torch.randn(2, 3, 2), padding=2**63 - 1),
    lambda: RF.conv_transpose1d(torch.randn(1, 5), torch.randn(1, 1, 2), stride=2**61 + 3, output_padding=3,
                                dilation=2**63 - 1),
], ids=["conv1d dilation", "conv2d dilation", "conv2d padding", "convT padding", "convT stride and dilation"])
def test_sizes_that_overflow_int64_are_refused(call):
    """Sizes whose padded input, dilated kernel or output size overflow int64 raise (the C++ ops'
    arithmetic wrapped them into small sizes: garbage results, one segfault), on both paths."""
    with pytest.raises(RuntimeError, match="too large|too small|greater than"):
        call()


def test_nested_forward_mode_refusal_comes_after_the_argument_checks():
    """jvp of jvp with a bad argument names the argument, as before the unchecked path existed."""
    x, w = torch.randn(1, 3, 5, 5), torch.randn(2, 4, 3, 3)  # 3 channels in, the weight wants 4
    f = lambda x: RF.conv2d(x, w)  # noqa: E731
    inner = lambda x: torch.func.jvp(f, (x,), (torch.ones_like(x),))[1]  # noqa: E731
    with pytest.raises(ValueError, match="channel"):
        torch.func.jvp(inner, (x,), (torch.ones_like(x),))
