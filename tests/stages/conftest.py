"""Fixtures shared by the stage tests: real digits data, subset files, one torch thread."""

from pathlib import Path

import datasets
import pytest
import torch

from stages.data.label_subsets import save_subset, select_subsets
from stages.data.sources import DataConfig, load_splits
from stages.models.architecture import EncoderConfig
from stages.pretrain import PretrainConfig
from stages.pretrain import run as run_pretrain


@pytest.fixture
def private_datasets_cache(tmp_path, monkeypatch):
    """`load_dataset` caches what it builds; keep that out of the user's ~/.cache (modules that build datasets
    use it for every test: `pytestmark = pytest.mark.usefixtures("private_datasets_cache")`)."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny convolutions run fastest on one thread, and far faster than on oversubscribed ones on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_splits(DataConfig())


@pytest.fixture(scope="module")
def subsets(digits, tmp_path_factory) -> dict[str, Path]:
    """Subset files for 10% (144 labels) and 100% of the digits training rows."""
    train, _ = digits
    folder = tmp_path_factory.mktemp("subsets")
    paths = {}
    for budget, (name, rows) in zip([0.1, 1.0], select_subsets(train.labels, [0.1, 1.0], seed=0).items(), strict=True):
        paths[name] = folder / f"{name}.json"
        save_subset(paths[name], rows, train.labels, train.ids, budget, seed=0)
    return paths


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """A real, tiny pretrain output (ResNet-18 at 0.125 width, 4 steps)."""
    out = tmp_path_factory.mktemp("pretrain")
    config = PretrainConfig(model=EncoderConfig(depth=18, width=0.125), image_size=16, batch_size=64, epochs=0.2)
    run_pretrain(config, None, out)
    return out
