"""The report as Markdown (`report.md`), next to its plot file."""

from __future__ import annotations

from reports.report_data import LabelBudgetReport
from reports.sections import PLOT_ALT, PLOT_FILE, TITLE, Section, sections
from reports.tables import Table


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(table: Table) -> list[str]:
    rule = ["---:" if numeric else ":---" for numeric in table.numeric]
    rows = [table.headers, rule, *table.rows]
    return ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]


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
    lines = [f"# {TITLE}", "", f"**{report.headline}**", ""]
    for section in sections(report):
        lines += markdown_section(section)
    return "\n".join(lines)
