"""Activation checkpointing that is safe for BatchNorm: trade a second forward for activation memory.

`checkpointed(module, x)` runs `module` under non-reentrant `torch.utils.checkpoint`: autograd keeps only `x`, and
the backward pass re-runs `module` to rebuild what it needs. Plain checkpointing runs every training-mode BatchNorm
twice per step, so running_mean/var move twice (an effective momentum of 0.19 instead of 0.1) and
num_batches_tracked counts double.

The re-run therefore hands every training-mode BatchNorm of the module scratch copies of its running buffers, which
the kernel updates and we then throw away; the real buffers are put back untouched. Normalisation itself uses the
batch statistics in training mode, so the re-run computes exactly what the first run did.

Why not simply set `track_running_stats = False` for the re-run (torch's BN then passes no running buffers)? Because
`native_batch_norm` / `cudnn_batch_norm` save the running buffers for backward only when they are passed: the re-run
would save 4 tensors per BN instead of 6, and non-reentrant checkpoint, which matches recomputed tensors to the
original ones by position, stops with "A different number of tensors was saved during the original forward and
recomputation". Swapping in copies keeps the op sequence, the saved tensors and the kernel choice (cuDNN or not)
identical. It covers nn.BatchNorm*, nn.SyncBatchNorm and the project's GlobalBatchNorm (all `_BatchNorm`s that update
`self.running_mean`, `self.running_var` and `self.num_batches_tracked` in training mode).
"""

from __future__ import annotations

import contextlib
from types import TracebackType

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpointed"]

_RUNNING_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


class _ScratchRunningStats:
    """Context manager: inside it, every training-mode BatchNorm of `module` updates throwaway copies of its running
    buffers; on leaving, the original buffer tensors are restored (never written to).

    A class rather than a `contextlib.contextmanager` generator because checkpoint may enter the same recompute
    context more than once (one recomputation per backward call with `retain_graph=True`). It must also restore the
    buffers when left by an exception: checkpoint's early stop aborts the recomputation with one.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.originals: list[tuple[nn.Module, dict[str, torch.Tensor | None]]] = []

    def __enter__(self) -> None:
        self.originals = []
        for layer in self.module.modules():
            # Eval-mode BN (and BN without running statistics) never writes its buffers: leave it alone.
            if isinstance(layer, _BatchNorm) and layer.training and layer.track_running_stats:
                buffers = {name: getattr(layer, name) for name in _RUNNING_BUFFERS}
                self.originals.append((layer, buffers))
                for name, tensor in buffers.items():
                    if tensor is not None:
                        setattr(layer, name, tensor.detach().clone())

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for layer, buffers in self.originals:
            for name, tensor in buffers.items():
                setattr(layer, name, tensor)
        self.originals = []


def checkpointed(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`module(x)`, keeping only `x` for backward and recomputing the rest there, without a second BN update."""
    if torch.compiler.is_compiling():
        # Under torch.compile the checkpoint becomes a tagged region of the traced graph and AOTAutograd recomputes
        # only pure ops in backward (buffer mutations happen once, at the end of the forward), so BN statistics
        # are already updated once. Dynamo also rejects our context_fn (it must be a module-level function or
        # partial returning TorchDispatchModes), so compile gets the plain checkpoint.
        return checkpoint(module, x, use_reentrant=False)
    return checkpoint(
        module,
        x,
        use_reentrant=False,  # the reentrant variant takes no context_fn and needs an input that requires grad
        context_fn=lambda: (contextlib.nullcontext(), _ScratchRunningStats(module)),
    )
