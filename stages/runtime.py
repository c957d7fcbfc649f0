"""The training runtime every stage shares: Accelerator set-up, deterministic batches, crash-safe checkpoints,
resume, and the non-finite-loss guard.

Determinism without saved data-loader state: the batch order of epoch e is a permutation seeded by (seed, e), and
the augmentation randomness of step s is drawn for the whole global batch from (seed, s), each process keeping its
rows. A run resumed at step s therefore sees exactly the batches and augmentations an uninterrupted run sees, and
N processes see those of one process with the same global batch.

A checkpoint is Accelerate's `save_state` (model as safetensors, optimiser, RNG) plus our `progress.json` (step and
LR-scheduler state): JSON instead of Accelerate's pickled custom objects, which it reloads with unrestricted pickle.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import is_tensorboard_available, set_seed
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from stages.augment import ShardedGenerator
from stages.global_batchnorm import convert_global_batchnorm

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


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


def step_generator(
    seed: int, step: int, rank: int, world: int, global_batch: int, device: torch.device, stream: int = 0
) -> ShardedGenerator:
    """The augmentation randomness of one step: drawn for the whole global batch from (seed, step), this process
    keeping its rows. Independent of how often the run was resumed and of how many processes share the batch.
    `stream` separates independent uses within a step (the loader workers' crops from the device's colours)."""
    generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + step + stream * 2**48)
    return ShardedGenerator(generator, start=rank * (global_batch // world), total=global_batch)


def global_batchnorm(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """Normalise over the global batch when several processes share it, as SimCLR does: torch's SyncBatchNorm on
    CUDA, our all-reduce version elsewhere (SyncBatchNorm is CUDA-only)."""
    if accelerator.num_processes == 1:
        return model
    if accelerator.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_global_batchnorm(model)


def local_batch(num_examples: int, global_batch: int, step: int, seed: int, rank: int, world: int) -> torch.Tensor:
    """Indices of this process's share of the global batch at `step` (drop_last: every batch is full)."""
    epoch, position = divmod(step, num_examples // global_batch)
    batch = epoch_order(num_examples, seed, epoch)[position * global_batch : (position + 1) * global_batch]
    per_process = global_batch // world
    return batch[rank * per_process : (rank + 1) * per_process]


@functools.lru_cache(maxsize=2)
def epoch_order(num_examples: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def check_batch_size(global_batch: int, num_examples: int, world: int, what: str = "batch_size") -> None:
    if global_batch > num_examples:
        raise ValueError(
            f"{what}={global_batch} is larger than the dataset ({num_examples} examples): lower {what} "
            f"to at most {num_examples}"
        )
    if global_batch % world:
        raise ValueError(f"{what}={global_batch} must be divisible by the number of processes ({world})")


def checkpoint_root(out_dir: Path) -> Path:
    return out_dir / CHECKPOINT_DIR


def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete checkpoint; directories still being written carry a `.partial` suffix and are ignored."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return None
    complete = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and p.suffix != PARTIAL_SUFFIX]
    return max(complete, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def save_checkpoint(
    accelerator: Accelerator,
    out_dir: Path,
    step: int,
    scheduler: LRScheduler,
    config: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write the full training state to `step-N.partial`, then rename it to `step-N`: a crash mid-write never
    leaves a directory that looks complete. Older checkpoints beyond `keep` are removed afterwards."""
    root = checkpoint_root(out_dir)
    final = root / f"step-{step:08d}"
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        progress = {"step": step, "scheduler": scheduler.state_dict(), "config": config}
        (partial / PROGRESS_FILE).write_text(json.dumps(progress, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in sorted(p for p in root.iterdir() if p.is_dir() and p.suffix != PARTIAL_SUFFIX)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def resume(
    accelerator: Accelerator, out_dir: Path, scheduler: LRScheduler, config: dict[str, Any] | None = None
) -> int:
    """Load the newest complete checkpoint, if any, and return the step to continue from (0 without one).
    A checkpoint written under another config is refused before anything is loaded or overwritten."""
    checkpoint = latest_checkpoint(out_dir)
    if checkpoint is None:
        return 0
    progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
    check_same_config(progress.get("config"), config, checkpoint)
    accelerator.load_state(str(checkpoint))
    scheduler.load_state_dict(progress["scheduler"])
    log.info("resumed from %s at step %d", checkpoint, progress["step"])
    return int(progress["step"])


# Settings that change how fast or in how much memory a run trains, not what it trains: a run may resume under others.
RESUMABLE_CHANGES = {
    "checkpoint_every",
    "log_every",
    "tensorboard",
    "eval_batch_size",
    "loader_workers",
    "compile",
    "channels_last",
    "activation_checkpointing",
}


def check_same_config(saved: dict[str, Any] | None, current: dict[str, Any] | None, checkpoint: Path) -> None:
    if saved is None or current is None:
        return
    saved, current = flat_config(saved), flat_config(json.loads(json.dumps(current)))  # tuples compare as lists
    changed = sorted(
        key
        for key in saved.keys() | current.keys()
        if key.split(".")[-1] not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    )
    if changed:
        differences = ", ".join(f"{k} {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:5])
        raise ValueError(
            f"{checkpoint} was written by a run with another config ({differences}), so it cannot be resumed: "
            f"use a new output directory for the new config, or delete {checkpoint.parent} to start over"
        )


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat `a.b` keys with scalar values, the form TensorBoard's hparams accept."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


def check_finite(loss_sum: torch.Tensor, step: int, out_dir: Path) -> float:
    """Read a (summed) loss back to the host and stop on NaN or inf. Called every few steps only: each call syncs."""
    value = loss_sum.item()
    if not math.isfinite(value):
        last = latest_checkpoint(out_dir)
        kept = f"the last good state is kept in {last}" if last else "no checkpoint had been written yet"
        raise NonFiniteLossError(
            f"loss became {value} by step {step}; {kept}. Lower the learning rate or check the data, then rerun "
            "(the stage resumes from the last good state)"
        )
    return value


def close_trackers(accelerator: Accelerator) -> None:
    if accelerator.trackers:
        accelerator.end_training()
