"""A stage on several machines, without a Prefect server: the fan-out's decisions, with ranks 1.. as scripted states.

Rank 0 runs a real process group (a stand-in for `accelerate launch`, see test_launcher.py); ranks 1.. are a
`RankRuns` whose states follow a script. The real thing, with Prefect workers, is test_several_machines.py."""

import json
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
from prefect.states import Cancelled, Completed, Failed, Pending, Running, Scheduled

import pipeline.flow as flow_module
import pipeline.machines as machines
from pipeline.config import DEFAULT_CONFIG, ConfigError, ExperimentConfig, LaunchConfig, apply_override, load_config
from pipeline.config.loading import read_config_file
from pipeline.deployment_inputs import CONFIG_DIRS_ENV, ConfigRequest, RequestRefused
from pipeline.launcher import StageFailed
from pipeline.machine_rank import rank_command
from pipeline.machines import (
    RankRun,
    RankRuns,
    check_rank_zero_is_here,
    rank_parameters,
    rank_problem,
    run_on_machines,
)
from pipeline.plan import StageRun, build_plan
from stages.training.cli import config_as_json
from tests.pipeline.test_launcher import CONFIG, family, flag_value, gone, read_pids, reaping

LAUNCH = LaunchConfig(
    num_processes=2,
    num_machines=2,
    main_process_ip="127.0.0.1",
    main_process_port=29613,
    rank_deployment="simclrv2-stage-rank/ranks",
    use_cpu=True,
)
Script = Callable[[int, float], object]  # (rank, seconds since it was started) -> its Prefect state


class ScriptedRanks(RankRuns):
    """Ranks 1.. whose states follow `script` until they are cancelled."""

    def __init__(self, script: Script) -> None:
        super().__init__(LAUNCH.rank_deployment)
        self.script, self.started_at, self.parameters, self.cancelled = script, 0.0, {}, []
        self.worker_command = "prefect worker start --pool simclrv2 --work-queue ranks --limit 1"

    def check_deployment(self) -> None:
        pass

    def start(self, rank: int, parameters: dict, name: str) -> RankRun:
        run = RankRun(rank, uuid4(), name)
        self.runs.append(run)
        self.parameters[rank], self.started_at = parameters, time.monotonic()
        return run

    def states(self) -> dict:
        waited = time.monotonic() - self.started_at
        return {run: Cancelled() if run.rank in self.cancelled else self.script(run.rank, waited) for run in self.runs}

    def cancel_unfinished(self) -> None:
        self.cancelled = [run.rank for run in self.runs if not self.states()[run].is_final()]


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(machines, "POLL_SECONDS", 0.1)


def rank_zero_runs(monkeypatch, command: list[str]) -> list[LaunchConfig]:
    """Rank 0 runs `command` instead of `accelerate launch`; returns the launch configs it was asked for."""
    asked = []

    def launch_command(module, config, inputs, out_dir, launch):
        asked.append(launch)
        return command

    monkeypatch.setattr(machines, "launch_command", launch_command)
    return asked


def writes_metrics(out_dir: Path) -> list[str]:
    script = "import json, sys; open(sys.argv[1], 'w').write(json.dumps({'final_loss': 1.5}))"
    return [sys.executable, "-c", script, str(out_dir / "metrics.json")]


def run(ranks: RankRuns, out_dir: Path, launch: LaunchConfig = LAUNCH, on_line=lambda line: None) -> dict:
    stage = StageRun("pretrain", "pretrain", CONFIG, fingerprint="0123456789abcdef", out_dir=out_dir)
    return run_on_machines(stage, {}, launch, on_line, ConfigRequest(), ranks)


@pytest.fixture
def several_machines_config(tmp_path, tiny_run, monkeypatch) -> tuple[Path, ExperimentConfig]:
    """A config file for two machines, in a directory the worker's operator allows (SIMCLRV2_CONFIG_DIRS)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    raw = read_config_file(DEFAULT_CONFIG)
    for item in [*tiny_run, *(f"launch.{key}={value}" for key, value in LAUNCH.model_dump(mode="json").items())]:
        apply_override(raw, item)
    path = configs / "two-machines.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv(CONFIG_DIRS_ENV, str(configs))
    return path, load_config(path)


# --- all ranks complete ---------------------------------------------------------------------------------------------


def test_every_rank_completing_returns_rank_0s_metrics_and_each_rank_gets_its_machine_rank(tmp_path, monkeypatch):
    asked = rank_zero_runs(monkeypatch, writes_metrics(tmp_path))
    ranks = ScriptedRanks(lambda rank, waited: Running() if waited < 0.3 else Completed())
    launch = LAUNCH.model_copy(update={"num_processes": 3, "num_machines": 3})
    assert run(ranks, tmp_path, launch) == {"final_loss": 1.5}
    assert [a.machine_rank for a in asked] == [0]
    assert sorted(ranks.parameters) == [1, 2]
    for rank, parameters in ranks.parameters.items():
        assert parameters == {
            "config": None,
            "overrides": [],
            "stage": "pretrain",
            "fingerprint": "0123456789abcdef",
            "out_dir": str(tmp_path),
            "machine_rank": rank,
        }
    assert [run.name for run in ranks.runs] == ["pretrain rank 1", "pretrain rank 2"]


def test_a_rank_builds_its_command_from_the_config_as_rank_0_does(several_machines_config):
    path, cfg = several_machines_config
    plan = build_plan(cfg)
    stage = StageRun(
        "pretrain", "pretrain", None, fingerprint=plan["pretrain"].fingerprint, out_dir=plan["pretrain"].out_dir
    )
    parameters = rank_parameters(stage, ConfigRequest(str(path)), 1)
    command, env, timeout = rank_command(**parameters)  # what the rank flow on the other machine runs
    assert flag_value(command, "--machine_rank") == "1"
    assert flag_value(command, "--num_machines") == "2"
    assert flag_value(command, "--main_process_ip") == "127.0.0.1"
    assert flag_value(command, "--out") == str(plan["pretrain"].out_dir)
    assert json.loads(flag_value(command, "--config-json")) == json.loads(config_as_json(plan["pretrain"].config))
    assert env["ACCELERATE_USE_CPU"] == "1"
    assert timeout == cfg.launch.stage_timeout


def test_a_rank_refuses_what_rank_0_would_not_have_asked(several_machines_config, tmp_path):
    path, cfg = several_machines_config
    plan = build_plan(cfg)
    good = {
        "config": str(path),
        "overrides": [],
        "stage": "pretrain",
        "fingerprint": plan["pretrain"].fingerprint,
        "out_dir": str(plan["pretrain"].out_dir),
        "machine_rank": 1,
    }
    refusals = {
        "stage": ("subsets", "stage 'subsets': not a training stage of 'quickstart'"),
        "machine_rank": (2, "machine_rank 2: must be 1..1"),
        "fingerprint": ("ffffffffffffffff", "pretrain: this machine makes it"),
        "out_dir": (str(tmp_path / "elsewhere"), "but rank 0 made it"),
        "config": ("/etc/passwd", "config '/etc/passwd': a deployment run reads its config only from"),
        "overrides": (['launch.extra_args=["--no_python","sh","-c","id"]'], "overrides may not change launch.extra"),
    }
    for key, (value, message) in refusals.items():
        with pytest.raises(RequestRefused, match=re.escape(message)):
            rank_command(**{**good, key: value})
    assert rank_command(**good)


# --- a rank fails: one message, the others stopped -----------------------------------------------------------------


def test_a_failed_rank_kills_rank_0_and_the_stage_fails_with_one_message_naming_it(tmp_path, monkeypatch):
    command, pids = family(tmp_path)  # rank 0: a process group that would sleep 30 s
    rank_zero_runs(monkeypatch, command)
    ranks = ScriptedRanks(lambda rank, waited: Running() if waited < 0.5 else Failed(message="gloo: connection reset"))
    with reaping(pids):
        start = time.monotonic()
        with pytest.raises(StageFailed) as failure:
            run(ranks, tmp_path)
        assert time.monotonic() - start < 10
        assert all(gone(pid) for pid in read_pids(pids))
    message = str(failure.value)
    assert message.startswith("pretrain on 2 machines failed: rank 1 (flow run 'pretrain rank 1', ")
    assert "ended Failed: gloo: connection reset; rank 0 was stopped" in message


def test_when_rank_0_fails_the_other_ranks_are_cancelled(tmp_path, monkeypatch):
    rank_zero_runs(monkeypatch, [sys.executable, "-c", "import sys; print('out of memory'); sys.exit(3)"])
    ranks = ScriptedRanks(lambda rank, waited: Running())
    with pytest.raises(StageFailed) as failure:
        run(ranks, tmp_path)
    assert ranks.cancelled == [1]
    message = str(failure.value)
    assert message.startswith("pretrain on 2 machines failed: rank 0 (this machine) ")
    assert "exited with code 3" in message and "out of memory" in message
    assert message.endswith("the other ranks now: rank 1 Cancelled")


def test_a_cancelled_stage_task_cancels_the_other_ranks_and_kills_rank_0(tmp_path, monkeypatch):
    command, pids = family(tmp_path)

    def on_line(line: str) -> None:  # a cancelled Prefect task, seen from rank 0's output callback
        if line == "ready":
            raise KeyboardInterrupt

    rank_zero_runs(monkeypatch, command)
    ranks = ScriptedRanks(lambda rank, waited: Running())
    with reaping(pids), pytest.raises(KeyboardInterrupt):
        run(ranks, tmp_path, on_line=on_line)
    assert ranks.cancelled == [1]
    assert all(gone(pid) for pid in read_pids(pids))


def test_a_rank_without_a_worker_fails_the_stage_after_rank_start_timeout(tmp_path, monkeypatch):
    command, pids = family(tmp_path)
    rank_zero_runs(monkeypatch, command)
    ranks = ScriptedRanks(lambda rank, waited: Scheduled() if waited < 0.3 else Pending())
    with reaping(pids), pytest.raises(StageFailed) as failure:
        run(ranks, tmp_path, LAUNCH.model_copy(update={"rank_start_timeout": 1.0}))
    assert "rank 1 (flow run 'pretrain rank 1') found no free worker in 1 s (launch.rank_start_timeout)" in str(
        failure.value
    )
    assert "`prefect worker start --pool simclrv2 --work-queue ranks --limit 1` on each other machine" in str(
        failure.value
    )
    assert ranks.cancelled == [1]


def test_a_rank_failing_after_rank_0_finished_still_fails_the_stage(tmp_path, monkeypatch):
    rank_zero_runs(monkeypatch, writes_metrics(tmp_path))
    ranks = ScriptedRanks(lambda rank, waited: Running() if waited < 1.0 else Failed(message="exit code 1"))
    with pytest.raises(StageFailed, match=r"failed: rank 1 \(flow run 'pretrain rank 1', .*\) ended Failed: exit code"):
        run(ranks, tmp_path)


# --- where rank 0 runs, and the config ------------------------------------------------------------------------------


def test_rank_0_runs_only_on_the_machine_that_has_main_process_ip(tmp_path, monkeypatch):
    check_rank_zero_is_here("127.0.0.1")
    ranks = ScriptedRanks(lambda rank, waited: Running())
    elsewhere = LAUNCH.model_copy(update={"main_process_ip": "192.0.2.7"})  # TEST-NET-1: no machine's address
    with pytest.raises(StageFailed, match=r"launch.main_process_ip '192.0.2.7' is not an address of this machine"):
        run(ranks, tmp_path, elsewhere)
    assert ranks.runs == []  # nothing was started


def test_rank_problem_names_the_first_rank_that_cannot_finish():
    runs = [RankRun(rank, uuid4(), f"pretrain rank {rank}") for rank in (1, 2)]
    hint = "prefect worker start --pool p --limit 1"
    assert rank_problem({runs[0]: Running(), runs[1]: Completed()}, 5, 60, hint) is None
    assert rank_problem({runs[0]: Running(), runs[1]: None}, 5, 60, hint) is None  # not read yet
    assert "rank 2" in rank_problem({runs[0]: Running(), runs[1]: Cancelled()}, 5, 60, hint)
    assert "rank 1" in rank_problem({runs[0]: Failed(), runs[1]: Failed()}, 5, 60, hint)
    assert rank_problem({runs[0]: Scheduled(), runs[1]: Running()}, 5, 60, hint) is None
    assert "found no free worker in 60 s" in rank_problem({runs[0]: Scheduled(), runs[1]: Running()}, 61, 60, hint)


@pytest.mark.parametrize(
    ("items", "expected"),
    [
        ([], "launch.rank_deployment: must be set when num_machines > 1: the Prefect deployment whose workers"),
        (["launch.rank_deployment=ranks"], "launch.rank_deployment: must be '<flow name>/<deployment name>', e.g."),
        (["launch.rank_deployment=a/b", "launch.machine_rank=1"], "launch.machine_rank: must be 0, got 1: the machine"),
        (["launch.rank_deployment=a/b", "launch.rank_start_timeout=0"], "launch.rank_start_timeout: 0 is out of range"),
    ],
)
def test_several_machines_without_a_rank_deployment_is_one_clear_error(items, expected):
    several = ["launch.num_processes=2", "launch.num_machines=2", "launch.main_process_ip=10.0.0.7"]
    with pytest.raises(ConfigError) as error:
        load_config(None, [*several, *items])
    assert expected in str(error.value)


def test_the_flow_sends_training_stages_with_several_machines_to_the_fan_out(tiny_run, monkeypatch):
    calls = []
    monkeypatch.setattr(flow_module, "run_on_machines", lambda *args: calls.append(args) or {"final_loss": 1.0})
    several = ["launch.num_processes=2", "launch.num_machines=2", "launch.main_process_ip=127.0.0.1"]
    cfg = load_config(None, [*tiny_run, *several, "launch.rank_deployment=simclrv2-stage-rank/ranks"])
    plan = build_plan(cfg)
    request = ConfigRequest("configs/quickstart.yaml", ("pretrain.epochs=1",))
    assert flow_module.execute(plan, plan["pretrain"], cfg.launch, print, request) == {"final_loss": 1.0}
    run, inputs, launch, _, sent = calls[0]
    assert (run, inputs, launch, sent) == (plan["pretrain"], {}, cfg.launch, request)
    flow_module.execute(plan, plan["subsets"], cfg.launch, print, request)  # a cheap stage: here, not fanned out
    assert len(calls) == 1
