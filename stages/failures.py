"""What kind of failure an exception is, by what running the stage again would do (docs/architecture.md, Failures):

- an input mistake (bad config, data, labels, subsets, weights, a diverging loss) fails the same way every time:
  the user has something to fix;
- an environment fault a retry may fix (the network, a lost process, out of memory on a busy machine): anything
  that is not one of the other two;
- an environment fault a retry will not fix (a full disk, a permission denied, a read-only file system): an
  administrator has something to fix, and the message says which path and what to do.

A stage's command line exits with a status per kind (`run_and_print` in stages/training/cli.py), which is how the
pipeline learns the kind of a launched stage's failure (pipeline/failures.py): the statuses are agreed by value here.
"""

from __future__ import annotations

import enum
import errno
import socket

MISTAKE_EXIT = 2  # as for a bad command line: the user has something to fix
LASTING_FAULT_EXIT = 3  # the machine has something to fix first
CRASH_EXIT = 1  # anything else: Python's own status for an uncaught exception
# DataError, SubsetError, config and weights mismatches are ValueErrors; a path that is missing, or that is a
# folder where a file belongs (or the other way round), or an output that is kept rather than overwritten is the
# user's to change.
INPUT_MISTAKES = (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)

# errno -> (what happened, what to do): faults of the machine that fail again until someone changes it.
LASTING_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free space there, or move runs_dir (or the datasets cache)"),
    errno.EDQUOT: ("the disk quota is used up", "free space there, or move runs_dir (or the datasets cache)"),
    errno.EACCES: ("permission denied", "give this user access to it, or point the config at a path it may use"),
    errno.EPERM: ("operation not permitted", "give this user access to it, or point the config at a path it may use"),
    errno.EROFS: ("read-only file system", "point runs_dir (or the datasets cache) at a writable disk"),
}

# Network clients whose errors are not all OSErrors (the hub's client, fsspec's http): an error of theirs is the
# network's, but an HTTP answer that blames the request (404, 401, ...) is the input's.
NETWORK_LIBRARIES = frozenset({"httpx", "httpx2", "httpcore", "requests", "urllib3", "aiohttp"})
RETRYABLE_HTTP_STATUS = frozenset({408, 429})  # and every 5xx


class Failure(enum.Enum):
    """The kinds of failure; the value is what the docs call it."""

    MISTAKE = "input mistake"
    PASSING_FAULT = "environment fault a retry may fix"
    LASTING_FAULT = "environment fault a retry will not fix"


def failure_kind(error: BaseException) -> Failure:
    """The kind of `error` raised inside a stage. A `FileNotFoundError` is the user's (a missing input file), as are
    the other `INPUT_MISTAKES`; any other `OSError` is the environment's: a lasting fault for the errnos of
    `LASTING_ERRNOS`, else a passing one (EIO, ESTALE on NFS, network errors: `ConnectionError`, `TimeoutError`,
    socket and HTTP errors are OSErrors). Anything else that is not a mistake may pass too (out of memory, a killed
    worker)."""
    from stages.training.loop import NonFiniteLossError  # here: a stage's `--help` stays free of torch

    if isinstance(error, (*INPUT_MISTAKES, NonFiniteLossError)):
        return Failure.MISTAKE
    if isinstance(error, OSError) and error.errno in LASTING_ERRNOS:
        return Failure.LASTING_FAULT
    return Failure.PASSING_FAULT


def lasting_fault_line(error: OSError) -> str:
    """One line for a lasting fault: what happened, on which path, and what to do before running again."""
    what, fix = LASTING_ERRNOS[error.errno]
    paths = [str(path) for path in (error.filename, error.filename2) if path is not None]
    where = f"{' -> '.join(paths)}: {what}" if paths else f"{what} (the path was not reported: see the traceback)"
    return f"{where}; {fix}, then run again" + notes_of(error)


def notes_of(error: BaseException) -> str:
    """The context that `add_note` gave `error` (e.g. which data source it was reading), as the end of one line."""
    notes = [note.strip() for note in getattr(error, "__notes__", ()) if note.strip()]
    return f" ({'; '.join(notes)})" if notes else ""


def environment_fault_in(error: BaseException) -> BaseException | None:
    """The environment's fault in `error` or in the errors that led to it (a loader's own error wraps the full disk
    it hit), or None when it is a complaint about the input. Code that turns a library's errors into bad input raises
    this one instead, so that its type says what it is."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if is_environment_fault(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    return None


def is_environment_fault(error: BaseException) -> bool:
    """Out of memory, the network, or an `OSError` that the operating system raised (it has an errno): a full
    disk, a permission denied, an I/O error. Not a missing file (the input's), nor a library's complaint about a
    file's content that it raises as an errno-less `OSError` (PIL's unidentified image, pyarrow's bad footer)."""
    import torch  # here: a stage's `--help` stays free of torch

    if isinstance(error, INPUT_MISTAKES):
        return False
    if isinstance(error, MemoryError | torch.cuda.OutOfMemoryError) or is_network_error(error):
        return True
    return isinstance(error, OSError) and error.errno is not None


def is_network_error(error: BaseException) -> bool:
    """A connection refused, reset or timed out, a name that does not resolve, or a server error (5xx, 429)."""
    if isinstance(error, ConnectionError | TimeoutError | socket.gaierror | socket.herror):
        return True
    if not any(kind.__module__.partition(".")[0] in NETWORK_LIBRARIES for kind in type(error).__mro__):
        return False
    status = getattr(getattr(error, "response", None), "status_code", None)
    return status is None or status >= 500 or status in RETRYABLE_HTTP_STATUS
