"""segment.py: the whole 03_predict chain on a small synthetic volume with a seeded network, then resumed."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import REPO
from predict_volumes import ideal_affinities
from test_predict import VOXEL, make_network

from lsd_nm.data import NEURON_IDS, RAW, write_container
from lsd_nm.skeletons import skeletonize, write_skeletons
from lsd_nm.synthetic import generate_volume


def test_segment_end_to_end(tmp_path):
    raw, labels = generate_volume((40, 144, 144), VOXEL, seed=9)
    volume = tmp_path / "test.zarr"
    write_container(volume, {RAW: raw, NEURON_IDS: labels}, VOXEL, (0, 0, 0))
    write_skeletons(tmp_path / "test.skeletons.npz", skeletonize(labels, VOXEL, (0, 0, 0)))
    folder, _ = make_network(tmp_path / "toy", "baseline")
    config = {
        "setup": str(folder), "raw_file": str(volume), "out_file": str(tmp_path / "out.zarr"), "num_workers": 2,
        "device": "cpu", "block_size": [200, 468, 468], "context": [40, 36, 36], "thresholds": [0.0, 1.0, 0.25],
        "extract_thresholds": [0.5], "gt_file": str(volume), "gt_dataset": NEURON_IDS,
        "gt_skeletons": str(tmp_path / "test.skeletons.npz"),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    command = [sys.executable, str(REPO / "03_predict/segment.py"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for step in ("01_predict_blockwise", "02_extract_fragments", "03_agglomerate", "04_find_segments", "05_extract_segmentation", "06_evaluate"):
        assert step in result.stdout
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    affs, fragments, segmentation = out["volumes/affs"], out["volumes/fragments"], out["volumes/segmentation_50"]
    assert affs.attrs["offset"] == fragments.attrs["offset"] == segmentation.attrs["offset"] == [200, 180, 180]
    assert fragments.shape == segmentation.shape == affs.shape[1:] == (20, 104, 104)
    assert segmentation.dtype == np.uint64
    scores = json.loads((tmp_path / "out.scores.json").read_text())
    assert [row["threshold"] for row in scores["rows"]] == [0.0, 0.25, 0.5, 0.75]
    assert (tmp_path / "out.voi_vs_threshold.png").exists()
    # a second run redoes nothing and gives the same segmentation
    before = segmentation[:]
    again = subprocess.run(command, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "01_predict_blockwise: 0 blocks processed" in again.stdout
    assert "02_extract_fragments: 0 blocks processed" in again.stdout
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "out.zarr", mode="r")["volumes/segmentation_50"][:], before)


def test_segment_failure_names_the_step(tmp_path):
    folder, _ = make_network(tmp_path / "toy", "baseline")
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"setup": str(folder), "raw_file": str(tmp_path / "missing.zarr"), "out_file": str(tmp_path / "o.zarr")}))
    result = subprocess.run([sys.executable, str(REPO / "03_predict/segment.py"), str(path)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: 01_predict_blockwise: raw '{tmp_path / 'missing.zarr/volumes/raw'}' does not exist "
        f"(re-run: python 03_predict/01_predict_blockwise.py {path})\n"
    )


def _noisy_run(tmp_path, **changes):
    """An out_file with affinities (no network: step 1 has nothing to do), ground truth and a run config."""
    raw, labels = generate_volume((16, 96, 96), VOXEL, seed=3)
    write_container(tmp_path / "gt.zarr", {RAW: raw, NEURON_IDS: labels}, VOXEL, (0, 0, 0))
    write_container(tmp_path / "out.zarr", {"volumes/affs": ideal_affinities(labels)}, VOXEL, (0, 0, 0))
    write_skeletons(tmp_path / "gt.skeletons.npz", skeletonize(labels, VOXEL, (0, 0, 0)))
    config = {
        "setup": None, "raw_file": str(tmp_path / "gt.zarr"), "out_file": str(tmp_path / "out.zarr"), "num_workers": 1,
        "block_size": [160, 432, 432], "context": [40, 36, 36], "thresholds": [0.0, 1.0, 0.5],
        "gt_file": str(tmp_path / "gt.zarr"), "gt_dataset": NEURON_IDS, "gt_skeletons": str(tmp_path / "gt.skeletons.npz"),
        **changes,
    }  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    return path


def _segment(path, *args):
    return subprocess.run([sys.executable, str(REPO / "03_predict/segment.py"), str(path), *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"block_size": [150, 432, 432]}, "02_extract_fragments: block_size (150, 432, 432) nm is not a multiple of the voxel size (20, 9, 9) nm"),
        ({"db": "postgresql://postgres@127.0.0.1:1/lsd_nm_nowhere"}, "02_extract_fragments: db 'postgresql://postgres@127.0.0.1:1/lsd_nm_nowhere': cannot connect to PostgreSQL ("),
        ({"db": "/proc/lsd_nm_test.rag.db"}, "02_extract_fragments: db '/proc/lsd_nm_test.rag.db': cannot write in /proc ("),
        ({"gt_file": "{tmp}/missing.zarr"}, "06_evaluate: ground truth '{tmp}/missing.zarr/volumes/labels/neuron_ids' does not exist"),
        ({"gt_skeletons": "{tmp}/missing.npz"}, "06_evaluate: gt_skeletons '{tmp}/missing.npz' does not exist"),
        ({"min_cut": True, "gt_skeletons": None}, "06_evaluate: min_cut needs gt_skeletons"),
    ],
    ids=["block size", "postgresql unreachable", "sqlite not writable", "gt_file", "gt_skeletons", "min_cut"],
)
def test_the_whole_config_is_checked_before_the_first_step(tmp_path, changes, message):
    """segment.py once found a bad block_size, an unreachable database or a missing ground truth only when it reached
    the step that needs them — after prediction, GPU-hours on the paper's volumes."""
    changes = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in changes.items()}
    path = _noisy_run(tmp_path, **changes)
    done = _segment(path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: " + message.format(tmp=tmp_path)), done.stderr
    assert done.stderr.count("\n") == 1
    assert "[1/6]" not in done.stdout  # no step started
    assert not (tmp_path / "out.zarr/volumes/fragments").exists() and not (tmp_path / "out.rag.db").exists()
    # a step run alone checks the steps after it too
    alone = subprocess.run([sys.executable, str(REPO / "03_predict/02_extract_fragments.py"), str(path)], capture_output=True, text=True)
    assert alone.returncode == 2 and alone.stderr.count("\n") == 1
    assert not (tmp_path / "out.zarr/volumes/fragments").exists()


@pytest.mark.parametrize(
    "value, expected",
    [("[0, 1, 0]", "key 'thresholds'"), ('"50"', "key 'num_workers': input should be a valid integer, got \"50\""),
     ("true", "key 'num_workers': input should be a valid integer, got true"), ("0", "key 'num_workers': input should be greater than or equal to 1, got 0")],
    ids=["thresholds step 0", "a string for an integer", "a boolean for an integer", "no workers"],
)
def test_bad_values_are_one_line_errors_when_the_config_is_read(tmp_path, value, expected):
    key = "thresholds" if value.startswith("[") else "num_workers"
    path = _noisy_run(tmp_path)
    data = json.loads(path.read_text())
    data[key] = json.loads(value)
    path.write_text(json.dumps(data))
    done = _segment(path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    if key == "thresholds":
        assert done.stderr == f"error: {path}: thresholds [0.0, 1.0, 0.0]: expected [min, max, step] with step > 0 and max > min\n"
    else:
        assert done.stderr == f"error: {path}: {expected}\n"


def test_one_writer_per_out_file_and_a_dead_writers_lock_is_taken_over(tmp_path):
    """Two runs on one out_file once collided in zarr (ContainsArrayError, a traceback)."""
    import os

    path = _noisy_run(tmp_path)
    lock = tmp_path / "out.zarr.lock"
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_text(f"{sleeper.pid} {socket.gethostname()} 2026-12-01 10:00:00")
        done = _segment(path)
        assert (done.returncode, done.stderr) == (2, (
            f"error: '{tmp_path / 'out.zarr'}' is being written by process {sleeper.pid} on {socket.gethostname()} since "
            f"2026-12-01 10:00:00 (lock {lock}); wait for it to finish, or delete the lock if that run is gone\n"
        ))  # fmt: skip
        assert not (tmp_path / "out.zarr/volumes/fragments").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    done = _segment(path)  # the writer is gone now
    assert done.returncode == 0, done.stderr
    assert f"note: taking over the lock {lock} of process {sleeper.pid} (started 2026-12-01 10:00:00), which no longer runs" in done.stderr
    assert not lock.exists()
    assert os.path.exists(tmp_path / "out.zarr/volumes/segmentation_50")


def test_segment_ends_with_the_best_scores_and_where_the_outputs_are(tmp_path):
    path = _noisy_run(tmp_path)
    done = _segment(path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    best = max(i for i, line in enumerate(lines) if line.startswith("best: "))
    assert lines[best].startswith("best: threshold ") and " voi_sum " in lines[best]
    assert lines[best + 1] == "rule: the threshold with the lowest VOI sum of these scores"
    # then the seam check, one line per axis with more than one block (here: all three)
    assert [line.split()[1] for line in lines[best + 2 : -2]] == ["z", "y", "x"], lines[best:]
    assert all(line.startswith("seams: ") for line in lines[best + 2 : -2])
    assert lines[-2] == f"wrote {tmp_path / 'out.scores.csv'}, {tmp_path / 'out.scores.json'}, {tmp_path / 'out.voi_vs_threshold.png'}"
    assert lines[-1] == f"outputs: {tmp_path / 'out.zarr'} (volumes, LUTs, region graph {tmp_path / 'out.rag.db'})"


def test_a_damaged_chunk_is_named_in_one_line(tmp_path):
    path = _noisy_run(tmp_path)
    chunk = tmp_path / "out.zarr/volumes/affs/0.0.0.0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    done = _segment(path)
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"error: 02_extract_fragments: extract_fragments: block 0: {tmp_path / 'out.zarr/volumes/affs'}: chunk 0.0.0.0 "
        "cannot be decoded (RuntimeError: error during blosc decompression: -1); delete "
        f"{tmp_path / 'out.zarr/volumes/affs'} and run 01_predict_blockwise again"
    ), done.stderr
    assert done.stderr.count("\n") == 1
