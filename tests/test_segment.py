"""segment.py: the whole 03_predict chain on a small synthetic volume with a seeded network, then resumed."""

import json
import subprocess
import sys

import numpy as np
import zarr
from conftest import REPO
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
