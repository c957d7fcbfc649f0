"""What the report is computed from: the stage manifests, read into pandas tables, the prices it assumes, and each
model's per-image test predictions (`test_predictions.csv` in its stage directory: image, label, predicted,
confidence; class names as strings, one row per test image). Runs from before that file lack it: their accuracies
still get intervals, only the paired comparisons are missing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.manifest import read_manifest, split_instance
from stages.data.spreadsheet_cells import unescape_cell

KINDS = ("baseline", "finetune", "distill")  # the models the report compares, in the order it lists them
# teacher_test_top1: a distilled student's teacher on the same test images (None for other models and older runs)
MODEL_COLUMNS = ["stage", "kind", "budget", "num_labels", "test_top1", "test_top5", "num_test", "teacher_test_top1"]
STAGE_COLUMNS = ["stage", "device", "device_name", "processes", "machines", "wall_seconds"]
TEST_PREDICTIONS = "test_predictions.csv"  # written by finetune (and so the baseline), distill and predict


@dataclass(frozen=True)
class ReportSettings:
    """The prices and facts the report assumes; printed in it, in plain words."""

    cost_per_label: float  # price of one label, in `currency`
    currency: str
    device_hour_price: float  # price of one device (a GPU, or a whole CPU machine) for one hour, in `currency`
    dataset: str  # where the images came from, as the stakeholder should read it (e.g. the data source)
    # Pre-labeling: the accuracy a confidence threshold must reach on the test set (its 95% Wilson lower bound).
    prelabel_target_accuracy: float = 0.95

    @classmethod
    def from_config(cls, config: Mapping[str, Any], dataset: str) -> ReportSettings:
        """From the pipeline's `report` config section; keys the report does not price (full_label_baseline) are
        ignored, so the section can grow without breaking this, and a key added later gets its default when an
        older run's config lacks it."""
        return cls(
            cost_per_label=float(config["cost_per_label"]),
            currency=str(config["currency"]),
            device_hour_price=float(config["device_hour_price"]),
            dataset=dataset,
            prelabel_target_accuracy=float(config.get("prelabel_target_accuracy", 0.95)),  # absent in older runs
        )


@dataclass(frozen=True)
class EncoderResult:
    """The evaluate stage: linear evaluation and kNN on the pretrained encoder's features."""

    linear_eval_top1: float | None
    knn_top1: float | None
    num_train: int | None  # the probe and kNN are fitted on every training label
    num_test: int | None


def read_manifests(stage_dirs: Mapping[str, Path]) -> dict[str, dict]:
    """Instance name -> its manifest, in the order given (the pipeline passes plan order)."""
    return {name: read_manifest(stage_dir) for name, stage_dir in stage_dirs.items()}


def budget_labels(manifests: Mapping[str, dict]) -> dict[str, int]:
    """Budget name -> number of labels. The subsets stage is authoritative; a baseline or fine-tuning manifest fills
    in a budget it does not list (the 100%-label baseline, or a run without the subsets stage among the inputs)."""
    labels: dict[str, int] = {}
    for name, manifest in manifests.items():
        kind, budget = split_instance(name)
        if kind in ("baseline", "finetune") and budget and "num_labels" in manifest["metrics"]:
            labels.setdefault(budget, int(manifest["metrics"]["num_labels"]))
    if "subsets" in manifests:
        labels.update({budget: int(n) for budget, n in manifests["subsets"]["metrics"]["num_labels"].items()})
    return labels


def model_table(manifests: Mapping[str, dict]) -> pd.DataFrame:
    """One row per baseline / fine-tuned / distilled model (MODEL_COLUMNS), by number of labels, then in KINDS
    order. `num_labels` is what the model's training paid for: a distilled student counts its teacher's labels."""
    labels, rows = budget_labels(manifests), []
    for name, manifest in manifests.items():
        kind, budget = split_instance(name)
        if kind not in KINDS:
            continue
        if budget not in labels:
            raise ValueError(f"{name}: no stage among the inputs says how many labels budget {budget!r} has")
        metrics = manifest["metrics"]
        rows.append(
            {
                "stage": name,
                "kind": kind,
                "budget": budget,
                "num_labels": labels[budget],
                "test_top1": metrics["test_top1"],
                "test_top5": metrics["test_top5"],
                "num_test": metrics.get("num_test"),
                "teacher_test_top1": metrics.get("teacher_test_top1"),
            }
        )
    rows.sort(key=lambda row: (row["num_labels"], KINDS.index(row["kind"])))  # stable: ties keep the given order
    types = {"num_labels": "int64", "num_test": "Int64", "teacher_test_top1": "float64"}
    return pd.DataFrame(rows, columns=MODEL_COLUMNS).astype(types)


def stage_table(manifests: Mapping[str, dict]) -> pd.DataFrame:
    """One row per stage instance (STAGE_COLUMNS), in the given order: what it ran on and for how long. `processes`
    counts the processes over all machines (as `accelerate launch --num_processes`)."""
    rows = []
    for name, manifest in manifests.items():
        devices = manifest["devices"]
        rows.append(
            {
                "stage": name,
                "device": devices.get("device", ""),
                "device_name": devices.get("name", ""),
                "processes": int(devices.get("processes", 1)),
                "machines": int(devices.get("machines", 1)),
                "wall_seconds": float(manifest["wall_seconds"]),
            }
        )
    return pd.DataFrame(rows, columns=STAGE_COLUMNS)


def encoder_result(manifests: Mapping[str, dict]) -> EncoderResult | None:
    """The evaluate stage's linear evaluation and kNN of the pretrained encoder; None without that stage."""
    if "evaluate" not in manifests:
        return None
    metrics = manifests["evaluate"]["metrics"]
    return EncoderResult(
        metrics.get("linear_eval_top1"), metrics.get("knn_top1"), metrics.get("num_train"), metrics.get("num_test")
    )


def read_predictions(path: Path) -> pd.DataFrame:
    """A `test_predictions.csv`: image, label, predicted, confidence; ids and class names stay strings (a class named
    "NA" or "None" is a name, not a missing value), read back as they were before the stage escaped them for
    spreadsheets (`'=cat` -> `=cat`, stages/data/spreadsheet_cells.py)."""
    table = pd.read_csv(
        path,
        usecols=["image", "label", "predicted", "confidence"],
        dtype={"image": str, "label": str, "predicted": str},
        keep_default_na=False,
    )
    for column in ("image", "label", "predicted"):
        table[column] = table[column].map(unescape_cell)
    return table


def model_predictions(stage_dirs: Mapping[str, Path]) -> dict[str, pd.Series]:
    """Instance name -> whether the model got each test image right (bool, indexed by image id, in the file's
    order), for every baseline / fine-tuned / distilled instance whose directory has TEST_PREDICTIONS; an instance
    without the file (a run from before it was written) is left out."""
    correct = {}
    for name, stage_dir in stage_dirs.items():
        path = Path(stage_dir) / TEST_PREDICTIONS
        if split_instance(name)[0] in KINDS and path.is_file():
            table = read_predictions(path)
            correct[name] = pd.Series((table["label"] == table["predicted"]).to_numpy(), index=table["image"])
    return correct


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as plain Python values, None where a value is missing: what JSON, CSV and the text take."""
    return table.astype(object).where(table.notna(), None).to_dict("records")
