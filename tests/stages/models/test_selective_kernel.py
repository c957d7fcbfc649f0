"""The Selective-Kernel conv (stages/models/selective_kernel.py)."""

import torch

from stages.models.selective_kernel import SelectiveKernel


def test_selective_kernel_mixes_its_two_branches_with_per_channel_softmax():
    torch.manual_seed(0)
    sk = SelectiveKernel(8, 8, stride=1).eval()
    x = torch.rand(2, 8, 6, 6)
    b1, b2 = sk.branches(x).chunk(2, dim=1)
    a1, a2 = sk.attention((b1 + b2).mean(dim=(2, 3), keepdim=True)).chunk(2, dim=1)
    w1 = torch.exp(a1) / (torch.exp(a1) + torch.exp(a2))
    assert torch.allclose(sk(x), w1 * b1 + (1 - w1) * b2, atol=1e-6)
    assert sk.attention[0].out_channels == 32  # max(int(8 * 0.0625), 32)
