"""The whole report from synthetic manifests: the files it writes, and every number in the Markdown and HTML tables is
the CSV number it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from html import unescape
from pathlib import Path

import pytest

from reports import build_report
from reports.tables import (
    METHOD_NAMES,
    accuracy,
    budget,
    count,
    device_hours,
    difference,
    duration,
    money,
    percent,
    significance,
    stage_label,
)
from tests.reports.report_fixtures import (
    CLASSIFIERS,
    HEADLINE,
    SETTINGS,
    html_cells,
    make_run,
    markdown_cells,
    read_csv,
)


def test_files_written(built):
    out, metrics = built
    for name in ["report.md", "report.html", "report.csv", "report_compute.csv", "accuracy_vs_labels.png"]:
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_labels.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(metrics["files"]) == sorted(p.name for p in out.iterdir())
    json.dumps(metrics, allow_nan=False)  # the manifest takes it as it is


def test_headline(built):
    out, metrics = built
    assert metrics["headline"] == HEADLINE
    assert HEADLINE in (out / "report.md").read_text()
    assert HEADLINE in unescape((out / "report.html").read_text())


def needed_cell(row: dict[str, str]) -> str:
    needed = count(int(row["baseline_labels_needed"])) if row["baseline_labels_needed"] else ""
    return {
        "interpolated": f"about {needed}",
        "beyond": f"beyond the measured range (> {needed} labels)",
        "at_most": f"at most {needed} labels",
    }[row["labels_needed_kind"]]


def optional(text: str, show: Callable[[str], str]) -> str:
    return "—" if text == "" else show(text)


def number(text: str) -> float | None:
    return None if text == "" else float(text)


def accuracy_cell(row: dict[str, str], prefix: str = "") -> str:
    top1, low, high = (number(row[f"{prefix}test_top1{end}"]) for end in ("", "_low", "_high"))
    return accuracy(top1, low, high)


def difference_cell(row: dict[str, str], prefix: str = "") -> str:
    value, low, high = (number(row[f"{prefix}difference{end}"]) for end in ("", "_low", "_high"))
    return difference(value, low, high)


def expected_tables(out: Path) -> list[list[str]]:
    """The cells the three tables must show, built from the CSV rows alone: each number where its metric belongs."""
    rows = [row for row in read_csv(out / "report.csv") if row["kind"] in METHOD_NAMES]
    by_stage = {row["stage"]: row for row in rows}
    accuracy = []
    for name in dict.fromkeys(row["budget"] for row in rows):  # budgets in CSV order: by labels
        first = next(row for row in rows if row["budget"] == name)
        accuracy += [budget(name), count(int(first["num_labels"])), money(float(first["label_cost"]), "EUR")]
        for kind in METHOD_NAMES:
            row = by_stage.get(f"{kind}[{name}]")
            accuracy += [accuracy_cell(row), percent(float(row["test_top5"]))] if row else ["—", "—"]
    saved, teacher = [], []
    for row in rows:
        if row["kind"] != "baseline":
            saved += [METHOD_NAMES[row["kind"]], budget(row["budget"]), count(int(row["num_labels"]))]
            saved += [accuracy_cell(row), difference_cell(row)]
            p = number(row["p_value"])
            saved += [significance(row["comparison"], p, "SimCLRv2", "baseline", "no baseline with the same labels")]
            saved += [needed_cell(row) if row["comparison"] == "better" else "—"]
            saved += [optional(row["labels_saved"], lambda text: count(int(text)))]
            saved += [optional(row["money_saved"], lambda text: money(float(text), "EUR"))]
            saved += [optional(row["net_saving"], lambda text: money(float(text), "EUR"))]
        if row["kind"] == "distill":
            teacher += [budget(row["budget"]), count(int(row["num_labels"]))]
            teacher += [accuracy_cell(row), accuracy_cell(row, "teacher_"), difference_cell(row, "teacher_")]
            p = number(row["teacher_p_value"])
            teacher += [significance(row["teacher_comparison"], p, "student", "teacher", "no teacher among the inputs")]
    compute = []
    for row in read_csv(out / "report_compute.csv"):
        total = row["stage"] == "total"
        compute += [
            "Total (sum over stages)" if total else stage_label(row["stage"]),
            "" if total else {"cuda": "GPU", "cpu": "CPU machine"}[row["device"]],
            "" if total else count(int(row["devices"])),
            duration(float(row["wall_seconds"])),
            device_hours(float(row["device_hours"])),
            money(float(row["compute_cost"]), "EUR"),
        ]
    return [accuracy, saved, teacher, compute]


@pytest.mark.parametrize("page", ["md", "html"])
def test_every_table_cell_is_its_number_from_the_csv(built, page):
    out, _ = built
    text = (out / f"report.{page}").read_text()
    assert (markdown_cells(text) if page == "md" else html_cells(text)) == expected_tables(out)


@pytest.mark.parametrize("page", ["md", "html"])
def test_known_numbers_in_the_pages(built, page):
    out, _ = built
    text = unescape((out / f"report.{page}").read_text())
    for shown in [
        "55.0% [50.6–59.3]",  # distilled, 20 labels: 275 of 500 right, with its Wilson interval
        "about 64",  # fine-tuned at 20 labels: sqrt(20 x 200) = 63.2, rounded up
        "beyond the measured range (> 2,000 labels)",  # fine-tuned at 10%: significantly better, but no estimate
        "baseline significantly better (p < 0.001)",  # distilled at 10%: 35% against 60%
        "23.25 EUR",  # 93 labels saved x 0.25
        "13.24 EUR",  # net: 23.25 - (10 + 0.0625 + 0.5 - 0.5556)
        "student significantly better (p < 0.001)",  # 55% against its teacher's 50%
        "linear evaluation 90.0% [87.1–92.3]",
        "nearest neighbours (kNN) 88.0% [84.9–90.6]",
        "about ±4.4 points",  # 1.96 x sqrt(0.25 / 500)
        "all 2,000 training labels",
        "One label costs 0.25 EUR",
        "costs 2.50 EUR",  # per device-hour
        "synthetic test images",
        "500 test images",
    ]:
        assert shown in text, shown


def test_missing_stages_leave_gaps_not_errors(tmp_path):
    classifiers = {name: v for name, v in CLASSIFIERS.items() if name.startswith(("baseline", "finetune"))}
    out = tmp_path / "report"
    metrics = build_report(make_run(tmp_path / "run", classifiers, evaluate=False), out, SETTINGS)
    assert metrics["headline"].startswith(
        "With 20 labels the fine-tuned model reaches 50.0% [45.6–54.4], significantly better than the supervised "
    )
    assert metrics["headline"].endswith("net of the extra compute (9.51 EUR), that saves 1.49 EUR.")
    text = (out / "report.md").read_text()
    assert "Pretrained encoder alone" not in text and "Distilled student against its teacher" not in text
    assert [row["kind"] for row in read_csv(out / "report.csv")].count("distill") == 0


def test_reports_never_imports_torch(stage_dirs, tmp_path):
    script = (
        "import sys; from pathlib import Path; from reports import build_report, ReportSettings; "
        f"dirs = {{k: Path(v) for k, v in {json.dumps({k: str(v) for k, v in stage_dirs.items()})}.items()}}; "
        f"build_report(dirs, Path({str(tmp_path / 'out')!r}), ReportSettings(0.1, 'USD', 1.0, 'x')); "
        "assert 'torch' not in sys.modules, 'reports imported torch'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])


def test_every_file_is_replaced_atomically(tmp_path, monkeypatch):
    """A rebuild (`simclrv2 report`) renames each finished file into place: a reader sees the old file or the new
    one, never half of one."""
    out = tmp_path / "report"
    build_report(make_run(tmp_path / "run", predict=True), out, SETTINGS)
    renamed: list[Path] = []
    replace = os.replace

    def recording_replace(source, destination):
        renamed.append(Path(destination))
        replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    metrics = build_report(make_run(tmp_path / "run", predict=True), out, SETTINGS)
    assert sorted(p.name for p in out.iterdir()) == sorted(metrics["files"])  # no temporary file left
    assert {path.name for path in renamed if path.parent == out} == set(metrics["files"])
