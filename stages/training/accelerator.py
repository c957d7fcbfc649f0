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
    """channels_last where asked on a GPU (the layout tensor cores want); NCHW on the CPU. On the CPU, torch 2.14.1's
    channels_last kernels corrupt the heap: "free(): invalid next size" and SIGSEGV in DDP over gloo, and
    "munmap_chunk(): invalid pointer" in the backward of one process once the weights are no longer finite (a
    diverging learning rate), both seen on this project's 2-core CI machine (AVX2)."""
    on_gpu = accelerator.device.type == "cuda"
    return torch.channels_last if channels_last and on_gpu else torch.contiguous_format


def close_trackers(accelerator: Accelerator) -> None:
    if accelerator.trackers:
        accelerator.end_training()
