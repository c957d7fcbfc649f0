"""Stage `finetune`: fine-tune a pretrained SimCLRv2 model on a labeled subset, or train the supervised baseline.

    python -m stages.finetune --out runs/finetune --subset runs/subsets/1pct.json --pretrain runs/pretrain
    python -m stages.finetune --out runs/baseline --subset runs/subsets/1pct.json --model.depth 50

Inputs: `--subset FILE` (a label subset file, see stages/data/label_subsets.py) and, optionally, `--pretrain DIR` (the
pretrain stage's output). With `--pretrain` the classifier is the pretrained encoder plus the first `--proj-selector`
layers of its projection head plus a zero-initialised linear layer (docs/simclrv2.md#projection-head). Without it this
is the supervised baseline: the same training on the same labels from a random `--model.*` encoder, without a head.

Training follows docs/simclrv2.md#fine-tuning-and-distillation: crop + flip only, cross-entropy, BN in train mode, LARS,
lr = base_lr * sqrt(batch), no weight decay, no warmup, cosine decay per step. Writes `model.safetensors` (the
classifier; its architecture, proj_selector, num_classes and class_names in the metadata), `loss_curve.csv`,
`metrics.json` (with the test top-1 / top-5) and `test_predictions.csv` (every test image's prediction) to `--out`;
resumable state goes to `--out/checkpoints/` and a rerun continues from it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import shutil
import time
from dataclasses import field
from pathlib import Path
from typing import Annotated, Literal

import torch
from accelerate import Accelerator
from annotated_types import Ge, Gt, Lt
from pydantic import StrictBool, StrictFloat, StrictInt
from torch import nn
from torch.nn.functional import cross_entropy

from stages.config_schema import SPEED_ONLY, config_dataclass
from stages.data.label_subsets import load_subset
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.evaluation.feature_quality import probe_accuracy
from stages.evaluation.metrics import top_k_accuracy, top_k_metrics
from stages.evaluation.test_predictions import TEST_PREDICTIONS, write_test_predictions
from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.heads import Classifier, build_classifier
from stages.models.weights import WEIGHTS_FILE, load_pretrained, save_classifier, weights_file
from stages.training.accelerator import make_accelerator
from stages.training.batches import batch_that_fits
from stages.training.classifier_loop import train_classifier
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.cross_validation import Choice, FitAndScore, cross_validate
from stages.training.finish import finish_stage
from stages.training.linear_head import fit_linear_head, frozen_features
from stages.training.loop import TrainingResult

log = logging.getLogger(__name__)
FINE_TUNE = "fine-tune"
LINEAR_C = {"linear C=0.1": 0.1, "linear C=1": 1.0, "linear C=10": 10.0}  # inverse L2 strengths tried
LINEAR_DEFAULT = "linear C=1"  # when no fold can validate (a class with one label)
CV_DIR = "cross-validation"


@config_dataclass
class FinetuneConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: EncoderConfig = field(default_factory=EncoderConfig)
    """the supervised baseline's encoder; with --pretrain the pretrained one is used"""
    image_size: Annotated[StrictInt, Ge(1)] = 32
    """side of the augmented crops, in pixels"""
    batch_size: Annotated[StrictInt, Ge(1)] = 64
    """global: labeled images per step over all processes; a budget with fewer labels puts them all in each step"""
    epochs: Annotated[StrictFloat, Gt(0)] = 60.0
    """passes over the labeled subset (SimCLRv2: 60 for 1%, 30 for 10%); ignored when `steps` is set"""
    steps: Annotated[StrictInt, Ge(1)] | None = None
    """optimiser steps whatever the budget (the epochs follow from its labels and the batch); None: `epochs`"""
    base_lr: Annotated[StrictFloat, Gt(0)] = 0.005
    """learning rate before scaling by the batch size"""
    lr_scaling: Literal["sqrt", "linear"] = "sqrt"
    """lr = base_lr * sqrt(batch_size) (SimCLRv2), or base_lr * batch_size / 256"""
    optimizer: Literal["lars", "sgd"] = "lars"
    """LARS, or Nesterov SGD"""
    momentum: Annotated[StrictFloat, Ge(0), Lt(1)] = 0.9
    """momentum of either optimiser"""
    weight_decay: Annotated[StrictFloat, Ge(0)] = 0.0
    """weight decay (not on BN parameters and biases)"""
    warmup_epochs: Annotated[StrictFloat, Ge(0)] = 0.0
    """epochs of linear learning-rate warm-up before the cosine decay"""
    proj_selector: Annotated[StrictInt, Ge(0)] = 1
    """projection head layers kept under the classifier, 0 up to the pretrained head's layers (the baseline has none)"""
    classifier: Literal["fine-tune", "linear", "auto"] = "fine-tune"
    """with --pretrain: fine-tune the whole network; fit a logistic regression on the frozen features (choosing its
    regularization by cross-validation on the budget's labels); or choose between the two by that cross-validation"""
    cv_folds: Annotated[StrictInt, Ge(2)] = 3
    """at most this many stratified folds of the budget's labels (fewer when a class has fewer labels)"""
    seed: StrictInt = 0
    """seed of the new layer, the batch order and the augmentations"""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """autocast precision; bf16 on GPUs"""
    checkpoint_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 100
    """optimiser steps between resumable states"""
    log_every: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 10
    """steps between loss read-backs (each one syncs the device)"""
    tensorboard: Annotated[StrictBool, SPEED_ONLY] = False
    """log the loss and learning rate to TensorBoard under --out"""
    eval_batch_size: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 256
    """images per forward pass of the test evaluation"""


def build_finetune_model(
    config: FinetuneConfig, pretrain: Path | None, num_classes: int
) -> tuple[Classifier, EncoderConfig, int]:
    """(classifier, its encoder architecture, proj_selector): from the pretrain weights, or the random baseline."""
    if pretrain is None:
        return classifier_for(config.model, 0, num_classes), config.model, 0
    pretrained, architecture = load_pretrained(pretrain)
    if config.model != EncoderConfig():
        log.info("fine-tuning uses the pretrained architecture %s; model=%s is ignored", architecture, config.model)
    classifier = build_classifier(pretrained.encoder, pretrained.head, num_classes, config.proj_selector)
    return classifier, architecture, config.proj_selector


def fitted_to(config: FinetuneConfig, num_labels: int, world: int) -> FinetuneConfig:
    """The config for this many labels: a batch of at most the labels, and `steps` turned into epochs."""
    if num_labels < world:
        raise ValueError(
            f"{num_labels} labels cannot fill one batch over {world} processes: use a budget of at least {world} "
            "labels, or fewer processes (launch.num_processes)"
        )
    batch = batch_that_fits(config.batch_size, num_labels, world)
    if batch != config.batch_size:
        log.info(
            "batch_size %d -> %d: at most the %d labels, divisible by the %d processes",
            config.batch_size,
            batch,
            num_labels,
            world,
        )
    epochs = config.epochs if config.steps is None else config.steps / (num_labels // batch)
    return dataclasses.replace(config, batch_size=batch, epochs=epochs)


def fine_tune(
    accelerator: Accelerator,
    model: Classifier,
    labeled: ImageSplit,
    config: FinetuneConfig,
    out_dir: Path,
    tracker: str,
) -> TrainingResult:
    labels = labeled.labels.to(accelerator.device)

    def supervised_loss(model: nn.Module, views: torch.Tensor, batch_rows: torch.Tensor) -> torch.Tensor:
        return cross_entropy(model(views).float(), labels[batch_rows])

    return train_classifier(accelerator, model, labeled.images, supervised_loss, config, out_dir, tracker)


def linear_on_frozen_features(
    model: Classifier, labeled: ImageSplit, c: float, config: FinetuneConfig, device: torch.device
) -> TrainingResult:
    """The pretrained network, frozen, with a logistic regression fitted on its features as the final layer."""
    start = time.perf_counter()
    features = frozen_features(model.to(device), labeled, config.image_size, config.eval_batch_size, device)
    fit_linear_head(model.cpu(), features, labeled.labels, c)
    return TrainingResult(model.to(device), [], 0, 0, time.perf_counter() - start)


def choose_classifier(
    config: FinetuneConfig, pretrain: Path, labeled: ImageSplit, accelerator: Accelerator, out_dir: Path
) -> Choice:
    """Fine-tuning against logistic regressions on the frozen features (`LINEAR_C`), by stratified cross-validation
    on the budget's own labels; `classifier: linear` compares the regressions only. Fold runs go under
    `out_dir/cross-validation/` (a crash resumes them) and are removed once the choice is made."""
    device = accelerator.device
    frozen = build_finetune_model(config, pretrain, labeled.num_classes)[0].to(device)
    features = frozen_features(frozen, labeled, config.image_size, config.eval_batch_size, device)
    candidates: dict[str, FitAndScore] = {}
    if config.classifier == "auto":
        candidates[FINE_TUNE] = fold_fine_tuning(config, pretrain, labeled, accelerator, out_dir / CV_DIR)
    for name, c in LINEAR_C.items():
        candidates[name] = functools.partial(probe_fold, features, labeled.labels, c)
    fallback = FINE_TUNE if config.classifier == "auto" else LINEAR_DEFAULT
    choice = cross_validate(candidates, labeled.labels, config.cv_folds, config.seed, fallback)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(out_dir / CV_DIR, ignore_errors=True)
    log.info("classifier: %s (%s)", choice.name, choice.reason)
    return choice


def probe_fold(
    features: torch.Tensor, labels: torch.Tensor, c: float, train: torch.Tensor, validate: torch.Tensor
) -> float:
    return probe_accuracy(features[train], labels[train], features[validate], labels[validate], c)


def fold_fine_tuning(
    config: FinetuneConfig, pretrain: Path, labeled: ImageSplit, accelerator: Accelerator, cv_dir: Path
) -> FitAndScore:
    """Fine-tune on a fold's training rows (the config fitted to them), score on the rest."""
    folds = itertools.count()

    def fit_and_score(train_rows: torch.Tensor, validate_rows: torch.Tensor) -> float:
        fold_config = dataclasses.replace(
            fitted_to(config, len(train_rows), accelerator.num_processes), tensorboard=False
        )
        fold_dir = cv_dir / f"fine-tune-fold{next(folds)}"
        fold_accelerator = make_accelerator(fold_dir, config.seed, config.mixed_precision)
        model = build_finetune_model(config, pretrain, labeled.num_classes)[0]
        result = fine_tune(fold_accelerator, model, labeled.rows(train_rows), fold_config, fold_dir, "cv")
        validation = labeled.rows(validate_rows)
        return top_k_accuracy(result.model, validation, config.image_size, config.eval_batch_size, accelerator.device)[
            "top1"
        ]

    return fit_and_score


def run(config: FinetuneConfig, inputs: dict[str, Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    if "subset" not in inputs:
        raise ValueError("finetune needs the 'subset' input: a label subset file (see stages/data/label_subsets.py)")
    pretrain = inputs.get("pretrain")
    if pretrain is not None:
        weights_file(pretrain, "pretrain")  # fail before loading data or creating directories
    accelerator = make_accelerator(out_dir, config.seed, config.mixed_precision, config.tensorboard)
    train, test = load_splits(config.data)
    device = accelerator.device
    rows = load_subset(inputs["subset"], train.ids)
    config = fitted_to(config, len(rows), accelerator.num_processes)
    model, architecture, proj_selector = build_finetune_model(config, pretrain, train.num_classes)

    labeled = train.rows(rows)
    choice = Choice(FINE_TUNE, reason="chosen in the config")
    if pretrain is not None and config.classifier != FINE_TUNE:
        choice = choose_classifier(config, pretrain, labeled, accelerator, out_dir)
    tracker = "finetune" if pretrain is not None else "baseline"
    if choice.name == FINE_TUNE:
        result = fine_tune(accelerator, model, labeled, config, out_dir, tracker)
    else:
        result = linear_on_frozen_features(model, labeled, LINEAR_C[choice.name], config, device)
        out_dir.mkdir(parents=True, exist_ok=True)  # no training loop made it
    metrics = {
        "final_loss": result.curve[-1]["loss"] if result.curve else None,
        "steps": result.total_steps,
        "epochs": config.epochs,
        "num_labels": len(rows),
        "num_classes": train.num_classes,
        "initialization": "pretrain" if pretrain is not None else "random",
        "proj_selector": proj_selector,
        "classifier": choice.name,
        "classifier_choice": {"scores": choice.scores, "folds": choice.folds, "reason": choice.reason},
        "global_batch": config.batch_size,
        "processes": accelerator.num_processes,
        "seconds_this_run": round(result.seconds, 3),
        "images_per_second": round(config.batch_size * result.steps_this_run / max(result.seconds, 1e-9), 2),
    }

    def evaluate_and_save() -> dict:
        save_classifier(result.model, out_dir / WEIGHTS_FILE, architecture, proj_selector, train.class_names)
        write_test_predictions(
            result.model, test, train.class_names, config.image_size, out_dir / TEST_PREDICTIONS, config.eval_batch_size
        )
        return top_k_metrics(result.model, test, config.image_size, config.eval_batch_size, device)

    return finish_stage(accelerator, out_dir, metrics, evaluate_and_save)


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(
        "stages.finetune", FinetuneConfig, __doc__, argv, inputs=("subset",), optional_inputs=("pretrain",)
    )
    run_and_print("stages.finetune", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
