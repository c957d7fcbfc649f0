"""What each SimCLRv2 model saves: the labels the supervised baseline would need for the same top-1 accuracy, minus
the labels the model used, and what those labels cost."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from reports.labels_needed import INTERPOLATED, LabelsNeeded, Point, labels_needed
from reports.results import ModelResult

SIMCLR_KINDS = ("finetune", "distill")


@dataclass(frozen=True)
class Saving:
    result: ModelResult
    needed: LabelsNeeded
    labels_saved: int | None  # only for an interpolated estimate; negative: the baseline needs fewer labels
    money_saved: float | None  # labels_saved x price per label


def saving(result: ModelResult, baseline: Sequence[Point], cost_per_label: float) -> Saving:
    needed = labels_needed(baseline, result.top1)
    if needed.kind != INTERPOLATED or needed.labels is None:
        return Saving(result, needed, None, None)  # a bound is no estimate: claim no saving from it
    labels_saved = needed.labels - result.num_labels
    return Saving(result, needed, labels_saved, labels_saved * cost_per_label)


def savings(results: Sequence[ModelResult], baseline: Sequence[Point], cost_per_label: float) -> list[Saving]:
    """One per fine-tuned or distilled model, in the order of `results`."""
    return [saving(r, baseline, cost_per_label) for r in results if r.kind in SIMCLR_KINDS]
