"""Constrained MALIS loss weights (Turaga et al. 2009; constrained two-pass version of Funke et al. 2018).

The malis network (``02_train/*/malis``) trains with MSE for its first 10,000 iterations, then with the MALIS loss
of TuragaLab/malis ``malis_loss_op`` (see ``shared/spec/original.md`` §4.5). No maintained MALIS wheel exists for
Python 3.12, so the per-edge weights are computed here, with numba, exactly as the original computes them
(``MalisWeights.malis_pass`` of ``malis_loss.py`` and ``malis_loss_weights_cpp``, TuragaLab/malis ``beb4ee9``).

The volume is a graph: voxels are nodes, and affinity channel ``c`` at voxel ``p`` is the edge between ``p`` and
``p + neighborhood[c]`` (an edge whose far end leaves the volume does not exist). The *maximin edge* of two voxels
``u, v`` is the weakest edge on the path between them that has the strongest weakest edge; segmentation by
thresholding the affinities merges ``u`` and ``v`` exactly when this edge is above the threshold. MALIS weights each
edge by how many voxel pairs have it as their maximin edge.

Kruskal's algorithm finds all maximin edges at once: process the edges by decreasing affinity, joining the two sets
of their end voxels with union-find; an edge that joins sets ``S1`` and ``S2`` is the maximin edge of every pair in
``S1 × S2`` (an edge whose ends are already in one set is the maximin edge of no pair). Every set carries a
dictionary ``label → voxel count`` (background, label 0, is not counted), so the pairs ``S1 × S2`` are counted
from the two dictionaries; the smaller dictionary is merged into the larger, which bounds the total work by
O(n log n) dictionary operations.

The *constrained* version runs Kruskal twice, each pass on a copy of the predicted affinities in which only the
edges with mask 1 are constrained:

* **positive pass**: edges with ``gt_affs == 0`` (and mask 1) are set to 0, so merges above 0 stay within objects;
  an edge gets the pairs with the same non-zero label, ``Σ_l n1[l]·n2[l]``;
* **negative pass**: edges with ``gt_affs == 1`` (and mask 1) are set to 1; an edge gets the pairs with different
  labels, both non-zero, ``N1·N2 − Σ_l n1[l]·n2[l]``.

Edges with mask 0 stay in the graph with their predicted affinity (they join sets and take pairs like any other
edge). Afterwards each pass zeroes the weights of the edges it constrained to the other side (positive pass:
``gt_affs == 0``; negative pass: ``gt_affs == 1``) and of the edges with mask 0, and divides by the sum of what
remains (in float32, as the original), so each pass sums to 1 (or is all 0). The loss is

    L = Σ_e (pos_e + neg_e) · (gt_affs_e − affs_e)²,

with the weights held constant (no gradient flows through them, as in ``malis_loss_op``, where they come from a
``py_func``).

Equal affinities are processed in the order the original's ``std::sort`` leaves them: the edges start in
increasing flat (C, z, y, x) index and are sorted by libstdc++'s introsort (GCC ≥ 4.9, the algorithm of every GCC
the original can have been built with), which is not stable. :func:`_sort_like_libstdcxx` reproduces that
algorithm step by step, so ties, which are common (constrained edges are exactly 0 or 1; float32 sigmoid outputs
collide), are broken as in the original.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, types
from numba.typed import Dict, List

_COUNTS = types.DictType(types.int64, types.int64)


def malis_weights(
    affs: np.ndarray,
    gt_affs: np.ndarray,
    gt_seg: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative constrained MALIS weights of every affinity edge, as TuragaLab/malis computes them.

    Args:
        affs: float (C, z, y, x) predicted affinities in [0, 1].
        gt_affs: (C, z, y, x) ground-truth affinities in {0, 1}, consistent with ``gt_seg`` (1 iff both ends have
            the same non-zero label).
        gt_seg: integer (z, y, x) ground-truth segmentation; 0 is background, whose voxels are in no counted pair.
        neighborhood: C offsets (dz, dy, dx); channel c at voxel p links p and p + offset.
        mask: optional (C, z, y, x) {0, 1}: only edges with mask 1 are constrained; edges with mask 0 keep their
            predicted affinity in both passes and get weight 0.

    Returns:
        ``(pos_weights, neg_weights)``, each float32 (C, z, y, x), each summing to 1 (or all 0 when its pass keeps
        no pair).
    """
    edges, far_end = _edges(affs.shape, gt_seg.shape, neighborhood)
    if mask is not None and tuple(mask.shape) != tuple(affs.shape):
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of affs {tuple(affs.shape)}")
    labels = _compact_labels(gt_seg)
    gt_affs = np.asarray(gt_affs)
    n_voxels = labels.shape[0]
    weights = []
    for pos in (1, 0):
        other_side = gt_affs == 1 - pos
        constrained = other_side if mask is None else other_side & (np.asarray(mask) == 1)
        pass_affs = np.array(affs, dtype=np.float32)
        pass_affs[constrained] = 1 - pos
        # the original's std::sort over the edge indices, in increasing index order to start with
        order = edges.copy()
        _sort_like_libstdcxx(order, pass_affs.reshape(-1))
        pairs = _kruskal_pair_counts(order % n_voxels, far_end[order], labels, pos == 1)
        counts = np.zeros(affs.size, dtype=np.int64)
        counts[order] = pairs
        counts = counts.reshape(affs.shape)
        # edges constrained to the other side, and unknown edges, do not count
        counts[other_side] = 0
        if mask is not None:
            counts[np.asarray(mask) == 0] = 0
        # normalised in float32 by a numpy sum, as the original, so that the weights are equal to the bit
        w = counts.astype(np.float32)
        total = np.sum(w)
        if total > 0:
            w = w / total
        weights.append(w)
    return weights[0], weights[1]


def malis_loss_weights(
    affs: np.ndarray,
    gt_affs: np.ndarray,
    gt_seg: np.ndarray,
    neighborhood: Sequence[Sequence[int]],
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Per-edge weights of the constrained MALIS loss: ``pos_weights + neg_weights`` of :func:`malis_weights`.

    The loss is ``Σ w · (gt_affs − affs)²`` with ``w`` held constant (a stop-gradient), so its gradient with
    respect to ``affs`` is ``−2 w (gt_affs − affs)``.

    Args:
        affs: float (C, z, y, x) predicted affinities in [0, 1].
        gt_affs: (C, z, y, x) ground-truth affinities in {0, 1}.
        gt_seg: integer (z, y, x) ground-truth segmentation, 0 = background.
        neighborhood: C offsets (dz, dy, dx).
        mask: optional (C, z, y, x) {0, 1}; edges with mask 0 get weight 0.

    Returns:
        float32 (C, z, y, x) weights, summing to 2 when both passes count pairs.
    """
    pos, neg = malis_weights(affs, gt_affs, gt_seg, neighborhood, mask)
    return pos + neg


def _edges(
    affs_shape: tuple[int, ...],
    seg_shape: tuple[int, ...],
    neighborhood: Sequence[Sequence[int]],
) -> tuple[np.ndarray, np.ndarray]:
    """The edges inside the volume, in increasing flat (C, z, y, x) index, and every edge's far end voxel.

    Returns ``(edges, far_end)``: the flat indices of the edges whose both ends are inside the volume (the
    original's ``pqueue`` before sorting), and a flat (C·z·y·x) array of the far end's flat (z, y, x) index
    (-1 outside). An edge's near end is its index modulo the number of voxels.

    Args:
        affs_shape: (C, z, y, x).
        seg_shape: (z, y, x).
        neighborhood: C offsets (dz, dy, dx).
    """
    if len(seg_shape) != 3 or tuple(affs_shape) != (len(neighborhood), *seg_shape):
        expected = (len(neighborhood), *seg_shape)
        raise ValueError(f"affs {tuple(affs_shape)} must be (len(neighborhood), *gt_seg.shape) = {expected}")
    n_voxels = int(np.prod(seg_shape))
    voxel = np.arange(n_voxels, dtype=np.int64).reshape(seg_shape)
    far_end = np.full(affs_shape, -1, dtype=np.int64)
    for c, offset in enumerate(neighborhood):
        if len(offset) != 3:
            raise ValueError(f"neighborhood offset {tuple(offset)} must be (dz, dy, dx)")
        near = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, seg_shape))
        far = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, seg_shape))
        far_end[c][near] = voxel[far]
    far_end = far_end.reshape(-1)
    return np.flatnonzero(far_end >= 0), far_end


def _compact_labels(gt_seg: np.ndarray) -> np.ndarray:
    """``gt_seg`` relabelled to 0 (background), 1, 2, … as flat int64 (uint64 ids may not fit an int64).

    Args:
        gt_seg: integer (z, y, x) segmentation.
    """
    ids, inverse = np.unique(gt_seg.reshape(-1), return_inverse=True)
    inverse = inverse.astype(np.int64)
    if ids.size == 0 or ids[0] != 0:
        inverse += 1
    return inverse


@njit(cache=True)
def _find(parent: np.ndarray, x: int) -> int:
    """Root of ``x``'s set, halving the path on the way."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@njit(cache=True)
def _kruskal_pair_counts(u: np.ndarray, v: np.ndarray, labels: np.ndarray, positive: bool) -> np.ndarray:
    """Pairs whose maximin edge is each edge, for edges sorted by decreasing affinity.

    Args:
        u: int64 first end voxel of each edge, in processing order.
        v: int64 second end voxel of each edge.
        labels: int64 compact label of each voxel, 0 = background.
        positive: count pairs with the same label (True) or with different labels (False); background never counts.

    Returns:
        int64 pair count per edge (0 for edges that join no sets).
    """
    n_voxels = labels.shape[0]
    parent = np.arange(n_voxels)
    rank = np.zeros(n_voxels, dtype=np.int32)
    labelled = (labels != 0).astype(np.int64)  # non-background voxels in each root's set
    # Each root's label -> voxel count. A set that is still a single voxel has no dictionary yet (its label says
    # all), which saves allocating one dictionary per voxel.
    has_counts = np.zeros(n_voxels, dtype=np.bool_)
    counts = List.empty_list(_COUNTS)
    placeholder = Dict.empty(key_type=types.int64, value_type=types.int64)
    for _ in range(n_voxels):
        counts.append(placeholder)

    pairs = np.zeros(u.shape[0], dtype=np.int64)
    for e in range(u.shape[0]):
        ru = _find(parent, u[e])
        rv = _find(parent, v[e])
        if ru == rv:
            continue
        if not has_counts[ru] and not has_counts[rv]:
            merged = Dict.empty(key_type=types.int64, value_type=types.int64)
            same = 0
            for r in (ru, rv):
                if labels[r] != 0:
                    m = merged.get(labels[r], 0)
                    same += m
                    merged[labels[r]] = m + 1
        elif not has_counts[ru] or not has_counts[rv]:
            single, merged = (ru, counts[rv]) if not has_counts[ru] else (rv, counts[ru])
            same = 0
            if labels[single] != 0:
                same = merged.get(labels[single], 0)
                merged[labels[single]] = same + 1
        else:
            # Small into large: O(n log n) dictionary updates over the whole run.
            merged = counts[ru]
            small = counts[rv]
            if len(small) > len(merged):
                merged, small = small, merged
            same = 0
            for label, n in small.items():
                m = merged.get(label, 0)
                same += n * m
                merged[label] = m + n
        pairs[e] = same if positive else labelled[ru] * labelled[rv] - same

        # Union by rank; the merged dictionary moves to the new root.
        if rank[ru] < rank[rv]:
            ru, rv = rv, ru
        parent[rv] = ru
        if rank[ru] == rank[rv]:
            rank[ru] += 1
        labelled[ru] += labelled[rv]
        counts[ru] = merged
        has_counts[ru] = True
        counts[rv] = placeholder
    return pairs


# ---- the original's std::sort ----------------------------------------------------------------------------------------
# libstdc++'s std::sort (bits/stl_algo.h, GCC 4.9 and later): introsort with the median of three as pivot, ranges of
# at most 16 left to a final insertion sort, and a heapsort where the recursion gets deeper than 2·log2(n). It is not
# stable, so the order of equal affinities depends on every step; each function below is one of its steps. The
# comparator is the original's AffinityGraphCompare: ``a`` goes before ``b`` iff ``key[a] > key[b]``.

_THRESHOLD = 16


@njit(cache=True)
def _sort_like_libstdcxx(items: np.ndarray, key: np.ndarray) -> None:
    """Sort ``items`` (indices into ``key``) in place by decreasing ``key``, exactly as libstdc++'s std::sort.

    Args:
        items: int64 indices, in their initial order.
        key: float32 values the indices point to.
    """
    n = items.shape[0]
    if n < 2:
        return
    depth = 0
    while (1 << (depth + 1)) <= n:  # floor(log2(n)), libstdc++'s __lg
        depth += 1
    # the recursion on the right part as an explicit stack: the parts are disjoint, so the order is immaterial
    stack = np.empty((2 * depth + 2, 3), dtype=np.int64)
    top = 0
    stack[0, 0], stack[0, 1], stack[0, 2] = 0, n, 2 * depth
    top = 1
    while top > 0:
        top -= 1
        first, last, limit = stack[top, 0], stack[top, 1], stack[top, 2]
        while last - first > _THRESHOLD:
            if limit == 0:
                _heap_sort(items, first, last, key)
                break
            limit -= 1
            cut = _partition_pivot(items, first, last, key)
            stack[top, 0], stack[top, 1], stack[top, 2] = cut, last, limit
            top += 1
            last = cut
    _final_insertion_sort(items, 0, n, key)


@njit(cache=True)
def _partition_pivot(items: np.ndarray, first: int, last: int, key: np.ndarray) -> int:
    """__unguarded_partition_pivot: the median of (first + 1, middle, last − 1) moves to ``first``, then partition."""
    mid = first + (last - first) // 2
    a, b, c = first + 1, mid, last - 1
    if key[items[a]] > key[items[b]]:
        if key[items[b]] > key[items[c]]:
            pick = b
        elif key[items[a]] > key[items[c]]:
            pick = c
        else:
            pick = a
    elif key[items[a]] > key[items[c]]:
        pick = a
    elif key[items[b]] > key[items[c]]:
        pick = c
    else:
        pick = b
    items[first], items[pick] = items[pick], items[first]
    pivot = key[items[first]]
    lo, hi = first + 1, last
    while True:
        while key[items[lo]] > pivot:
            lo += 1
        hi -= 1
        while pivot > key[items[hi]]:
            hi -= 1
        if not lo < hi:
            return lo
        items[lo], items[hi] = items[hi], items[lo]
        lo += 1


@njit(cache=True)
def _adjust_heap(items: np.ndarray, first: int, hole: int, length: int, value: int, key: np.ndarray) -> None:
    """__adjust_heap then __push_heap: sift the hole down to a leaf, then ``value`` up from there."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if key[items[first + child]] > key[items[first + child - 1]]:
            child -= 1
        items[first + hole] = items[first + child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        items[first + hole] = items[first + child - 1]
        hole = child - 1
    while hole > top:
        parent = (hole - 1) // 2
        if not key[items[first + parent]] > key[value]:
            break
        items[first + hole] = items[first + parent]
        hole = parent
    items[first + hole] = value


@njit(cache=True)
def _heap_sort(items: np.ndarray, first: int, last: int, key: np.ndarray) -> None:
    """__partial_sort(first, last, last): __make_heap, then __sort_heap (pop the top to the end, repeatedly)."""
    length = last - first
    if length >= 2:
        parent = (length - 2) // 2
        while True:
            _adjust_heap(items, first, parent, length, items[first + parent], key)
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        value = items[last]
        items[last] = items[first]
        _adjust_heap(items, first, 0, last - first, value, key)


@njit(cache=True)
def _linear_insert(items: np.ndarray, i: int, key: np.ndarray) -> None:
    """__unguarded_linear_insert: move ``items[i]`` left past every item it goes strictly before."""
    value = items[i]
    while key[value] > key[items[i - 1]]:
        items[i] = items[i - 1]
        i -= 1
    items[i] = value


@njit(cache=True)
def _insertion_sort(items: np.ndarray, first: int, last: int, key: np.ndarray) -> None:
    """__insertion_sort: an item before the first one moves to the front; any other is inserted unguarded."""
    for i in range(first + 1, last):
        if key[items[i]] > key[items[first]]:
            value = items[i]
            for j in range(i, first, -1):
                items[j] = items[j - 1]
            items[first] = value
        else:
            _linear_insert(items, i, key)


@njit(cache=True)
def _final_insertion_sort(items: np.ndarray, first: int, last: int, key: np.ndarray) -> None:
    """__final_insertion_sort: the first 16 guarded, the rest unguarded (the minimum is among the first 16)."""
    if last - first > _THRESHOLD:
        _insertion_sort(items, first, first + _THRESHOLD, key)
        for i in range(first + _THRESHOLD, last):
            _linear_insert(items, i, key)
    else:
        _insertion_sort(items, first, last, key)
