"""The predict stage (stages/predict.py): pre-labels for the run's unlabeled training images (digits, a partly labeled
folder) and for any folder of images (`--images`), its metrics, its command line and its errors."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image
import pytest
import torch

import stages.predict as predict
from stages.data.augment import CenterCrop
from stages.data.errors import DataError
from stages.data.image_stream import ImageStream
from stages.data.label_subsets import save_subset, select_subsets
from stages.data.sources import DataConfig, load_splits
from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.weights import save_classifier
from stages.predict import PredictConfig
from tests.stages.data.test_crop_loader import smooth

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

TINY = EncoderConfig(depth=18, width=0.0625, small_images=True)
DIGIT_CLASSES = [str(d) for d in range(10)]
ANIMALS = ["cat", "dog", "emu"]
TEST_COLUMNS = ["image", "label", "predicted", "confidence"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def save_tiny_classifier(folder: Path, class_names: list[str], seed: int = 0) -> Path:
    """A random-weight classifier of these classes (its zero-initialised last layer drawn too, so guesses differ)."""
    torch.manual_seed(seed)
    model = classifier_for(TINY, 0, len(class_names))
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    folder.mkdir(parents=True, exist_ok=True)
    save_classifier(model, folder / "model.safetensors", TINY, 0, class_names)
    return folder


@pytest.fixture(scope="module")
def digits_classifier(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("digits-classifier"), DIGIT_CLASSES)


@pytest.fixture(scope="module")
def animals_classifier(tmp_path_factory) -> Path:
    return save_tiny_classifier(tmp_path_factory.mktemp("animals-classifier"), ANIMALS)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def write_images(folder: Path, count: int, start: int = 0, size: int = 8) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        pixels = np.random.default_rng(i).integers(0, 256, (size, size, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        names.append(f"img{i:03d}.png")
    return names


def write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("image,label\n" + "".join(f"{image},{label}\n" for image, label in rows))
    return path


def check_prelabel_files(out: Path) -> list[dict[str, str]]:
    """prelabels.csv and prelabels.parquet: the same images in the same order; returns the CSV rows."""
    rows = read_csv(out / "prelabels.csv")
    table = pd.read_parquet(out / "prelabels.parquet")
    assert rows and list(table.columns) == list(rows[0])
    assert table["image"].tolist() == [row["image"] for row in rows]
    assert table["predicted"].tolist() == [row["predicted"] for row in rows]
    csv_confidence = np.array([row["confidence"] for row in rows], dtype=np.float32)  # the same float32 numbers
    np.testing.assert_array_equal(table["confidence"].to_numpy(), csv_confidence)
    return rows


# --- the run's data --------------------------------------------------------------------------------------------------


def test_digits_prelabels_every_training_image_outside_the_subset(tmp_path, digits, subsets, digits_classifier):
    train, test = digits
    subset_ids = set(json.loads(subsets["10pct"].read_text())["ids"])
    assert len(subset_ids) == 144

    metrics = predict.run(
        PredictConfig(image_size=8), {"classifier": digits_classifier, "subset": subsets["10pct"]}, tmp_path
    )

    rows = check_prelabel_files(tmp_path)
    images = [row["image"] for row in rows]
    assert len(images) == len(set(images)) == len(train) - 144
    assert set(images) == set(train.ids) - subset_ids and not set(images) & subset_ids
    assert all(row["predicted"] in DIGIT_CLASSES and 0 < float(row["confidence"]) <= 1 for row in rows)
    assert {row["path"] for row in rows} == {""}  # digits are bytes, not files

    test_rows = read_csv(tmp_path / "test_predictions.csv")
    assert list(test_rows[0]) == TEST_COLUMNS
    assert [row["image"] for row in test_rows] == test.ids and len(test_rows) == len(test) == 360
    assert [row["label"] for row in test_rows] == [DIGIT_CLASSES[label] for label in test.labels.tolist()]
    assert {row["predicted"] for row in test_rows} <= set(DIGIT_CLASSES)

    assert metrics["num_prelabeled"] == len(train) - 144 and metrics["num_test"] == len(test)
    assert metrics["num_skipped"] == 0 and metrics["images"] == "digits"
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_a_fully_labeled_dataset_without_a_subset(tmp_path, digits, digits_classifier):
    train, _ = digits
    try:
        metrics = predict.run(PredictConfig(image_size=8), {"classifier": digits_classifier}, tmp_path)
    except ValueError as error:  # refusing is fine too, with the true reason
        assert "could be read" not in str(error) and "could not be read" not in str(error), error
        assert "subset" in str(error), error
    else:
        assert metrics["num_prelabeled"] == len(train)


@pytest.fixture
def partly_labeled(tmp_path) -> tuple[DataConfig, list[str]]:
    """A flat folder of 30 images, the first 15 labeled in a labels file."""
    names = write_images(tmp_path / "images", 30)
    labels = write_labels(tmp_path / "labels.csv", [(name, ANIMALS[i % 3]) for i, name in enumerate(names[:15])])
    return DataConfig(source=f"imagefolder:{tmp_path / 'images'}", labels=str(labels)), names


def test_partly_labeled_data_prelabels_the_unlabeled_images_only(tmp_path, partly_labeled, animals_classifier):
    data, names = partly_labeled
    train, test = load_splits(data)
    assert train.held_out is not None and 0 < int(train.held_out.sum()) == len(test)

    metrics = predict.run(PredictConfig(data=data, image_size=8), {"classifier": animals_classifier}, tmp_path / "a")
    images = [row["image"] for row in check_prelabel_files(tmp_path / "a")]
    assert images == names[15:]  # neither the training labels nor the held-out test images
    assert metrics["num_prelabeled"] == 15 and metrics["num_test"] == len(test)
    test_rows = read_csv(tmp_path / "a" / "test_predictions.csv")
    assert [row["image"] for row in test_rows] == test.ids and set(test.ids) <= set(names[:15])

    # with the subset of every training label: the same images (the held-out ones are not in a subset)
    every_label = select_subsets(train.labels, ["all"], seed=0)["all"]
    save_subset(tmp_path / "all.json", every_label, train.labels, train.ids, "all", seed=0)
    inputs = {"classifier": animals_classifier, "subset": tmp_path / "all.json"}
    predict.run(PredictConfig(data=data, image_size=8), inputs, tmp_path / "b")
    assert [row["image"] for row in check_prelabel_files(tmp_path / "b")] == names[15:]


# --- --images: any folder ------------------------------------------------------------------------------------------


def test_images_mode_prelabels_every_image_of_a_folder(tmp_path, digits_classifier):
    folder = tmp_path / "new"
    names = write_images(folder, 7)
    (folder / "notes.txt").write_text("not an image")
    config = PredictConfig(images=f"imagefolder:{folder}", image_size=8, eval_batch_size=3, top_k=2)

    metrics = predict.run(config, {"classifier": digits_classifier}, tmp_path / "out")

    rows = check_prelabel_files(tmp_path / "out")
    assert [row["image"] for row in rows] == names
    assert [row["path"] for row in rows] == [str(folder / name) for name in names]
    assert list(rows[0]) == [
        *("image", "path", "predicted", "confidence"),
        *("top1", "top1_prob", "top2", "top2_prob"),
    ]
    assert all(row["top1"] == row["predicted"] and float(row["top1_prob"]) >= float(row["top2_prob"]) for row in rows)
    assert metrics["num_prelabeled"] == 7 and metrics["num_skipped"] == 0
    assert metrics["images"] == f"imagefolder:{folder}" and "num_test" not in metrics
    assert not (tmp_path / "out" / "test_predictions.csv").exists()


def test_images_mode_skips_and_counts_an_unreadable_image(tmp_path, digits_classifier):
    folder = tmp_path / "new"
    names = write_images(folder, 5)
    (folder / "img002b.png").write_bytes(b"\x89PNG truncated")
    config = PredictConfig(images=f"imagefolder:{folder}", image_size=8, eval_batch_size=2)

    metrics = predict.run(config, {"classifier": digits_classifier}, tmp_path / "out")

    assert [row["image"] for row in check_prelabel_files(tmp_path / "out")] == names
    assert metrics["num_prelabeled"] == 5 and metrics["num_skipped"] == 1


def test_images_mode_skips_and_counts_an_image_over_max_image_pixels(tmp_path, digits_classifier):
    folder = tmp_path / "new"
    names = write_images(folder, 3)
    write_images(folder, 1, start=3, size=200)  # img003.png: 40,000 pixels
    config = PredictConfig(data=DataConfig(max_image_pixels=10_000), images=f"imagefolder:{folder}", image_size=8)

    metrics = predict.run(config, {"classifier": digits_classifier}, tmp_path / "out")

    assert [row["image"] for row in check_prelabel_files(tmp_path / "out")] == names
    assert metrics["num_prelabeled"] == 3 and metrics["num_skipped"] == 1


def save_photo_and_its_thumbnail(folder: Path) -> tuple[Path, Path]:
    """A smooth 2400 x 1800 JPEG in `folder/large`, and the same picture resized to 100 x 75 in `folder/small`."""
    pixels = PIL.Image.fromarray(smooth(2400, 1800))
    (folder / "large").mkdir(parents=True)
    (folder / "small").mkdir()
    pixels.save(folder / "large" / "photo.jpg", quality=95)
    pixels.resize((100, 75), PIL.Image.Resampling.LANCZOS).save(folder / "small" / "photo.png")
    return folder / "large" / "photo.jpg", folder / "small" / "photo.png"


def test_a_large_photo_is_decoded_reduced_to_what_its_evaluation_crop_needs(tmp_path):
    photo, _ = save_photo_and_its_thumbnail(tmp_path)
    side = predict.decoded_side(PredictConfig(image_size=40))  # the crop keeps 0.875 of the shorter side
    assert side == 46
    [(_, _, images)] = list(ImageStream(f"imagefolder:{photo.parent}", 4, None, min_side=side))
    assert side <= min(images.shape[-2:]) < 2 * side  # 1/8 by the JPEG's DCT scale, then 1/4 by averaging: 75 x 56
    fed = CenterCrop.for_evaluation(40)(images)[0]
    full = PIL.Image.open(photo).convert("RGB")
    crop = 0.875 * 1800
    box = ((2400 - crop) / 2, (1800 - crop) / 2, (2400 + crop) / 2, (1800 + crop) / 2)
    reference = np.asarray(full.resize((40, 40), PIL.Image.Resampling.BICUBIC, box=box)).astype(np.float32) / 255
    error = np.abs(fed.permute(1, 2, 0).numpy() - reference)
    assert error.mean() < 0.006 and error.max() < 0.03  # 0.0036 and 0.022 measured (from the full decode: 0.0018)


def test_a_large_photo_gets_the_prediction_of_the_same_photo_pre_resized(tmp_path, animals_classifier):
    large, small = save_photo_and_its_thumbnail(tmp_path)
    rows = {}
    for folder in (large.parent, small.parent):
        config = PredictConfig(images=f"imagefolder:{folder}", image_size=40, top_k=3)
        predict.run(config, {"classifier": animals_classifier}, tmp_path / f"out-{folder.name}")
        [rows[folder.name]] = read_csv(tmp_path / f"out-{folder.name}" / "prelabels.csv")
    assert rows["large"]["predicted"] == rows["small"]["predicted"]
    for rank in (1, 2, 3):
        assert rows["large"][f"top{rank}"] == rows["small"][f"top{rank}"]
        assert float(rows["large"][f"top{rank}_prob"]) == pytest.approx(
            float(rows["small"][f"top{rank}_prob"]), abs=0.02
        )


def test_images_mode_on_a_folder_sorted_into_the_classifier_classes(tmp_path, animals_classifier):
    for start, c in enumerate(ANIMALS):
        write_images(tmp_path / "new" / c, 2, start=10 * start)
    config = PredictConfig(images=f"imagefolder:{tmp_path / 'new'}", image_size=8)
    assert predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")["num_prelabeled"] == 6


def write_mixed_sizes(folder: Path) -> None:
    folder.mkdir(parents=True)
    PIL.Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "small.png")
    PIL.Image.fromarray(np.zeros((10, 12, 3), np.uint8)).save(folder / "large.png")


def test_images_mode_resizes_a_folder_of_mixed_sizes_with_data_image_size(tmp_path, animals_classifier):
    write_mixed_sizes(tmp_path / "new")
    config = PredictConfig(data=DataConfig(image_size=8), images=f"imagefolder:{tmp_path / 'new'}", image_size=8)
    assert predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")["num_prelabeled"] == 2


def test_images_mode_on_mixed_sizes_with_only_the_image_size(tmp_path, animals_classifier):
    write_mixed_sizes(tmp_path / "new")
    config = PredictConfig(images=f"imagefolder:{tmp_path / 'new'}", image_size=8)
    try:
        metrics = predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")
    except DataError as error:  # refusing is fine too, with the flag that fixes it
        assert re.search(r"data[._-]image[._-]size", str(error)), error
    else:
        assert metrics["num_prelabeled"] == 2


def test_images_mode_refuses_a_folder_of_classes_the_model_does_not_know(tmp_path, animals_classifier):
    for start, c in enumerate(("cat", "dog", "fox")):
        write_images(tmp_path / "new" / c, 2, start=10 * start)
    config = PredictConfig(images=f"imagefolder:{tmp_path / 'new'}", image_size=8)
    with pytest.raises(
        DataError, match=r"classes that the classifier .* does not know: \['fox'\].*\['cat', 'dog', 'emu'\]"
    ):
        predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")
    assert not (tmp_path / "out" / "prelabels.csv").exists()


def test_images_mode_takes_sub_folders_that_name_no_class_as_plain_folders(tmp_path, animals_classifier):
    for start, day in enumerate(("2024-01", "2024-02")):
        write_images(tmp_path / "new" / day, 2, start=10 * start)
    config = PredictConfig(images=f"imagefolder:{tmp_path / 'new'}", image_size=8)
    assert predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")["num_prelabeled"] == 4


@pytest.mark.parametrize("content", [None, "notes.txt"], ids=["empty", "no-image-files"])
def test_images_mode_on_a_folder_without_images(tmp_path, animals_classifier, content):
    folder = tmp_path / "new"
    folder.mkdir()
    if content:
        (folder / content).write_text("not an image")
    config = PredictConfig(images=f"imagefolder:{folder}", image_size=8)
    with pytest.raises(DataError) as error:
        predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")
    message = str(error.value)
    assert str(folder) in message and "\n" not in message  # one line that names the folder
    assert not (tmp_path / "out" / "prelabels.csv").exists()


def test_images_mode_where_no_image_can_be_read(tmp_path, animals_classifier):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    config = PredictConfig(images=f"imagefolder:{folder}", image_size=8)
    with pytest.raises(DataError, match=r"imagefolder:.*: no image to pre-label \(every one of them is unreadable\)"):
        predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")


def test_a_failed_prelabeling_leaves_no_prelabel_files(tmp_path, animals_classifier):
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"not a png")
    config = PredictConfig(images=f"imagefolder:{folder}", image_size=8)
    with pytest.raises(DataError):
        predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")
    assert not (tmp_path / "out" / "prelabels.csv").exists()
    assert not (tmp_path / "out" / "prelabels.parquet").exists()


def test_the_image_size_is_required(tmp_path, animals_classifier):
    write_images(tmp_path / "new", 2)
    config = PredictConfig(images=f"imagefolder:{tmp_path / 'new'}")
    with pytest.raises(ValueError, match=r"predict needs --image-size"):
        predict.run(config, {"classifier": animals_classifier}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_classifier_input_is_required(tmp_path):
    with pytest.raises(ValueError, match="needs the 'classifier' input"):
        predict.run(PredictConfig(image_size=8), {}, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"no weights at .*run the finetune, baseline or distill stage first"):
        predict.run(PredictConfig(image_size=8), {"classifier": tmp_path / "nothing"}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the command line ----------------------------------------------------------------------------------------------


def test_main_runs_and_prints_the_metrics(tmp_path, subsets, digits_classifier, capsys):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--classifier", str(digits_classifier), "--image-size", "8"]
    predict.main([*argv, "--subset", str(subsets["10pct"]), "--top-k", "3"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_prelabeled"] == 1437 - 144 and printed["num_test"] == 360
    assert printed == json.loads((out / "metrics.json").read_text())
    assert list(read_csv(out / "prelabels.csv")[0])[-2:] == ["top3", "top3_prob"]


def test_main_with_a_missing_classifier_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "no-such-run"
    with pytest.raises(SystemExit) as stop:
        predict.main(["--out", str(tmp_path / "out"), "--classifier", str(missing), "--image-size", "8"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("stages.predict: error: no weights at ") and str(missing) in err[0]
