"""The report's words: the headline, the notes and assumptions of each section (shared by the Markdown and HTML
pages, so both say the same), and the Markdown page (`report.md`). Tables and number formats: reports/tables.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reports.inputs import records
from reports.label_budget import LabelBudgetReport
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED
from reports.prelabeling import prelabel_headline, prelabel_notes, prelabel_table
from reports.tables import (
    Table,
    accuracy_table,
    compute_table,
    count,
    money,
    percent,
    savings_table,
)

TITLE = "Label-budget report"
PLOT_FILE = "accuracy_vs_labels.png"
PLOT_ALT = "Top-1 accuracy against number of labels, one line per method"
PRELABEL_TITLE = "Pre-labels for the unlabeled images"
MODEL_NAMES = {"finetune": "the fine-tuned model", "distill": "the distilled model"}  # in the headline
TOP_K_NOTE = (
    "Top-1: the share of test images whose most likely class is the right one. Top-5: the share where the right "
    "class is among the model's five best guesses."
)
SAVINGS_NOTE = (
    "Labels saved = labels the supervised baseline needs for the same top-1 accuracy minus the labels the SimCLRv2 "
    "model used (a negative number: the baseline needs fewer). It is given only where the need falls between two "
    "measured baseline budgets; at or beyond the ends of the measured range no saving is claimed."
)


# --- the headline ---------------------------------------------------------------------------------------------------


def headline_model(savings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """At the smallest budget: the distilled student if it beats the fine-tuned model, else the fine-tuned model."""
    fewest = min(model["num_labels"] for model in savings)
    at_fewest = {model["kind"]: model for model in savings if model["num_labels"] == fewest}
    finetune, distill = at_fewest.get("finetune"), at_fewest.get("distill")
    if distill is not None and (finetune is None or distill["test_top1"] > finetune["test_top1"]):
        return distill
    assert finetune is not None  # the fewest labels belong to some model: the student, or else the fine-tuned one
    return finetune


def comparison(model: dict[str, Any], currency: str) -> str:
    """What supervised training needs for the same accuracy, in the wording of `labels_needed`'s kinds."""
    kind, needed, saved = model["labels_needed_kind"], model["baseline_labels_needed"], model["labels_saved"]
    if kind == INTERPOLATED:
        text = f"supervised training needs about {count(needed)} labels for that"
        if saved is not None and saved > 0:
            text += f" ({count(saved)} more, {money(model['money_saved'], currency)})"
        return text
    if kind == AT_MOST:
        return f"supervised training reaches that with at most {count(needed)} labels, so no labels are saved"
    if kind == BEYOND:
        return f"supervised training does not reach that within the measured range (> {count(needed)} labels)"
    return "no supervised baseline was trained to compare with"


def headline(savings: Sequence[dict[str, Any]], currency: str) -> str:
    """One line: what the best SimCLRv2 model does with the fewest labels, against supervised training. `savings`:
    records of the fine-tuned and distilled models (LabelBudgetReport.savings)."""
    if not savings:
        return "This run trained no SimCLRv2 model, so there is nothing to compare with supervised training."
    model = headline_model(savings)
    reaches = f"With {count(model['num_labels'])} labels {MODEL_NAMES[model['kind']]} reaches"
    return f"{reaches} {percent(model['test_top1'])}; {comparison(model, currency)}."


def report_headline(report: LabelBudgetReport) -> str:
    return headline(records(report.savings), report.settings.currency)


def headlines(report: LabelBudgetReport) -> list[str]:
    """What the top of both pages says: the label-budget headline, then the pre-labeling one when the run made
    pre-labels."""
    lines = [report_headline(report)]
    if report.prelabeling is not None:
        lines.append(prelabel_headline(report.prelabeling))
    return lines


# --- notes ----------------------------------------------------------------------------------------------------------


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


# --- assumptions: the settings and how each derived number is computed, in plain words ------------------------------


def data_sentence(report: LabelBudgetReport) -> str:
    sizes = report.test_sizes
    test = (
        f"{count(sizes[0])} test images"
        if len(sizes) == 1
        else "test sets of different sizes (" + ", ".join(count(size) for size in sizes) + " images)"
    )
    train = f", {count(report.num_train)} training images" if report.num_train else ""
    if report.num_train and report.num_labeled is not None and report.num_labeled < report.num_train:
        train += f" ({count(report.num_labeled)} of them with a label that training may use)"
    classes = f", {count(report.num_classes)} classes" if report.num_classes else ""
    sentence = (
        f"Dataset: {report.settings.dataset}{train}{classes}. Accuracy is measured on {test} that no model was "
        "trained on."
    )
    if report.test_labels_held_out:
        sentence += (
            f" The data has no test split of its own, so {count(report.test_labels_held_out)} of your labeled images "
            "were held out as the test split; their labels train nothing (the images still help pretraining and "
            "distillation, unlabeled, like every other image)."
        )
    return sentence


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


# --- sections and the Markdown page ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    title: str
    table: Table | None = None
    notes: tuple[str, ...] = ()
    plot: bool = False  # the accuracy plot goes after the notes
    bullets: tuple[str, ...] = ()


def sections(report: LabelBudgetReport) -> list[Section]:
    """The report's sections in order, as both pages show them."""
    encoder, prelabeling = encoder_note(report), report.prelabeling
    return [
        Section("Accuracy per label budget", accuracy_table(report), (TOP_K_NOTE, *([encoder] if encoder else []))),
        Section("Accuracy against number of labels", plot=True),
        Section("Labels the supervised baseline would need", savings_table(report), (SAVINGS_NOTE,)),
        *(
            [Section(PRELABEL_TITLE, prelabel_table(prelabeling), prelabel_notes(prelabeling))]
            if prelabeling is not None
            else []
        ),
        Section("Compute cost", compute_table(report)),
        Section("Assumptions", bullets=tuple(assumptions(report))),
    ]


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> list[str]:
    rule = ["---:" if numeric else ":---" for numeric in table.numeric]
    rows = [table.headers, rule, *table.rows]
    return ["| " + " | ".join(markdown_cell(text) for text in row) + " |" for row in rows]


def markdown_section(section: Section) -> list[str]:
    lines = [f"## {section.title}", ""]
    if section.table is not None:
        lines += [*markdown_table(section.table), ""]
    for note in section.notes:
        lines += [note, ""]
    if section.plot:
        lines += [f"![{PLOT_ALT}]({PLOT_FILE})", ""]
    if section.bullets:
        lines += [*(f"- {bullet}" for bullet in section.bullets), ""]
    return lines


def render_markdown(report: LabelBudgetReport) -> str:
    """`report.md`: the headlines, then every section; the plot is linked as PLOT_FILE next to it."""
    lines = [f"# {TITLE}", ""]
    for line in headlines(report):
        lines += [f"**{line}**", ""]
    for section in sections(report):
        lines += markdown_section(section)
    return "\n".join(lines)
