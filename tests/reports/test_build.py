"""The whole report from synthetic manifests: the files it writes, and every number in the Markdown and HTML tables is
the CSV number it came from."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from html import unescape
from pathlib import Path

import pytest

from reports import build_report
from reports.tables import METHOD_NAMES, budget, count, device_hours, duration, money, percent, stage_label
from tests.reports.report_fixtures import CLASSIFIERS, SETTINGS, html_cells, make_run, markdown_cells, read_csv

HEADLINE = (
    "With 20 labels the distilled model reaches 55.0%; supervised training needs about 113 labels for that "
    "(93 more, 23.25 EUR)."
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
            accuracy += [percent(float(row["test_top1"])), percent(float(row["test_top5"]))] if row else ["—", "—"]
    saved = []
    for row in rows:
        if row["kind"] != "baseline":
            saved += [METHOD_NAMES[row["kind"]], budget(row["budget"]), count(int(row["num_labels"]))]
            saved += [percent(float(row["test_top1"])), needed_cell(row)]
            saved += [optional(row["labels_saved"], lambda text: count(int(text)))]
            saved += [optional(row["money_saved"], lambda text: money(float(text), "EUR"))]
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
    return [accuracy, saved, compute]


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
        "55.0%",  # distilled, 20 labels
        "about 64",  # fine-tuned at 20 labels: sqrt(20 x 200) = 63.2, rounded up
        "beyond the measured range (> 2,000 labels)",
        "at most 20 labels",
        "23.25 EUR",  # 93 labels saved x 0.25
        "linear probe 90.0%",
        "nearest neighbours (kNN) 88.0%",
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
    assert metrics["headline"].startswith("With 20 labels the fine-tuned model reaches 50.0%; ")
    assert "Pretrained encoder alone" not in (out / "report.md").read_text()
    assert [row["kind"] for row in read_csv(out / "report.csv")].count("distill") == 0


def test_reports_never_imports_torch(stage_dirs, tmp_path):
    script = (
        "import sys; from pathlib import Path; from reports import build_report, ReportSettings; "
        f"dirs = {{k: Path(v) for k, v in {json.dumps({k: str(v) for k, v in stage_dirs.items()})}.items()}}; "
        f"build_report(dirs, Path({str(tmp_path / 'out')!r}), ReportSettings(0.1, 'USD', 1.0, 'x')); "
        "assert 'torch' not in sys.modules, 'reports imported torch'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])
