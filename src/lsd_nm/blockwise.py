"""Blockwise processing with daisy 2: the one layer every ``03_predict`` step stands on.

* **Geometry** (:class:`Geometry`, :func:`block_geometry`, :func:`processing_roi`): the blocks of a step — write blocks
  of ``block_size`` tiling the processed region on the volume's block grid, each read with ``context`` around it.
* **Outputs** (:class:`OutputDataset`, :func:`prepare_output`): a step's output dataset records the settings it was
  made with; a re-run with the same settings resumes into it, other settings are refused unless ``--overwrite``,
  which recreates it (and forgets its done blocks) — as funlib.persistence's ``prepare_ds`` does by mode.
* **Running** (:func:`run_job`, :func:`run_blockwise`): done-block tracking, workers and their per-worker setup.

:func:`run_blockwise` runs a per-block function over a ROI:

* the per-worker setup (open arrays and the region graph, load a model) is apart from the per-block work:
  ``worker_setup()`` runs once per worker and its result is passed to every ``process_block(block, resources)``;
* ``num_workers == 1`` runs in this process, serially (daisy's ``multiprocessing=False``), for debugging;
  otherwise daisy spawns ``num_workers`` worker processes (for the post-processing steps on Linux, each forks its
  worker from a warm copy of the driver: :mod:`lsd_nm.forked_workers`), or — with a ``worker_command`` prefix such
  as ``["bsub", "-n", "5"]`` — each worker runs ``worker_command + [python, -m, lsd_nm.blockwise_worker, SPEC]``;
* finished blocks are recorded on disk (daisy's block tracking in ``tracking_dir``), so a re-run skips them;
* the scheduler listens on ``host`` (default 127.0.0.1: local workers only; the run config's ``scheduler_host`` for
  workers on other nodes); a block that raises is reported by daisy with its id and traceback and
  retried (at most ``max_retries`` times; the worker goes on with other blocks, a worker that dies is replaced);
  if it still fails, :class:`BlockwiseError` names the task and the failed blocks and carries the worker's traceback;
* worker output goes to ``<tracking_dir>/../logs/<task>/worker_<n>.{out,err}``; daisy's progress bar shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import daisy
import numpy as np
from funlib.geometry import Coordinate, Roi

from . import forked_workers, orphans
from .config import ConfigError
from .data import COMPRESSOR, Volume
from .locks import hold_lock
from .run_config import RunConfig

NO_DAISY_TIMEOUT = 7 * 24 * 3600.0
"""daisy's block timeout when the run config sets none (daisy's default, 600 s, would kill a slow but healthy block)."""
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


ERRORS = "errors"
"""The folder in a task's tracking dir where workers leave the one-line error of a block that failed because of its
input (a :class:`ConfigError`: a damaged chunk, …): the driver prints it once, and a retry of that block fails at
once instead of repeating the work and its traceback."""
BEATS = "workers"
"""The folder in a task's tracking dir where each worker keeps the block it is on and since when (``<host>-<pid>.json``),
and the slowest block it has finished: what the driver's watchdog reads to find a frozen worker."""
FIRST_BLOCK_TIMEOUT = 3600.0
"""Seconds a first block may take before its worker counts as frozen, while no block has finished to measure."""
MIN_BLOCK_TIMEOUT = 120.0
"""The least default block timeout (seconds): 10× the slowest finished block, but at least this."""


BLOCKS = "blocks.json"
"""A file in a task's tracking dir: ``{"total": <blocks of the task>}``, written as it starts (daisy's own done array
spans a larger grid), for :mod:`lsd_nm.status`."""


def count_blocks(total_roi: Roi, read_roi: Roi, write_roi: Roi, fit: str = "shrink") -> int:
    """How many blocks daisy makes of ``total_roi`` (write blocks tiling it less the context; ``valid`` drops the
    ones that would not fit whole, ``shrink`` and ``overhang`` keep them)."""
    context = (write_roi.offset - read_roi.offset) + (read_roi.end - write_roi.end)
    count = 1
    for size, around, block in zip(total_roi.shape, context, write_roi.shape):
        span = max(0, size - around)
        count *= span // block if fit == "valid" else -(-span // block)
    return count


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # half gone, or being replaced
        return None


def read_beats(tracking_dir: Path) -> list[dict]:
    """The heartbeats of a task's workers (:data:`BEATS`): ``{"host", "pid", "block", "started", "slowest"}`` each
    (``block`` None: between blocks)."""
    found = (_read_json(p) for p in sorted((Path(tracking_dir) / BEATS).glob("*.json")))
    return [b for b in found if b is not None]


def read_block_errors(tracking_dir: Path) -> list[dict]:
    """The block errors of the input a task's workers left (:data:`ERRORS`): ``{"block", "write_roi", "error"}``,
    one per failed block, by block."""
    found = (_read_json(p) for p in (Path(tracking_dir) / ERRORS).glob("*.txt"))
    return sorted((e for e in found if e is not None), key=lambda e: e["block"])


def _write_json(path: Path, value: Any) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)


class _Guarded:
    """``process_block`` as workers run it: a heartbeat for the driver's watchdog around each block, and a block
    whose input is at fault (:class:`ConfigError`) reported in one line and failed without a traceback — and failed
    at once when it comes back for a retry. Picklable; each worker process keeps its own heartbeat file."""

    def __init__(self, process_block: Callable[[Any, Any], None], tracking_dir: Path) -> None:
        self.process_block, self.tracking_dir = process_block, Path(tracking_dir)
        self.pid, self.slowest = None, None

    def _beat(self, block: int | None, started: float | None = None) -> None:
        beat = {"host": socket.gethostname(), "pid": os.getpid(), "block": block, "started": started,
                "slowest": self.slowest}  # fmt: skip
        try:
            _write_json(self.tracking_dir / BEATS / f"{beat['host']}-{beat['pid']}.json", beat)
        except OSError:  # the watchdog is a help, never a reason for a block to fail
            pass

    def __call__(self, block: daisy.Block, resources: Any) -> None:
        if self.pid != os.getpid():  # a new worker process (a copy of this object)
            self.pid, self.slowest = os.getpid(), None
        block_id = int(block.block_id[1])
        known = self.tracking_dir / ERRORS / f"{block_id}.txt"
        if known.exists():  # its error is deterministic and was reported: failing again costs nothing
            block.status = daisy.BlockStatus.FAILED
            return
        started = time.time()
        self._beat(block_id, started)
        try:
            self.process_block(block, resources)
        except ConfigError as e:
            known.parent.mkdir(parents=True, exist_ok=True)
            _write_json(known, {"block": block_id, "write_roi": str(block.write_roi), "error": str(e)})
            block.status = daisy.BlockStatus.FAILED
            return
        finally:
            self.slowest = max(self.slowest or 0.0, time.time() - started)
            self._beat(None)


class _Watchdog:
    """The driver's side of :class:`_Guarded`: a thread that prints each block error of the input once, as it
    happens, and kills a local worker that has been on one block longer than the block timeout (its block is then
    retried by daisy: a frozen process — stopped, or hung in the kernel — cannot run daisy's own timeout)."""

    def __init__(self, task_name: str, tracking_dir: Path, block_timeout: float | None, can_kill: bool) -> None:
        self.task_name, self.tracking_dir = task_name, Path(tracking_dir)
        self.block_timeout, self.can_kill = block_timeout, can_kill
        self.reported: set[str] = set()
        self.warned: set[str] = set()
        self.slowest: float | None = None
        self.stop = threading.Event()
        for folder in (ERRORS, BEATS):  # what an earlier run left is no news (its inputs may have been fixed since)
            shutil.rmtree(self.tracking_dir / folder, ignore_errors=True)
            (self.tracking_dir / folder).mkdir(parents=True)
        self.thread = threading.Thread(target=self._watch, name=f"{task_name}-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()
        self.check()

    def limit(self) -> float:
        """The seconds a block may take now."""
        if self.block_timeout is not None:
            return self.block_timeout
        return FIRST_BLOCK_TIMEOUT if self.slowest is None else max(MIN_BLOCK_TIMEOUT, 10 * self.slowest)

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a file half gone or unreadable: look again next time
                pass

    def check(self) -> None:
        """Report new block errors and kill frozen workers (also called once after the run)."""
        for error in read_block_errors(self.tracking_dir):
            if error["error"] not in self.reported:
                self.reported.add(error["error"])
                print(f"{self.task_name}: block {error['block']} (write {error['write_roi']}): {error['error']} "
                      "(the run goes on without this block)", file=sys.stderr, flush=True)  # fmt: skip
        beats = read_beats(self.tracking_dir)
        slowest = [b["slowest"] for b in beats if b.get("slowest") is not None]
        if slowest:
            self.slowest = max([self.slowest or 0.0, *slowest])
        now, limit = time.time(), self.limit()
        for beat in beats:
            if beat["block"] is None or now - beat["started"] <= limit:
                continue
            key = f"{beat['host']}-{beat['pid']}"
            setting = "block_timeout" if self.block_timeout is not None else "block_timeout default: 10× the slowest block"
            said = (f"{self.task_name}: worker {beat['pid']} on {beat['host']} made no progress on block {beat['block']} "
                    f"for {now - beat['started']:.0f} s ({setting}, {limit:.0f} s)")  # fmt: skip
            if self.can_kill and beat["host"] == socket.gethostname():
                try:
                    os.kill(beat["pid"], signal.SIGKILL)  # SIGKILL also ends a stopped process
                except ProcessLookupError:
                    pass
                (self.tracking_dir / BEATS / f"{key}.json").unlink(missing_ok=True)
                print(f"{said}; killed it, the block is retried", file=sys.stderr, flush=True)
            elif key not in self.warned:
                self.warned.add(key)
                print(f"{said}; it runs on another machine or under a worker_command and is not killed from here",
                      file=sys.stderr, flush=True)  # fmt: skip

def _worker_environment() -> dict[str, str]:
    """What a command worker runs with: this process's environment and import path (it unpickles functions by
    module name, as daisy's own workers do)."""
    path = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    return {**os.environ, "PYTHONPATH": path}


def check_worker_command(command: Sequence[str], say: Callable[[str], None] = print) -> None:
    """Start one worker through ``command`` — a trial that imports the worker and exits — before any block, so that a
    command that cannot start is one line instead of every worker's traceback.

    Raises:
        ConfigError: the command is not on this machine's PATH, or the trial exits non-zero (its last line quoted).
    """
    command = list(command)
    if not command:
        return
    shown = " ".join(command)
    if shutil.which(command[0]) is None:
        raise ConfigError(f"worker_command '{shown}': '{command[0]}' is not a command on this machine (not on PATH)")
    say(f"worker_command: starting one trial worker ({shown} …)")
    trial = [*command, sys.executable, "-c", "import lsd_nm.blockwise_worker"]
    done = subprocess.run(trial, env=_worker_environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise ConfigError(f"worker_command '{shown}': a trial worker exited with code {done.returncode} before any "
                          f"block ({lines[-1].strip() if lines else 'no output'})")  # fmt: skip


def _command_worker(command: list[str], spec: Path) -> Callable[[], None]:
    """A daisy 0-argument worker function that runs the worker as a command (it inherits ``DAISY_CONTEXT``)."""

    def worker() -> None:
        env = _worker_environment()  # here: daisy sets DAISY_CONTEXT in the process that runs this
        args = [*command, sys.executable, "-m", "lsd_nm.blockwise_worker", str(spec)]
        driver = os.getppid()  # daisy's driver started this process
        child = subprocess.Popen(args, env=env)

        def driver_gone() -> None:  # kill -9 of the driver: end the command (srun cancels its job step) and this process
            with contextlib.suppress(OSError):
                child.terminate()
            os._exit(1)

        orphans.watch(driver, driver_gone, interval=0.2)
        returncode = child.wait()
        if returncode != 0:
            raise RuntimeError(f"worker command exited with code {returncode}: {' '.join(command)}")

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
    block_timeout: float | None = None,
    progress: bool = True,
    host: str = HOST,
    quick_exit: bool = False,
    preload: Sequence[str] | None = None,
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
        block_timeout: seconds after which a worker still on one block counts as frozen: a local worker is killed
            with one line and its block retried (None: 10× the slowest block finished so far, at least
            :data:`MIN_BLOCK_TIMEOUT`; :data:`FIRST_BLOCK_TIMEOUT` before one has). Given, daisy also reclaims a
            block of a remote worker after that time.
        progress: show daisy's progress bar and execution summary.
        host: the address the scheduler listens on and the workers connect to (on a cluster: this machine's
            hostname or IP as the compute nodes reach it).
        quick_exit: worker processes end with ``os._exit(0)`` once the scheduler has no block left for them,
            skipping the interpreter's teardown (TensorFlow's takes 1-2 s, which the run would wait for); only for
            steps whose blocks leave nothing to flush or close.
        preload: with local workers (``num_workers > 1``, no ``worker_command``) on Linux, fork the workers from a
            warm process that has this process's modules and imports these (:mod:`lsd_nm.forked_workers`: a
            worker then starts in milliseconds instead of re-importing everything); None: spawn fresh interpreters
            (for workers that must not be forked, e.g. ones that initialise a GPU).

    Returns:
        The numbers of blocks in total, processed now and skipped.

    Raises:
        BlockwiseError: when blocks failed for good; the message names them and holds the first traceback.
    """
    tracking_dir = Path(tracking_dir)
    tracking_dir.mkdir(parents=True, exist_ok=True)
    daisy.logging.set_log_basedir(str(tracking_dir.parent / "logs"))
    serial = num_workers == 1 and not worker_command
    cores = os.cpu_count() or 1
    if not worker_command and num_workers > cores:  # more local workers than cores only share them, in more memory
        print(f"{task_name}: num_workers {num_workers} is more than this machine's {cores} cores: running {cores}",
              file=sys.stderr, flush=True)  # fmt: skip
        num_workers = cores
    zygote = None
    if not serial:  # heartbeats for the watchdog; a block whose input is at fault fails in one line
        process_block = _Guarded(process_block, tracking_dir)

    if serial:
        cache: dict[str, Any] = {}

        def function(block: daisy.Block) -> None:
            if "resources" not in cache:
                cache["resources"] = worker_setup() if worker_setup is not None else None
            for attempt in range(max_retries + 1):
                try:
                    process_block(block, cache["resources"])
                    return
                except ConfigError as e:  # the input's fault (a damaged chunk, …): retrying cannot help
                    raise ConfigError(f"{task_name}: block {block.block_id[1]}: {e}") from None
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
    elif preload is not None and forked_workers.available():
        zygote = forked_workers.Zygote(_loop_over_blocks, worker_setup, process_block, preload)
        function = zygote.proxy()
    else:

        def function() -> None:
            _loop_over_blocks(worker_setup, process_block)
            if quick_exit:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(0)

    _write_json(tracking_dir / BLOCKS, {"total": count_blocks(total_roi, read_roi, write_roi, fit)})
    watchdog = contextlib.nullcontext() if serial else _Watchdog(
        task_name, tracking_dir, block_timeout, can_kill=not worker_command
    )  # fmt: skip
    try:
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
            # daisy's own timeout kills a worker from inside (it cannot when the process is frozen: the watchdog
            # does) and reclaims a remote worker's block; without a block_timeout the watchdog's measured one rules
            timeout=block_timeout if block_timeout is not None else NO_DAISY_TIMEOUT,
            tracking_path=str(tracking_dir),
        )
        with watchdog:
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
    except RuntimeError as e:  # daisy abandons a task whose workers keep dying: its message holds their tracebacks
        causes = re.findall(r"^\s*(\w+(?:Error|Exception|Exit)\w*: .+)$", str(e), flags=re.MULTILINE)
        cause = causes[-1].strip() if causes else str(e).strip().splitlines()[0]
        raise BlockwiseError(f"{task_name}: the workers keep exiting ({cause}); the run stopped; their logs are in "
                             f"{tracking_dir.parent / 'logs' / task_name}") from None  # fmt: skip
    finally:
        if zygote is not None:
            zygote.close()
    state = states[task_name]
    errors = [] if serial else read_block_errors(tracking_dir)
    if state.completed_count != state.total_block_count and errors:  # the blocks' input was at fault: one line
        more = f" (and {len(errors) - 1} more blocks: {tracking_dir / ERRORS})" if len(errors) > 1 else ""
        raise ConfigError(f"{task_name}: block {errors[0]['block']} (write {errors[0]['write_roi']}): "
                          f"{errors[0]['error']}{more}")  # fmt: skip
    if state.completed_count != state.total_block_count:
        failed = task.failed_blocks()
        where = ", ".join(f"{b.block_id[1]} (write {b.write_roi})" for b in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        error = state.first_worker_error or state.last_worker_error or "(no traceback reported)"
        user = re.findall(r"^lsd_nm\.config\.ConfigError: (.+)$", error, flags=re.MULTILINE)
        if user:  # a worker stopped at a problem of the input, which it named in one line
            raise ConfigError(f"{task_name}: {user[-1]}")
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
    ``worker_setup(job)`` take the step's picklable ``job`` first; workers, worker command and block timeout come
    from the run config (``num_workers``, ``worker_command``, ``block_timeout``).

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
        block_timeout=config.block_timeout,
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



# ---- one writer per run ---------------------------------------------------------------------------------------------


@contextmanager
def run_lock(config: RunConfig) -> Iterator[None]:
    """Hold the lock of a run's ``out_file`` (``<out_file>.lock`` beside it: pid, host, start) while its steps write
    (:func:`lsd_nm.locks.hold_lock`: a second run on the same ``out_file`` stops with a one-line error naming the
    owner; a killed run's lock is taken over)."""
    with hold_lock(config.out_path.with_name(config.out_path.name + ".lock"), f"'{config.out_path}' is being written"):
        yield


# ---- block geometry -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """The blocks of a post-processing step: write blocks tile ``write_total``; each reads ± ``context`` and writes
    only inside ``region`` (``write_total`` is ``region`` with its begin moved back onto the block grid of the
    volume, so that no two blocks share a chunk of the datasets, whose chunks are blocks from the volume's offset)."""

    write_total: Roi
    block_size: Coordinate
    context: Coordinate
    voxel_size: Coordinate
    region: Roi

    @property
    def total_roi(self) -> Roi:
        return self.write_total.grow(self.context, self.context)

    @property
    def read_roi(self) -> Roi:
        return Roi(-self.context, self.block_size + self.context * 2)

    @property
    def write_roi(self) -> Roi:
        return Roi((0,) * 3, self.block_size)

    @property
    def voxels_per_block(self) -> int:
        return int(np.prod(self.block_size / self.voxel_size))


def processing_roi(config: RunConfig, volume: Volume) -> Roi:
    """The region (nm) the post-processing steps cover: ``roi_offset``/``roi_shape`` if the config gives them, else
    the whole ``volume``.

    Args:
        config: the run config.
        volume: the dataset the region must lie in (the affinities, or the fragments made from them).

    Raises:
        ConfigError: the ROI is not on the volume's voxel grid, or not inside it.
    """
    if config.roi_offset is None:
        return volume.roi
    roi = Roi(config.roi_offset, config.roi_shape)
    vs = volume.voxel_size
    off_grid = any((o - b) % v for o, b, v in zip(roi.offset, volume.roi.offset, vs))
    if off_grid or any(s % v for s, v in zip(roi.shape, vs)):
        raise ConfigError(
            f"roi_offset/roi_shape {tuple(roi.offset)}/{tuple(roi.shape)} nm are not on the voxel grid of "
            f"'{volume.path}' (offset {tuple(volume.roi.offset)} nm, voxel size {tuple(vs)} nm)"
        )
    if roi.empty or not volume.roi.contains(roi):
        raise ConfigError(f"the ROI {roi} (roi_offset/roi_shape) is not inside '{volume.path}' {volume.roi}")
    return roi


def block_geometry(config: RunConfig, volume: Volume) -> Geometry:
    """Blocks of ``config.block_size`` ± ``config.context`` over :func:`processing_roi` of ``volume`` (block size and
    context multiples of its voxel size)."""
    vs = volume.voxel_size
    block, context = Coordinate(config.block_size), Coordinate(config.context)
    for name, value in (("block_size", block), ("context", context)):
        if any(x % v for x, v in zip(value, vs)) or any(x < 0 for x in value):
            raise ConfigError(f"{name} {tuple(value)} nm is not a multiple of the voxel size {tuple(vs)} nm")
    if any(b <= 0 for b in block):
        raise ConfigError(f"block_size {tuple(block)} nm must be positive")
    if any(c < v for c, v in zip(context, vs)):
        # agglomeration must see every contact of a block's fragments: at least one voxel around the block
        raise ConfigError(f"context {tuple(context)} nm must be at least one voxel {tuple(vs)} nm")
    region = processing_roi(config, volume)
    return Geometry(grid_aligned(region, volume.roi.offset, block), block, context, vs, region)


def grid_aligned(region: Roi, origin: Coordinate, block_size: Coordinate) -> Roi:
    """``region`` with its begin moved back onto the grid of ``block_size`` from ``origin`` (nm); its end stays.

    Args:
        region: the region to cover (nm).
        origin: the grid's origin (nm), e.g. the offset of the datasets whose chunks are blocks.
        block_size: the grid's spacing (nm).
    """
    begin = Coordinate(o + (b - o) // s * s for b, o, s in zip(region.begin, origin, block_size))
    return Roi(begin, region.end - begin)


# ---- output datasets ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputDataset:
    """A step's output dataset in a run's ``out_file``: where it goes, its layout, and the settings it is made with.

    The settings are stored in the attr ``settings_attr`` beside ``resolution`` and ``offset``; they decide whether an
    existing dataset can be resumed (:meth:`reusable`).
    """

    path: Path
    """``<out_file>/volumes/<name>``."""
    roi: Roi
    """Its extent (nm)."""
    voxel_size: Coordinate
    chunk_shape: tuple[int, ...]
    """Chunk shape (voxels, spatial axes; clipped to the shape)."""
    dtype: Any
    settings_attr: str
    """The attr holding ``settings``."""
    settings: dict
    """What the content depends on: another value means other content."""
    channels: int | None = None
    """Leading channel axis (unchunked), or None for a (z, y, x) dataset."""
    refused_as: str | None = None
    """How a refusal names the difference (default: ``other settings (<keys that differ>)``)."""
    compressor: Any = None
    """The chunk compressor (None: our containers' default, :data:`lsd_nm.data.COMPRESSOR`)."""
    kept_on_overwrite: bool = False
    """An existing dataset of the same settings is resumed even with ``overwrite`` (for an output whose settings
    pin its content and that is costly to make again: the prediction)."""

    def reusable(self, overwrite: bool) -> bool:
        """Whether the dataset exists with the same settings (resume into it); False: it must be (re)created.

        Raises:
            ConfigError: it exists from other settings and ``overwrite`` is not given.
        """
        import zarr

        if not self.path.exists():
            return False
        attrs = zarr.open_array(self.path, mode="r").attrs.asdict()
        existing = attrs.get(self.settings_attr)
        if existing == self.settings and (not overwrite or self.kept_on_overwrite):
            return True
        if overwrite:
            return False
        if self.refused_as is None:
            existing = existing or {}
            differs = sorted(k for k in {**existing, **self.settings} if existing.get(k) != self.settings.get(k))
            refused_as = f"other settings ({', '.join(differs)})"
        else:
            refused_as = self.refused_as
        raise ConfigError(f"'{self.path}' exists from {refused_as}; pass --overwrite to replace it")

    def create(self, tracking: Path | None = None) -> None:
        """Create the dataset (replacing what is there, in a zarr v2 ``out_file``) and forget its done blocks."""
        import zarr

        shutil.rmtree(self.path, ignore_errors=True)
        if tracking is not None:
            shutil.rmtree(tracking, ignore_errors=True)
        spatial = tuple(s // v for s, v in zip(self.roi.shape, self.voxel_size))
        chunks = tuple(min(c, s) for c, s in zip(self.chunk_shape, spatial))
        lead = () if self.channels is None else (self.channels,)
        group = zarr.open_group(self.path.parents[1], mode="a", zarr_format=2)
        array = group.require_group(self.path.parent.name).create_array(
            self.path.name, shape=lead + spatial, chunks=lead + chunks, dtype=self.dtype, fill_value=0,
            compressors=self.compressor if self.compressor is not None else COMPRESSOR,
        )  # fmt: skip
        array.attrs.update({
            "resolution": [int(v) for v in self.voxel_size],
            "offset": [int(v) for v in self.roi.offset],
            self.settings_attr: self.settings,
        })  # fmt: skip

    @property
    def volume(self) -> Volume:
        return Volume(self.path, self.roi, self.voxel_size)


def prepare_output(output: OutputDataset, overwrite: bool, tracking: Path | None = None) -> bool:
    """Reuse, refuse or recreate a step's output dataset; returns whether it was (re)created (False: resume).

    Args:
        output: the dataset and the settings it is made with.
        overwrite: recreate it even when it exists from other settings.
        tracking: the step's done-block folder, forgotten with a recreated dataset.

    Raises:
        ConfigError: it exists from other settings and ``overwrite`` is not given (nothing is changed).
    """
    if output.reusable(overwrite):
        return False
    output.create(tracking)
    return True
