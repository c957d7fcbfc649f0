"""Pre-labels: a classifier's guesses for unlabeled images, streamed batch by batch into a CSV file and a Parquet
file that a person opens in a spreadsheet (or pandas) to review.

    batches = ...  # yields (ids: list[str], images: uint8 N x 3 x H x W)
    with PrelabelWriter(out / "prelabels", class_names, top_k=5) as writer:
        for batch in predict_batches(classifier, batches, image_size, device):
            writer.write(batch)                       # or writer.write(batch, paths)
    writer.rows                                       # rows written

Predictions use the evaluation preprocessing of stages/evaluation/metrics.py (centre crop, eval-mode BN, no
gradients); the confidence of a guess is the softmax probability of the predicted class.

The files, `<stem>.csv` and `<stem>.parquet`, hold the same rows in the same order, one per image:

    image        the image's id, as `batches` gave it
    path         where the image came from, when the caller knows it; else empty
    predicted    the predicted class name (the most likely class)
    confidence   its probability, in [0, 1]
    top1, top1_prob, top2, top2_prob, ..., topK, topK_prob
                 the K most likely class names, most likely first, each followed by its probability (top1 and
                 top1_prob repeat `predicted` and `confidence`, so the block reads on its own); K is
                 min(top_k, number of classes)

Probabilities are float32: the CSV writes each as the shortest decimal that reads back to the same float32 (so the
CSV and the Parquet file hold the same numbers), in UTF-8 with a header row and minimal quoting. Sort or filter by
`confidence` to review the least certain images first. In the CSV only, a text cell that a spreadsheet would run as
a formula (an id or class name starting with `=`, `+`, `-`, `@`, ...) gets a leading `'`
(stages/data/spreadsheet_cells.py, `unescape_cell` reads it back); the Parquet file holds the names as they are.

Both files are written under temporary names (`.<name>.*.tmp`, never counted as a stage's artifacts) and renamed
when the writer closes without an error; on an error the temporaries are removed and earlier files of the same
names are left as they were.
"""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from stages.data.augment import CenterCrop, to_float_images
from stages.data.spreadsheet_cells import escape_row
from stages.evaluation.metrics import TOP_K, eval_mode, model_device
from stages.training.files import fsync_path

ROW_GROUP_ROWS = 65_536  # rows per Parquet row group: batches are gathered up to this many before they are written


@dataclass(frozen=True)
class PredictionBatch:
    """A classifier's guesses for one batch of images, on the CPU."""

    ids: list[str]
    top_classes: torch.Tensor  # N x K int64 class indices, most likely first
    top_probs: torch.Tensor  # N x K float32 softmax probabilities of those classes

    @property
    def predicted(self) -> torch.Tensor:
        """N predicted class indices (the most likely class)."""
        return self.top_classes[:, 0]

    @property
    def confidence(self) -> torch.Tensor:
        """N probabilities of the predicted class."""
        return self.top_probs[:, 0]

    def __len__(self) -> int:
        return len(self.ids)


def predict_batches(
    classifier: nn.Module,
    batches: Iterable[tuple[Sequence[str], torch.Tensor]],
    image_size: int,
    device: torch.device | None = None,
    top_k: int = TOP_K,
    cropped: bool = False,
) -> Iterator[PredictionBatch]:
    """Per batch of (ids, uint8 N x 3 x H x W images): the `top_k` most likely classes and their softmax
    probabilities (at most as many as there are classes). Each batch is predicted in eval mode without gradients;
    between batches the model and the caller's grad mode are as they were. `device`: the model's, by default.
    `cropped`: the images are already the evaluation crops (cut by the streaming loader), so they are only scaled."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    crop = to_float_images if cropped else CenterCrop.for_evaluation(image_size)
    device = model_device(classifier, device)
    for ids, images in batches:
        ids = [str(i) for i in ids]
        if len(ids) != len(images):
            raise ValueError(f"a batch has {len(ids)} ids but {len(images)} images")
        with eval_mode(classifier):
            logits = classifier(crop(images.to(device, non_blocking=True)))
            probs = logits.float().softmax(dim=1)
            top = probs.topk(min(top_k, probs.shape[1]), dim=1)
        yield PredictionBatch(ids, top.indices.cpu(), top.values.cpu())


def _float_texts(values: np.ndarray) -> list[str]:
    """float32 -> the shortest decimal that reads back to the same float32 ("0.9", not "0.8999999761581421")."""
    return pa.array(values, type=pa.float32()).cast(pa.string()).to_pylist()


class PrelabelWriter:
    """Streams pre-labels into `<path_stem>.csv` and `<path_stem>.parquet` (layout in the module docstring); a
    context manager: the files appear, complete, when it exits without an error."""

    def __init__(self, path_stem: Path | str, class_names: Sequence[str], top_k: int = TOP_K) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if not class_names:
            raise ValueError("class_names is empty")
        stem = Path(path_stem)
        self.csv_path = stem.with_name(stem.name + ".csv")
        self.parquet_path = stem.with_name(stem.name + ".parquet")
        self.class_names = np.asarray([str(name) for name in class_names], dtype=object)
        self.top_k = min(top_k, len(class_names))
        self.columns = ["image", "path", "predicted", "confidence"]
        for rank in range(1, self.top_k + 1):
            self.columns += [f"top{rank}", f"top{rank}_prob"]
        probability = {"confidence", *(f"top{rank}_prob" for rank in range(1, self.top_k + 1))}
        self.schema = pa.schema([(name, pa.float32() if name in probability else pa.string()) for name in self.columns])
        self.rows = 0
        self._temporaries: list[str] = []
        self._csv_file = None
        self._csv = None
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._state = "new"  # -> "open" -> "closed" (or "failed")

    # --- the context manager ----------------------------------------------------------------------------------------

    def __enter__(self) -> PrelabelWriter:
        if self._state != "new":
            raise RuntimeError("a PrelabelWriter writes its files once")
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            csv_handle, _ = self._temporary(self.csv_path)
            self._csv_file = os.fdopen(csv_handle, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._csv_file)
            self._csv.writerow(self.columns)
            parquet_handle, parquet_temporary = self._temporary(self.parquet_path)
            os.close(parquet_handle)
            self._parquet = pq.ParquetWriter(parquet_temporary, self.schema)
        except BaseException:
            self._discard()
            raise
        self._state = "open"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._discard()

    def _temporary(self, path: Path) -> tuple[int, str]:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self._temporaries.append(temporary)
        return handle, temporary

    # --- writing ----------------------------------------------------------------------------------------------------

    def write(self, batch: PredictionBatch, paths: Sequence[str] | None = None) -> None:
        """Append one batch's rows; `paths` (one per image) fills the `path` column, else it stays empty."""
        if self._state != "open":
            raise RuntimeError("write inside `with PrelabelWriter(...) as writer:`")
        count = len(batch)
        if paths is not None and len(paths) != count:
            raise ValueError(f"a batch has {count} images but {len(paths)} paths")
        if batch.top_classes.shape[1] < self.top_k:
            raise ValueError(f"a batch has the {batch.top_classes.shape[1]} most likely classes, need {self.top_k}")
        classes = batch.top_classes[:, : self.top_k].cpu().numpy()
        if count and (classes.min() < 0 or classes.max() >= len(self.class_names)):
            raise ValueError(
                f"a prediction names class {int(classes.max())}, but there are {len(self.class_names)} class names: "
                "pass the class names the classifier was trained with"
            )
        probs = batch.top_probs[:, : self.top_k].cpu().numpy().astype(np.float32)
        names = self.class_names[classes]
        columns: dict[str, list | np.ndarray] = {
            "image": list(batch.ids),
            "path": [str(p) for p in paths] if paths is not None else [""] * count,
            "predicted": names[:, 0].tolist(),
            "confidence": probs[:, 0],
        }
        for rank in range(self.top_k):
            columns[f"top{rank + 1}"] = names[:, rank].tolist()
            columns[f"top{rank + 1}_prob"] = probs[:, rank]
        cells = (_float_texts(v) if isinstance(v, np.ndarray) else escape_row(v) for v in columns.values())
        self._csv.writerows(zip(*cells, strict=True))  # text escaped for spreadsheets, probabilities as numbers
        arrays = [
            pa.array(values, type=field.type) for values, field in zip(columns.values(), self.schema, strict=True)
        ]
        self._pending.append(pa.record_batch(arrays, schema=self.schema))
        self._pending_rows += count
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()
        self.rows += count

    def _flush(self) -> None:
        if self._pending:
            self._parquet.write_table(pa.Table.from_batches(self._pending, schema=self.schema))
        self._pending, self._pending_rows = [], 0

    def close(self) -> int:
        """Finish both files and rename them into place; returns the number of rows."""
        if self._state != "open":
            raise RuntimeError("the writer is not open")
        try:
            self._flush()
            self._parquet.close()
            self._csv_file.flush()
            os.fsync(self._csv_file.fileno())
            self._csv_file.close()
            csv_temporary, parquet_temporary = self._temporaries
            fsync_path(parquet_temporary)
            os.replace(parquet_temporary, self.parquet_path)
            os.replace(csv_temporary, self.csv_path)
        except BaseException:
            self._discard()
            raise
        self._temporaries, self._state = [], "closed"
        fsync_path(str(self.csv_path.parent))
        return self.rows

    def _discard(self) -> None:
        """Close what is open and remove the temporaries; files already under the real names stay."""
        self._state = "failed"
        for writer in (self._parquet, self._csv_file):
            with contextlib.suppress(Exception):  # cleaning up after the error that matters
                if writer is not None:
                    writer.close()
        for temporary in self._temporaries:
            Path(temporary).unlink(missing_ok=True)
        self._temporaries = []
