"""Losses, one per file."""

from stages.losses.distillation import distillation_loss
from stages.losses.nt_xent import nt_xent

__all__ = ["distillation_loss", "nt_xent"]
