"""segment.py with its workers as Slurm jobs (``worker_command: ["srun", …]``) on a real one-node cluster, the region
graph in PostgreSQL: the same output as a local run, also when a worker's job is cancelled mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import REPO
from predict_volumes import CONTEXT, OFFSET, VOXEL_SIZE, graph, make_out_file
from predict_volumes import config as run_config
from test_agglomerate import postgres_url  # noqa: F401 - the PostgreSQL fixture
from test_segments import GT, skeletons_of

from lsd_nm.data import write_container

SRUN = ["srun", "--quiet", "-N1", "-n1"]
"""The worker command under test: each worker one single-task job (its own allocation)."""
SHAPE = (32, 192, 192)
"""The test volume (voxels): 4 × 4 × 4 blocks per step, each ~0.2 s of work on one core."""


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
    """Start segment.py on a run config; its output goes to ``segment.{out,err}`` beside the config."""
    with open(config.parent / "segment.out", "w") as out, open(config.parent / "segment.err", "w") as err:
        return subprocess.Popen([sys.executable, str(REPO / "03_predict/segment.py"), str(config)], env=env,
                                stdout=out, stderr=err)  # fmt: skip


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
    finish(segment(config, os.environ.copy()))
    found = outputs(folder / "run")
    assert {"volumes/fragments", "volumes/segmentation_30", "volumes/segmentation_50"} <= set(found)
    assert len(found["graph"][1]) > 100 and len([k for k in found if k.startswith("luts/")]) == 30
    return found


def test_segment_with_srun_workers_equals_a_local_run(slurm_cluster, postgres_url, local_outputs, tmp_path):  # noqa: F811
    """Every blockwise step's 2 workers as ``srun`` jobs: fragments, region graph, LUTs, segmentations and scores are
    the local run's."""
    config = make_run(tmp_path / "srun", database(postgres_url, "slurm_srun"), worker_command=SRUN)
    before = len(slurm_cluster.allocations())
    finish(segment(config, slurm_cluster.env))
    # the workers were Slurm jobs: 2 per blockwise step (fragments, agglomerate, 2 segmentations)
    assert len(slurm_cluster.allocations()) - before == 8
    assert_identical(outputs(tmp_path / "srun"), local_outputs)


def test_a_cancelled_worker_job_is_replaced_and_the_output_is_unchanged(slurm_cluster, postgres_url, local_outputs, tmp_path):  # noqa: F811
    """``scancel`` of one worker's job while it processes fragment blocks: daisy retries its block, a new worker job
    takes its place, and the output is the local run's."""
    config = make_run(tmp_path / "srun", database(postgres_url, "cancel_srun"), worker_command=SRUN)
    before = len(slurm_cluster.allocations())
    process = segment(config, slurm_cluster.env)
    fragments = tmp_path / "srun" / "out.zarr" / "volumes" / "fragments"
    seen: dict[str, float] = {}  # job id → when first seen running
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "segment.py ended before a worker was cancelled"
        now = time.monotonic()
        jobs = slurm_cluster.jobs()
        for job in jobs:
            seen.setdefault(job, now)
        chunks = len([p for p in fragments.glob("*") if not p.name.startswith(".")]) if fragments.exists() else 0
        assert chunks < 64, "the fragments step ended before a worker was cancelled"
        # a job that has run for 3 s is past its setup (imports, opening arrays) and processing blocks
        settled = [job for job in jobs if now - seen[job] > 3]
        if chunks and settled:
            break
        time.sleep(0.1)
    slurm_cluster.run("scancel", settled[0])
    out = finish(process)
    assert "02_extract_fragments: 64 blocks processed" in out
    err = (tmp_path / "srun" / "segment.err").read_text()
    assert "CANCELLED" in err and "worker command exited with code" in err
    # 2 workers per blockwise step, and a third job in the fragments step in place of the cancelled one
    assert len(slurm_cluster.allocations()) - before >= 9
    assert_identical(outputs(tmp_path / "srun"), local_outputs)
