"""Deterministic batches and augmentation randomness, as functions of (seed, step).

The batch order of epoch e is a permutation seeded by (seed, e), and the augmentation randomness of step s is drawn
for the whole global batch from (seed, s), each process keeping its rows. A run resumed at step s therefore sees
exactly the batches and augmentations an uninterrupted run sees, and N processes see those of one process with the
same global batch. No data-loader state needs saving.
"""

from __future__ import annotations

import functools

import torch

from stages.data.augment import ShardedGenerator

STREAM_OFFSET = 2**31  # far from every step count, and distinct modulo 2**32


def step_generator(
    seed: int, step: int, rank: int, world: int, global_batch: int, device: torch.device, stream: int = 0
) -> ShardedGenerator:
    """The augmentation randomness of one step: drawn for the whole global batch from (seed, step), this process
    keeping its rows. Independent of how often the run was resumed and of how many processes share the batch.
    `stream` separates independent uses within a step (the loader workers' crops from the device's colours). A CPU
    generator keeps only the low 32 bits of its seed, so a stream is an offset of 2**31 there, not of more."""
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step + stream * STREAM_OFFSET)
    return ShardedGenerator(generator, start=rank * (global_batch // world), total=global_batch)


def local_batch(num_examples: int, global_batch: int, step: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Indices of this process's share of the global batch at `step` (drop_last: every batch is full)."""
    epoch, position = divmod(step, num_examples // global_batch)
    batch = epoch_order(num_examples, seed, epoch)[position * global_batch : (position + 1) * global_batch]
    per_process = global_batch // world
    return batch[rank * per_process : (rank + 1) * per_process]


@functools.lru_cache(maxsize=2)
def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def batch_that_fits(global_batch: int, num_examples: int, world: int) -> int:
    """`global_batch`, or at most `num_examples` when they are fewer, kept divisible by the number of processes."""
    return max(world, min(global_batch, num_examples) // world * world)


def check_batch_size(global_batch: int, num_examples: int, world: int, what: str = "batch_size") -> None:
    if global_batch > num_examples:
        raise ValueError(
            f"{what}={global_batch} is larger than the dataset ({num_examples} examples): lower {what} "
            f"to at most {num_examples}"
        )
    if global_batch % world:
        raise ValueError(f"{what}={global_batch} must be divisible by the number of processes ({world})")
