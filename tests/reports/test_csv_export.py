"""The two CSV files: every number of the report, the manifests' own values."""

import dataclasses
import json
import math

import pytest

from reports import build_report
from reports.csv_export import REPORT_CSV_COLUMNS
from reports.statistics import wilson_interval
from tests.reports.report_fixtures import CLASSIFIERS, MODELS_IN_REPORT_ORDER, SETTINGS, make_run, read_csv


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def test_csv_numbers_are_the_manifest_metrics(built, stage_dirs):
    out, metrics = built
    rows = read_csv(out / "report.csv")
    assert [row["stage"] for row in rows[:-2]] == MODELS_IN_REPORT_ORDER
    for row in rows[:-2]:
        source = json.loads((stage_dirs[row["stage"]] / "manifest.json").read_text())["metrics"]
        top1, top5, _, _, _ = CLASSIFIERS[row["stage"]]
        assert float(row["test_top1"]) == source["test_top1"] == top1
        assert float(row["test_top5"]) == source["test_top5"] == top5
        assert int(row["num_test"]) == source["num_test"]
        assert float(row["label_cost"]) == pytest.approx(int(row["num_labels"]) * SETTINGS.cost_per_label)
    assert [int(row["num_labels"]) for row in rows[:-2]] == [20, 20, 20, 200, 200, 200, 2000]
    probe, knn = rows[-2:]
    assert (probe["kind"], float(probe["test_top1"]), int(probe["num_labels"])) == ("linear_eval", 0.9, 2000)
    assert (knn["kind"], float(knn["test_top1"])) == ("knn", 0.88)
    assert metrics["rows"][1]["test_top1"] == 0.50  # the metrics hold the CSV rows


def test_csv_labels_needed_and_saved(built):
    out, _ = built
    rows = {row["stage"]: row for row in read_csv(out / "report.csv")}
    expected = {  # stage: (needed, kind, labels saved, money saved)
        "finetune[20labels]": ("64", "interpolated", "44", 11.0),
        "distill[20labels]": ("113", "interpolated", "93", 23.25),
        "finetune[10pct]": ("2000", "beyond", "", None),
        "distill[10pct]": ("20", "at_most", "", None),
        "baseline[20labels]": ("", "", "", None),
    }
    for stage, (needed, kind, saved, money_saved) in expected.items():
        row = rows[stage]
        assert (row["baseline_labels_needed"], row["labels_needed_kind"], row["labels_saved"]) == (needed, kind, saved)
        assert number(row["money_saved"]) == pytest.approx(money_saved)


def test_compute_csv(built):
    out, metrics = built
    rows = {row["stage"]: row for row in read_csv(out / "report_compute.csv")}
    assert (rows["pretrain"]["devices"], float(rows["pretrain"]["device_hours"])) == ("4", 4.0)
    assert float(rows["pretrain"]["compute_cost"]) == 10.0  # 1 h x 4 GPUs x 2.50
    assert rows["finetune[10pct]"]["devices"] == "8"  # 8 processes over 2 machines: 8 GPUs
    assert float(rows["finetune[10pct]"]["compute_cost"]) == pytest.approx(10.0)  # 0.5 h x 8 x 2.50
    assert rows["subsets"]["devices"] == "1"  # two CPU processes, one machine
    stages = [row for name, row in rows.items() if name != "total"]
    assert float(rows["total"]["compute_cost"]) == pytest.approx(sum(float(row["compute_cost"]) for row in stages))
    assert metrics["total_compute_cost"] == pytest.approx(float(rows["total"]["compute_cost"]))


def test_csv_columns(built):
    out, _ = built
    with (out / "report.csv").open() as file:
        assert file.readline().strip().split(",") == REPORT_CSV_COLUMNS


def test_csv_intervals_of_every_accuracy(built):
    out, _ = built
    for row in read_csv(out / "report.csv"):
        right = round(float(row["test_top1"]) * int(row["num_test"]))
        assert (float(row["test_top1_low"]), float(row["test_top1_high"])) == wilson_interval(right, 500)
    student = {row["stage"]: row for row in read_csv(out / "report.csv")}["distill[20labels]"]
    assert float(student["teacher_test_top1"]) == 0.5
    assert (float(student["teacher_test_top1_low"]), float(student["teacher_test_top1_high"])) == wilson_interval(
        250, 500
    )


def test_csv_comparisons_and_net_saving(built):
    out, _ = built
    rows = {row["stage"]: row for row in read_csv(out / "report.csv")}
    finetune = rows["finetune[20labels]"]
    assert (finetune["compared_with"], finetune["comparison"]) == ("baseline[20labels]", "better")
    assert float(finetune["p_value"]) == 2 / 2**50
    assert float(finetune["difference_low"]) < float(finetune["difference"]) == pytest.approx(0.1)
    assert float(finetune["extra_compute_cost"]) == pytest.approx(10 + 0.0625 - 5 / 9)
    assert float(finetune["net_saving"]) == pytest.approx(11.0 - (10 + 0.0625 - 5 / 9))
    student = rows["distill[10pct]"]
    assert (student["comparison"], student["teacher_comparison"]) == ("worse", "worse")
    assert (student["labels_saved"], student["money_saved"], student["net_saving"]) == ("", "", "")
    assert float(student["extra_compute_cost"]) == pytest.approx(10 + 10 + 0.5 - 0.25)
    baseline = rows["baseline[20labels]"]
    assert all(baseline[column] == "" for column in ("comparison", "p_value", "net_saving", "teacher_comparison"))


def test_csv_without_predictions(tmp_path):
    out = tmp_path / "report"
    build_report(make_run(tmp_path / "run", predictions=False), out, SETTINGS)
    for row in read_csv(out / "report.csv"):
        if row["kind"] in ("finetune", "distill"):
            assert row["comparison"] == "not_tested_no_predictions"
            assert (row["p_value"], row["difference_low"], row["labels_saved"], row["net_saving"]) == ("",) * 4
            assert row["difference"] != ""  # the recorded top-1s still differ by a number


def test_no_text_cell_a_spreadsheet_would_run_and_numbers_stay_numbers(tmp_path):
    """Text from settings and manifests (a currency, a device name, the pre-labeling model) that starts like a formula
    is written with a leading quote; a negative number is a number and is written as it is."""
    stage_dirs = make_run(tmp_path / "run", predict=True)
    edits = {"predict": ("metrics", "model", "=cmd|'/C calc'!A0"), "pretrain": ("devices", "name", "+GPU")}
    for name, (section, key, value) in edits.items():
        manifest = json.loads((stage_dirs[name] / "manifest.json").read_text())
        manifest[section][key] = value
        (stage_dirs[name] / "manifest.json").write_text(json.dumps(manifest))
    out = tmp_path / "report"
    build_report(stage_dirs, out, dataclasses.replace(SETTINGS, currency="@EUR"))

    negative_numbers = 0
    for name in ("report.csv", "report_compute.csv", "report_prelabeling.csv"):
        for row in read_csv(out / name):
            for column, cell in row.items():
                if cell.startswith(("=", "+", "-", "@", "\t", "\r")):
                    assert math.isfinite(float(cell)), (name, column, cell)  # only a number may start so
                    negative_numbers += 1
    assert negative_numbers > 0  # e.g. the distilled 10% model's difference from the baseline
    assert {row["currency"] for row in read_csv(out / "report.csv")} == {"'@EUR", ""}  # "": the encoder rows
    assert {row["stage"]: row["device_name"] for row in read_csv(out / "report_compute.csv")}["pretrain"] == "'+GPU"
    assert {row["model"] for row in read_csv(out / "report_prelabeling.csv")} == {"'=cmd|'/C calc'!A0"}
