"""The report's tables and number formats (reports/tables.py)."""

import pytest

from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, NO_BASELINE
from reports.tables import MISSING, budget, count, duration, labels_needed_text, money, percent, stage_label


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
