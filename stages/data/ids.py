"""Row ids: how a training image is named in subset lists, labels files and pre-label tables, and how such names are
matched back to rows.

An id is the image's file name when every row has a distinct one (so lists like ImageNet's `1percent.txt` match),
else its path relative to the rows' common folder when those are distinct, else `<split>-<row>`. A name is matched
to a row by its exact id, else by a file name (basename) that one row alone has.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def row_ids(paths: Sequence[str | None], fallback: Sequence[str]) -> list[str]:
    """Per row its id (see the module docstring); `fallback` holds the `<split>-<row>` names."""
    if paths and all(paths):
        names = [basename(path) for path in paths]
        if len(set(names)) == len(names):
            return names
        try:
            root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
            relative = [os.path.relpath(path, root) for path in paths]
        except ValueError:  # absolute and relative paths mixed
            return list(fallback)
        if len(set(relative)) == len(relative):
            return relative
    return list(fallback)


def joined_ids(first: Sequence[str], second: Sequence[str], prefix: str) -> list[str]:
    """Ids of two sets of rows, one after the other. Each set keeps the ids it has alone, so adding images to one
    never renames the other's; an id of `second` that `first` already uses becomes `<prefix>/<id>`."""
    taken = set(first)
    return [*first, *(f"{prefix}/{name}" if name in taken else name for name in second)]


def basename(name: Any) -> str:
    return posixpath.basename(str(name).replace("\\", "/"))


@dataclass
class Matches:
    """Names matched to rows: `rows[i]` is the row of the i-th matched name; the rest are unknown or ambiguous."""

    rows: list[int] = field(default_factory=list)
    matched: list[str] = field(default_factory=list)  # the names that matched, in input order
    unknown: list[str] = field(default_factory=list)  # no row has this id or file name
    ambiguous: list[str] = field(default_factory=list)  # several rows share this file name


def match_names(names: Sequence[Any], ids: Sequence[str]) -> Matches:
    """Rows of `ids` named by `names`: an exact id, else a file name that one row alone has."""
    exact = {name: row for row, name in enumerate(ids)}
    by_basename: dict[str, int | None] = {}
    for row, name in enumerate(ids):
        key = basename(name)
        by_basename[key] = None if key in by_basename else row  # None: two rows share this file name
    found = Matches()
    for name in names:
        name = str(name).strip()
        row = exact.get(name, by_basename.get(basename(name), -1))
        if row is None:
            found.ambiguous.append(name)
        elif row < 0:
            found.unknown.append(name)
        else:
            found.rows.append(row)
            found.matched.append(name)
    return found
