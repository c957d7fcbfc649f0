"""One writer per experiment, even when `simclrv2 run` is killed with SIGKILL (the run alone, not its process group)
while a stage runs on two processes under `accelerate launch`.

The stage inherits the experiment lock's descriptor and is told to stop when the run dies (PR_SET_PDEATHSIG); the
test holds it stopped (SIGSTOP) for a moment, so that "refused while it lives" is seen every time, not by luck of
timing. Then it lets it go: it stops its workers and exits, and only once every one of its processes is gone does a
second run get the lock, and resumes pretraining from the last checkpoint."""

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pipeline.processes import group_running
from pipeline.store import LOCK_FILE, ExperimentLocked, experiment_lock
from tests.pipeline.test_crash_rerun import CRASH_RUN, EXPERIMENT, RUN_TIMEOUT, SCRIPT, checkpoints
from tests.pipeline.test_deployment import free_port

RELEASE_LIMIT = 60  # seconds the stopped stage gets to end its workers and exit


def run_command(runs: Path, port: int) -> list[str]:
    settings = [*CRASH_RUN, f"runs_dir={runs}", "pretrain.epochs=20", "launch.num_processes=2", "launch.use_cpu=true"]
    settings.append(f"launch.main_process_port={port}")  # its own port: no other distributed job can join
    return [str(SCRIPT), "run", "--only", "pretrain", *(f"--set={item}" for item in settings)]


def alive(pids: list[int]) -> list[int]:
    """The pids that still run (a zombie has ended)."""
    running = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                running.append(pid)
    return running


def wait_for(condition, what: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT
    while not condition():
        assert process.poll() is None, f"the run ended before {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"no {what} after {RUN_TIMEOUT} s:\n{log.read_text()[-4000:]}"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="PR_SET_PDEATHSIG and /proc: Linux")
def test_a_killed_run_keeps_its_lock_until_every_process_of_its_stage_is_gone_then_a_rerun_resumes(tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "first.log"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_ROOT_LEVEL": "INFO"}
    command = run_command(runs, free_port())
    with log.open("w") as out:
        first = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lock = runs / EXPERIMENT / LOCK_FILE
    stage = None
    try:
        wait_for(lambda: checkpoints(runs, "pretrain"), "pretraining checkpoint", first, log)
        stage = json.loads(lock.read_text())["stage_group"]  # the launched stage's group, written by the run
        launcher = psutil.Process(stage)
        workers = [child.pid for child in launcher.children(recursive=True)]
        assert len(workers) >= 2, "accelerate launch should run two workers"
        os.killpg(stage, signal.SIGSTOP)  # the launcher alone: torch's workers have sessions of their own
        first.kill()  # SIGKILL to `simclrv2 run` alone
        first.wait()

        second = subprocess.run([*command, "--wait=0"], capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"experiment {EXPERIMENT!r} is already running" in second.stderr
        assert alive([stage, *workers]), "the stage should still run while the second run is refused"

        os.killpg(stage, signal.SIGCONT)  # it now takes the SIGTERM its parent's death sent, and stops its workers
        deadline = time.monotonic() + RELEASE_LIMIT
        while True:
            try:
                with experiment_lock(runs, EXPERIMENT, timeout=0):
                    assert not alive([stage, *workers]), "the lock was free while a process of the stage still ran"
                break
            except ExperimentLocked:
                assert time.monotonic() < deadline, f"the stage still held the lock after {RELEASE_LIMIT} s"
                time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)  # what is left of the first run: its temporary Prefect server
        if stage is not None and group_running(stage):
            os.killpg(stage, signal.SIGCONT)
            os.killpg(stage, signal.SIGKILL)

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT * 2)
    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-4000:]
    assert "resumed from" in output, output[-4000:]  # pretraining went on from its last checkpoint
