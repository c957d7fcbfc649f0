"""The generated stage command lines: every stage config survives config_to_args -> parse_stage_args unchanged, through
each stage's real `main`; optional inputs and the optional nested `--student` config parse as documented."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import stages.distill as distill
import stages.evaluate as evaluate
import stages.finetune as finetune
import stages.pretrain as pretrain
from stages.data.sources import DataConfig
from stages.distill import DistillConfig
from stages.evaluate import EvaluateConfig
from stages.finetune import FinetuneConfig
from stages.models.architecture import EncoderConfig
from stages.pretrain import PretrainConfig
from stages.training.cli import config_to_args, parse_stage_args

DATA = DataConfig(
    source="-imagefolder:/data/my train",  # a leading '-' and a space must stay one value
    image_column="img",
    label_column="y",
    train_split="training",
    test_split="validation",
    test_fraction=0.25,
    image_size=40,
    seed=7,
    skip_bad_images=True,
)
ENCODER = EncoderConfig(depth=50, width=2.0, sk=True, small_images=False, head_layers=2)
TRAINING = {  # shared by the training stages, all away from every default
    "image_size": 24,
    "batch_size": 48,
    "epochs": 2.5,
    "base_lr": 1e-05,  # written "1e-05": a value argparse alone would take for a flag
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
        in_memory=False,
        loader_workers=3,
        **TRAINING,
    ),
    "finetune": FinetuneConfig(data=DATA, model=ENCODER, proj_selector=2, **TRAINING, **TRAINER),
    "distill": DistillConfig(data=DATA, student=ENCODER, temperature=0.1, alpha=0.5, **TRAINING, **TRAINER),
    "distill-self": DistillConfig(data=DATA, student=None, temperature=0.1, alpha=0.5, **TRAINING, **TRAINER),
    "evaluate": EvaluateConfig(
        data=dataclasses.replace(DATA, image_size=None),
        image_size=28,
        batch_size=32,
        knn_k=5,
        knn_temperature=0.5,
        probe_c=0.1,
        probe_max_iter=50,
        seed=4,
    ),
}
MODULES = {
    "pretrain": pretrain,
    "finetune": finetune,
    "distill": distill,
    "distill-self": distill,
    "evaluate": evaluate,
}
INPUTS = {  # what each stage's main needs besides the config flags
    "pretrain": {},
    "finetune": {"subset": Path("runs/subsets/1pct.json"), "pretrain": Path("runs/pretrain")},
    "distill": {"teacher": Path("runs/finetune"), "subset": Path("runs/subsets/10pct.json")},
    "distill-self": {"teacher": Path("runs/finetune")},
    "evaluate": {"classifier": Path("runs/distill")},
}


def leaves(config: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf field's value by its dotted name (a nested config's fields instead of the config)."""
    values = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values |= leaves(value, prefix + f.name + ".") if dataclasses.is_dataclass(value) else {prefix + f.name: value}
    return values


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_stage_config_round_trips_through_its_command_line(name, monkeypatch, capsys):
    config = CONFIGS[name]
    values = leaves(config)
    unchanged = {name for name, default in leaves(type(config)()).items() if values.get(name, ...) == default}
    # Every flag gets a non-default value, but for the None defaults that two configs keep on purpose ("none").
    assert unchanged <= {"student", "data.image_size"}, unchanged

    seen = []
    monkeypatch.setattr(MODULES[name], "run", lambda *args: seen.append(args) or {})
    inputs = [item for key, path in INPUTS[name].items() for item in (f"--{key}", str(path))]
    MODULES[name].main(["--out", "runs/out", *inputs, *config_to_args(config)])

    assert seen == [(config, INPUTS[name], Path("runs/out"))]
    assert json.loads(capsys.readouterr().out) == {}


def test_config_to_args_writes_one_documented_flag_per_field():
    args = config_to_args(CONFIGS["distill"])
    assert args[0] == "--data.source=-imagefolder:/data/my train"
    assert "--data.skip-bad-images=true" in args and "--tensorboard=true" in args
    assert '--student={"depth": 50, "width": 2.0, "sk": true, "small_images": false, "head_layers": 2}' in args
    assert "--student=none" in config_to_args(CONFIGS["distill-self"])
    assert "--data.image-size=none" in config_to_args(CONFIGS["evaluate"])
    assert config_to_args(EvaluateConfig()) == [
        "--data.source=digits",
        "--data.image-column=image",
        "--data.label-column=label",
        "--data.train-split=train",
        "--data.test-split=test",
        "--data.test-fraction=0.2",
        "--data.image-size=none",
        "--data.seed=0",
        "--data.skip-bad-images=false",
        "--image-size=32",
        "--batch-size=256",
        "--knn-k=20",
        "--knn-temperature=0.07",
        "--probe-c=1.0",
        "--probe-max-iter=1000",
        "--seed=0",
    ]


# --- the generic forms ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inner:
    sizes: tuple[int, ...] = (1, 2)
    name: str = "a"


@dataclass(frozen=True)
class Everything:
    inner: Inner = field(default_factory=Inner)
    maybe_inner: Inner | None = None
    budgets: tuple[float, ...] = (0.01, 0.1)
    names: list[str] = field(default_factory=list)
    extra: Any = None
    count: int | None = 3
    flag: bool = False


@pytest.mark.parametrize(
    "config",
    [
        Everything(),
        Everything(
            inner=Inner(sizes=(), name="none"),  # a plain str field keeps the text "none"
            maybe_inner=Inner(sizes=(3, 4, 5), name="-b"),
            budgets=(0.5,),
            names=["x", "y z"],
            extra={"any": ["json", 1.5, None]},
            count=None,
            flag=True,
        ),
    ],
)
def test_tuples_lists_any_and_optional_nested_configs_round_trip(config):
    parsed, inputs, out = parse_stage_args(Everything, "", ["--out", "o", *config_to_args(config)])
    assert parsed == config and inputs == {} and out == Path("o")
    assert isinstance(parsed.budgets, tuple) and isinstance(parsed.names, list)
    if parsed.maybe_inner is not None:
        assert isinstance(parsed.maybe_inner, Inner) and isinstance(parsed.maybe_inner.sizes, tuple)


def test_optional_inputs_are_returned_only_when_given():
    def parse(*argv: str) -> dict[str, Path]:
        return parse_stage_args(Everything, "", ["--out", "o", *argv], ("teacher",), ("subset", "pretrain"))[1]

    assert parse("--teacher", "t") == {"teacher": Path("t")}
    assert parse("--teacher", "t", "--pretrain=p") == {"teacher": Path("t"), "pretrain": Path("p")}
    with pytest.raises(SystemExit):
        parse("--subset", "s")  # the required input is still required


@pytest.mark.parametrize("student", ["{not json", "[18]", '{"depht": 18}'])
def test_a_bad_student_config_is_an_argparse_error_that_shows_the_form(student, capsys):
    with pytest.raises(SystemExit):
        parse_stage_args(DistillConfig, "", ["--out", "o", "--student", student])
    error = capsys.readouterr().err
    assert "argument --student: expected a JSON object of EncoderConfig fields (depth, width" in error
    assert """such as '{"depth": 18, "width": 0.25}', or none""" in error


def test_student_takes_json_or_none():
    def student(text: str) -> EncoderConfig | None:
        return parse_stage_args(DistillConfig, "", ["--out", "o", "--student", text])[0].student

    assert student('{"depth": 34, "width": 0.5}') == EncoderConfig(depth=34, width=0.5)
    assert student("none") is None and student("None") is None
