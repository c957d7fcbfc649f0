"""The distill stage on real digits: the student learns to agree with a frozen teacher, the optional label term uses
only the subset's rows, and bad inputs are clear errors."""

import json
import os
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import stages.distill as distill
from stages.distill import DistillConfig, subset_labels
from stages.evaluation.metrics import predictions
from stages.finetune import FinetuneConfig
from stages.finetune import run as run_finetune
from stages.models.architecture import EncoderConfig, build_pretrain_model
from stages.models.weights import load_classifier, save_pretrained
from stages.training.loop import NonFiniteLossError

TINY = EncoderConfig(depth=18, width=0.125)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def teacher(subsets, tmp_path_factory) -> Path:
    """A real teacher: the tiny supervised baseline trained on every digits label for 2 epochs (~50% top-1)."""
    out = tmp_path_factory.mktemp("teacher")
    config = FinetuneConfig(
        model=TINY, image_size=16, batch_size=64, epochs=2.0, base_lr=0.05, optimizer="sgd", checkpoint_every=1000
    )
    run_finetune(config, {"subset": subsets["100pct"]}, out)
    return out


def tiny_config(**overrides) -> DistillConfig:
    fields = {
        "image_size": 16,
        "batch_size": 64,
        "epochs": 0.1,
        "base_lr": 0.05,
        "optimizer": "sgd",
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "checkpoint_every": 1000,
        "log_every": 1,
    }
    return DistillConfig(**{**fields, **overrides})


def test_the_student_learns_to_agree_with_its_frozen_teacher(tmp_path, digits, teacher, monkeypatch):
    _, test = digits
    loaded_teachers = []

    def load_and_keep(path):
        loaded = load_classifier(path)
        loaded_teachers.append(loaded.model)
        return loaded

    monkeypatch.setattr(distill, "load_classifier", load_and_keep)
    metrics = distill.run(tiny_config(epochs=2.0, log_every=11), {"teacher": teacher}, tmp_path)

    # Agreement a constant student (as the zero-initialised one is) could reach: the teacher's most common class.
    teacher_predictions = predictions(loaded_teachers[0], test, image_size=16)
    constant_agreement = float(teacher_predictions.bincount(minlength=10).max()) / len(test)
    assert metrics["test_agreement_with_teacher"] > constant_agreement + 0.2, (metrics, constant_agreement)
    assert metrics["steps"] == 2 * (1437 // 64) and metrics["num_labels_used"] == 0
    curve = [float(line.split(",")[1]) for line in (tmp_path / "loss_curve.csv").read_text().splitlines()[1:]]
    assert curve[-1] < curve[0] - 0.2, curve

    # The teacher never changed, BN running statistics included: it ran frozen, in eval mode.
    for key, value in load_file(teacher / "model.safetensors").items():
        assert torch.equal(loaded_teachers[0].state_dict()[key], value), key

    student = load_classifier(tmp_path)
    assert student.architecture == TINY and student.proj_selector == 0
    assert len(student.model.head_layers) == 0
    assert 0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1


def test_a_student_started_from_the_teacher_begins_where_the_teacher_is(tmp_path, teacher):
    metrics = distill.run(
        tiny_config(student_init="teacher", epochs=0.05, base_lr=1e-6), {"teacher": teacher}, tmp_path
    )
    assert (
        metrics["student_init"] == "teacher" and metrics["test_agreement_with_teacher"] > 0.9
    )  # BN statistics move a little
    student, source = load_classifier(tmp_path), load_classifier(teacher)
    assert student.proj_selector == source.proj_selector and student.architecture == source.architecture
    changed = [
        key
        for key, value in source.model.state_dict().items()
        if value.dtype.is_floating_point and not torch.equal(student.model.state_dict()[key], value)
    ]
    assert changed  # it trained: a copy, not the teacher itself


def test_subset_labels_keep_only_the_subset_rows(digits, subsets):
    train, _ = digits
    labels = subset_labels(train, subsets["10pct"])
    labeled = labels != -1
    assert int(labeled.sum()) == 144
    assert torch.equal(labels[labeled], train.labels[labeled])


def test_main_takes_a_smaller_student_and_the_label_term(tmp_path, teacher, subsets, capsys):
    flags = ["--image-size", "16", "--batch-size", "64", "--epochs", "0.1", "--alpha", "0.5", "--optimizer", "sgd"]
    student = json.dumps({"depth": 18, "width": 0.0625})
    inputs = ["--out", str(tmp_path), "--teacher", str(teacher), "--subset", str(subsets["10pct"])]
    distill.main([*inputs, *flags, "--student", student])
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_labels_used"] == 144 and printed["alpha"] == 0.5
    assert printed["student"] == asdict(EncoderConfig(depth=18, width=0.0625))
    assert load_classifier(tmp_path).architecture.width == 0.0625


def test_nan_loss_stops_with_a_clear_error(tmp_path, teacher, monkeypatch):
    real_loss, calls = distill.distillation_loss, []

    def loss_that_breaks_at_step_3(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(distill, "distillation_loss", loss_that_breaks_at_step_3)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan by step 3.*step-00000002"):
        distill.run(tiny_config(epochs=0.2, checkpoint_every=2), {"teacher": teacher}, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()


# --- bad input ------------------------------------------------------------------------------------------------------


def test_missing_teacher_names_the_path_and_the_stage_to_run(tmp_path):
    missing = tmp_path / "no-teacher"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}/model.safetensors") + ".*run the finetune"):
        distill.run(tiny_config(), {"teacher": missing}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_pretrain_output_is_not_a_teacher(tmp_path):
    tmp_path.joinpath("pretrain").mkdir()
    save_pretrained(build_pretrain_model(TINY), tmp_path / "pretrain" / "model.safetensors", TINY)
    with pytest.raises(ValueError, match=r"is not a classifier .*finetune, baseline or distill"):
        distill.run(tiny_config(), {"teacher": tmp_path / "pretrain"}, tmp_path / "out")


def test_bad_settings_are_clear_errors(tmp_path, teacher):
    with pytest.raises(ValueError, match=r"alpha=0\.5 leaves 0\.5 to a ground-truth term, which needs labels"):
        distill.run(tiny_config(alpha=0.5), {"teacher": teacher}, tmp_path / "out")
    with pytest.raises(ValueError, match=r"student_init='teacher' copies the teacher.*set student to null"):
        distill.run(tiny_config(student_init="teacher", student=TINY), {"teacher": teacher}, tmp_path / "out")
    with pytest.raises(ValueError, match="batch_size=5000 is larger than the dataset"):
        distill.run(tiny_config(batch_size=5000), {"teacher": teacher}, tmp_path / "out")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tiny_config(temperature=0.0)
    with pytest.raises(SystemExit):
        distill.main(["--out", str(tmp_path), "--teacher", str(teacher), "--student", "{not json"])


def test_help_lists_the_inputs_and_the_config_flags():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "stages.distill", "--help"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for flag in ("--out", "--teacher", "--subset", "--student", "--temperature", "--alpha", "--optimizer"):
        assert flag in result.stdout
    assert "--student JSON|none" in result.stdout and "self-distillation" in result.stdout
