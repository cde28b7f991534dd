"""Building blocks shared by the segmentation nets.

Every transposed conv, dilated conv (dilation > 1) and max-unpool is taken from rnnkern.nn so the
models run on rnnkern's kernels; plain dilation-1 convs, batch norm and pooling are torch.nn's.
The rnnkern.nn classes are looked up when a layer is built (not at import), so this package
imports even on a checkout whose rnnkern.nn is still growing.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import rnnkern.nn as rnn


def conv_transpose2d(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int = 0,
                     bias: bool = True) -> nn.Module:
    """rnnkern.nn.ConvTranspose2d (same constructor as torch.nn's)."""
    return rnn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
           dilation: int = 1, bias: bool = True) -> nn.Module:
    """A conv layer: rnnkern.nn.Conv2d when dilated (dilation > 1), torch.nn.Conv2d otherwise."""
    cls = rnn.Conv2d if dilation > 1 else nn.Conv2d
    return cls(in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias)


class ConvBNReLU(nn.Sequential):
    """k x k conv ('same' padding for odd k, any dilation) -> BatchNorm2d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 dilation: int = 1) -> None:
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + identity/1x1 projection); dilation for atrous backbones."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv2d(in_channels, out_channels, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = conv2d(out_channels, out_channels, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ResNetLite(nn.Module):
    """A small ResNet-18-shaped encoder trained from scratch (no pretrained weights exist offline).

    Stem (two 3x3 convs, stride 2) then four stages of two basic blocks with widths
    w, 2w, 4w, 8w at strides 4, 8, 16, 32. For an output stride of 16 or 8 the strides of the last
    one or two stages are replaced by dilation (DeepLab's atrous trick), which keeps the receptive
    field while the map stays at 1/16 or 1/8 of the input. Returns the four stage outputs.
    """

    def __init__(self, in_channels: int, base_width: int, output_stride: int = 8) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        w = base_width
        self.stem = nn.Sequential(ConvBNReLU(in_channels, w, 3, stride=2), ConvBNReLU(w, w, 3))
        strides = [2, 2, 2, 2]
        dilations = [1, 1, 1, 1]
        if output_stride <= 16:
            strides[3], dilations[3] = 1, 2
        if output_stride == 8:
            strides[2], dilations[2] = 1, 2
            dilations[3] = 4
        widths = [w, 2 * w, 4 * w, 8 * w]
        self.channels = widths
        layers = []
        cin = w
        prev_dilation = 1
        for cout, s, d in zip(widths, strides, dilations):
            # the first block of a dilated stage uses the previous dilation (as torchvision's
            # replace_stride_with_dilation does), the rest the new one
            layers.append(nn.Sequential(BasicBlock(cin, cout, s, prev_dilation), BasicBlock(cout, cout, 1, d)))
            cin, prev_dilation = cout, d
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return [c1, c2, c3, c4]


class FCNHead(nn.Sequential):
    """torchvision's FCNHead: 3x3 conv-BN-ReLU, dropout, 1x1 classifier (used for aux outputs)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        mid = max(in_channels // 4, 8)
        super().__init__(ConvBNReLU(in_channels, mid, 3), nn.Dropout(0.1), nn.Conv2d(mid, num_classes, 1))


def pad_to_multiple(x: Tensor, m: int) -> Tensor:
    """x zero-padded at the bottom and right to H and W multiples of m (the nets' total stride), so
    no pooling drops a row or column; the caller crops its output back to x's H x W."""
    ph, pw = (-x.shape[-2]) % m, (-x.shape[-1]) % m
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def upsample_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize to `size` (H, W), align_corners=False (as DeepLab/PSPNet in torchvision)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegmentationModel(nn.Module):
    """Base: checks the input and wraps the result in {"out": ..., "aux": ...}."""

    name = "segmentation model"

    def __init__(self, num_classes: int, in_channels: int, aux_loss: bool) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"{self.name}: in_channels must be >= 1, got {in_channels}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.aux_loss = aux_loss

    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{self.name}: expected an (N, C, H, W) tensor, got {shape}")
        if x.shape[1] != self.in_channels:
            raise ValueError(f"{self.name}: expected {self.in_channels} input channel(s), got {x.shape[1]} "
                             f"(input shape {tuple(x.shape)})")
        if not x.is_floating_point():
            raise ValueError(f"{self.name}: expected a floating-point input, got {x.dtype}")


def aspp_rates(map_size: int, base: Sequence[int] = (6, 12, 18), ref_map: int = 33) -> tuple[int, ...]:
    """ASPP rates scaled to the feature map: DeepLab v3 uses (6, 12, 18) on a 33x33 map (513 input,
    output stride 16); we keep the same fraction of the map, at least 2 and strictly increasing, so
    the 3x3 taps stay inside small maps instead of sampling only padding."""
    rates = []
    for r in base:
        v = max(2, int(round(map_size * r / ref_map)))
        if rates and v <= rates[-1]:
            v = rates[-1] + 1
        rates.append(v)
    return tuple(rates)
