"""Reading the stage manifests into the report's tables."""

import json

import pandas as pd
import pytest

from reports import ReportSettings
from reports.inputs import (
    EncoderResult,
    encoder_result,
    model_predictions,
    model_table,
    read_manifests,
    read_predictions,
    records,
    stage_table,
)
from tests.reports.report_fixtures import CLASSIFIERS, MODELS_IN_REPORT_ORDER, make_run


@pytest.fixture
def manifests(stage_dirs):
    return read_manifests(stage_dirs)


def test_settings_from_the_pipeline_config_section():
    section = {"cost_per_label": 0.1, "currency": "USD", "device_hour_price": 1.0, "full_label_baseline": True}
    assert ReportSettings.from_config(section, "digits") == ReportSettings(0.1, "USD", 1.0, "digits")


def test_models_by_labels_then_baseline_fine_tuned_distilled(manifests):
    models = model_table(manifests)
    assert models["stage"].tolist() == MODELS_IN_REPORT_ORDER
    for row in records(models):
        top1, top5, _, _, _ = CLASSIFIERS[row["stage"]]
        assert (row["test_top1"], row["test_top5"], row["num_test"]) == (top1, top5, 500)


def test_labels_come_from_the_subsets_stage_and_else_from_the_model(manifests):
    models = model_table(manifests)
    labels = dict(zip(models["stage"], models["num_labels"], strict=True))
    assert labels["distill[20labels]"] == 20  # a student records no labels: it counts its teacher's
    assert labels["baseline[100pct]"] == 2000  # not among the subsets: from its own manifest


def test_a_budget_nobody_counted_is_an_error(tmp_path):
    dirs = make_run(tmp_path, {"distill[5pct]": (0.5, 0.6, None, {"processes": 1, "device": "cpu"}, 1.0)})
    with pytest.raises(ValueError, match="no stage among the inputs says how many labels budget '5pct' has"):
        model_table(read_manifests(dirs))


def test_what_each_stage_ran_on(manifests):
    stages = {row["stage"]: row for row in records(stage_table(manifests))}
    assert list(stages) == list(manifests)  # the given order
    assert stages["finetune[10pct]"] == {
        "stage": "finetune[10pct]",
        "device": "cuda",
        "device_name": "Test GPU",
        "processes": 8,
        "machines": 2,
        "wall_seconds": 1800.0,
    }


def test_encoder_result(manifests):
    assert encoder_result(manifests) == EncoderResult(0.9, 0.88, 2000, 500)
    assert encoder_result({}) is None


def test_records_are_plain_python_with_none_for_gaps():
    table = pd.DataFrame({"labels": [20, None], "top1": [0.5, None], "kind": ["finetune", None]})
    rows = records(table.astype({"labels": "Int64"}))
    assert rows == [{"labels": 20, "top1": 0.5, "kind": "finetune"}, {"labels": None, "top1": None, "kind": None}]
    assert type(rows[0]["labels"]) is int  # not a numpy scalar: JSON takes it
    json.dumps(rows)


def test_model_predictions_are_right_or_wrong_per_image(stage_dirs):
    correct = model_predictions(stage_dirs)
    assert sorted(correct) == sorted(CLASSIFIERS)  # every classifier; not the predict stage or evaluate
    finetune = correct["finetune[20labels]"]
    assert finetune.index.tolist()[:3] == ["t0", "t1", "t2"] and finetune.dtype == bool
    assert int(finetune.sum()) == 250  # a class named "NA" is a name, not a missing value: label == predicted holds


def test_model_predictions_skip_models_without_the_file(tmp_path):
    dirs = make_run(tmp_path, predictions={"distill[10pct]": None})
    assert "distill[10pct]" not in model_predictions(dirs) and "distill[20labels]" in model_predictions(dirs)
    assert model_predictions(make_run(tmp_path / "older", predictions=False)) == {}


def test_the_teacher_top1_of_a_student(manifests):
    models = {row["stage"]: row for row in records(model_table(manifests))}
    assert models["distill[20labels]"]["teacher_test_top1"] == 0.5
    assert models["finetune[20labels]"]["teacher_test_top1"] is None


def test_test_predictions_escaped_for_spreadsheets_read_back_as_the_names(tmp_path):
    """The stages write `'=cat` for a class named `=cat` (stages/data/spreadsheet_cells.py); the report compares the
    names themselves, and pairs models by the ids themselves."""
    stage = tmp_path / "finetune[10pct]"
    stage.mkdir()
    (stage / "test_predictions.csv").write_text(
        "image,label,predicted,confidence\n'+a.png,'=cat,'=cat,0.9\n'@b.png,'=cat,'-1,0.6\nc.png,'-1,'-1,0.8\n"
    )
    table = read_predictions(stage / "test_predictions.csv")
    assert table["image"].tolist() == ["+a.png", "@b.png", "c.png"]
    assert table["label"].tolist() == ["=cat", "=cat", "-1"] and table["predicted"].tolist() == ["=cat", "-1", "-1"]
    assert table["confidence"].tolist() == [0.9, 0.6, 0.8]
    correct = model_predictions({"finetune[10pct]": stage})["finetune[10pct]"]
    assert correct.to_dict() == {"+a.png": True, "@b.png": False, "c.png": True}
