"""A linear classifier on frozen features: logistic regression on the standardized features of a classifier's
frozen encoder (and kept head layers), folded into its final linear layer, so that the result is an ordinary
`Classifier` that every later stage loads, distils from and exports like a fine-tuned one. At a few labels per class
this often beats full fine-tuning, which has far more weights to fit."""

from __future__ import annotations

import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from stages.data.sources import ImageSplit
from stages.evaluation.metrics import eval_mode, extract_features
from stages.models.heads import Classifier

MAX_ITER = 1000


class FeaturesOf(nn.Module):
    """The classifier's features (what its final linear layer reads), as a module `extract_features` can run."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


def fit_linear_head(classifier: Classifier, features: torch.Tensor, labels: torch.Tensor, c: float) -> Classifier:
    """Set `classifier.fc` to the logistic regression (inverse L2 strength `c`) fitted on `features` (N x D, from
    `FeaturesOf(classifier)`) and `labels`; the standardization is folded into the weights:
    W' = W / sigma, b' = b - W' mu. Classes absent from `labels` get the lowest possible logit."""
    scaler = StandardScaler().fit(features.numpy())
    regression = LogisticRegression(C=c, max_iter=MAX_ITER).fit(scaler.transform(features.numpy()), labels.numpy())
    weight, bias = _per_class(regression, classifier.fc.out_features)
    scale = torch.as_tensor(scaler.scale_, dtype=torch.float32)
    mean = torch.as_tensor(scaler.mean_, dtype=torch.float32)
    with torch.no_grad():
        classifier.fc.weight.copy_(weight / scale)
        classifier.fc.bias.copy_(bias - (weight / scale) @ mean)
    return classifier


def _per_class(regression: LogisticRegression, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(K x D weights, K biases) for every class index; scikit-learn gives a single row for two classes."""
    coef = torch.as_tensor(regression.coef_, dtype=torch.float32)
    intercept = torch.as_tensor(regression.intercept_, dtype=torch.float32)
    if coef.shape[0] == 1:  # binary: one logit for classes_[1] against classes_[0]
        coef, intercept = torch.cat([-coef / 2, coef / 2]), torch.cat([-intercept / 2, intercept / 2])
    weight = torch.zeros(num_classes, coef.shape[1])
    bias = torch.full((num_classes,), torch.finfo(torch.float32).min / 2)
    rows = torch.as_tensor(regression.classes_, dtype=torch.int64)
    weight[rows], bias[rows] = coef, intercept
    return weight, bias


def frozen_features(
    classifier: Classifier, split: ImageSplit, image_size: int, batch_size: int, device: torch.device
) -> torch.Tensor:
    """N x D features of every image of `split` under the evaluation preprocessing, on the CPU."""
    with eval_mode(classifier):
        return extract_features(FeaturesOf(classifier), split, image_size, batch_size, device)
