"""Synthetic stage outputs with known numbers: manifests as the pipeline writes them, nothing trained; and readers of
the written report (CSV, table cells). (Not named conftest: the test modules import it, and every test folder has a
conftest.)"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reports import ReportSettings
from reports.inputs import model_predictions, read_manifests
from reports.label_budget import LabelBudgetReport, assemble

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

# Baseline 40% / 60% / 80% at 20 / 200 / 2,000 labels, on 500 test images. Fine-tuned at 20 labels: 50%, halfway
# between 20 and 200 in log space -> sqrt(20 x 200) = 63.2 -> 64 labels. Distilled at 20 labels: 55%, three quarters
# of the way -> 20 x 10^0.75 = 112.5 -> 113 labels. Fine-tuned at 200: 85%, beyond 2,000; distilled at 200: 35%, at
# most 20.
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
NUM_TEST = 500
# Per-image test predictions (make_run writes them by default): every model gets the first round(top-1 x 500) test
# images right, so a better model is right on every image a worse one is. At 20 labels the fine-tuned model (250
# right) beats the baseline (200) on 50 images and loses none: McNemar p = 2 / 2^50; the student (275) beats it on 75
# and its teacher on 25 (p = 2 / 2^25). At 10% the fine-tuned model beats the baseline on 125 images (but beyond the
# measured range: no saving), the student (175) loses 125 to the baseline and 250 to its teacher.
# Compute (2.50 EUR a device-hour): pretrain 4 GPU-hours = 10 EUR; at 20 labels fine-tuning 90 s on 1 GPU = 0.0625 EUR,
# distillation 720 s = 0.50 EUR, the baseline 100 s on 8 GPUs = 0.5556 EUR. Extra compute of the fine-tuned route
# 10 + 0.0625 - 0.5556 = 9.5069 EUR, net saving 11.00 - 9.5069 = 1.4931 EUR; of the distilled route
# 9.5069 + 0.50 = 10.0069 EUR, net 23.25 - 10.0069 = 13.2431 EUR: the headline's claim.
HEADLINE = (
    "With 20 labels the distilled model reaches 55.0% [50.6–59.3], significantly better than the supervised baseline "
    "with the same labels at 40.0% [35.8–44.4] (p < 0.001); supervised training needs about 113 labels for that (93 "
    "more, 23.25 EUR); net of the extra compute (10.01 EUR), that saves 13.24 EUR."
)


def write_manifest(folder: Path, stage: str, metrics: dict[str, Any], devices: dict, wall_seconds: float) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"stage": stage, "metrics": metrics, "wall_seconds": wall_seconds, "devices": devices, "artifacts": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def classifier_metrics(
    top1: float, top5: float, num_labels: int | None, num_test: int = NUM_TEST, teacher_top1: float | None = None
) -> dict[str, Any]:
    metrics: dict[str, Any] = {"test_top1": top1, "test_top5": top5, "num_test": num_test}
    if num_labels is not None:  # distill records no num_labels: it has its teacher's
        metrics["num_labels"] = num_labels
    if teacher_top1 is not None:  # distill records its teacher's top-1 on the same test images
        metrics["teacher_test_top1"] = teacher_top1
    return metrics


def window(num_test: int, right: int, start: int = 0) -> np.ndarray:
    """Right/wrong of a model that gets `right` test images right: images start, start + 1, ... (wrapping round)."""
    correct = np.zeros(num_test, dtype=bool)
    correct[(start + np.arange(right)) % num_test] = True
    return correct


def write_predictions(folder: Path, correct: Sequence[bool] | np.ndarray) -> None:
    """A classifier stage's test_predictions.csv: test image i is t<i> and the model got it right iff correct[i]. One
    class is named "NA", which stays a name."""
    classes = ["cat", "NA", "dog"]
    rows = []
    for i, right in enumerate(correct):
        label = classes[i % 3]
        predicted = label if right else classes[(i + 1) % 3]
        rows.append({"image": f"t{i}", "label": label, "predicted": predicted, "confidence": 0.9 if right else 0.6})
    pd.DataFrame(rows).to_csv(folder / "test_predictions.csv", index=False)


def make_run(
    root: Path,
    classifiers: dict[str, tuple] = CLASSIFIERS,
    evaluate: bool = True,
    predict: bool = False,
    predictions: bool | Mapping[str, Sequence[bool] | np.ndarray | None] = True,
    num_test: int = NUM_TEST,
    teacher_top1: bool = True,
) -> dict[str, Path]:
    """Stage dirs of a synthetic run: instance name -> dir, in plan order. subsets lists 20labels and 10pct only, so
    the 100% baseline's labels come from its own manifest. `predict`: with the predict stage's files (make_predict).
    `predictions`: each classifier's test_predictions.csv (window(num_test, round(top-1 x num_test))); False: none, as
    in runs from before the file; a mapping replaces the named models' right/wrong (None: that model has no file).
    `teacher_top1`: distill manifests record their teacher's top-1 (runs from before it: False)."""
    subsets = {"num_labels": {"20labels": 20, "10pct": 200}, "num_train": 2000, "num_classes": 10}
    dirs = {"subsets": write_manifest(root / "subsets", "subsets", subsets, CPU, 36.0)}
    dirs["pretrain"] = write_manifest(root / "pretrain", "pretrain", {"final_loss": 1.0}, FOUR_GPUS, 3600.0)
    overrides = predictions if isinstance(predictions, Mapping) else {}
    for name, (top1, top5, labels, devices, wall) in classifiers.items():
        teacher = classifiers.get(name.replace("distill[", "finetune[")) if name.startswith("distill[") else None
        teacher = teacher[0] if teacher and teacher_top1 else None
        metrics = classifier_metrics(top1, top5, labels, num_test, teacher)
        dirs[name] = write_manifest(root / name, name, metrics, devices, wall)
        correct = overrides.get(name, window(num_test, round(top1 * num_test)))
        if predictions is not False and correct is not None:
            write_predictions(dirs[name], correct)
    if evaluate:
        probe = {"linear_eval_top1": 0.9, "knn_top1": 0.88, "num_test": num_test, "num_train": 2000, "knn_k": 20}
        dirs["evaluate"] = write_manifest(root / "evaluate", "evaluate", probe, ONE_GPU, 18.0)
    if predict:
        dirs["predict"] = make_predict(root / "predict")
    return dirs


# The example, 360 test images: the baseline gets 216 right (60.0%) with 20 labels and 288 (80.0%) with 200;
# the fine-tuned model 228 (63.3%) with 20 labels. Its top-1 alone reads as a saving (the baseline's curve reaches
# 63.3% at 20 x 10^(1/6) = 29.4 -> 30 labels), but the models disagree on 76 images: 32 only the baseline gets right
# (window start 32), 44 only the fine-tuned model. McNemar p = 0.2067: no significant difference.
CLOSE_TEST = 360
CLOSE = {
    "baseline[20labels]": (0.6, 0.9, 20, ONE_GPU, 100.0),
    "baseline[10pct]": (0.8, 0.95, 200, ONE_GPU, 400.0),
    "finetune[20labels]": (228 / 360, 0.9, 20, ONE_GPU, 100.0),
}
CLOSE_PREDICTIONS = {"finetune[20labels]": window(CLOSE_TEST, 228, start=32)}
NO_DIFFERENCE_HEADLINE = (
    "No significant difference: with 20 labels the fine-tuned model reaches 63.3% [58.2–68.1] and the supervised "
    "baseline 60.0% [54.9–64.9] (p = 0.21); this run supports no label saving."
)


def report_of(stage_dirs: dict[str, Path], settings: ReportSettings = SETTINGS) -> LabelBudgetReport:
    """The report's data, as build_report assembles it (with the per-image predictions the stage dirs hold)."""
    return assemble(read_manifests(stage_dirs), settings, predictions=model_predictions(stage_dirs))


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
