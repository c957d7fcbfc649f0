"""Checkpoints, meaning resumable training state: save one crash-safely, resume from the newest.

A checkpoint is Accelerate's `save_state` (model as safetensors, optimiser, RNG) plus our `progress.json` (step,
LR-scheduler state and the stage config): JSON instead of Accelerate's pickled custom objects, which it reloads with
unrestricted pickle. It is written as `step-N.partial` and renamed when complete. A checkpoint written under another
config is refused, naming the changed keys. (Recomputing activations in backward is activation checkpointing:
stages/models/activation_checkpointing.py.)
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch.optim.lr_scheduler import LRScheduler

from stages.config_schema import SPEED_ONLY_FIELDS
from stages.training.files import fsync_path

log = logging.getLogger(__name__)


CHECKPOINT_DIR = "checkpoints"


PARTIAL_SUFFIX = ".partial"


PROGRESS_FILE = "progress.json"


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
        _fsync_tree(partial)  # on disk before the rename says it is complete, even across a power cut
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        fsync_path(root)
        for old in sorted(p for p in root.iterdir() if p.is_dir() and p.suffix != PARTIAL_SUFFIX)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*"), reverse=True):  # files before the directories that list them
        fsync_path(path)
    fsync_path(directory)


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
# The config fields marked SPEED_ONLY (stages/config_schema.py); the set fills as the stage configs are defined, so a
# config's own marks are in it before any of its checkpoints is checked.
RESUMABLE_CHANGES = SPEED_ONLY_FIELDS


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
