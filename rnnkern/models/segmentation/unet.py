"""U-Net (Ronneberger, Fischer & Brox): contracting path of double 3x3 convs + 2x2 max-pool,
expanding path of 2x2 stride-2 rnnkern transposed convs, skip concatenation, double convs.

'Same' padding instead of the paper's valid convs. The input is zero-padded (bottom/right) to a
multiple of 2**depth, as FCN pads to 32, so every pooled map is exactly half the previous one and
even a 1x1 input reaches the bottleneck; the output is cropped back to the input's H x W.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkern.models.segmentation._blocks import (ConvBNReLU, FCNHead, SegmentationModel, conv_transpose2d,
                                                 pad_to_multiple, upsample_to)


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(ConvBNReLU(in_channels, out_channels, 3), ConvBNReLU(out_channels, out_channels, 3))


class Up(nn.Module):
    """2x2 stride-2 transposed conv (halves the channels), concat with the skip, double conv. UNet
    pads its input to a multiple of 2**depth, so the upsampled map is exactly the skip's size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = conv_transpose2d(in_channels, in_channels // 2, 2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(SegmentationModel):
    """U-Net with `depth` poolings and widths base_width * 2**level.
    forward(x (N, C_in, H, W)) -> {"out": (N, num_classes, H, W)[, "aux"]}."""

    name = "unet"

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 16, depth: int = 4,
                 aux_loss: bool = False) -> None:
        super().__init__(num_classes, in_channels, aux_loss)
        if depth < 1:
            raise ValueError(f"unet: depth must be >= 1, got {depth}")
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.downs = nn.ModuleList(nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1]))
                                   for i in range(depth))
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], num_classes, 1)
        self.aux_classifier = FCNHead(widths[-1], num_classes) if aux_loss else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, 2 ** len(self.downs))
        skips = [self.inc(xp)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        bottleneck = y
        for up in self.ups:
            y = up(y, skips.pop())
        result = {"out": self.outc(y)[:, :, :h, :w]}
        if self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(bottleneck), xp.shape[-2:])[:, :, :h, :w]
        return result


def unet(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
         depth: int = 4) -> UNet:
    return UNet(num_classes, in_channels, base_width, depth, aux_loss)
