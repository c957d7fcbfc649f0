"""Training a classifier on crop + flip views of a split's images (in memory or streamed): what fine-tuning, the
supervised baseline and distillation share. Each supplies only its loss; batches, augmentation, optimiser, schedule,
resume and the NaN guard are the same."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator
from torch import nn

from stages.data.stored_images import StoredImages
from stages.data.views import crop_flip_views
from stages.models.heads import Classifier
from stages.optim.classifier import make_optimizer
from stages.optim.schedules import scale_learning_rate, warmup_cosine_scheduler
from stages.training.global_batchnorm import global_batchnorm
from stages.training.loop import TrainingResult, train_steps


class TrainingConfig(Protocol):
    """The fields the shared classifier training loop reads (FinetuneConfig and DistillConfig have them)."""

    image_size: int
    batch_size: int
    epochs: float
    base_lr: float
    lr_scaling: str
    optimizer: str
    momentum: float
    weight_decay: float
    warmup_epochs: float
    seed: int
    checkpoint_every: int
    log_every: int
    tensorboard: bool


LossOf = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]  # (model, views, batch rows) -> loss


def train_classifier(
    accelerator: Accelerator,
    model: Classifier,
    images: torch.Tensor | StoredImages,
    loss_of: LossOf,
    config: TrainingConfig,
    out_dir: Path,
    tracker: str,
) -> TrainingResult:
    """Train `model` on crop + flip views of `images` (a split's: uint8 in memory, or streamed) with the per-step
    cosine schedule, the resumable checkpoints and the NaN guard of every stage. `loss_of` gets the row indices of
    the batch (on the device) so that it can look up labels or anything else per example."""
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    model = global_batchnorm(model, accelerator)
    lr = scale_learning_rate(config.base_lr, config.batch_size, config.lr_scaling)
    optimizer = make_optimizer(model, config.optimizer, lr, config.momentum, config.weight_decay)
    steps_per_epoch = len(images) // config.batch_size
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps, total_steps)
    views_at = crop_flip_views(images, config.image_size, config.batch_size, config.seed, rank, world, device)

    def loss_at(model: nn.Module, step: int) -> torch.Tensor:
        views, rows = views_at(step, total_steps)
        with accelerator.autocast():
            return loss_of(model, views, rows)

    return train_steps(
        accelerator, model, optimizer, scheduler, total_steps, loss_at, config, out_dir, tracker, asdict(config)
    )
