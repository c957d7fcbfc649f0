"""What a run produced, read from the stage manifests (never from training code): the label-budget report.

inputs.py         the stage manifests as pandas tables, the per-image test predictions, the settings (prices, data)
statistics.py     the uncertainty of accuracies: Wilson intervals, the paired McNemar test and Newcombe interval
comparisons.py    each SimCLRv2 model against the baseline with the same labels, each student against its teacher
labels_needed.py  labels the supervised baseline needs for an accuracy, and what each SimCLRv2 model saves
compute_cost.py   wall time x devices x the price of a device-hour, per stage and in total
label_budget.py   everything the report says, computed once (LabelBudgetReport)
prelabeling.py    the predict stage's pre-labels: accuracy and coverage per confidence threshold, its section
tables.py         the tables (accuracy, savings, student and teacher, compute cost) and how numbers are written
text.py           headline, notes, assumptions, sections, report.md
html_page.py      report.html, self-contained
plot.py           accuracy_vs_labels.png
csv_export.py     report.csv and report_compute.csv: every number
build.py          build_report: reads, computes, writes the files, returns the metrics
"""

from reports.build import build_report
from reports.inputs import ReportSettings

__all__ = ["ReportSettings", "build_report"]
