"""`run_launched(..., stop=event)`: another thread (the watch over a stage's other machines) can end a launched
stage; its whole process group dies, and the caller learns that it was stopped."""

import os
import sys
import threading
import time

import pytest

from pipeline.launcher import StageFailed, run_launched
from tests.pipeline.test_launcher import family, gone, read_pids, reaping


def test_setting_stop_kills_the_whole_process_group_and_raises_stage_failed(tmp_path):
    command, pids = family(tmp_path)
    stop = threading.Event()

    def on_line(line: str) -> None:
        if line == "ready":
            threading.Timer(0.2, stop.set).start()  # set from another thread, as the watch does

    with reaping(pids):
        start = time.monotonic()
        with pytest.raises(StageFailed, match="was stopped"):
            run_launched(command, os.environ, on_line, stop=stop)
        assert time.monotonic() - start < 10
        child, grandchild = read_pids(pids)
        assert gone(child)
        assert gone(grandchild), f"grandchild {grandchild} survived the stop"


def test_a_stop_that_is_never_set_changes_nothing():
    lines = []
    run_launched([sys.executable, "-c", "print('done')"], os.environ, lines.append, stop=threading.Event())
    assert lines == ["done"]
