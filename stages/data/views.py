"""The two augmented views of every image of a pretraining step, `2B x 3 x S x S` float (all first views, then all
second views), built so that the host never waits for the device:

- `InMemoryViews`: the images, decoded once, sit on the device as uint8; indexing, cropping and colouring all run
  there. For data that fits in device memory (CIFAR-10 at 32 px is 150 MB).
- `StreamedViews`: loader workers decode and crop on the CPU (stages/data/crop_loader.py) into pinned uint8, copied
  without blocking; flip, colour, grayscale and blur run on the device. For data larger than memory.

Both draw a step's randomness from (seed, step) for the whole global batch (`step_generator`), so resumed and
multi-process runs see the same views as one uninterrupted process.
"""

from __future__ import annotations

from typing import Protocol

import torch

from stages.data.augment import SimCLRAugment
from stages.data.crop_loader import CropBatches, CropStream
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
        self.num_images = len(crops.rows)
        self._stream: CropStream | None = None

    def close(self) -> None:
        """Stop the loader's workers now rather than when this object is collected."""
        self._stream = None

    def __call__(self, step: int, total_steps: int) -> torch.Tensor:
        if self._stream is None:  # started at the first step asked for: the resumed one
            self._stream = CropStream(self.crops, total_steps, self.workers, self.device)
        first, second = self._stream(step).chunk(2)
        crops = self.crops
        generator = step_generator(crops.seed, step, crops.rank, crops.world, crops.global_batch, self.device)
        return torch.cat([self.augment.from_crops(first, generator), self.augment.from_crops(second, generator)])
