"""Running one stage: in this process for a single process, under `accelerate launch` for several.

In-process runs call `stages.<name>.run(config, inputs, out_dir)` directly. Launched runs start `accelerate launch`
in its own process group with the whole config as `--config-json` (`stages.training.cli.config_as_json`), so that the
stage gets exactly the config the flow has, hand every output line to a callback (the Prefect run log), and kill the
whole group on failure, timeout, cancellation or interrupt, so no orphaned worker keeps a GPU.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.config import LaunchConfig
from pipeline.processes import group_running
from pipeline.store import held_lock_descriptors, record_stage_group
from stages.training.cli import config_as_json

log = logging.getLogger(__name__)
KILL_GRACE_SECONDS = 10
TAIL_LINES = 200  # several processes' tracebacks and accelerate's summary can bury the stage's own error line
MESSAGE_LINES = 40  # of them in the exception's message


class StageFailed(RuntimeError):
    """A launched stage exited with an error; the message holds the tail of its output. `code`: its exit status
    (2: the stage refused its input, as its own command line does; None: it did not get to exit by itself)."""

    timed_out = False

    def __init__(self, message: str, code: int | None = None, tail: list[str] | None = None) -> None:
        super().__init__(message)
        self.code, self.tail = code, tail or []


class StageTimedOut(StageFailed):
    """A stage ran past `launch.stage_timeout` and was stopped. Not retried: it would most likely hang again."""

    timed_out = True

    def __init__(self, seconds: float, tail: list[str] | None = None) -> None:
        super().__init__(
            f"ran past launch.stage_timeout ({seconds:g} s) and was stopped; if it was still making progress, raise "
            "launch.stage_timeout, else its log says where it hung",
            None,
            tail,
        )


def run_in_process(
    module: str, config: Any, inputs: Mapping[str, Path], out_dir: Path, timeout: float | None = None
) -> dict:
    """`stages.<module>.run(...)` in this process; returns its metrics. Past `timeout` seconds the stage is
    interrupted (an exception raised into its thread at its next Python line: a training step, a batch)."""
    from prefect.utilities.timeout import timeout as prefect_timeout  # here: `simclrv2 --help` stays light

    stage = importlib.import_module(f"stages.{module}")
    try:
        with prefect_timeout(timeout, timeout_exc_type=_InProcessTimeout):
            return stage.run(config, dict(inputs), out_dir)
    except _InProcessTimeout:
        raise StageTimedOut(timeout or 0.0) from None


class _InProcessTimeout(TimeoutError):
    """Raised into an in-process stage at its timeout; told apart from a TimeoutError of the stage's own."""


def launch_command(
    module: str, config: Any, inputs: Mapping[str, Path], out_dir: Path, launch: LaunchConfig
) -> list[str]:
    """The `accelerate launch` command line that runs `stages.<module>` with `config` on `launch`'s processes."""
    return launch_command_from_json(module, config_as_json(config), inputs, out_dir, launch)


def launch_command_from_json(
    module: str, config_json: str, inputs: Mapping[str, Path], out_dir: Path, launch: LaunchConfig
) -> list[str]:
    """`launch_command` for a config already written as JSON (how the other machines of a stage receive it)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    command += ["--num_processes", str(launch.num_processes), "--num_machines", str(launch.num_machines)]
    command += ["--machine_rank", str(launch.machine_rank), "--main_process_port", str(launch.main_process_port)]
    if launch.main_process_ip:
        command += ["--main_process_ip", launch.main_process_ip]
    if launch.num_machines > 1:
        command += ["--rdzv_backend", launch.rdzv_backend]
        if launch.same_network:
            command.append("--same_network")
    if launch.gpu_ids:
        command += ["--gpu_ids", launch.gpu_ids]
    command += [*launch.extra_args, "-m", f"stages.{module}", "--out", str(out_dir)]
    for name, path in inputs.items():
        command += [f"--{name}", str(path)]
    return [*command, "--config-json", config_json]


def launch_env(launch: LaunchConfig) -> dict[str, str]:
    env = dict(os.environ)
    if launch.use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"  # with --multi_gpu: several CPU processes over gloo
    return env


def run_launched(
    command: list[str],
    env: Mapping[str, str],
    on_line: Callable[[str], None],
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run `command` in a new process group, streaming its merged output line by line to `on_line`.

    Any way out other than a clean exit (error, timeout, `stop` set by another thread, KeyboardInterrupt, a cancelled
    Prefect task) kills the whole group: first SIGTERM, then SIGKILL after a grace period. Should this process die
    without a way out (SIGKILL), the command gets SIGTERM (pipeline/die_with_parent.py), and until the group is gone
    the experiment's lock stays taken: the command inherits its descriptor and the lock file names the group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.die_with_parent", str(os.getpid()), *command],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,  # its own process group, so that killpg reaches every worker
        pass_fds=held_lock_descriptors(),
    )
    record_stage_group(process.pid)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    timed_out = threading.Event()

    def kill_on_timeout() -> None:
        timed_out.set()
        _kill_group(process)

    timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
    stopper = threading.Thread(target=_kill_group_when_set, args=(process, stop), daemon=True) if stop else None
    try:
        for thread in (timer, stopper):
            if thread:
                thread.start()
        for line in process.stdout:
            tail.append(line.rstrip())
            on_line(line.rstrip())
        code = process.wait()
    except BaseException:
        _kill_group(process)
        raise
    finally:
        if timer:
            timer.cancel()
        _wait_for_group(process.pid)  # a worker the launcher left behind must not outlive the lock
        record_stage_group(None)
    if timed_out.is_set():
        raise StageTimedOut(timeout or 0.0, list(tail))
    if code != 0:
        why = "was stopped" if stop and stop.is_set() else f"exited with code {code}"
        exit_code = None if stop and stop.is_set() else code
        last = "\n".join(list(tail)[-MESSAGE_LINES:])
        raise StageFailed(f"{' '.join(command[:8])} ... {why}; last lines:\n{last}", exit_code, list(tail))


def _wait_for_group(group: int) -> None:
    """Wait for the rest of a group whose leader has exited; SIGKILL it after the grace period."""
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    while group_running(group) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        if group_running(group):
            os.killpg(group, signal.SIGKILL)


def _kill_group_when_set(process: subprocess.Popen, stop: threading.Event) -> None:
    """Kill `process`'s group once `stop` is set; return when the process ends by itself first."""
    while not stop.wait(0.2):
        if process.poll() is not None:
            return
    _kill_group(process)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the group; SIGKILL to whatever of it still runs after the grace period, even when the launcher
    itself stopped at once (a worker that ignores SIGTERM must not outlive it)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + KILL_GRACE_SECONDS
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(KILL_GRACE_SECONDS)
    while group_running(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def run_stage(
    module: str,
    config: Any,
    inputs: Mapping[str, Path],
    out_dir: Path,
    launch: LaunchConfig,
    on_line: Callable[[str], None] = print,
) -> dict:
    """Run a stage in-process (one process) or launched (several), for at most `launch.stage_timeout` seconds;
    either way return its metrics."""
    if launch.num_processes == 1:
        return run_in_process(module, config, inputs, out_dir, launch.stage_timeout)
    command = launch_command(module, config, inputs, out_dir, launch)
    run_launched(command, launch_env(launch), on_line, launch.stage_timeout)
    return json.loads((Path(out_dir) / "metrics.json").read_text())
