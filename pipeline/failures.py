"""What a failed stage means: a mistake in the input (data, config, labels, subsets, weights, a diverging loss), which
fails the same way every time, or a crash that a retry may fix (a lost process, a busy GPU out of memory, a killed
worker). Mistakes are never retried and end `simclrv2 run` with exit status 2 and one line; crashes are retried once
(stages resume from their last checkpoint) and end it with status 1.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.launcher import StageFailed

MISTAKE_EXIT = 2  # as for a bad command line: the user has something to fix
CRASH_EXIT = 1
INPUT_MISTAKES = (ValueError, FileNotFoundError)  # DataError, SubsetError, ConfigError are ValueErrors
STAGE_ERROR_LINE = re.compile(r"^(stages\.\w+|simclrv2 \w+): error: ")


class PipelineFailed(RuntimeError):
    """A stage of the flow failed; `str()` is one line: the stage, what went wrong, and where the whole log is."""

    def __init__(self, stage: str, cause: BaseException, log_hint: str = "") -> None:
        self.stage, self.cause, self.exit_code = stage, cause, MISTAKE_EXIT if is_mistake(cause) else CRASH_EXIT
        super().__init__(f"{stage} failed: {one_line(cause)}{log_hint}")


def is_mistake(error: BaseException) -> bool:
    """Whether `error` fails the same way on every attempt (bad input, or a loss that diverges)."""
    if isinstance(error, StageFailed):
        return error.code == MISTAKE_EXIT  # a launched stage exits with 2 on bad input and on a diverging loss
    if isinstance(error, PipelineFailed):
        return is_mistake(error.cause)
    from stages.training.loop import NonFiniteLossError  # here: `simclrv2 --help` stays free of torch

    return isinstance(error, (*INPUT_MISTAKES, NonFiniteLossError))


def one_line(error: BaseException) -> str:
    """The message that names the culprit: a launched stage's own error line, or the exception's first line."""
    if isinstance(error, StageFailed):
        for line in reversed(error.tail):
            if STAGE_ERROR_LINE.match(line.strip()):
                return STAGE_ERROR_LINE.sub("", line.strip())
        last = next((line.strip() for line in reversed(error.tail) if line.strip()), "")
        return f"{str(error).splitlines()[0]}" + (f"; its last line: {last}" if last else "")
    first = (str(error).strip() or type(error).__name__).splitlines()[0]
    return first if isinstance(error, PipelineFailed) or is_mistake(error) else f"{type(error).__name__}: {first}"


def retry_only_crashes(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's `retry_condition_fn`: retry a failed stage unless its error is a mistake."""
    error = state.data if isinstance(state.data, BaseException) else None
    if error is None:
        try:
            state.result(raise_on_failure=True)
        except BaseException as raised:
            error = raised
    return error is None or not is_mistake(error)
