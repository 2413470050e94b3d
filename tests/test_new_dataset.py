"""new-dataset: a user's HDF5/OME-Zarr volumes → registry entry, converted volumes, 02_train and 03_predict configs."""

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr

from lsd_nm.cli import main
from lsd_nm.experiment import load_network_config
from lsd_nm.networks import unet_output_shape

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def root(tmp_path):
    for template in ("fib25", "zebrafinch"):
        shutil.copytree(REPO / "02_train" / template, tmp_path / "repo" / "02_train" / template,
                        ignore=shutil.ignore_patterns("train_net_*", "snapshots", "log", "*.png", "net_*.json"))
    return tmp_path


def h5_volume(path: Path, shape=(128, 128, 128), raw_dtype=np.uint8, labels=None):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f["em/image"] = rng.integers(0, 200, shape).astype(raw_dtype)
        f["gt/segments"] = labels if labels is not None else (np.arange(np.prod(shape)).reshape(shape) // 40000 + 1)
    return path


def run(root: Path, *args: str) -> int:
    return main(["new-dataset", "--root", str(root / "repo"), "--data-dir", str(root / "data"),
                 "--raw-dataset", "em/image", "--labels-dataset", "gt/segments", *args])


def test_hdf5_isotropic(root, capsys):
    h5_volume(root / "a.h5")
    assert run(root, "--name", "mine", "--train", str(root / "a.h5"), "--voxel-size", "8", "8", "8") == 0
    out = capsys.readouterr().out
    assert "design: isotropic (fib25's U-Net)" in out and "LSD sigma 80 nm" in out
    volume = root / "data/funke/mine/training/a.zarr"
    labels = zarr.open_array(volume / "volumes/labels/neuron_ids")
    assert labels.dtype == np.uint64 and labels.attrs["resolution"] == [8, 8, 8]
    assert zarr.open_array(volume / "volumes/labels/labels_mask")[:].all()
    entry = json.loads((root / "data/user_datasets.json").read_text())
    assert entry == {"mine": {"voxel_size": [8, 8, 8], "volumes": ["a.zarr"]}}
    for network in ("baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis"):
        folder = root / "repo/02_train/mine" / network
        assert (folder / "train.py").read_bytes() == (REPO / "02_train/fib25" / network / "train.py").read_bytes()
    config = load_network_config(root / "repo/02_train/mine/mtlsd")
    assert config.lsds.sigma == 80 and all(s <= 128 for s in config.input_shape)
    unet_output_shape(config.unet, config.input_shape)
    run_config = json.loads((root / "repo/03_predict/configs/mine.json").read_text())
    assert all(b % 8 == 0 for b in run_config["block_size"]) and run_config["gt_file"] == str(volume)


def test_ome_zarr_voxel_size(root, capsys):
    group = zarr.open_group(root / "b.zarr", mode="w", zarr_format=2)
    raw = group.require_group("em/image")
    raw.create_array("0", data=np.full((48, 220, 220), 7, np.uint8))
    raw.attrs["multiscales"] = [{"datasets": [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [40, 8, 8]}]}]}]
    group.require_group("gt").create_array("segments", data=np.ones((48, 220, 220), np.uint32))
    assert run(root, "--name", "ome", "--train", str(root / "b.zarr")) == 0
    out = capsys.readouterr().out
    assert "voxel size [40, 8, 8] nm (from b.zarr's OME-NGFF scale)" in out and "anisotropic" in out
    assert "LSD sigma 140 nm" in out


@pytest.mark.parametrize("case, message", [
    ("no_voxel_size", 'error: no voxel size: the volumes have no \'resolution\', \'voxel_size\' or OME-NGFF scale; '
                      'give VOXEL_SIZE="z y x" (nm)'),
    ("missing", "error: raw dataset 'em/image' is not in '{root}/a.h5' (its datasets: gt/segments)"),
    ("uint16", "error: raw '{root}/a.h5/em/image' is uint16, not uint8; pass --rescale (RESCALE=1) to map its range "
               "to 0-255"),
    ("zeros", "error: labels '{root}/a.h5/gt/segments' are all 0 (no objects to learn from)"),
    ("shapes", "error: a.h5: raw is [128, 128, 128] voxels but gt/segments is [128, 128, 64]"),
])
def test_refusals(root, capsys, case, message):
    h5_volume(root / "a.h5", raw_dtype=np.uint16 if case == "uint16" else np.uint8,
              labels=np.zeros((128, 128, 64) if case == "shapes" else (128, 128, 128), np.uint64) + (case == "shapes"))
    if case == "missing":
        with h5py.File(root / "a.h5", "a") as f:
            del f["em"]
    voxel_size = [] if case == "no_voxel_size" else ["--voxel-size", "8", "8", "8"]
    args = ["--name", "mine", "--train", str(root / "a.h5"), *voxel_size]
    assert run(root, *args) == 2
    assert capsys.readouterr().err.strip() == message.format(root=root)
    assert not (root / "data").exists() and not (root / "repo/02_train/mine").exists()


def test_existing_name_refused(root, capsys):
    h5_volume(root / "a.h5")
    args = ["--name", "mine", "--train", str(root / "a.h5"), "--voxel-size", "8", "8", "8"]
    assert run(root, *args) == 0
    capsys.readouterr()
    assert run(root, *args) == 2
    assert capsys.readouterr().err.strip() == (f"error: dataset 'mine' exists ({root}/repo/02_train/mine); "
                                               "pass --force (FORCE=1) to replace it")
    assert run(root, *args, "--force") == 0


def nothing_written(root: Path) -> bool:
    return not (root / "data").exists() and not (root / "repo/02_train/mine").exists() \
        and not (root / "repo/03_predict").exists()


@pytest.mark.parametrize("voxel_size, neighborhood, padding", [
    # zebrafinch's own voxel size: its own offsets and padding (02_train/zebrafinch/long_range)
    ((20, 9, 9), [[-3, 0, 0], [0, -3, 0], [0, 0, -3], [-5, 0, 0], [0, -9, 0], [0, 0, -9],
                  [-15, 0, 0], [0, -27, 0], [0, 0, -27]], [780, 603, 603]),
    # 60/40 = 1.5 → 2, 100/40 = 2.5 → 3, 300/40 = 7.5 → 8; 27/8 = 3.4 → 3, 81/8 = 10.1 → 10, 243/8 = 30.4 → 30;
    # padding: zebrafinch's baseline (500, 369, 369) + (7·40, 29·8, 29·8)
    ((40, 8, 8), [[-2, 0, 0], [0, -3, 0], [0, 0, -3], [-3, 0, 0], [0, -10, 0], [0, 0, -10],
                  [-8, 0, 0], [0, -30, 0], [0, 0, -30]], [780, 601, 601]),
    # 8 nm isotropic: fib25's and hemi's (02_train/fib25/long_range), with fib25's baseline padding (376, 536, 536)
    ((8, 8, 8), [[-8, 0, 0], [0, -3, 0], [0, 0, -3], [-13, 0, 0], [0, -10, 0], [0, 0, -10],
                 [-38, 0, 0], [0, -30, 0], [0, 0, -30]], [672, 768, 768]),
])
def test_long_range_offsets_fit_the_voxel_size(root, capsys, voxel_size, neighborhood, padding):
    shape = (128, 128, 128) if voxel_size == (8, 8, 8) else (48, 220, 220)
    h5_volume(root / "a.h5", shape=shape)
    size = [str(v) for v in voxel_size]
    assert run(root, "--name", "mine", "--train", str(root / "a.h5"), "--voxel-size", *size) == 0
    out = capsys.readouterr().out
    nearest = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]
    assert f"long-range offsets {nearest + neighborhood} voxels: channels 0-2 the nearest neighbours" in out
    config = load_network_config(root / "repo/02_train/mine/long_range")
    assert [list(o) for o in config.neighborhood] == nearest + neighborhood
    assert list(config.train.labels_padding) == padding
    if voxel_size == (8, 8, 8):
        fib25 = load_network_config(REPO / "02_train/fib25/long_range")
        assert config.neighborhood == fib25.neighborhood and config.train.labels_padding == fib25.train.labels_padding


def test_long_range_offsets_stay_apart_when_z_is_coarse():
    """At 50 nm, zebrafinch's 60 nm z reach is 1.2 voxels: rounded to 1 it would repeat channel 0, so it is 2."""
    from lsd_nm.new_dataset import long_range_neighborhood

    z = [o[0] for o in long_range_neighborhood((50, 4, 4)) if o[0]]
    y = [o[1] for o in long_range_neighborhood((50, 4, 4)) if o[1]]
    assert z == [-1, -2, -3, -6] and y == [-1, -7, -20, -61]  # y: 27/4 = 6.75, 81/4 = 20.25, 243/4 = 60.75


def test_conversion_is_block_by_block_and_equals_the_input(root, monkeypatch):
    """A volume of 3 × 2 × 2 output chunks, converted with blocks of one chunk: the same voxels, never more read."""
    import lsd_nm.new_dataset as nd
    from lsd_nm.new_dataset import new_dataset

    shape = (48, 220, 220)
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, shape).astype(np.uint8)
    labels = rng.integers(0, 5, shape).astype(np.uint32)
    with h5py.File(root / "a.h5", "w") as f:
        f.create_dataset("em/image", data=raw, chunks=(8, 64, 64))
        f.create_dataset("gt/segments", data=labels, chunks=(8, 64, 64))
        f["em/image"].attrs["resolution"] = [40, 8, 8]
    sizes = []

    def counted(*args, **kwargs):
        for block in blocks(*args, **kwargs):
            sizes.append(int(np.prod([s.stop - s.start for s in block])))
            yield block

    blocks = nd.blocks
    monkeypatch.setattr(nd, "blocks", counted)
    one_chunk = 16 * 128 * 128
    new_dataset("mine", [root / "a.h5"], raw_dataset="em/image", labels_dataset="gt/segments",
                root=root / "repo", data_dir=root / "data", max_voxels=one_chunk)
    volume = root / "data/funke/mine/training/a.zarr"
    out_raw = zarr.open_array(volume / "volumes/raw")
    out_labels = zarr.open_array(volume / "volumes/labels/neuron_ids")
    assert out_raw.chunks == (16, 128, 128) and out_raw.dtype == np.uint8 and out_labels.dtype == np.uint64
    assert np.array_equal(out_raw[:], raw) and np.array_equal(out_labels[:], labels.astype(np.uint64))
    assert out_raw.attrs["resolution"] == [40, 8, 8] and out_raw.attrs["offset"] == [0, 0, 0]
    # 12 blocks each: labels checked (raw is uint8: no range to read), then raw and labels written
    assert max(sizes) <= one_chunk and sum(sizes) == 3 * np.prod(shape) and len(sizes) == 3 * 12


@pytest.mark.parametrize("dtype, values, low, high, expected", [
    (np.uint16, [1000, 2000, 3000], "1000", "3000", [0, 128, 255]),  # (2000 - 1000) · 255 / 2000 = 127.5 → 128
    (np.float32, [-1.0, 0.0, 0.5, 1.0], "-1", "1", [0, 128, 191, 255]),  # 1.5 · 127.5 = 191.25 → 191
])
def test_rescale_maps_the_range_to_uint8_and_says_it(root, capsys, dtype, values, low, high, expected):
    shape = (128, 128, 128)
    raw = np.full(shape, values[1], dtype)
    raw.flat[:len(values)] = values
    with h5py.File(root / "a.h5", "w") as f:
        f["em/image"] = raw
        f["gt/segments"] = np.ones(shape, np.uint8)
    assert run(root, "--name", "mine", "--train", str(root / "a.h5"), "--voxel-size", "8", "8", "8",
               "--rescale") == 0
    out = capsys.readouterr().out
    assert f"raw a.h5 ({np.dtype(dtype)}) rescaled from [{low}, {high}] (its minimum and maximum) to [0, 255]" in out
    converted = zarr.open_array(root / "data/funke/mine/training/a.zarr/volumes/raw")
    assert converted.dtype == np.uint8 and converted[0, 0, :len(values)].tolist() == expected


@pytest.mark.parametrize("case, message", [
    ("raw_vs_labels", "error: a.h5: raw has voxel size [8, 8, 8] nm but gt/segments [16, 8, 8]"),
    ("attr_vs_given", "error: VOXEL_SIZE [10, 10, 10] disagrees with a.h5's attr 'resolution' [8, 8, 8]"),
])
def test_voxel_sizes_that_disagree_are_one_line_and_nothing_is_written(root, capsys, case, message):
    h5_volume(root / "a.h5")
    with h5py.File(root / "a.h5", "a") as f:
        f["em/image"].attrs["resolution"] = [8, 8, 8]
        if case == "raw_vs_labels":
            f["gt/segments"].attrs["resolution"] = [16, 8, 8]
    given = ["--voxel-size", "10", "10", "10"] if case == "attr_vs_given" else []
    assert run(root, "--name", "mine", "--train", str(root / "a.h5"), *given) == 2
    assert capsys.readouterr().err.strip() == message
    assert nothing_written(root)


def test_make_new_dataset_runs_the_command_line(root, capsys):
    """`make new-dataset NAME=… TRAIN=…` writes what `lsd-nm new-dataset` writes, and prints the same."""
    h5_volume(root / "a.h5")
    other = root / "other"
    shutil.copytree(root / "repo", other / "repo")
    assert run(other, "--name", "mine", "--train", str(root / "a.h5"), "--voxel-size", "8", "8", "8") == 0
    cli_out = capsys.readouterr().out
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "new-dataset", "NAME=mine", f"TRAIN={root / 'a.h5'}", "RAW_DATASET=em/image",
         "LABELS_DATASET=gt/segments", "VOXEL_SIZE=8 8 8", f"ARGS=--root {root / 'repo'} --data-dir {root / 'data'}"],
        capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == cli_out.replace(str(other), str(root))
    ours = sorted(p.relative_to(root) for p in [*root.glob("data/**/*"), *root.glob("repo/**/*")] if p.is_file())
    theirs = sorted(p.relative_to(other) for p in [*other.glob("data/**/*"), *other.glob("repo/**/*")] if p.is_file())
    assert ours == theirs and len(ours) > 50
    for path in ours:
        mine, cli = (root / path).read_bytes(), (other / path).read_bytes()
        assert mine == cli.replace(str(other).encode(), str(root).encode()), path
