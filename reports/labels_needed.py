"""How many labels the supervised baseline needs for a given top-1 accuracy, and what each SimCLRv2 model saves.

The need is read off the baseline's measured curve: straight lines between its budgets in accuracy against
log(labels), because accuracy grows roughly with the logarithm of the label count. Never extrapolated: above the best
measured accuracy the answer is "beyond the measured range", at or below the accuracy of the smallest budget it is
"at most N labels".

A saving (the need minus the labels the model used, and what they cost) is claimed only for an estimate between two
measured budgets, and only for a model significantly better than the baseline trained with the same labels
(`comparison` == "better", reports.comparisons): a point estimate a few test images could reverse claims nothing.
The net saving is the money saved minus the extra compute of the SimCLRv2 route (compute_cost.extra_compute_cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pandas as pd

from reports.comparisons import BETTER
from reports.compute_cost import extra_compute_cost

INTERPOLATED = "interpolated"  # `labels` is the estimate, rounded up
AT_MOST = "at_most"  # the baseline already reaches it with `labels` (its smallest budget): no saving claimed
BEYOND = "beyond"  # the baseline never reached it; it would need more than `labels` (its largest budget)
NO_BASELINE = "no_baseline"  # no baseline in the run: nothing to compare with

Point = tuple[int, float]  # (number of labels, top-1 accuracy)
SIMCLR_KINDS = ("finetune", "distill")
# baseline_labels_needed / labels_needed_kind: where the baseline's curve reaches the model's top-1, for every
# SimCLRv2 model (a reading of point estimates); labels_saved, money_saved, net_saving: only where a saving is claimed.
SAVING_COLUMNS = [
    "baseline_labels_needed",
    "labels_needed_kind",
    "labels_saved",
    "money_saved",
    "extra_compute_cost",
    "net_saving",
]


@dataclass(frozen=True)
class LabelsNeeded:
    kind: str  # INTERPOLATED | AT_MOST | BEYOND | NO_BASELINE
    labels: int | None  # see the kinds; None only for NO_BASELINE


def running_max(points: Sequence[Point]) -> list[Point]:
    """Sorted by labels, each accuracy raised to the best reached with at most that many labels: a curve that never
    falls, so every accuracy has one smallest label count that reaches it."""
    curve, best = [], -math.inf
    for labels, accuracy in sorted(points):
        best = max(best, accuracy)
        curve.append((labels, best))
    return curve


def is_monotone(points: Sequence[Point]) -> bool:
    """Whether more labels never gave the baseline a lower accuracy (if not, `running_max` changed the curve)."""
    return [accuracy for _, accuracy in sorted(points)] == [accuracy for _, accuracy in running_max(points)]


def ceil_labels(estimate: float) -> int:
    # exp(log(...)) is off by an ulp or so: 100.00000000000001 labels must stay 100, not become 101.
    return math.ceil(estimate * (1 - 1e-12))


def log_interpolate(low: Point, high: Point, accuracy: float) -> float:
    """Labels at `accuracy` on the straight line from `low` to `high` in accuracy against log(labels)."""
    (n0, a0), (n1, a1) = low, high
    fraction = (accuracy - a0) / (a1 - a0)
    return math.exp(math.log(n0) + fraction * (math.log(n1) - math.log(n0)))


def labels_needed(points: Sequence[Point], accuracy: float) -> LabelsNeeded:
    """Labels the baseline needs for `accuracy`, from its measured `points` (any order; the curve's running maximum)."""
    if not points:
        return LabelsNeeded(NO_BASELINE, None)
    curve = running_max(points)
    if accuracy <= curve[0][1]:
        return LabelsNeeded(AT_MOST, curve[0][0])
    if accuracy > curve[-1][1]:
        return LabelsNeeded(BEYOND, curve[-1][0])
    low, high = next((p, q) for p, q in pairwise(curve) if p[1] < accuracy <= q[1])
    return LabelsNeeded(INTERPOLATED, ceil_labels(log_interpolate(low, high, accuracy)))


def baseline_points(models: pd.DataFrame) -> list[Point]:
    """(labels, top-1) of the supervised baseline at each measured budget: the curve "labels needed" is read from."""
    baseline = models[models["kind"] == "baseline"]
    mean = baseline.groupby("num_labels", sort=True)["test_top1"].mean()  # several subset seeds: their mean
    return list(zip(mean.index.tolist(), mean.tolist(), strict=True))


def saving(
    num_labels: int,
    top1: float,
    baseline: Sequence[Point],
    cost_per_label: float,
    significant: bool = True,
    extra_compute: float | None = None,
) -> dict[str, Any]:
    """The SAVING_COLUMNS of one SimCLRv2 model; labels_saved is negative where the baseline needs fewer labels.
    `significant`: whether the model is significantly better than the baseline with the same labels; if not, no
    saving is claimed. `extra_compute`: the route's extra compute cost (None: unknown, so no net saving)."""
    needed = labels_needed(baseline, top1)
    estimate = needed.kind == INTERPOLATED  # a bound is no estimate: no saving
    saved = needed.labels - num_labels if estimate and significant else None
    money = None if saved is None else saved * cost_per_label
    return {
        "baseline_labels_needed": needed.labels,
        "labels_needed_kind": needed.kind,
        "labels_saved": saved,
        "money_saved": money,
        "extra_compute_cost": extra_compute,
        "net_saving": None if money is None or extra_compute is None else money - extra_compute,
    }


def with_savings(models: pd.DataFrame, cost_per_label: float, costs: pd.DataFrame) -> pd.DataFrame:
    """`models` (inputs.model_table with reports.comparisons' columns) with the SAVING_COLUMNS, filled for each
    fine-tuned or distilled model; `costs`: compute_cost.compute_costs, for the net saving."""
    baseline = baseline_points(models)
    rows = [
        saving(
            row.num_labels,
            row.test_top1,
            baseline,
            cost_per_label,
            significant=row.comparison == BETTER,
            extra_compute=extra_compute_cost(costs, row.kind, row.budget),
        )
        if row.kind in SIMCLR_KINDS
        else {}
        for row in models.itertuples()
    ]
    savings = pd.DataFrame(rows, index=models.index, columns=SAVING_COLUMNS)
    types = {"baseline_labels_needed": "Int64", "labels_saved": "Int64"}
    types |= dict.fromkeys(["money_saved", "extra_compute_cost", "net_saving"], "float64")
    savings = savings.astype(types)
    return pd.concat([models, savings], axis=1)
