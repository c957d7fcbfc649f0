"""The encoder family: exact parameter counts, shapes, the reference's structural details and bad input."""

import math

import pytest
import torch
from torch import nn

from stages import build_encoder
from stages.models.layers import AvgPoolShortcut
from stages.models.resnet import Bottleneck
from stages.models.selective_kernel import SelectiveKernel

# docs/simclrv2.md#encoder: conv weights + BN gamma/beta up to the global pool.
PARAMETER_COUNTS = [
    (50, 1, False, 23_508_032),
    (50, 1, True, 35_215_584),
    (50, 2, False, 93_907_072),
    (50, 2, True, 140_306_048),
    (101, 1, False, 42_500_160),
    (101, 1, True, 64_662_304),
    (101, 2, False, 169_771_136),
    (101, 2, True, 257_132_224),
    (152, 1, False, 58_143_808),
    (152, 1, True, 88_940_896),
    (152, 2, False, 232_253_568),
    (152, 2, True, 353_398_528),
    (152, 3, True, 794_704_160),
]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("depth", "width", "sk", "expected"), PARAMETER_COUNTS)
def test_parameter_counts_are_exact(depth, width, sk, expected):
    with torch.device("meta"):  # the 795M model costs no memory
        encoder = build_encoder(depth, width, sk)
    assert count(encoder) == expected
    assert encoder.out_dim == 2048 * width


def test_no_sk_resnet50_matches_torchvision_without_classifier():
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.resnet50()
        ours = build_encoder(50)
    assert count(ours) == count(reference) - count(reference.fc)


@pytest.mark.parametrize(
    ("depth", "width", "sk", "small", "size", "out_dim"),
    [
        (18, 0.25, False, True, 32, 128),
        (34, 0.5, False, False, 64, 256),
        (50, 0.25, True, False, 64, 512),
        (50, 0.25, True, True, 32, 512),
        (101, 0.125, False, False, 33, 256),  # odd sizes go through every padding path
    ],
)
def test_forward_shapes(depth, width, sk, small, size, out_dim):
    encoder = build_encoder(depth, width, sk, small_images=small)
    features = encoder(torch.rand(2, 3, size, size))
    assert encoder.out_dim == out_dim
    assert features.shape == (2, out_dim)
    assert torch.isfinite(features).all()


def test_sk_enables_resnet_d_stem_and_shortcut():
    with torch.device("meta"):
        plain, sk = build_encoder(50, 1), build_encoder(50, 1, sk=True)
    assert [m.kernel_size for m in plain.stem.modules() if isinstance(m, nn.Conv2d)] == [(7, 7)]
    assert [m.out_channels for m in sk.stem.modules() if isinstance(m, nn.Conv2d)] == [32, 32, 64]
    assert isinstance(sk.stages[1][0].shortcut[0], AvgPoolShortcut)
    assert sum(isinstance(m, SelectiveKernel) for m in sk.modules()) == 16
    assert not any(isinstance(m, SelectiveKernel) for m in plain.modules())


def test_small_image_stem_keeps_resolution():
    encoder = build_encoder(18, 0.25, small_images=True)
    assert len([m for m in encoder.stem.modules() if isinstance(m, nn.Conv2d)]) == 1
    assert encoder.stem(torch.rand(1, 3, 32, 32)).shape[-1] == 32


def test_last_bn_gamma_of_each_residual_branch_is_zero_so_blocks_start_as_identity():
    encoder = build_encoder(50, 0.25, sk=True)
    for block in encoder.modules():
        if isinstance(block, Bottleneck):
            assert torch.all(block.branch[-1].weight == 0)
            assert torch.all(block.branch[0][1].weight == 1)


def test_conv_init_is_truncated_fan_in_variance_scaling():
    torch.manual_seed(0)
    conv = build_encoder(50, 1).stages[3][1].branch[1][0]  # a 3x3 conv with 512 input channels
    fan_in = conv.in_channels * 9
    std = conv.weight.std().item()
    assert math.isclose(std, math.sqrt(1 / fan_in), rel_tol=0.02)
    assert conv.weight.abs().max().item() <= 2 * math.sqrt(1 / fan_in) / 0.8796 + 1e-6


@pytest.mark.parametrize(
    ("kwargs", "culprit"),
    [
        ({"depth": 42}, "depth"),
        ({"depth": 50, "width": 0}, "width"),
        ({"depth": 50, "width": -1}, "width"),
        ({"depth": 18, "sk": True}, "sk"),
        ({"depth": 34, "sk": True}, "sk"),
    ],
)
def test_bad_arguments_name_the_culprit(kwargs, culprit):
    with pytest.raises(ValueError, match=culprit):
        build_encoder(**kwargs)


@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 4, 32, 32)])
def test_image_batch_must_be_b_3_h_w(shape):
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        build_encoder(18, 0.25, small_images=True)(torch.rand(shape))
