"""How uncertain the report's accuracies are: a test set of a few hundred images measures an accuracy only to within a
few points, and two models tested on it differ by chance by about as much.

- One accuracy: the 95% Wilson score interval of a binomial proportion (`wilson_interval`, `accuracy_interval`).
- Two models on the same test images (`compare_paired`): only the images one model gets right and the other wrong
  (the discordant pairs) say which is better. The p-value is the exact McNemar test: under "both models are equally
  good" each discordant image is a fair coin, so the split of the discordant images is Binomial(discordant, 1/2); the
  two-sided p-value is twice the smaller tail (at most 1), computed exactly with integers. The 95% interval of the
  difference in accuracy is Newcombe's hybrid score interval for paired proportions (Newcombe 1998, method 10): the
  two Wilson intervals combined with the correlation of the paired outcomes. It is closed-form (no resampling, so no
  seed and the same numbers on every machine), stays inside [-1, 1], and keeps its coverage with few discordant
  images, where the simple Wald interval does not.

- Several comparisons in one report (`holm_adjusted`): each model against the baseline at each budget and seed is
  one test, and with many of them one would pass p < 0.05 by chance. Holm's step-down method adjusts the p-values so
  that the chance of any false claim in the report stays below 0.05 (the family-wise error rate), without assuming
  the tests independent, and is never more conservative than Bonferroni.

The test (McNemar) and the interval (Newcombe) are different methods: at the edge of significance an interval may
just exclude 0 while p is just above 0.05, or the other way round. The report decides with the p-value alone.

Pure Python and numpy: the report never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z_95 = 1.959963984540054  # the standard normal quantile of 0.975: a two-sided 95% interval
SIGNIFICANCE_LEVEL = 0.05  # a difference counts as significant when its McNemar p-value is below this


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% by default); (0, 1) without trials. Unlike the
    normal approximation it stays inside [0, 1] and is honest for proportions near 0 or 1 and small samples."""
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    p, z2 = successes / trials, z * z
    denominator = 1 + z2 / trials
    center = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == trials else min(1.0, center + half)
    return low, high


def accuracy_interval(accuracy: float | None, num_test: int | None) -> tuple[float | None, float | None]:
    """The 95% Wilson interval of an accuracy measured on `num_test` images (the images it got right: accuracy x
    num_test, rounded); (None, None) when either is unknown (a manifest from before `num_test` was recorded)."""
    if accuracy is None or num_test is None or num_test <= 0:
        return None, None
    successes = min(max(round(accuracy * num_test), 0), num_test)
    return wilson_interval(successes, num_test)


def mcnemar_p_value(only_a: int, only_b: int) -> float:
    """The exact two-sided McNemar p-value: `only_a` images only model A got right, `only_b` only model B. Twice
    the smaller tail of Binomial(only_a + only_b, 1/2), at most 1; 1.0 when the models never disagree."""
    if only_a < 0 or only_b < 0:
        raise ValueError(f"need non-negative counts, got {only_a} and {only_b}")
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    # sum of C(n, i) for i <= k, exactly: C(n, i + 1) = C(n, i) x (n - i) / (i + 1) stays an integer
    term = tail = 1
    for i in range(k):
        term = term * (n - i) // (i + 1)
        tail += term
    return min(1.0, tail / 2 ** (n - 1))  # 2 x tail / 2^n; int / int is correctly rounded, even for huge n


@dataclass(frozen=True)
class PairedCounts:
    """Two models on the same test images: how many both got right, only A, only B, neither."""

    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def num_test(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def difference(self) -> float:
        """Accuracy of A minus accuracy of B."""
        return (self.only_a - self.only_b) / self.num_test


def paired_counts(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> PairedCounts:
    """The 2x2 table of two models' right/wrong on the same images (entry i of both is the same image)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two equally long lists of right/wrong, got shapes {a.shape} and {b.shape}")
    return PairedCounts(int((a & b).sum()), int((a & ~b).sum()), int((~a & b).sum()), int((~a & ~b).sum()))


def paired_difference_interval(counts: PairedCounts, z: float = Z_95) -> tuple[float, float]:
    """Newcombe's hybrid score interval (1998, method 10) for accuracy A minus accuracy B on the same images; with
    its published correction of the correlation (none for a positive correlation up to n/2 in the cross product)."""
    n = counts.num_test
    if n == 0:
        return -1.0, 1.0
    right_a, right_b = counts.both + counts.only_a, counts.both + counts.only_b
    p1, p2 = right_a / n, right_b / n
    l1, u1 = wilson_interval(right_a, n, z)
    l2, u2 = wilson_interval(right_b, n, z)
    margins = right_a * (n - right_a) * right_b * (n - right_b)
    cross = counts.both * counts.neither - counts.only_a * counts.only_b
    phi = 0.0  # the correlation of the paired outcomes; a positive one is shrunk by n/2, as Newcombe does
    if margins and not 0 <= cross <= n / 2:
        phi = (cross - n / 2 if cross > 0 else cross) / math.sqrt(margins)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    difference = p1 - p2
    return max(-1.0, difference - math.sqrt(max(below, 0.0))), min(1.0, difference + math.sqrt(max(above, 0.0)))


@dataclass(frozen=True)
class PairedComparison:
    """Model A against model B on the same test images."""

    counts: PairedCounts
    accuracy_a: float
    accuracy_b: float
    difference: float  # accuracy_a - accuracy_b
    low: float  # 95% interval of the difference (Newcombe)
    high: float
    p_value: float  # exact McNemar

    @property
    def significant(self) -> bool:
        return self.p_value < SIGNIFICANCE_LEVEL


def compare_paired(correct_a: Sequence[bool] | np.ndarray, correct_b: Sequence[bool] | np.ndarray) -> PairedComparison:
    """A against B: their accuracies, the difference with its 95% interval, and the McNemar p-value."""
    counts = paired_counts(correct_a, correct_b)
    n = counts.num_test
    if n == 0:
        raise ValueError("no test images to compare the models on")
    low, high = paired_difference_interval(counts)
    return PairedComparison(
        counts=counts,
        accuracy_a=(counts.both + counts.only_a) / n,
        accuracy_b=(counts.both + counts.only_b) / n,
        difference=counts.difference,
        low=low,
        high=high,
        p_value=mcnemar_p_value(counts.only_a, counts.only_b),
    )


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the k-th smallest p times (m - k + 1), made non-decreasing in that
    order and capped at 1 (Holm 1979)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted
