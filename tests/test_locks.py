"""Locks on a run's out_file and a training folder: one holder at a time, a killed holder's lock taken over, an
unwritable place one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from lsd_nm.config import ConfigError
from lsd_nm.locks import hold_lock


def test_a_live_holder_is_named_and_a_killed_ones_lock_is_taken_over(tmp_path, capfd):
    lock = tmp_path / "out.zarr.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(f"{sleeper.pid} {socket.gethostname()} 2026-12-07 10:00:00")
        with pytest.raises(ConfigError) as e:
            with hold_lock(lock, "'out.zarr' is being written"):
                pass
        assert str(e.value) == (
            f"'out.zarr' is being written by process {sleeper.pid} on {socket.gethostname()} since 2026-12-07 10:00:00 "
            f"(lock {lock}); wait for it to finish, or delete the lock if that run is gone"
        )
    finally:
        sleeper.kill()
        sleeper.wait()
    with hold_lock(lock, "'out.zarr' is being written"):
        assert lock.read_text().split(" ")[0] == str(os.getpid())
    assert not lock.exists()
    assert f"note: taking over the lock {lock} of process {sleeper.pid}" in capfd.readouterr().err


def test_a_lock_where_nothing_can_be_written_is_one_line(tmp_path):
    (tmp_path / "not_a_folder").write_text("")
    lock = tmp_path / "not_a_folder" / "out.zarr.lock"
    with pytest.raises(ConfigError, match=rf"^cannot write the lock {lock} \(a file is in the way of its folder\): its folder"):
        with hold_lock(lock, "busy"):
            pass


def test_a_forked_child_leaving_the_block_does_not_release_its_parents_lock(tmp_path):
    lock = tmp_path / "train.lock"

    def locked() -> int:
        with hold_lock(lock, "busy"):
            pid = os.fork()
            if pid == 0:
                return 0  # the child unwinds the with-block too (as a forked data worker may)
            os.waitpid(pid, 0)
            assert lock.exists()
            return pid

    if locked() == 0:
        os._exit(0)
    assert not lock.exists()
