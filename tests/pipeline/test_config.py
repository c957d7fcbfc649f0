"""The experiment config: bundled YAML files, --set overrides, one-line errors, stage dataclasses."""

import dataclasses
import time
from pathlib import Path

import pytest

from pipeline.config import (
    BUDGET_STAGES,
    DEFAULT_CONFIG,
    STAGE_CLASSES,
    STAGES,
    ConfigError,
    ExperimentConfig,
    apply_override,
    load_config,
    stage_config,
    validate_config,
)
from stages.data.sources import DataConfig
from stages.distill import DistillConfig
from stages.evaluate import EvaluateConfig
from stages.finetune import FinetuneConfig
from stages.pretrain import EncoderConfig, PretrainConfig
from stages.training.checkpoints import RESUMABLE_CHANGES

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
MINIMAL = {"experiment": "test", "budgets": [0.01, 0.1]}


def config_with(*overrides: str) -> ExperimentConfig:
    raw = {"experiment": "test", "budgets": [0.01, 0.1]}
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw)


def error_of(*overrides: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config_with(*overrides)
    return one_line(caught.value)


def one_line(error: Exception) -> str:
    message = str(error)
    assert "\n" not in message and "Traceback" not in message and "pydantic" not in message
    return message


# --- the bundled configs -------------------------------------------------------------------------------------------


def test_the_three_configs_are_bundled():
    assert {p.name for p in CONFIGS} >= {"quickstart.yaml", "cifar10.yaml", "imagenet.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_bundled_config_validates_and_builds_every_stage(path):
    cfg = load_config(path)
    for stage in STAGES:
        budgets = cfg.budget_names(stage) if stage in BUDGET_STAGES else [None]
        for budget in budgets:
            built = stage_config(cfg, stage, budget)
            assert isinstance(built, STAGE_CLASSES[stage])
            assert built.data == cfg.data


def test_no_path_means_the_quickstart():
    assert DEFAULT_CONFIG.is_file()
    cfg = load_config(None)
    assert cfg.experiment == "quickstart"
    assert cfg.data.source == "digits"
    assert cfg.model.small_images and cfg.launch.num_processes == 1


def test_imagenet_recipe_follows_the_paper():
    cfg = load_config(DEFAULT_CONFIG.parent / "imagenet.yaml")
    assert (cfg.model.depth, cfg.model.width, cfg.model.sk) == (152, 3, True)
    pretrain = stage_config(cfg, "pretrain")
    assert (pretrain.batch_size, pretrain.epochs, pretrain.temperature, pretrain.blur) == (4096, 800, 0.1, True)
    assert stage_config(cfg, "finetune", "1pct").epochs == 60
    assert stage_config(cfg, "finetune", "10pct").epochs == 30
    assert set(cfg.subsets) == {"1pct", "10pct"}


# --- defaults come from the stage dataclasses ----------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_defaults_are_the_dataclass_defaults(stage):
    assert stage_config(config_with(), stage) == STAGE_CLASSES[stage]()


def test_sections_have_the_dataclass_fields_minus_data_and_model():
    cfg = config_with()
    names = {stage: {f.name for f in dataclasses.fields(cls)} for stage, cls in STAGE_CLASSES.items()}
    assert set(type(cfg.pretrain).model_fields) == names["pretrain"] - {"data", "model"}
    assert set(type(cfg.finetune).model_fields) == names["finetune"] - {"data", "model"} | {"per_budget"}
    no_head = {"proj_selector", "classifier", "cv_folds"}  # the baseline has no pretrained head or features
    assert set(type(cfg.baseline).model_fields) == names["baseline"] - {"data", "model", *no_head} | {"per_budget"}
    assert set(type(cfg.distill).model_fields) == names["distill"] - {"data"} | {"per_budget"}
    assert set(type(cfg.evaluate).model_fields) == names["evaluate"] - {"data"}
    assert set(type(cfg.predict).model_fields) == names["predict"] - {"data", "images"} | {"enabled", "model", "budget"}
    assert set(type(cfg.select).model_fields) == names["select"] - {"data"} | {"enabled"}
    assert isinstance(cfg.data, DataConfig) and isinstance(cfg.model, EncoderConfig)  # the stages' own configs


def test_sections_take_their_bounds_defaults_and_help_from_the_stage_configs():
    section = type(config_with().finetune).model_fields["momentum"]
    declared = FinetuneConfig.__pydantic_fields__["momentum"]
    assert (section.default, section.metadata, section.description) == (0.9, declared.metadata, declared.description)
    assert declared.description == "momentum of either optimiser"


def test_each_stage_instance_is_built_once():
    cfg = config_with()
    assert stage_config(cfg, "finetune", "1pct") is stage_config(cfg, "finetune", "1pct")
    assert stage_config(cfg, "pretrain").data is cfg.data and stage_config(cfg, "pretrain").model is cfg.model


def test_the_resumable_changes_are_the_fields_marked_speed_only():
    speed_only = {"checkpoint_every", "log_every", "tensorboard", "eval_batch_size", "loader_workers", "compile"}
    assert speed_only | {"channels_last", "activation_checkpointing"} == RESUMABLE_CHANGES


def test_stage_config_fills_in_data_and_model():
    cfg = config_with("data.source=imagefolder:/x", "model.depth=50", "model.sk=true", "pretrain.epochs=3")
    pretrain = stage_config(cfg, "pretrain")
    assert isinstance(pretrain, PretrainConfig)
    assert pretrain.data.source == "imagefolder:/x" and pretrain.epochs == 3.0
    assert pretrain.model == EncoderConfig(depth=50, sk=True)
    baseline = stage_config(cfg, "baseline", "1pct")
    assert isinstance(baseline, FinetuneConfig) and baseline.model == EncoderConfig(depth=50, sk=True)
    assert isinstance(stage_config(cfg, "distill", "1pct"), DistillConfig)
    assert stage_config(cfg, "evaluate").data.source == "imagefolder:/x"
    assert isinstance(stage_config(cfg, "evaluate"), EvaluateConfig)


def test_per_budget_overrides_apply_to_their_budget_only():
    cfg = config_with(
        "finetune.epochs=60",
        "finetune.per_budget.10pct.epochs=30",
        "distill.per_budget.1pct.student={depth: 18, width: 0.5}",
    )
    assert stage_config(cfg, "finetune", "1pct").epochs == 60
    assert stage_config(cfg, "finetune", "10pct").epochs == 30
    assert stage_config(cfg, "finetune").epochs == 60
    assert stage_config(cfg, "distill", "1pct").student == EncoderConfig(depth=18, width=0.5)
    assert stage_config(cfg, "distill", "10pct").student is None


def test_full_label_baseline_adds_the_100pct_budget_to_the_baseline_only():
    cfg = config_with("report.full_label_baseline=true", "baseline.per_budget.100pct.epochs=5")
    assert list(cfg.budget_names("baseline")) == ["1pct", "10pct", "100pct"]
    assert list(cfg.budget_names("finetune")) == ["1pct", "10pct"]
    assert stage_config(cfg, "baseline", "100pct").epochs == 5


def test_entries_for_budgets_not_in_the_run_are_kept_but_unused():
    cfg = load_config(None, ["budgets=[10, 100]"])  # the file has per_budget entries for 200labels and 100pct
    assert list(cfg.budget_names("finetune")) == ["10labels", "100labels"]
    assert stage_config(cfg, "finetune", "10labels").epochs == cfg.finetune.epochs
    cfg = config_with("subsets.5pct=x.txt", "baseline.per_budget.100pct.epochs=3")
    assert "100pct" not in cfg.budget_names("baseline")
    with pytest.raises(ConfigError, match="no budget named '100pct'"):
        stage_config(cfg, "baseline", "100pct")


def test_stage_config_rejects_unknown_stages_and_budgets():
    cfg = config_with()
    with pytest.raises(ConfigError, match="unknown stage 'pretrian'"):
        stage_config(cfg, "pretrian")
    with pytest.raises(ConfigError, match="no budget named '5pct'; the budgets are 1pct, 10pct"):
        stage_config(cfg, "finetune", "5pct")
    with pytest.raises(ConfigError, match="runs once"):
        stage_config(cfg, "pretrain", "1pct")


def test_config_round_trips_through_json():
    cfg = load_config(DEFAULT_CONFIG.parent / "imagenet.yaml")
    assert ExperimentConfig.model_validate_json(cfg.model_dump_json()) == cfg


# --- --set overrides ------------------------------------------------------------------------------------------------


def test_set_overrides_nested_keys_with_yaml_values(tmp_path):
    cfg = load_config(
        None,
        [
            "pretrain.epochs=3",  # int into a float field
            "pretrain.weight_decay=1e-5",  # YAML 1.2 float (PyYAML alone reads a string)
            "pretrain.blur=true",
            "budgets=[5, 0.5]",
            "data.image_size=null",
            "experiment=other",
            "model.head_layers=2",
            f"subsets.5labels={tmp_path / 'list.txt'}",
            "distill.student.depth=18",  # into a section that is null in the file
        ],
    )
    assert cfg.pretrain.epochs == 3.0 and isinstance(cfg.pretrain.epochs, float)
    assert cfg.pretrain.weight_decay == 1e-5
    assert cfg.pretrain.blur is True
    assert cfg.budgets == [5, 0.5] and isinstance(cfg.budgets[0], int)
    assert cfg.data.image_size is None
    assert cfg.experiment == "other" and cfg.model.head_layers == 2
    assert cfg.subsets == {"5labels": tmp_path / "list.txt"}
    assert stage_config(cfg, "distill", "5labels").student == EncoderConfig(depth=18)


def test_set_leaves_other_keys_of_the_file_alone():
    base = load_config(None)
    cfg = load_config(None, ["pretrain.epochs=1"])
    assert cfg.pretrain.epochs == 1.0
    assert cfg.pretrain.batch_size == base.pretrain.batch_size and cfg.finetune == base.finetune


@pytest.mark.parametrize("item", ["pretrain.epochs", "=3", "pretrain..epochs=3", ".x=1"])
def test_set_needs_a_dotted_key_and_a_value(item):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [item])
    assert repr(item) in one_line(caught.value) and "KEY=VALUE" in str(caught.value)


def test_set_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["budgets.first=3"])
    assert "budgets is [20, 0.1], not a section" in one_line(caught.value)


def test_set_with_bad_yaml():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["budgets=[1, 2"])
    assert "--set 'budgets=[1, 2'" in one_line(caught.value) and "invalid YAML" in str(caught.value)


def alias_bomb(levels: int = 9) -> str:
    """A YAML list of 9**levels items written in a few hundred bytes: aliases of aliases."""
    names = [chr(ord("a") + level) for level in range(levels)]
    nodes = [f"&{names[0]} [x, x, x, x, x, x, x, x, x]"]
    nodes += [f"&{names[level]} [{', '.join([f'*{names[level - 1]}'] * 9)}]" for level in range(1, levels)]
    return f"[{', '.join(nodes)}]"


@pytest.mark.parametrize("key", ["budgets", "pretrain.epochs", "data.source", "launch.extra_args"])
def test_a_yaml_alias_bomb_in_set_is_refused_at_once_with_a_short_line(key):
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"{key}={alias_bomb()}"])
    message = one_line(caught.value)
    assert "aliases (*name) are not allowed in a --set value" in message
    assert len(message) < 400 and time.monotonic() - started < 5  # was 94 s for `budgets`, spent writing the message


def test_a_long_value_is_cut_before_it_is_written_into_the_message():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["pretrain.epochs=[" + "1, " * 100_000 + "1]"])
    assert len(str(caught.value)) < 1000


def test_a_config_that_is_no_mapping_is_named_by_its_type_never_echoed(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(ConfigError) as caught:
        load_config(secret)
    assert "the top level must be a mapping" in str(caught.value) and "got a str" in str(caught.value)
    assert "root:x" not in str(caught.value)


# --- one clear line per problem -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        (["pretrain.batchsize=5"], "pretrain.batchsize: unknown key (did you mean 'batch_size'?); allowed keys: "),
        (["pretrian.epochs=1"], "pretrian: unknown key (did you mean 'pretrain'?); allowed keys: experiment, runs_dir"),
        (["finetune.optimizer=adam"], "finetune.optimizer: 'adam' is not one of 'lars', 'sgd'"),
        (["pretrain.mixed_precision=fp8"], "pretrain.mixed_precision: 'fp8' is not one of 'no', 'fp16', 'bf16'"),
        (["pretrain.batch_size=abc"], "pretrain.batch_size: expected an integer, got 'abc'"),
        (["pretrain.batch_size=1.5"], "pretrain.batch_size: expected an integer, got 1.5"),
        (["pretrain.batch_size='256'"], "pretrain.batch_size: expected an integer, got '256'"),
        (["model.sk=1"], "model.sk: expected true or false, got 1"),
        (["data.image_size=big"], "data.image_size: expected an integer or null, got 'big'"),
        (["pretrain=5"], "pretrain: expected a section with keys image_size, batch_size"),
        (["pretrain.batch_size=0"], "pretrain.batch_size: 0 is out of range; it must be >= 1"),
        (["finetune.momentum=1.0"], "finetune.momentum: 1.0 is out of range; it must be >= 0 and < 1"),
        (["pretrain.epochs=.nan"], "pretrain.epochs: expected a finite number, got nan"),
        (["data.test_fraction=1.5"], "data.test_fraction: 1.5 is out of range; it must be > 0 and < 1"),
        (["data.image_size=0"], "data.image_size: 0 is out of range; it must be >= 1"),
        (["model.depth=20"], "model.depth: must be one of 18, 34, 50, 101, 152, 200, got 20"),
        (["model.sk=true"], "model.sk: must be false for depth 18 (basic blocks); Selective Kernels need a bottleneck"),
        (["model.width=0"], "model.width: must be a number > 0 (e.g. 0.25, 1, 2, 3), got 0"),
        (["model.head_layers=0"], "model.head_layers: 0 is out of range; it must be >= 1"),
        (["model.depht=50"], "model.depht: unknown key (did you mean 'depth'?); allowed keys: depth, width, sk"),
        (["distill.student.depth=20"], "distill.student.depth: must be one of 18, 34, 50, 101, 152, 200, got 20"),
        (
            ["finetune.proj_selector=4"],
            "finetune.proj_selector: must be in 0..3 (the layers of the projection head), got 4",
        ),
        (
            ["model.head_layers=1", "finetune.proj_selector=2"],
            "finetune.proj_selector: must be in 0..1 (the layers of the projection head), got 2; model.head_layers is",
        ),
        (["budgets=[0]"], "budgets[0]: label budget 0 is below one label"),
        (["budgets=[0.01, 1.5]"], "budgets[1]: label budget 1.5 is not in (0, 1]"),
        (["budgets=[]"], "budgets: needs at least 1 item"),
        (["budgets=[0.1, 0.1]"], "budgets: [0.1, 0.1] lists the budget 10pct more than once"),
        (["subsets.1percent=x.txt"], "subsets.1percent: '1percent' is not a budget name; names look like 1pct"),
        (["finetune.per_budget.10pcnt.epochs=3"], "finetune.per_budget.10pcnt: '10pcnt' is not a budget name"),
        (["finetune.per_budget.10pct.epochs=0"], "finetune.per_budget.10pct.epochs: 0 is out of range; it must be > 0"),
        (["finetune.per_budget.10pct.epoch=3"], "finetune.per_budget.10pct.epoch: unknown key (did you mean 'epochs'"),
        (["finetune.per_budget.1pct.proj_selector=5"], "finetune.per_budget.1pct.proj_selector: must be in 0..3"),
        (["distill.student.sk=true"], "distill.student.sk: must be false for depth 18"),
        (["distill.per_budget.1pct.temperature=0"], "distill.per_budget.1pct.temperature: 0 is out of range; it must"),
        (["pretrain.temperature=0"], "pretrain.temperature: 0 is out of range; it must be > 0"),
        (["baseline.proj_selector=1"], "baseline.proj_selector: unknown key"),
        (["launch.num_machines=2"], "launch.main_process_ip: must be set (the address of rank 0)"),
        (["launch.machine_rank=1"], "launch.machine_rank: must be < num_machines (1), got 1"),
        (["launch.num_machines=2", "launch.main_process_ip=a", "launch.num_processes=3"], "launch.num_processes: must"),
        (["report.cost_per_label=-1"], "report.cost_per_label: -1 is out of range; it must be >= 0"),
        (["experiment=a/b"], "experiment: 'a/b' is not a valid name"),
        (["runs_dir=5"], "runs_dir: expected a path, got 5"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(items, expected):
    assert expected in error_of(*items)


def test_unknown_key_lists_the_allowed_keys_in_order():
    message = error_of("pretrain.batchsize=5")
    assert "allowed keys: image_size, batch_size, epochs, base_lr" in message


def test_several_problems_share_one_line():
    message = error_of("pretrain.batch_size=0", "pretrain.foo=1", "finetune.optimizer=adam")
    assert "pretrain.batch_size: 0 is out of range" in message
    assert "pretrain.foo: unknown key" in message
    assert "finetune.optimizer: 'adam' is not one of" in message


def test_missing_required_key():
    with pytest.raises(ConfigError) as caught:
        validate_config({"budgets": [0.1]})
    assert "experiment: required key is missing" in one_line(caught.value)


def test_error_names_the_file_and_the_overrides():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["pretrain.batch_size=0"])
    assert f"(in {DEFAULT_CONFIG} with --set pretrain.batch_size=0)" in one_line(caught.value)


# --- files ------------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert f"config file {tmp_path / 'nope.yaml'} not found" in one_line(caught.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_bad_yaml_names_file_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: x\nbudgets: [0.1\npretrain:\n  epochs: 1\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = one_line(caught.value)
    assert message.startswith(f"{path}: invalid YAML at line ") and "column" in message


def test_repeated_key_is_an_error(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("experiment: x\nbudgets: [0.1]\npretrain:\n  epochs: 1\n  epochs: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "repeated key 'epochs'" in one_line(caught.value) and "line 5" in str(caught.value)


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just words\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "the top level must be a mapping" in one_line(caught.value)


def test_yaml_file_with_scientific_floats(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("experiment: x\nbudgets: [0.01]\npretrain: {weight_decay: 1e-6, base_lr: 3E-1}\n")
    cfg = load_config(path)
    assert cfg.pretrain.weight_decay == 1e-6 and cfg.pretrain.base_lr == 0.3
