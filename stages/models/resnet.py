"""The SimCLRv2 encoder family: ResNet-18 ... ResNet-200, width multipliers, Selective Kernels, small-image stem.

Follows the official TF2 code (google-research/simclr, `tf2/resnet.py`); see docs/simclrv2.md#encoder:
- v1.5 blocks (stride on the 3x3 conv); the first block of every stage has a projection shortcut.
- `sk=True` swaps each bottleneck's 3x3 conv for a Selective-Kernel conv and turns on the ResNet-D deep stem and
  average-pool shortcut.
- Every channel count is multiplied by `width`, so a bottleneck net outputs `2048 * width` features.
- The last BN gamma of every residual branch starts at zero; convs use truncated-normal fan-in variance scaling.
Inputs are `B x 3 x H x W` floats in [0, 1]; there is no mean/std normalisation (as in the reference).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.models.activation_checkpointing import checkpointed
from stages.models.layers import AvgPoolShortcut, TFSameMaxPool, bn, conv, conv_bn_relu
from stages.models.selective_kernel import SelectiveKernel

STAGE_BLOCKS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
BASIC_BLOCK_DEPTHS = (18, 34)


def shortcut(cin: int, cout: int, stride: int, sk: bool) -> nn.Sequential:
    if sk:
        return nn.Sequential(AvgPoolShortcut(stride), conv(cin, cout, 1), bn(cout))
    return nn.Sequential(conv(cin, cout, 1, stride), bn(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, filters: int, stride: int, project: bool, sk: bool) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            conv_bn_relu(cin, filters, 3, stride), conv(filters, filters, 3), bn(filters, zero_init=True)
        )
        self.shortcut = shortcut(cin, filters, stride, sk) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x), inplace=True)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, filters: int, stride: int, project: bool, sk: bool) -> None:
        super().__init__()
        out = filters * self.expansion
        middle = SelectiveKernel(filters, filters, stride) if sk else conv_bn_relu(filters, filters, 3, stride)
        self.branch = nn.Sequential(
            conv_bn_relu(cin, filters, 1), middle, conv(filters, out, 1), bn(out, zero_init=True)
        )
        self.shortcut = shortcut(cin, out, stride, sk) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x), inplace=True)


def make_stem(stem_width: int, sk: bool, small_images: bool) -> nn.Sequential:
    if small_images:  # "CIFAR stem": keep the resolution of 32 px images
        return conv_bn_relu(3, stem_width, 3)
    if sk:  # ResNet-D deep stem
        half = stem_width // 2
        convs = [conv_bn_relu(3, half, 3, 2), conv_bn_relu(half, half, 3), conv_bn_relu(half, stem_width, 3)]
    else:
        convs = [conv_bn_relu(3, stem_width, 7, 2)]
    return nn.Sequential(*convs, TFSameMaxPool())


class ResNet(nn.Module):
    """(SK-)ResNet trunk up to the global average pool; `out_dim` features per image.

    `activation_checkpointing` (default False; a runtime switch, not part of the architecture or the weights): when
    set, training-mode forwards with grad enabled keep only each residual block's input and recompute the block in
    backward. Costs about one extra forward of the stages; needed to fit the big encoders (e.g. ResNet-152 3x SK at
    per-GPU batch 64) into GPU memory. Outputs, gradients and BN running statistics are unchanged.
    """

    activation_checkpointing: bool

    def __init__(self, depth: int, width: float, sk: bool, small_images: bool) -> None:
        super().__init__()
        block = BasicBlock if depth in BASIC_BLOCK_DEPTHS else Bottleneck
        self.depth, self.width, self.sk, self.small_images = depth, width, sk, small_images
        self.stem = make_stem(scaled(64, width), sk, small_images)
        stages, cin = [], scaled(64, width)
        for index, num_blocks in enumerate(STAGE_BLOCKS[depth]):
            filters = scaled(64 * 2**index, width)
            blocks = []
            for b in range(num_blocks):
                stride = 2 if index > 0 and b == 0 else 1
                blocks.append(block(cin, filters, stride, project=b == 0, sk=sk))
                cin = filters * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.out_dim = cin
        self.activation_checkpointing = False
        init_weights(self)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, "images")
        x = self.stem(images)
        # Only a training step that will run backward has activations worth dropping; eval and no_grad run as usual.
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            for stage in self.stages:
                for block in stage:  # per block: memory ~ one block's activations + every block's input
                    x = checkpointed(block, x)
        else:
            x = self.stages(x)
        return x.mean(dim=(2, 3))


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def init_weights(model: nn.Module) -> None:
    """Reference init: truncated-normal fan-in variance scaling (scale 1) for convs; BN gamma 1 (0 for the last
    BN of each residual branch), beta 0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            # TF divides by the std of a unit normal truncated at +-2 so the kept samples have variance 1/fan_in.
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 0.0 if getattr(module, "zero_init", False) else 1.0)
            nn.init.zeros_(module.bias)


def check_image_batch(images: torch.Tensor, name: str) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must be a B x 3 x H x W image batch, got shape {tuple(images.shape)}")


def check_architecture(depth: int, width: float, sk: bool) -> None:
    """The encoders that exist: a known depth, a positive width, Selective Kernels on bottleneck depths only (the
    reference never combines them with basic blocks). Checked by `build_encoder` and by `EncoderConfig`."""
    if depth not in STAGE_BLOCKS:
        raise ValueError(f"depth must be one of {', '.join(map(str, STAGE_BLOCKS))}, got {depth!r}")
    if not isinstance(width, int | float) or isinstance(width, bool) or not width > 0:
        raise ValueError(f"width must be a number > 0 (e.g. 0.25, 1, 2, 3), got {width!r}")
    if sk and depth in BASIC_BLOCK_DEPTHS:
        bottlenecks = ", ".join(str(d) for d in STAGE_BLOCKS if d not in BASIC_BLOCK_DEPTHS)
        raise ValueError(
            f"sk must be false for depth {depth} (basic blocks); Selective Kernels need a bottleneck depth "
            f"({bottlenecks})"
        )


def build_encoder(depth: int, width: float = 1, sk: bool = False, small_images: bool = False) -> ResNet:
    """Build a SimCLRv2 encoder.

    Args:
        depth: 18 or 34 (basic blocks), 50, 101, 152 or 200 (bottleneck blocks).
        width: channel multiplier > 0; integers as in the paper (1, 2, 3), fractions (e.g. 0.25) for small models.
        sk: Selective Kernels plus the ResNet-D stem and shortcut (bottleneck depths only, as in the reference).
        small_images: the 3x3 stride-1 "CIFAR stem" without max-pool, for images of 32 px or less.
    """
    check_architecture(depth, width, sk)
    return ResNet(depth, width, sk, small_images)
