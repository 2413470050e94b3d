"""Issue 28: the README's "Your own data" tutorial, end to end, on a user's HDF5 volumes in a non-bucket layout.

Two generated HDF5 files (raw in ``em/image``, uint8; neuron ids in ``gt/segments``, uint64, a Voronoi tessellation
of random points with 0 on the cell faces; no voxel-size attributes; 8 nm isotropic) go through the tutorial's own
``make`` targets, run unchanged in a copy of the repository (Makefile, src, 01_data, 02_train templates, 03_predict,
its ``.venv`` a link to this one's; ``ENV_READY=`` so make does not set it up again):

    make new-dataset NAME=mine TRAIN=train.h5 TEST=test.h5 RAW_DATASET=em/image LABELS_DATASET=gt/segments
                     VOXEL_SIZE="8 8 8"
    make masks
    make mknet DATASET=mine NETWORK=mtlsd
    make train DATASET=mine NETWORK=mtlsd ITERATION=3
    make segment CONFIG=03_predict/configs/mine.json

Checked: each exits 0; the checkpoint of iteration 3 exists; every ``volumes/segmentation_<t>`` of the run config's
``extract_thresholds`` is in ``out_file`` with the shape of the test volume shrunk by the run config's context, and has
objects; the scores (``<out stem>.scores.csv``/``.scores.json``) have one row per threshold of the sweep, each with
finite VOI. Before that, the same ``make new-dataset`` without ``VOXEL_SIZE`` exits non-zero with one error line and
writes nothing.

The volumes are as small as the fib25 (isotropic) U-Net allows: training 112³ voxels (its smallest valid input),
test 124³ (its next valid input, so prediction, fragments and agglomeration are one block each).
"""

import csv
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import zarr
from scipy.spatial import cKDTree

REPO = Path(__file__).resolve().parents[1]
VOXEL_SIZE = (8, 8, 8)
TRAIN_SHAPE = (112, 112, 112)
TEST_SHAPE = (124, 124, 124)
ITERATIONS = 3


def voronoi_volume(path: Path, shape, seed: int, cells: int = 60) -> np.ndarray:
    """An HDF5 file with ``em/image`` (uint8: bright cells, dark faces, noise) and ``gt/segments`` (uint64: the Voronoi
    cells of ``cells`` random points, 0 on the faces between cells), and no attributes; returns the labels."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, shape, size=(cells, 3))
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    _, nearest = cKDTree(points).query(grid)
    labels = (nearest + 1).reshape(shape).astype(np.uint64)
    face = np.zeros(shape, bool)
    for axis in range(3):
        step = np.diff(labels, axis=axis) != 0
        face[tuple(slice(1, None) if a == axis else slice(None) for a in range(3))] |= step
    labels[face] = 0
    raw = np.where(face, 40, 200) + rng.normal(0, 20, shape)
    with h5py.File(path, "w") as f:
        f["em/image"] = np.clip(raw, 0, 255).astype(np.uint8)
        f["gt/segments"] = labels
    return labels


def user_repository(tmp_path: Path) -> Path:
    """A copy of what the tutorial's commands use, with the repository's .venv linked in."""
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "train_net_*", "snapshots", "log", "loss.*", "net_*.json", "out",
                                    "funke", "user_datasets.json", "*.zarr")  # fmt: skip
    for folder in ("src", "01_data", "02_train/fib25", "02_train/zebrafinch", "03_predict"):
        shutil.copytree(REPO / folder, repo / folder, ignore=ignore)
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(REPO / name, repo / name)
    (repo / ".venv").symlink_to((REPO / ".venv").resolve())
    return repo


def make(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LSD_NM_DATA_DIR", "PYTHONPATH", "LSD_NM_NO_VENV")}
    # the copy's package everywhere, workers included (a user's clone has its own .venv pointing at its own src)
    env.update(PYTHONPATH=str(repo / "src"), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(["make", "-s", "-C", str(repo), "ENV_READY=", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_tutorial_commands_on_a_users_hdf5_volumes(tmp_path):
    repo = user_repository(tmp_path)
    train_labels = voronoi_volume(tmp_path / "train.h5", TRAIN_SHAPE, seed=1)
    test_labels = voronoi_volume(tmp_path / "test.h5", TEST_SHAPE, seed=2)
    assert train_labels.any() and (train_labels == 0).any() and len(np.unique(test_labels)) > 10
    new_dataset = ["new-dataset", "NAME=mine", f"TRAIN={tmp_path / 'train.h5'}", f"TEST={tmp_path / 'test.h5'}",
                   "RAW_DATASET=em/image", "LABELS_DATASET=gt/segments"]  # fmt: skip
    before = sorted(p.relative_to(repo) for p in repo.rglob("*"))

    # no voxel size anywhere: one error line (make's own "Error 2" line aside), nothing written
    refused = make(repo, *new_dataset)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if not line.startswith("make")]
    assert errors == ["error: no voxel size: the volumes have no 'resolution', 'voxel_size' or OME-NGFF scale; "
                      'give VOXEL_SIZE="z y x" (nm)']  # fmt: skip
    assert sorted(p.relative_to(repo) for p in repo.rglob("*")) == before

    out = ok(make(repo, *new_dataset, "VOXEL_SIZE=8 8 8"))
    assert "voxel size [8, 8, 8] nm (given as VOXEL_SIZE)" in out and "design: isotropic (fib25's U-Net)" in out
    registry = json.loads((repo / "01_data/user_datasets.json").read_text())
    assert registry["mine"] == {"voxel_size": list(VOXEL_SIZE), "volumes": ["train.zarr"], "test_volumes": ["test.zarr"]}
    ok(make(repo, "masks"))
    ok(make(repo, "mknet", "DATASET=mine", "NETWORK=mtlsd"))
    folder = repo / "02_train/mine/mtlsd"
    assert (folder / "net_train.json").exists() and (folder / "net_predict.json").exists()
    ok(make(repo, "train", "DATASET=mine", "NETWORK=mtlsd", f"ITERATION={ITERATIONS}"))
    assert (folder / f"train_net_checkpoint_{ITERATIONS}").exists()

    config_path = repo / "03_predict/configs/mine.json"
    ok(make(repo, "segment", "CONFIG=03_predict/configs/mine.json"))
    run = json.loads(config_path.read_text())
    out_file = repo / run["out_file"]
    assert out_file.is_relative_to(repo / "03_predict/out")
    expected = tuple(s - 2 * c // v for s, c, v in zip(TEST_SHAPE, run["context"], VOXEL_SIZE))
    assert all(e > 0 for e in expected)
    for threshold in run["extract_thresholds"]:
        segmentation = zarr.open_array(out_file / f"volumes/segmentation_{round(100 * threshold)}", mode="r")
        assert segmentation.shape == expected and list(segmentation.attrs["resolution"]) == list(VOXEL_SIZE)
        assert segmentation[:].any()

    start, stop, step = run["thresholds"]
    stem = out_file.name.removesuffix(".zarr")
    with open(out_file.with_name(f"{stem}.scores.csv")) as f:
        rows = list(csv.DictReader(f))
    scores = json.loads(out_file.with_name(f"{stem}.scores.json").read_text())
    thresholds = [float(row["threshold"]) for row in rows]
    assert len(rows) == len(scores["rows"]) >= len(np.arange(start, stop, step)) and thresholds == sorted(thresholds)
    assert all(any(math.isclose(t, e) for t in thresholds) for e in run["extract_thresholds"])
    for row, entry in zip(rows, scores["rows"]):
        for key in ("voi_split", "voi_merge", "voi_sum"):
            assert math.isfinite(float(row[key])) and float(row[key]) >= 0
            assert entry[key] == float(row[key])
    assert scores["best"]["voi_sum"] == min(r["voi_sum"] for r in scores["rows"])
