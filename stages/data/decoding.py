"""Decoding: every row of a source split becomes an `H x W x 3` uint8 array, decoded once with PIL and one by one, so
that a bad image is named (row and file), or skipped and counted when `skip_bad` is set."""

from __future__ import annotations

import io
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import PIL.Image
import torch
from datasets import Dataset
from datasets.utils import tqdm

from stages.data.ids import joined_ids, row_ids

logger = logging.getLogger(__name__)

IMAGE_DECODER = datasets.Image()
DECODE_BATCH = 256  # rows fetched from Arrow per read; decoding itself is row by row
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL's default `MAX_IMAGE_PIXELS`, 89,478,485


class UnreadableImage(ValueError):
    """An image PIL cannot read; the message names the row and the file."""


@dataclass
class DecodedRows:
    """Source rows decoded: per row an HWC uint8 array, or None where the image was skipped."""

    arrays: list[np.ndarray | None]
    paths: list[str | None]  # per row: the file path when known
    fallback: list[str]  # per row: "<split>-<row>", its name when there is no path
    ids: list[str] = field(default_factory=list)  # made from all rows at once (stages/data/ids.py)

    def __post_init__(self) -> None:
        if not self.ids:
            self.ids = row_ids(self.paths, self.fallback)

    @property
    def names(self) -> list[str]:
        return [path or name for path, name in zip(self.paths, self.fallback, strict=True)]

    def take(self, rows: torch.Tensor | list[int]) -> DecodedRows:
        """These rows, keeping the ids made from all rows."""
        chosen = rows.tolist() if isinstance(rows, torch.Tensor) else rows
        return DecodedRows(
            [self.arrays[i] for i in chosen],
            [self.paths[i] for i in chosen],
            [self.fallback[i] for i in chosen],
            [self.ids[i] for i in chosen],
        )

    def joined(self, other: DecodedRows, prefix: str) -> DecodedRows:
        """These rows, then `other`'s; ids as `stages.data.ids.joined_ids` makes them."""
        return DecodedRows(
            self.arrays + other.arrays,
            self.paths + other.paths,
            self.fallback + other.fallback,
            joined_ids(self.ids, other.ids, prefix),
        )


def undecoded(dataset: Dataset, column: str) -> Dataset:
    """Images as `{"path", "bytes"}` instead of PIL images: decoding is left to whoever reads the rows."""
    if isinstance(dataset.features[column], datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def decode_rows(
    dataset: Dataset,
    column: str,
    split: str,
    image_size: int | None,
    skip_bad: bool,
    source: str,
    *,
    max_pixels: int,
) -> DecodedRows:
    """Every row's image, resized to `image_size` when set; `split` and `source` name the rows in messages."""
    dataset = undecoded(dataset.select_columns([column]), column)  # we decode, row by row
    arrays, paths = [], []
    progress = tqdm(total=len(dataset), desc=f"Decoding {split} images", unit="img", disable=len(dataset) < 10_000)
    for start in range(0, len(dataset), DECODE_BATCH):
        for offset, value in enumerate(dataset[start : start + DECODE_BATCH][column]):
            path = path_of(value)
            paths.append(path)
            arrays.append(decode_image(value, f"row {start + offset} of split {split!r}", path, image_size, skip_bad))
        progress.update(min(DECODE_BATCH, len(dataset) - start))
    progress.close()
    skipped = sum(array is None for array in arrays)
    if skipped:
        logger.warning("%s: skipped %d unreadable images in split %r", source, skipped, split)
    return DecodedRows(arrays, paths, [f"{split}-{row}" for row in range(len(arrays))])


def open_image(value: Any) -> PIL.Image.Image:
    """A PIL image from an image value (`{"bytes", "path"}`, a path, a PIL image or an array), not yet decoded
    (PIL reads the header only, so a loader can choose a reduced JPEG scale first)."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        return PIL.Image.open(io.BytesIO(value["bytes"]))
    path = path_of(value)
    if path is not None:
        return PIL.Image.open(path)
    return to_pil(value)  # an array column


def path_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("path") or None
    return value if isinstance(value, str) else None


def decode_image(value: Any, where: str, path: str | None, image_size: int | None, skip_bad: bool) -> np.ndarray | None:
    """An `H x W x 3` uint8 array (resized when `image_size` is set); None for a bad image when `skip_bad`."""
    try:
        image = to_rgb(to_pil(value))
        if image_size is not None:
            image = resize_center_crop(image, image_size)
        return np.asarray(image, dtype=np.uint8)
    except Exception as error:
        culprit = f"{where} ({path})" if path else where
        if skip_bad:
            logger.debug("skipping unreadable image %s: %s", culprit, error)
            return None
        raise UnreadableImage(f"cannot read the image at {culprit}: {type(error).__name__}: {error}") from None


def to_pil(value: Any) -> PIL.Image.Image:
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, (dict, str)):
        return IMAGE_DECODER.decode_example(value)  # bytes or a local/remote path; applies EXIF orientation
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ValueError(f"an image array must be H x W or H x W x 1/3/4, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise ValueError(f"an image array must hold integers in 0..255, got dtype {array.dtype}")
    return PIL.Image.fromarray(array.astype(np.uint8))


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB, whatever the mode: grayscale is repeated, alpha dropped, 16-bit scaled down (PIL would clip it)."""
    if image.mode.startswith("I"):
        image = PIL.Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if image.mode == "P":
        image = image.convert("RGBA")  # palette transparency converts cleanly only through RGBA
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_center_crop(image: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Shorter side to `size` (bicubic), then the centred `size x size` square."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_width, new_height = max(size, round(width * scale)), max(size, round(height * scale))
    image = image.resize((new_width, new_height), PIL.Image.Resampling.BICUBIC)
    left, top = (new_width - size) // 2, (new_height - size) // 2
    return image.crop((left, top, left + size, top + size))


def stack_images(rows: DecodedRows, kept: list[int], split: str) -> torch.Tensor:
    """The kept rows as one `N x 3 x H x W` uint8 tensor; images of different sizes are one clear error."""
    sizes = Counter(rows.arrays[row].shape[:2] for row in kept)
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        odd = next(row for row in kept if rows.arrays[row].shape[:2] != common)
        height, width = rows.arrays[odd].shape[:2]
        raise ValueError(
            f"split {split!r} has images of {len(sizes)} different sizes: most are {common[1]}x{common[0]} (W x H) "
            f"but {rows.names[odd]} is {width}x{height}. Set `image_size` to resize them all to one square size."
        )
    return torch.from_numpy(np.stack([rows.arrays[row] for row in kept])).permute(0, 3, 1, 2).contiguous()
