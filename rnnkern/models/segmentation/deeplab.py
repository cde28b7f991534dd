"""DeepLab v3 (Chen et al. 2017) and v3+ (Chen et al. 2018) on a small dilated ResNet.

The backbone replaces the strides of its last stages by dilation (output stride 8 or 16) with
rnnkern dilated convs; ASPP = a 1x1 conv, three 3x3 rnnkern dilated convs and an image-pooling
branch, concatenated and projected. Rates: DeepLab's (6, 12, 18) are meant for a 33x33 map
(513 input at stride 16) and (12, 24, 36) at stride 8; on small maps most of those taps fall
into padding, so by default the rates are scaled to the map the model expects
(`image_size / output_stride`, see `aspp_rates`), or given explicitly with `atrous_rates`.
v3+ adds the decoder: 1x1-reduced stride-4 features, concatenated with the bilinearly upsampled
ASPP output, two 3x3 convs, classifier, bilinear upsampling to the input size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from rnnkern.models.segmentation._blocks import (ConvBNReLU, FCNHead, ResNetLite, SegmentationModel, aspp_rates,
                                                 upsample_to)


class ASPPPooling(nn.Sequential):
    """Image-level features: global average pool -> 1x1 conv-BN-ReLU -> broadcast back."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        return upsample_to(super().forward(x), size)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: Sequence[int], out_channels: int) -> None:
        super().__init__()
        branches = [ConvBNReLU(in_channels, out_channels, 1)]
        branches += [ConvBNReLU(in_channels, out_channels, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(ConvBNReLU(len(branches) * out_channels, out_channels, 1), nn.Dropout(0.5))
        self.rates = tuple(rates)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


class DeepLabV3(SegmentationModel):
    """forward(x (N, C_in, H, W)) -> {"out": (N, num_classes, H, W)[, "aux"]}."""

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
                 output_stride: int = 8, plus: bool = False, atrous_rates: Optional[Sequence[int]] = None,
                 image_size: int = 64) -> None:
        self.name = "deeplabv3plus" if plus else "deeplabv3"
        super().__init__(num_classes, in_channels, aux_loss)
        if output_stride not in (8, 16):
            raise ValueError(f"{self.name}: output_stride must be 8 or 16, got {output_stride}")
        self.backbone = ResNetLite(in_channels, base_width, output_stride)
        c1, _, c3, c4 = self.backbone.channels
        rates = tuple(atrous_rates) if atrous_rates is not None else aspp_rates(max(1, image_size // output_stride))
        if any(r < 2 for r in rates):
            raise ValueError(f"{self.name}: atrous rates must be >= 2, got {rates}")
        aspp_ch = max(16, c4 // 2)
        self.aspp = ASPP(c4, rates, aspp_ch)
        self.plus = plus
        if plus:
            low = max(8, c1 // 2)
            self.low_level = ConvBNReLU(c1, low, 1)
            self.decoder = nn.Sequential(ConvBNReLU(aspp_ch + low, aspp_ch, 3), ConvBNReLU(aspp_ch, aspp_ch, 3))
        else:
            self.decoder = ConvBNReLU(aspp_ch, aspp_ch, 3)
        self.classifier = nn.Conv2d(aspp_ch, num_classes, 1)
        self.aux_classifier = FCNHead(c3, num_classes) if aux_loss else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        size = x.shape[-2:]
        c1, _, c3, c4 = self.backbone(x)
        y = self.aspp(c4)
        if self.plus:
            y = torch.cat([upsample_to(y, c1.shape[-2:]), self.low_level(c1)], dim=1)
        y = self.classifier(self.decoder(y))
        result = {"out": upsample_to(y, size)}
        if self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(c3), size)
        return result


def deeplabv3(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
              output_stride: int = 8, atrous_rates: Optional[Sequence[int]] = None,
              image_size: int = 64) -> DeepLabV3:
    return DeepLabV3(num_classes, in_channels, base_width, aux_loss, output_stride, False, atrous_rates, image_size)


def deeplabv3plus(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
                  output_stride: int = 16, atrous_rates: Optional[Sequence[int]] = None,
                  image_size: int = 64) -> DeepLabV3:
    return DeepLabV3(num_classes, in_channels, base_width, aux_loss, output_stride, True, atrous_rates, image_size)
