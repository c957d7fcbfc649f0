"""GlobalBatchNorm: two gloo processes with half the batch each normalise like one process with the whole batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from stages.training.global_batchnorm import GlobalBatchNorm, convert_global_batchnorm

GLOBAL_BATCH = 8


def _problem() -> tuple[nn.Module, torch.Tensor]:
    """In float64, so that the comparison tests the maths rather than float32 summation order."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 5, bias=False),
        nn.BatchNorm1d(5),
    ).double()
    images = torch.randn(GLOBAL_BATCH, 3, 6, 6, dtype=torch.float64) * 3 + 1  # off-centre: wrong statistics show
    return model, images


def _loss(out: torch.Tensor) -> torch.Tensor:
    return (out * torch.arange(1, out.shape[1] + 1)).square().mean()


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, images = _problem()
        model = convert_global_batchnorm(model)
        ddp = DistributedDataParallel(model)
        share = GLOBAL_BATCH // world
        out = ddp(images[rank * share : (rank + 1) * share])
        _loss(out).backward()
        result = {
            "out": out.detach(),
            "grads": {name: p.grad for name, p in model.named_parameters() if p.grad is not None},
            "buffers": dict(model.named_buffers()),
        }
        torch.save(result, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_normalise_like_one_process_with_the_whole_batch(tmp_path):
    world = 2
    mp.start_processes(_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, start_method="spawn")

    model, images = _problem()
    out = model(images)
    _loss(out).backward()
    results = [torch.load(tmp_path / f"{rank}.pt") for rank in range(world)]

    assert torch.allclose(torch.cat([r["out"] for r in results]), out.detach(), atol=1e-10)
    for result in results:
        for name, param in model.named_parameters():
            assert torch.allclose(result["grads"][name], param.grad, atol=1e-10)
        for name, buffer in model.named_buffers():
            assert torch.allclose(result["buffers"][name].double(), buffer.double(), atol=1e-10), name


def test_without_a_process_group_it_is_plain_batch_norm():
    model, images = _problem()
    expected = model(images)
    converted = convert_global_batchnorm(model)
    assert sum(isinstance(m, GlobalBatchNorm) for m in converted.modules()) == 2
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in converted.modules())
    assert torch.equal(converted(images), expected)


def test_conversion_keeps_parameters_buffers_and_frozen_bias():
    bn = nn.BatchNorm1d(3)
    bn.bias.requires_grad_(False)
    bn.running_mean.fill_(2.0)
    converted = convert_global_batchnorm(nn.Sequential(bn))[0]
    assert converted.weight is bn.weight and converted.bias is bn.bias and not converted.bias.requires_grad
    assert torch.equal(converted.running_mean, torch.full((3,), 2.0))
