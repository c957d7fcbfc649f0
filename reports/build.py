"""The label-budget report of a run: for each label budget, what the labels cost, how accurate each model is, how
many labels (and how much money) supervised training would need for the same accuracy, and what the compute cost.

Built from the stage manifests only (never from training code), so it can be rebuilt from a finished run:

    metrics = build_report(stage_dirs, out_dir, ReportSettings(0.10, "USD", 2.5, "CIFAR-10"))

Writes into `out_dir`: report.md, report.html (self-contained), report.csv and report_compute.csv (see
`reports.csv_export`) and accuracy_vs_labels.png. Every accuracy comes with its 95% interval, and a saving is claimed
only where the SimCLRv2 model is significantly better than the baseline with the same labels, on the per-image test
predictions each classifier stage writes (`test_predictions.csv`; see `reports.comparisons`). When the predict stage
is among the inputs (instance name `predict`), the report also says how far its pre-labels can be trusted
(`reports.prelabeling`) and writes report_prelabeling.csv. Each file is replaced atomically (stages/training/files.py):
a reader of a report being rebuilt sees the old file or the new one, never half of one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reports.csv_export import compute_rows, model_rows, write_csvs
from reports.html_page import render_html
from reports.inputs import ReportSettings, model_predictions, read_manifests
from reports.label_budget import LabelBudgetReport, assemble
from reports.plot import accuracy_plot_png
from reports.prelabeling import prelabel_headline, prelabel_rows, read_prelabeling
from reports.text import PLOT_FILE, render_markdown, report_headline
from stages.training.files import write_bytes_atomic, write_text_atomic

MARKDOWN, HTML = "report.md", "report.html"


def report_metrics(report: LabelBudgetReport, files: list[str]) -> dict[str, Any]:
    """What the report stage records as its metrics (JSON-able): the headline, the CSV rows, totals, assumptions."""
    compute = compute_rows(report)
    return {
        "headline": report_headline(report),
        "rows": model_rows(report),
        "compute": compute,
        "total_compute_cost": compute[-1]["compute_cost"],
        "baseline_monotone": report.baseline_monotone,
        "settings": asdict(report.settings),
        "num_test": report.test_sizes,
        "prelabeling": prelabel_rows(report.prelabeling),  # [] without the predict stage
        "prelabel_headline": prelabel_headline(report.prelabeling) if report.prelabeling else None,
        "files": files,
    }


def build_report(stage_dirs: Mapping[str, Path], out_dir: Path, settings: ReportSettings) -> dict[str, Any]:
    """Write the report of the run whose stage instances are `stage_dirs` (instance name -> stage dir) into `out_dir`
    and return its metrics."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifests = read_manifests(stage_dirs)
    prelabeling = read_prelabeling(stage_dirs, manifests, settings.prelabel_target_accuracy)
    report = assemble(manifests, settings, prelabeling, model_predictions(stage_dirs))
    plot = accuracy_plot_png(report)
    write_bytes_atomic(out_dir / PLOT_FILE, plot)
    write_text_atomic(out_dir / MARKDOWN, render_markdown(report))
    write_text_atomic(out_dir / HTML, render_html(report, plot))
    return report_metrics(report, [MARKDOWN, HTML, *write_csvs(report, out_dir), PLOT_FILE])
