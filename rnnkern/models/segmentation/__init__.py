"""Segmentation nets on rnnkern's layers, with their losses, metrics, data and trainer.

Builders follow torchvision/smp: ``build_model(name, num_classes, in_channels=3, base_width=16,
aux_loss=False)``; every model maps (N, C_in, H, W) to {"out": (N, num_classes, H, W) logits}
(plus "aux" when aux_loss) for any H, W.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from rnnkern.models.segmentation.deeplab import DeepLabV3, deeplabv3, deeplabv3plus
from rnnkern.models.segmentation.fcn import FCN, fcn8s, fcn16s, fcn32s
from rnnkern.models.segmentation.losses import CEDiceLoss, SoftDiceLoss, cross_entropy, soft_dice_loss
from rnnkern.models.segmentation.metrics import (ConfusionMatrix, confusion_matrix, dice_per_class, iou_per_class,
                                                 mean_dice, mean_iou, pixel_accuracy)
from rnnkern.models.segmentation.pspnet import PSPNet, pspnet
from rnnkern.models.segmentation.segnet import SegNet, segnet
from rnnkern.models.segmentation.unet import UNet, unet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "fcn32s": fcn32s, "fcn16s": fcn16s, "fcn8s": fcn8s, "unet": unet, "segnet": segnet,
    "deeplabv3": deeplabv3, "deeplabv3plus": deeplabv3plus, "pspnet": pspnet,
}


def build_model(name: str, num_classes: int, in_channels: int = 3, base_width: int = 16,
                aux_loss: bool = False, **kwargs) -> nn.Module:
    """Build a segmentation net by name (one of MODELS)."""
    if name not in MODELS:
        raise ValueError(f"unknown segmentation model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_classes, in_channels=in_channels, base_width=base_width, aux_loss=aux_loss, **kwargs)


__all__ = ["MODELS", "build_model", "FCN", "UNet", "SegNet", "DeepLabV3", "PSPNet",
           "fcn32s", "fcn16s", "fcn8s", "unet", "segnet", "deeplabv3", "deeplabv3plus", "pspnet",
           "cross_entropy", "soft_dice_loss", "SoftDiceLoss", "CEDiceLoss",
           "ConfusionMatrix", "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy",
           "dice_per_class", "mean_dice"]
