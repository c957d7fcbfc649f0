"""The straightforward SimCLR baseline of the benchmark (stages/benchmark/torchvision_baseline.py)."""

import math

import pytest
import torch
import torchvision
from torch import nn

from stages.benchmark.torchvision_baseline import (
    BaselineResult,
    TwoViewDataset,
    baseline_views_per_second,
    build_baseline_model,
    simclr_transform,
)


def uint8_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, side, side), dtype=torch.uint8, generator=generator)


@pytest.mark.parametrize("blur", [True, False])
def test_dataset_returns_two_different_float_views_in_unit_range(blur):
    dataset = TwoViewDataset(uint8_images(4, 40), simclr_transform(32, color_strength=0.5, blur=blur))
    assert len(dataset) == 4
    first, second = dataset[2]
    for view in (first, second):
        assert view.dtype == torch.float32
        assert view.shape == (3, 32, 32)
        assert view.min().item() >= 0.0 and view.max().item() <= 1.0
    assert not torch.equal(first, second)


def test_dataset_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        TwoViewDataset(torch.rand(4, 3, 8, 8), simclr_transform(8))


def test_model_replaces_fc_with_the_projection_head(one_thread):
    model = build_baseline_model(torchvision.models.resnet18)
    assert isinstance(model.encoder.fc, nn.Identity)
    assert model.head.in_dim == 512
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 128)


def test_model_needs_a_linear_fc():
    with pytest.raises(ValueError, match="fc"):
        build_baseline_model(lambda: nn.Conv2d(3, 8, 3))


def test_measurement_runs_end_to_end_and_trains(one_thread):
    built: list[nn.Module] = []
    before: dict[str, torch.Tensor] = {}

    def backbone() -> nn.Module:
        network = torchvision.models.resnet18()
        built.append(network)
        before.update({name: p.detach().clone() for name, p in network.named_parameters()})
        return network

    result = baseline_views_per_second(
        uint8_images(200, 32),
        size=32,
        batch=8,
        device=torch.device("cpu"),
        num_workers=2,
        warmup=1,
        repeats=2,
        color_strength=0.5,
        blur=False,
        backbone=backbone,
    )

    assert isinstance(result, BaselineResult)
    for value in (result.views_per_second, result.step_seconds, result.data_only_views_per_second):
        assert math.isfinite(value) and value > 0
    assert result.views_per_second == pytest.approx(2 * 8 / result.step_seconds)
    [network] = built
    changed = [name for name, p in network.named_parameters() if not torch.equal(p, before[name])]
    assert "conv1.weight" in changed


def test_measurement_needs_a_full_batch():
    with pytest.raises(ValueError, match="at least batch"):
        baseline_views_per_second(uint8_images(4, 16), 16, 8, torch.device("cpu"), 1, 0, 1)
