"""view_batch.py: a training snapshot in neuroglancer, with z/y/x dims, voxel offsets, LSD channel choice, screenshot."""

import io
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from s3_server import REPO

from lsd_nm.synthetic import generate_volume
from lsd_nm.view_batch import BatchLayer, build_batch_state, find_snapshot, read_snapshot

VOXEL_SIZE = (20, 9, 9)
RAW_SHAPE, OUT_SHAPE = (12, 64, 64), (4, 32, 32)
# a batch's ROIs share their centre, the origin (as gunpowder's requests in lsd_nm.pipelines): offsets are negative
RAW_OFFSET = (-120, -288, -288)  # nm: (-6, -32, -32) voxels
OUT_OFFSET = (-40, -144, -144)  # nm: (-2, -16, -16) voxels


def write_snapshot(path: Path, iteration: int = 1, loss: float = 0.25) -> None:
    """An mtlsd snapshot in the layout of :class:`lsd_nm.nodes.snapshot.Snapshot` (dataset names as in
    ``lsd_nm.pipelines.SNAPSHOT_DATASETS``): raw around a smaller output region of ids, mask, targets, predictions."""
    raw, labels = generate_volume(RAW_SHAPE, VOXEL_SIZE, 3)
    crop = tuple(slice((r - o) // 2, (r + o) // 2) for r, o in zip(RAW_SHAPE, OUT_SHAPE))
    ids = labels[crop].astype(np.uint64)
    affs = np.stack([np.ones(OUT_SHAPE, np.float32)] + [(ids == np.roll(ids, 1, axis)).astype(np.float32) for axis in (1, 2)])
    lsds = np.stack([np.full(OUT_SHAPE, c / 10, np.float32) for c in range(10)])  # channel c holds c / 10
    arrays = {
        "volumes/raw": (raw.astype(np.float32) / 255, RAW_OFFSET),
        "volumes/labels/neuron_ids": (ids, OUT_OFFSET),
        "volumes/labels/mask": (np.ones(OUT_SHAPE, np.uint8), OUT_OFFSET),
        "volumes/gt_affinities": (affs, OUT_OFFSET),
        "volumes/pred_affinities": (0.5 + 0.4 * (affs - 0.5), OUT_OFFSET),
        "volumes/affs_gradient": (affs - 0.5, OUT_OFFSET),
        "volumes/gt_lsds": (lsds, OUT_OFFSET),
        "volumes/pred_lsds": (np.roll(lsds, 3, axis=0), OUT_OFFSET),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["iteration"] = iteration
        f.attrs["loss"] = loss
        for name, (data, offset) in arrays.items():
            dataset = f.create_dataset(name, data=data, compression="gzip")
            dataset.attrs["offset"] = offset
            dataset.attrs["resolution"] = VOXEL_SIZE


@pytest.fixture
def folder(tmp_path) -> Path:
    """A network folder with the repository's shim and snapshots of iterations 1 and 501 (and an unfinished one)."""
    path = tmp_path / "02_train/synthetic/mtlsd"
    path.mkdir(parents=True)
    shutil.copy(REPO / "02_train/synthetic/mtlsd/view_batch.py", path / "view_batch.py")
    write_snapshot(path / "snapshots/batch_1.hdf", 1, 0.25)
    write_snapshot(path / "snapshots/batch_501.hdf", 501, 0.0625)
    (path / "snapshots/batch_1001.hdf.partial").write_bytes(b"")
    return path


def run_shim(folder: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python view_batch.py ARGS`` in a network folder (its package path does not exist: the installed one is used)."""
    return subprocess.run(
        [sys.executable, str(folder / "view_batch.py"), *args], capture_output=True, text=True, timeout=timeout, cwd=folder
    )


def test_layers_with_voxel_size_and_offset_in_voxels(folder):
    layers, data, attrs = read_snapshot(folder / "snapshots/batch_501.hdf")
    assert attrs == {"iteration": 501, "loss": 0.0625}
    out = lambda name, path, kind, display, channels, shape=OUT_SHAPE: BatchLayer(  # noqa: E731
        name, path, kind, shape, VOXEL_SIZE, OUT_OFFSET, display, channels
    )
    assert layers[:2] == [
        BatchLayer("raw", "volumes/raw", "image", RAW_SHAPE, VOXEL_SIZE, RAW_OFFSET, "raw", ()),
        out("neuron_ids", "volumes/labels/neuron_ids", "segmentation", "segmentation", ()),
    ]
    assert layers[2:5] == [
        out("gt_lsds", "volumes/gt_lsds", "channels", "rgb", (0, 1, 2), (10, *OUT_SHAPE)),
        out("pred_lsds", "volumes/pred_lsds", "channels", "rgb", (0, 1, 2), (10, *OUT_SHAPE)),
        out("gt_affinities", "volumes/gt_affinities", "channels", "rgb", (0, 1, 2), (3, *OUT_SHAPE)),
    ]
    assert [(layer.name, layer.display) for layer in layers[5:]] == [
        ("pred_affinities", "rgb"), ("affs_gradient", "grayscale"), ("mask", "grayscale")
    ]
    assert layers[6].value_scale == pytest.approx(1 / np.sqrt(0.75))  # the (99th percentile) gradient magnitude is white
    assert layers[0].voxel_offset == (-6, -32, -32) and layers[1].voxel_offset == (-2, -16, -16)  # nm / voxel size
    assert data["neuron_ids"].dtype == np.uint64 and data["mask"].dtype == np.float32 and data["mask"].max() == 1
    assert [layer.channels for layer in read_snapshot(folder / "snapshots/batch_1.hdf", (3, 4, 5))[0][2:5]] == [
        (3, 4, 5), (3, 4, 5), (0, 1, 2)  # the LSD channels are chosen; affinities keep theirs
    ]


def test_viewer_state(folder):
    import neuroglancer

    layers, data, _ = read_snapshot(folder / "snapshots/batch_501.hdf", (3, 4, 5))
    state = neuroglancer.ViewerState()
    build_batch_state(state, layers, data, size=(800, 600))
    names = ["raw", "neuron_ids", "gt_lsds", "pred_lsds", "gt_affinities", "pred_affinities", "affs_gradient", "mask"]
    assert [layer.name for layer in state.layers] == names
    assert [layer.type for layer in state.layers] == ["image", "segmentation"] + ["image"] * 6
    assert list(state.dimensions.names) == ["z", "y", "x"]
    assert list(state.dimensions.scales) == pytest.approx([20e-9, 9e-9, 9e-9], rel=1e-12)  # stored in metres
    raw = state.layers["raw"].source[0].url
    assert list(raw.dimensions.names) == ["z", "y", "x"] and list(raw.voxel_offset) == [-6, -32, -32]
    lsds = state.layers["gt_lsds"].source[0].url
    assert list(lsds.dimensions.names) == ["c^", "z", "y", "x"] and list(lsds.voxel_offset) == [0, -2, -16, -16]
    assert list(lsds.dimensions.scales) == pytest.approx([1, 20e-9, 9e-9, 9e-9], rel=1e-12)
    assert state.layers["neuron_ids"].source[0].url.volume_type == "segmentation"
    for name, channels in (("gt_lsds", (3, 4, 5)), ("pred_lsds", (3, 4, 5)), ("gt_affinities", (0, 1, 2))):
        shader = state.layers[name].shader
        assert "emitRGB" in shader and all(f"getDataValue({c})" in shader for c in channels), shader
        assert not any(f"getDataValue({c})" in shader for c in set(range(10)) - set(channels)), shader
    assert "emitGrayscale" in state.layers["affs_gradient"].shader and "emitGrayscale" in state.layers["mask"].shader
    # a y-x section per panel: raw under the ids, then every other layer beside it, 4 × 2 in 800 × 600
    assert list(state.display_dimensions) == ["x", "y", "z"]
    rows = state.layout.children
    assert [[list(panel.layers) for panel in row.children] for row in rows] == [
        [["raw", "neuron_ids"], ["gt_lsds"], ["pred_lsds"], ["gt_affinities"]],
        [["pred_affinities"], ["affs_gradient"], ["mask"]],
    ]
    assert all(panel.layout.type == "xy" for row in rows for panel in row.children)
    assert list(state.position) == [0.5, 0.5, 0.5]  # the middle voxel of the output region, in voxels
    assert not neuroglancer.server.is_server_running()


def test_the_newest_snapshot_unless_an_iteration_is_given(folder):
    assert find_snapshot(folder) == folder / "snapshots/batch_501.hdf"  # not the unfinished batch_1001
    assert find_snapshot(folder, 1) == folder / "snapshots/batch_1.hdf"


def test_errors_are_one_line(folder, tmp_path):
    empty = tmp_path / "02_train/synthetic/lsd"
    empty.mkdir(parents=True)
    shutil.copy(folder / "view_batch.py", empty / "view_batch.py")
    cases = [
        (empty, [], f"error: {empty}/snapshots: no snapshots (training writes snapshots/batch_<iteration>.hdf every "
         "train.snapshot_every iterations, the first at iteration 1: run `python train.py N` first)"),
        (folder, ["7"], f"error: {folder}/snapshots: no snapshot of iteration 7 (available: 1, 501)"),
        (folder, ["seven"], "error: lsd-nm view-batch: argument ITERATION: expected an integer iteration, got 'seven'"),
        (folder, ["--lsd-channels", "3,4"],
         "error: lsd-nm view-batch: argument --lsd-channels: expected three comma-separated LSD channels such as 3,4,5, "
         "got '3,4'"),
        (folder, ["--lsd-channels", "3,4,12"],
         "error: lsd-nm view-batch: argument --lsd-channels: expected LSD channels in 0–9, got '3,4,12'"),
        (folder, ["--file", str(tmp_path / "batch_9.hdf")], f"error: {tmp_path / 'batch_9.hdf'}: no such snapshot file"),
        (folder, ["1", "--file", str(folder / "snapshots/batch_1.hdf")],
         f"error: give a snapshot ITERATION or --file, not both (got 1 and {folder / 'snapshots/batch_1.hdf'})"),
    ]
    # the scripts run side by side: each spends most of its time importing
    procs = [
        subprocess.Popen([sys.executable, str(where / "view_batch.py"), *args], cwd=where, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for where, args, _ in cases
    ]
    for proc, (_, args, message) in zip(procs, cases):
        _, stderr = proc.communicate(timeout=120)
        assert (proc.returncode, stderr) == (2, message + "\n"), args


def test_screenshot_in_headless_chromium(folder, tmp_path, chromium):
    from PIL import Image

    out = tmp_path / "shots" / "batch.png"
    result = run_shim(folder, "1", "--lsd-channels", "3,4,5", "--screenshot", str(out), "--size", "400", "300")
    assert result.returncode == 0, result.stderr
    summary, url, written = result.stdout.splitlines()[-3:]
    assert summary.startswith(f"{folder / 'snapshots/batch_1.hdf'} (iteration 1, loss 0.25): raw (raw), neuron_ids (segmentation)")
    assert url.startswith("http://127.0.0.1:") and written == str(out)
    image = Image.open(io.BytesIO(out.read_bytes()))
    assert image.format == "PNG" and image.size == (400, 300)
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 20  # not blank
    # 4 + 3 panels, 150 pixels high (the first row's 100 wide). LSD channels 3, 4, 5 as RGB: 0.3, 0.4, 0.5 in gt_lsds
    # (2nd panel), and 0.0, 0.1, 0.2 in pred_lsds (3rd panel; its channels are rolled by 3)
    for x, expected in ((135, (0.3, 0.4, 0.5)), (235, (0.0, 0.1, 0.2))):
        middle = np.median(pixels[60:90, x : x + 30].reshape(-1, 3), axis=0)
        assert np.abs(middle - np.array(expected) * 255).max() < 10, (x, middle)
    # affs_gradient (the middle of the last row's 3 panels): magnitude sqrt(3 × 0.5²) everywhere, negative channels
    # included (GLSL's pow would be undefined), is the 99th percentile, so white
    assert np.median(pixels[210:240, 185:215]) > 245
    # the ids over raw (1st panel) in colour, not grey
    first = pixels[60:90, 35:65]
    assert ((first.max(axis=2) - first.min(axis=2)) > 20).mean() > 0.5
    assert not list(out.parent.glob("*.partial"))
