"""Everything the label-budget report says, computed once from the stage manifests; the Markdown, HTML, CSV and plot
only format it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reports.compute_cost import StageCost, compute_costs, total_cost
from reports.headline import headline
from reports.labels_needed import Point, is_monotone
from reports.results import EncoderResult, ModelResult, baseline_points, encoder_result, model_results
from reports.savings import Saving, savings
from reports.settings import ReportSettings


@dataclass(frozen=True)
class LabelBudgetReport:
    settings: ReportSettings
    results: list[ModelResult]  # by labels, then baseline, fine-tuned, distilled
    encoder: EncoderResult | None
    baseline: list[Point]  # the curve "labels needed" is read from
    savings: list[Saving]  # one per fine-tuned or distilled model
    costs: list[StageCost]  # one per stage instance
    total: StageCost
    num_train: int | None
    num_classes: int | None
    headline: str

    @property
    def baseline_monotone(self) -> bool:
        return is_monotone(self.baseline)

    @property
    def budgets(self) -> list[tuple[str, int]]:
        """(budget name, labels) of every budget some model was trained with, by labels."""
        return sorted({(r.budget, r.num_labels) for r in self.results}, key=lambda b: (b[1], b[0]))

    @property
    def test_sizes(self) -> list[int]:
        """The distinct test set sizes (one, unless stages evaluated on different test sets)."""
        sizes = {r.num_test for r in self.results} | {self.encoder.num_test if self.encoder else None}
        return sorted(size for size in sizes if size is not None)

    def label_cost(self, num_labels: int) -> float:
        return num_labels * self.settings.cost_per_label

    def result(self, kind: str, budget: str) -> ModelResult | None:
        return next((r for r in self.results if r.kind == kind and r.budget == budget), None)


def assemble(manifests: Mapping[str, dict], settings: ReportSettings) -> LabelBudgetReport:
    results = model_results(manifests)
    baseline = baseline_points(results)
    saved = savings(results, baseline, settings.cost_per_label)
    costs = compute_costs(manifests, settings.device_hour_price)
    subsets = manifests.get("subsets", {}).get("metrics", {})
    return LabelBudgetReport(
        settings=settings,
        results=results,
        encoder=encoder_result(manifests),
        baseline=baseline,
        savings=saved,
        costs=costs,
        total=total_cost(costs),
        num_train=subsets.get("num_train"),
        num_classes=subsets.get("num_classes"),
        headline=headline(saved, settings.currency),
    )
