"""The status of a ``03_predict`` run, read from what its steps leave on disk — during a run, after ``kill -9`` and on a
finished run alike; it writes nothing.

Per step: what is done, failed and in all (blocks for the blockwise steps 1-3 and 5, LUTs for step 4, the scores file
for step 6), the last error of a failed block, and for a step that is running (its ``out_file`` lock held by a live
process) the elapsed time, an ETA from the blocks done so far, and its worker processes still alive (from their
heartbeats). Run: ``python 03_predict/status.py CONFIG [--json]`` or ``make status CONFIG=…``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .blockwise import BLOCKS, ERRORS, read_beats
from .config import ConfigError
from .evaluate import scores_paths
from .locks import lock_holder
from .luts import all_thresholds, lut_path, threshold_name
from .orphans import is_alive
from .run_config import RunConfig
from .steps import AGGLOMERATE, EVALUATE, EXTRACT_FRAGMENTS, EXTRACT_SEGMENTATION, FIND_SEGMENTS, PREDICT


@dataclass
class StepStatus:
    """One step of a run."""

    name: str
    """The step, e.g. ``02_extract_fragments``."""
    done: int
    """Units finished (blocks; LUTs for step 4; 1 for step 6 once it wrote its scores)."""
    failed: int
    """Blocks that failed and are not done (a re-run retries them)."""
    total: int
    """Units in all (0: the step has not started, so its size is not known yet)."""
    unit: str = "blocks"
    last_error: str | None = None
    """The last error of a failed block, one line."""
    started: float | None = None
    """When the step began (seconds since the epoch), where that is known."""
    workers: list[str] = field(default_factory=list)
    """Worker processes of this step still alive on this machine (``pid@host: block N``)."""

    @property
    def state(self) -> str:
        if self.total and self.done == self.total:
            return "done"
        if self.failed:
            return "failed"
        return "started" if self.done or self.total else "not started"


@dataclass
class RunStatus:
    """A run: its steps in order, and the process writing it (if one is)."""

    out_file: str
    running: str | None
    """``pid on host since …`` of the process holding the run's lock, if it is alive."""
    steps: list[StepStatus]

    def as_json(self) -> dict:
        return {"out_file": self.out_file, "running": self.running,
                "steps": [{**asdict(s), "state": s.state} for s in self.steps]}  # fmt: skip


def _blocks(tracking: Path) -> tuple[int, int, int, float | None]:
    """(done, failed, total, started) of one daisy task from its tracking folder (``done`` and ``failures`` arrays:
    one cell per block of its grid)."""
    import zarr

    try:
        done = np.asarray(zarr.open_array(tracking / "done", mode="r")[:]) != 0
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return 0, 0, 0, None
    try:
        failures = np.asarray(zarr.open_array(tracking / "failures", mode="r")[:]) != 0
    except Exception:  # noqa: BLE001 - no failure recorded
        failures = np.zeros_like(done)
    started = (tracking / "zarr.json").stat().st_mtime if (tracking / "zarr.json").exists() else None
    try:
        total = int(json.loads((tracking / BLOCKS).read_text())["total"])
    except (OSError, ValueError, KeyError):  # a task of an older version: daisy's grid is all there is
        total = int(done.size)
    return int(done.sum()), int((failures & ~done).sum()), max(total, int(done.sum())), started


def _last_error(tracking: Path) -> str | None:
    """The last block error: ours (a block whose input is at fault), else the last exception line of a worker log."""
    errors = sorted((tracking / ERRORS).glob("*.txt"), key=lambda p: p.stat().st_mtime)
    if errors:
        error = json.loads(errors[-1].read_text())
        return f"block {error['block']}: {error['error']}"
    logs = sorted((tracking.parent / "logs" / tracking.name).glob("*.err"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        lines = re.findall(r"^(\w+(?:Error|Exception)\w*: .+)$", log.read_text(errors="replace"), flags=re.MULTILINE)
        if lines:
            return lines[-1]
    return None


def _workers(tracking: Path) -> list[str]:
    alive = []
    for beat in read_beats(tracking):
        if beat["host"] == socket.gethostname() and is_alive(beat["pid"]):
            alive.append(f"{beat['pid']}@{beat['host']}: " + (f"block {beat['block']}" if beat["block"] is not None
                                                               else "between blocks"))  # fmt: skip
    return alive


def _blockwise(name: str, trackings: list[Path]) -> StepStatus:
    step = StepStatus(name, 0, 0, 0)
    for tracking in trackings:
        done, failed, total, started = _blocks(tracking)
        step.done, step.failed, step.total = step.done + done, step.failed + failed, step.total + total
        if started is not None:
            step.started = started if step.started is None else min(step.started, started)
        if failed:
            step.last_error = _last_error(tracking) or step.last_error
        step.workers += _workers(tracking)
    return step


def _holder(config: RunConfig) -> str | None:
    holder = lock_holder(config.out_path.with_name(config.out_path.name + ".lock"))
    return None if holder is None or holder.gone else str(holder)  # gone: a killed run's lock


def run_status(config: RunConfig) -> RunStatus:
    """Read the status of every step of a run.

    Raises:
        ConfigError: the run's ``out_file`` does not exist (nothing has run).
    """
    if not config.out_path.exists():
        raise ConfigError(f"'{config.out_path}' does not exist: no step of this run has started")
    blocks = config.blocks_dir
    steps = [_blockwise(s.name, s.done_block_folders(config)) for s in (PREDICT, EXTRACT_FRAGMENTS, AGGLOMERATE)]
    thresholds = all_thresholds(config)
    luts = [t for t in thresholds if lut_path(config, t).is_file()]
    steps.append(StepStatus(FIND_SEGMENTS.name, len(luts), 0, len(thresholds) if luts else 0, unit="LUTs"))
    segmentation = _blockwise(EXTRACT_SEGMENTATION.name, EXTRACT_SEGMENTATION.done_block_folders(config))
    complete = [t for t in config.extract_thresholds
                if (blocks / f"segmentation_{threshold_name(t)}.complete").is_file()]  # fmt: skip
    if complete and len(complete) == len(config.extract_thresholds):  # (a finished task's blocks counted once)
        segmentation.done = segmentation.total = max(segmentation.total, 1)
    steps.append(segmentation)
    scores = scores_paths(config.out_path)[1]
    steps.append(StepStatus(EVALUATE.name, int(scores.is_file()), 0, 1 if scores.is_file() else 0, unit="scores"))
    return RunStatus(str(config.out_path), _holder(config), steps)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def status_lines(config: RunConfig, as_json: bool = False) -> list[str]:
    """``lsd-nm status``: the run's status as :func:`describe`'s lines, or as one JSON object (``--json``)."""
    status = run_status(config)
    return [json.dumps(status.as_json(), indent=1) if as_json else "\n".join(describe(status))]


def describe(status: RunStatus, now: float | None = None) -> list[str]:
    """The status as lines for a terminal: one per step, then what runs it."""
    now = time.time() if now is None else now
    lines = [f"{status.out_file}: " + (f"running ({status.running})" if status.running else "not running")]
    for step in status.steps:
        count = f"{step.done}/{step.total} {step.unit}" if step.total else "-"
        line = f"  {step.name:<24} {step.state:<12} {count}"
        if step.failed:
            line += f", {step.failed} failed"
        if status.running and step.state == "started" and step.started is not None:
            elapsed = now - step.started
            line += f", {_duration(elapsed)} elapsed"
            if step.done:
                line += f", ETA {_duration(elapsed / step.done * (step.total - step.done))}"
        lines.append(line)
        if step.last_error:
            lines.append(f"      last error: {step.last_error}")
        for worker in step.workers:
            lines.append(f"      worker {worker}")
    return lines
