"""The finetune stage and the supervised baseline on real digits: they learn, load pretrained weights, resume, stop on
NaN, and refuse bad inputs with clear errors."""

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import stages.finetune as finetune
from stages.evaluation.metrics import top_k_accuracy
from stages.finetune import FinetuneConfig, build_finetune_model, fitted_to
from stages.models.architecture import EncoderConfig
from stages.models.weights import load_classifier
from stages.optim.classifier import classifier_param_groups
from stages.training.checkpoints import latest_checkpoint
from stages.training.loop import NonFiniteLossError

TINY = EncoderConfig(depth=18, width=0.125)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def tiny_config(**overrides) -> FinetuneConfig:
    fields = {
        "model": TINY,
        "image_size": 16,
        "batch_size": 16,
        "epochs": 1.0,
        "checkpoint_every": 1000,
        "log_every": 1,
    }
    return FinetuneConfig(**{**fields, **overrides})


def read_metadata(out: Path) -> dict[str, str]:
    with safe_open(out / "model.safetensors", "pt") as f:
        return f.metadata()


def read_curve(out: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in (out / "loss_curve.csv").read_text().splitlines()[1:]]


def test_baseline_learns_digits_and_writes_weights_curve_and_metrics(tmp_path, digits, subsets):
    config = tiny_config(batch_size=64, epochs=2.0, base_lr=0.05, optimizer="sgd", log_every=4)
    metrics = finetune.run(config, {"subset": subsets["100pct"]}, tmp_path)

    assert metrics["steps"] == 2 * (1437 // 64)
    assert metrics["initialization"] == "random" and metrics["proj_selector"] == 0
    assert metrics["num_labels"] == 1437 and metrics["num_classes"] == 10
    assert metrics["test_top1"] > 0.35, metrics  # chance is 0.1
    assert metrics["test_top5"] >= metrics["test_top1"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    curve = read_curve(tmp_path)
    assert curve[-1] < curve[0] - 0.3, curve

    metadata = read_metadata(tmp_path)
    assert not any(key.startswith("head_layers.") for key in load_file(tmp_path / "model.safetensors"))  # no head
    assert json.loads(metadata["architecture"]) == asdict(TINY)
    assert metadata["proj_selector"] == "0" and metadata["num_classes"] == "10"
    assert json.loads(metadata["class_names"]) == [str(d) for d in range(10)]

    loaded = load_classifier(tmp_path)
    _, test = digits
    assert top_k_accuracy(loaded.model, test, image_size=16)["top1"] == pytest.approx(metrics["test_top1"])


def test_the_zero_initialised_classifier_predicts_uniformly_before_the_first_step(
    tmp_path, digits, pretrained, subsets
):
    train, _ = digits
    images = torch.nn.functional.interpolate(train.images[:32].float() / 255, size=16)
    for source in (None, pretrained):
        model, _, _ = build_finetune_model(tiny_config(), source, num_classes=10)
        model.train()
        assert torch.equal(model(images).softmax(dim=1), torch.full((32, 10), 0.1))

    finetune.run(tiny_config(epochs=0.2), {"subset": subsets["10pct"], "pretrain": pretrained}, tmp_path)
    assert read_curve(tmp_path)[0] == pytest.approx(math.log(10), abs=1e-6)  # the first step's loss: uniform


def test_finetuning_starts_from_the_pretrained_encoder_and_first_head_layer(pretrained):
    saved = load_file(pretrained / "model.safetensors")
    model, architecture, proj_selector = build_finetune_model(tiny_config(proj_selector=1), pretrained, 10)

    assert architecture == TINY and proj_selector == 1
    loaded = model.state_dict()
    encoder_keys = [key for key in saved if key.startswith("encoder.")]
    assert len(encoder_keys) > 50
    for key in encoder_keys:
        assert torch.equal(loaded[key], saved[key]), key
    head_keys = [key for key in saved if key.startswith("head.layers.0.")]
    for key in head_keys:
        assert torch.equal(loaded[key.replace("head.layers.", "head_layers.")], saved[key]), key
    assert len(model.head_layers) == 1  # layers 2 and 3 of the head are dropped
    assert model.fc.in_features == 8 * 8  # width 0.125: 64 encoder features, kept by the d -> d head layer


def test_the_head_layer_is_checked_against_the_pretrained_head_not_the_model_flags(pretrained):
    layers = TINY.head_layers  # the pretrained head's, whatever --model.head-layers says
    model = build_finetune_model(tiny_config(proj_selector=layers, model=replace(TINY, head_layers=1)), pretrained, 10)[
        0
    ]
    assert len(model.head_layers) == layers
    with pytest.raises(ValueError, match=rf"proj_selector must be in 0..{layers} \(the layers of the projection head"):
        build_finetune_model(tiny_config(proj_selector=layers + 1), pretrained, 10)


def test_finetune_run_from_pretrain_writes_a_classifier_that_keeps_the_head_layer(tmp_path, pretrained, subsets):
    metrics = finetune.run(tiny_config(epochs=2.0), {"subset": subsets["10pct"], "pretrain": pretrained}, tmp_path)

    assert metrics["initialization"] == "pretrain" and metrics["proj_selector"] == 1
    assert metrics["num_labels"] == 144 and metrics["steps"] == 2 * (144 // 16)
    assert 0 <= metrics["test_top1"] <= metrics["test_top5"] <= 1
    assert json.loads(read_metadata(tmp_path)["architecture"])["width"] == 0.125
    assert any(key.startswith("head_layers.0.") for key in load_file(tmp_path / "model.safetensors"))
    assert load_classifier(tmp_path).proj_selector == 1


def test_auto_chooses_by_cross_validation_on_the_budgets_labels_and_records_it(tmp_path, pretrained, subsets):
    config = tiny_config(epochs=1.0, classifier="auto", cv_folds=3)
    metrics = finetune.run(config, {"subset": subsets["10pct"], "pretrain": pretrained}, tmp_path)
    choice = metrics["classifier_choice"]
    assert choice["folds"] == 3 and set(choice["scores"]) == {"fine-tune", *finetune.LINEAR_C}
    assert metrics["classifier"] == max(choice["scores"], key=choice["scores"].get)
    assert all(0 <= score <= 1 for score in choice["scores"].values())
    assert not (tmp_path / finetune.CV_DIR).exists()  # the fold runs are gone once the choice is made
    assert load_classifier(tmp_path).proj_selector == 1  # whatever won, a classifier every later stage loads


def test_a_linear_classifier_on_frozen_features_is_the_logistic_regression(tmp_path, pretrained, subsets, digits):
    config = tiny_config(classifier="linear")
    out = tmp_path / "not-made-yet"  # as in the flow: nothing creates it before the stage
    metrics = finetune.run(config, {"subset": subsets["10pct"], "pretrain": pretrained}, out)
    assert metrics["classifier"].startswith("linear C=") and metrics["steps"] == 0
    loaded = load_classifier(out)
    pretrained_encoder = build_finetune_model(config, pretrained, 10)[0].encoder.state_dict()
    assert all(torch.equal(value, pretrained_encoder[key]) for key, value in loaded.model.encoder.state_dict().items())
    accuracy = top_k_accuracy(loaded.model, digits[1], 16)["top1"]
    assert accuracy == pytest.approx(metrics["test_top1"]) and accuracy > 0.2  # learned something on frozen features


def test_a_crash_then_rerun_resumes_and_finishes_like_an_uninterrupted_run(tmp_path, subsets, monkeypatch):
    config = tiny_config(epochs=2.0, checkpoint_every=3, base_lr=0.05, optimizer="sgd")
    inputs = {"subset": subsets["10pct"]}
    finetune.run(config, inputs, tmp_path / "straight")

    real_loss, calls = finetune.cross_entropy, []

    def loss_that_crashes_at_step_8(logits, labels):
        calls.append(1)
        if len(calls) == 8:
            raise RuntimeError("simulated crash")
        return real_loss(logits, labels)

    monkeypatch.setattr(finetune, "cross_entropy", loss_that_crashes_at_step_8)
    with pytest.raises(RuntimeError, match="simulated crash"):
        finetune.run(config, inputs, tmp_path / "crashed")
    assert latest_checkpoint(tmp_path / "crashed").name == "step-00000006"
    monkeypatch.setattr(finetune, "cross_entropy", real_loss)
    finetune.run(config, inputs, tmp_path / "crashed")

    assert read_curve(tmp_path / "crashed") == pytest.approx(read_curve(tmp_path / "straight"), abs=1e-6)
    straight, resumed = (load_file(tmp_path / run / "model.safetensors") for run in ("straight", "crashed"))
    for key, value in straight.items():
        assert torch.allclose(resumed[key], value, atol=1e-6), key


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(tmp_path, subsets, monkeypatch):
    real_loss, calls = finetune.cross_entropy, []

    def loss_that_breaks_at_step_5(logits, labels):
        calls.append(1)
        loss = real_loss(logits, labels)
        return loss * float("nan") if len(calls) >= 5 else loss

    monkeypatch.setattr(finetune, "cross_entropy", loss_that_breaks_at_step_5)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan by step 5.*step-00000003"):
        finetune.run(tiny_config(checkpoint_every=3), {"subset": subsets["10pct"]}, tmp_path)
    assert not (tmp_path / "model.safetensors").exists()
    assert not (tmp_path / "metrics.json").exists()


def test_the_linear_classifier_is_decayed_but_not_trust_scaled():
    model, _, _ = build_finetune_model(tiny_config(), None, num_classes=10)
    groups = classifier_param_groups(model, weight_decay=1e-4)
    group_of = {id(param): group for group in groups for param in group["params"]}
    assert (group_of[id(model.fc.weight)]["lars_adapt"], group_of[id(model.fc.weight)]["weight_decay"]) == (False, 1e-4)
    assert (group_of[id(model.fc.bias)]["lars_adapt"], group_of[id(model.fc.bias)]["weight_decay"]) == (False, 0.0)
    conv = next(param for param in model.encoder.parameters() if param.ndim == 4)
    assert group_of[id(conv)]["lars_adapt"] and group_of[id(conv)]["weight_decay"] == 1e-4
    assert sum(len(group["params"]) for group in groups) == len(list(model.parameters()))


# --- bad input ------------------------------------------------------------------------------------------------------


def test_missing_pretrain_weights_name_the_path_and_the_stage_to_run(tmp_path, subsets):
    missing = tmp_path / "no-pretrain-here"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{missing}/model.safetensors") + ".*run the pretrain stage first"
    ):
        finetune.run(tiny_config(), {"subset": subsets["10pct"], "pretrain": missing}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def copy_with_metadata(source: Path, target: Path, metadata: dict[str, str]) -> Path:
    target.mkdir()
    save_file(load_file(source / "model.safetensors"), str(target / "model.safetensors"), metadata=metadata)
    return target


def test_architecture_metadata_that_does_not_match_the_weights_is_refused(tmp_path, pretrained):
    wider = json.dumps(asdict(TINY) | {"width": 0.25})
    mismatched = copy_with_metadata(pretrained, tmp_path / "mismatched", {"architecture": wider})
    with pytest.raises(
        ValueError, match=re.escape(f"{mismatched}/model.safetensors: the weights do not match the architecture")
    ):
        build_finetune_model(tiny_config(), mismatched, 10)

    bare = copy_with_metadata(pretrained, tmp_path / "bare", {})
    with pytest.raises(ValueError, match=re.escape(f"{bare}/model.safetensors has no 'architecture' metadata")):
        build_finetune_model(tiny_config(), bare, 10)


def test_a_batch_larger_than_the_budget_takes_every_label_each_step(tmp_path, subsets):
    metrics = finetune.run(tiny_config(batch_size=200, steps=2), {"subset": subsets["10pct"]}, tmp_path / "out")
    assert metrics["global_batch"] == 144 and metrics["steps"] == 2 and metrics["epochs"] == 2.0


@pytest.mark.parametrize(
    ("labels", "world", "batch", "epochs"),
    [(20, 1, 20, 150.0), (144, 1, 48, 50.0), (100, 1, 48, 75.0), (21, 2, 20, 150.0), (1437, 1, 48, 150 / 29)],
)
def test_steps_set_the_schedule_whatever_the_budget(labels, world, batch, epochs):
    fitted = fitted_to(tiny_config(batch_size=48, steps=150), labels, world)
    assert fitted.batch_size == batch and fitted.epochs == pytest.approx(epochs)
    assert round(fitted.epochs * (labels // fitted.batch_size)) == 150  # what the loop trains
    assert fitted_to(tiny_config(batch_size=48, epochs=7.0), 144, 1).epochs == 7.0  # no steps: the epochs


def test_fewer_labels_than_processes_is_a_clear_error():
    with pytest.raises(ValueError, match=r"3 labels cannot fill one batch over 4 processes.*launch.num_processes"):
        fitted_to(tiny_config(batch_size=48, steps=10), 3, 4)


# --- command line ---------------------------------------------------------------------------------------------------


def test_help_lists_the_inputs_and_the_config_flags():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "stages.finetune", "--help"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--out", "--subset", "--pretrain", "--model.depth", "--proj-selector", "--optimizer", "--base-lr"):
        assert flag in result.stdout


def test_main_takes_the_optional_pretrain_input(tmp_path, pretrained, subsets, capsys):
    flags = ["--image-size", "16", "--batch-size", "16", "--epochs", "0.2", "--proj-selector", "2"]
    finetune.main(["--out", str(tmp_path), "--subset", str(subsets["10pct"]), "--pretrain", str(pretrained), *flags])
    printed = json.loads(capsys.readouterr().out)
    assert printed["initialization"] == "pretrain" and printed["proj_selector"] == 2
    assert load_classifier(tmp_path).proj_selector == 2
