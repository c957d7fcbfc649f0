"""Checkpoints, meaning resumable state (stages/training/checkpoints.py): which one resumes, and under which config."""

from pathlib import Path

import pytest

import stages.pretrain  # noqa: F401  (defines the configs whose SPEED_ONLY fields make RESUMABLE_CHANGES)
from stages.training.checkpoints import RESUMABLE_CHANGES, check_same_config, flat_config, latest_checkpoint

# As a checkpoint's progress.json holds it: JSON, so a tuple of the running config reads back as a list.
CONFIG = {"epochs": 2.0, "log_every": 10, "compile": False, "data": {"source": "digits", "seed": 0}, "crop": [8, 8]}


def test_the_newest_complete_checkpoint_resumes_and_half_written_ones_never_do(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    root = tmp_path / "checkpoints"
    for name in ("step-00000002", "step-00000010", "step-00000012.partial"):
        (root / name).mkdir(parents=True)
    (root / "notes").mkdir()
    assert latest_checkpoint(tmp_path) == root / "step-00000010"


def test_speed_only_settings_may_change_on_resume():
    assert {"log_every", "checkpoint_every", "tensorboard", "compile", "loader_workers"} <= RESUMABLE_CHANGES
    check_same_config(CONFIG, {**CONFIG, "log_every": 1, "compile": True}, Path("ck/step-1"))
    check_same_config(CONFIG, {**CONFIG, "crop": (8, 8)}, Path("ck/step-1"))  # a tuple equals its JSON list


def test_another_config_is_refused_naming_what_changed_and_the_fix():
    changed = {**CONFIG, "epochs": 3.0, "data": {"source": "digits", "seed": 1}}
    message = r"another config \(data.seed 0 -> 1, epochs 2.0 -> 3.0\).*use a new output directory.*delete ck"
    with pytest.raises(ValueError, match=message):
        check_same_config(CONFIG, changed, Path("ck/step-1"))


def test_configs_flatten_to_dotted_scalar_keys():
    assert flat_config(CONFIG) == {
        "epochs": 2.0,
        "log_every": 10,
        "compile": False,
        "data.source": "digits",
        "data.seed": 0,
        "crop": "[8, 8]",
    }
