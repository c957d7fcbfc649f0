"""LARS (You et al. 2017) as used by SimCLR, and the parameter groups that exclude BN and biases.

Per parameter (docs/simclrv2.md#optimiser-and-schedule; the official TF `LARSOptimizer` with classic momentum):
    g = grad + wd * w                                   (weight decay only for groups with weight_decay > 0)
    trust = eta * |w| / |g| if |w| > 0 and |g| > 0 else 1   (only for groups with lars_adapt=True)
    v = momentum * v + lr * trust * g
    w = w - v                          (nesterov: w = w - (momentum * v + lr * trust * g))

Two implementations of the same rule: a per-parameter loop (`foreach=False`, the readable reference) and a multi-tensor
one (`foreach=None`/`True`, the default) that applies each step of the rule to all the parameters of a group at once
with `torch._foreach_*` ops: a handful of kernel launches per group (plus, on CUDA, one per trust-scaled parameter for
the per-tensor trust multiply, see below) rather than ~10 per parameter.
Both keep the momentum buffer in `state[param]["momentum_buffer"]`, so either loads the other's state_dict.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

TRUST_COEFFICIENT = 0.001


class LARS(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coefficient: float = TRUST_COEFFICIENT,
        nesterov: bool = False,
        *,
        foreach: bool | None = None,
    ) -> None:
        """`foreach`: None or True for the multi-tensor step, False for the per-parameter loop (per group, as in
        torch's optimisers; a state_dict restores the value it was saved with)."""
        if not lr >= 0:
            raise ValueError(f"lr must be >= 0, got {lr!r}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            trust_coefficient=trust_coefficient,
            nesterov=nesterov,
            lars_adapt=True,
            foreach=foreach,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        # Checkpoints written before the foreach step existed have no "foreach" in their groups (load_state_dict
        # restores the saved groups through here).
        for group in self.param_groups:
            group.setdefault("foreach", None)

    @torch.no_grad()
    def step(self, closure=None):  # torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            if group["foreach"] is False:
                for param in params:
                    self._update(param, group)
            else:
                self._foreach_update(params, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        grad = param.grad
        if group["weight_decay"] > 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        step_size = torch.as_tensor(group["lr"], dtype=param.dtype, device=param.device)
        if group["lars_adapt"]:
            # Norms in at least fp32; torch.where keeps everything on the device (no host sync).
            norm_dtype = torch.promote_types(param.dtype, torch.float32)
            w_norm = torch.linalg.vector_norm(param, dtype=norm_dtype)
            g_norm = torch.linalg.vector_norm(grad, dtype=norm_dtype)
            trust = torch.where(
                (w_norm > 0) & (g_norm > 0),
                group["trust_coefficient"] * w_norm / g_norm,
                torch.ones_like(w_norm),
            )
            step_size = step_size * trust.to(param.dtype)
        scaled = grad * step_size
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param)
        velocity = state["momentum_buffer"]
        velocity.mul_(group["momentum"]).add_(scaled)
        update = velocity * group["momentum"] + scaled if group["nesterov"] else velocity
        param.sub_(update)

    def _foreach_update(self, params: list[torch.Tensor], group: dict) -> None:
        grads, buffers = [], []
        for param in params:
            grads.append(param.grad)
            state = self.state[param]
            if "momentum_buffer" not in state:  # first step only: zeros, exactly as the loop path starts
                state["momentum_buffer"] = torch.zeros_like(param)
            buffers.append(state["momentum_buffer"])
        # _foreach ops need one device and dtype per list.
        grouped = self._group_tensors_by_device_and_dtype([params, grads, buffers])
        for (same_params, same_grads, same_buffers), _ in grouped.values():
            self._foreach_update_same_dtype(same_params, same_grads, same_buffers, group)

    @staticmethod
    def _foreach_update_same_dtype(
        params: list[torch.Tensor], grads: list[torch.Tensor], buffers: list[torch.Tensor], group: dict
    ) -> None:
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        # `fresh`: the decayed grads are new tensors that may be scaled in place; p.grad itself must stay untouched.
        fresh = weight_decay > 0
        decayed = torch._foreach_add(grads, params, alpha=weight_decay) if fresh else grads
        if group["lars_adapt"]:
            # One stacked trust ratio per tensor, chosen with torch.where on the device: no .item(), no host sync.
            dtype = params[0].dtype
            norm_dtype = torch.promote_types(dtype, torch.float32)  # norms in at least fp32, as in the loop path
            w_norms = torch.stack(torch._foreach_norm(params, 2, dtype=norm_dtype))
            g_norms = torch.stack(torch._foreach_norm(decayed, 2, dtype=norm_dtype))
            trust = torch.where(
                (w_norms > 0) & (g_norms > 0),
                group["trust_coefficient"] * w_norms / g_norms,
                torch.ones_like(w_norms),
            )
            # 0-d device tensors, one per parameter, rounded as the loop rounds them (bit-identical for fp32 / fp64).
            # torch has no fast multi-tensor kernel for per-tensor tensor scalars, so on CUDA this one multiply falls
            # back to a kernel per parameter (still no host sync); every other op below is one kernel per list.
            factors = list((trust.to(dtype) * lr).unbind())
        else:
            factors = lr
        if fresh:
            torch._foreach_mul_(decayed, factors)
            scaled = decayed
        else:
            scaled = torch._foreach_mul(decayed, factors)
        torch._foreach_mul_(buffers, momentum)
        torch._foreach_add_(buffers, scaled)
        if group["nesterov"]:
            torch._foreach_add_(scaled, buffers, alpha=momentum)  # scaled is ours: reuse it for m * v + lr * trust * g
            torch._foreach_sub_(params, scaled)
        else:
            torch._foreach_sub_(params, buffers)


def is_excluded_from_lars(module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
    """BN parameters and biases get neither weight decay nor trust scaling."""
    return isinstance(module, _BatchNorm) or param_name == "bias" or param.ndim <= 1


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decayed, trust-scaled) and BN parameters + biases (neither)."""
    regular, excluded = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            (excluded if is_excluded_from_lars(module, name, param) else regular).append(param)
    return [
        {"params": regular, "weight_decay": weight_decay, "lars_adapt": True},
        {"params": excluded, "weight_decay": 0.0, "lars_adapt": False},
    ]
