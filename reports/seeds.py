"""Repeated label subsets (`subset_seeds`): every budget's baseline, fine-tuned and distilled models are trained once
per subset seed (instances such as finetune[10pct-s1]). Each seed's models are compared with that seed's baseline, on
the same labels. A saving then counts only when every seed supports it, so that one lucky subset claims nothing,
and the report adds each model's mean top-1 and its standard deviation over the seeds."""

from __future__ import annotations

import pandas as pd

from pipeline.manifest import split_replicate
from reports.comparisons import BETTER

NOT_EVERY_SEED = "not_better_in_every_seed"
SEED_COLUMNS = ["kind", "budget", "num_labels", "seeds", "mean_top1", "sd_top1"]


def plain_budget(budget: str) -> str:
    """The budget without its seed: "10pct-s1" -> "10pct"."""
    return split_replicate(budget)[0] or budget


def has_seeds(models: pd.DataFrame) -> bool:
    return any(split_replicate(budget)[1] is not None for budget in models["budget"])


def require_every_seed(models: pd.DataFrame) -> pd.DataFrame:
    """A model significantly better than its baseline keeps that verdict only if it is so in every seed of its
    budget; otherwise the verdict becomes NOT_EVERY_SEED and no saving is claimed from it."""
    if not has_seeds(models) or "comparison" not in models:
        return models
    models = models.copy()
    groups = models.groupby([models["kind"], models["budget"].map(plain_budget)])["comparison"]
    every_seed_better = groups.transform(lambda verdicts: bool((verdicts == BETTER).all()))
    models.loc[(models["comparison"] == BETTER) & ~every_seed_better.astype(bool), "comparison"] = NOT_EVERY_SEED
    return models


def seed_summary(models: pd.DataFrame) -> pd.DataFrame | None:
    """Per method and budget: the labels, the number of seeds, and the mean and standard deviation of top-1 over
    them (SEED_COLUMNS); None for a run with one seed."""
    if not has_seeds(models):
        return None
    grouped = models.assign(budget=models["budget"].map(plain_budget)).groupby(["kind", "budget"], sort=False)
    summary = grouped.agg(
        num_labels=("num_labels", "first"),
        seeds=("test_top1", "size"),
        mean_top1=("test_top1", "mean"),
        sd_top1=("test_top1", "std"),
    )
    return summary.reset_index()[SEED_COLUMNS].fillna({"sd_top1": 0.0})
