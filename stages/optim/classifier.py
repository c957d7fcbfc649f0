"""The optimiser of a classifier being fine-tuned or distilled: LARS or Nesterov SGD over LARS-style groups."""

from __future__ import annotations

from typing import Literal

import torch

from stages.models.heads import Classifier
from stages.optim.lars import LARS, lars_param_groups


def classifier_param_groups(model: Classifier, weight_decay: float) -> list[dict]:
    """LARS groups as in pretraining, except that the linear classifier's weight gets weight decay but no trust
    scaling, as the reference excludes `head_supervised` from layer adaptation: trust scaling would limit each step
    to about 0.001 * |w|, which keeps a zero-initialised classifier near zero."""
    classifier_weight = model.fc.weight
    groups = lars_param_groups(model, weight_decay)
    groups[0]["params"] = [p for p in groups[0]["params"] if p is not classifier_weight]
    groups.append({"params": [classifier_weight], "weight_decay": weight_decay, "lars_adapt": False})
    return groups


def make_optimizer(
    model: Classifier, kind: Literal["lars", "sgd"], lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    groups = classifier_param_groups(model, weight_decay)
    if kind == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    # The reference's "momentum" optimizer: Nesterov SGD; the same groups keep BN and biases undecayed.
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0)
