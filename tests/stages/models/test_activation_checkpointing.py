"""Activation checkpointing: same outputs, gradients and BN statistics as without it, and far fewer saved bytes."""

import copy

import pytest
import torch
from torch import nn

from stages import build_encoder
from stages.models.activation_checkpointing import checkpointed
from stages.models.resnet import ResNet
from stages.training.global_batchnorm import GlobalBatchNorm, convert_global_batchnorm

ENCODERS = [
    pytest.param((50, 0.125, True, False), id="resnet50-sk"),
    pytest.param((18, 0.25, False, True), id="resnet18-small"),
]


def pair(args: tuple, global_bn: bool = False) -> tuple[ResNet, ResNet]:
    """Two identical float64 encoders, the second with checkpointing on. The zero-initialised last BN gammas get
    random values so every branch (and its gradient) actually contributes."""
    torch.manual_seed(0)
    plain = build_encoder(*args).double()
    for module in plain.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    if global_bn:
        plain = convert_global_batchnorm(plain)
    checked = copy.deepcopy(plain)
    checked.activation_checkpointing = True
    return plain, checked


def images(seed: int, size: int = 32, batch: int = 4) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def step(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()  # non-uniform upstream grad
    return out.detach()


def assert_same_state(plain: nn.Module, checked: nn.Module) -> None:
    """Bit-identical gradients and BN buffers (the recomputation runs the very same ops on CPU)."""
    grads = {name: p.grad for name, p in checked.named_parameters()}
    for name, p in plain.named_parameters():
        assert p.grad is not None and grads[name] is not None, name
        torch.testing.assert_close(grads[name], p.grad, rtol=0, atol=0, msg=name)
    buffers = dict(checked.named_buffers())
    assert any(name.endswith("num_batches_tracked") for name in buffers)
    for name, b in plain.named_buffers():  # running_mean, running_var, num_batches_tracked
        torch.testing.assert_close(buffers[name], b, rtol=0, atol=0, msg=name)


def bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@pytest.mark.parametrize("args", ENCODERS)
def test_training_steps_match_exactly(args, one_thread):
    plain, checked = pair(args)
    plain.train(), checked.train()
    for seed in (1, 2):  # the second step also checks the running statistics compound correctly
        torch.testing.assert_close(step(checked, images(seed)), step(plain, images(seed)), rtol=0, atol=0)
        assert_same_state(plain, checked)
    assert all(int(m.num_batches_tracked) == 2 for m in bn_layers(checked))


def test_global_batchnorm_single_process_matches(one_thread):
    plain, checked = pair((50, 0.125, True, False), global_bn=True)
    assert all(isinstance(m, GlobalBatchNorm) for m in bn_layers(checked))
    for seed in (1, 2):
        torch.testing.assert_close(step(checked, images(seed)), step(plain, images(seed)), rtol=0, atol=0)
        assert_same_state(plain, checked)


def test_naive_checkpointing_would_be_caught(monkeypatch, one_thread):
    """Guard for the tests above: plain checkpointing updates BN statistics twice per step."""
    from torch.utils.checkpoint import checkpoint

    monkeypatch.setattr("stages.models.resnet.checkpointed", lambda m, x: checkpoint(m, x, use_reentrant=False))
    plain, checked = pair((18, 0.25, False, True))
    step(checked, images(1)), step(plain, images(1))
    assert all(int(m.num_batches_tracked) == 2 for m in bn_layers(checked.stages))  # one step, counted twice
    with pytest.raises(AssertionError):
        assert_same_state(plain, checked)


def test_buffers_are_restored_and_retain_graph_backward_works(one_thread):
    plain, checked = pair((50, 0.125, True, False))
    before = {name: b for name, b in checked.named_buffers()}
    for model in (plain, checked):
        model.zero_grad(set_to_none=True)
        loss = model(images(1)).square().sum()
        loss.backward(retain_graph=True)  # two backward passes: two recomputations through the same context
        loss.backward()
    assert_same_state(plain, checked)
    assert all(b is before[name] for name, b in checked.named_buffers())  # the real buffer tensors are back


def test_eval_and_no_grad_do_not_checkpoint(monkeypatch, one_thread):
    plain, checked = pair((18, 0.25, False, True))
    calls = []
    monkeypatch.setattr("stages.models.resnet.checkpointed", lambda m, x: calls.append(m) or checkpointed(m, x))
    x = images(3)
    with torch.no_grad():  # train mode, no grad: nothing to recompute for
        torch.testing.assert_close(checked(x), plain(x), rtol=0, atol=0)
    plain_buffers = dict(plain.named_buffers())
    for name, b in checked.named_buffers():  # train-mode BN updated its statistics once, as without checkpointing
        torch.testing.assert_close(b, plain_buffers[name], rtol=0, atol=0, msg=name)
    plain.eval(), checked.eval()
    torch.testing.assert_close(checked(x), plain(x), rtol=0, atol=0)
    assert calls == []
    checked.train()
    checked(x)
    assert len(calls) == sum(len(stage) for stage in checked.stages)  # every residual block, nothing else


def test_checkpointing_is_off_by_default():
    assert build_encoder(18, 0.125).activation_checkpointing is False


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct activation storages autograd keeps for backward after one forward pass (parameters,
    which stay in memory anyway, are not counted)."""
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(storages.values())


def test_checkpointing_keeps_only_block_inputs(one_thread):
    torch.manual_seed(0)
    model = build_encoder(50, 0.25).train()
    x = torch.rand(8, 3, 64, 64)
    full = saved_bytes(model, x)
    stem = saved_bytes(model.stem, x)  # the stem is not checkpointed
    with torch.no_grad():
        h, block_inputs = model.stem(x), 0
        for block in (block for stage in model.stages for block in stage):
            block_inputs += h.numel() * h.element_size()
            h = block(h)
    model.activation_checkpointing = True
    reduced = saved_bytes(model, x)
    print(f"saved for backward: {full:,} bytes without checkpointing, {reduced:,} with (stem {stem:,})")
    assert reduced <= stem + block_inputs  # of the residual stages, autograd keeps nothing but each block's input
    assert reduced - stem < (full - stem) / 3
    assert reduced < full / 2
