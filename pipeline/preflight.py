"""Checks before the flow starts: everything that is cheap to check, in seconds, so that a mistake is one line
before Prefect and any training start. No image is decoded (that stays in the stages): the data is opened as the
streaming path opens it, which reads the labels alone.

What is checked: the source exists and opens; its splits, image and label columns; the labeled images per class and
the test split (the data path's own checks); every budget of every subset seed against the labels (too small, too
large); the user's subset lists and labels file; the batch sizes against the data and the processes; and, for
`--only`, the upstream outputs the chosen stages need.
"""

from __future__ import annotations

import dataclasses
import logging

from pipeline.config import ExperimentConfig
from pipeline.manifest import is_complete
from pipeline.plan import Plan, StageRun
from stages.data.label_subsets import load_subset, select_subsets
from stages.data.sources import ImageSplit, load_splits
from stages.finetune import fitted_to
from stages.training.batches import check_batch_size

log = logging.getLogger(__name__)
WHOLE_DATA_STAGES = ("pretrain", "distill")  # their batches are drawn from every training image
DATA_STAGES = ("subsets", "pretrain", "finetune", "distill", "evaluate", "predict", "select")


class UpstreamMissing(ValueError):
    """`--only` was asked for a stage whose inputs have not been produced."""


def preflight(cfg: ExperimentConfig, plan: Plan, targets: set[str], forced: set[str]) -> None:
    """Raise one clear error (a ValueError) for the first mistake found among the stages in `targets`."""
    check_upstream(plan, targets, forced)
    if not any(plan[name].module in DATA_STAGES for name in targets):
        return  # the report alone reads no data
    train, test = load_splits(dataclasses.replace(cfg.data, in_memory=False))  # opens the source, reads the labels
    log.info(
        "preflight: %d training images, %d labeled; %d test images", len(train), int(train.labeled.sum()), len(test)
    )
    labels_per_budget: dict[str, int] = {}
    for run in plan.values():
        if run.module == "subsets":  # every seed's budgets, whether or not this run draws them again
            labels_per_budget |= budget_sizes(run, train)
    for name in targets:
        check_batch(plan[name], len(train), labels_per_budget, cfg.launch.num_processes)


def budget_sizes(run: StageRun, train: ImageSplit) -> dict[str, int]:
    """Labels per budget, drawn as the subsets stage draws them (a budget too small or too large raises), or read
    from the user's list for that budget (an id not in the data raises)."""
    config = run.config
    selected = select_subsets(train.labels, list(config.budgets), config.seed)
    sizes = {name: len(rows) for name, rows in selected.items()}
    for name, path in config.user_lists.items():
        sizes[name] = len(load_subset(path, train.ids))
    return sizes


def check_batch(run: StageRun, num_images: int, labels_per_budget: dict[str, int], world: int) -> None:
    """A stage's batch against the images it draws from; fine-tuning and the baseline fit theirs to the labels."""
    if run.kind in WHOLE_DATA_STAGES:
        check_batch_size(run.config.batch_size, num_images, world, f"{run.kind}.batch_size")
    elif run.kind in ("finetune", "baseline"):
        budget = run.inputs["subset"].file.removesuffix(".json")
        if budget in labels_per_budget:
            fitted_to(run.config, labels_per_budget[budget], world)


def check_upstream(plan: Plan, targets: set[str], forced: set[str]) -> None:
    """Every input of a target comes from a target or from a finished instance; else one clear error."""
    for name in targets:
        for upstream in plan[name].upstream:
            if upstream in targets or (is_complete(plan[upstream].out_dir) and upstream not in forced):
                continue
            raise UpstreamMissing(
                f"{name} needs {upstream}, which has not finished for this config ({plan[upstream].out_dir}); "
                f"run it first (simclrv2 run ... --only {upstream}) or drop --only"
            )
