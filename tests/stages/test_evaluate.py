"""Evaluation: exact top-k on a classifier with known outputs, kNN votes, linear probe and kNN on real digits
features, and the evaluate stage with its inputs."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import stages.evaluate as evaluate
from stages.data.sources import ImageSplit
from stages.evaluate import EvaluateConfig
from stages.evaluation.feature_quality import knn_accuracy, knn_vote_accuracy, linear_probe
from stages.evaluation.metrics import top_k_accuracy
from stages.models.architecture import EncoderConfig, classifier_for
from stages.models.resnet import build_encoder
from stages.models.weights import save_classifier

TINY = EncoderConfig(depth=18, width=0.125)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


class IntensityLookup(nn.Module):
    """Logits looked up by each image's (constant) intensity: image i, filled with 10 * i, gets `table[i]`.
    Records whether it ran in eval mode."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table, requires_grad=False)
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        index = (images.mean(dim=(1, 2, 3)) * 255 / 10).round().long()
        return self.table[index]


def constant_images_split(labels: list[int], num_classes: int) -> ImageSplit:
    intensities = torch.arange(len(labels), dtype=torch.uint8) * 10
    images = intensities.view(-1, 1, 1, 1).expand(-1, 3, 12, 12).contiguous()
    names = [f"class-{c}" for c in range(num_classes)]
    return ImageSplit(images, torch.tensor(labels), [str(i) for i in range(len(labels))], names, skipped=0)


def logits_ranking_true_class_at(ranks: list[int], labels: list[int], num_classes: int) -> torch.Tensor:
    """Per row, distinct logits in which the true class holds place `rank` (0 = the largest)."""
    rows = []
    for rank, label in zip(ranks, labels, strict=True):
        others = [c for c in range(num_classes) if c != label]
        order = [*others[:rank], label, *others[rank:]]  # classes from the largest logit down
        row = torch.empty(num_classes)
        row[order] = torch.arange(num_classes, 0, -1, dtype=torch.float32)
        rows.append(row)
    return torch.stack(rows)


def test_top_k_accuracy_is_exact_on_a_classifier_with_known_outputs():
    labels = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    ranks = [0, 0, 0, 0, 4, 4, 5, 5, 1, 9]  # top-1 hits: 4 of 10; top-5 hits (rank <= 4): 7 of 10
    classifier = IntensityLookup(logits_ranking_true_class_at(ranks, labels, 10))
    classifier.train()

    accuracy = top_k_accuracy(classifier, constant_images_split(labels, 10), image_size=8, batch_size=3)

    assert accuracy == {"top1": 0.4, "top5": 0.7}
    assert classifier.modes == [False] * 4  # 4 batches of at most 3, all in eval mode
    assert classifier.training  # the previous mode is restored


def test_top5_with_fewer_than_five_classes_is_top_num_classes():
    labels, ranks = [0, 1, 2, 0], [0, 1, 2, 2]
    classifier = IntensityLookup(logits_ranking_true_class_at(ranks, labels, 3))
    accuracy = top_k_accuracy(classifier, constant_images_split(labels, 3), image_size=8)
    assert accuracy == {"top1": 0.25, "top5": 1.0}


def test_knn_takes_the_similarity_weighted_vote_of_the_k_nearest():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    train_labels = torch.tensor([0, 0, 1, 1, 1])
    test = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.4]])
    assert knn_vote_accuracy(train, train_labels, test, torch.tensor([0, 1, 0]), k=2) == 1.0
    # With k=5 the third point goes to class 0 (its two most similar rows) at a low temperature, and to class 1
    # (three rows) at a high one, where the weights flatten into a plain majority vote.
    third = test[2:]
    assert knn_vote_accuracy(train, train_labels, third, torch.tensor([0]), k=5, temperature=0.05) == 1.0
    assert knn_vote_accuracy(train, train_labels, third, torch.tensor([1]), k=5, temperature=100.0) == 1.0
    assert knn_vote_accuracy(train, train_labels, test, torch.tensor([0, 1, 0]), k=5, temperature=100.0) == 1 / 3


def test_linear_probe_and_knn_on_digits_features_beat_chance_clearly(digits):
    train, test = digits
    torch.manual_seed(0)
    encoder = build_encoder(18, 0.125, small_images=True)  # random, frozen features
    assert linear_probe(encoder, train, test, image_size=16) > 0.4  # chance: 0.1
    assert knn_accuracy(encoder, train, test, image_size=16, k=20) > 0.3


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
    assert metrics["linear_probe_top1"] > 0.4 and metrics["knn_top1"] > 0.3, metrics
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
