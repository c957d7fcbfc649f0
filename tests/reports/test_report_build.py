"""The whole report from synthetic manifests: every number in the Markdown, HTML and CSV is the metric it came from."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from collections.abc import Callable
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

from reports import build_report
from reports.formatting import budget, count, device_hours, duration, money, percent
from reports.tables import METHOD_NAMES, stage_label
from tests.reports.report_fixtures import CLASSIFIERS, SETTINGS, make_run

HEADLINE = (
    "With 20 labels the distilled model reaches 55.0%; supervised training needs about 113 labels for that "
    "(93 more, 23.25 EUR)."
)


@pytest.fixture
def built(stage_dirs: dict[str, Path], tmp_path: Path) -> tuple[Path, dict]:
    out = tmp_path / "report"
    return out, build_report(stage_dirs, out, SETTINGS)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def number(text: str) -> float | None:
    return None if text == "" else float(text)


class Cells(HTMLParser):
    """The text of every <td> of an HTML page, table by table."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[str]] = []
        self.inside = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "table":
            self.tables.append([])
        self.inside = tag == "td"
        if self.inside:
            self.tables[-1].append("")

    def handle_endtag(self, tag: str) -> None:
        self.inside = self.inside and tag != "td"

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.tables[-1][-1] += data


def html_cells(text: str) -> list[list[str]]:
    """Body cells of every HTML table, table by table."""
    parser = Cells()
    parser.feed(text)
    return parser.tables


def markdown_cells(text: str) -> list[list[str]]:
    """Body cells of every Markdown table, table by table (header and rule rows left out)."""
    tables: list[list[str]] = []
    for block in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.MULTILINE):
        rows = block.strip().splitlines()[2:]
        tables.append([cell.strip() for row in rows for cell in row.strip("|").split(" | ")])
    return tables


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


def test_csv_numbers_are_the_manifest_metrics(built, stage_dirs):
    out, metrics = built
    rows = read_csv(out / "report.csv")
    assert [row["stage"] for row in rows[:-2]] == [
        "baseline[20labels]",
        "finetune[20labels]",
        "distill[20labels]",
        "baseline[10pct]",
        "finetune[10pct]",
        "distill[10pct]",
        "baseline[100pct]",
    ]
    for row in rows[:-2]:
        source = json.loads((stage_dirs[row["stage"]] / "manifest.json").read_text())["metrics"]
        top1, top5, _, _, _ = CLASSIFIERS[row["stage"]]
        assert float(row["test_top1"]) == source["test_top1"] == top1
        assert float(row["test_top5"]) == source["test_top5"] == top5
        assert int(row["num_test"]) == source["num_test"]
        assert float(row["label_cost"]) == pytest.approx(int(row["num_labels"]) * SETTINGS.cost_per_label)
    assert [int(row["num_labels"]) for row in rows[:-2]] == [20, 20, 20, 200, 200, 200, 2000]
    probe, knn = rows[-2:]
    assert (probe["kind"], float(probe["test_top1"]), int(probe["num_labels"])) == ("linear_probe", 0.9, 2000)
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


def test_html_is_self_contained(built):
    out, _ = built
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, flags=re.IGNORECASE)
    assert links and all(link.startswith("data:") for link in links)
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html
    assert "<style>" in html


def test_missing_stages_leave_gaps_not_errors(tmp_path):
    classifiers = {name: v for name, v in CLASSIFIERS.items() if name.startswith(("baseline", "finetune"))}
    out = tmp_path / "report"
    metrics = build_report(make_run(tmp_path / "run", classifiers, evaluate=False), out, SETTINGS)
    assert metrics["headline"].startswith("With 20 labels the fine-tuned model reaches 50.0%; ")
    assert "Pretrained encoder alone" not in (out / "report.md").read_text()
    assert [row["kind"] for row in read_csv(out / "report.csv")].count("distill") == 0


def test_non_monotone_baseline_is_said(tmp_path):
    classifiers = {**CLASSIFIERS, "baseline[10pct]": (0.30, 0.60, 200, CLASSIFIERS["baseline[10pct]"][3], 1.0)}
    out = tmp_path / "report"
    build_report(make_run(tmp_path / "run", classifiers), out, SETTINGS)
    assert "did not always rise with more labels" in (out / "report.md").read_text()


def test_monotone_baseline_is_not_flagged(built):
    out, metrics = built
    assert metrics["baseline_monotone"]
    assert "did not always rise" not in (out / "report.md").read_text()


def test_reports_never_imports_torch(stage_dirs, tmp_path):
    script = (
        "import sys; from pathlib import Path; from reports import build_report, ReportSettings; "
        f"dirs = {{k: Path(v) for k, v in {json.dumps({k: str(v) for k, v in stage_dirs.items()})}.items()}}; "
        f"build_report(dirs, Path({str(tmp_path / 'out')!r}), ReportSettings(0.1, 'USD', 1.0, 'x')); "
        "assert 'torch' not in sys.modules, 'reports imported torch'"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).parents[2])
