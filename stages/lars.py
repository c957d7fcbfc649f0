"""LARS (You et al. 2017) as used by SimCLR, and the parameter groups that exclude BN and biases.

Per parameter (SIMCLRV2.md section 4; the official TF `LARSOptimizer` with classic momentum):
    g = grad + wd * w                                   (weight decay only for groups with weight_decay > 0)
    trust = eta * |w| / |g| if |w| > 0 and |g| > 0 else 1   (only for groups with lars_adapt=True)
    v = momentum * v + lr * trust * g
    w = w - v                          (nesterov: w = w - (momentum * v + lr * trust * g))
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
    ) -> None:
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
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
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
