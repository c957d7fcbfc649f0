"""How good frozen features are: a logistic probe (scikit-learn, on standardized features; for small data) and a
cosine kNN classifier (chunked, on the features' device), both fitted on training features and scored on test
features. The papers' linear evaluation, trained in torch on crop + flip views, is stages/evaluation/linear_eval.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

KNN_CHUNK = 256  # test rows per similarity matrix: bounds memory at KNN_CHUNK x num_train


def probe_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    c: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Logistic regression on standardized features: fit on train, accuracy on test."""
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter))
    probe.fit(train_features.numpy(), train_labels.numpy())
    return float(probe.score(test_features.numpy(), test_labels.numpy()))


def knn_vote_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Cosine kNN: each test row takes the class with the largest sum of exp(similarity / temperature) over its k
    most similar training rows (the weighted vote of Wu et al. 2018, used as SimCLR/MoCo's kNN monitor)."""
    # The training rows' norms divide each chunk's dot products: no normalized copy of the (large) training features.
    train_norms = train_features.float().norm(dim=1).clamp_min(1e-12)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, len(train_features))
    correct = 0
    for start in range(0, len(test_features), KNN_CHUNK):
        chunk = F.normalize(test_features[start : start + KNN_CHUNK].float(), dim=1).to(train_features.dtype)
        similarity = (chunk @ train_features.T).float() / train_norms
        nearest_similarity, nearest = similarity.topk(k, dim=1)
        votes = torch.zeros(len(similarity), num_classes, device=similarity.device)  # float32: exp(1 / 0.07) > fp16
        votes.scatter_add_(1, train_labels[nearest], (nearest_similarity / temperature).exp())
        correct += int((votes.argmax(dim=1) == test_labels[start : start + KNN_CHUNK]).sum())
    return correct / len(test_features)
