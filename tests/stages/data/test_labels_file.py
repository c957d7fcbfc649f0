"""The labels file (stages/data/labels_file.py) as a spreadsheet saves it: a UTF-8 byte-order mark, and image and
class cells escaped against formulas (with or without the quote), read as the names they stand for."""

import pytest

from stages.data.errors import DataError
from stages.data.labels_file import read_labels_file

IDS = ["=HYPERLINK(x)-1.png", "+cmd.png", "@sum.png", "-2.png", "'=quoted.png", "plain.png"]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig"])
def test_a_byte_order_mark_is_skipped(tmp_path, encoding):
    path = tmp_path / "labels.csv"
    path.write_text("image,label\nplain.png,cat\n+cmd.png,dog\n", encoding=encoding)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    assert read_labels_file(path, IDS) == {5: "cat", 1: "dog"}


def test_escaped_cells_read_back_as_the_names_they_stand_for(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "image,label\n"
        "\"'=HYPERLINK(x)-1.png\",'=cat\n"  # as `simclrv2 select` writes them, labels typed the same way
        "'+cmd.png,'-1\n"
        "@sum.png,=cat\n"  # saved by a spreadsheet that took the quote as its text prefix
        "'-2.png,  dog  \n"
        "''=quoted.png,'plain\n"  # a real name that starts with a quote: written with two
        "plain.png,\n",  # not labeled
        encoding="utf-8-sig",
    )
    assert read_labels_file(path, IDS) == {0: "=cat", 1: "-1", 2: "=cat", 3: "dog", 4: "'plain"}


def test_an_escaped_and_a_raw_cell_of_one_image_are_the_same_image(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("image,label\n'=HYPERLINK(x)-1.png,cat\n=HYPERLINK(x)-1.png,dog\n")
    with pytest.raises(DataError, match=r"conflicting labels .*'=HYPERLINK\(x\)-1\.png': \['cat', 'dog'\]"):
        read_labels_file(path, IDS)
