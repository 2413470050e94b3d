"""segment.py with its workers as Slurm jobs (``worker_command: ["srun", …]``) on a real one-node cluster, the region
graph in PostgreSQL: the same output as a local run, also when a worker's job is cancelled mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import REPO
from predict_volumes import CONTEXT, OFFSET, VOXEL_SIZE, graph, make_out_file
from predict_volumes import config as run_config
from process_group import group_members, kill_group, wait_until_gone
from test_agglomerate import postgres_url  # noqa: F401 - the PostgreSQL fixture
from test_segments import GT, skeletons_of

from lsd_nm.data import write_container
from lsd_nm.run_config import load_run_config
from lsd_nm.status import run_status
from lsd_nm.steps import NAMES as STEPS

SRUN = ["srun", "--quiet", "-N1", "-n1"]
"""The worker command under test: each worker one single-task job (its own allocation)."""
SHAPE = (32, 288, 288)
"""The test volume (voxels): 4 × 6 × 6 blocks of 8 × 48 × 48 voxels per step, each ~50-200 ms of work on one core."""
BLOCKS = 144


def make_run(folder: Path, db: str, **overrides) -> Path:
    """A run folder: ``out.zarr`` with ideal affinities, ``gt.zarr``, skeletons and ``run.json`` (no network: the
    affinities are in out_file); returns the config file."""
    folder.mkdir(parents=True)
    out = folder / "out.zarr"
    labels, _ = make_out_file(out, seed=3, shape=SHAPE)
    write_container(folder / "gt.zarr", {GT: labels}, VOXEL_SIZE, OFFSET)
    np.savez_compressed(folder / "gt.skeletons.npz", **skeletons_of(labels))
    config = {
        "setup": None, "raw_file": str(out), "out_file": str(out), "num_workers": 2, "db": db,
        "block_size": [160, 432, 432], "context": list(CONTEXT), "thresholds": [0.0, 1.0, 0.1],
        "extract_thresholds": [0.3, 0.5], "gt_file": str(folder / "gt.zarr"), "gt_dataset": GT,
        "gt_skeletons": str(folder / "gt.skeletons.npz"), **overrides,
    }  # fmt: skip
    path = folder / "run.json"
    path.write_text(json.dumps(config))
    return path


def segment(config: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start segment.py on a run config, leading its own process group (see :func:`stopped`); its output goes to
    ``segment.{out,err}`` beside the config."""
    with open(config.parent / "segment.out", "w") as out, open(config.parent / "segment.err", "w") as err:
        return subprocess.Popen([sys.executable, str(REPO / "03_predict/segment.py"), str(config)], env=env,
                                stdout=out, stderr=err, start_new_session=True)  # fmt: skip


@contextmanager
def stopped(process: subprocess.Popen, cluster=None) -> Iterator[subprocess.Popen]:
    """Whatever happens in the block, nothing of the segment.py run is left after it (its jobs included)."""
    try:
        yield process
    finally:
        kill_group(process.pid)
        process.wait()
        for job in cluster.jobs() if cluster is not None else []:
            cluster.run("scancel", job)


def fragment_workers(process: subprocess.Popen, cluster, run: Path, blocks_done: int, age: float) -> list[str]:
    """Wait until the fragments step has written ``blocks_done`` blocks and a worker job has run for ``age`` seconds;
    the running jobs then, the oldest first."""
    fragments = run / "out.zarr" / "volumes" / "fragments"
    seen: dict[str, float] = {}  # job id → when first seen running
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "segment.py ended before its workers were seen"
        now = time.monotonic()
        jobs = cluster.jobs()
        for job in jobs:
            seen.setdefault(job, now)
        jobs.sort(key=seen.get)
        chunks = len([p for p in fragments.glob("*") if not p.name.startswith(".")]) if fragments.exists() else 0
        assert chunks < BLOCKS, "the fragments step ended before its workers were seen"
        if chunks >= blocks_done and jobs and now - seen[jobs[0]] >= age:
            return jobs
        time.sleep(0.05)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    """Wait for segment.py to succeed; its stdout."""
    process.wait(timeout)
    folder = Path(process.args[-1]).parent
    out, err = (folder / "segment.out").read_text(), (folder / "segment.err").read_text()
    assert process.returncode == 0, err[-3000:]
    assert "06_evaluate" in out and "segment: done" in out
    return out


def outputs(folder: Path) -> dict[str, object]:
    """Everything a run wrote that must not depend on where its workers ran: arrays, LUTs, scores, region graph."""
    out = folder / "out.zarr"
    group = zarr.open_group(out, mode="r")
    found: dict[str, object] = {f"volumes/{name}": group["volumes"][name][:] for name in sorted(group["volumes"].array_keys())}
    for lut in sorted((out / "luts").rglob("*.npz")):
        with np.load(lut) as f:
            found.update({f"{lut.relative_to(out)}:{k}": f[k] for k in f.files})
    found["scores.json"] = (folder / "out.scores.json").read_text()
    found["scores.csv"] = (folder / "out.scores.csv").read_text()
    config = json.loads((folder / "run.json").read_text())
    found["graph"] = graph(run_config(out, db=config["db"]))
    return found


def assert_identical(a: dict[str, object], b: dict[str, object]) -> None:
    """Same keys, and every value the same (arrays bit for bit, with their dtype)."""
    assert sorted(a) == sorted(b)
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def database(url: str, name: str) -> str:
    """The URL of database ``name`` on the server of ``url``."""
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def local_outputs(postgres_url, tmp_path_factory):  # noqa: F811
    """What segment.py writes with 2 local worker processes (the reference)."""
    folder = tmp_path_factory.mktemp("local")
    config = make_run(folder / "run", database(postgres_url, "slurm_local"))
    with stopped(segment(config, os.environ.copy())) as process:
        finish(process)
    found = outputs(folder / "run")
    assert {"volumes/fragments", "volumes/segmentation_30", "volumes/segmentation_50"} <= set(found)
    assert len(found["graph"][1]) > 100 and len([k for k in found if k.startswith("luts/")]) == 30
    return found


def test_segment_with_srun_workers_equals_a_local_run(slurm_cluster, postgres_url, local_outputs, tmp_path):  # noqa: F811
    """Every blockwise step's 2 workers as ``srun`` jobs: fragments, region graph, LUTs, segmentations and scores are
    the local run's."""
    config = make_run(tmp_path / "srun", database(postgres_url, "slurm_srun"), worker_command=SRUN)
    before = len(slurm_cluster.allocations())
    with stopped(segment(config, slurm_cluster.env), slurm_cluster) as process:
        finish(process)
    # the workers were Slurm jobs: one trial before any block, then 2 per blockwise step (fragments, agglomerate,
    # the segmentations of both thresholds)
    assert len(slurm_cluster.allocations()) - before == 1 + 6
    assert_identical(outputs(tmp_path / "srun"), local_outputs)
    # make status on the finished run: every step done, nothing running, no worker left
    status = run_status(load_run_config(config))
    assert status.running is None and [(s.name, s.state, s.workers) for s in status.steps] == [
        (name, "not started" if name == STEPS[0] else "done", []) for name in STEPS  # no network: no prediction
    ]
    assert status.steps[1].done == status.steps[1].total == BLOCKS


def test_a_cancelled_worker_job_is_replaced_and_the_output_is_unchanged(slurm_cluster, postgres_url, local_outputs, tmp_path):  # noqa: F811
    """``scancel`` of one worker's job while it processes fragment blocks: daisy retries its block, a new worker job
    takes its place, and the output is the local run's."""
    config = make_run(tmp_path / "srun", database(postgres_url, "cancel_srun"), worker_command=SRUN)
    before = len(slurm_cluster.allocations())
    with stopped(segment(config, slurm_cluster.env), slurm_cluster) as process:
        # blocks are being written, and the oldest job is past its setup (imports, opening arrays): it is in the
        # block loop, and mid-block nearly always (a block is ~50-200 ms of work, fetching the next one ~1 ms)
        jobs = fragment_workers(process, slurm_cluster, tmp_path / "srun", blocks_done=4, age=1.5)
        slurm_cluster.run("scancel", jobs[0])
        out = finish(process)
    assert f"02_extract_fragments: {BLOCKS} blocks processed" in out
    err = (tmp_path / "srun" / "segment.err").read_text()
    assert "CANCELLED" in err and "worker command exited with code" in err
    # the trial, 2 workers per blockwise step, and a third job in the fragments step in place of the cancelled one
    assert len(slurm_cluster.allocations()) - before >= 1 + 7
    assert_identical(outputs(tmp_path / "srun"), local_outputs)


def test_kill_9_of_the_driver_ends_its_worker_jobs(slurm_cluster, postgres_url, tmp_path):  # noqa: F811
    """``kill -9`` of segment.py while its srun workers process blocks: within 10 s no job and no process of the
    run is left (the workers lose the scheduler and exit, so do their sruns)."""
    config = make_run(tmp_path / "srun", database(postgres_url, "kill_srun"), worker_command=SRUN)
    with stopped(segment(config, slurm_cluster.env), slurm_cluster) as process:
        jobs = fragment_workers(process, slurm_cluster, tmp_path / "srun", blocks_done=1, age=0)
        assert len(worker_processes(tmp_path)) >= 1 and len(group_members(process.pid)) >= 3, jobs
        # make status while it runs: the driver holds the run, the fragments step is started with its workers
        deadline = time.monotonic() + 30
        while not (step := run_status(load_run_config(config)).steps[1]).workers and time.monotonic() < deadline:
            time.sleep(0.1)
        running = run_status(load_run_config(config))
        assert running.running is not None and running.running.startswith(f"process {process.pid} on ")
        assert step.state == "started" and 0 < step.done < step.total == BLOCKS and step.workers, step
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while (slurm_cluster.jobs() or worker_processes(tmp_path) or group_members(process.pid)) and time.monotonic() < deadline:  # fmt: skip
            time.sleep(0.2)
        assert slurm_cluster.jobs() == [] and worker_processes(tmp_path) == []
        assert wait_until_gone(process.pid, 0) == []  # daisy's process that ran the srun included
    # make status after the kill: nobody holds the run, no worker is alive, the blocks written so far are counted
    killed = run_status(load_run_config(config))
    step = killed.steps[1]
    assert killed.running is None and step.workers == [] and step.state == "started" and 0 < step.done < BLOCKS


def worker_processes(run: Path) -> list[str]:
    """The blockwise worker processes of a run (found by the worker spec path under ``run`` in their command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
        except OSError:
            continue
        if "lsd_nm.blockwise_worker" in cmdline and str(run) in cmdline:
            found.append(f"{entry.name} {cmdline.replace(chr(0), ' ')}")
    return found
