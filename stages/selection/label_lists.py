"""The images to label, written for the people and tools that label them.

- `write_selection_csv`: a CSV with the header `image,label,path,rank,score,reason`, one row per image in rank order.
  `image` is our row id, `label` is empty for the person to fill in, the other columns only help them. Once labels
  are filled in, this same file is a labels file (`data.labels`, stages/data/labels_file.py): it takes the columns
  `image` and `label` by name (their order and any other column do not matter) and skips rows whose label is empty,
  so a half-labeled file is fine. Text cells that a spreadsheet would run as a formula (a name starting with `=`,
  `+`, `-`, `@`, ...) are written with a leading `'`, which the labels file reader takes off again
  (stages/data/spreadsheet_cells.py).
- `write_label_studio_tasks`: a Label Studio tasks file to import (project > Import), one task per image:
  `[{"data": {"image": <URL>, "id": <our id>}}, ...]` (ids as they are: JSON needs no escaping). Label Studio keeps
  `data` as it is in its exports, so `data.id` maps every annotation back to our row. What the user configures in
  Label Studio:
  - a labeling config whose image tag reads `$image`, e.g. `<View><Image name="image" value="$image"/>
    <Choices name="label" toName="image"><Choice value="cat"/>...</Choices></View>`;
  - for local files, which Label Studio serves as `/data/local-files/?d=<path relative to its document root>`:
    start it with `LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true` and `LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT` set to
    the `document_root` given here (default `/`), and add a Local Files source storage (Settings > Cloud Storage)
    whose absolute path is a folder holding the images, which grants access to them. Do not sync that storage: that
    would add one more task per file in it. Images given as http(s)://, s3://, gs:// or azure-blob:// URLs are
    written as they are.

Both are written atomically (a temporary file in the same folder, then a rename) and never replace an existing file
unless `overwrite=True`, so that labels typed into an earlier list are not lost to a rerun.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from stages.data.labels_file import IMAGE, LABEL
from stages.data.spreadsheet_cells import escape_row
from stages.training.files import write_text_atomic

CSV_COLUMNS = (IMAGE, LABEL, "path", "rank", "score", "reason")  # IMAGE and LABEL: what a labels file reads back
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local files endpoint; d is relative to its document root
URL_SCHEMES = ("http://", "https://", "s3://", "gs://", "azure-blob://")


def write_selection_csv(
    path: str | os.PathLike,
    ids: Sequence[Any],
    paths: Sequence[str | None],
    scores: torch.Tensor | Sequence[float],
    reasons: Sequence[str],
    overwrite: bool = False,
) -> Path:
    """Write the selection as a CSV to fill in (see the module docstring); rank counts from 1 in the given order.
    `paths` may hold None or "" for images without a file. Returns the path written."""
    ids = _check_ids(ids)
    scores = scores.tolist() if isinstance(scores, torch.Tensor) else [float(score) for score in scores]
    _check_lengths(ids=ids, paths=paths, scores=scores, reasons=reasons)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for rank, (image, file, score, reason) in enumerate(zip(ids, paths, scores, reasons, strict=True), start=1):
        text = escape_row([image, file or "", reason])  # the numbers (rank, score) stay numbers
        writer.writerow([text[0], "", text[1], rank, _format_score(score), text[2]])
    return _write_new(path, buffer.getvalue(), overwrite)


def write_label_studio_tasks(
    path: str | os.PathLike,
    ids: Sequence[Any],
    paths: Sequence[str],
    document_root: str | os.PathLike = "/",
    overwrite: bool = False,
) -> Path:
    """Write a Label Studio tasks JSON list (see the module docstring for what to configure in Label Studio).
    Local paths become local-files URLs relative to `document_root`; a path outside it is an error. Returns the path
    written."""
    ids = _check_ids(ids)
    _check_lengths(ids=ids, paths=paths)
    tasks = [
        {"data": {"image": label_studio_url(file, document_root), "id": image}}
        for image, file in zip(ids, paths, strict=True)
    ]
    text = "[\n" + ",\n".join(f"  {json.dumps(task, ensure_ascii=False)}" for task in tasks) + "\n]\n"
    return _write_new(path, text, overwrite)


def label_studio_url(file: str | os.PathLike | None, document_root: str | os.PathLike = "/") -> str:
    """The URL Label Studio shows an image from: a URL as it is, a local path as `/data/local-files/?d=<path relative
    to document_root>` (percent-encoded, so that names with `&`, `#` or spaces survive the query string)."""
    if file is None or str(file) == "":
        raise ValueError(
            "an image has no file path; Label Studio shows images from files or URLs, so write these images to "
            "files (e.g. an imagefolder dataset) or use the CSV list instead"
        )
    file = os.fspath(file)
    if file.lower().startswith(URL_SCHEMES):
        return file
    root = os.path.abspath(document_root)
    relative = os.path.relpath(os.path.abspath(file), root)
    if relative == os.curdir or relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise ValueError(
            f"image {file} is not inside the Label Studio document root {root}; pass a document_root that holds "
            "every image (and start Label Studio with LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set to it)"
        )
    return LOCAL_FILES_URL + quote(Path(relative).as_posix(), safe="/")


def _check_ids(ids: Sequence[Any]) -> list[Any]:
    """Ids as JSON-friendly values (ints stay ints, anything else becomes a string); they must be distinct, since a
    labels file is read by id."""
    plain = [image if isinstance(image, int) and not isinstance(image, bool) else str(image) for image in ids]
    seen: set[str] = set()
    for image in plain:
        if str(image) in seen:
            raise ValueError(f"image id {image!r} appears twice; each image needs its own id to be labeled by")
        seen.add(str(image))
    return plain


def _check_lengths(**columns: Sequence[Any]) -> None:
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name} {length}" for name, length in lengths.items())
        raise ValueError(f"one entry per image is needed in each column, got {listed}")


def _format_score(score: float) -> str:
    return f"{score:.6g}"  # inf and nan read "inf" and "nan"


def _write_new(path: str | os.PathLike, text: str, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists and was left as it is; write elsewhere or pass overwrite=True")
    write_text_atomic(path, text)
    return path
