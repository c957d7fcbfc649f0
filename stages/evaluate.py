"""Stage `evaluate`: test accuracy of a trained classifier, and the quality of pretrained features.

    python -m stages.evaluate --out runs/eval/student --classifier runs/distill
    python -m stages.evaluate --out runs/eval/pretrain --pretrain runs/pretrain

Inputs, at least one of: `--classifier DIR` (the output of finetune, the baseline or distill): test top-1 / top-5;
`--pretrain DIR` (the pretrain stage's output): a linear probe (logistic regression on the frozen encoder's standardized
features) and a cosine kNN classifier on the same features. Every image goes through the evaluation preprocessing
(centre crop 0.875, resize; docs/simclrv2.md#evaluation-preprocessing) with the network in eval mode. Writes
`metrics.json` to `--out`.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import field
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge, Gt
from pydantic import StrictFloat, StrictInt

from stages.config_schema import config_dataclass
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.evaluation.feature_quality import knn_vote_accuracy, probe_accuracy, split_features
from stages.evaluation.metrics import top_k_metrics
from stages.models.weights import check_same_classes, load_classifier, load_pretrained, weights_file
from stages.training.accelerator import make_accelerator
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage

log = logging.getLogger(__name__)
INPUTS = {"classifier": "finetune, baseline or distill", "pretrain": "pretrain"}  # input -> the stages that write it


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
    probe_c: Annotated[StrictFloat, Gt(0)] = 1.0
    """inverse L2 strength of the linear probe's logistic regression"""
    probe_max_iter: Annotated[StrictInt, Ge(1)] = 1000
    """iterations of the linear probe's solver"""
    seed: StrictInt = 0
    """seed set before evaluating (torch, NumPy and Python)"""


def classifier_metrics(path: Path, test: ImageSplit, config: EvaluateConfig, device: torch.device) -> dict:
    loaded = load_classifier(path, stage=INPUTS["classifier"])
    check_same_classes(loaded.class_names, test, loaded.file)
    return top_k_metrics(loaded.model.to(device), test, config.image_size, config.batch_size, device)


def pretrain_metrics(
    path: Path, train: ImageSplit, test: ImageSplit, config: EvaluateConfig, device: torch.device
) -> dict:
    """Linear probe and kNN, trained on every labeled training image, on the same features: the encoder runs once per
    split."""
    encoder = load_pretrained(path)[0].encoder.to(device)
    labeled = labeled_rows(train)
    features, test_features = split_features(encoder, labeled, test, config.image_size, config.batch_size, device)
    probe = probe_accuracy(features, labeled.labels, test_features, test.labels, config.probe_c, config.probe_max_iter)
    knn = knn_vote_accuracy(features, labeled.labels, test_features, test.labels, config.knn_k, config.knn_temperature)
    return {"linear_probe_top1": probe, "knn_top1": knn, "knn_k": config.knn_k, "num_train": len(labeled)}


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

    def evaluate() -> dict:  # cheap next to training: the main process does it alone
        metrics = {}
        if "classifier" in inputs:
            metrics |= classifier_metrics(inputs["classifier"], test, config, accelerator.device)
        if "pretrain" in inputs:
            metrics |= pretrain_metrics(inputs["pretrain"], train, test, config, accelerator.device)
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
