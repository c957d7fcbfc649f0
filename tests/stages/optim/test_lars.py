"""LARS and its parameter groups (stages/optim/lars.py; docs/simclrv2.md#optimiser-and-schedule)."""

import copy
import math

import pytest
import torch
from torch import nn

from stages.optim.lars import LARS, TRUST_COEFFICIENT, lars_param_groups


def seeded_randn(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def gradients(seed: int, shape: tuple[int, ...], steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=generator) for _ in range(steps)]


@pytest.fixture(params=[True, False], ids=["foreach", "loop"])
def foreach(request) -> bool:
    """Run a test on the multi-tensor step and on the per-parameter reference loop."""
    return request.param


def run_lars(weight: torch.Tensor, grads: list[torch.Tensor], lr: float, **group) -> list[torch.Tensor]:
    """Step LARS on one parameter (in its own param group with `group`'s settings); the weights after each step."""
    param = nn.Parameter(weight.clone())
    optimizer = LARS([{"params": [param], **group}], lr=lr)
    history = []
    for grad in grads:
        param.grad = grad.clone()
        optimizer.step()
        history.append(param.detach().clone())
    return history


def by_hand(
    weight: torch.Tensor,
    grads: list[torch.Tensor],
    lr: float,
    momentum: float,
    weight_decay: float,
    adapt: bool,
    nesterov: bool = False,
    eta: float = 0.001,
) -> list[torch.Tensor]:
    """The update rule written out in plain torch (in float64), independently of stages/optim/lars.py:
    g = grad + wd * w; trust = eta * |w| / |g| if both > 0 else 1; v = m * v + lr * trust * g; w -= v."""
    w, v, history = weight.double(), torch.zeros_like(weight, dtype=torch.float64), []
    for grad in grads:
        g = grad.double() + weight_decay * w
        w_norm, g_norm = w.norm().item(), g.norm().item()
        trust = eta * w_norm / g_norm if adapt and w_norm > 0 and g_norm > 0 else 1.0
        v = momentum * v + lr * trust * g
        w = w - (momentum * v + lr * trust * g if nesterov else v)
        history.append(w.clone())
    return history


def assert_histories_match(weight: torch.Tensor, got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Compare displacements from the start (float32 LARS against the float64 reference), so that an error in a small
    trust-scaled update is not hidden by the size of the weights."""
    assert len(got) == len(expected)
    start = weight.double()
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.dtype == weight.dtype
        moved, expected_move = a.double() - start, b - start
        assert expected_move.abs().max() > 1e-3, "test setup: the update is too small to check"
        assert torch.allclose(moved, expected_move, rtol=1e-3, atol=1e-6), f"step {step}: {moved} != {expected_move}"


def test_default_trust_coefficient_is_simclr_value():
    assert TRUST_COEFFICIENT == 0.001
    assert LARS([nn.Parameter(torch.zeros(2))], lr=0.1).defaults["trust_coefficient"] == 0.001


def test_first_step_by_formula(foreach):
    """One step from scratch: w - lr * eta * |w| / |g| * g, with g = grad + wd * w."""
    weight = torch.tensor([3.0, 4.0])  # |w| = 5
    grad = torch.tensor([0.0, 1.0]) - 0.5 * weight  # g = grad + 0.5 w = (0, 1), |g| = 1
    (got,) = run_lars(weight, [grad], lr=10.0, momentum=0.9, weight_decay=0.5, foreach=foreach)
    expected = torch.tensor([3.0, 4.0 - 10.0 * 0.001 * 5.0])
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)


def test_weight_with_decay_and_trust_scaling_matches_hand_computation(foreach):
    weight, grads = seeded_randn(0, 4, 3), gradients(1, (4, 3), steps=3)
    got = run_lars(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.1, foreach=foreach)
    assert_histories_match(weight, got, by_hand(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.1, adapt=True))
    # Trust scaling and weight decay both matter: leaving either out gives different weights.
    no_trust = by_hand(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.1, adapt=False)
    no_decay = by_hand(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.0, adapt=True)
    assert not torch.allclose(got[-1].double(), no_trust[-1], rtol=0, atol=1e-4)
    assert not torch.allclose(got[-1].double(), no_decay[-1], rtol=0, atol=1e-4)


def test_custom_trust_coefficient(foreach):
    weight, grads = seeded_randn(2, 5), gradients(3, (5,), steps=3)
    got = run_lars(weight, grads, lr=0.5, momentum=0.8, trust_coefficient=0.02, foreach=foreach)
    expected = by_hand(weight, grads, lr=0.5, momentum=0.8, weight_decay=0.0, adapt=True, eta=0.02)
    assert_histories_match(weight, got, expected)


def test_excluded_parameter_is_plain_momentum_sgd(foreach):
    """A bias / BN group (lars_adapt False, weight_decay 0): v = m v + lr g; w -= v."""
    bias, grads = seeded_randn(4, 6), gradients(5, (6,), steps=3)
    got = run_lars(bias, grads, lr=0.3, momentum=0.9, weight_decay=0.0, lars_adapt=False, foreach=foreach)
    assert_histories_match(bias, got, by_hand(bias, grads, lr=0.3, momentum=0.9, weight_decay=0.0, adapt=False))
    # The same as torch's SGD with momentum (dampening 0).
    param = nn.Parameter(bias.clone())
    sgd = torch.optim.SGD([param], lr=0.3, momentum=0.9)
    for grad in grads:
        param.grad = grad.clone()
        sgd.step()
    assert torch.allclose(got[-1], param.detach(), rtol=1e-6, atol=1e-6)


def test_zero_weight_uses_trust_one(foreach):
    """|w| = 0 (e.g. a zero-initialised layer): trust = 1 on the first step, then LARS as usual."""
    weight, grads = torch.zeros(3, 2), gradients(6, (3, 2), steps=3)
    got = run_lars(weight, grads, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=foreach)
    assert torch.allclose(got[0], -0.1 * grads[0], rtol=1e-6, atol=0)  # step 1: plain lr * grad
    assert_histories_match(weight, got, by_hand(weight, grads, lr=0.1, momentum=0.9, weight_decay=1e-4, adapt=True))
    assert torch.isfinite(got[-1]).all()


def test_zero_gradient_uses_trust_one_and_stays_finite(foreach):
    weight = seeded_randn(7, 4)
    grads = [torch.zeros(4), *gradients(8, (4,), steps=2)]
    got = run_lars(weight, grads, lr=3.0, momentum=0.9, foreach=foreach)
    assert torch.equal(got[0], weight)  # g = 0: nothing moves, and no NaN from 0 / 0
    assert_histories_match(
        weight, got[1:], by_hand(weight, grads, lr=3.0, momentum=0.9, weight_decay=0.0, adapt=True)[1:]
    )


@pytest.mark.parametrize("adapt", [True, False], ids=["weight", "bias"])
def test_nesterov_matches_hand_computation(adapt, foreach):
    weight, grads = seeded_randn(9, 3, 3), gradients(10, (3, 3), steps=3)
    decay = 0.01 if adapt else 0.0
    got = run_lars(
        weight, grads, lr=1.5, momentum=0.9, weight_decay=decay, nesterov=True, lars_adapt=adapt, foreach=foreach
    )
    expected = by_hand(weight, grads, lr=1.5, momentum=0.9, weight_decay=decay, adapt=adapt, nesterov=True)
    assert_histories_match(weight, got, expected)
    classic = by_hand(weight, grads, lr=1.5, momentum=0.9, weight_decay=decay, adapt=adapt)
    assert not torch.allclose(got[-1].double(), classic[-1], rtol=0, atol=1e-4)


def test_parameters_without_grad_are_skipped(foreach):
    used, unused = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    optimizer = LARS([used, unused], lr=0.1, foreach=foreach)
    used.grad = torch.ones(2)
    optimizer.step()
    assert torch.equal(unused.detach(), torch.ones(2))
    assert not torch.equal(used.detach(), torch.ones(2))


def test_step_with_closure_returns_loss(foreach):
    param = nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = LARS([param], lr=0.1, foreach=foreach)

    def closure():
        optimizer.zero_grad()
        loss = (param**2).sum()
        loss.backward()
        return loss

    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx(5.0)
    assert not torch.equal(param.detach(), torch.tensor([1.0, -2.0]))


def test_float64_parameters_are_supported(foreach):
    """A model in double precision (`model.double()`) must be trainable with LARS too."""
    weight, grads = seeded_randn(11, 4, 3).double(), [g.double() for g in gradients(12, (4, 3), steps=3)]
    got = run_lars(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.1, foreach=foreach)
    assert_histories_match(weight, got, by_hand(weight, grads, lr=2.0, momentum=0.9, weight_decay=0.1, adapt=True))


# --- parameter groups -------------------------------------------------------------------------------------------------


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn2d = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.frozen = nn.Linear(5, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn2d(self.conv(x)).relu().mean(dim=(2, 3))
        return self.frozen(self.bn1d(self.fc(x)))


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_lars_param_groups_split_weights_from_bn_and_biases():
    model = SmallNet()
    regular, excluded = lars_param_groups(model, weight_decay=1e-4)
    assert ids(regular["params"]) == ids([model.conv.weight, model.fc.weight])
    assert len(regular["params"]) == 2
    assert regular["weight_decay"] == 1e-4 and regular["lars_adapt"] is True
    expected_excluded = [model.bn2d.weight, model.bn2d.bias, model.fc.bias, model.bn1d.weight, model.bn1d.bias]
    assert ids(excluded["params"]) == ids(expected_excluded)
    assert len(excluded["params"]) == 5
    assert excluded["weight_decay"] == 0 and excluded["lars_adapt"] is False
    frozen = ids(model.frozen.parameters())
    assert not frozen & (ids(regular["params"]) | ids(excluded["params"]))


def test_lars_param_groups_drive_the_optimizer(foreach):
    """End to end: the weight group is decayed and trust-scaled, the BN / bias group is plain momentum SGD."""
    torch.manual_seed(0)
    model = SmallNet()
    optimizer = LARS(lars_param_groups(model, weight_decay=0.1), lr=5.0, momentum=0.9, foreach=foreach)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(torch.randn(4, 3, 6, 6)).square().sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert set(grads) == {"conv.weight", "fc.weight", "bn2d.weight", "bn2d.bias", "fc.bias", "bn1d.weight", "bn1d.bias"}
    optimizer.step()
    after = {name: p.detach() for name, p in model.named_parameters()}
    for name in ("conv.weight", "fc.weight"):
        expected = by_hand(before[name], [grads[name]], lr=5.0, momentum=0.9, weight_decay=0.1, adapt=True)
        assert_histories_match(before[name], [after[name]], expected)
    for name in ("bn2d.weight", "bn2d.bias", "fc.bias", "bn1d.weight", "bn1d.bias"):
        (expected,) = by_hand(before[name], [grads[name]], lr=5.0, momentum=0.9, weight_decay=0.0, adapt=False)
        assert torch.allclose(after[name].double(), expected, rtol=1e-5, atol=1e-6), name
    assert torch.equal(after["frozen.weight"], before["frozen.weight"])


# --- learning-rate schedulers -----------------------------------------------------------------------------------------


def test_scheduler_lr_changes_take_effect(foreach):
    """A group lr set by a scheduler is the one the next step uses (bias group, momentum 0: update = lr * grad)."""
    param = nn.Parameter(torch.zeros(3))
    optimizer = LARS([{"params": [param], "lars_adapt": False}], lr=1.0, momentum=0.0, foreach=foreach)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    grad = torch.tensor([1.0, 2.0, 3.0])
    previous = param.detach().clone()
    for step in range(3):
        param.grad = grad.clone()
        optimizer.step()
        assert torch.allclose(previous - param.detach(), 0.5**step * grad, rtol=1e-6, atol=0)
        previous = param.detach().clone()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.125)


def test_scheduler_scales_trust_scaled_updates_too(foreach):
    weight, (grad,) = seeded_randn(13, 4), gradients(14, (4,), steps=1)
    (fixed,) = run_lars(weight, [grad], lr=0.2, momentum=0.0, foreach=foreach)
    param = nn.Parameter(weight.clone())
    optimizer = LARS([param], lr=0.4, momentum=0.0, foreach=foreach)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5)  # sets the group lr to 0.4 * 0.5 right away
    param.grad = grad.clone()
    optimizer.step()
    assert torch.allclose(param.detach(), fixed, rtol=0, atol=1e-7)
    assert not torch.allclose(
        param.detach(), run_lars(weight, [grad], lr=0.4, momentum=0.0, foreach=foreach)[0], rtol=0, atol=1e-5
    )


# --- the foreach step against the per-parameter loop ------------------------------------------------------------------


def test_foreach_is_the_default(monkeypatch):
    param = nn.Parameter(torch.ones(2))
    optimizer = LARS([param], lr=0.1)
    assert optimizer.defaults["foreach"] is None and optimizer.param_groups[0]["foreach"] is None

    def loop_update(*args):
        raise AssertionError("the per-parameter loop ran")

    monkeypatch.setattr(LARS, "_update", loop_update)
    param.grad = torch.ones(2)
    optimizer.step()
    assert not torch.equal(param.detach(), torch.ones(2))


def conv_net() -> nn.Sequential:
    """Conv + BN + Linear: every trainable tensor gets a real gradient (no bias feeding straight into a BN)."""
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


def conv_net_optimizer(model: nn.Module, foreach: bool, nesterov: bool):
    """LARS over the two groups (decayed + trust-scaled weights, plain BN / biases), with lr changed every step."""
    optimizer = LARS(
        lars_param_groups(model, weight_decay=0.1), lr=4.0, momentum=0.9, nesterov=nesterov, foreach=foreach
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    return optimizer, scheduler


def train_conv_net(model: nn.Module, optimizer: LARS, scheduler, inputs: list[torch.Tensor]) -> None:
    for x in inputs:
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
        scheduler.step()


def conv_net_inputs(seed: int, steps: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 6, 6, generator=generator) for _ in range(steps)]


def assert_same_parameters(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(x, y, rtol=1e-6, atol=1e-7), f"{name}: {(x - y).abs().max()}"


@pytest.mark.parametrize("nesterov", [False, True], ids=["classic", "nesterov"])
def test_foreach_matches_loop_on_a_model(nesterov, one_thread):
    torch.manual_seed(0)
    model = conv_net()
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    inputs = conv_net_inputs(1, steps=4)
    train_conv_net(model, *conv_net_optimizer(model, foreach=True, nesterov=nesterov), inputs)
    train_conv_net(twin, *conv_net_optimizer(twin, foreach=False, nesterov=nesterov), inputs)
    assert_same_parameters(model, twin)
    for (name, moved), before in zip(model.named_parameters(), start.parameters(), strict=True):
        if moved.requires_grad:
            assert not torch.allclose(moved, before, rtol=0, atol=1e-3), f"test setup: {name} barely moved"


@pytest.mark.parametrize("first,second", [(True, False), (False, True)], ids=["foreach-to-loop", "loop-to-foreach"])
def test_state_dict_moves_between_paths(first, second, one_thread):
    """A checkpoint written by one path resumes in the other exactly as it would have gone on in the first."""
    torch.manual_seed(2)
    model = conv_net()
    inputs = conv_net_inputs(3, steps=4)
    optimizer, scheduler = conv_net_optimizer(model, foreach=first, nesterov=True)
    train_conv_net(model, optimizer, scheduler, inputs[:2])
    checkpoint = copy.deepcopy(
        {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    )
    train_conv_net(model, optimizer, scheduler, inputs[2:])

    resumed = conv_net()
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer, resumed_scheduler = conv_net_optimizer(resumed, foreach=second, nesterov=True)
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_scheduler.load_state_dict(checkpoint["scheduler"])
    # As in torch's optimisers, the groups' foreach flag is restored from the checkpoint: switch it explicitly.
    assert all(group["foreach"] is first for group in resumed_optimizer.param_groups)
    for group in resumed_optimizer.param_groups:
        group["foreach"] = second
    train_conv_net(resumed, resumed_optimizer, resumed_scheduler, inputs[2:])
    assert_same_parameters(model, resumed)
    for param, resumed_param in zip(model.parameters(), resumed.parameters(), strict=True):
        if param.requires_grad:
            buffers = (
                optimizer.state[param]["momentum_buffer"],
                resumed_optimizer.state[resumed_param]["momentum_buffer"],
            )
            assert torch.allclose(*buffers, rtol=1e-6, atol=1e-7)


def test_state_dict_without_foreach_flag_loads():
    """Checkpoints from before the foreach step have no "foreach" in their groups: they load, and step with it."""
    param = nn.Parameter(torch.ones(2))
    optimizer = LARS([param], lr=0.1, foreach=False)
    param.grad = torch.ones(2)
    optimizer.step()
    old = optimizer.state_dict()
    del old["param_groups"][0]["foreach"]
    restored = LARS([param], lr=0.1, foreach=False)
    restored.load_state_dict(old)
    assert restored.param_groups[0]["foreach"] is None
    restored.step()


def test_foreach_trust_is_one_for_zero_weights_and_zero_grads_among_others():
    """In one stacked trust computation, tensors with |w| = 0 or |g| = 0 get trust 1, the others eta |w| / |g|."""
    zero_weight, zero_grad, regular = (
        nn.Parameter(w) for w in (torch.zeros(3, 2), seeded_randn(15, 4), seeded_randn(16, 5))
    )
    params = [zero_weight, zero_grad, regular]
    grads = [seeded_randn(17, 3, 2), torch.zeros(4), seeded_randn(18, 5)]
    before = [p.detach().clone() for p in params]
    optimizer = LARS(params, lr=5.0, momentum=0.9, foreach=True)
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad.clone()
    optimizer.step()
    assert torch.allclose(zero_weight.detach(), -5.0 * grads[0], rtol=1e-6, atol=0)  # trust 1: plain lr * grad
    assert torch.equal(zero_grad.detach(), before[1])  # g = 0: nothing moves, and no NaN from 0 / 0
    expected = by_hand(before[2], [grads[2]], lr=5.0, momentum=0.9, weight_decay=0.0, adapt=True)
    assert_histories_match(before[2], [regular.detach()], expected)
    assert all(torch.isfinite(optimizer.state[p]["momentum_buffer"]).all() for p in params)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))  # .grad is left as it was


def test_parameter_whose_grad_is_none_keeps_weight_and_momentum(foreach):
    used, paused, never = (nn.Parameter(seeded_randn(seed, 3)) for seed in (19, 20, 21))
    optimizer = LARS([used, paused, never], lr=0.5, foreach=foreach)
    used.grad, paused.grad = torch.ones(3), torch.ones(3)
    optimizer.step()
    paused_weight, paused_buffer = paused.detach().clone(), optimizer.state[paused]["momentum_buffer"].clone()
    used_weight = used.detach().clone()
    paused.grad = None
    optimizer.step()
    assert torch.equal(paused.detach(), paused_weight)
    assert torch.equal(optimizer.state[paused]["momentum_buffer"], paused_buffer)
    assert not torch.equal(used.detach(), used_weight)
    assert never not in optimizer.state and torch.equal(never.detach(), seeded_randn(21, 3))


def test_foreach_groups_mixed_dtypes():
    """One param group holding float32, float64 and bfloat16 tensors: each dtype is stepped as the loop steps it
    (bfloat16 only to its resolution: the loop rounds lr to bfloat16 before multiplying, the foreach path does not)."""
    weights = [seeded_randn(22, 4, 3), seeded_randn(23, 5).double(), seeded_randn(24, 6).bfloat16()]
    grads = [[g.to(w.dtype) for g in gradients(25 + i, tuple(w.shape), steps=3)] for i, w in enumerate(weights)]
    results = {}
    for foreach in (True, False):
        params = [nn.Parameter(w.clone()) for w in weights]
        optimizer = LARS([{"params": params, "weight_decay": 0.1}], lr=2.0, foreach=foreach)
        for step in range(3):
            for param, param_grads in zip(params, grads, strict=True):
                param.grad = param_grads[step].clone()
            optimizer.step()
        results[foreach] = [p.detach() for p in params]
    for weight, a, b in zip(weights, results[True], results[False], strict=True):
        assert a.dtype == b.dtype == weight.dtype
        rtol = 1e-2 if weight.dtype == torch.bfloat16 else 1e-6
        assert torch.allclose(a.double(), b.double(), rtol=rtol, atol=0), weight.dtype
        assert not torch.equal(a, weight)


# --- validation -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"lr": -0.1}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum"),
        ({"lr": 0.1, "momentum": -0.1}, "momentum"),
        ({"lr": 0.1, "weight_decay": -1e-4}, "weight_decay"),
    ],
)
def test_invalid_hyperparameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LARS([nn.Parameter(torch.zeros(2))], **kwargs)
