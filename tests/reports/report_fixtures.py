"""Synthetic stage outputs with known numbers: manifests as the pipeline writes them, nothing trained; and readers of
the written report (CSV, table cells). (Not named conftest: the test modules import it, and every test folder has a
conftest.)"""

from __future__ import annotations

import csv
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pandas as pd

from reports import ReportSettings

CPU = {"processes": 2, "machines": 1, "device": "cpu", "name": "Test CPU"}
ONE_GPU = {"processes": 1, "machines": 1, "device": "cuda", "name": "Test GPU"}
FOUR_GPUS = {"processes": 4, "machines": 1, "device": "cuda", "name": "Test GPU"}
TWO_MACHINES = {"processes": 8, "machines": 2, "device": "cuda", "name": "Test GPU"}  # 8 GPUs over 2 machines
# The model rows of the report, in its order: by labels, then baseline, fine-tuned, distilled.
MODELS_IN_REPORT_ORDER = [
    "baseline[20labels]",
    "finetune[20labels]",
    "distill[20labels]",
    "baseline[10pct]",
    "finetune[10pct]",
    "distill[10pct]",
    "baseline[100pct]",
]

# Baseline 40% / 60% / 80% at 20 / 200 / 2,000 labels. Fine-tuned at 20 labels: 50%, halfway between 20 and 200
# in log space -> sqrt(20 x 200) = 63.2 -> 64 labels. Distilled at 20 labels: 55%, three quarters of the way ->
# 20 x 10^0.75 = 112.5 -> 113 labels. Fine-tuned at 200: 85%, beyond 2,000; distilled at 200: 35%, at most 20.
CLASSIFIERS = {
    "baseline[20labels]": (0.40, 0.70, 20, TWO_MACHINES, 100.0),
    "baseline[10pct]": (0.60, 0.85, 200, ONE_GPU, 360.0),
    "baseline[100pct]": (0.80, 0.95, 2000, ONE_GPU, 7200.0),
    "finetune[20labels]": (0.50, 0.80, 20, ONE_GPU, 90.0),
    "finetune[10pct]": (0.85, 0.97, 200, TWO_MACHINES, 1800.0),
    "distill[20labels]": (0.55, 0.82, None, ONE_GPU, 720.0),
    "distill[10pct]": (0.35, 0.75, None, ONE_GPU, 720.0),
}
SETTINGS = ReportSettings(cost_per_label=0.25, currency="EUR", device_hour_price=2.5, dataset="synthetic test images")


def write_manifest(folder: Path, stage: str, metrics: dict[str, Any], devices: dict, wall_seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"stage": stage, "metrics": metrics, "wall_seconds": wall_seconds, "devices": devices, "artifacts": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def classifier_metrics(top1: float, top5: float, num_labels: int | None) -> dict[str, Any]:
    metrics: dict[str, Any] = {"test_top1": top1, "test_top5": top5, "num_test": 500}
    if num_labels is not None:  # distill records no num_labels: it has its teacher's
        metrics["num_labels"] = num_labels
    return metrics


def make_run(
    root: Path, classifiers: dict[str, tuple] = CLASSIFIERS, evaluate: bool = True, predict: bool = False
) -> dict[str, Path]:
    """Stage dirs of a synthetic run: instance name -> dir, in plan order. subsets lists 20labels and 10pct only, so
    the 100% baseline's labels come from its own manifest. `predict`: with the predict stage's files (make_predict)."""
    subsets = {"num_labels": {"20labels": 20, "10pct": 200}, "num_train": 2000, "num_classes": 10}
    dirs = {"subsets": write_manifest(root / "subsets", "subsets", subsets, CPU, 36.0)}
    dirs["pretrain"] = write_manifest(root / "pretrain", "pretrain", {"final_loss": 1.0}, FOUR_GPUS, 3600.0)
    for name, (top1, top5, labels, devices, wall) in classifiers.items():
        dirs[name] = write_manifest(root / name, name, classifier_metrics(top1, top5, labels), devices, wall)
    if evaluate:
        probe = {"linear_probe_top1": 0.9, "knn_top1": 0.88, "num_test": 500, "num_train": 2000, "knn_k": 20}
        dirs["evaluate"] = write_manifest(root / "evaluate", "evaluate", probe, ONE_GPU, 18.0)
    if predict:
        dirs["predict"] = make_predict(root / "predict")
    return dirs


# The predict stage's files. Test set, 200 images: 100 at confidence 0.95, all right; 60 at 0.75, 45 right; 40 at
# 0.3, 10 right. Pool, 40 unlabeled images: 10 at 0.99, 10 at 0.85, 20 at 0.4. So at threshold 0.8: 100 test images,
# all right (Wilson 96.3%-100%), and 20 of the 40 pool images (50%). One class is named "NA", which stays a name.
PREDICT_TEST = [(0.95, 100, 100), (0.75, 60, 45), (0.3, 40, 10)]  # (confidence, images, right)
PREDICT_POOL = [(0.99, 10), (0.85, 10), (0.4, 20)]  # (confidence, images)
PREDICT_HEADLINE = (
    "At confidence ≥ 0.8, 50.0% of your 40 unlabeled images get a pre-label, and those pre-labels are 100.0% "
    "accurate on the test set (95% CI 96.3%–100.0%, 100 test images); the rest need a person."
)


def make_predict(folder: Path) -> Path:
    """A predict stage directory: test_predictions.csv, prelabels.csv and prelabels.parquet, and its manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    test = []
    for confidence, images, right in PREDICT_TEST:
        for i in range(images):
            label = "NA" if i % 2 else "cat"
            predicted = label if i < right else {"NA": "cat", "cat": "NA"}[label]
            test.append({"image": f"t{len(test)}", "label": label, "predicted": predicted, "confidence": confidence})
    pd.DataFrame(test).to_csv(folder / "test_predictions.csv", index=False)
    pool = [
        {"image": f"u{i}", "path": "", "predicted": "cat", "confidence": confidence}
        for confidence, images in PREDICT_POOL
        for i in range(images)
    ]
    table = pd.DataFrame(pool).astype({"confidence": "float32"})
    table.to_csv(folder / "prelabels.csv", index=False)
    table.to_parquet(folder / "prelabels.parquet", index=False)
    metrics = {"model": "distill[10pct]", "num_prelabeled": len(pool), "num_test": len(test)}
    return write_manifest(folder, "predict", metrics, ONE_GPU, 30.0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


class _Cells(HTMLParser):
    """The text of every <td> of an HTML page, table by table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        self.inside = tag == "td"
        if self.inside:
            self.tables[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self.inside = self.inside and tag != "td"

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.tables[-1][-1] += data


def html_cells(text: str) -> list[list[str]]:
    """Body cells of every HTML table, table by table."""
    parser = _Cells()
    parser.feed(text)
    return parser.tables


def markdown_cells(text: str) -> list[list[str]]:
    """Body cells of every Markdown table, table by table (header and rule rows left out)."""
    tables: list[list[str]] = []
    for block in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.MULTILINE):
        rows = block.strip().splitlines()[2:]
        tables.append([cell.strip() for row in rows for cell in row.strip("|").split(" | ")])
    return tables
