"""Fetching the paper's test data and the authors' results (lsd_nm.paper_data) from real servers on loopback:
moto's S3 server holding bson dumps and a supervoxel zarr in the public bucket's layout, and an HTTP server holding
a precomputed raw volume."""

import json

import bson
import numpy as np
import pytest
import zarr
from precomputed_server import StaticServer, write_precomputed
from s3_server import bucket, moto_endpoint  # noqa: F401

from lsd_nm.bson_dump import NO_COMPONENT
from lsd_nm.config import ConfigError
from lsd_nm.graph import open_graph, read_edges, read_nodes
from lsd_nm.paper_data import (
    J0126_RAW_URL,
    chunk_keys_under,
    fetch_published,
    fetch_test_raw,
    fetch_test_skeletons,
    skeletons_file,
)
from lsd_nm.s3 import S3Error
from lsd_nm.skeletons import read_skeletons, write_skeletons

STRUCTURE = b"# open-neurodata/funke\n\n- zebrafinch/testing/ground_truth/{validation,testing}/consolidated/...\n"
GT = "funke/zebrafinch/testing/ground_truth"
SEG = "funke/zebrafinch/testing/segmentations/data.zarr"
RUN = "zebrafinch_acrlsd_run"


def dump(docs) -> bytes:
    return b"".join(bson.encode({"_id": bson.ObjectId(), **doc}) for doc in docs)


def put_skeletons(bucket, split: str, first_id: int) -> str:
    """A consolidated dump of one split: 3 nodes of neuron 1 and 2 of neuron 2, the 11 µm mask and components."""
    folder = f"{GT}/{split}/consolidated/zebrafinch_gt_skeletons_new_gt_9_9_20_{split}"
    ids = list(range(first_id, first_id + 5))
    nodes = [
        {"id": i, "z": 50800 + 20 * k, "y": 43200 + 9 * k, "x": 44100 + 9 * k, "neuron_id": 1 if k < 3 else 2}
        for k, i in enumerate(ids)
    ]
    bucket.put(f"{folder}/zebrafinch.nodes.bson", dump(nodes))
    bucket.put(f"{folder}/zebrafinch.edges.bson", dump([{"source": ids[0], "target": ids[1]}, {"source": ids[1], "target": ids[2]}, {"source": ids[3], "target": ids[4]}]))
    bucket.put(f"{folder}/zebrafinch.nodes.metadata.json", b'{"indexes": []}')
    bucket.put(f"{folder}/nodes_zebrafinch_mask_11_micron_roi_masked.bson", dump([{"id": i, "masked": k != 2} for k, i in enumerate(ids)]))
    bucket.put(f"{folder}/nodes_zebrafinch_components_11_micron_roi_masked.bson", dump([{"id": i, "component_id": 0 if k < 2 else 1} for k, i in enumerate(ids) if k != 2]))
    bucket.put(f"{GT}/{split}/consolidated/notes/readme.txt", b"not a dump")
    bucket.put(f"{GT}/{split}/original/{split}.nml", b"<nml/>")
    return folder


@pytest.fixture
def skeleton_bucket(bucket):
    bucket.put("funke/structure.md", STRUCTURE)
    put_skeletons(bucket, "validation", 100)
    put_skeletons(bucket, "testing", 200)
    return bucket


def test_fetch_test_skeletons(skeleton_bucket, tmp_path):
    out = tmp_path / "data"
    paths, transfer, conversions = fetch_test_skeletons(endpoint_url=skeleton_bucket.endpoint, out=out, jobs=2)
    assert paths == [skeletons_file("zebrafinch", s, out) for s in ("validation", "testing")]
    assert paths[0] == out / "funke/zebrafinch/testing/ground_truth/validation/zebrafinch_validation.skeletons.npz"
    assert (out / "funke/structure.md").read_bytes() == STRUCTURE
    with np.load(paths[1]) as f:
        arrays = {k: f[k] for k in f.files}
    assert arrays["node_ids"].tolist() == [200, 201, 202, 203, 204]
    np.testing.assert_array_equal(arrays["positions"][4], [50880, 43236, 44136])
    assert arrays["neuron_ids"].tolist() == [1, 1, 1, 2, 2]
    assert arrays["edges"].tolist() == [[200, 201], [201, 202], [203, 204]]
    assert arrays["masked_11_micron_roi_masked"].tolist() == [True, True, False, True, True]
    assert arrays["component_id_11_micron_roi_masked"].tolist() == [0, 0, NO_COMPONENT, 1, 1]
    assert read_skeletons(paths[0])["node_ids"].tolist() == [100, 101, 102, 103, 104]  # the four arrays still read
    # only the dump folders were fetched (plus the bucket's map)
    fetched = sorted(p.relative_to(out).as_posix() for p in (out / "funke").rglob("*") if p.is_file() and ".skeletons." not in p.name)
    assert fetched == ["funke/structure.md"] + sorted(
        f"{GT}/{split}/consolidated/zebrafinch_gt_skeletons_new_gt_9_9_20_{split}/{name}"
        for split in ("validation", "testing")
        for name in (
            "nodes_zebrafinch_components_11_micron_roi_masked.bson", "nodes_zebrafinch_mask_11_micron_roi_masked.bson",
            "zebrafinch.edges.bson", "zebrafinch.nodes.bson", "zebrafinch.nodes.metadata.json",
        )
    )  # fmt: skip
    assert transfer.fetched == 11 and [c.nodes for c in conversions] == [5, 5]
    again = fetch_test_skeletons(endpoint_url=skeleton_bucket.endpoint, out=out)[1]
    assert (again.fetched, again.skipped) == (0, 11)


def test_skeleton_fetch_errors(skeleton_bucket, bucket, tmp_path):
    with pytest.raises(ConfigError) as e:
        fetch_test_skeletons("hemi", endpoint_url=bucket.endpoint, out=tmp_path)
    assert str(e.value) == "dataset 'hemi' has no skeleton ground truth (skeletons exist for: zebrafinch)"
    with pytest.raises(ConfigError) as e:
        fetch_test_skeletons(splits=["train"], endpoint_url=bucket.endpoint, out=tmp_path)
    assert str(e.value) == "unknown split 'train' (expected one of: validation, testing)"
    bucket.put(f"{GT}/validation/consolidated/v2/zebrafinch.nodes.bson", dump([]))
    with pytest.raises(ConfigError) as e:
        fetch_test_skeletons(splits=["validation"], endpoint_url=bucket.endpoint, out=tmp_path / "d")
    assert str(e.value) == (
        f"expected one dump folder with a <name>.nodes.bson under s3://open-neurodata/{GT}/validation/consolidated/, found 2 "
        f"(folders: notes, v2, zebrafinch_gt_skeletons_new_gt_9_9_20_validation; the bucket's layout: "
        f"{tmp_path / 'd' / 'funke/structure.md'})"
    )
    assert not list((tmp_path / "d" / "funke/zebrafinch").rglob("*.bson"))  # nothing fetched before the error
    paths = fetch_test_skeletons(
        splits=["validation"], folder_name="zebrafinch_gt_skeletons_new_gt_9_9_20_validation", endpoint_url=bucket.endpoint, out=tmp_path / "d"
    )[0]
    assert read_skeletons(paths[0])["node_ids"].tolist() == [100, 101, 102, 103, 104]


def test_a_bucket_without_its_map(bucket, tmp_path):
    with pytest.raises(S3Error) as e:
        fetch_test_skeletons(endpoint_url=bucket.endpoint, out=tmp_path)
    assert str(e.value) == f"s3://open-neurodata/funke/structure.md: not found at {bucket.endpoint} (the bucket's map of its layout)"


# ---- published region graphs and supervoxels ---------------------------------------------------------------------

SV_OFFSET = (50800, 43200, 44100)
SV_SHAPE = (8, 32, 32)
SV_CHUNKS = (4, 8, 8)


def put_published(bucket, tmp_path):
    """A region graph and a supervoxel array of the network ACRLSD (one run), in the bucket's layout."""
    bucket.put("funke/structure.md", STRUCTURE)
    rag = f"{SEG}/rags/ACRLSD/{RUN}"
    bucket.put(f"{rag}/nodes.bson", dump([
        {"id": 1, "center_z": 50810.4, "center_y": 43204.5, "center_x": 44104.6},
        {"id": 2, "center_z": 50900, "center_y": 43300, "center_x": 44200},
        {"id": 3, "center_z": 50950, "center_y": 43400, "center_x": 44300},
    ]))  # fmt: skip
    bucket.put(f"{rag}/edges_hist_quant_75.bson", dump([
        {"u": 1, "v": 2, "merge_score": 0.1, "agglomerated": True},
        {"u": 3, "v": 2, "merge_score": None, "agglomerated": True},
    ]))  # fmt: skip
    bucket.put(f"{rag}/edges_mean.bson", dump([{"u": 1, "v": 3, "merge_score": 0.5, "agglomerated": True}]))
    supervoxels = np.arange(np.prod(SV_SHAPE), dtype=np.uint64).reshape(SV_SHAPE) + 1
    local = tmp_path / "sv.zarr"
    array = zarr.open_group(local, mode="w", zarr_format=2).create_array("fragments", data=supervoxels, chunks=SV_CHUNKS)
    array.attrs.update({"resolution": [20, 9, 9], "offset": list(SV_OFFSET)})
    bucket.upload_tree(local / "fragments", f"{SEG}/volumes/ACRLSD/{RUN}/fragments")
    return supervoxels


def node_skeletons(path, voxels):
    """A .skeletons.npz with one node at each of ``voxels`` (z, y, x indices into the supervoxel array)."""
    positions = np.asarray([[SV_OFFSET[a] + v[a] * (20, 9, 9)[a] + 1 for a in range(3)] for v in voxels], np.float32)
    n = len(voxels)
    write_skeletons(path, {
        "node_ids": np.arange(1, n + 1, dtype=np.uint64), "positions": positions,
        "neuron_ids": np.ones(n, np.uint64), "edges": np.zeros((0, 2), np.uint64),
    })  # fmt: skip
    return positions


def test_chunk_keys_under_nodes():
    zarray = {"shape": [8, 32, 32], "chunks": [4, 8, 8]}
    zattrs = {"resolution": [20, 9, 9], "offset": [100, 0, 90]}
    positions = [[100, 0, 90], [179, 71, 161], [180, 72, 162], [99, 0, 90], [260, 0, 90], [181, 80, 170]]
    assert chunk_keys_under(np.asarray(positions), zarray, zattrs) == ["0.0.0", "1.1.1"]
    assert chunk_keys_under(np.asarray(positions[:1]), {**zarray, "dimension_separator": "/"}, zattrs) == ["0/0/0"]


def test_fetch_published_reads_only_the_chunks_under_the_nodes(bucket, tmp_path):
    supervoxels = put_published(bucket, tmp_path)
    voxels = [(0, 0, 0), (5, 9, 30), (7, 31, 31), (6, 10, 29)]  # chunks (0,0,0), (1,1,3), (1,3,3), (1,1,3)
    # a chunk the bucket does not hold (zarr's fill value, as for a block with no fragments): counted as absent
    bucket.client.delete_object(Bucket=bucket.name, Key=f"{SEG}/volumes/ACRLSD/{RUN}/fragments/0.3.0")
    node_skeletons(tmp_path / "val.skeletons.npz", voxels + [(0, 31, 0)])
    out = tmp_path / "data"
    result = fetch_published(
        "zebrafinch", "acrlsd", skeletons=tmp_path / "val.skeletons.npz", endpoint_url=bucket.endpoint, out=out, jobs=2
    )
    assert (result.network, result.run, result.nodes, result.edges) == ("ACRLSD", RUN, 3, 2)
    array_dir = out / SEG / "volumes/ACRLSD" / RUN / "fragments"
    assert result.supervoxels == array_dir
    assert sorted(p.name for p in array_dir.iterdir()) == [".zarray", ".zattrs", "0.0.0", "1.1.3", "1.3.3"]
    assert (result.supervoxel_chunks, result.absent_chunks) == (3, 1)
    array = zarr.open_array(array_dir, mode="r")
    assert [int(array[v]) for v in voxels] == [int(supervoxels[v]) for v in voxels]
    assert int(array[0, 31, 0]) == 0
    sparse = json.loads((array_dir.parent / "fragments.sparse.json").read_text())
    assert (sparse["sparse"], sparse["chunks_under_nodes"], sparse["chunks_absent"]) == (True, 4, 1)
    # the region graph, in our SQLite graph: centres rounded to nm, scores as float32, None kept
    assert result.db == str(out / SEG / "rags/ACRLSD" / RUN / "hist_quant_75.rag.db")
    db = open_graph(result.db, "r")
    assert read_nodes(db) == {1: (50810, 43204, 44105), 2: (50900, 43300, 44200), 3: (50950, 43400, 44300)}
    assert read_edges(db) == [(1, 2, float(np.float32(0.1)), True), (2, 3, None, True)]
    db.close()
    assert not (out / SEG / "rags/ACRLSD" / RUN / "edges_mean.bson").exists()
    with pytest.raises(ConfigError) as e:  # converting again would overwrite our graph
        fetch_published("zebrafinch", "acrlsd", skeletons=tmp_path / "val.skeletons.npz", endpoint_url=bucket.endpoint, out=out)
    assert str(e.value) == f"db '{result.db}': a region graph exists there already; remove it to convert again"


def test_fetch_published_whole_supervoxels_and_another_merge_function(bucket, tmp_path):
    supervoxels = put_published(bucket, tmp_path)
    result = fetch_published("zebrafinch", "ACRLSD", merge_function="mean", db=tmp_path / "g.db", endpoint_url=bucket.endpoint, out=tmp_path / "data")
    np.testing.assert_array_equal(zarr.open_array(result.supervoxels, mode="r")[:], supervoxels)
    assert result.supervoxel_chunks == 2 * 4 * 4 and not result.supervoxels.with_name("fragments.sparse.json").exists()
    db = open_graph(str(tmp_path / "g.db"), "r")
    assert read_edges(db) == [(1, 3, 0.5, True)]
    db.close()


def test_published_errors(bucket, tmp_path):
    put_published(bucket, tmp_path)
    with pytest.raises(ConfigError) as e:
        fetch_published("zebrafinch", "mtlsd", endpoint_url=bucket.endpoint, out=tmp_path / "d")
    assert str(e.value) == (
        f"no single network 'mtlsd' under s3://open-neurodata/{SEG}/rags/ (layout: {tmp_path / 'd' / 'funke/structure.md'}) (found: ACRLSD)"
    )
    with pytest.raises(ConfigError) as e:
        fetch_published("zebrafinch", "acrlsd", merge_function="hist_quant_50", endpoint_url=bucket.endpoint, out=tmp_path / "d")
    assert str(e.value) == (
        f"s3://open-neurodata/{SEG}/rags/ACRLSD/{RUN}/edges_hist_quant_50.bson: not found "
        "(the folder holds: edges_hist_quant_75.bson, edges_mean.bson, nodes.bson)"
    )
    bucket.put(f"{SEG}/rags/ACRLSD/second_run/nodes.bson", dump([]))
    with pytest.raises(ConfigError) as e:
        fetch_published("zebrafinch", "acrlsd", endpoint_url=bucket.endpoint, out=tmp_path / "d")
    assert str(e.value) == (
        f"network 'ACRLSD' has 2 runs under s3://open-neurodata/{SEG}/rags/ACRLSD/; choose one with --run (runs: second_run, {RUN})"
    )
    with pytest.raises(ConfigError) as e:
        fetch_published("zebrafinch", "acrlsd", skeletons=tmp_path / "none.npz", endpoint_url=bucket.endpoint, out=tmp_path / "d")
    assert str(e.value) == f"{tmp_path / 'none.npz'}: file not found (expected a .skeletons.npz, e.g. from fetch_test_skeletons)"
    assert not list((tmp_path / "d").rglob("*.bson"))  # every error came before any download


# ---- the test raw ------------------------------------------------------------------------------------------------


@pytest.fixture
def raw_server():
    data = np.random.default_rng(7).integers(0, 256, (32, 24, 12), dtype=np.uint8)  # x, y, z
    server = StaticServer(write_precomputed(data, (8, 8, 4), voxel_offset=(100, 200, 50)), gzip_paths="*")
    yield server, data
    server.close()


def test_fetch_test_raw_with_context(raw_server, tmp_path):
    server, data = raw_server
    # ROI: voxels z 54..58, y 208..216, x 108..116, grown by one chunk's worth of context (4, 8, 8 voxels)
    path, summary = fetch_test_raw(
        roi_offset=(54 * 20, 208 * 9, 108 * 9), roi_shape=(80, 72, 72), context=(80, 72, 72), url=server.url, out=tmp_path
    )
    assert path == tmp_path / "funke/zebrafinch/testing/rawdata_realigned_1080_1872_972_80_72_72.zarr"
    array = zarr.open_array(path / "volumes/raw", mode="r")
    assert array.attrs["offset"] == [50 * 20, 200 * 9, 100 * 9] and array.attrs["resolution"] == [20, 9, 9]
    np.testing.assert_array_equal(array[:], data[0:24, 0:24, 0:12].transpose(2, 1, 0))
    assert summary.chunks == 3 * 3 * 3


def test_fetch_test_raw_errors(raw_server, tmp_path):
    server, _ = raw_server
    with pytest.raises(ConfigError) as e:
        fetch_test_raw(roi="12_micron_roi", url=server.url, out=tmp_path)
    assert str(e.value).startswith("unknown ROI '12_micron_roi' of dataset 'zebrafinch' (expected one of: 11_micron_roi,")
    with pytest.raises(ConfigError) as e:
        fetch_test_raw(url=server.url, out=tmp_path)
    assert str(e.value) == "give either a ROI name or both roi_offset and roi_shape"
    with pytest.raises(ConfigError) as e:
        fetch_test_raw(roi="11_micron_roi", url=server.url, out=tmp_path)
    assert str(e.value) == (
        f"ROI [50800, 43200, 44100]+[10800, 10800, 10800] nm is not inside the volume {server.url} "
        "([1000, 1800, 900] to [1240, 2016, 1188] nm, z, y, x)"
    )
    assert not server.chunk_gets() and not list(tmp_path.iterdir())
    assert J0126_RAW_URL.startswith("https://storage.googleapis.com/j0126-nature-methods-data/")
