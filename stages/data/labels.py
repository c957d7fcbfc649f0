"""The label of a training image that has none: split labels, label subsets and the distillation loss all use it."""

UNLABELED = -1
