"""The augmented views of a training step, built so that the host never waits for the device.

Pretraining: two views of every image of the step, `2B x 3 x S x S` float (all first views, then all second views).
Fine-tuning, the baseline and distillation: one crop + flip view per image, with the rows it shows (for their labels).
Each comes two ways, chosen by the split's images (stages/data/memory_rule.py):

- in memory (`InMemoryViews`, `InMemoryCropFlip`): the images, decoded once, sit on the device as uint8; indexing,
  cropping and colouring all run there. For data that fits in device memory (CIFAR-10 at 32 px is 150 MB).
- streamed (`StreamedViews`, `StreamedCropFlip`): loader workers decode and crop the original images on the CPU
  (stages/data/crop_loader.py) into pinned uint8, copied without blocking; flip, colour, grayscale and blur run on
  the device. For data larger than memory.

All draw a step's randomness from (seed, step) for the whole global batch (`step_generator`), so resumed and
multi-process runs see the same views as one uninterrupted process.
"""

from __future__ import annotations

from typing import Protocol

import torch

from stages.data.augment import CropFlipAugment, SimCLRAugment
from stages.data.crop_loader import CropBatches, CropStream
from stages.data.stored_images import StoredImages
from stages.training.batches import local_batch, step_generator


class PairedViews(Protocol):
    num_images: int

    def __call__(self, step: int, total_steps: int) -> torch.Tensor: ...


class InMemoryViews:
    def __init__(
        self, images: torch.Tensor, augment: SimCLRAugment, global_batch: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.images, self.augment = images, augment
        self.global_batch, self.seed, self.rank, self.world = global_batch, seed, rank, world
        self.num_images = len(images)

    def __call__(self, step: int, total_steps: int) -> torch.Tensor:
        rows = local_batch(self.num_images, self.global_batch, step, self.seed, self.rank, self.world)
        batch = self.images[rows.to(self.images.device, non_blocking=True)]
        generator = step_generator(self.seed, step, self.rank, self.world, self.global_batch, self.images.device)
        return torch.cat([self.augment(batch, generator), self.augment(batch, generator)])


class StreamedViews:
    def __init__(self, crops: CropBatches, augment: SimCLRAugment, workers: int, device: torch.device) -> None:
        self.crops, self.augment, self.workers, self.device = crops, augment, workers, device
        self.num_images = len(crops.images)
        self._stream: CropStream | None = None

    def close(self) -> None:
        """Stop the loader's workers now rather than when this object is collected."""
        self._stream = None

    def __call__(self, step: int, total_steps: int) -> torch.Tensor:
        if self._stream is None:  # started at the first step asked for: the resumed one
            self._stream = CropStream(self.crops, total_steps, self.workers, self.device)
        first, second = self._stream(step)[0].chunk(2)
        crops = self.crops
        generator = step_generator(crops.seed, step, crops.rank, crops.world, crops.global_batch, self.device)
        return torch.cat([self.augment.from_crops(first, generator), self.augment.from_crops(second, generator)])


class ClassifierViews(Protocol):
    num_images: int

    def __call__(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(`B x 3 x S x S` float crop + flip views of this process's rows, those rows on the device)."""
        ...


class InMemoryCropFlip:
    def __init__(
        self, images: torch.Tensor, size: int, global_batch: int, seed: int, rank: int = 0, world: int = 1
    ) -> None:
        self.images, self.augment = images, CropFlipAugment(size)
        self.global_batch, self.seed, self.rank, self.world = global_batch, seed, rank, world
        self.num_images = len(images)

    def __call__(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.images.device
        rows = local_batch(self.num_images, self.global_batch, step, self.seed, self.rank, self.world).to(device)
        generator = step_generator(self.seed, step, self.rank, self.world, self.global_batch, device)
        return self.augment(self.images[rows], generator), rows


class StreamedCropFlip:
    def __init__(self, crops: CropBatches, workers: int, device: torch.device) -> None:
        self.crops, self.workers, self.device = crops, workers, device
        self.augment = CropFlipAugment(crops.size)
        self.num_images = len(crops.images)
        self._stream: CropStream | None = None

    def __call__(self, step: int, total_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._stream is None:  # started at the first step asked for: the resumed one
            self._stream = CropStream(self.crops, total_steps, self.workers, self.device)
        crops, rows = self._stream(step)
        c = self.crops
        generator = step_generator(c.seed, step, c.rank, c.world, c.global_batch, self.device)
        return self.augment.from_crops(crops, generator), rows.to(self.device, non_blocking=True)


def crop_flip_views(
    images: torch.Tensor | StoredImages,
    size: int,
    global_batch: int,
    seed: int,
    rank: int,
    world: int,
    device: torch.device,
) -> ClassifierViews:
    """Crop + flip views of `images`: on the device from memory, or cut by loader workers from the originals."""
    if isinstance(images, StoredImages):
        crops = CropBatches(images, size, global_batch, seed, rank, world, views=1)
        return StreamedCropFlip(crops, images.workers, device)
    return InMemoryCropFlip(images.to(device), size, global_batch, seed, rank, world)
