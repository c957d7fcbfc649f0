"""The select stage (stages/select.py): which images to label next, on digits (labels simulated by a subset) and on a
partly labeled folder; its list goes back in as a labels file."""

import csv
import json
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import PIL.Image
import pytest
import torch

import stages.select as select
from stages.data.label_subsets import load_subset
from stages.data.labels import UNLABELED
from stages.data.sources import DataConfig, load_splits, load_train
from stages.data.spreadsheet_cells import escape_cell, unescape_cell
from stages.models.architecture import EncoderConfig, build_pretrain_model, classifier_for
from stages.models.weights import save_classifier, save_pretrained
from stages.select import SelectConfig
from stages.selection.label_lists import CSV_COLUMNS, LOCAL_FILES_URL

pytestmark = pytest.mark.usefixtures("private_datasets_cache")

TINY = EncoderConfig(depth=18, width=0.0625, small_images=True)
HEADER = ["image", "label", "path", "rank", "score", "reason"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny_pretrain(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pretrain")
    torch.manual_seed(0)
    save_pretrained(build_pretrain_model(TINY), folder / "model.safetensors", TINY)
    return folder


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(1)
    model = classifier_for(TINY, 0, 10)
    torch.nn.init.normal_(model.fc.weight, std=0.5)
    save_classifier(model, folder / "model.safetensors", TINY, 0, [str(d) for d in range(10)])
    return folder


def read_list(out: Path) -> list[dict[str, str]]:
    with (out / "to_label.csv").open(newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == HEADER
        return list(reader)


def picked(out: Path) -> list[str]:
    return [row["image"] for row in read_list(out)]


def write_images(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        names.append(f"img{i:03d}.png")
    return names


# --- digits: every image labeled, scarcity simulated by a subset ---------------------------------------------------


def test_a_cold_start_lists_budget_distinct_images(tmp_path, digits, tiny_pretrain):
    train, _ = digits
    metrics = select.run(SelectConfig(image_size=8, budget=12), {"pretrain": tiny_pretrain}, tmp_path)

    assert tuple(HEADER) == CSV_COLUMNS
    rows = read_list(tmp_path)
    images = [row["image"] for row in rows]
    assert len(images) == len(set(images)) == 12 and set(images) <= set(train.ids)
    assert [int(row["rank"]) for row in rows] == list(range(1, 13))
    assert all(row["label"] == "" and row["path"] == "" and row["reason"] for row in rows)
    assert all(np.isfinite(float(row["score"])) for row in rows)
    assert not (tmp_path / "label_studio_tasks.json").exists()  # digits are bytes: nothing Label Studio can show
    assert metrics["strategy"] == "typical" and metrics["num_labeled"] == 0 and metrics["teacher"] is None
    assert metrics["num_selected"] == 12 and metrics["num_images"] == len(train)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics


def test_the_subset_images_are_never_picked(tmp_path, subsets, tiny_pretrain, digits_teacher):
    subset_ids = set(json.loads(subsets["10pct"].read_text())["ids"])
    inputs = {"pretrain": tiny_pretrain, "subset": subsets["10pct"]}
    metrics = select.run(SelectConfig(image_size=8, budget=40), inputs, tmp_path / "typical")
    assert metrics["num_labeled"] == len(subset_ids) == 144 and metrics["strategy"] == "typical"
    images = picked(tmp_path / "typical")
    assert len(set(images)) == 40 and not set(images) & subset_ids

    teacher = select.run(SelectConfig(image_size=8, budget=40), {**inputs, "teacher": digits_teacher}, tmp_path / "t")
    assert teacher["strategy"] == "uncertainty" and teacher["score"] == "margin uncertainty"
    assert teacher["teacher"] == str(digits_teacher)
    images = picked(tmp_path / "t")
    assert len(set(images)) == 40 and not set(images) & subset_ids
    assert all(0 <= float(row["score"]) <= 1 for row in read_list(tmp_path / "t"))


def test_a_budget_above_the_unlabeled_images_names_the_count(tmp_path, digits, subsets, tiny_pretrain):
    train, _ = digits
    unlabeled = len(train) - 144
    inputs = {"pretrain": tiny_pretrain, "subset": subsets["10pct"]}
    with pytest.raises(ValueError, match=rf"asks for {unlabeled + 1} images but only {unlabeled} are unlabeled"):
        select.run(SelectConfig(image_size=8, budget=unlabeled + 1), inputs, tmp_path)
    assert not (tmp_path / "to_label.csv").exists()


def test_an_existing_list_is_kept(tmp_path, tiny_pretrain):
    listed = tmp_path / "to_label.csv"
    listed.write_text("image,label\ntrain-3,7\n")  # a person's work
    with pytest.raises(FileExistsError, match=r"to_label\.csv exists and is kept"):
        select.run(SelectConfig(image_size=8, budget=5), {"pretrain": tiny_pretrain}, tmp_path)
    assert listed.read_text() == "image,label\ntrain-3,7\n"
    assert not (tmp_path / "metrics.json").exists()


def test_bad_inputs(tmp_path, tiny_pretrain):
    with pytest.raises(ValueError, match="needs the 'pretrain' input"):
        select.run(SelectConfig(image_size=8), {}, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match=r"no weights at .*run the pretrain stage first"):
        select.run(SelectConfig(image_size=8), {"pretrain": tmp_path / "nothing"}, tmp_path / "out")
    with pytest.raises(ValueError, match="select needs --image-size"):
        select.run(SelectConfig(), {"pretrain": tiny_pretrain}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- a partly labeled folder ---------------------------------------------------------------------------------------


@pytest.fixture
def partly_labeled(tmp_path) -> tuple[DataConfig, list[str]]:
    """A flat folder of 30 images; a labels file labels the first 15 (some of them become the held-out test)."""
    names = write_images(tmp_path / "images", 30)
    labels = tmp_path / "labels.csv"
    rows = [f"{name},{['cat', 'dog', 'emu'][i % 3]}\n" for i, name in enumerate(names[:15])]
    labels.write_text("image,label\n" + "".join(rows))
    return DataConfig(source=f"imagefolder:{tmp_path / 'images'}", labels=str(labels)), names


def test_labeled_images_are_never_picked_test_images_included(tmp_path, partly_labeled, tiny_pretrain):
    data, names = partly_labeled
    _, test = load_splits(data)
    assert len(test) > 0 and set(test.ids) <= set(names[:15])  # held-out images: unlabeled in train, yet labeled

    metrics = select.run(SelectConfig(data=data, image_size=8, budget=15), {"pretrain": tiny_pretrain}, tmp_path / "a")
    assert sorted(picked(tmp_path / "a")) == names[15:]  # all the unlabeled images, and only those
    assert metrics["num_labeled"] == 15 and metrics["num_images"] == 30

    with pytest.raises(ValueError, match=r"only 15 are unlabeled"):
        select.run(SelectConfig(data=data, image_size=8, budget=16), {"pretrain": tiny_pretrain}, tmp_path / "b")


def test_label_studio_tasks_name_the_image_files(tmp_path, partly_labeled, tiny_pretrain):
    data, _ = partly_labeled
    select.run(SelectConfig(data=data, image_size=8, budget=6), {"pretrain": tiny_pretrain}, tmp_path / "out")

    rows = read_list(tmp_path / "out")
    assert all(Path(row["path"]).is_file() and Path(row["path"]).name == row["image"] for row in rows)
    tasks = json.loads((tmp_path / "out" / "label_studio_tasks.json").read_text())
    assert [task["data"]["id"] for task in tasks] == [row["image"] for row in rows]
    for task, row in zip(tasks, rows, strict=True):
        url = task["data"]["image"]
        assert url.startswith(LOCAL_FILES_URL)
        assert Path("/", unquote(url.removeprefix(LOCAL_FILES_URL))) == Path(row["path"])  # relative to "/"


def test_the_filled_in_list_goes_back_in_as_labels(tmp_path, tiny_pretrain):
    names = write_images(tmp_path / "images", 24)
    cold = SelectConfig(data=DataConfig(source=f"imagefolder:{tmp_path / 'images'}"), image_size=8, budget=10)
    select.run(cold, {"pretrain": tiny_pretrain}, tmp_path / "round1")

    rows = read_list(tmp_path / "round1")
    given = {row["image"]: ["cat", "dog"][i % 2] for i, row in enumerate(rows[:8])}  # a person labels 8 of the 10
    for row in rows:
        row["label"] = given.get(row["image"], "")
    filled = tmp_path / "round1" / "to_label.csv"
    with filled.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)

    data = DataConfig(source=f"imagefolder:{tmp_path / 'images'}", labels=str(filled))
    train, test = load_splits(data)
    assert train.class_names == ["cat", "dog"] and train.ids == names
    pairs = zip(train.ids, train.labels.tolist(), strict=True)
    labeled = {image: train.class_names[label] for image, label in pairs if label != UNLABELED}
    labeled |= {image: test.class_names[label] for image, label in zip(test.ids, test.labels.tolist(), strict=True)}
    assert labeled == given and len(test) > 0  # every filled-in label, in training or in the held-out test split
    assert (load_train(data).labels != UNLABELED).sum() == 8

    # the next round never asks for them again
    again = select.run(
        SelectConfig(data=data, image_size=8, budget=16), {"pretrain": tiny_pretrain}, tmp_path / "round2"
    )
    assert again["num_labeled"] == 8 and sorted(picked(tmp_path / "round2")) == sorted(set(names) - set(given))


# --- names a spreadsheet would run as formulas -----------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("x")-1.png', "+cmd.png", "@sum.png", "-2.png", "'=quoted.png", "@left.png"]


def test_hostile_names_go_out_escaped_and_come_back_as_the_same_images(tmp_path, tiny_pretrain):
    """select -> to_label.csv (no cell a spreadsheet would run) -> a person fills in labels, some of them starting
    with `=`, and appends the rows to a labels file saved as Excel does (with a byte-order mark) -> the data the
    rerun loads labels exactly those images, and the next round lists only the others."""
    folder = tmp_path / "images"
    plain = write_images(folder, 6)
    for i, name in enumerate(HOSTILE):
        PIL.Image.open(folder / plain[i]).copy().save(folder / name)  # any pixels will do
    names = sorted(plain + HOSTILE)
    cold = SelectConfig(data=DataConfig(source=f"imagefolder:{folder}"), image_size=8, budget=len(names))
    select.run(cold, {"pretrain": tiny_pretrain}, tmp_path / "round1")

    rows = read_list(tmp_path / "round1")
    assert sorted(unescape_cell(row["image"]) for row in rows) == names
    assert {row["image"] for row in rows} >= {'\'=HYPERLINK("x")-1.png', "'+cmd.png", "'-2.png", "''=quoted.png"}
    for row in rows:
        assert not [cell for cell in row.values() if cell.startswith(("=", "+", "-", "@", "\t", "\r"))], row

    given = {name: ["=cat", "dog"][i % 2] for i, name in enumerate([*HOSTILE[:5], *plain[:3]])}  # @left.png: not
    for row in rows:  # typed into the label column of the CSV; the escaped cells are kept as they are
        row["label"] = escape_cell(given.get(unescape_cell(row["image"]), ""))
    labels = tmp_path / "labels.csv"
    with labels.open("w", encoding="utf-8-sig", newline="") as file:  # Excel's "CSV UTF-8"
        writer = csv.writer(file)
        writer.writerow(["image", "label"])
        writer.writerows([row["image"], row["label"]] for row in rows if row["label"])  # the rows, appended

    data = DataConfig(source=f"imagefolder:{folder}", labels=str(labels))
    train, test = load_splits(data)
    assert train.class_names == ["=cat", "dog"] and train.ids == names
    pairs = zip(train.ids, train.labels.tolist(), strict=True)
    labeled = {image: train.class_names[label] for image, label in pairs if label != UNLABELED}
    labeled |= {image: test.class_names[label] for image, label in zip(test.ids, test.labels.tolist(), strict=True)}
    assert labeled == given and len(test) > 0
    assert sorted(train.ids[row] for row in load_subset(labels, train.ids).tolist()) == sorted(given)

    again = select.run(SelectConfig(data=data, image_size=8, budget=4), {"pretrain": tiny_pretrain}, tmp_path / "r2")
    assert again["num_labeled"] == 8
    assert sorted(unescape_cell(image) for image in picked(tmp_path / "r2")) == sorted(set(names) - set(given))
    assert "'@left.png" in picked(tmp_path / "r2")
