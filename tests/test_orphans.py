"""lsd_nm.orphans: is a process alive (a zombie is not), a watch that calls back once it is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from lsd_nm.orphans import is_alive, watch


def test_a_killed_child_is_not_alive_before_it_is_reaped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert is_alive(child.pid) and is_alive(os.getpid())
        os.kill(child.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while is_alive(child.pid) and time.monotonic() < deadline:  # a zombie until waited for
            time.sleep(0.05)
        assert not is_alive(child.pid)
    finally:
        child.kill()
        child.wait()
    assert not is_alive(child.pid)


def test_watch_calls_back_once_the_process_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = threading.Event()
    watch(child.pid, gone.set, interval=0.05)
    assert not gone.wait(0.3)
    child.kill()
    assert gone.wait(5)
    child.wait()
