"""The report's words: the headline, the sections and the Markdown page."""

from dataclasses import replace

from reports.comparisons import BETTER, NO_PREDICTIONS
from reports.inputs import records
from reports.labels_needed import BEYOND
from reports.tables import MISSING
from reports.text import data_sentence, headline, render_markdown, report_headline, sections
from tests.reports.report_fixtures import (
    CLASSIFIERS,
    CLOSE,
    CLOSE_PREDICTIONS,
    CLOSE_TEST,
    HEADLINE,
    NO_DIFFERENCE_HEADLINE,
    ONE_GPU,
    SETTINGS,
    make_run,
    report_of,
)

# --- the headline ---------------------------------------------------------------------------------------------------


def close_run(tmp_path, **options):
    """The issue's example (report_fixtures.CLOSE): 63.3% against 60.0% on 360 test images."""
    return report_of(make_run(tmp_path, CLOSE, evaluate=False, num_test=CLOSE_TEST, **options))


def test_the_best_supported_saving_is_the_largest_net_saving(report):
    assert report_headline(report) == HEADLINE  # distilled: net 13.24 EUR; fine-tuned: 1.49 EUR


def test_no_significant_difference_claims_no_saving(tmp_path):
    report = close_run(tmp_path, predictions=CLOSE_PREDICTIONS)
    assert report_headline(report) == NO_DIFFERENCE_HEADLINE
    # the point estimates alone would have read as a saving: the curve needs about 30 labels for 63.3%
    row = next(row for row in records(report.savings) if row["stage"] == "finetune[20labels]")
    assert (row["baseline_labels_needed"], row["labels_saved"], row["money_saved"]) == (30, None, None)
    savings = sections(report)[2].table
    assert savings.rows[0][4:] == [
        "+3.3 points [-1.4, +8.1]",
        "no significant difference (p = 0.21)",
        MISSING,
        MISSING,
        MISSING,
        MISSING,
    ]


def test_a_significant_saving_whose_compute_costs_more_says_so(tmp_path):
    report = close_run(tmp_path)  # the same top-1s, but 12 images against 0: p = 2 / 4096
    assert report_headline(report) == (
        "With 20 labels the fine-tuned model reaches 63.3% [58.2–68.1], significantly better than the supervised "
        "baseline with the same labels at 60.0% [54.9–64.9] (p < 0.001); supervised training needs about 30 labels "
        "for that (10 more, 2.50 EUR); but the extra compute (10.00 EUR) costs more than that: net -7.50 EUR."
    )


def test_without_pretraining_among_the_inputs_there_is_no_net_figure(stage_dirs):
    without = {name: path for name, path in stage_dirs.items() if name != "pretrain"}
    assert report_headline(report_of(without)) == HEADLINE.replace(
        "net of the extra compute (10.01 EUR), that saves 13.24 EUR.",
        "the extra compute of the SimCLRv2 route is not among this report's inputs, so there is no net figure.",
    )


def test_without_predictions_no_saving_is_claimed(tmp_path):
    assert report_headline(close_run(tmp_path, predictions=False)) == (
        "With 20 labels the fine-tuned model reaches 63.3% [58.2–68.1] and the supervised baseline 60.0% "
        "[54.9–64.9], but without per-image test predictions the difference was not tested; this run supports no "
        "label saving."
    )
    report = report_of(make_run(tmp_path / "older", predictions=False))  # every model would have "saved" labels
    assert report_headline(report).endswith("the difference was not tested; this run supports no label saving.")
    assert all(row["labels_saved"] is None for row in records(report.savings))
    assert "Not tested: baseline[20labels], finetune[20labels], distill[20labels], baseline[10pct]" in (
        render_markdown(report)
    )
    partly = report_of(make_run(tmp_path / "partly", predictions={"distill[10pct]": None}))
    assert partly.without_predictions == ("distill[10pct]",)
    assert "Not tested: distill[10pct] left no per-image test predictions" in render_markdown(partly)
    assert "Not tested" not in render_markdown(report_of(make_run(tmp_path / "new")))


def test_predictions_on_different_test_images_claim_nothing(tmp_path):
    report = close_run(tmp_path, predictions={"finetune[20labels]": [True] * 228 + [False] * 131})  # 359 images
    assert report_headline(report) == (
        "With 20 labels the fine-tuned model reaches 63.3% [58.2–68.1] and the supervised baseline 60.0% "
        "[54.9–64.9], but they were tested on different images; this run supports no label saving."
    )


def test_a_significantly_better_baseline_is_said(tmp_path):
    worse = {**CLOSE, "finetune[20labels]": (0.5, 0.9, 20, ONE_GPU, 100.0)}
    report = report_of(make_run(tmp_path, worse, evaluate=False, num_test=CLOSE_TEST))
    assert report_headline(report) == (
        "The supervised baseline is significantly better: with 20 labels it reaches 60.0% [54.9–64.9] and the "
        "fine-tuned model 50.0% [44.9–55.1] (p < 0.001); this run supports no label saving."
    )


def test_significantly_better_beyond_the_measured_range(tmp_path):
    beyond = {name: value for name, value in CLASSIFIERS.items() if name.endswith("[10pct]") and "distill" not in name}
    beyond["baseline[20labels]"] = CLASSIFIERS["baseline[20labels]"]
    report = report_of(make_run(tmp_path, beyond))
    assert report_headline(report) == (
        "With 200 labels the fine-tuned model reaches 85.0% [81.6–87.9], significantly better than the supervised "
        "baseline with the same labels at 60.0% [55.6–64.2] (p < 0.001); supervised training does not reach that "
        "within the measured range (> 200 labels), so this run cannot say how many labels that saves."
    )


def test_no_baseline_with_the_same_labels(tmp_path):
    alone = {"finetune[20labels]": CLASSIFIERS["finetune[20labels]"], "baseline[10pct]": CLASSIFIERS["baseline[10pct]"]}
    assert report_headline(report_of(make_run(tmp_path, alone))) == (
        "With 20 labels the fine-tuned model reaches 50.0% [45.6–54.4]; no supervised baseline was trained with the "
        "same labels to compare with, so this run supports no label saving."
    )


def test_the_headline_model_without_a_claim(tmp_path):
    # Nothing tested: at the smallest budget the student if it beats the fine-tuned model (55% > 50%)
    report = report_of(make_run(tmp_path, predictions=False))
    assert report_headline(report).startswith("With 20 labels the distilled model reaches 55.0% [50.6–59.3] and ")
    student = {**CLASSIFIERS, "distill[20labels]": (0.45, 0.8, None, ONE_GPU, 1.0)}
    report = report_of(make_run(tmp_path / "worse student", student, predictions=False))
    assert report_headline(report).startswith("With 20 labels the fine-tuned model reaches 50.0% [45.6–54.4] and ")


def test_a_headline_never_claims_an_unsupported_saving():
    # A record that would read as a saving (labels_saved set by hand) but whose comparison is not "better"
    model = {
        "stage": "finetune[b]",
        "kind": "finetune",
        "budget": "b",
        "num_labels": 20,
        "test_top1": 0.7,
        "test_top1_low": 0.6,
        "test_top1_high": 0.8,
        "compared_with": "baseline[b]",
        "comparison": NO_PREDICTIONS,
        "p_value": None,
        "labels_needed_kind": BEYOND,
        "baseline_labels_needed": 200,
        "labels_saved": 30,
        "money_saved": 3.0,
        "extra_compute_cost": 1.0,
        "net_saving": 2.0,
    }
    baseline = {
        "stage": "baseline[b]",
        "kind": "baseline",
        "test_top1": 0.6,
        "test_top1_low": 0.5,
        "test_top1_high": 0.7,
    }
    text = headline([baseline, model], "USD")
    assert "supports no label saving" in text and "more," not in text
    assert "more, 3.00 USD" in headline([baseline, {**model, "comparison": BETTER, "p_value": 0.01}], "USD")


def test_no_simclr_model():
    assert "no SimCLRv2 model" in headline([], "USD")


# --- sections and the Markdown page ---------------------------------------------------------------------------------


def test_sections_in_order(report):
    assert [section.title for section in sections(report)] == [
        "Accuracy per label budget",
        "Accuracy against number of labels",
        "Labels the supervised baseline would need",
        "Distilled student against its teacher",
        "Compute cost",
        "Assumptions",
    ]


def test_a_model_that_did_not_run_is_a_dash(report):
    accuracy = sections(report)[0].table
    row = next(row for row in accuracy.rows if row[0] == "100%")
    assert row[1:] == ["2,000", "500.00 EUR", "80.0% [76.3–83.3]", "95.0%", MISSING, MISSING, MISSING, MISSING]


def test_markdown_escapes_pipes_in_cells(report):
    text = render_markdown(replace(report, settings=replace(SETTINGS, currency="E|R")))
    assert "500.00 E\\|R" in text


def test_non_monotone_baseline_is_said(tmp_path):
    classifiers = {**CLASSIFIERS, "baseline[10pct]": (0.30, 0.60, 200, CLASSIFIERS["baseline[10pct]"][3], 1.0)}
    dipping = report_of(make_run(tmp_path / "run", classifiers))
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


def test_a_run_measured_on_a_validation_slice_says_so(report):
    text = data_sentence(replace(report, validation_slice=True))
    assert "validation slice of the training images (`data.validation_fraction`)" in text
    assert "the test split was not used" in text and "validation slice" not in data_sentence(report)


def test_no_template_field_is_left_in_the_report(report):
    text = render_markdown(report)
    assert "{" not in text and "p < 0.05, Holm-adjusted" in text  # an f-string missing its f shows its braces
