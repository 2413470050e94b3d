"""lsd_nm.evaluate.evaluate_run (03_predict/06_evaluate.py): the threshold sweep of a run against dense labels and
skeletons, on a synthetic volume with ideal affinities."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import zarr
from predict_volumes import OFFSET, VOXEL_SIZE, config, read_fragments
from test_segments import GT, SETTINGS, base_run, copy_run, run_script, written  # noqa: F401 - base_run: a fixture

from lsd_nm.config import ConfigError
from lsd_nm.data import write_container
from lsd_nm.evaluate import SCORE_COLUMNS, evaluate_run, scores_paths
from lsd_nm.luts import all_thresholds, apply_lut, load_lut
from lsd_nm.metrics import expected_run_length, rand_voi, sample_segments
from lsd_nm.segments import find_segments
from lsd_nm.skeletons import read_skeletons


def _config(out: Path, dense: bool = True, skeletons: bool = True, **overrides):
    folder = out.parent
    values = dict(SETTINGS)
    if dense:
        values.update(gt_file=str(folder / "gt.zarr"), gt_dataset=GT)
    if skeletons:
        values.update(gt_skeletons=str(folder / "gt.skeletons.npz"))
    values.update(overrides)
    return config(out, **values)


def test_ideal_affinities_score_near_perfectly_and_the_files_are_written(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out)
    find_segments(cfg, progress=False)
    result = evaluate_run(cfg, progress=False)
    rows, best = result["rows"], result["best"]
    assert [r["threshold"] for r in rows] == all_thresholds(cfg)
    # dense VOI decides (ideal affinities: only label pieces cut off by the boundaries split)
    assert best["voi_sum"] == min(r["voi_sum"] for r in rows) < 0.1 and 0 < best["threshold"] < 1
    # the watershed floods thin label pieces (mean affinity ≤ 0.5) from a neighbour: a few merges remain
    assert best["arand"] < 0.01 and best["normalized_erl"] == max(r["normalized_erl"] for r in rows) > 0.9
    assert best["number_of_merging_segments"] <= 2 and best["sites_voi_split"] + best["sites_voi_merge"] < 0.2
    assert rows[0]["voi_split"] > 1.0 and rows[0]["normalized_erl"] < 0.5  # t = 0: every fragment is a segment
    # the sweep equals scoring the written-out segmentation directly (the GT covers the fragments here)
    truth = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:]
    segmentation = apply_lut(read_fragments(out), load_lut(cfg, best["threshold"]))
    direct = rand_voi(truth, segmentation)
    assert all(direct[k] == pytest.approx(best[k], abs=1e-12) for k in direct)
    skeletons = read_skeletons(out.parent / "gt.skeletons.npz")
    on_skeletons = sample_segments(skeletons["positions"], segmentation, VOXEL_SIZE, OFFSET)
    erl = expected_run_length(**skeletons, segment_ids=on_skeletons)
    assert all(erl[k] == pytest.approx(best[k], abs=1e-9) for k in erl)

    csv_path, json_path, png_path = scores_paths(out)
    assert (result["csv"], result["json"], result["png"]) == (csv_path, json_path, png_path)
    assert csv_path == tmp_path / "run" / "out.scores.csv" and png_path.name == "out.voi_vs_threshold.png"
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert tuple(next(iter(csv.reader(open(csv_path))))[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert len(table) == len(rows) and {"sites_voi_split", "number_of_split_skeletons", "max_erl"} <= set(table[0])
    saved = json.loads(json_path.read_text())
    assert saved["best"]["threshold"] == best["threshold"] and len(saved["rows"]) == len(rows)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((out / "volumes").glob("segmentation_*"))  # the sweep writes no segmentation


def test_without_dense_labels_the_site_voi_decides(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out, dense=False)
    find_segments(cfg, progress=False)
    result = evaluate_run(cfg, progress=False)
    for row in result["rows"]:
        assert (row["voi_split"], row["voi_merge"]) == (row["sites_voi_split"], row["sites_voi_merge"])
    best = result["best"]
    assert best["voi_sum"] == min(r["sites_voi_split"] + r["sites_voi_merge"] for r in result["rows"]) < 0.2
    assert "nvi_split" not in best  # no dense scores without dense labels


def test_skeleton_nodes_outside_the_fragments_are_left_out(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    skeletons = dict(np.load(out.parent / "gt.skeletons.npz"))
    far = np.array([[1e6, 1e6, 1e6], [1e6, 1e6, 2e6]], np.float32)
    extra = {
        "node_ids": np.array([9001, 9002], np.uint64), "positions": far,
        "neuron_ids": np.array([9000, 9000], np.uint64), "edges": np.array([[9001, 9002]], np.uint64),
    }  # fmt: skip
    np.savez_compressed(out.parent / "far.npz", **{k: np.concatenate([skeletons[k], extra[k]]) for k in extra})
    cfg = _config(out, dense=False, gt_skeletons=str(out.parent / "far.npz"))
    find_segments(cfg, progress=False)
    with_far = evaluate_run(cfg, progress=False)["rows"]
    without = evaluate_run(_config(out, dense=False), progress=False)["rows"]
    assert with_far == without and with_far[0]["sites_num_bg_sites"] == 0


def test_bad_inputs_are_one_line_errors_and_write_nothing(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out)
    before = written(tmp_path)
    with pytest.raises(ConfigError, match=r"^no LUT for threshold 0.0 \('.*seg_hist_quant_75_0.npz'\); run 04_find"):
        evaluate_run(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"^nothing to evaluate against"):
        evaluate_run(_config(out, dense=False, skeletons=False), progress=False)
    with pytest.raises(ConfigError, match=r"^gt_skeletons '.*missing.npz' does not exist$"):
        evaluate_run(_config(out, gt_skeletons=str(tmp_path / "missing.npz")), progress=False)
    empty = tmp_path / "run" / "empty.zarr"
    zarr.open_group(empty, mode="w", zarr_format=2)
    before_empty = written(tmp_path)
    with pytest.raises(ConfigError, match=r"^fragments \(run 02_extract_fragments first\) '.*' does not exist$"):
        evaluate_run(_config(empty), progress=False)
    assert written(tmp_path) == before_empty

    find_segments(cfg, progress=False)
    labels = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:]
    write_container(out.parent / "coarse.zarr", {GT: labels}, (40, 9, 9), OFFSET)
    write_container(out.parent / "shifted.zarr", {GT: labels}, VOXEL_SIZE, (50, 18, 36))
    before = written(tmp_path)
    coarse = _config(out, gt_file=str(out.parent / "coarse.zarr"))
    message = f"ground truth '{out.parent}/coarse.zarr/{GT}' has voxel size (40, 9, 9) nm, the fragments (20, 9, 9) nm"
    with pytest.raises(ConfigError) as error:
        evaluate_run(coarse, progress=False)
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=r"offset \(50, 18, 36\) nm\) is not on the fragments' voxel grid$"):
        evaluate_run(_config(out, gt_file=str(out.parent / "shifted.zarr")), progress=False)
    assert written(tmp_path) == before

    done = run_script("06_evaluate.py", coarse, tmp_path)
    assert (done.returncode, done.stderr) == (2, f"error: {message}\n")
    assert written(tmp_path) == before | {"config.json"}


def test_the_script_prints_the_best_row(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out, thresholds=(0.4, 0.6, 0.1), extract_thresholds=[])
    find_segments(cfg, progress=False)
    done = run_script("06_evaluate.py", cfg, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("best: threshold 0.4, voi_split ") and "normalized_erl 0.9" in done.stdout
    assert scores_paths(out)[1].is_file()


def _hand_made_run(folder: Path) -> Path:
    """Six fragments in a row (1 × 1 × 6 voxels, ids 1…6), a region graph written by hand and three skeletons:

        fragments:   1     2     3     4     5     6
        skeletons:   A     A    B B    C     C     C      (one node per fragment; B: two nodes in fragment 3)
        edges:       1–2 0.35, 2–3 0.1, 1–3 0.1, 3–4 0.5, 4–5 0.1, 5–6 0.3

    Thresholds 0, 0.2, 0.4, 0.6. At 0.4 the segments are {1, 2, 3} (A and B merged) and {4, 5, 6}: the lowest site
    VOI sum, 4/7 bit (0.2 also splits C, 0.6 merges everything). The min-cut metric there: A's node closest to B lies
    in fragment 2; the cheapest cut between fragments 2 and 3 (capacities 1 − score) isolates fragment 2 (1–2 and 2–3:
    0.65 + 0.9 < 1–3 and 2–3: 1.8), which leaves A's other node with B in {1, 3}; a second cut (1–3) separates them.
    Splits needed: 2. A is now in two pieces, {1} and {2}: merges needed 1. Nothing unsplittable.
    """
    from lsd_nm.graph import open_graph, write_edges, write_nodes

    out = folder / "out.zarr"
    write_container(out, {"volumes/fragments": np.arange(1, 7, dtype=np.uint64).reshape(1, 1, 6)}, VOXEL_SIZE, OFFSET)
    cfg = _hand_made_config(out)
    centre = lambda x, y=4.5: (OFFSET[0] + 10, OFFSET[1] + y, OFFSET[2] + 9 * x + 4.5)  # noqa: E731 - nm of voxel x
    db = open_graph(cfg.db_location, "w")
    centers = {i: tuple(int(c) for c in centre(i - 1)) for i in range(1, 7)}
    write_nodes(db, centers)
    scores = {(1, 2): 0.35, (2, 3): 0.1, (1, 3): 0.1, (3, 4): 0.5, (4, 5): 0.1, (5, 6): 0.3}
    write_edges(db, centers, {pair: (score, True) for pair, score in scores.items()})
    db.close()
    (cfg.blocks_dir / "agglomerate.json").parent.mkdir(parents=True)
    (cfg.blocks_dir / "agglomerate.json").write_text(json.dumps({"merge_function": cfg.merge_function}))
    positions = [centre(0), centre(1), centre(2, 2.0), centre(2, 7.0), centre(3), centre(4), centre(5)]
    np.savez_compressed(
        folder / "gt.skeletons.npz",
        node_ids=np.arange(1, 8, dtype=np.uint64), positions=np.array(positions, np.float32),
        neuron_ids=np.array([1, 1, 2, 2, 3, 3, 3], np.uint64),
        edges=np.array([[1, 2], [3, 4], [5, 6], [6, 7]], np.uint64),
    )  # fmt: skip
    return out


def _hand_made_config(out: Path, **overrides):
    values = dict(
        thresholds=(0.0, 0.8, 0.2), extract_thresholds=[], gt_skeletons=str(out.parent / "gt.skeletons.npz"), min_cut=True
    )
    return config(out, **{**values, **overrides})


def test_min_cut_metric_of_the_best_threshold_on_a_hand_made_run(tmp_path: Path) -> None:
    out = _hand_made_run(tmp_path)
    cfg = _hand_made_config(out)
    find_segments(cfg, progress=False)
    # off by default (slow on large region graphs), and it needs skeletons
    rows = evaluate_run(cfg.model_copy(update={"min_cut": False}), progress=False)["rows"]
    assert not any(k.startswith("min_cut") for row in rows for k in row)
    with pytest.raises(ConfigError, match=r"^min_cut needs gt_skeletons \(the min-cut metric separates skeletons\)$"):
        evaluate_run(_config(out, skeletons=False, min_cut=True), progress=False)
    result = evaluate_run(cfg, progress=False)
    rows, best = result["rows"], result["best"]
    assert [r["threshold"] for r in rows] == [0.0, 0.2, 0.4, 0.6]
    assert best["threshold"] == 0.4 and best["voi_sum"] == pytest.approx(4 / 7, abs=1e-12)
    assert best["number_of_merging_segments"] == 1 and best["number_of_split_skeletons"] == 0
    minimum_cut = {"min_cut_splits_needed": 2, "min_cut_merges_needed": 1, "min_cut_unsplittable": 0}
    assert {k: best[k] for k in minimum_cut} == minimum_cut
    assert [{k: r.get(k) for k in minimum_cut} == minimum_cut for r in rows] == [False, False, True, False]

    # scores.csv: the min-cut columns come last, filled for the best threshold only; scores.json: in its row and best
    with open(result["csv"]) as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[-3:] == list(minimum_cut)
    empty = ["", "", ""]
    assert [[row[k] for k in minimum_cut] for row in table] == [empty, empty, ["2", "1", "0"], empty]
    saved = json.loads(result["json"].read_text())
    assert {k: saved["best"][k] for k in minimum_cut} == minimum_cut
    assert [set(minimum_cut) <= set(r) for r in saved["rows"]] == [False, False, True, False]

    done = run_script("06_evaluate.py", cfg, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "min_cut_splits_needed 2, min_cut_merges_needed 1" in done.stdout


def test_roi_restricts_the_evaluation_to_it(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    whole = _config(out)
    find_segments(whole, progress=False)
    fragments = zarr.open_array(out / "volumes/fragments", mode="r")
    shape_nm = [s * v for s, v in zip(fragments.shape, VOXEL_SIZE)]
    everything = evaluate_run(whole, progress=False)["rows"]
    assert evaluate_run(_config(out, roi_offset=OFFSET, roi_shape=shape_nm), progress=False)["rows"] == everything

    # the half of the volume with the smaller x: only its skeleton nodes and ground truth count
    half = (shape_nm[0], shape_nm[1], shape_nm[2] // 2)
    rows = evaluate_run(_config(out, roi_offset=OFFSET, roi_shape=half), progress=False)["rows"]
    positions = read_skeletons(out.parent / "gt.skeletons.npz")["positions"]
    inside = (positions[:, 2] >= OFFSET[2]) & (positions[:, 2] < OFFSET[2] + half[2])
    assert 0 < rows[0]["sites_num_sites"] == inside.sum() < len(positions)
    truth = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:, :, : half[2] // VOXEL_SIZE[2]]
    lut = load_lut(whole, rows[3]["threshold"])
    direct = rand_voi(truth, apply_lut(read_fragments(out)[:, :, : half[2] // VOXEL_SIZE[2]], lut))
    assert all(direct[k] == pytest.approx(rows[3][k], abs=1e-12) for k in direct)

    outside = r"^the ROI \[0:20, 0:9, 0:9\] \(20, 9, 9\) \(roi_offset/roi_shape\) is not inside '.*/volumes/fragments' "
    with pytest.raises(ConfigError, match=outside):
        evaluate_run(_config(out, roi_offset=(0, 0, 0), roi_shape=VOXEL_SIZE), progress=False)


def _min_cut_metric_with_networkx(fragment_edges, lut, threshold, node_fragments, skeletons):
    """The original's min-cut metric spelled out with networkx (protocol.md §6): per merging segment its graph of
    edges ≤ threshold, unsplittable fragments removed, then split_graph recursively with the source side of each
    minimum cut (what the source reaches in the residual graph of networkx's maximum flow); the reference for
    :func:`lsd_nm.metrics.min_cut_metric`."""
    from collections import defaultdict

    import networkx as nx
    from scipy.spatial import cKDTree

    segment_of = dict(zip(lut[0].tolist(), lut[1].tolist()))
    segments = [0 if f == 0 else segment_of.get(f, f) for f in node_fragments.tolist()]
    components = skeletons["neuron_ids"].tolist()
    index = {n: i for i, n in enumerate(skeletons["node_ids"].tolist())}
    split_edges = defaultdict(int)
    for u, v in skeletons["edges"].tolist():
        a, b = segments[index[u]], segments[index[v]]
        if a and b and a != b:
            split_edges[components[index[u]]] += 1
    merges = sum(n - 1 for n in split_edges.values())
    members = defaultdict(set)
    for s, c in zip(segments, components):
        if s:
            members[s].add(c)
    scores = {(min(u, v), max(u, v)): score for u, v, score in fragment_edges}
    splits = unsplittable = 0
    for s in sorted(k for k, cs in members.items() if len(cs) > 1):
        graph = nx.Graph()
        graph.add_nodes_from(f for f, t in segment_of.items() if t == s)
        for (u, v), score in scores.items():
            inside = segment_of.get(u) == s and segment_of.get(v) == s and u != v
            if inside and score is not None and score <= threshold:
                graph.add_edge(u, v, capacity=1.0 - score)
        where, owners, lists = {}, defaultdict(set), {}
        for c in sorted(members[s]):
            lists[c] = []
            for i, (f, t, k) in enumerate(zip(node_fragments.tolist(), segments, components)):
                if t == s and k == c and f != 0:
                    graph.add_node(f)
                    lists[c].append(f)
                    where[f] = skeletons["positions"][i]
                    owners[f].add(c)
        shared = {f for f, cs in owners.items() if len(cs) > 1}
        unsplittable += len(shared)
        parts = [[f for f in fs if f not in shared] for fs in lists.values()]
        parts = [p for p in parts if p]
        if len(parts) <= 1:
            continue
        label, counter = {}, [0]

        def split(nodes, parts):
            if len(parts) <= 1:
                for f in nodes:
                    label[f] = counter[0]
                counter[0] += 1
                return 0
            part_u, part_v = sorted(parts, key=len)[-2:]
            distance, nearest = cKDTree([where[f] for f in part_u]).query([where[f] for f in part_v])
            k = int(np.argmin(distance))
            source, sink = part_u[int(nearest[k])], part_v[k]
            sub = graph.subgraph(nodes)
            _, flow = nx.maximum_flow(sub, source, sink)
            side, todo = {source}, [source]
            while todo:
                a = todo.pop()
                for b in sub[a]:
                    residual = sub[a][b]["capacity"] - flow[a][b] + flow[b][a]
                    if b not in side and residual > 1e-12:
                        side.add(b)
                        todo.append(b)
            rest = [f for f in nodes if f not in side]
            inside = [[f for f in p if f in side] for p in parts]
            outside = [[f for f in p if f not in side] for p in parts]
            return 1 + split(sorted(side), [p for p in inside if p]) + split(rest, [p for p in outside if p])

        splits += split(list(graph.nodes), parts)
        merges += sum(len({label[f] for f in p}) - 1 for p in parts)
    return {"splits_needed": splits, "merges_needed": merges, "unsplittable": unsplittable}


@pytest.mark.parametrize("seed", range(12))
def test_min_cut_metric_equals_the_networkx_reference(seed: int) -> None:
    """Random region graphs (scores in waterz's steps of 1/512, some missing) with two segments and skeleton chains
    on random fragments (some on fragment 0, some on fragments the LUT does not list): the scipy flows make the
    same cuts as the networkx reference at two thresholds, given as tuples or as the arrays the region graph is read
    into (each pair once, its last score, NaN for a missing one)."""
    from lsd_nm.metrics import min_cut_metric

    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 60))
    ids = rng.permutation(np.arange(1, 10 * n))[:n].tolist()
    lut = (np.array(ids, np.uint64), np.array([100 if k < n // 2 + 5 else 200 for k in range(n)], np.uint64))
    chain = [(ids[k], ids[k + 1]) for k in range(n - 1)]
    extra = [tuple(int(x) for x in rng.choice(ids, 2, replace=False)) for _ in range(2 * n)]
    edges = [(u, v, None if rng.random() < 0.1 else float(rng.integers(0, 512)) / 512) for u, v in chain + extra]
    nodes = int(rng.integers(10, 40))
    node_fragments = np.array(rng.choice(ids + [0, 10 * n + 1], nodes), np.uint64)
    neurons = rng.integers(1, 6, nodes)
    order = np.argsort(neurons, kind="stable")  # each component a chain of consecutive nodes
    skeletons = {
        "node_ids": np.arange(1, nodes + 1, dtype=np.uint64), "positions": rng.uniform(0, 1000, (nodes, 3)),
        "neuron_ids": neurons.astype(np.uint64),
        "edges": np.array([(order[k] + 1, order[k + 1] + 1) for k in range(nodes - 1)
                           if neurons[order[k]] == neurons[order[k + 1]]], np.uint64).reshape(-1, 2),
    }  # fmt: skip
    last = {(min(u, v), max(u, v)): score for u, v, score in edges}
    arrays = (np.array(list(last), np.uint64), np.array([np.nan if s is None else s for s in last.values()]))
    for threshold in (0.5, 0.9):
        args = (edges, lut, threshold, node_fragments, skeletons)
        expected = _min_cut_metric_with_networkx(*args)
        assert min_cut_metric(*args) == expected, threshold
        assert min_cut_metric(arrays, *args[1:]) == expected, threshold


def test_block_faces_are_the_write_grid_in_voxels_of_the_evaluated_region() -> None:
    """The grid of 8 × 48 × 48 voxels from OFFSET: over the whole 16 × 96 × 96 volume one face per axis, at the
    middle; a region starting 10 voxels into x sees the x face 38 voxels in; a face on the region's border, or a
    region inside one block, has none."""
    from funlib.geometry import Roi

    from lsd_nm.evaluate import block_faces

    block = (160, 432, 432)
    whole = Roi(OFFSET, (16 * 20, 96 * 9, 96 * 9))
    assert block_faces(OFFSET, block, whole, VOXEL_SIZE) == [[8], [48], [48]]
    shifted = Roi((OFFSET[0], OFFSET[1], OFFSET[2] + 90), (16 * 20, 96 * 9, 86 * 9))
    assert block_faces(OFFSET, block, shifted, VOXEL_SIZE) == [[8], [48], [38]]
    on_border = Roi((OFFSET[0] + 160, OFFSET[1], OFFSET[2]), (8 * 20, 40 * 9, 96 * 9))
    assert block_faces(OFFSET, block, on_border, VOXEL_SIZE) == [[], [], [48]]
    two_faces = Roi(OFFSET, (16 * 20, 96 * 9, 200 * 9))
    assert block_faces(OFFSET, (160, 432, 432), two_faces, VOXEL_SIZE)[2] == [48, 96, 144, 192]


def test_a_segmentation_cut_along_a_block_face_is_called_a_seam() -> None:
    """One neuron in two rows of eight voxels, blocks of four voxels along x (a face between x = 3 and 4), one block
    along z and y. False splits per plane along x: 0|1 1/2, 1|2 1/2, 2|3 1/2, 3|4 (the face) 2/2, 4|5 0/2, 5|6 1/2,
    6|7 0/2: face 100 %, the others sorted 0, 0, .5, .5, .5, .5 → median 50 %, max 50 %, ratio 2.0 > 1.5."""
    from funlib.geometry import Roi

    from lsd_nm.evaluate import block_faces, seam_check, seam_lines, seam_scores

    truth = np.ones((1, 2, 8), np.uint64)
    cut = np.array([[[1, 2, 2, 3, 10, 10, 11, 11], [4, 4, 5, 5, 12, 12, 12, 12]]], np.uint64)
    faces = block_faces((0, 0, 0), (20, 18, 36), Roi((0, 0, 0), (20, 18, 72)), (20, 9, 9))
    assert faces == [[], [], [4]]
    seams = seam_check(truth, cut, faces)
    assert seams == {
        "axes": [{"axis": "x", "faces": 1, "face_rate": 1.0, "median_rate": 0.5, "max_rate": 0.5, "ratio": 2.0,
                  "seam": True}],
        "one_block": ["z", "y"], "unmeasured": [],
    }  # fmt: skip
    assert seam_lines(seams) == [
        "seams: x faces 100.0 % false splits vs 50.0 % median elsewhere (2.0x) — a seam",
        "seams: one block along z, y: no block face to check there",
    ]
    assert seam_scores(seams) == {
        "seam_x_face_rate": 1.0, "seam_x_median_rate": 0.5, "seam_x_max_rate": 0.5, "seam_x_ratio": 2.0,
        "seam_x_faces": 1,
    }  # fmt: skip
    # the same segments joined across the face: 0 % there, no seam
    joined = cut.copy()
    joined[0, 0, 4:6], joined[0, 1, 4:] = 3, 5
    [row] = seam_check(truth, joined, faces)["axes"]
    assert (row["face_rate"], row["ratio"], row["seam"]) == (0.0, 0.0, False)
    assert seam_lines(seam_check(truth, joined, faces))[0].endswith("(0.0x) — no seam")
    # a split on the face only, none elsewhere: a seam whatever the ratio (no median to divide by)
    only = np.where(np.arange(8) < 4, 1, 2).astype(np.uint64)[None, None].repeat(2, axis=1)
    [line, _] = seam_lines(seam_check(truth, only, faces))
    assert line == "seams: x faces 100.0 % false splits vs 0.0 % median elsewhere (none elsewhere) — a seam"
    # 1.5× is not above 1.5: four rows, two split at every plane, a third at the face only: face 3/4, elsewhere 2/4
    rows = np.array([range(1, 9), range(11, 19), [21] * 4 + [22] * 4, [31] * 8], np.uint64)[None]
    [row] = seam_check(np.ones_like(rows), rows, faces)["axes"]
    assert (row["face_rate"], row["median_rate"], row["ratio"], row["seam"]) == (0.75, 0.5, 1.5, False)
    # faces without labelled pairs are said so
    unlabelled = truth.copy()
    unlabelled[:, :, 4] = 0
    assert seam_check(unlabelled, cut, faces)["unmeasured"] == ["x"]


def test_the_script_prints_the_seam_check_and_writes_its_numbers(base_run: Path, tmp_path: Path) -> None:
    """The base run (2 × 2 × 2 blocks, faces at z 8, y 48, x 48) scored at threshold 0.5, then again with the LUT
    changed so that every segment is cut at the x face (its fragments right of the face get new segment ids: the
    fragments are made per block, so none crosses it): the x line turns into a seam, with the numbers of
    :func:`face_split_rates` on the segmentation itself."""
    from lsd_nm.luts import lut_path, save_lut
    from lsd_nm.metrics import face_split_rates

    out = copy_run(base_run, tmp_path)
    cfg = _config(out, dense=True, skeletons=False, thresholds=(0.4, 0.6, 0.1), extract_thresholds=[],
                  score_threshold=0.5)  # fmt: skip
    find_segments(cfg, progress=False)
    truth = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:]
    fragments = read_fragments(out)
    left, right = set(np.unique(fragments[:, :, :48]).tolist()), set(np.unique(fragments[:, :, 48:]).tolist())
    assert left & right <= {0}
    ids, segments = load_lut(cfg, 0.5)
    cut = np.where(np.isin(ids, list(right - {0})), segments + int(segments.max()) + 1, segments).astype(np.uint64)
    for name, lut in (("as made", (ids, segments)), ("cut", (ids, cut))):
        save_lut(lut_path(cfg, 0.5), *lut, edges_sha256="")
        done = run_script("06_evaluate.py", cfg, tmp_path)
        assert done.returncode == 0, done.stderr
        expected = face_split_rates(truth, apply_lut(fragments, lut), [[8], [48], [48]])
        assert [r["axis"] for r in expected] == ["z", "y", "x"]
        saved = json.loads(scores_paths(out)[1].read_text())
        seams = saved["seams"]
        assert (seams["threshold"], seams["block_size"], seams["seam_ratio"]) == (0.5, [160, 432, 432], 1.5)
        assert (seams["one_block"], seams["unmeasured"]) == ([], [])
        lines = [line for line in done.stdout.splitlines() if line.startswith("seams: ")]
        assert len(lines) == 3, done.stdout
        for row, line, axis in zip(expected, lines, seams["axes"]):
            # ideal affinities: no false split off the faces, so no ratio (None in JSON)
            assert row["median_rate"] == 0.0 and math.isnan(row["ratio"]) and axis["ratio"] is None
            for key in ("face_rate", "median_rate", "max_rate", "faces"):
                assert saved["best"][f"seam_{row['axis']}_{key}"] == pytest.approx(row[key], abs=1e-12), (name, key)
                assert axis[key] == pytest.approx(row[key], abs=1e-12)
            assert saved["best"][f"seam_{row['axis']}_ratio"] is None
            verdict = "a seam" if row["face_rate"] > 0 else "no seam"
            assert axis["seam"] == (verdict == "a seam")
            assert line == (
                f"seams: {row['axis']} faces {100 * row['face_rate']:.1f} % false splits vs "
                f"0.0 % median elsewhere (none elsewhere) — {verdict}"
            ), name
        with open(scores_paths(out)[0]) as f:
            [table] = list(csv.DictReader(f))  # one threshold scored
        assert list(table)[:5] == ["threshold", "voi_split", "voi_merge", "voi_sum", "arand"]
        assert float(table["seam_x_face_rate"]) == pytest.approx(expected[2]["face_rate"])
        assert table["seam_x_ratio"] == ""  # no ratio without false splits elsewhere
    assert lines[2].endswith("— a seam") and expected[2]["face_rate"] == 1.0
