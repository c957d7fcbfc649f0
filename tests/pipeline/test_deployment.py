"""A real local Prefect server, `simclrv2 serve`, and a run triggered through `prefect deployment run`.

A deployment run takes its config only from configs/ or a directory its server lists in SIMCLRV2_CONFIG_DIRS, and its
overrides may not move its runs directory (pipeline/deployment_inputs.py): the tiny run is a config file in such a
directory, passed as the quickstart deployment's `config` parameter."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG, apply_override
from pipeline.config.loading import read_config_file
from pipeline.deployment_inputs import CONFIG_DIRS_ENV
from tests.pipeline.conftest import TINY_RUN

BIN = Path(sys.executable).parent


def write_config(directory: Path, overrides: list[str], name: str = "tiny.yaml") -> Path:
    """The quickstart with `overrides` written into it, as `directory/name`: what an operator puts on a worker."""
    raw = read_config_file(DEFAULT_CONFIG)
    for item in overrides:
        apply_override(raw, item)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """A background process in its own group, output to `log`."""
    output = log.open("w")
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for_health(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"prefect server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"prefect server not healthy after {timeout} s:\n{log.read_text()[-3000:]}")


def run_deployment(
    params: list[str],
    env: dict[str, str],
    deadline: float,
    deployment: str = "simclrv2-pipeline/quickstart",
    timeout: float = 900,
) -> subprocess.CompletedProcess:
    """`prefect deployment run --watch`, retried until `simclrv2 serve` has registered the deployment."""
    command = [str(BIN / "prefect"), "deployment", "run", deployment, "--watch", *params]
    while True:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        output = " ".join((result.stdout + result.stderr).split())  # as one line, however the console wrapped it
        if f"Deployment {deployment!r} not found" not in output:
            return result
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(2)


@pytest.mark.slow
def test_a_deployment_run_through_the_prefect_cli_completes(tmp_path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api}
    config = write_config(tmp_path / "operator-configs", [*TINY_RUN, f"runs_dir={tmp_path / 'runs'}"])
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, server_log
    )
    serve = None
    try:
        wait_for_health(api, server, server_log)
        serve = start([str(BIN / "simclrv2"), "serve"], {**env, CONFIG_DIRS_ENV: str(config.parent)}, serve_log)
        result = run_deployment(["--param", f"config={config}"], env, time.monotonic() + 180)
        output = result.stdout + result.stderr
        assert result.returncode == 0, output + serve_log.read_text()[-5000:]
        assert "Completed" in output, output
        reports = list((tmp_path / "runs" / "quickstart" / "report").glob("*/report.md"))
        assert len(reports) == 1 and "SimCLRv2 fine-tuned" in reports[0].read_text()
    finally:
        if serve is not None:
            stop(serve)
        stop(server)
