"""Argument checks shared by the op wrappers: errors that name the op and the argument."""
from __future__ import annotations

import operator
from typing import Sequence

import torch

from torch._C._functorch import is_batchedtensor

from rnnkern.ops import _ext


# Bad arguments raise these: the Python exception that names the kind of mistake, which is also
# a RuntimeError, as torch raises for the same input (so `except RuntimeError` written against
# torch.nn still catches them).
class ArgumentValueError(ValueError, RuntimeError):
    pass


class ArgumentTypeError(TypeError, RuntimeError):
    pass


class ArgumentDtypeError(ArgumentTypeError, ValueError):
    """A dtype mismatch where torch raises ValueError (torch.nn.RNN's input against its weights):
    caught as torch's ValueError and as our TypeError / RuntimeError alike."""


class ArgumentIndexError(IndexError, RuntimeError):
    pass


def check_tensor(op: str, name: str, t, *, dims: Sequence[int] | None = None, floating: bool = False) -> None:
    if not isinstance(t, torch.Tensor):
        raise ArgumentTypeError(f"{op}: {name} must be a Tensor, got {type(t).__name__}")
    if dims is not None and t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ArgumentValueError(f"{op}: {name} must be {want}, got a {t.dim()}-D tensor of shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise ArgumentTypeError(f"{op}: {name} must be a floating-point tensor, got {t.dtype}")


def check_same(op: str, ref_name: str, ref: torch.Tensor, name: str, t: torch.Tensor | None, *,
               dtype: bool = True) -> None:
    if t is None:
        return
    if t.device != ref.device:
        raise RuntimeError(f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}")
    if dtype and t.dtype != ref.dtype:
        raise ArgumentTypeError(f"{op}: {name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}")


def check_supported_device(op: str, t: torch.Tensor) -> None:
    # runs on every op call: the is_cpu / is_cuda flags are cheaper than building t.device.type
    if t.is_cpu or (t.is_cuda and _ext.WITH_CUDA) or t.is_meta:
        return
    if t.is_cuda:
        raise RuntimeError(f"{op}: rnnkern was built without CUDA kernels; rebuild with a CUDA toolkit "
                           "(see `rnnkern info`)")
    raise RuntimeError(f"{op}: unsupported device {t.device}")


def autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    """The dtype torch's autocast runs convolutions and RNNs in for t's device, or None when autocast
    is off there. The ops have no autocast kernel of their own, so the op wrappers cast."""
    device = "cuda" if t.is_cuda else "cpu" if t.is_cpu else None  # cheaper than t.device.type
    if device is None or not torch.is_autocast_enabled(device):
        return None
    return torch.get_autocast_dtype(device)


def autocast_cast(*tensors: torch.Tensor | None) -> tuple:
    """The tensors in autocast's dtype for the first one's device, or as they are when autocast is
    off there: what torch's convolutions and RNN cells run on. As torch's autocast, only floating
    tensors other than float64 are cast (None stays None)."""
    dt = autocast_dtype(tensors[0])
    if dt is None:
        return tensors
    return tuple(t.to(dt) if t is not None and t.is_floating_point() and t.dtype != torch.float64 else t
                 for t in tensors)


# ---- the unchecked path of the op wrappers ------------------------------------------------------
# A wrapper's checks in Python cost more than torch's whole call on small tensors (~15 us against
# ~10). The C++ ops check every argument themselves (they are public), so for the argument forms
# modules pass a wrapper calls the op straight away and runs its checks only when the op refuses,
# to raise the error that names the argument.

_PLAIN = (torch.Tensor, torch.nn.Parameter)


def plain_tensors(*tensors: torch.Tensor | None) -> bool:
    """The tensors (None skipped) are plain tensors (no subclass: no FakeTensor, whose op
    implementations check nothing), none on the meta device (the same), and nothing is being
    compiled. Devices the ops do not support, or mixed ones, the ops refuse themselves."""
    if torch.compiler.is_compiling():
        return False
    return all(t is None or (type(t) in _PLAIN and not t.is_meta) for t in tensors)


def int_sizes(value, n: int) -> list[int] | None:
    """An int or a list / tuple of n ints (no bools) as a list of n ints; None for anything else."""
    if type(value) is int:
        return [value] * n
    if type(value) in (tuple, list) and len(value) == n:
        out = list(value)
        for v in out:
            if type(v) is not int:
                return None
        return out
    return None


def call_unchecked_first(run, common_args: tuple | None, check, *args):
    """run(*common_args), the op called without the Python checks; run(*check(*args)) when
    common_args is None (an argument form the unchecked path does not take). When the op refuses,
    check(*args) raises the error that names the argument, the one the checks first would have
    raised; the op's own error stands when the checks pass."""
    if common_args is None:
        return run(*check(*args))
    try:
        return run(*common_args)
    except Exception:
        try:
            check(*args)
        except Exception as error:  # noqa: BLE001  (whatever the checks raise is what the caller gets)
            raise error from None
        raise


def ntuple(op: str, name: str, value, n: int, *, minimum: int | None = None) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        out = [value] * n
    else:
        try:  # operator.index: ints and numpy integers, not floats (which torch rejects too)
            out = [value.__index__()] * n if hasattr(value, "__index__") else [operator.index(v) for v in value]
        except TypeError:
            raise ArgumentTypeError(f"{op}: {name} must be an int or a sequence of {n} ints, got {value!r}") from None
        if len(out) != n:
            raise ArgumentValueError(f"{op}: {name} must have {n} entries, got {len(out)}: {value!r}")
    if minimum is not None and min(out) < minimum:
        raise ArgumentValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return out


def follow_weight_layout(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """x as the convolution kernels should see it, for torch's memory-format rule (cuDNN's and
    oneDNN's: channels_last when the input or the weight is), where ours decide by a dense input
    alone:
    - x in channels_last when the 4-D weight is channels_last and x is not;
    - a channels_last x that is not dense (a slice) made dense in channels_last (the kernels would
      copy it anyway, into NCHW);
    and whether the caller must make the output channels_last: an x contiguous in both layouts
    (one channel, or 1 x 1 images) gives the kernels no layout to follow. Under vmap the batching
    rule's call decides (a batched tensor has no channels_last query)."""
    if is_batchedtensor(x) or is_batchedtensor(w) or (x.is_contiguous() and w.is_contiguous()) or x.dim() != 4 \
            or channels_last_output(x):  # (both contiguous: the usual case, answered by the rules below too)
        return x, False
    if w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
        if x.is_contiguous(memory_format=torch.channels_last):  # (and contiguous: both layouts)
            return x, True
        return x.contiguous(memory_format=torch.channels_last), False
    if not x.is_contiguous() and channels_last_strides(x):
        return x.contiguous(memory_format=torch.channels_last), False
    return x, False


def channels_last_strides(t: torch.Tensor) -> bool:
    """torch's is_channels_last_strides_2d (c10/core/MemoryFormat.h), which suggest_memory_format
    reads: t's strides order its dims (N, H, W, C) from largest to smallest, whether or not t is
    dense; an ambiguous order (size-1 dims with equal strides) counts as NCHW."""
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    least = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < least or (d == 0 and least == strides[1]):
            return False
        least = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def channels_last_output(t: torch.Tensor) -> bool:
    """The layout rule every rnnkern 4-D kernel follows (and its C++ side mirrors)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


def empty_like_layout(like: torch.Tensor, size, dtype=None) -> torch.Tensor:
    fmt = torch.channels_last if channels_last_output(like) else torch.contiguous_format
    return torch.empty(size, dtype=dtype or like.dtype, device=like.device, memory_format=fmt)
