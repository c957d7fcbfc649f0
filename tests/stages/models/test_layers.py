"""The encoder's layers with TF padding conventions (stages/models/layers.py)."""

import torch

from stages.models.layers import AvgPoolShortcut, TFSameMaxPool


def test_tf_same_max_pool_pads_bottom_right_only():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    # TF SAME on 4x4, k3 s2: windows start at rows/cols 0 and 2; the second window runs into the bottom/right pad.
    assert TFSameMaxPool()(x).flatten().tolist() == [10.0, 11.0, 14.0, 15.0]


def test_stride_one_avg_pool_shortcut_does_not_count_padding():
    x = torch.arange(9.0).view(1, 1, 3, 3)
    out = AvgPoolShortcut(1)(x)
    assert out[0, 0, 0, 0] == (0 + 1 + 3 + 4) / 4
    assert out[0, 0, 2, 2] == 8  # the corner averages only itself
    assert out[0, 0, 0, 2] == (2 + 5) / 2
    assert AvgPoolShortcut(2)(torch.ones(1, 1, 4, 4)).shape[-1] == 2
