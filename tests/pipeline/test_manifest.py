"""Instance names and the stage manifest: what it records, when a stage counts as finished, how it fails safe."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from pipeline.manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    instance_name,
    is_complete,
    list_artifacts,
    missing_artifacts,
    read_manifest,
    replicate,
    split_instance,
    split_replicate,
    stage_dirname,
    write_manifest,
)

# --- instance names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("instance", "name"),
    [("pretrain", "pretrain"), ("finetune[10pct]", "finetune-10pct"), ("baseline[250labels]", "baseline-250labels")],
)
def test_stage_dirname(instance, name):
    assert stage_dirname(instance) == name


@pytest.mark.parametrize(
    ("budget", "seed", "bracket"),
    [("20labels", 1, "20labels-s1"), ("12p5pct", 12, "12p5pct-s12"), (None, 3, "s3"), ("all", None, "all")],
)
def test_a_seed_in_the_bracket_reads_back(budget, seed, bracket):
    assert replicate(budget, seed) == bracket and split_replicate(bracket) == (budget, seed)
    assert stage_dirname(instance_name("finetune", bracket)) == f"finetune-{bracket}"


@pytest.mark.parametrize("instance", ["", "finetune[]", "finetune[../x]", "finetune[a/b]", "../pretrain", "Pre train"])
def test_names_that_are_not_plain_directories_are_refused(instance):
    with pytest.raises(ValueError, match="is not of the form"):
        stage_dirname(instance)
    with pytest.raises(ValueError, match="is not of the form"):
        split_instance(instance)


@pytest.mark.parametrize(
    ("stage", "budget", "name"),
    [("pretrain", None, "pretrain"), ("finetune", "10pct", "finetune[10pct]"), ("distill", "1p5", "distill[1p5]")],
)
def test_instance_name_and_split_instance_are_inverses(stage, budget, name):
    assert instance_name(stage, budget) == name
    assert split_instance(name) == (stage, budget)


def test_instance_name_refuses_a_budget_that_is_no_directory_name():
    with pytest.raises(ValueError, match="is not of the form"):
        instance_name("finetune", "../x")


# --- the manifest ---------------------------------------------------------------------------------------------------


def make_stage(directory: Path) -> Path:
    (directory / "checkpoints" / "step-5").mkdir(parents=True)
    (directory / "checkpoints" / "step-5" / "model.bin").write_bytes(b"state")
    (directory / "model.safetensors").write_bytes(b"weights" * 100)
    (directory / "metrics.json").write_text('{"top1": 0.9}')
    (directory / "logs").mkdir()
    (directory / "logs" / "events.out").write_text("tensorboard")
    (directory / "loss_curve.csv.partial").write_text("half")
    (directory / ".metrics.json.abc.tmp").write_text("half")
    return directory


def write(directory: Path) -> dict:
    return write_manifest(
        directory,
        stage="finetune[1pct]",
        fingerprint="0123456789abcdef",
        config={"epochs": 2.0, "data": {"source": "digits"}},
        inputs={"pretrain": {"dir": "runs/x/pretrain/aa", "fingerprint": "aa"}},
        metrics={"top1": 0.9},
        wall_seconds=12.3456,
        devices={"processes": 1, "device": "cpu"},
        code_version="0.1.0+abc",
    )


def test_artifacts_are_the_outputs_only(tmp_path):
    make_stage(tmp_path)
    os.symlink(tmp_path / "metrics.json", tmp_path / "link.json")
    assert list_artifacts(tmp_path) == ["logs/events.out", "metrics.json", "model.safetensors"]


def test_manifest_records_everything_and_marks_the_stage_complete(tmp_path):
    make_stage(tmp_path)
    assert not is_complete(tmp_path)  # no manifest yet: unfinished
    written = write(tmp_path)
    manifest = read_manifest(tmp_path)
    assert manifest == written
    assert manifest["format"] == MANIFEST_FORMAT and manifest["stage"] == "finetune[1pct]"
    assert manifest["fingerprint"] == "0123456789abcdef"
    assert manifest["config"]["epochs"] == 2.0 and manifest["metrics"] == {"top1": 0.9}
    assert manifest["inputs"]["pretrain"]["fingerprint"] == "aa"
    assert manifest["wall_seconds"] == 12.346 and manifest["devices"]["device"] == "cpu"
    assert manifest["code_version"] == "0.1.0+abc" and manifest["created"].endswith("+00:00")
    weights = (tmp_path / "model.safetensors").read_bytes()
    assert manifest["artifacts"]["model.safetensors"] == {
        "sha256": hashlib.sha256(weights).hexdigest(),
        "bytes": len(weights),
    }
    assert set(manifest["artifacts"]) == {"logs/events.out", "metrics.json", "model.safetensors"}
    assert is_complete(tmp_path) and is_complete(tmp_path, verify=True)
    assert not list(tmp_path.glob(".manifest.json.*"))  # no temporary file left behind


def test_a_deleted_artifact_makes_the_stage_incomplete(tmp_path):
    write(make_stage(tmp_path))
    (tmp_path / "model.safetensors").unlink()
    assert not is_complete(tmp_path)
    assert missing_artifacts(tmp_path) == ["model.safetensors (missing)"]


def test_a_truncated_artifact_makes_the_stage_incomplete(tmp_path):
    write(make_stage(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert not is_complete(tmp_path)
    assert missing_artifacts(tmp_path) == ["model.safetensors (size 7, recorded 700)"]


def test_same_size_change_is_found_only_when_verifying(tmp_path):
    write(make_stage(tmp_path))
    (tmp_path / "metrics.json").write_text('{"top1": 0.1}')  # same length
    assert is_complete(tmp_path)  # the cheap check compares sizes
    assert not is_complete(tmp_path, verify=True)
    assert missing_artifacts(tmp_path, verify=True) == ["metrics.json (sha256 differs from the recorded one)"]


def test_deleting_checkpoints_keeps_the_stage_complete(tmp_path):
    write(make_stage(tmp_path))
    shutil.rmtree(tmp_path / "checkpoints")
    assert is_complete(tmp_path, verify=True)


def test_damaged_manifest_reads_as_incomplete(tmp_path):
    write(make_stage(tmp_path))
    (tmp_path / MANIFEST).write_text('{"artifacts": ')
    assert not is_complete(tmp_path)
    with pytest.raises(ValueError, match="is damaged"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("[1, 2]")
    assert not is_complete(tmp_path)


def test_read_manifest_of_an_unfinished_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not finished"):
        read_manifest(tmp_path)


def test_a_failed_manifest_write_leaves_no_manifest_and_no_temporary_file(tmp_path, monkeypatch):
    make_stage(tmp_path)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path)
    assert not (tmp_path / MANIFEST).exists() and not is_complete(tmp_path)
    assert not list(tmp_path.glob(".manifest.json.*"))


def test_a_failed_rewrite_keeps_the_previous_manifest_whole(tmp_path, monkeypatch):
    first = write(make_stage(tmp_path))
    monkeypatch.setattr(os, "replace", lambda *args: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        write(tmp_path)
    assert read_manifest(tmp_path) == first
