"""The self-contained HTML page."""

import re
from html import unescape

from reports.html_page import render_html
from reports.text import render_markdown
from tests.reports.report_fixtures import html_cells, markdown_cells


def test_html_is_self_contained(report):
    html = render_html(report, b"\x89PNG fake")
    assert "data:image/png;base64," in html
    links = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, flags=re.IGNORECASE)
    assert links and all(link.startswith("data:") for link in links)
    assert not re.search(r"https?://", html)
    assert "<link" not in html and "<script" not in html
    assert "<style>" in html


def test_html_says_what_the_markdown_says(report):
    html, markdown = render_html(report, b""), render_markdown(report)
    assert html_cells(html) == markdown_cells(markdown)
    assert unescape(re.search(r'<p class="headline">(.*?)</p>', html)[1]) in markdown
