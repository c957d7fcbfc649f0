"""Stage `pretrain`: SimCLRv2 contrastive pretraining on every training image (labels unused).

    python -m stages.pretrain --out runs/pretrain --epochs 20
    accelerate launch --num_processes 8 -m stages.pretrain --out runs/pretrain --data.source imagefolder:/data/train

Writes `model.safetensors` (encoder + projection head, architecture in the metadata: see stages/models/weights.py),
`loss_curve.csv` and `metrics.json` to `--out`; resumable state goes to `--out/checkpoints/` and a rerun continues
from it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge, Gt
from pydantic import StrictBool, StrictFloat, StrictInt
from torch import nn

from stages.config_schema import SPEED_ONLY, config_dataclass
from stages.data.augment import SimCLRAugment
from stages.data.crop_loader import CropBatches
from stages.data.sources import DataConfig, load_train
from stages.data.stored_images import StoredImages
from stages.data.views import InMemoryViews, PairedViews, StreamedViews
from stages.losses.nt_xent import nt_xent
from stages.models.architecture import EncoderConfig, build_pretrain_model
from stages.models.weights import WEIGHTS_FILE, save_pretrained
from stages.optim.lars import LARS, lars_param_groups
from stages.optim.schedules import scale_learning_rate, warmup_cosine_scheduler
from stages.training.accelerator import make_accelerator, memory_format
from stages.training.batches import check_batch_size
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage
from stages.training.global_batchnorm import global_batchnorm
from stages.training.loop import train_steps

log = logging.getLogger(__name__)


@config_dataclass
class PretrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    image_size: Annotated[StrictInt, Ge(1)] = 32
    """side of the augmented views, in pixels"""
    batch_size: Annotated[StrictInt, Ge(1)] = 256
    """global: images per step over all processes (two views each)"""
    epochs: Annotated[StrictFloat, Gt(0)] = 10.0
    """passes over the training images"""
    base_lr: Annotated[StrictFloat, Gt(0)] = 0.1
    """learning rate before scaling by the batch size"""
    lr_scaling: Literal["sqrt", "linear"] = "sqrt"
    """lr = base_lr * sqrt(batch_size) (SimCLRv2), or base_lr * batch_size / 256"""
    weight_decay: Annotated[StrictFloat, Ge(0)] = 1e-4
    """LARS weight decay (not on BN parameters and biases)"""
    warmup_epochs: Annotated[StrictFloat, Ge(0)] = 0.5
    """epochs of linear learning-rate warm-up before the cosine decay"""
    temperature: Annotated[StrictFloat, Gt(0)] = 0.5
    """NT-Xent temperature tau"""
    color_strength: Annotated[StrictFloat, Ge(0)] = 0.5
    """strength of the colour distortion (1.0 on ImageNet)"""
    blur: StrictBool = False
    """Gaussian blur on the views (on for ImageNet)"""
    seed: StrictInt = 0
    """seed of the initial weights, the batch order and the augmentations"""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """autocast precision; bf16 on GPUs"""
    channels_last: Annotated[StrictBool, SPEED_ONLY] = True
    """NHWC activations on a GPU: the layout tensor cores want (the CPU keeps NCHW)"""
    compile: Annotated[StrictBool, SPEED_ONLY] = False
    """torch.compile the model (inductor; the first steps are slow while it compiles)"""
    activation_checkpointing: Annotated[StrictBool, SPEED_ONLY] = False
    """recompute each residual block in backward: less memory, about 1/3 more compute"""
    checkpoint_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 100
    """optimiser steps between resumable states"""
    log_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 10
    """steps between loss read-backs (each one syncs the device)"""
    tensorboard: Annotated[StrictBool, SPEED_ONLY] = False
    """log the loss and learning rate to TensorBoard under --out"""


def run(config: PretrainConfig, inputs: dict[str, Path] | None, out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    accelerator = make_accelerator(out_dir, config.seed, config.mixed_precision, config.tensorboard)
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    views_at = pretraining_views(config, rank, world, device)
    num_images = views_at.num_images
    check_batch_size(config.batch_size, num_images, world)

    model = global_batchnorm(build_pretrain_model(config.model), accelerator)
    model.encoder.activation_checkpointing = config.activation_checkpointing
    layout = memory_format(config.channels_last, accelerator)
    model = model.to(memory_format=layout)
    lr = scale_learning_rate(config.base_lr, config.batch_size, config.lr_scaling)
    optimizer = LARS(lars_param_groups(model, config.weight_decay), lr=lr)
    steps_per_epoch = num_images // config.batch_size
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps, total_steps)

    def loss_at(model: nn.Module, step: int) -> torch.Tensor:
        views = views_at(step, total_steps).contiguous(memory_format=layout)  # both views, one forward
        with accelerator.autocast():
            z1, z2 = model(views).chunk(2)
        return nt_xent(z1, z2, config.temperature)

    result = train_steps(
        accelerator,
        model,
        optimizer,
        scheduler,
        total_steps,
        loss_at,
        config,
        out_dir,
        "pretrain",
        asdict(config),
        compile_model=config.compile,
    )
    metrics = {
        "final_loss": result.curve[-1]["loss"] if result.curve else None,
        "steps": total_steps,
        "epochs": config.epochs,
        "num_images": num_images,
        "global_batch": config.batch_size,
        "processes": world,
        "seconds_this_run": round(result.seconds, 3),
        "views_per_second": round(2 * config.batch_size * result.steps_this_run / max(result.seconds, 1e-9), 2),
    }
    return finish_stage(
        accelerator, out_dir, metrics, lambda: save_pretrained(result.model, out_dir / WEIGHTS_FILE, config.model)
    )


def pretraining_views(config: PretrainConfig, rank: int, world: int, device: torch.device) -> PairedViews:
    """Where each step's two views come from: images decoded once and kept on the device, or loader workers."""
    augment = SimCLRAugment(config.image_size, config.color_strength, config.blur)
    images = load_train(config.data).images  # every training image, labeled or not
    if isinstance(images, StoredImages):  # streamed (data.in_memory, stages/data/memory_rule.py)
        crops = CropBatches(images, config.image_size, config.batch_size, config.seed, rank, world)
        return StreamedViews(crops, augment, images.workers, device)
    return InMemoryViews(images.to(device), augment, config.batch_size, config.seed, rank, world)


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args("stages.pretrain", PretrainConfig, __doc__, argv)
    run_and_print("stages.pretrain", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
