"""The product's loop, end to end on real digits: a folder of unlabeled images and a labels file for a few of them ->
run -> pre-labels -> the images to label next -> a person labels them -> a rerun that reuses the pretraining."""

import csv

import numpy as np
import PIL.Image
import pytest
from sklearn.datasets import load_digits

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.flow import simclrv2_pipeline
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from tests.pipeline.conftest import TINY_RUN

IMAGES, FIRST_LABELS, TO_LABEL = 500, 60, 30


def write_digits(folder, rows) -> dict[str, str]:
    """PNG files of digits rows; file name -> its true class."""
    digits = load_digits()
    folder.mkdir(parents=True)
    truth = {}
    for row in rows:
        name = f"d{row:04d}.png"
        PIL.Image.fromarray(np.rint(digits.images[row] * 255 / 16).astype(np.uint8)).save(folder / name)
        truth[name] = str(digits.target[row])
    return truth


def cli(*argv: str) -> int:
    with pytest.raises(SystemExit) as exit_status:
        main(list(argv))
    return exit_status.value.code


def budget_labels(plan) -> dict[str, int]:
    return read_manifest(plan["subsets"].out_dir)["metrics"]["num_labels"]


@pytest.mark.slow
def test_the_labeling_loop_reuses_pretraining_and_grows_the_budget(tmp_path):
    truth = write_digits(tmp_path / "images", range(IMAGES))
    (tmp_path / "images" / "notes.txt").write_text("not an image: skipped, and counted in the log")
    first = [name for name in truth][:FIRST_LABELS]
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\n" + "".join(f"{name},{truth[name]}\n" for name in first))
    overrides = [
        *(item for item in TINY_RUN if not item.startswith("budgets")),
        f"runs_dir={tmp_path / 'runs'}",
        f"data.source=imagefolder:{tmp_path / 'images'}",
        f"data.labels={labels}",
        "budgets=[10, all]",
        "finetune.batch_size=10",
        "baseline.batch_size=10",
        "select.enabled=true",  # the flow's own list of what to label next, besides `simclrv2 select`
        "select.budget=20",
    ]
    run_dir = tmp_path / "runs" / "quickstart"

    simclrv2_pipeline(None, overrides)
    plan = build_plan(load_config(None, overrides))
    held_out = read_manifest(plan["subsets"].out_dir)["metrics"]["test_labels_held_out"]
    assert budget_labels(plan) == {"10labels": 10, "all": FIRST_LABELS - held_out}
    prelabeled = {row["image"] for row in csv.DictReader((plan["predict"].out_dir / "prelabels.csv").open())}
    assert len(prelabeled) == IMAGES - FIRST_LABELS and not prelabeled & set(first)
    report = (plan["report"].out_dir / "report.md").read_text()
    assert "Pre-labels for the unlabeled images" in report
    assert f"{held_out} of your labeled images were held out as the test split" in report
    in_flow = list(csv.DictReader((plan["select"].out_dir / "to_label.csv").open()))
    assert len(in_flow) == 20 and not {row["image"] for row in in_flow} & set(first)
    assert read_manifest(plan["select"].out_dir)["metrics"]["strategy"] == "uncertainty"  # it had a teacher

    # what to label next: unlabeled images only, in a list that goes back in as labels
    assert cli("select", str(run_dir), "--budget", str(TO_LABEL), "--out", str(tmp_path / "round1")) == 0
    chosen = list(csv.DictReader((tmp_path / "round1" / "to_label.csv").open()))
    assert len(chosen) == TO_LABEL and not {row["image"] for row in chosen} & set(first)
    with labels.open("a") as file:  # a person labels them
        file.writelines(f"{row['image']},{truth[row['image']]}\n" for row in chosen)

    pretrain_manifest = (plan["pretrain"].out_dir / "manifest.json").stat().st_mtime_ns
    simclrv2_pipeline(None, overrides)
    again = build_plan(load_config(None, overrides))
    assert again["pretrain"].out_dir == plan["pretrain"].out_dir  # reused: its fingerprint ignores the labels
    assert (again["pretrain"].out_dir / "manifest.json").stat().st_mtime_ns == pretrain_manifest
    for name in ("subsets", "finetune[all]", "distill[all]", "predict", "select", "report"):
        assert again[name].fingerprint != plan[name].fingerprint, name
    held_out = read_manifest(again["subsets"].out_dir)["metrics"]["test_labels_held_out"]
    assert budget_labels(again)["all"] == FIRST_LABELS + TO_LABEL - held_out
    assert "Pre-labels for the unlabeled images" in (again["report"].out_dir / "report.md").read_text()

    # pre-labels for a new folder, with the run's model
    write_digits(tmp_path / "new", range(IMAGES, IMAGES + 40))
    assert cli("predict", str(run_dir), str(tmp_path / "new"), "--out", str(tmp_path / "new-labels")) == 0
    rows = list(csv.DictReader((tmp_path / "new-labels" / "prelabels.csv").open()))
    assert len(rows) == 40 and all(row["predicted"] in {str(d) for d in range(10)} for row in rows)
