"""The uncertainty of accuracies (reports/statistics.py): Wilson intervals, the exact McNemar test and Newcombe's
interval for a paired difference, against hand-computed and published numbers."""

import numpy as np
import pytest

from reports.statistics import (
    PairedCounts,
    accuracy_interval,
    compare_paired,
    holm_adjusted,
    mcnemar_p_value,
    paired_counts,
    paired_difference_interval,
    wilson_interval,
)


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [  # scipy.stats.binomtest(k, n).proportion_ci(0.95, "wilson")
        (9, 10, 0.5958499732047615, 0.9821237869049271),
        (100, 100, 0.9630065017930143, 1.0),
        (145, 160, 0.8510879733686995, 0.9423619930544526),
        (0, 5, 0.0, 0.43448246478317476),
    ],
)
def test_wilson_interval(successes, trials, low, high):
    assert wilson_interval(successes, trials) == pytest.approx((low, high), abs=1e-12)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(6, 5)


def test_accuracy_interval_counts_the_images_right():
    # 63.3% of 360 is 228 images (0.6333... x 360 = 227.99999999999997 rounds to 228)
    assert accuracy_interval(228 / 360, 360) == wilson_interval(228, 360)
    assert accuracy_interval(228 / 360, 360) == pytest.approx((0.5823898, 0.6814614), abs=1e-7)  # [58.2, 68.1]
    assert accuracy_interval(0.6, 360) == pytest.approx((0.5485949, 0.6492935), abs=1e-7)  # [54.9, 64.9]
    assert accuracy_interval(0.5, None) == (None, None)  # a manifest without num_test
    assert accuracy_interval(None, 500) == (None, None)


def test_mcnemar_p_value_by_hand():
    # 12 discordant images, 2 against 10. Under "equally good" the split is Binomial(12, 1/2):
    # P(X <= 2) = (C(12,0) + C(12,1) + C(12,2)) / 2^12 = (1 + 12 + 66) / 4096 = 79 / 4096; two-sided: 158 / 4096.
    assert mcnemar_p_value(2, 10) == 158 / 4096 == 0.03857421875
    assert mcnemar_p_value(10, 2) == 158 / 4096  # symmetric
    # 1 against 6: (1 + 7) / 128 x 2 = 0.125
    assert mcnemar_p_value(1, 6) == 0.125
    # 0 against 5: 2 / 32
    assert mcnemar_p_value(0, 5) == 0.0625


def test_mcnemar_p_value_without_a_difference_is_one():
    assert mcnemar_p_value(0, 0) == 1.0  # the models never disagree
    assert mcnemar_p_value(5, 5) == 1.0  # twice a tail that holds the middle is capped at 1
    assert mcnemar_p_value(4, 5) == 1.0


def test_mcnemar_p_value_matches_scipy_for_large_counts():
    stats = pytest.importorskip("scipy.stats")  # scipy comes with scikit-learn; the report does not need it
    for only_a, only_b in [(6, 16), (30, 42), (5000, 5200), (0, 1200)]:
        expected = stats.binomtest(only_a, only_a + only_b).pvalue
        assert mcnemar_p_value(only_a, only_b) == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_newcombe_interval_of_a_published_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: complete response before
    # and after consolidation therapy (Cavo et al. 2012), table [[59, 6], [16, 80]]: estimate -0.0621, Newcombe
    # square-and-add (hybrid score) interval -0.1186 to -0.0046.
    counts = PairedCounts(both=59, only_a=6, only_b=16, neither=80)
    assert counts.difference == pytest.approx(-0.0621, abs=5e-5)
    low, high = paired_difference_interval(counts)
    assert (round(low, 4), round(high, 4)) == (-0.1186, -0.0046)
    assert mcnemar_p_value(6, 16) == pytest.approx(0.0525, abs=5e-5)  # the book's exact conditional test: 0.052


def test_newcombe_interval_stays_inside_its_range():
    assert paired_difference_interval(PairedCounts(0, 5, 0, 0)) == pytest.approx((0.3855490, 1.0), abs=1e-7)
    low, high = paired_difference_interval(PairedCounts(3, 0, 0, 2))  # never disagree: symmetric around 0
    assert low == pytest.approx(-high) and 0 < high < 1


def test_compare_paired():
    a = np.array([True] * 8 + [False] * 2 + [True] * 10 + [False] * 5)  # right on 18 of 25
    b = np.array([True] * 8 + [True] * 2 + [False] * 10 + [False] * 5)  # right on 10 of 25
    assert paired_counts(a, b) == PairedCounts(both=8, only_a=10, only_b=2, neither=5)
    result = compare_paired(a, b)
    assert (result.accuracy_a, result.accuracy_b) == (18 / 25, 10 / 25)
    assert result.difference == pytest.approx(8 / 25)
    assert result.p_value == 158 / 4096 and result.significant
    assert result.low < result.difference < result.high
    assert (result.low, result.high) == paired_difference_interval(result.counts)
    assert not compare_paired(b[:12], a[:12]).significant  # 2 against 2: no difference


def test_compare_paired_needs_the_same_images():
    with pytest.raises(ValueError, match="equally long"):
        paired_counts([True, False], [True])
    with pytest.raises(ValueError, match="no test images"):
        compare_paired([], [])


def test_holm_multiplies_the_kth_smallest_p_by_the_tests_left_and_keeps_the_order():
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm_adjusted([0.02]) == [0.02] and holm_adjusted([]) == []
