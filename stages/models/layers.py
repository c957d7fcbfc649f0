"""The conv, BN and pooling layers of the encoder, with the official TF code's padding and BN conventions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-5
BN_MOMENTUM = 0.1  # torch convention; TF's decay 0.9


def tf_same_pad(x: torch.Tensor, kernel: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad like TF's "SAME": any odd pixel of padding goes to the bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def bn(channels: int, zero_init: bool = False) -> nn.BatchNorm2d:
    layer = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
    if zero_init:
        layer.zero_init = True  # read by `init_weights`
    return layer


def conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    # Symmetric padding k//2 equals TF's fixed padding for odd kernels at any stride.
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(conv(cin, cout, kernel, stride), bn(cout), nn.ReLU(inplace=True))


class TFSameMaxPool(nn.Module):
    """3x3 stride-2 max-pool with TF "SAME" padding (the stem's pool)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(tf_same_pad(x, 3, 2, value=float("-inf")), 3, 2)


class AvgPoolShortcut(nn.Module):
    """ResNet-D shortcut pooling: 2x2 average pool, stride 2 (zero pad bottom/right, VALID) or stride 1
    (TF "SAME" where the padding is not counted in the average)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            pad = [0, x.shape[-1] % 2, 0, x.shape[-2] % 2]  # TF FixedPadding(2) only matters for odd sizes
            return F.avg_pool2d(F.pad(x, pad), 2, self.stride)
        summed = F.avg_pool2d(F.pad(x, [0, 1, 0, 1]), 2, 1, divisor_override=1)
        ones = torch.ones(1, 1, x.shape[-2], x.shape[-1], dtype=x.dtype, device=x.device)
        count = F.avg_pool2d(F.pad(ones, [0, 1, 0, 1]), 2, 1, divisor_override=1)
        return summed / count
