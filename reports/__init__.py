"""What a run produced, read from the stage manifests (never from training code): the label-budget report."""

from reports.label_budget import build_report
from reports.settings import ReportSettings

__all__ = ["ReportSettings", "build_report"]
