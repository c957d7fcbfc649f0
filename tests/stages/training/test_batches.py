"""Deterministic batches and augmentation randomness (stages/training/batches.py): functions of (seed, step), the
same for N processes as for one."""

import pytest
import torch

from stages.data.augment import CropFlipAugment
from stages.training.batches import check_batch_size, local_batch, step_generator

CPU = torch.device("cpu")


def test_the_batches_of_an_epoch_are_disjoint_and_full():
    steps_per_epoch = 50 // 8
    rows = torch.cat([local_batch(50, 8, step, seed=3, rank=0, world=1) for step in range(steps_per_epoch)])
    assert len(rows) == 48 and len(set(rows.tolist())) == 48  # drop_last: 2 rows wait for another epoch


def test_a_batch_is_a_function_of_seed_and_step_only():
    assert torch.equal(local_batch(50, 8, 13, 3, 0, 1), local_batch(50, 8, 13, 3, 0, 1))
    assert not torch.equal(local_batch(50, 8, 13, 3, 0, 1), local_batch(50, 8, 13, 4, 0, 1))
    assert not torch.equal(local_batch(50, 8, 0, 3, 0, 1), local_batch(50, 8, 6, 3, 0, 1))  # next epoch, new order


@pytest.mark.parametrize("world", [2, 4])
def test_processes_share_the_global_batch_of_one_process(world):
    for step in (0, 5, 11):
        whole = local_batch(50, 8, step, 1, 0, 1)
        shares = [local_batch(50, 8, step, 1, rank, world) for rank in range(world)]
        assert torch.equal(torch.cat(shares), whole)


def test_processes_draw_the_augmentations_of_one_process_for_their_rows():
    images = torch.randint(0, 256, (8, 3, 12, 12), dtype=torch.uint8)
    augment = CropFlipAugment(8)
    whole = augment(images, step_generator(0, 7, 0, 1, 8, CPU))
    halves = [augment(images[rank * 4 : (rank + 1) * 4], step_generator(0, 7, rank, 2, 8, CPU)) for rank in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)
    assert not torch.equal(augment(images, step_generator(0, 8, 0, 1, 8, CPU)), whole)  # another step, other draws


def test_streams_of_one_step_are_independent():
    first = torch.rand(4, generator=step_generator(0, 7, 0, 1, 4, CPU).generator)
    second = torch.rand(4, generator=step_generator(0, 7, 0, 1, 4, CPU, stream=1).generator)
    assert not torch.equal(first, second)


@pytest.mark.parametrize(
    ("batch", "examples", "world", "message"),
    [
        (64, 40, 1, r"batch_size=64 is larger than the dataset \(40 examples\): lower batch_size to at most 40"),
        (10, 40, 4, r"batch_size=10 must be divisible by the number of processes \(4\)"),
    ],
)
def test_a_batch_that_cannot_be_formed_is_named_with_the_fix(batch, examples, world, message):
    with pytest.raises(ValueError, match=message):
        check_batch_size(batch, examples, world)
    check_batch_size(40, 40, 4)  # the whole dataset, evenly shared, is fine
