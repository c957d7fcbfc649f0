"""The pre-labeling section (reports/prelabeling.py): the threshold table's numbers, the rule that picks the
threshold the headline reports, and the section in the pages, the CSV and the metrics, present only with the
predict stage."""

from html import unescape

import numpy as np
import pytest

from pipeline.config import ReportConfig
from reports import ReportSettings, build_report
from reports.inputs import read_manifests
from reports.prelabeling import (
    PREDICT,
    Prelabeling,
    choose_threshold,
    confidence_table,
    prelabel_headline,
    read_prelabeling,
)
from reports.statistics import wilson_interval
from reports.tables import count, percent
from tests.reports.report_fixtures import PREDICT_HEADLINE, SETTINGS, html_cells, make_run, markdown_cells, read_csv


def test_confidence_table_on_a_hand_made_example():
    # Test: confidences 0.95 (right), 0.9 (right), 0.9 (wrong), 0.6 (right), 0.2 (wrong); pool: 0.99, 0.9, 0.5, 0.1.
    confidence = [0.95, 0.9, 0.9, 0.6, 0.2]
    correct = [True, True, False, True, False]
    table = confidence_table(confidence, correct, [0.99, 0.9, 0.5, 0.1], thresholds=(0.9, 0.0, 0.5, 0.99))
    assert table["threshold"].tolist() == [0.0, 0.5, 0.9, 0.99]  # sorted
    assert table["test_count"].tolist() == [5, 4, 3, 0]  # 0.9 >= 0.9: a tie counts
    assert table["test_share"].tolist() == [1.0, 0.8, 0.6, 0.0]
    assert table["test_correct"].tolist() == [3, 3, 2, 0]
    assert table["test_accuracy"].tolist()[:3] == pytest.approx([0.6, 0.75, 2 / 3])
    assert table["test_accuracy"].isna().tolist() == [False, False, False, True]  # no test image that confident
    for row, (k, n) in zip(range(3), [(3, 5), (3, 4), (2, 3)], strict=True):
        low, high = wilson_interval(k, n)
        assert (table.at[row, "test_accuracy_low"], table.at[row, "test_accuracy_high"]) == (low, high)
    assert table["pool_count"].tolist() == [4, 3, 2, 1]
    assert table["pool_share"].tolist() == [1.0, 0.75, 0.5, 0.25]


def test_confidences_compare_as_float32_so_csv_and_parquet_agree():
    as_float32 = np.float32(0.9)  # 0.89999998, as a Parquet file holds it; a CSV says "0.9"
    table = confidence_table([as_float32, 0.9], [True, True], [as_float32, 0.9], thresholds=(0.9,))
    assert (table.at[0, "test_count"], table.at[0, "pool_count"]) == (2, 2)


def table_with_lows(lows: list[float | None]):
    """A threshold table whose Wilson lower bounds are `lows` (None: no test images at that threshold)."""
    confidence, correct = [], []
    table = confidence_table(confidence, correct, [], thresholds=[i / 10 for i in range(len(lows))])
    table["test_accuracy_low"] = [np.nan if low is None else low for low in lows]
    return table


@pytest.mark.parametrize(
    ("lows", "target", "chosen", "reached"),
    [
        ([0.80, 0.96, 0.95, 0.99], 0.95, 1, True),  # the lowest threshold that reaches the target
        ([0.80, 0.94, 0.95, 0.99], 0.95, 2, True),  # exactly the target reaches it
        ([0.80, 0.96, 0.90, 0.97], 0.95, 1, True),  # not monotone: still the lowest that reaches it
        ([0.80, 0.93, 0.93, None], 0.95, 1, False),  # none does: the highest lower bound, the lowest threshold of a tie
        ([None, None], 0.95, None, False),  # no test images at all
    ],
)
def test_the_threshold_rule(lows, target, chosen, reached):
    assert choose_threshold(table_with_lows(lows), target) == (chosen, reached)


@pytest.fixture
def predict_run(tmp_path):
    return make_run(tmp_path / "run", predict=True)


def prelabeling_of(stage_dirs, target: float = 0.95) -> Prelabeling:
    prelabeling = read_prelabeling(stage_dirs, read_manifests(stage_dirs), target)
    assert prelabeling is not None
    return prelabeling


def test_the_predict_stage_files_give_the_table_and_the_headline(predict_run):
    prelabeling = prelabeling_of(predict_run)
    assert (prelabeling.model, prelabeling.num_test, prelabeling.num_pool) == ("distill[10pct]", 200, 40)
    table = prelabeling.table
    assert table["threshold"].tolist() == [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
    assert table["test_count"].tolist() == [200, 160, 160, 100, 100, 100, 0, 0]
    assert table["test_correct"].tolist() == [155, 145, 145, 100, 100, 100, 0, 0]
    assert table["pool_count"].tolist() == [40, 20, 20, 20, 10, 10, 10, 10]
    assert table.at[0, "test_accuracy"] == 155 / 200  # a class named "NA" is a name, not a missing value
    assert (prelabeling.chosen, prelabeling.reached) == (3, True)  # 0.8: Wilson low 96.3% >= 95%
    assert prelabel_headline(prelabeling) == PREDICT_HEADLINE


def test_a_target_no_threshold_reaches_is_said_plainly(predict_run):
    prelabeling = prelabeling_of(predict_run, target=0.99)
    assert (prelabeling.chosen, prelabeling.reached) == (3, False)
    assert prelabel_headline(prelabeling) == (
        "No confidence threshold reliably reaches the 99.0% accuracy target: even the best, confidence ≥ 0.8, "
        "pre-labels 50.0% of your 40 unlabeled images and is 100.0% accurate on the test set (95% CI 96.3%–100.0%, "
        "100 test images). Every pre-label needs a person's check."
    )


def test_the_pool_is_read_from_the_csv_without_the_parquet_file(predict_run):
    (predict_run[PREDICT] / "prelabels.parquet").unlink()
    assert prelabeling_of(predict_run).table["pool_count"].tolist() == [40, 20, 20, 20, 10, 10, 10, 10]
    (predict_run[PREDICT] / "prelabels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="rerun the predict stage"):
        prelabeling_of(predict_run)


def test_the_target_comes_from_the_report_config():
    assert ReportSettings.from_config(ReportConfig().model_dump(), "x").prelabel_target_accuracy == 0.95
    config = ReportConfig(prelabel_target_accuracy=0.9).model_dump()
    assert ReportSettings.from_config(config, "x").prelabel_target_accuracy == 0.9
    older = {"cost_per_label": 0.1, "currency": "USD", "device_hour_price": 1.0}  # a run from before the setting
    assert ReportSettings.from_config(older, "x").prelabel_target_accuracy == 0.95


def test_without_the_predict_stage_there_is_no_section(tmp_path):
    out = tmp_path / "report"
    metrics = build_report(make_run(tmp_path / "run"), out, SETTINGS)
    assert (metrics["prelabeling"], metrics["prelabel_headline"]) == ([], None)
    assert not (out / "report_prelabeling.csv").exists()
    for page in ("report.md", "report.html"):
        assert "Pre-label" not in (out / page).read_text()


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def expected_cells(rows: list[dict[str, str]]) -> list[str]:
    """The pre-labeling table's cells, from report_prelabeling.csv alone."""
    cells = []
    for row in rows:
        low, high = number(row["test_accuracy_low"]), number(row["test_accuracy_high"])
        cells += [
            f"{float(row['threshold']):g}" + (" (chosen)" if row["chosen"] == "True" else ""),
            count(int(row["pool_count"])),
            percent(number(row["pool_share"])),
            count(int(row["test_count"])),
            percent(number(row["test_share"])),
            percent(number(row["test_accuracy"])),
            "—" if low is None else f"{percent(low)}–{percent(high)}",
        ]
    return cells


@pytest.mark.parametrize("page", ["md", "html"])
def test_the_section_in_the_pages_csv_and_metrics(predict_run, tmp_path, page):
    out = tmp_path / "report"
    metrics = build_report(predict_run, out, SETTINGS)
    rows = read_csv(out / "report_prelabeling.csv")
    assert "report_prelabeling.csv" in metrics["files"]
    assert [row["chosen"] for row in rows] == ["False"] * 3 + ["True"] + ["False"] * 4
    assert metrics["prelabel_headline"] == PREDICT_HEADLINE
    assert [row["test_count"] for row in metrics["prelabeling"]] == [int(row["test_count"]) for row in rows]
    assert metrics["prelabeling"][3]["test_accuracy_low"] == pytest.approx(0.9630065017930143)
    text = (out / f"report.{page}").read_text()
    tables = markdown_cells(text) if page == "md" else html_cells(text)
    assert tables[3] == expected_cells(rows)  # accuracy, savings, student and teacher, pre-labels, compute
    assert "Pre-labeling the unlabeled images" in tables[4]  # the predict stage's compute cost
    text = unescape(text)
    assert "Pre-labels for the unlabeled images" in text
    assert text.count(PREDICT_HEADLINE) == 2  # at the top and in its section
    assert "SimCLRv2 distilled (10%)" in text
