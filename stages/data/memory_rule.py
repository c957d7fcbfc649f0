"""Which data path a stage takes: decode every image once into memory (fast, and what small data wants), or stream
them from the source with loader workers (memory flat in the number of images). `data.in_memory` chooses; left unset,
the rule below does, from the size the decoded images would take."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from datasets import Dataset

from stages.data.decoding import is_bad_image, open_header, undecoded

log = logging.getLogger(__name__)

IN_MEMORY_LIMIT_BYTES = 2 * 1024**3  # decoded uint8 training images kept in memory, per process, at most
SAMPLED_IMAGES = 16  # image headers read to estimate the size of images stored at their own size


def keeps_in_memory(
    choice: bool | None, splits: Sequence[Dataset], column: str, image_size: int | None, source: str
) -> bool:
    """`choice` when set; else in memory when every split's images, decoded, take at most `IN_MEMORY_LIMIT_BYTES`."""
    if choice is not None:
        return choice
    estimate = sum(decoded_bytes(split, column, image_size) for split in splits)
    in_memory = estimate <= IN_MEMORY_LIMIT_BYTES
    log.info(
        "%s: its images take about %.2f GB decoded, %s the in-memory limit of %.0f GB: %s (set data.in_memory to "
        "choose)",
        source,
        estimate / 1e9,
        "within" if in_memory else "above",
        IN_MEMORY_LIMIT_BYTES / 1e9,
        "decoding them once into memory" if in_memory else "streaming them with loader workers",
    )
    return in_memory


def decoded_bytes(dataset: Dataset, column: str, image_size: int | None) -> int:
    """About how many bytes `dataset`'s images take as uint8 RGB: `image_size` squared each when set, else the mean
    size of a few images, from their headers alone."""
    if len(dataset) == 0:
        return 0
    if image_size is not None:
        return len(dataset) * image_size * image_size * 3
    step = max(1, len(dataset) // SAMPLED_IMAGES)
    rows = undecoded(dataset.select_columns([column]), column).select(range(0, len(dataset), step)[:SAMPLED_IMAGES])
    pixels = []
    for value in rows[column]:
        try:
            width, height = open_header(value).size
            pixels.append(width * height)
        except Exception as error:
            if not is_bad_image(error):
                raise
            continue  # an unreadable image: the stage that decodes it names it
    mean = sum(pixels) / len(pixels) if pixels else 0
    return int(len(dataset) * mean * 3)
