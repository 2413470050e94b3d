"""lsd_nm.blockwise: daisy 2 runs — serial and with worker processes, resumable, errors with block and traceback."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from funlib.geometry import Roi
from process_group import group_members, kill_group, wait_until_gone

from lsd_nm import blockwise
from lsd_nm.blockwise import BlockwiseError, _Bound, block_index, run_blockwise
from lsd_nm.config import ConfigError

TOTAL = Roi((0, 0, 0), (100, 100, 100))
READ = Roi((-10, -10, -10), (70, 70, 70))
WRITE = Roi((0, 0, 0), (50, 50, 50))
# total 100³ (write area [10, 90)³), write blocks 50³ with 10 context, fit "shrink": 2 × 2 × 2 = 8 blocks, the last
# ones in each axis shrunk to 30 (the read ROI must stay inside the total ROI)


DRIVER_STATE: dict[str, int] = {}
"""Set in the test process only: a forked worker sees it, a spawned one (which imports this module anew) does not."""

SPAWNED, FORKED = None, ()
"""``preload`` of :func:`run_blockwise`: None spawns fresh interpreters, a tuple forks workers from a warm process."""


def _setup(log: Path) -> int:
    with open(log / "setups.txt", "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(log / "origins.txt", "a") as f:
        f.write(f"{DRIVER_STATE.get('pid')}\n")
    return os.getpid()


def _record(log: Path, block, pid: int) -> None:
    with open(log / "blocks.txt", "a") as f:
        f.write(f"{block.block_id[1]} {tuple(block.write_roi.offset)} {tuple(block.write_roi.shape)} {pid}\n")


def _fail_block_3(log: Path, block, pid: int) -> None:
    if block.block_id[1] == 3:
        raise ValueError("deliberate failure in this block")
    _record(log, block, pid)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _run(tmp_path: Path, function=_record, **kwargs):
    return run_blockwise(
        "copy", TOTAL, READ, WRITE, _Bound(function, tmp_path), tracking_dir=tmp_path / ".blocks" / "copy",
        worker_setup=_Bound(_setup, tmp_path), progress=False, **kwargs,
    )  # fmt: skip


def test_serial_run_processes_each_block_once_and_a_rerun_skips_all(tmp_path: Path) -> None:
    result = _run(tmp_path, num_workers=1)
    assert (result.total, result.processed, result.skipped) == (8, 8, 0)
    blocks = _lines(tmp_path / "blocks.txt")
    assert len(blocks) == 8 and len({b.split(" ")[0] for b in blocks}) == 8
    assert {b.split(") (")[1].split(")")[0] for b in blocks} >= {"50, 50, 50", "30, 30, 30"}
    assert _lines(tmp_path / "setups.txt") == [str(os.getpid())]  # in process, set up once

    again = _run(tmp_path, num_workers=1)
    assert (again.processed, again.skipped) == (0, 8)
    assert len(_lines(tmp_path / "blocks.txt")) == 8  # nothing processed twice


@pytest.mark.parametrize("preload", [SPAWNED, FORKED], ids=["spawned", "forked"])
def test_two_workers_set_up_once_each(tmp_path: Path, preload: tuple | None) -> None:
    DRIVER_STATE["pid"] = os.getpid()
    result = _run(tmp_path, num_workers=2, preload=preload)
    assert (result.processed, result.skipped) == (8, 0)
    # forked workers hold the driver's state (no re-import); spawned ones start from scratch
    assert set(_lines(tmp_path / "origins.txt")) == ({str(os.getpid())} if preload is FORKED else {"None"})
    setups = _lines(tmp_path / "setups.txt")
    blocks = _lines(tmp_path / "blocks.txt")
    assert 1 <= len(setups) <= 2 and str(os.getpid()) not in setups  # worker processes, one setup per worker
    assert len(blocks) == 8 and {b.split(" ")[-1] for b in blocks} <= set(setups)
    assert (tmp_path / ".blocks" / "logs" / "copy").is_dir()  # worker logs beside the done-block records


def test_worker_command_prefix_runs_the_workers(tmp_path: Path) -> None:
    """``worker_command`` puts a command in front of each worker (here ``env``, standing in for bsub/srun)."""
    result = _run(tmp_path, num_workers=2, worker_command=["env", "LSD_NM_TEST_WORKER=1"])
    assert (result.processed, result.skipped) == (8, 0)
    assert len(_lines(tmp_path / "blocks.txt")) == 8


def test_the_pickled_worker_spec_is_owner_only(tmp_path: Path) -> None:
    """The spec a worker command unpickles is code: readable by its owner only, even under umask 0 and over a
    world-readable spec left by an earlier run."""
    spec = tmp_path / ".blocks" / "copy" / "worker.pkl"
    spec.parent.mkdir(parents=True)
    spec.write_bytes(b"stale")
    spec.chmod(0o666)
    umask = os.umask(0)
    try:
        result = _run(tmp_path, num_workers=2, worker_command=["env"])
    finally:
        os.umask(umask)
    assert (result.processed, result.skipped) == (8, 0)
    assert stat.S_IMODE(spec.stat().st_mode) == 0o600
    assert spec.read_bytes() != b"stale" and not list(spec.parent.glob("*.partial"))


@pytest.mark.parametrize(("num_workers", "preload"), [(1, SPAWNED), (2, SPAWNED), (2, FORKED)],
                         ids=["serial", "spawned", "forked"])  # fmt: skip
def test_a_failing_block_is_retried_then_reported_with_its_traceback(
    tmp_path: Path, num_workers: int, preload: tuple | None
) -> None:
    with pytest.raises(BlockwiseError) as error:
        _run(tmp_path, function=_fail_block_3, num_workers=num_workers, max_retries=1, preload=preload)
    message = str(error.value)
    assert message.startswith("copy: 1 ") and "failed after 1 retries (block" in message and " 3 (write [" in message
    assert "ValueError: deliberate failure in this block" in message and "Traceback" in message
    assert len(_lines(tmp_path / "setups.txt")) <= 2  # the workers went on after the failures (none replaced)
    # the failed block is not recorded done: a re-run (now without the failure) processes it and what was left
    again = _run(tmp_path, num_workers=1)
    blocks = [line.split(" ")[0] for line in _lines(tmp_path / "blocks.txt")]
    assert again.skipped == len(blocks) - again.processed >= 1 and sorted(blocks) == sorted(set(blocks))
    assert len(blocks) == 8


def _damaged_block_3(log: Path, block, pid: int) -> None:
    with open(log / "attempts.txt", "a") as f:
        f.write(f"{block.block_id[1]}\n")
    if block.block_id[1] == 3:
        raise ConfigError("array 'volumes/affs': chunk 0.1.1 is damaged")
    _record(log, block, pid)


@pytest.mark.parametrize("preload", [SPAWNED, FORKED], ids=["spawned", "forked"])
def test_a_block_whose_input_is_at_fault_is_reported_once_in_one_line_and_not_retried(
    tmp_path: Path, preload: tuple | None, capfd: pytest.CaptureFixture
) -> None:
    with pytest.raises(ConfigError) as error:
        _run(tmp_path, function=_damaged_block_3, num_workers=2, max_retries=2, preload=preload)
    assert str(error.value).startswith("copy: block 3 (write [")
    assert str(error.value).endswith("): array 'volumes/affs': chunk 0.1.1 is damaged")
    assert _lines(tmp_path / "attempts.txt").count("3") == 1  # its retries failed at once, without the work
    assert len(_lines(tmp_path / "blocks.txt")) == 7  # the other blocks were done
    printed = capfd.readouterr()
    output = printed.out + printed.err
    assert "Traceback" not in output and output.count("chunk 0.1.1 is damaged") == 1
    # fixed (here: the block no longer fails), a re-run does block 3 alone
    again = _run(tmp_path, num_workers=2, preload=preload)
    assert (again.processed, again.skipped) == (1, 7)


def _freeze_once(log: Path, block, pid: int) -> None:
    """The first worker to reach block 5 stops itself (SIGSTOP: a process that can run nothing, its own timers
    included, as in an NFS or GPU hang); the block's retry in another worker goes through."""
    if block.block_id[1] == 5:
        try:
            os.close(os.open(log / "frozen", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            os.kill(os.getpid(), signal.SIGSTOP)
    _record(log, block, pid)


@pytest.mark.parametrize(
    ("preload", "block_timeout"), [(SPAWNED, 3.0), (FORKED, 3.0), (FORKED, None)], ids=["spawned", "forked", "default"]
)
def test_a_frozen_worker_is_killed_after_the_block_timeout_and_its_block_retried(
    tmp_path: Path, preload: tuple | None, block_timeout: float | None, monkeypatch, capfd: pytest.CaptureFixture
) -> None:
    # without a block_timeout: 10× the slowest finished block, at least MIN_BLOCK_TIMEOUT (made short here)
    monkeypatch.setattr(blockwise, "MIN_BLOCK_TIMEOUT", 3.0)
    started = time.monotonic()
    result = _run(tmp_path, function=_freeze_once, num_workers=2, preload=preload, block_timeout=block_timeout)
    assert (result.processed, result.skipped) == (8, 0)
    assert time.monotonic() - started < 60
    blocks = sorted(line.split(" ")[0] for line in _lines(tmp_path / "blocks.txt"))
    assert blocks == sorted(set(blocks)) and len(blocks) == 8  # every block once: the same result as no freeze
    err = capfd.readouterr().err
    assert err.count("made no progress on block 5 for") == 1 and "killed it, the block is retried" in err
    assert ("(block_timeout, 3 s)" in err) == (block_timeout is not None)


def test_block_index_is_the_c_order_grid_position() -> None:
    total = Roi((10, 0, 0), (100, 100, 90))
    size = (50, 50, 50)  # grid 2 × 2 × 2 (the last x block is shrunk)
    assert block_index(Roi((10, 0, 0), size), total, size) == 0
    assert block_index(Roi((10, 0, 50), (50, 50, 40)), total, size) == 1
    assert block_index(Roi((60, 50, 50), (50, 50, 40)), total, size) == 7


DRIVER = """
import sys, time
from pathlib import Path
from funlib.geometry import Roi
from lsd_nm.blockwise import run_blockwise

FOLDER = Path(sys.argv[1])  # pickled with the function (the workers' argv differs)

def slow_block(block, resources):
    (FOLDER / f"started_{block.block_id[1]}").touch()
    time.sleep(0.5)

# 100 blocks of 0.5 s on 2 workers: still running when the driver is killed
forked = sys.argv[2] == "forked"
run_blockwise("slow", Roi((0,), (1000,)), Roi((0,), (10,)), Roi((0,), (10,)), slow_block, num_workers=2,
              tracking_dir=FOLDER / ".blocks" / "slow", worker_command=sys.argv[3:], progress=False,
              preload=() if forked else None)
"""


@pytest.mark.parametrize(
    ("mode", "worker_command"),
    [("spawned", []), ("forked", []), ("spawned", ["env", "LSD_NM_TEST_WORKER=1"])],
    ids=["local", "forked", "command"],
)
def test_workers_exit_when_the_driver_is_killed(tmp_path: Path, mode: str, worker_command: list[str]) -> None:
    """``kill -9`` of the driver: its workers (and, forked, the warm process they come from) exit within 10 s
    instead of spinning."""
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    process = subprocess.Popen(
        [sys.executable, str(driver), str(tmp_path), mode, *worker_command],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("started_*"))) < 3:  # both workers are processing blocks
            assert process.poll() is None and time.monotonic() < deadline, "the driver stopped before its workers ran"
            time.sleep(0.1)
        workers = group_members(process.pid)
        # the driver and its two workers (and, with a command, its processes; forked: their proxies and the zygote)
        assert len(workers) >= (6 if mode == "forked" else 3), workers
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert wait_until_gone(process.pid, 10) == []
    finally:
        kill_group(process.pid)


def test_an_output_dataset_is_created_in_a_new_out_file_as_zarr_v2(tmp_path: Path) -> None:
    import numpy as np
    import zarr
    from funlib.geometry import Coordinate

    from lsd_nm.blockwise import OutputDataset

    out_file = tmp_path / "new.zarr"  # nothing there yet
    tracking = tmp_path / "blocks"
    tracking.mkdir()
    output = OutputDataset(
        out_file / "volumes" / "fragments", Roi((40, 0, 0), (80, 90, 90)), Coordinate(20, 9, 9), (2, 5, 5),
        np.uint64, "fragments_settings", {"threshold": 0.5},
    )  # fmt: skip
    output.create(tracking)
    array = zarr.open_array(output.path, mode="r")
    assert array.metadata.zarr_format == 2
    assert array.shape == (4, 10, 10) and array.chunks == (2, 5, 5) and array.dtype == np.uint64
    assert array.attrs["offset"] == [40, 0, 0] and array.attrs["resolution"] == [20, 9, 9]
    assert not tracking.exists()
    assert output.reusable(overwrite=False)


def test_a_worker_command_that_cannot_start_is_one_line_before_any_block(tmp_path: Path) -> None:
    from lsd_nm.blockwise import check_worker_command

    said: list[str] = []
    with pytest.raises(ConfigError, match=r"^worker_command 'no-such-bsub -K': 'no-such-bsub' is not a command"):
        check_worker_command(["no-such-bsub", "-K"], say=said.append)
    assert said == []  # nothing started
    with pytest.raises(ConfigError, match=r"^worker_command 'false': a trial worker exited with code 1 before any block"):
        check_worker_command(["false"], say=said.append)
    script = tmp_path / "submit"  # a scheduler's submit command that refuses the job
    script.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(ConfigError, match=r"exited with code 1 before any block \(sbatch: error: invalid partition"):
        check_worker_command([str(script)], say=said.append)
    check_worker_command(["env", "LSD_NM_TEST_WORKER=1"], say=said.append)  # starts, imports the worker, exits 0
    assert len(said) == 3 and said[-1].startswith("worker_command: starting one trial worker (env LSD_NM_TEST_WORKER=1")
    check_worker_command([], say=said.append)  # local workers: nothing to try
    assert len(said) == 3


def test_more_local_workers_than_cores_are_capped_with_one_line(tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    result = _run(tmp_path, num_workers=64, preload=FORKED)
    assert (result.processed, result.skipped) == (8, 0)
    assert 1 <= len(_lines(tmp_path / "setups.txt")) <= 2
    assert "copy: num_workers 64 is more than this machine's 2 cores: running 2" in capfd.readouterr().err.splitlines()


@pytest.mark.parametrize("fit", ["shrink", "valid", "overhang"])
def test_the_block_count_written_for_the_status_is_daisys(tmp_path: Path, fit: str) -> None:
    import json

    from lsd_nm.blockwise import count_blocks

    total = Roi((0, 0, 0), (100, 130, 90))
    result = run_blockwise("copy", total, READ, WRITE, _Bound(_record, tmp_path), num_workers=1,
                           tracking_dir=tmp_path / "t", progress=False, fit=fit)  # fmt: skip
    assert count_blocks(total, READ, WRITE, fit) == result.total == len(_lines(tmp_path / "blocks.txt"))
    assert json.loads((tmp_path / "t" / "blocks.json").read_text()) == {"total": result.total}
