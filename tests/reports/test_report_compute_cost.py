import pytest

from reports.compute_cost import compute_costs, device_count, stage_cost, total_cost


def manifest(wall_seconds: float, processes: int, machines: int, device: str) -> dict:
    devices = {"processes": processes, "machines": machines, "device": device, "name": "x"}
    return {"wall_seconds": wall_seconds, "devices": devices}


def test_device_count():
    assert device_count({"processes": 4, "machines": 1, "device": "cuda"}) == 4
    # `processes` already counts every machine's processes (accelerate's --num_processes): 8 GPUs, not 16
    assert device_count({"processes": 8, "machines": 2, "device": "cuda"}) == 8
    # CPU processes share their machine: the device priced is the machine
    assert device_count({"processes": 2, "machines": 1, "device": "cpu"}) == 1


def test_stage_cost_is_wall_time_times_devices_times_price():
    cost = stage_cost("pretrain", manifest(5400.0, 4, 1, "cuda"), device_hour_price=2.0)
    assert cost.devices == 4
    assert cost.device_hours == pytest.approx(6.0)  # 1.5 h x 4 GPUs
    assert cost.cost == pytest.approx(12.0)


def test_costs_in_pipeline_order_and_total():
    manifests = {
        "evaluate": manifest(36.0, 1, 1, "cuda"),
        "finetune[10pct]": manifest(720.0, 2, 1, "cuda"),
        "pretrain": manifest(3600.0, 1, 1, "cuda"),
        "finetune[20labels]": manifest(360.0, 1, 1, "cuda"),
    }
    costs = compute_costs(manifests, device_hour_price=3.0)
    assert [c.stage for c in costs] == ["pretrain", "finetune[10pct]", "finetune[20labels]", "evaluate"]
    total = total_cost(costs)
    assert total.wall_seconds == pytest.approx(4716.0)
    assert total.device_hours == pytest.approx(1 + 0.4 + 0.1 + 0.01)
    assert total.cost == pytest.approx(3.0 * 1.51)
    assert total.devices is None
