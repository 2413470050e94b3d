"""Blockwise processing with daisy 2, shared by every ``03_predict`` step (fragments, agglomeration, …).

One call, :func:`run_blockwise`, runs a per-block function over a ROI:

* the per-worker setup (open arrays and the region graph, later: load a model) is apart from the per-block work:
  ``worker_setup()`` runs once per worker and its result is passed to every ``process_block(block, resources)``;
* ``num_workers == 1`` runs in this process, serially (daisy's ``multiprocessing=False``), for debugging;
  otherwise daisy spawns ``num_workers`` worker processes, or — with a ``worker_command`` prefix such as
  ``["bsub", "-n", "5"]`` — each worker runs ``worker_command + [python, -m, lsd_nm.blockwise_worker, SPEC]``;
* finished blocks are recorded on disk (daisy's block tracking in ``tracking_dir``), so a re-run skips them;
* the scheduler listens on 127.0.0.1 only; a block that raises is reported by daisy with its id and traceback and
  retried (at most ``max_retries`` times; the worker goes on with other blocks, a worker that dies is replaced);
  if it still fails, :class:`BlockwiseError` names the task and the failed blocks and carries the worker's traceback;
* worker output goes to ``<tracking_dir>/../logs/<task>/worker_<n>.{out,err}``; daisy's progress bar shows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import daisy
from funlib.geometry import Roi

HOST = "127.0.0.1"
"""The scheduler's default address: loopback (local workers only; remote workers need the machine's address)."""


class BlockwiseError(RuntimeError):
    """Blocks of a task failed for good (after daisy's retries); the message carries the worker traceback."""


@dataclass(frozen=True)
class BlockwiseResult:
    """What one :func:`run_blockwise` call did."""

    total: int
    """Blocks of the task."""
    processed: int
    """Blocks processed in this run."""
    skipped: int
    """Blocks skipped because an earlier run recorded them done."""

    def __str__(self) -> str:
        return f"{self.processed} blocks processed, {self.skipped} skipped (done before)"


SCHEDULER_RETRIES = 5
"""How often in a row a worker retries talking to the scheduler (backoff 0.1 s, doubling) before it exits."""


def _loop_over_blocks(worker_setup: Callable[[], Any] | None, process_block: Callable[[Any, Any], None]) -> None:
    """The body of one worker process: set up once, then process blocks until the scheduler has none left.

    A block's own exception has been reported to daisy (block id + traceback; daisy retries the block) and the
    worker goes on. Any other error is the connection to the scheduler: retried a few times with backoff, then the
    worker exits non-zero. (daisy's client raises ``RuntimeError("Broken pipe …")`` on every call once the driver
    is gone; retrying at once forever would spin an orphaned worker at 100 % CPU.)
    """
    resources = worker_setup() if worker_setup is not None else None
    client = daisy.Client()
    failures = 0
    while True:
        block_error = None
        try:
            with client.acquire_block() as block:
                if block is None:
                    return
                try:
                    process_block(block, resources)
                except Exception as e:
                    block_error = e
                    raise
            failures = 0
        except Exception as e:  # noqa: BLE001 - the block's error or the scheduler connection's, told apart below
            if e is block_error:  # daisy has reported it and retries the block elsewhere
                failures = 0
                continue
            failures += 1
            if failures > SCHEDULER_RETRIES:
                raise SystemExit(
                    f"blockwise worker {os.getpid()}: lost the scheduler at {client.host}:{client.port} "
                    f"({type(e).__name__}: {e}; {SCHEDULER_RETRIES} retries); exiting"
                ) from None
            time.sleep(0.1 * 2 ** (failures - 1))


def _command_worker(command: list[str], spec: Path) -> Callable[[], None]:
    """A daisy 0-argument worker function that runs the worker as a command (it inherits ``DAISY_CONTEXT``)."""

    # the worker unpickles functions by module name: give it this process's import path (as daisy's own workers get)
    path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())

    def worker() -> None:
        env = {**os.environ, "PYTHONPATH": path}
        args = [*command, sys.executable, "-m", "lsd_nm.blockwise_worker", str(spec)]
        done = subprocess.run(args, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"worker command exited with code {done.returncode}: {' '.join(command)}")

    return worker


def run_blockwise(
    task_name: str,
    total_roi: Roi,
    read_roi: Roi,
    write_roi: Roi,
    process_block: Callable[[daisy.Block, Any], None],
    num_workers: int,
    tracking_dir: Path,
    worker_setup: Callable[[], Any] | None = None,
    worker_command: Sequence[str] = (),
    fit: str = "shrink",
    read_write_conflict: bool = False,
    max_retries: int = 2,
    timeout: float = 600.0,
    progress: bool = True,
    host: str = HOST,
) -> BlockwiseResult:
    """Run ``process_block`` over every block of ``total_roi``, skipping blocks an earlier run finished.

    Args:
        task_name: the daisy task id (also names the log folder).
        total_roi: the ROI (nm) the blocks' read ROIs tile.
        read_roi: the read ROI of the first block (nm), e.g. ``Roi(-context, block + 2·context)``.
        write_roi: the write ROI of the first block (nm), e.g. ``Roi(0, block)``.
        process_block: ``process_block(block, resources)``, called once per block; ``resources`` is what
            ``worker_setup`` returned in this worker (None without it). Must be picklable (module-level
            functions, :func:`functools.partial` of them) when ``num_workers > 1``.
        num_workers: 1 runs serially in this process; more start that many worker processes.
        tracking_dir: where daisy records done blocks (created); delete it to process every block again.
        worker_setup: called once per worker before its first block (open arrays, databases, load a model).
        worker_command: a command prefix each worker runs under (e.g. ``["bsub", "-n", "5", "-K"]``); empty:
            plain local processes.
        fit: daisy's block fit at the ROI's end (``shrink``, ``valid`` or ``overhang``).
        read_write_conflict: whether blocks whose read and write ROIs overlap must not run at the same time.
        max_retries: how often a failing block is retried before it counts as failed.
        timeout: seconds after which a block still running is reclaimed (its worker killed) and retried.
        progress: show daisy's progress bar and execution summary.
        host: the address the scheduler listens on and the workers connect to (on a cluster: this machine's
            hostname or IP as the compute nodes reach it).

    Returns:
        The numbers of blocks in total, processed now and skipped.

    Raises:
        BlockwiseError: when blocks failed for good; the message names them and holds the first traceback.
    """
    tracking_dir = Path(tracking_dir)
    tracking_dir.mkdir(parents=True, exist_ok=True)
    daisy.logging.set_log_basedir(str(tracking_dir.parent / "logs"))
    serial = num_workers == 1 and not worker_command

    if serial:
        cache: dict[str, Any] = {}

        def function(block: daisy.Block) -> None:
            if "resources" not in cache:
                cache["resources"] = worker_setup() if worker_setup is not None else None
            for attempt in range(max_retries + 1):
                try:
                    process_block(block, cache["resources"])
                    return
                except Exception as e:  # noqa: BLE001 - retried, then reported with the traceback
                    if attempt == max_retries:
                        error = "".join(traceback.format_exception(e))
                        raise BlockwiseError(
                            f"{task_name}: 1 block failed after {max_retries} retries (block {block.block_id[1]} "
                            f"(write {block.write_roi})); the run stops here (num_workers 1); error:\n{error}"
                        ) from None

    elif worker_command:
        import cloudpickle

        # the spec is code (it is unpickled by the workers): owner-only from its creation on, replaced atomically
        spec = tracking_dir / "worker.pkl"
        partial = spec.with_name(spec.name + ".partial")
        partial.unlink(missing_ok=True)
        with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(cloudpickle.dumps((worker_setup, process_block)))
        os.replace(partial, spec)
        function = _command_worker(list(worker_command), spec)
    else:

        def function() -> None:
            _loop_over_blocks(worker_setup, process_block)

    task = daisy.Task(
        task_name,
        total_roi=total_roi,
        read_roi=read_roi,
        write_roi=write_roi,
        process_function=function,
        read_write_conflict=read_write_conflict,
        fit=fit,
        max_workers=num_workers,
        max_retries=max_retries,
        timeout=timeout,
        tracking_path=str(tracking_dir),
    )
    try:
        states = daisy.run_blockwise(
            task,
            multiprocessing=not serial,
            host=host,
            return_states=True,
            progress=progress,
            summary=progress,
        )
    except BlockwiseError:
        raise
    except RuntimeError as e:  # daisy abandons a task whose workers keep dying
        raise BlockwiseError(f"{task_name}: {e}") from None
    state = states[task_name]
    if state.completed_count != state.total_block_count:
        failed = task.failed_blocks()
        where = ", ".join(f"{b.block_id[1]} (write {b.write_roi})" for b in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        error = state.first_worker_error or state.last_worker_error or "(no traceback reported)"
        raise BlockwiseError(
            f"{task_name}: {state.total_block_count - state.completed_count} of {state.total_block_count} blocks "
            f"failed after {max_retries} retries (blocks {where}{more}); logs in {tracking_dir.parent / 'logs'}; "
            f"first error:\n{error}"
        )
    return BlockwiseResult(
        total=state.total_block_count,
        processed=state.completed_count - state.skipped_count,
        skipped=state.skipped_count,
    )


class _Bound:
    """``function(job, *args)`` with ``job`` bound; picklable (unlike a closure over a module function, it pickles
    the function by reference)."""

    def __init__(self, function, job) -> None:
        self.function, self.job = function, job

    def __call__(self, *args):
        return self.function(self.job, *args)


def run_job(
    task_name: str,
    total_roi: Roi,
    read_roi: Roi,
    write_roi: Roi,
    job: Any,
    process_block: Callable[[Any, daisy.Block, Any], None],
    worker_setup: Callable[[Any], Any],
    config: Any,
    tracking_dir: Path,
    progress: bool = True,
    **kwargs: Any,
) -> BlockwiseResult:
    """:func:`run_blockwise` for a ``03_predict`` step: ``process_block(job, block, resources)`` and
    ``worker_setup(job)`` take the step's picklable ``job`` first; workers and worker command come from the run
    config (``num_workers``, ``worker_command``).

    Args:
        task_name, total_roi, read_roi, write_roi, tracking_dir, progress: as for :func:`run_blockwise`.
        job: what every worker needs (picklable).
        process_block: the per-block function of the step.
        worker_setup: the per-worker setup of the step.
        config: the run config (:class:`~lsd_nm.run_config.RunConfig`).
        kwargs: further :func:`run_blockwise` arguments (e.g. ``fit``).
    """
    return run_blockwise(
        task_name,
        total_roi,
        read_roi,
        write_roi,
        process_block=_Bound(process_block, job),
        num_workers=config.num_workers,
        tracking_dir=tracking_dir,
        worker_setup=_Bound(worker_setup, job),
        worker_command=config.worker_command,
        progress=progress,
        host=config.scheduler_host,
        **kwargs,
    )


def block_index(write_roi: Roi, total_write_roi: Roi, block_size: Sequence[int]) -> int:
    """The index of a block in the grid of write ROIs (C order), independent of daisy's block ids.

    Args:
        write_roi: the block's write ROI (nm).
        total_write_roi: the ROI the write ROIs tile (nm); its offset is the grid's origin.
        block_size: the write size (nm).
    """
    grid = [-(-s // b) for s, b in zip(total_write_roi.shape, block_size)]
    position = [(w - o) // b for w, o, b in zip(write_roi.offset, total_write_roi.offset, block_size)]
    index = 0
    for p, n in zip(position, grid):
        index = index * n + p
    return index

