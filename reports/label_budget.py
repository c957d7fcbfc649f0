"""Everything the label-budget report says, computed once from the stage manifests; the text, pages, CSV and plot
only format it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.manifest import split_instance
from reports.comparisons import with_comparisons
from reports.compute_cost import compute_costs
from reports.inputs import EncoderResult, ReportSettings, encoder_result, model_table, stage_table
from reports.labels_needed import SIMCLR_KINDS, baseline_points, is_monotone, with_savings
from reports.seeds import require_every_seed

if TYPE_CHECKING:  # reports.prelabeling formats its section with reports.tables, which imports this module
    from reports.prelabeling import Prelabeling


@dataclass(frozen=True)
class LabelBudgetReport:
    settings: ReportSettings
    # inputs.MODEL_COLUMNS + comparisons' INTERVAL_, COMPARISON_ and TEACHER_COLUMNS + labels_needed.SAVING_COLUMNS,
    # one row per model, by labels
    models: pd.DataFrame
    encoder: EncoderResult | None
    compute: pd.DataFrame  # inputs.STAGE_COLUMNS + compute_cost.COST_COLUMNS, one row per stage, then the total
    num_train: int | None
    num_classes: int | None
    prelabeling: Prelabeling | None = None  # the predict stage's pre-labels; None without that stage
    num_labeled: int | None = None  # training images with a label (the rest are unlabeled), when some lack one
    test_labels_held_out: int = 0  # labels the test split took from the team's labels (partly labeled data)
    validation_slice: bool = False  # evaluated on a validation slice of the training images, not the test split
    without_predictions: tuple[str, ...] = ()  # models whose stage directory has no test_predictions.csv

    @property
    def savings(self) -> pd.DataFrame:
        """The fine-tuned and distilled models: the rows that compare with the baseline."""
        return self.models[self.models["kind"].isin(SIMCLR_KINDS)]

    @property
    def students(self) -> pd.DataFrame:
        """The distilled models: the rows that compare with their teacher."""
        return self.models[self.models["kind"] == "distill"]

    @property
    def baseline_monotone(self) -> bool:
        return is_monotone(baseline_points(self.models))

    @property
    def budgets(self) -> list[tuple[str, int]]:
        """(budget name, labels) of every budget some model was trained with, by labels."""
        pairs = zip(self.models["budget"], self.models["num_labels"].tolist(), strict=True)
        return sorted(set(pairs), key=lambda b: (b[1], b[0]))

    @property
    def test_sizes(self) -> list[int]:
        """The distinct test set sizes (one, unless stages evaluated on different test sets)."""
        sizes = set(self.models["num_test"].dropna().tolist()) | {self.encoder.num_test if self.encoder else None}
        return sorted(size for size in sizes if size is not None)

    def label_cost(self, num_labels: int) -> float:
        return num_labels * self.settings.cost_per_label


def assemble(
    manifests: Mapping[str, dict],
    settings: ReportSettings,
    prelabeling: Prelabeling | None = None,
    predictions: Mapping[str, pd.Series] | None = None,
) -> LabelBudgetReport:
    """`predictions`: inputs.model_predictions, the per-image right/wrong of the models that have them; without them
    (None, or a model missing) no difference is tested and no saving claimed."""
    subsets = next(  # with several subset seeds, subsets[s0] ...: they describe the same training images
        (m["metrics"] for name, m in manifests.items() if split_instance(name)[0] == "subsets"), {}
    )
    compute = compute_costs(stage_table(manifests), settings.device_hour_price)
    models = require_every_seed(with_comparisons(model_table(manifests), predictions or {}))
    return LabelBudgetReport(
        settings=settings,
        models=with_savings(models, settings.cost_per_label, compute),
        encoder=encoder_result(manifests),
        compute=compute,
        num_train=subsets.get("num_train"),
        num_classes=subsets.get("num_classes"),
        prelabeling=prelabeling,
        num_labeled=subsets.get("num_labeled"),
        test_labels_held_out=subsets.get("test_labels_held_out", 0),
        validation_slice=subsets.get("validation_slice", False),
        without_predictions=tuple(stage for stage in models["stage"] if stage not in (predictions or {})),
    )
