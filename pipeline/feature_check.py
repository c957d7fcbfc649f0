"""Feature quality of pretrained encoders without the test set: a cross-validated linear probe and kNN on the labels
of one budget, for choosing pretraining settings honestly (the test split is never read).

    python -m pipeline.feature_check runs/quickstart/pretrain/<fp> runs/other/pretrain/<fp> \\
        --subset runs/quickstart/subsets/<fp>/10pct.json --image-size 16

For each pretrain directory: the encoder's features of the subset's labeled training images (evaluation
preprocessing), then stratified k-fold cross-validation of a logistic regression (C = 1) and of a cosine kNN
(k = 20, weighted votes) on them. Prints one line per directory: mean validation accuracy of each, and the
pretraining's wall seconds from its manifest.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from pipeline.manifest import read_manifest
from stages.data.label_subsets import load_subset
from stages.data.sources import DataConfig, load_train
from stages.evaluation.feature_quality import knn_vote_accuracy, probe_accuracy
from stages.evaluation.metrics import extract_features
from stages.models.weights import load_pretrained


def cross_validated(features: torch.Tensor, labels: torch.Tensor, folds: int, seed: int) -> tuple[float, float]:
    """(linear probe, kNN) mean validation accuracy over stratified folds."""
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    probe, knn = [], []
    for train, validate in splitter.split(np.zeros(len(labels)), labels.numpy()):
        train, validate = torch.from_numpy(train), torch.from_numpy(validate)
        probe.append(probe_accuracy(features[train], labels[train], features[validate], labels[validate]))
        knn.append(knn_vote_accuracy(features[train], labels[train], features[validate], labels[validate]))
    return float(np.mean(probe)), float(np.mean(knn))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.feature_check", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("pretrain", type=Path, nargs="+", help="pretrain stage directories")
    parser.add_argument("--subset", type=Path, required=True, help="a label subset file (its labeled images)")
    parser.add_argument("--image-size", type=int, required=True, help="the crop side the encoders were trained at")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for directory in args.pretrain:
        data = DataConfig(**read_manifest(directory)["config"]["data"])
        train = load_train(data)
        rows = load_subset(args.subset, train.ids)
        labeled = train.rows(rows)
        encoder = load_pretrained(directory)[0].encoder
        features = extract_features(encoder, labeled, args.image_size)
        probe, knn = cross_validated(features, labeled.labels, args.folds, args.seed)
        seconds = read_manifest(directory)["wall_seconds"]
        print(f"{directory}: probe {probe:.4f}, kNN {knn:.4f} ({args.folds}-fold, {len(rows)} labels); {seconds:.0f} s")


if __name__ == "__main__":
    main()
