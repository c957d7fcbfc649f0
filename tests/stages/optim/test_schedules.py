"""Learning-rate scaling and the warmup + cosine schedule (stages/optim/schedules.py;
docs/simclrv2.md#optimiser-and-schedule)."""

import itertools
import math

import pytest
import torch
from torch import nn

from stages.optim.schedules import scale_learning_rate, warmup_cosine, warmup_cosine_scheduler

# --- scale_learning_rate ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_lr,batch_size,expected",
    [(0.3, 256, 0.3), (0.3, 4096, 4.8), (0.3, 512, 0.6), (0.3, 64, 0.075), (1.0, 1, 1 / 256)],
)
def test_linear_scaling(base_lr, batch_size, expected):
    assert scale_learning_rate(base_lr, batch_size, "linear") == pytest.approx(expected)


@pytest.mark.parametrize(
    "base_lr,batch_size,expected",
    [(0.1, 4096, 6.4), (0.1, 1024, 3.2), (0.005, 1024, 0.16), (0.1, 1, 0.1), (0.2, 2, 0.2 * math.sqrt(2))],
)
def test_sqrt_scaling(base_lr, batch_size, expected):
    assert scale_learning_rate(base_lr, batch_size, "sqrt") == pytest.approx(expected)


@pytest.mark.parametrize("scaling", ["Linear", "square_root", "", None])
def test_bad_scaling_raises_naming_accepted_values(scaling):
    with pytest.raises(ValueError, match="linear") as raised:
        scale_learning_rate(0.1, 256, scaling)
    assert "sqrt" in str(raised.value)


@pytest.mark.parametrize("batch_size", [0, -8])
def test_bad_batch_size_raises(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        scale_learning_rate(0.1, batch_size, "linear")


# --- warmup_cosine ----------------------------------------------------------------------------------------------------


def test_warmup_is_linear_from_zero_to_one():
    assert warmup_cosine(0, 10, 110) == 0.0
    assert warmup_cosine(5, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(9, 10, 110) == pytest.approx(0.9)
    assert warmup_cosine(10, 10, 110) == pytest.approx(1.0)


def test_cosine_decay_after_warmup():
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)  # halfway through the 100 decay steps
    assert warmup_cosine(35, 10, 110) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.0, abs=1e-12)  # stays at 0 past the end


def test_no_warmup_starts_at_one():
    assert warmup_cosine(0, 0, 100) == 1.0
    assert warmup_cosine(50, 0, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 0, 100) == pytest.approx(0.0, abs=1e-12)


def test_warmup_cosine_is_monotone_up_then_down():
    values = [warmup_cosine(step, 20, 200) for step in range(201)]
    assert all(b > a for a, b in itertools.pairwise(values[:21]))  # warmup: steps 0..20
    assert all(b < a for a, b in itertools.pairwise(values[20:]))  # decay: steps 20..200
    assert max(values) == pytest.approx(1.0) and min(values) >= 0


def test_warmup_over_the_whole_run():
    """warmup_steps == total_steps: a pure linear ramp that ends at 1."""
    assert warmup_cosine(0, 10, 10) == 0.0
    assert warmup_cosine(4, 10, 10) == pytest.approx(0.4)
    assert warmup_cosine(10, 10, 10) == pytest.approx(1.0)


# --- warmup_cosine_scheduler ------------------------------------------------------------------------------------------


def test_scheduler_drives_optimizer_lr_along_warmup_cosine():
    base_lr, warmup, total = 2.0, 5, 25
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base_lr)
    scheduler = warmup_cosine_scheduler(optimizer, warmup, total)
    seen = []
    for _ in range(total + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [base_lr * warmup_cosine(step, warmup, total) for step in range(total + 1)]
    assert seen == pytest.approx(expected, abs=1e-12)
    assert seen[0] == 0 and seen[warmup] == pytest.approx(base_lr) and seen[total] == pytest.approx(0, abs=1e-12)


def test_scheduler_applies_to_every_param_group():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    scheduler = warmup_cosine_scheduler(optimizer, 0, 10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([0.5, 0.05])


@pytest.mark.parametrize("warmup,total", [(5, 0), (-1, 10), (11, 10), (0, -3)])
def test_scheduler_rejects_bad_step_counts(warmup, total):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_scheduler(optimizer, warmup, total)
