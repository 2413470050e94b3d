"""new-dataset: a user's HDF5/OME-Zarr volumes → registry entry, converted volumes, 02_train and 03_predict configs."""

import json
import shutil
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
