"""Learning-rate scaling with batch size and the per-step warmup + cosine schedule
(docs/simclrv2.md#optimiser-and-schedule)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch.optim.lr_scheduler import LambdaLR

LrScaling = Literal["linear", "sqrt"]


def scale_learning_rate(base_lr: float, batch_size: int, scaling: LrScaling) -> float:
    """`linear`: base_lr * batch / 256 (SimCLR v1: 0.3). `sqrt`: base_lr * sqrt(batch) (SimCLR v2: 0.1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if scaling == "linear":
        return base_lr * batch_size / 256
    if scaling == "sqrt":
        return base_lr * math.sqrt(batch_size)
    raise ValueError(f"scaling must be 'linear' or 'sqrt', got {scaling!r}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier at `step`: linear warmup from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """A per-step scheduler (call `.step()` after every optimizer step)."""
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got {warmup_steps=} {total_steps=}"
        )
    return LambdaLR(optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps))
