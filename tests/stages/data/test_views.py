"""The two sources of a pretraining step's views (stages/data/views.py): float views of the step's images, the
same for a step whatever came before, sharded over processes like one process's batch, and a whole training step on
either source without a host synchronisation."""

import numpy as np
import pytest
import torch

from stages.data.augment import SimCLRAugment
from stages.data.crop_loader import CropBatches, open_image
from stages.data.decoding import DEFAULT_MAX_IMAGE_PIXELS as MAX_PIXELS
from stages.data.decoding import to_rgb
from stages.data.sources import DataConfig, open_train_rows
from stages.data.views import InMemoryViews, StreamedViews
from stages.losses.nt_xent import nt_xent
from stages.models.architecture import EncoderConfig, build_pretrain_model
from stages.optim.lars import LARS, lars_param_groups
from tests.stages.host_sync import HostSyncRecorder

SIZE, BATCH = 16, 32
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def rows():
    return open_train_rows(DataConfig())


@pytest.fixture(scope="module")
def images(digits) -> torch.Tensor:
    return digits[0].images


def augment() -> SimCLRAugment:
    return SimCLRAugment(SIZE, color_strength=0.5, blur=True)


def streamed(rows, rank: int = 0, world: int = 1, workers: int = 0, seed: int = 0) -> StreamedViews:
    return StreamedViews(CropBatches(rows, SIZE, BATCH, seed, rank, world), augment(), workers, CPU)


def check_views(views: torch.Tensor) -> None:
    assert views.shape == (2 * BATCH, 3, SIZE, SIZE) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    assert not torch.equal(views[:BATCH], views[BATCH:])  # two different views of each image


def check_shards_are_the_whole_batch(whole: torch.Tensor, shards: list[torch.Tensor]) -> None:
    """Each process holds its rows' first views, then their second views."""
    half = BATCH // 2
    assert all(shard.shape == (BATCH, 3, SIZE, SIZE) for shard in shards)
    assert torch.equal(whole[:BATCH], torch.cat([shards[0][:half], shards[1][:half]]))
    assert torch.equal(whole[BATCH:], torch.cat([shards[0][half:], shards[1][half:]]))


def test_the_two_sources_read_the_same_training_images(digits, rows):
    train, _ = digits
    assert len(rows) == len(train) == 1437
    for row in (0, 1, 700, len(rows) - 1):
        decoded = np.asarray(to_rgb(open_image(rows.value(row), MAX_PIXELS)))
        assert np.array_equal(decoded, train.images[row].permute(1, 2, 0).numpy())


# --- in memory -----------------------------------------------------------------------------------------------------


def test_in_memory_views_are_float_and_the_same_for_a_step(images):
    views_at = InMemoryViews(images, augment(), BATCH, seed=0)
    assert views_at.num_images == 1437
    views = views_at(3, total_steps=10)
    check_views(views)
    assert torch.equal(views, InMemoryViews(images, augment(), BATCH, seed=0)(3, 10))
    assert not torch.equal(views, views_at(4, 10))
    assert not torch.equal(views, InMemoryViews(images, augment(), BATCH, seed=1)(3, 10))


def test_in_memory_shards_together_are_the_one_process_views(images):
    whole = InMemoryViews(images, augment(), BATCH, seed=0)(50, 100)
    shards = [InMemoryViews(images, augment(), BATCH, seed=0, rank=rank, world=2)(50, 100) for rank in (0, 1)]
    check_shards_are_the_whole_batch(whole, shards)


# --- streamed ------------------------------------------------------------------------------------------------------


def test_streamed_views_are_float_and_the_same_for_a_step(rows):
    views_at = streamed(rows)
    assert views_at.num_images == 1437
    views = views_at(3, total_steps=10)
    check_views(views)
    assert torch.equal(views, streamed(rows)(3, 10))  # a run resumed at step 3 sees the same views
    assert not torch.equal(views, views_at(4, 10))
    assert not torch.equal(views, streamed(rows, seed=1)(3, 10))


def test_streamed_shards_together_are_the_one_process_views(rows):
    whole = streamed(rows)(50, 100)
    shards = [streamed(rows, rank, world=2)(50, 100) for rank in (0, 1)]
    check_shards_are_the_whole_batch(whole, shards)


# --- no host synchronisation ---------------------------------------------------------------------------------------


def training_step_syncs(views_at, step: int) -> list[str]:
    """The ops of one full pretraining step (views, forward, NT-Xent, backward, LARS) that would make a GPU's host
    wait for the device."""
    torch.manual_seed(0)
    model = build_pretrain_model(EncoderConfig(depth=18, width=0.125, small_images=True))
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = LARS(lars_param_groups(model, weight_decay=1e-4), lr=0.1)
    with HostSyncRecorder() as recorder:
        views = views_at(step, 10).contiguous(memory_format=torch.channels_last)
        z1, z2 = model(views).chunk(2)
        loss = nt_xent(z1, z2, temperature=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # the step did run
    return recorder.syncs


class ReadsBackInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad.sum().item()
        return grad * 2


def test_the_recorder_catches_read_backs_in_forward_and_backward():
    with HostSyncRecorder() as recorder:
        loss = torch.ones(3).sum()
        loss.item()
        if loss > 0:
            pass
    assert recorder.syncs == ["aten._local_scalar_dense.default"] * 2

    x = torch.ones(3, requires_grad=True)
    with HostSyncRecorder() as recorder:
        loss = ReadsBackInBackward.apply(x).sum()
        assert recorder.syncs == []
        loss.backward()  # the autograd engine's ops are recorded too, so a training step's backward is checked
    assert recorder.syncs == ["aten._local_scalar_dense.default"]


def test_an_in_memory_training_step_never_waits_for_the_device(images, one_thread):
    assert training_step_syncs(InMemoryViews(images, augment(), BATCH, seed=0), step=2) == []


def test_a_streamed_training_step_never_waits_for_the_device(rows, one_thread):
    # Decoding and cropping run in a worker process on the CPU, away from the device: started before recording,
    # so what is recorded is the step's own work (the copy to the device, flip, colour, model, loss, optimiser).
    views_at = streamed(rows, workers=1)
    views_at(1, 10)
    assert training_step_syncs(views_at, step=2) == []
