"""The stage launcher: merged output streamed line by line, failures with their tail, and no orphaned workers.

The group-kill tests start a python child that itself starts a grandchild (as `accelerate launch` starts its
workers), then check that the grandchild is gone after a timeout or a cancellation."""

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

import pipeline.launcher as launcher
from pipeline.config import LaunchConfig, load_config
from pipeline.launcher import StageFailed, StageTimedOut, launch_command, launch_env, run_launched
from pipeline.manifest import read_manifest
from pipeline.plan import build_plan
from stages.data.sources import DataConfig
from stages.pretrain import EncoderConfig, PretrainConfig
from stages.training.cli import parse_stage_args

# A child that starts a grandchild (output to /dev/null, so that a surviving grandchild cannot hold the pipe open and
# hang the test), writes "<child pid> <grandchild pid>" to a file once the grandchild is set up, says "ready", sleeps.
FAMILY = textwrap.dedent(
    """
    import os, signal, subprocess, sys, time
    pids, ignore = sys.argv[1], sys.argv[2]
    ready = pids + ".grandchild"
    grandchild = (
        "import signal, sys, time\\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if ignore == "worker" else "")
        + "open(sys.argv[1], 'w').close()\\n"
        + "time.sleep(60)\\n"
    )
    if ignore == "leader":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen(
        [sys.executable, "-c", grandchild, ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while not os.path.exists(ready):
        time.sleep(0.01)
    with open(pids + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {worker.pid}")
    os.rename(pids + ".tmp", pids)
    print("ready", flush=True)
    time.sleep(30)  # a launcher that never stops it makes the test fail in 30 s, not hang
    """
)


def family(tmp_path: Path, ignore_sigterm: str = "none") -> tuple[list[str], Path]:
    pids = tmp_path / "pids"
    return [sys.executable, "-c", FAMILY, str(pids), ignore_sigterm], pids


def state(pid: int) -> str | None:
    """The process's state letter from /proc ("S", "R", "Z", ...), or None if there is no such process."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("State:"):
                return line.split()[1]
    except (FileNotFoundError, ProcessLookupError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return "?"


def gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` no longer runs (or is a zombie: dead, waiting for a parent that may never reap it)."""
    deadline = time.monotonic() + within
    while True:
        if state(pid) in (None, "Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@contextlib.contextmanager
def reaping(pids: Path):
    """Whatever the test's outcome, SIGKILL the processes this test started, so a failure leaves no sleeper."""
    try:
        yield
    finally:
        if pids.exists():
            for pid in map(int, pids.read_text().split()):
                if state(pid) not in (None, "Z", "X"):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


def read_pids(pids: Path) -> list[int]:
    return [int(pid) for pid in pids.read_text().split()]


# --- output and exit status -----------------------------------------------------------------------------------------


def test_every_line_of_stdout_and_stderr_reaches_on_line_in_order():
    script = textwrap.dedent(
        """
        import sys
        for i in range(6):
            stream = sys.stderr if i % 2 else sys.stdout
            print(f"line {i} on {stream.name}", file=stream, flush=True)
        sys.stdout.write("no newline at the end")
        """
    )
    lines = []
    run_launched([sys.executable, "-c", script], os.environ, lines.append)
    assert lines == [
        "line 0 on <stdout>",
        "line 1 on <stderr>",
        "line 2 on <stdout>",
        "line 3 on <stderr>",
        "line 4 on <stdout>",
        "line 5 on <stderr>",
        "no newline at the end",
    ]


def test_the_environment_is_the_one_given():
    lines = []
    env = {**os.environ, "SIMCLRV2_LAUNCHER_TEST": "from the caller"}
    run_launched([sys.executable, "-c", "import os; print(os.environ['SIMCLRV2_LAUNCHER_TEST'])"], env, lines.append)
    assert lines == ["from the caller"]


def test_a_non_zero_exit_raises_stage_failed_with_the_code_and_the_tail_of_the_output():
    script = "import sys\nfor i in range(300): print(f'out {i:03d}', file=sys.stderr if i % 2 else sys.stdout)\n"
    script += "sys.exit(3)"
    lines = []
    with pytest.raises(StageFailed) as failure:
        run_launched([sys.executable, "-c", script], os.environ, lines.append)
    message = str(failure.value)
    assert "exited with code 3" in message
    assert len(lines) == 300  # every line was streamed before the failure
    assert "out 299" in message and "out 298" in message  # the tail: stdout and stderr both
    assert f"out {300 - launcher.MESSAGE_LINES:03d}" in message
    assert f"out {299 - launcher.MESSAGE_LINES:03d}" not in message and "out 000" not in message  # only the tail
    assert failure.value.tail == [f"out {i:03d}" for i in range(300 - launcher.TAIL_LINES, 300)]  # kept, to read


# --- the whole process group dies ----------------------------------------------------------------------------------


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    command, pids = family(tmp_path)
    lines = []
    with reaping(pids):
        start = time.monotonic()
        with pytest.raises(StageTimedOut, match=r"ran past launch\.stage_timeout"):
            run_launched(command, os.environ, lines.append, timeout=2)
        assert time.monotonic() - start < 2 + launcher.KILL_GRACE_SECONDS
        assert lines == ["ready"]
        child, grandchild = read_pids(pids)
        assert gone(child)
        assert gone(grandchild), f"grandchild {grandchild} survived the timeout (state {state(grandchild)})"


def test_an_exception_from_on_line_kills_the_whole_process_group_and_is_raised(tmp_path):
    class Cancelled(Exception):  # what a cancelled Prefect task looks like from inside the callback
        pass

    def on_line(line: str) -> None:
        if line == "ready":
            raise Cancelled("the task run was cancelled")

    command, pids = family(tmp_path)
    with reaping(pids):
        start = time.monotonic()
        with pytest.raises(Cancelled, match="cancelled"):
            run_launched(command, os.environ, on_line)
        # SIGTERM reached the whole group at once: no wait for the SIGKILL that follows the grace period
        assert time.monotonic() - start < launcher.KILL_GRACE_SECONDS / 2
        child, grandchild = read_pids(pids)
        assert gone(child)
        assert gone(grandchild), f"grandchild {grandchild} survived the cancellation (state {state(grandchild)})"


@pytest.mark.parametrize("ignore_sigterm", ["leader", "worker"])
def test_processes_that_ignore_sigterm_are_killed_after_the_grace_period(tmp_path, monkeypatch, ignore_sigterm):
    """The launcher, or one of its workers, does not stop on SIGTERM: SIGKILL follows after the grace period."""
    monkeypatch.setattr(launcher, "KILL_GRACE_SECONDS", 0.3)

    def on_line(line: str) -> None:
        raise KeyboardInterrupt

    command, pids = family(tmp_path, ignore_sigterm)
    with reaping(pids):
        with pytest.raises(KeyboardInterrupt):
            run_launched(command, os.environ, on_line)
        child, grandchild = read_pids(pids)
        assert gone(child, within=3)
        assert gone(grandchild, within=3), f"grandchild {grandchild} survived (state {state(grandchild)})"


# --- the accelerate launch command ---------------------------------------------------------------------------------

CONFIG = PretrainConfig(
    data=DataConfig(source="imagefolder:/data/my images"),
    model=EncoderConfig(depth=18, width=0.5, sk=False),
    epochs=0.4,
    temperature=0.2,
    blur=True,
)


def split_at_module(command: list[str]) -> tuple[list[str], str, list[str]]:
    """(launcher part, module, the module's own arguments) of a launch command."""
    at = command.index("-m", 3)  # past `python -m accelerate.commands.launch`
    return command[:at], command[at + 1], command[at + 2 :]


def flag_value(args: list[str], flag: str) -> str:
    assert args.count(flag) == 1, f"{flag} given {args.count(flag)} times in {args}"
    return args[args.index(flag) + 1]


def check_stage_args(stage_args: list[str], out: Path, inputs: dict[str, Path]) -> None:
    config, parsed_inputs, parsed_out = parse_stage_args(
        "stages.pretrain", PretrainConfig, "", stage_args, inputs=tuple(inputs)
    )
    assert config == CONFIG and config != PretrainConfig()
    assert parsed_inputs == inputs
    assert parsed_out == out


def test_launch_command_for_two_processes_on_one_machine(tmp_path):
    launch = LaunchConfig(num_processes=2, main_process_port=29611)
    out, inputs = tmp_path / "out dir", {"teacher": tmp_path / "a teacher", "subset": tmp_path / "10pct.json"}
    command = launch_command("pretrain", CONFIG, inputs, out, launch)
    head, module, stage_args = split_at_module(command)
    assert head[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    assert flag_value(head, "--num_processes") == "2"
    assert flag_value(head, "--num_machines") == "1"
    assert flag_value(head, "--machine_rank") == "0"
    assert flag_value(head, "--main_process_port") == "29611"
    assert not {"--main_process_ip", "--rdzv_backend", "--same_network", "--gpu_ids"} & set(head)
    assert module == "stages.pretrain"
    assert stage_args[:2] == ["--out", str(out)]
    assert flag_value(stage_args, "--teacher") == str(tmp_path / "a teacher")
    assert json.loads(flag_value(stage_args, "--config-json")) == dataclasses.asdict(CONFIG)  # the whole config
    check_stage_args(stage_args, out, inputs)


def test_launch_command_for_two_machines(tmp_path):
    launch = LaunchConfig(
        num_processes=4,
        num_machines=2,
        machine_rank=1,
        main_process_ip="10.0.0.7",
        rank_deployment="simclrv2-stage-rank/ranks",
        rdzv_backend="c10d",
        gpu_ids="0,1",
        extra_args=["--mixed_precision", "bf16"],
    )
    out = tmp_path / "pretrain"
    command = launch_command("pretrain", CONFIG, {}, out, launch)
    head, module, stage_args = split_at_module(command)
    assert "--multi_gpu" in head
    assert flag_value(head, "--num_processes") == "4"
    assert flag_value(head, "--num_machines") == "2"
    assert flag_value(head, "--machine_rank") == "1"
    assert flag_value(head, "--main_process_ip") == "10.0.0.7"
    assert flag_value(head, "--rdzv_backend") == "c10d"
    assert "--same_network" in head
    assert flag_value(head, "--gpu_ids") == "0,1"
    assert flag_value(head, "--mixed_precision") == "bf16"  # extra_args go to accelerate, not to the stage
    assert module == "stages.pretrain"
    check_stage_args(stage_args, out, {})


def test_accelerate_reads_the_launch_command_as_meant(tmp_path):
    """accelerate's own parser: the launcher flags are its own, the rest is the module and its arguments."""
    from accelerate.commands.launch import launch_command_parser

    launch = LaunchConfig(
        num_processes=4,
        num_machines=2,
        main_process_ip="10.0.0.7",
        main_process_port=29612,
        rank_deployment="simclrv2-stage-rank/ranks",
    )
    out = tmp_path / "pretrain"
    command = launch_command("pretrain", CONFIG, {"teacher": tmp_path / "t"}, out, launch)
    args = launch_command_parser().parse_args(command[3:])
    assert args.multi_gpu and args.module
    assert (args.num_processes, args.num_machines, args.machine_rank) == (4, 2, 0)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.7", 29612)
    assert args.training_script == "stages.pretrain"
    check_stage_args(args.training_script_args, out, {"teacher": tmp_path / "t"})


def test_launch_env_sets_accelerate_use_cpu_only_with_use_cpu(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("SIMCLRV2_LAUNCHER_TEST", "kept")
    on_cpu = launch_env(LaunchConfig(num_processes=2, use_cpu=True))
    assert on_cpu["ACCELERATE_USE_CPU"] == "1"
    assert on_cpu["SIMCLRV2_LAUNCHER_TEST"] == "kept"
    on_gpu = launch_env(LaunchConfig(num_processes=2))
    assert "ACCELERATE_USE_CPU" not in on_gpu
    assert on_gpu["SIMCLRV2_LAUNCHER_TEST"] == "kept"


# --- a real two-process stage through the flow ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_flow_launches_pretrain_on_two_cpu_processes(tiny_run, monkeypatch):
    from pipeline.flow import simclrv2_pipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two processes on two cores
    overrides = [
        *tiny_run,
        "launch.num_processes=2",
        "launch.use_cpu=true",
        f"launch.main_process_port={free_port()}",
    ]
    simclrv2_pipeline(None, overrides, only="subsets,pretrain")
    plan = build_plan(load_config(None, overrides))
    manifest = read_manifest(plan["pretrain"].out_dir)
    assert manifest["devices"]["processes"] == 2
    assert manifest["devices"]["device"] == "cpu"
    assert manifest["metrics"]["processes"] == 2
    curve = (plan["pretrain"].out_dir / "loss_curve.csv").read_text().splitlines()
    assert len(curve) >= 2  # a header and at least one step
    assert read_manifest(plan["subsets"].out_dir)["devices"]["processes"] == 1  # cheap stages stay in-process


# --- a launched command dies with its launcher; an in-process stage has a timeout too --------------------------------

PARENT = """
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-m", "pipeline.die_with_parent", str(os.getpid()), "sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_command_started_through_die_with_parent_ends_when_its_parent_is_killed():
    with subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True) as parent:
        child = int(parent.stdout.readline())
        assert not gone(child, within=0.5)  # sleeping, under its parent
        parent.kill()  # SIGKILL: the parent runs no code of its own on the way out
        parent.wait()
        assert gone(child), "the command outlived the process that started it"


def test_die_with_parent_refuses_to_start_when_its_parent_is_not_the_one_named():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.die_with_parent", "1", "echo", "started"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "started" not in result.stdout
    assert "the launching process 1 is gone; not starting echo" in result.stderr


def slow_stage(config, inputs, out_dir):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # a training loop that never ends in time
        time.sleep(0.01)
    return {}


@pytest.mark.parametrize("where", ["main thread", "worker thread"])  # Prefect runs tasks in worker threads
def test_an_in_process_stage_past_its_timeout_is_interrupted_with_stage_timed_out(monkeypatch, where):
    monkeypatch.setattr(launcher.importlib, "import_module", lambda name: SimpleNamespace(run=slow_stage))
    start = time.monotonic()

    def run() -> None:
        launcher.run_in_process("pretrain", None, {}, Path("unused"), timeout=1.0)

    with pytest.raises(StageTimedOut, match=r"ran past launch\.stage_timeout \(1 s\)"):
        if where == "main thread":
            run()
        else:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(run).result()
    assert time.monotonic() - start < 10
