"""Weights files: pretrained models and classifiers come back equal from their metadata, writes are atomic, and bad
files are refused with what to do."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import stages.models.weights as weights
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.weights import WEIGHTS_FILE, load_classifier, load_pretrained, save_classifier, save_pretrained

TINY = EncoderConfig(depth=18, width=0.125, head_layers=2)


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


def test_an_unreadable_file_is_refused_with_what_to_do(tmp_path):
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"is not a readable safetensors file .*rerun the stage that wrote it"):
        load_pretrained(tmp_path)
