"""PSPNet (Zhao et al. 2017): dilated ResNet (output stride 8, rnnkern dilated convs) + pyramid
pooling module: average-pool the map into 1x1, 2x2, 3x3 and 6x6 bins, 1x1 conv each to C/4,
upsample back bilinearly, concatenate with the map, 3x3 conv, classifier, upsample to the input.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from rnnkern.models.segmentation._blocks import ConvBNReLU, FCNHead, ResNetLite, SegmentationModel, upsample_to


class PyramidPooling(nn.Module):
    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        mid = max(in_channels // len(bins), 4)
        self.bins = tuple(bins)
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_channels, mid, 1, bias=False),
                                                  nn.BatchNorm2d(mid), nn.ReLU(inplace=True)) for b in bins)
        self.out_channels = in_channels + mid * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [upsample_to(stage(x), size) for stage in self.stages], dim=1)


class PSPNet(SegmentationModel):
    """forward(x (N, C_in, H, W)) -> {"out": (N, num_classes, H, W)[, "aux"]}."""

    name = "pspnet"

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
                 output_stride: int = 8, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__(num_classes, in_channels, aux_loss)
        self.backbone = ResNetLite(in_channels, base_width, output_stride)
        _, _, c3, c4 = self.backbone.channels
        self.ppm = PyramidPooling(c4, bins)
        self.head = nn.Sequential(ConvBNReLU(self.ppm.out_channels, c4 // 2, 3), nn.Dropout(0.1),
                                  nn.Conv2d(c4 // 2, num_classes, 1))
        self.aux_classifier = FCNHead(c3, num_classes) if aux_loss else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        size = x.shape[-2:]
        _, _, c3, c4 = self.backbone(x)
        result = {"out": upsample_to(self.head(self.ppm(c4)), size)}
        if self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(c3), size)
        return result


def pspnet(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
           output_stride: int = 8, bins: Sequence[int] = (1, 2, 3, 6)) -> PSPNet:
    return PSPNet(num_classes, in_channels, base_width, aux_loss, output_stride, bins)
