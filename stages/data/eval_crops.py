"""The streaming path of evaluation: loader workers decode each image (JPEGs at a reduced DCT scale) and cut its
evaluation crop straight from the original: the centred square of `evaluation_crop_proportion` of the shorter side,
resized to the network's size. The same geometry as the in-memory path's `CenterCrop.for_evaluation`, without the
pre-resized copy of every image. Batches come in order, pinned, from a worker pool that works ahead
(`worker_loader`)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stages.data.augment import evaluation_crop_proportion
from stages.data.crop_loader import cut_crops, oriented_size, unreadable, worker_loader
from stages.data.decoding import is_bad_image, open_image
from stages.data.stored_images import StoredImages


class EvalCropBatches(torch.utils.data.Dataset):
    """Item `b`: (rows of batch `b`, their `N x 3 x S x S` uint8 crops, which of them were readable). An unreadable
    image is named, or with `skip_bad_images` skipped: its crop is black and marked unreadable."""

    def __init__(self, images: StoredImages, size: int, batch_size: int) -> None:
        self.images, self.size, self.batch_size = images, size, batch_size
        self.proportion = evaluation_crop_proportion(size)

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.arange(batch * self.batch_size, min((batch + 1) * self.batch_size, len(self.images)))
        crops = np.zeros((len(rows), self.size, self.size, 3), dtype=np.uint8)
        readable = torch.ones(len(rows), dtype=torch.bool)
        for i, row in enumerate(rows.tolist()):
            try:
                image = open_image(self.images.value(row), self.images.max_pixels)
                width, height = oriented_size(image)
                side = self.proportion * min(width, height)
                crops[i] = cut_crops(image, [[(width - side) / 2, (height - side) / 2, side, side]], self.size)[0]
            except Exception as error:
                if not is_bad_image(error):
                    raise  # a fault of the machine (out of memory, a disk error), not of the image
                unreadable(self.images, row, error)  # raises unless bad images are skipped
                readable[i] = False
        return rows, torch.from_numpy(crops).permute(0, 3, 1, 2), readable


def streamed_eval_crops(
    images: StoredImages, size: int, batch_size: int, workers: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(rows, uint8 crops on `device`, readable) per batch, in row order."""
    loader = worker_loader(EvalCropBatches(images, size, batch_size), workers, pin=device.type == "cuda")
    for rows, crops, readable in loader:
        yield rows, crops.to(device, non_blocking=True), readable
