"""Which model is better, and how sure we can be: every accuracy with its 95% interval, each SimCLRv2 model against
the supervised baseline trained with the same labels, and each distilled student against its teacher (the
fine-tuned model with the same labels), tested image by image on the same test images (reports.statistics).

A comparison's verdict (`comparison`, `teacher_comparison`):

    better                        significantly better (McNemar p < 0.05, Holm-adjusted over every comparison with the
                                  baseline in the report), so a saving may be claimed
    worse                         significantly worse
    no_significant_difference     the test images cannot tell the two apart
    not_tested_no_predictions     a model's test_predictions.csv is missing (a run from before it was written)
    not_tested_different_images   the two models' predictions cover different test images
    nothing_to_compare            no baseline with the same labels (or no teacher) among the inputs
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from reports.inputs import records
from reports.statistics import SIGNIFICANCE_LEVEL, accuracy_interval, compare_paired, holm_adjusted

BETTER, WORSE, NOT_SIGNIFICANT = "better", "worse", "no_significant_difference"
NO_PREDICTIONS, DIFFERENT_IMAGES = "not_tested_no_predictions", "not_tested_different_images"
NOTHING_TO_COMPARE = "nothing_to_compare"
TESTED = (BETTER, WORSE, NOT_SIGNIFICANT)
INTERVAL_COLUMNS = ["test_top1_low", "test_top1_high", "teacher_test_top1_low", "teacher_test_top1_high"]
# each SimCLRv2 model against the baseline with the same labels; difference = the model's top-1 minus the baseline's
# p_value: Holm-adjusted over the report's baseline comparisons (the verdict uses it); p_value_unadjusted: one test
COMPARISON_COLUMNS = [
    "compared_with",
    "comparison",
    "difference",
    "difference_low",
    "difference_high",
    "p_value",
    "p_value_unadjusted",
]
# a distilled student against its teacher; teacher_difference = the student's top-1 minus the teacher's
TEACHER_COLUMNS = [
    "teacher_comparison",
    "teacher_difference",
    "teacher_difference_low",
    "teacher_difference_high",
    "teacher_p_value",
]
COMPARES_WITH = {"finetune": "baseline", "distill": "baseline"}  # the kind each model is compared with, same budget


def aligned(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """Right/wrong of two models on the same images, image by image: the files' order when both list the same images
    in the same order (the stages write them so), else matched by image id; None when the images differ."""
    if a.index.equals(b.index):
        return a.to_numpy(bool), b.to_numpy(bool)
    if a.index.is_unique and b.index.is_unique and len(a) == len(b) and set(a.index) == set(b.index):
        return a.to_numpy(bool), b.reindex(a.index).to_numpy(bool)
    return None


def compare(
    name: str, other: str | None, top1: float, other_top1: float | None, predictions: Mapping[str, pd.Series]
) -> dict[str, Any]:
    """Model `name` against model `other` (None: nothing to compare with): the verdict, the difference in top-1
    (from the paired predictions when both exist, else from the two recorded top-1s) with its 95% interval, and the
    p-value; the interval and p-value only when tested."""
    untested = {"difference": None, "low": None, "high": None, "p_value": None}
    if other is None and other_top1 is None:
        return {"comparison": NOTHING_TO_COMPARE, **untested}
    if other_top1 is not None:
        untested["difference"] = top1 - other_top1
    if other is None or name not in predictions or other not in predictions:
        return {"comparison": NO_PREDICTIONS, **untested}
    pair = aligned(predictions[name], predictions[other])
    if pair is None or len(pair[0]) == 0:
        return {"comparison": DIFFERENT_IMAGES, **untested}
    tested = compare_paired(*pair)
    verdict = NOT_SIGNIFICANT if not tested.significant else BETTER if tested.difference > 0 else WORSE
    return {
        "comparison": verdict,
        "difference": tested.difference,
        "low": tested.low,
        "high": tested.high,
        "p_value": tested.p_value,
    }


def row_comparisons(
    row: dict[str, Any], stages: Mapping[tuple[str, str], dict[str, Any]], predictions: Mapping[str, pd.Series]
) -> dict[str, Any]:
    """The INTERVAL_COLUMNS, COMPARISON_COLUMNS and TEACHER_COLUMNS of one model (`stages`: (kind, budget) -> row)."""
    top1_low, top1_high = accuracy_interval(row["test_top1"], row["num_test"])
    out: dict[str, Any] = {"test_top1_low": top1_low, "test_top1_high": top1_high}
    kind, budget_name = row["kind"], row["budget"]
    if kind in COMPARES_WITH:
        baseline = stages.get((COMPARES_WITH[kind], budget_name))
        other, other_top1 = (baseline["stage"], baseline["test_top1"]) if baseline else (None, None)
        result = compare(row["stage"], other, row["test_top1"], other_top1, predictions)
        out |= {"compared_with": other, "comparison": result["comparison"], "difference": result["difference"]}
        out |= {"difference_low": result["low"], "difference_high": result["high"], "p_value": result["p_value"]}
    if kind == "distill":
        teacher = stages.get(("finetune", budget_name))
        teacher_top1 = row["teacher_test_top1"]
        if teacher_top1 is None and teacher is not None:  # a run from before distill recorded its teacher's top-1
            teacher_top1 = teacher["test_top1"]
        low, high = accuracy_interval(teacher_top1, row["num_test"])
        teacher_stage = teacher["stage"] if teacher else None
        result = compare(row["stage"], teacher_stage, row["test_top1"], teacher_top1, predictions)
        out |= {"teacher_test_top1": teacher_top1, "teacher_test_top1_low": low, "teacher_test_top1_high": high}
        out |= {"teacher_comparison": result["comparison"], "teacher_difference": result["difference"]}
        out |= {"teacher_difference_low": result["low"], "teacher_difference_high": result["high"]}
        out |= {"teacher_p_value": result["p_value"]}
    return out


def adjusted_for_multiple_comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The baseline comparisons' p-values Holm-adjusted over all of them, and their verdicts decided on those."""
    tested = [row for row in rows if row.get("comparison") in TESTED]
    for row, adjusted in zip(tested, holm_adjusted([row["p_value"] for row in tested]), strict=True):
        row["p_value_unadjusted"], row["p_value"] = row["p_value"], adjusted
        if adjusted >= SIGNIFICANCE_LEVEL:
            row["comparison"] = NOT_SIGNIFICANT
    return rows


def with_comparisons(models: pd.DataFrame, predictions: Mapping[str, pd.Series]) -> pd.DataFrame:
    """`models` (inputs.model_table) with INTERVAL_COLUMNS for every model, COMPARISON_COLUMNS for each fine-tuned or
    distilled one and TEACHER_COLUMNS for each distilled one (`predictions`: inputs.model_predictions)."""
    rows = records(models)
    stages = {(row["kind"], row["budget"]): row for row in rows}
    added = adjusted_for_multiple_comparisons([row_comparisons(row, stages, predictions) for row in rows])
    columns = ["teacher_test_top1", *INTERVAL_COLUMNS, *COMPARISON_COLUMNS, *TEACHER_COLUMNS]
    words = ("compared_with", "comparison", "teacher_comparison")
    table = pd.DataFrame(added, index=models.index, columns=columns)
    table = table.astype({column: "float64" for column in columns if column not in words})
    return pd.concat([models.drop(columns="teacher_test_top1"), table], axis=1)
