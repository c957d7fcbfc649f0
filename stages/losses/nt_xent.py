"""NT-Xent, the SimCLR contrastive loss, with negatives from every process.

Official formulation (docs/simclrv2.md#nt-xent-loss): with N pairs across all processes, each local anchor is scored
against the 2N global embeddings except itself, and its positive is the other view of the same image. The value is
mean(view-1 anchors) + mean(view-2 anchors), i.e. twice the mean over anchors.

Under `torch.distributed` with several processes the embeddings of the other processes are gathered with a
differentiable all-gather, so gradients reach every process's encoder. Each process returns the loss of its own
anchors; averaging gradients across processes (DDP / Accelerate) then gives exactly the gradient of the global loss.
All processes must use the same local batch size (drop_last=True).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two `B x D` batches of projections, `z1[i]` and `z2[i]` being views of image i."""
    _check_inputs(z1, z2, temperature)
    local = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # fp32: logits and the self-mask overflow fp16
    batch = z1.shape[0]
    rank, world = _rank_and_world()
    if world > 1:
        views = local.view(2, batch, -1)
        gathered = torch.stack(dist_fn.all_gather(views))  # world x 2 x B x D, differentiable
        keys = gathered.transpose(0, 1).reshape(2 * world * batch, -1)  # all view-1, then all view-2
    else:
        keys = local
    total = world * batch  # N global pairs
    logits = local @ keys.T / temperature  # 2B x 2N

    own = rank * batch + torch.arange(batch, device=local.device)
    self_index = torch.cat([own, own + total])
    positive_index = torch.cat([own + total, own])
    # A comparison, not F.one_hot: one_hot checks its indices on the host (a device sync on some backends).
    is_self = self_index.unsqueeze(1) == torch.arange(2 * total, device=local.device)
    logits = logits.masked_fill(is_self, float("-inf"))
    return 2 * F.cross_entropy(logits, positive_index)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_inputs(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (0.1 for ImageNet, 0.5 for CIFAR), got {temperature!r}")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both be B x D with the same shape, got z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)}"
        )
    if z1.shape[0] < 1:
        raise ValueError("z1 and z2 must hold at least one pair, got an empty batch")
