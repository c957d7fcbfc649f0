"""The report's words: the headline, the sections and the Markdown page."""

from dataclasses import replace

from reports.inputs import read_manifests
from reports.label_budget import assemble
from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, NO_BASELINE, saving
from reports.tables import MISSING
from reports.text import data_sentence, headline, render_markdown, sections
from tests.reports.report_fixtures import CLASSIFIERS, SETTINGS, make_run

# --- the headline ---------------------------------------------------------------------------------------------------


def model(kind: str, labels: int, top1: float, needed_kind: str, needed: int | None, saved: int | None = None) -> dict:
    """A fine-tuned or distilled model's record as LabelBudgetReport.savings holds it."""
    money_saved = None if saved is None else saved * 0.1
    return {
        "kind": kind,
        "num_labels": labels,
        "test_top1": top1,
        "labels_needed_kind": needed_kind,
        "baseline_labels_needed": needed,
        "labels_saved": saved,
        "money_saved": money_saved,
    }


def measured(kind: str, labels: int, top1: float, baseline: list[tuple[int, float]]) -> dict:
    return {"kind": kind, "num_labels": labels, "test_top1": top1, **saving(labels, top1, baseline, 0.1)}


def test_fine_tuned_model_when_the_student_is_not_better():
    baseline = [(20, 0.60), (144, 0.92)]
    savings = [measured(k, n, a, baseline) for k, n, a in [("finetune", 20, 0.65), ("distill", 20, 0.575)]]
    savings.append(measured("distill", 144, 0.99, baseline))  # better, but not at the smallest budget
    assert headline(savings, "USD") == (
        "With 20 labels the fine-tuned model reaches 65.0%; supervised training needs about 28 labels for that "
        "(8 more, 0.80 USD)."
    )


def test_beyond_and_at_most_wording():
    assert headline([model("distill", 20, 0.95, BEYOND, 144)], "USD") == (
        "With 20 labels the distilled model reaches 95.0%; supervised training does not reach that within the "
        "measured range (> 144 labels)."
    )
    assert headline([model("finetune", 20, 0.5, AT_MOST, 20)], "USD").endswith(
        "supervised training reaches that with at most 20 labels, so no labels are saved."
    )


def test_no_saving_is_not_announced_as_one():
    worse = model("finetune", 144, 0.84, INTERPOLATED, 89, saved=-55)
    assert headline([worse], "USD").endswith("supervised training needs about 89 labels for that.")


def test_no_baseline_and_no_model():
    alone = model("finetune", 20, 0.5, NO_BASELINE, None)
    assert headline([alone], "USD").endswith("no supervised baseline was trained to compare with.")
    assert "no SimCLRv2 model" in headline([], "USD")


# --- sections and the Markdown page ---------------------------------------------------------------------------------


def test_sections_in_order(report):
    assert [section.title for section in sections(report)] == [
        "Accuracy per label budget",
        "Accuracy against number of labels",
        "Labels the supervised baseline would need",
        "Compute cost",
        "Assumptions",
    ]


def test_a_model_that_did_not_run_is_a_dash(report):
    accuracy = sections(report)[0].table
    row = next(row for row in accuracy.rows if row[0] == "100%")
    assert row[1:] == ["2,000", "500.00 EUR", "80.0%", "95.0%", MISSING, MISSING, MISSING, MISSING]


def test_markdown_escapes_pipes_in_cells(report):
    text = render_markdown(replace(report, settings=replace(SETTINGS, currency="E|R")))
    assert "500.00 E\\|R" in text


def test_non_monotone_baseline_is_said(tmp_path):
    classifiers = {**CLASSIFIERS, "baseline[10pct]": (0.30, 0.60, 200, CLASSIFIERS["baseline[10pct]"][3], 1.0)}
    dipping = assemble(read_manifests(make_run(tmp_path / "run", classifiers)), SETTINGS)
    assert "did not always rise with more labels" in render_markdown(dipping)


def test_monotone_baseline_is_not_flagged(report):
    assert report.baseline_monotone
    assert "did not always rise" not in render_markdown(report)


def test_the_labels_the_test_split_took_are_said(report):
    partly = replace(report, num_train=500, num_labeled=70, test_labels_held_out=18)
    text = data_sentence(partly)
    assert "500 training images (70 of them with a label that training may use)" in text
    assert "18 of your labeled images were held out as the test split" in text
    assert "held out" not in data_sentence(report)  # a dataset with its own test split, or fully labeled
