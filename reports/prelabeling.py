"""Pre-labeling: how far the model's guesses for the unlabeled images can be trusted, read from the files the
`predict` stage writes into its directory (instance name PREDICT among the report's inputs; no such input, no
section):

    test_predictions.csv   image, label, predicted, confidence: every test image (class names, not indices)
    prelabels.parquet      the unlabeled pool, one row per image, with its `confidence` (prelabels.csv when the
                           Parquet file is missing); layout in stages/evaluation/prelabels.py
    manifest.json          metrics: {"model": "distill[10pct]", "num_prelabeled": N, "num_test": M}

For each confidence threshold t the threshold table says: the share of the test set with confidence >= t, the
accuracy of those test images with a 95% Wilson interval, and the share of the pool with confidence >= t (the
images that would get a pre-label). Confidences are compared as float32, as the stage computes them, so a CSV and a
Parquet file of the same numbers give the same table.

The threshold the headline reports is chosen from the test-set numbers and the target accuracy alone
(`ReportSettings.prelabel_target_accuracy`): the lowest threshold whose Wilson lower bound reaches the target. When
none does the headline says so, and names the threshold with the highest lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.manifest import split_instance
from reports.inputs import TEST_PREDICTIONS, read_predictions, records
from reports.statistics import wilson_interval
from reports.tables import METHOD_NAMES, Table, budget, count, percent

PREDICT = "predict"  # the predict stage's instance name among the report's inputs
PRELABELS_PARQUET, PRELABELS_CSV = "prelabels.parquet", "prelabels.csv"
DEFAULT_THRESHOLDS = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
TABLE_COLUMNS = [
    "threshold",
    "test_count",  # test images with confidence >= threshold
    "test_share",  # ... as a share of the test set
    "test_correct",  # ... of them predicted right
    "test_accuracy",  # test_correct / test_count; None without test images
    "test_accuracy_low",  # 95% Wilson interval of test_accuracy
    "test_accuracy_high",
    "pool_count",  # unlabeled images with confidence >= threshold: the ones that get a pre-label
    "pool_share",  # ... as a share of the pool; None for an empty pool
]
CSV_COLUMNS = ["model", "target_accuracy", "chosen", *TABLE_COLUMNS, "num_test", "num_pool"]


# --- the numbers ----------------------------------------------------------------------------------------------------


def confidence_table(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    pool_confidence: Sequence[float] | np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """One row per threshold (ascending; TABLE_COLUMNS): `confidence` and `correct` are the test set's, one entry
    per test image; `pool_confidence` the unlabeled images'. An image counts at a threshold when its confidence
    (as float32) is at least the threshold (as float32)."""
    test = np.asarray(confidence, dtype=np.float32)
    right = np.asarray(correct, dtype=bool)
    if test.shape != right.shape or test.ndim != 1:
        raise ValueError(
            f"confidence and correct must be two equally long lists, got shapes {test.shape}, {right.shape}"
        )
    pool = np.sort(np.asarray(pool_confidence, dtype=np.float32).ravel())
    levels = sorted({float(t) for t in thresholds})
    if not levels or levels[0] < 0 or levels[-1] > 1:
        raise ValueError(f"thresholds must lie in [0, 1], got {list(thresholds)}")
    rows = []
    for threshold in levels:
        kept = test >= np.float32(threshold)
        n, k = int(kept.sum()), int(right[kept].sum())
        low, high = wilson_interval(k, n) if n else (None, None)
        pool_count = len(pool) - int(np.searchsorted(pool, np.float32(threshold), side="left"))
        rows.append(
            {
                "threshold": threshold,
                "test_count": n,
                "test_share": n / len(test) if len(test) else None,
                "test_correct": k,
                "test_accuracy": k / n if n else None,
                "test_accuracy_low": low,
                "test_accuracy_high": high,
                "pool_count": pool_count,
                "pool_share": pool_count / len(pool) if len(pool) else None,
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def choose_threshold(table: pd.DataFrame, target_accuracy: float) -> tuple[int | None, bool]:
    """(row of `table`, whether it reaches the target). The rule looks at the test-set columns and the target only:
    the lowest threshold whose Wilson lower bound is at least `target_accuracy`; if none, the threshold with the
    highest lower bound (the lowest such on a tie), marked as not reaching it; (None, False) without test images."""
    lows = table["test_accuracy_low"].astype(float)
    order = table["threshold"].astype(float).sort_values(kind="stable").index
    for row in order:
        if lows[row] >= target_accuracy:  # NaN (no test images) never does
            return int(row), True
    measured = [row for row in order if not math.isnan(lows[row])]
    if not measured:
        return None, False
    return int(max(measured, key=lambda row: (lows[row], -table.at[row, "threshold"]))), False


# --- reading the predict stage's files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prelabeling:
    model: str  # the instance whose classifier made the pre-labels, e.g. "distill[10pct]"
    num_test: int
    num_pool: int  # unlabeled images pre-labeled (each gets a guess; the threshold says which to trust)
    target_accuracy: float
    table: pd.DataFrame  # TABLE_COLUMNS, one row per threshold
    chosen: int | None  # the row the headline reports (choose_threshold)
    reached: bool  # whether that row's Wilson lower bound reaches the target

    @property
    def chosen_row(self) -> dict[str, Any] | None:
        return None if self.chosen is None else records(self.table.loc[[self.chosen]])[0]


def read_test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of every test image, from `test_predictions.csv`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: rerun the predict stage (simclrv2 run --force predict)")
    table = read_predictions(path)
    correct = (table["label"] == table["predicted"]).to_numpy()
    return table["confidence"].to_numpy(np.float32), correct


def read_pool_confidence(stage_dir: Path) -> np.ndarray:
    """The `confidence` column of the pre-labels: from the Parquet file (fast, one column), else the CSV."""
    if (stage_dir / PRELABELS_PARQUET).is_file():
        return pd.read_parquet(stage_dir / PRELABELS_PARQUET, columns=["confidence"])["confidence"].to_numpy(np.float32)
    if (stage_dir / PRELABELS_CSV).is_file():
        return pd.read_csv(stage_dir / PRELABELS_CSV, usecols=["confidence"])["confidence"].to_numpy(np.float32)
    raise FileNotFoundError(
        f"{stage_dir} has neither {PRELABELS_PARQUET} nor {PRELABELS_CSV}: rerun the predict stage "
        "(simclrv2 run --force predict)"
    )


def read_prelabeling(
    stage_dirs: Mapping[str, Path],
    manifests: Mapping[str, dict],
    target_accuracy: float,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> Prelabeling | None:
    """The pre-labeling section's data from the PREDICT instance among `stage_dirs`; None when it is not there
    (older runs, or a run without the predict stage)."""
    if PREDICT not in stage_dirs:
        return None
    stage_dir = Path(stage_dirs[PREDICT])
    confidence, correct = read_test_predictions(stage_dir / TEST_PREDICTIONS)
    pool = read_pool_confidence(stage_dir)
    table = confidence_table(confidence, correct, pool, thresholds)
    chosen, reached = choose_threshold(table, target_accuracy)
    metrics = manifests.get(PREDICT, {}).get("metrics", {})
    return Prelabeling(
        model_instance(str(metrics.get("model", "")), stage_dirs),
        len(confidence),
        len(pool),
        target_accuracy,
        table,
        chosen,
        reached,
    )


def model_instance(model: str, stage_dirs: Mapping[str, Path]) -> str:
    """The instance name (distill[10pct]) of the directory the predict stage read its model from, if the report
    has it among its inputs; else the path as recorded."""
    return next((name for name, path in stage_dirs.items() if Path(path) == Path(model)), model)


# --- the words and the table ----------------------------------------------------------------------------------------


def threshold_text(threshold: float) -> str:
    return f"{threshold:g}"


def model_text(model: str) -> str:
    """ "distill[10pct]" -> "SimCLRv2 distilled (10%)"."""
    try:
        kind, budget_name = split_instance(model)
    except ValueError:
        return model or "the classifier"
    name = METHOD_NAMES.get(kind, kind)
    return f"{name} ({budget(budget_name)})" if budget_name else name


def interval_text(row: dict[str, Any]) -> str:
    return f"{percent(row['test_accuracy_low'])}–{percent(row['test_accuracy_high'])}"


def evidence(row: dict[str, Any]) -> str:
    """ "97.0% accurate on the test set (95% CI 93.1%–98.9%, 180 test images)"."""
    return (
        f"{percent(row['test_accuracy'])} accurate on the test set (95% CI {interval_text(row)}, "
        f"{count(row['test_count'])} test images)"
    )


def prelabel_headline(prelabeling: Prelabeling) -> str:
    """One sentence: which share of the unlabeled images gets a pre-label one can trust, and how far."""
    row, pool = prelabeling.chosen_row, f"{count(prelabeling.num_pool)} unlabeled images"
    if prelabeling.num_pool == 0:
        return "The predict stage found no unlabeled images to pre-label."
    if row is None:
        return "The test set has no predictions to judge the pre-labels by, so every unlabeled image needs a person."
    at = f"confidence ≥ {threshold_text(row['threshold'])}"
    if prelabeling.reached:
        return (
            f"At {at}, {percent(row['pool_share'])} of your {pool} get a pre-label, and those pre-labels are "
            f"{evidence(row)}; the rest need a person."
        )
    return (
        f"No confidence threshold reliably reaches the {percent(prelabeling.target_accuracy)} accuracy target: even "
        f"the best, {at}, pre-labels {percent(row['pool_share'])} of your {pool} and is {evidence(row)}. Every "
        "pre-label needs a person's check."
    )


def prelabel_notes(prelabeling: Prelabeling) -> tuple[str, ...]:
    """The section's words: the headline, what the table shows, how the threshold was chosen, where the files are."""
    return (
        prelabel_headline(prelabeling),
        f"Pre-labels come from {model_text(prelabeling.model)}: each of the {count(prelabeling.num_pool)} unlabeled "
        "images gets the class the model finds most likely, with its confidence (the model's probability for that "
        "class). Each row keeps the images whose confidence is at least the threshold: the share of the unlabeled "
        "images that get a pre-label, and how often the model is right on the test images that are that confident "
        f"({count(prelabeling.num_test)} labeled test images in all, never trained on), with a 95% Wilson interval.",
        "The threshold is chosen from the test set alone: the lowest one whose 95% interval lies wholly at or above "
        f"the target accuracy of {percent(prelabeling.target_accuracy)} (report.prelabel_target_accuracy). The "
        "pre-labels are in prelabels.csv (opens in a spreadsheet) and prelabels.parquet in the predict stage's "
        "directory, one row per unlabeled image with the model's most likely classes; filter on `confidence`.",
    )


def prelabel_table(prelabeling: Prelabeling) -> Table:
    """One row per threshold; the chosen one is marked."""
    headers = [
        "Confidence at least",
        "Unlabeled images pre-labeled",
        "Share of unlabeled images",
        "Test images",
        "Share of test images",
        "Accuracy on them",
        "95% interval",
    ]
    rows = []
    for index, row in zip(prelabeling.table.index, records(prelabeling.table), strict=True):
        mark = " (chosen)" if index == prelabeling.chosen else ""
        measured = row["test_accuracy"] is not None
        rows.append(
            [
                threshold_text(row["threshold"]) + mark,
                count(row["pool_count"]),
                percent(row["pool_share"]),
                count(row["test_count"]),
                percent(row["test_share"]),
                percent(row["test_accuracy"]),
                interval_text(row) if measured else percent(None),
            ]
        )
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def prelabel_rows(prelabeling: Prelabeling | None) -> list[dict[str, Any]]:
    """The rows of `report_prelabeling.csv` and the report metrics' `prelabeling` table (CSV_COLUMNS): fractions in
    full precision, None where a number does not apply; [] without the predict stage."""
    if prelabeling is None:
        return []
    constant = {
        "model": prelabeling.model,
        "target_accuracy": prelabeling.target_accuracy,
        "num_test": prelabeling.num_test,
        "num_pool": prelabeling.num_pool,
    }
    return [
        {column: {**row, **constant, "chosen": bool(index == prelabeling.chosen)}[column] for column in CSV_COLUMNS}
        for index, row in zip(prelabeling.table.index, records(prelabeling.table), strict=True)
    ]
