"""How numbers are written in the report: one function per kind of number, shared by Markdown, HTML, the headline and
the tests, so the same metric reads the same everywhere."""

from __future__ import annotations

from reports.labels_needed import AT_MOST, BEYOND, INTERPOLATED, LabelsNeeded

MISSING = "—"  # a model or number this run did not produce


def percent(fraction: float | None) -> str:
    return MISSING if fraction is None else f"{100 * fraction:.1f}%"


def count(number: int | None) -> str:
    return MISSING if number is None else f"{number:,}"


def money(amount: float | None, currency: str) -> str:
    if amount is None:
        return MISSING
    # Cents would round a stage's few seconds of compute to 0.00: amounts under a cent keep four decimals.
    decimals = 2 if amount == 0 or abs(amount) >= 0.01 else 4
    return f"{amount:,.{decimals}f} {currency}"


def budget(name: str) -> str:
    """A budget name as people write it: "10pct" -> "10%", "12p5pct" -> "12.5%", "250labels" -> "250 labels"."""
    if name.endswith("pct"):
        return name.removesuffix("pct").replace("p", ".") + "%"
    if name.endswith("labels"):
        return name.removesuffix("labels") + " labels"
    return name


def device_hours(hours: float) -> str:
    return f"{hours:,.3f}"


def duration(seconds: float) -> str:
    """Wall time in the unit a reader grasps at once: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:,.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:,.1f} min"
    return f"{seconds / 3600:,.2f} h"


def labels_needed_text(needed: LabelsNeeded) -> str:
    """The "labels the baseline needs" cell: an estimate, or the bound that replaces one."""
    if needed.kind == INTERPOLATED:
        return f"about {count(needed.labels)}"
    if needed.kind == AT_MOST:
        return f"at most {count(needed.labels)} labels"
    if needed.kind == BEYOND:
        return f"beyond the measured range (> {count(needed.labels)} labels)"
    return "no baseline to compare with"
