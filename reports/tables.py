"""The report's tables and how each kind of number in them is written, so the same metric reads the same in the
Markdown page, the HTML page and the plot: accuracy per budget (with 95% intervals), labels and money saved (claimed
only for a significant improvement), each distilled student against its teacher, compute cost."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.manifest import split_instance, split_replicate
from reports.comparisons import BETTER, DIFFERENT_IMAGES, NO_PREDICTIONS, NOT_SIGNIFICANT, WORSE
from reports.compute_cost import TOTAL
from reports.inputs import KINDS, records
from reports.label_budget import LabelBudgetReport
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED
from reports.seeds import NOT_EVERY_SEED

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
NO_SAME_BUDGET_BASELINE = "no baseline with the same labels"
NO_TEACHER = "no teacher among the inputs"

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


def interval(low: float | None, high: float | None) -> str:
    """A 95% interval of an accuracy, in percent: "[50.6–59.3]"; "" when there is none."""
    return "" if low is None or high is None else f"[{100 * low:.1f}–{100 * high:.1f}]"


def accuracy(top1: float | None, low: float | None = None, high: float | None = None) -> str:
    """An accuracy with its 95% interval: "55.0% [50.6–59.3]" (without an interval: "55.0%")."""
    if top1 is None:
        return MISSING
    bounds = interval(low, high)
    return f"{percent(top1)} {bounds}" if bounds else percent(top1)


def difference(value: float | None, low: float | None = None, high: float | None = None) -> str:
    """A difference of two accuracies in percentage points, with its 95% interval when it was tested:
    "+15.0 points [+10.6, +19.3]"."""
    if value is None:
        return MISSING
    text = f"{100 * value:+.1f} points"
    return text if low is None or high is None else f"{text} [{100 * low:+.1f}, {100 * high:+.1f}]"


def p_value(p: float) -> str:
    """ "p < 0.001", "p = 0.0386" (three digits below 0.1, so 0.0496 never reads as 0.05), "p = 0.21"."""
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3g}" if p < 0.1 else f"p = {p:.2f}"


def significance(comparison: str | None, p: float | None, first: str, second: str, nothing: str) -> str:
    """The verdict of `first` against `second` (reports.comparisons) in words, with its p-value when tested."""
    if comparison == BETTER and p is not None:
        return f"{first} significantly better ({p_value(p)})"
    if comparison == WORSE and p is not None:
        return f"{second} significantly better ({p_value(p)})"
    if comparison == NOT_SIGNIFICANT and p is not None:
        return f"no significant difference ({p_value(p)})"
    if comparison == NO_PREDICTIONS:
        return "not tested (no per-image predictions)"
    if comparison == DIFFERENT_IMAGES:
        return "not tested (different test images)"
    if comparison == NOT_EVERY_SEED and p is not None:
        return f"{first} significantly better here ({p_value(p)}), but not in every subset seed: no claim"
    return nothing


def budget(name: str) -> str:
    """A budget name as people write it: "10pct" -> "10%", "12p5pct" -> "12.5%", "250labels" -> "250 labels";
    one subset seed's: "10pct-s1" -> "10% (seed 1)"."""
    plain, seed = split_replicate(name)
    if seed is not None and plain:
        return f"{budget(plain)} (seed {seed})"
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
    """One row per budget: labels, their cost, top-1 (with its 95% interval) and top-5 of each method (— where a
    method did not run)."""
    headers = ["Budget", "Labels", "Label cost"]
    headers += [f"{METHOD_NAMES[kind]} {metric}" for kind in KINDS for metric in ("top-1", "top-5")]
    models = {(model["kind"], model["budget"]): model for model in records(report.models)}
    rows = []
    for name, labels in report.budgets:
        row = [budget(name), count(labels), money(report.label_cost(labels), report.settings.currency)]
        for kind in KINDS:
            model = models.get((kind, name))
            if model is None:
                row += [MISSING, MISSING]
                continue
            row += [accuracy(model["test_top1"], model["test_top1_low"], model["test_top1_high"])]
            row += [percent(model["test_top5"])]
        rows.append(row)
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


def savings_table(report: LabelBudgetReport) -> Table:
    """One row per SimCLRv2 model: its difference from the baseline with the same labels and whether it is
    significant; only where it is significantly better, the labels the baseline needs for its top-1, and the labels,
    money and net amount saved."""
    headers = [
        "Model",
        "Budget",
        "Labels used",
        "Top-1",
        "Against the baseline (same labels)",
        "Significance",
        "Supervised baseline needs",
        "Labels saved",
        "Money saved",
        "Net saving",
    ]
    currency, rows = report.settings.currency, []
    for model in records(report.savings):
        supported = model["comparison"] == BETTER
        needed = labels_needed_text(model["labels_needed_kind"], model["baseline_labels_needed"])
        rows.append(
            [
                METHOD_NAMES[model["kind"]],
                budget(model["budget"]),
                count(model["num_labels"]),
                accuracy(model["test_top1"], model["test_top1_low"], model["test_top1_high"]),
                difference(model["difference"], model["difference_low"], model["difference_high"]),
                significance(model["comparison"], model["p_value"], "SimCLRv2", "baseline", NO_SAME_BUDGET_BASELINE),
                needed if supported else MISSING,
                count(model["labels_saved"]),
                money(model["money_saved"], currency),
                money(model["net_saving"], currency),
            ]
        )
    return Table(headers, rows, [False, False] + [True] * 3 + [False] + [True] * 4)


def teacher_table(report: LabelBudgetReport) -> Table:
    """One row per distilled student: its top-1 and its teacher's (the fine-tuned model with the same labels), the
    difference and whether it is significant."""
    headers = ["Budget", "Labels", "Student top-1", "Teacher top-1", "Student minus teacher", "Significance"]
    rows = [
        [
            budget(model["budget"]),
            count(model["num_labels"]),
            accuracy(model["test_top1"], model["test_top1_low"], model["test_top1_high"]),
            accuracy(model["teacher_test_top1"], model["teacher_test_top1_low"], model["teacher_test_top1_high"]),
            difference(model["teacher_difference"], model["teacher_difference_low"], model["teacher_difference_high"]),
            significance(model["teacher_comparison"], model["teacher_p_value"], "student", "teacher", NO_TEACHER),
        ]
        for model in records(report.students)
    ]
    return Table(headers, rows, [False] + [True] * 4 + [False])


def seed_table(summary: pd.DataFrame) -> Table:
    """One row per budget: each method's mean top-1 ± its standard deviation over the subset seeds."""
    headers = ["Budget", "Labels", "Seeds", *(f"{METHOD_NAMES[kind]} top-1, mean ± sd" for kind in KINDS)]
    cells = {(row["kind"], row["budget"]): row for row in records(summary)}
    rows = []
    for name in dict.fromkeys(summary.sort_values("num_labels", kind="stable")["budget"]):
        first = next(row for row in records(summary) if row["budget"] == name)
        row = [budget(name), count(first["num_labels"]), count(first["seeds"])]
        for kind in KINDS:
            cell = cells.get((kind, name))
            row.append(MISSING if cell is None else f"{percent(cell['mean_top1'])} ± {100 * cell['sd_top1']:.1f}")
        rows.append(row)
    return Table(headers, rows, [False] + [True] * (len(headers) - 1))


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
