"""Losses, one per file: nt_xent.py (contrastive pretraining), distillation.py (teacher -> student)."""
