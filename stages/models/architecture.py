"""The encoder architecture of a run (`EncoderConfig`) and the networks built from it.

Every stage that makes or rebuilds a network goes through here: pretrain builds `build_pretrain_model(config)`, the
supervised baseline and distill's student start from `classifier_for(config, ...)`, and stages/models/weights.py
rebuilds either from the architecture stored in a weights file's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

from stages.models.heads import Classifier, ProjectionHead, SimCLRModel, build_classifier
from stages.models.resnet import build_encoder


@dataclass(frozen=True)
class EncoderConfig:
    depth: int = 18
    width: float = 0.25
    sk: bool = False
    small_images: bool = True
    head_layers: int = 3


def build_pretrain_model(config: EncoderConfig) -> SimCLRModel:
    """A fresh encoder + projection head of this architecture."""
    encoder = build_encoder(config.depth, config.width, config.sk, config.small_images)
    return SimCLRModel(encoder, ProjectionHead(encoder.out_dim, config.head_layers))


def classifier_for(architecture: EncoderConfig, proj_selector: int, num_classes: int) -> Classifier:
    """A fresh classifier of this shape: encoder, `proj_selector` head layers (none for 0), zero-init linear layer."""
    encoder = build_encoder(architecture.depth, architecture.width, architecture.sk, architecture.small_images)
    head = ProjectionHead(encoder.out_dim, architecture.head_layers) if proj_selector > 0 else None
    return build_classifier(encoder, head, num_classes, proj_selector)
