"""The report's words: the headline, the notes and assumptions of each section (shared by the Markdown and HTML
pages, so both say the same), and the Markdown page (`report.md`). Tables and number formats: reports/tables.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reports.comparisons import BETTER, DIFFERENT_IMAGES, NO_PREDICTIONS, NOT_SIGNIFICANT, WORSE
from reports.inputs import TEST_PREDICTIONS, records
from reports.label_budget import LabelBudgetReport
from reports.labels_needed import AT_MOST, BEYOND
from reports.prelabeling import prelabel_headline, prelabel_notes, prelabel_table
from reports.seeds import seed_summary
from reports.statistics import SIGNIFICANCE_LEVEL, Z_95, accuracy_interval
from reports.tables import (
    Table,
    accuracy,
    accuracy_table,
    compute_table,
    count,
    money,
    p_value,
    savings_table,
    seed_table,
    teacher_table,
)

TITLE = "Label-budget report"
LEVEL = f"{SIGNIFICANCE_LEVEL:g}"  # 0.05, as the text writes it
PLOT_FILE = "accuracy_vs_labels.png"
PLOT_ALT = "Top-1 accuracy against number of labels, one line per method, with 95% intervals"
PRELABEL_TITLE = "Pre-labels for the unlabeled images"
MODEL_NAMES = {"finetune": "the fine-tuned model", "distill": "the distilled model"}  # in the headline
TOP_K_NOTE = (
    "Top-1: the share of test images whose most likely class is the right one. Top-5: the share where the right "
    "class is among the model's five best guesses. The bracket after a top-1 is its 95% interval: the range the "
    "accuracy on all such images plausibly lies in, given how few test images measured it."
)
SAVINGS_NOTE = (
    "Each SimCLRv2 model is first compared with the supervised baseline trained on the same labels, image by image on "
    "the same test images. A saving is claimed only where the SimCLRv2 model is significantly better (p < "
    f"{LEVEL}, Holm-adjusted over every such comparison in the report); "
    "elsewhere the row says why, and no labels or money saved are claimed. Labels saved = labels the supervised "
    "baseline needs for the same top-1 accuracy minus the labels the SimCLRv2 model used (a negative number: the "
    "baseline needs fewer). It is given only where the need falls between two measured baseline budgets; at or "
    "beyond the ends of the measured range no saving is claimed. Net saving = money saved minus the extra compute "
    "the SimCLRv2 route cost (see the assumptions)."
)
TEACHER_TITLE = "Distilled student against its teacher"
TEACHER_NOTE = (
    "The teacher is the fine-tuned model with the same labels; the student learned from it on the unlabeled images. "
    "Both are tested on the same test images: the difference is the student's top-1 minus the teacher's, with its "
    f"95% interval, and it is significant when p < {LEVEL}. A student that is not significantly worse does as well as "
    "its teacher, as far as this test set can tell."
)
NO_SAVING = "this run supports no label saving"
SEEDS_TITLE = "Across subset seeds"
SEEDS_NOTE = (
    "Each budget was drawn with several subset seeds and every model trained once per seed: the mean top-1 and its "
    "standard deviation over the seeds (how much the choice of labeled images moves the result). A saving is claimed "
    "only when the model is significantly better than the baseline in every seed."
)


# --- the headline ---------------------------------------------------------------------------------------------------


def accuracy_of(model: dict[str, Any]) -> str:
    return accuracy(model["test_top1"], model["test_top1_low"], model["test_top1_high"])


def supported(model: dict[str, Any]) -> bool:
    """A saving this run's statistics support: significantly better than the baseline with the same labels, and the
    baseline needs more labels for the same accuracy (labels_saved is None otherwise, see labels_needed.saving)."""
    return model["comparison"] == BETTER and model["labels_saved"] is not None and model["labels_saved"] > 0


def best_supported(savings: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The supported saving with the largest net saving (an unknown net last; ties: the most money saved, then the
    fewest labels); None when no saving is supported."""
    claims = [model for model in savings if supported(model)]

    def rank(model: dict[str, Any]) -> tuple:
        net = model["net_saving"]
        return net is not None, net if net is not None else 0.0, model["money_saved"], -model["num_labels"]

    return max(claims, key=rank, default=None)


def headline_model(savings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Without a supported saving, the model the headline describes: among those significantly better than the
    baseline (else among all), at the smallest budget, the distilled student if it beats the fine-tuned model, else
    the fine-tuned model."""
    pool = [model for model in savings if model["comparison"] == BETTER] or list(savings)
    fewest = min(model["num_labels"] for model in pool)
    at_fewest = {model["kind"]: model for model in pool if model["num_labels"] == fewest}
    finetune, distill = at_fewest.get("finetune"), at_fewest.get("distill")
    if distill is not None and (finetune is None or distill["test_top1"] > finetune["test_top1"]):
        return distill
    assert finetune is not None  # the fewest labels belong to some model: the student, or else the fine-tuned one
    return finetune


def net_text(model: dict[str, Any], currency: str) -> str:
    extra, net = model["extra_compute_cost"], model["net_saving"]
    if extra is None or net is None:
        return "the extra compute of the SimCLRv2 route is not among this report's inputs, so there is no net figure"
    if net >= 0:
        return f"net of the extra compute ({money(extra, currency)}), that saves {money(net, currency)}"
    return f"but the extra compute ({money(extra, currency)}) costs more than that: net {money(net, currency)}"


def claim(model: dict[str, Any], baseline: dict[str, Any], currency: str) -> str:
    """The headline of a supported saving."""
    return (
        f"With {count(model['num_labels'])} labels {MODEL_NAMES[model['kind']]} reaches {accuracy_of(model)}, "
        f"significantly better than the supervised baseline with the same labels at {accuracy_of(baseline)} "
        f"({p_value(model['p_value'])}); supervised training needs about {count(model['baseline_labels_needed'])} "
        f"labels for that ({count(model['labels_saved'])} more, {money(model['money_saved'], currency)}); "
        f"{net_text(model, currency)}."
    )


def no_claim(model: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """The headline when the statistics support no saving: what the model and the baseline reach, and why."""
    name, labels, verdict = MODEL_NAMES[model["kind"]], count(model["num_labels"]), model["comparison"]
    with_labels = f"with {labels} labels"
    if baseline is None:
        return (
            f"With {labels} labels {name} reaches {accuracy_of(model)}; no supervised baseline was trained with the "
            f"same labels to compare with, so {NO_SAVING}."
        )
    both = f"{name} reaches {accuracy_of(model)} and the supervised baseline {accuracy_of(baseline)}"
    if verdict == NOT_SIGNIFICANT:
        return f"No significant difference: {with_labels} {both} ({p_value(model['p_value'])}); {NO_SAVING}."
    if verdict == WORSE:
        return (
            f"The supervised baseline is significantly better: {with_labels} it reaches {accuracy_of(baseline)} and "
            f"{name} {accuracy_of(model)} ({p_value(model['p_value'])}); {NO_SAVING}."
        )
    if verdict == BETTER:
        better = (
            f"With {labels} labels {name} reaches {accuracy_of(model)}, significantly better than the supervised "
            f"baseline with the same labels at {accuracy_of(baseline)} ({p_value(model['p_value'])})"
        )
        kind, needed = model["labels_needed_kind"], count(model["baseline_labels_needed"])
        if kind == BEYOND:
            return (
                f"{better}; supervised training does not reach that within the measured range (> {needed} labels), "
                "so this run cannot say how many labels that saves."
            )
        if kind == AT_MOST:
            return f"{better}; yet supervised training reaches that with at most {needed} labels, so {NO_SAVING}."
        return f"{better}; yet supervised training needs only about {needed} labels for that, so {NO_SAVING}."
    if verdict == DIFFERENT_IMAGES:
        return f"With {labels} labels {both}, but they were tested on different images; {NO_SAVING}."
    untested = "but without per-image test predictions the difference was not tested"
    return f"With {labels} labels {both}, {untested}; {NO_SAVING}."


def headline(models: Sequence[dict[str, Any]], currency: str) -> str:
    """One line: the best saving this run's statistics support (the largest net saving among the SimCLRv2 models
    significantly better than the baseline with the same labels), or, when none is, plainly that none is and why.
    `models`: records of every model (LabelBudgetReport.models)."""
    savings = [model for model in models if model["kind"] in MODEL_NAMES]
    if not savings:
        return "This run trained no SimCLRv2 model, so there is nothing to compare with supervised training."
    stages = {model["stage"]: model for model in models}
    best = best_supported(savings)
    if best is not None:
        return claim(best, stages[best["compared_with"]], currency)
    model = headline_model(savings)
    return no_claim(model, stages.get(model["compared_with"]) if model["compared_with"] else None)


def report_headline(report: LabelBudgetReport) -> str:
    return headline(records(report.models), report.settings.currency)


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
    if encoder is None or encoder.linear_eval_top1 is None:
        return None
    fitted = f"all {count(encoder.num_train)} training labels" if encoder.num_train else "all training labels"
    probe = accuracy(encoder.linear_eval_top1, *accuracy_interval(encoder.linear_eval_top1, encoder.num_test))
    knn_top1 = encoder.knn_top1
    knn = (
        f", nearest neighbours (kNN) {accuracy(knn_top1, *accuracy_interval(knn_top1, encoder.num_test))}"
        if knn_top1 is not None
        else ""
    )
    return (
        f"Pretrained encoder alone: linear evaluation {probe}{knn}. This is one number, the "
        f"same for every budget: a linear layer on the frozen pretrained features, trained with {fitted}. It shows how "
        "good the features learned without labels are, not what a label budget buys."
    )


def untested_note(report: LabelBudgetReport) -> str | None:
    """Which comparisons could not be tested for want of per-image predictions (runs from before they were
    written), and what that means for the savings."""
    models = records(report.models)
    verdicts = {model[column] for model in models for column in ("comparison", "teacher_comparison")}
    if NO_PREDICTIONS not in verdicts:
        return None
    return (
        f"Not tested: {', '.join(report.without_predictions)} left no per-image test predictions ({TEST_PREDICTIONS}; "
        "the stages ran before they wrote it), so the comparisons that need them were not tested and no saving is "
        "claimed for those models. A new run of those stages writes the file."
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
    if report.validation_slice:
        return sentence + (
            " These are a validation slice of the training images (`data.validation_fraction`), for choosing "
            "settings: the test split was not used, so every figure here estimates accuracy before the test."
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
    lines += statistics_assumptions(report)
    if not report.baseline_monotone:
        lines.append(
            "The baseline's accuracy did not always rise with more labels in this run. For the labels it needs, "
            "each budget's baseline accuracy is replaced by the best accuracy it reached with at most that many "
            "labels."
        )
    return lines


def statistics_assumptions(report: LabelBudgetReport) -> list[str]:
    """How the intervals, the significance rule and the net saving are computed, in plain words."""
    sizes = report.test_sizes
    spread = (
        f" With {count(sizes[0])} test images, an accuracy near 50% is known only to within about "
        f"±{100 * Z_95 * (0.25 / sizes[0]) ** 0.5:.1f} points."
        if sizes
        else ""
    )
    return [
        "Every accuracy is measured on a limited number of test images, so it comes with its 95% interval (the "
        f"Wilson score interval): the range that plausibly holds the accuracy on all such images.{spread}",
        "Two models tested on the same images are compared image by image: only the images one model gets right and "
        "the other wrong tell them apart. The p-value (exact McNemar test) is the chance of a split at least this "
        "lopsided if both models were in fact equally good; a difference is significant when p < "
        f"{LEVEL}. The 95% interval of a difference is Newcombe's score interval for paired proportions. A saving is "
        "claimed only for a SimCLRv2 model significantly better than the baseline trained on the same labels. With "
        "two SimCLRv2 models, several budgets and seeds compared, one of them would pass by chance now and then, so "
        "the p-values against the baseline are Holm-adjusted over all of those comparisons: the chance that any claim "
        f"in this report is a false one stays below {LEVEL} (the intervals are not adjusted).",
        "Net saving: the money saved on labels minus the extra compute the SimCLRv2 route cost: pretraining (counted "
        "in full for each budget, although one pretraining serves them all), that budget's fine-tuning and, for the "
        "distilled model, its distillation, minus the compute of the supervised baseline trained on the same labels. "
        "The baseline trained on the larger number of labels it would need was not run; it would probably cost at "
        "least as much compute as the one measured, so the net saving errs on the cautious side. A negative net "
        "saving means the compute cost more than the labels saved.",
    ]


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
    encoder, prelabeling, untested = encoder_note(report), report.prelabeling, untested_note(report)
    return [
        Section("Accuracy per label budget", accuracy_table(report), (TOP_K_NOTE, *([encoder] if encoder else []))),
        *(
            [Section(SEEDS_TITLE, seed_table(summary), (SEEDS_NOTE,))]
            if (summary := seed_summary(report.models)) is not None
            else []
        ),
        Section("Accuracy against number of labels", plot=True),
        Section(
            "Labels the supervised baseline would need",
            savings_table(report),
            (SAVINGS_NOTE, *([untested] if untested else [])),
        ),
        *([Section(TEACHER_TITLE, teacher_table(report), (TEACHER_NOTE,))] if len(report.students) else []),
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
