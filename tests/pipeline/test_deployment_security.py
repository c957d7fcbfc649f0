"""The deployments behind a real `prefect server start` with an auth string (README: Deploying safely).

Prefect's self-hosted server has no users: whoever reaches its API may start any deployment with any parameters. The
two defences are the server's auth string (PREFECT_SERVER_API_AUTH_STRING; clients send PREFECT_API_AUTH_STRING as
basic auth) and the pipeline's own check of every deployment parameter (pipeline/deployment_inputs.py). Here: an
authenticated `simclrv2 serve` runs a deployment to completion, a client without the string is refused, and the
issue's attacks through parameters (a shell in `launch.extra_args`, `config=/etc/passwd`, a forged rank of a stage)
end their flow runs Failed with one line, before anything runs.

One server, one `simclrv2 serve` and one server of the ranks deployment for the whole module."""

import base64
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.deployment_inputs import CONFIG_DIRS_ENV
from tests.pipeline.conftest import TINY_RUN
from tests.pipeline.test_deployment import BIN, free_port, run_deployment, start, stop, wait_for_health, write_config

RANK_DEPLOYMENT = "simclrv2-stage-rank/ranks"
SERVE_RANKS = "from pipeline.machine_rank import stage_rank; stage_rank.serve(name='ranks')"
AUTH_SETTINGS = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_API_KEY")


@dataclass
class Secured:
    api: str
    auth: str
    env: dict[str, str]  # a client that knows the auth string
    home: Path
    serve_dir: Path  # where `simclrv2 serve` runs: a relative runs_dir lands here
    config: Path  # the tiny run, in the directory the operator allows


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    home = tmp_path_factory.mktemp("secured")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    auth = f"simclrv2:{secrets.token_hex(16)}"
    plain = {key: value for key, value in os.environ.items() if key not in AUTH_SETTINGS}
    base = {**plain, "PREFECT_HOME": str(home / "prefect-home"), "PREFECT_API_URL": api}
    client = {**base, "PREFECT_API_AUTH_STRING": auth}
    operator_dir, serve_dir = home / "operator-configs", home / "serve"
    serve_dir.mkdir()
    config = write_config(operator_dir, [*TINY_RUN, f"runs_dir={home / 'runs'}"])
    processes = [
        start(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            {**base, "PREFECT_SERVER_API_AUTH_STRING": auth},
            home / "server.log",
        )
    ]
    try:
        wait_for_health(api, processes[0], home / "server.log")  # /health answers without the string
        served = {**client, CONFIG_DIRS_ENV: str(operator_dir)}
        processes.append(start([str(BIN / "simclrv2"), "serve"], served, home / "serve.log", serve_dir))
        processes.append(start([sys.executable, "-c", SERVE_RANKS], served, home / "ranks.log", serve_dir))
        yield Secured(api, auth, client, home, serve_dir, config)
    finally:
        for process in reversed(processes):
            stop(process)


def post(api: str, path: str, auth: str | None = None) -> tuple[int, object]:
    """POST `{}` to the API; (HTTP status, decoded JSON)."""
    request = urllib.request.Request(f"{api}{path}", data=b"{}", headers={"Content-Type": "application/json"})
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def flow_run_state(secured: Secured, output: str) -> dict:
    """The final state (type, message) of the flow run that `prefect deployment run` printed the id of."""
    (flow_run_id,) = re.findall(r"UUID: ([0-9a-f-]{36})", output)
    request = urllib.request.Request(f"{secured.api}/flow_runs/{flow_run_id}")
    request.add_header("Authorization", "Basic " + base64.b64encode(secured.auth.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["state"]


def failed_run(secured: Secured, params: list[str], deployment: str = "simclrv2-pipeline/quickstart") -> str:
    """Start the deployment with `params`, expect its flow run to fail; its state message."""
    result = run_deployment(params, secured.env, time.monotonic() + 180, deployment, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Flow run finished in state 'Failed'" in output, output + logs(secured)
    state = flow_run_state(secured, output)
    assert state["type"] == "FAILED", state
    return state["message"]


def logs(secured: Secured) -> str:
    return "".join(f"\n--- {name}:\n{(secured.home / name).read_text()[-4000:]}" for name in ("serve.log", "ranks.log"))


def everything_under(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*")) if directory.exists() else []


# --- the server's auth string ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_authenticated_serve_runs_a_deployment_to_completion(secured):
    params = ["--param", f"config={secured.config}", "--param", "only=subsets,pretrain"]
    result = run_deployment(params, secured.env, time.monotonic() + 180, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Flow run finished successfully in 'Completed'" in output, output + logs(secured)
    assert flow_run_state(secured, output)["type"] == "COMPLETED"
    manifests = list((secured.home / "runs" / "quickstart" / "pretrain").glob("*/manifest.json"))
    assert len(manifests) == 1


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/deployments/filter", "/flows/filter", "/flow_runs/filter"])
def test_the_api_refuses_requests_without_the_auth_string(secured, path):
    assert post(secured.api, path)[0] == 401
    assert post(secured.api, path, "simclrv2:wrong")[0] == 401
    assert post(secured.api, path, secured.auth.upper())[0] == 401
    status, found = post(secured.api, path, secured.auth)
    assert status == 200 and isinstance(found, list)


@pytest.mark.slow
def test_the_served_deployments_are_there_for_the_authenticated_only(secured):
    deadline = time.monotonic() + 180
    while True:  # `simclrv2 serve` registers one deployment per configs/*.yaml, and the ranks one
        _, found = post(secured.api, "/deployments/filter", secured.auth)
        names = {deployment["name"] for deployment in found}
        if {"quickstart", "cifar10", "imagenet", "ranks"} <= names or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert {"quickstart", "cifar10", "imagenet", "ranks"} <= names, logs(secured)
    anonymous = {key: value for key, value in secured.env.items() if key != "PREFECT_API_AUTH_STRING"}
    command = [str(BIN / "prefect"), "deployment", "run", "simclrv2-pipeline/quickstart"]
    result = subprocess.run(command, env=anonymous, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "401" in result.stdout + result.stderr, result.stdout + result.stderr
    assert "UUID:" not in result.stdout  # no flow run was created


# --- parameters that ask for more than a training run ---------------------------------------------------------------


@pytest.mark.slow
def test_a_shell_in_launch_extra_args_fails_the_run_before_anything_runs(secured, tmp_path):
    """The issue's attack, word for word, on the quickstart deployment with its own config."""
    marker = tmp_path / "x"
    attack = [
        "launch.num_processes=2",
        "launch.use_cpu=true",
        f'launch.extra_args=["--no_python","sh","-c","id > {marker}"]',
    ]
    message = failed_run(secured, ["--param", f"overrides={json.dumps(attack)}"])
    assert "deployment run: overrides may not change launch.extra_args; set it in the config file (" in message
    assert "\n" not in message.strip() and "Traceback" not in message
    time.sleep(2)  # what a started stage would have had to write the marker
    assert not marker.exists()
    assert everything_under(secured.serve_dir / "runs") == []  # the quickstart's runs_dir: no lock, no stage


@pytest.mark.slow
def test_a_config_outside_the_allowed_directories_fails_without_showing_it(secured):
    message = failed_run(secured, ["--param", "config=/etc/passwd"])
    assert "config '/etc/passwd': a deployment run reads its config only from " in message, message
    assert "\n" not in message.strip() and "root:" not in message
    for line in Path("/etc/passwd").read_text().splitlines():
        assert not line.strip() or line not in message
    assert everything_under(secured.serve_dir / "runs") == []


@pytest.mark.slow
def test_a_forged_rank_runs_nothing(secured, tmp_path):
    """The ranks deployment started by hand: it builds its command from the config itself, so a stage that is not a
    training stage, or overrides that a deployment run may not give, fail the flow run before anything starts."""
    marker = tmp_path / "x"
    forged = {"config": str(secured.config), "fingerprint": "0" * 16, "out_dir": str(tmp_path / "out")}
    shell = [f'launch.extra_args=["--no_python","sh","-c","id > {marker}"]']
    attempts = {
        "stage 'subsets': not a training stage of 'quickstart'": {"stage": "subsets", "overrides": []},
        "overrides may not change launch.extra_args": {"stage": "pretrain", "overrides": shell},
        "machine_rank 1: must be 1..0 (launch.num_machines - 1)": {"stage": "pretrain", "overrides": []},
    }
    for expected, parameters in attempts.items():
        params = [f"{key}={json.dumps(value)}" for key, value in {**forged, **parameters, "machine_rank": 1}.items()]
        message = failed_run(secured, [item for param in params for item in ("--param", param)], RANK_DEPLOYMENT)
        assert expected in message and "\n" not in message.strip(), message
    assert not marker.exists() and not (tmp_path / "out").exists()
