"""The pretrain stage on real digits: it learns, survives SIGKILL, stops on NaN, and runs on two processes."""

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

import stages.pretrain as pretrain
from stages.data.sources import DataConfig
from stages.models import resnet
from stages.models.activation_checkpointing import checkpointed
from stages.models.architecture import EncoderConfig
from stages.pretrain import PretrainConfig
from stages.training.checkpoints import latest_checkpoint
from stages.training.loop import NonFiniteLossError

TINY = ["--model.depth", "18", "--model.width", "0.125", "--image-size", "16", "--batch-size", "64"]
ROOT = Path(__file__).resolve().parents[2]


def tiny_config(**overrides) -> PretrainConfig:
    fields = {
        "model": EncoderConfig(depth=18, width=0.125),
        "image_size": 16,
        "batch_size": 64,
        "epochs": 0.5,
        "checkpoint_every": 5,
        "log_every": 1,
    }
    return PretrainConfig(**{**fields, **overrides})


def stage_command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "stages.pretrain", "--out", str(out), *TINY, *extra]


def stage_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_pretrain_writes_weights_curve_and_metrics_and_the_loss_falls(tmp_path):
    metrics = pretrain.run(tiny_config(epochs=2.0, checkpoint_every=100, log_every=5), None, tmp_path)
    assert metrics["steps"] == 2 * (1437 // 64)
    assert (tmp_path / "model.safetensors").exists()
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        architecture = json.loads(f.metadata()["architecture"])
        assert architecture["depth"] == 18 and architecture["width"] == 0.125
    assert any(key.startswith("head.") for key in load_file(tmp_path / "model.safetensors"))
    curve = (tmp_path / "loss_curve.csv").read_text().splitlines()
    first, last = float(curve[1].split(",")[1]), float(curve[-1].split(",")[1])
    assert last < first - 0.2, (first, last)
    assert json.loads((tmp_path / "metrics.json").read_text())["final_loss"] == pytest.approx(last)


@pytest.mark.slow
def test_sigkill_then_rerun_finishes_like_an_uninterrupted_run(tmp_path):
    steps = ["--epochs", "1.0", "--checkpoint-every", "4", "--log-every", "2"]
    subprocess.run(stage_command(tmp_path / "straight", *steps), check=True, env=stage_env(), capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(stage_command(killed, *steps), env=stage_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while latest_checkpoint(killed) is None or latest_checkpoint(killed).name < "step-00000008":
        assert process.poll() is None, "the stage finished before it could be killed: make it longer"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(stage_command(killed, *steps), check=True, env=stage_env(), capture_output=True, text=True)
    assert "resumed from" in resumed.stderr
    # Step and scheduler state travel as JSON, not as Accelerate's pickled custom objects.
    checkpoint = latest_checkpoint(killed)
    assert json.loads((checkpoint / "progress.json").read_text())["step"] == int(checkpoint.name.removeprefix("step-"))
    assert not list(checkpoint.glob("custom_checkpoint_*"))
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    again = json.loads((killed / "metrics.json").read_text())
    assert again["final_loss"] == pytest.approx(straight["final_loss"], abs=1e-6)
    assert (killed / "loss_curve.csv").read_text() == (tmp_path / "straight" / "loss_curve.csv").read_text()


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(tmp_path, monkeypatch):
    real_loss, calls = pretrain.nt_xent, []

    def loss_that_breaks_at_step_7(z1, z2, temperature):
        calls.append(1)
        loss = real_loss(z1, z2, temperature)
        return loss * float("nan") if len(calls) >= 7 else loss

    monkeypatch.setattr(pretrain, "nt_xent", loss_that_breaks_at_step_7)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan by step 7.*step-00000005"):
        pretrain.run(tiny_config(checkpoint_every=5, log_every=1), None, tmp_path)
    assert latest_checkpoint(tmp_path).name == "step-00000005"
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "metrics.json").exists()


def test_batch_larger_than_the_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="batch_size=5000 is larger than the dataset"):
        pretrain.run(tiny_config(batch_size=5000), None, tmp_path)
    assert not any(tmp_path.iterdir())


def test_help_lists_the_config_flags_with_their_help_text_and_default():
    env = {**stage_env(), "COLUMNS": "200"}  # one line per flag
    result = subprocess.run(
        [sys.executable, "-m", "stages.pretrain", "--help"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--out", "--data.source", "--model.sk", "--batch-size", "--temperature", "--mixed-precision"):
        assert flag in result.stdout
    assert "--temperature FLOAT NT-Xent temperature tau (default: 0.5)" in " ".join(result.stdout.split())
    assert "--blur, --no-blur" in result.stdout and "--model.sk, --model.no-sk" in result.stdout


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # NCHW in both: on CPU a single process's channels_last BN takes another kernel (another summation order) than
    # the all-reduce BN of two processes, which this lr amplifies to 4e-4 by step 4 and would hide what is tested.
    steps = ["--epochs", "0.2", "--checkpoint-every", "100", "--log-every", "1", "--no-channels-last"]
    checkpointing = ["--activation-checkpointing"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    env = {**stage_env(), "ACCELERATE_USE_CPU": "1"}
    # The two processes also recompute their blocks in backward (activation checkpointing): the recomputed global
    # BN all-reduces again inside backward, and the losses must still be those of one plain process.
    two = subprocess.run(
        [*launch, "-m", "stages.pretrain", "--out", str(tmp_path / "two"), *TINY, *steps, *checkpointing],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    subprocess.run(stage_command(tmp_path / "one", *steps), check=True, env=stage_env(), capture_output=True)

    two_metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two_metrics["processes"] == 2
    curves = [(tmp_path / run / "loss_curve.csv").read_text().splitlines()[1:] for run in ("one", "two")]
    losses = [[float(line.split(",")[1]) for line in curve] for curve in curves]
    assert len(losses[0]) == len(losses[1]) >= 4
    # Same batches, same augmentations (drawn for the global batch), BN over the global batch, negatives from both
    # processes: equal up to float32 summation order (3e-5 measured). Per-process BN alone moved it by 0.02-0.23 in
    # these four steps; negatives from one process only by about 2 log(127 / 63) = 1.4.
    assert losses[1] == pytest.approx(losses[0], abs=1e-4)


def test_a_checkpoint_of_another_config_is_refused_and_kept(tmp_path):
    pretrain.run(
        tiny_config(epochs=0.1, checkpoint_every=1, model=EncoderConfig(depth=18, width=0.0625)), None, tmp_path
    )
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=r"another config \(model.width 0.0625 -> 0.125\).*new output directory"):
        pretrain.run(tiny_config(epochs=0.1, checkpoint_every=1), None, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


def test_the_command_reports_bad_input_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as status:
        pretrain.main(["--out", str(tmp_path / "out"), *TINY[:-1], "5000"])
    assert status.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines()[-1] == (
        "stages.pretrain: error: batch_size=5000 is larger than the dataset (1437 examples): lower batch_size to at "
        "most 1437"
    )
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


# --- the streamed data path and the speed/memory switches ----------------------------------------------------------


def curve_losses(out: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in (out / "loss_curve.csv").read_text().splitlines()[1:]]


@pytest.mark.slow  # two runs with loader workers: ~2 s warm, ~6 s as the first run of a process
def test_streamed_pretraining_writes_its_outputs_and_resumes_like_an_uninterrupted_run(tmp_path, caplog):
    config = tiny_config(data=DataConfig(in_memory=False, loader_workers=2), epochs=0.2, checkpoint_every=2)
    metrics = pretrain.run(config, None, tmp_path)
    assert metrics["steps"] == 4 and metrics["num_images"] == 1437
    losses = curve_losses(tmp_path)
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert json.loads((tmp_path / "metrics.json").read_text())["final_loss"] == pytest.approx(losses[-1])
    assert any(key.startswith("head.") for key in load_file(tmp_path / "model.safetensors"))

    # Back to the state a SIGKILL after the step-2 checkpoint leaves: no later checkpoint, curve up to step 2, no
    # final outputs. The cheap stand-in for test_sigkill_then_rerun_finishes_like_an_uninterrupted_run.
    curve = (tmp_path / "loss_curve.csv").read_text()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-00000002", "step-00000004"]
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000004")
    (tmp_path / "loss_curve.csv").write_text("".join(curve.splitlines(keepends=True)[:3]))
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "model.safetensors").unlink()

    # Another number of loader workers: they only decide who decodes, not what.
    with caplog.at_level(logging.INFO, logger="stages.training.checkpoints"):
        again = pretrain.run(replace(config, data=replace(config.data, loader_workers=1)), None, tmp_path)
    assert "step-00000002 at step 2" in caplog.text
    assert (tmp_path / "loss_curve.csv").read_text() == curve
    assert again["final_loss"] == metrics["final_loss"]
    assert (tmp_path / "model.safetensors").exists()


@pytest.fixture(scope="module")
def reference_losses(tmp_path_factory) -> list[float]:
    """Four steps of the tiny run with the defaults: channels_last, activations stored."""
    out = tmp_path_factory.mktemp("reference")
    pretrain.run(tiny_config(epochs=0.2), None, out)
    return curve_losses(out)


def test_channels_first_trains_like_channels_last(tmp_path, reference_losses):
    pretrain.run(tiny_config(epochs=0.2, channels_last=False), None, tmp_path)
    losses = curve_losses(tmp_path)
    assert len(losses) == len(reference_losses) == 4
    # Same seed, same batches, same weights at step 1: only the float summation order differs. Measured 5e-6 at
    # step 1; by step 4 (LR warmed up to 0.8) 4e-4 on two threads and 3e-3 on one, so the later steps get 2e-2.
    assert losses[0] == pytest.approx(reference_losses[0], abs=1e-4)
    assert losses == pytest.approx(reference_losses, abs=2e-2)


def test_activation_checkpointing_trains_like_storing_activations(tmp_path, reference_losses, monkeypatch):
    calls = []

    def counted(block, x):
        calls.append(block)
        return checkpointed(block, x)

    monkeypatch.setattr(resnet, "checkpointed", counted)
    pretrain.run(tiny_config(epochs=0.2, activation_checkpointing=True), None, tmp_path)
    assert len(calls) == 4 * 8  # every residual block of ResNet-18, every step
    # The same ops, recomputed: equal (bit for bit when measured).
    assert curve_losses(tmp_path) == pytest.approx(reference_losses, abs=1e-4)


def test_resuming_with_other_workers_or_checkpointing_is_allowed_but_not_another_data_path(tmp_path, caplog):
    config = tiny_config(data=DataConfig(in_memory=False, loader_workers=1), epochs=0.1, checkpoint_every=1)
    assert pretrain.run(config, None, tmp_path)["steps"] == 2
    shutil.rmtree(latest_checkpoint(tmp_path))  # step 1 is left to resume from

    changed = replace(config, data=replace(config.data, loader_workers=2), activation_checkpointing=True)
    with caplog.at_level(logging.INFO, logger="stages.training.checkpoints"):
        pretrain.run(changed, None, tmp_path)
    assert "step-00000001 at step 1" in caplog.text
    assert latest_checkpoint(tmp_path).name == "step-00000002"

    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    with pytest.raises(ValueError, match=r"another config \(data.in_memory False -> True\)"):
        pretrain.run(replace(changed, data=replace(changed.data, in_memory=True)), None, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before


@pytest.mark.slow
def test_compiled_pretraining_trains_and_keeps_the_keys_of_an_uncompiled_model(tmp_path, one_thread):
    """compile=True compiles in place: weights and checkpoints keep plain keys (no `_orig_mod.`), load into an
    uncompiled model, and a rerun resumes from them. About a minute of inductor compiling on 2 CPU cores."""
    config = tiny_config(compile=True, epochs=0.2, checkpoint_every=2)
    metrics = pretrain.run(config, None, tmp_path)
    assert math.isfinite(metrics["final_loss"])

    plain = pretrain.build_pretrain_model(config.model).state_dict().keys()
    assert load_file(tmp_path / pretrain.WEIGHTS_FILE).keys() == plain
    assert load_file(latest_checkpoint(tmp_path) / "model.safetensors").keys() == plain
    assert pretrain.run(config, None, tmp_path)["seconds_this_run"] < 5  # resumed at the end: nothing left to do
