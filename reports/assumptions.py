"""The report's assumptions in plain words: prices, data, and how each derived number is computed."""

from __future__ import annotations

from reports.formatting import count, money
from reports.report_data import LabelBudgetReport


def data_sentence(report: LabelBudgetReport) -> str:
    sizes = report.test_sizes
    test = (
        f"{count(sizes[0])} test images"
        if len(sizes) == 1
        else "test sets of different sizes (" + ", ".join(count(size) for size in sizes) + " images)"
    )
    train = f", {count(report.num_train)} training images" if report.num_train else ""
    classes = f", {count(report.num_classes)} classes" if report.num_classes else ""
    return (
        f"Dataset: {report.settings.dataset}{train}{classes}. Accuracy is measured on {test} that no model was "
        "trained on."
    )


def assumptions(report: LabelBudgetReport) -> list[str]:
    settings = report.settings
    lines = [
        f"One label costs {money(settings.cost_per_label, settings.currency)}; the cost of a budget is its number "
        "of labels times this price. Pretraining and distillation use unlabeled images, which cost nothing here.",
        f"One device-hour (one GPU, or one whole CPU machine, for an hour) costs "
        f"{money(settings.device_hour_price, settings.currency)}. A stage's compute cost is its wall-clock time x "
        "its number of devices x this price; storage, data transfer and people's time are not counted. A stage "
        "reused from an earlier run counts what it cost then.",
        data_sentence(report),
        "The supervised baseline is the same network trained from scratch on the same labels, without pretraining "
        "on the unlabeled images. The distilled student learns from the fine-tuned model on the unlabeled images, "
        "so it counts the same labels as that model.",
        "Labels the baseline needs: the baseline was measured at a few label budgets; between two of them its "
        "accuracy is taken to change along a straight line against the logarithm of the number of labels (so 100 "
        "labels lies halfway between 10 and 1,000), and the estimate is rounded up to a whole label. Above the best "
        'measured baseline accuracy the answer is "beyond the measured range" (it is not extrapolated); at or '
        'below the baseline\'s accuracy at its smallest budget it is "at most" that many labels, and no saving is '
        "claimed.",
    ]
    if not report.baseline_monotone:
        lines.append(
            "The baseline's accuracy did not always rise with more labels in this run. For the labels it needs, "
            "each budget's baseline accuracy is replaced by the best accuracy it reached with at most that many "
            "labels."
        )
    return lines
