"""The stage command lines, derived by tyro from the stage configs: every config reaches the stage unchanged through
`--config-json` (how the pipeline launches stages) and through flags, through each stage's real `main`; booleans are
switches; bad input is one line on stderr and exit status 2; `--help` shows each flag's help text and default."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import stages.distill as distill
import stages.evaluate as evaluate
import stages.finetune as finetune
import stages.predict as predict
import stages.pretrain as pretrain
import stages.select as select
import stages.subsets as subsets
from stages.data.sources import DataConfig
from stages.distill import DistillConfig
from stages.evaluate import EvaluateConfig
from stages.finetune import FinetuneConfig
from stages.models.architecture import EncoderConfig
from stages.predict import PredictConfig
from stages.pretrain import PretrainConfig
from stages.select import SelectConfig
from stages.subsets import SubsetsConfig
from stages.training.cli import config_as_json, parse_stage_args

DATA = DataConfig(
    source="-imagefolder:/data/my train",  # a leading '-' and a space must stay one value
    unlabeled="imagefolder:/data/unlabeled",
    labels="labels.csv",
    image_column="img",
    label_column="y",
    train_split="training",
    test_split="validation",
    test_fraction=0.25,
    validation_fraction=0.3,
    image_size=40,
    seed=7,
    skip_bad_images=True,
    max_image_pixels=123_456,
    in_memory=False,
    loader_workers=3,
)
ENCODER = EncoderConfig(depth=50, width=2.0, sk=True, small_images=False, head_layers=2)
TRAINING = {  # shared by the training stages, all away from every default
    "image_size": 24,
    "batch_size": 48,
    "epochs": 2.5,
    "base_lr": 1e-05,
    "lr_scaling": "linear",
    "weight_decay": 3e-4,
    "warmup_epochs": 0.25,
    "seed": 11,
    "mixed_precision": "bf16",
    "checkpoint_every": 7,
    "log_every": 3,
    "tensorboard": True,
}
TRAINER = {"optimizer": "sgd", "momentum": 0.5, "eval_batch_size": 99}

CONFIGS = {
    "pretrain": PretrainConfig(
        data=DATA,
        model=ENCODER,
        temperature=0.2,
        color_strength=1.0,
        blur=True,
        channels_last=False,
        compile=True,
        activation_checkpointing=True,
        **TRAINING,
    ),
    "finetune": FinetuneConfig(
        data=DATA, model=ENCODER, proj_selector=2, classifier="auto", cv_folds=4, steps=9, **TRAINING, **TRAINER
    ),
    "distill": DistillConfig(data=DATA, student=ENCODER, temperature=0.1, alpha=0.5, **TRAINING, **TRAINER),
    "distill-self": DistillConfig(
        data=DATA, student=None, temperature=0.1, alpha=0.5, student_init="teacher", **TRAINING, **TRAINER
    ),
    "evaluate": EvaluateConfig(
        data=dataclasses.replace(DATA, image_size=None),
        image_size=28,
        batch_size=32,
        knn_k=5,
        knn_temperature=0.5,
        linear_epochs=3.5,
        linear_batch_size=64,
        linear_base_lr=0.3,
        probe_c=0.1,
        probe_max_iter=50,
        seed=4,
    ),
    "subsets": SubsetsConfig(data=DATA, budgets=(0.05, 250, "all"), seed=3, user_lists={"250labels": "mine.txt"}),
    "predict": PredictConfig(data=DATA, images="imagefolder:/data/new", image_size=24, top_k=3, eval_batch_size=7),
    "select": SelectConfig(
        data=DATA, budget=9, image_size=24, strategy="k-center", seed=5, label_studio_root="/data", eval_batch_size=7
    ),
}
ROOT = Path(__file__).resolve().parents[3]
MODULES = {
    "pretrain": pretrain,
    "finetune": finetune,
    "distill": distill,
    "distill-self": distill,
    "evaluate": evaluate,
    "subsets": subsets,
    "predict": predict,
    "select": select,
}
INPUTS = {  # what each stage's main needs besides the config
    "pretrain": {},
    "finetune": {"subset": Path("runs/subsets/1pct.json"), "pretrain": Path("runs/pretrain")},
    "distill": {"teacher": Path("runs/finetune"), "subset": Path("runs/subsets/10pct.json")},
    "distill-self": {"teacher": Path("runs/finetune")},
    "evaluate": {"classifier": Path("runs/distill")},
    "subsets": {},
    "predict": {"classifier": Path("runs/distill"), "subset": Path("runs/subsets/10pct.json")},
    "select": {"pretrain": Path("runs/pretrain"), "teacher": Path("runs/finetune")},
}
DATA_FLAGS = [
    "--data.source=-imagefolder:/data/my train",
    *("--data.unlabeled", "imagefolder:/data/unlabeled", "--data.labels", "labels.csv"),
    *("--data.image-column", "img", "--data.label-column", "y"),
    *("--data.train-split", "training", "--data.test-split", "validation"),
    *("--data.test-fraction", "0.25", "--data.validation-fraction", "0.3"),
    *("--data.image-size", "40", "--data.seed", "7", "--data.skip-bad-images", "--data.max-image-pixels", "123456"),
    *("--data.in-memory", "False", "--data.loader-workers", "3"),
]
ENCODER_FLAGS = ["--depth", "50", "--width", "2.0", "--sk", "--no-small-images", "--head-layers", "2"]
TRAINING_FLAGS = [
    *("--image-size", "24", "--batch-size", "48", "--epochs", "2.5", "--base-lr", "1e-05", "--lr-scaling", "linear"),
    *("--weight-decay", "3e-4", "--warmup-epochs", "0.25", "--seed", "11", "--mixed-precision", "bf16"),
    *("--checkpoint-every", "7", "--log-every", "3", "--tensorboard"),
]
TRAINER_FLAGS = ["--optimizer", "sgd", "--momentum", "0.5", "--eval-batch-size", "99"]
FLAGS = {  # the same configs as flags
    "pretrain": [
        *DATA_FLAGS,
        *(f"--model.{flag[2:]}" if flag.startswith("--") else flag for flag in ENCODER_FLAGS),
        *TRAINING_FLAGS,
        *("--temperature", "0.2", "--color-strength", "1.0", "--blur", "--no-channels-last", "--compile"),
        "--activation-checkpointing",
    ],
    "distill": [
        *DATA_FLAGS,
        "--student",
        '{"depth": 50, "width": 2.0, "sk": true, "small_images": false, "head_layers": 2}',
        *TRAINING_FLAGS,
        *TRAINER_FLAGS,
        *("--temperature", "0.1", "--alpha", "0.5"),
    ],
    "subsets": [
        *DATA_FLAGS,
        *("--budgets", "0.05", "250", "all", "--seed", "3", "--user-lists", "250labels", "mine.txt"),
    ],
}


def leaves(config: object, prefix: str = "") -> dict[str, object]:
    """Every leaf field's value by its dotted name (a nested config's fields instead of the config)."""
    values = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values |= leaves(value, prefix + f.name + ".") if dataclasses.is_dataclass(value) else {prefix + f.name: value}
    return values


def run_main(name: str, config_args: list[str], monkeypatch, capsys) -> tuple:
    """`main` of the stage with its inputs and `config_args`; returns what its `run` was called with."""
    seen = []
    monkeypatch.setattr(MODULES[name], "run", lambda *args: seen.append(args) or {})
    inputs = [item for key, path in INPUTS[name].items() for item in (f"--{key}", str(path))]
    MODULES[name].main(["--out", "runs/out", *inputs, *config_args])
    assert json.loads(capsys.readouterr().out) == {}
    (called,) = seen
    return called


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_stage_config_reaches_its_stage_unchanged_through_config_json(name, monkeypatch, capsys):
    config = CONFIGS[name]
    values = leaves(config)
    unchanged = {name for name, default in leaves(type(config)()).items() if values.get(name, ...) == default}
    # Every field is away from its default, but for the None defaults that two configs keep on purpose, and the
    # student's first weights, which a smaller student cannot take from its teacher.
    assert unchanged <= {"student", "data.image_size", "student_init"}, unchanged

    config_in, inputs, out = run_main(name, ["--config-json", config_as_json(config)], monkeypatch, capsys)
    assert config_in == config and out == Path("runs/out")
    assert inputs == (None if name == "subsets" else INPUTS[name])  # subsets takes no inputs


@pytest.mark.parametrize("name", list(FLAGS))
def test_flags_set_every_kind_of_field(name, monkeypatch, capsys):
    """Nested configs (--data.source), switches, None, a JSON student, tuples and mappings."""
    config = run_main(name, FLAGS[name], monkeypatch, capsys)[0]
    assert config == CONFIGS[name]
    if name == "subsets":
        assert [type(b) for b in config.budgets] == [float, int, str]  # 250 labels, not a fraction


def test_flags_change_a_config_json():
    base = CONFIGS["pretrain"]
    args = ["--out", "o", "--config-json", config_as_json(base), "--epochs", "3", "--no-blur", "--data.seed", "1"]
    config = parse_stage_args("stages.pretrain", PretrainConfig, "", args)[0]
    data = dataclasses.replace(base.data, seed=1)
    assert config == dataclasses.replace(base, epochs=3.0, blur=False, data=data)


@pytest.mark.parametrize(
    ("args", "blur", "skip"),
    [
        ([], False, False),
        (["--blur", "--data.skip-bad-images"], True, True),
        (["--no-blur", "--data.no-skip-bad-images"], False, False),
    ],
)
def test_booleans_are_switches(args, blur, skip):
    config = parse_stage_args("stages.pretrain", PretrainConfig, "", ["--out", "o", *args])[0]
    assert (config.blur, config.data.skip_bad_images) == (blur, skip)


def test_a_boolean_given_a_value_is_one_line_naming_the_flag(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_stage_args("stages.pretrain", PretrainConfig, "", ["--out", "o", "--blur", "true"])
    error = capsys.readouterr().err
    assert stop.value.code == 2 and error.count("\n") == 1 and "true" in error


def test_optional_inputs_are_returned_only_when_given():
    def parse(*argv: str) -> dict[str, Path]:
        return parse_stage_args("stages.x", DistillConfig, "", ["--out", "o", *argv], ("teacher",), ("subset",))[1]

    assert parse("--teacher", "t") == {"teacher": Path("t")}
    assert parse("--teacher", "t", "--subset=s") == {"teacher": Path("t"), "subset": Path("s")}
    with pytest.raises(SystemExit):
        parse("--subset", "s")  # the required input is still required


def test_student_takes_json_or_none():
    def student(text: str) -> EncoderConfig | None:
        return parse_stage_args("stages.distill", DistillConfig, "", ["--out", "o", "--student", text])[0].student

    assert student('{"depth": 34, "width": 0.5}') == EncoderConfig(depth=34, width=0.5)
    assert student("none") is None and student("None") is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "x"], "--batch-size: invalid literal for int() with base 10: 'x'"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (["--temperature", "0"], "temperature must be > 0, got 0.0"),
        (["--momentum", "1"], "momentum must be < 1, got 1.0"),
        (["--optimizer", "adam"], "adam"),
        (["--nosuchflag", "1"], "Unrecognized options: --nosuchflag"),
        (["--student", "{not json"], "--student: expected a JSON object of EncoderConfig fields (depth, width, sk"),
        (["--student", '{"depht": 18}'], "depht: Unexpected keyword argument"),
        (["--student", '{"depth": 18, "sk": true}'], "sk must be false for depth 18"),
        (["--config-json", "{bad"], "--config-json: Invalid JSON"),
        (["--config-json", '{"alpha": 2}'], "--config-json: alpha must be <= 1, got 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(args, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_stage_args("stages.distill", DistillConfig, "", ["--out", "o", *args])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("stages.distill: error: ") and message in err, err


def test_a_missing_out_is_one_line_too(capsys):
    with pytest.raises(SystemExit) as stopped:
        parse_stage_args("stages.pretrain", PretrainConfig, "", ["--epochs", "1"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("stages.pretrain: error: ") and "--out" in err, err


def test_help_shows_each_flags_help_text_and_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per flag, in one column of boxes or two
    with pytest.raises(SystemExit) as stopped:
        parse_stage_args("stages.distill", DistillConfig, "Stage `distill`.", ["--help"], ("teacher",), ("subset",))
    assert stopped.value.code == 0
    help_text = capsys.readouterr().out
    assert "usage: python -m stages.distill" in help_text and "Stage `distill`." in help_text
    for text in (
        "--out DIR",
        "--teacher PATH",
        "--subset PATH",
        "--config-json JSON",
        "--temperature FLOAT",
        "tau of both distributions (the paper: 0.1 for self-distillation, 1.0 big-to-small; see docs/results.md) "
        "(default: 1.0)",
        "--tensorboard, --no-tensorboard",
        "--data.skip-bad-images, --data.no-skip-bad-images",
        "--data.source STR",
        "--student JSON|none",
        "(default: none)",
        "{lars,sgd}",
    ):
        assert text in help_text, text


def test_help_read_by_a_reader_that_stops_early_is_no_error():
    """`python -m stages.pretrain --help | head`: no traceback when the reader is gone."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "stages.pretrain", "--help"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before anything is written: every write meets a closed pipe
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0 and "Traceback" not in err, err
