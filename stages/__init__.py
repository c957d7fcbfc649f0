"""The ML side of simclrv2-pipeline. Stage programs sit at the top (subsets, pretrain, finetune, distill, evaluate);
their building blocks live in subpackages by role: models, losses, optim, data, training, evaluation, benchmark.

Nothing here imports `pipeline` or Prefect, so every stage runs alone under `python -m` or `accelerate launch`.
The core API below is importable from `stages` directly; names load on first use, so that running one stage does
not import (or, for its code version, depend on) the building blocks it never uses.
"""

import importlib
from typing import Any

_CORE_API = {
    "CenterCrop": "stages.data.augment",
    "CropFlipAugment": "stages.data.augment",
    "SimCLRAugment": "stages.data.augment",
    "Classifier": "stages.models.heads",
    "ProjectionHead": "stages.models.heads",
    "SimCLRModel": "stages.models.heads",
    "build_classifier": "stages.models.heads",
    "build_encoder": "stages.models.resnet",
    "load_classifier": "stages.models.weights",
    "LARS": "stages.optim.lars",
    "lars_param_groups": "stages.optim.lars",
    "scale_learning_rate": "stages.optim.schedules",
    "warmup_cosine_scheduler": "stages.optim.schedules",
    "distillation_loss": "stages.losses.distillation",
    "nt_xent": "stages.losses.nt_xent",
}
__all__ = sorted(_CORE_API)


def __getattr__(name: str) -> Any:
    if name not in _CORE_API:
        raise AttributeError(f"module 'stages' has no attribute {name!r}")
    return getattr(importlib.import_module(_CORE_API[name]), name)
