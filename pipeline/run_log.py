"""The log of one `simclrv2 run`: every record, tracebacks included, goes to `runs/<experiment>/logs/<time>.log`; the
terminal shows the progress lines without tracebacks (all of it with `--verbose`), and nothing at all once the run's
last line is printed (Prefect's "Stopping temporary server" would otherwise come after it)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s"
CONSOLE_LOGGERS = ("", "prefect", "uvicorn")  # where Prefect attaches its console handlers


class TerminalFilter(logging.Filter):
    """On terminal handlers: drops records that carry a traceback (unless verbose), and everything once closed."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose, self.closed = verbose, False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.closed:
            return False
        return self.verbose or record.exc_info is None


class RunFormatter(logging.Formatter):
    """Names the Prefect task or flow run a record comes from, e.g. `prefect.task_runs [finetune[10pct]]`."""

    def format(self, record: logging.LogRecord) -> str:
        run = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.run = f" [{run}]" if run else ""
        return super().format(record)


def log_path(runs_dir: Path, experiment: str) -> Path:
    return Path(runs_dir) / experiment / "logs" / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.log"


@contextlib.contextmanager
def run_log(path: Path, verbose: bool) -> Iterator[TerminalFilter]:
    """Log to `path` while the run lasts; the terminal filter it yields is closed (silent) when the block ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(RunFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(to_file)
    terminal = TerminalFilter(verbose)
    handlers = [
        handler
        for name in CONSOLE_LOGGERS
        for handler in logging.getLogger(name).handlers
        if type(handler).__module__.startswith("prefect.")  # Prefect's own: never a test's or the user's handler
    ]
    for handler in handlers:
        handler.addFilter(terminal)
    try:
        yield terminal
    finally:
        terminal.closed = True  # handlers keep the filter: what Prefect logs at exit stays off the terminal
        root.removeHandler(to_file)
        to_file.close()
