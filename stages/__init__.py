"""The ML side of simclrv2-pipeline: models, losses, optimiser, augmentations and (later) the stage programs.

Nothing here imports `pipeline` or Prefect, so every stage runs alone under `python -m` or `accelerate launch`.
"""

from stages.data.augment import CenterCrop, CropFlipAugment, SimCLRAugment
from stages.losses import distillation_loss, nt_xent
from stages.models.heads import Classifier, ProjectionHead, SimCLRModel, build_classifier
from stages.models.resnet import build_encoder
from stages.optim.lars import LARS, lars_param_groups
from stages.optim.schedules import scale_learning_rate, warmup_cosine_scheduler

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
