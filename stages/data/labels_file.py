"""A labels file (`data.labels`): the classes a team has given to some of its training images.

A CSV with a header and the columns `image` (an image's id or file name, stages/data/ids.py) and `label` (its class
name); other columns are ignored. Rows whose label is empty are skipped, so the list that `simclrv2 select` writes is
a labels file once a person has filled in some of its `label` cells. The same image listed twice with one label is
fine; with two different labels it is an error.

Read as a spreadsheet may save it: a UTF-8 byte-order mark (Excel's "CSV UTF-8") is skipped, and an image or class
cell that `simclrv2 select` wrote with a leading `'` so that no spreadsheet runs it as a formula (`'=x.png`) is
read without it (stages/data/spreadsheet_cells.py); a cell saved without that quote (`=x.png`) reads the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from stages.data.errors import DataError
from stages.data.ids import match_names
from stages.data.spreadsheet_cells import unescape_cell

logger = logging.getLogger(__name__)

IMAGE, LABEL = "image", "label"


def read_labels_file(path: str | Path, ids: Sequence[str]) -> dict[int, str]:
    """Row of `ids` -> class name, for every labeled image the file names."""
    table = _read_table(Path(path))
    table = table[table[LABEL] != ""]
    if table.empty:
        raise DataError(f"data.labels: {path} labels no image; fill in the `{LABEL}` column of at least one row")
    labels = _one_label_per_image(table, path)
    found = match_names(list(labels), ids)
    if found.unknown:
        raise DataError(
            f"data.labels: {len(found.unknown)} of the {len(labels)} images in {path} are not training images, e.g. "
            f"{found.unknown[:5]} (training ids look like {list(ids[:3])}); fix the names or point `data.source` "
            "(and `data.unlabeled`) at the folder that holds them"
        )
    if found.ambiguous:
        raise DataError(
            f"data.labels: {len(found.ambiguous)} images in {path} name a file name that several training images "
            f"share, e.g. {found.ambiguous[:5]}; name them by their full id (their path under the data folder)"
        )
    rows: dict[int, str] = {}
    for row, name in zip(found.rows, found.matched, strict=True):
        if rows.get(row, labels[name]) != labels[name]:  # two names (id and file name) of one image disagree
            raise DataError(f"data.labels: {path} gives {ids[row]!r} two labels ({rows[row]!r} and {labels[name]!r})")
        rows[row] = labels[name]
    return rows


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"data.labels: {path} does not exist; write a CSV with the columns `{IMAGE}` and `{LABEL}`")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
        raise DataError(f"data.labels: {path} is not a readable CSV ({error})") from None
    missing = [column for column in (IMAGE, LABEL) if column not in table.columns]
    if missing:
        raise DataError(
            f"data.labels: {path} has no column {missing} (its columns: {list(table.columns)}); the first line must "
            f"be a header naming the columns `{IMAGE}` and `{LABEL}`"
        )
    return table[[IMAGE, LABEL]].apply(lambda column: column.str.strip().map(unescape_cell))


def _one_label_per_image(table: pd.DataFrame, path: str | Path) -> dict[str, str]:
    labels_per_image = table.groupby(IMAGE, sort=False)[LABEL].unique()
    conflicting = labels_per_image[labels_per_image.map(len) > 1]
    if not conflicting.empty:
        examples = "; ".join(f"{image!r}: {sorted(labels)}" for image, labels in conflicting.head(3).items())
        raise DataError(
            f"data.labels: {path} gives {len(conflicting)} images conflicting labels ({examples}); keep one row per "
            "image"
        )
    return {image: labels[0] for image, labels in labels_per_image.items()}
