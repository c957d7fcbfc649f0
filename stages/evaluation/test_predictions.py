"""Per-image test predictions: what a classifier guessed for every test image, written next to its weights, so that
the report can compare two models on the same images (a paired test) and measure how far confidence can be trusted.

    test_predictions.csv   image, label, predicted, confidence   (class names; confidence: the softmax probability
                                                                  of the predicted class)

Text cells that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, ... first) get a leading `'`
(stages/data/spreadsheet_cells.py); readers take it off with `unescape_cell`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from stages.data.sources import ImageSplit
from stages.data.spreadsheet_cells import escape_row
from stages.evaluation.metrics import class_probabilities
from stages.training.files import write_text_atomic

TEST_PREDICTIONS = "test_predictions.csv"


def write_test_predictions(
    classifier: nn.Module,
    test: ImageSplit,
    class_names: list[str],
    image_size: int,
    path: Path,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> None:
    """One row per test image, in the split's order (evaluation preprocessing, eval mode)."""
    probabilities = class_probabilities(classifier, test, image_size, batch_size, device)
    readable = probabilities.isfinite().all(dim=1)  # streamed images skipped as unreadable have no prediction
    confidence, predicted = probabilities[readable].max(dim=1)
    names = np.asarray(class_names, dtype=object)
    table = pd.DataFrame(
        {
            "image": escape_row(image for image, kept in zip(test.ids, readable.tolist(), strict=True) if kept),
            "label": escape_row(names[test.labels[readable].numpy()]),
            "predicted": escape_row(names[predicted.numpy()]),
            "confidence": confidence.numpy(),
        }
    )
    write_text_atomic(path, table.to_csv(index=False))
