"""The report as one self-contained HTML page (`report.html`): inline CSS, the plot embedded as a base64 PNG, no
external resources, so it can be mailed or opened offline."""

from __future__ import annotations

import base64
from html import escape

from reports.label_budget import LabelBudgetReport
from reports.tables import Table
from reports.text import PLOT_ALT, TITLE, Section, headlines, sections

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 64rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.5rem; }
.headline { font-size: 1.2rem; font-weight: 600; background: #eef5ff; border-left: 4px solid #1f77b4;
            padding: 0.8rem 1rem; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
img { max-width: 100%; height: auto; }
.note { color: #555; font-size: 0.92rem; }
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(text)}</th>" for text in table.headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(text)}</td>' if numeric else f"<td>{escape(text)}</td>"
            for text, numeric in zip(row, table.numeric, strict=True)
        )
        + "</tr>"
        for row in table.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_section(section: Section, plot_png: bytes) -> str:
    parts = [f"<h2>{escape(section.title)}</h2>"]
    if section.table is not None:
        parts.append(html_table(section.table))
    parts += [f'<p class="note">{escape(note)}</p>' for note in section.notes]
    if section.plot:
        data = base64.b64encode(plot_png).decode("ascii")
        parts.append(f'<img src="data:image/png;base64,{data}" alt="{escape(PLOT_ALT)}">')
    if section.bullets:
        parts.append("<ul>" + "".join(f"<li>{escape(bullet)}</li>" for bullet in section.bullets) + "</ul>")
    return "\n".join(parts)


def render_html(report: LabelBudgetReport, plot_png: bytes) -> str:
    """`report.html`: the headlines, then every section, the plot embedded."""
    body = "\n".join(html_section(section, plot_png) for section in sections(report))
    top = "\n".join(f'<p class="headline">{escape(line)}</p>' for line in headlines(report))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(TITLE)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{escape(TITLE)}</h1>\n{top}\n{body}\n</body>\n</html>\n"
    )
