"""make fetch-test-data, make fetch-published and make reproduce for the datasets with dense ground truth: hemi (its
zarr, the unlabelled id 2^64 − 3, a mask, a region graph per ROI) and FIB-25 (its N5, converted), against moto on
loopback holding tiny data in the bucket's layout."""

from __future__ import annotations

import csv
import json
import subprocess

import bson
import numpy as np
import pytest
import zarr
from conftest import REPO
from s3_server import bucket, moto_endpoint  # noqa: F401

OFFSET = (800, 800, 800)
VOXEL = (8, 8, 8)
UNLABELLED = 2**64 - 3


def dump(docs) -> bytes:
    return b"".join(bson.encode({"_id": bson.ObjectId(), **doc}) for doc in docs)


def labels(unlabelled: int) -> np.ndarray:
    """4 × 4 × 8 voxels (z, y, x): label 5 at x < 5; label 6 at x ≥ 5, y < 2; ``unlabelled`` at x ≥ 5, y ≥ 2; the
    plane z = 3 is label 7 everywhere (outside the mask)."""
    gt = np.full((4, 4, 8), 5, np.uint64)
    gt[:, :2, 5:] = 6
    gt[:, 2:, 5:] = unlabelled
    gt[3] = 7
    return gt


FRAGMENTS = np.where(np.arange(8) < 4, 1, 2).astype(np.uint64) * np.ones((4, 4, 8), np.uint64)
"""Fragment 1 at x < 4, fragment 2 at x ≥ 4: label 5's column x = 4 lies in fragment 2."""


def entropy(*counts) -> float:
    p = np.asarray(counts, np.float64) / sum(counts)
    return float(-np.sum(p * np.log2(p)))


def expected_best() -> dict:
    """Per plane z < 3 (the mask leaves out z = 3; 2^64 − 3 is no label): label 5 on 20 voxels (16 in fragment 1, 4 in
    2), label 6 on 6 (in fragment 2). Apart (t < 0.5): VOI sum = 20/26·H(16, 4) + 10/26·H(4, 6) = 0.929; joined (t ≥
    0.5): 0 + H(20, 6) = 0.779, the lowest."""
    apart = 20 / 26 * entropy(16, 4) + 10 / 26 * entropy(4, 6)
    joined = entropy(20, 6)
    assert joined < apart
    return {"threshold": 0.5, "voi_split": 0.0, "voi_merge": joined}


def zarr_array(path, data, voxel_size=VOXEL, offset=OFFSET) -> None:
    array = zarr.open_array(path, mode="w", shape=data.shape, chunks=(2, 4, 4), dtype=data.dtype, zarr_format=2)
    array[:] = data
    array.attrs.update({"resolution": list(voxel_size), "offset": list(offset)})


def put_region_graph(bucket, dataset: str, network: str, run: str) -> None:
    rag = f"funke/{dataset}/testing/segmentations/data.zarr/rags/{network}/{run}"
    centre = {"center_z": 816, "center_y": 816}
    bucket.put(f"{rag}/nodes.bson", dump([{"id": 1, **centre, "center_x": 816}, {"id": 2, **centre, "center_x": 848}]))
    bucket.put(f"{rag}/edges_hist_quant_75.bson", dump([{"u": 1, "v": 2, "merge_score": 0.5, "agglomerated": True}]))


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args, "ENV_READY="], capture_output=True, text=True)


def report(path) -> dict:
    with open(path) as f:
        return {r["roi"]: r for r in csv.DictReader(f)}


def test_hemi_unlabelled_id_and_mask(bucket, tmp_path):
    bucket.put("funke/structure.md", b"# map\n")
    gt = "funke/hemi/testing/ground_truth/data.zarr"
    for key in (f"{gt}/.zgroup", f"{gt}/volumes/.zgroup", f"{gt}/volumes/roi_1/.zgroup"):
        bucket.put(key, b'{"zarr_format": 2}')
    mask = np.ones((4, 2, 4), np.uint8)
    mask[3] = 0  # at 8 × 16 × 16 nm: the plane z = 3 is outside
    zarr_array(tmp_path / "mask", mask, voxel_size=(8, 16, 16))
    bucket.upload_tree(tmp_path / "mask", f"{gt}/volumes/mask")
    for name, data in (("consolidated_ids", labels(UNLABELLED)), ("neuron_ids", labels(UNLABELLED)), ("raw", np.zeros((4, 4, 8), np.uint8))):
        zarr_array(tmp_path / name, data)
        bucket.upload_tree(tmp_path / name, f"{gt}/volumes/roi_1/{name}")
    zarr_array(tmp_path / "fragments", FRAGMENTS)
    bucket.upload_tree(tmp_path / "fragments", "funke/hemi/testing/segmentations/data.zarr/volumes/MTLSD/roi_1/fragments")
    put_region_graph(bucket, "hemi", "MTLSD", "hemi_mtlsd_400k_roi_1_no_eps")

    data, out = tmp_path / "data", tmp_path / "reproduce"
    transfer = f"ARGS=--endpoint-url {bucket.endpoint} --out {data}"
    done = make("fetch-test-data", "DATASET=hemi", "ROI=roi_4", transfer)
    assert (done.returncode, done.stderr.splitlines()[0]) == (2, (
        "error: unknown ROI 'roi_4' of dataset 'hemi' under s3://open-neurodata/funke/hemi/testing/ground_truth/data.zarr/volumes/ "
        "(expected one of: roi_1)"
    ))  # fmt: skip
    assert not data.exists()  # nothing fetched before the error
    done = make("fetch-test-data", "DATASET=hemi", transfer)
    assert done.returncode == 0, done.stderr
    local = data / gt / "volumes"
    assert sorted(p.relative_to(local).as_posix() for p in local.glob("*/*") if p.is_dir()) == ["roi_1/consolidated_ids", "roi_1/raw"]
    done = make("fetch-published", "DATASET=hemi", "NETWORK=mtlsd", transfer)
    assert done.returncode == 0, done.stderr
    assert json.loads((data / "funke/hemi/testing/segmentations/published_mtlsd.json").read_text())["runs"][0]["fragments_dataset"] == "volumes/MTLSD/roi_1/fragments"

    done = make("reproduce", "DATASET=hemi", "NETWORK=mtlsd", f"ARGS=--data-dir {data} --out {out} --thresholds 0 1 0.1")
    assert done.returncode == 0, done.stderr
    row = report(out / "hemi_mtlsd.csv")["12_micron_roi"]  # a tiny ROI: the nearest of the paper's 12, 17, 22 µm
    assert row["status"] == "ok"
    for key, value in expected_best().items():
        assert float(row[key]) == pytest.approx(value, abs=1e-12), key
    assert (float(row["paper_voi_split"]), float(row["paper_voi_merge"])) == (0.048, 0.037)
    assert "the lowest VOI sum on the evaluated labels themselves" in (out / "hemi_mtlsd.md").read_text()


def write_n5(folder, data_zyx: np.ndarray, voxel_size=VOXEL, offset=OFFSET) -> None:
    """An N5 dataset as funlib writes them: axes and the resolution/offset attributes in x, y, z order."""
    import tensorstore as ts

    spec = {
        "driver": "n5", "kvstore": {"driver": "file", "path": str(folder)},
        "metadata": {"dimensions": list(data_zyx.shape[::-1]), "blockSize": [4, 4, 2], "dataType": data_zyx.dtype.name, "compression": {"type": "gzip"}},
    }  # fmt: skip
    ts.open(spec, create=True).result().write(data_zyx.transpose(2, 1, 0)).result()
    attributes = json.loads((folder / "attributes.json").read_text())
    attributes.update({"resolution": list(voxel_size)[::-1], "offset": list(offset)[::-1]})
    (folder / "attributes.json").write_text(json.dumps(attributes))


def test_fib25_n5_converted_and_scored(bucket, tmp_path):
    bucket.put("funke/structure.md", b"# map\n")
    n5 = tmp_path / "data.n5"
    full = labels(0)
    sub = np.zeros((4, 4, 4), np.uint64) + 5  # the sub-ROI x < 4: label 5 only, all in fragment 1
    for name, data, offset in (("neuron_ids", full, OFFSET), ("roi_1_relabelled_ids", sub, OFFSET), ("mask", (full != 7).astype(np.uint8), OFFSET)):
        write_n5(n5 / "volumes" / name, data, offset=offset)
    (n5 / "attributes.json").write_text('{"n5": "2.0.0"}')
    (n5 / "volumes" / "attributes.json").write_text("{}")
    bucket.upload_tree(n5, "funke/fib25/testing/ground_truth/data.n5")
    zarr_array(tmp_path / "fragments", FRAGMENTS)
    bucket.upload_tree(tmp_path / "fragments", "funke/fib25/testing/segmentations/data.zarr/volumes/MTLSD/fragments")
    put_region_graph(bucket, "fib25", "MTLSD", "fib25_mtlsd_400k_testing")

    data, out = tmp_path / "data", tmp_path / "reproduce"
    transfer = f"ARGS=--endpoint-url {bucket.endpoint} --out {data}"
    done = make("fetch-test-data", "DATASET=fib25", transfer)
    assert done.returncode == 0, done.stderr
    converted = zarr.open_array(data / "funke/fib25/testing/ground_truth/data.zarr/volumes/neuron_ids", mode="r")
    np.testing.assert_array_equal(converted[:], full)  # z, y, x again
    assert (converted.attrs["resolution"], converted.attrs["offset"]) == (list(VOXEL), list(OFFSET))
    done = make("fetch-published", "DATASET=fib25", "NETWORK=mtlsd", transfer)
    assert done.returncode == 0, done.stderr
    done = make("reproduce", "DATASET=fib25", "NETWORK=mtlsd", f"ARGS=--data-dir {data} --out {out} --thresholds 0 1 0.1")
    assert done.returncode == 0, done.stderr
    rows = report(out / "fib25_mtlsd.csv")
    # the whole region: as hemi's case, with 0 (no label) where hemi has 2^64 − 3
    for key, value in expected_best().items():
        assert float(rows["full"][key]) == pytest.approx(value, abs=1e-12), key
    # the sub-ROI holds one label in one fragment: perfect from the first threshold
    assert (float(rows["roi_1"]["threshold"]), float(rows["roi_1"]["voi_sum"])) == (0.0, 0.0)
    assert float(rows["roi_1"]["paper_voi_sum"]) == 0.78
