"""FCN-32s / FCN-16s / FCN-8s (Long, Shelhamer & Darrell) on a small VGG-style encoder.

The encoder is five VGG stages (conv3x3-BN-ReLU blocks + 2x2 max-pool, strides 2..32, widths
w, 2w, 4w, 8w, 8w); the fully-connected layers fc6/fc7 are 1x1 convs with dropout. Class scores at
1/32 are upsampled by rnnkern transposed convs initialised to bilinear interpolation; 16s and 8s
fuse 1x1 score layers on pool4 / pool3 before the last upsampling. The original pads the input by
100 and crops the result; we pad (zeros, bottom/right) to a multiple of 32, so every pooled map is
exactly 1/2 of the previous one and each 2f x 2f, stride f, padding f/2 transposed conv upsamples
exactly f times, then crop back to H x W: output size == input size for any input size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

import rnnkern.nn as rnn
from rnnkern.models.segmentation._blocks import (ConvBNReLU, FCNHead, SegmentationModel, conv_transpose2d,
                                                 pad_to_multiple, upsample_to)


def _bilinear_upsampler(channels: int, factor: int) -> nn.Module:
    layer = conv_transpose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():  # FCN's bilinear kernel: F.interpolate(bilinear) away from the border
        layer.weight.copy_(rnn.bilinear_upsampling_weight(channels, channels, 2 * factor))
    return layer


class _VGGEncoder(nn.Module):
    def __init__(self, in_channels: int, w: int) -> None:
        super().__init__()
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w]
        convs_per_stage = [2, 2, 3, 3, 3]
        stages = []
        cin = in_channels
        for cout, n in zip(widths, convs_per_stage):
            blocks = [ConvBNReLU(cin if i == 0 else cout, cout, 3) for i in range(n)]
            stages.append(nn.Sequential(*blocks, nn.MaxPool2d(2, 2)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.channels = widths

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats  # pool1 .. pool5


class FCN(SegmentationModel):
    """FCN-{32,16,8}s. forward(x (N, C_in, H, W)) -> {"out": (N, num_classes, H, W)[, "aux"]}."""

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 16, variant: int = 8,
                 aux_loss: bool = False, fc_width: int | None = None) -> None:
        if variant not in (32, 16, 8):
            raise ValueError(f"FCN variant must be 32, 16 or 8, got {variant}")
        self.name = f"fcn{variant}s"
        super().__init__(num_classes, in_channels, aux_loss)
        self.variant = variant
        self.encoder = _VGGEncoder(in_channels, base_width)
        c3, c4, c5 = self.encoder.channels[2:]
        fc = fc_width or 16 * base_width
        # fc6 / fc7 of VGG as convolutions (1x1 here: the maps of small inputs are tiny)
        self.fc = nn.Sequential(nn.Conv2d(c5, fc, 1), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
                                nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout2d(0.5))
        self.score_fr = nn.Conv2d(fc, num_classes, 1)
        if variant == 32:
            self.upscore = _bilinear_upsampler(num_classes, 32)
        else:
            self.score_pool4 = nn.Conv2d(c4, num_classes, 1)
            self.upscore2 = _bilinear_upsampler(num_classes, 2)
            if variant == 16:
                self.upscore = _bilinear_upsampler(num_classes, 16)
            else:
                self.score_pool3 = nn.Conv2d(c3, num_classes, 1)
                self.upscore_pool4 = _bilinear_upsampler(num_classes, 2)
                self.upscore = _bilinear_upsampler(num_classes, 8)
        # the original zero-initialises the score layers so training starts from the coarse net
        for name in ("score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)
        self.aux_classifier = FCNHead(c4, num_classes) if aux_loss else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, 32)
        _, _, pool3, pool4, pool5 = self.encoder(xp)
        score = self.score_fr(self.fc(pool5))
        if self.variant == 32:
            score = self.upscore(score)
        else:
            score = self.upscore2(score) + self.score_pool4(pool4)
            if self.variant == 16:
                score = self.upscore(score)
            else:
                score = self.upscore_pool4(score) + self.score_pool3(pool3)
                score = self.upscore(score)
        result = {"out": score[:, :, :h, :w]}
        if self.aux_classifier is not None:
            aux = self.aux_classifier(pool4)
            result["aux"] = upsample_to(aux, xp.shape[-2:])[:, :, :h, :w]
        return result


def fcn32s(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False) -> FCN:
    return FCN(num_classes, in_channels, base_width, 32, aux_loss)


def fcn16s(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False) -> FCN:
    return FCN(num_classes, in_channels, base_width, 16, aux_loss)


def fcn8s(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False) -> FCN:
    return FCN(num_classes, in_channels, base_width, 8, aux_loss)
