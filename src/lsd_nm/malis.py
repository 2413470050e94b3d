"""Constrained MALIS loss weights (Turaga et al. 2009; constrained two-pass version of Funke et al. 2018).

The malis network (``02_train/*/malis``) trains with MSE for its first 10,000 iterations, then with the MALIS loss
of TuragaLab/malis ``malis_loss_op`` (see ``shared/spec/original.md`` §4.5). No maintained MALIS wheel exists for
Python 3.12, so the per-edge weights are computed here, with numba.

The volume is a graph: voxels are nodes, and affinity channel ``c`` at voxel ``p`` is the edge between ``p`` and
``p + neighborhood[c]`` (an edge whose far end leaves the volume does not exist, nor does an edge with mask 0). The
*maximin edge* of two voxels ``u, v`` is the weakest edge on the path between them that has the strongest weakest
edge; segmentation by thresholding the affinities merges ``u`` and ``v`` exactly when this edge is above the
threshold. MALIS weights each edge by how many voxel pairs have it as their maximin edge.

Kruskal's algorithm finds all maximin edges at once: process the edges by decreasing affinity, joining the two sets
of their end voxels with union-find; an edge that joins sets ``S1`` and ``S2`` is the maximin edge of every pair in
``S1 × S2`` (an edge whose ends are already in one set is the maximin edge of no pair). Every set carries a
dictionary ``label → voxel count`` (background, label 0, is not counted), so the pairs ``S1 × S2`` are counted
from the two dictionaries; the smaller dictionary is merged into the larger, which bounds the total work by
O(n log n) dictionary operations.

The *constrained* version (Funke et al. 2018) runs Kruskal twice:

* **positive pass** on ``min(affs, gt_affs)``: edges between different objects are forced to 0, so every merge
  above 0 stays within an object; an edge gets the pairs with the same non-zero label, ``Σ_l n1[l]·n2[l]``
  (pairs that should be connected, and are disconnected when this edge is predicted low);
* **negative pass** on ``max(affs, gt_affs)``: edges inside objects are forced to 1; an edge gets the pairs with
  different labels, both non-zero, ``N1·N2 − Σ_l n1[l]·n2[l]`` (pairs that should be separate, and are merged
  when this edge is predicted high).

Each pass's weights are divided by that pass's total pair count, so they sum to 1 when any pair exists (and are all
0 otherwise). The loss is

    L = Σ_e (pos_e + neg_e) · (gt_affs_e − affs_e)²,

with the weights held constant (no gradient flows through them, as in ``malis_loss_op``, where they come from a
``py_func``). Equal affinities are processed in the order of the flat index into the (C, z, y, x) affinity array
(a stable sort), so the weights are deterministic.
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
    """Positive and negative constrained MALIS weights of every affinity edge.

    Args:
        affs: float (C, z, y, x) predicted affinities in [0, 1].
        gt_affs: (C, z, y, x) ground-truth affinities in {0, 1}, consistent with ``gt_seg`` (1 iff both ends have
            the same non-zero label).
        gt_seg: integer (z, y, x) ground-truth segmentation; 0 is background, whose voxels are in no counted pair.
        neighborhood: C offsets (dz, dy, dx); channel c at voxel p links p and p + offset.
        mask: optional (C, z, y, x) {0, 1}; edges with mask 0 are excluded: they join no sets and get weight 0.

    Returns:
        ``(pos_weights, neg_weights)``, each float32 (C, z, y, x), each summing to 1 (or all 0 when its pass counts
        no pair).
    """
    u, v, edges = _edges(affs.shape, gt_seg.shape, neighborhood, mask)
    labels = _compact_labels(gt_seg)
    flat_affs = np.asarray(affs, dtype=np.float32).reshape(-1)[edges]
    flat_gt = np.asarray(gt_affs, dtype=np.float32).reshape(-1)[edges]
    weights = []
    for positive in (True, False):
        constrained = np.minimum(flat_affs, flat_gt) if positive else np.maximum(flat_affs, flat_gt)
        # Stable: equal affinities keep flat-index order, so ties are broken deterministically.
        order = np.argsort(-constrained, kind="stable")
        pairs = _kruskal_pair_counts(u[order], v[order], labels, positive)
        w = np.zeros(affs.size, dtype=np.float64)
        w[edges[order]] = pairs
        total = w.sum()
        if total > 0:
            w /= total
        weights.append(w.astype(np.float32).reshape(affs.shape))
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
    mask: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The existing edges: end voxels ``u``, ``v`` (flat (z, y, x) indices) and flat (C, z, y, x) edge indices.

    Edges are listed in increasing flat edge index, which is the tie order.

    Args:
        affs_shape: (C, z, y, x).
        seg_shape: (z, y, x).
        neighborhood: C offsets (dz, dy, dx).
        mask: optional (C, z, y, x) {0, 1}.
    """
    if len(seg_shape) != 3 or tuple(affs_shape) != (len(neighborhood), *seg_shape):
        expected = (len(neighborhood), *seg_shape)
        raise ValueError(f"affs {tuple(affs_shape)} must be (len(neighborhood), *gt_seg.shape) = {expected}")
    if mask is not None and tuple(mask.shape) != tuple(affs_shape):
        raise ValueError(f"mask {tuple(mask.shape)} must have the shape of affs {tuple(affs_shape)}")
    n_voxels = int(np.prod(seg_shape))
    voxel = np.arange(n_voxels, dtype=np.int64).reshape(seg_shape)
    exists = np.zeros(affs_shape, dtype=bool)
    far_end = np.zeros(affs_shape, dtype=np.int64)
    for c, offset in enumerate(neighborhood):
        if len(offset) != 3:
            raise ValueError(f"neighborhood offset {tuple(offset)} must be (dz, dy, dx)")
        near = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, seg_shape))
        far = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, seg_shape))
        exists[c][near] = True
        far_end[c][near] = voxel[far]
    if mask is not None:
        exists &= np.asarray(mask) != 0
    edges = np.flatnonzero(exists)
    return edges % n_voxels, far_end.reshape(-1)[edges], edges


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
