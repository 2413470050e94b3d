"""Skeleton evaluation as the paper did it (lsd_nm.skeletons.crop_skeletons, lsd_nm.evaluate): skeletons cropped to
the ROI, masked, relabelled into the connected components of their pieces — through the 03_predict scripts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_volumes import OFFSET, VOXEL_SIZE, config
from test_segments import run_script

from lsd_nm.bson_dump import NO_COMPONENT
from lsd_nm.config import ConfigError
from lsd_nm.data import write_container
from lsd_nm.evaluate import evaluate_run
from lsd_nm.graph import open_graph, write_edges, write_nodes
from lsd_nm.segments import find_segments
from lsd_nm.skeletons import crop_skeletons, read_skeletons, write_skeletons

# Fragments of 1 × 4 × 12 voxels (z, y, x): row y=0 is fragment 1, rows y=1, 2 fragment 3, row y=3 fragment 2.
# The ROI is x < 8 (voxels). Neuron 1 runs along y=0 from x=1 to x=10, jumps to y=3 at x=10 and comes back to x=1:
# it leaves the ROI and re-enters it, so inside the ROI it is two pieces, A1 (y=0) and A2 (y=3), segmented
# perfectly by fragments 1 and 2. Neuron 2 (B) runs along y=1, x=1…6, in fragment 3.
FRAGMENTS = np.array([[[1] * 12, [3] * 12, [3] * 12, [2] * 12]], np.uint64)
ROI_SHAPE = (20, 4 * 9, 8 * 9)
SCORES = {(1, 2): 0.5, (1, 3): 0.7, (2, 3): 0.7}  # at 0.6 fragments 1 and 2 (the two pieces of neuron 1) join


def centre(y: int, x: int) -> tuple[float, float, float]:
    return (OFFSET[0] + 10, OFFSET[1] + 9 * y + 4.5, OFFSET[2] + 9 * x + 4.5)


def neuron_skeletons(extra_node: bool = False) -> dict[str, np.ndarray]:
    """Neuron 1 (ids 1–20), neuron 2 (ids 21–26); with ``extra_node``, node 27 of neuron 2 at y=0, x=0 (inside
    fragment 1, neuron 1's) joined to node 21 — the node a neuropil mask removes below."""
    path = [(0, x) for x in range(1, 11)] + [(3, x) for x in range(10, 0, -1)]
    b = [(1, x) for x in range(1, 7)] + ([(0, 0)] if extra_node else [])
    positions = [centre(*p) for p in path + b]
    node_ids = np.arange(1, len(positions) + 1, dtype=np.uint64)
    edges = [(i, i + 1) for i in range(1, 20)] + [(i, i + 1) for i in range(21, 26)] + ([(21, 27)] if extra_node else [])
    return {
        "node_ids": node_ids, "positions": np.array(positions, np.float32),
        "neuron_ids": np.array([1] * 20 + [2] * len(b), np.uint64), "edges": np.array(edges, np.uint64),
    }  # fmt: skip


def hand_made_run(folder: Path, skeletons: dict[str, np.ndarray]) -> Path:
    """``out.zarr`` with the fragments, its region graph (agglomerated with hist_quant_75) and ``gt.skeletons.npz``."""
    out = folder / "out.zarr"
    write_container(out, {"volumes/fragments": FRAGMENTS}, VOXEL_SIZE, OFFSET)
    cfg = config(out)
    db = open_graph(cfg.db_location, "w")
    centers = {1: (50, 22, 90), 2: (50, 49, 90), 3: (50, 36, 90)}
    write_nodes(db, centers)
    write_edges(db, centers, {pair: (score, True) for pair, score in SCORES.items()})
    db.close()
    (cfg.blocks_dir).mkdir(parents=True)
    (cfg.blocks_dir / "agglomerate.json").write_text(json.dumps({"merge_function": cfg.merge_function}))
    write_skeletons(folder / "gt.skeletons.npz", skeletons)
    return out


def run_config(out: Path, **overrides):
    values = dict(
        thresholds=(0.0, 0.8, 0.2), extract_thresholds=[], gt_skeletons=str(out.parent / "gt.skeletons.npz"),
        roi_offset=OFFSET, roi_shape=ROI_SHAPE,
    )  # fmt: skip
    return config(out, **{**values, **overrides})


def scores_through_the_scripts(cfg, tmp_path: Path) -> dict:
    for script in ("04_find_segments.py", "06_evaluate.py"):
        done = run_script(script, cfg, tmp_path)
        assert done.returncode == 0, done.stderr
    stem = cfg.path(cfg.scores_stem) if cfg.scores_stem else cfg.out_path.with_suffix("")
    return json.loads(stem.with_name(stem.name + ".scores.json").read_text())


def test_a_neuron_that_leaves_and_reenters_the_roi_segmented_perfectly_scores_voi_0_and_nerl_1(tmp_path):
    out = hand_made_run(tmp_path, neuron_skeletons())
    scores = scores_through_the_scripts(run_config(out), tmp_path)
    by_threshold = {r["threshold"]: r for r in scores["rows"]}
    perfect = by_threshold[0.0]
    # three skeletons inside the ROI: A1 (7 nodes), A2 (7) and B (6); each its own segment
    assert (perfect["voi_split"], perfect["voi_merge"], perfect["normalized_erl"]) == (0.0, 0.0, 1.0)
    assert (perfect["number_of_skeletons"], perfect["number_of_split_skeletons"], perfect["number_of_merging_segments"]) == (3, 0, 0)
    assert perfect["sites_num_sites"] == 20 and perfect["total_path_length"] == pytest.approx(153.0)
    assert scores["best"]["threshold"] == 0.0 and "threshold_rule" not in scores

    # at 0.6 fragments 1 and 2 join: the two pieces of neuron 1 in one segment are a merge (of two skeletons)
    joined = by_threshold[0.6]
    assert joined["number_of_merging_segments"] == 1 and joined["merged_edges"] == 12
    assert joined["voi_split"] == 0.0 and joined["voi_merge"] == pytest.approx(14 / 20, abs=1e-12)
    # only B's 5 edges (45 nm) are correct: ERL = 45² / 153, max ERL = (54² + 54² + 45²) / 153
    assert joined["erl"] == pytest.approx(45**2 / 153) and joined["max_erl"] == pytest.approx(7857 / 153)
    assert joined["normalized_erl"] == pytest.approx(2025 / 7857)


def test_without_the_roi_the_neuron_is_one_skeleton_split_in_two(tmp_path):
    """The same segmentation scored on the whole volume: neuron 1 is one connected skeleton (through x ≥ 8) lying in
    two segments — a split at 0.0, and correct once fragments 1 and 2 join."""
    out = hand_made_run(tmp_path, neuron_skeletons())
    cfg = run_config(out, roi_offset=None, roi_shape=None)
    find_segments(cfg, progress=False)
    rows = {r["threshold"]: r for r in evaluate_run(cfg, progress=False)["rows"]}
    assert rows[0.0]["number_of_skeletons"] == 2 and rows[0.0]["number_of_split_skeletons"] == 1
    assert rows[0.0]["voi_split"] == pytest.approx(20 / 26, abs=1e-12) and rows[0.0]["voi_merge"] == 0.0
    assert rows[0.6]["voi_split"] == rows[0.6]["voi_merge"] == 0.0 and rows[0.6]["normalized_erl"] == 1.0


def masked_skeletons() -> dict[str, np.ndarray]:
    """:func:`neuron_skeletons` with the extra node, and the authors' per-ROI arrays of ``roi_masked``: the extra
    node and every node outside the ROI masked out, components A1 → 5, A2 → 6, B → 0 (0 is a valid id there)."""
    skeletons = neuron_skeletons(extra_node=True)
    x = np.floor((skeletons["positions"][:, 2] - OFFSET[2]) / 9)
    inside = x < 8
    masked = inside.copy()
    masked[26] = False
    components = np.full(27, NO_COMPONENT, np.uint64)
    components[:10][inside[:10]] = 5
    components[10:20][inside[10:20]] = 6
    components[20:26] = 0
    return {**skeletons, "masked_roi_masked": masked, "component_id_roi_masked": components}


def test_masked_nodes_are_excluded(tmp_path):
    out = hand_made_run(tmp_path, masked_skeletons())
    assert sorted(read_skeletons(out.parent / "gt.skeletons.npz")) == [
        "component_id_roi_masked", "edges", "masked_roi_masked", "neuron_ids", "node_ids", "positions",
    ]  # fmt: skip
    # unmasked, B's node in fragment 1 is a merge of A1 and B at every threshold: at 0, fragment 1 holds 7 nodes of
    # A1 and 1 of B, so VOI merge = 8/21 · H(7/8, 1/8)
    unmasked = scores_through_the_scripts(run_config(out, skeleton_roi="roi", scores_stem=str(tmp_path / "unmasked")), tmp_path)
    h = -(7 / 8 * np.log2(7 / 8) + 1 / 8 * np.log2(1 / 8))
    assert unmasked["rows"][0]["number_of_merging_segments"] == 1
    assert unmasked["rows"][0]["voi_merge"] == pytest.approx(8 / 21 * h, abs=1e-12)
    # masked with the skeletons' own mask and components: perfect again
    cfg = run_config(out, skeleton_roi="roi", skeleton_masked=True, scores_stem=str(tmp_path / "masked"))
    masked = scores_through_the_scripts(cfg, tmp_path)
    first = masked["rows"][0]
    assert (first["voi_split"], first["voi_merge"], first["normalized_erl"], first["sites_num_sites"]) == (0.0, 0.0, 1.0, 20)
    assert first["number_of_skeletons"] == 3

    # masked with a mask volume instead (the skeletons carry no mask for this ROI key): the same
    mask = np.ones((1, 2, 6), np.uint8)
    mask[0, 0, 0] = 0  # at twice the voxel size in y and x: the voxels y 0–1, x 0–1
    write_container(tmp_path / "mask.zarr", {"volumes/mask": mask}, (20, 18, 18), OFFSET)
    volume_masked = evaluate_run(
        run_config(out, skeleton_roi="other", skeleton_masked=True, eval_mask_file=str(tmp_path / "mask.zarr"),
                   eval_mask_dataset="volumes/mask", scores_stem=str(tmp_path / "volume_masked")),
        progress=False,
    )["rows"][0]  # fmt: skip
    # the mask also removes A1's node at x=1 and B's at x=1 (the pieces stay whole): 18 sites
    assert (volume_masked["voi_split"], volume_masked["voi_merge"], volume_masked["normalized_erl"]) == (0.0, 0.0, 1.0)
    assert volume_masked["number_of_skeletons"] == 3 and volume_masked["sites_num_sites"] == 18

    with pytest.raises(ConfigError) as e:
        evaluate_run(run_config(out, skeleton_roi="other", skeleton_masked=True), progress=False)
    assert str(e.value) == (
        f"skeleton_masked: gt_skeletons '{out.parent / 'gt.skeletons.npz'}' has no masked_other_masked "
        "(it has: masked_roi_masked) and no eval_mask_file/eval_mask_dataset is given"
    )


def test_validation_fixes_the_threshold_of_the_test_run(tmp_path):
    out = hand_made_run(tmp_path, neuron_skeletons())
    validation = run_config(out, scores_stem=str(tmp_path / "validation"), thresholds=(0.6, 1.0, 0.2))
    find_segments(validation, progress=False)
    assert evaluate_run(validation, progress=False)["best"]["threshold"] == 0.6  # the lower of 0.6 and 0.8
    test = run_config(out, scores_stem=str(tmp_path / "test"), threshold_from=str(tmp_path / "validation.scores.json"))
    scores = scores_through_the_scripts(test, tmp_path)
    assert [r["threshold"] for r in scores["rows"]] == [0.6] and scores["best"]["threshold"] == 0.6
    rule = f"threshold 0.6 fixed by {tmp_path / 'validation.scores.json'} (the lowest VOI sum there), not chosen on these scores"
    assert scores["threshold_rule"] == rule
    done = run_script("06_evaluate.py", test, tmp_path)
    assert rule in done.stdout

    path = tmp_path / "bad.scores.json"
    for text, message in [
        (None, f"threshold_from '{path}' does not exist (evaluate the validation run first)"),
        ("[1, 2]", f"threshold_from '{path}': not a scores.json of 06_evaluate (AttributeError)"),
        ('{"rows": [], "best": null}', f"threshold_from '{path}': it has no best threshold (a scores.json of 06_evaluate has 'best')"),
    ]:
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as e:
            evaluate_run(run_config(out, threshold_from=str(path)), progress=False)
        assert str(e.value) == message


def test_dense_ground_truth_ignores_labels_and_what_lies_outside_the_mask(tmp_path):
    """hemi's unlabelled id 2^64 − 3 and a mask: voxels with either count as no ground truth."""
    out = hand_made_run(tmp_path, neuron_skeletons())
    hemi_unlabelled = 2**64 - 3
    truth = np.array([[[7] * 12, [8] * 12, [hemi_unlabelled] * 12, [9] * 12]], np.uint64)
    truth[0, 3, :6] = 7  # row y=3: labels 7 (x < 6, neuron 7 also in fragment 1) and 9
    write_container(tmp_path / "gt.zarr", {"volumes/labels": truth}, VOXEL_SIZE, OFFSET)
    dense = dict(gt_file=str(tmp_path / "gt.zarr"), gt_dataset="volumes/labels", gt_skeletons=None, roi_offset=None, roi_shape=None)
    find_segments(run_config(out, **dense), progress=False)
    plain = evaluate_run(run_config(out, **dense), progress=False)["rows"][0]
    # t = 0: segments = fragments. The row y=2 (label 2^64 − 3) counts as an object merged with label 8 in fragment 3
    assert plain["voi_merge"] > 0
    ignored = evaluate_run(run_config(out, **dense, gt_ignore_ids=[hemi_unlabelled]), progress=False)["rows"][0]
    # left: 7 on 18 voxels (12 in fragment 1, 6 in 2), 8 on 12 (fragment 3), 9 on 6 (fragment 2); N = 36
    p = np.array([12, 6, 12, 6]) / 36
    h_ab = -np.sum(p * np.log2(p))
    h_a = -np.sum(np.array([18, 12, 6]) / 36 * np.log2(np.array([18, 12, 6]) / 36))
    h_b = -np.sum(np.array([12, 12, 12]) / 36 * np.log2(np.array([12, 12, 12]) / 36))
    assert ignored["voi_split"] == pytest.approx(h_ab - h_a, abs=1e-12) and ignored["voi_merge"] == pytest.approx(h_ab - h_b, abs=1e-12)
    # a mask (at twice the voxel size in y and x) that leaves out the row y=3 and the columns x ≥ 6: no merge left
    mask = np.zeros((1, 2, 6), np.uint8)
    mask[0, 0, :3] = 1
    write_container(tmp_path / "mask.zarr", {"volumes/mask": mask}, (20, 18, 18), OFFSET)
    masked = evaluate_run(
        run_config(out, **dense, gt_ignore_ids=[hemi_unlabelled], eval_mask_file=str(tmp_path / "mask.zarr"), eval_mask_dataset="volumes/mask"),
        progress=False,
    )["rows"][0]  # fmt: skip
    assert (masked["voi_split"], masked["voi_merge"]) == (0.0, 0.0)


def entropy(*counts: int) -> float:
    """H of a distribution given by counts, in bits."""
    p = np.asarray(counts, np.float64) / sum(counts)
    return float(-np.sum(p * np.log2(p)))


def background_run(folder: Path) -> Path:
    """Fragments of 1 × 4 × 12 voxels with background: row y=0 fragment 1 for x < 6 and 0 beyond, y=1 fragment 3,
    y=2 all 0, y=3 fragment 2 but for x=11, fragment 7 (in no region graph: no LUT lists it). Edges 1-2 (0.7), 1-3
    (0.45) and 2-3 without a score. Skeletons: N1 (ids 1–10) along y=0, x=0…9: 6 nodes on fragment 1, 4 on 0; N2 (ids
    11–18) along y=2, x=0…2 (3 on fragment 0), then y=1, x=3…7 (5 on fragment 3); N3 (ids 19–25) along y=3, x=5…11
    (6 on fragment 2, 1 on fragment 7). The authors' arrays of ``roi_masked`` mask node 10 (N1, x=9, on 0) out."""
    fragments = np.zeros((1, 4, 12), np.uint64)
    fragments[0, 0, :6], fragments[0, 1], fragments[0, 3, :11], fragments[0, 3, 11] = 1, 3, 2, 7
    out = folder / "out.zarr"
    write_container(out, {"volumes/fragments": fragments}, VOXEL_SIZE, OFFSET)
    cfg = config(out)
    db = open_graph(cfg.db_location, "w")
    centers = {1: (50, 22, 60), 2: (50, 49, 90), 3: (50, 31, 90)}
    write_nodes(db, centers)
    write_edges(db, centers, {(1, 2): (0.7, True), (1, 3): (0.45, True), (2, 3): (None, True)})
    db.close()
    cfg.blocks_dir.mkdir(parents=True)
    (cfg.blocks_dir / "agglomerate.json").write_text(json.dumps({"merge_function": cfg.merge_function}))
    path = [(0, x) for x in range(10)] + [(2, x) for x in range(3)] + [(1, x) for x in range(3, 8)]
    path += [(3, x) for x in range(5, 12)]
    neurons = np.array([1] * 10 + [2] * 8 + [3] * 7, np.uint64)
    edges = [(i, i + 1) for i in [*range(1, 10), *range(11, 18), *range(19, 25)]]
    masked = np.ones(25, bool)
    masked[9] = False
    write_skeletons(folder / "gt.skeletons.npz", {
        "node_ids": np.arange(1, 26, dtype=np.uint64), "positions": np.array([centre(*p) for p in path], np.float32),
        "neuron_ids": neurons, "edges": np.array(edges, np.uint64), "masked_roi_masked": masked,
        "component_id_roi_masked": neurons,
    })  # fmt: skip
    return out


def test_site_voi_scores_nodes_on_fragment_0_as_one_segment_0_by_hand(tmp_path):
    """The original's rule (protocol.md §2), worked out by hand through steps 4 and 6: every kept node is a site;
    fragment 0 is segment 0, one label holding the background sites of every neuron; fragment 7, which no LUT lists,
    keeps its own id; truth = component. VOI split = Σ_i n_i/N · H(segments of i), merge = Σ_j n_j/N · H(neurons
    of j). The edge 2-3 has no score: joined at every threshold.

    At 0.2, segments {1} and {2, 3}: N1 6 on 1 and 4 on 0; N2 3 on 0 and 5 on {2, 3}; N3 6 on {2, 3}, 1 on 7.
    At 0.5, 1-3 joins too: one segment {1, 2, 3} holds 6 + 5 + 6 sites. The background counts: 7 sites on
    fragment 0 (6 when node 10 is masked out); the original's number_of_background_sites counts every node of the ROI
    on fragment 0 whatever the mask: 7."""
    out = background_run(tmp_path)
    whole = dict(roi_offset=OFFSET, roi_shape=(20, 4 * 9, 12 * 9), thresholds=(0.2, 0.6, 0.3))
    cfg = run_config(out, **whole, scores_stem=str(tmp_path / "unmasked"))
    find_segments(cfg, progress=False)
    rows = {r["threshold"]: r for r in evaluate_run(cfg, progress=False)["rows"]}
    n = 25
    split = 10 / n * entropy(6, 4) + 8 / n * entropy(3, 5) + 7 / n * entropy(6, 1)
    assert rows[0.2]["voi_split"] == pytest.approx(split, abs=1e-9)
    assert rows[0.2]["voi_merge"] == pytest.approx(7 / n * entropy(4, 3) + 11 / n * entropy(5, 6), abs=1e-9)
    assert rows[0.5]["voi_split"] == pytest.approx(split, abs=1e-9)
    assert rows[0.5]["voi_merge"] == pytest.approx(7 / n * entropy(4, 3) + 17 / n * entropy(6, 5, 6), abs=1e-9)
    for row in rows.values():
        assert (row["sites_num_sites"], row["sites_num_bg_sites"], row["number_of_background_sites"]) == (25, 7, 7)
    # ERL at 0.2: only N1's 5 edges on fragment 1 are correct (N2 and N3 share {2, 3}; edges to 0 are omitted)
    length = 81 + 54 + 162**0.5 + 54
    assert rows[0.2]["erl"] == pytest.approx(45**2 / length, abs=1e-9)
    assert rows[0.2]["max_erl"] == pytest.approx((81**2 + (54 + 162**0.5) ** 2 + 54**2) / length, abs=1e-9)
    assert rows[0.5]["erl"] == 0.0

    # the authors' mask of the ROI leaves node 10 (on fragment 0) out: N1 has 6 sites on 1 and 3 on 0
    cfg = run_config(out, **whole, skeleton_roi="roi", skeleton_masked=True, scores_stem=str(tmp_path / "masked"))
    masked = evaluate_run(cfg, progress=False)["rows"][0]
    n = 24
    assert masked["voi_split"] == pytest.approx(
        9 / n * entropy(6, 3) + 8 / n * entropy(3, 5) + 7 / n * entropy(6, 1), abs=1e-9
    )
    assert masked["voi_merge"] == pytest.approx(6 / n * entropy(3, 3) + 11 / n * entropy(5, 6), abs=1e-9)
    assert (masked["sites_num_sites"], masked["sites_num_bg_sites"], masked["number_of_background_sites"]) == (24, 6, 7)

    # site_background "drop" (not the paper's rule): the 7 background sites are left out
    cfg = run_config(out, **whole, site_background="drop", scores_stem=str(tmp_path / "dropped"))
    dropped = evaluate_run(cfg, progress=False)["rows"][0]
    assert dropped["voi_split"] == pytest.approx(7 / 18 * entropy(6, 1), abs=1e-9)
    assert dropped["voi_merge"] == pytest.approx(11 / 18 * entropy(5, 6), abs=1e-9)
    assert (dropped["sites_num_sites"], dropped["sites_num_bg_sites"]) == (18, 7)


def test_crop_skeletons_relabels_and_checks_components():
    skeletons = neuron_skeletons()
    begin, end = OFFSET, tuple(o + s for o, s in zip(OFFSET, ROI_SHAPE))
    cropped = crop_skeletons(skeletons, begin, end)
    # A1 (neuron 1, first) → 1, A2 → 2, B (neuron 2) → 3
    assert cropped["neuron_ids"].tolist() == [1] * 7 + [2] * 7 + [3] * 6
    assert cropped["node_ids"].tolist() == list(range(1, 8)) + list(range(14, 21)) + list(range(21, 27))
    assert len(cropped["edges"]) == 6 + 6 + 5
    # a node mask splits A1 at x=4 into two components; a lone node stays a component of its own
    mask = np.ones(26, bool)
    mask[[3, 5]] = False  # x=4 and x=6 of A1: x=5 and x=7 are left alone
    masked = crop_skeletons(skeletons, begin, end, node_mask=mask)
    assert masked["neuron_ids"].tolist() == [1, 1, 1, 2, 3] + [4] * 7 + [5] * 6
    # the authors' components are taken as given (0 is one of them), renumbered by the same rule
    components = np.full(26, NO_COMPONENT, np.uint64)
    components[:7], components[13:20], components[20:] = 41, 40, 0
    given = crop_skeletons(skeletons, begin, end, component_ids=components)
    assert given["neuron_ids"].tolist() == [1] * 7 + [2] * 7 + [3] * 6
    components[:7] = 40  # A1 and A2 one component: then they are one skeleton
    assert crop_skeletons(skeletons, begin, end, component_ids=components)["neuron_ids"].tolist() == [1] * 14 + [2] * 6
    components[:7] = 41
    components[15] = 41
    with pytest.raises(ConfigError) as e:
        crop_skeletons(skeletons, begin, end, component_ids=components, source="c")
    assert str(e.value) == "c: the skeleton edge (15, 16) joins components 40 and 41"
    components[15] = NO_COMPONENT
    with pytest.raises(ConfigError) as e:
        crop_skeletons(skeletons, begin, end, component_ids=components, source="c")
    assert str(e.value) == "c: 1 kept nodes have no component (e.g. node 16)"
    bad = dict(skeletons, edges=np.concatenate([skeletons["edges"], [[1, 21]]]).astype(np.uint64))
    with pytest.raises(ConfigError) as e:
        crop_skeletons(bad, begin, end)
    assert str(e.value) == "skeleton edge (1, 21) joins neurons 1 and 2"


def test_steps_2_and_3_refuse_fragments_made_elsewhere(tmp_path):
    from lsd_nm.agglomerate import agglomerate
    from lsd_nm.fragments import extract_fragments

    cfg = config(tmp_path / "out.zarr", fragments_file=str(tmp_path / "published.zarr"))
    for step, name in ((extract_fragments, "02_extract_fragments"), (agglomerate, "03_agglomerate")):
        with pytest.raises(ConfigError) as e:
            step(cfg)
        assert str(e.value) == (
            f"{name} makes out_file's own volumes/fragments and edges: remove fragments_file/fragments_dataset "
            "(they are for fragments made elsewhere, e.g. the authors' published supervoxels)"
        )
    assert not list(tmp_path.iterdir())
