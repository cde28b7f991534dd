"""Segmentation losses: pixel-wise cross-entropy, the lecture's soft Dice, and CE + Dice.

Shapes: multiclass logits (N, C, H, W) with integer targets (N, H, W) in [0, C) or ignore_index;
binary logits (N, 1, H, W) or (N, H, W) with targets in {0, 1} or ignore_index. Pixels equal to
ignore_index (default 255, as in Pascal VOC) take no part in any loss.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE_INDEX = 255
_HALF = (torch.float16, torch.bfloat16)


def _out_dtype(logits: Tensor) -> torch.dtype:
    """The dtype torch's own losses return for these logits: 16-bit logits give a 16-bit loss, except
    under autocast, which runs the losses in fp32 (F.cross_entropy, binary_cross_entropy_with_logits)."""
    if logits.dtype in _HALF and torch.is_autocast_enabled(logits.device.type):
        return torch.float32
    return logits.dtype


def _check(logits: Tensor, target: Tensor, ignore_index: int, where: str) -> tuple[Tensor, bool]:
    """Validate shapes/labels; returns (logits as (N, C, H, W), binary?)."""
    if not logits.is_floating_point():
        raise ValueError(f"{where}: logits must be floating point, got {logits.dtype}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{where}: target must be an integer label tensor, got {target.dtype}")
    if logits.dim() == target.dim():  # binary, (N, H, W) logits
        logits = logits.unsqueeze(1)
    if logits.dim() != target.dim() + 1 or logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"{where}: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match; "
                         "expected (N, C, H, W) and (N, H, W)")
    binary = logits.shape[1] == 1
    num_classes = 2 if binary else logits.shape[1]
    valid = target != ignore_index
    if torch.compiler.is_compiling():  # (no data-dependent branch in a graph: an asynchronous assert)
        in_range = ((target >= 0) & (target < num_classes)) | ~valid
        torch._assert_async(in_range.all(), f"{where}: target labels must be in [0, {num_classes}) or "
                                            f"{ignore_index} (ignore)")
    elif valid.any():
        t = target[valid]
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"{where}: target labels must be in [0, {num_classes}) or {ignore_index} (ignore); "
                             f"found values in [{lo}, {hi}]")
    return logits, binary


def cross_entropy(logits: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  ignore_index: int = IGNORE_INDEX, reduction: str = "mean") -> Tensor:
    """Pixel-wise cross-entropy: -sum_i w_{y_i} log softmax(z_i)_{y_i} / sum_i w_{y_i} over the
    non-ignored pixels (F.cross_entropy's definition), except that a batch whose denominator is 0
    (every pixel ignored or of zero weight) gives 0 instead of NaN. `weight`: (C,) class weights.
    Binary (one-channel) logits use the sigmoid form, with weight[1] / weight[0] for the two classes."""
    logits, binary = _check(logits, target, ignore_index, "cross_entropy")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    valid = target != ignore_index
    dtype = _out_dtype(logits)
    if not binary:
        if reduction != "mean":
            return F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index,
                                   reduction=reduction)
        # F.cross_entropy's mean is 0/0 = NaN for a batch without a (non-zero-weight) labelled pixel,
        # e.g. unlabelled images of a folder dataset: that aborted training as "diverged". The sum
        # is 0 then, so divide by the weight total only where it is non-zero: such a batch gives 0.
        # 16-bit logits are summed in fp32 (a 16-bit sum overflows fp16 past 65504; torch's mean
        # accumulates in fp32 on CUDA).
        if logits.dtype in _HALF:
            logits, weight = logits.float(), None if weight is None else weight.float()
        s = F.cross_entropy(logits, target.long(), weight=weight, ignore_index=ignore_index, reduction="sum")
        t = torch.where(valid, target, 0).long()
        den = (torch.where(valid, weight.to(s.device, torch.float64)[t], 0.0) if weight is not None else valid).sum()
        den = den.to(s.dtype)
        return (s / torch.where(den != 0, den, torch.ones_like(den))).to(dtype)
    z = logits[:, 0][valid]
    if reduction != "none" and z.dtype in _HALF:  # sum 16-bit losses in fp32, as the multiclass mean
        z = z.float()
    y = target[valid].to(z.dtype)
    w = None
    if weight is not None:
        w = torch.where(y > 0, weight[1].to(z.dtype), weight[0].to(z.dtype))
    losses = F.binary_cross_entropy_with_logits(z, y, weight=w, reduction="none")
    if reduction == "none":
        out = torch.zeros(target.shape, dtype=losses.dtype, device=z.device)
        out[valid] = losses
        return out
    if reduction == "sum":
        return losses.sum().to(dtype)
    den = w.sum() if w is not None else valid.sum().to(z.dtype)
    return (losses.sum() / torch.where(den != 0, den, torch.ones_like(den))).to(dtype)  # no labelled pixel: 0


def soft_dice_loss(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1e-12) -> Tensor:
    """The lecture's soft Dice loss, per class c and averaged over the classes:

        L = 1/C sum_c [1 - 2 sum_i y_ic p_ic / (sum_i y_ic^2 + sum_i p_ic^2)]

    with p = softmax(logits) over the channels (multiclass) or sigmoid (binary: one channel, the
    foreground class only, C = 1), y the one-hot target, sums over every non-ignored pixel of the
    batch. `eps` only guards an all-zero denominator. Classes absent from the target contribute
    1 - 0 = 1 (as the formula says). 16-bit logits are computed in fp32 (the per-class sums pass
    fp16's 65504 past ~33k pixels of a class: inf / inf = NaN); the result has torch's loss dtype."""
    logits, binary = _check(logits, target, ignore_index, "soft_dice_loss")
    dtype = _out_dtype(logits)
    if logits.dtype in _HALF:
        logits = logits.float()
    valid = target != ignore_index
    if binary:
        p = torch.sigmoid(logits[:, 0])
        y = (target == 1).to(p.dtype)
        p, y = p.unsqueeze(1), y.unsqueeze(1)
    else:
        p = torch.softmax(logits, dim=1)
        y = F.one_hot(torch.where(valid, target, 0).long(), logits.shape[1]).movedim(-1, 1).to(p.dtype)
    m = valid.unsqueeze(1).to(p.dtype)
    p, y = p * m, y * m
    dims = (0, 2, 3)
    inter = (y * p).sum(dims)
    den = (y * y).sum(dims) + (p * p).sum(dims)
    return (1 - 2 * inter / den.clamp_min(eps)).mean().to(dtype)


class CrossEntropyLoss(nn.Module):
    def __init__(self, weight: Optional[Tensor] = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(logits, target, self.weight, self.ignore_index)


class SoftDiceLoss(nn.Module):
    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_dice_loss(logits, target, self.ignore_index)


class CEDiceLoss(nn.Module):
    """ce_weight * cross_entropy + dice_weight * soft_dice_loss."""

    def __init__(self, weight: Optional[Tensor] = None, ignore_index: int = IGNORE_INDEX, ce_weight: float = 1.0,
                 dice_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.ignore_index = ignore_index
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return (self.ce_weight * cross_entropy(logits, target, self.weight, self.ignore_index)
                + self.dice_weight * soft_dice_loss(logits, target, self.ignore_index))


def build_loss(name: str, weight: Optional[Tensor] = None, ignore_index: int = IGNORE_INDEX) -> nn.Module:
    """'ce' | 'dice' | 'ce+dice'."""
    if name == "ce":
        return CrossEntropyLoss(weight, ignore_index)
    if name == "dice":
        return SoftDiceLoss(ignore_index)
    if name in ("ce+dice", "cedice"):
        return CEDiceLoss(weight, ignore_index)
    raise ValueError(f"unknown loss {name!r}; choose ce, dice or ce+dice")
