"""The report's tables and how each kind of number in them is written, so the same metric reads the same in the
Markdown page, the HTML page and the plot: accuracy per budget, labels and money saved, compute cost."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.manifest import split_instance
from reports.compute_cost import TOTAL
from reports.inputs import KINDS, records
from reports.label_budget import LabelBudgetReport
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED

MISSING = "—"  # a model or number this run did not produce
METHOD_NAMES = {"baseline": "Supervised baseline", "finetune": "SimCLRv2 fine-tuned", "distill": "SimCLRv2 distilled"}
STAGE_NAMES = {
    "subsets": "Choosing the labeled images",
    "pretrain": "Pretraining on unlabeled images",
    "baseline": "Supervised baseline",
    "finetune": "Fine-tuning",
    "distill": "Distillation",
    "evaluate": "Evaluating the pretrained encoder",
    "predict": "Pre-labeling the unlabeled images",
    "select": "Choosing the images to label next",
}
DEVICE_NAMES = {"cuda": "GPU", "cpu": "CPU machine"}

# --- numbers: one function per kind, so the same metric reads the same everywhere ---------------------------------


def percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.1f}%"


def count(number: int | None) -> str:
    return MISSING if number is None else f"{number:,}"


def money(amount: float | None, currency: str) -> str:
    if amount is None:
        return MISSING
    # Cents would round a stage's few seconds of compute to 0.00: amounts under a cent keep four decimals.
    decimals = 2 if amount == 0 or abs(amount) >= 0.01 else 4
    return f"{amount:,.{decimals}f} {currency}"


def budget(name: str) -> str:
    """A budget name as people write it: "10pct" -> "10%", "12p5pct" -> "12.5%", "250labels" -> "250 labels"."""
    if name.endswith("pct"):
        return name.removesuffix("pct").replace("p", ".") + "%"
    if name.endswith("labels"):
        return name.removesuffix("labels") + " labels"
    return name


def device_hours(hours: float) -> str:
    return f"{hours:,.3f}"


def duration(seconds: float) -> str:
    """Wall time in the unit a reader grasps at once: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.2f} h"


def labels_needed_text(kind: str, labels: int | None) -> str:
    """The "labels the baseline needs" cell: an estimate, or the bound that replaces one (labels_needed's kinds)."""
    if kind == INTERPOLATED:
        return f"about {count(labels)}"
    if kind == AT_MOST:
        return f"at most {count(labels)} labels"
    if kind == BEYOND:
        return f"beyond the measured range (> {count(labels)} labels)"
    return "no baseline to compare with"


def stage_label(name: str) -> str:
    """ "finetune[10pct]" -> "Fine-tuning (10%)"."""
    kind, budget_name = split_instance(name)
    label = STAGE_NAMES.get(kind, kind)
    return f"{label} ({budget(budget_name)})" if budget_name else label


# --- tables ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]  # right-aligned columns


def accuracy_table(report: LabelBudgetReport) -> Table:
    """One row per budget: labels, their cost, top-1 and top-5 of each method (— where a method did not run)."""
    headers = ["Budget", "Labels", "Label cost"]
    headers += [f"{METHOD_NAMES[kind]} {metric}" for kind in KINDS for metric in ("top-1", "top-5")]
    models = {(model["kind"], model["budget"]): model for model in records(report.models)}
    rows = []
    for name, labels in report.budgets:
        row = [budget(name), count(labels), money(report.label_cost(labels), report.settings.currency)]
        for kind in KINDS:
            model = models.get((kind, name))
            row += [percent(model["test_top1"]), percent(model["test_top5"])] if model else [MISSING, MISSING]
        rows.append(row)
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def savings_table(report: LabelBudgetReport) -> Table:
    """One row per SimCLRv2 model: the labels the baseline needs for its top-1, and the labels and money saved."""
    headers = ["Model", "Budget", "Labels used", "Top-1", "Supervised baseline needs", "Labels saved", "Money saved"]
    rows = [
        [
            METHOD_NAMES[model["kind"]],
            budget(model["budget"]),
            count(model["num_labels"]),
            percent(model["test_top1"]),
            labels_needed_text(model["labels_needed_kind"], model["baseline_labels_needed"]),
            count(model["labels_saved"]),
            money(model["money_saved"], report.settings.currency),
        ]
        for model in records(report.savings)
    ]
    return Table(headers, rows, [False, False, True, True, True, True, True])


def compute_table(report: LabelBudgetReport) -> Table:
    """One row per stage instance, then the total."""
    currency, rows = report.settings.currency, []
    for stage in records(report.compute):
        total = stage["stage"] == TOTAL
        rows.append(
            [
                "Total (sum over stages)" if total else stage_label(stage["stage"]),
                "" if total else DEVICE_NAMES.get(stage["device"], stage["device"]),
                "" if total else count(stage["devices"]),
                duration(stage["wall_seconds"]),
                device_hours(stage["device_hours"]),
                money(stage["compute_cost"], currency),
            ]
        )
    return Table(["Stage", "Device", "Devices", "Wall time", "Device-hours", "Cost"], rows, [False, False] + [True] * 4)
