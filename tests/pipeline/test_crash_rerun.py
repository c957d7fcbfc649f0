"""Crash and rerun: `simclrv2 run` killed with SIGKILL in pretraining, rerun, killed again in fine-tuning, rerun to
the end, reports the same numbers as a run that was never interrupted.

The real command runs as a subprocess in its own process group; the whole group (the flow, its in-process stages,
Prefect's temporary server) is killed at once, like a machine losing power, so nothing cleans up: no atexit
handler, no `finally`, the experiment lock file and any half-written checkpoint stay behind."""

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from torch import nn

import stages.training.loop as loop
from pipeline.launcher import group_running
from stages.optim.schedules import warmup_cosine_scheduler
from tests.pipeline.conftest import TINY_RUN

SCRIPT = Path(sys.executable).parent / "simclrv2"
EXPERIMENT = "quickstart"
# The tiny run on one budget, with checkpoints early enough to kill after one and long before the stage ends:
# pretraining 11 steps (one epoch) with a checkpoint every 3, fine-tuning 150 steps (the quickstart's) with one
# every 30; the baseline is cut to 60 steps. Checkpoint intervals change how often state is saved, not the result.
CRASH_RUN = [
    *(item for item in TINY_RUN if not item.startswith("budgets")),
    "budgets=[20]",
    "pretrain.epochs=1",
    "pretrain.checkpoint_every=3",
    "finetune.checkpoint_every=30",
    "baseline.steps=60",
    "baseline.checkpoint_every=30",
]
RUN_TIMEOUT = 240  # seconds for one whole run; the test fails rather than hangs
# Report columns that come from the models' predictions (the others: compute cost, from wall time).
REPORT_NUMBERS = ("test_top1", "test_top1_low", "test_top1_high", "test_top5", "difference", "teacher_test_top1")
# Per-stage metrics that the trained weights decide.
STAGE_NUMBERS = ("final_loss", "test_top1", "test_top5", "linear_eval_top1", "knn_top1", "logistic_probe_top1")
PER_EXAMPLE_FILES = ("loss_curve.csv", "test_predictions.csv", "prelabels.csv")


def start(runs: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`simclrv2 run --set ...` in a new session (its own process group), output to `log`."""
    args = [str(SCRIPT), "run"]
    for item in [*CRASH_RUN, f"runs_dir={runs}"]:
        args += ["--set", item]
    with log.open("a") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def finish(process: subprocess.Popen, log: Path) -> str:
    """Wait for a run to end by itself; its output, after checking that it succeeded."""
    try:
        code = process.wait(RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise
    output = log.read_text()
    assert code == 0, output[-4000:]
    return output


def kill_when(process: subprocess.Popen, ready, log: Path, what: str) -> None:
    """Poll until `ready()` holds, then SIGKILL the run's whole process group and wait until none of it runs."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (code {process.returncode}) before {what}:\n{log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            kill_group(process)
            pytest.fail(f"no {what} after {RUN_TIMEOUT} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.02)
    kill_group(process)
    assert process.returncode == -signal.SIGKILL


def kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while group_running(process.pid):  # the Prefect server and any stage process die with the run
        assert time.monotonic() < deadline, f"processes of group {process.pid} survived SIGKILL"
        time.sleep(0.05)


def stage_dir(runs: Path, stage: str) -> Path | None:
    """`runs/<experiment>/<stage>/<fingerprint>`: the one fingerprint directory of a stage, once it exists."""
    found = sorted((runs / EXPERIMENT / stage).glob("*"))
    assert len(found) <= 1, found
    return found[0] if found else None


def checkpoints(runs: Path, stage: str) -> list[str]:
    out = stage_dir(runs, stage)
    return sorted(p.name for p in (out / "checkpoints").glob("step-*") if p.suffix != ".partial") if out else []


def finished(runs: Path, stage: str) -> bool:
    out = stage_dir(runs, stage)
    return out is not None and (out / "manifest.json").exists()


def finished_stages(runs: Path) -> list[str]:
    """`<stage>/<fingerprint>` of every finished stage instance."""
    return sorted(str(p.parent.relative_to(runs / EXPERIMENT)) for p in (runs / EXPERIMENT).glob("*/*/manifest.json"))


def results(runs: Path) -> dict:
    """Everything the trained weights decide: the report's numbers, each stage's metrics, loss curve and predictions
    (the weight files themselves differ in byte order: safetensors writes its metadata in hash order)."""
    with (stage_dir(runs, "report") / "report.csv").open() as f:
        rows = {(row["kind"], row["budget"]): {key: row[key] for key in REPORT_NUMBERS} for row in csv.DictReader(f)}
    found = {"report.csv": rows}
    for path in sorted((runs / EXPERIMENT).glob("*/*/*")):
        name = f"{path.parent.parent.name}/{path.name}"
        if path.name == "metrics.json":
            values = json.loads(path.read_text())
            found[name] = {key: values[key] for key in STAGE_NUMBERS if key in values}
        elif path.name in PER_EXAMPLE_FILES:
            found[name] = path.read_text()
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks the killed process group through /proc")
def test_a_run_killed_in_pretraining_and_in_fine_tuning_ends_with_the_numbers_of_an_uninterrupted_run(tmp_path):
    # One Prefect home for every run: it outlives the killed runs, as a user's would. The root logger at INFO lets
    # the stages' own lines ("resumed from <checkpoint> at step N") through to the console.
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_ROOT_LEVEL": "INFO"}
    crashed, log = tmp_path / "crashed", tmp_path / "crashed.log"

    # 1. Killed in pretraining, after its first checkpoint and before it finished.
    run = start(crashed, env, log)
    kill_when(run, lambda: checkpoints(crashed, "pretrain"), log, "pretraining checkpoint")
    assert not finished(crashed, "pretrain")
    assert (crashed / EXPERIMENT / ".lock").exists()  # left behind by the killed holder
    resumed_at = checkpoints(crashed, "pretrain")[-1]

    # 2. Rerun: pretraining continues from its checkpoint; killed again in fine-tuning.
    before = len(log.read_text())
    run = start(crashed, env, log)
    kill_when(run, lambda: checkpoints(crashed, "finetune-20labels"), log, "fine-tuning checkpoint")
    rerun = log.read_text()[before:]
    assert f"resumed from {stage_dir(crashed, 'pretrain') / 'checkpoints' / resumed_at} at step" in rerun, rerun
    assert finished(crashed, "pretrain") and not finished(crashed, "finetune-20labels")
    resumed_at = checkpoints(crashed, "finetune-20labels")[-1]

    # 3. Rerun to the end: finished stages are skipped, fine-tuning continues from its checkpoint.
    before = len(log.read_text())
    rerun = finish(start(crashed, env, log), log)[before:]
    assert "pretrain is done" in rerun
    assert f"resumed from {stage_dir(crashed, 'finetune-20labels') / 'checkpoints' / resumed_at} at step" in rerun

    # 4. The same config, never interrupted, in another runs directory.
    clean = tmp_path / "clean"
    finish(start(clean, env, tmp_path / "clean.log"), tmp_path / "clean.log")

    assert finished_stages(crashed) == finished_stages(clean)  # the same stage instances (fingerprints)
    got, want = results(crashed), results(clean)
    assert len(want["report.csv"]) == 5 and "finetune-20labels/loss_curve.csv" in want  # what is compared
    for name in want:
        assert got[name] == want[name], name
    assert got.keys() == want.keys()


# --- the loss curve of a crashed stage --------------------------------------------------------------------------


class Crash(BaseException):
    """The process dies here (SIGKILL runs no handler, so nothing may catch it)."""


def train_linear(out_dir: Path, crash_after_checkpoint: int | None = None, monkeypatch=None) -> list[dict]:
    """Ten steps of a linear model with a checkpoint every 2; optionally "killed" right after the checkpoint of
    step `crash_after_checkpoint` was completed. The loss curve on disk at the end."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = warmup_cosine_scheduler(optimizer, 0, 10)
    inputs = torch.randn(10, 8, 4, generator=torch.Generator().manual_seed(1))
    config = type("Config", (), {"checkpoint_every": 2, "log_every": 100, "tensorboard": False})
    if crash_after_checkpoint is not None:
        save = loop.save_checkpoint

        def save_then_die(accelerator, out_dir, step, *args, **kwargs):
            checkpoint = save(accelerator, out_dir, step, *args, **kwargs)
            if step == crash_after_checkpoint:
                raise Crash
            return checkpoint

        monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    loop.train_steps(
        Accelerator(cpu=True),
        model,
        optimizer,
        scheduler,
        10,
        lambda model, step: model(inputs[step]).pow(2).mean(),
        config,
        out_dir,
        "linear",
    )
    return loop.read_curve(out_dir, up_to=10)


def test_a_stage_killed_right_after_a_checkpoint_resumes_with_the_whole_loss_curve(tmp_path, monkeypatch):
    whole = train_linear(tmp_path / "whole")
    with pytest.raises(Crash):
        train_linear(tmp_path / "crashed", crash_after_checkpoint=6, monkeypatch=monkeypatch)
    monkeypatch.undo()
    assert [row["step"] for row in loop.read_curve(tmp_path / "crashed", up_to=10)] == [2, 4, 6]
    assert train_linear(tmp_path / "crashed") == whole  # resumed at step 6, every row there
    assert [row["step"] for row in whole] == [2, 4, 6, 8, 10]
