"""Decoding hostile images (stages/data/decoding.py): the pixel limit read from the header before decoding, 16-bit
images scaled in integers, what counts as a bad image and what propagates as the machine's fault, in every decode
path (in memory, the loader workers' crops, the batches of `ImageStream`); and the loaders' worker timeout."""

import errno
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

import stages.data.crop_loader as crop_loader
import stages.data.decoding as decoding
import stages.data.eval_crops as eval_crops
from stages.data.crop_loader import LOADER_TIMEOUT_S, CropBatches, CropStream, worker_loader
from stages.data.decoding import (
    DEFAULT_MAX_IMAGE_PIXELS,
    TooManyPixels,
    UnreadableImage,
    decode_image,
    is_bad_image,
    open_image,
    sixteen_to_eight_bits,
    to_rgb,
)
from stages.data.eval_crops import EvalCropBatches, streamed_eval_crops
from stages.data.image_stream import ImageStream
from stages.data.stored_images import StoredImages, stored

pytestmark = pytest.mark.usefixtures("private_datasets_cache")


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_of_size(width: int, height: int) -> bytes:
    """A 1 x 1 PNG whose header claims `width x height`: opening it reads that size; decoding it would fail."""
    data = bytearray(png_bytes(1, 1))
    ihdr = 8 + 8  # the signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


@pytest.fixture
def pil_limit(monkeypatch):
    """PIL's global guard as it was, whatever a test raises it to."""
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", PIL.Image.MAX_IMAGE_PIXELS)


# --- the pixel limit -------------------------------------------------------------------------------------------------


def test_the_default_limit_is_pils_default():
    assert DEFAULT_MAX_IMAGE_PIXELS == 89_478_485 == PIL.Image.MAX_IMAGE_PIXELS


def test_an_image_in_pils_warning_band_is_refused_from_its_header(pil_limit):
    value = {"bytes": png_header_of_size(10_000, 9_000), "path": None}  # 90 M pixels: PIL alone only warns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
        with pytest.raises(TooManyPixels, match=r"10000 x 9000 = 90,000,000 pixels.*data\.max_image_pixels"):
            open_image(value, DEFAULT_MAX_IMAGE_PIXELS)
        assert open_image(value, 90_000_000).size == (10_000, 9_000)  # the header only: nothing decoded


def test_a_larger_configured_limit_opens_what_pil_alone_refuses_and_each_call_keeps_its_own(pil_limit):
    value = {"bytes": png_header_of_size(20_000, 10_000), "path": None}  # more than twice PIL's default
    with pytest.raises(PIL.Image.DecompressionBombError):
        PIL.Image.open(io.BytesIO(value["bytes"]))
    with pytest.raises(TooManyPixels, match=r"200000000 pixels.*more than data\.max_image_pixels = 89,478,485"):
        open_image(value, DEFAULT_MAX_IMAGE_PIXELS)  # refused by PIL's own guard, named as over the limit
    assert open_image(value, 300_000_000).size == (20_000, 10_000)
    with pytest.raises(TooManyPixels):  # PIL's guard was raised, but this call's limit still decides
        open_image(value, DEFAULT_MAX_IMAGE_PIXELS)
    open_image({"bytes": png_bytes(8, 8), "path": None}, 1_000)  # a smaller limit never lowers PIL's guard
    assert PIL.Image.MAX_IMAGE_PIXELS == 300_000_000


def test_decode_image_names_an_image_over_the_limit_or_skips_it(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(200, 200))
    with pytest.raises(UnreadableImage, match=r"row 7 \(.*big\.png\): TooManyPixels: .*40,000 pixels.*10,000"):
        decode_image(str(path), "row 7", str(path), None, skip_bad=False, max_pixels=10_000)
    assert decode_image(str(path), "row 7", str(path), None, skip_bad=True, max_pixels=10_000) is None
    assert decode_image(str(path), "row 7", str(path), None, skip_bad=False, max_pixels=40_000).shape == (200, 200, 3)


def file_rows(paths: list[Path], skip_bad: bool, max_pixels: int) -> StoredImages:
    import datasets

    dataset = datasets.Dataset.from_dict({"image": [str(path) for path in paths]})
    return stored(dataset, "image", "train", "files", skip_bad, workers=0, max_pixels=max_pixels)


@pytest.fixture
def one_big_image(tmp_path) -> list[Path]:
    """Three 40 x 40 images and, at row 1, a 200 x 200 one."""
    paths = []
    for i, side in enumerate([40, 200, 40, 40]):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png_bytes(side, side))
    return paths


def test_the_loader_workers_name_an_image_over_the_limit(one_big_image):
    rows = file_rows(one_big_image, skip_bad=False, max_pixels=10_000)
    with pytest.raises(crop_loader.DataError, match=r"row 1 of split 'train' \(.*1\.png\).*TooManyPixels"):
        CropBatches(rows, 8, global_batch=4, seed=0)[0]
    with pytest.raises(crop_loader.DataError, match=r"row 1 of split 'train' \(.*1\.png\).*TooManyPixels"):
        EvalCropBatches(rows, 8, batch_size=4)[0]


def test_the_loader_workers_skip_an_image_over_the_limit_with_skip_bad_images(one_big_image):
    rows = file_rows(one_big_image, skip_bad=True, max_pixels=10_000)
    _, _, used = CropBatches(rows, 8, global_batch=4, seed=0)[0]
    assert 1 not in used.tolist()
    _, _, readable = EvalCropBatches(rows, 8, batch_size=4)[0]
    assert readable.tolist() == [True, False, True, True]


def test_image_stream_skips_and_counts_an_image_over_the_limit(one_big_image):
    stream = ImageStream(f"imagefolder:{one_big_image[0].parent}", batch_size=4, image_size=None, max_pixels=10_000)
    ids = [i for batch_ids, _, _ in stream for i in batch_ids]
    assert ids == ["0.png", "2.png", "3.png"] and stream.num_skipped() == 1


# --- 16-bit images ---------------------------------------------------------------------------------------------------


def old_float_formula(values: np.ndarray) -> np.ndarray:
    return (values.astype(np.float64) / 257).round().clip(0, 255).astype(np.uint8)


def test_sixteen_bit_values_scale_exactly_as_the_float_formula_did():
    every = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(sixteen_to_eight_bits(every), old_float_formula(every))
    named = np.array([0, 128, 129, 257, 385, 386, 32896, 65535], dtype=np.uint16)
    assert sixteen_to_eight_bits(named).tolist() == [0, 0, 1, 1, 1, 2, 128, 255]
    wide = np.array([-70_000, -1, 0, 65_535, 65_536, 2**31 - 1], dtype=np.int32)  # mode "I" holds any int32
    assert sixteen_to_eight_bits(wide).tolist() == old_float_formula(wide).tolist() == [0, 0, 0, 255, 255, 255]


@pytest.mark.parametrize(("dtype", "mode"), [("<u2", "I;16"), (">u2", "I;16B"), ("<i4", "I")])
def test_a_sixteen_bit_image_of_many_bands_decodes_to_the_old_values(dtype, mode):
    height = 2 * decoding.SIXTEEN_BIT_ROWS + 3  # bands of rows, and a short last one
    values = np.random.default_rng(0).integers(0, 65536, (height, 5))
    image = PIL.Image.fromarray(values.astype(dtype))
    assert image.mode == mode and np.array_equal(np.asarray(image).astype(np.int64), values)
    rgb = np.asarray(to_rgb(image))
    assert rgb.dtype == np.uint8 and rgb.shape == (height, 5, 3)
    assert np.array_equal(rgb[..., 0], old_float_formula(values)) and np.array_equal(rgb[..., 2], rgb[..., 0])


# --- bad images and the machine's faults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "bad"),
    [
        (PIL.UnidentifiedImageError("cannot identify image file"), True),
        (OSError("image file is truncated (3 bytes not processed)"), True),
        (SyntaxError("broken PNG file"), True),
        (ValueError("bad palette"), True),
        (PIL.Image.DecompressionBombError("too many pixels"), True),
        (TooManyPixels("over data.max_image_pixels"), True),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "gone.png"), True),
        (PermissionError(errno.EACCES, "Permission denied", "locked.png"), False),
        (OSError(errno.EIO, "Input/output error", "nfs.png"), False),
        (OSError(errno.ESTALE, "Stale file handle", "nfs.png"), False),
        (MemoryError(), False),
        (RuntimeError("a bug of ours"), False),
    ],
)
def test_what_counts_as_a_bad_image(error, bad):
    assert is_bad_image(error) is bad


MACHINE_FAULTS = [MemoryError(), PermissionError(errno.EACCES, "Permission denied"), OSError(errno.EIO, "I/O error")]


@pytest.mark.parametrize("fault", MACHINE_FAULTS, ids=lambda fault: type(fault).__name__)
def test_decode_image_lets_a_machine_fault_through_with_its_type(tmp_path, monkeypatch, fault):
    path = tmp_path / "fine.png"
    path.write_bytes(png_bytes(8, 8))

    def fails(*args, **kwargs):
        raise fault

    monkeypatch.setattr(PIL.Image, "open", fails)
    with pytest.raises(type(fault)) as raised:
        decode_image(str(path), "row 0", str(path), None, skip_bad=True, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    assert raised.value is fault


def test_decode_image_lets_out_of_memory_while_decoding_through(tmp_path, monkeypatch):
    path = tmp_path / "fine.png"
    path.write_bytes(png_bytes(8, 8))
    monkeypatch.setattr(decoding, "to_rgb", lambda image: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        decode_image(str(path), "row 0", str(path), None, skip_bad=True, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)


@pytest.mark.parametrize("fault", MACHINE_FAULTS, ids=lambda fault: type(fault).__name__)
def test_the_loader_workers_let_a_machine_fault_through_with_its_type(one_big_image, monkeypatch, fault):
    rows = file_rows(one_big_image, skip_bad=True, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)

    def fails(*args, **kwargs):
        raise fault

    monkeypatch.setattr(PIL.Image, "open", fails)
    with pytest.raises(type(fault)):
        CropBatches(rows, 8, global_batch=4, seed=0)[0]
    with pytest.raises(type(fault)):
        EvalCropBatches(rows, 8, batch_size=4)[0]


def test_a_worker_that_runs_out_of_memory_while_cutting_crops_is_not_a_bad_image(one_big_image, monkeypatch):
    rows = file_rows(one_big_image, skip_bad=True, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    monkeypatch.setattr(crop_loader, "decoded_rgb", lambda *args, **kwargs: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(MemoryError):
        CropBatches(rows, 8, global_batch=4, seed=0)[0]
    with pytest.raises(MemoryError):
        EvalCropBatches(rows, 8, batch_size=4)[0]


# --- the loaders' worker timeout -------------------------------------------------------------------------------------


def test_a_loader_with_workers_times_out_and_one_without_does_not():
    assert LOADER_TIMEOUT_S >= 600
    assert worker_loader(range(3), workers=2, pin=False).timeout == LOADER_TIMEOUT_S
    assert worker_loader(range(3), workers=0, pin=False).timeout == 0  # torch refuses a timeout without workers


def test_both_streaming_loaders_are_worker_loaders(one_big_image, monkeypatch):
    made = []

    def spy(items, workers, pin, sampler=None, prefetch=crop_loader.PREFETCH):
        made.append(worker_loader(items, workers, pin, sampler, prefetch))  # built, never iterated: no processes
        return [(0, torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.arange(2))]

    monkeypatch.setattr(crop_loader, "worker_loader", spy)
    monkeypatch.setattr(eval_crops, "worker_loader", spy)
    rows = file_rows(one_big_image, skip_bad=False, max_pixels=DEFAULT_MAX_IMAGE_PIXELS)
    CropStream(CropBatches(rows, 8, global_batch=2, seed=0), 1, workers=2, device=torch.device("cpu"))(0)
    next(streamed_eval_crops(rows, 8, 2, workers=2, device=torch.device("cpu")), None)
    assert [(loader.num_workers, loader.timeout) for loader in made] == [(2, LOADER_TIMEOUT_S)] * 2


@pytest.mark.slow
def test_the_limit_reaches_loader_worker_processes(one_big_image):
    rows = file_rows(one_big_image, skip_bad=True, max_pixels=10_000)  # pickled into the worker with the rows
    [(batch, _, readable)] = list(streamed_eval_crops(rows, 8, 4, workers=1, device=torch.device("cpu")))
    assert batch.tolist() == [0, 1, 2, 3] and readable.tolist() == [True, False, True, True]
