"""Linear evaluation, the protocol of the SimCLR papers: a zero-initialised linear layer trained on the frozen
encoder's features of crop + flip views, with cross-entropy, momentum SGD and a cosine schedule, then scored on the
centre-cropped test images. It runs on the device through the classifier training loop, so it streams, resumes and
spreads over processes like fine-tuning. (The reference trains it with the encoder's BN in training mode behind a
stop-gradient; here the frozen encoder is in eval mode, its running statistics fixed: docs/paper-fidelity.md.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.nn.functional import cross_entropy

from stages.data.sources import ImageSplit
from stages.models.heads import Classifier
from stages.training.batches import batch_that_fits
from stages.training.classifier_loop import train_classifier


class LinearOnFrozenEncoder(Classifier):
    """A classifier whose encoder never trains (eval mode whatever `train()` says, no gradients), its features
    standardized by a BN without affine parameters: the linear layer then learns at one rate whatever the scale of a
    network's features (the role of the logistic probe's StandardScaler; MAE's linear probe does the same)."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__(encoder.requires_grad_(False), nn.ModuleList(), encoder.out_dim, num_classes)
        self.standardize = nn.BatchNorm1d(encoder.out_dim, affine=False)

    def train(self, mode: bool = True) -> LinearOnFrozenEncoder:
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.encoder(images).float()
        return self.standardize(features)


@dataclass(frozen=True)
class LinearEvalSettings:
    """The training settings of the linear layer (the fields `train_classifier` reads)."""

    image_size: int
    batch_size: int
    epochs: float
    base_lr: float
    seed: int
    lr_scaling: str = "linear"  # lr = base_lr * batch / 256, as the reference's momentum optimizer
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    warmup_epochs: float = 0.0
    checkpoint_every: int = 500
    log_every: int = 50
    tensorboard: bool = False


def train_linear_layer(
    encoder: nn.Module, labeled: ImageSplit, settings: LinearEvalSettings, accelerator: Accelerator, out_dir: Path
) -> Classifier:
    """The frozen `encoder` with a linear layer trained on `labeled` (every process takes part); checkpoints and the
    loss curve go to `out_dir`. A batch larger than the labels shrinks to fit them."""
    batch = batch_that_fits(settings.batch_size, len(labeled), accelerator.num_processes)
    settings = LinearEvalSettings(**{**settings.__dict__, "batch_size": batch})
    labels = labeled.labels.to(accelerator.device)
    model = LinearOnFrozenEncoder(encoder, labeled.num_classes)

    def supervised_loss(model: nn.Module, views: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return cross_entropy(model(views).float(), labels[rows])

    result = train_classifier(accelerator, model, labeled.images, supervised_loss, settings, out_dir, "linear-eval")
    return result.model
