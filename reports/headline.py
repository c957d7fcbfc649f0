"""The report's one-line headline: what the best SimCLRv2 model does with the fewest labels, against supervised
training."""

from __future__ import annotations

from collections.abc import Sequence

from reports.formatting import count, money, percent
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED
from reports.savings import Saving

MODEL_NAMES = {"finetune": "the fine-tuned model", "distill": "the distilled model"}


def headline_saving(savings: Sequence[Saving]) -> Saving:
    """At the smallest budget: the distilled student if it beats the fine-tuned model, else the fine-tuned model."""
    fewest = min(s.result.num_labels for s in savings)
    at_fewest = {s.result.kind: s for s in savings if s.result.num_labels == fewest}
    finetune, distill = at_fewest.get("finetune"), at_fewest.get("distill")
    if distill is not None and (finetune is None or distill.result.top1 > finetune.result.top1):
        return distill
    assert finetune is not None  # the fewest labels belong to some model: the student, or else the fine-tuned one
    return finetune


def comparison(saving: Saving, currency: str) -> str:
    """What supervised training needs for the same accuracy, in the wording of `labels_needed`'s kinds."""
    needed = saving.needed
    if needed.kind == INTERPOLATED:
        text = f"supervised training needs about {count(needed.labels)} labels for that"
        if saving.labels_saved is not None and saving.labels_saved > 0:
            text += f" ({count(saving.labels_saved)} more, {money(saving.money_saved, currency)})"
        return text
    if needed.kind == AT_MOST:
        return f"supervised training reaches that with at most {count(needed.labels)} labels, so no labels are saved"
    if needed.kind == BEYOND:
        return f"supervised training does not reach that within the measured range (> {count(needed.labels)} labels)"
    return "no supervised baseline was trained to compare with"


def headline(savings: Sequence[Saving], currency: str) -> str:
    if not savings:
        return "This run trained no SimCLRv2 model, so there is nothing to compare with supervised training."
    chosen = headline_saving(savings)
    result = chosen.result
    model = f"With {count(result.num_labels)} labels {MODEL_NAMES[result.kind]} reaches {percent(result.top1)}"
    return f"{model}; {comparison(chosen, currency)}."
