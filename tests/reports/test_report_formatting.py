import pytest

from reports.formatting import MISSING, budget, count, duration, labels_needed_text, money, percent
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, NO_BASELINE, LabelsNeeded
from reports.settings import ReportSettings


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
    assert labels_needed_text(LabelsNeeded(INTERPOLATED, 1097)) == "about 1,097"
    assert labels_needed_text(LabelsNeeded(AT_MOST, 20)) == "at most 20 labels"
    assert labels_needed_text(LabelsNeeded(BEYOND, 144)) == "beyond the measured range (> 144 labels)"
    assert labels_needed_text(LabelsNeeded(NO_BASELINE, None)) == "no baseline to compare with"


def test_settings_from_the_pipeline_config_section():
    section = {"cost_per_label": 0.1, "currency": "USD", "device_hour_price": 1.0, "full_label_baseline": True}
    assert ReportSettings.from_config(section, "digits") == ReportSettings(0.1, "USD", 1.0, "digits")
