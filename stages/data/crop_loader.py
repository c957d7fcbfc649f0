"""The streaming data path of pretraining, for datasets that do not fit in memory: CPU workers decode each image and
cut its two random crops, resized to the view size, into uint8; the rest of the augmentation (flip, colour,
grayscale, blur) runs per sample on the device (`SimCLRAugment.from_crops`).

Item `step` of `CropBatches` is this process's share of the global batch at that step: `2B x 3 x S x S` uint8, all
first views then all second views. The rows come from `local_batch` and the crop boxes from `step_generator`
(a stream of its own), so, as on the in-memory path, a resumed run and a run on N processes see the same crops.
Workers decode only what the crops need: JPEGs are decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still
leaves both crops at least `S` pixels wide (PIL's `draft`), which makes decoding several times cheaper for large
images. Batches come from a `DataLoader` with `batch_size=None` (a worker builds a whole step), pinned for the copy.
Its workers start from a forkserver, so a script that pretrains with them must guard its entry point with
`if __name__ == "__main__":` (Python's rule for forkserver and spawn; the stage commands and `simclrv2` do). A worker
that delivers nothing for `LOADER_TIMEOUT_S` fails the run rather than hanging it.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from torch.utils.data import DataLoader, Sampler

from stages.data.augment import crop_boxes
from stages.data.decoding import decoded_rgb, is_bad_image, open_image
from stages.data.errors import DataError
from stages.data.stored_images import StoredImages
from stages.training.batches import local_batch, step_generator

log = logging.getLogger(__name__)

CROP_STREAM = 1  # step_generator stream of the workers' crop boxes (0 is the device's flips and colours)
SWAPPED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees: width and height swap
MAX_REPLACEMENTS = 100  # consecutive unreadable rows skipped before giving up
PREFETCH = 4  # steps each worker prepares ahead
# Seconds the loader waits for a worker's next item before it fails: a step of 4096 images may take a worker this
# long at 0.3 s an image (cold network storage), and a hung worker (a stuck NFS read) fails the run in 20 minutes.
LOADER_TIMEOUT_S = 1200


class CropBatches(torch.utils.data.Dataset):
    """One training step per item: (step, the decoded, cropped and resized uint8 views of this process's rows, the
    rows they come from). `views` crops per image: 2 for pretraining's pairs, 1 for crop + flip training."""

    def __init__(
        self,
        images: StoredImages,
        size: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        views: int = 2,
    ) -> None:
        self.images, self.size = images, size
        self.global_batch, self.seed, self.rank, self.world = global_batch, seed, rank, world
        self.crop_scale, self.views = crop_scale, views

    def __getitem__(self, step: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        indices = local_batch(len(self.images), self.global_batch, step, self.seed, self.rank, self.world).tolist()
        opened = [self._open(row) for row in indices]  # per slot: (rows skipped to reach a readable one, image)
        oriented = torch.tensor([oriented_size(image) for _, image in opened], dtype=torch.float64)  # B x (w, h)
        boxes = self._boxes(step, oriented)
        crops = np.empty((self.views, len(opened), self.size, self.size, 3), dtype=np.uint8)
        for i, row in enumerate(indices):
            while True:
                skipped, image = opened[i]
                try:
                    crops[:, i] = cut_crops(image, [view[i].tolist() for view in boxes], self.size)
                    break
                except Exception as error:  # a header that parses but data that does not decode (e.g. truncated)
                    if not is_bad_image(error):
                        raise
                    self._unreadable((row + skipped) % len(self.images), error)
                    opened[i] = self._open(row, skipped + 1)
                    # A box's draws do not depend on the sizes: redrawn, the other rows' boxes stay the same.
                    oriented[i] = torch.tensor(oriented_size(opened[i][1]), dtype=torch.float64)
                    boxes = self._boxes(step, oriented)
        used = torch.tensor(
            [(row + skipped) % len(self.images) for row, (skipped, _) in zip(indices, opened, strict=True)]
        )
        # NHWC memory seen as NCHW: a channels_last batch, which is what the model consumes.
        return step, torch.from_numpy(crops).flatten(0, 1).permute(0, 3, 1, 2), used

    def _boxes(self, step: int, oriented: torch.Tensor) -> list[torch.Tensor]:
        """Every view's crop boxes for images of these (width, height): first every view-1 box, then every view-2
        box (the draw order of the in-memory path), from the step's own stream."""
        generator = step_generator(
            self.seed, step, self.rank, self.world, self.global_batch, torch.device("cpu"), CROP_STREAM
        )
        return [crop_boxes(oriented[:, 1], oriented[:, 0], generator, self.crop_scale) for _ in range(self.views)]

    def _open(self, row: int, first_attempt: int = 0) -> tuple[int, PIL.Image.Image]:
        """The image of `row`, opened lazily (header only), and how many rows were skipped to reach it: an
        unreadable one is named, or skipped for the next."""
        for attempt in range(first_attempt, MAX_REPLACEMENTS):
            candidate = (row + attempt) % len(self.images)
            try:
                return attempt, open_image(self.images.value(candidate), self.images.max_pixels)
            except Exception as error:  # the header is parsed on opening, so a broken file fails here
                if not is_bad_image(error):
                    raise
                self._unreadable(candidate, error)
        raise DataError(f"{self.images.source}: {MAX_REPLACEMENTS} consecutive images from row {row} are unreadable")

    def _unreadable(self, row: int, error: Exception) -> None:
        unreadable(self.images, row, error)


def unreadable(images: StoredImages, row: int, error: Exception) -> None:
    """Name the unreadable image of `row`, or, with `skip_bad_images`, warn and return to skip it."""
    where = images.where(row)
    if not images.skip_bad:
        raise DataError(
            f"{images.source}: cannot read the image at {where}: {type(error).__name__}: {error}. "
            "Fix or remove the file, or set `skip_bad_images: true` to skip unreadable images."
        ) from None
    log.warning("skipping unreadable image %s: %s", where, error)


def oriented_size(image: PIL.Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, after the EXIF orientation is applied."""
    width, height = image.size
    return (height, width) if _orientation(image) in SWAPPED_ORIENTATIONS else (width, height)


def _orientation(image: PIL.Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a malformed EXIF block: display as stored
        return 1


def cut_crops(image: PIL.Image.Image, boxes: list[list[float]], size: int) -> list[np.ndarray]:
    """Decode `image` at the coarsest scale that keeps every box at least `size` pixels, apply its EXIF
    orientation, and resize each (x0, y0, w, h) box, given in oriented full-size pixels, to `size x size` RGB."""
    full_width, full_height = oriented_size(image)
    smallest_side = min(min(w, h) for _, _, w, h in boxes)
    decoded = decoded_rgb(image, shrink=smallest_side / size)  # decoding may shrink it this much and lose nothing
    scale_x, scale_y = decoded.width / full_width, decoded.height / full_height
    crops = []
    for x0, y0, w, h in boxes:
        box = (x0 * scale_x, y0 * scale_y, (x0 + w) * scale_x, (y0 + h) * scale_y)
        crops.append(np.asarray(decoded.resize((size, size), PIL.Image.Resampling.BICUBIC, box=box)))
    return crops


def worker_context() -> multiprocessing.context.BaseContext:
    """Workers forked from a clean server process that has this module (torch, PIL, datasets) imported: fast to
    start, and free of the threads and handlers of the process that trains (forked from a process that Prefect had
    run in, workers died at shutdown with exit code 1)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])  # takes effect when the server starts, i.e. at the first loader
    return context


def worker_loader(
    items: torch.utils.data.Dataset,
    workers: int,
    pin: bool,
    sampler: Sampler | range | None = None,
    prefetch: int = PREFETCH,
) -> DataLoader:
    """Items of `items` (each a whole batch) from `workers` processes (0: this one) that work `prefetch` items ahead,
    pinned when `pin`. A worker that delivers nothing for `LOADER_TIMEOUT_S` raises instead of hanging the run."""
    return DataLoader(
        items,
        batch_size=None,  # an item is already a whole batch
        sampler=sampler,
        num_workers=workers,
        prefetch_factor=prefetch if workers else None,
        pin_memory=pin,
        multiprocessing_context=worker_context() if workers else None,
        timeout=LOADER_TIMEOUT_S if workers else 0,  # torch allows a timeout only with workers
    )


@dataclass
class CropStream:
    """`stream(step)`: the crops of `step` on `device`, from a worker pool that works ahead. The pool starts at the
    first step asked for (the resumed step) and steps must then be asked for in order."""

    batches: CropBatches
    total_steps: int
    workers: int
    device: torch.device
    prefetch: int = PREFETCH
    _iterator: Iterator[tuple[int, torch.Tensor, torch.Tensor]] | None = None

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(the step's crops on the device, the rows they come from, on the CPU)."""
        if self._iterator is None:
            pin = self.device.type == "cuda"
            loader = worker_loader(self.batches, self.workers, pin, range(step, self.total_steps), self.prefetch)
            self._iterator = iter(loader)
        loaded_step, crops, rows = next(self._iterator)
        if loaded_step != step:
            raise RuntimeError(f"the crop loader produced step {loaded_step} where step {step} was expected")
        return crops.to(self.device, non_blocking=True), rows  # from pinned memory: the host does not wait
