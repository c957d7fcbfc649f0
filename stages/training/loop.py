"""The optimisation loop every training stage runs: resume, step, log, guard against NaN, checkpoint.

A stage supplies the model, optimiser, per-step LR scheduler and a `loss_at(model, step)` function that builds the
step's batch and returns its loss (under autocast); everything else is the same for pretrain, finetune and distill.
The loss is read back to the host every `log_every` steps only, since each read-back synchronises the device.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from stages.training.checkpoints import flat_config, latest_checkpoint, resume, save_checkpoint

log = logging.getLogger(__name__)
CURVE_FILE = "loss_curve.csv"
CURVE_FIELDS = ("step", "loss", "lr")

LossAt = Callable[[nn.Module, int], torch.Tensor]  # (prepared model, step) -> loss of that step's batch


class LoopConfig(Protocol):
    checkpoint_every: int
    log_every: int
    tensorboard: bool


@dataclass
class TrainingResult:
    model: nn.Module  # unwrapped, trained
    curve: list[dict]
    total_steps: int
    steps_this_run: int
    seconds: float


def train_steps(
    accelerator: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    total_steps: int,
    loss_at: LossAt,
    config: LoopConfig,
    out_dir: Path,
    tracker: str,
    run_config: dict[str, Any] | None = None,
    compile_model: bool = False,
) -> TrainingResult:
    """Run steps `resumed step ... total_steps - 1`; a checkpoint every `config.checkpoint_every` steps and at the
    end, each written only after the loss was found finite, so a checkpoint is always a good state.
    `compile_model` compiles the prepared model in place: its state-dict keys, and so checkpoints, stay the same."""
    model, optimizer = accelerator.prepare(model, optimizer)
    if compile_model:
        model.compile()
    # The scheduler is stepped by us, not prepared; `run_config` guards against resuming another config's state.
    step = first_step = resume(accelerator, out_dir, scheduler, run_config)
    if config.tensorboard:
        accelerator.init_trackers(tracker, config=flat_config(run_config or {}))
    curve = read_curve(out_dir, up_to=step) if accelerator.is_main_process else []
    loss_sum, window = torch.zeros((), device=accelerator.device), 0
    start = time.perf_counter()
    model.train()  # BN in train mode throughout, as in the reference
    while step < total_steps:
        loss = loss_at(model, step)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum += loss.detach()
        window += 1

        checkpoint_due = step % config.checkpoint_every == 0 or step == total_steps
        if step % config.log_every == 0 or checkpoint_due:
            mean_loss = check_finite(accelerator.reduce(loss_sum, "mean"), step, out_dir) / window
            curve.append({"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0]})
            accelerator.log({"loss": mean_loss, "lr": curve[-1]["lr"]}, step=step)
            log.info("%s step %d/%d loss %.4f", tracker, step, total_steps, mean_loss)
            loss_sum.zero_()
            window = 0
        if checkpoint_due:
            # The curve first: a crash between the two leaves a curve ahead of the checkpoint, which resuming cuts
            # (`read_curve`), never one behind it, which would lose the rows since the previous checkpoint.
            if accelerator.is_main_process:
                write_curve(out_dir, curve)
            save_checkpoint(accelerator, out_dir, step, scheduler, run_config)
    seconds = time.perf_counter() - start
    return TrainingResult(accelerator.unwrap_model(model), curve, total_steps, total_steps - first_step, seconds)


def read_curve(out_dir: Path, up_to: int) -> list[dict]:
    """The loss curve written so far, cut at the resumed step (rows after the last checkpoint are redone)."""
    path = out_dir / CURVE_FILE
    if not path.exists():
        return []
    with path.open() as f:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    return [dict(row, step=int(row["step"])) for row in rows if row["step"] <= up_to]


def write_curve(out_dir: Path, curve: list[dict]) -> None:
    path = out_dir / CURVE_FILE
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(curve)
    partial.replace(path)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or inf; the last good checkpoint is kept."""


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
