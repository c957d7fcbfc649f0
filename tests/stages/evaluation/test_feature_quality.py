"""Feature quality (stages/evaluation/feature_quality.py): the kNN vote, and linear probe and kNN on real digits."""

import pytest
import torch

from stages.evaluation.feature_quality import knn_vote_accuracy, probe_accuracy
from stages.evaluation.metrics import extract_features
from stages.models.resnet import build_encoder


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    yield


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
    train_features, test_features = (extract_features(encoder, split, image_size=16) for split in (train, test))
    assert probe_accuracy(train_features, train.labels, test_features, test.labels) > 0.4  # chance: 0.1
    assert knn_vote_accuracy(train_features, train.labels, test_features, test.labels, k=20) > 0.3


def test_knn_on_float16_features_votes_as_on_float32():
    """Features kept on a GPU are float16; the votes, exp(similarity / 0.07) up to 1.6e6, must not overflow."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(400, 32, generator=generator)
    labels = torch.randint(0, 5, (400,), generator=generator)
    test = train[:120] + 0.5 * torch.randn(120, 32, generator=generator)
    exact = knn_vote_accuracy(train, labels, test, labels[:120], k=10)
    assert knn_vote_accuracy(train.half(), labels, test.half(), labels[:120], k=10) == pytest.approx(exact, abs=0.02)
    assert exact > 0.5
