"""Every number of the report, machine-readable, in two CSV files (their columns differ too much for one table):

- `report.csv`: one row per model (method x budget), then the pretrained encoder's linear probe and kNN: labels,
  label cost, test accuracy, labels the baseline needs, labels and money saved. Accuracies are fractions (0.653),
  not percentages; a blank cell is a number that does not apply (e.g. savings of a baseline row).
- `report_compute.csv`: one row per stage instance, then a `total` row: devices, wall seconds, device-hours, cost.

Floats are written in full precision, so a reader gets the very numbers the manifests hold.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reports.compute_cost import StageCost
from reports.report_data import LabelBudgetReport
from reports.results import EncoderResult
from reports.savings import Saving

REPORT_CSV, COMPUTE_CSV = "report.csv", "report_compute.csv"
ENCODER_METHODS = {"linear_probe": "pretrained encoder, linear probe", "knn": "pretrained encoder, kNN"}
MODEL_COLUMNS = [
    "method",
    "kind",
    "budget",
    "stage",
    "num_labels",
    "cost_per_label",
    "label_cost",
    "currency",
    "num_test",
    "test_top1",
    "test_top5",
    "baseline_labels_needed",
    "labels_needed_kind",
    "labels_saved",
    "money_saved",
]
COMPUTE_COLUMNS = [
    "stage",
    "device",
    "device_name",
    "processes",
    "machines",
    "devices",
    "wall_seconds",
    "device_hours",
    "device_hour_price",
    "compute_cost",
    "currency",
]


def model_rows(report: LabelBudgetReport) -> list[dict[str, Any]]:
    """The rows of `report.csv`: models by labels, each SimCLRv2 model with what the baseline needs for its top-1."""
    by_stage: dict[str, Saving] = {s.result.stage: s for s in report.savings}
    settings, rows = report.settings, []
    for result in report.results:
        saving = by_stage.get(result.stage)
        rows.append(
            {
                "method": result.method,
                "kind": result.kind,
                "budget": result.budget,
                "stage": result.stage,
                "num_labels": result.num_labels,
                "cost_per_label": settings.cost_per_label,
                "label_cost": report.label_cost(result.num_labels),
                "currency": settings.currency,
                "num_test": result.num_test,
                "test_top1": result.top1,
                "test_top5": result.top5,
                "baseline_labels_needed": saving.needed.labels if saving else None,
                "labels_needed_kind": saving.needed.kind if saving else None,
                "labels_saved": saving.labels_saved if saving else None,
                "money_saved": saving.money_saved if saving else None,
            }
        )
    return rows + (encoder_rows(report.encoder) if report.encoder else [])


def encoder_rows(encoder: EncoderResult) -> list[dict[str, Any]]:
    """Linear probe and kNN: fitted on every training label (`num_labels`), the same for every budget."""
    measures = {"linear_probe": encoder.linear_probe_top1, "knn": encoder.knn_top1}
    return [
        {
            "method": ENCODER_METHODS[kind],
            "kind": kind,
            "budget": "all",
            "stage": "evaluate",
            "num_labels": encoder.num_train,
            "num_test": encoder.num_test,
            "test_top1": top1,
        }
        for kind, top1 in measures.items()
        if top1 is not None
    ]


def compute_rows(report: LabelBudgetReport) -> list[dict[str, Any]]:
    settings = report.settings
    return [compute_row(cost, settings.device_hour_price, settings.currency) for cost in [*report.costs, report.total]]


def compute_row(cost: StageCost, device_hour_price: float, currency: str) -> dict[str, Any]:
    row = asdict(cost)
    row["compute_cost"] = row.pop("cost")
    return {**row, "device_hour_price": device_hour_price, "currency": currency}


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)


def write_csvs(report: LabelBudgetReport, out_dir: Path) -> list[str]:
    """Write both files into `out_dir`; return their names."""
    write_csv(out_dir / REPORT_CSV, MODEL_COLUMNS, model_rows(report))
    write_csv(out_dir / COMPUTE_CSV, COMPUTE_COLUMNS, compute_rows(report))
    return [REPORT_CSV, COMPUTE_CSV]
