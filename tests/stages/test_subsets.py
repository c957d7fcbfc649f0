"""The subsets stage (stages/subsets.py): one checked file per budget, users' own lists."""

import pytest

import stages.subsets as subsets_stage
from stages.data.label_subsets import SubsetError, load_subset, select_subsets
from stages.data.sources import DataConfig
from stages.subsets import SubsetsConfig


def test_stage_writes_one_checked_file_per_budget_and_takes_user_lists(digits, tmp_path):
    train, _ = digits
    user_list = tmp_path / "mine.txt"
    user_list.write_text("\n".join(train.ids[:30]))
    config = SubsetsConfig(budgets=(20, 0.1), user_lists={"10pct": str(user_list)})
    metrics = subsets_stage.run(config, None, tmp_path / "out")
    assert metrics["num_labels"] == {"20labels": 20, "10pct": 30}
    assert load_subset(tmp_path / "out" / "20labels.json", train.ids).tolist() == sorted(
        select_subsets(train.labels, [20], seed=0)["20labels"].tolist()
    )
    assert load_subset(tmp_path / "out" / "10pct.json", train.ids).tolist() == list(range(30))
    assert metrics["num_test"] == 360 and not metrics["validation_slice"]


def test_stage_records_a_validation_slice_in_place_of_the_test_split(tmp_path):
    config = SubsetsConfig(data=DataConfig(validation_fraction=0.25), budgets=(20,))
    metrics = subsets_stage.run(config, None, tmp_path / "out")
    assert metrics["validation_slice"] and metrics["num_test"] == 360 and metrics["num_train"] == 1077


def test_stage_refuses_a_user_list_for_an_unknown_budget(tmp_path):
    with pytest.raises(SubsetError, match=r"user_lists names \['5pct'\], which are not budgets"):
        config = SubsetsConfig(budgets=(20,), user_lists={"5pct": str(tmp_path / "x.txt")})
        subsets_stage.run(config, None, tmp_path / "out")
    assert not (tmp_path / "out").exists()
