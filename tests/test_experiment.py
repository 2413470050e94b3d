"""Network folders: every committed config validates, the shims are identical, and configs layer as documented."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO

from lsd_nm.config import ConfigError
from lsd_nm.datasets import get_dataset
from lsd_nm.experiment import load_network_config, load_network_folder
from lsd_nm.networks import folder_io

DATASETS = ["zebrafinch", "fib25", "hemi", "synthetic"]
NETWORKS = ["baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis"]
SCRIPTS = ["mknet.py", "train.py", "predict.py", "predict_scan.py", "view_batch.py"]
FOLDERS = [REPO / "02_train" / d / n for d in DATASETS for n in NETWORKS]


def test_every_dataset_has_every_network():
    found = sorted(p.relative_to(REPO / "02_train").as_posix() for p in (REPO / "02_train").glob("*/*") if p.is_dir())
    assert found == sorted(f"{d}/{n}" for d in DATASETS for n in NETWORKS)


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates_and_shapes_work(folder):
    config = load_network_config(folder)
    assert config.network == folder.name
    assert config.dataset == folder.parent.name
    ios = folder_io(load_network_folder(folder))
    assert set(ios) == ({"train", "predict", "auto"} if folder.name in ("aclsd", "acrlsd") else {"train", "predict"})


def test_shims_are_byte_identical():
    contents = {(f / s).read_bytes() for f in FOLDERS for s in SCRIPTS}
    assert len(contents) == 1
    (shim,) = contents
    assert shim.startswith(b'"""') and b"python train.py" in shim


def test_paper_values_in_zebrafinch():
    mtlsd = load_network_config(REPO / "02_train/zebrafinch/mtlsd")
    assert mtlsd.unet.num_fmaps_out == 14
    assert mtlsd.train.labels_padding == (840, 720, 720)
    assert mtlsd.lsds.sigma == 120.0 and mtlsd.lsds.downsample == 2
    assert mtlsd.optimizer.learning_rate == 5e-5 and mtlsd.optimizer.beta1 == 0.95
    long_range = load_network_config(REPO / "02_train/zebrafinch/long_range")
    assert len(long_range.neighborhood) == 12 and long_range.neighborhood[-1] == (0, 0, -27)
    assert long_range.train.labels_padding == (780, 603, 603)
    lsd = load_network_config(REPO / "02_train/zebrafinch/lsd")
    assert lsd.train.grow_boundary is None
    acrlsd = load_network_config(REPO / "02_train/zebrafinch/acrlsd")
    assert acrlsd.autocontext.lsd_iteration == 400000 and acrlsd.train.save_every == 1000


def test_isotropic_datasets_take_the_fib25_recipe():
    for dataset in ("fib25", "hemi"):
        config = load_network_config(REPO / "02_train" / dataset / "mtlsd")
        assert config.unet.fmap_inc_factor == 6
        assert config.unet.downsample_factors == [(2, 2, 2), (2, 2, 2), (3, 3, 3)]
        assert config.lsds.sigma == 80.0
        assert len(config.train.elastic) == 2
        assert config.train.grow_boundary.only_xy is False


def write_folder(tmp_path: Path, dataset_config: dict | None, network_config: str) -> Path:
    folder = tmp_path / "toy" / "baseline"
    folder.mkdir(parents=True)
    if dataset_config is not None:
        (folder.parent / "config.json").write_text(json.dumps(dataset_config))
    (folder / "config.json").write_text(network_config)
    return folder


def test_layers_merge(tmp_path):
    folder = write_folder(tmp_path, {"unet": {"num_fmaps": 4}, "train": {"save_every": 7}}, '{"network": "baseline", "unet": {"fmap_inc_factor": 2}}')
    config = load_network_config(folder)
    assert (config.unet.num_fmaps, config.unet.fmap_inc_factor, config.train.save_every) == (4, 2, 7)
    assert config.unet.downsample_factors == [(1, 3, 3), (1, 3, 3), (3, 3, 3)]


def test_error_names_the_file_that_holds_the_key(tmp_path):
    folder = write_folder(tmp_path, {"unet": {"num_fmap": 4}}, '{"network": "baseline"}')
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value) == (
        f"{folder.parent / 'config.json'}: unknown key 'unet.num_fmap' "
        "(expected one of: downsample_factors, fmap_inc_factor, kernel_size, num_fmaps, num_fmaps_out)"
    )


def test_wrong_network_type(tmp_path):
    folder = write_folder(tmp_path, None, '{"network": "unet"}')
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value).startswith(f"{folder / 'config.json'}: key 'network': input should be 'baseline', 'lsd', 'mtlsd'")


def test_missing_network_key(tmp_path):
    folder = write_folder(tmp_path, None, "{}")
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value) == f"{folder / 'config.json'}: missing key 'network'"


def test_bad_json(tmp_path):
    folder = write_folder(tmp_path, None, '{"network": "baseline",}')
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value) == f"{folder / 'config.json'}: invalid JSON at line 1 column 24: Expecting property name enclosed in double quotes"


@pytest.mark.parametrize("dataset", ["fib25", "hemi"])
def test_isotropic_long_range_reaches_as_far_as_zebrafinch(dataset):
    """Channels 0-2 are the nearest neighbours; every other channel's reach in nm is zebrafinch's within half a voxel
    (the nearest grid point), on the same axis; the labels padding grows over the baseline's by the longest offset
    minus one voxel, as zebrafinch's does (02_train/README.md)."""
    zebrafinch = load_network_config(REPO / "02_train/zebrafinch/long_range")
    isotropic = load_network_config(REPO / "02_train" / dataset / "long_range")
    zf_voxel = np.array(get_dataset("zebrafinch").voxel_size)
    voxel = np.array(get_dataset(dataset).voxel_size)
    assert voxel.tolist() == [8, 8, 8]
    assert len(isotropic.neighborhood) == len(zebrafinch.neighborhood) == 12
    assert isotropic.neighborhood[:3] == zebrafinch.neighborhood[:3] == [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]
    for ours, theirs in zip(isotropic.neighborhood[3:], zebrafinch.neighborhood[3:]):
        ours, theirs = np.array(ours), np.array(theirs)
        assert (np.sign(ours) == np.sign(theirs)).all()
        assert (np.abs(ours * voxel - theirs * zf_voxel) <= voxel / 2).all(), (ours.tolist(), theirs.tolist())
    for name, config, v in (("zebrafinch", zebrafinch, zf_voxel), (dataset, isotropic, voxel)):
        baseline = np.array(load_network_config(REPO / "02_train" / name / "baseline").train.labels_padding)
        longest = np.abs(np.array(config.neighborhood)).max(axis=0)
        assert config.train.labels_padding == tuple((baseline + (longest - 1) * v).tolist()), name
