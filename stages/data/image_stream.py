"""Images of any source read in batches, for pre-labeling folders that need not fit in memory: rows are decoded as
each batch is needed, unreadable files (and files over `max_pixels`) are skipped and counted (and named in the log),
never fatal. With `min_side`, large images are decoded at a reduced scale, so a batch of photos takes memory that
follows `min_side`, not the photos' resolution."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch
from datasets import Dataset

from stages.data.decoding import DEFAULT_MAX_IMAGE_PIXELS, decode_image, undecoded
from stages.data.errors import DataError
from stages.data.ids import row_ids
from stages.data.sources import UNLABELED_SPLIT, image_column_of, log_non_images, open_source

logger = logging.getLogger(__name__)


def image_paths(part: Dataset) -> list[str | None]:
    if isinstance(part.features["image"], datasets.Image):
        return [path or None for path in part.flatten()["image.path"]]
    return [None] * len(part)


def class_names_of(dataset: Dataset, label_column: str) -> list[str] | None:
    """The classes a source is sorted into (imagefolder: its sub-folders), or None."""
    feature = dataset.features.get(label_column)
    return [str(name) for name in feature.names] if isinstance(feature, datasets.ClassLabel) else None


@dataclass
class ImageStream:
    """Batches of (ids, paths, uint8 N x 3 x H x W images) of every split of `source`, one split after the other."""

    source: str
    batch_size: int
    image_size: int | None  # shorter side resized and centre-cropped to this; None: as stored (one size per batch)
    image_column: str = "image"
    label_column: str = "label"
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are skipped as unreadable (`data.max_image_pixels`)
    min_side: int | None = None  # decoded shrunk by whole factors while the shorter side stays this long (None: not)
    skipped: list[str] = field(default_factory=list)  # unreadable images, by name

    def __post_init__(self) -> None:
        splits = open_source(self.source)
        self.parts = []
        for dataset in splits.values():
            column = image_column_of(dataset, self.image_column, self.source)
            images = undecoded(dataset.select_columns([column]), column)
            self.parts.append(images.rename_column(column, "image") if column != "image" else images)
        self.total = sum(len(part) for part in self.parts)
        self.class_names = class_names_of(next(iter(splits.values())), self.label_column)
        if self.total == 0:
            raise DataError(f"{self.source} holds no images; point it at a folder or dataset of images")
        log_non_images(self.source)

    def __len__(self) -> int:
        return self.total

    def num_skipped(self) -> int:
        return len(self.skipped)

    def __iter__(self) -> Iterator[tuple[list[str], list[str], torch.Tensor]]:
        """Batches of at most `batch_size` images; a batch whose images differ in size comes as one batch per size
        (the evaluation crop then brings each to the network's size)."""
        paths = [path for part in self.parts for path in image_paths(part)]  # paths only: bytes are read per batch
        ids = row_ids(paths, [f"{UNLABELED_SPLIT}-{row}" for row in range(len(paths))])  # distinct over all splits
        offset = 0
        for part in self.parts:
            for start in range(0, len(part), self.batch_size):
                rows = slice(offset + start, offset + start + self.batch_size)
                yield from self._batches(part[start : start + self.batch_size]["image"], ids[rows], paths[rows])
            offset += len(part)

    def _batches(
        self, values: list, ids: list[str], paths: list[str | None]
    ) -> Iterator[tuple[list[str], list[str], torch.Tensor]]:
        by_size: dict[tuple, tuple[list, list, list]] = {}
        for row, value in enumerate(values):
            array = decode_image(
                value,
                ids[row],
                paths[row],
                self.image_size,
                skip_bad=True,
                max_pixels=self.max_pixels,
                min_side=self.min_side,
            )
            if array is None:
                self.skipped.append(paths[row] or ids[row])
                logger.warning("%s: skipped the unreadable image %s", self.source, paths[row] or ids[row])
                continue
            group = by_size.setdefault(array.shape, ([], [], []))
            group[0].append(ids[row])
            group[1].append(paths[row] or "")
            group[2].append(torch.tensor(array))  # a copy: PIL's arrays are read-only
        for kept_ids, kept_paths, arrays in by_size.values():
            yield kept_ids, kept_paths, torch.stack(arrays).permute(0, 3, 1, 2).contiguous()
