"""01_data/datasets.json: the 45 public volumes with their voxel sizes, plus the synthetic datasets."""

import pytest

from lsd_nm.config import ConfigError
from lsd_nm.datasets import get_dataset, load_datasets, volume_path


def test_public_volumes():
    datasets = load_datasets()
    assert {k: len(v.volumes) for k, v in datasets.items() if k in ("zebrafinch", "fib25", "hemi")} == {
        "zebrafinch": 33,
        "fib25": 4,
        "hemi": 8,
    }
    assert datasets["zebrafinch"].voxel_size == (20, 9, 9)
    assert datasets["fib25"].voxel_size == (8, 8, 8)
    assert datasets["hemi"].voxel_size == (8, 8, 8)
    assert datasets["hemi"].unlabelled_id == 2**64 - 3
    assert datasets["zebrafinch"].volumes[0] == "gt_z255-383_y1407-1663_x1535-1791.zarr"
    assert datasets["fib25"].volumes == ["tstvol-520-1.zarr", "tstvol-520-2.zarr", "trvol-250-1.zarr", "trvol-250-2.zarr"]


def test_synthetic_datasets():
    datasets = load_datasets()
    for name, voxel_size in (("synthetic", (20, 9, 9)), ("synthetic_iso", (8, 8, 8))):
        ds = datasets[name]
        assert ds.voxel_size == voxel_size
        assert len(ds.volumes) >= 3 and len(ds.test_volumes) >= 1
        seeds = [ds.synthetic[v].seed for v in ds.volumes + ds.test_volumes]
        assert len(set(seeds)) == len(seeds)  # the test volume has its own seed


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ConfigError) as e:
        get_dataset("zebrafish")
    assert str(e.value) == "unknown dataset 'zebrafish' (expected one of: zebrafinch, fib25, hemi, synthetic, synthetic_iso)"


def test_volume_path_uses_the_bucket_layout(tmp_path):
    assert volume_path("fib25", "trvol-250-1.zarr", data_dir=tmp_path) == tmp_path / "funke/fib25/training/trvol-250-1.zarr"
    assert volume_path("synthetic", "test_0.zarr", test=True, data_dir=tmp_path) == tmp_path / "funke/synthetic/testing/test_0.zarr"


def test_synthetic_recipe_must_cover_every_volume(tmp_path):
    path = tmp_path / "datasets.json"
    path.write_text('{"s": {"voxel_size": [8, 8, 8], "volumes": ["a.zarr"], "synthetic": {}}}')
    with pytest.raises(ConfigError) as e:
        load_datasets(path)
    assert str(e.value).startswith(f"{path}: key 's': value error, synthetic volumes without a recipe: ['a.zarr']")
