"""Stage `predict`: pre-labels (class, confidence, top-k) for the images nobody labeled, from a trained classifier.

    python -m stages.predict --out runs/predict --classifier runs/distill --subset runs/subsets/10pct.json
    python -m stages.predict --out prelabels --classifier runs/distill --images imagefolder:/data/new --image-size 32

Inputs: `--classifier DIR` (the output of finetune, the baseline or distill) and, optionally, `--subset FILE` (the
label subset that classifier was trained on). Without `--images` it covers the run's data: every training image
without a label (when every image has one, as in a benchmark, every image outside the subset), apart from those
held out as the test split; it also writes `test_predictions.csv`
(image, label, predicted, confidence for every test image), from which the report measures how accurate pre-labels
are at each confidence. With `--images SOURCE` (any `--data.source` form, e.g. imagefolder:<folder>) it covers every
image of that source, read batch by batch, so the folder need not fit in memory.

Images go through the evaluation preprocessing (docs/simclrv2.md#evaluation-preprocessing); with `--images`, a large
image is first decoded at a reduced scale (`decoded_side`), so memory does not grow with the photos' resolution. Writes
`prelabels.csv` and `prelabels.parquet` (layout: stages/evaluation/prelabels.py) and `metrics.json` to `--out`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import torch
from annotated_types import Ge
from datasets.utils import tqdm
from pydantic import StrictInt

from stages.config_schema import SPEED_ONLY, config_dataclass
from stages.data.augment import evaluation_crop_proportion
from stages.data.errors import DataError
from stages.data.eval_crops import streamed_eval_crops
from stages.data.image_stream import ImageStream
from stages.data.label_subsets import labeled_images
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.data.stored_images import StoredImages
from stages.evaluation.prelabels import PrelabelWriter, predict_batches
from stages.evaluation.test_predictions import TEST_PREDICTIONS, write_test_predictions
from stages.models.weights import LoadedClassifier, check_same_classes, load_classifier, weights_file
from stages.training.accelerator import make_accelerator
from stages.training.cli import parse_stage_args, run_and_print
from stages.training.finish import finish_stage

log = logging.getLogger(__name__)
PRELABELS = "prelabels"  # the stem of prelabels.csv and prelabels.parquet
PREDICT_FILES = (f"{PRELABELS}.csv", f"{PRELABELS}.parquet")


@config_dataclass
class PredictConfig:
    data: DataConfig = field(default_factory=DataConfig)
    images: str | None = None
    """a source of images to pre-label (e.g. imagefolder:<folder>) instead of the run's unlabeled training images"""
    image_size: Annotated[StrictInt, Ge(1)] | None = None
    """side of the centre crop fed to the network, in pixels: the classifier's training image_size (the pipeline
    fills it in)"""
    top_k: Annotated[StrictInt, Ge(1)] = 5
    """most likely classes listed per image"""
    eval_batch_size: Annotated[StrictInt, Ge(1), SPEED_ONLY] = 256
    """images per forward pass"""


def run(config: PredictConfig, inputs: dict[str, Path], out_dir: Path) -> dict:
    out_dir = Path(out_dir)
    if "classifier" not in inputs:
        raise ValueError("predict needs the 'classifier' input: the output directory of finetune, baseline or distill")
    weights_file(inputs["classifier"], "finetune, baseline or distill")  # fail before loading any data
    if config.image_size is None:
        raise ValueError("predict needs --image-size: the image_size the classifier was trained at")
    accelerator = make_accelerator(out_dir, seed=0)
    classifier = load_classifier(inputs["classifier"], stage="finetune, baseline or distill")
    model = classifier.model.to(accelerator.device)
    metrics: dict = {"model": str(inputs["classifier"])}
    batches: ImageStream | RunImages
    if config.images is None:
        batches, metrics["num_test"] = run_images(config, classifier, inputs.get("subset"), model, out_dir)
        source = config.data.source
    else:
        batches, source = source_images(config, classifier), config.images
    start = time.perf_counter()
    written = write_prelabels(model, classifier.class_names, batches, config, out_dir / PRELABELS)
    seconds = time.perf_counter() - start
    metrics |= {
        "images": source,
        "num_prelabeled": written,
        "num_skipped": batches.num_skipped(),
        "seconds": round(seconds, 3),
        "images_per_second": round(written / max(seconds, 1e-9), 2),
    }
    log.info("pre-labeled %d images of %s in %.1f s: %s.csv", written, source, seconds, out_dir / PRELABELS)
    return finish_stage(accelerator, out_dir, metrics)


@dataclass
class RunImages:
    """Batches of some rows of a split, as `ImageStream` gives them: from memory, or (`cropped`) the evaluation crops
    of `image_size` that loader workers cut from the originals of a streamed split."""

    split: ImageSplit
    rows: torch.Tensor
    batch_size: int
    image_size: int
    skipped: int = 0

    @property
    def cropped(self) -> bool:
        return isinstance(self.split.images, StoredImages)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[tuple[list[str], list[str], torch.Tensor]]:
        paths = self.split.paths or [None] * len(self.split)
        for chosen, images in self._images():
            rows = chosen.tolist()
            yield [self.split.ids[r] for r in rows], [paths[r] or "" for r in rows], images

    def _images(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(split rows, their images) per batch; streamed images that prove unreadable are left out and counted."""
        if not self.cropped:
            for start in range(0, len(self.rows), self.batch_size):
                chosen = self.rows[start : start + self.batch_size]
                yield chosen, self.split.images[chosen]
            return
        stored = self.split.images[self.rows]
        for batch, crops, readable in streamed_eval_crops(
            stored, self.image_size, self.batch_size, stored.workers, torch.device("cpu")
        ):
            self.skipped += int((~readable).sum())
            yield self.rows[batch[readable]], crops[readable]

    def num_skipped(self) -> int:
        return self.split.skipped + self.skipped


def run_images(
    config: PredictConfig, classifier: LoadedClassifier, subset: Path | None, model: torch.nn.Module, out_dir: Path
) -> tuple[RunImages, int]:
    """The run's unlabeled training images as batches; writes the test split's predictions on the way."""
    train, test = load_splits(config.data)
    check_same_classes(classifier.class_names, train, classifier.file)
    write_test_predictions(
        model, test, classifier.class_names, config.image_size, out_dir / TEST_PREDICTIONS, config.eval_batch_size
    )
    rows = (~(labeled_images(train, subset) | held_out(train))).nonzero().flatten()
    log.info("pre-labeling %d of the %d training images (the rest are labeled or held out)", len(rows), len(train))
    return RunImages(train, rows, config.eval_batch_size, config.image_size), len(test)


def held_out(train: ImageSplit) -> torch.Tensor:
    return train.held_out if train.held_out is not None else torch.zeros(len(train), dtype=torch.bool)


def source_images(config: PredictConfig, classifier: LoadedClassifier) -> ImageStream:
    """The images of `config.images`. Sub-folders named after some of the classifier's classes must all be: a
    folder of cats, dogs and emus is refused by a cat-and-dog model; folders that name no class (dates, batches)
    are just folders."""
    stream = ImageStream(
        config.images,
        config.eval_batch_size,
        config.data.image_size,
        config.data.image_column,
        max_pixels=config.data.max_image_pixels,
        min_side=decoded_side(config),
    )
    folders, known = set(stream.class_names or ()), set(classifier.class_names)
    if folders & known and not folders <= known:
        raise DataError(
            f"{config.images} is sorted into classes that the classifier {classifier.file} does not know: "
            f"{sorted(folders - known)[:10]} (it knows {classifier.class_names[:10]}); use a model trained on them"
        )
    return stream


def decoded_side(config: PredictConfig) -> int:
    """The shorter side an image may be shrunk to when it is decoded without losing what the network sees: the
    `data.image_size` it is then resized to, else the side whose evaluation crop is `image_size` pixels."""
    if config.data.image_size is not None:
        return config.data.image_size
    return math.ceil(config.image_size / evaluation_crop_proportion(config.image_size))


def write_prelabels(
    model: torch.nn.Module, class_names: list[str], batches: ImageStream | RunImages, config: PredictConfig, stem: Path
) -> int:
    """Stream every batch's predictions into `<stem>.csv` and `<stem>.parquet`; returns the number of rows."""
    paths_of: dict[str, str] = {}

    def images() -> Iterator[tuple[list[str], torch.Tensor]]:
        with tqdm(total=len(batches), desc="Pre-labeling", unit="img") as progress:
            for ids, paths, images in batches:
                progress.update(len(ids))
                if len(ids):
                    paths_of.update(zip(ids, paths, strict=True))
                    yield ids, images

    with PrelabelWriter(stem, class_names, config.top_k) as writer:
        cropped = isinstance(batches, RunImages) and batches.cropped
        for batch in predict_batches(model, images(), config.image_size, top_k=config.top_k, cropped=cropped):
            writer.write(batch, [paths_of.pop(image) for image in batch.ids])
        if writer.rows == 0 and config.images is not None:  # inside: the writer then leaves no files behind
            raise DataError(f"{config.images}: no image to pre-label (every one of them is unreadable)")
    if writer.rows == 0:
        log.warning("%s: every training image is labeled or held out: nothing to pre-label", config.data.source)
    return writer.rows


def main(argv: list[str] | None = None) -> None:
    config, inputs, out = parse_stage_args(
        "stages.predict", PredictConfig, __doc__, argv, inputs=("classifier",), optional_inputs=("subset",)
    )
    run_and_print("stages.predict", lambda: run(config, inputs, out))


if __name__ == "__main__":
    main()
