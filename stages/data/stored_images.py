"""Images left where the source keeps them: the streaming path's stand-in for a split's decoded `N x 3 x H x W`
tensor. Each row is an undecoded image value (`{"bytes", "path"}`, a path, or an array) read from the source's Arrow
table when a batch needs it, so host memory does not grow with the number of images. Loader workers decode and crop
(stages/data/crop_loader.py for training, stages/data/eval_crops.py for evaluation)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
from datasets import Dataset

from stages.data.decoding import DEFAULT_MAX_IMAGE_PIXELS, path_of, undecoded
from stages.data.ids import joined_ids, row_ids


@dataclass
class StoredImages:
    """Rows `index` of `dataset`'s `column`, undecoded. Indexing with row numbers gives a `StoredImages` of those rows,
    as indexing a tensor of images would."""

    dataset: Dataset
    column: str
    split: str  # names rows in messages
    source: str
    skip_bad: bool  # with `data.skip_bad_images`: an unreadable image is skipped, not fatal
    index: torch.Tensor | None = None  # None: every row, in order
    workers: int = 0  # loader worker processes that decode them (`data.loader_workers`)
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # larger images are bad images (`data.max_image_pixels`)

    def __post_init__(self) -> None:
        if self.index is None:
            self.index = torch.arange(len(self.dataset))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, rows: torch.Tensor | Sequence[int]) -> StoredImages:
        chosen = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
        return dataclasses.replace(self, index=self.index[chosen])

    def value(self, row: int) -> Any:
        """The undecoded image value of row `row` (a position in this view)."""
        return self.dataset[int(self.index[row])][self.column]

    def where(self, row: int) -> str:
        """Row `row` in words, for messages: its row in the source split and its file."""
        stored = int(self.index[row])
        path = path_of(self.dataset[stored][self.column])
        return f"row {stored} of split {self.split!r} ({path or 'embedded'})"


def stored(
    dataset: Dataset, column: str, split: str, source: str, skip_bad: bool, workers: int, *, max_pixels: int
) -> StoredImages:
    """Every row of `dataset`'s image column, left undecoded."""
    table = undecoded(dataset.select_columns([column]), column)
    return StoredImages(table, column, split, source, skip_bad, workers=workers, max_pixels=max_pixels)


@dataclass
class UndecodedRows:
    """Source rows before decoding, with their names and ids: `DecodedRows` of the streaming path."""

    images: StoredImages
    paths: list[str | None]
    fallback: list[str]  # per row: "<split>-<row>", its name when there is no path
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = row_ids(self.paths, self.fallback)

    def take(self, rows: torch.Tensor | list[int]) -> UndecodedRows:
        chosen = rows.tolist() if isinstance(rows, torch.Tensor) else rows
        return UndecodedRows(
            self.images[chosen],
            [self.paths[i] for i in chosen],
            [self.fallback[i] for i in chosen],
            [self.ids[i] for i in chosen],
        )

    def joined(self, other: UndecodedRows, prefix: str) -> UndecodedRows:
        """These rows, then `other`'s, as one table (the train split and the `unlabeled` images)."""
        mine, theirs = self.images, other.images
        table = datasets.concatenate_datasets([mine.dataset, theirs.dataset.cast(mine.dataset.features)])
        index = torch.cat([mine.index, theirs.index + len(mine.dataset)])
        images = dataclasses.replace(mine, dataset=table, index=index)
        return UndecodedRows(
            images, self.paths + other.paths, self.fallback + other.fallback, joined_ids(self.ids, other.ids, prefix)
        )
