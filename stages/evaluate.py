"""Stage `evaluate`: test accuracy of a trained classifier, and the quality of pretrained features.

    python -m stages.evaluate --out runs/eval/student --classifier runs/distill
    python -m stages.evaluate --out runs/eval/pretrain --pretrain runs/pretrain

Inputs, at least one of: `--classifier DIR` (the output of finetune, the baseline or distill): test top-1 / top-5;
`--pretrain DIR` (the pretrain stage's output), on every labeled training image:
- `linear_eval_top1`: the papers' linear evaluation, a linear layer trained in torch on the frozen encoder's features
  of crop + flip views (stages/evaluation/linear_eval.py; it streams like fine-tuning and resumes from
  `--out/linear-eval/`);
- `knn_top1`: a cosine kNN classifier on the frozen features, in chunks on the device;
- `logistic_probe_top1`: a scikit-learn logistic regression on the standardized features, only where it is cheap
  (at most `LOGISTIC_PROBE_MAX_VALUES` feature values; the number is absent above it).
Test images go through the evaluation preprocessing (centre crop, resize; docs/simclrv2.md#evaluation-preprocessing)
with the network in eval mode. Writes `metrics.json` to `--out`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import field
from pathlib import Path
from typing import Annotated

import torch
from accelerate import Accelerator
from annotated_types import Ge, Gt
from pydantic import StrictFloat, StrictInt
from torch import nn

from stages.config_schema import config_dataclass
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.evaluation.feature_quality import knn_vote_accuracy, probe_accuracy
from stages.evaluation.linear_eval import LinearEvalSettings, train_linear_layer
from stages.evaluation.metrics import extract_features, top_k_accuracy, top_k_metrics
from stages.models.weights import check_same_classes, load_classifier, load_pretrained, weights_file
from stages.training.accelerator import make_accelerator
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage

log = logging.getLogger(__name__)
INPUTS = {"classifier": "finetune, baseline or distill", "pretrain": "pretrain"}  # input -> the stages that write it
LINEAR_EVAL_DIR = "linear-eval"  # the linear evaluation's checkpoints and loss curve, under --out
LOGISTIC_PROBE_MAX_VALUES = 20_000_000  # training feature values (80 MB as float32) up to which the probe is cheap


@config_dataclass
class EvaluateConfig:
    data: DataConfig = field(default_factory=DataConfig)
    image_size: Annotated[StrictInt, Ge(1)] = 32
    """side of the centre crop fed to the network, in pixels (use the training stages' image_size)"""
    batch_size: Annotated[StrictInt, Ge(1)] = 256
    """images per forward pass"""
    knn_k: Annotated[StrictInt, Ge(1)] = 20
    """neighbours that vote in the kNN classifier"""
    knn_temperature: Annotated[StrictFloat, Gt(0)] = 0.07
    """neighbour votes are weighted by exp(cosine similarity / temperature)"""
    linear_epochs: Annotated[StrictFloat, Gt(0)] = 90.0
    """passes over the labeled training images of the linear evaluation (the papers: 90 on ImageNet)"""
    linear_batch_size: Annotated[StrictInt, Ge(1)] = 4096
    """global batch of the linear evaluation (at most the labeled images)"""
    linear_base_lr: Annotated[StrictFloat, Gt(0)] = 0.1
    """linear evaluation learning rate before scaling: lr = linear_base_lr * batch / 256, Nesterov SGD"""
    probe_c: Annotated[StrictFloat, Gt(0)] = 1.0
    """inverse L2 strength of the logistic probe (scikit-learn; only on small data)"""
    probe_max_iter: Annotated[StrictInt, Ge(1)] = 1000
    """iterations of the logistic probe's solver"""
    seed: StrictInt = 0
    """seed of the linear layer's batches and views, set before evaluating (torch, NumPy and Python)"""


def classifier_metrics(path: Path, test: ImageSplit, config: EvaluateConfig, device: torch.device) -> dict:
    loaded = load_classifier(path, stage=INPUTS["classifier"])
    check_same_classes(loaded.class_names, test, loaded.file)
    return top_k_metrics(loaded.model.to(device), test, config.image_size, config.batch_size, device)


def linear_evaluation(
    path: Path, labeled: ImageSplit, config: EvaluateConfig, accelerator: Accelerator, out_dir: Path
) -> nn.Module:
    """The frozen pretrained encoder with a linear layer trained on `labeled`, by every process."""
    encoder = load_pretrained(path)[0].encoder
    settings = LinearEvalSettings(
        config.image_size, config.linear_batch_size, config.linear_epochs, config.linear_base_lr, config.seed
    )
    return train_linear_layer(encoder, labeled, settings, accelerator, out_dir / LINEAR_EVAL_DIR)


def pretrain_metrics(
    linear: nn.Module, labeled: ImageSplit, test: ImageSplit, config: EvaluateConfig, device: torch.device
) -> dict:
    """The linear evaluation's test accuracy, and kNN (and, where cheap, the logistic probe) on the frozen features of
    the same encoder: it runs once per split."""
    encoder = linear.encoder.to(device)
    features = extract_features(encoder, labeled, config.image_size, config.batch_size, device, keep_on=device)
    test_features = extract_features(encoder, test, config.image_size, config.batch_size, device, keep_on=device)
    train_readable, test_readable = features.isfinite().all(dim=1), test_features.isfinite().all(dim=1)
    features, train_labels = features[train_readable], labeled.labels.to(device)[train_readable]
    test_features, test_labels = test_features[test_readable], test.labels.to(device)[test_readable]
    metrics = {
        "linear_eval_top1": top_k_accuracy(linear, test, config.image_size, config.batch_size, device)["top1"],
        "knn_top1": knn_vote_accuracy(
            features, train_labels, test_features, test_labels, config.knn_k, config.knn_temperature
        ),
        "knn_k": config.knn_k,
        "num_train": len(labeled),
    }
    if features.numel() <= LOGISTIC_PROBE_MAX_VALUES:
        metrics["logistic_probe_top1"] = probe_accuracy(
            features.cpu(),
            train_labels.cpu(),
            test_features.cpu(),
            test_labels.cpu(),
            config.probe_c,
            config.probe_max_iter,
        )
    else:
        log.info(
            "logistic probe skipped: %d feature values are more than scikit-learn handles cheaply", features.numel()
        )
    return metrics


def labeled_rows(train: ImageSplit) -> ImageSplit:
    """The training images that have a label (all of them in a fully labeled dataset)."""
    if bool(train.labeled.all()):
        return train
    return train.rows(train.labeled.nonzero().flatten())


def run(config: EvaluateConfig, inputs: dict[str, Path] | None, out_dir: Path) -> dict:
    out_dir, inputs = Path(out_dir), inputs or {}
    if not inputs or set(inputs) - set(INPUTS):
        raise ValueError(
            f"evaluate takes a 'classifier' and/or a 'pretrain' input (output directories), got {sorted(inputs)}"
        )
    for name, stage in INPUTS.items():
        if name in inputs:
            weights_file(inputs[name], stage)  # fail before loading any data
    accelerator = make_accelerator(out_dir, config.seed)
    train, test = load_splits(config.data)
    labeled = labeled_rows(train)
    linear = None
    if "pretrain" in inputs:  # trained by every process, like fine-tuning
        linear = linear_evaluation(inputs["pretrain"], labeled, config, accelerator, out_dir)

    def evaluate() -> dict:  # cheap next to training: the main process does it alone
        metrics = {}
        if "classifier" in inputs:
            metrics |= classifier_metrics(inputs["classifier"], test, config, accelerator.device)
        if linear is not None:
            metrics |= pretrain_metrics(linear, labeled, test, config, accelerator.device)
        log.info("evaluation: %s", metrics)
        return metrics

    return finish_stage(accelerator, out_dir, {"num_test": len(test)}, evaluate)


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(
        "stages.evaluate", EvaluateConfig, __doc__, argv, optional_inputs=tuple(INPUTS)
    )
    if not inputs:
        sys.exit("stages.evaluate: pass --classifier DIR and/or --pretrain DIR (see --help)")
    run_and_print("stages.evaluate", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
