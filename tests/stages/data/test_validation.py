"""The validation slice (stages/data/validation.py): training images in place of the test split, for choosing
settings without the test images."""

import pytest
import torch

from stages.data.labels import UNLABELED
from stages.data.sources import DataConfig, DataError, load_splits, load_train, open_train_rows
from tests.stages.data.test_partly_labeled import labels_for, write_images, write_labels

pytestmark = pytest.mark.usefixtures("private_datasets_cache")


def test_benchmark_case_takes_the_slice_out_of_training_and_never_returns_test_images():
    train, test = load_splits(DataConfig())
    val_train, validation = load_splits(DataConfig(validation_fraction=0.25))
    assert not set(validation.ids) & set(test.ids)  # the test images stay unseen
    assert set(validation.ids) <= set(train.ids) and not set(validation.ids) & set(val_train.ids)
    assert len(val_train) + len(validation) == len(train)
    counts = torch.bincount(validation.labels, minlength=10)
    assert counts.min() >= 0.25 * torch.bincount(train.labels).min() - 1  # stratified: every class in proportion
    assert validation.held_out is None and val_train.held_out is None


def test_every_training_view_agrees_on_the_rows():
    config = DataConfig(validation_fraction=0.25, seed=3)
    train, _ = load_splits(config)
    assert load_train(config).ids == train.ids
    assert len(open_train_rows(config)) == len(train)


def test_seed_changes_the_slice():
    first = load_splits(DataConfig(validation_fraction=0.25, seed=0))[1].ids
    assert first == load_splits(DataConfig(validation_fraction=0.25, seed=0))[1].ids
    assert first != load_splits(DataConfig(validation_fraction=0.25, seed=1))[1].ids


def test_partly_labeled_data_keeps_the_slice_as_unlabeled_held_out_images(tmp_path):
    folder = tmp_path / "images"
    names = write_images(folder, 40)
    labels = write_labels(tmp_path / "labels.csv", labels_for(names, 30))
    config = DataConfig(source=f"imagefolder:{folder}", labels=str(labels), validation_fraction=0.3)
    _, test = load_splits(DataConfig(source=f"imagefolder:{folder}", labels=str(labels)))
    train, validation = load_splits(config)
    assert len(train) == 40  # every image still trains without a label
    assert not set(validation.ids) & set(test.ids)
    held = {train.ids[row] for row in train.held_out.nonzero().flatten().tolist()}
    assert set(validation.ids) | set(test.ids) == held
    assert (train.labels[train.held_out] == UNLABELED).all()
    assert set(validation.labels.tolist()) == {0, 1, 2}


def test_a_slice_too_small_for_every_class_names_the_key():
    with pytest.raises(DataError, match=r"validation_fraction=0\.001.*Change `validation_fraction`"):
        load_splits(DataConfig(validation_fraction=0.001))
