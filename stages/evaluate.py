"""Stage `evaluate`: test accuracy of a trained classifier, and the quality of pretrained features.

    python -m stages.evaluate --out runs/eval/student --classifier runs/distill
    python -m stages.evaluate --out runs/eval/pretrain --pretrain runs/pretrain

Inputs, at least one of: `--classifier DIR` (the output of finetune, the baseline or distill): test top-1 / top-5;
`--pretrain DIR` (the pretrain stage's output): a linear probe (logistic regression on the frozen encoder's
standardized features) and a cosine kNN classifier on the same features. Every image goes through the evaluation
preprocessing (centre crop 0.875, resize; SIMCLRV2.md section 5) with the network in eval mode. Writes `metrics.json`
to `--out`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from stages.augment import CenterCrop
from stages.cli import parse_stage_args, run_and_print
from stages.data import DataConfig, ImageSplit, load_splits
from stages.runtime import make_accelerator
from stages.weights import check_same_classes, load_classifier, load_pretrained, weights_file

log = logging.getLogger(__name__)
TOP_K = 5
INPUTS = {"classifier": "finetune, baseline or distill", "pretrain": "pretrain"}  # input -> the stages that write it
KNN_CHUNK = 256  # test rows per similarity matrix: bounds memory at KNN_CHUNK x num_train


@dataclass(frozen=True)
class EvaluateConfig:
    data: DataConfig = field(default_factory=DataConfig)
    image_size: int = 32  # side of the centre crop fed to the network (use the training stages' image_size)
    batch_size: int = 256  # images per forward pass
    knn_k: int = 20
    knn_temperature: float = 0.07  # neighbour votes are weighted by exp(cosine similarity / temperature)
    probe_c: float = 1.0  # inverse L2 strength of the linear probe's logistic regression
    probe_max_iter: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.knn_k < 1:
            raise ValueError(f"knn_k must be >= 1, got {self.knn_k!r}")
        if not self.knn_temperature > 0 or not self.probe_c > 0:
            raise ValueError(f"knn_temperature and probe_c must be > 0, got {self.knn_temperature!r}, {self.probe_c!r}")


# --- network outputs under the evaluation preprocessing ------------------------------------------------------------


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """BN with running statistics and no gradients; the model's previous mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def center_crops(
    split: ImageSplit, image_size: int, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(centre-cropped float images, labels) per batch, on `device`."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    crop = CenterCrop(image_size)
    for start in range(0, len(split), batch_size):
        yield (
            crop(split.images[start : start + batch_size].to(device)),
            split.labels[start : start + batch_size].to(device),
        )


def model_device(model: nn.Module, device: torch.device | None) -> torch.device:
    return device if device is not None else next(model.parameters()).device


def top_k_accuracy(
    classifier: nn.Module, split: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy; with fewer than 5 classes "top5" is top-`num_classes` (trivially 1.0)."""
    k = min(TOP_K, split.num_classes)
    hits_top1 = hits_topk = 0
    with eval_mode(classifier):
        for images, labels in center_crops(split, image_size, batch_size, model_device(classifier, device)):
            hits = classifier(images).topk(k, dim=1).indices == labels[:, None]
            hits_top1 += int(hits[:, 0].sum())
            hits_topk += int(hits.any(dim=1).sum())
    return {"top1": hits_top1 / len(split), "top5": hits_topk / len(split)}


def top_k_metrics(
    classifier: nn.Module, test: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> dict[str, float | int]:
    """The metrics.json entries for a classifier's test accuracy: `test_top1`, `test_top5` and `num_test`."""
    accuracy = top_k_accuracy(classifier, test, image_size, batch_size, device)
    return {"test_top1": accuracy["top1"], "test_top5": accuracy["top5"], "num_test": len(test)}


def predictions(
    classifier: nn.Module, split: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> torch.Tensor:
    """The predicted class of every image, on the CPU."""
    predicted = []
    with eval_mode(classifier):
        for images, _ in center_crops(split, image_size, batch_size, model_device(classifier, device)):
            predicted.append(classifier(images).argmax(dim=1).cpu())
    return torch.cat(predicted)


def prediction_agreement(
    model: nn.Module,
    reference: nn.Module,
    split: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Fraction of images on which two classifiers predict the same class (e.g. a student and its teacher)."""
    predicted = predictions(model, split, image_size, batch_size, device)
    expected = predictions(reference, split, image_size, batch_size, device)
    return float((predicted == expected).float().mean())


def extract_features(
    encoder: nn.Module, split: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> torch.Tensor:
    """`N x D` float features of a frozen encoder, on the CPU."""
    features = []
    with eval_mode(encoder):
        for images, _ in center_crops(split, image_size, batch_size, model_device(encoder, device)):
            features.append(encoder(images).float().cpu())
    return torch.cat(features)


# --- feature quality -----------------------------------------------------------------------------------------------


def probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Logistic regression on standardized features: fit on train, accuracy on test."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_features.numpy(), train_labels.numpy())
    return float(probe.score(test_features.numpy(), test_labels.numpy()))


def knn_vote_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Cosine kNN: each test row takes the class with the largest sum of exp(similarity / temperature) over its k
    most similar training rows (the weighted vote of Wu et al. 2018, used as SimCLR/MoCo's kNN monitor)."""
    train_features, test_features = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_features))
    correct = 0
    for start in range(0, len(test_features), KNN_CHUNK):
        similarity = test_features[start : start + KNN_CHUNK] @ train_features.T
        nearest_similarity, nearest = similarity.topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, dtype=similarity.dtype, device=similarity.device)
        votes.scatter_add_(1, train_labels[nearest], (nearest_similarity / temperature).exp())
        correct += int((votes.argmax(dim=1) == test_labels[start : start + KNN_CHUNK]).sum())
    return correct / len(test_features)


def split_features(
    encoder: nn.Module,
    train: ImageSplit,
    test: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train features, test features) of a frozen encoder, on the CPU."""
    return (
        extract_features(encoder, train, image_size, batch_size, device),
        extract_features(encoder, test, image_size, batch_size, device),
    )


def linear_probe(
    encoder: nn.Module,
    train: ImageSplit,
    test: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a logistic regression on the frozen encoder's features."""
    train_features, test_features = split_features(encoder, train, test, image_size, batch_size, device)
    return probe_accuracy(train_features, train.labels, test_features, test.labels, c, max_iter)


def knn_accuracy(
    encoder: nn.Module,
    train: ImageSplit,
    test: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Test accuracy of cosine kNN on the frozen encoder's features."""
    train_features, test_features = split_features(encoder, train, test, image_size, batch_size, device)
    return knn_vote_accuracy(train_features, train.labels, test_features, test.labels, k, temperature)


# --- the stage -----------------------------------------------------------------------------------------------------


def classifier_metrics(path: Path, test: ImageSplit, config: EvaluateConfig, device: torch.device) -> dict:
    loaded = load_classifier(path, stage=INPUTS["classifier"])
    check_same_classes(loaded.class_names, test, loaded.file)
    return top_k_metrics(loaded.model.to(device), test, config.image_size, config.batch_size, device)


def pretrain_metrics(
    path: Path, train: ImageSplit, test: ImageSplit, config: EvaluateConfig, device: torch.device
) -> dict:
    """Linear probe and kNN on the same features: the encoder runs once per split."""
    encoder = load_pretrained(path)[0].encoder.to(device)
    train_features, test_features = split_features(encoder, train, test, config.image_size, config.batch_size, device)
    probe = probe_accuracy(
        train_features, train.labels, test_features, test.labels, config.probe_c, config.probe_max_iter
    )
    knn = knn_vote_accuracy(
        train_features, train.labels, test_features, test.labels, config.knn_k, config.knn_temperature
    )
    return {"linear_probe_top1": probe, "knn_top1": knn, "knn_k": config.knn_k, "num_train": len(train)}


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
    metrics: dict = {"num_test": len(test)}
    if accelerator.is_main_process:  # evaluation is cheap next to training: one process does it
        if "classifier" in inputs:
            metrics |= classifier_metrics(inputs["classifier"], test, config, accelerator.device)
        if "pretrain" in inputs:
            metrics |= pretrain_metrics(inputs["pretrain"], train, test, config, accelerator.device)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        log.info("evaluation: %s", metrics)
    accelerator.wait_for_everyone()
    return metrics


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(EvaluateConfig, __doc__, argv, optional_inputs=tuple(INPUTS))
    if not inputs:
        sys.exit("stages.evaluate: pass --classifier DIR and/or --pretrain DIR (see --help)")
    run_and_print("stages.evaluate", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
