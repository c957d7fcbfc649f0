"""Labels the baseline needs for an accuracy (log-linear between measured budgets, never extrapolated), and savings."""

import math

import pytest

from reports.comparisons import BETTER, NOT_SIGNIFICANT
from reports.compute_cost import compute_costs
from reports.inputs import model_table, read_manifests, records, stage_table
from reports.labels_needed import (
    AT_MOST,
    BEYOND,
    INTERPOLATED,
    NO_BASELINE,
    LabelsNeeded,
    ceil_labels,
    is_monotone,
    labels_needed,
    running_max,
    saving,
    with_savings,
)

CURVE = [(10, 0.40), (1000, 0.80)]


def test_midpoint_in_log_space_is_the_geometric_mean():
    # halfway in accuracy between 10 and 1,000 labels is 100 labels, not 505, and float noise does not round it to 101
    assert labels_needed(CURVE, 0.60) == LabelsNeeded(INTERPOLATED, 100)


def test_estimate_is_rounded_up():
    needed = labels_needed([(20, 0.4), (200, 0.6)], 0.5)  # sqrt(4000) = 63.25
    assert needed == LabelsNeeded(INTERPOLATED, 64)


def test_the_right_segment_of_several():
    points = [(2000, 0.8), (20, 0.4), (200, 0.6)]  # any order
    assert labels_needed(points, 0.7) == LabelsNeeded(INTERPOLATED, 633)  # sqrt(200 x 2000) = 632.46
    assert labels_needed(points, 0.6) == LabelsNeeded(INTERPOLATED, 200)  # a measured point exactly
    assert labels_needed(points, 0.8) == LabelsNeeded(INTERPOLATED, 2000)  # the best measured accuracy: in range


def test_above_the_best_baseline_is_beyond_the_range_not_extrapolated():
    assert labels_needed(CURVE, 0.81) == LabelsNeeded(BEYOND, 1000)


def test_at_or_below_the_smallest_budget_is_at_most():
    assert labels_needed(CURVE, 0.40) == LabelsNeeded(AT_MOST, 10)
    assert labels_needed(CURVE, 0.10) == LabelsNeeded(AT_MOST, 10)


def test_no_baseline():
    assert labels_needed([], 0.5) == LabelsNeeded(NO_BASELINE, None)


def test_a_single_baseline_point_gives_only_bounds():
    assert labels_needed([(50, 0.6)], 0.7) == LabelsNeeded(BEYOND, 50)
    assert labels_needed([(50, 0.6)], 0.5) == LabelsNeeded(AT_MOST, 50)


def test_non_monotone_baseline_uses_its_running_maximum():
    points = [(10, 0.50), (100, 0.40), (1000, 0.70)]  # worse with 100 labels than with 10
    assert not is_monotone(points)
    assert running_max(points) == [(10, 0.50), (100, 0.50), (1000, 0.70)]
    # 0.6 lies halfway between 0.5 (reached with at most 100 labels) and 0.7 at 1,000: sqrt(100 x 1000) = 316.2
    assert labels_needed(points, 0.60) == LabelsNeeded(INTERPOLATED, 317)
    # 0.45 is reached with the 10 labels already: the dip at 100 labels must not make it "about 56"
    assert labels_needed(points, 0.45) == LabelsNeeded(AT_MOST, 10)
    assert labels_needed(points, 0.50) == LabelsNeeded(AT_MOST, 10)


def test_monotone_baseline():
    assert is_monotone([(10, 0.4), (100, 0.4), (1000, 0.7)])
    assert is_monotone([])


@pytest.mark.parametrize(("estimate", "labels"), [(100.00000000000001, 100), (63.25, 64), (7.0, 7), (1.2, 2)])
def test_ceil_labels(estimate: float, labels: int):
    assert ceil_labels(estimate) == labels


def test_ceil_labels_absorbs_float_noise_of_exp_log():
    assert ceil_labels(math.exp(math.log(10) + 0.5 * (math.log(1000) - math.log(10)))) == 100


def test_saving_of_an_estimate_in_labels_and_money():
    assert saving(20, 0.5, [(20, 0.4), (200, 0.6)], 0.25) == {
        "baseline_labels_needed": 64,
        "labels_needed_kind": INTERPOLATED,
        "labels_saved": 44,
        "money_saved": 11.0,
        "extra_compute_cost": None,
        "net_saving": None,  # the extra compute is not known
    }
    assert saving(200, 0.5, [(20, 0.4), (200, 0.6)], 0.25)["labels_saved"] == -136  # the baseline needs fewer


def test_net_saving_is_money_saved_minus_the_extra_compute():
    claimed = saving(20, 0.5, [(20, 0.4), (200, 0.6)], 0.25, extra_compute=9.5)
    assert (claimed["money_saved"], claimed["extra_compute_cost"], claimed["net_saving"]) == (11.0, 9.5, 1.5)
    assert saving(20, 0.5, [(20, 0.4), (200, 0.6)], 0.25, extra_compute=12.0)["net_saving"] == -1.0


def test_a_difference_that_is_not_significant_claims_no_saving():
    unsupported = saving(20, 0.5, [(20, 0.4), (200, 0.6)], 0.25, significant=False, extra_compute=9.5)
    assert unsupported == {
        "baseline_labels_needed": 64,  # where the curve puts it, for the record
        "labels_needed_kind": INTERPOLATED,
        "labels_saved": None,
        "money_saved": None,
        "extra_compute_cost": 9.5,
        "net_saving": None,
    }


def test_a_bound_claims_no_saving():
    for top1, kind, labels in [(0.9, BEYOND, 200), (0.3, AT_MOST, 20)]:
        assert saving(20, top1, [(20, 0.4), (200, 0.6)], 0.25) == {
            "baseline_labels_needed": labels,
            "labels_needed_kind": kind,
            "labels_saved": None,
            "money_saved": None,
            "extra_compute_cost": None,
            "net_saving": None,
        }


def test_savings_of_every_simclr_model_and_none_for_the_baseline(report):
    rows = {row["stage"]: row for row in records(report.models)}
    expected = {  # stage: (needed, kind, labels saved, money saved, net); the fixture's comment derives them
        "finetune[20labels]": (64, INTERPOLATED, 44, 11.0, 11.0 - (10 + 0.0625 - 5 / 9)),
        "distill[20labels]": (113, INTERPOLATED, 93, 23.25, 23.25 - (10 + 0.0625 + 0.5 - 5 / 9)),
        "finetune[10pct]": (2000, BEYOND, None, None, None),
        "distill[10pct]": (20, AT_MOST, None, None, None),
        "baseline[20labels]": (None, None, None, None, None),
    }
    for stage, (needed, kind, saved, money, net) in expected.items():
        row = rows[stage]
        assert (row["baseline_labels_needed"], row["labels_needed_kind"], row["labels_saved"]) == (needed, kind, saved)
        assert row["money_saved"] == pytest.approx(money)
        assert row["net_saving"] == pytest.approx(net)


def test_with_savings_claims_only_significant_improvements(stage_dirs):
    manifests = read_manifests(stage_dirs)
    models = model_table(manifests)
    models["comparison"] = [BETTER if stage == "distill[20labels]" else NOT_SIGNIFICANT for stage in models["stage"]]
    costs = compute_costs(stage_table(manifests), 2.5)
    rows = {row["stage"]: row for row in records(with_savings(models, 0.25, costs))}
    assert (rows["distill[20labels]"]["labels_saved"], rows["distill[20labels]"]["money_saved"]) == (93, 23.25)
    finetune = rows["finetune[20labels]"]  # the same curve puts its need at 64 labels: not claimed
    assert (finetune["baseline_labels_needed"], finetune["labels_saved"], finetune["money_saved"]) == (64, None, None)
    assert finetune["net_saving"] is None
    assert finetune["extra_compute_cost"] == pytest.approx(10 + 0.0625 - 5 / 9)  # still recorded
