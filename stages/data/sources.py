"""Image data through Hugging Face `datasets`: any source becomes two splits (train, test) of uint8 images, decoded
into memory or left in the source to be streamed (stages/data/memory_rule.py decides).

Sources (`DataConfig.source`, and `DataConfig.unlabeled`):
    digits              scikit-learn's bundled 8x8 digits (1,797 real images): the embedded default, no download
    imagefolder:<dir>   one sub-folder per class (optionally under train/ and test/ folders); a flat folder: no labels
    disk:<dir>          a `Dataset` or `DatasetDict` written by `save_to_disk`
    parquet:<glob|dir>  parquet files; a directory lets `datasets` infer splits from file names (train-*, test-*)
    hub:<name>          a hub dataset; fails fast, with what to do instead, when the hub cannot be reached

Every source goes through the same path: pick the splits, read the labels, decode every row once with PIL into
`N x 3 x H x W` uint8 (stages/data/decoding.py) or keep each row's undecoded image for loader workers
(stages/data/stored_images.py), map labels to 0..K-1. Training images may be unlabeled: a null label
(or -1) in the source, the images of `unlabeled` (labels there ignored), or images that `labels` (a labels file,
stages/data/labels_file.py) does not name; their label is `UNLABELED` (-1). The train split keeps every image:
pretraining and distillation use them all, label budgets draw from the labeled ones only. The test split must be
labeled. Without one in the source it is held out of the labeled training images, seeded and per class:
- the source labels every training image itself and no `unlabeled` images are added (the benchmark case, whose
  scarcity is simulated): `test_fraction` of the images, stratified, removed from the train split, as in the papers;
- otherwise (the team's case): about `test_fraction` of each class's labels, those whose seeded hash of the image id
  falls below it, so that adding labels leaves earlier test images in the test split (but for a class's fill-in
  image: see `held_out_labels`). The images stay in the train split without their label (`ImageSplit.held_out`):
  like every unlabeled image, pretraining and distillation see them, which makes test accuracy an estimate of the
  accuracy on the unlabeled images. The log says how many labels the test took.
Which case applies, and so which images pretraining sees, never depends on the labels file.
With `validation_fraction` set, a validation slice of the training images takes the test split's place
(stages/data/validation.py): for choosing settings without looking at the test images.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import datasets
import numpy as np
import PIL.Image
import torch
from annotated_types import Ge, Gt, Lt
from datasets import ClassLabel, Dataset, DatasetDict, Value
from pydantic import StrictBool, StrictFloat, StrictInt

from stages.config_schema import SPEED_ONLY, InvalidConfig, config_dataclass
from stages.data.decoding import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DecodedRows,
    UnreadableImage,
    decode_rows,
    stack_images,
    undecoded,
)
from stages.data.errors import DataError
from stages.data.ids import joined_ids, row_ids
from stages.data.labels import UNLABELED
from stages.data.labels_file import read_labels_file
from stages.data.memory_rule import keeps_in_memory
from stages.data.stored_images import StoredImages, UndecodedRows, stored
from stages.data.validation import split_off_validation
from stages.failures import environment_fault_in, is_network_error

logger = logging.getLogger(__name__)

SOURCE_FORMS = ("digits", "imagefolder:<dir>", "disk:<dir>", "parquet:<glob or dir>", "hub:<name>")
HUB_PROBE_TIMEOUT_S = 5.0
UNLABELED_SPLIT = "unlabeled"  # the name of `DataConfig.unlabeled`'s rows in messages and fallback ids
IMAGE_EXTENSIONS = frozenset(datasets.packaged_modules.imagefolder.ImageFolder.EXTENSIONS)

__all__ = ["DataConfig", "DataError", "ImageSplit", "load_splits", "load_train", "open_train_rows"]


class InvalidDataConfig(InvalidConfig, DataError):
    """A `DataConfig` value of the wrong type or out of its bounds."""


@config_dataclass(error=InvalidDataConfig)
class DataConfig:
    source: str = "digits"
    """where the images come from: digits | imagefolder:<dir> | disk:<dir> | parquet:<glob or dir> | hub:<name>"""
    unlabeled: str | None = None
    """more training images, without labels (labels there are ignored), in any source form, e.g. imagefolder:<dir>
    of a flat folder; pretraining and distillation use them, and `predict` pre-labels them"""
    labels: str | None = None
    """a CSV labels file (columns `image`: id or file name, `label`: class name) labeling some training images"""
    image_column: str = "image"
    """column holding the images"""
    label_column: str = "label"
    """column holding the labels: integers or class names (imagefolder: the sub-folder); null or -1: unlabeled"""
    train_split: str = "train"
    """split to train on"""
    test_split: str = "test"
    """split to test on; held out of the labeled training images when the source has none"""
    test_fraction: Annotated[StrictFloat, Gt(0), Lt(1)] = 0.2
    """share of the labeled training images held out, per class, as the test split when the source has none"""
    validation_fraction: Annotated[StrictFloat, Gt(0), Lt(1)] | None = None
    """for choosing settings without the test set: this share of the labeled training images, per class, is the
    evaluation split in place of the test split (stages/data/validation.py); None: evaluate on the test split"""
    image_size: Annotated[StrictInt, Ge(1)] | None = None
    """shorter side resized (bicubic), then centre-cropped to a square of this side; None: as stored"""
    seed: StrictInt = 0
    """seed of the held-out test split"""
    skip_bad_images: StrictBool = False
    """skip (and count) unreadable images instead of failing"""
    max_image_pixels: Annotated[StrictInt, Ge(1)] = DEFAULT_MAX_IMAGE_PIXELS
    """largest image read, in pixels (width x height, from its header, before decoding); a larger one is a bad image,
    named or (with `skip_bad_images`) skipped. The default is PIL's guard against decompression bombs"""
    in_memory: StrictBool | None = None
    """decode every image once and keep it in memory (fast for small data), or off: stream them from the source
    through loader workers, crops cut from the originals (data larger than memory; `image_size` is then not applied);
    None: the size rule of stages/data/memory_rule.py decides"""
    loader_workers: Annotated[StrictInt, Ge(0), SPEED_ONLY] = 8
    """CPU processes per training process that decode and crop streamed images (0: the training process itself)"""


@dataclass
class ImageSplit:
    images: torch.Tensor | StoredImages  # N x 3 x H x W uint8 decoded once and kept in memory, or streamed
    labels: torch.Tensor  # N int64 in 0..num_classes-1, or UNLABELED
    ids: list[str]  # per row: the file name when rows have unique file names, else "<split>-<row>" (stages/data/ids.py)
    class_names: list[str]
    skipped: int  # images skipped as unreadable
    held_out: torch.Tensor | None = None  # N bool: labeled, but the label is the test split's (partly labeled data)
    paths: list[str | None] | None = None  # per row: the image's file, when the source has files
    fully_labeled: bool = False  # the source labels every training image itself: scarcity is only simulated

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labeled(self) -> torch.Tensor:
        """N bool: rows whose label training may use."""
        return self.labels != UNLABELED

    def __len__(self) -> int:
        return len(self.labels)

    def rows(self, rows: torch.Tensor) -> ImageSplit:
        """These rows as a split of their own (e.g. a budget's labeled images); none of them held out."""
        chosen = rows.tolist()
        return dataclasses.replace(
            self,
            images=self.images[rows],
            labels=self.labels[rows],
            ids=[self.ids[row] for row in chosen],
            held_out=None,
            paths=[self.paths[row] for row in chosen] if self.paths else None,
        )


@dataclass
class SourceRows:
    """The training images before decoding: the source's train split (and the `unlabeled` images), each row's class
    key (None: unlabeled), and the classes."""

    train: Dataset
    pool: Dataset | None  # DataConfig.unlabeled's images
    test: Dataset | None  # the source's test split; None: held out of the labeled training images
    keys: list[Any]
    class_keys: list[Any]
    ids: list[str]
    fully_labeled: bool  # the benchmark case: the source labels every training image itself, and no pool is added
    in_memory: bool  # images decoded once into memory; else streamed from the source (stages/data/memory_rule.py)

    def labels(self) -> torch.Tensor:
        index_of = {key: index for index, key in enumerate(self.class_keys)}
        return torch.tensor([UNLABELED if key is None else index_of[key] for key in self.keys], dtype=torch.int64)


def load_splits(config: DataConfig) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) for `config`; see the module docstring."""
    source = source_rows(config)
    train, test = split_source(source, config)
    train.fully_labeled = source.fully_labeled
    return train, test


def split_source(source: SourceRows, config: DataConfig) -> tuple[ImageSplit, ImageSplit]:
    train, test = train_and_test(source, config)
    if config.validation_fraction is None:
        return train, test
    return split_off_validation(train, source.fully_labeled, config)


def train_and_test(source: SourceRows, config: DataConfig) -> tuple[ImageSplit, ImageSplit]:
    class_names = [str(key) for key in source.class_keys]
    labels = source.labels()
    if source.test is not None:
        test_labels = test_split_labels(source, config)
        train = build_split(decode_training_rows(source, config), labels, class_names, config.train_split)
        test_rows = read_rows(source.test, config.test_split, config, source.in_memory)
        test = build_split(test_rows, test_labels, class_names, config.test_split)
        return train, check_same_size_across(train, test, config)

    held_out = f"{config.test_split} (held out from {config.train_split})"
    if source.fully_labeled:
        _log_holdout(config)
        train_index, test_index = stratified_split(labels, config)
        rows = decode_training_rows(source, config)
        train = build_split(rows.take(train_index), labels[train_index], class_names, config.train_split)
        test = build_split(rows.take(test_index), labels[test_index], class_names, held_out)
        return train, check_same_size_across(train, test, config)

    require_labels(source, config)
    test_index = held_out_labels(labels, source.ids, source.class_keys, config)
    rows = decode_training_rows(source, config)
    train_labels, is_test = labels.clone(), torch.zeros(len(labels), dtype=torch.bool)
    train_labels[test_index], is_test[test_index] = UNLABELED, True
    train = build_split(rows, train_labels, class_names, config.train_split, is_test)
    test = build_split(rows.take(test_index), labels[test_index], class_names, held_out)
    return train, test


def load_train(config: DataConfig) -> ImageSplit:
    """The train split alone. It needs no labels: with none at all (a cold start) every row is `UNLABELED`; with
    some, the labels the team has are all kept, those of a held-out test split too (select must not pick them)."""
    source = source_rows(config)
    if removes_training_rows(source, config):
        train = split_source(source, config)[0]
    else:
        class_names = [str(key) for key in source.class_keys]
        train = build_split(decode_training_rows(source, config), source.labels(), class_names, config.train_split)
    train.fully_labeled = source.fully_labeled
    return train


def open_train_rows(config: DataConfig) -> StoredImages:
    """The training images exactly as `load_train` keeps them, left undecoded (streamed), whatever the size rule."""
    return load_train(dataclasses.replace(config, in_memory=False)).images


def removes_training_rows(source: SourceRows, config: DataConfig) -> bool:
    """The benchmark case takes its held-out test split, or its validation slice, out of the training images."""
    return source.fully_labeled and (source.test is None or config.validation_fraction is not None)


def source_rows(config: DataConfig) -> SourceRows:
    """The splits, the unlabeled images and every training image's label, checked before any image is decoded."""
    splits = open_source(config.source)
    train = pick_split(splits, config.train_split, config)
    test = pick_test_split(splits, config)
    check_image_column(train, config.train_split, config)
    require_rows(train, config)
    log_non_images(config.source)
    if test is not None:
        check_image_column(test, config.test_split, config)
        check_label_column(test, config.test_split, config)
    pool = unlabeled_rows(config)
    source_keys = training_keys(train, config)
    # Decided before the labels file is read: which images pretraining sees must never depend on the labels.
    fully_labeled = pool is None and all(key is not None for key in source_keys)
    keys = source_keys + ([None] * len(pool) if pool is not None else [])
    ids = row_ids(source_paths(train, config), [f"{config.train_split}-{row}" for row in range(len(train))])
    if pool is not None:
        pool_ids = row_ids(source_paths(pool, config), [f"{UNLABELED_SPLIT}-{row}" for row in range(len(pool))])
        ids = joined_ids(ids, pool_ids, UNLABELED_SPLIT)
    feature = label_feature(train, test, config)
    if config.labels is not None:
        keys = apply_labels_file(keys, ids, feature, config)
    class_keys = class_keys_of(feature, [key for key in keys if key is not None])
    _log_label_counts(keys, config)
    splits = [split for split in (train, pool, test) if split is not None]
    in_memory = keeps_in_memory(config.in_memory, splits, config.image_column, config.image_size, config.source)
    return SourceRows(train, pool, test, keys, class_keys, ids, fully_labeled, in_memory)


def label_feature(train: Dataset, test: Dataset | None, config: DataConfig) -> Any:
    """The label column's type: the train split's, else (a train split without labels) the test split's."""
    feature = train.features.get(config.label_column)
    return feature if feature is not None or test is None else test.features.get(config.label_column)


def decode_training_rows(source: SourceRows, config: DataConfig) -> DecodedRows | UndecodedRows:
    rows = read_rows(source.train, config.train_split, config, source.in_memory)
    if source.pool is None:
        return rows
    return rows.joined(read_rows(source.pool, UNLABELED_SPLIT, config, source.in_memory), UNLABELED_SPLIT)


def read_rows(dataset: Dataset, split: str, config: DataConfig, in_memory: bool) -> DecodedRows | UndecodedRows:
    """The split's rows: decoded now (in memory), or left in the source for loader workers (streamed)."""
    if in_memory:
        return decode(dataset, split, config)
    images = stored(
        dataset,
        config.image_column,
        split,
        config.source,
        config.skip_bad_images,
        config.loader_workers,
        max_pixels=config.max_image_pixels,
    )
    return UndecodedRows(images, source_paths(dataset, config), [f"{split}-{row}" for row in range(len(dataset))])


def decode(dataset: Dataset, split: str, config: DataConfig) -> DecodedRows:
    try:
        return decode_rows(
            dataset,
            config.image_column,
            split,
            config.image_size,
            config.skip_bad_images,
            config.source,
            max_pixels=config.max_image_pixels,
        )
    except UnreadableImage as error:
        raise DataError(
            f"{config.source}: {error}. Fix or remove the file, or set `skip_bad_images: true` to skip unreadable "
            "images."
        ) from None


def require_rows(train_data: Dataset, config: DataConfig) -> None:
    if len(train_data) == 0:
        raise DataError(f"{config.source}: split {config.train_split!r} is empty; point `source` at the images")


def _log_holdout(config: DataConfig) -> None:
    logger.info(
        "source %s has no '%s' split: holding out %g%% of '%s' (stratified, seed %d)",
        config.source,
        config.test_split,
        100 * config.test_fraction,
        config.train_split,
        config.seed,
    )


def _log_label_counts(keys: list[Any], config: DataConfig) -> None:
    labeled = sum(key is not None for key in keys)
    if labeled < len(keys):
        logger.info("%s: %d of %d training images are labeled", config.source, labeled, len(keys))


# --- sources -------------------------------------------------------------------------------------------------------


def open_source(source: str) -> dict[str | None, Dataset]:
    """The source's splits by name. A bare `Dataset` (no split names) is returned under the key None."""
    kind, _, argument = source.partition(":")
    if source == "digits":
        return {None: digits_dataset()}
    if kind == "imagefolder" and argument:
        _require_path(argument, source, want_dir=True)
        return _as_splits(_load(source, "imagefolder", data_dir=argument))
    if kind == "disk" and argument:
        _require_path(argument, source, want_dir=True)
        return _as_splits(load_disk(argument, source))
    if kind == "parquet" and argument:
        if os.path.isdir(argument):
            return _as_splits(_load(source, "parquet", data_dir=argument))
        _require_glob(argument, source)
        return _as_splits(_load(source, "parquet", data_files=argument))
    if kind == "hub" and argument:
        return _as_splits(load_hub(argument, source))
    forms = ", ".join(f"'{form}'" for form in SOURCE_FORMS)
    raise DataError(f"data source {source!r} is not understood; use one of {forms}")


def digits_dataset() -> Dataset:
    """scikit-learn's 8x8 digits as a `datasets.Dataset` of grayscale PNGs (values 0..16 scaled to 0..255)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    # Encoded here: `datasets` encodes arrays ~5x slower, and this runs in every quickstart and test.
    images = [{"bytes": _png_bytes(image), "path": None} for image in pixels]
    features = datasets.Features({"image": datasets.Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    return Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def load_hub(name: str, source: str) -> Dataset | DatasetDict:
    """`load_dataset(name)`; an unreachable hub is one clear error within seconds, not minutes of retries."""
    download_hint = (
        f"Download it on a machine with network (`datasets.load_dataset({name!r}).save_to_disk(DIR)`) and use "
        "source 'disk:DIR' (or 'parquet:<glob>' / 'imagefolder:<dir>') instead"
    )
    if not datasets.config.HF_HUB_OFFLINE and not os.path.exists(name):
        _probe_hub(name, source, download_hint)
    try:
        return datasets.load_dataset(name)
    except Exception as error:
        if isinstance(error, ConnectionError) and datasets.config.HF_HUB_OFFLINE:  # asked offline, and not cached
            raise DataError(f"{source}: cannot reach the Hugging Face hub ({error}). {download_hint}.") from None
        _raise_environment_fault(error, f"{source}: loading {name!r} from the hub failed; {download_hint}")
        raise DataError(f"{source}: could not load {name!r} from the hub: {error}") from error


def _probe_hub(name: str, source: str, download_hint: str) -> None:
    """One short request; `load_dataset` itself retries an unreachable hub for ~25 s per file."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    try:
        huggingface_hub.HfApi().dataset_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:
        if isinstance(error, HfHubHTTPError) and not is_network_error(error):
            return  # the hub answered (not found, gated, ...): `load_dataset` gives the precise error
        _raise_environment_fault(
            error,
            f"{source}: the Hugging Face hub did not answer. {download_hint}; or, if it is in the local Hugging Face "
            "cache, set HF_HUB_OFFLINE=1 to use that copy",
        )
        raise DataError(f"{source}: cannot query the Hugging Face hub ({type(error).__name__}: {error})") from error


def load_disk(path: str, source: str) -> Dataset | DatasetDict:
    try:
        return datasets.load_from_disk(path)
    except FileNotFoundError as error:
        raise DataError(f"{source}: {error} Write it with `Dataset.save_to_disk` or pick another source.") from None
    except Exception as error:
        _raise_environment_fault(error, f"reading the data source {source!r}")
        empty = _empty_saved_splits(path)
        if empty:  # `datasets` saves an empty split but cannot read it back (an IndexError deep inside)
            raise DataError(f"{source}: split(s) {empty} are empty; every split needs images") from None
        raise DataError(f"{source}: datasets.load_from_disk failed: {type(error).__name__}: {error}") from error


def _raise_environment_fault(error: Exception, context: str) -> None:
    """Raise the environment's fault behind a loader's `error` (a full disk, a permission denied, the network, out
    of memory) as itself, with `context` as a note: its type tells the pipeline that it is not bad data
    (stages/failures.py). Return when `error` is a complaint about the data."""
    fault = environment_fault_in(error)
    if fault is not None:
        fault.add_note(context)
        raise fault


def _empty_saved_splits(path: str) -> list[str]:
    empty = []
    for state in [Path(path) / "state.json", *sorted(Path(path).glob("*/state.json"))]:
        try:
            if json.loads(state.read_text())["_data_files"] == []:
                empty.append(state.parent.name if state.parent != Path(path) else "train")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return empty


def _load(source: str, builder: str, **kwargs: Any) -> DatasetDict:
    try:
        return datasets.load_dataset(builder, **kwargs)
    except Exception as error:
        _raise_environment_fault(error, f"reading the data source {source!r}")  # e.g. the datasets cache's disk is full
        if builder == "imagefolder" and ("corresponds to no data" in str(error) or "any data files" in str(error)):
            raise DataError(
                f"{source}: no image files in it (or in one of its folders); point it at a folder of images"
            ) from None
        if "corresponds to no data" in str(error):  # how `datasets` reports a split without rows
            raise DataError(f"{source}: a split is empty ({error}); every split needs images") from None
        raise DataError(f"{source}: could not load it with datasets' {builder!r} loader: {error}") from error


def _as_splits(loaded: Dataset | DatasetDict) -> dict[str | None, Dataset]:
    return dict(loaded) if isinstance(loaded, DatasetDict) else {None: loaded}


def _require_path(path: str, source: str, want_dir: bool) -> None:
    if not os.path.exists(path):
        raise DataError(f"{source}: {path!r} does not exist; check the path in `source`")
    if want_dir and not os.path.isdir(path):
        raise DataError(f"{source}: {path!r} is not a directory")


def _require_glob(pattern: str, source: str) -> None:
    if "://" not in pattern and not glob.glob(pattern, recursive=True):
        raise DataError(f"{source}: no file matches {pattern!r}; check the path or glob in `source`")


# --- the unlabeled images ------------------------------------------------------------------------------------------


def unlabeled_rows(config: DataConfig) -> Dataset | None:
    """`config.unlabeled`'s images, or None; labels there are ignored. A source with several splits gives its
    'unlabeled' split, else its 'train' split: never its test images."""
    if config.unlabeled is None:
        return None
    where = f"data.unlabeled ({config.unlabeled})"
    try:
        splits = open_source(config.unlabeled)
    except DataError as error:
        raise DataError(f"data.unlabeled: {error}") from None
    dataset = pool_split(splits, where)
    column = image_column_of(dataset, config.image_column, where)
    pool = undecoded(dataset.select_columns([column]), column)
    pool = pool.rename_column(column, config.image_column) if column != config.image_column else pool
    if len(pool) == 0:
        raise DataError(f"{where} holds no images; point it at a folder or dataset of images, or remove it")
    log_non_images(config.unlabeled)
    return pool


def pool_split(splits: dict[str | None, Dataset], where: str) -> Dataset:
    if len(splits) == 1:
        return next(iter(splits.values()))
    for name in (UNLABELED_SPLIT, "train"):
        if name in splits:
            return splits[name]
    raise DataError(f"{where} has the splits {sorted(map(str, splits))}; keep the unlabeled images in one of them")


def image_column_of(dataset: Dataset, wanted: str, where: str) -> str:
    """`wanted` if the dataset has it, else its only image column."""
    if wanted in dataset.column_names:
        return wanted
    images = [name for name, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
    if len(images) == 1:
        return images[0]
    raise DataError(f"{where} has no image column {wanted!r}; its columns: {dataset.column_names}")


def log_non_images(source: str) -> None:
    """imagefolder reads image files only: say how many other files were passed over, so none vanish silently."""
    kind, _, folder = source.partition(":")
    if kind != "imagefolder":
        return
    others = [
        name
        for _, _, files in os.walk(folder)  # names only: no stat per file, for folders of a million images
        for name in files
        if os.path.splitext(name)[1].lower() not in IMAGE_EXTENSIONS
    ]
    if others:
        logger.warning(
            "%s: skipped %d files that are not images (by extension), e.g. %s", source, len(others), others[0]
        )


def source_paths(dataset: Dataset, config: DataConfig) -> list[str | None]:
    """Each row's image file path, read without decoding (or bytes) when the column is an image column."""
    column = config.image_column
    if not isinstance(dataset.features.get(column), datasets.Image):
        return [None] * len(dataset)
    paths = undecoded(dataset.select_columns([column]), column).flatten()[f"{column}.path"]
    return [path or None for path in paths]


# --- splits and columns --------------------------------------------------------------------------------------------


def pick_split(splits: dict[str | None, Dataset], name: str, config: DataConfig) -> Dataset:
    """The named split; a bare `Dataset` (no split names) serves as the train split."""
    if None in splits:
        return splits[None].with_format(None)
    if name not in splits:
        raise DataError(
            f"{config.source}: split {name!r} does not exist; available splits: {sorted(splits)}. "
            "Set `train_split` (and `test_split`) to one of them."
        )
    return splits[name].with_format(None)  # a saved dataset may carry a torch/numpy format


def pick_test_split(splits: dict[str | None, Dataset], config: DataConfig) -> Dataset | None:
    """The test split, or None to hold one out of train. Only the default name may be missing: a test split the
    user named explicitly and that is not there is a typo, not a request for a held-out split."""
    if config.test_split in splits:
        return splits[config.test_split].with_format(None)
    if config.test_split == DataConfig.test_split or None in splits:
        return None
    return pick_split(splits, config.test_split, config)  # raises, listing the available splits


def check_image_column(dataset: Dataset, split: str, config: DataConfig) -> None:
    _check_column(dataset, split, config, "image_column", config.image_column)


def check_label_column(dataset: Dataset, split: str, config: DataConfig) -> None:
    _check_column(dataset, split, config, "label_column", config.label_column)


def _check_column(dataset: Dataset, split: str, config: DataConfig, key: str, column: str) -> None:
    if column not in dataset.column_names:
        hint = ""
        if key == "label_column" and config.source.startswith("imagefolder:"):
            hint = " (imagefolder labels come from one sub-folder per class)"
        raise DataError(
            f"{config.source}: split {split!r} has no {key.split('_')[0]} column {column!r}{hint}; "
            f"available columns: {dataset.column_names}. Set `{key}` to one of them."
        )


def stratified_split(labels: torch.Tensor, config: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, test), each sorted, from a seeded split stratified by label (the benchmark case)."""
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    try:
        train, test = train_test_split(
            rows, test_size=config.test_fraction, stratify=labels.numpy(), random_state=config.seed
        )
    except ValueError as error:
        raise DataError(
            f"{config.source}: cannot hold out a stratified test split with test_fraction={config.test_fraction} "
            f"({error}). Change `test_fraction`, or supply a test split."
        ) from None
    return torch.from_numpy(np.sort(train)), torch.from_numpy(np.sort(test))


def require_labels(source: SourceRows, config: DataConfig) -> None:
    """Some training image must be labeled to hold a test split out of them; else one error with the ways out."""
    if any(key is not None for key in source.keys):
        return
    if config.labels is None and config.unlabeled is None:
        check_label_column(source.train, config.train_split, config)  # a misspelt `label_column` is named as such
    raise DataError(
        f"{config.source}: no training image has a label, and the test split is held out of labeled images. Give "
        "labels with `data.labels` (a CSV with the columns image,label), a labeled `test_split`, or (imagefolder) one "
        "sub-folder per class. To choose which images to label first, pretrain and run `simclrv2 select`"
    )


def held_out_labels(
    labels: torch.Tensor, ids: Sequence[str], class_keys: Sequence[Any], config: DataConfig
) -> torch.Tensor:
    """Sorted rows of the test split held out of partly labeled data: each labeled row whose seeded hash of its id,
    read as a number in [0, 1), is below `test_fraction`, so that a row's place never depends on other rows and adding
    labels keeps every earlier test image in the test split. Then per class: none in the test split -> its lowest
    hash joins it; all in it -> its highest hash leaves it (every class is tested and trained)."""
    counts = torch.bincount(labels[labels != UNLABELED], minlength=len(class_keys))
    scarce = [str(class_keys[c]) for c in range(len(class_keys)) if counts[c] == 1]
    if scarce:
        raise DataError(
            f"{config.source}: class(es) {scarce[:10]} have a single labeled image; the held-out test split needs one "
            "image of every class and training another. Label at least 2 images per class, or supply a test split"
        )
    test_rows: list[int] = []
    for index in range(len(class_keys)):
        rows = sorted((labels == index).nonzero().flatten().tolist(), key=lambda row: id_hash(ids[row], config.seed))
        in_test = sum(id_hash(ids[row], config.seed) < config.test_fraction for row in rows)
        test_rows += rows[: min(max(in_test, 1), len(rows) - 1)]
    logger.info(
        "source %s has no '%s' split: holding out %d of its %d labeled training images as the test split (about %g%% "
        "per class, seed %d); training keeps the images, without these labels",
        config.source,
        config.test_split,
        len(test_rows),
        int(counts.sum()),
        100 * config.test_fraction,
        config.seed,
    )
    return torch.tensor(sorted(test_rows), dtype=torch.int64)


def id_hash(image_id: str, seed: int) -> float:
    """A seeded, uniform-looking number in [0, 1) for an image id."""
    digest = hashlib.sha256(f"{seed}:{image_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# --- labels --------------------------------------------------------------------------------------------------------


def label_keys(dataset: Dataset, split: str, config: DataConfig) -> list[Any]:
    """Per row, the label as a class key (its name for `ClassLabel` and string columns, the value for integers), or
    None where the row has no label (null, or -1)."""
    feature = dataset.features[config.label_column]
    values = list(dataset[config.label_column])
    if isinstance(feature, ClassLabel):
        return [None if value is None or value < 0 else feature.names[value] for value in values]
    dtype = feature.dtype if isinstance(feature, Value) else None
    if dtype is None or not (dtype.startswith(("int", "uint")) or dtype in ("string", "large_string")):
        raise DataError(
            f"{config.source}: label column {config.label_column!r} of split {split!r} holds {feature}; labels must "
            "be integers or class names (strings). Set `label_column` to the column with the class of each image."
        )
    return [None if value is None or value == UNLABELED else value for value in values]


def training_keys(train: Dataset, config: DataConfig) -> list[Any]:
    """The train split's class keys; without a label column (a flat folder) every row is unlabeled, provided labels
    come from elsewhere or none are needed yet (a cold start)."""
    if config.label_column in train.column_names:
        return label_keys(train, config.train_split, config)
    if config.labels is None and config.unlabeled is None:
        logger.info("%s: no label column %r: every training image is unlabeled", config.source, config.label_column)
    return [None] * len(train)


def apply_labels_file(keys: list[Any], ids: Sequence[str], feature: Any, config: DataConfig) -> list[Any]:
    """`keys` with the labels file's classes filled in; a label that contradicts the source's is an error."""
    integers = isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))
    keys = list(keys)
    for row, name in read_labels_file(config.labels, ids).items():
        key = _class_key(name, integers, feature, config)
        if keys[row] is not None and keys[row] != key:
            raise DataError(
                f"data.labels: {config.labels} labels {ids[row]!r} {name!r}, but the source labels it {keys[row]!r}; "
                "correct one of them"
            )
        keys[row] = key
    return keys


def _class_key(name: str, integers: bool, feature: Any, config: DataConfig) -> Any:
    if isinstance(feature, ClassLabel) and name not in feature.names:
        raise DataError(
            f"data.labels: {config.labels} uses the class {name!r}, which is not one of the source's classes "
            f"{feature.names[:10]}; fix the spelling"
        )
    if not integers:
        return name
    try:
        return int(name)
    except ValueError:
        raise DataError(
            f"data.labels: {config.labels} uses the class {name!r}, but the source's labels are integers; use them"
        ) from None


def test_split_labels(source: SourceRows, config: DataConfig) -> torch.Tensor:
    """The source's test split labels as class indices; every test image needs one, and every class that the labels
    file names must be in it (else its test accuracy could not be measured: usually a misspelt class)."""
    keys = label_keys(source.test, config.test_split, config)
    missing = [row for row, key in enumerate(keys) if key is None]
    if missing:
        raise DataError(
            f"{config.source}: {len(missing)} rows of split {config.test_split!r} have no label in "
            f"{config.label_column!r} (first rows: {missing[:5]}); every test image needs a class. Drop them or "
            "choose another split."
        )
    if config.labels is not None:
        absent = sorted({str(k) for k in source.keys if k is not None} - {str(k) for k in keys})
        if absent:
            raise DataError(
                f"data.labels: {config.labels} uses class(es) {absent[:10]} that the test split "
                f"{config.test_split!r} never has; fix their spelling, or add test images of them"
            )
    index_of = {key: index for index, key in enumerate(source.class_keys)}
    return map_labels(keys, index_of, config.test_split, config)


def class_keys_of(feature: Any, labeled_keys: list[Any]) -> list[Any]:
    """The classes in index order: a `ClassLabel`'s own names, else the sorted distinct training labels."""
    return list(feature.names) if isinstance(feature, ClassLabel) else sorted(set(labeled_keys))


def map_labels(keys: Sequence[Any], index_of: dict[Any, int], split: str, config: DataConfig) -> torch.Tensor:
    unseen = sorted({key for key in keys if key not in index_of}, key=str)
    if unseen:
        raise DataError(
            f"{config.source}: split {split!r} has labels that the train split {config.train_split!r} lacks: "
            f"{unseen[:10]}; the train split defines the classes. Make sure every class has training images."
        )
    return torch.tensor([index_of[key] for key in keys], dtype=torch.int64)


# --- splits of decoded images --------------------------------------------------------------------------------------


def build_split(
    rows: DecodedRows | UndecodedRows,
    labels: torch.Tensor,
    class_names: list[str],
    split: str,
    held_out: torch.Tensor | None = None,
) -> ImageSplit:
    if isinstance(rows, UndecodedRows):  # streamed: unreadable images are found (and skipped) as they are read
        if len(rows.ids) == 0:
            raise DataError(f"split {split!r} has no images; check the source and its split names")
        return ImageSplit(rows.images, labels.clone(), rows.ids, class_names, 0, held_out, rows.paths)
    kept = [row for row, array in enumerate(rows.arrays) if array is not None]
    skipped = len(rows.arrays) - len(kept)
    if not kept:
        detail = f" ({skipped} unreadable images skipped)" if skipped else ""
        raise DataError(f"split {split!r} has no images{detail}; check the source and its split names")
    try:
        images = stack_images(rows, kept, split)
    except ValueError as error:
        raise DataError(str(error)) from None
    return ImageSplit(
        images=images,
        labels=labels[kept].clone(),
        ids=[rows.ids[row] for row in kept],
        class_names=class_names,
        skipped=skipped,
        held_out=held_out[kept].clone() if held_out is not None else None,
        paths=[rows.paths[row] for row in kept],
    )


def check_same_size_across(train: ImageSplit, test: ImageSplit, config: DataConfig) -> ImageSplit:
    """The test split, once it is known to have the train split's image size (later stages mix the two)."""
    if isinstance(train.images, StoredImages):  # streamed crops are cut and resized from each original
        return test
    (train_h, train_w), (test_h, test_w) = train.images.shape[2:], test.images.shape[2:]
    if (train_h, train_w) != (test_h, test_w):
        raise DataError(
            f"{config.source}: split {config.train_split!r} has {train_w}x{train_h} images but split "
            f"{config.test_split!r} has {test_w}x{test_h} (W x H). Set `image_size` to resize both to one square size."
        )
    return test
