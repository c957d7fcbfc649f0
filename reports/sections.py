"""The order and titles of the report's sections, shared by the Markdown and HTML pages."""

from __future__ import annotations

from dataclasses import dataclass

from reports.assumptions import assumptions
from reports.report_data import LabelBudgetReport
from reports.tables import SAVINGS_NOTE, TOP_K_NOTE, Table, accuracy_table, compute_table, encoder_note, savings_table

TITLE = "Label-budget report"
PLOT_FILE = "accuracy_vs_labels.png"
PLOT_ALT = "Top-1 accuracy against number of labels, one line per method"


@dataclass(frozen=True)
class Section:
    title: str
    table: Table | None = None
    notes: tuple[str, ...] = ()
    plot: bool = False  # the accuracy plot goes after the notes
    bullets: tuple[str, ...] = ()


def sections(report: LabelBudgetReport) -> list[Section]:
    encoder = encoder_note(report)
    return [
        Section("Accuracy per label budget", accuracy_table(report), (TOP_K_NOTE, *([encoder] if encoder else []))),
        Section("Accuracy against number of labels", plot=True),
        Section("Labels the supervised baseline would need", savings_table(report), (SAVINGS_NOTE,)),
        Section("Compute cost", compute_table(report)),
        Section("Assumptions", bullets=tuple(assumptions(report))),
    ]
