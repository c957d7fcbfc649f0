"""Image data through Hugging Face `datasets`: any source becomes two in-memory uint8 splits (train, test).

Sources (`DataConfig.source`):
    digits              scikit-learn's bundled 8x8 digits (1,797 real images): the embedded default, no download
    imagefolder:<dir>   one sub-folder per class (optionally under train/ and test/ folders)
    disk:<dir>          a `Dataset` or `DatasetDict` written by `save_to_disk`
    parquet:<glob|dir>  parquet files; a directory lets `datasets` infer splits from file names (train-*, test-*)
    hub:<name>          a hub dataset; fails fast, with what to do instead, when the hub cannot be reached

Every source goes through the same path: pick the splits, map labels to 0..K-1 (the train split's mapping is the
mapping), decode every row once with PIL into `N x 3 x H x W` uint8. Rows are decoded one by one so that a bad image
is named (row and file), and skipped when `skip_bad_images` is set. A missing test split is carved out of the train
split, stratified and seeded, before decoding, so skipping a bad image never moves other rows between splits.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import posixpath
from collections import Counter
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
from datasets.utils import tqdm
from pydantic import StrictBool, StrictFloat, StrictInt

from stages.config_schema import InvalidConfig, config_dataclass

logger = logging.getLogger(__name__)

SOURCE_FORMS = ("digits", "imagefolder:<dir>", "disk:<dir>", "parquet:<glob or dir>", "hub:<name>")
HUB_PROBE_TIMEOUT_S = 5.0
IMAGE_DECODER = datasets.Image()
DECODE_BATCH = 256  # rows fetched from Arrow per read; decoding itself is row by row


class DataError(ValueError):
    """Bad data or data config: the message names the culprit and what to do."""


class InvalidDataConfig(InvalidConfig, DataError):
    """A `DataConfig` value of the wrong type or out of its bounds."""


@config_dataclass(error=InvalidDataConfig)
class DataConfig:
    source: str = "digits"
    """where the images come from: digits | imagefolder:<dir> | disk:<dir> | parquet:<glob or dir> | hub:<name>"""
    image_column: str = "image"
    """column holding the images"""
    label_column: str = "label"
    """column holding the labels: integers or class names (imagefolder: the sub-folder)"""
    train_split: str = "train"
    """split to train on"""
    test_split: str = "test"
    """split to test on; held out of the train split when the source has none"""
    test_fraction: Annotated[StrictFloat, Gt(0), Lt(1)] = 0.2
    """share of the train split held out, stratified, as the test split when the source has none"""
    image_size: Annotated[StrictInt, Ge(1)] | None = None
    """shorter side resized (bicubic), then centre-cropped to a square of this side; None: as stored"""
    seed: StrictInt = 0
    """seed of the held-out test split"""
    skip_bad_images: StrictBool = False
    """skip (and count) unreadable images instead of failing"""


@dataclass
class ImageSplit:
    images: torch.Tensor  # N x 3 x H x W uint8, decoded once, kept in memory
    labels: torch.Tensor  # N int64 in 0..num_classes-1
    ids: list[str]  # per row: the file name when rows have unique file names, else "<split>-<row>"
    class_names: list[str]
    skipped: int  # images skipped as unreadable

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)


def load_splits(config: DataConfig) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) for `config.source`; see the module docstring."""
    splits = open_source(config.source)
    train_data = pick_split(splits, config.train_split, config)
    test_data = pick_test_split(splits, config)
    for name, dataset in ((config.train_split, train_data), (config.test_split, test_data)):
        if dataset is not None:
            check_columns(dataset, name, config)
    require_rows(train_data, config)

    # Labels first: they are cheap, and a label problem should not wait for every image to be decoded.
    class_keys, train_labels = train_classes_and_labels(train_data, config)
    class_names = [str(key) for key in class_keys]
    index_of = {key: index for index, key in enumerate(class_keys)}
    if test_data is not None:
        test_keys = label_keys(test_data, config.test_split, config)
        test_labels = map_labels(test_keys, index_of, config.test_split, config)
        train_rows = decode_rows(train_data, config.train_split, config)
        test_rows = decode_rows(test_data, config.test_split, config)
        train = build_split(train_rows, train_labels, class_names, config.train_split)
        test = build_split(test_rows, test_labels, class_names, config.test_split)
        return train, check_same_size_across(train, test, config)

    _log_holdout(config)
    train_index, test_index = stratified_split(train_labels, config)  # before decoding: skips never move rows
    rows = decode_rows(train_data, config.train_split, config)
    train = build_split(rows.take(train_index), train_labels[train_index], class_names, config.train_split)
    held_out = f"{config.test_split} (held out from {config.train_split})"
    test = build_split(rows.take(test_index), train_labels[test_index], class_names, held_out)
    return train, check_same_size_across(train, test, config)


def open_train_rows(config: DataConfig) -> Dataset:
    """The training rows exactly as `load_splits` keeps them (a held-out test split removed), with only the image
    column, left undecoded (`{"bytes", "path"}`): for data loader workers that decode images as they need them."""
    splits = open_source(config.source)
    train_data = pick_split(splits, config.train_split, config)
    check_columns(train_data, config.train_split, config)
    require_rows(train_data, config)
    if pick_test_split(splits, config) is None:
        _, labels = train_classes_and_labels(train_data, config)
        _log_holdout(config)
        train_index, _ = stratified_split(labels, config)
        train_data = train_data.select(train_index.tolist())
    return undecoded(train_data.select_columns([config.image_column]), config.image_column)


def undecoded(dataset: Dataset, column: str) -> Dataset:
    """Images as `{"path", "bytes"}` instead of PIL images: decoding is left to whoever reads the rows."""
    if isinstance(dataset.features[column], datasets.Image):
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


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
    except ConnectionError as error:  # offline mode, or the hub went away after the probe
        raise DataError(f"{source}: cannot reach the Hugging Face hub ({error}). {download_hint}.") from None
    except Exception as error:
        raise DataError(f"{source}: could not load {name!r} from the hub: {error}") from error


def _probe_hub(name: str, source: str, download_hint: str) -> None:
    """One short request; `load_dataset` itself retries an unreachable hub for ~25 s per file."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError

    try:
        huggingface_hub.HfApi().dataset_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return  # the hub answered (not found, gated, ...): `load_dataset` gives the precise error
    except Exception as error:
        raise DataError(
            f"{source}: cannot reach the Hugging Face hub ({type(error).__name__}: {error}). {download_hint}; "
            "or, if it is in the local Hugging Face cache, set HF_HUB_OFFLINE=1 to use that copy."
        ) from None


def load_disk(path: str, source: str) -> Dataset | DatasetDict:
    try:
        return datasets.load_from_disk(path)
    except FileNotFoundError as error:
        raise DataError(f"{source}: {error} Write it with `Dataset.save_to_disk` or pick another source.") from None
    except Exception as error:
        empty = _empty_saved_splits(path)
        if empty:  # `datasets` saves an empty split but cannot read it back (an IndexError deep inside)
            raise DataError(f"{source}: split(s) {empty} are empty; every split needs images") from None
        raise DataError(f"{source}: datasets.load_from_disk failed: {type(error).__name__}: {error}") from error


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
    """The test split, or None to carve one out of train. Only the default name may be missing: a test split the
    user named explicitly and that is not there is a typo, not a request for a held-out split."""
    if config.test_split in splits:
        return splits[config.test_split].with_format(None)
    if config.test_split == DataConfig.test_split or None in splits:
        return None
    return pick_split(splits, config.test_split, config)  # raises, listing the available splits


def check_columns(dataset: Dataset, split: str, config: DataConfig) -> None:
    for key, column in (("image_column", config.image_column), ("label_column", config.label_column)):
        if column not in dataset.column_names:
            hint = ""
            if key == "label_column" and config.source.startswith("imagefolder:"):
                hint = " (imagefolder labels come from one sub-folder per class)"
            raise DataError(
                f"{config.source}: split {split!r} has no {key.split('_')[0]} column {column!r}{hint}; "
                f"available columns: {dataset.column_names}. Set `{key}` to one of them."
            )


def stratified_split(labels: torch.Tensor, config: DataConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (train, test), each sorted, from a seeded split stratified by label."""
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


# --- labels --------------------------------------------------------------------------------------------------------


def label_keys(dataset: Dataset, split: str, config: DataConfig) -> list[Any]:
    """Per row, the label as a class key: its name for `ClassLabel` and string columns, the value for integers."""
    feature = dataset.features[config.label_column]
    values = list(dataset[config.label_column])
    if isinstance(feature, ClassLabel):
        missing = [row for row, value in enumerate(values) if value is None or value < 0]
        _refuse_missing(missing, split, config)
        return [feature.names[value] for value in values]
    dtype = feature.dtype if isinstance(feature, Value) else None
    if dtype is None or not (dtype.startswith(("int", "uint")) or dtype in ("string", "large_string")):
        raise DataError(
            f"{config.source}: label column {config.label_column!r} of split {split!r} holds {feature}; labels must "
            "be integers or class names (strings). Set `label_column` to the column with the class of each image."
        )
    _refuse_missing([row for row, value in enumerate(values) if value is None], split, config)
    return values


def train_classes_and_labels(train_data: Dataset, config: DataConfig) -> tuple[list[Any], torch.Tensor]:
    """The class keys in index order (the train split defines them) and the train split's labels as indices."""
    train_keys = label_keys(train_data, config.train_split, config)
    class_keys = class_keys_of(train_data.features[config.label_column], train_keys)
    index_of = {key: index for index, key in enumerate(class_keys)}
    return class_keys, map_labels(train_keys, index_of, config.train_split, config)


def _refuse_missing(rows: list[int], split: str, config: DataConfig) -> None:
    if rows:
        raise DataError(
            f"{config.source}: {len(rows)} rows of split {split!r} have no label in {config.label_column!r} "
            f"(first rows: {rows[:5]}); every image needs a class. Drop them or choose another split."
        )


def class_keys_of(feature: Any, train_keys: list[Any]) -> list[Any]:
    """The classes in index order: a `ClassLabel`'s own names, else the sorted distinct train labels."""
    return list(feature.names) if isinstance(feature, ClassLabel) else sorted(set(train_keys))


def map_labels(keys: Sequence[Any], index_of: dict[Any, int], split: str, config: DataConfig) -> torch.Tensor:
    unseen = sorted({key for key in keys if key not in index_of}, key=str)
    if unseen:
        raise DataError(
            f"{config.source}: split {split!r} has labels that the train split {config.train_split!r} lacks: "
            f"{unseen[:10]}; the train split defines the classes. Make sure every class has training images."
        )
    return torch.tensor([index_of[key] for key in keys], dtype=torch.int64)


# --- images --------------------------------------------------------------------------------------------------------


@dataclass
class DecodedRows:
    """One source split decoded: per row an HWC uint8 array, or None where the image was skipped."""

    arrays: list[np.ndarray | None]
    names: list[str]  # per row: the file path when known, else "<split>-<row>"
    ids: list[str]

    def take(self, rows: torch.Tensor) -> DecodedRows:
        chosen = rows.tolist()
        return DecodedRows(
            [self.arrays[i] for i in chosen], [self.names[i] for i in chosen], [self.ids[i] for i in chosen]
        )


def decode_rows(dataset: Dataset, split: str, config: DataConfig) -> DecodedRows:
    column = config.image_column
    dataset = undecoded(dataset.select_columns([column]), column)  # we decode, row by row
    arrays, paths = [], []
    progress = tqdm(total=len(dataset), desc=f"Decoding {split} images", unit="img", disable=len(dataset) < 10_000)
    for start in range(0, len(dataset), DECODE_BATCH):
        for offset, value in enumerate(dataset[start : start + DECODE_BATCH][column]):
            path = path_of(value)
            paths.append(path)
            arrays.append(decode_image(value, f"row {start + offset} of split {split!r}", path, config))
        progress.update(min(DECODE_BATCH, len(dataset) - start))
    progress.close()
    skipped = sum(array is None for array in arrays)
    if skipped:
        logger.warning("%s: skipped %d unreadable images in split %r", config.source, skipped, split)
    fallback = [f"{split}-{row}" for row in range(len(arrays))]
    names = [path or name for path, name in zip(paths, fallback, strict=True)]
    return DecodedRows(arrays, names, row_ids(paths, fallback))


def row_ids(paths: list[str | None], fallback: list[str]) -> list[str]:
    """File names when every row has a distinct one (so lists like ImageNet's `1percent.txt` match), else the
    paths relative to their common folder when those are distinct, else `<split>-<row>`."""
    if all(paths):
        names = [posixpath.basename(path.replace("\\", "/")) for path in paths]
        if len(set(names)) == len(names):
            return names
        try:
            root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
            relative = [os.path.relpath(path, root) for path in paths]
        except ValueError:  # absolute and relative paths mixed
            return fallback
        if len(set(relative)) == len(relative):
            return relative
    return fallback


def path_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("path") or None
    return value if isinstance(value, str) else None


def decode_image(value: Any, where: str, path: str | None, config: DataConfig) -> np.ndarray | None:
    """An `H x W x 3` uint8 array (resized when `image_size` is set); None for a bad image when skipping."""
    try:
        image = to_rgb(_to_pil(value))
        if config.image_size is not None:
            image = resize_center_crop(image, config.image_size)
        return np.asarray(image, dtype=np.uint8)
    except Exception as error:
        culprit = f"{where} ({path})" if path else where
        if config.skip_bad_images:
            logger.debug("skipping unreadable image %s: %s", culprit, error)
            return None
        raise DataError(
            f"{config.source}: cannot read the image at {culprit}: {type(error).__name__}: {error}. "
            "Fix or remove the file, or set `skip_bad_images: true` to skip unreadable images."
        ) from None


def _to_pil(value: Any) -> PIL.Image.Image:
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


def build_split(rows: DecodedRows, labels: torch.Tensor, class_names: list[str], split: str) -> ImageSplit:
    kept = [row for row, array in enumerate(rows.arrays) if array is not None]
    skipped = len(rows.arrays) - len(kept)
    if not kept:
        detail = f" ({skipped} unreadable images skipped)" if skipped else ""
        raise DataError(f"split {split!r} has no images{detail}; check the source and its split names")
    _check_same_size(rows, kept, split)
    images = torch.from_numpy(np.stack([rows.arrays[row] for row in kept])).permute(0, 3, 1, 2).contiguous()
    return ImageSplit(
        images=images,
        labels=labels[kept].clone(),
        ids=[rows.ids[row] for row in kept],
        class_names=class_names,
        skipped=skipped,
    )


def check_same_size_across(train: ImageSplit, test: ImageSplit, config: DataConfig) -> ImageSplit:
    """The test split, once it is known to have the train split's image size (later stages mix the two)."""
    (train_h, train_w), (test_h, test_w) = train.images.shape[2:], test.images.shape[2:]
    if (train_h, train_w) != (test_h, test_w):
        raise DataError(
            f"{config.source}: split {config.train_split!r} has {train_w}x{train_h} images but split "
            f"{config.test_split!r} has {test_w}x{test_h} (W x H). Set `image_size` to resize both to one square size."
        )
    return test


def _check_same_size(rows: DecodedRows, kept: list[int], split: str) -> None:
    sizes = Counter(rows.arrays[row].shape[:2] for row in kept)
    if len(sizes) == 1:
        return
    common = sizes.most_common(1)[0][0]
    odd = next(row for row in kept if rows.arrays[row].shape[:2] != common)
    height, width = rows.arrays[odd].shape[:2]
    raise DataError(
        f"split {split!r} has images of {len(sizes)} different sizes: most are {common[1]}x{common[0]} (W x H) but "
        f"{rows.names[odd]} is {width}x{height}. Set `image_size` to resize them all to one square size."
    )
