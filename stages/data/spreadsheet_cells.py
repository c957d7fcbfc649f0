"""Text cells of the CSV files people open in a spreadsheet, made safe from formula injection (OWASP "CSV injection"),
and read back exactly.

A spreadsheet (Excel, LibreOffice, Google Sheets) may run a cell that starts with `=`, `+`, `-`, `@`, a tab or a
carriage return as a formula; so an image named `=HYPERLINK("...")-1.png` would be a live formula in `to_label.csv`.
The rule, for string cells only (numbers stay numbers: a negative number is written as a number, never quoted; a
string that looks like one, such as a class named "-1", is a string and is escaped):

    escape:    a string that starts with zero or more `'` and then one of  =  +  -  @  tab  CR  gets one more `'`
               in front; every other string, and every non-string, is left as it is.
    unescape:  a string that starts with one or more `'` and then one of those characters loses its first `'`;
               everything else is left as it is.

So `=sum.png` is written `'=sum.png`, `-1` (a class named "-1") `'-1`, and a name that itself starts with a quote
before such a character, `'=x`, is written `''=x`; `'plain` and `plain` are written as they are. No escaped cell
starts with a dangerous character, and `unescape(escape(x)) == x` for every string x (the escaped strings are exactly
those that start with `'`s and then a dangerous character, and unescape undoes one `'` of just those).

A person who fills in such a CSV in a spreadsheet may save the escaped cells as they are (`'=sum.png`) or, where the
spreadsheet took the `'` as its text prefix, without it (`=sum.png`): both read back as `=sum.png`. Only a hand-written
file that names a real image starting with `'` and then a dangerous character must write its quote twice.

Only CSV gets this: Parquet and JSON files hold the values as they are.
"""

from __future__ import annotations

from typing import Any

QUOTE = "'"
DANGEROUS = ("=", "+", "-", "@", "\t", "\r")  # a spreadsheet may read a cell starting with one as a formula


def _guarded(text: str) -> bool:
    """Whether `text` is `'`* followed by a dangerous character (then anything)."""
    return text.lstrip(QUOTE).startswith(DANGEROUS)


def escape_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as text (module docstring); non-strings are returned unchanged."""
    if isinstance(value, str) and _guarded(value):
        return QUOTE + value
    return value


def unescape_cell(value: Any) -> Any:
    """The inverse of `escape_cell`, for a cell read back from such a CSV; non-strings are returned unchanged."""
    if isinstance(value, str) and value.startswith(QUOTE) and _guarded(value):
        return value[1:]
    return value


def escape_row(values: Any) -> list[Any]:
    """`escape_cell` of each value of a row (any iterable)."""
    return [escape_cell(value) for value in values]
