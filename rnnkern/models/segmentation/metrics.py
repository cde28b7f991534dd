"""Segmentation metrics from a confusion matrix, with torchmetrics' definitions.

confusion_matrix[t, p] counts pixels of true class t predicted as p (rows = target, as
torchmetrics' MulticlassConfusionMatrix); pixels whose target is ignore_index are left out.
- IoU_c = TP / (TP + FP + FN) (MulticlassJaccardIndex, average=None, zero_division=0);
  mean IoU = the mean over the classes that occur in the target or the prediction
  (average="macro": classes with TP + FP + FN = 0 get weight 0).
- pixel accuracy = sum TP / number of (non-ignored) pixels (MulticlassAccuracy, average="micro").
- Dice_c = 2 TP / (2 TP + FP + FN) (segmentation.DiceScore, aggregation_level="global");
  mean Dice skips classes with a zero denominator, as DiceScore's NaN-skipping mean does.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

IGNORE_INDEX = 255


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int, ignore_index: Optional[int] = IGNORE_INDEX
                     ) -> Tensor:
    """(num_classes, num_classes) int64 counts. preds: integer labels (N, H, W) or logits
    (N, C, H, W) (argmax over C); target: (N, H, W) labels in [0, num_classes) or ignore_index."""
    if preds.is_floating_point():
        if preds.dim() != target.dim() + 1:
            raise ValueError(f"confusion_matrix: logits {tuple(preds.shape)} must be (N, C, ...) for target "
                             f"{tuple(target.shape)}")
        preds = preds.argmax(1) if preds.shape[1] > 1 else (preds[:, 0] > 0).long()
    if preds.shape != target.shape:
        raise ValueError(f"confusion_matrix: preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
    preds, target = preds.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        preds, target = preds[keep], target[keep]
    if target.numel():
        bad_t = (target < 0) | (target >= num_classes)
        bad_p = (preds < 0) | (preds >= num_classes)
        if bool(bad_t.any()) or bool(bad_p.any()):
            raise ValueError(f"confusion_matrix: labels must be in [0, {num_classes})"
                             + (f" or {ignore_index} (ignore)" if ignore_index is not None else "")
                             + f"; target has {target[bad_t].unique().tolist()[:5]}, "
                               f"preds have {preds[bad_p].unique().tolist()[:5]}")
    idx = target * num_classes + preds
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _stats(cm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    cm = cm.double()
    tp = cm.diag()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp  # tp, fp, fn


def iou_per_class(cm: Tensor) -> Tensor:
    """TP / (TP + FP + FN) per class; 0 where the denominator is 0."""
    tp, fp, fn = _stats(cm)
    den = tp + fp + fn
    return torch.where(den > 0, tp / den.clamp_min(1), torch.zeros_like(tp))


def mean_iou(cm: Tensor) -> float:
    """Mean IoU over the classes present in target or prediction."""
    tp, fp, fn = _stats(cm)
    present = (tp + fp + fn) > 0
    return float(iou_per_class(cm)[present].mean()) if bool(present.any()) else 0.0


def pixel_accuracy(cm: Tensor) -> float:
    total = cm.sum()
    return float(cm.diag().sum().double() / total) if int(total) > 0 else 0.0


def dice_per_class(cm: Tensor) -> Tensor:
    """2 TP / (2 TP + FP + FN) per class; 0 where the denominator is 0."""
    tp, fp, fn = _stats(cm)
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(tp))


def mean_dice(cm: Tensor) -> float:
    tp, fp, fn = _stats(cm)
    present = (2 * tp + fp + fn) > 0
    return float(dice_per_class(cm)[present].mean()) if bool(present.any()) else 0.0


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (all_reduce it across DDP ranks with `.sync()`)."""

    def __init__(self, num_classes: int, ignore_index: Optional[int] = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.mat += confusion_matrix(preds.detach(), target.detach(), self.num_classes, self.ignore_index).cpu()

    def sync(self) -> None:
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            t = self.mat.to(_dist_device())
            dist.all_reduce(t)
            self.mat = t.cpu()

    def compute(self) -> dict:
        return {"miou": mean_iou(self.mat), "pixel_acc": pixel_accuracy(self.mat), "dice": mean_dice(self.mat),
                "iou": iou_per_class(self.mat).tolist()}


def _dist_device() -> torch.device:
    import torch.distributed as dist
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
