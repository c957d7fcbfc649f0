"""Label subsets: which training rows get labels under each budget, saved as checksummed files.

A budget is a fraction of the labeled training images (float in (0, 1]), a number of labels (int >= 1), or `all`
(every label there is). Unlabeled rows (label -1) are never drawn. For `k` labels:
- water-filling over classes: every class gets the same count as far as its size allows; full classes are capped and
  their share spread over the others; the `r` labels left over go one each to the first `r` classes (not yet full)
  of one seeded random class order;
- within a class, its labelled rows are a prefix of one seeded random permutation of its rows.
Raising `k` only ever adds labels (per-class counts never drop, prefixes only grow), so every smaller budget's subset
lies inside every larger one's, for fractions and counts alike: the 1% set is inside the 10% set, as with ImageNet's
official lists (docs/simclrv2.md#label-subsets).

Files: our JSON records (`save_subset`) carry the sha256 of their sorted indices; user-supplied lists (one id or file
name per line, like ImageNet's `1percent.txt`, or a JSON list) are matched to rows by id or by file name. A list
saved by a spreadsheet may start with a UTF-8 byte-order mark; a CSV list's `image` cells are read as a labels file's
(stages/data/labels_file.py): a leading `'` written against formulas is taken off (stages/data/spreadsheet_cells.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import numbers
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from stages.data.ids import match_names
from stages.data.labels import UNLABELED
from stages.data.labels_file import IMAGE
from stages.data.sources import ImageSplit
from stages.data.spreadsheet_cells import unescape_cell
from stages.training.files import write_text_atomic

Budget = float | int | str  # float in (0, 1]: a fraction of the labels; int >= 1: a number of labels; "all"
ALL = "all"  # the budget of every label there is


class SubsetError(ValueError):
    """A bad budget or subset file: the message names the culprit and what to do."""


# --- budgets -------------------------------------------------------------------------------------------------------


def check_budget(budget: Any) -> Budget:
    """The budget as a plain int, float or "all"; bools, other strings, NaN and out-of-range values are refused."""
    accepted = "a fraction in (0, 1] (e.g. 0.01 for 1%), an integer number of labels >= 1, or 'all'"
    if budget == ALL:
        return ALL
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise SubsetError(f"label budget {budget!r} is not a number; use {accepted}")
    if isinstance(budget, numbers.Integral):
        if budget < 1:
            raise SubsetError(f"label budget {budget!r} is below one label; use {accepted}")
        return int(budget)
    budget = float(budget)
    if not (math.isfinite(budget) and 0 < budget <= 1):
        raise SubsetError(f"label budget {budget!r} is not in (0, 1]; use {accepted} (write 250, not 250.0)")
    return budget


def budget_name(budget: Budget) -> str:
    """A stable, file-name safe name: 0.01 -> "1pct", 0.125 -> "12p5pct", 1.0 -> "100pct", 250 -> "250labels",
    "all" -> "all"."""
    budget = check_budget(budget)
    if budget == ALL:
        return ALL
    if isinstance(budget, int):
        return f"{budget}labels"
    percent = f"{budget * 100:.6f}".rstrip("0").rstrip(".")  # 6 decimals hide float noise such as 7.000000000000001
    return f"{percent.replace('.', 'p')}pct"


def parse_budget_name(name: str) -> float | int | None:
    """The budget a name stands for ("10pct" -> 0.1, "250labels" -> 250, "all"), or None if it is not a budget
    name."""
    if name == ALL:
        return ALL
    if count := re.fullmatch(r"([0-9]+)labels", name):
        budget: float | int = int(count.group(1))
    elif percent := re.fullmatch(r"([0-9]+(?:p[0-9]+)?)pct", name):
        budget = float(percent.group(1).replace("p", ".")) / 100
    else:
        return None
    try:
        return budget if budget_name(budget) == name else None  # the canonical spelling only: not "010pct"
    except ValueError:  # out of range: 0pct, 150pct, 0labels
        return None


def num_labels(budget: Budget, num_rows: int, num_classes: int) -> int:
    """k for a budget over `num_rows` labeled rows: round(fraction * rows), the count itself, or every row; at least
    one label per class, at most every row."""
    budget = check_budget(budget)
    k = num_rows if budget == ALL else round(budget * num_rows) if isinstance(budget, float) else budget
    if k > num_rows:
        raise SubsetError(
            f"label budget {budget} asks for more labels than the {num_rows} labeled training images have; lower it, "
            "or use 'all'"
        )
    if k < num_classes:
        raise SubsetError(
            f"label budget {budget!r} gives {k} labels, fewer than the {num_classes} classes; every class needs at "
            f"least one label, so use at least {num_classes} labels (a fraction >= {num_classes / num_rows:.4g})"
        )
    return k


# --- selection -----------------------------------------------------------------------------------------------------


def select_subsets(labels: torch.Tensor, budgets: Sequence[Budget], seed: int) -> dict[str, torch.Tensor]:
    """Budget name -> sorted int64 row indices, class-balanced, seeded and nested (see the module docstring). Rows
    labeled -1 are never chosen."""
    labels = _check_labels(labels)
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or len(budgets) == 0:
        raise SubsetError(f"budgets must be a non-empty list of label budgets, e.g. [0.01, 0.1, 1.0], got {budgets!r}")
    labeled_rows = (labels != UNLABELED).nonzero().flatten()
    if len(labeled_rows) == 0:
        raise SubsetError("no training image is labeled, so no label budget can be drawn; label some images first")
    labels = labels[labeled_rows]  # all rows when every image is labeled: the draws below do not change
    classes = torch.unique(labels)
    class_order, rows_by_class = seeded_orders(labels, classes, seed)
    sizes = torch.tensor([len(rows) for rows in rows_by_class])
    subsets: dict[str, torch.Tensor] = {}
    for budget in budgets:
        counts = water_fill(sizes, class_order, num_labels(budget, len(labels), len(classes)))
        chosen = torch.cat([rows[:count] for rows, count in zip(rows_by_class, counts.tolist(), strict=True)])
        name, chosen = budget_name(budget), labeled_rows[chosen].sort().values
        if name in subsets and not torch.equal(subsets[name], chosen):
            raise SubsetError(f"budgets {budgets!r} give two different subsets the name {name!r}; drop one of them")
        subsets[name] = chosen
    return subsets


def seeded_orders(labels: torch.Tensor, classes: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One seeded random order of the classes (who gets the leftover labels), and per class one seeded random order
    of its rows (a budget takes a prefix of each). Neither depends on the budgets: that is what makes them nest."""
    generator = torch.Generator().manual_seed(seed)
    class_order = torch.randperm(len(classes), generator=generator)
    by_class = torch.argsort(labels, stable=True).split(torch.bincount(labels)[classes].tolist())  # one pass, 1M rows
    return class_order, [rows[torch.randperm(len(rows), generator=generator)] for rows in by_class]


def water_fill(sizes: torch.Tensor, class_order: torch.Tensor, k: int) -> torch.Tensor:
    """Per-class counts summing to k: the highest common level L with sum(min(size, L)) <= k, then one more label
    each for the first remaining classes in `class_order` that still have rows."""
    level = 0
    while level < int(sizes.max()) and int(sizes.clamp(max=level + 1).sum()) <= k:
        level += 1
    counts = sizes.clamp(max=level)
    remainder = k - int(counts.sum())
    open_classes = [c for c in class_order.tolist() if sizes[c] > level]  # every one of these has count == level
    counts[open_classes[:remainder]] += 1
    return counts


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.is_floating_point() or len(labels) == 0:
        raise SubsetError("labels must be a non-empty 1-D integer tensor (the train split's labels)")
    if int(labels.min()) < UNLABELED:
        raise SubsetError(f"labels must be class indices >= 0, or -1 (unlabeled), found {int(labels.min())}")
    return labels.to(torch.int64)


# --- files ---------------------------------------------------------------------------------------------------------


def indices_sha256(indices: Sequence[int]) -> str:
    """sha256 of the canonical JSON (sorted, no spaces) of the indices."""
    canonical = json.dumps(sorted(int(i) for i in indices), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def save_subset(
    path: str | os.PathLike,
    indices: torch.Tensor | Sequence[int],
    labels: torch.Tensor,
    ids: Sequence[str],
    budget: Budget,
    seed: int,
) -> dict:
    """Write the subset's JSON record atomically and return it. An existing file with the same record is kept;
    one with a different record is an error (a subset must not change under the runs that used it)."""
    labels = _check_labels(labels)
    rows = sorted(int(i) for i in (indices.tolist() if isinstance(indices, torch.Tensor) else indices))
    if len(ids) != len(labels):
        raise SubsetError(f"ids ({len(ids)}) and labels ({len(labels)}) must both have one entry per training row")
    if not rows or rows[0] < 0 or rows[-1] >= len(labels) or len(set(rows)) != len(rows):
        raise SubsetError(f"subset indices must be distinct rows in 0..{len(labels) - 1}")
    unlabeled = [ids[row] for row in rows if labels[row] == UNLABELED]
    if unlabeled:
        raise SubsetError(
            f"{path}: {len(unlabeled)} of the subset's images have no label (or their label is the test split's), "
            f"e.g. {unlabeled[:5]}; a subset lists labeled training images only"
        )
    per_class = torch.bincount(labels[rows], minlength=int(labels.max()) + 1)
    record = {
        "budget": check_budget(budget),
        "name": budget_name(budget),
        "seed": int(seed),
        "num_labels": len(rows),
        "indices": rows,
        "ids": [ids[i] for i in rows],
        "per_class": {str(c): int(per_class[c]) for c in torch.unique(labels[labels != UNLABELED]).tolist()},
        "sha256": indices_sha256(rows),
    }
    path = Path(path)
    if path.exists():
        if _read_json(path) != record:
            raise SubsetError(
                f"{path} already holds a different subset; it is kept as it is. Delete it or write elsewhere if the "
                "new subset is intended."
            )
        return record
    write_text_atomic(path, _format_record(record))
    return record


def _format_record(record: dict) -> str:
    """One top-level key per line, lists on one line: readable, and still small for 128k indices."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in record.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def load_subset(path: str | os.PathLike, ids: Sequence[str]) -> torch.Tensor:
    """Sorted int64 row indices from our JSON record (checksum and ids verified) or from a user-supplied list of
    ids / file names (text, one per line; a JSON list; or a CSV whose header has an `image` column, such as the list
    `simclrv2 select` writes), matched against `ids` (the train `ImageSplit.ids`)."""
    path = Path(path)
    if not path.is_file():
        raise SubsetError(f"label subset file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a list a spreadsheet saved may start with a byte-order mark
    except UnicodeDecodeError:
        raise SubsetError(f"{path} is not a text file; a subset is our JSON record or one id per line") from None
    content = _parse_json(text)
    if isinstance(content, dict):
        return _indices_from_record(content, path, ids)
    if isinstance(content, list):
        entries = content
    else:
        entries = _csv_images(text) or [line.strip() for line in text.splitlines() if line.strip()]
    return indices_from_names(entries, ids, path)


def _parse_json(text: str) -> Any:
    if not text.lstrip().startswith(("{", "[")):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None  # e.g. a file name that starts with "[": read it as a plain list


def _indices_from_record(record: dict, path: Path, ids: Sequence[str]) -> torch.Tensor:
    missing = [key for key in ("indices", "sha256") if key not in record]
    if missing:
        raise SubsetError(f"{path} is a JSON object without {missing}; expected a subset record written by this tool")
    indices = record["indices"]
    if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise SubsetError(f"{path}: 'indices' must be a list of integers; the file is corrupt or was edited")
    if indices_sha256(indices) != record["sha256"]:
        raise SubsetError(f"{path}: the sha256 of its indices does not match; the file is corrupt or was edited")
    rows = sorted(set(indices))
    if rows and (rows[0] < 0 or rows[-1] >= len(ids)):
        raise SubsetError(f"{path} indexes rows up to {rows[-1]} but the training set has {len(ids)} rows")
    recorded_ids = record.get("ids")
    if recorded_ids is not None and recorded_ids != [ids[i] for i in sorted(indices)]:
        raise SubsetError(
            f"{path} was made for other data: its ids do not match the training rows at its indices (another "
            "dataset, split or row order). Regenerate the subset for this data."
        )
    return torch.tensor(rows, dtype=torch.int64)


def indices_from_names(entries: Sequence[Any], ids: Sequence[str], path: str | os.PathLike) -> torch.Tensor:
    """Rows of `ids` named by `entries`: an exact id, else a file name (basename) that one row alone has."""
    if not entries:
        raise SubsetError(f"{path} lists no ids; a subset needs at least one labelled image")
    found = match_names(entries, ids)
    if found.unknown:
        raise SubsetError(
            f"{path}: {len(found.unknown)} of {len(entries)} ids are not in the training set, e.g. "
            f"{found.unknown[:5]} (training ids look like {list(ids[:3])}); check the list matches this dataset"
        )
    if found.ambiguous:
        raise SubsetError(
            f"{path}: {len(found.ambiguous)} entries name a file that several training rows share, e.g. "
            f"{found.ambiguous[:5]}; list them by full id instead"
        )
    return torch.tensor(sorted(set(found.rows)), dtype=torch.int64)


def _csv_images(text: str) -> list[str] | None:
    """The `image` column of a CSV with a header that names it (the list `simclrv2 select` writes, a labels file), or
    None for a plain list. Cells escaped for spreadsheets (`'=x.png`) are read without their quote."""
    lines = text.splitlines()
    if not lines or IMAGE not in [name.strip() for name in next(csv.reader(lines[:1]))]:
        return None
    rows = csv.DictReader(lines, skipinitialspace=True)
    return [unescape_cell(row[IMAGE].strip()) for row in rows if (row.get(IMAGE) or "").strip()]


def labeled_images(train: ImageSplit, subset: str | os.PathLike | None) -> torch.Tensor:
    """N bools: the training images that count as labeled. In the team's case, those with a label. Where the source
    labels every image itself (a benchmark), scarcity is simulated: only the subset's images count (none without a
    subset)."""
    if not train.fully_labeled:
        return train.labeled.clone()
    labeled = torch.zeros(len(train), dtype=torch.bool)
    if subset is not None:
        labeled[load_subset(subset, train.ids)] = True
    return labeled
