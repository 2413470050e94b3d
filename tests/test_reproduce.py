"""make fetch-test-data, make fetch-published and make reproduce against a real S3 server on loopback (moto) holding
tiny data in the bucket's exact layout and formats: bson skeleton dumps with per-ROI attribute collections, a bson
region graph, a sparse supervoxel zarr over the whole Benchmark ROI and a neuropil mask — and a report whose numbers
equal hand-computed ones."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys

import bson
import numpy as np
import pytest
import zarr
from conftest import REPO
from s3_server import bucket, moto_endpoint  # noqa: F401

from lsd_nm.rois import load_rois

GT = "funke/zebrafinch/testing/ground_truth"
SEG = "funke/zebrafinch/testing/segmentations/data.zarr"
RUN = "zebrafinch_mtlsd_400k_testing_masked_ffn"
VOXEL = (20, 9, 9)
ROIS = load_rois("zebrafinch").rois
CUBE = ROIS["11_micron_roi"].roi_offset  # the only published offset; every other ROI contains this cube
BENCHMARK = ROIS["benchmark_roi"]
SHAPE = tuple(s // v for s, v in zip(BENCHMARK.roi_shape, VOXEL))
CORNER = tuple((c - b) // v for c, b, v in zip(CUBE, BENCHMARK.roi_offset, VOXEL))  # the cube's first voxel
FRAGMENT_OF_ROW = {10: 1, 11: 3, 12: 3, 13: 2}
"""Fragments along the rows y = 10 … 13 (voxels of the 11 µm cube) near its x end (x = 1200): 1 above, 2 below."""


def position(y: int, x: int) -> dict:
    """A node at the centre of voxel (0, y, x) of the 11 µm cube (x = 1200 is the cube's end)."""
    return {"z": CUBE[0] + 10, "y": CUBE[1] + 9 * y + 4.5, "x": CUBE[2] + 9 * x + 4.5}


def dump(docs) -> bytes:
    return b"".join(bson.encode({"_id": bson.ObjectId(), **doc}) for doc in docs)


def skeletons_of_the_test_split():
    """N1 (neuron 7) runs along y=10 from x=1193 to 1202, leaves the 11 µm cube at x=1200, drops to y=13 at x=1202 and
    comes back to x=1193: in the 11 µm cube two pieces (A1: ids 1000–1006 in fragment 1, A2: 1013–1019 in fragment
    2), in every larger ROI one skeleton. B (neuron 8, ids 1020–1025) runs along y=11 in fragment 3; one more node
    of it (1026) lies in fragment 1 at y=10, x=1192 — outside the neuropil (masked out) — and another (1027, joined
    to 1025 by a 27 nm drop) at y=14, x=1198, on fragment 0: a background site; 1028, next to it at y=15, is on
    fragment 0 too but outside the neuropil (masked out: a background site of the unmasked rows only, and of the
    original's count in every row). The 11 µm mask collection also lists node 1010 (x=1202, outside the cube): the
    original ignores it."""
    path = [(10, x) for x in range(1193, 1203)] + [(13, x) for x in range(1202, 1192, -1)]
    nodes = [{"id": 1000 + k, "neuron_id": 7, **position(*p)} for k, p in enumerate(path)]
    nodes += [{"id": 1020 + k, "neuron_id": 8, **position(11, x)} for k, x in enumerate(range(1193, 1199))]
    nodes.append({"id": 1026, "neuron_id": 8, **position(10, 1192)})
    nodes.append({"id": 1027, "neuron_id": 8, **position(14, 1198)})
    nodes.append({"id": 1028, "neuron_id": 8, **position(15, 1198)})
    edges = [(1000 + k, 1001 + k) for k in range(19)] + [(1020 + k, 1021 + k) for k in range(5)]
    edges += [(1020, 1026), (1025, 1027), (1027, 1028)]
    inside_cube = [*range(1000, 1007), *range(1013, 1020), *range(1020, 1029)]
    attributes = {
        "11_micron_roi_masked": (
            {**{i: i not in (1026, 1028) for i in inside_cube}, 1010: True},
            {
                **{i: 0 for i in range(1000, 1007)}, **{i: 1 for i in range(1013, 1020)},
                **{i: 2 for i in [*range(1020, 1026), 1027]},
            },
        ),
        "18_micron_roi_masked": (
            {i: i not in (1026, 1028) for i in range(1000, 1029)},
            {**{i: 0 for i in range(1000, 1020)}, **{i: 1 for i in [*range(1020, 1026), 1027]}},
        ),
    }  # fmt: skip
    return nodes, edges, attributes


def validation_skeletons():
    """V (neuron 1, ids 1–14): y=10, x=1193…1199, a jump to y=13 at x=1199 and back to x=1193 — one skeleton in
    fragments 1 and 2, all inside the 11 µm cube; W (neuron 2, ids 15–20) along y=11 in fragment 3. Perfect from
    threshold 0.5 (fragments 1 and 2 joined) to below 0.7 (all joined): the threshold chosen is 0.5."""
    path = [(10, x) for x in range(1193, 1200)] + [(13, x) for x in range(1199, 1192, -1)]
    nodes = [{"id": 1 + k, "neuron_id": 1, **position(*p)} for k, p in enumerate(path)]
    nodes += [{"id": 15 + k, "neuron_id": 2, **position(11, x)} for k, x in enumerate(range(1193, 1199))]
    edges = [(1 + k, 2 + k) for k in range(13)] + [(15 + k, 16 + k) for k in range(5)]
    every = {i: True for i in range(1, 21)}
    components = {**{i: 0 for i in range(1, 15)}, **{i: 1 for i in range(15, 21)}}
    return nodes, edges, {"11_micron_roi_masked": (every, components), "18_micron_roi_masked": (every, components)}


def put_split(bucket, split: str, nodes, edges, attributes) -> None:
    folder = f"{GT}/{split}/consolidated/zebrafinch_gt_skeletons_new_gt_9_9_20_{split}"
    bucket.put(f"{folder}/zebrafinch.nodes.bson", dump(nodes))
    bucket.put(f"{folder}/zebrafinch.edges.bson", dump([{"source": u, "target": v} for u, v in edges]))
    for key, (mask, components) in attributes.items():
        bucket.put(f"{folder}/nodes_zebrafinch_mask_{key}.bson", dump([{"id": i, "masked": m} for i, m in mask.items()]))
        bucket.put(f"{folder}/nodes_zebrafinch_components_{key}.bson", dump([{"id": i, "component_id": c} for i, c in components.items()]))
        bucket.put(f"{folder}/nodes_zebrafinch_mask_{key}.metadata.json", b'{"indexes": []}')


def sparse_array(path, fill: int, dtype, writes) -> None:
    """A zarr v2 array over the whole Benchmark ROI (5300 × 9300 × 9700 voxels) holding only the chunks written."""
    array = zarr.open_array(path, mode="w", shape=SHAPE, chunks=(8, 64, 64), dtype=dtype, fill_value=fill, zarr_format=2)
    array.attrs.update({"resolution": list(VOXEL), "offset": list(BENCHMARK.roi_offset)})
    for index, value in writes:
        array[index] = value


@pytest.fixture
def paper_bucket(bucket, tmp_path):
    bucket.put("funke/structure.md", b"# the bucket's map\n")
    put_split(bucket, "validation", *validation_skeletons())
    put_split(bucket, "testing", *skeletons_of_the_test_split())
    z, y0, x0 = CORNER
    rows = np.array([[FRAGMENT_OF_ROW[y]] * 16 for y in range(10, 14)], np.uint64)
    sparse_array(tmp_path / "fragments", 0, np.uint64, [((z, slice(y0 + 10, y0 + 14), slice(x0 + 1190, x0 + 1206)), rows)])
    bucket.upload_tree(tmp_path / "fragments", f"{SEG}/volumes/MTLSD/fragments")
    # the voxels of nodes 1026 and 1028 are outside the neuropil
    sparse_array(tmp_path / "mask", 1, np.uint8, [((z, y0 + 10, x0 + 1192), 0), ((z, y0 + 15, x0 + 1198), 0)])
    bucket.upload_tree(tmp_path / "mask", f"{GT}/data.zarr/volumes/neuropil_mask")
    bucket.put(f"{GT}/data.zarr/.zgroup", b'{"zarr_format": 2}')
    bucket.put(f"{GT}/data.zarr/volumes/.zgroup", b'{"zarr_format": 2}')
    rag = f"{SEG}/rags/MTLSD/{RUN}"
    centre = {1: 10, 2: 13, 3: 11, 4: 12}  # fragment 4 holds no skeleton node
    bucket.put(f"{rag}/nodes.bson", dump([{"id": f, **{f"center_{a}": v for a, v in position(y, 1195).items()}} for f, y in centre.items()]))
    # 3-4 has no score: united at every threshold, as the original; 3-99 is dangling (99 is no node): skipped
    bucket.put(f"{rag}/edges_hist_quant_75.bson", dump([
        {"u": 1, "v": 2, "merge_score": 0.5, "agglomerated": True},
        {"u": 1, "v": 3, "merge_score": 0.7, "agglomerated": True},
        {"u": 2, "v": 3, "merge_score": 0.7, "agglomerated": True},
        {"u": 3, "v": 4, "merge_score": None, "agglomerated": True},
        {"u": 3, "v": 99, "merge_score": 0.1, "agglomerated": True},
    ]))  # fmt: skip
    return bucket


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "-C", str(REPO), *args, "ENV_READY="], capture_output=True, text=True)


def error(done: subprocess.CompletedProcess) -> str:
    """The script's one-line error (make adds a line of its own after it)."""
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 2 and lines[1].startswith("make: *** "), done.stderr
    return lines[0]


def entropy(*counts) -> float:
    p = np.asarray(counts, np.float64) / sum(counts)
    return float(-np.sum(p * np.log2(p)))


def expected_rows() -> dict[tuple[str, bool], dict]:
    """The test skeletons at the threshold chosen on the validation skeletons (0.5: fragments 1 and 2 joined, 3 apart),
    worked out by hand (VOI in bits over nodes, node 1027 on fragment 0 scored as segment 0; lengths in nm: 9 per
    step along x, 27 for N1's and B's drops, √162 for the edge to node 1026; an edge to node 1027 is omitted)."""
    extra = math.sqrt(9**2 + 9**2)
    # 11 µm, unmasked: A1 (7 nodes), A2 (7), B + 1026 + 1027 + 1028 (9). Segment {1, 2} holds A1, A2 and 1026;
    # segment 3 B's 6 nodes; segment 0 nodes 1027 and 1028. Only B's 5 edges (45 nm) are correct; A1, A2 are merged,
    # B's edge to 1026 is split, its edges to 1027 and 1028 (27 + 9 nm) omitted.
    length = 54 + 54 + 45 + extra + 36
    cube = {
        "voi_split": 9 / 23 * entropy(6, 1, 2), "voi_merge": 15 / 23 * entropy(7, 7, 1),
        "erl": 45**2 / length, "max_erl": (54**2 + 54**2 + (81 + extra) ** 2) / length,
    }  # fmt: skip
    # 11 µm, masked (the skeletons' own mask and components): 1026 left out, 1010 (listed, outside) ignored; the
    # segment {1, 2} merges A1 and A2; B: 6 sites on segment 3, 1027 on segment 0
    cube_masked = {
        "voi_split": 7 / 21 * entropy(6, 1), "voi_merge": 14 / 21, "erl": 45**2 / 180,
        "max_erl": (2 * 54**2 + 72**2) / 180,
    }  # fmt: skip
    # larger ROIs, unmasked: N1 whole (20 nodes, 189 nm), merged with 1026 in the segment {1, 2}
    length = 189 + 45 + extra + 36
    larger = {
        "voi_split": 9 / 29 * entropy(6, 1, 2), "voi_merge": 21 / 29 * entropy(20, 1),
        "erl": 45**2 / length, "max_erl": (189**2 + (81 + extra) ** 2) / length,
    }  # fmt: skip
    # larger ROIs, masked (18 µm: the skeletons' mask; the others: the neuropil mask volume): N1 whole in {1, 2}, B
    # in 3 but for its background site
    larger_masked = {
        "voi_split": 7 / 27 * entropy(6, 1), "voi_merge": 0.0, "erl": (189**2 + 45**2) / 261,
        "max_erl": (189**2 + 72**2) / 261,
    }  # fmt: skip
    rows = {}
    for name in ROIS:
        for masked in (True, False):
            if name == "11_micron_roi":
                rows[(name, masked)] = cube_masked if masked else cube
            else:
                rows[(name, masked)] = larger_masked if masked else larger
    return rows


def test_make_reproduce_on_the_fixtures_equals_the_hand_computed_table(paper_bucket, tmp_path):
    data, out = tmp_path / "data", tmp_path / "reproduce"
    transfer = f"--endpoint-url {paper_bucket.endpoint} --out {data}"

    # every bad input is one line, before anything is fetched or scored
    done = make("fetch-test-data", "DATASET=zebrafinch", "ROI=12_micron_roi", f"ARGS={transfer}")
    assert error(done).startswith("error: unknown ROI '12_micron_roi' of dataset 'zebrafinch' (expected one of: 11_micron_roi, ")
    done = make("fetch-published", "DATASET=zebrafinch", "NETWORK=mtlsd", f"ARGS={transfer}")
    skeletons = data / "funke/zebrafinch/testing/ground_truth/validation/zebrafinch_validation.skeletons.npz"
    assert error(done) == (
        f"error: {skeletons}: file not found; fetch the skeletons first (make fetch-test-data DATASET=zebrafinch): only "
        "the supervoxel chunks under their nodes are fetched (or pass --all-supervoxels for the whole ROI)"
    )
    assert not data.exists()
    report = f"ARGS=--data-dir {data} --out {out} --thresholds 0 1 0.1 --min-cut"
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", report)
    manifest = data / "funke/zebrafinch/testing/segmentations/published_mtlsd.json"
    assert error(done) == (
        f"error: {manifest}: not found; fetch the authors' results first (make fetch-published DATASET=zebrafinch NETWORK=mtlsd)"
    )
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=unet", report)
    assert error(done).startswith("error: the paper has no zebrafinch numbers for network 'unet' (it has: ")

    done = make("fetch-test-data", "DATASET=zebrafinch", f"ARGS={transfer}")
    assert done.returncode == 0, done.stderr
    assert "masked_11_micron_roi_masked" in done.stdout and str(data / "funke/zebrafinch/testing/ground_truth/data.zarr/volumes/neuropil_mask") in done.stdout
    done = make("fetch-published", "DATASET=zebrafinch", "NETWORK=mtlsd", f"ARGS={transfer}")
    assert done.returncode == 0, done.stderr
    # only the supervoxel chunks under the nodes: one chunk (8 × 64 × 64 voxels) holds them all
    fetched = data / SEG / "volumes/MTLSD/fragments"
    assert sorted(p.name for p in fetched.iterdir()) == [".zarray", ".zattrs", ".".join(str(c // s) for c, s in zip((CORNER[0], CORNER[1] + 10, CORNER[2] + 1192), (8, 64, 64)))]
    entry = json.loads(manifest.read_text())["runs"][0]
    assert (entry["run"], entry["null_scores"], entry["dangling_edges"]) == (RUN, 1, 1)
    assert "(4 nodes, 4 edges, 1 without a score, 1 dangling skipped)" in done.stdout

    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", report)
    assert done.returncode == 0, done.stderr
    assert "11_micron_roi masked: threshold 0.5, VOI sum 0.864 (paper 0.2593322567347398)\n" in done.stdout
    assert (
        "11_micron_roi unmasked: threshold 0.5, VOI sum 1.318 (unmasked skeletons on masked supervoxels; not "
        "reproducible from the bucket: the unmasked supervoxels are not published)\n"
    ) in done.stdout
    with open(out / "zebrafinch_mtlsd.csv") as f:
        table = {(r["roi"], r["masked"] == "true"): r for r in csv.DictReader(f)}
    expected = expected_rows()
    assert set(table) == set(expected) and len(table) == 22
    for key, want in expected.items():
        row = table[key]
        assert row["status"] == "ok", (key, row["status"])
        assert float(row["threshold"]) == 0.5, key
        for metric, value in want.items():
            assert float(row[metric]) == pytest.approx(value, abs=1e-9), (key, metric)
        assert float(row["voi_sum"]) == pytest.approx(want["voi_split"] + want["voi_merge"], abs=1e-9)
        assert float(row["normalized_erl"]) == pytest.approx(want["erl"] / want["max_erl"], abs=1e-9)
    # the paper's numbers beside ours, and the difference; one threshold for every row, and the rule that chose it
    assert {r["threshold_rule"] for r in table.values()} == {"validation"}
    cube = table[("11_micron_roi", True)]
    assert (float(cube["paper_voi_sum"]), float(cube["paper_erl"])) == (0.2593322567347398, 13850.814229557516)
    assert (float(cube["paper_mcm_splits"]), float(cube["paper_mcm_merges"])) == (13.0, 21.0)
    assert (float(cube["paper_threshold"]), float(cube["paper_background_sites"])) == (0.32, 35.0)
    assert float(cube["diff_voi_sum"]) == pytest.approx(0.8638909261941091 - 0.2593322567347398, abs=1e-9)
    # unmasked rows: ours, labelled, never a difference against the paper's (another experiment)
    bench = table[("benchmark_roi", False)]
    assert bench["note"] == "not reproducible from the bucket: the unmasked supervoxels are not published"
    assert float(bench["paper_voi_merge"]) == 4.216726886652355
    assert bench["diff_voi_split"] == bench["diff_voi_sum"] == ""
    assert all(r["note"] == "" for (_, masked), r in table.items() if masked)
    assert all(r["note"] and not r["diff_erl"] for (_, masked), r in table.items() if not masked)
    md = (out / "zebrafinch_mtlsd.md").read_text()
    assert (
        "one threshold per network, 0.5: the lowest VOI sum of the 12 validation skeletons on benchmark_roi, masked, "
        "for every ROI and mask; the 50 test skeletons are scored at it"
    ) in md
    assert (
        "| 11_micron_roi | neuropil | ✘ | 0.50 / 0.32, validation | 0.197 / 0.146 | 0.667 / 0.113 "
        "| 0.864 / 0.259 / 0.605 |"
    ) in md
    # the min-cut metric on the masked 11, 18 and 25 µm cubes: at 0.5 the segment {1, 2} merges A1 and A2 in the
    # 11 µm cube (one cut, edge 1-2); in the larger cubes N1 is whole and alone in it: nothing to cut or merge
    mcm = {key: (r["min_cut_splits_needed"], r["min_cut_merges_needed"]) for key, r in table.items()}
    assert mcm.pop(("11_micron_roi", True)) == ("1", "0")
    assert mcm.pop(("18_micron_roi", True)) == mcm.pop(("25_micron_roi", True)) == ("0", "0")
    assert set(mcm.values()) == {("", "")}
    assert "| 1 / 2 / 35 | 1 + 0 / 13 + 21 |" in md
    # background sites, null scores, dangling edges and mask nodes outside the ROI: counted in the report
    assert [table[(roi, True)]["sites_num_bg_sites"] for roi in ROIS] == ["1"] * len(ROIS)
    assert [table[(roi, False)]["sites_num_bg_sites"] for roi in ROIS] == ["2"] * len(ROIS)
    # the original's count: every node inside the ROI on fragment 0 (1027 and 1028), whatever the mask
    assert {r["number_of_background_sites"] for r in table.values()} == {"2"}
    assert (cube["mask_nodes_outside_roi"], table[("18_micron_roi", True)]["mask_nodes_outside_roi"]) == ("1", "0")
    assert (
        f"{RUN}: 1 edges without a merge score (united at every threshold, as the original), 1 dangling edges "
        "skipped (an endpoint is no node)"
    ) in md
    with np.load(out / f"work/zebrafinch_mtlsd/{RUN}.zarr/luts/fragment_segment/seg_hist_quant_75_0.npz") as lut:
        assert (lut["fragments"].tolist(), lut["segments"].tolist()) == ([1, 2, 3, 4], [1, 2, 3, 3])
    # invariants first: the fixtures' skeletons are not the paper's, so every row is ✘, with both sides shown
    assert md.index("## Invariants first") < md.index("## Scores")
    assert "| 11_micron_roi | neuropil | 3 / 67 | 180 / 515894 | 61 / 17915 | ✘ | 1 |" in md
    assert "| benchmark_roi | none | 2 / 367 | 283 / 80794800 | 157 / 1514632 | ✘ | 0 |" in md
    assert {r["invariants"] for r in table.values()} == {"✘"}
    invariants = (cube["number_of_components"], cube["paper_components"], cube["paper_max_erl"])
    assert invariants == ("3", "67.0", "17914.530202672213")
    assert (
        "| benchmark_roi | none | ✘ | 0.50 / 0.32, validation | not reproducible from the bucket: the unmasked "
        "supervoxels are not published; ours (unmasked skeletons on masked supervoxels): VOI split "
    ) in md
    assert (out / "zebrafinch_mtlsd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # each evaluation's own scores: the threshold rule stated where it was fixed
    test_scores = json.loads((out / "work/zebrafinch_mtlsd/11_micron_roi_masked_testing.scores.json").read_text())
    assert test_scores["threshold_rule"].startswith("threshold 0.5 fixed by ")
    assert test_scores["threshold_rule"].endswith(
        "work/zebrafinch_mtlsd/threshold_benchmark_roi_masked_validation.scores.json (the lowest VOI sum there), "
        "not chosen on these scores"
    )

    # THRESHOLDS=paper: MTLSD's 0.32 (below the 0.5 that joins fragments 1 and 2) on every row
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", "THRESHOLDS=paper", f"{report} --name paper")
    assert done.returncode == 0, done.stderr
    with open(out / "paper.csv") as f:
        at_paper = {(r["roi"], r["masked"] == "true"): r for r in csv.DictReader(f)}
    assert {(r["threshold"], r["threshold_rule"], r["status"]) for r in at_paper.values()} == {("0.32", "paper", "ok")}
    # 11 µm masked: A1, A2 and B each alone in its fragment (B's background site aside)
    cube = at_paper[("11_micron_roi", True)]
    assert float(cube["voi_split"]) == pytest.approx(7 / 21 * entropy(6, 1), abs=1e-9)
    assert float(cube["voi_merge"]) == 0.0
    assert float(cube["erl"]) == pytest.approx((2 * 54**2 + 45**2) / 180, abs=1e-9)
    # larger, masked: N1 (20 nodes) split into fragments 1 and 2 at its 27 nm drop; B whole but for 1027
    for roi in ROIS:
        if roi != "11_micron_roi":
            row = at_paper[(roi, True)]
            split = 20 / 27 + 7 / 27 * entropy(6, 1)
            assert float(row["voi_split"]) == pytest.approx(split, abs=1e-9) and float(row["voi_merge"]) == 0.0
            assert float(row["erl"]) == pytest.approx((81**2 + 81**2 + 45**2) / 261, abs=1e-9)
    rule = "one threshold per network, 0.32 for every ROI and mask, the authors' value for mtlsd"
    assert rule in (out / "paper.md").read_text()
    # the validation rule on another ROI and mask: the 11 µm cube, unmasked (V and W are perfect there from 0.5)
    cube_rule = f"{report} --name cube --threshold-roi 11_micron_roi --threshold-unmasked"
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", cube_rule)
    assert done.returncode == 0, done.stderr
    assert (
        "threshold: 0.5: the lowest VOI sum of the 12 validation skeletons on 11_micron_roi, unmasked, for every ROI "
        "and mask"
    ) in done.stdout
    with open(out / "cube.csv") as f:
        assert [float(r["threshold"]) for r in csv.DictReader(f)] == [0.5] * 22
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", "THRESHOLDS=best", report)
    assert error(done) == "error: unknown threshold rule 'best' (expected one of: validation, paper)"
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", f"{report} --threshold-roi 99_micron_roi")
    assert error(done).startswith("error: unknown threshold ROI '99_micron_roi' (expected one of: 11_micron_roi, ")

    # a ROI whose nodes disagree with the skeletons' own per-ROI mask is refused, as a line of the report
    registry = json.loads((REPO / "03_predict/configs/rois/zebrafinch.json").read_text())
    registry["rois"]["11_micron_roi"]["roi_offset"][2] -= 900  # 100 voxels to the left: the marked nodes leave it
    (tmp_path / "shifted.json").write_text(json.dumps(registry))
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", f"{report} --rois {tmp_path / 'shifted.json'} --name shifted")
    assert done.returncode == 0, done.stderr
    with open(out / "shifted.csv") as f:
        shifted = {(r["roi"], r["masked"] == "true"): r for r in csv.DictReader(f)}
    assert shifted[("11_micron_roi", True)]["status"] == (
        "ROI '11_micron_roi' [50800, 43200, 43200]+[10800, 10800, 10800] nm disagrees with the skeletons' "
        "'11_micron_roi_masked': 22 of 22 marked nodes lie outside it (e.g. node 1000 at [50810.0, 43294.5, "
        "54841.5] nm, z, y, x)"
    )
    assert shifted[("11_micron_roi", False)]["status"].endswith("no skeleton edge lies inside the fragments' ROI [50800:61600, 43200:54000, 43200:54000] (10800, 10800, 10800)")
    assert shifted[("18_micron_roi", True)] == table[("18_micron_roi", True)]
    registry["rois"]["11_micron_roi"]["roi_offset"] = [0, 0, 0]  # far outside the published fragments
    (tmp_path / "far.json").write_text(json.dumps(registry))
    far = f"{report} --rois {tmp_path / 'far.json'} --threshold-roi 11_micron_roi"
    done = make("reproduce", "DATASET=zebrafinch", "NETWORK=mtlsd", far)
    assert error(done) == (
        "error: the threshold ROI '11_micron_roi' is not inside the fragments of any run; choose another with "
        "--threshold-roi"
    )
    assert "| 11_micron_roi | neuropil | | not computed: ROI '11_micron_roi'" in (out / "shifted.md").read_text()



def test_make_fetch_test_data_with_a_roi_copies_its_raw_with_context(paper_bucket, tmp_path):
    """ROI=<name>: the raw of that ROI grown by the context, from a precomputed volume (written by TensorStore,
    served over HTTP on loopback) into a zyx zarr with resolution and offset in nm."""
    from precomputed_server import StaticServer, write_precomputed

    raw = np.random.default_rng(3).integers(0, 256, (24, 24, 12), dtype=np.uint8)  # x, y, z
    server = StaticServer(write_precomputed(raw, (8, 8, 4), voxel_offset=(100, 200, 50)), gzip_paths="*")
    try:
        registry = {"dataset": "zebrafinch", "voxel_size": [20, 9, 9], "rois": {"tiny": {
            "roi_offset": [54 * 20, 208 * 9, 108 * 9], "roi_shape": [80, 72, 72], "offset_source": "derived", "note": "a test ROI",
        }}}  # fmt: skip
        (tmp_path / "tiny.json").write_text(json.dumps(registry))
        data = tmp_path / "data"
        args = f"--endpoint-url {paper_bucket.endpoint} --out {data} --rois {tmp_path / 'tiny.json'} --raw-url {server.url} --context 80 72 72"
        done = make("fetch-test-data", "DATASET=zebrafinch", "ROI=tiny", f"ARGS={args}")
        assert done.returncode == 0, done.stderr
        array = zarr.open_array(data / "funke/zebrafinch/testing/rawdata_realigned_tiny.zarr/volumes/raw", mode="r")
        assert (array.attrs["offset"], array.attrs["resolution"]) == ([50 * 20, 200 * 9, 100 * 9], [20, 9, 9])
        np.testing.assert_array_equal(array[:], raw.transpose(2, 1, 0))
        done = make("fetch-test-data", "DATASET=zebrafinch", "ROI=huge", f"ARGS={args}")
        assert error(done) == "error: unknown ROI 'huge' of dataset 'zebrafinch' (expected one of: tiny)"
    finally:
        server.close()


INVARIANTS = {
    "11_micron_roi": ((67, 68), (515_894, 521_997), (17_915, 17_776)),
    "18_micron_roi": ((120, 104), (1_886_450, 1_938_755), (38_270, 41_418)),
    "25_micron_roi": ((207, 150), (3_797_271, 3_927_036), (58_770, 72_299)),
    "32_micron_roi": ((289, 185), (6_391_365, 6_599_600), (74_523, 100_279)),
    "40_micron_roi": ((524, 301), (10_294_344, 10_776_753), (82_836, 140_103)),
    "47_micron_roi": ((768, 406), (16_525_166, 17_332_109), (92_830, 186_651)),
    "54_micron_roi": ((1_085, 473), (24_070_165, 25_275_929), (118_226, 269_062)),
    "61_micron_roi": ((1_342, 446), (32_109_777, 33_858_540), (139_241, 379_423)),
    "68_micron_roi": ((1_741, 467), (41_248_587, 43_605_343), (193_259, 601_850)),
    "76_micron_roi": ((2_162, 485), (51_523_614, 54_548_176), (207_524, 816_356)),
    "benchmark_roi": ((3_410, 367), (75_952_863, 80_794_800), (240_662, 1_514_632)),
}  # fmt: skip
"""protocol.md §4: components, total path length (nm) and max ERL (nm), each (masked, unmasked)."""
PAPER_MCM = {
    "baseline": ((15, 37), (37, 136), (81, 313)), "long_range": ((11, 111), (38, 464), (84, 961)),
    "malis": ((25, 119), (65, 416), (172, 899)), "mtlsd": ((13, 21), (35, 78), (79, 164)),
    "aclsd": ((18, 54), (36, 207), (100, 483)), "acrlsd": ((16, 45), (32, 157), (77, 342)),
}  # fmt: skip
"""paper.md §1.3 and protocol.md §6 (LongRange: the bucket's run, longrange_padding), 11, 18 and 25 µm, masked."""


def test_the_figure_labels_unmasked_rows_as_another_experiment():
    """On the published supervoxels our unmasked curve is "unmasked skeletons on masked supervoxels" and the paper's
    the other supervoxels'; on our own runs (no note) both are plainly "unmasked"; the masked curves are the paper's
    experiment."""
    from lsd_nm.reproduce import UNMASKED_NOTE, Row, plot_series, table

    def rows(note: str) -> list:
        return [
            Row("11_micron_roi", True, 1259.7, ours={"voi_sum": 0.5}, paper={"voi_sum": "0.26"}),
            Row("18_micron_roi", True, 5832.0, ours={"voi_sum": 0.7}, paper={"voi_sum": "0.35"}),
            Row("11_micron_roi", False, 1259.7, ours={"voi_sum": 0.9}, paper={"voi_sum": "0.39"}, note=note),
        ]

    curves = {c["label"]: (c["xs"], c["ys"]) for c in plot_series(table(rows(UNMASKED_NOTE)))}
    assert curves == {
        "ours, neuropil-masked": ([1259.7, 5832.0], [0.5, 0.7]),
        "paper, neuropil-masked": ([1259.7, 5832.0], [0.26, 0.35]),
        "ours, unmasked skeletons on masked supervoxels": ([1259.7], [0.9]),
        "paper, unmasked (supervoxels not published)": ([1259.7], [0.39]),
    }  # fmt: skip
    own = {c["label"] for c in plot_series(table(rows("")))}
    assert own == {"ours, neuropil-masked", "paper, neuropil-masked", "ours, unmasked", "paper, unmasked"}


def test_invariants_are_marked_against_the_papers():
    """✔ when components match exactly and the lengths to 1e-5 (relative), ✘ otherwise, nothing without numbers."""
    from lsd_nm.reproduce import Row, invariants_mark

    paper = {"components": "67.0", "total_path_length": "515893.55223083496", "max_erl": "17914.530202672213"}
    ours = {"number_of_components": 67, "total_path_length": 515893.56, "max_erl": 17914.53}
    assert invariants_mark(Row("11_micron_roi", True, ours=ours, paper=paper)) == "✔"
    assert invariants_mark(Row("11_micron_roi", True, ours={**ours, "number_of_components": 68}, paper=paper)) == "✘"
    assert invariants_mark(Row("11_micron_roi", True, ours={**ours, "max_erl": 17915.0}, paper=paper)) == "✘"
    assert invariants_mark(Row("11_micron_roi", True, ours=ours, paper={})) == ""


ORIGIN = "LocalShapeDescriptors/LocalShapeDescriptors.github.io@0cc0f50 plots/csvs/zfinch/"


def _paper_rows():
    with open(REPO / "03_predict/paper_numbers.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_papers_numbers_are_every_zebrafinch_row_of_the_authors_csvs():
    """03_predict/paper_numbers.csv: every zebrafinch ROI of every network, masked and unmasked (MALIS has no
    Benchmark ROI), every value equal to the authors' CSV it names, one threshold per network (the one reproduce
    scores at with THRESHOLDS=paper), the per-ROI invariants of protocol.md §4 on every network's rows, the min-cut
    metric and background sites on the masked 11, 18 and 25 µm cubes; hemi's and FIB-25's three ROIs per network."""
    from lsd_nm.reproduce import PAPER_THRESHOLDS

    rows = _paper_rows()
    networks = ["baseline", "long_range", "malis", "mtlsd", "aclsd", "acrlsd", "ffn"]
    zebrafinch = [r for r in rows if r["dataset"] == "zebrafinch"]
    keys = {(r["network"], r["roi"], r["masked"]) for r in zebrafinch}
    assert len(keys) == len(zebrafinch) == 152
    assert keys == {(n, roi, m) for n in networks for roi in ROIS for m in ("true", "false")} - {
        ("malis", "benchmark_roi", "true"), ("malis", "benchmark_roi", "false")
    }
    sources = {}
    for r in zebrafinch:
        origin = r["source"].removeprefix(ORIGIN)
        if origin not in sources:
            with open(REPO / "03_predict/paper_sources/zfinch" / origin, newline="") as f:
                sources[origin] = {(s["run_type"], s["has_mask"]): s for s in csv.DictReader(f)}
        theirs = sources[origin][(r["roi"], "1" if r["masked"] == "true" else "0")]
        assert float(r["voi_split"]) + float(r["voi_merge"]) == pytest.approx(float(r["voi_sum"]), abs=1e-12)
        for ours, column in (("voi_sum", "voi_sum"), ("erl", "expected_run_length"), ("threshold", "threshold"),
                             ("max_erl", "max_erl"), ("total_path_length", "total_path_length")):  # fmt: skip
            assert float(r[ours]) == float(theirs[column]), (r["network"], r["roi"], ours)
        assert float(r["threshold"]) == PAPER_THRESHOLDS[r["network"]], r
        (components, length, max_erl) = (v[0 if r["masked"] == "true" else 1] for v in INVARIANTS[r["roi"]])
        assert (round(float(r["total_path_length"])), round(float(r["max_erl"]))) == (length, max_erl), r
        assert r["components"] == ("" if r["network"] == "ffn" else str(components)), r  # FFN's CSV has nan
        cube = r["roi"] in ("11_micron_roi", "18_micron_roi", "25_micron_roi")
        if r["masked"] == "true" and cube and r["network"] != "ffn":
            mcm = PAPER_MCM[r["network"]][("11_micron_roi", "18_micron_roi", "25_micron_roi").index(r["roi"])]
            assert (int(r["mcm_splits"]), int(r["mcm_merges"])) == mcm, r
            low, high = {"11_micron_roi": (21, 48), "18_micron_roi": (79, 192), "25_micron_roi": (221, 450)}[r["roi"]]
            assert low <= int(r["background_sites"]) <= high, r
        else:
            assert r["mcm_splits"] == r["mcm_merges"] == r["background_sites"] == "", r
    notes = [r["mcm_note"] for r in zebrafinch if r["mcm_note"]]
    assert notes == [
        "another LongRange run (mcm_rois/longrange_validation_best_voi_sum_mcm.csv, threshold 0.04): 9 + 179",
        "another LongRange run (mcm_rois/longrange_validation_best_voi_sum_mcm.csv, threshold 0.04): 34 + 665",
        "another LongRange run (mcm_rois/longrange_validation_best_voi_sum_mcm.csv, threshold 0.04): 107 + 1374",
    ]
    bench = next(r for r in zebrafinch if (r["network"], r["roi"], r["masked"]) == ("acrlsd", "benchmark_roi", "true"))
    values = (bench["voi_split"], bench["voi_merge"], bench["erl"])
    assert values == ("0.9438864056886427", "1.346118515510435", "12667.456731155517")
    for dataset, rois in (("hemi", {"12_micron_roi", "17_micron_roi", "22_micron_roi"}), ("fib25", {"full", "roi_1", "roi_2"})):
        assert {(r["network"], r["roi"]) for r in rows if r["dataset"] == dataset} == {(n, roi) for n in networks for roi in rois}
    for r in rows:
        assert r["source"], r
        if r["dataset"] != "zebrafinch":
            assert abs(float(r["voi_split"]) + float(r["voi_merge"]) - float(r["voi_sum"])) <= 0.006, r  # 2 digits


def test_the_papers_numbers_are_what_the_builder_writes(tmp_path):
    """benchmarks/build_paper_numbers.py regenerates the file from the authors' CSVs byte for byte; a changed value
    is found."""
    script = REPO / "benchmarks/build_paper_numbers.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.endswith("matches its sources\n"), done.stderr
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_paper_numbers", script)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    sources = tmp_path / "zfinch"
    shutil.copytree(REPO / "03_predict/paper_sources/zfinch", sources)
    path = sources / "all_rois/mtlsd_validation_best_voi_sum.csv"
    path.write_text(path.read_text().replace("0.2593322567347398", "0.2593322567347399"))
    changed = builder.render(builder.zebrafinch_rows(sources) + builder.other_rows())
    assert changed != (REPO / "03_predict/paper_numbers.csv").read_text() and "0.2593322567347399" in changed


PAPER_MASKED_VOI_SUM_AND_ERL = {
    "baseline": [(0.397, 12.9), (0.590, 26.2), (0.773, 26.5), (0.965, 25.5), (1.164, 19.2), (1.591, 24.4),
                 (1.943, 23.7), (2.465, 20.0), (2.826, 16.0), (3.055, 15.9), (3.856, 9.1)],
    "long_range": [(0.866, 9.9), (1.136, 20.0), (1.290, 20.5), (1.506, 19.4), (1.862, 15.5), (2.345, 17.8),
                   (2.731, 18.3), (3.012, 17.4), (3.432, 16.6), (3.839, 11.7), (4.358, 9.5)],
    "malis": [(0.620, 11.8), (0.800, 23.4), (0.968, 22.6), (1.238, 22.4), (1.474, 15.7), (1.651, 21.5),
              (1.945, 21.6), (2.347, 19.5), (2.651, 14.6), (2.969, 16.8), None],
    "mtlsd": [(0.259, 13.9), (0.352, 27.8), (0.477, 30.0), (0.622, 28.6), (0.792, 21.8), (1.037, 29.1),
              (1.331, 26.8), (1.764, 19.0), (2.179, 14.9), (2.531, 12.8), (3.420, 8.9)],
    "aclsd": [(0.425, 13.0), (0.655, 24.4), (0.821, 25.7), (0.973, 27.8), (1.159, 20.6), (1.322, 27.0),
              (1.508, 26.7), (1.716, 23.7), (1.882, 40.2), (2.037, 39.9), (2.414, 12.9)],
    "acrlsd": [(0.356, 13.4), (0.520, 26.0), (0.662, 27.5), (0.792, 27.3), (0.988, 20.6), (1.168, 27.6),
               (1.339, 29.2), (1.540, 23.5), (1.692, 16.2), (1.867, 15.2), (2.290, 12.7)],
    "ffn": [(0.402, 13.6), (0.484, 28.5), (0.627, 31.0), (0.795, 30.0), (0.965, 22.2), (1.130, 27.7),
            (1.329, 26.2), (1.534, 24.5), (1.671, 37.9), (1.853, 35.2), (2.256, 16.7)],
}  # fmt: skip
"""paper.md §1.3: VOI sum (3 decimals) and ERL (10³ nm, 1 decimal) per ROI, neuropil-masked (MALIS: no Benchmark)."""
PAPER_BENCHMARK = {
    ("baseline", "true"): (1.115, 2.741, 3.856, 9_147, 0.038),
    ("long_range", "true"): (2.072, 2.286, 4.358, 9_517, 0.040),
    ("mtlsd", "true"): (0.625, 2.794, 3.420, 8_855, 0.037), ("aclsd", "true"): (1.192, 1.222, 2.414, 12_886, 0.054),
    ("acrlsd", "true"): (0.944, 1.346, 2.290, 12_667, 0.053), ("ffn", "true"): (1.068, 1.188, 2.256, 16_747, 0.070),
    ("baseline", "false"): (1.900, 3.953, 5.853, 14_401, 0.010),
    ("long_range", "false"): (3.236, 3.123, 6.359, 25_769, 0.017),
    ("mtlsd", "false"): (1.115, 4.217, 5.331, 15_860, 0.010), ("aclsd", "false"): (2.043, 1.961, 4.004, 133_006, 0.088),
    ("acrlsd", "false"): (1.656, 2.503, 4.159, 114_662, 0.076), ("ffn", "false"): (2.364, 0.152, 2.516, 204_616, 0.135),
}  # fmt: skip
"""paper.md §1.2: the Benchmark ROI, VOI split, merge, sum, ERL (nm) and nERL, masked ("true") and unmasked."""
SOURCE_COLUMNS = {
    "voi_split": "voi_split", "voi_merge": "voi_merge", "voi_sum": "voi_sum", "erl": "expected_run_length",
    "max_erl": "max_erl", "normalized_erl": "normalized_erl", "threshold": "threshold",
    "components": "number_of_components", "total_path_length": "total_path_length",
    "background_sites": "number_of_background_sites", "mcm_splits": "total_splits_needed_to_fix_merges",
    "mcm_merges": "total_merges_needed_to_fix_splits",
}  # fmt: skip
"""A column of paper_numbers.csv → the authors' column it holds (written out here, apart from the builder's)."""


def test_every_column_of_the_papers_numbers_is_the_authors_value_and_papers_table():
    """Every value of every zebrafinch row (masked and unmasked) equals its column of the authors' CSV (nan: empty),
    and the published tables of paper.md §1.2 (Benchmark ROI) and §1.3 (every cube, masked) to their rounding; the
    unmasked cube rows are there for every network (70 of them, FFN's included: 10 cubes × 7)."""
    rows = [r for r in _paper_rows() if r["dataset"] == "zebrafinch"]
    unmasked_cubes = [r for r in rows if r["masked"] == "false" and r["roi"] != "benchmark_roi"]
    assert len(unmasked_cubes) == 70 and all(r["threshold"] and r["voi_sum"] and r["erl"] for r in unmasked_cubes)
    for r in rows:
        key = (r["roi"], "1" if r["masked"] == "true" else "0")
        with open(REPO / "03_predict/paper_sources/zfinch" / r["source"].removeprefix(ORIGIN), newline="") as f:
            theirs = next(s for s in csv.DictReader(f) if (s["run_type"], s["has_mask"]) == key)
        for ours, column in SOURCE_COLUMNS.items():
            if theirs[column] in ("", "nan"):
                assert r[ours] == "", (r["network"], r["roi"], r["masked"], ours)
            else:
                assert float(r[ours]) == float(theirs[column]), (r["network"], r["roi"], r["masked"], ours)
    table = {(r["network"], r["roi"], r["masked"]): r for r in rows}
    for network, cells in PAPER_MASKED_VOI_SUM_AND_ERL.items():
        for roi, cell in zip(ROIS, cells):
            if cell is None:
                assert (network, roi, "true") not in table
                continue
            r = table[(network, roi, "true")]
            assert abs(float(r["voi_sum"]) - cell[0]) <= 0.0005 and abs(float(r["erl"]) / 1000 - cell[1]) <= 0.05, r
    for (network, masked), (split, merge, total, erl, nerl) in PAPER_BENCHMARK.items():
        r = table[(network, "benchmark_roi", masked)]
        for column, value in (("voi_split", split), ("voi_merge", merge), ("voi_sum", total), ("normalized_erl", nerl)):
            assert abs(float(r[column]) - value) <= 0.0005, (network, masked, column)
        assert abs(float(r["erl"]) - erl) <= 0.5, (network, masked)
