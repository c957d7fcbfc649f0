"""The streaming data path's loader (stages/data/crop_loader.py): whole steps of uint8 crops, sharded like the in-memory
path, from images of any size, JPEGs decoded at a reduced scale, EXIF orientation applied, bad images named or
skipped, and a worker pool that resumes at any step."""

import logging
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import PIL.ImageOps
import PIL.JpegImagePlugin
import pytest
import torch

from stages.data.crop_loader import CropBatches, CropStream, cut_crops, open_image, oriented_size
from stages.data.decoding import DEFAULT_MAX_IMAGE_PIXELS as MAX_PIXELS
from stages.data.sources import DataConfig, DataError, open_train_rows
from stages.data.stored_images import StoredImages, stored
from stages.training.batches import local_batch

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

FULL = (1.0, 1.0)  # crop scale whose boxes are the whole image (for images within the 3/4 - 4/3 aspect range)
ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture(scope="module")
def digit_rows():
    return open_train_rows(DataConfig())


def noise(seed: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(width: int, height: int) -> np.ndarray:
    """Slowly varying colours: what a JPEG's reduced-scale decoding keeps."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    channels = [128 + 100 * np.sin(2 * np.pi * (x + 2 * y)), 255 * x, 128 + 100 * np.cos(3 * np.pi * y)]
    return np.stack(channels, axis=-1).round().clip(0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, orientation: int | None = None, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation is not None:
        exif = PIL.Image.Exif()
        exif[ORIENTATION] = orientation
        kwargs["exif"] = exif
    PIL.Image.fromarray(array).save(path, **kwargs)
    return path


def file_rows(paths: list[Path], skip_bad: bool = False) -> StoredImages:
    """Undecoded rows of image files, as `open_train_rows` gives them."""
    dataset = datasets.Dataset.from_dict({"image": [str(path) for path in paths]})
    return stored(
        dataset.cast_column("image", datasets.Image()),
        "image",
        "train",
        "files",
        skip_bad,
        workers=0,
        max_pixels=MAX_PIXELS,
    )


def resized(image: PIL.Image.Image | np.ndarray, size: int, box=None) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    return np.asarray(image.convert("RGB").resize((size, size), PIL.Image.Resampling.BICUBIC, box=box))


def as_hwc(crops: torch.Tensor) -> np.ndarray:
    return crops.permute(1, 2, 0).numpy()


# --- one step ------------------------------------------------------------------------------------------------------


def test_an_item_is_a_whole_step_of_uint8_channels_last_views_and_is_deterministic(digit_rows):
    batches = CropBatches(digit_rows, size=16, global_batch=32, seed=3)
    step, crops, _ = batches[5]
    assert step == 5
    assert crops.dtype == torch.uint8 and crops.shape == (64, 3, 16, 16)
    assert crops.is_contiguous(memory_format=torch.channels_last) and crops.stride()[1] == 1
    assert torch.equal(crops, batches[5][1])
    assert torch.equal(crops, CropBatches(digit_rows, 16, 32, seed=3)[5][1])  # a fresh worker's copy
    assert not torch.equal(crops, batches[6][1])
    assert not torch.equal(crops, CropBatches(digit_rows, 16, 32, seed=4)[5][1])
    assert not torch.equal(crops[:32], crops[32:])  # two different views of every image


@pytest.mark.parametrize("step", [0, 50])  # 50: past the first epoch (1437 // 32 = 44 steps each)
def test_two_shards_together_are_the_one_process_batch(digit_rows, step):
    whole = CropBatches(digit_rows, 16, 32, seed=1)[step][1]
    shards = [CropBatches(digit_rows, 16, 32, seed=1, rank=r, world=2)[step][1] for r in (0, 1)]
    assert all(shard.shape == (32, 3, 16, 16) for shard in shards)
    # Per process: its 16 rows' first views, then their second views.
    assert torch.equal(whole[:32], torch.cat([shards[0][:16], shards[1][:16]]))
    assert torch.equal(whole[32:], torch.cat([shards[0][16:], shards[1][16:]]))


def test_images_of_different_sizes_in_one_batch(tmp_path):
    shapes = {"a/wide.png": (40, 30), "a/square.png": (64, 64), "a/tall.jpg": (50, 80), "b/small.jpg": (20, 24)}
    shapes |= {"b/big.png": (90, 70), "b/odd.png": (33, 41)}
    names = {}  # path -> name
    for i, (name, shape) in enumerate(shapes.items()):
        names[str(save(tmp_path / "data/train" / name, noise(i, *shape)))] = name
    save(tmp_path / "data/test/a/t.png", noise(9, 8, 8))
    save(tmp_path / "data/test/b/t.png", noise(10, 8, 8))
    config = DataConfig(source=f"imagefolder:{tmp_path / 'data'}")
    rows = open_train_rows(config)
    assert len(rows) == len(shapes)

    size = 32  # JPEGs of at least 64 px a side would be decoded at a reduced scale: not here
    _, crops, _ = CropBatches(rows, size, global_batch=len(rows), seed=0, crop_scale=FULL)[0]
    assert crops.shape == (2 * len(rows), 3, size, size)
    for slot, row in enumerate(local_batch(len(rows), len(rows), 0, 0, 0, 1).tolist()):
        path = rows.value(row)["path"]
        name = names[path]
        width, height = shapes[name]
        if name == "a/tall.jpg":  # aspect 5/8 < 3/4: the largest centred box of aspect 3/4
            box_height = width / 0.75
            box = (0, (height - box_height) / 2, width, (height + box_height) / 2)
        else:
            box = (0, 0, width, height)
        expected = resized(PIL.Image.open(path), size, box)
        assert np.array_equal(as_hwc(crops[slot]), expected), name
        assert np.array_equal(as_hwc(crops[len(rows) + slot]), expected), name


def test_a_whole_square_image_crop_is_the_image_resized(tmp_path):
    pixels = noise(0, 64, 64)
    rows = file_rows([save(tmp_path / "square.png", pixels)])
    _, crops, _ = CropBatches(rows, 20, global_batch=1, seed=7, crop_scale=FULL)[0]
    assert np.array_equal(as_hwc(crops[0]), resized(pixels, 20))
    assert np.array_equal(as_hwc(crops[1]), resized(pixels, 20))


# --- decoding: JPEG draft, EXIF orientation ------------------------------------------------------------------------


@pytest.fixture
def draft_calls(monkeypatch) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(requested size, size decoded at) of every JPEG `draft` call."""
    calls, real = [], PIL.JpegImagePlugin.JpegImageFile.draft

    def recording(self, mode, size):
        result = real(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(PIL.JpegImagePlugin.JpegImageFile, "draft", recording)
    return calls


@pytest.mark.parametrize("orientation", [None, 6])
def test_large_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(tmp_path, draft_calls, orientation):
    path = save(tmp_path / "big.jpg", smooth(800, 600), orientation, quality=95)
    image = open_image(str(path), MAX_PIXELS)
    displayed = (600, 800) if orientation == 6 else (800, 600)
    assert image.size == (800, 600) and oriented_size(image) == displayed
    boxes = [[100.0, 50.0, 420.0, 450.0], [0.0, 0.0, 600.0, 600.0]]  # x0, y0, w, h as displayed
    crops = cut_crops(image, boxes, 32)

    # The smallest box side is 420 px for a 32 px view: decoded at 1/8 (the coarsest DCT scale), it still has 52.
    assert [decoded for _, decoded in draft_calls] == [(100, 75)]
    full = PIL.ImageOps.exif_transpose(PIL.Image.open(path))  # the full-size decode, as displayed
    assert full.size == displayed
    for crop, (x0, y0, w, h) in zip(crops, boxes, strict=True):
        assert crop.shape == (32, 32, 3) and crop.dtype == np.uint8
        reference = resized(full, 32, (x0, y0, x0 + w, y0 + h)).astype(float)
        # Measured: mean 0.3, max 2 (a box 40 px off is 11 on average).
        assert np.abs(crop - reference).mean() < 1.0 and np.abs(crop - reference).max() <= 8


def test_a_large_grayscale_jpeg_gives_rgb_crops(tmp_path, draft_calls):
    path = save(tmp_path / "gray.jpg", smooth(640, 480)[..., 1], quality=95)
    image = open_image(str(path), MAX_PIXELS)
    assert image.mode == "L"
    crop = cut_crops(image, [[0.0, 0.0, 480.0, 480.0]], 32)[0]
    assert [decoded for _, decoded in draft_calls] == [(80, 60)]
    assert crop.shape == (32, 32, 3)
    assert np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 0], crop[..., 2])
    assert np.abs(crop - resized(PIL.Image.open(path), 32, (0, 0, 480, 480)).astype(float)).mean() < 1.0


def test_jpeg_crops_too_small_to_reduce_are_decoded_at_full_size(tmp_path, draft_calls):
    path = save(tmp_path / "big.jpg", smooth(800, 600), quality=95)
    crop = cut_crops(open_image(str(path), MAX_PIXELS), [[200.0, 100.0, 60.0, 50.0]], 32)[
        0
    ]  # 50 / 32 < 2: nothing to gain
    assert draft_calls == []
    assert np.array_equal(crop, resized(PIL.Image.open(path), 32, (200, 100, 260, 150)))


def test_exif_orientation_6_crops_come_from_the_displayed_image(tmp_path):
    stored = noise(1, 48, 40)  # 48 wide, 40 high as stored; displayed rotated 90 degrees clockwise: 40 x 48
    path = save(tmp_path / "rotated.png", stored, orientation=6)
    image = open_image(str(path), MAX_PIXELS)
    assert image.size == (48, 40) and oriented_size(image) == (40, 48)
    _, crops, _ = CropBatches(file_rows([path]), 16, global_batch=1, seed=0, crop_scale=FULL)[0]
    displayed = np.ascontiguousarray(np.rot90(stored, k=-1))
    assert displayed.shape == (48, 40, 3)
    assert np.array_equal(as_hwc(crops[0]), resized(displayed, 16))
    assert not np.array_equal(as_hwc(crops[0]), resized(stored, 16))


# --- bad images ----------------------------------------------------------------------------------------------------


def write_bad_image(path: Path, kind: str) -> Path:
    if kind == "garbage":  # no image header at all: fails when opened
        path.write_bytes(np.random.default_rng(0).bytes(300))
    else:  # a valid header, then half the data: fails only when decoded
        save(path, noise(2, 16, 16))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.fixture
def folder_with_a_bad_image(tmp_path, request) -> tuple[list[Path], int]:
    """Six readable 16x16 squares and one bad file; the files and the bad one's row."""
    paths = [save(tmp_path / f"{i}.png", noise(10 + i, 16, 16)) for i in range(6)]
    paths.insert(3, write_bad_image(tmp_path / "broken.png", request.param))
    return paths, 3


@pytest.mark.parametrize("folder_with_a_bad_image", ["garbage", "truncated"], indirect=True)
def test_a_bad_image_is_named_with_the_way_out(folder_with_a_bad_image):
    paths, _ = folder_with_a_bad_image
    batches = CropBatches(file_rows(paths), 8, global_batch=len(paths), seed=0)
    with pytest.raises(DataError, match=r"row 3 of split 'train' \(.*broken\.png\).*skip_bad_images"):
        batches[0]


@pytest.mark.parametrize("folder_with_a_bad_image", ["garbage", "truncated"], indirect=True)
def test_skip_bad_images_fills_the_batch_with_the_next_readable_row(folder_with_a_bad_image, caplog):
    paths, bad = folder_with_a_bad_image
    batches = CropBatches(file_rows(paths, skip_bad=True), 8, global_batch=len(paths), seed=0, crop_scale=FULL)
    with caplog.at_level(logging.WARNING, logger="stages.data.crop_loader"):
        _, crops, _ = batches[0]
    assert "broken.png" in caplog.text
    assert crops.shape == (2 * len(paths), 3, 8, 8)
    rows = local_batch(len(paths), len(paths), 0, 0, 0, 1).tolist()
    for slot, row in enumerate(rows):
        shown = row + 1 if row == bad else row  # the bad row's slot shows the next row's image
        expected = resized(PIL.Image.open(paths[shown]), 8)
        assert np.array_equal(as_hwc(crops[slot]), expected)
        assert np.array_equal(as_hwc(crops[len(paths) + slot]), expected)
    assert torch.equal(crops, batches[0][1])


def test_only_unreadable_images_is_an_error_not_a_hang(tmp_path):
    paths = [write_bad_image(tmp_path / f"{i}.png", kind) for i, kind in enumerate(["garbage", "truncated"])]
    batches = CropBatches(file_rows(paths, skip_bad=True), 8, global_batch=1, seed=0)
    with pytest.raises(DataError, match=r"100 consecutive images from row \d are unreadable"):
        batches[0]


# --- the worker pool -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_resumed_at_a_step_yields_the_direct_items_in_order(digit_rows, workers):
    batches = CropBatches(digit_rows, 8, global_batch=16, seed=2)
    resumed = 7
    stream = CropStream(batches, total_steps=resumed + 4, workers=workers, device=torch.device("cpu"), prefetch=2)
    for step in range(resumed, resumed + 4):
        crops, rows = stream(step)
        assert torch.equal(rows, batches[step][2])
        assert torch.equal(crops, batches[step][1])
        assert crops.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_stream_refuses_steps_out_of_order(digit_rows, workers):
    batches = CropBatches(digit_rows, 8, global_batch=16, seed=2)
    stream = CropStream(batches, total_steps=10, workers=workers, device=torch.device("cpu"), prefetch=2)
    stream(3)
    with pytest.raises(RuntimeError, match="produced step 4 where step 6 was expected"):
        stream(6)
