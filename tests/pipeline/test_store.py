"""The run store: stage directories, fingerprints, device info, the per-experiment lock."""

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipeline import store
from pipeline.store import ExperimentLocked, experiment_lock, fingerprint, stage_dir

CONFIG = {"epochs": 10.0, "batch_size": 256, "data": {"source": "digits", "image_size": None}, "blur": False}
UPSTREAM = {"pretrain": "0123456789abcdef", "subset": "ff" * 32}


# --- directories ----------------------------------------------------------------------------------------------------


def test_stage_dir_layout(tmp_path):
    assert stage_dir(tmp_path, "quickstart", "finetune[1pct]", "ab12") == tmp_path / "quickstart/finetune-1pct/ab12"
    with pytest.raises(ValueError, match=re.escape("experiment '../x'")):
        stage_dir(tmp_path, "../x", "pretrain", "ab12")
    with pytest.raises(ValueError, match="fingerprint"):
        stage_dir(tmp_path, "quickstart", "pretrain", "a/b")


# --- fingerprints ---------------------------------------------------------------------------------------------------


def test_fingerprint_is_16_hex_digits_and_ignores_key_order():
    reordered = {"blur": False, "data": {"image_size": None, "source": "digits"}, "batch_size": 256, "epochs": 10.0}
    upstream = dict(reversed(list(UPSTREAM.items())))
    first = fingerprint(CONFIG, UPSTREAM, "0.1.0+abc")
    assert len(first) == 16 and int(first, 16) >= 0
    assert fingerprint(reordered, upstream, "0.1.0+abc") == first


@pytest.mark.parametrize(
    "change",
    [
        lambda c, u, v: ({**c, "epochs": 11.0}, u, v),
        lambda c, u, v: ({**c, "data": {**c["data"], "source": "imagefolder:/x"}}, u, v),
        lambda c, u, v: ({**c, "extra": 1}, u, v),
        lambda c, u, v: (c, {**u, "pretrain": "fedcba9876543210"}, v),
        lambda c, u, v: (c, {"pretrain": u["pretrain"]}, v),
        lambda c, u, v: (c, u, "0.1.0+abd"),
    ],
    ids=["config value", "nested config value", "config key", "upstream fingerprint", "upstream removed", "code"],
)
def test_fingerprint_changes_with_config_upstream_and_code(change):
    assert fingerprint(*change(CONFIG, UPSTREAM, "0.1.0+abc")) != fingerprint(CONFIG, UPSTREAM, "0.1.0+abc")


def test_fingerprint_of_a_dataclass_equals_that_of_its_dict():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        source: str = "digits"

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        path: Path = Path("runs/x")
        sizes: tuple[int, ...] = (1, 2)

    as_dict = {"inner": {"source": "digits"}, "path": "runs/x", "sizes": [1, 2]}
    assert fingerprint(Outer(), {}, "v") == fingerprint(as_dict, {}, "v")


def test_fingerprint_refuses_nan_and_unknown_objects():
    with pytest.raises(ValueError):
        fingerprint({"lr": float("nan")}, {}, "v")
    with pytest.raises(TypeError, match="not JSON-serializable"):
        fingerprint({"x": object()}, {}, "v")


# --- device info ----------------------------------------------------------------------------------------------------


def test_device_info_names_the_device():
    info = store.device_info(processes=2, use_cpu=True)
    assert info["processes"] == 2 and info["machines"] == 1 and info["device"] == "cpu" and info["name"]
    json.dumps(info)


# --- the experiment lock --------------------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pipeline.store import experiment_lock
    with experiment_lock(sys.argv[1], "exp"):
        print("locked", flush=True)
        sys.stdin.readline()  # hold the lock until the test writes a line (or closes stdin)
    print("released", flush=True)
    """
)


@pytest.fixture
def holder(tmp_path):
    """A second process that holds the experiment's lock until told to let go."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "locked"
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def test_second_run_stops_with_the_holder_and_the_lock_file(tmp_path, holder):
    with pytest.raises(ExperimentLocked) as caught, experiment_lock(tmp_path, "exp", timeout=0):
        pass
    message = str(caught.value)
    assert f"pid {holder.pid} on " in message
    assert f"lock file {tmp_path / 'exp' / '.lock'}" in message
    assert "experiment 'exp' is already running" in message and "changed nothing" in message


def test_waiting_gives_up_after_the_timeout(tmp_path, holder):
    started = time.monotonic()
    with pytest.raises(ExperimentLocked, match=r"after waiting 0\.3 s"), experiment_lock(tmp_path, "exp", timeout=0.3):
        pass
    assert time.monotonic() - started >= 0.3


def test_waiting_run_gets_the_lock_when_the_holder_releases_it(tmp_path, holder):
    def release() -> None:
        holder.stdin.write("go\n")
        holder.stdin.flush()

    threading.Timer(0.5, release).start()  # we are already waiting when the holder lets go
    with experiment_lock(tmp_path, "exp", timeout=30, poll=0.05) as path:
        assert holder.stdout.readline().strip() == "released"  # it let go before we got in
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert holder.wait(timeout=30) == 0


def test_a_killed_holder_releases_the_lock(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass


def test_other_experiments_are_not_blocked(tmp_path, holder):
    with experiment_lock(tmp_path, "other", timeout=0):
        pass


def test_lock_is_released_and_reusable_in_one_process(tmp_path):
    with experiment_lock(tmp_path, "exp") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] and holder["since"]
    assert path.read_text() == ""  # details cleared on release
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError, match="stage failed"), experiment_lock(tmp_path, "exp"):
        raise RuntimeError("stage failed")
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_alone(tmp_path):
    """A link planted in the runs directory must not make the lock truncate (or create) another file."""
    (tmp_path / "exp").mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (tmp_path / "exp" / ".lock").symlink_to(target)
    refused = r"lock file .*/exp/\.lock is a symbolic link; remove it"
    with pytest.raises(ExperimentLocked, match=refused), experiment_lock(tmp_path, "exp", timeout=0):
        pytest.fail("the lock was taken through a link")
    assert target.read_text() == "keep me\n"


def test_a_dangling_link_as_lock_file_creates_nothing(tmp_path):
    (tmp_path / "exp").mkdir()
    target = tmp_path / "created-by-the-lock"
    (tmp_path / "exp" / ".lock").symlink_to(target)
    with pytest.raises(ExperimentLocked, match="is a symbolic link"), experiment_lock(tmp_path, "exp", timeout=0):
        pass
    assert not target.exists()


@pytest.fixture
def leftover_group():
    """A stage's process group that outlived its run: `sleep 30` in a session of its own. Yields its group id."""
    process = subprocess.Popen(["sleep", "30"], start_new_session=True)
    yield process.pid  # a session leader: its group id is its pid
    if process.poll() is None:
        process.kill()
    process.wait()


def stop_group(group: int) -> None:
    os.killpg(group, signal.SIGKILL)
    os.waitpid(group, 0)  # our child: reap it, or it stays a zombie until the fixture's wait


def write_lock_file(root: Path, **holder) -> None:
    (root / "exp").mkdir(exist_ok=True)
    since = "2026-01-01T00:00:00+00:00"
    (root / "exp" / ".lock").write_text(
        json.dumps({"pid": 999999999, "host": socket.gethostname(), "since": since, **holder})
    )


def test_a_leftover_stage_group_keeps_the_lock_taken_until_it_ends(tmp_path, leftover_group):
    write_lock_file(tmp_path, stage_group=leftover_group)  # its holder is gone, its launched stage is not
    with pytest.raises(ExperimentLocked) as caught, experiment_lock(tmp_path, "exp", timeout=0):
        pass
    message = str(caught.value)
    assert f"processes of an earlier run's stage still run (process group {leftover_group}: " in message
    assert f"`kill -- -{leftover_group}`" in message and "experiment 'exp' is already running" in message
    stop_group(leftover_group)
    with experiment_lock(tmp_path, "exp", timeout=0) as path:
        assert "stage_group" not in json.loads(path.read_text())  # the new holder's details replace the old


def test_a_waiting_run_gets_the_lock_once_the_leftover_group_ends(tmp_path, leftover_group):
    write_lock_file(tmp_path, stage_group=leftover_group)
    threading.Timer(0.5, stop_group, [leftover_group]).start()
    started = time.monotonic()
    with experiment_lock(tmp_path, "exp", timeout=30, poll=0.05):
        assert time.monotonic() - started >= 0.5


@pytest.mark.parametrize(
    "holder",
    [{"stage_group": None}, {"host": "another-machine"}, {"stage_group": "{group}"}],
    ids=["no group", "another host", "not a number"],
)
def test_a_group_that_cannot_be_ours_does_not_keep_the_lock(tmp_path, leftover_group, holder):
    holder = {
        key: value.format(group=leftover_group) if isinstance(value, str) else value for key, value in holder.items()
    }
    write_lock_file(tmp_path, **{"stage_group": leftover_group, **holder})
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass


def test_a_lock_file_that_is_no_json_does_not_keep_the_lock(tmp_path, leftover_group):
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / ".lock").write_text(f"stage_group: {leftover_group}")
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass


LAUNCHER = textwrap.dedent(
    """
    import sys
    from pipeline.store import experiment_lock, record_stage_group
    with experiment_lock(sys.argv[1], "exp"):
        record_stage_group(int(sys.argv[2]))  # as run_launched does for the stage it starts
        print("launched", flush=True)
        sys.stdin.readline()
    """
)


def test_a_killed_run_leaves_its_stage_group_holding_the_lock(tmp_path, leftover_group):
    """`simclrv2 run` dies by SIGKILL while its launched stage runs on: the kernel drops the flock, the lock file
    still names the group, and the next run waits for the group rather than training beside it."""
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path), str(leftover_group)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout.readline().strip() == "launched"
    assert f"its launched stage is process group {leftover_group}" in store.lock_holder(tmp_path / "exp" / ".lock")
    launcher.kill()
    launcher.wait(timeout=30)
    with pytest.raises(ExperimentLocked, match=f"process group {leftover_group}"), experiment_lock(tmp_path, "exp"):
        pass
    stop_group(leftover_group)
    with experiment_lock(tmp_path, "exp", timeout=0):
        pass
