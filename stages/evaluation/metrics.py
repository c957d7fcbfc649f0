"""What a classifier predicts under the evaluation preprocessing (centre crop, eval-mode BN): top-k accuracy,
predictions, agreement between two classifiers, and the features of a frozen encoder."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from stages.data.augment import CenterCrop, to_float_images
from stages.data.eval_crops import streamed_eval_crops
from stages.data.sources import ImageSplit
from stages.data.stored_images import StoredImages

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
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(centre-cropped float images, labels, rows) per batch, on `device` (rows on the CPU): from the images in
    memory, or streamed from the source by loader workers. A streamed image that turns out unreadable (under
    `skip_bad_images`) is left out of its batch, so `rows` says which rows of the split the batch holds."""
    if len(split) == 0:
        raise ValueError("cannot evaluate on an empty split")
    if isinstance(split.images, StoredImages):
        batches = streamed_eval_crops(split.images, image_size, batch_size, split.images.workers, device)
        for rows, crops, readable in batches:
            kept = rows[readable]
            if len(kept):
                yield to_float_images(crops[readable.to(device)]), split.labels[kept].to(device), kept
        return
    crop = CenterCrop.for_evaluation(image_size)
    for start in range(0, len(split), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(split)))
        yield crop(split.images[rows].to(device)), split.labels[rows].to(device), rows


def per_row(
    split: ImageSplit,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    width: int,
    keep_on: torch.device | None = None,
) -> torch.Tensor:
    """`N x width` float rows on `keep_on` (the CPU by default) from (values, rows) batches; NaN where a row was left
    out (unreadable). Kept on a GPU they are float16: half the device memory (ImageNet's 1.28M features of a
    ResNet-152 3x take 16 GB so)."""
    keep_on = keep_on or torch.device("cpu")
    dtype = torch.float16 if keep_on.type == "cuda" else torch.float32
    values = torch.full((len(split), width), float("nan"), device=keep_on, dtype=dtype)
    for batch, rows in batches:
        values[rows.to(keep_on)] = batch.to(keep_on, dtype)
    return values


def model_device(model: nn.Module, device: torch.device | None) -> torch.device:
    return device if device is not None else next(model.parameters()).device


def top_k_accuracy(
    classifier: nn.Module, split: ImageSplit, image_size: int, batch_size: int = 256, device: torch.device | None = None
) -> dict[str, float]:
    """Top-1 and top-5 accuracy; with fewer than 5 classes "top5" is top-`num_classes` (trivially 1.0)."""
    k = min(TOP_K, split.num_classes)
    hits_top1 = hits_topk = evaluated = 0
    with eval_mode(classifier):
        for images, labels, rows in center_crops(split, image_size, batch_size, model_device(classifier, device)):
            hits = classifier(images).topk(k, dim=1).indices == labels[:, None]
            hits_top1 += int(hits[:, 0].sum())
            hits_topk += int(hits.any(dim=1).sum())
            evaluated += len(rows)
    return {"top1": hits_top1 / max(evaluated, 1), "top5": hits_topk / max(evaluated, 1)}


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
    """`N x K` softmax probabilities of every image, on the CPU (NaN rows: images skipped as unreadable)."""
    with eval_mode(classifier):
        batches = center_crops(split, image_size, batch_size, model_device(classifier, device))
        probabilities = ((classifier(images).float().softmax(dim=1), rows) for images, _, rows in batches)
        return per_row(split, probabilities, split.num_classes)


def prediction_agreement(
    model: nn.Module,
    reference: nn.Module,
    split: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> float:
    """Fraction of images on which two classifiers predict the same class (e.g. a student and its teacher)."""
    predicted = class_probabilities(model, split, image_size, batch_size, device)
    expected = class_probabilities(reference, split, image_size, batch_size, device)
    readable = predicted.isfinite().all(dim=1)
    return float((predicted[readable].argmax(dim=1) == expected[readable].argmax(dim=1)).float().mean())


def extract_features(
    encoder: nn.Module,
    split: ImageSplit,
    image_size: int,
    batch_size: int = 256,
    device: torch.device | None = None,
    keep_on: torch.device | None = None,
) -> torch.Tensor:
    """`N x D` float features of a frozen encoder, on `keep_on` (the CPU by default; NaN rows: images skipped as
    unreadable)."""
    with eval_mode(encoder):
        batches = center_crops(split, image_size, batch_size, model_device(encoder, device))
        first_images, _, first_rows = next(batches)
        first = encoder(first_images)
        rest = ((encoder(images), rows) for images, _, rows in batches)
        return per_row(split, itertools.chain([(first, first_rows)], rest), first.shape[1], keep_on)
