"""Unusual images that must simply work, through the real data path (`load_splits` on an `imagefolder:` source) in
memory and streamed: RGBA and palette PNGs (with and without transparency), 16-bit grayscale, mixed sizes, a large
JPEG, and corrupt files under `skip_bad_images`. Each gives uint8 RGB images of the right colour; a tiny fine-tuning
run trains on a folder of all of them."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import stages.finetune as finetune
from stages.data.crop_loader import CropBatches
from stages.data.errors import DataError
from stages.data.eval_crops import EvalCropBatches
from stages.data.label_subsets import save_subset, select_subsets
from stages.data.sources import DataConfig, ImageSplit, load_splits
from stages.data.stored_images import StoredImages
from stages.finetune import FinetuneConfig
from stages.models.architecture import EncoderConfig

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

RED, BLUE = (255, 0, 0), (0, 0, 255)
PER_CLASS = 5
CROP = 8  # side of the streamed crops read back
Maker = Callable[[str, int], tuple[PIL.Image.Image, tuple[int, int, int]]]  # (class, index) -> (image, its RGB colour)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def colour_of(name: str) -> tuple[int, int, int]:
    return RED if name == "a" else BLUE


def rgba(name: str, index: int):
    """Half the pixels fully transparent: alpha is dropped, the colour kept."""
    pixels = np.zeros((20, 20, 4), dtype=np.uint8)
    pixels[..., :3] = colour_of(name)
    pixels[:10, :, 3] = 0
    pixels[10:, :, 3] = 255
    return PIL.Image.fromarray(pixels, "RGBA"), colour_of(name)


def palette(name: str, index: int, transparency: bytes | None = None):
    image = PIL.Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, *colour_of(name)] + [0] * (3 * 254))
    if transparency is not None:
        image.info["transparency"] = transparency
    return image, colour_of(name)


def palette_transparent(name: str, index: int):
    """A tRNS chunk of bytes: the image's one colour half transparent (PIL warns converting it straight to RGB)."""
    return palette(name, index, transparency=bytes([255, 128]))


def gray16(name: str, index: int):
    """16-bit grayscale (mode I;16): 65535 is white and 32896 (128 * 257) mid-gray, not both clipped to white."""
    value = 65535 if name == "a" else 128 * 257
    return PIL.Image.fromarray(np.full((20, 20), value, dtype=np.uint16)), (value // 257,) * 3


def mixed_sizes(name: str, index: int):
    return PIL.Image.new("RGB", (20 + 7 * index, 30 + 3 * index), colour_of(name)), colour_of(name)


def large_jpeg(name: str, index: int):
    """One 3000 x 2000 JPEG per class among small ones."""
    size = (3000, 2000) if index == 0 else (40, 30)
    return PIL.Image.new("RGB", size, colour_of(name)), colour_of(name)


def make_folder(root: Path, make: Maker, suffix: str = ".png", per_class: int = PER_CLASS) -> dict[str, tuple]:
    """An image folder of classes `a` and `b`; returns each file name's expected colour."""
    expected = {}
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            image, colour = make(name, index)
            file = root / name / f"{name}{index}{suffix}"
            image.save(file, **({"transparency": image.info["transparency"]} if "transparency" in image.info else {}))
            expected[file.name] = colour
    return expected


def read_back(split: ImageSplit, image_size: int | None) -> tuple[torch.Tensor, list[int]]:
    """(the split's images as the stages read them: uint8 N x 3 x H x W, the rows they are): the decoded tensor in
    memory; streamed, the evaluation crops and the training crops the loader cuts from the originals."""
    if not isinstance(split.images, StoredImages):
        side = image_size or split.images.shape[-1]
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, side, side)
        return split.images, list(range(len(split)))
    rows, crops, readable = EvalCropBatches(split.images, CROP, batch_size=len(split))[0]
    assert crops.dtype == torch.uint8 and crops.shape == (len(split), 3, CROP, CROP)
    _, views, used = CropBatches(split.images, CROP, global_batch=len(split), seed=0, views=1)[0]
    assert views.dtype == torch.uint8 and views.shape[1:] == (3, CROP, CROP)
    assert set(used.tolist()) <= set(rows[readable].tolist())  # an unreadable row is replaced by a readable one
    return crops[readable], rows[readable].tolist()


def assert_colours(split: ImageSplit, images: torch.Tensor, rows: list[int], expected: dict[str, tuple]) -> None:
    for image, row in zip(images, rows, strict=True):
        colour = torch.tensor(expected[Path(split.paths[row]).name], dtype=torch.float32)
        mean = image.float().mean(dim=(1, 2))
        assert torch.allclose(mean, colour, atol=3), (split.paths[row], mean.tolist(), colour.tolist())


CASES = {
    "rgba": (rgba, ".png", None),
    "palette": (palette, ".png", None),
    "palette with transparency": (palette_transparent, ".png", None),
    "16-bit grayscale": (gray16, ".png", None),
    "mixed sizes": (mixed_sizes, ".png", 16),
    "large jpeg": (large_jpeg, ".jpg", 16),
}


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
@pytest.mark.parametrize("case", list(CASES))
def test_unusual_images_load_as_uint8_rgb_of_the_right_colour(tmp_path, case, in_memory):
    make, suffix, image_size = CASES[case]
    expected = make_folder(tmp_path / "images", make, suffix)
    config = DataConfig(
        source=f"imagefolder:{tmp_path / 'images'}", image_size=image_size, in_memory=in_memory, loader_workers=0
    )
    train, test = load_splits(config)
    assert len(train) + len(test) == 2 * PER_CLASS and train.skipped == test.skipped == 0
    assert train.class_names == ["a", "b"]
    for split in (train, test):
        assert_colours(split, *read_back(split, image_size), expected)


def add_corrupt_files(folder: Path) -> list[Path]:
    """Garbage named .png, and a JPEG cut short (its header parses; its data does not decode)."""
    garbage = folder / "a" / "garbage.png"
    garbage.write_bytes(b"not an image at all" * 20)
    cut = folder / "b" / "cut.jpg"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:400])
    return [garbage, cut]


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
def test_corrupt_images_are_skipped_and_counted_under_skip_bad_images(tmp_path, in_memory):
    expected = make_folder(tmp_path / "images", mixed_sizes)
    bad = add_corrupt_files(tmp_path / "images")
    config = DataConfig(
        source=f"imagefolder:{tmp_path / 'images'}",
        image_size=16,
        in_memory=in_memory,
        loader_workers=0,
        skip_bad_images=True,
    )
    train, test = load_splits(config)
    skipped, total = 0, 0
    for split in (train, test):
        images, rows = read_back(split, 16)
        assert_colours(split, images, rows, expected)  # every image read back is a good one
        total += len(split)
        skipped += split.skipped if in_memory else len(split) - len(rows)  # streamed: found when read
    assert skipped == len(bad)
    assert total == 2 * PER_CLASS + (0 if in_memory else len(bad))  # in memory they are dropped while decoding


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
def test_without_skip_bad_images_a_corrupt_image_is_one_error_naming_it(tmp_path, in_memory):
    make_folder(tmp_path / "images", mixed_sizes)
    garbage = add_corrupt_files(tmp_path / "images")[0]
    (tmp_path / "images" / "b" / "cut.jpg").unlink()
    config = DataConfig(
        source=f"imagefolder:{tmp_path / 'images'}", image_size=16, in_memory=in_memory, loader_workers=0
    )
    with pytest.raises(DataError, match=r"garbage\.png.*skip_bad_images"):
        train, test = load_splits(config)
        for split in (train, test):
            read_back(split, 16)
    assert garbage.exists()


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
def test_an_image_over_max_image_pixels_is_named_or_skipped_and_counted(tmp_path, in_memory):
    expected = make_folder(tmp_path / "images", mixed_sizes)  # at most 48 x 42 pixels
    PIL.Image.new("RGB", (200, 200), RED).save(tmp_path / "images" / "a" / "huge.png")
    settings = dict(
        source=f"imagefolder:{tmp_path / 'images'}",
        image_size=16,
        in_memory=in_memory,
        loader_workers=0,
        max_image_pixels=10_000,
    )
    with pytest.raises(DataError, match=r"huge\.png.*TooManyPixels.*max_image_pixels.*skip_bad_images"):
        for split in load_splits(DataConfig(**settings)):
            read_back(split, 16)
    skipped = 0
    for split in load_splits(DataConfig(**settings, skip_bad_images=True)):
        images, rows = read_back(split, 16)
        assert_colours(split, images, rows, expected)
        skipped += split.skipped if in_memory else len(split) - len(rows)
    assert skipped == 1


def every_kind(name: str, index: int):
    """Each class: one image of every unusual kind."""
    makers = [rgba, palette, palette_transparent, gray16, mixed_sizes, large_jpeg]
    return makers[index % len(makers)](name, index)


@pytest.mark.parametrize("in_memory", [True, False], ids=["in memory", "streamed"])
def test_a_tiny_finetuning_run_trains_on_a_folder_of_every_unusual_kind(tmp_path, in_memory):
    folder = tmp_path / "images"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for index in range(12):
            image, _ = every_kind(name, index)
            suffix = ".jpg" if index % 6 == 5 else ".png"
            image.save(
                folder / name / f"{index}{suffix}", **{k: v for k, v in image.info.items() if k == "transparency"}
            )
    add_corrupt_files(folder)
    data = DataConfig(
        source=f"imagefolder:{folder}", image_size=16, in_memory=in_memory, loader_workers=0, skip_bad_images=True
    )
    train, _ = load_splits(data)
    assert isinstance(train.images, StoredImages) is not in_memory
    subset = tmp_path / "all.json"
    rows = select_subsets(train.labels, [1.0], seed=0)["100pct"]
    save_subset(subset, rows, train.labels, train.ids, 1.0, seed=0)

    config = FinetuneConfig(
        data=data,
        model=EncoderConfig(depth=18, width=0.125),
        image_size=16,
        batch_size=8,
        steps=2,
        checkpoint_every=1000,
        log_every=1,
        eval_batch_size=8,
    )
    metrics = finetune.run(config, {"subset": subset}, tmp_path / "out")
    assert metrics["steps"] == 2 and np.isfinite(metrics["final_loss"])
    assert 0 <= metrics["test_top1"] <= 1
    assert (tmp_path / "out" / "model.safetensors").is_file()
