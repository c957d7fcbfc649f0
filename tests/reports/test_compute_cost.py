"""Compute cost: wall time x devices x price per stage, in pipeline order, and the total."""

import pandas as pd
import pytest

from reports.compute_cost import TOTAL, compute_costs, extra_compute_cost
from reports.inputs import STAGE_COLUMNS, records


def stages(*rows: tuple[str, float, str, int, int]) -> pd.DataFrame:
    """(stage, wall seconds, device, processes, machines) -> inputs.stage_table's columns."""
    return pd.DataFrame(
        [(stage, device, "x", processes, machines, wall) for stage, wall, device, processes, machines in rows],
        columns=STAGE_COLUMNS,
    )


def test_devices_are_gpus_or_whole_cpu_machines():
    table = stages(("pretrain", 1.0, "cuda", 4, 1), ("finetune[b]", 1.0, "cuda", 8, 2), ("subsets", 1.0, "cpu", 2, 1))
    devices = {row["stage"]: row["devices"] for row in records(compute_costs(table, 1.0))}
    assert devices["pretrain"] == 4  # one GPU per process
    # `processes` already counts every machine's processes (accelerate's --num_processes): 8 GPUs, not 16
    assert devices["finetune[b]"] == 8
    # CPU processes share their machine: the device priced is the machine
    assert devices["subsets"] == 1


def test_stage_cost_is_wall_time_times_devices_times_price():
    (pretrain, _) = records(compute_costs(stages(("pretrain", 5400.0, "cuda", 4, 1)), device_hour_price=2.0))
    assert pretrain["devices"] == 4
    assert pretrain["device_hours"] == pytest.approx(6.0)  # 1.5 h x 4 GPUs
    assert pretrain["compute_cost"] == pytest.approx(12.0)


def test_costs_in_pipeline_order_and_total():
    table = stages(
        ("evaluate", 36.0, "cuda", 1, 1),
        ("finetune[10pct]", 720.0, "cuda", 2, 1),
        ("pretrain", 3600.0, "cuda", 1, 1),
        ("finetune[20labels]", 360.0, "cuda", 1, 1),
    )
    costs = records(compute_costs(table, device_hour_price=3.0))
    assert [c["stage"] for c in costs] == ["pretrain", "finetune[10pct]", "finetune[20labels]", "evaluate", TOTAL]
    total = costs[-1]
    assert total["wall_seconds"] == pytest.approx(4716.0)
    assert total["device_hours"] == pytest.approx(1 + 0.4 + 0.1 + 0.01)
    assert total["compute_cost"] == pytest.approx(3.0 * 1.51)
    assert (total["device"], total["processes"], total["machines"], total["devices"]) == ("", None, None, None)


def test_extra_compute_of_the_simclr_route_over_the_baseline():
    table = stages(
        ("pretrain", 3600.0, "cuda", 4, 1),  # 4 device-hours: 8.00 at 2.00
        ("baseline[b]", 1800.0, "cuda", 1, 1),  # 0.5 h: 1.00
        ("finetune[b]", 900.0, "cuda", 2, 1),  # 0.5 h: 1.00
        ("distill[b]", 3600.0, "cuda", 1, 1),  # 1 h: 2.00
    )
    costs = compute_costs(table, device_hour_price=2.0)
    assert extra_compute_cost(costs, "finetune", "b") == pytest.approx(8.0 + 1.0 - 1.0)
    assert extra_compute_cost(costs, "distill", "b") == pytest.approx(8.0 + 1.0 + 2.0 - 1.0)
    assert extra_compute_cost(costs, "finetune", "other") is None  # its stages are not among the inputs
    without_pretraining = compute_costs(table[table["stage"] != "pretrain"], device_hour_price=2.0)
    assert extra_compute_cost(without_pretraining, "finetune", "b") is None
