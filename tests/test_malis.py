"""Constrained MALIS weights (lsd_nm.malis) against a literal reference of TuragaLab/malis and hand-computed examples.

The reference (``original_*`` below) follows the original step by step: ``nodelist_like`` (edges in flat (C, z, y, x)
order, far ends outside the volume invalid), ``MalisWeights.malis_pass`` (constrain only edges with mask 1, Kruskal
over all valid edges, zero the weights of edges with ``gt_affs == 1 - pos`` and with mask 0, normalise in float32),
and ``malis_loss_weights_cpp`` (``std::sort`` of the valid edge indices by decreasing affinity, union-find with a
``label -> count`` map per set, pairs counted over both maps). Its sort is a plain Python port of libstdc++'s
``std::sort``, checked here against orders that g++ produced; its pair counts are checked against an exhaustive
per-pair search.
"""

import itertools
import math

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lsd_nm.malis import _heap_sort, _sort_like_libstdcxx, malis_loss_weights, malis_weights

NEAREST = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]
MIXED = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 2), (0, 1, -1)]


# ---- libstdc++'s std::sort, ported literally (bits/stl_algo.h, GCC >= 4.9) ---------------------------------------------


def std_sort(items, comp):
    """std::sort(items, comp) in place: introsort loop, then the final insertion sort."""
    n = len(items)
    if n > 1:
        introsort_loop(items, 0, n, 2 * math.floor(math.log2(n)), comp)
        final_insertion_sort(items, 0, n, comp)


def introsort_loop(a, first, last, depth_limit, comp):
    while last - first > 16:
        if depth_limit == 0:
            partial_sort(a, first, last, comp)
            return
        depth_limit -= 1
        cut = unguarded_partition_pivot(a, first, last, comp)
        introsort_loop(a, cut, last, depth_limit, comp)
        last = cut


def unguarded_partition_pivot(a, first, last, comp):
    mid = first + (last - first) // 2
    move_median_to_first(a, first, first + 1, mid, last - 1, comp)
    return unguarded_partition(a, first + 1, last, first, comp)


def move_median_to_first(a, result, x, y, z, comp):
    if comp(a[x], a[y]):
        pick = y if comp(a[y], a[z]) else (z if comp(a[x], a[z]) else x)
    elif comp(a[x], a[z]):
        pick = x
    elif comp(a[y], a[z]):
        pick = z
    else:
        pick = y
    a[result], a[pick] = a[pick], a[result]


def unguarded_partition(a, first, last, pivot, comp):
    while True:
        while comp(a[first], a[pivot]):
            first += 1
        last -= 1
        while comp(a[pivot], a[last]):
            last -= 1
        if not first < last:
            return first
        a[first], a[last] = a[last], a[first]
        first += 1


def partial_sort(a, first, last, comp):
    """std::partial_sort(first, last, last): make_heap, then sort_heap."""
    n = last - first
    if n >= 2:
        parent = (n - 2) // 2
        while True:
            adjust_heap(a, first, parent, n, a[first + parent], comp)
            if parent == 0:
                break
            parent -= 1
    while last - first > 1:
        last -= 1
        value = a[last]
        a[last] = a[first]
        adjust_heap(a, first, 0, last - first, value, comp)


def adjust_heap(a, first, hole, n, value, comp):
    top = child = hole
    while child < (n - 1) // 2:
        child = 2 * (child + 1)
        if comp(a[first + child], a[first + child - 1]):
            child -= 1
        a[first + hole] = a[first + child]
        hole = child
    if n % 2 == 0 and child == (n - 2) // 2:
        child = 2 * (child + 1)
        a[first + hole] = a[first + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and comp(a[first + parent], value):
        a[first + hole] = a[first + parent]
        hole = parent
        parent = (hole - 1) // 2
    a[first + hole] = value


def final_insertion_sort(a, first, last, comp):
    if last - first > 16:
        insertion_sort(a, first, first + 16, comp)
        for i in range(first + 16, last):
            unguarded_linear_insert(a, i, comp)
    else:
        insertion_sort(a, first, last, comp)


def insertion_sort(a, first, last, comp):
    for i in range(first + 1, last):
        if comp(a[i], a[first]):
            value = a[i]
            a[first + 1 : i + 1] = a[first:i]
            a[first] = value
        else:
            unguarded_linear_insert(a, i, comp)


def unguarded_linear_insert(a, last, comp):
    value = a[last]
    while comp(value, a[last - 1]):
        a[last] = a[last - 1]
        last -= 1
    a[last] = value


# Orders produced by g++ 12.2 (libstdc++) with this program, input "mode n values...", one case per line:
#
#   #include <algorithm>
#   #include <cstdio>
#   #include <vector>
#   struct Cmp { const float* w; bool operator()(const unsigned long& a, const unsigned long& b) const { return w[a] > w[b]; } };
#   int main() {
#     int mode; long n;
#     while (scanf("%d %ld", &mode, &n) == 2) {
#       std::vector<float> w(n); for (long i = 0; i < n; ++i) scanf("%f", &w[i]);
#       std::vector<unsigned long> q(n); for (long i = 0; i < n; ++i) q[i] = i;
#       if (mode == 0) std::sort(q.begin(), q.end(), Cmp{w.data()});
#       else std::partial_sort(q.begin(), q.end(), q.end(), Cmp{w.data()});
#       for (long i = 0; i < n; ++i) printf("%lu ", q[i]); printf("\n");
#     }
#   }
#
# The comparator is the original's AffinityGraphCompare. KILLER is a median-of-three killer (built with McIlroy's
# adversary), on which std::sort runs out of depth and heapsorts.
TIED = [2, 1, 2, 2, 1, 2, 2, 0, 0, 0, 0, 2, 2, 0, 1, 2, 0, 2, 0, 1, 2, 0, 1, 0, 2, 0, 2, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 1, 1, 2, 1, 0, 2, 0, 2, 1, 0, 0, 1, 0]
TIED_SORTED = [20, 39, 36, 35, 34, 33, 26, 24, 42, 17, 44, 15, 12, 11, 2, 3, 5, 0, 6, 1, 38, 37, 4, 32, 31, 30, 29, 28, 27, 40, 22, 48, 19, 14, 45, 41, 49, 43, 47, 46, 25, 23, 21, 18, 16, 13, 10, 9, 8, 7]
HEAP_TIED = [0, 2, 3, 1, 3, 3, 3, 2, 1, 2, 1, 1, 1, 0, 3, 0, 0, 0, 3, 2, 3, 0, 2, 1, 1, 0, 2, 3, 2, 0, 2, 1, 3, 3, 0, 2, 3]
HEAP_TIED_PARTIAL_SORTED = [18, 4, 5, 33, 14, 27, 32, 2, 36, 20, 6, 19, 1, 22, 7, 9, 35, 26, 28, 30, 31, 3, 8, 10, 23, 11, 24, 12, 15, 16, 34, 17, 21, 25, 0, 13, 29]
KILLER = [2, 39, 4, 37, 6, 35, 8, 33, 3, 31, 7, 29, 0, 27, 9, 25, 5, 23, 20, 21, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 10, 13, 12, 15, 14, 17, 16, 19, 18, 11]
KILLER_SORTED = [20, 1, 21, 3, 22, 5, 23, 7, 24, 9, 25, 11, 26, 13, 27, 15, 28, 17, 29, 19, 18, 37, 38, 35, 36, 33, 34, 31, 32, 39, 30, 14, 6, 10, 4, 16, 2, 8, 0, 12]


def sorted_by_port(values):
    items = list(range(len(values)))
    std_sort(items, lambda a, b: values[a] > values[b])
    return items


def test_sort_port_gives_the_orders_of_gxx():
    assert sorted_by_port(TIED) == TIED_SORTED
    assert sorted_by_port(KILLER) == KILLER_SORTED
    items = list(range(len(HEAP_TIED)))
    partial_sort(items, 0, len(items), lambda a, b: HEAP_TIED[a] > HEAP_TIED[b])
    assert items == HEAP_TIED_PARTIAL_SORTED
    # not a stable sort: equal values do not keep their index order
    assert TIED_SORTED != sorted(range(len(TIED)), key=lambda i: -TIED[i])


def test_module_sort_is_libstdcxx_sort():
    for values, expected in ((TIED, TIED_SORTED), (KILLER, KILLER_SORTED)):
        items = np.arange(len(values), dtype=np.int64)
        _sort_like_libstdcxx(items, np.array(values, dtype=np.float32))
        assert items.tolist() == expected
    items = np.arange(len(HEAP_TIED), dtype=np.int64)
    _heap_sort(items, 0, len(items), np.array(HEAP_TIED, dtype=np.float32))
    assert items.tolist() == HEAP_TIED_PARTIAL_SORTED
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, 16, 17, 18, 40, 333, 3000):
        for levels in (1, 2, 3, 50, 10**6):
            values = (rng.integers(0, levels, n) / levels).astype(np.float32)
            items = np.arange(n, dtype=np.int64)
            _sort_like_libstdcxx(items, values)
            assert items.tolist() == sorted_by_port(values.tolist()), (n, levels)


# ---- the original's MALIS, literally ------------------------------------------------------------------------------


def gt_affinities(seg: np.ndarray, neighborhood, labels_mask=None):
    """seg_to_affgraph / AddAffinities, voxel by voxel: 1 where both ends have the same non-zero label (0 for edges
    leaving the volume); with ``labels_mask``, also the affinities mask (1 where both ends are masked in)."""
    affs = np.zeros((len(neighborhood), *seg.shape), dtype=np.float32)
    mask = np.zeros_like(affs)
    for c, offset in enumerate(neighborhood):
        for p in np.ndindex(seg.shape):
            q = tuple(a + o for a, o in zip(p, offset))
            if all(0 <= a < s for a, s in zip(q, seg.shape)):
                affs[(c, *p)] = seg[p] != 0 and seg[p] == seg[q]
                mask[(c, *p)] = labels_mask is None or (labels_mask[p] and labels_mask[q])
    return (affs, mask) if labels_mask is not None else affs


def nodelist_like(shape, neighborhood):
    """(node1, node2) per edge, flat over (C, z, y, x); node2 is -1 where the far end leaves the volume."""
    node1, node2 = [], []
    for offset in neighborhood:
        for p in np.ndindex(shape):
            q = tuple(a + o for a, o in zip(p, offset))
            node1.append(int(np.ravel_multi_index(p, shape)))
            node2.append(int(np.ravel_multi_index(q, shape)) if all(0 <= a < s for a, s in zip(q, shape)) else -1)
    return node1, node2


def original_pair_counts(seg, node1, node2, edge_weight, pos):
    """malis_loss_weights_cpp: pairs per edge, Kruskal on the std::sort order, a label->count map per set."""
    n_vert = seg.size
    parent = list(range(n_vert))
    overlap = [{int(seg[i]): 1} if seg[i] != 0 else {} for i in range(n_vert)]

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    queue = [i for i in range(len(node1)) if 0 <= node2[i] < n_vert]
    std_sort(queue, lambda a, b: edge_weight[a] > edge_weight[b])
    pairs = [0] * len(node1)
    for e in queue:
        set1, set2 = find(node1[e]), find(node2[e])
        if set1 == set2:
            continue
        for label1, n1 in overlap[set1].items():
            for label2, n2 in overlap[set2].items():
                if (label1 == label2) == bool(pos):
                    pairs[e] += n1 * n2
        parent[set2] = set1
        for label, n in overlap[set2].items():
            overlap[set1][label] = overlap[set1].get(label, 0) + n
        overlap[set2] = {}
    return np.array(pairs, dtype=np.uint64), queue


def original_malis_pass(affs, gt_affs, seg, neighborhood, mask, pos):
    """MalisWeights.malis_pass: (normalised weights, raw pair counts, processing order) of one pass."""
    pass_affs = np.copy(affs).astype(np.float32)
    if mask is None:
        constraint_edges = gt_affs == (1 - pos)
    else:
        constraint_edges = np.logical_and(gt_affs == (1 - pos), mask == 1)
    pass_affs[constraint_edges] = 1 - pos
    node1, node2 = nodelist_like(seg.shape, neighborhood)
    counts, queue = original_pair_counts(seg.reshape(-1), node1, node2, pass_affs.reshape(-1).tolist(), pos)
    weights = counts.reshape(affs.shape).copy()
    weights[gt_affs == (1 - pos)] = 0
    if mask is not None:
        weights[mask == 0] = 0
    weights = weights.astype(np.float32)
    num_pairs = np.sum(weights)
    if num_pairs > 0:
        weights = weights / num_pairs
    return weights, counts.reshape(affs.shape), queue


def original_malis_weights(affs, gt_affs, seg, neighborhood, mask=None):
    """(pos_weights, neg_weights) as MalisWeights.get_edge_weights computes them."""
    return tuple(original_malis_pass(affs, gt_affs, seg, neighborhood, mask, pos)[0] for pos in (1, 0))


def exhaustive_pair_counts(seg, neighborhood, queue, pos):
    """Pairs per edge by search: for every voxel pair (both labelled, same label if pos, different if not), its
    maximin edge is the edge at the first position k of ``queue`` such that the pair is connected by queue[:k+1]
    (connected components recomputed from scratch for every k)."""
    node1, node2 = nodelist_like(seg.shape, neighborhood)
    flat = seg.reshape(-1)
    labelled = np.flatnonzero(flat)
    pairs = np.array([(a, b) for a, b in itertools.combinations(labelled, 2) if (flat[a] == flat[b]) == bool(pos)], dtype=np.int64).reshape(-1, 2)
    counts = np.zeros(len(node1), dtype=np.uint64)
    for k, e in enumerate(queue):
        rows = [node1[f] for f in queue[: k + 1]]
        cols = [node2[f] for f in queue[: k + 1]]
        component = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(seg.size,) * 2), directed=False)[1]
        joined = component[pairs[:, 0]] == component[pairs[:, 1]]
        counts[e] = joined.sum()
        pairs = pairs[~joined]
    return counts


def random_case(shape, neighborhood, seed, n_labels=3, quantise=None, mask="none"):
    """Random labels (0 = background) and affinities; ``mask``: "none", "random" (a quarter of the edges unknown) or
    "padding" (labels 0 and labels mask 0 on a slab at each border along x, as gunpowder's Pad gives; the
    affinities mask is 1 where both ends are masked in)."""
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, n_labels + 1, size=shape).astype(np.uint64)
    affs = rng.random((len(neighborhood), *shape)).astype(np.float32)
    if quantise:
        affs = (rng.integers(0, quantise + 1, size=affs.shape) / quantise).astype(np.float32)
    if mask == "padding":
        labels_mask = np.ones(shape, dtype=np.uint8)
        labels_mask[..., :1] = 0
        labels_mask[..., -1:] = 0
        seg[labels_mask == 0] = 0
        gt_affs, affs_mask = gt_affinities(seg, neighborhood, labels_mask)
        return affs, gt_affs, seg, affs_mask
    gt_affs = gt_affinities(seg, neighborhood)
    affs_mask = (rng.random(affs.shape) < 0.75).astype(np.float32) if mask == "random" else None
    return affs, gt_affs, seg, affs_mask


@pytest.mark.parametrize(
    "shape,neighborhood,seed,mask",
    [
        ((1, 3, 4), NEAREST, 0, "none"),
        ((1, 3, 4), NEAREST, 2, "random"),
        ((2, 2, 3), NEAREST, 5, "random"),
        ((2, 3, 3), MIXED, 7, "random"),
        ((2, 3, 5), NEAREST, 8, "padding"),
    ],
)
def test_reference_pair_counts_are_the_maximin_pairs(shape, neighborhood, seed, mask):
    """The reference's Kruskal gives every pair to its maximin edge (exhaustive search on the same edge order)."""
    affs, gt_affs, seg, affs_mask = random_case(shape, neighborhood, seed, mask=mask)
    for pos in (1, 0):
        _, counts, queue = original_malis_pass(affs, gt_affs, seg, neighborhood, affs_mask, pos)
        assert counts.sum() > 0
        np.testing.assert_array_equal(counts.reshape(-1), exhaustive_pair_counts(seg, neighborhood, queue, pos))


@pytest.mark.parametrize(
    "shape,neighborhood,seed,quantise,mask",
    [
        ((1, 3, 4), NEAREST, 0, None, "none"),
        ((2, 2, 3), NEAREST, 3, None, "none"),
        ((2, 3, 3), MIXED, 6, None, "none"),
        ((1, 3, 4), NEAREST, 2, None, "random"),
        ((2, 3, 3), MIXED, 7, None, "random"),
        ((3, 6, 6), NEAREST, 9, None, "random"),
        ((3, 6, 6), MIXED, 10, None, "padding"),
        ((4, 6, 7), NEAREST, 11, None, "padding"),
        # quantised affinities: many ties, ordered by the original's std::sort
        ((2, 3, 3), NEAREST, 12, 4, "none"),
        ((3, 6, 6), NEAREST, 13, 4, "random"),
        ((4, 6, 7), MIXED, 14, 8, "padding"),
        ((4, 8, 8), NEAREST, 15, 2, "padding"),
    ],
)
def test_matches_the_original_exactly(shape, neighborhood, seed, quantise, mask):
    # the larger cases have more labels, so that label dictionaries of many entries are merged
    n_labels = 3 if np.prod(shape) < 50 else 12
    affs, gt_affs, seg, affs_mask = random_case(shape, neighborhood, seed, n_labels=n_labels, quantise=quantise, mask=mask)
    pos_expected, neg_expected = original_malis_weights(affs, gt_affs, seg, neighborhood, affs_mask)
    assert pos_expected.sum() > 0 and neg_expected.sum() > 0, "the case must exercise both passes"
    pos, neg = malis_weights(affs, gt_affs, seg, neighborhood, affs_mask)
    assert pos.dtype == np.float32 and pos.shape == affs.shape
    np.testing.assert_array_equal(pos, pos_expected)
    np.testing.assert_array_equal(neg, neg_expected)
    np.testing.assert_array_equal(malis_loss_weights(affs, gt_affs, seg, neighborhood, affs_mask), pos_expected + neg_expected)
    if affs_mask is not None:
        assert not pos[affs_mask == 0].any() and not neg[affs_mask == 0].any()


def test_ties_follow_std_sort_not_index_order():
    """With all affinities equal, which edge takes a pair depends only on the tie order: the original's std::sort
    order, which differs from the flat-index order on more than 16 edges."""
    seg = np.ones((1, 1, 40), dtype=np.uint64)
    affs = np.full((3, 1, 1, 40), 0.5, dtype=np.float32)
    gt_affs = gt_affinities(seg, NEAREST)
    pos, _ = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(pos, original_malis_weights(affs, gt_affs, seg, NEAREST)[0])
    # in index order, every x edge would join a growing set with one more voxel: edge k takes k pairs
    by_index = np.zeros_like(pos)
    by_index[2, 0, 0, 1:] = np.arange(1, 40) / np.float32(np.arange(1, 40).sum())
    assert not np.array_equal(pos, by_index)


# ---- hand-computed examples ---------------------------------------------------------------------------------------


def line(values, length):
    """A (3, 1, 1, length) affinity array for NEAREST whose x channel is ``values`` at x = 1..length-1."""
    a = np.zeros((3, 1, 1, length), dtype=np.float32)
    a[2, 0, 0, 1:] = values
    return a


def test_hand_computed_line():
    """Voxels 0-1-2-3 with labels 1 1 2 2; x edges e01 = 0.9, e12 = 0.6, e23 = 0.3 (stored at x = 1, 2, 3).

    Positive pass, ground-truth-0 edges set to 0: (0.9, 0, 0.3): e01 joins {0},{1} (1 same-label pair), e23 joins
    {2},{3} (1 pair), e12 joins {0,1},{2,3} (no same-label pair) -> (1/2, 0, 1/2).
    Negative pass, ground-truth-1 edges set to 1: (1, 0.6, 1): e01 and e23 join equal labels (0 pairs), then e12
    joins {0,1},{2,3}: 2 x 2 = 4 different-label pairs -> (0, 1, 0).
    """
    seg = np.array([[[1, 1, 2, 2]]], dtype=np.uint64)
    affs = line([0.9, 0.6, 0.3], 4)
    gt_affs = line([1, 0, 1], 4)
    np.testing.assert_array_equal(gt_affs, gt_affinities(seg, NEAREST))
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(pos, line([0.5, 0, 0.5], 4))
    np.testing.assert_array_equal(neg, line([0, 1, 0], 4))
    w = malis_loss_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(w, line([0.5, 1, 0.5], 4))
    loss = float(np.sum(w * (gt_affs - affs) ** 2))
    assert loss == pytest.approx(0.5 * 0.1**2 + 1.0 * 0.6**2 + 0.5 * 0.7**2, rel=1e-6)


def test_pairs_given_to_constrained_edges_are_dropped():
    """Labels 1 0 1 2; x edges 0.8, 0.7, 0.4; all ground-truth affinities 0 (background or different labels).

    Positive pass: all three edges are set to 0; e12 takes the label-1 pair (0, 2), which only connects through
    background, but it is a ground-truth-0 edge, so its weight is zeroed: no weight is left -> all 0.
    Negative pass: nothing is set; e01 (background: 0 pairs), e12 (1 and 1: 0 pairs), then e23 joins {0,1,2} (two
    label-1 voxels) and {3} (label 2): 2 pairs -> (0, 0, 1).
    """
    seg = np.array([[[1, 0, 1, 2]]], dtype=np.uint64)
    affs = line([0.8, 0.7, 0.4], 4)
    gt_affs = line([0, 0, 0], 4)
    np.testing.assert_array_equal(gt_affs, gt_affinities(seg, NEAREST))
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(pos, np.zeros_like(affs))
    np.testing.assert_array_equal(neg, line([0, 0, 1], 4))


def test_masked_edges_stay_in_the_graph():
    """Labels 1 1 1 1; x edges e01 = 0.9 (mask 0), e12 = 0.5, e23 = 0.7.

    The masked edge still joins {0},{1} first (its pair is then zeroed); e23 joins {2},{3} (1 pair); e12 joins
    {0,1},{2,3}: 4 pairs -> (0, 4/5, 1/5). (Dropping the masked edge from the graph would give (0, 2/3, 1/3).)
    """
    seg = np.ones((1, 1, 4), dtype=np.uint64)
    affs = line([0.9, 0.5, 0.7], 4)
    gt_affs = line([1, 1, 1], 4)
    mask = np.ones_like(affs)
    mask[2, 0, 0, 1] = 0
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST, mask)
    np.testing.assert_array_equal(pos, line([0, np.float32(4) / np.float32(5), np.float32(1) / np.float32(5)], 4))
    np.testing.assert_array_equal(neg, np.zeros_like(affs))


def test_masked_edges_are_not_constrained():
    """Labels 1 2 2 3; x edges e01 = 0.7, e12 = 0.5, e23 = 0.6; ground truth (0, 1, 0).

    Negative pass with e12 known: e12 is set to 1 and joins {1},{2} first (same label); e01 joins {0},{1,2}: 2
    pairs; e23 joins {0,1,2},{3}: 3 pairs -> (2/5, 0, 3/5). With e12 unknown (mask 0) it keeps 0.5 and comes last:
    e01 joins {0},{1} (1 pair), e23 joins {2},{3} (1 pair), e12 joins {0,1},{2,3} (3 pairs, zeroed by the mask)
    -> (1/2, 0, 1/2). Positive pass: e01 and e23 (known, ground truth 0) are set to 0; e12 takes the one
    same-label pair -> (0, 1, 0), or nothing when e12 is unknown.
    """
    seg = np.array([[[1, 2, 2, 3]]], dtype=np.uint64)
    affs = line([0.7, 0.5, 0.6], 4)
    gt_affs = line([0, 1, 0], 4)
    np.testing.assert_array_equal(gt_affs, gt_affinities(seg, NEAREST))
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(pos, line([0, 1, 0], 4))
    np.testing.assert_array_equal(neg, line([np.float32(2) / np.float32(5), 0, np.float32(3) / np.float32(5)], 4))
    mask = np.ones_like(affs)
    mask[2, 0, 0, 2] = 0
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST, mask)
    np.testing.assert_array_equal(pos, np.zeros_like(affs))
    np.testing.assert_array_equal(neg, line([0.5, 0, 0.5], 4))


def test_all_background_gives_zero_weights():
    rng = np.random.default_rng(0)
    seg = np.zeros((2, 4, 4), dtype=np.uint64)
    affs = rng.random((3, 2, 4, 4)).astype(np.float32)
    pos, neg = malis_weights(affs, gt_affinities(seg, NEAREST), seg, NEAREST)
    assert not pos.any() and not neg.any()


def test_single_label_has_no_negative_weights():
    rng = np.random.default_rng(1)
    seg = np.where(rng.random((2, 4, 4)) < 0.8, 7, 0).astype(np.uint64)
    affs = rng.random((3, 2, 4, 4)).astype(np.float32)
    pos, neg = malis_weights(affs, gt_affinities(seg, NEAREST), seg, NEAREST)
    assert not neg.any()
    assert pos.sum() == pytest.approx(1.0, abs=1e-6)


def test_large_uint64_ids():
    """Ids above 2^63 (hemi's unlabelled id is 2^64 - 3) give the same weights as small ids."""
    affs, gt_affs, seg, _ = random_case((2, 3, 3), NEAREST, 20)
    big = np.where(seg == 0, 0, np.uint64(2**64 - 4) + seg).astype(np.uint64)
    for a, b in zip(malis_weights(affs, gt_affs, seg, NEAREST), malis_weights(affs, gt_affs, big, NEAREST)):
        np.testing.assert_array_equal(a, b)


def test_loss_is_zero_at_ground_truth_and_positive_elsewhere():
    rng = np.random.default_rng(2)
    seg = rng.integers(0, 5, size=(3, 6, 6)).astype(np.uint64)
    gt_affs = gt_affinities(seg, NEAREST)
    w = malis_loss_weights(gt_affs.copy(), gt_affs, seg, NEAREST)
    assert w.sum() == pytest.approx(2.0, abs=1e-5)
    assert float(np.sum(w * (gt_affs - gt_affs) ** 2)) == 0.0
    affs = rng.random(gt_affs.shape).astype(np.float32)
    w = malis_loss_weights(affs, gt_affs, seg, NEAREST)
    assert float(np.sum(w * (gt_affs - affs) ** 2)) > 0.0


def test_shape_mismatch_is_an_error():
    seg = np.ones((2, 3, 3), dtype=np.uint64)
    with pytest.raises(ValueError, match="len\\(neighborhood\\)"):
        malis_weights(np.zeros((2, 2, 3, 3), np.float32), np.zeros((2, 2, 3, 3)), seg, NEAREST)
    with pytest.raises(ValueError, match="mask"):
        malis_weights(np.zeros((3, 2, 3, 3), np.float32), np.zeros((3, 2, 3, 3)), seg, NEAREST, np.ones((3, 2, 3, 2)))
