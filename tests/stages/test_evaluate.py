"""The evaluate stage (stages/evaluate.py): its inputs, its metrics, its errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stages.evaluate as evaluate
from stages.evaluate import EvaluateConfig
from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.weights import save_classifier

TINY = EncoderConfig(depth=18, width=0.125)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


def test_evaluate_stage_on_pretrain_and_classifier_outputs(tmp_path, digits, pretrained):
    _, test = digits
    classifier_dir = tmp_path / "classifier"
    classifier_dir.mkdir()
    always_three = classifier_for(TINY, 0, 10)  # the linear layer is zero: the bias alone decides
    with torch.no_grad():
        always_three.fc.bias[3] = 1.0
    save_classifier(always_three, classifier_dir / "model.safetensors", TINY, 0, test.class_names)

    inputs = {"pretrain": pretrained, "classifier": classifier_dir}
    metrics = evaluate.run(EvaluateConfig(image_size=16), inputs, tmp_path / "eval")

    assert metrics["test_top1"] == pytest.approx(float((test.labels == 3).float().mean()))
    assert metrics["linear_eval_top1"] > 0.3 and metrics["knn_top1"] > 0.3, metrics  # chance: 0.1
    assert metrics["logistic_probe_top1"] > 0.4, metrics  # small data: the cheap probe is there too
    assert metrics["knn_k"] == 20 and metrics["num_test"] == len(test)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics


def test_main_takes_either_input(tmp_path, pretrained, capsys):
    evaluate.main(["--out", str(tmp_path), "--pretrain", str(pretrained), "--image-size", "16", "--knn-k", "5"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["knn_k"] == 5 and "test_top1" not in printed
    with pytest.raises(SystemExit, match="--classifier DIR and/or --pretrain DIR"):
        evaluate.main(["--out", str(tmp_path)])


# --- bad input ------------------------------------------------------------------------------------------------------


def test_missing_weights_name_the_path_and_the_stage_to_run(tmp_path):
    missing = tmp_path / "nothing"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}/model.safetensors") + ".*run the pretrain"):
        evaluate.run(EvaluateConfig(), {"pretrain": missing}, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="run the finetune, baseline or distill stage first"):
        evaluate.run(EvaluateConfig(), {"classifier": missing}, tmp_path / "out")
    with pytest.raises(ValueError, match="takes a 'classifier' and/or a 'pretrain' input"):
        evaluate.run(EvaluateConfig(), {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_classifier_trained_on_other_classes_is_refused(tmp_path):
    tmp_path.joinpath("other").mkdir()
    other_classes = [f"animal-{c}" for c in range(10)]
    save_classifier(classifier_for(TINY, 0, 10), tmp_path / "other" / "model.safetensors", TINY, 0, other_classes)
    with pytest.raises(ValueError, match=r"other/model.safetensors was trained on classes \['animal-0'"):
        evaluate.run(EvaluateConfig(image_size=16), {"classifier": tmp_path / "other"}, tmp_path / "out")


def test_help_works():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "stages.evaluate", "--help"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--out", "--classifier", "--pretrain", "--knn-k", "--probe-c", "--data.source"):
        assert flag in result.stdout
