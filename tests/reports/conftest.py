from pathlib import Path

import pytest

from tests.reports.report_fixtures import make_run


@pytest.fixture
def stage_dirs(tmp_path: Path) -> dict[str, Path]:
    return make_run(tmp_path / "run")
