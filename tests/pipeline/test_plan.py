"""The stage instances of an experiment (pipeline/plan.py): their graph, fingerprints, selection and inputs."""

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.plan import build_plan, downstream, input_paths, result_settings, select, stage_runs

BUDGETS = ["budgets=[20, 0.1]", "report.full_label_baseline=false"]
EVERY_STAGE = {
    "subsets", "pretrain", "evaluate", "report",
    "baseline[20labels]", "baseline[10pct]", "finetune[20labels]", "finetune[10pct]",
    "distill[20labels]", "distill[10pct]", "predict",
}  # fmt: skip
AFTER_PRETRAIN = {
    "pretrain", "finetune[20labels]", "finetune[10pct]", "distill[20labels]", "distill[10pct]", "predict",
}  # fmt: skip


def plan_with(*overrides: str, code: str | None = "pinned"):
    return build_plan(load_config(None, [*BUDGETS, "runs_dir=/runs", *overrides]), code)


def fingerprints(*overrides: str) -> dict[str, str]:
    return {name: run.fingerprint for name, run in plan_with(*overrides).items()}


def changed(*overrides: str) -> set[str]:
    before, after = fingerprints(), fingerprints(*overrides)
    return {name for name in before if before[name] != after[name]}


def test_instances_come_upstream_first_with_their_inputs():
    plan = plan_with()
    assert set(plan) == EVERY_STAGE
    order = list(plan)
    for name, run in plan.items():
        assert all(order.index(upstream) < order.index(name) for upstream in run.upstream)
    assert plan["distill[10pct]"].upstream == ["finetune[10pct]"]
    assert plan["finetune[10pct]"].upstream == ["pretrain", "subsets"]
    assert plan["baseline[20labels]"].module == "finetune" and plan["baseline[20labels]"].kind == "baseline"
    assert set(plan["report"].upstream) == EVERY_STAGE - {"report"}


def test_the_full_label_baseline_is_planned_when_the_report_asks_for_it():
    plan = plan_with("report.full_label_baseline=true")
    assert "baseline[100pct]" in plan and "finetune[100pct]" not in plan


def test_a_distill_with_a_label_term_also_reads_the_subset():
    assert plan_with("distill.alpha=0.5")["distill[20labels]"].upstream == ["finetune[20labels]", "subsets"]


def test_inputs_are_upstream_directories_or_files_inside_them():
    plan = plan_with()
    paths = input_paths(plan, plan["finetune[20labels]"])
    assert paths == {
        "subset": plan["subsets"].out_dir / "20labels.json",
        "pretrain": plan["pretrain"].out_dir,
    }
    assert plan["pretrain"].out_dir.parent == Path("/runs/quickstart/pretrain")


def test_the_same_config_gives_the_same_fingerprints():
    assert fingerprints() == fingerprints()
    assert len(set(fingerprints().values())) == len(EVERY_STAGE)


@pytest.mark.parametrize(
    "setting",
    [
        "pretrain.log_every=3",
        "pretrain.tensorboard=true",
        "pretrain.checkpoint_every=7",
        "data.loader_workers=1",
        "pretrain.compile=true",
        "pretrain.channels_last=false",
        "pretrain.activation_checkpointing=true",
        "finetune.log_every=1",
        "finetune.tensorboard=true",
        "finetune.eval_batch_size=32",
        "baseline.checkpoint_every=1",
        "distill.log_every=2",
        "distill.eval_batch_size=16",
    ],
)
def test_settings_of_speed_memory_logging_or_tracking_reuse_every_stage(setting):
    assert changed(setting) == set()


def test_the_temperature_reruns_pretraining_and_everything_after_it():
    assert changed("pretrain.temperature=0.3") == AFTER_PRETRAIN | {"evaluate", "report"}


def test_a_budget_setting_reruns_that_budget_and_what_depends_on_it():
    assert changed("finetune.per_budget={10pct: {epochs: 5}}") == {
        "finetune[10pct]", "distill[10pct]", "predict", "report",
    }  # fmt: skip
    assert changed("baseline.base_lr=0.2") == {"baseline[20labels]", "baseline[10pct]", "report"}
    assert changed("subset_seed=1") == EVERY_STAGE - {"pretrain", "evaluate"}


def test_predict_pre_labels_with_the_last_budgets_student_unless_told_otherwise():
    plan = plan_with()
    assert plan["predict"].upstream == ["distill[10pct]", "subsets"]
    assert input_paths(plan, plan["predict"])["subset"] == plan["subsets"].out_dir / "10pct.json"
    assert plan["predict"].config.image_size == plan["distill[10pct]"].config.image_size  # the model's crop
    chosen = plan_with("predict.model=finetune", "predict.budget=20labels")["predict"]
    assert chosen.upstream == ["finetune[20labels]", "subsets"]
    with pytest.raises(ValueError, match=r"predict\.budget: '5pct' is not one of the budgets \(20labels, 10pct\)"):
        plan_with("predict.budget=5pct")


def test_predict_can_be_switched_off():
    plan = plan_with("predict.enabled=false")
    assert "predict" not in plan and "predict" not in plan["report"].upstream


def test_select_reads_the_last_budgets_teacher_whatever_pre_labels():
    plan = plan_with(
        "report.full_label_baseline=true", "predict.model=baseline", "predict.budget=100pct", "select.enabled=true"
    )
    assert plan["select"].upstream == ["finetune[10pct]", "pretrain", "subsets"]
    assert plan["predict"].upstream == ["baseline[100pct]", "subsets"]


def test_select_runs_in_the_flow_only_when_enabled():
    assert "select" not in plan_with()
    plan = plan_with("select.enabled=true", "select.budget=30")
    assert plan["select"].upstream == ["finetune[10pct]", "pretrain", "subsets"]
    assert plan["select"].config.budget == 30 and plan["select"].config.image_size == plan["pretrain"].config.image_size
    assert "select" in plan["report"].upstream


def test_the_labels_file_reruns_everything_but_pretraining(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\ntrain-0,0\n")
    before = fingerprints(f"data.labels={labels}")
    labels.write_text("image,label\ntrain-0,0\ntrain-1,1\n")  # a person labeled one more image
    after = fingerprints(f"data.labels={labels}")
    assert {name for name in before if before[name] != after[name]} == EVERY_STAGE - {"pretrain"}
    assert fingerprints()["pretrain"] == after["pretrain"]  # nor does giving a labels file at all


def test_a_missing_labels_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.labels: .*nope\.csv does not exist"):
        plan_with(f"data.labels={tmp_path / 'nope.csv'}")


def test_an_unlabeled_pool_reruns_pretraining():
    assert "pretrain" in changed("data.unlabeled=imagefolder:/data/more")


def test_the_speed_settings_are_left_out_at_every_depth():
    settings = result_settings({"epochs": 2, "log_every": 5, "data": {"source": "digits", "compile": True}})
    assert settings == {"epochs": 2, "data": {"source": "digits"}}


def test_each_instance_gets_the_code_version_of_what_it_runs():
    plan = plan_with(code=None)
    versions = {name: run.code_version for name, run in plan.items()}
    assert versions["baseline[20labels]"] == versions["finetune[10pct]"]  # both run stages.finetune
    assert len({versions["pretrain"], versions["finetune[10pct]"], versions["distill[10pct]"], versions["report"]}) == 4
    assert fingerprints() != {name: run.fingerprint for name, run in plan.items()}


def test_a_pinned_code_version_changes_every_fingerprint():
    one, other = plan_with(code="a"), plan_with(code="b")
    assert all(one[name].fingerprint != other[name].fingerprint for name in one)


def test_select_takes_a_kind_or_one_instance_and_names_the_stages_otherwise():
    plan = plan_with()
    assert select(plan, ["finetune"]) == {"finetune[20labels]", "finetune[10pct]"}
    assert select(plan, ["distill[10pct]", "pretrain"]) == {"distill[10pct]", "pretrain"}
    with pytest.raises(ValueError, match=r"no stage 'finetune\[5pct\]' in this experiment; stages: .*baseline"):
        select(plan, ["finetune[5pct]"])


def test_downstream_follows_every_path():
    plan = plan_with()
    assert downstream(plan, {"pretrain"}) == AFTER_PRETRAIN | {"evaluate", "report"}
    assert downstream(plan, {"report"}) == {"report"}


def test_stage_runs_build_each_stage_config_from_the_experiment():
    runs = {
        run.name: run
        for run in stage_runs(load_config(None, [*BUDGETS, "finetune.per_budget={20labels: {epochs: 9}}"]))
    }
    assert runs["finetune[20labels]"].config.epochs == 9
    assert runs["subsets"].config.budgets == (20, 0.1)


def test_several_subset_seeds_repeat_every_budget_stage_on_their_own_subsets():
    plan = plan_with("subset_seeds=[0, 3]")
    assert {"subsets[s0]", "subsets[s3]", "finetune[10pct-s3]", "baseline[20labels-s0]", "distill[10pct-s3]"} <= set(
        plan
    )
    assert "subsets" not in plan and "finetune[10pct]" not in plan
    assert plan["subsets[s3]"].config.seed == 3 and plan["subsets[s0]"].config.seed == 0
    assert plan["finetune[10pct-s3]"].upstream == ["pretrain", "subsets[s3]"]
    assert plan["distill[10pct-s3]"].upstream == ["finetune[10pct-s3]"]
    assert plan["predict"].upstream == ["distill[10pct-s0]", "subsets[s0]"]  # the first seed's model pre-labels
    assert plan["finetune[10pct-s0]"].config == plan["finetune[10pct-s3]"].config  # only the subset differs
    assert select(plan, ["finetune"]) == {"finetune[20labels-s0]", "finetune[10pct-s0]", "finetune[20labels-s3]",
                                          "finetune[10pct-s3]"}  # fmt: skip


def test_one_subset_seed_keeps_the_plain_names():
    assert set(plan_with("subset_seeds=[5]")) == EVERY_STAGE
    assert plan_with("subset_seeds=[5]")["subsets"].config.seed == 5
    with pytest.raises(ValueError, match=r"subset_seeds: \[1, 1\] lists a seed more than once"):
        plan_with("subset_seeds=[1, 1]")
