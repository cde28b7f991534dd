"""SegNet (Badrinarayanan, Kendall & Cipolla): a VGG-style encoder whose 2x2 max-pools keep their
argmax indices, and a mirrored decoder that upsamples with rnnkern.nn.MaxUnpool2d at exactly those
indices (sparse maps, densified by the following convs). The input is zero-padded (bottom/right)
to a multiple of 2**depth, so no pooling drops a row or column and even a 1x1 input reaches the
bottleneck; the output is cropped back to the input's H x W.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

import rnnkern.nn as rnn
from rnnkern.models.segmentation._blocks import ConvBNReLU, FCNHead, SegmentationModel, pad_to_multiple, upsample_to


class SegNet(SegmentationModel):
    """forward(x (N, C_in, H, W)) -> {"out": (N, num_classes, H, W)[, "aux"]}. Five encoder stages
    (2, 2, 3, 3, 3 convs; widths w, 2w, 4w, 8w, 8w) as in SegNet's VGG-16 encoder."""

    name = "segnet"

    def __init__(self, num_classes: int, in_channels: int = 3, base_width: int = 16, depth: int = 5,
                 aux_loss: bool = False) -> None:
        super().__init__(num_classes, in_channels, aux_loss)
        if not 1 <= depth <= 5:
            raise ValueError(f"segnet: depth must be in 1..5, got {depth}")
        w = base_width
        widths = [w, 2 * w, 4 * w, 8 * w, 8 * w][:depth]
        nconv = [2, 2, 3, 3, 3][:depth]
        self.enc = nn.ModuleList()
        cin = in_channels
        for cout, n in zip(widths, nconv):
            self.enc.append(nn.Sequential(*[ConvBNReLU(cin if i == 0 else cout, cout) for i in range(n)]))
            cin = cout
        # the indices come from max_pool2d in this forward, so they are in range by construction:
        # no check, hence no host sync a call on CUDA
        self.unpool = rnn.MaxUnpool2d(2, 2, check_indices=False)
        # decoder stage i mirrors encoder stage i: n convs, the last one maps to the previous width
        self.dec = nn.ModuleList()
        for i in reversed(range(depth)):
            cout = widths[i - 1] if i > 0 else widths[0]
            n = nconv[i]
            layers = [ConvBNReLU(widths[i], widths[i]) for _ in range(n - 1)] + [ConvBNReLU(widths[i], cout)]
            self.dec.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        self.aux_classifier = FCNHead(widths[-1], num_classes) if aux_loss else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self.check_input(x)
        h, w = x.shape[-2:]
        xp = pad_to_multiple(x, 2 ** len(self.enc))
        stack = []
        y = xp
        for stage in self.enc:
            y = stage(y)
            size = y.shape[-2:]
            y, idx = F.max_pool2d(y, 2, 2, return_indices=True)
            stack.append((idx, size))
        bottleneck = y
        for stage in self.dec:
            idx, size = stack.pop()
            y = stage(self.unpool(y, idx, output_size=size))
        result = {"out": self.classifier(y)[:, :, :h, :w]}
        if self.aux_classifier is not None:
            result["aux"] = upsample_to(self.aux_classifier(bottleneck), xp.shape[-2:])[:, :, :h, :w]
        return result


def segnet(num_classes: int, in_channels: int = 3, base_width: int = 16, aux_loss: bool = False,
           depth: int = 5) -> SegNet:
    return SegNet(num_classes, in_channels, base_width, depth, aux_loss)
