"""Decoding: every row of a source split becomes an `H x W x 3` uint8 array, decoded once with PIL and one by one, so
that a bad image is named (row and file), or skipped and counted when `skip_bad` is set.

Every path that decodes an image (here, the loader workers of stages/data/crop_loader.py and eval_crops.py, the
batches of stages/data/image_stream.py) opens it with `open_image`, which reads the header only and refuses an image
of more than `data.max_image_pixels` pixels before a pixel is decoded. A bad image is one PIL cannot make sense of,
or one over that limit (`is_bad_image`); a fault of the machine (out of memory, a disk, NFS or permission error)
is not, and propagates as it is, so that the pipeline can tell the two apart."""

from __future__ import annotations

import io
import logging
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import datasets
import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from datasets import Dataset
from datasets.utils import tqdm

from stages.data.ids import joined_ids, row_ids

logger = logging.getLogger(__name__)

DECODE_BATCH = 256  # rows fetched from Arrow per read; decoding itself is row by row
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3  # PIL's default `MAX_IMAGE_PIXELS`, 89,478,485
SIXTEEN_BIT_ROWS = 256  # rows of a 16-bit image scaled to 8 bits at a time: its temporaries stay small
# What PIL raises for bytes it cannot make an image of (its OSErrors are told apart by `is_bad_image`).
IMAGE_FORMAT_ERRORS = (ValueError, SyntaxError, EOFError, struct.error, PIL.Image.DecompressionBombError)


class UnreadableImage(ValueError):
    """An image PIL cannot read; the message names the row and the file."""


class TooManyPixels(ValueError):
    """An image whose header announces more pixels than `data.max_image_pixels`: refused before it is decoded."""


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
    """Every row's image, resized to `image_size` when set; `split` and `source` name the rows in messages. An image
    of more than `max_pixels` pixels is a bad image."""
    dataset = undecoded(dataset.select_columns([column]), column)  # we decode, row by row
    arrays, paths = [], []
    progress = tqdm(total=len(dataset), desc=f"Decoding {split} images", unit="img", disable=len(dataset) < 10_000)
    for start in range(0, len(dataset), DECODE_BATCH):
        for offset, value in enumerate(dataset[start : start + DECODE_BATCH][column]):
            path = path_of(value)
            paths.append(path)
            where = f"row {start + offset} of split {split!r}"
            arrays.append(decode_image(value, where, path, image_size, skip_bad, max_pixels=max_pixels))
        progress.update(min(DECODE_BATCH, len(dataset) - start))
    progress.close()
    skipped = sum(array is None for array in arrays)
    if skipped:
        logger.warning("%s: skipped %d unreadable images in split %r", source, skipped, split)
    return DecodedRows(arrays, paths, [f"{split}-{row}" for row in range(len(arrays))])


def is_bad_image(error: BaseException) -> bool:
    """Whether `error`, raised while opening or decoding an image, blames the image: PIL cannot make sense of its
    bytes (`IMAGE_FORMAT_ERRORS`, or an `OSError` without an errno such as "cannot identify image file" or "image
    file is truncated"), it is over the pixel limit, or its file is missing. An `OSError` with an errno (a disk, NFS
    or permission fault) and `MemoryError` are the machine's faults, not the image's."""
    if isinstance(error, FileNotFoundError):
        return True  # the source names a file that is not there: fix or remove the row
    if isinstance(error, OSError):
        return error.errno is None
    return isinstance(error, IMAGE_FORMAT_ERRORS)


def open_image(value: Any, max_pixels: int) -> PIL.Image.Image:
    """A PIL image from an image value (`{"bytes", "path"}`, a path, a PIL image or an array), not yet decoded
    (PIL reads the header only, so a loader can choose a reduced JPEG scale first); `TooManyPixels` when the header
    announces more than `max_pixels` pixels."""
    allow_in_pil(max_pixels)
    over = f"more than data.max_image_pixels = {max_pixels:,}; raise data.max_image_pixels to read it"
    try:
        image = open_header(value)
    except PIL.Image.DecompressionBombError as error:  # PIL's guard, at twice `max_pixels` or more: over it too
        raise TooManyPixels(f"{error}: {over}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise TooManyPixels(f"it is {width} x {height} = {width * height:,} pixels, {over}")
    return image


def allow_in_pil(max_pixels: int) -> None:
    """Raise PIL's own guard, `PIL.Image.MAX_IMAGE_PIXELS` (it refuses images of more than twice as many pixels),
    to a larger configured limit, so that the limit `open_image` checks decides. Never lowered: it stays a backstop
    for what PIL decodes beyond the header's size (the largest frame of an ICO or GIF file). A raise outlives the
    config that asked for it, which loosens only that backstop: `open_image` still checks each image against its
    own config's limit, in every process that decodes (loader workers raise it themselves)."""
    if PIL.Image.MAX_IMAGE_PIXELS is not None and max_pixels > PIL.Image.MAX_IMAGE_PIXELS:
        PIL.Image.MAX_IMAGE_PIXELS = max_pixels


def open_header(value: Any) -> PIL.Image.Image:
    """The image of `value` with only its header read, under no limit but PIL's: to learn sizes, not to decode."""
    if isinstance(value, PIL.Image.Image):
        return value
    if isinstance(value, dict) and value.get("bytes") is not None:
        return PIL.Image.open(io.BytesIO(value["bytes"]))
    path = path_of(value)
    if path is not None:
        return PIL.Image.open(path)
    return array_image(value)  # an array column


def path_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("path") or None
    return value if isinstance(value, str) else None


def decode_image(
    value: Any,
    where: str,
    path: str | None,
    image_size: int | None,
    skip_bad: bool,
    *,
    max_pixels: int,
    min_side: int | None = None,
) -> np.ndarray | None:
    """An `H x W x 3` uint8 array (resized when `image_size` is set); None for a bad image when `skip_bad`.
    `min_side`: decoded at a reduced scale (`reduced_rgb`) while its shorter side stays at least this long."""
    try:
        image = open_image(value, max_pixels)
        image = decoded_rgb(image) if min_side is None else reduced_rgb(image, min_side)
        if image_size is not None:
            image = resize_center_crop(image, image_size)
        return np.asarray(image, dtype=np.uint8)
    except Exception as error:
        if not is_bad_image(error):
            raise
        culprit = f"{where} ({path})" if path else where
        if skip_bad:
            logger.debug("skipping unreadable image %s: %s", culprit, error)
            return None
        raise UnreadableImage(f"cannot read the image at {culprit}: {type(error).__name__}: {error}") from None


def decoded_rgb(image: PIL.Image.Image, shrink: float = 1.0) -> PIL.Image.Image:
    """`image` decoded in RGB and turned as its EXIF orientation says. A JPEG is decoded at the coarsest DCT scale
    (1/2, 1/4, 1/8) that shrinks it at most `shrink` times (PIL's `draft`), which is several times cheaper."""
    if image.format == "JPEG" and shrink >= 2:
        width, height = image.size
        image.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
    PIL.ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a large image
    return to_rgb(image)


def reduced_rgb(image: PIL.Image.Image, min_side: int) -> PIL.Image.Image:
    """`image` decoded in RGB (`decoded_rgb`), shrunk by a whole factor as far as its shorter side stays at least
    `min_side`: a JPEG by its DCT scale as it decodes, then any image by averaging boxes of pixels (`Image.reduce`).
    Memory then follows `min_side`, not the image's resolution; an image under twice `min_side` is decoded as is."""
    image = decoded_rgb(image, shrink=min(image.size) / min_side)
    factor = min(image.size) // min_side
    if factor < 2:
        return image
    # Whole boxes only, centred: a partial last box would stretch the picture by up to a pixel of the result.
    width, height = image.size
    left, top = (width % factor) // 2, (height % factor) // 2
    return image.reduce(factor, box=(left, top, left + width - width % factor, top + height - height % factor))


def array_image(value: Any) -> PIL.Image.Image:
    """An image array (H x W, or H x W x 1/3/4, integers in 0..255) as a PIL image."""
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
        image = eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")  # palette transparency converts cleanly only through RGBA
    return image if image.mode == "RGB" else image.convert("RGB")


def eight_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A 16-bit grayscale image (mode "I;16", "I;16B", ..., or the 32-bit "I") as 8-bit "L", a band of rows at a
    time: memory beyond the image and its result stays small (a float64 copy of a 10000 x 9000 image took 1.5 GB)."""
    out = np.empty((image.height, image.width), dtype=np.uint8)
    for top in range(0, image.height, SIXTEEN_BIT_ROWS):
        band = image.crop((0, top, image.width, min(top + SIXTEEN_BIT_ROWS, image.height)))
        out[top : top + SIXTEEN_BIT_ROWS] = sixteen_to_eight_bits(np.asarray(band))
    return PIL.Image.fromarray(out)


def sixteen_to_eight_bits(pixels: np.ndarray) -> np.ndarray:
    """round(x / 257) clipped to 0..255 (65535 is white), exactly and in integers: (x + 128) // 257, as x / 257 is
    never halfway between two integers (257 is odd)."""
    wide = np.clip(pixels, 0, 65535).astype(np.uint32)
    wide += 128
    wide //= 257
    return wide.astype(np.uint8)


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
