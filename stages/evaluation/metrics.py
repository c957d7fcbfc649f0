"""What a classifier predicts under the evaluation preprocessing (centre crop, eval-mode BN): top-k accuracy,
predictions, agreement between two classifiers, and the features of a frozen encoder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from stages.data.augment import CenterCrop
from stages.data.sources import ImageSplit

TOP_K = 5


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
    crop = CenterCrop.for_evaluation(image_size)
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
    return class_probabilities(classifier, split, image_size, batch_size, device).argmax(dim=1)


def class_probabilities(
    classifier: nn.Module, split: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> torch.Tensor:
    """`N x K` softmax probabilities of every image, on the CPU."""
    probabilities = []
    with eval_mode(classifier):
        for images, _ in center_crops(split, image_size, batch_size, model_device(classifier, device)):
            probabilities.append(classifier(images).float().softmax(dim=1).cpu())
    return torch.cat(probabilities)


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
