"""Compute cost of each stage: wall-clock time x number of devices x the price of a device-hour.

A device is what `device_hour_price` prices: one GPU, or one whole CPU machine. A stage's `processes` counts the
processes over all machines, one per GPU, so a CUDA stage used `processes` devices; CPU processes share their
machine, so a CPU stage used `machines` devices.

The extra compute of the SimCLRv2 route at a budget (`extra_compute_cost`): what pretraining, that budget's
fine-tuning (and, for the distilled model, its distillation) cost, minus what the supervised baseline with the same
labels cost. Pretraining is counted in full for every budget, though one pretraining serves them all.
"""

from __future__ import annotations

import pandas as pd

from pipeline.manifest import instance_name, split_instance

STAGE_ORDER = ("subsets", "pretrain", "baseline", "finetune", "distill", "evaluate", "predict", "select", "report")
TOTAL = "total"
COST_COLUMNS = ["devices", "device_hours", "compute_cost"]


def stage_rank(name: str) -> int:
    kind, _ = split_instance(name)
    return STAGE_ORDER.index(kind) if kind in STAGE_ORDER else len(STAGE_ORDER)


def compute_costs(stages: pd.DataFrame, device_hour_price: float) -> pd.DataFrame:
    """`stages` (inputs.stage_table) in pipeline order (the given order within a stage), with COST_COLUMNS, then a
    TOTAL row. The total's wall time is the sum of the stages' (independent stages may run at the same time);
    it has no device or device count (stages ran on different devices, some at the same time)."""
    ranks = stages["stage"].map(stage_rank)
    costs = stages.loc[ranks.sort_values(kind="stable").index].reset_index(drop=True)
    devices = costs["processes"].where(costs["device"] == "cuda", costs["machines"])
    costs.insert(costs.columns.get_loc("wall_seconds"), "devices", devices)
    costs["device_hours"] = costs["wall_seconds"] * costs["devices"] / 3600
    costs["compute_cost"] = costs["device_hours"] * device_hour_price
    # Python's sum, row after row: the same float a reader gets by adding up the rows in order.
    total = {column: sum(costs[column].tolist()) for column in ["wall_seconds", "device_hours", "compute_cost"]}
    total_row = pd.DataFrame([{"stage": TOTAL, "device": "", "device_name": "", **total}])
    table = pd.concat([costs, total_row], ignore_index=True)
    return table.astype({"processes": "Int64", "machines": "Int64", "devices": "Int64"})


def extra_compute_cost(costs: pd.DataFrame, kind: str, budget: str) -> float | None:
    """The compute the SimCLRv2 model `kind` ("finetune" or "distill") at `budget` cost beyond the supervised baseline
    at the same budget: pretrain + finetune[budget] (+ distill[budget]) - baseline[budget], from `costs`
    (compute_costs); None when one of these stages is not among the report's inputs."""
    route = ["pretrain", instance_name("finetune", budget)]
    if kind == "distill":
        route.append(instance_name("distill", budget))
    baseline = instance_name("baseline", budget)
    cost = dict(zip(costs["stage"].tolist(), costs["compute_cost"].tolist(), strict=True))
    if any(stage not in cost for stage in [*route, baseline]):
        return None
    return sum(cost[stage] for stage in route) - cost[baseline]
