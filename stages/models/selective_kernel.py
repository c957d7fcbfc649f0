"""The Selective-Kernel (SK) conv of SimCLRv2's SK-ResNets, which replaces each bottleneck's 3x3 conv.

As in the official TF2 code (google-research/simclr, `tf2/resnet.py`, `SK_Conv2D`): one 3x3 conv produces two
branches (2x the filters), their sum is global-average-pooled and squeezed to `max(filters / 16, 32)` channels, and
a per-channel softmax over the two branches weighs them.
"""

from __future__ import annotations

import torch
from torch import nn

from stages.models.layers import bn, conv_bn_relu

SK_RATIO = 0.0625
SK_MIN_CHANNELS = 32


class SelectiveKernel(nn.Module):
    """SK conv: one 3x3 conv makes two branches; per-channel softmax attention picks their mix."""

    def __init__(self, cin: int, filters: int, stride: int) -> None:
        super().__init__()
        mid = max(int(filters * SK_RATIO), SK_MIN_CHANNELS)
        self.branches = conv_bn_relu(cin, 2 * filters, 3, stride)
        self.attention = nn.Sequential(
            nn.Conv2d(filters, mid, 1, bias=False),
            bn(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, 2 * filters, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.branches(x).chunk(2, dim=1)
        pooled = (b1 + b2).mean(dim=(2, 3), keepdim=True)
        a1, a2 = self.attention(pooled).chunk(2, dim=1)
        w = torch.stack([a1, a2]).softmax(dim=0)
        return w[0] * b1 + w[1] * b2
