"""Compute cost of each stage: wall-clock time x number of devices x the price of a device-hour.

A device is what `device_hour_price` prices: one GPU, or one whole CPU machine. The manifest's `processes` counts the
processes over all machines (as `accelerate launch --num_processes`), one per GPU, so a CUDA stage used `processes`
devices; CPU processes share their machine, so a CPU stage used `machines` devices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipeline.manifest import split_instance

STAGE_ORDER = ("subsets", "pretrain", "baseline", "finetune", "distill", "evaluate", "report")
TOTAL = "total"


@dataclass(frozen=True)
class StageCost:
    stage: str  # stage instance name, or TOTAL
    device: str  # cuda | cpu ("" for the total)
    device_name: str
    processes: int | None  # None for the total: stages ran on different device counts, some at the same time
    machines: int | None
    devices: int | None
    wall_seconds: float
    device_hours: float
    cost: float


def device_count(devices: Mapping) -> int:
    """Devices a stage held: GPUs (one per process, over all machines) or CPU machines."""
    return int(devices["processes"]) if devices.get("device") == "cuda" else int(devices.get("machines", 1))


def stage_cost(name: str, manifest: Mapping, device_hour_price: float) -> StageCost:
    devices, wall = manifest["devices"], float(manifest["wall_seconds"])
    count = device_count(devices)
    hours = wall * count / 3600
    return StageCost(
        name,
        devices.get("device", ""),
        devices.get("name", ""),
        int(devices.get("processes", 1)),
        int(devices.get("machines", 1)),
        count,
        wall,
        hours,
        hours * device_hour_price,
    )


def stage_rank(name: str) -> int:
    kind, _ = split_instance(name)
    return STAGE_ORDER.index(kind) if kind in STAGE_ORDER else len(STAGE_ORDER)


def compute_costs(manifests: Mapping[str, Mapping], device_hour_price: float) -> list[StageCost]:
    """One per stage instance, in pipeline order (the given order within a stage)."""
    names = sorted(manifests, key=stage_rank)  # stable: budgets keep the order they were given in
    return [stage_cost(name, manifests[name], device_hour_price) for name in names]


def total_cost(costs: Sequence[StageCost]) -> StageCost:
    """The sum over stages. Its wall time is the sum of the stages' (independent stages may run at the same time)."""
    return StageCost(
        TOTAL,
        "",
        "",
        None,
        None,
        None,
        sum(c.wall_seconds for c in costs),
        sum(c.device_hours for c in costs),
        sum(c.cost for c in costs),
    )
