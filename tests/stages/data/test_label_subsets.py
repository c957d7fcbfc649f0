"""Label subsets (stages/data/label_subsets.py): balance, nesting, determinism, files, user lists, errors."""

import itertools
import json
import os

import pytest
import torch
from sklearn.datasets import load_digits

from stages.data.label_subsets import (
    SubsetError,
    budget_name,
    indices_sha256,
    load_subset,
    parse_budget_name,
    save_subset,
    select_subsets,
    water_fill,
)


@pytest.fixture(scope="module")
def digits_labels() -> torch.Tensor:
    return torch.as_tensor(load_digits().target, dtype=torch.int64)  # 1,797 real labels, 174-183 per class


@pytest.fixture
def skewed_labels() -> torch.Tensor:
    """Class 0 has 3 rows, class 1 has 20, class 2 has 50: water-filling has to cap class 0, then class 1."""
    return torch.tensor([2] * 50 + [0] * 3 + [1] * 20)[torch.randperm(73, generator=torch.Generator().manual_seed(0))]


def ids_for(labels: torch.Tensor) -> list[str]:
    return [f"n{int(label):04d}_{row}.JPEG" for row, label in enumerate(labels)]


def is_subset(small: torch.Tensor, large: torch.Tensor) -> bool:
    return set(small.tolist()) <= set(large.tolist())


# --- names ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "name"),
    [(0.01, "1pct"), (0.1, "10pct"), (1.0, "100pct"), (0.07, "7pct"), (0.125, "12p5pct"), (250, "250labels")],
)
def test_budget_names_are_stable_and_file_name_safe(budget, name):
    assert budget_name(budget) == name


# --- selection -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.01, 0.1, 0.125, 0.07, 1.0, 10, 250])
def test_budget_names_parse_back(budget):
    assert parse_budget_name(budget_name(budget)) == budget


@pytest.mark.parametrize("name", ["0pct", "150pct", "010pct", "1p0pct", "0labels", "10pcnt", "pct", "1 pct"])
def test_what_is_not_a_budget_name(name):
    assert parse_budget_name(name) is None


def test_fraction_and_count_sizes_and_balance(digits_labels):
    subsets = select_subsets(digits_labels, [0.01, 0.1, 1.0, 25], seed=0)
    assert list(subsets) == ["1pct", "10pct", "100pct", "25labels"]
    assert [len(subsets[name]) for name in subsets] == [18, 180, 1797, 25]  # round(f * N), or the count
    for name in ("1pct", "10pct", "25labels"):
        counts = torch.bincount(digits_labels[subsets[name]], minlength=10)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 1, name
    assert torch.equal(subsets["100pct"], torch.arange(1797))
    for indices in subsets.values():
        assert indices.dtype == torch.int64 and torch.equal(indices, indices.sort().values)
        assert len(indices.unique()) == len(indices)


def test_water_filling_caps_small_classes_and_spreads_the_rest(skewed_labels):
    for k in range(3, 74):
        counts = torch.bincount(skewed_labels[select_subsets(skewed_labels, [k], seed=3)[f"{k}labels"]], minlength=3)
        sizes = torch.bincount(skewed_labels)
        assert counts.sum() == k and (counts >= 1).all() and (counts <= sizes).all()
        open_counts = counts[counts < sizes]  # classes not exhausted: within one label of each other
        if len(open_counts):
            assert open_counts.max() - open_counts.min() <= 1, k
            full = counts[counts == sizes]
            assert len(full) == 0 or full.max() <= open_counts.min() + 1, k  # capped only when out of rows
    assert water_fill(torch.tensor([3, 20, 50]), torch.tensor([2, 1, 0]), 30).tolist() == [3, 13, 14]


def test_subsets_nest_across_fractions_and_counts(digits_labels):
    subsets = select_subsets(digits_labels, [10, 0.01, 25, 0.1, 500, 1.0], seed=7)
    ordered = sorted(subsets.values(), key=len)
    assert [len(s) for s in ordered] == [10, 18, 25, 180, 500, 1797]
    for small, large in itertools.pairwise(ordered):
        assert is_subset(small, large)


def test_every_budget_nests_in_every_larger_one(skewed_labels):
    subsets = select_subsets(skewed_labels, list(range(3, 74)), seed=11)
    for k in range(3, 73):
        assert is_subset(subsets[f"{k}labels"], subsets[f"{k + 1}labels"]), k


def test_selection_does_not_depend_on_the_other_budgets(digits_labels):
    alone = select_subsets(digits_labels, [0.1], seed=5)["10pct"]
    assert torch.equal(alone, select_subsets(digits_labels, [25, 0.1, 1.0], seed=5)["10pct"])


def test_deterministic_from_the_seed(digits_labels):
    first = select_subsets(digits_labels, [0.01, 0.1], seed=0)
    again = select_subsets(digits_labels.clone(), [0.01, 0.1], seed=0)
    other = select_subsets(digits_labels, [0.01, 0.1], seed=1)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["10pct"], other["10pct"]) and not torch.equal(first["1pct"], other["1pct"])


def test_same_size_budgets_give_the_same_subset(digits_labels):
    subsets = select_subsets(digits_labels, [0.1, 180, 0.1], seed=0)
    assert list(subsets) == ["10pct", "180labels"] and torch.equal(subsets["10pct"], subsets["180labels"])


@pytest.mark.parametrize(
    ("budgets", "message"),
    [
        ([5], r"5 labels, fewer than the 10 classes"),
        ([0.001], r"2 labels, fewer than the 10 classes"),
        ([0.0], r"not in \(0, 1\]"),
        ([1.5], r"not in \(0, 1\]"),
        ([float("nan")], r"not in \(0, 1\]"),
        ([0], r"below one label"),
        ([1798], r"more labels than the 1797 labeled training images"),
        (["10%"], r"'10%' is not a number"),
        ([True], r"True is not a number"),
        ([], r"non-empty list"),
    ],
)
def test_budget_errors_name_the_budget_and_the_accepted_values(digits_labels, budgets, message):
    with pytest.raises(SubsetError, match=message):
        select_subsets(digits_labels, budgets, seed=0)


# --- our files -----------------------------------------------------------------------------------------------------


def test_record_round_trip_with_checksum(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    indices = select_subsets(digits_labels, [0.1], seed=0)["10pct"]
    record = save_subset(tmp_path / "10pct.json", indices, digits_labels, ids, 0.1, seed=0)

    on_disk = json.loads((tmp_path / "10pct.json").read_text())
    assert on_disk == record
    assert record["name"] == "10pct" and record["budget"] == 0.1 and record["seed"] == 0
    assert record["num_labels"] == 180 and record["indices"] == indices.tolist()
    assert record["ids"] == [ids[i] for i in indices.tolist()]
    assert record["per_class"] == {str(c): 18 for c in range(10)}
    assert record["sha256"] == indices_sha256(indices.tolist()) and len(record["sha256"]) == 64
    assert torch.equal(load_subset(tmp_path / "10pct.json", ids), indices)


def test_edited_record_is_detected(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    indices = select_subsets(digits_labels, [25], seed=0)["25labels"]
    save_subset(tmp_path / "s.json", indices, digits_labels, ids, 25, seed=0)
    record = json.loads((tmp_path / "s.json").read_text())
    record["indices"][0] = (record["indices"][0] + 1) % 1797
    (tmp_path / "s.json").write_text(json.dumps(record))
    with pytest.raises(SubsetError, match=r"s\.json.*sha256.*corrupt or was edited"):
        load_subset(tmp_path / "s.json", ids)


def test_record_for_other_data_is_refused(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    save_subset(tmp_path / "s.json", torch.arange(10) * 3, digits_labels, ids, 10, seed=0)
    with pytest.raises(SubsetError, match="made for other data"):
        load_subset(tmp_path / "s.json", ids[1:] + ids[:1])


def test_save_is_idempotent_and_never_overwrites_a_different_subset(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    path = tmp_path / "runs" / "subset.json"  # parent folders are created
    first = save_subset(path, torch.arange(10), digits_labels, ids, 10, seed=0)
    before = path.read_bytes()
    assert save_subset(path, torch.arange(10), digits_labels, ids, 10, seed=0) == first  # identical: fine
    with pytest.raises(SubsetError, match=rf"{path}.*already holds a different subset"):
        save_subset(path, torch.arange(10) + 1, digits_labels, ids, 10, seed=0)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["subset.json"]  # no temp files left behind


def test_failed_write_leaves_no_partial_file(tmp_path, digits_labels, monkeypatch):
    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_subset(tmp_path / "s.json", torch.arange(10), digits_labels, ids_for(digits_labels), 10, seed=0)
    assert os.listdir(tmp_path) == []


# --- user-supplied lists -------------------------------------------------------------------------------------------


def test_text_list_by_id_and_by_basename(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    (tmp_path / "by_id.txt").write_text(f"{ids[5]}\n\n{ids[2]}\n  {ids[9]}  \n\n")
    assert load_subset(tmp_path / "by_id.txt", ids).tolist() == [2, 5, 9]
    # Like ImageNet's 1percent.txt against ids that are paths, or a list of paths against file-name ids.
    (tmp_path / "by_name.txt").write_text(f"train/n0003/{ids[7]}\n{ids[1]}\n")
    assert load_subset(tmp_path / "by_name.txt", ids).tolist() == [1, 7]
    assert load_subset(tmp_path / "by_id.txt", [f"/data/train/{name}" for name in ids]).tolist() == [2, 5, 9]


def test_json_list_of_ids(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    (tmp_path / "list.json").write_text(json.dumps([ids[100], ids[3], ids[100]]))
    assert load_subset(tmp_path / "list.json", ids).tolist() == [3, 100]


def test_the_list_select_writes_and_a_labels_file_are_subset_lists(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    (tmp_path / "to_label.csv").write_text(f"image,label,path,rank\n{ids[8]},,,1\n{ids[4]},3,,2\n")
    assert load_subset(tmp_path / "to_label.csv", ids).tolist() == [4, 8]
    (tmp_path / "labels.csv").write_text(f"label,image\n1,{ids[6]}\n")  # the column is found by its name
    assert load_subset(tmp_path / "labels.csv", ids).tolist() == [6]


def test_unknown_ids_are_counted_and_shown(tmp_path, digits_labels):
    ids = ids_for(digits_labels)
    (tmp_path / "1percent.txt").write_text("\n".join([ids[0], "ghost_1.JPEG", "ghost_2.JPEG", ids[1]]))
    with pytest.raises(SubsetError, match=r"1percent\.txt: 2 of 4 ids are not in the training set.*ghost_1\.JPEG"):
        load_subset(tmp_path / "1percent.txt", ids)


def test_ambiguous_file_names_need_full_ids(tmp_path):
    ids = ["cat/1.png", "dog/1.png", "dog/2.png"]
    (tmp_path / "list.txt").write_text("cat/1.png\n2.png\n")
    assert load_subset(tmp_path / "list.txt", ids).tolist() == [0, 2]
    (tmp_path / "list.txt").write_text("1.png\n")
    with pytest.raises(SubsetError, match="several training rows share"):
        load_subset(tmp_path / "list.txt", ids)


def test_missing_and_empty_lists(tmp_path):
    with pytest.raises(SubsetError, match=r"nope\.txt does not exist"):
        load_subset(tmp_path / "nope.txt", ["a"])
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(SubsetError, match="lists no ids"):
        load_subset(tmp_path / "empty.txt", ["a"])


@pytest.mark.parametrize("kind", ["csv", "text", "json"])
def test_a_list_saved_with_a_byte_order_mark_is_read(tmp_path, digits_labels, kind):
    """Excel's "CSV UTF-8" (and Notepad's UTF-8) starts the file with a byte-order mark."""
    ids = ids_for(digits_labels)
    text = {
        "csv": f"image,label\n{ids[8]},3\n{ids[4]},\n",
        "text": f"{ids[8]}\n{ids[4]}\n",
        "json": json.dumps([ids[8], ids[4]]),
    }[kind]
    (tmp_path / "list").write_text(text, encoding="utf-8-sig")
    assert (tmp_path / "list").read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_subset(tmp_path / "list", ids).tolist() == [4, 8]


def test_a_csv_list_reads_cells_escaped_for_spreadsheets_as_the_names(tmp_path):
    ids = ["=HYPERLINK(x)-1.png", "+cmd.png", "@sum.png", "-2.png", "'=quoted.png", "plain.png"]
    (tmp_path / "to_label.csv").write_text(
        "image,label\n\"'=HYPERLINK(x)-1.png\",\n'+cmd.png,\n@sum.png,\n''=quoted.png,\nplain.png,\n"
    )
    assert load_subset(tmp_path / "to_label.csv", ids).tolist() == [0, 1, 2, 4, 5]
