"""Find host synchronisations in code run on CPU: the ops that, on a GPU, make the host wait for the device.

On CUDA, `torch.cuda.set_sync_debug_mode("error")` catches them; without a GPU, a dispatch mode that records the ops
that read a device value back to the host (`.item()`, `bool(tensor)`, data-dependent shapes) and the blocking copies
from host memory finds the same code paths.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
READ_BACK_OPS = {
    aten._local_scalar_dense,  # .item(), float(t), bool(t), if t: ...
    aten.is_nonzero,
    aten.equal,
    aten.nonzero,  # output shape depends on the values
    aten.masked_select,
    aten.unique_consecutive,
    aten._unique2,
    aten.repeat_interleave.Tensor,
}


class HostSyncRecorder(TorchDispatchMode):
    """Records every op that would synchronise the host with a GPU; `syncs` lists them in call order."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket in READ_BACK_OPS or func in READ_BACK_OPS or _blocking_host_copy(func, args, kwargs):
            self.syncs.append(str(func))
        return func(*args, **kwargs)


def _blocking_host_copy(func, args, kwargs) -> bool:
    """A copy from host memory to another device without non_blocking=True (only meaningful off CPU)."""
    if func not in (aten._to_copy.default, aten.copy_.default):
        return False
    source = args[1] if func is aten.copy_.default else args[0]
    target = args[0].device if func is aten.copy_.default else kwargs.get("device", source.device)
    non_blocking = kwargs.get("non_blocking", False) or (func is aten.copy_.default and len(args) > 2 and args[2])
    return source.device.type == "cpu" and torch.device(target).type != "cpu" and not non_blocking
