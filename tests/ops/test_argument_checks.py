"""The op wrappers call the kernels before checking the argument forms modules pass, and run their
checks only when a kernel refuses (rnnkern.ops._validate: the unchecked path). These tests hold
that path to the verdicts of checking first, over random arguments, bad ones included: the same
exception type and message, or the same result."""
import random

import pytest
import torch

from rnnkern.ops import conv as conv_ops
from rnnkern.ops import conv_transpose as convt_ops

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
    return (x, w, bias, stride, padding, dilation, groups, nd)


@pytest.mark.parametrize("seed", range(4))
def test_conv_unchecked_path_gives_the_checked_verdicts(seed):
    rng = random.Random(seed)
    seen = set()
    for i in range(CASES):
        x, w, bias, stride, padding, dilation, groups, nd = _conv_case(rng)
        op = f"conv{nd}d"
        seen.add(_same_outcome(
            lambda: conv_ops.conv(op, x, w, bias, stride, padding, dilation, groups, nd),
            lambda: conv_ops._run_conv(*conv_ops.checked_conv_args(op, x, w, bias, stride, padding, dilation,
                                                                    groups, nd)),
            f"case {i}: x {tuple(x.shape)} {x.dtype} {x.device}, w {tuple(w.shape)} {w.dtype} {w.device}, bias "
            f"{None if bias is None else (tuple(bias.shape), bias.dtype)}, stride {stride!r}, padding {padding!r}, "
            f"dilation {dilation!r}, groups {groups!r}"))
    assert seen == {"ok", "error"}  # both kinds of verdict were exercised


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
    return (x, w, bias, stride, padding, output_padding, groups, dilation, nd)


@pytest.mark.parametrize("seed", range(4))
def test_conv_transpose_unchecked_path_gives_the_checked_verdicts(seed):
    rng = random.Random(seed)
    seen = set()
    for i in range(CASES):
        x, w, bias, stride, padding, output_padding, groups, dilation, nd = _convt_case(rng)
        op = f"conv_transpose{nd}d"
        args = (op, x, w, bias, stride, padding, output_padding, groups, dilation, nd)
        seen.add(_same_outcome(
            lambda: convt_ops.conv_transpose(*args),
            lambda: convt_ops._run_conv_transpose(*convt_ops.checked_conv_transpose_args(*args)),
            f"case {i}: x {tuple(x.shape)} {x.dtype} {x.device}, w {tuple(w.shape)} {w.dtype} {w.device}, bias "
            f"{None if bias is None else (tuple(bias.shape), bias.dtype)}, stride {stride!r}, padding {padding!r}, "
            f"output_padding {output_padding!r}, dilation {dilation!r}, groups {groups!r}"))
    assert seen == {"ok", "error"}
