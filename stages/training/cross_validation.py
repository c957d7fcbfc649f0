"""Choosing between classifiers with the training labels alone: stratified k-fold cross-validation on a budget's own
labeled images. The test split is never read here (it is read once, for the report)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

log = logging.getLogger(__name__)

FitAndScore = Callable[[torch.Tensor, torch.Tensor], float]  # (train rows, validation rows) -> validation accuracy


@dataclass
class Choice:
    """The candidate chosen, the mean validation accuracy of every candidate, and how many folds measured them."""

    name: str
    scores: dict[str, float] = field(default_factory=dict)
    folds: int = 0
    reason: str = ""


def fold_count(labels: torch.Tensor, max_folds: int) -> int:
    """At most `max_folds`, and no more than the smallest class has labels (each fold validates every class)."""
    return min(max_folds, int(torch.bincount(labels).clamp(min=1).min()) if len(labels) else 0)


def cross_validate(
    candidates: Mapping[str, FitAndScore], labels: torch.Tensor, max_folds: int, seed: int, fallback: str
) -> Choice:
    """The candidate with the best mean validation accuracy over stratified folds of `labels` (ties: the first in
    `candidates`). With fewer than 2 labels in some class there is nothing to validate on: `fallback` is chosen."""
    present = labels[labels >= 0]
    folds = fold_count(torch.unique(present, return_inverse=True)[1], max_folds)
    if folds < 2:
        reason = "a class has a single label: no fold can validate it"
        log.info("classifier choice: %s; using %s", reason, fallback)
        return Choice(fallback, folds=folds, reason=reason)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = np.arange(len(labels))
    scores = {}
    for name, fit_and_score in candidates.items():
        accuracies = [
            fit_and_score(torch.from_numpy(train), torch.from_numpy(validate))
            for train, validate in splitter.split(rows, labels.numpy())
        ]
        scores[name] = float(np.mean(accuracies))
        log.info("classifier choice: %s: %.4f mean accuracy over %d folds", name, scores[name], folds)
    best = max(scores, key=lambda name: (scores[name], -list(candidates).index(name)))
    return Choice(best, scores, folds, f"best mean accuracy over {folds} stratified folds of the budget's labels")
