"""What a failed stage means for the run (the table in docs/architecture.md, Failures): an input mistake is never
retried and ends `simclrv2 run` with exit status 2 and one line; an environment fault that a retry may fix (a lost
process, out of memory on a busy GPU, the network) is retried once (stages resume from their last checkpoint) and
ends it with status 1; one that a retry will not fix (a full disk, a permission denied, a read-only file system) and
a stage that ran past `launch.stage_timeout` are not retried and end it with status 1, the line naming the path and
what to do. The kind of an exception is decided in stages/failures.py, which a launched stage reports as its exit
status; this module adds the pipeline's own failures and the decisions: retry, exit status, message.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.launcher import StageFailed
from stages.failures import (
    CRASH_EXIT,
    LASTING_FAULT_EXIT,
    MISTAKE_EXIT,
    Failure,
    failure_kind,
    lasting_fault_line,
    notes_of,
)

__all__ = ["CRASH_EXIT", "MISTAKE_EXIT", "PipelineFailed", "is_mistake", "kind_of", "one_line", "retry_only_crashes"]

STAGE_ERROR_LINE = re.compile(r"^(stages\.\w+|simclrv2 \w+): error: ")
ELASTIC_EXIT_LINE = re.compile(r"^\s*exitcode\s*:\s*(-?\d+)")  # torch.distributed's summary of a failed process
EXIT_STATUS_KINDS = {MISTAKE_EXIT: Failure.MISTAKE, LASTING_FAULT_EXIT: Failure.LASTING_FAULT}


class PipelineFailed(RuntimeError):
    """A stage of the flow failed; `str()` is one line: the stage, what went wrong, and where the whole log is."""

    def __init__(self, stage: str, cause: BaseException, log_hint: str = "") -> None:
        self.stage, self.cause, self.exit_code = stage, cause, MISTAKE_EXIT if is_mistake(cause) else CRASH_EXIT
        super().__init__(f"{stage} failed: {one_line(cause)}{log_hint}")


def kind_of(error: BaseException) -> Failure:
    """The kind of a stage's failure, raised in this process or reported by a launched stage's exit status (2: a
    mistake, 3: a lasting fault, anything else: a passing one, a process killed by a signal or stopped with the
    stage's other machines included). A stage killed for running past `launch.stage_timeout` would run past it
    again: a lasting fault."""
    if isinstance(error, PipelineFailed):
        return kind_of(error.cause)
    if getattr(error, "timed_out", False):
        return Failure.LASTING_FAULT
    if isinstance(error, StageFailed):
        return EXIT_STATUS_KINDS.get(stage_exit_status(error), Failure.PASSING_FAULT)  # None, negative: killed
    return failure_kind(error)


def stage_exit_status(error: StageFailed) -> int | None:
    """The exit status of the stage's own process: `accelerate launch` exits with 1 whatever its processes did, and
    ends its output with their statuses, the first failure (the root cause) last."""
    if error.code != CRASH_EXIT:
        return error.code
    for line in reversed(error.tail):
        reported = ELASTIC_EXIT_LINE.match(line)
        if reported:
            return int(reported.group(1))
    return error.code


def is_mistake(error: BaseException) -> bool:
    """Whether `error` fails the same way on every attempt because of the input (bad input, a diverging loss)."""
    return kind_of(error) is Failure.MISTAKE


def one_line(error: BaseException) -> str:
    """The message that names the culprit: a launched stage's own error line, or the exception's first line (with
    its type unless it is a mistake, and with the path and what to do for a lasting fault)."""
    if isinstance(error, StageFailed):
        for line in reversed(error.tail):
            if STAGE_ERROR_LINE.match(line.strip()):
                return STAGE_ERROR_LINE.sub("", line.strip())
        last = next((line.strip() for line in reversed(error.tail) if line.strip()), "")
        return f"{str(error).splitlines()[0]}" + (f"; its last line: {last}" if last else "")
    first = (str(error).strip() or type(error).__name__).splitlines()[0]
    if isinstance(error, PipelineFailed) or is_mistake(error):
        return first
    if isinstance(error, OSError) and kind_of(error) is Failure.LASTING_FAULT:
        return f"{type(error).__name__}: {lasting_fault_line(error)}"
    return f"{type(error).__name__}: {first}{notes_of(error)}"


def retry_only_crashes(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry a failed stage only when a retry may fix it (a passing fault)."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:
            error = raised
    return error is None or kind_of(error) is Failure.PASSING_FAULT
