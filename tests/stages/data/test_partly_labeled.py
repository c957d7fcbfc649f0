"""Partly labeled training data (stages/data/sources.py, labels_file.py): null labels, a flat folder plus a labels file,
an extra unlabeled pool, the test split held out of the labels, and every bad input of that path."""

import dataclasses
import logging
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from stages.data.label_subsets import select_subsets
from stages.data.labels import UNLABELED
from stages.data.sources import DataConfig, DataError, id_hash, load_splits, load_train, open_train_rows

pytestmark = pytest.mark.usefixtures("private_datasets_cache")


def write_images(folder: Path, count: int, start: int = 0) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(start, start + count):
        pixels = np.random.default_rng(i).integers(0, 256, (6, 6, 3), dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        names.append(f"img{i:03d}.png")
    return names


def write_labels(path: Path, rows: list[tuple[str, str]], header: str = "image,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{image},{label}\n" for image, label in rows))
    return path


@pytest.fixture
def flat(tmp_path) -> tuple[Path, list[str]]:
    return tmp_path / "images", write_images(tmp_path / "images", 30)


def labels_for(names: list[str], count: int) -> list[tuple[str, str]]:
    return [(name, ["cat", "dog", "emu"][i % 3]) for i, name in enumerate(names[:count])]


def test_flat_folder_with_a_labels_file(tmp_path, flat, caplog):
    folder, names = flat
    labels = write_labels(tmp_path / "labels.csv", labels_for(names, 15))
    with caplog.at_level(logging.INFO, logger="stages.data.sources"):
        train, test = load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))
    assert train.class_names == ["cat", "dog", "emu"]
    assert len(train) == 30 and train.ids == names  # every image stays in training, test images too
    assert set(test.labels.tolist()) == {0, 1, 2} and 3 <= len(test) <= 6  # about 20% per class, at least one
    assert train.held_out is not None and int(train.held_out.sum()) == len(test)
    assert set(test.ids) == {train.ids[row] for row in train.held_out.nonzero().flatten().tolist()}
    assert (train.labels[train.held_out] == UNLABELED).all()  # their labels belong to the test split
    assert int(train.labeled.sum()) == 15 - len(test) and (train.labels[15:] == UNLABELED).all()
    assert torch.equal(train.images[train.held_out], test.images)
    assert f"holding out {len(test)} of its 15 labeled training images" in caplog.text


def test_adding_labels_keeps_the_earlier_test_images(tmp_path, flat):
    folder, names = flat
    config = DataConfig(
        source=f"imagefolder:{folder}", labels=str(write_labels(tmp_path / "a.csv", labels_for(names, 15)))
    )
    first = load_splits(config)[1].ids
    more = dataclasses.replace(config, labels=str(write_labels(tmp_path / "b.csv", labels_for(names, 30))))
    second = load_splits(more)[1].ids
    chosen_by_hash = {image for image in first if id_hash(image, 0) < config.test_fraction}  # not a class's fill-in
    assert chosen_by_hash and chosen_by_hash <= set(second) and len(second) > len(first)


def test_training_images_do_not_depend_on_the_labels(tmp_path, flat):
    """Pretraining reads `load_train`: the same images in the same order, whatever is labeled."""
    folder, names = flat
    unlabeled = load_train(DataConfig(source=f"imagefolder:{folder}"))
    labeled = load_train(
        DataConfig(source=f"imagefolder:{folder}", labels=str(write_labels(tmp_path / "l.csv", labels_for(names, 9))))
    )
    assert (unlabeled.labels == UNLABELED).all() and unlabeled.class_names == []  # a cold start: no labels at all
    assert torch.equal(unlabeled.images, labeled.images) and unlabeled.ids == labeled.ids
    assert int(labeled.labeled.sum()) == 9  # the labels the team has, all of them (select must not pick them)


def test_null_labels_in_the_source_are_unlabeled_images(tmp_path):
    labels = ["a", None, "b", "a", None, "b", "a", "b"]
    images = [PIL.Image.fromarray(np.full((4, 4, 3), i, np.uint8)) for i in range(len(labels))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).save_to_disk(tmp_path / "d")
    train, test = load_splits(DataConfig(source=f"disk:{tmp_path / 'd'}"))
    assert len(train) == 8 and len(test) == 2  # one of each class's three labels
    assert train.labels[[1, 4]].tolist() == [UNLABELED, UNLABELED]


def test_an_unlabeled_pool_joins_the_training_images(tmp_path):
    root = tmp_path / "labeled"
    for c in ("cat", "dog"):
        write_images(root / c, 4, start=10 if c == "dog" else 0)
    pool = tmp_path / "pool"
    write_images(pool, 5, start=50)
    (pool / "README.txt").write_text("not an image")
    config = DataConfig(source=f"imagefolder:{root}", unlabeled=f"imagefolder:{pool}")
    train, test = load_splits(config)
    assert len(train) == 13 and 2 <= len(test) <= 4 and int(train.labeled.sum()) == 8 - len(test)
    assert train.ids[-5:] == [f"img{i:03d}.png" for i in range(50, 55)]
    assert (train.labels[-5:] == UNLABELED).all()
    assert len(open_train_rows(config)) == 13  # the streamed path reads the same images


def test_the_fully_labeled_case_is_unchanged():
    train, test = load_splits(DataConfig())
    assert (len(train), len(test), train.held_out) == (1437, 360, None)


def test_budgets_draw_from_labeled_images_only(tmp_path, flat):
    folder, names = flat
    train, _ = load_splits(
        DataConfig(source=f"imagefolder:{folder}", labels=str(write_labels(tmp_path / "l.csv", labels_for(names, 21))))
    )
    subsets = select_subsets(train.labels, [3, "all"], seed=0)
    assert set(subsets["all"].tolist()) == set(train.labeled.nonzero().flatten().tolist())
    assert len(subsets["all"]) == int(train.labeled.sum()) and set(subsets["3labels"].tolist()) <= set(
        subsets["all"].tolist()
    )


# --- bad input -----------------------------------------------------------------------------------------------------


def test_labels_file_naming_missing_images(tmp_path, flat):
    folder, names = flat
    labels = write_labels(tmp_path / "l.csv", [*labels_for(names, 6), ("ghost.png", "cat")])
    with pytest.raises(
        DataError, match=r"1 of the 7 images in .*l\.csv are not training images, e\.g\. \['ghost\.png'\]"
    ):
        load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))


def test_labels_file_with_conflicting_duplicates(tmp_path, flat):
    folder, names = flat
    labels = write_labels(tmp_path / "l.csv", [*labels_for(names, 6), (names[0], "dog")])
    with pytest.raises(DataError, match=r"conflicting labels \('img000\.png': \['cat', 'dog'\]\); keep one row"):
        load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))


def test_repeated_identical_rows_are_fine(tmp_path, flat):
    folder, names = flat
    labels = write_labels(tmp_path / "l.csv", [*labels_for(names, 6), (names[0], "cat")])
    train, _ = load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))
    assert int(train.labeled.sum()) + int(train.held_out.sum()) == 6


def test_labels_file_class_the_test_split_never_has(tmp_path):
    root = tmp_path / "data"
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            write_images(root / split / c, 2, start=hash((split, c)) % 1000)
    pool = tmp_path / "pool"
    names = write_images(pool, 3, start=900)
    labels = write_labels(tmp_path / "l.csv", [(names[0], "cat"), (names[1], "dgo")])
    with pytest.raises(DataError, match=r"the class 'dgo', which is not one of the source's classes \['cat', 'dog'\]"):
        load_splits(DataConfig(source=f"imagefolder:{root}", unlabeled=f"imagefolder:{pool}", labels=str(labels)))


def test_labels_file_class_a_string_labeled_test_split_never_has(tmp_path):
    def dataset(labels):
        images = [PIL.Image.fromarray(np.full((4, 4, 3), i, np.uint8)) for i in range(len(labels))]
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")})
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    datasets.DatasetDict({"train": dataset(["a", None, None]), "test": dataset(["a", "a"])}).save_to_disk(
        tmp_path / "d"
    )
    labels = write_labels(tmp_path / "l.csv", [("train-1", "b")])
    with pytest.raises(DataError, match=r"class\(es\) \['b'\] that the test split 'test' never has"):
        load_splits(DataConfig(source=f"disk:{tmp_path / 'd'}", labels=str(labels)))


def test_a_class_with_one_label_cannot_be_tested_and_trained(tmp_path, flat):
    folder, names = flat
    labels = write_labels(tmp_path / "l.csv", [*labels_for(names, 6), (names[10], "fox")])
    with pytest.raises(DataError, match=r"\['fox'\] have a single labeled image.*at least 2 images per class"):
        load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))


def test_labels_file_needs_its_header(tmp_path, flat):
    folder, names = flat
    labels = write_labels(tmp_path / "l.csv", labels_for(names, 6), header="file,class")
    with pytest.raises(
        DataError, match=r"no column \['image', 'label'\].*header naming the columns `image` and `label`"
    ):
        load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))


def test_missing_labels_file(tmp_path, flat):
    with pytest.raises(DataError, match=r"data\.labels: .*nope\.csv does not exist"):
        load_splits(DataConfig(source=f"imagefolder:{flat[0]}", labels=str(tmp_path / "nope.csv")))


def test_no_labels_at_all_says_how_to_start(flat):
    with pytest.raises(DataError, match=r"no training image has a label.*simclrv2 select"):
        load_splits(DataConfig(source=f"imagefolder:{flat[0]}", unlabeled=f"imagefolder:{flat[0]}"))


def test_empty_unlabeled_folder(tmp_path, flat):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"data\.unlabeled"):
        load_splits(DataConfig(source=f"imagefolder:{flat[0]}", unlabeled=f"imagefolder:{tmp_path / 'empty'}"))


def test_labels_contradicting_the_source(tmp_path):
    root = tmp_path / "data"
    names = {c: write_images(root / c, 3, start=10 * i) for i, c in enumerate(("cat", "dog"))}
    labels = write_labels(tmp_path / "l.csv", [(names["cat"][0], "dog")])
    with pytest.raises(DataError, match=r"labels 'img000\.png' 'dog', but the source labels it 'cat'"):
        load_splits(DataConfig(source=f"imagefolder:{root}", labels=str(labels)))


# --- what must not depend on the labels ----------------------------------------------------------------------------


def test_a_labels_file_never_changes_which_images_pretraining_sees(tmp_path):
    """digits labels every image itself: a labels file on top keeps the benchmark case (test images removed)."""
    labels = write_labels(tmp_path / "l.csv", [("train-0", "0")])
    plain, with_file = load_train(DataConfig()), load_train(DataConfig(labels=str(labels)))
    assert len(plain) == len(with_file) == 1437 and plain.ids == with_file.ids
    assert plain.fully_labeled and with_file.fully_labeled


def test_a_labels_file_that_labels_every_image_keeps_the_teams_case(tmp_path, flat):
    folder, names = flat
    train, test = load_splits(
        DataConfig(source=f"imagefolder:{folder}", labels=str(write_labels(tmp_path / "l.csv", labels_for(names, 30))))
    )
    assert len(train) == 30 and not train.fully_labeled and int(train.held_out.sum()) == len(test)


def test_pool_ids_keep_their_own_form_and_step_aside_on_a_clash(tmp_path, flat):
    folder, names = flat
    pool = tmp_path / "pool"
    write_images(pool, 2, start=0)  # img000.png and img001.png: names the training folder has too
    train = load_train(DataConfig(source=f"imagefolder:{folder}", unlabeled=f"imagefolder:{pool}"))
    assert train.ids[:30] == names  # the training ids did not change
    assert train.ids[30:] == ["unlabeled/img000.png", "unlabeled/img001.png"]


def test_a_pool_with_a_test_split_gives_only_its_train_images(tmp_path, flat):
    images = [PIL.Image.fromarray(np.full((6, 6, 3), i, np.uint8)) for i in range(5)]
    splits = {"train": images[:3], "test": images[3:]}
    features = datasets.Features({"image": datasets.Image()})
    datasets.DatasetDict(
        {name: datasets.Dataset.from_dict({"image": rows}, features=features) for name, rows in splits.items()}
    ).save_to_disk(tmp_path / "pool")
    train = load_train(DataConfig(source=f"imagefolder:{flat[0]}", unlabeled=f"disk:{tmp_path / 'pool'}"))
    assert len(train) == 30 + 3


def test_labels_file_classes_follow_an_integer_test_split(tmp_path):
    images = [PIL.Image.fromarray(np.full((6, 6, 3), i, np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    train = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    test = datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(tmp_path / "d")
    labels = write_labels(tmp_path / "l.csv", [("train-0", "0"), ("train-1", "1")])
    train_split, test_split = load_splits(DataConfig(source=f"disk:{tmp_path / 'd'}", labels=str(labels)))
    assert train_split.class_names == ["0", "1"] and test_split.labels.tolist() == [0, 1, 0, 1]


def test_files_that_are_not_images_are_counted_in_the_log(tmp_path, flat, caplog):
    folder, names = flat
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="stages.data.sources"):
        train = load_train(DataConfig(source=f"imagefolder:{folder}"))
    assert len(train) == len(names) and "skipped 2 files that are not images" in caplog.text
