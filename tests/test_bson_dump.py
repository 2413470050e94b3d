"""Reading the authors' mongodump files (lsd_nm.bson_dump): dumps written here with pymongo's bson.encode."""

import bson
import numpy as np
import pytest

from lsd_nm.bson_dump import (
    NO_COMPONENT,
    attribute_key,
    read_columns,
    read_region_graph,
    read_skeleton_dump,
)
from lsd_nm.config import ConfigError

BIG = 2**63 + 5
"""A uint64 fragment id above int64's range: daisy stores it as the int64 with the same bits."""


def as_int64(value: int) -> int:
    return int(np.uint64(value).view(np.int64))


def write_dump(path, docs):
    path.write_bytes(b"".join(bson.encode({"_id": bson.ObjectId(), **doc}) for doc in docs))
    return path


def test_region_graph_columns_are_exact(tmp_path):
    nodes = write_dump(
        tmp_path / "nodes.bson",
        [
            {"id": 7, "center_z": 100, "center_y": 18.0, "center_x": 27.5},
            {"id": as_int64(BIG), "center_z": 40, "center_y": 9, "center_x": 9},
            {"id": 3.0, "center_z": 0.0, "center_y": 0.0, "center_x": 0.0},  # a double written by a mongo shell
        ],
    )
    edges = write_dump(
        tmp_path / "edges_hist_quant_75.bson",
        [
            {"u": 3, "v": 7, "merge_score": 0.25, "agglomerated": True},
            {"u": 7, "v": as_int64(BIG), "merge_score": None, "agglomerated": True},
            {"u": 3, "v": as_int64(BIG)},  # neither score nor flag stored
        ],
    )
    graph = read_region_graph(nodes, edges)
    assert graph.node_ids.dtype == np.uint64 and graph.node_ids.tolist() == [7, BIG, 3]
    np.testing.assert_array_equal(graph.centers, [[100, 18, 27.5], [40, 9, 9], [0, 0, 0]])
    assert graph.edges.dtype == np.uint64 and graph.edges.tolist() == [[3, 7], [7, BIG], [3, BIG]]
    np.testing.assert_array_equal(graph.merge_scores, [0.25, np.nan, np.nan])
    assert graph.agglomerated.tolist() == [True, True, False]


def test_empty_dumps(tmp_path):
    graph = read_region_graph(write_dump(tmp_path / "n.bson", []), write_dump(tmp_path / "e.bson", []))
    assert graph.node_ids.shape == (0,) and graph.centers.shape == (0, 3) and graph.edges.shape == (0, 2)


def test_batches_are_joined_in_order(tmp_path, monkeypatch):
    import lsd_nm.bson_dump as bd

    monkeypatch.setattr(bd, "_BATCH", 3)
    path = write_dump(tmp_path / "n.bson", [{"id": i, "flag": i % 2 == 0} for i in range(10)])
    columns = read_columns(path, {"id": "int", "flag": "bool"})
    assert columns.count == 10
    assert columns.arrays["id"].tolist() == list(range(10))
    assert columns.arrays["flag"].tolist() == [i % 2 == 0 for i in range(10)]


def skeleton_folder(tmp_path, nodes_extra=None, endpoints=("source", "target")):
    """A consolidated dump: 2 neurons (6 nodes), mask and components of the 11 µm ROI as attribute collections."""
    folder = tmp_path / "zebrafinch_gt_skeletons_validation"
    folder.mkdir()
    positions = [(50800, 43200, 44100), (50820, 43209, 44109), (70000, 0, 0), (51000, 44000, 45000), (51020, 44009, 45009), (51040, 44018, 45018)]
    docs = []
    for i, (z, y, x) in enumerate(positions):
        doc = {"id": 10 + i, "z": z, "y": float(y), "x": x, "neuron_id": 1 if i < 3 else 2}
        doc.update((nodes_extra or {}).get(10 + i, {}))
        docs.append(doc)
    write_dump(folder / "zebrafinch.nodes.bson", docs)
    s, t = endpoints
    write_dump(folder / "zebrafinch.edges.bson", [{s: 10, t: 11}, {s: 11, t: 12}, {s: 13, t: 14}, {s: 14, t: 15}, {s: 15, t: 99}])
    write_dump(
        folder / "nodes_zebrafinch_mask_11_micron_roi_masked.bson",
        [{"id": 10, "masked": True}, {"id": 11, "masked": True}, {"id": 13, "masked": False}, {"id": 14, "masked": True}, {"id": 15, "masked": True}],
    )
    write_dump(
        folder / "nodes_zebrafinch_components_11_micron_roi_masked.bson",
        [{"id": 10, "component_id": 0}, {"id": 11, "component_id": 0}, {"id": 14, "component_id": 1}, {"id": 15, "component_id": 1}],
    )
    write_dump(folder / "meta.bson", [{"directed": False}])
    return folder


def test_skeleton_dump_becomes_the_npz_arrays(tmp_path):
    folder = skeleton_folder(tmp_path)
    arrays, summary = read_skeleton_dump(folder, roi_names=["11_micron_roi", "18_micron_roi"])
    assert arrays["node_ids"].dtype == np.uint64 and arrays["node_ids"].tolist() == [10, 11, 12, 13, 14, 15]
    assert arrays["positions"].dtype == np.float32
    np.testing.assert_array_equal(arrays["positions"][:2], [[50800, 43200, 44100], [50820, 43209, 44109]])  # z, y, x
    assert arrays["neuron_ids"].tolist() == [1, 1, 1, 2, 2, 2]
    assert arrays["edges"].dtype == np.uint64 and arrays["edges"].tolist() == [[10, 11], [11, 12], [13, 14], [14, 15]]
    assert arrays["masked_11_micron_roi_masked"].tolist() == [True, True, False, False, True, True]
    assert arrays["component_id_11_micron_roi_masked"].tolist() == [0, 0, NO_COMPONENT, NO_COMPONENT, 1, 1]
    assert sorted(arrays) == [
        "component_id_11_micron_roi_masked", "edges", "masked_11_micron_roi_masked", "neuron_ids", "node_ids", "positions",
    ]  # fmt: skip
    assert (summary.nodes, summary.edges, summary.dropped_edges) == (6, 4, 1)
    assert [(a.source, a.array, a.nodes) for a in summary.attributes] == [
        ("nodes_zebrafinch_components_11_micron_roi_masked.bson", "component_id_11_micron_roi_masked", 4),
        ("nodes_zebrafinch_mask_11_micron_roi_masked.bson", "masked_11_micron_roi_masked", 5),
    ]
    assert summary.skipped == ["meta.bson (not a node attribute collection {id, <attribute>})"]
    assert summary.line().startswith("6 nodes, 4 edges (1 dropped: endpoint not a node); per-ROI arrays: ")


def test_attributes_stored_in_the_node_documents(tmp_path):
    extra = {
        10: {"zebrafinch_mask_18_micron_roi_masked": True, "zebrafinch_components_18_micron_roi_masked": 5, "type": "soma"},
        11: {"zebrafinch_mask_18_micron_roi_masked": False},
        12: {"zebrafinch_components_18_micron_roi_masked": as_int64(BIG)},
    }
    arrays, summary = read_skeleton_dump(skeleton_folder(tmp_path, extra, endpoints=("u", "v")), ["11_micron_roi", "18_micron_roi"])
    assert arrays["masked_18_micron_roi_masked"].tolist() == [True, False, False, False, False, False]
    assert arrays["component_id_18_micron_roi_masked"].tolist() == [5, NO_COMPONENT, BIG] + [NO_COMPONENT] * 3
    assert arrays["edges"].tolist() == [[10, 11], [11, 12], [13, 14], [14, 15]]
    assert "zebrafinch.nodes.bson:type (neither booleans nor integers)" in summary.skipped


def test_attribute_keys():
    rois = ["11_micron_roi", "18_micron_roi", "benchmark_roi"]
    assert attribute_key("nodes_zebrafinch_mask_11_micron_roi_masked", rois) == "11_micron_roi_masked"
    assert attribute_key("zebrafinch_components_benchmark_roi_not_masked", rois) == "benchmark_roi_not_masked"
    assert attribute_key("11_micron_roi", rois) == "11_micron_roi"
    assert attribute_key("mask_111_micron_roi", rois) == "mask_111_micron_roi"  # whole words only
    assert attribute_key("zebrafinch_mask", rois) == "zebrafinch_mask"
    assert attribute_key("nodes_zebrafinch_mask_11_micron_roi_masked") == "zebrafinch_mask_11_micron_roi_masked"


def test_two_attributes_for_one_array_are_an_error(tmp_path):
    folder = skeleton_folder(tmp_path)
    write_dump(folder / "other_mask_11_micron_roi_masked.bson", [{"id": 10, "masked": False}])
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(folder, ["11_micron_roi"])
    assert str(e.value) == (
        f"{folder}: nodes_zebrafinch_mask_11_micron_roi_masked.bson and other_mask_11_micron_roi_masked.bson "
        "both give the array 'masked_11_micron_roi_masked'"
    )


def test_dump_errors_are_one_line(tmp_path):
    good = bson.encode({"id": 1, "center_z": 0, "center_y": 0, "center_x": 0})
    truncated = tmp_path / "truncated.bson"
    truncated.write_bytes(good + good[:-3])
    with pytest.raises(ConfigError) as e:
        read_columns(truncated, {"id": "int"})
    assert str(e.value).startswith(f"{truncated}: not a valid BSON dump at document 1 (") and "\n" not in str(e.value)

    missing = write_dump(tmp_path / "missing.bson", [{"id": 1, "center_z": 0}])
    with pytest.raises(ConfigError) as e:
        read_region_graph(missing, missing)
    assert str(e.value) == f"{missing}: document 0 has no field 'center_y' (it has: id, center_z)"

    wrong = write_dump(tmp_path / "wrong.bson", [{"u": 1, "v": 2, "merge_score": 0.5}, {"u": 1, "v": 3, "merge_score": "high"}])
    with pytest.raises(ConfigError) as e:
        read_columns(wrong, {"u": "int", "v": "int", "merge_score": "float_or_none"})
    assert str(e.value) == f"{wrong}: document 1: field 'merge_score' is 'high' (str), expected float or none"

    fractional = write_dump(tmp_path / "fractional.bson", [{"id": 1.5}])
    with pytest.raises(ConfigError) as e:
        read_columns(fractional, {"id": "int"})
    assert str(e.value) == f"{fractional}: document 0: field 'id' is 1.5 (float), expected int"

    twice = write_dump(tmp_path / "twice.bson", [{"id": 4, "center_z": 0, "center_y": 0, "center_x": 0}] * 2)
    with pytest.raises(ConfigError) as e:
        read_region_graph(twice, write_dump(tmp_path / "e.bson", []))
    assert str(e.value) == f"{twice}: node id 4 occurs 2 times (ids must be unique)"

    with pytest.raises(ConfigError) as e:
        read_columns(tmp_path / "absent.bson", {"id": "int"})
    assert str(e.value) == f"{tmp_path / 'absent.bson'}: file not found"


def test_skeleton_folder_errors(tmp_path):
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(tmp_path / "nowhere")
    assert str(e.value) == f"{tmp_path / 'nowhere'}: folder not found (expected a skeleton dump with <name>.nodes.bson and <name>.edges.bson)"
    folder = skeleton_folder(tmp_path)
    (folder / "zebrafinch.edges.bson").unlink()
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(folder)
    assert str(e.value) == f"{folder}: zebrafinch.nodes.bson has no zebrafinch.edges.bson beside it"
    write_dump(folder / "zebrafinch.edges.bson", [{"from": 10, "to": 11}])
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(folder)
    assert str(e.value) == f"{folder / 'zebrafinch.edges.bson'}: document 0 has no endpoints 'source'/'target' or 'u'/'v' (it has: from, to)"
    write_dump(folder / "zebrafinch.edges.bson", [])
    write_dump(folder / "nodes_stray.bson", [{"id": 77, "masked": True}])
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(folder)
    assert str(e.value) == f"{folder / 'nodes_stray.bson'}: node 77 is not a node of zebrafinch.nodes.bson"
    write_dump(folder / "other.nodes.bson", [])
    with pytest.raises(ConfigError) as e:
        read_skeleton_dump(folder)
    assert str(e.value) == f"{folder}: expected exactly one <name>.nodes.bson, found other.nodes.bson, zebrafinch.nodes.bson"
