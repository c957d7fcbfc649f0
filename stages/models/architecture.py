"""The encoder architecture of a run (`EncoderConfig`) and the networks built from it.

Every stage that makes or rebuilds a network goes through here: pretrain builds `build_pretrain_model(config)`, the
supervised baseline and distill's student start from `classifier_for(config, ...)`, and stages/models/weights.py
rebuilds either from the architecture stored in a weights file's metadata.
"""

from __future__ import annotations

from typing import Annotated, Self

from annotated_types import Ge
from pydantic import StrictBool, StrictFloat, StrictInt, model_validator

from stages.config_schema import config_dataclass
from stages.models.heads import Classifier, ProjectionHead, SimCLRModel, build_classifier
from stages.models.resnet import build_encoder, check_architecture


@config_dataclass
class EncoderConfig:
    depth: StrictInt = 18
    """ResNet depth: 18 or 34 (basic blocks), 50, 101, 152 or 200 (bottleneck blocks)"""
    width: StrictFloat = 0.25
    """channel multiplier > 0: 1, 2, 3 in the paper, fractions for small models"""
    sk: StrictBool = False
    """Selective Kernels with the ResNet-D stem and shortcut (bottleneck depths only)"""
    small_images: StrictBool = True
    """the 3x3 stride-1 stem without max-pool, for images of 32 px or less"""
    head_layers: Annotated[StrictInt, Ge(1)] = 3
    """layers of the projection head (3 in SimCLRv2)"""

    @model_validator(mode="after")
    def _an_encoder_that_exists(self) -> Self:
        check_architecture(self.depth, self.width, self.sk)
        return self


def build_pretrain_model(config: EncoderConfig) -> SimCLRModel:
    """A fresh encoder + projection head of this architecture."""
    encoder = build_encoder(config.depth, config.width, config.sk, config.small_images)
    return SimCLRModel(encoder, ProjectionHead(encoder.out_dim, config.head_layers))


def classifier_for(architecture: EncoderConfig, proj_selector: int, num_classes: int) -> Classifier:
    """A fresh classifier of this shape: encoder, `proj_selector` head layers (none for 0), zero-init linear layer."""
    encoder = build_encoder(architecture.depth, architecture.width, architecture.sk, architecture.small_images)
    head = ProjectionHead(encoder.out_dim, architecture.head_layers) if proj_selector > 0 else None
    return build_classifier(encoder, head, num_classes, proj_selector)
