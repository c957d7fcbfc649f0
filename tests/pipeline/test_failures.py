"""What a failed stage means (pipeline/failures.py, stages/failures.py; the table in docs/architecture.md, Failures):
one row of the table per case, each checked for its kind, for whether Prefect retries it, for the exit status of
`simclrv2 run`, and for its one line; then a launched stage under the real `accelerate launch`, and a stage that
fails in the real Prefect flow."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx2
import pytest
import torch
from huggingface_hub.errors import HfHubHTTPError

import pipeline.flow
from pipeline.failures import PipelineFailed, kind_of, one_line, retry_only_crashes
from pipeline.flow import simclrv2_pipeline
from pipeline.launcher import StageFailed, StageTimedOut, run_launched
from stages.data.errors import DataError
from stages.failures import Failure
from stages.training.loop import NonFiniteLossError
from tests.pipeline.conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[2]
MISTAKE, PASSING, LASTING = Failure.MISTAKE, Failure.PASSING_FAULT, Failure.LASTING_FAULT


def elastic_summary(root_cause_status: int) -> list[str]:
    """The end of `accelerate launch`'s output when a process fails (torch.distributed's summary, as printed by
    torch 2.x): every failed process, the root cause last; the launcher itself exits with 1."""
    return [
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
        "stages.pretrain FAILED",
        "Failures:",
        "[1]:",
        "  rank      : 1 (local_rank: 1)",
        "  exitcode  : -15 (pid: 5589)  (SIGTERM)",
        "Root Cause (first observed failure):",
        "[0]:",
        "  rank      : 0 (local_rank: 0)",
        f"  exitcode  : {root_cause_status} (pid: 5588) ",
        "============================================================",
    ]


def http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://huggingface.co/api/datasets/someone/x")
    return HfHubHTTPError(f"{status} from the hub", response=httpx2.Response(status, request=request))


def timed_out() -> StageFailed:
    return StageTimedOut(60.0, ["step 3/9"])  # what the launcher raises for a stage past launch.stage_timeout


ROWS = {
    # input mistakes: exit 2, never retried
    "bad data": (DataError("disk:/data: split 'train' is empty"), MISTAKE),
    "bad config value": (ValueError("pretrain.batch_size must be positive"), MISTAKE),
    "missing input file": (FileNotFoundError(errno.ENOENT, "No such file or directory", "/data/labels.csv"), MISTAKE),
    "a folder where a file belongs": (IsADirectoryError(errno.EISDIR, "Is a directory", "/data/labels"), MISTAKE),
    "an output kept": (FileExistsError("runs/select/next.csv exists and is kept; pass another --out"), MISTAKE),
    "diverging loss": (NonFiniteLossError("loss became nan at step 3"), MISTAKE),
    "launched stage refused its input": (StageFailed("... exited with code 2", 2, []), MISTAKE),
    "launched processes, one refused its input": (StageFailed("... code 1", 1, elastic_summary(2)), MISTAKE),
    # environment faults a retry may fix: retried once, then exit 1
    "connection refused": (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), PASSING),
    "timeout": (TimeoutError("timed out"), PASSING),
    "name does not resolve": (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), PASSING),
    "hub client's connect error": (httpx2.ConnectError("[Errno 111] Connection refused"), PASSING),
    "hub answered 503": (http_error(503), PASSING),
    "out of memory": (MemoryError(), PASSING),
    "GPU out of memory": (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), PASSING),
    "killed loader worker": (RuntimeError("DataLoader worker (pid 4242) is killed by signal: Killed."), PASSING),
    "I/O error": (OSError(errno.EIO, "Input/output error", "/nfs/runs/x/ckpt.pt"), PASSING),
    "stale NFS handle": (OSError(errno.ESTALE, "Stale file handle", "/nfs/runs/x"), PASSING),
    "launched stage killed by a signal": (StageFailed("... exited with code -9", -9, []), PASSING),
    "launched stage stopped with its machines": (StageFailed("... was stopped", None, []), PASSING),
    "launched stage crashed": (StageFailed("... exited with code 1", 1, ["RuntimeError: boom"]), PASSING),
    "launched process killed by a signal": (StageFailed("... code 1", 1, elastic_summary(-9)), PASSING),
    # environment faults a retry will not fix: exit 1, not retried
    "permission denied": (PermissionError(errno.EACCES, "Permission denied", "/data/locked"), LASTING),
    "operation not permitted": (PermissionError(errno.EPERM, "Operation not permitted", "/runs/x"), LASTING),
    "disk full": (OSError(errno.ENOSPC, "No space left on device", "/runs/x/ckpt.pt"), LASTING),
    "disk quota": (OSError(errno.EDQUOT, "Disk quota exceeded", "/home/me/runs/x"), LASTING),
    "read-only file system": (OSError(errno.EROFS, "Read-only file system", "/runs/x"), LASTING),
    "launched stage on a full disk": (StageFailed("... exited with code 3", 3, []), LASTING),
    "launched processes, one on a full disk": (StageFailed("... code 1", 1, elastic_summary(3)), LASTING),
    "launched stage timed out": (timed_out(), LASTING),
}


def failed_state(error: BaseException) -> SimpleNamespace:
    """What Prefect hands `retry_condition_fn`: a failed state whose data is the exception."""
    return SimpleNamespace(data=error)


@pytest.mark.parametrize("error, kind", ROWS.values(), ids=ROWS.keys())
def test_each_row_of_the_table_is_retried_and_exits_as_its_kind_says(error, kind):
    assert kind_of(error) is kind
    assert retry_only_crashes(None, None, failed_state(error)) == (kind is PASSING)
    assert PipelineFailed("pretrain", error).exit_code == (2 if kind is MISTAKE else 1)
    assert kind_of(PipelineFailed("pretrain", error)) is kind


def test_the_retry_condition_reads_an_error_that_prefect_keeps_as_a_result():
    class StoredResult:
        data = None

        def result(self, raise_on_failure: bool):
            raise PermissionError(errno.EACCES, "Permission denied", "/data/locked")

    assert retry_only_crashes(None, None, StoredResult()) is False


def test_a_hub_answer_that_blames_the_request_is_not_a_network_error():
    from stages.failures import is_network_error

    assert not is_network_error(http_error(404)) and is_network_error(http_error(429))


@pytest.mark.parametrize(
    "error, path, fix",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/locked"), "/data/locked", "give this user access"),
        (OSError(errno.ENOSPC, "No space left on device", "/runs/x/ckpt.pt"), "/runs/x/ckpt.pt", "free space"),
        (OSError(errno.EROFS, "Read-only file system", "/runs/x"), "/runs/x", "writable disk"),
    ],
    ids=["permission", "disk full", "read-only"],
)
def test_a_lasting_fault_is_one_line_naming_the_path_and_what_to_do(error, path, fix):
    line = str(PipelineFailed("pretrain", error))
    assert "\n" not in line and line.startswith("pretrain failed: ")
    assert path in line and fix in line and "then run again" in line, line


def test_a_lasting_fault_without_a_path_says_so_and_keeps_its_notes():
    error = OSError(errno.ENOSPC, "No space left on device")
    error.add_note("reading the data source 'imagefolder:/data'")
    line = one_line(error)
    assert "the path was not reported" in line and "(reading the data source 'imagefolder:/data')" in line, line


def test_a_passing_fault_names_its_type_and_its_notes():
    error = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    error.add_note("hub:someone/x: the Hugging Face hub did not answer")
    assert one_line(error) == (
        "ConnectionRefusedError: [Errno 111] Connection refused (hub:someone/x: the Hugging Face hub did not answer)"
    )


def test_a_launched_stage_is_named_by_its_own_error_line():
    tail = ["Traceback ...", "stages.pretrain: error: /data/locked: permission denied; give this user access"]
    assert one_line(StageFailed("... exited with code 3", 3, tail)).startswith("/data/locked: permission denied")


# --- a stage's command line: its exit status says the kind ---------------------------------------------------------

STAGE_SCRIPT = """
import errno, sys
from stages.training.cli import run_and_print

errors = {{
    "permission": PermissionError(errno.EACCES, "Permission denied", "/data/locked"),
    "bad input": ValueError("budgets: 0 is below one label per class"),
    "connection": ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
}}
def run():
    raise errors[{which!r}]
run_and_print("stages.pretrain", run)
"""


@pytest.mark.parametrize(
    "which, status, line",
    [
        ("permission", 3, "stages.pretrain: error: /data/locked: permission denied; give this user access"),
        ("bad input", 2, "stages.pretrain: error: budgets: 0 is below one label per class"),
        ("connection", 1, "ConnectionResetError: [Errno 104] Connection reset by peer"),
    ],
)
def test_a_stage_exits_with_the_status_of_its_kind(which, status, line, tmp_path):
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT.format(which=which))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("SIMCLRV2_DEBUG", None)
    with pytest.raises(StageFailed) as failure:
        run_launched([sys.executable, str(script)], env, lambda _: None)
    assert failure.value.code == status
    assert failure.value.tail[-1].startswith(line), failure.value.tail[-3:]


@pytest.mark.slow
def test_a_lasting_fault_under_accelerate_launch_is_not_retried(tmp_path):
    """`accelerate launch` exits with 1 whatever its processes did: the kind comes from its summary."""
    script = tmp_path / "stage.py"
    script.write_text(STAGE_SCRIPT.format(which="permission"))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--machine_rank", "0", "--main_process_port", "29637", str(script)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    with pytest.raises(StageFailed) as failure:
        run_launched(command, env, lambda _: None, timeout=300)
    assert failure.value.code == 1  # the launcher's own status
    assert kind_of(failure.value) is LASTING, failure.value.tail
    assert not retry_only_crashes(None, None, failed_state(failure.value))
    assert PipelineFailed("pretrain", failure.value).exit_code == 1


# --- the real flow -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "error, attempts",
    [
        (PermissionError(errno.EACCES, "Permission denied", "/data/locked"), 1),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), 2),
    ],
    ids=["permission denied: not retried", "connection reset: retried once"],
)
def test_prefect_retries_a_stage_only_when_a_retry_may_fix_it(error, attempts, tmp_path, monkeypatch):
    calls = []

    def failing_stage(module, *args, **kwargs):
        calls.append(module)
        raise error

    monkeypatch.setattr(pipeline.flow, "run_in_process", failing_stage)
    overrides = [*TINY_RUN, f"runs_dir={tmp_path / 'runs'}", "predict.enabled=false"]
    with pytest.raises(PipelineFailed) as failure:
        simclrv2_pipeline(None, overrides, only="subsets")
    assert calls == ["subsets"] * attempts
    assert failure.value.exit_code == 1 and str(failure.value).startswith("subsets failed: ")
    assert "\n" not in str(failure.value)
