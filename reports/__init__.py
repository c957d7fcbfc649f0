"""What a run produced, read from the stage manifests (never from training code): the label-budget report.

inputs.py         the stage manifests as pandas tables, and the report's settings (prices, data)
labels_needed.py  labels the supervised baseline needs for an accuracy, and what each SimCLRv2 model saves
compute_cost.py   wall time x devices x the price of a device-hour, per stage and in total
label_budget.py   everything the report says, computed once (LabelBudgetReport)
prelabeling.py    the predict stage's pre-labels: accuracy and coverage per confidence threshold, its section
tables.py         the tables (accuracy per budget, savings, compute cost) and how each kind of number is written
text.py           headline, notes, assumptions, sections, report.md
html_page.py      report.html, self-contained
plot.py           accuracy_vs_labels.png
csv_export.py     report.csv and report_compute.csv: every number
build.py          build_report: reads, computes, writes the files, returns the metrics
"""

from reports.build import build_report
from reports.inputs import ReportSettings

__all__ = ["ReportSettings", "build_report"]
