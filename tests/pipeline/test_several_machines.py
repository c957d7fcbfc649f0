"""Two "machines" on this box: a real `prefect server start`, a process work pool, the deployments of prefect.yaml,
and one worker per machine with `--limit 1` (machine 0 on the default queue, machine 1 on the `ranks` queue), as the
README's multi-node set-up has them. Both machine ranks meet on the loopback over gloo, one process each.

The pipeline run through `prefect deployment run` pretrains on 2 machines x 1 process: the same loss curve and
weights as 1 machine x 2 processes. When rank 0 fails, the other machine's rank is cancelled and its processes die;
cancelling a rank's flow run ends its processes even when no rank 0 ever came.

Deployment runs may not set the launch addresses or the runs directory through overrides, so each test writes its
config file into the directory that every worker (and this process) lists in SIMCLRV2_CONFIG_DIRS. Each test has a
rendezvous port of its own: two tests on one port (here, or someone else's run on this box) corrupt each other's
gloo traffic."""

import os
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import LaunchConfig, load_config
from pipeline.deployment_inputs import CONFIG_DIRS_ENV, ConfigRequest
from pipeline.launcher import run_stage
from pipeline.machine_rank import RANK_FLOW
from pipeline.machines import RankRuns, rank_parameters, run_on_machines
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan, input_paths
from tests.pipeline.conftest import TINY_RUN
from tests.pipeline.test_deployment import BIN, free_port, start, stop, wait_for_health, write_config

ROOT = Path(__file__).resolve().parents[2]
RANK_DEPLOYMENT = "simclrv2-stage-rank/ranks"


def several_machines(port: int) -> list[str]:
    """The launch settings of two machines on this box, meeting at `port`."""
    return [
        "launch.num_processes=2",
        "launch.num_machines=2",
        "launch.main_process_ip=127.0.0.1",
        f"launch.main_process_port={port}",
        "launch.use_cpu=true",
        f"launch.rank_deployment={RANK_DEPLOYMENT}",
    ]


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    """A Prefect server, the pool, the deployments, and two workers whose operator allows the configs in
    `env[CONFIG_DIRS_ENV]`; yields the environment that talks to them."""
    home = tmp_path_factory.mktemp("several-machines")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home / "prefect-home"),
        "PREFECT_API_URL": api,
        CONFIG_DIRS_ENV: str(home / "configs"),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick up a rank within a second, not ten
        "OMP_NUM_THREADS": "1",  # two ranks on two cores
    }
    processes = [
        start(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env,
            home / "server.log",
        )
    ]
    try:
        wait_for_health(api, processes[0], home / "server.log")
        prefect(["work-pool", "create", "simclrv2", "--type", "process"], env)
        prefect(["--no-prompt", "deploy", "--all"], {**env, "PWD": str(ROOT)})  # prefect.yaml's working directory
        for rank, queue in enumerate(["default", "ranks"]):
            worker = ["worker", "start", "--pool", "simclrv2", "--work-queue", queue, "--limit", "1"]
            processes.append(
                start([str(BIN / "prefect"), *worker, "--name", f"machine-{rank}"], env, home / f"w{rank}.log")
            )
        yield env
    finally:
        for process in reversed(processes):
            stop(process)


def prefect(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BIN / "prefect"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def two_machine_config(machines, tmp_path, monkeypatch):
    """Writes a config of the tiny run on two machines, outputs in `tmp_path/runs`, into the workers' config
    directory, and allows that directory here too (rank 0 checks what the other ranks will accept)."""
    monkeypatch.setenv(CONFIG_DIRS_ENV, machines[CONFIG_DIRS_ENV])

    def write(*overrides: str) -> Path:
        items = [*TINY_RUN, f"runs_dir={tmp_path / 'runs'}", *several_machines(free_port()), *overrides]
        return write_config(Path(machines[CONFIG_DIRS_ENV]), items, f"{tmp_path.name}.yaml")

    return write


def losses(out_dir: Path) -> list[tuple[int, float]]:
    rows = [line.split(",") for line in (out_dir / "loss_curve.csv").read_text().splitlines()[1:]]
    return [(int(step), float(loss)) for step, loss, *_ in rows]


@pytest.mark.slow
def test_two_machines_with_one_process_each_train_like_one_machine_with_two(
    machines, two_machine_config, tmp_path, monkeypatch
):
    config = two_machine_config("pretrain.log_every=1")
    command = [str(BIN / "prefect"), "deployment", "run", "simclrv2-pipeline/quickstart", "--watch"]
    command += ["--param", f"config={config}", "--param", "only=subsets,pretrain"]
    result = subprocess.run(command, env=machines, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "Completed" in result.stdout, result.stdout[-5000:] + result.stderr[-3000:]

    assert rank_run_states(machines["PREFECT_API_URL"]) == {"pretrain rank 1": "COMPLETED"}  # machine 1's worker ran it

    # Found, not recomputed: the fingerprint covers the stage's code, which may change while a test runs.
    (manifest,) = (tmp_path / "runs" / "quickstart" / "pretrain").glob("*/manifest.json")
    two_machines = manifest.parent
    assert read_manifest(two_machines)["devices"]["machines"] == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one_machine = tmp_path / "one machine"
    run_stage(
        "pretrain",
        build_plan(load_config(config))["pretrain"].config,
        {},
        one_machine,
        LaunchConfig(num_processes=2, use_cpu=True, main_process_port=free_port()),
        on_line=lambda line: None,
    )

    two, one = losses(two_machines), losses(one_machine)
    assert [step for step, _ in two] == [step for step, _ in one] and len(one) >= 4
    assert [loss for _, loss in two] == pytest.approx([loss for _, loss in one], abs=1e-6)
    # The weights after the last step: the same gradients at every step.
    weights_two = load_file(two_machines / "model.safetensors")
    weights_one = load_file(one_machine / "model.safetensors")
    assert weights_two.keys() == weights_one.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def rank_run_states(api: str) -> dict[str, str]:
    """Name -> state type of every flow run of the rank deployment on the server at `api`."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
        flows = {run.flow_id: client.read_flow(run.flow_id).name for run in runs}
    return {run.name: run.state.type.value for run in runs if flows[run.flow_id] == RANK_FLOW}


def command_lines_with(text: str) -> list[str]:
    lines = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in line:
            lines.append(line[:200])
    return lines


@pytest.mark.slow
def test_when_rank_0_fails_the_other_machines_rank_is_cancelled_and_its_processes_die(machines, two_machine_config):
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    class TaskCancelled(Exception):  # what a cancelled stage task looks like from rank 0's output callback
        pass

    def on_line(line: str) -> None:
        if "pretrain step" in line:  # both machines' processes have met and train
            raise TaskCancelled

    config = two_machine_config("pretrain.epochs=30", "pretrain.log_every=1")
    cfg = load_config(config)
    plan = build_plan(cfg)
    run = plan["pretrain"]
    ranks = RankRuns(RANK_DEPLOYMENT)
    with temporary_settings({PREFECT_API_URL: machines["PREFECT_API_URL"]}):
        with pytest.raises(TaskCancelled):
            run_on_machines(run, input_paths(plan, run), cfg.launch, on_line, ConfigRequest.of(config, []), ranks)
        states = ranks.states()
    assert [state.type for state in states.values()] == [StateType.CANCELLED]
    deadline = time.monotonic() + 15
    while command_lines_with(str(run.out_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert command_lines_with(str(run.out_dir)) == []


@pytest.mark.slow
def test_cancelling_a_rank_flow_run_kills_its_processes_even_while_rank_0_is_missing(machines, two_machine_config):
    """Machine 1's rank waits at the rendezvous for a rank 0 that never comes (as it would hang in a collective on a
    GPU): cancelling its flow run alone must end its processes, through the worker's SIGTERM."""
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = two_machine_config()
    run = build_plan(load_config(config))["pretrain"]
    ranks = RankRuns(RANK_DEPLOYMENT)
    with temporary_settings({PREFECT_API_URL: machines["PREFECT_API_URL"]}):
        ranks.start(1, rank_parameters(run, ConfigRequest.of(config, []), 1), "pretrain rank 1 alone")
        deadline = time.monotonic() + 120
        while not command_lines_with(str(run.out_dir)):
            assert time.monotonic() < deadline, "machine 1's worker never started the rank"
            time.sleep(0.2)
        ranks.cancel_unfinished()
        deadline = time.monotonic() + 60
        while not all(state.is_final() for state in ranks.states().values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [state.type for state in ranks.states().values()] == [StateType.CANCELLED]
    deadline = time.monotonic() + 15
    while command_lines_with(str(run.out_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert command_lines_with(str(run.out_dir)) == []
