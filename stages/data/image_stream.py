"""Images of any source read in batches, for pre-labeling folders that need not fit in memory: rows are decoded as
each batch is needed, unreadable files are skipped and counted (and named in the log), never fatal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import datasets
import torch
from datasets import Dataset

from stages.data.decoding import decode_image, undecoded
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

    def __iter__(self) -> Iterator[tuple[list[str], list[str], torch.Tensor]]:
        offset = 0
        for part in self.parts:
            paths = image_paths(part)  # the paths alone: image bytes are read batch by batch
            ids = row_ids(paths, [f"{UNLABELED_SPLIT}-{offset + row}" for row in range(len(part))])
            for start in range(0, len(part), self.batch_size):
                values = part[start : start + self.batch_size]["image"]
                yield self._batch(values, ids[start:], paths[start:])
            offset += len(part)

    def _batch(
        self, values: list, ids: list[str], paths: list[str | None]
    ) -> tuple[list[str], list[str], torch.Tensor]:
        kept_ids, kept_paths, arrays = [], [], []
        for row, value in enumerate(values):
            array = decode_image(value, ids[row], paths[row], self.image_size, skip_bad=True)
            if array is None:
                self.skipped.append(paths[row] or ids[row])
                continue
            kept_ids.append(ids[row])
            kept_paths.append(paths[row] or "")
            arrays.append(torch.tensor(array))  # a copy: PIL's arrays are read-only
        sizes = {tuple(array.shape) for array in arrays}
        if len(sizes) > 1:
            raise DataError(
                f"{self.source}: images of different sizes ({sorted(sizes)[:3]}, H x W x C) in one batch; pass an "
                "image size so that each is resized to one square size"
            )
        images = torch.stack(arrays).permute(0, 3, 1, 2).contiguous() if arrays else torch.empty(0, 3, 1, 1)
        return kept_ids, kept_paths, images.to(torch.uint8)
