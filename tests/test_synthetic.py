"""The embedded synthetic dataset: deterministic, in the bucket's layout, and neuropil-like."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage

from lsd_nm.data import NEURON_IDS, RAW, read_array
from lsd_nm.skeletons import read_skeletons, skeletons_path
from lsd_nm.synthetic import generate_volume, make_synthetic

SHAPE = (32, 128, 128)
VOXEL = (20, 9, 9)


@pytest.fixture(scope="module")
def volume():
    return generate_volume(SHAPE, VOXEL, seed=7)


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def test_same_seed_same_volume(volume):
    raw, labels = generate_volume(SHAPE, VOXEL, seed=7)
    assert np.array_equal(raw, volume[0])
    assert np.array_equal(labels, volume[1])


def test_different_seed_different_volume(volume):
    raw, labels = generate_volume(SHAPE, VOXEL, seed=8)
    assert (raw != volume[0]).mean() > 0.5
    assert (labels != volume[1]).mean() > 0.5


def test_dtypes_and_shapes(volume):
    raw, labels = volume
    assert raw.dtype == np.uint8 and raw.shape == SHAPE
    assert labels.dtype == np.uint64 and labels.shape == SHAPE
    # grey values use the range like EM does: dark membranes, bright cytoplasm
    assert raw.min() < 60 and raw.max() > 200
    assert 120 < raw.mean() < 190


def test_unlabelled_fraction(volume):
    unlabelled = (volume[1] == 0).mean()
    assert 0.01 < unlabelled < 0.12


def test_neurites_are_dense_and_touch(volume):
    labels = volume[1]
    ids = np.unique(labels[labels > 0])
    assert len(ids) >= 20
    # every labelled voxel belongs to an object, and most objects touch at least 3 others
    touching = {i: set() for i in ids.tolist()}
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        pairs = np.unique(np.stack([lo, hi], 1)[(lo != hi) & (lo > 0) & (hi > 0)], axis=0)
        for u, v in pairs.tolist():
            touching[u].add(v)
            touching[v].add(u)
    neighbours = np.array([len(touching[i]) for i in ids.tolist()])
    assert np.median(neighbours) >= 3


def test_membranes_are_dark_on_boundaries(volume):
    raw, labels = volume
    boundary = np.zeros(labels.shape, bool)
    for axis in (1, 2):
        d = np.diff(labels.astype(np.int64), axis=axis) != 0
        pad = [(0, 0)] * 3
        pad[axis] = (0, 1)
        boundary |= np.pad(d, pad)
    interior = ndimage.binary_erosion(~boundary, iterations=3)
    assert raw[boundary].mean() < raw[interior].mean() - 30


def test_neurites_are_elongated(volume):
    """Objects run through many sections: the median object spans over half of the volume's depth."""
    consecutive = np.unique(volume[1], return_inverse=True)[1].reshape(SHAPE)
    spans = [s[0].stop - s[0].start for s in ndimage.find_objects(consecutive) if s is not None]
    assert np.median(spans) > SHAPE[0] / 2


def test_isotropic_kind():
    raw, labels = generate_volume((64, 64, 64), (8, 8, 8), seed=3)
    assert raw.dtype == np.uint8 and labels.dtype == np.uint64
    assert len(np.unique(labels)) >= 8


def test_make_synthetic_layout(tmp_path, tiny_datasets_file):
    paths = make_synthetic("tiny", data_dir=tmp_path / "data", datasets_file=tiny_datasets_file, workers=2)
    assert [p.relative_to(tmp_path / "data").as_posix() for p in paths] == [
        "funke/tiny/training/a.zarr",
        "funke/tiny/training/b.zarr",
        "funke/tiny/testing/t.zarr",
    ]
    test = paths[2]
    group = zarr.open_group(test, mode="r")
    assert group.metadata.zarr_format == 2
    raw, voxel_size, offset = read_array(test, RAW)
    labels, label_voxel_size, label_offset = read_array(test, NEURON_IDS)
    assert raw.dtype == np.uint8 and labels.dtype == np.uint64
    assert raw.shape == labels.shape == (24, 96, 96)
    assert voxel_size == label_voxel_size == (20, 9, 9)
    assert offset == label_offset == (200, 90, 90)
    assert dict(group[RAW].attrs) == {"resolution": [20, 9, 9], "offset": [200, 90, 90]}
    # the same seed as the in-memory generator
    expected_raw, expected_labels = generate_volume((24, 96, 96), (20, 9, 9), seed=3)
    assert np.array_equal(raw, expected_raw) and np.array_equal(labels, expected_labels)
    assert not list((tmp_path / "data").rglob("*.partial"))


def test_make_synthetic_bytes_are_deterministic_and_resumable(tmp_path, tiny_datasets_file):
    first = make_synthetic("tiny", data_dir=tmp_path / "one", datasets_file=tiny_datasets_file)
    second = make_synthetic("tiny", data_dir=tmp_path / "two", datasets_file=tiny_datasets_file)
    for a, b in zip(first, second):
        assert digest(a) == digest(b)
        assert skeletons_path(a).read_bytes() == skeletons_path(b).read_bytes()
    # a re-run leaves complete volumes alone; a missing one is drawn again
    stamp = (first[0] / ".zgroup").stat().st_mtime_ns
    import shutil

    shutil.rmtree(first[1])
    make_synthetic("tiny", data_dir=tmp_path / "one", datasets_file=tiny_datasets_file)
    assert (first[0] / ".zgroup").stat().st_mtime_ns == stamp
    assert digest(first[1]) == digest(second[1])
    # a recipe whose shape changed in datasets.json redraws that volume only
    data = json.loads(tiny_datasets_file.read_text())
    data["tiny"]["synthetic"]["t.zarr"]["shape"] = [20, 96, 96]
    tiny_datasets_file.write_text(json.dumps(data))
    make_synthetic("tiny", data_dir=tmp_path / "one", datasets_file=tiny_datasets_file)
    assert (first[0] / ".zgroup").stat().st_mtime_ns == stamp
    assert read_array(first[2], NEURON_IDS)[0].shape == (20, 96, 96)


def test_skeletons_follow_the_labels(tmp_path, tiny_datasets_file):
    test = make_synthetic("tiny", data_dir=tmp_path, datasets_file=tiny_datasets_file)[2]
    labels, voxel_size, offset = read_array(test, NEURON_IDS)
    skeletons = read_skeletons(skeletons_path(test))
    assert skeletons["positions"].dtype == np.float32 and skeletons["positions"].shape[1] == 3
    assert len(np.unique(skeletons["node_ids"])) == len(skeletons["node_ids"])
    assert np.isin(skeletons["edges"], skeletons["node_ids"]).all()
    voxels = np.floor((skeletons["positions"] - np.array(offset)) / np.array(voxel_size)).astype(int)
    voxels = np.clip(voxels, 0, np.array(labels.shape) - 1)
    found = labels[tuple(voxels.T)]
    assert (found == skeletons["neuron_ids"]).mean() > 0.95
    # most labelled objects have a skeleton
    skeletonized = set(np.unique(skeletons["neuron_ids"]).tolist())
    sizes = {int(i): int(c) for i, c in zip(*np.unique(labels, return_counts=True)) if i != 0}
    big = [i for i, c in sizes.items() if c > 2000]
    assert sum(i in skeletonized for i in big) >= 0.9 * len(big)


def test_not_synthetic_dataset_is_an_error(tmp_path, tiny_datasets_file):
    from lsd_nm.config import ConfigError

    with pytest.raises(ConfigError, match="dataset 'real' is not synthetic"):
        make_synthetic("real", data_dir=tmp_path, datasets_file=tiny_datasets_file)


def test_script_unknown_dataset_one_line_error():
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run(
        [sys.executable, str(REPO / "01_data" / "make_synthetic.py"), "--dataset", "zebrafish"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: unknown dataset 'zebrafish' (expected one of: zebrafinch, fib25, hemi, synthetic, synthetic_iso)\n"
    )
