"""The report's tables and number formats (reports/tables.py)."""

import pytest

from reports.comparisons import BETTER, DIFFERENT_IMAGES, NO_PREDICTIONS, NOT_SIGNIFICANT, NOTHING_TO_COMPARE, WORSE
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, NO_BASELINE
from reports.tables import (
    MISSING,
    accuracy,
    budget,
    count,
    difference,
    duration,
    labels_needed_text,
    money,
    p_value,
    percent,
    significance,
    stage_label,
)


def test_percent_and_count():
    assert percent(0.6527777777777778) == "65.3%"
    assert percent(None) == MISSING
    assert count(1437) == "1,437"
    assert count(-55) == "-55"


@pytest.mark.parametrize(
    ("amount", "shown"), [(14.4, "14.40 USD"), (0.8, "0.80 USD"), (0.0234, "0.02 USD"), (0.00017, "0.0002 USD")]
)
def test_money_keeps_amounts_under_a_cent_visible(amount: float, shown: str):
    assert money(amount, "USD") == shown


def test_budget_names_as_people_write_them():
    assert [budget(name) for name in ["10pct", "12p5pct", "100pct", "250labels"]] == [
        "10%",
        "12.5%",
        "100%",
        "250 labels",
    ]


def test_duration():
    assert [duration(s) for s in [84.137, 1800, 14652]] == ["84.1 s", "30.0 min", "4.07 h"]


def test_labels_needed_wording():
    assert labels_needed_text(INTERPOLATED, 1097) == "about 1,097"
    assert labels_needed_text(AT_MOST, 20) == "at most 20 labels"
    assert labels_needed_text(BEYOND, 144) == "beyond the measured range (> 144 labels)"
    assert labels_needed_text(NO_BASELINE, None) == "no baseline to compare with"


def test_stage_label():
    assert stage_label("finetune[12p5pct]") == "Fine-tuning (12.5%)"
    assert stage_label("pretrain") == "Pretraining on unlabeled images"


def test_accuracy_with_its_interval():
    assert accuracy(228 / 360, 0.5823898, 0.6814614) == "63.3% [58.2–68.1]"
    assert accuracy(0.5) == "50.0%"  # no interval (no num_test)
    assert accuracy(None) == MISSING


def test_difference_in_points():
    assert difference(0.0333, -0.0143, 0.0807) == "+3.3 points [-1.4, +8.1]"
    assert difference(-0.25) == "-25.0 points"  # not tested: no interval
    assert difference(None) == MISSING


@pytest.mark.parametrize(
    ("p", "shown"),
    [(0.2067, "p = 0.21"), (0.0496, "p = 0.0496"), (0.0525, "p = 0.0525"), (0.0012, "p = 0.0012"), (1e-9, "p < 0.001")],
)
def test_p_values_never_round_across_the_significance_level(p, shown):
    assert p_value(p) == shown


def test_significance_wording():
    words = ("SimCLRv2", "baseline", "no baseline with the same labels")
    assert significance(BETTER, 0.01, *words) == "SimCLRv2 significantly better (p = 0.01)"
    assert significance(WORSE, 1e-5, *words) == "baseline significantly better (p < 0.001)"
    assert significance(NOT_SIGNIFICANT, 0.2067, *words) == "no significant difference (p = 0.21)"
    assert significance(NO_PREDICTIONS, None, *words) == "not tested (no per-image predictions)"
    assert significance(DIFFERENT_IMAGES, None, *words) == "not tested (different test images)"
    assert significance(NOTHING_TO_COMPARE, None, *words) == "no baseline with the same labels"
