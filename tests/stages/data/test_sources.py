"""Image data through Hugging Face `datasets` (stages/data/sources.py): every source, label kinds, image modes,
bad input."""

import logging
import re
import time
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch
from sklearn.datasets import load_digits

from stages.data.sources import DataConfig, DataError, load_splits
from stages.failures import is_network_error, notes_of

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

SIZE = (12, 10)  # PIL order: width, height


@pytest.fixture(scope="module")
def digits_splits():
    return load_splits(DataConfig())


def pixels(seed: int, size=SIZE, channels: int = 3) -> np.ndarray:
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def save_image(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path, **kwargs)
    return path


def make_folder(root: Path, classes=("cat", "dog"), per_class: int = 4, size=SIZE) -> dict[str, np.ndarray]:
    """An imagefolder tree of RGB PNGs; file name -> the pixels written."""
    written = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            written[f"{name}{i}.png"] = pixels(10 * c + i, size)
            save_image(root / name / f"{name}{i}.png", written[f"{name}{i}.png"])
    return written


def as_hwc(split, row: int) -> np.ndarray:
    return split.images[row].permute(1, 2, 0).numpy()


def pil_dataset(labels, seed: int = 0, size=SIZE) -> datasets.Dataset:
    images = [PIL.Image.fromarray(pixels(seed + i, size)) for i in range(len(labels))]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=_features(labels))


def _features(labels) -> datasets.Features:
    label = datasets.Value("string") if isinstance(labels[0], str) else datasets.Value("int64")
    return datasets.Features({"image": datasets.Image(), "label": label})


# --- digits (the embedded default) ---------------------------------------------------------------------------------


def test_digits_is_every_real_image_split_stratified(digits_splits):
    train, test = digits_splits
    assert len(train) + len(test) == 1797 and len(test) == 360
    for split in (train, test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 8, 8)
        assert split.labels.dtype == torch.int64 and split.skipped == 0
        assert split.class_names == [str(d) for d in range(10)]
        assert torch.equal(split.images[:, 0], split.images[:, 1])  # grayscale repeated into RGB
    assert sorted(train.ids + test.ids, key=lambda i: int(i.split("-")[1])) == [f"train-{i}" for i in range(1797)]
    # Stratified: each class keeps its share of the test split.
    class_sizes = torch.bincount(torch.cat([train.labels, test.labels]))
    assert (torch.bincount(test.labels, minlength=10) - 0.2 * class_sizes).abs().max() <= 1


def test_digits_pixels_are_the_bundled_images_scaled_to_uint8(digits_splits):
    train, _ = digits_splits
    digits = load_digits()
    for row in (0, 100, len(train) - 1):
        source = int(train.ids[row].split("-")[1])
        expected = np.rint(digits.images[source] * 255 / 16).astype(np.uint8)
        assert np.array_equal(train.images[row, 0].numpy(), expected)
        assert train.labels[row] == digits.target[source]
    assert train.images.max() == 255


def test_digits_split_is_deterministic_and_follows_the_seed(digits_splits):
    _, test = digits_splits
    _, again = load_splits(DataConfig(seed=0))
    _, other = load_splits(DataConfig(seed=1))
    assert again.ids == test.ids and torch.equal(again.images, test.images)
    assert other.ids != test.ids


# --- sources -------------------------------------------------------------------------------------------------------


def test_imagefolder_ids_labels_and_image_modes(tmp_path):
    written = make_folder(tmp_path / "data")
    gray, rgba = pixels(90, channels=1), pixels(91, channels=4)
    save_image(tmp_path / "data/cat/gray.png", gray)
    save_image(tmp_path / "data/dog/alpha.png", rgba)
    save_image(tmp_path / "data/dog/photo.jpg", pixels(92), quality=95)
    palette = PIL.Image.fromarray(pixels(93)).quantize(colors=8)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "data/cat/palette.png")
    train, test = load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}", test_fraction=0.3))

    assert train.class_names == ["cat", "dog"]
    assert sorted(train.ids + test.ids) == sorted([*written, "gray.png", "alpha.png", "photo.jpg", "palette.png"])
    rows = {image_id: (split, row) for split in (train, test) for row, image_id in enumerate(split.ids)}
    for image_id, (split, row) in rows.items():
        assert split.class_names[split.labels[row]] == ("cat" if image_id.startswith(("cat", "gray", "pal")) else "dog")
    for name, array in written.items():
        assert np.array_equal(as_hwc(*rows[name]), array)
    assert np.array_equal(as_hwc(*rows["gray.png"]), np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(as_hwc(*rows["alpha.png"]), rgba[..., :3])  # alpha dropped, colours kept
    assert np.array_equal(as_hwc(*rows["palette.png"]), np.asarray(palette.convert("RGB")))
    assert as_hwc(*rows["photo.jpg"]).shape == (10, 12, 3)


def test_file_names_shared_across_classes_give_relative_path_ids(tmp_path):
    for c, name in enumerate(("cat", "dog")):
        for i in range(3):
            save_image(tmp_path / f"data/{name}/{i}.png", pixels(10 * c + i))
    train, test = load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}", test_fraction=0.34))
    assert sorted(train.ids + test.ids) == [f"{name}/{i}.png" for name in ("cat", "dog") for i in range(3)]


def test_imagefolder_uses_its_train_and_test_folders(tmp_path):
    make_folder(tmp_path / "data/train", per_class=3)
    save_image(tmp_path / "data/test/cat/t0.png", pixels(50))
    save_image(tmp_path / "data/test/dog/t1.png", pixels(51))
    train, test = load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}"))
    assert len(train) == 6 and test.ids == ["t0.png", "t1.png"]
    assert [test.class_names[i] for i in test.labels] == ["cat", "dog"]


def test_disk_dataset_dict_with_string_labels(tmp_path):
    splits = datasets.DatasetDict(
        {"train": pil_dataset(["dog", "cat", "bird", "cat"]), "test": pil_dataset(["cat", "bird"], seed=10)}
    )
    splits.with_format("torch").save_to_disk(tmp_path / "saved")  # a saved format must not change what loads
    train, test = load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))
    assert train.class_names == ["bird", "cat", "dog"]  # class names in sorted order
    assert train.labels.tolist() == [2, 1, 0, 1] and test.labels.tolist() == [1, 0]
    assert train.ids == [f"train-{i}" for i in range(4)] and test.ids == ["test-0", "test-1"]
    assert np.array_equal(as_hwc(test, 1), pixels(11))


def test_disk_single_dataset_with_integer_labels_gets_a_held_out_split(tmp_path):
    pil_dataset([7, 3, 9] * 4).save_to_disk(tmp_path / "saved")
    train, test = load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}", test_fraction=0.25))
    assert train.class_names == ["3", "7", "9"]  # sorted distinct values, mapped to 0..K-1
    assert len(test) == 3 and sorted(test.labels.tolist()) == [0, 1, 2]
    assert sorted(train.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_parquet_glob_with_array_images(tmp_path):
    arrays = [pixels(i).tolist() for i in range(6)]
    datasets.Dataset.from_dict({"pixels": arrays, "y": [0, 1, 0, 1, 0, 1]}).to_parquet(str(tmp_path / "part-0.parquet"))
    train, test = load_splits(
        DataConfig(source=f"parquet:{tmp_path}/*.parquet", image_column="pixels", label_column="y", test_fraction=0.3)
    )
    assert len(train) == 4 and len(test) == 2
    row = int(train.ids[0].split("-")[1])
    assert np.array_equal(as_hwc(train, 0), pixels(row))


def test_parquet_with_embedded_image_bytes_keeps_file_names(tmp_path):
    paths = [str(save_image(tmp_path / f"img/{i}_x.png", pixels(i))) for i in range(4)]
    dataset = datasets.Dataset.from_dict({"image": paths, "label": [0, 1, 0, 1]})
    dataset.cast_column("image", datasets.Image()).to_parquet(str(tmp_path / "train.parquet"))
    train, test = load_splits(DataConfig(source=f"parquet:{tmp_path / 'train.parquet'}", test_fraction=0.5))
    assert sorted(train.ids + test.ids) == ["0_x.png", "1_x.png", "2_x.png", "3_x.png"]


# --- image sizes ---------------------------------------------------------------------------------------------------


def test_mixed_sizes_need_image_size(tmp_path):
    make_folder(tmp_path / "data")
    save_image(tmp_path / "data/dog/wide.png", pixels(7, size=(30, 10)))
    with pytest.raises(DataError, match=r"wide\.png is 30x10.*image_size"):
        load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}"))


def test_train_and_test_sizes_must_match_without_image_size(tmp_path):
    make_folder(tmp_path / "data/train", per_class=2)
    save_image(tmp_path / "data/test/cat/big.png", pixels(5, size=(24, 20)))
    with pytest.raises(DataError, match=r"'train' has 12x10 images but split 'test' has 24x20.*image_size"):
        load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}"))
    train, test = load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}", image_size=8))
    assert train.images.shape[1:] == test.images.shape[1:] == (3, 8, 8)


def test_image_size_resizes_the_shorter_side_and_centre_crops(tmp_path):
    make_folder(tmp_path / "data")
    bands = np.zeros((10, 30, 3), dtype=np.uint8)  # blue | green | red, 10 columns each
    bands[:, :10, 2], bands[:, 10:20, 1], bands[:, 20:, 0] = 255, 255, 255
    save_image(tmp_path / "data/dog/wide.png", bands)
    for size in (10, 6):
        train, test = load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}", image_size=size))
        assert train.images.shape[1:] == test.images.shape[1:] == (3, size, size)
        split, row = next((s, s.ids.index("wide.png")) for s in (train, test) if "wide.png" in s.ids)
        assert split.images[row, :, size // 2, size // 2].tolist() == [0, 255, 0]  # the centre band survives
    assert split.images[row, 1].min() >= 200  # only the green band is inside the crop


# --- bad input -----------------------------------------------------------------------------------------------------


def test_unknown_source_lists_the_accepted_forms():
    with pytest.raises(DataError, match=r"'csv:x'.*imagefolder:<dir>.*disk:<dir>.*parquet:.*hub:<name>"):
        load_splits(DataConfig(source="csv:x"))


@pytest.mark.parametrize("kind", ["imagefolder", "disk", "parquet"])
def test_missing_path_is_named(tmp_path, kind):
    missing = tmp_path / "nowhere" / ("*.parquet" if kind == "parquet" else "")
    with pytest.raises(DataError, match="nowhere"):
        load_splits(DataConfig(source=f"{kind}:{missing}"))


def test_empty_split_on_disk(tmp_path):
    splits = datasets.DatasetDict({"train": pil_dataset([0, 1]), "test": pil_dataset([0]).select([])})
    splits.save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"\['test'\] are empty"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))


def test_empty_parquet_split(tmp_path):
    pil_dataset([0]).select([]).to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(DataError, match=r"empty\.parquet: a split is empty"):
        load_splits(DataConfig(source=f"parquet:{tmp_path / 'empty.parquet'}"))


def test_split_empty_after_skipping_bad_images(tmp_path):
    bad = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": None}], "label": [0]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    datasets.DatasetDict({"train": pil_dataset([0, 0]), "test": bad}).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"'test' has no images \(1 unreadable images skipped\)"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}", skip_bad_images=True))


@pytest.mark.parametrize(("key", "column"), [("image_column", "img"), ("label_column", "fine_label")])
def test_missing_column_names_it_and_the_config_key(tmp_path, key, column):
    pil_dataset([0, 1]).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=rf"'{column}'.*available columns: \['image', 'label'\].*`{key}`"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}", **{key: column}))


def test_imagefolder_without_class_folders_says_how_labels_are_made(tmp_path):
    for i in range(3):
        save_image(tmp_path / f"flat/{i}.png", pixels(i))
    with pytest.raises(DataError, match=r"no label column 'label' \(imagefolder labels come from one sub-folder"):
        load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'flat'}"))


@pytest.mark.parametrize("labels", [[0.5, 1.5], [[0], [1]], [True, False]])
def test_labels_must_be_integers_or_class_names(tmp_path, labels):
    images = [PIL.Image.fromarray(pixels(i)) for i in range(2)]
    dataset = datasets.Dataset.from_dict({"image": images, "label": labels})
    dataset.cast_column("image", datasets.Image()).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"label column 'label'.*must be integers or class names"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))


def test_unlabeled_test_rows_are_refused(tmp_path):
    splits = datasets.DatasetDict({"train": pil_dataset(["cat", "dog"]), "test": pil_dataset(["cat", None, "dog"])})
    splits.save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"1 rows of split 'test' have no label.*\[1\].*every test image needs a class"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))


def test_corrupt_image_names_the_file_and_the_way_out(tmp_path):
    make_folder(tmp_path / "data")
    (tmp_path / "data/dog/broken.png").write_bytes(np.random.default_rng(0).bytes(200))
    with pytest.raises(DataError, match=r"broken\.png.*skip_bad_images"):
        load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}"))


def test_corrupt_image_without_a_path_names_the_row(tmp_path):
    dataset = pil_dataset(["a", "b", "a", "b"])
    rows = dataset.cast_column("image", datasets.Image(decode=False)).to_dict()
    rows["image"][2] = {"bytes": b"\x89PNG garbage", "path": None}
    datasets.Dataset.from_dict(rows, features=_features(["a"])).save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"row 2 of split 'train'.*skip_bad_images"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}", test_fraction=0.5))


def test_skip_bad_images_counts_and_warns(tmp_path, caplog):
    written = make_folder(tmp_path / "data")
    (tmp_path / "data/dog/broken.png").write_bytes(np.random.default_rng(0).bytes(200))
    (tmp_path / "data/cat/truncated.png").write_bytes((tmp_path / "data/cat/cat0.png").read_bytes()[:60])
    config = DataConfig(source=f"imagefolder:{tmp_path / 'data'}", skip_bad_images=True, test_fraction=0.3)
    with caplog.at_level(logging.WARNING, logger="stages.data.sources"):
        train, test = load_splits(config)
    assert train.skipped + test.skipped == 2
    assert sorted(train.ids + test.ids) == sorted(written)
    assert "unreadable" in caplog.text


def test_held_out_split_too_small_for_every_class(tmp_path):
    make_folder(tmp_path / "data", classes=("a", "b", "c"), per_class=3)
    with pytest.raises(DataError, match=r"test_fraction=0\.1.*Change `test_fraction`, or supply a test split"):
        load_splits(DataConfig(source=f"imagefolder:{tmp_path / 'data'}", test_fraction=0.1))


def test_missing_train_split_lists_the_available_ones(tmp_path):
    datasets.DatasetDict({"train": pil_dataset([0, 1]), "test": pil_dataset([0, 1])}).save_to_disk(tmp_path / "s")
    with pytest.raises(DataError, match=r"split 'training' does not exist; available splits: \['test', 'train'\]"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 's'}", train_split="training"))
    with pytest.raises(DataError, match=r"split 'validation' does not exist"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 's'}", test_split="validation"))


def test_test_labels_unseen_in_train(tmp_path):
    splits = datasets.DatasetDict({"train": pil_dataset(["cat", "dog"]), "test": pil_dataset(["cat", "emu"])})
    splits.save_to_disk(tmp_path / "saved")
    with pytest.raises(DataError, match=r"split 'test' has labels that the train split 'train' lacks: \['emu'\]"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'saved'}"))


@pytest.mark.parametrize("changes", [{"test_fraction": 0.0}, {"test_fraction": 1.0}, {"image_size": 0}])
def test_config_values_are_checked(changes):
    with pytest.raises(DataError, match=next(iter(changes))):
        DataConfig(**changes)


# --- the hub -------------------------------------------------------------------------------------------------------


def test_hub_offline_fails_fast_with_what_to_do():
    start = time.monotonic()
    with pytest.raises(DataError, match=r"hub:someone/cifar-ish.*cannot reach.*disk:"):
        load_splits(DataConfig(source="hub:someone/cifar-ish"))
    assert time.monotonic() - start < 20  # a hang guard (retries would take minutes), not a speed benchmark


def test_hub_unreachable_while_online_is_caught_before_load_dataset(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there

    def no_retries(*args, **kwargs):
        raise AssertionError("load_dataset retries an unreachable hub for minutes; it must not be called")

    monkeypatch.setattr(datasets, "load_dataset", no_retries)
    with pytest.raises(Exception) as raised:  # the network's fault, with its own type: the pipeline retries it once
        load_splits(DataConfig(source="hub:someone/cifar-ish"))
    assert is_network_error(raised.value) and not isinstance(raised.value, DataError), repr(raised.value)
    assert re.search(
        r"hub:someone/cifar-ish: the Hugging Face hub did not answer.*disk:.*HF_HUB_OFFLINE=1", notes_of(raised.value)
    )
