"""A validation slice of the training images, used in place of the test split while settings are chosen.

With `DataConfig.validation_fraction` set, every stage sees the run the test set is kept out of: a seeded, per-class
share of the labeled training images becomes the evaluation split, and the source's test split is not used. The slice
is taken like the test split of the same case (stages/data/sources.py): removed from training when the source labels
every image (the benchmark case), kept as an unlabeled, held-out training image otherwise. Settings chosen on it are
chosen without the test images, which the report then reads once.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import torch

from stages.data.errors import DataError
from stages.data.labels import UNLABELED

if TYPE_CHECKING:
    from stages.data.sources import DataConfig, ImageSplit


def validation_rows(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted rows in the validation slice: `fraction` of each class's labeled rows (not `UNLABELED`), seeded."""
    from sklearn.model_selection import train_test_split

    rows = (labels != UNLABELED).nonzero().flatten().numpy()
    try:
        _, chosen = train_test_split(rows, test_size=fraction, stratify=labels[rows].numpy(), random_state=seed)
    except ValueError as error:
        raise DataError(
            f"cannot hold out a stratified validation slice of {len(rows)} labeled training images with "
            f"validation_fraction={fraction} ({error}). Change `validation_fraction`, or label more images."
        ) from None
    return torch.from_numpy(np.sort(chosen))


def split_off_validation(train: ImageSplit, fully_labeled: bool, config: DataConfig) -> tuple[ImageSplit, ImageSplit]:
    """(train, validation) from the train split, for `config.validation_fraction`."""
    rows = validation_rows(train.labels, config.validation_fraction, config.seed)
    validation = dataclasses.replace(train.rows(rows), skipped=0)
    if fully_labeled:
        return train.rows(rows_without(len(train), rows)), validation
    labels, held_out = train.labels.clone(), torch.zeros(len(train), dtype=torch.bool)
    if train.held_out is not None:
        held_out |= train.held_out
    labels[rows], held_out[rows] = UNLABELED, True
    return dataclasses.replace(train, labels=labels, held_out=held_out), validation


def rows_without(count: int, rows: torch.Tensor) -> torch.Tensor:
    """0..count-1 without `rows`, sorted."""
    kept = torch.ones(count, dtype=torch.bool)
    kept[rows] = False
    return kept.nonzero().flatten()
