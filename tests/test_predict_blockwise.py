"""Blockwise prediction: equals the in-memory Scan prediction, resumes, predicts LSDs first for autocontext nets."""

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

from conftest import REPO
from lsd_nm.config import ConfigError
from lsd_nm.data import RAW, write_container
from lsd_nm.predict import predict_scan
from lsd_nm.predict_blockwise import predict_blockwise
from lsd_nm.run_config import RunConfig
from test_predict import OFFSET, VOXEL, make_network


@pytest.fixture
def raw_file(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=(30, 104, 104), dtype=np.uint8)
    path = tmp_path / "raw.zarr"
    write_container(path, {RAW: raw}, VOXEL, OFFSET)
    return path


def run_config(tmp_path, folder, raw_file, **extra):
    return RunConfig.model_validate({"setup": str(folder), "raw_file": str(raw_file), "out_file": str(tmp_path / "out.zarr"), "num_workers": 1, "device": "cpu", **extra})


@pytest.mark.parametrize("workers", [1, 2])
def test_blockwise_equals_scan(tmp_path, raw_file, workers):
    folder, _ = make_network(tmp_path / "toy", "mtlsd", unet={"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2], [1, 2, 2]], "num_fmaps_out": 5})
    config = run_config(tmp_path, folder, raw_file, num_workers=workers)
    result = predict_blockwise(config, progress=False)
    assert result.processed == result.total > 1
    scan = zarr.open_group(predict_scan(folder, raw_file=raw_file, device="cpu"), mode="r")
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    for name, scan_name in (("volumes/affs", "pred_affs"), ("volumes/lsds", "pred_lsds")):
        assert out[name].dtype == np.uint8
        assert out[name].shape == scan[scan_name].shape
        assert out[name].attrs["offset"] == scan[scan_name].attrs["offset"]
        assert out[name].attrs["resolution"] == [20, 9, 9]
        assert np.abs(out[name][:].astype(int) - scan[scan_name][:].astype(int)).max() <= 1
    # a second run skips every block and leaves the output as it was
    before = out["volumes/affs"][:]
    again = predict_blockwise(config, progress=False)
    assert again.processed == 0 and again.skipped == result.total
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "out.zarr", mode="r")["volumes/affs"][:], before)


def test_autocontext_predicts_lsds_first(tmp_path, raw_file):
    make_network(tmp_path / "toy", "lsd", seed=1)
    folder, _ = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    predict_blockwise(run_config(tmp_path, folder, raw_file), progress=False)
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    affs, lsds = out["volumes/affs"], out["volumes/lsds"]
    assert affs.shape[0] == 3 and lsds.shape[0] == 10
    # the LSDs cover what the affs net reads: the affinities' region grown by the context (10, 20, 20) voxels
    assert [a - c for a, c in zip(affs.attrs["offset"], (200, 180, 180))] == lsds.attrs["offset"]
    assert lsds[:].max() > 0


def test_bad_inputs(tmp_path, raw_file):
    folder, _ = make_network(tmp_path / "toy", "baseline")
    with pytest.raises(ConfigError, match="is not inside the raw volume"):
        predict_blockwise(run_config(tmp_path, folder, raw_file, roi_offset=[0, 0, 0], roi_shape=[200, 900, 900]), progress=False)
    with pytest.raises(ConfigError, match="no checkpoint for iteration 9"):
        predict_blockwise(run_config(tmp_path, folder, raw_file, iteration=9), progress=False)
    assert not (tmp_path / "out.zarr").exists()
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"setup": str(folder), "raw_file": str(tmp_path / "none.zarr"), "out_file": str(tmp_path / "o.zarr")}))
    result = subprocess.run([sys.executable, str(REPO / "03_predict/01_predict_blockwise.py"), str(cfg)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: raw '{tmp_path / 'none.zarr/volumes/raw'}' does not exist\n"
    assert not (tmp_path / "o.zarr").exists()
