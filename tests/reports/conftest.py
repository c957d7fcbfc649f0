from pathlib import Path

import pytest

from reports import build_report
from reports.label_budget import LabelBudgetReport
from tests.reports.report_fixtures import SETTINGS, make_run, report_of


@pytest.fixture
def stage_dirs(tmp_path: Path) -> dict[str, Path]:
    return make_run(tmp_path / "run")


@pytest.fixture
def report(stage_dirs: dict[str, Path]) -> LabelBudgetReport:
    return report_of(stage_dirs)


@pytest.fixture
def built(stage_dirs: dict[str, Path], tmp_path: Path) -> tuple[Path, dict]:
    """The report of the synthetic run, written: (its directory, its metrics)."""
    out = tmp_path / "report"
    return out, build_report(stage_dirs, out, SETTINGS)
