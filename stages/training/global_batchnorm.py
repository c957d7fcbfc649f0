"""Global batch norm on any backend: SimCLR normalises over the whole global batch, not each process's share.

torch's `nn.SyncBatchNorm` does this on CUDA only. `GlobalBatchNorm` does the same with differentiable
all-reduces, so a multi-process CPU (gloo) run normalises exactly like one process with the whole batch; the stages
use it wherever SyncBatchNorm is not available.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn
from torch.distributed.nn.functional import all_reduce  # differentiable; deprecated in favour of a private API


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm1d/2d whose training statistics span every process; evaluation uses the running statistics."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 4):
            raise ValueError(f"expected a 2D or 4D input, got {x.dim()}D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _distributed()):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in at least fp32
        # Two passes (mean, then centred squares) keep the variance as exact as the single-process kernel's.
        count = all_reduce(values.new_tensor(float(values.numel() // values.shape[1])))
        mean = all_reduce(values.sum(dims)) / count
        centred = values - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / count
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count.detach())
        out = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(var * count / (count - 1).clamp_min(1), momentum)  # unbiased, as torch's BN


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d in `module` by a `GlobalBatchNorm` holding the same parameters and buffers."""
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        converted = GlobalBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        converted.running_mean, converted.running_var = module.running_mean, module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_global_batchnorm(child))
    return module


def global_batchnorm(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """Normalise over the global batch when several processes share it, as SimCLR does: torch's SyncBatchNorm on
    CUDA, our all-reduce version elsewhere (SyncBatchNorm is CUDA-only)."""
    if accelerator.num_processes == 1:
        return model
    if accelerator.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return convert_global_batchnorm(model)
