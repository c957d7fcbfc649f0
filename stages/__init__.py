"""The ML side of simclrv2-pipeline: models, losses, optimiser, augmentations and (later) the stage programs.

Nothing here imports `pipeline` or Prefect, so every stage runs alone under `python -m` or `accelerate launch`.
"""

from stages.augment import CenterCrop, CropFlipAugment, SimCLRAugment
from stages.heads import Classifier, ProjectionHead, SimCLRModel, build_classifier
from stages.lars import LARS, lars_param_groups
from stages.losses import distillation_loss, nt_xent
from stages.resnet import build_encoder
from stages.schedules import scale_learning_rate, warmup_cosine_scheduler

__all__ = [
    "LARS",
    "CenterCrop",
    "Classifier",
    "CropFlipAugment",
    "ProjectionHead",
    "SimCLRAugment",
    "SimCLRModel",
    "build_classifier",
    "build_encoder",
    "distillation_loss",
    "lars_param_groups",
    "nt_xent",
    "scale_learning_rate",
    "warmup_cosine_scheduler",
]
