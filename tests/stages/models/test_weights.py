"""Weights files: pretrained models and classifiers come back equal from their metadata, writes are atomic, and bad
files are refused with what to do."""

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import stages.finetune as finetune
import stages.models.weights as weights
from stages.finetune import FinetuneConfig
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.weights import (
    WEIGHTS_FILE,
    WeightsError,
    check_same_classes,
    load_classifier,
    load_pretrained,
    save_classifier,
    save_pretrained,
    weights_file,
)

TINY = EncoderConfig(depth=18, width=0.125, head_layers=2)
ROOT = Path(__file__).resolve().parents[3]
RERUN_PRETRAIN = "rerun the pretrain stage"


def assert_same_state(model: torch.nn.Module, other: torch.nn.Module) -> None:
    state, other_state = model.state_dict(), other.state_dict()
    assert state.keys() == other_state.keys()
    for key, value in state.items():
        assert torch.equal(value, other_state[key]), key


def test_a_pretrained_model_comes_back_from_its_directory(tmp_path):
    torch.manual_seed(0)
    model = build_pretrain_model(TINY)
    save_pretrained(model, tmp_path / WEIGHTS_FILE, TINY)

    loaded, architecture = load_pretrained(tmp_path)
    assert architecture == TINY
    assert_same_state(loaded, model)
    with safe_open(tmp_path / WEIGHTS_FILE, "pt") as f:
        assert f.metadata() == {"architecture": json.dumps(asdict(TINY))}
    assert [path.name for path in tmp_path.iterdir()] == [WEIGHTS_FILE]  # no .partial left behind


def test_a_classifier_comes_back_from_the_file_itself(tmp_path):
    torch.manual_seed(0)
    model = classifier_for(TINY, 1, 3)
    torch.nn.init.normal_(model.fc.weight)
    save_classifier(model, tmp_path / "classifier.safetensors", TINY, 1, ["cat", "dog", "emu"])

    loaded = load_classifier(tmp_path / "classifier.safetensors")
    assert (loaded.architecture, loaded.proj_selector, loaded.class_names) == (TINY, 1, ["cat", "dog", "emu"])
    assert loaded.file == tmp_path / "classifier.safetensors"
    assert_same_state(loaded.model, model)


def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / WEIGHTS_FILE
    save_pretrained(build_pretrain_model(TINY), path, TINY)
    before = path.read_bytes()

    def write_half_then_fail(state, filename, metadata):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(weights, "save_file", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(build_pretrain_model(TINY), path, TINY)
    assert path.read_bytes() == before


# --- bad files: one error that names the file and says what to do ---------------------------------------------------


def pretrain_dir(folder: Path) -> Path:
    folder.mkdir()
    save_pretrained(build_pretrain_model(TINY), folder / WEIGHTS_FILE, TINY)
    return folder


def classifier_dir(folder: Path, class_names=("cat", "dog", "emu")) -> Path:
    folder.mkdir()
    save_classifier(classifier_for(TINY, 1, len(class_names)), folder / WEIGHTS_FILE, TINY, 1, list(class_names))
    return folder


def rewrite(folder: Path, metadata_change: dict[str, str | None], state_change=lambda state: state) -> Path:
    """The weights file of `folder` written again with its metadata (a None value drops a key) and tensors changed."""
    file = folder / WEIGHTS_FILE
    with safe_open(file, "pt") as f:
        metadata = f.metadata() | metadata_change
    state = state_change(load_file(file))
    save_file(state, str(file), metadata={key: value for key, value in metadata.items() if value is not None})
    return folder


def truncate(folder: Path) -> Path:
    file = folder / WEIGHTS_FILE
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return folder


def garbage(folder: Path) -> Path:
    (folder / WEIGHTS_FILE).write_bytes(bytes(range(256)) * 40)
    return folder


def foreign(folder: Path) -> Path:
    """A valid safetensors file from another project: tensors of other names, no architecture metadata."""
    save_file({"transformer.wte.weight": torch.zeros(4, 8)}, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    return folder


def wider_metadata(folder: Path) -> Path:
    return rewrite(folder, {"architecture": json.dumps(asdict(TINY) | {"width": 0.25})})


def with_nan(folder: Path) -> Path:
    def poison(state):
        key = next(key for key, value in state.items() if value.is_floating_point())
        state[key] = torch.full_like(state[key], float("nan"))
        return state

    return rewrite(folder, {}, poison)


def assert_names_file_and_fix(error: pytest.ExceptionInfo, file: Path, *fix: str) -> None:
    message = str(error.value)
    assert str(file) in message, message
    for words in fix:
        assert words in message, message
    assert "\n" not in message, message  # one line on stderr


def test_a_missing_file_names_the_path_and_the_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(tmp_path / "nowhere")
    assert_names_file_and_fix(error, tmp_path / "nowhere" / WEIGHTS_FILE, "run the pretrain stage first")


def test_a_file_left_half_written_says_the_stage_was_interrupted(tmp_path):
    folder = pretrain_dir(tmp_path / "pretrain")
    (folder / WEIGHTS_FILE).rename(folder / f"{WEIGHTS_FILE}.partial")
    with pytest.raises(FileNotFoundError) as error:
        load_pretrained(folder)
    assert_names_file_and_fix(error, folder / WEIGHTS_FILE, "interrupted", RERUN_PRETRAIN)


@pytest.mark.parametrize(
    ("damage", "what"),
    [
        (truncate, "is not a readable safetensors file"),
        (garbage, "is not a readable safetensors file"),
        (foreign, "has no 'architecture' metadata"),
        (wider_metadata, "the weights do not match the architecture in its metadata"),
        (with_nan, "holds NaN or infinite values"),
    ],
)
def test_a_damaged_or_foreign_pretrain_file_is_one_clear_error(tmp_path, damage, what):
    folder = damage(pretrain_dir(tmp_path / "pretrain"))
    with pytest.raises(WeightsError) as error:
        load_pretrained(folder)
    assert_names_file_and_fix(error, folder / WEIGHTS_FILE, what, RERUN_PRETRAIN)


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [
        (b"", "it is empty"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer"),
        (b"PK\x03\x04" + bytes(100), "PyTorch checkpoint"),
    ],
)
def test_an_unreadable_file_says_what_it_looks_like(tmp_path, content, looks_like):
    (tmp_path / WEIGHTS_FILE).write_bytes(content)
    with pytest.raises(WeightsError) as error:
        load_pretrained(tmp_path)
    assert_names_file_and_fix(error, tmp_path / WEIGHTS_FILE, looks_like, RERUN_PRETRAIN)


def test_a_damaged_file_is_refused_by_the_header_check_stages_make_first(tmp_path):
    """`weights_file`, called before any data is loaded, reads only the header yet refuses a cut or foreign file."""
    for damage in (truncate, garbage, foreign):
        folder = damage(pretrain_dir(tmp_path / damage.__name__))
        with pytest.raises(WeightsError, match=str(folder / WEIGHTS_FILE)):
            weights_file(folder, "pretrain")


def test_a_classifier_is_not_a_pretrain_output_and_the_other_way_round(tmp_path):
    classifier, pretrain = classifier_dir(tmp_path / "classifier"), pretrain_dir(tmp_path / "pretrain")
    with pytest.raises(WeightsError) as error:
        load_pretrained(classifier)
    assert_names_file_and_fix(error, classifier / WEIGHTS_FILE, "is a classifier", "pretrain stage's output directory")
    with pytest.raises(WeightsError) as error:
        load_classifier(pretrain)
    assert_names_file_and_fix(
        error, pretrain / WEIGHTS_FILE, "is not a classifier", "output directory of the finetune, baseline or distill"
    )


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"class_names": "cat, dog, emu"}, "classifier metadata is damaged"),
        ({"class_names": json.dumps({"cat": 0})}, "not a JSON list of names"),
        ({"num_classes": "4"}, "num_classes is '4' but class_names lists 3"),
        ({"proj_selector": "one"}, "classifier metadata is damaged"),
        ({"proj_selector": "5"}, "does not describe a classifier that can be built"),
        ({"class_names": None}, "is not a classifier (no ['class_names'] metadata)"),
        ({"architecture": json.dumps(asdict(TINY) | {"depth": 34})}, "do not match the architecture"),
        ({"architecture": '{"depth": 7}'}, "'architecture' metadata is not a valid encoder config"),
    ],
)
def test_classifier_metadata_that_does_not_describe_its_tensors_is_refused(tmp_path, change, what):
    folder = rewrite(classifier_dir(tmp_path / "classifier"), change)
    with pytest.raises(WeightsError) as error:
        load_classifier(folder, stage="finetune")
    assert_names_file_and_fix(error, folder / WEIGHTS_FILE, what, "rerun the finetune stage")


def test_a_classifier_of_other_classes_than_the_data_is_refused(tmp_path):
    loaded = load_classifier(classifier_dir(tmp_path / "classifier"))
    check_same_classes(loaded.class_names, SimpleNamespace(class_names=["cat", "dog", "emu"]), loaded.file)
    for data_classes in (["cat", "dog"], ["dog", "cat", "emu"]):  # fewer classes; the same in another order
        with pytest.raises(WeightsError) as error:
            check_same_classes(loaded.class_names, SimpleNamespace(class_names=data_classes), loaded.file)
        assert_names_file_and_fix(error, loaded.file, "was trained on classes", "use the same data config")


def test_the_stage_refuses_damaged_weights_before_reading_the_data_or_the_subset(tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the data was loaded before the weights were checked")

    monkeypatch.setattr(finetune, "load_splits", never)
    monkeypatch.setattr(finetune, "load_subset", never)
    folder = truncate(pretrain_dir(tmp_path / "pretrain"))
    inputs = {"subset": tmp_path / "any.json", "pretrain": folder}
    with pytest.raises(WeightsError, match=str(folder / WEIGHTS_FILE)):
        finetune.run(FinetuneConfig(model=TINY), inputs, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the stage command: exit status 2 and one line naming the file --------------------------------------------------


def run_finetune(out: Path, subset: Path, pretrain: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "stages.finetune", "--out", str(out), "--subset", str(subset)]
    command += ["--pretrain", str(pretrain), "--image-size", "16", "--steps", "1"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a stage process: about 5 s each
@pytest.mark.parametrize(
    ("damage", "what"),
    [(truncate, "is not a readable safetensors file"), (with_nan, "holds NaN or infinite values")],
)
def test_the_finetune_command_exits_2_with_one_line_that_names_the_file(tmp_path, subsets, damage, what):
    folder = damage(pretrain_dir(tmp_path / "pretrain"))
    result = run_finetune(tmp_path / "out", subsets["10pct"], folder)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("stages.finetune: error: ") and str(folder / WEIGHTS_FILE) in last, last
    assert what in last and RERUN_PRETRAIN in last, last


@pytest.mark.slow
def test_the_finetune_command_given_a_classifier_as_pretrain_says_which_directory_to_pass(tmp_path, subsets):
    folder = classifier_dir(tmp_path / "classifier", [str(digit) for digit in range(10)])
    result = run_finetune(tmp_path / "out", subsets["10pct"], folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert str(folder / WEIGHTS_FILE) in last and "pass the pretrain stage's output directory" in last, last


@pytest.mark.parametrize(
    "fault",
    [PermissionError(13, "Permission denied"), OSError(5, "Input/output error"), MemoryError()],
)
def test_a_fault_of_the_machine_while_reading_weights_keeps_its_type(tmp_path, monkeypatch, fault):
    """Not "a damaged file, rerun the stage": a permission or an I/O error is the machine's, and says so by its type."""
    folder = pretrain_dir(tmp_path / "pretrain")

    def failing(*args, **kwargs):
        raise fault

    monkeypatch.setattr(weights, "load_file", failing)
    with pytest.raises(type(fault)) as raised:
        weights.read_weights(folder / WEIGHTS_FILE, "pretrain")
    assert not isinstance(raised.value, WeightsError) and raised.value is fault
