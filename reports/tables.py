"""The report's tables and notes as display strings, shared by the Markdown and HTML pages so both say the same."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.manifest import split_instance
from reports.compute_cost import StageCost
from reports.formatting import MISSING, budget, count, device_hours, duration, labels_needed_text, money, percent
from reports.report_data import LabelBudgetReport
from reports.results import KINDS

METHOD_NAMES = {"baseline": "Supervised baseline", "finetune": "SimCLRv2 fine-tuned", "distill": "SimCLRv2 distilled"}
STAGE_NAMES = {
    "subsets": "Choosing the labeled images",
    "pretrain": "Pretraining on unlabeled images",
    "baseline": "Supervised baseline",
    "finetune": "Fine-tuning",
    "distill": "Distillation",
    "evaluate": "Evaluating the pretrained encoder",
}
DEVICE_NAMES = {"cuda": "GPU", "cpu": "CPU machine"}


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns


def accuracy_table(report: LabelBudgetReport) -> Table:
    """One row per budget: labels, their cost, top-1 and top-5 of each method (— where a method did not run)."""
    headers = ["Budget", "Labels", "Label cost"]
    headers += [f"{METHOD_NAMES[kind]} {metric}" for kind in KINDS for metric in ("top-1", "top-5")]
    rows = []
    for name, labels in report.budgets:
        row = [budget(name), count(labels), money(report.label_cost(labels), report.settings.currency)]
        for kind in KINDS:
            result = report.result(kind, name)
            row += [percent(result.top1), percent(result.top5)] if result else [MISSING, MISSING]
        rows.append(row)
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def savings_table(report: LabelBudgetReport) -> Table:
    """One row per SimCLRv2 model: the labels the baseline needs for its top-1, and the labels and money saved."""
    headers = ["Model", "Budget", "Labels used", "Top-1", "Supervised baseline needs", "Labels saved", "Money saved"]
    rows = [
        [
            METHOD_NAMES[s.result.kind],
            budget(s.result.budget),
            count(s.result.num_labels),
            percent(s.result.top1),
            labels_needed_text(s.needed),
            count(s.labels_saved),
            money(s.money_saved, report.settings.currency),
        ]
        for s in report.savings
    ]
    return Table(headers, rows, [False, False, True, True, True, True, True])


def stage_label(name: str) -> str:
    kind, budget_name = split_instance(name)
    label = STAGE_NAMES.get(kind, kind)
    return f"{label} ({budget(budget_name)})" if budget_name else label


def cost_row(cost: StageCost, currency: str) -> list[str]:
    return [
        stage_label(cost.stage),
        DEVICE_NAMES.get(cost.device, cost.device),
        count(cost.devices),
        duration(cost.wall_seconds),
        device_hours(cost.device_hours),
        money(cost.cost, currency),
    ]


def compute_table(report: LabelBudgetReport) -> Table:
    """One row per stage instance, then the total."""
    currency = report.settings.currency
    rows = [cost_row(cost, currency) for cost in report.costs]
    total = report.total
    hours, cost = device_hours(total.device_hours), money(total.cost, currency)
    rows.append(["Total (sum over stages)", "", "", duration(total.wall_seconds), hours, cost])
    return Table(["Stage", "Device", "Devices", "Wall time", "Device-hours", "Cost"], rows, [False, False] + [True] * 4)


def encoder_note(report: LabelBudgetReport) -> str | None:
    """The pretrained encoder's accuracy: one number for every budget, and why."""
    encoder = report.encoder
    if encoder is None or encoder.linear_probe_top1 is None:
        return None
    fitted = f"all {count(encoder.num_train)} training labels" if encoder.num_train else "all training labels"
    knn = f", nearest neighbours (kNN) {percent(encoder.knn_top1)}" if encoder.knn_top1 is not None else ""
    return (
        f"Pretrained encoder alone: linear probe {percent(encoder.linear_probe_top1)}{knn}. This is one number, the "
        f"same for every budget: a simple classifier on the pretrained features, fitted with {fitted}. It shows how "
        "good the features learned without labels are, not what a label budget buys."
    )


SAVINGS_NOTE = (
    "Labels saved = labels the supervised baseline needs for the same top-1 accuracy minus the labels the SimCLRv2 "
    "model used (a negative number: the baseline needs fewer). It is given only where the need falls between two "
    "measured baseline budgets; at or beyond the ends of the measured range no saving is claimed."
)
TOP_K_NOTE = (
    "Top-1: the share of test images whose most likely class is the right one. Top-5: the share where the right "
    "class is among the model's five best guesses."
)
