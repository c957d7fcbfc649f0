"""The Accelerator every stage runs under: precision, trackers, seeding and the fast CUDA settings."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, set_seed


def make_accelerator(out_dir: Path, seed: int, mixed_precision: str = "no", tensorboard: bool = False) -> Accelerator:
    if tensorboard and not is_tensorboard_available():
        raise ValueError(
            "tensorboard=true needs the tensorboard package: pip install 'simclrv2-pipeline[tensorboard]' "
            "(or set tensorboard to false)"
        )
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with="tensorboard" if tensorboard else None,
        project_dir=str(out_dir),
    )
    set_seed(seed)
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution kernels once
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on tensor cores
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return accelerator


def close_trackers(accelerator: Accelerator) -> None:
    if accelerator.trackers:
        accelerator.end_training()
