"""pipeline/feature_check.py: cross-validated feature quality of pretrain directories, on training labels only."""

import pytest

from pipeline.feature_check import main
from pipeline.manifest import write_manifest
from stages.data.label_subsets import save_subset, select_subsets
from stages.data.sources import DataConfig, load_train
from stages.models.architecture import EncoderConfig
from stages.pretrain import PretrainConfig
from stages.pretrain import run as pretrain


@pytest.mark.slow
def test_it_scores_each_pretraining_with_the_budgets_training_labels(tmp_path, capsys):
    config = PretrainConfig(model=EncoderConfig(depth=18, width=0.0625), image_size=8, batch_size=128, epochs=0.2)
    out = tmp_path / "pretrain"
    metrics = pretrain(config, None, out)
    write_manifest(out, stage="pretrain", fingerprint="f", config=config, inputs={}, metrics=metrics,
                   wall_seconds=1.0, devices={}, code_version="c")  # fmt: skip
    train = load_train(DataConfig())
    rows = select_subsets(train.labels, [0.1], seed=0)["10pct"]
    subset = (
        save_subset(tmp_path / "10pct.json", rows, train.labels, train.ids, 0.1, seed=0) and tmp_path / "10pct.json"
    )
    main([str(out), "--subset", str(subset), "--image-size", "8"])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: probe 0.") and "kNN 0." in line and "(3-fold, 144 labels)" in line
