"""The label-budget report of a real (tiny) quickstart run: its numbers, its rebuild, and its page in Chromium."""

import csv
import os
import shutil
import subprocess
from html import escape

import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.cli import main as simclrv2
from pipeline.config import load_config
from pipeline.flow import simclrv2_pipeline
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from pipeline.store import experiment_lock
from reports.tables import percent
from tests.pipeline.conftest import TINY_RUN

TAB_BLUE, TAB_ORANGE = (31, 119, 180), (255, 127, 14)  # the fine-tuned and distilled lines of the plot


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """A real quickstart run (tiny settings); returns (plan, report dir)."""
    overrides = [*TINY_RUN, f"runs_dir={tmp_path_factory.mktemp('report') / 'runs'}"]
    simclrv2_pipeline(None, overrides)
    plan = build_plan(load_config(None, overrides))
    return plan, plan["report"].out_dir


@pytest.mark.slow
def test_every_number_in_the_report_is_the_stage_metric_it_came_from(quickstart_run):
    plan, report_dir = quickstart_run
    rows = list(csv.DictReader((report_dir / "report.csv").open()))
    markdown, html = (report_dir / "report.md").read_text(), (report_dir / "report.html").read_text()
    labels = read_manifest(plan["subsets"].out_dir)["metrics"]["num_labels"]
    checked = 0
    for row in rows:
        if row["stage"] not in plan or row["kind"] not in ("baseline", "finetune", "distill"):
            continue
        metrics = read_manifest(plan[row["stage"]].out_dir)["metrics"]
        assert float(row["test_top1"]) == metrics["test_top1"] and float(row["test_top5"]) == metrics["test_top5"]
        assert int(row["num_labels"]) == labels[row["budget"]]
        for value in (metrics["test_top1"], metrics["test_top5"]):
            assert percent(value) in markdown and percent(value) in html
        checked += 1
    assert checked == 6  # baseline, fine-tuned and distilled at both budgets
    probe = read_manifest(plan["evaluate"].out_dir)["metrics"]["linear_eval_top1"]
    assert percent(probe) in markdown and percent(probe) in html
    headline = read_manifest(report_dir)["metrics"]["headline"]
    assert "with 20 labels" in headline.lower() and headline in markdown and escape(headline) in html  # "p < ..."


@pytest.mark.slow
def test_simclrv2_report_rebuilds_the_report_without_training(quickstart_run, capsys):
    plan, report_dir = quickstart_run
    before = (report_dir / "report.md").read_text()
    (report_dir / "report.md").unlink()
    with pytest.raises(SystemExit) as status:
        simclrv2(["report", str(report_dir.parents[1])])  # runs/<experiment>: its newest report
    assert status.value.code == 0
    assert (report_dir / "report.md").read_text() == before
    assert read_manifest(report_dir)["metrics"]["headline"] in capsys.readouterr().out
    trained = [plan[name].out_dir / "checkpoints" for name in ("pretrain", "finetune[20labels]")]
    assert all(path.is_dir() for path in trained)


@pytest.mark.slow
def test_simclrv2_report_waits_its_turn_while_a_run_of_the_experiment_holds_the_lock(quickstart_run, capsys):
    _, report_dir = quickstart_run
    before = {path.name: path.stat().st_mtime_ns for path in report_dir.iterdir()}
    experiment_dir = report_dir.parents[1]
    with experiment_lock(experiment_dir.parent, experiment_dir.name), pytest.raises(SystemExit) as status:
        simclrv2(["report", str(experiment_dir)])
    assert status.value.code == 2
    assert "is already running" in capsys.readouterr().err
    assert {path.name: path.stat().st_mtime_ns for path in report_dir.iterdir()} == before  # nothing rewritten


@pytest.mark.slow
def test_the_html_report_renders_in_headless_chromium_with_its_plot(quickstart_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        if os.environ.get("REQUIRE_CHROMIUM"):
            pytest.fail("chromium is not installed: apt-get install chromium (the CI script does this)")
        pytest.skip("chromium is not installed (Debian package `chromium`); CI installs it and runs this test")
    _, report_dir = quickstart_run
    screenshot = tmp_path / "report.png"
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2400"]
    subprocess.run(
        [*command, f"--screenshot={screenshot}", (report_dir / "report.html").as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = (imread(screenshot)[..., :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (2400, 1200)
    assert (pixels < 128).all(axis=-1).sum() > 2000  # text and table rules: the page rendered
    for colour in (TAB_BLUE, TAB_ORANGE):  # the plot's lines (drawn only inside the embedded image)
        assert (np.abs(pixels - colour).max(axis=-1) <= 20).sum() > 200, colour
