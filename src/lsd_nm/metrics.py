"""Segmentation metrics: VOI, Rand, ERL and the min-cut metric, as numpy / scipy functions (no files, no database).

Re-implemented from the definitions (paper.md §4, original.md §6.4.6–§6.4.7); no daisy, no graph-tool. Step 6 of
``03_predict`` (:mod:`lsd_nm.evaluate`) reads a run and writes its scores with these.

**Dense metrics** (:func:`rand_voi`). Over the voxels where ``truth != 0`` (test label 0 is an ordinary label), let
n_ij be the number of voxels with truth label i and test label j, a_i = Σ_j n_ij, b_j = Σ_i n_ij, N = Σ n_ij and
p = n / N. Entropies are in bits (log2): H(a), H(b), H(a,b).

* ``voi_split`` = H(b|a) = H(a,b) − H(a) (over-segmentation), ``voi_merge`` = H(a|b) = H(a,b) − H(b) (false merges).
* ``nvi_split`` = voi_split / H(a,b), ``nvi_merge`` = voi_merge / H(a,b) (0 when H(a,b) = 0).
* ``nid`` = 1 − (H(a) + H(b) − H(a,b)) / max(H(a), H(b)) (0 when both entropies are 0: two single clusters).
* ``rand_split`` = Σn_ij² / Σa_i² (the Rand recall R), ``rand_merge`` = Σn_ij² / Σb_j² (the Rand precision P),
  ``arand`` = 1 − 2PR / (P + R), the adapted Rand error of CREMI/SNEMI computed on raw counts as funlib/waterz do
  (scikit-image counts pairs of distinct voxels instead, Σn² − N; see the tests).

**Skeleton metrics.** Skeletons are the four arrays of ``*.skeletons.npz`` (:mod:`lsd_nm.skeletons`):
``node_ids`` (N,), ``positions`` (N, 3) zyx nm, ``neuron_ids`` (N,) and ``edges`` (E, 2) node-id pairs, plus a segment id
per node (from :func:`sample_segments`, then :func:`lsd_nm.luts.apply_lut` through a LUT).

* :func:`expected_run_length` (Januszewski 2018, with the rules of funlib.evaluate's ``expected_run_length`` at HEAD):
  an edge is *omitted* if either node's segment is 0, else *split* if the segments differ, else *merged* if the segment
  holds nodes of ≥ 2 skeletons, else *correct*. Only correct edges count. For a skeleton s of length L_s (all its edges),
  ERL_s = Σ_segments c²/L_s with c the length of its correct edges in that segment; the total is the length-weighted
  mean Σ_s (L_s/L) ERL_s. ``max_erl`` is the same with the perfect assignment (segment = skeleton) = Σ L_s²/L.
* :func:`sites_voi`: :func:`rand_voi` on (neuron id, segment id) per node, as the paper's zebrafinch VOI: sites on
  fragment 0 stay, as one segment 0 (the original's rule); :func:`site_segments` maps sites to segments.
* :func:`min_cut_metric`: the original's min-cut metric (MCM): the cuts of each merging segment's region graph that
  separate its skeletons (funlib.evaluate's ``split_graph``) and the merges that then reconnect every skeleton.

**Seams** (:func:`face_split_rates`): the false-split rate (voxel pairs across a plane that share a truth label but
not a segment) on the planes at block faces against the median of the other planes; a ratio well above 1 is a cut
along the faces.

**Threshold sweep** without writing segmentations: :func:`sweep_thresholds` maps the fragments through each LUT in
memory (:func:`lsd_nm.luts.apply_lut`) and scores every threshold; :func:`best_row` picks the lowest VOI sum.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

import numpy as np

from .luts import apply_lut

# ---------------------------------------------------------------------------------------------------------------------
# dense metrics

def face_split_rates(truth: np.ndarray, test: np.ndarray, faces: Sequence[Sequence[int]]) -> list[dict[str, float]]:
    """The false-split rate on the block faces against the other planes, per axis.

    Args:
        truth: (z, y, x) labels, 0 ignored.
        test: (z, y, x) segment ids.
        faces: per axis, the block faces as the index of the first section after each face (e.g. 72 for the plane
            between sections 71 and 72).

    Returns:
        Per axis with at least one face and one other plane: ``{"axis", "faces", "face_rate", "median_rate",
        "max_rate", "ratio"}`` — the false splits of all the face planes' pairs together, the median and maximum over
        the other planes, and face_rate / median_rate (NaN when the median is 0).
    """
    a_all, b_all = np.asarray(truth), np.asarray(test)
    out = []
    for axis, at in enumerate(faces):
        planes = sorted({int(f) - 1 for f in at if 0 < int(f) < a_all.shape[axis]})
        if not planes or len(planes) >= a_all.shape[axis] - 1:
            continue
        a, b = np.moveaxis(a_all, axis, 0), np.moveaxis(b_all, axis, 0)
        same = (a[1:] == a[:-1]) & (a[1:] != 0)
        split = same & (b[1:] != b[:-1])
        pairs, splits = same.sum(axis=(1, 2)), split.sum(axis=(1, 2))
        on_face = np.zeros(len(pairs), bool)
        on_face[planes] = True
        others = np.where(pairs[~on_face] > 0, splits[~on_face] / np.maximum(pairs[~on_face], 1), np.nan)
        others = others[~np.isnan(others)]
        if pairs[on_face].sum() == 0 or others.size == 0:
            continue
        face_rate = float(splits[on_face].sum() / pairs[on_face].sum())
        median = float(np.median(others))
        out.append({
            "axis": "zyx"[axis], "faces": len(planes), "face_rate": face_rate, "median_rate": median,
            "max_rate": float(others.max()), "ratio": face_rate / median if median > 0 else float("nan"),
        })  # fmt: skip
    return out



def _dense_ids(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values of ``x`` and the index of each element among them.

    ``np.unique(return_inverse=True)`` argsorts, which is several times slower than a sort plus a binary search.
    """
    values = np.unique(x)
    return values, np.searchsorted(values, x)


def contingency_table(truth: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero entries of the contingency table over the voxels where ``truth != 0``.

    Works for any integer ids (uint64 included) without a dense table: pairs are mapped to consecutive indices and
    counted by sorting.

    Args:
        truth: Ground-truth labels; 0 is ignored.
        test: Labels to evaluate, same shape; 0 is an ordinary label.

    Returns:
        ``(n_ij, a_i, b_j)`` as int64 arrays: the counts of the occurring (truth, test) pairs, the truth label sizes and
        the test label sizes (each in sorted id order).

    Raises:
        ValueError: if the shapes differ or no voxel has a truth label.
    """
    truth = np.asarray(truth)
    test = np.asarray(test)
    if truth.shape != test.shape:
        raise ValueError(f"truth and test differ in shape: {truth.shape} vs {test.shape}")
    mask = truth.ravel() != 0
    t = truth.ravel()[mask]
    s = test.ravel()[mask]
    if t.size == 0:
        raise ValueError("no voxel has a ground-truth label (truth is 0 everywhere)")
    t_values, ti = _dense_ids(t)
    s_values, si = _dense_ids(s)
    # one integer per (truth, test) pair; uint32 keys sort about twice as fast where they fit
    key = ti.astype(np.int64) * len(s_values) + si
    if len(t_values) * len(s_values) < 2**32:
        key = key.astype(np.uint32)
    key.sort()
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    n_ij = np.diff(np.append(starts, key.size)).astype(np.int64)
    a_i = np.bincount(ti).astype(np.int64)
    b_j = np.bincount(si).astype(np.int64)
    return n_ij, a_i, b_j


def _entropy(counts: np.ndarray, total: int) -> float:
    """Entropy in bits of the distribution ``counts / total``: log2(N) − Σ n log2 n / N."""
    counts = counts[counts > 0].astype(np.float64)
    return float(math.log2(total) - np.dot(counts, np.log2(counts)) / total)


RAND_VOI_KEYS = ("voi_split", "voi_merge", "rand_split", "rand_merge", "arand", "nvi_split", "nvi_merge", "nid")
"""The keys of :func:`rand_voi`'s scores."""


def rand_voi(truth: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """VOI, Rand and normalised information metrics of ``test`` against ``truth`` (definitions: module docstring).

    Args:
        truth: Ground-truth labels (any integer dtype, any shape); voxels with label 0 are ignored.
        test: The segmentation, same shape; label 0 is kept as a label (a background prediction is a merge).

    Returns:
        ``voi_split``, ``voi_merge``, ``rand_split``, ``rand_merge``, ``arand``, ``nvi_split``, ``nvi_merge``, ``nid``.
    """
    n_ij, a_i, b_j = contingency_table(truth, test)
    total = int(a_i.sum())
    h_a = _entropy(a_i, total)
    h_b = _entropy(b_j, total)
    h_ab = _entropy(n_ij, total)
    # conditional entropies are ≥ 0; rounding can leave −1e-16
    voi_split = max(h_ab - h_a, 0.0)
    voi_merge = max(h_ab - h_b, 0.0)
    sum_n2 = float(np.dot(n_ij, n_ij))
    rand_split = sum_n2 / float(np.dot(a_i, a_i))
    rand_merge = sum_n2 / float(np.dot(b_j, b_j))
    f_score = 2.0 * rand_split * rand_merge / (rand_split + rand_merge)
    h_max = max(h_a, h_b)
    return {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "rand_split": rand_split,
        "rand_merge": rand_merge,
        "arand": 1.0 - f_score,
        "nvi_split": voi_split / h_ab if h_ab > 0 else 0.0,
        "nvi_merge": voi_merge / h_ab if h_ab > 0 else 0.0,
        "nid": 1.0 - (h_a + h_b - h_ab) / h_max if h_max > 0 else 0.0,
    }


# ---------------------------------------------------------------------------------------------------------------------
# skeleton metrics


def sample_segments(
    positions_nm: np.ndarray,
    segmentation: np.ndarray,
    voxel_size: Sequence[float],
    offset: Sequence[float],
) -> np.ndarray:
    """The segment id under each skeleton node.

    A node at world position p (nm) lies in voxel ⌊(p − offset) / voxel_size⌋ (the voxel whose box contains it).

    Args:
        positions_nm: (N, 3) node positions, zyx in nm, offset included.
        segmentation: The 3-D label array.
        voxel_size: Its voxel size (nm).
        offset: World position (nm) of its first voxel's corner.

    Returns:
        (N,) ids with the segmentation's dtype; nodes outside the array get 0.
    """
    positions = np.asarray(positions_nm, dtype=np.float64).reshape(-1, 3)
    index = np.floor((positions - np.asarray(offset, np.float64)) / np.asarray(voxel_size, np.float64)).astype(np.int64)
    inside = np.all((index >= 0) & (index < np.asarray(segmentation.shape)), axis=1)
    out = np.zeros(len(positions), dtype=segmentation.dtype)
    idx = index[inside]
    out[inside] = segmentation[idx[:, 0], idx[:, 1], idx[:, 2]]
    return out


def _edge_rows(node_ids: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E, 2) row indices of the edges' end nodes (edges are given as node ids)."""
    node_ids = np.asarray(node_ids)
    edges = np.asarray(edges).reshape(-1, 2)
    order = np.argsort(node_ids, kind="stable")
    sorted_ids = node_ids[order]
    edges = edges.astype(node_ids.dtype)
    pos = np.searchsorted(sorted_ids, edges).clip(0, max(len(node_ids) - 1, 0))
    if len(edges) and (len(node_ids) == 0 or np.any(sorted_ids[pos] != edges)):
        raise ValueError("an edge refers to a node id that is not in node_ids")
    return order[pos]


def expected_run_length(
    node_ids: np.ndarray,
    positions: np.ndarray,
    neuron_ids: np.ndarray,
    edges: np.ndarray,
    segment_ids: np.ndarray,
) -> dict[str, float | int]:
    """Expected run length of a segmentation on ground-truth skeletons, with merge/split statistics.

    The parameter names match the four arrays of a skeletons file, so
    ``expected_run_length(**crop_skeletons(...), segment_ids=segments)`` works (:mod:`lsd_nm.skeletons`).

    Args:
        node_ids: (N,) node ids.
        positions: (N, 3) node positions (nm); edge lengths are Euclidean distances.
        neuron_ids: (N,) skeleton (connected component) id of each node.
        edges: (E, 2) node-id pairs; both ends must belong to the same skeleton.
        segment_ids: (N,) segment of each node; 0 = no segment (background, outside the ROI).

    Returns:
        ``erl``; ``max_erl`` (every skeleton one segment); ``normalized_erl`` = erl / max_erl;
        ``total_path_length`` (nm, all edges); ``number_of_skeletons`` (skeletons with ≥ 1 edge);
        ``number_of_split_skeletons`` (skeletons with ≥ 1 split edge); ``number_of_merging_segments`` (non-zero
        segments holding nodes of ≥ 2 skeletons); ``correct_edges``, ``merged_edges``, ``split_edges``,
        ``omitted_edges`` (edge counts).
    """
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    neuron_ids = np.asarray(neuron_ids)
    segment_ids = np.asarray(segment_ids)
    if not (len(node_ids) == len(positions) == len(neuron_ids) == len(segment_ids)):
        raise ValueError("node_ids, positions, neuron_ids and segment_ids must have one entry per node")
    rows = _edge_rows(node_ids, edges)
    u, v = rows[:, 0], rows[:, 1]
    if np.any(neuron_ids[u] != neuron_ids[v]):
        raise ValueError("an edge joins nodes of two different skeletons")
    length = np.linalg.norm(positions[u] - positions[v], axis=1)
    skeleton = neuron_ids[u]
    seg_u, seg_v = segment_ids[u], segment_ids[v]

    # merging segments: non-zero segments that hold nodes of at least two skeletons (nodes, not edges, decide)
    labelled = segment_ids != 0
    pairs = np.unique(np.stack([segment_ids[labelled], neuron_ids[labelled].astype(segment_ids.dtype)], axis=1), axis=0)
    segments, skeletons_per_segment = np.unique(pairs[:, 0], return_counts=True)
    merging_segments = segments[skeletons_per_segment > 1]

    omitted = (seg_u == 0) | (seg_v == 0)
    split = ~omitted & (seg_u != seg_v)
    merged = ~omitted & ~split & np.isin(seg_u, merging_segments)
    correct = ~omitted & ~split & ~merged

    skeleton_ids, skeleton_index = np.unique(skeleton, return_inverse=True)
    skeleton_length = np.bincount(skeleton_index, weights=length, minlength=len(skeleton_ids))
    total_length = float(skeleton_length.sum())

    # per skeleton, Σ_segments c² / L_s; summed with weights L_s / L this is Σ_(s, segment) c² / L
    pair_keys = np.stack([skeleton_index[correct], _dense_ids(seg_u[correct])[1]], axis=1)
    if len(pair_keys):
        _, pair_index = np.unique(pair_keys, axis=0, return_inverse=True)
        correct_length = np.bincount(pair_index.ravel(), weights=length[correct])
    else:
        correct_length = np.zeros(0)
    erl = float(np.dot(correct_length, correct_length) / total_length) if total_length > 0 else 0.0
    max_erl = float(np.dot(skeleton_length, skeleton_length) / total_length) if total_length > 0 else 0.0
    return {
        "erl": erl,
        "max_erl": max_erl,
        "normalized_erl": erl / max_erl if max_erl > 0 else 0.0,
        "total_path_length": total_length,
        "number_of_skeletons": len(skeleton_ids),
        "number_of_split_skeletons": len(np.unique(skeleton[split])),
        "number_of_merging_segments": len(merging_segments),
        "correct_edges": int(correct.sum()),
        "merged_edges": int(merged.sum()),
        "split_edges": int(split.sum()),
        "omitted_edges": int(omitted.sum()),
    }


SiteBackground = Literal["segment", "drop"]
"""How :func:`sites_voi` treats sites on segment 0: ``segment`` (the original's rule) or ``drop``."""


def sites_voi(
    neuron_ids: np.ndarray, segment_ids: np.ndarray, background: SiteBackground = "segment"
) -> dict[str, float | int]:
    """:func:`rand_voi` over skeleton nodes ("sites"): truth = neuron id, test = segment id.

    With ``background="segment"`` (the rule of the original ``05_evaluate_annotations.py``), a site on segment 0
    (fragment 0: outside the supervoxels, e.g. outside the neuropil mask) stays a site and segment 0 is one label like
    any other: the background sites of several neurons count as one merged segment, and those of one neuron beside
    its real segment as a split. ``background="drop"`` scores only the sites on a segment (not the paper's rule).
    Nodes with neuron id 0 are ignored as in :func:`rand_voi`.

    Args:
        neuron_ids: (N,) skeleton id per node.
        segment_ids: (N,) segment id per node.
        background: ``segment`` or ``drop`` (see above).

    Returns:
        The :func:`rand_voi` keys (NaN when no site is left to score) plus ``num_sites`` (sites scored) and
        ``num_bg_sites`` (sites with a neuron on segment 0: scored as segment 0, or dropped).
    """
    if background not in ("segment", "drop"):
        raise ValueError(f"background must be 'segment' or 'drop', not {background!r}")
    neuron_ids = np.asarray(neuron_ids)
    segment_ids = np.asarray(segment_ids)
    labelled = neuron_ids != 0
    on_background = labelled & (segment_ids == 0)
    scored = labelled & ~on_background if background == "drop" else labelled
    scores: dict[str, float | int]
    if scored.any():
        scores = dict(rand_voi(neuron_ids[scored], segment_ids[scored]))
    else:  # no site left to score (dropping the background of a network that predicts no foreground yet)
        scores = dict.fromkeys(RAND_VOI_KEYS, math.nan)
    scores["num_sites"] = int(np.count_nonzero(scored))
    scores["num_bg_sites"] = int(np.count_nonzero(on_background))
    return scores


def site_segments(node_fragments: np.ndarray, lut: tuple[np.ndarray, np.ndarray] | np.ndarray) -> np.ndarray:
    """The segment of each site, as the original maps sites (funlib.segment ``replace_values``): fragment 0 stays 0
    and a fragment the LUT does not list keeps its own id (our segment ids are fragment ids of the LUT, so it cannot
    collide with one); every other fragment gets its segment.

    Args:
        node_fragments: (N,) fragment under each site.
        lut: ``(fragment_ids, segment_ids)`` (see :func:`lsd_nm.luts.apply_lut`).
    """
    node_fragments = np.asarray(node_fragments)
    segments = apply_lut(node_fragments, lut)
    fragment_ids = np.asarray(lut[0]).astype(node_fragments.dtype)
    unlisted = (node_fragments != 0) & ~np.isin(node_fragments, fragment_ids)
    segments[unlisted] = node_fragments[unlisted].astype(segments.dtype)
    return segments


# ---------------------------------------------------------------------------------------------------------------------
# min-cut metric


CAPACITY_BITS = 24
"""Capacities 1 − merge_score are integers in units of 2^-24 for the max-flow (scipy's is integer); fewer bits where
a fragment has so many edges that its flow could exceed int32. waterz's histogram scores (multiples of 1/512) stay
exact."""


def _source_side(
    members: np.ndarray, edges: np.ndarray, capacity: np.ndarray, source: int, sink: int, n: int
) -> np.ndarray:
    """The source side of a minimum s-t cut of the subgraph induced by ``members``: the fragments the source still
    reaches in the residual graph of a maximum flow (the cut closest to the source, as graph-tool's ``min_st_cut``
    after its Boykov–Kolmogorov flow), as a bool array over all ``n`` fragments."""
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    inside = np.zeros(n, bool)
    inside[members] = True
    local = np.full(n, -1)
    local[members] = np.arange(len(members))
    kept = inside[edges[:, 0]] & inside[edges[:, 1]] if len(edges) else np.zeros(0, bool)
    u, v, cap = local[edges[kept, 0]], local[edges[kept, 1]], capacity[kept]
    network = coo_array(
        (np.concatenate([cap, cap]), (np.concatenate([u, v]), np.concatenate([v, u]))), shape=(len(members),) * 2
    ).tocsr()
    network.sum_duplicates()
    network.sort_indices()
    rows = np.repeat(np.arange(len(members)), np.diff(network.indptr))
    flow = maximum_flow(network, int(local[source]), int(local[sink])).flow
    if np.array_equal(flow.indptr, network.indptr) and np.array_equal(flow.indices, network.indices):
        residual = network.data - flow.data
    else:  # not the network's layout: look the arcs' flows up
        residual = network.data - np.asarray(flow[rows, network.indices]).ravel()
    usable = residual > 0
    reach = coo_array(
        (np.ones(int(usable.sum()), np.int8), (rows[usable], network.indices[usable])), shape=(len(members),) * 2
    ).tocsr()
    side = np.zeros(n, bool)
    side[members[breadth_first_order(reach, int(local[source]), directed=True, return_predecessors=False)]] = True
    return side


def _split_segment(
    n: int, edges: np.ndarray, capacity: np.ndarray, components: list[np.ndarray], position: np.ndarray
) -> tuple[int, np.ndarray]:
    """funlib.evaluate's ``split_graph`` on one segment: recursively cut the two largest components apart.

    Args:
        n: the segment's fragments, numbered 0 … n − 1.
        edges: (E, 2) fragment-number pairs of the cut graph.
        capacity: (E,) integer capacities.
        components: per skeleton component, the fragment number of each of its sites (repeats kept: a component's
            size is its number of sites), in site order.
        position: (n, 3) each fragment's position (that of its last site).

    Returns:
        ``(splits, label)``: the cuts made and the split label of every fragment.
    """
    from scipy.spatial import cKDTree  # here, not at the top: the post-processing steps import this module

    label = np.full(n, -1, np.int64)
    splits = 0
    next_label = 0
    # (fragments of the subgraph, its components); the source side first, then its complement (as the original)
    stack: list[tuple[np.ndarray, list[np.ndarray]]] = [(np.arange(n), components)]
    while stack:
        members, parts = stack.pop()
        if len(parts) <= 1:
            label[members] = next_label
            next_label += 1
            continue
        # the two largest components (a stable sort by size: of equal ones, the later counts as larger)
        part_u, part_v = sorted(parts, key=len)[-2:]
        distance, nearest = cKDTree(position[part_u]).query(position[part_v])
        v_index = int(np.argmin(distance))
        source, sink = int(part_u[int(nearest[v_index])]), int(part_v[v_index])
        side = _source_side(members, edges, capacity, source, sink, n)
        splits += 1
        rest = members[~side[members]]
        source_parts = [p[side[p]] for p in parts if side[p].any()]
        rest_parts = [p[~side[p]] for p in parts if (~side[p]).any()]
        stack.append((rest, rest_parts))
        stack.append((members[side[members]], source_parts))
    return splits, label


RegionGraphEdges = tuple[np.ndarray, np.ndarray]
"""A region graph's edges as arrays: ``(pairs, scores)``, (E, 2) fragment ids and (E,) merge scores (NaN: never
merged), each pair once (:func:`lsd_nm.graph.read_graph_arrays` reads them so)."""


def _edge_arrays(fragment_edges: Iterable[tuple[int, int, float | None]] | RegionGraphEdges) -> RegionGraphEdges:
    """``fragment_edges`` as :data:`RegionGraphEdges`, u < v; of a repeated ``(u, v, score)`` tuple the last
    score counts (arrays are taken as they are: each pair once)."""
    if isinstance(fragment_edges, tuple) and len(fragment_edges) == 2 and isinstance(fragment_edges[0], np.ndarray):
        pairs, scores = fragment_edges
        return np.sort(np.asarray(pairs, np.uint64).reshape(-1, 2), axis=1), np.asarray(scores, np.float64)
    rows = list(fragment_edges)
    pairs = np.sort(np.array([(u, v) for u, v, _ in rows], np.uint64).reshape(-1, 2), axis=1)
    scores = np.array([math.nan if s is None else s for _, _, s in rows], np.float64)
    _, last = np.unique(pairs[::-1], axis=0, return_index=True)
    keep = np.sort(len(pairs) - 1 - last)
    return pairs[keep], scores[keep]


def _groups(keys: np.ndarray, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """Per value of ``wanted`` (sorted, unique), the indices ``i`` with ``keys[i]`` equal to it, in index order."""
    inside = np.flatnonzero(np.isin(keys, wanted))
    inside = inside[np.argsort(keys[inside], kind="stable")]
    bounds = np.searchsorted(keys[inside], wanted, side="left"), np.searchsorted(keys[inside], wanted, side="right")
    return {int(w): inside[a:b] for w, a, b in zip(wanted.tolist(), *bounds)}


def min_cut_metric(
    fragment_edges: Iterable[tuple[int, int, float | None]] | RegionGraphEdges,
    lut: tuple[np.ndarray, np.ndarray] | np.ndarray,
    threshold: float,
    node_fragments: np.ndarray,
    skeletons: Mapping[str, np.ndarray],
) -> dict[str, int]:
    """Splits and merges needed to correct a segmentation, as the original ``05_evaluate_annotations.py`` computes
    its min-cut metric (MCM, protocol.md §6) with funlib.evaluate's ``split_graph``.

    Sites map to segments by :func:`site_segments`. For every non-zero segment holding sites of ≥ 2 skeleton
    components (``neuron_ids``), in its region graph (its fragments, the edges between them with ``merge_score ≤
    threshold``; a missing score is not ≤ t) with capacity 1 − merge_score:

    * each component's list holds the fragment of each of its sites on the segment (fragment 0 left out); a fragment
      is placed at its **last** site; a fragment holding sites of ≥ 2 components is *unsplittable* and removed from
      every list, and a component left with none is dropped;
    * with ≥ 2 components left, ``split_graph``: the two largest components (most sites), their two closest
      fragments, a minimum s-t cut between them — the **source side** (the second largest component's fragment),
      what the source reaches in the residual graph of a maximum flow — then the same on the source side and on its
      complement (which may be disconnected); each level is one split, each leaf a split label;
    * the merges this causes: Σ over the components of (their fragments' distinct split labels − 1).

    ``merges_needed`` adds, for every component with split edges (a skeleton edge between two different non-zero
    segments), their number − 1 (funlib.evaluate's ``split_stats``). The flows run in scipy (integer capacities:
    :data:`CAPACITY_BITS`). A fragment the region graph does not hold (or an edge the original could not read, e.g.
    a vertex graph-tool never created) is an isolated fragment here, where the original would fail.

    The graph stays in arrays: the edges of merging segments at or below the threshold are selected in numpy, and
    Python objects are made only for the fragments and edges of those segments (at the paper's size the graph has
    10⁷-10⁸ edges, the merging segments a small part of them).

    Args:
        fragment_edges: Region-graph edges, as ``(u, v, merge_score)`` tuples (a repeated pair keeps its last score)
            or as :data:`RegionGraphEdges` arrays.
        lut: ``(fragment_ids, segment_ids)`` at ``threshold``.
        threshold: the merge threshold of the LUT.
        node_fragments: (N,) fragment under each site.
        skeletons: ``node_ids``, ``positions``, ``neuron_ids`` (components) and ``edges`` (node-id pairs), one entry per
            site as ``node_fragments``.

    Returns:
        ``splits_needed``, ``merges_needed`` and ``unsplittable`` (fragments).
    """
    node_fragments = np.asarray(node_fragments).astype(np.uint64)
    neurons = np.asarray(skeletons["neuron_ids"])
    positions = np.asarray(skeletons["positions"], dtype=np.float64).reshape(-1, 3)
    fragment_ids, segment_ids = (np.asarray(x).astype(np.uint64).ravel() for x in lut)
    segments = site_segments(node_fragments, (fragment_ids, segment_ids))

    # split edges per component (funlib.evaluate's split_stats): merges to fix the splits
    rows = _edge_rows(skeletons["node_ids"], skeletons["edges"])
    su, sv = segments[rows[:, 0]], segments[rows[:, 1]]
    split = (su != 0) & (sv != 0) & (su != sv)
    _, split_edges = np.unique(neurons[rows[split, 0]], return_counts=True)
    merges = int(np.sum(split_edges - 1))

    labelled = (segments != 0) & (neurons != 0)
    pairs = np.unique(np.stack([segments[labelled], neurons[labelled].astype(np.uint64)], axis=1), axis=0)
    segment_list, counts = np.unique(pairs[:, 0], return_counts=True)
    merging = segment_list[counts > 1]
    if len(merging) == 0:
        return {"splits_needed": 0, "merges_needed": merges, "unsplittable": 0}

    # the edges inside merging segments with a score ≤ threshold (NaN ≤ t is false), without a Python object each
    edge_pairs, edge_scores = _edge_arrays(fragment_edges)
    below = np.flatnonzero(edge_scores <= threshold)
    edge_pairs, edge_scores = edge_pairs[below], edge_scores[below]
    order = np.argsort(fragment_ids, kind="stable")
    listed = fragment_ids[order]

    def segment_of(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        at = np.minimum(np.searchsorted(listed, ids), max(len(listed) - 1, 0))
        found = listed[at] == ids if len(listed) else np.zeros(len(ids), bool)
        return segment_ids[order[at]] if len(listed) else np.zeros(len(ids), np.uint64), found

    seg_u, found_u = segment_of(edge_pairs[:, 0])
    seg_v, found_v = segment_of(edge_pairs[:, 1])
    inside = found_u & found_v & (seg_u == seg_v) & (edge_pairs[:, 0] != edge_pairs[:, 1]) & np.isin(seg_u, merging)
    edge_pairs, edge_scores, edge_segment = edge_pairs[inside], edge_scores[inside], seg_u[inside]
    edges_of = _groups(edge_segment, merging)
    lut_fragments_of = _groups(segment_ids, merging)
    sites_of = _groups(np.where((node_fragments != 0) & (neurons != 0), segments, 0), merging)

    splits = unsplittable = 0
    for s in merging.tolist():
        on_segment = sites_of[s]
        listed_here = fragment_ids[lut_fragments_of[s]].tolist()
        fragments = list(dict.fromkeys(listed_here + node_fragments[on_segment].tolist()))
        number = {f: k for k, f in enumerate(fragments)}
        position = np.zeros((len(fragments), 3))
        owners: dict[int, set[int]] = defaultdict(set)
        sites: dict[int, list[int]] = {}
        for c in sorted(set(neurons[on_segment].tolist())):
            mine = on_segment[neurons[on_segment] == c]
            sites[c] = [number[int(f)] for f in node_fragments[mine].tolist()]
            for i, k in zip(mine.tolist(), sites[c]):
                position[k] = positions[i]  # the last site of a fragment places it
                owners[k].add(c)
        shared = {k for k, cs in owners.items() if len(cs) > 1}
        unsplittable += len(shared)
        components = [np.array([k for k in ks if k not in shared], np.int64) for ks in sites.values()]
        components = [c for c in components if len(c)]
        if len(components) <= 1:
            continue
        mine = edges_of[s]
        pairs_s = np.array([number[f] for f in edge_pairs[mine].ravel().tolist()], np.int64).reshape(-1, 2)
        capacity = np.clip(1.0 - edge_scores[mine], 0.0, 1.0)
        degree = np.bincount(pairs_s.ravel(), minlength=len(fragments)).max(initial=1)
        bits = min(CAPACITY_BITS, int(np.log2((2**31 - 1) / max(degree, 1))))
        cuts, label = _split_segment(
            len(fragments), pairs_s, np.rint(capacity * 2**bits).astype(np.int32), components, position
        )
        splits += cuts
        merges += sum(len(np.unique(label[c])) - 1 for c in components)
    return {"splits_needed": splits, "merges_needed": merges, "unsplittable": unsplittable}


# ---------------------------------------------------------------------------------------------------------------------
# threshold sweep


def sweep_thresholds(
    luts: Mapping[float, tuple[np.ndarray, np.ndarray] | np.ndarray],
    fragments: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    skeletons: Mapping[str, np.ndarray] | None = None,
    node_fragments: np.ndarray | None = None,
    site_background: SiteBackground = "segment",
) -> list[dict[str, float | int]]:
    """Score the segmentation at every threshold without writing it: relabel fragments through each LUT.

    Dense scores (``fragments`` and ``truth``) fill ``voi_split``, ``voi_merge``, ``arand``, … . Skeleton scores
    (``skeletons`` and ``node_fragments``) add the ERL keys and the site VOI as ``sites_voi_split``, … ; without dense
    ground truth the site VOI/ARAND also fill ``voi_split``, ``voi_merge`` and ``arand`` (the paper's zebrafinch
    numbers are site-based), and ``number_of_components`` counts the skeletons' components (every site's, as the
    original's ``number_of_components``). ``voi_sum`` = voi_split + voi_merge. The min-cut metric is not part of the
    sweep (it needs the region graph and is slow); call :func:`min_cut_metric` for chosen thresholds.

    Args:
        luts: Threshold → LUT (see :func:`lsd_nm.luts.apply_lut`).
        fragments: The fragment volume, cropped to ``truth``.
        truth: Dense ground-truth labels (0 ignored).
        skeletons: The four skeleton arrays, ``neuron_ids`` being the scored skeletons (e.g. from
            :func:`lsd_nm.skeletons.crop_skeletons`).
        node_fragments: The fragment under each skeleton node (:func:`sample_segments` on the fragments), mapped
            to segments by :func:`site_segments`.
        site_background: :func:`sites_voi`'s ``background``.

    Returns:
        One row per threshold, in increasing threshold order.
    """
    dense = fragments is not None and truth is not None
    on_skeletons = skeletons is not None and node_fragments is not None
    if not (dense or on_skeletons):
        raise ValueError("give fragments and truth, or skeletons and node_fragments (or both)")
    rows = []
    for threshold in sorted(luts):
        row: dict[str, float | int] = {"threshold": float(threshold)}
        if dense:
            row.update(rand_voi(truth, apply_lut(fragments, luts[threshold])))
        if on_skeletons:
            segments = site_segments(node_fragments, luts[threshold])
            row.update(expected_run_length(**skeletons, segment_ids=segments))
            neurons = np.asarray(skeletons["neuron_ids"])
            row["number_of_components"] = len(np.unique(neurons[neurons != 0]))
            sites = sites_voi(skeletons["neuron_ids"], segments, site_background)
            row.update({f"sites_{k}": value for k, value in sites.items()})
            if not dense:
                row.update({k: sites[k] for k in ("voi_split", "voi_merge", "arand")})
        row["voi_sum"] = row["voi_split"] + row["voi_merge"]
        rows.append(row)
    return rows


def best_row(rows: Sequence[Mapping[str, float]]) -> dict | None:
    """The row with the lowest ``voi_sum`` (the first of equal ones), or None if no row has one.

    Args:
        rows: Score rows, e.g. from :func:`sweep_thresholds`.
    """
    scored = [r for r in rows if r.get("voi_sum") is not None and math.isfinite(r["voi_sum"])]
    return dict(min(scored, key=lambda r: r["voi_sum"])) if scored else None
