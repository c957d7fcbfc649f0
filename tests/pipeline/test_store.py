"""The run store: stage directories, fingerprints, device info, the per-experiment lock."""

import dataclasses
import json
import os
import re
import signal
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
