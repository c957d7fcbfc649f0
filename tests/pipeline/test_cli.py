"""The `simclrv2` command: every usage mistake is one line on stderr and exit status 2, before Prefect starts."""

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pipeline.cli as cli
from pipeline.cli import main
from pipeline.config import load_config
from pipeline.deployment_inputs import load_cli_request
from pipeline.store import experiment_lock

SCRIPT = Path(sys.executable).parent / "simclrv2"


@pytest.fixture
def no_flow(monkeypatch):
    """A stand-in for pipeline.flow: Prefect is not imported, and a test fails if the flow would start."""
    calls = []
    fake = types.ModuleType("pipeline.flow")
    fake.simclrv2_pipeline = lambda *args, **kwargs: calls.append(args) or "runs/report/report.html"
    monkeypatch.setitem(sys.modules, "pipeline.flow", fake)
    return calls


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """`simclrv2 ARGS` in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


def one_line_error(args: list[str], capsys, no_flow) -> str:
    status, out, err = run_cli(args, capsys)
    assert status == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("simclrv2 run: ")
    assert "Traceback" not in err
    assert no_flow == []  # the flow never started
    return err


def test_an_unknown_key_is_one_line_naming_the_dotted_key(tmp_path, capsys, no_flow):
    runs = tmp_path / "runs"
    err = one_line_error(["run", "--set", f"runs_dir={runs}", "--set", "pretrain.batch_sise=64"], capsys, no_flow)
    assert "pretrain.batch_sise" in err and "unknown key" in err
    assert "batch_size" in err  # the suggestion
    assert not runs.exists()


def test_a_bad_value_is_one_line_naming_the_key(tmp_path, capsys, no_flow):
    runs = tmp_path / "runs"
    err = one_line_error(["run", "--set", f"runs_dir={runs}", "--set", "pretrain.epochs=-1"], capsys, no_flow)
    assert "pretrain.epochs" in err
    assert "-1" in err
    assert not runs.exists()


def test_a_value_of_the_wrong_type_is_one_line(tmp_path, capsys, no_flow):
    err = one_line_error(["run", "--set", f"runs_dir={tmp_path}", "--set", "launch.num_processes=two"], capsys, no_flow)
    assert "launch.num_processes" in err


def test_a_missing_config_file_is_one_line_naming_it(tmp_path, capsys, no_flow):
    missing = tmp_path / "nope.yaml"
    err = one_line_error(["run", str(missing)], capsys, no_flow)
    assert str(missing) in err and "not found" in err


def test_an_unknown_stage_for_only_is_one_line_listing_the_stages(tmp_path, capsys, no_flow):
    runs = tmp_path / "runs"
    err = one_line_error(["run", "--set", f"runs_dir={runs}", "--only", "nosuchstage"], capsys, no_flow)
    assert "nosuchstage" in err
    for stage in ("subsets", "pretrain", "finetune", "baseline", "distill", "evaluate", "report"):
        assert stage in err
    assert not runs.exists()


def test_an_unknown_stage_for_force_is_one_line_too(tmp_path, capsys, no_flow):
    err = one_line_error(["run", "--set", f"runs_dir={tmp_path}", "--force", "finetune[nosuchbudget]"], capsys, no_flow)
    assert "finetune[nosuchbudget]" in err and "pretrain" in err


def test_a_second_run_of_a_running_experiment_is_one_line_and_changes_nothing(tmp_path, capsys, no_flow):
    runs = tmp_path / "runs"
    with experiment_lock(runs, "quickstart") as lock:
        before = sorted(runs.rglob("*"))
        err = one_line_error(["run", "--set", f"runs_dir={runs}"], capsys, no_flow)
        assert "already running" in err and "quickstart" in err
        assert sorted(runs.rglob("*")) == before == [runs / "quickstart", lock]


def test_a_valid_request_reaches_the_flow_with_its_arguments(tmp_path, capsys, no_flow):
    """The check that these tests rely on: a good request does start the flow (the stand-in), and exits 0."""
    runs = tmp_path / "runs"
    args = ["run", "--set", f"runs_dir={runs}", "--only", "pretrain", "--force", "pretrain"]
    status, out, err = run_cli(args, capsys)
    assert (status, err) == (0, "")
    (call,) = no_flow
    assert call[:5] == (None, [f"runs_dir={runs}"], ["pretrain"], ["pretrain"], 0.0)
    assert call[5] == load_config(None, [f"runs_dir={runs}"])  # the config the check validated
    assert out == "done: pretrain (no report: run without --only to build it)\n"  # --only built no report
    assert not (runs / "quickstart" / "pretrain").exists()  # the check only took and released the lock


def test_run_validates_the_config_once(tmp_path, capsys, no_flow, monkeypatch):
    loads = []

    def counted(*args):
        loads.append(args)
        return load_cli_request(*args)

    monkeypatch.setattr(cli, "load_cli_request", counted)
    status, _, err = run_cli(["run", "--set", f"runs_dir={tmp_path}"], capsys)
    assert (status, err) == (0, "")
    assert len(loads) == 1 and no_flow[0][5] is not None  # the flow gets the config, so it does not load it again


def test_help_lists_the_commands_and_the_run_options():
    """The installed console script, both helps at once (each start imports torch: seconds on 2 cores)."""
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "pipeline.cli"]
    helps = [
        subprocess.Popen([*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args in (["--help"], ["run", "--help"])
    ]
    (top, top_err), (run, run_err) = (process.communicate(timeout=120) for process in helps)
    assert [process.returncode for process in helps] == [0, 0], top_err + run_err
    assert "run" in top and "serve" in top and "simclrv2" in top
    for option in ("--set", "--only", "--force", "KEY=VALUE"):
        assert option in run


@pytest.mark.parametrize("command", ["predict", "select"])
def test_predict_and_select_help_shows_examples(command, capsys):
    status, out, _ = run_cli([command, "--help"], capsys)
    assert status == 0 and "examples:" in out and f"simclrv2 {command} runs/" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "nowhere", "images"], r"simclrv2 predict: nowhere is neither a finished run"),
        (["select", "nowhere", "--budget", "5"], r"simclrv2 select: no finished pretraining under nowhere"),
    ],
)
def test_predict_and_select_name_a_run_that_is_not_there(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_cli(args, capsys)
    assert status == 2 and out == "" and len(err.splitlines()) == 1
    assert re.match(message, err), err
    assert not (tmp_path / "prelabels").exists() and not (tmp_path / "to-label").exists()  # nothing written


def test_export_forwards_to_the_export_program(capsys, tmp_path):
    status, _, err = run_cli(["export", str(tmp_path / "missing"), "--format", "onnx"], capsys)
    assert status == 2 and "missing" in err


@pytest.mark.parametrize(
    ("fault", "status", "line"),
    [
        (
            PermissionError(13, "Permission denied", "/data/photos"),
            1,
            "PermissionError: /data/photos: permission denied",
        ),
        (
            ConnectionResetError(104, "Connection reset by peer"),
            1,
            "ConnectionResetError: [Errno 104] Connection reset",
        ),
    ],
)
def test_a_machine_fault_while_checking_the_run_is_one_line_with_the_status_of_its_kind(
    tmp_path, capsys, no_flow, monkeypatch, fault, status, line
):
    def preflight(*args):
        raise fault

    monkeypatch.setattr("pipeline.preflight.preflight", preflight)
    code, _, err = run_cli(["run", "--set", f"runs_dir={tmp_path}"], capsys)
    assert code == status and not no_flow
    assert err.startswith(f"simclrv2 run: checking the run failed: {line}") and err.count("\n") == 1, err


@pytest.mark.parametrize("command", ["run", "serve", "predict", "select", "export", "report"])
def test_every_command_has_a_help_that_names_it(command, capsys):
    status, out, err = run_cli([command, "--help"], capsys)
    assert (status, err) == (0, "")
    assert out.startswith(f"usage: simclrv2 {command}"), out[:200]


def test_export_help_lists_its_own_options(capsys):
    status, out, _ = run_cli(["export", "--help"], capsys)
    assert status == 0 and "--format {onnx,safetensors,torchvision}" in out and "STAGE_DIR" in out
