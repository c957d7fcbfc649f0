"""The image stream (stages/data/image_stream.py): any source read batch by batch, every image once and in order, ids
as file names, unreadable files skipped and counted, sizes checked per batch."""

from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from stages.data.errors import DataError
from stages.data.image_stream import ImageStream

pytestmark = pytest.mark.usefixtures("private_datasets_cache")


def write_png(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> str:
    """A PNG of one grey value (its first pixel tells the images apart); size is (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path.name


def flat_folder(folder: Path, count: int) -> list[str]:
    return [write_png(folder / f"img{i:03d}.png", 10 * i) for i in range(count)]


def read_all(stream: ImageStream) -> tuple[list[list[str]], list[str], torch.Tensor]:
    """(ids per batch, every path, every image) of one pass."""
    batches, paths, images = [], [], []
    for batch_ids, batch_paths, batch_images in stream:
        assert batch_images.dtype == torch.uint8 and batch_images.shape[0] == len(batch_ids) == len(batch_paths)
        batches.append(batch_ids)
        paths += batch_paths
        images.append(batch_images)
    return batches, paths, torch.cat(images)


def test_batches_cover_every_image_once_in_order(tmp_path):
    names = flat_folder(tmp_path / "images", 7)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    stream = ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=3, image_size=None)

    assert len(stream) == 7 and stream.class_names is None  # notes.txt is no image; a flat folder has no classes
    batches, paths, images = read_all(stream)
    assert [len(batch) for batch in batches] == [3, 3, 1]
    assert [image for batch in batches for image in batch] == names  # ids are the file names, in order
    assert paths == [str(tmp_path / "images" / name) for name in names]
    assert images.shape == (7, 3, 8, 8)
    assert images[:, 0, 0, 0].tolist() == [10 * i for i in range(7)]  # each image once, in file order
    assert stream.skipped == []


def test_a_second_pass_reads_the_same_batches(tmp_path):
    flat_folder(tmp_path / "images", 5)
    stream = ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=2, image_size=None)
    first, second = read_all(stream), read_all(stream)
    assert first[0] == second[0] and torch.equal(first[2], second[2])


def test_batch_size_is_respected(tmp_path):
    flat_folder(tmp_path / "images", 6)
    for batch_size, sizes in ((1, [1] * 6), (4, [4, 2]), (6, [6]), (100, [6])):
        stream = ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=batch_size, image_size=None)
        assert [len(ids) for ids in read_all(stream)[0]] == sizes, batch_size


def test_unreadable_images_are_skipped_and_named(tmp_path):
    names = flat_folder(tmp_path / "images", 4)
    (tmp_path / "images" / "img001b.png").write_bytes(b"not a png at all")
    stream = ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=2, image_size=None)
    assert len(stream) == 5  # counted as a row: the stream finds out while reading
    batches, _, images = read_all(stream)
    assert [image for batch in batches for image in batch] == names
    assert len(images) == 4 and stream.skipped == [str(tmp_path / "images" / "img001b.png")]


def test_mixed_image_sizes_come_one_batch_per_size(tmp_path):
    folder = tmp_path / "images"
    write_png(folder / "a.png", 1, size=(8, 8))
    write_png(folder / "b.png", 2, size=(12, 6))
    write_png(folder / "c.png", 3, size=(5, 9))
    # a batch of mixed sizes comes as one batch per size: each batch has one size, which is all a batch needs
    grouped = [(ids, tuple(images.shape)) for ids, _, images in ImageStream(f"imagefolder:{folder}", 3, None)]
    assert grouped == [(["a.png"], (1, 3, 8, 8)), (["b.png"], (1, 3, 6, 12)), (["c.png"], (1, 3, 9, 5))]

    shapes = [tuple(images.shape) for _, _, images in ImageStream(f"imagefolder:{folder}", 1, None)]
    assert shapes == [(1, 3, 8, 8), (1, 3, 6, 12), (1, 3, 9, 5)]

    resized = ImageStream(f"imagefolder:{folder}", batch_size=2, image_size=4)
    batches, _, images = read_all(resized)
    assert batches == [["a.png", "b.png"], ["c.png"]] and images.shape == (3, 3, 4, 4)
    assert images[:, 0, 2, 2].tolist() == [1, 2, 3]  # an even grey stays that grey when resized


def test_a_parquet_source(tmp_path):
    pixels = [np.full((5, 5, 3), 20 * i, np.uint8) for i in range(5)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    table = datasets.Dataset.from_dict(
        {"image": [PIL.Image.fromarray(p) for p in pixels], "label": [0, 1, 0, 1, 1]}, features=features
    )
    table.to_parquet(str(tmp_path / "images.parquet"))

    stream = ImageStream(f"parquet:{tmp_path / 'images.parquet'}", batch_size=2, image_size=None)
    assert len(stream) == 5
    batches, paths, images = read_all(stream)
    ids = [image for batch in batches for image in batch]
    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert len(set(ids)) == 5 and paths == [""] * 5  # bytes without a file: row ids, no paths
    assert images.shape == (5, 3, 5, 5) and images[:, 0, 0, 0].tolist() == [0, 20, 40, 60, 80]


def test_a_parquet_directory_of_two_splits_is_read_split_after_split(tmp_path):
    def write(name: str, values: list[int]) -> None:
        images = [PIL.Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in values]
        features = datasets.Features({"image": datasets.Image()})
        datasets.Dataset.from_dict({"image": images}, features=features).to_parquet(str(tmp_path / "data" / name))

    (tmp_path / "data").mkdir()
    write("train-00000-of-00001.parquet", [1, 2, 3])
    write("test-00000-of-00001.parquet", [4, 5])
    stream = ImageStream(f"parquet:{tmp_path / 'data'}", batch_size=2, image_size=None)
    batches, _, images = read_all(stream)
    ids = [image for batch in batches for image in batch]
    assert sorted(images[:, 0, 0, 0].tolist()) == [1, 2, 3, 4, 5] and len(images) == 5
    assert [len(batch) for batch in batches] in ([2, 1, 2], [2, 2, 1])  # a batch never spans two splits
    assert len(set(ids)) == 5


def test_an_imagefolder_sorted_into_classes_names_them(tmp_path):
    for c in ("cat", "dog"):
        write_png(tmp_path / "images" / c / f"{c}.png", 0)
    stream = ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=8, image_size=None)
    assert stream.class_names == ["cat", "dog"]
    assert read_all(stream)[0] == [["cat.png", "dog.png"]]


def test_ids_stay_distinct_across_splits(tmp_path):
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            write_png(tmp_path / "images" / split / c / f"{c}1.png", 0)
    batches = read_all(ImageStream(f"imagefolder:{tmp_path / 'images'}", batch_size=8, image_size=None))[0]
    ids = [image for batch in batches for image in batch]
    assert len(ids) == 4
    assert len(set(ids)) == 4, ids


def test_no_images_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "empty")):
        ImageStream(f"imagefolder:{tmp_path / 'empty'}", batch_size=2, image_size=None)


def test_min_side_shrinks_large_images_by_whole_factors_and_leaves_small_ones_as_they_are(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, (width, height) in {"small": (15, 9), "edge": (30, 19), "large": (103, 40)}.items():
        PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(folder / f"{name}.png")
    as_stored = {ids[0]: images[0] for ids, _, images in ImageStream(f"imagefolder:{folder}", 1, None)}
    reduced = {ids[0]: images[0] for ids, _, images in ImageStream(f"imagefolder:{folder}", 1, None, min_side=10)}
    assert torch.equal(reduced["small.png"], as_stored["small.png"])  # shorter side under twice min_side
    assert torch.equal(reduced["edge.png"], as_stored["edge.png"])
    large = PIL.Image.open(folder / "large.png").reduce(4, box=(1, 0, 101, 40))  # 4 x 4 boxes, centred: 25 x 10
    assert torch.equal(reduced["large.png"], torch.tensor(np.asarray(large)).permute(2, 0, 1))
