"""A battery of mistakes a user makes, each through the real `simclrv2 run`: every one exits non-zero with no
traceback on the terminal, ends with one line that names the culprit, and leaves a finished run in the same runs
directory byte-identical. Most are caught before Prefect starts (pipeline/preflight.py); the last ones fail inside
the flow, once, without a retry."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from pipeline.cli import main
from pipeline.store import experiment_lock
from tests.pipeline.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[2]
FAST = [*TINY_RUN, "predict.enabled=false"]


def sets(overrides: list[str]) -> list[str]:
    return [item for override in overrides for item in ("--set", override)]


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file of a run, but its logs (each run of `simclrv2 run` adds one)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "logs" not in path.relative_to(folder).parts
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A runs directory holding a finished (tiny) subsets and pretrain."""
    runs = tmp_path_factory.mktemp("finished") / "runs"
    with pytest.raises(SystemExit) as stopped:
        main(["run", *sets([*FAST, f"runs_dir={runs}"]), "--only", "subsets", "--only", "pretrain"])
    assert stopped.value.code == 0
    return runs


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Small image folders and files the mistakes point at."""
    base = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 2)):
        for name in ("cat", "dog"):
            (base / "pets" / split / name).mkdir(parents=True)
            for i in range(count):
                image = rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)
                PIL.Image.fromarray(image).save(base / "pets" / split / name / f"{name}{i}.png")
    (base / "empty").mkdir()
    (base / "labels.csv").write_text("image,label\ntrain-1,kangaroo\n")
    (base / "stranger-ids.txt").write_text("no-such-image.png\nanother-stranger.png\n")
    return {"pets": base / "pets", "empty": base / "empty", "base": base}


# (id, extra `--set`s or CLI args, a text the last line must contain)
CAUGHT_BEFORE_PREFECT = [
    ("unknown key", ["pretrain.epoch=3"], "pretrain.epoch"),
    ("wrong type", ["pretrain.epochs=many"], "pretrain.epochs"),
    ("out of range", ["pretrain.batch_size=0"], "batch_size"),
    ("unknown section", ["pretrian.epochs=3"], "pretrian"),
    ("negative price", ["report.cost_per_label=-1"], "cost_per_label"),
    ("missing folder", ["data.source=imagefolder:/no/such/folder"], "/no/such/folder"),
    ("source not understood", ["data.source=ftp://images"], "ftp://images"),
    ("hub offline", ["data.source=hub:someone/some-images"], "someone/some-images"),
    ("empty folder", ["data.source=imagefolder:{empty}"], "empty"),
    ("missing label column", ["data.label_column=species"], "species"),
    ("missing image column", ["data.image_column=picture"], "picture"),
    ("parquet glob matching nothing", ["data.source=parquet:{base}/*.parquet"], "*.parquet"),
    ("missing test split", ["data.source=imagefolder:{pets}", "data.test_split=validation"], "validation"),
    ("missing train split", ["data.source=imagefolder:{pets}", "data.train_split=training"], "training"),
    ("missing labels file", ["data.labels={base}/no-labels.csv"], "no-labels.csv"),
    ("labels file with an unknown class", ["data.labels={base}/labels.csv"], "kangaroo"),
    ("budget below one label per class", ["budgets=[5]"], "5"),
    ("budget above the labels", ["budgets=[5000]"], "5000"),
    ("fraction above one", ["budgets=[1.5]"], "1.5"),
    ("missing subset list", ["subsets={{20labels: {base}/no-list.txt}}"], "no-list.txt"),
    ("subset list of unknown images", ["subsets={{20labels: {base}/stranger-ids.txt}}"], "no-such-image.png"),
    ("pretraining batch above the images", ["pretrain.batch_size=5000"], "pretrain.batch_size"),
    ("distillation batch above the images", ["distill.batch_size=5000"], "distill.batch_size"),
    ("validation slice too large", ["data.validation_fraction=0.999"], "validation_fraction"),
]


@pytest.mark.parametrize(
    "overrides, culprit", [case[1:] for case in CAUGHT_BEFORE_PREFECT], ids=[c[0] for c in CAUGHT_BEFORE_PREFECT]
)
def test_a_mistake_is_one_line_before_prefect_starts(overrides, culprit, finished, folders, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = [override.format(**{key: str(path) for key, path in folders.items()}) for override in overrides]
    before = tree_digest(finished)
    with pytest.raises(SystemExit) as stopped:
        main(["run", *sets([*FAST, f"runs_dir={finished}", *overrides])])
    out, err = capsys.readouterr()
    assert stopped.value.code == 2, (out, err)
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last.startswith("simclrv2 run: ") and culprit in last, last
    assert tree_digest(finished) == before


@pytest.mark.parametrize(
    "args, culprit",
    [
        (["--only", "distill[20labels]"], "needs finetune[20labels]"),
        (["no-such-config.yaml"], "no-such-config.yaml"),
    ],
    ids=["only without its upstream", "missing config file"],
)
def test_a_bad_request_is_one_line(args, culprit, finished, capsys):
    before = tree_digest(finished)
    config = [arg for arg in args if arg.endswith(".yaml")]
    with pytest.raises(SystemExit) as stopped:
        main(["run", *config, *sets([*FAST, f"runs_dir={finished}"]), *[a for a in args if a not in config]])
    _, err = capsys.readouterr()
    assert stopped.value.code == 2 and culprit in err.strip().splitlines()[-1], err
    assert tree_digest(finished) == before


def test_a_running_experiment_is_one_line(finished, capsys):
    before = tree_digest(finished)
    with experiment_lock(finished, "quickstart"), pytest.raises(SystemExit) as stopped:
        main(["run", *sets([*FAST, f"runs_dir={finished}"])])
    _, err = capsys.readouterr()
    assert stopped.value.code == 2 and "already running" in err.strip().splitlines()[-1], err
    assert tree_digest(finished) == before


def cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pipeline.cli", "run", *args]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, culprit",
    [
        (["pretrain.base_lr=1e30"], "pretrain failed: loss became nan"),
        (["data.source=imagefolder:{pets}", "budgets=[2]"], "broken.png"),
    ],
    ids=["diverging learning rate", "corrupt image"],
)
def test_a_mistake_inside_the_flow_is_one_line_and_not_retried(overrides, culprit, finished, folders, tmp_path):
    pets = folders["pets"]
    (pets / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    overrides = [override.format(pets=pets) for override in overrides]
    before = tree_digest(finished)
    done = cli(
        [*sets([*FAST, f"runs_dir={finished}", "pretrain.batch_size=8", *overrides]), "--only", "pretrain"], tmp_path
    )
    (pets / "train" / "cat" / "broken.png").unlink()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("simclrv2 run: pretrain failed: ") and culprit in last and "full log: " in last, last
    log = Path(last.split("full log: ")[1])
    log = log if log.is_absolute() else tmp_path / log
    assert "Traceback" in log.read_text()  # the whole story is in the run's log
    assert "Retry 1/1" not in log.read_text()  # Prefect's line when it retries: a mistake is not retried
    assert tree_digest(finished) == before
