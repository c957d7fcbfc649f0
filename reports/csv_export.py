"""Every number of the report, machine-readable, in CSV files (their columns differ too much for one table):

- `report.csv`: one row per model (method x budget), then the pretrained encoder's linear evaluation and kNN: labels,
  label cost, test accuracy with its 95% Wilson interval (`test_top1_low`, `test_top1_high`); for each SimCLRv2
  model its comparison with the baseline trained on the same labels (`compared_with`; `comparison`, one of
  reports.comparisons' verdicts; `difference` = its top-1 minus the baseline's, with its 95% interval and the McNemar
  `p_value`, Holm-adjusted over the report's comparisons with the baseline, and `p_value_unadjusted`, the one
  test's), labels the baseline needs (where its curve reaches that top-1, point estimates), and, only where the
  model is significantly better, the labels, money and net amount saved (`net_saving` = `money_saved` -
  `extra_compute_cost`, the SimCLRv2 route's compute beyond the baseline's); for each distilled student the same
  against its teacher (`teacher_*`). Accuracies and differences are fractions (0.653), not percentages; a blank
  cell is a number that does not apply (e.g. savings of a baseline row) or was not measured (e.g. a p-value without
  per-image predictions).
- `report_compute.csv`: one row per stage instance, then a `total` row: devices, wall seconds, device-hours, cost.
- `report_prelabeling.csv` (only when the run has the predict stage): one row per confidence threshold: test images
  at or above it, their accuracy and its 95% Wilson interval, unlabeled images at or above it (reports.prelabeling);
  `chosen` marks the threshold the headline reports.

Floats are written in full precision, so a reader gets the very numbers the manifests hold. Numbers are written as
numbers; a text cell that a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, ...) gets a leading
`'` (stages/data/spreadsheet_cells.py). Each file is replaced atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reports.comparisons import COMPARISON_COLUMNS, TEACHER_COLUMNS
from reports.inputs import records
from reports.label_budget import LabelBudgetReport
from reports.labels_needed import SAVING_COLUMNS
from reports.prelabeling import CSV_COLUMNS as PRELABEL_CSV_COLUMNS
from reports.prelabeling import prelabel_rows
from reports.statistics import accuracy_interval
from stages.data.spreadsheet_cells import escape_cell
from stages.training.files import write_text_atomic

REPORT_CSV, COMPUTE_CSV, PRELABEL_CSV = "report.csv", "report_compute.csv", "report_prelabeling.csv"
METHODS = {"baseline": "supervised baseline", "finetune": "SimCLRv2 fine-tuned", "distill": "SimCLRv2 distilled"}
ENCODER_METHODS = {"linear_eval": "pretrained encoder, linear evaluation", "knn": "pretrained encoder, kNN"}
REPORT_CSV_COLUMNS = [
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
    "test_top1_low",
    "test_top1_high",
    "test_top5",
    *COMPARISON_COLUMNS,
    *SAVING_COLUMNS,
    "teacher_test_top1",
    "teacher_test_top1_low",
    "teacher_test_top1_high",
    *TEACHER_COLUMNS,
]
COMPUTE_CSV_COLUMNS = [
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
    """The rows of `report.csv`: models by labels, each SimCLRv2 model with what the baseline needs for its top-1,
    then the encoder's."""
    settings, rows = report.settings, []
    for model in records(report.models):
        prices = {
            "cost_per_label": settings.cost_per_label,
            "label_cost": report.label_cost(model["num_labels"]),
            "currency": settings.currency,
        }
        row = {"method": METHODS[model["kind"]], **model, **prices}
        rows.append({column: row[column] for column in REPORT_CSV_COLUMNS})
    return rows + encoder_rows(report)


def encoder_rows(report: LabelBudgetReport) -> list[dict[str, Any]]:
    """Linear evaluation and kNN: fitted on every training label (`num_labels`), the same for every budget."""
    encoder = report.encoder
    if encoder is None:
        return []
    measures = {"linear_eval": encoder.linear_eval_top1, "knn": encoder.knn_top1}
    rows = []
    for kind, top1 in measures.items():
        if top1 is None:
            continue
        low, high = accuracy_interval(top1, encoder.num_test)
        rows.append(
            {
                "method": ENCODER_METHODS[kind],
                "kind": kind,
                "budget": "all",
                "stage": "evaluate",
                "num_labels": encoder.num_train,
                "num_test": encoder.num_test,
                "test_top1": top1,
                "test_top1_low": low,
                "test_top1_high": high,
            }
        )
    return rows


def compute_rows(report: LabelBudgetReport) -> list[dict[str, Any]]:
    """The rows of `report_compute.csv`: one per stage instance, then the total."""
    settings = report.settings
    return [
        {**stage, "device_hour_price": settings.device_hour_price, "currency": settings.currency}
        for stage in records(report.compute)
    ]


def write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
    """Written atomically (readers see the old file or the new one); text cells escaped for spreadsheets."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows({key: "" if value is None else escape_cell(value) for key, value in row.items()} for row in rows)
    write_text_atomic(path, buffer.getvalue())


def write_csvs(report: LabelBudgetReport, out_dir: Path) -> list[str]:
    """Write the files into `out_dir` (the pre-labeling one only with the predict stage); return their names."""
    write_csv(out_dir / REPORT_CSV, REPORT_CSV_COLUMNS, model_rows(report))
    write_csv(out_dir / COMPUTE_CSV, COMPUTE_CSV_COLUMNS, compute_rows(report))
    if report.prelabeling is None:
        (out_dir / PRELABEL_CSV).unlink(missing_ok=True)  # a rebuild into the same folder leaves no stale table
        return [REPORT_CSV, COMPUTE_CSV]
    write_csv(out_dir / PRELABEL_CSV, PRELABEL_CSV_COLUMNS, prelabel_rows(report.prelabeling))
    return [REPORT_CSV, COMPUTE_CSV, PRELABEL_CSV]
