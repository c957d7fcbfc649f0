"""Spreadsheet-safe CSV cells (stages/data/spreadsheet_cells.py): every dangerous first character is guarded by a
leading quote, the inverse is exact for every string, and everything else is left as it is."""

import itertools
import math

import numpy as np
import pytest

from stages.data.spreadsheet_cells import DANGEROUS, escape_cell, escape_row, unescape_cell


def is_dangerous(cell: str) -> bool:
    return cell.startswith(("=", "+", "-", "@", "\t", "\r"))


@pytest.mark.parametrize("first", ["=", "+", "-", "@", "\t", "\r"])
def test_every_dangerous_first_character_gets_a_quote(first):
    cell = first + 'HYPERLINK("http://x")'
    assert escape_cell(cell) == "'" + cell
    assert unescape_cell(escape_cell(cell)) == cell
    assert first in DANGEROUS


@pytest.mark.parametrize(
    ("name", "written"),
    [
        ('=HYPERLINK("http://x")-1.png', '\'=HYPERLINK("http://x")-1.png'),
        ("+cmd.png", "'+cmd.png"),
        ("@sum.png", "'@sum.png"),
        ("-2.png", "'-2.png"),
        ("-1", "'-1"),  # a class named "-1" is a string, not a number
        ("-0.5", "'-0.5"),
        ("'=x", "''=x"),  # a real name that starts with a quote before a dangerous character
        ("''+x", "'''+x"),
        ("'plain", "'plain"),  # a quote before a harmless character: nothing to guard
        ("''", "''"),
        ("'", "'"),
        ("cat", "cat"),
        ("img-7.png", "img-7.png"),  # a dangerous character later in the name is harmless
        (" =x", " =x"),  # leading space: not on the list
        ("", ""),
    ],
)
def test_what_is_written_and_read_back(name, written):
    assert escape_cell(name) == written
    assert unescape_cell(written) == name
    assert not is_dangerous(written)


def test_the_round_trip_is_exact_for_every_short_string_over_the_tricky_characters():
    alphabet = ["'", "=", "+", "-", "@", "\t", "\r", "a", " ", "\n", '"']
    for length in range(5):
        for letters in itertools.product(alphabet, repeat=length):
            text = "".join(letters)
            escaped = escape_cell(text)
            assert unescape_cell(escaped) == text, repr(text)
            assert not is_dangerous(escaped), repr(text)
            assert escape_cell(text) == text or escaped == "'" + text  # at most one quote is added


def test_escaping_is_one_to_one_so_escaped_names_still_tell_images_apart():
    names = ["=a", "'=a", "''=a", "a", "'a", "-1", "'-1"]
    assert len({escape_cell(name) for name in names}) == len(names)


def test_an_unescaped_cell_as_a_spreadsheet_may_save_it_reads_as_it_is():
    """A spreadsheet that took the quote as its text prefix saves `=x.png`: it reads back the same."""
    for cell in ["=x.png", "+1", "-2.png", "@a", "plain", "'plain"]:
        assert unescape_cell(cell) == cell


@pytest.mark.parametrize("value", [-0.5, -1, 0, 3.25, float("nan"), None, True, np.float32(-0.25), np.int64(-3)])
def test_numbers_and_other_non_strings_are_left_as_they_are(value):
    assert escape_cell(value) is value and unescape_cell(value) is value


def test_a_row_escapes_its_strings_only():
    row = escape_row(["=a", -0.5, "b", None, "-1"])
    assert row[0] == "'=a" and row[1] == -0.5 and row[2] == "b" and row[3] is None and row[4] == "'-1"
    assert escape_row(np.asarray(["@x", "y"], dtype=object)) == ["'@x", "y"]  # numpy strings are strings
    assert math.isnan(escape_row([float("nan")])[0])
