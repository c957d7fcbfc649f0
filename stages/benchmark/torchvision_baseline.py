"""The straightforward SimCLR pretraining step, as commonly written, for `python -m stages.benchmark` to compare
against.

"Straightforward" means what a user writes from the torchvision docs, with none of this project's speed work:
- data: a `Dataset` whose `__getitem__` augments one image at a time with the torchvision v2 SimCLR pipeline
  (uint8 tensor in, float32 [0, 1] out), run in `DataLoader` worker processes (shuffle, drop_last, persistent
  workers, pinned memory on CUDA);
- model: torchvision's `resnet50()` with `fc` swapped for the project's projection head, fp32, default memory
  format, not compiled; the two views go through two forwards;
- step: NT-Xent, backward, plain SGD with momentum (no LARS).
The comparison is the whole step, data path included: the loader is iterated continuously while training, so its
workers prefetch as usual, and a step waits only when they fall behind.

Rates are total views over the timed window (views/s = 2 * batch * repeats / window seconds), not per-step medians:
with a pipelined loader one step can be fast on a prefetched batch and the next slow, and only the window shows the
sustained rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from stages.data.crop_loader import LOADER_TIMEOUT_S
from stages.losses.nt_xent import nt_xent
from stages.models.heads import ProjectionHead, SimCLRModel


def simclr_transform(size: int, color_strength: float = 1.0, blur: bool = True) -> v2.Compose:
    """The per-sample SimCLR view for one `3 x H x W` uint8 tensor; returns float32 in [0, 1] of side `size`."""
    if size < 1:
        raise ValueError(f"size must be a positive integer (output side in pixels), got {size!r}")
    s = color_strength
    steps: list[nn.Module] = [
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        kernel = 2 * (max(size // 10, 1) // 2) + 1  # ~10% of the side, odd (as stages.data.augment)
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)


class TwoViewDataset(Dataset):
    """Image `i` of an in-memory `N x 3 x H x W` uint8 tensor -> two independently augmented views of it."""

    def __init__(self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be a uint8 N x 3 x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        return self.transform(image), self.transform(image)


def build_baseline_model(backbone: Callable[[], nn.Module] = torchvision.models.resnet50) -> SimCLRModel:
    """`backbone()` (a torchvision-style network with a linear `fc`) with `fc` replaced by the projection head."""
    encoder = backbone()
    if not isinstance(getattr(encoder, "fc", None), nn.Linear):
        raise ValueError(f"backbone() must return a module whose `fc` is an nn.Linear, got {type(encoder).__name__}")
    feature_dim = encoder.fc.in_features
    encoder.fc = nn.Identity()
    return SimCLRModel(encoder, ProjectionHead(feature_dim))


@dataclass(frozen=True)
class BaselineResult:
    views_per_second: float  # full training step, data loading included: 2 * batch * repeats / timed window
    step_seconds: float  # timed window / repeats (mean seconds per step)
    data_only_views_per_second: float  # the same DataLoader iterated alone (fresh workers), no model


def baseline_views_per_second(
    images: torch.Tensor,
    size: int,
    batch: int,
    device: torch.device,
    num_workers: int,
    warmup: int,
    repeats: int,
    color_strength: float = 1.0,
    blur: bool = True,
    temperature: float = 0.1,
    backbone: Callable[[], nn.Module] = torchvision.models.resnet50,
) -> BaselineResult:
    """Measure the straightforward pipeline on `images` (CPU uint8 `N x 3 x H x W`, N >= `batch`).

    First the DataLoader alone, then (with a fresh loader, so the two never compete for cores) the full
    training step; each runs `warmup` untimed batches/steps and then times `repeats` more as one window.
    """
    if batch < 1 or num_workers < 1 or warmup < 0 or repeats < 1:
        raise ValueError(
            "need batch >= 1, num_workers >= 1, warmup >= 0, repeats >= 1; "
            f"got {batch!r}, {num_workers!r}, {warmup!r}, {repeats!r}"
        )
    if images.shape[0] < batch:
        raise ValueError(f"need at least batch={batch} images for one drop_last batch, got {images.shape[0]}")
    dataset = TwoViewDataset(images, simclr_transform(size, color_strength, blur))

    def make_loader() -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=True,
            multiprocessing_context="forkserver",
            timeout=LOADER_TIMEOUT_S,  # a hung worker fails the benchmark instead of hanging it
        )

    data_seconds = _window_seconds(make_loader(), lambda views: None, device, warmup, repeats)

    model = build_baseline_model(backbone).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-6)

    def step(views: tuple[torch.Tensor, torch.Tensor]) -> None:
        first, second = (view.to(device, non_blocking=True) for view in views)
        loss = nt_xent(model(first), model(second), temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step_seconds = _window_seconds(make_loader(), step, device, warmup, repeats)
    views = 2 * batch * repeats
    return BaselineResult(views / step_seconds, step_seconds / repeats, views / data_seconds)


def _window_seconds(
    loader: DataLoader,
    consume: Callable[[tuple[torch.Tensor, torch.Tensor]], None],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> float:
    """`warmup` untimed batches, then seconds for `repeats` more, each passed to `consume`; shuts the workers down."""
    batches = _endless(loader)
    try:
        for _ in range(warmup):
            consume(next(batches))
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            consume(next(batches))
        _synchronize(device)
        return time.perf_counter() - start
    finally:
        batches.close()
        iterator = getattr(loader, "_iterator", None)  # persistent workers live on the loader between epochs
        if iterator is not None:
            iterator._shutdown_workers()


def _endless(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Epoch after epoch, as a training loop over several epochs would (persistent workers are reused)."""
    while True:
        yield from loader


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
