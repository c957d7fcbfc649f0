"""Label lists (stages/selection/label_lists.py): the CSV to fill in, read back as a labels file; the Label Studio
tasks file; atomic writes that never replace a file unless asked."""

import csv
import json
import re

import pytest
import torch

from stages.data.labels_file import read_labels_file
from stages.selection.label_lists import label_studio_url, write_label_studio_tasks, write_selection_csv

IDS = ["img-7.png", "img, 3.png", "img-12.png"]
PATHS = ["/data/cats/img-7.png", "/data/cats/img, 3.png", None]
SCORES = torch.tensor([0.91, float("inf"), 0.123456789])
REASONS = ["typical point of an unlabeled cluster", "far from labeled images", 'odd "quoted" reason']


def test_csv_has_the_header_rank_order_and_an_empty_label_column(tmp_path):
    path = write_selection_csv(tmp_path / "to_label.csv", IDS, PATHS, SCORES, REASONS)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "image,label,path,rank,score,reason"
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    assert [row["image"] for row in rows] == IDS and [row["rank"] for row in rows] == ["1", "2", "3"]
    assert [row["label"] for row in rows] == ["", "", ""]
    assert [row["path"] for row in rows] == ["/data/cats/img-7.png", "/data/cats/img, 3.png", ""]
    assert [row["score"] for row in rows] == ["0.91", "inf", "0.123457"] and rows[2]["reason"] == REASONS[2]


def test_the_csv_filled_in_reads_back_as_labels_by_column_name(tmp_path):
    path = write_selection_csv(tmp_path / "to_label.csv", IDS, PATHS, SCORES, REASONS)
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    rows[0]["label"], rows[2]["label"] = "cat", "dog"  # the person labels two of three
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["reason", "label", "image", "rank"], extrasaction="ignore")
        writer.writeheader()  # columns reordered and dropped, as a spreadsheet might
        writer.writerows(rows)
    labels = {row["image"]: row["label"] for row in csv.DictReader(path.open(encoding="utf-8", newline=""))}
    assert {image: label for image, label in labels.items() if label} == {"img-7.png": "cat", "img-12.png": "dog"}


def test_the_csv_as_written_then_filled_in_is_a_labels_file_for_data_labels(tmp_path):
    path = write_selection_csv(tmp_path / "to_label.csv", IDS, PATHS, SCORES, REASONS)
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace("img-7.png,,", "img-7.png,cat,", 1)  # typed into the empty label cell
    lines[2] = lines[2].replace('"img, 3.png",,', '"img, 3.png",dog,', 1)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    training_ids = ["img-12.png", "img, 3.png", "other.png", "img-7.png"]
    assert read_labels_file(path, training_ids) == {3: "cat", 1: "dog"}  # the unlabeled third row is skipped


def test_label_studio_tasks_point_at_local_files_under_the_document_root(tmp_path):
    paths = [str(tmp_path / "images" / "a b&c.png"), str(tmp_path / "images" / "sub" / "d.png"), "https://x.org/e.png"]
    path = write_label_studio_tasks(tmp_path / "tasks.json", [4, "row-9", 12], paths, document_root=tmp_path)
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert tasks == [
        {"data": {"image": "/data/local-files/?d=images/a%20b%26c.png", "id": 4}},
        {"data": {"image": "/data/local-files/?d=images/sub/d.png", "id": "row-9"}},
        {"data": {"image": "https://x.org/e.png", "id": 12}},
    ]
    assert label_studio_url("/srv/data/x.png") == "/data/local-files/?d=srv/data/x.png"  # default root: /


def test_label_studio_refuses_files_outside_the_root_and_rows_without_a_file(tmp_path):
    with pytest.raises(ValueError, match="not inside the Label Studio document root"):
        write_label_studio_tasks(tmp_path / "tasks.json", ["a"], ["/elsewhere/a.png"], document_root=tmp_path)
    with pytest.raises(ValueError, match="has no file path"):
        write_label_studio_tasks(tmp_path / "tasks.json", ["a"], [None])
    assert not (tmp_path / "tasks.json").exists()


@pytest.mark.parametrize("kind", ["csv", "label-studio"])
def test_an_existing_file_is_kept_unless_overwrite_and_no_temporary_file_is_left(tmp_path, kind):
    def write(path, **kwargs):
        if kind == "csv":
            return write_selection_csv(path, IDS, PATHS, SCORES, REASONS, **kwargs)
        return write_label_studio_tasks(path, IDS[:2], PATHS[:2], **kwargs)

    path = tmp_path / "out" / "list"  # the folder is made
    path.parent.mkdir()
    path.write_text("labels typed in earlier\n")
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))} already exists and was left as it is"):
        write(path)
    assert path.read_text() == "labels typed in earlier\n"
    write(path, overwrite=True)
    assert path.read_text() != "labels typed in earlier\n"
    assert [p.name for p in path.parent.iterdir()] == ["list"]


def test_mismatched_columns_and_repeated_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="one entry per image is needed in each column, got ids 3, paths 2"):
        write_selection_csv(tmp_path / "a.csv", IDS, PATHS[:2], SCORES, REASONS)
    with pytest.raises(ValueError, match="image id 'x' appears twice"):
        write_selection_csv(tmp_path / "a.csv", ["x", "y", "x"], PATHS, SCORES, REASONS)


HOSTILE = ['=HYPERLINK("http://x")-1.png', "+cmd.png", "@sum.png", "-2.png", "\tTAB.png", "'=quoted.png"]


def test_names_a_spreadsheet_would_run_are_written_escaped_and_read_back_as_labels(tmp_path):
    paths = ["=/data/x.png", None, "@/data/y.png", "", "", ""]
    scores = [-0.5, 0.25, float("-inf"), 1.0, 0.5, 0.75]  # numbers stay numbers, a negative one too
    reasons = ["=1+1", "far", "far", "-", "far", "far"]
    path = write_selection_csv(tmp_path / "to_label.csv", HOSTILE, paths, scores, reasons)
    rows = list(csv.DictReader(path.open(encoding="utf-8", newline="")))
    assert [row["image"] for row in rows] == [
        '\'=HYPERLINK("http://x")-1.png',
        "'+cmd.png",
        "'@sum.png",
        "'-2.png",
        "'\tTAB.png",
        "''=quoted.png",
    ]
    assert [row["path"] for row in rows] == ["'=/data/x.png", "", "'@/data/y.png", "", "", ""]
    assert [row["reason"] for row in rows] == ["'=1+1", "far", "far", "'-", "far", "far"]
    assert [row["score"] for row in rows] == ["-0.5", "0.25", "-inf", "1", "0.5", "0.75"]
    text_cells = [row[column] for row in rows for column in ("image", "label", "path", "reason")]
    assert not [cell for cell in text_cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]

    # (a name with leading white space, such as the tab one, cannot be labeled: names are read stripped)
    for row, label in zip(rows, ["'=cat", "dog", "'-1", "", "", "=cat"], strict=True):
        row["label"] = label  # typed in as a spreadsheet keeps it: with its quote, or without
    with path.open("w", encoding="utf-8", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    training_ids = ["other.png", *reversed(HOSTILE)]
    assert read_labels_file(path, training_ids) == {6: "=cat", 5: "dog", 4: "-1", 1: "=cat"}
