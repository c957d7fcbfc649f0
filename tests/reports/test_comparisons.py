"""Each SimCLRv2 model against the baseline with the same labels and each student against its teacher, image by image
on the stages' test_predictions.csv (reports/comparisons.py); and what happens without those files."""

import pandas as pd
import pytest

from reports.comparisons import (
    BETTER,
    DIFFERENT_IMAGES,
    NO_PREDICTIONS,
    NOT_SIGNIFICANT,
    NOTHING_TO_COMPARE,
    WORSE,
    adjusted_for_multiple_comparisons,
    aligned,
)
from reports.inputs import model_predictions, records
from reports.statistics import compare_paired, mcnemar_p_value, wilson_interval
from tests.reports.report_fixtures import CLASSIFIERS, CLOSE, CLOSE_PREDICTIONS, CLOSE_TEST, make_run, report_of


def rows_of(report) -> dict[str, dict]:
    return {row["stage"]: row for row in records(report.models)}


def test_every_accuracy_has_its_wilson_interval(report):
    for row in records(report.models):
        right = round(row["test_top1"] * 500)
        assert (row["test_top1_low"], row["test_top1_high"]) == wilson_interval(right, 500)
    student = rows_of(report)["distill[20labels]"]
    assert (student["teacher_test_top1_low"], student["teacher_test_top1_high"]) == wilson_interval(250, 500)


def test_each_simclr_model_against_the_baseline_with_the_same_labels(report):
    rows = rows_of(report)
    expected = {  # stage: (baseline, verdict, difference, p, Holm's factor over the 4 tests); fixture's windows
        "finetune[20labels]": ("baseline[20labels]", BETTER, 0.10, 2 / 2**50, 1),  # 50 images only it gets right
        "distill[20labels]": ("baseline[20labels]", BETTER, 0.15, 2 / 2**75, 2),
        "finetune[10pct]": ("baseline[10pct]", BETTER, 0.25, 2 / 2**125, 4),
        "distill[10pct]": ("baseline[10pct]", WORSE, -0.25, 2 / 2**125, 4),
    }
    for stage, (baseline, verdict, difference, p, factor) in expected.items():
        row = rows[stage]
        assert (row["compared_with"], row["comparison"], row["p_value_unadjusted"]) == (baseline, verdict, p)
        assert row["p_value"] == pytest.approx(factor * p)
        assert row["difference"] == pytest.approx(difference)
        assert row["difference_low"] < row["difference"] < row["difference_high"]
    assert rows["baseline[20labels]"]["comparison"] is None  # the baseline is what the others are compared with


def test_each_student_against_its_teacher(stage_dirs, report):
    rows = rows_of(report)
    student = rows["distill[20labels]"]  # 275 right against its teacher's 250, nested
    assert student["teacher_test_top1"] == 0.50  # as its manifest records it
    assert (student["teacher_comparison"], student["teacher_p_value"]) == (BETTER, 2 / 2**25)
    assert student["teacher_difference"] == pytest.approx(0.05)
    correct = model_predictions(stage_dirs)
    tested = compare_paired(correct["distill[20labels]"].to_numpy(), correct["finetune[20labels]"].to_numpy())
    assert (student["teacher_difference_low"], student["teacher_difference_high"]) == (tested.low, tested.high)
    assert rows["distill[10pct]"]["teacher_comparison"] == WORSE
    assert rows["finetune[20labels]"]["teacher_comparison"] is None  # only students have a teacher


def test_the_issue_example_is_no_significant_difference(tmp_path):
    report = report_of(make_run(tmp_path, CLOSE, evaluate=False, predictions=CLOSE_PREDICTIONS, num_test=CLOSE_TEST))
    row = rows_of(report)["finetune[20labels]"]
    assert (row["comparison"], row["p_value"]) == (NOT_SIGNIFICANT, mcnemar_p_value(32, 44))
    assert row["p_value"] == pytest.approx(0.2067, abs=1e-4)
    assert row["difference"] == pytest.approx(12 / 360)
    assert row["difference_low"] < 0 < row["difference_high"]


def test_the_same_top1s_with_other_disagreements_are_significant(tmp_path):
    # the same accuracies, but the fine-tuned model is right on every image the baseline is: 12 against 0
    report = report_of(make_run(tmp_path, CLOSE, evaluate=False, num_test=CLOSE_TEST))
    row = rows_of(report)["finetune[20labels]"]
    assert (row["comparison"], row["p_value"]) == (BETTER, 2 / 2**12)


def test_without_predictions_nothing_is_tested(tmp_path):
    report = report_of(make_run(tmp_path, predictions=False))
    for row in records(report.savings):
        assert row["comparison"] == NO_PREDICTIONS
        assert (row["p_value"], row["difference_low"], row["difference_high"], row["labels_saved"]) == (None,) * 4
        assert row["money_saved"] is None and row["net_saving"] is None
    row = rows_of(report)["finetune[20labels]"]
    assert row["difference"] == pytest.approx(0.10)  # the point estimates' difference, from the manifests
    assert row["test_top1_low"] is not None  # intervals need only top-1 and num_test
    assert rows_of(report)["distill[20labels]"]["teacher_comparison"] == NO_PREDICTIONS


def test_one_missing_file_leaves_only_its_comparisons_untested(tmp_path):
    report = report_of(make_run(tmp_path, predictions={"baseline[20labels]": None}))
    rows = rows_of(report)
    assert rows["finetune[20labels]"]["comparison"] == NO_PREDICTIONS
    assert rows["distill[20labels]"]["comparison"] == NO_PREDICTIONS
    assert rows["distill[20labels]"]["teacher_comparison"] == BETTER  # the student and its teacher have theirs
    assert rows["finetune[10pct]"]["comparison"] == BETTER


def test_files_in_another_order_are_matched_by_image(tmp_path):
    dirs = make_run(tmp_path)
    path = dirs["finetune[20labels]"] / "test_predictions.csv"
    pd.read_csv(path, keep_default_na=False).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    row = rows_of(report_of(dirs))["finetune[20labels]"]
    assert (row["comparison"], row["p_value"]) == (BETTER, 2 / 2**50)


def test_different_test_images_are_not_compared(tmp_path):
    short = make_run(tmp_path, predictions={"finetune[20labels]": [True] * 250 + [False] * 249})  # one image fewer
    row = rows_of(report_of(short))["finetune[20labels]"]
    assert (row["comparison"], row["p_value"], row["labels_saved"]) == (DIFFERENT_IMAGES, None, None)


def test_aligned():
    a = pd.Series([True, False, True], index=["x", "y", "z"])
    same = aligned(a, pd.Series([False, False, True], index=["x", "y", "z"]))
    assert same is not None and same[1].tolist() == [False, False, True]
    shuffled = aligned(a, pd.Series([True, False, False], index=["z", "y", "x"]))
    assert shuffled is not None and shuffled[1].tolist() == [False, False, True]
    assert aligned(a, pd.Series([True, False, True], index=["x", "y", "w"])) is None


def test_a_student_of_an_older_run_falls_back_to_its_teachers_manifest(tmp_path):
    older = rows_of(report_of(make_run(tmp_path, teacher_top1=False, predictions=False)))["distill[20labels]"]
    assert older["teacher_test_top1"] == CLASSIFIERS["finetune[20labels]"][0]  # finetune[20labels]'s own top-1
    assert (older["teacher_comparison"], older["teacher_difference"]) == (NO_PREDICTIONS, pytest.approx(0.05))


def test_nothing_to_compare_without_a_baseline_or_teacher(tmp_path):
    alone = {name: value for name, value in CLASSIFIERS.items() if name in ("distill[20labels]", "baseline[10pct]")}
    row = rows_of(report_of(make_run(tmp_path, alone)))["distill[20labels]"]
    assert (row["compared_with"], row["comparison"], row["difference"]) == (None, NOTHING_TO_COMPARE, None)
    assert (row["teacher_comparison"], row["teacher_test_top1"]) == (NOTHING_TO_COMPARE, None)


def test_a_p_value_below_005_alone_is_no_claim_among_several_comparisons():
    rows = [{"comparison": BETTER, "p_value": p} for p in (0.001, 0.03, 0.2)] + [{"comparison": None}]
    adjusted = adjusted_for_multiple_comparisons(rows)
    assert [row["comparison"] for row in adjusted] == [BETTER, NOT_SIGNIFICANT, NOT_SIGNIFICANT, None]
    assert [row.get("p_value") for row in adjusted[:3]] == pytest.approx([0.003, 0.06, 0.2])
    assert adjusted[1]["p_value_unadjusted"] == 0.03
