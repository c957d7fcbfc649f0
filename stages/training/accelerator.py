"""The Accelerator every stage runs under: precision, trackers, seeding and the fast CUDA settings."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, is_tensorboard_available, set_seed

from stages.training.parent_death import stop_with_launcher

# How long a process waits for the others at the rendezvous and in any collective before it fails instead of hanging.
# Generous: rank 0 may write a large checkpoint, or compile, while the others wait at a barrier.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


def make_accelerator(out_dir: Path, seed: int, mixed_precision: str = "no", tensorboard: bool = False) -> Accelerator:
    if tensorboard and not is_tensorboard_available():
        raise ValueError(
            "tensorboard=true needs the tensorboard package: pip install 'simclrv2-pipeline[tensorboard]' "
            "(or set tensorboard to false)"
        )
    stop_with_launcher()  # a worker of `accelerate launch` never outlives it
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        log_with="tensorboard" if tensorboard else None,
        project_dir=str(out_dir),
        kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)],
    )
    set_seed(seed)
    if accelerator.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest convolution kernels once
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls (outside autocast) on tensor cores
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return accelerator


def memory_format(channels_last: bool, accelerator: Accelerator) -> torch.memory_format:
    """channels_last where asked, except on several CPU processes: there DDP over gloo corrupts the heap with
    channels_last parameters (torch 2.14.1: SIGSEGV or "free(): invalid next size" in its broadcast and gradient
    all-reduce), and a CPU gains little from the layout."""
    gloo = accelerator.device.type == "cpu" and accelerator.num_processes > 1
    return torch.channels_last if channels_last and not gloo else torch.contiguous_format


def close_trackers(accelerator: Accelerator) -> None:
    if accelerator.trackers:
        accelerator.end_training()
