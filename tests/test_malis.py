"""Constrained MALIS weights (lsd_nm.malis) against brute-force pair counts and hand-computed examples."""

import itertools

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from lsd_nm.malis import malis_loss_weights, malis_weights

NEAREST = [(-1, 0, 0), (0, -1, 0), (0, 0, -1)]
MIXED = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 2), (0, 1, -1)]


def gt_affinities(seg: np.ndarray, neighborhood) -> np.ndarray:
    """1 where both ends have the same non-zero label, voxel by voxel (0 for edges leaving the volume)."""
    affs = np.zeros((len(neighborhood), *seg.shape), dtype=np.float32)
    for c, offset in enumerate(neighborhood):
        for p in np.ndindex(seg.shape):
            q = tuple(a + o for a, o in zip(p, offset))
            if all(0 <= a < s for a, s in zip(q, seg.shape)):
                affs[(c, *p)] = seg[p] != 0 and seg[p] == seg[q]
    return affs


def existing_edges(shape, neighborhood, mask):
    """(flat (C, z, y, x) edge index, flat u, flat v) of every edge inside the volume and not masked, voxel by voxel."""
    edges = []
    for c, offset in enumerate(neighborhood):
        for p in np.ndindex(shape):
            q = tuple(a + o for a, o in zip(p, offset))
            if all(0 <= a < s for a, s in zip(q, shape)) and (mask is None or mask[(c, *p)]):
                edge = np.ravel_multi_index((c, *p), (len(neighborhood), *shape))
                edges.append((edge, np.ravel_multi_index(p, shape), np.ravel_multi_index(q, shape)))
    return edges


def counted_pairs(seg, positive):
    """(n, 2) voxel pairs, both labelled, with the same label (positive) or different labels (negative)."""
    flat = seg.reshape(-1)
    labelled = np.flatnonzero(flat)
    pairs = [(a, b) for a, b in itertools.combinations(labelled, 2) if (flat[a] == flat[b]) == positive]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def components(edges, n):
    """Connected-component id of each of n voxels, joined by the (edge, u, v) ``edges``."""
    rows = [e[1] for e in edges]
    cols = [e[2] for e in edges]
    return connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)[1]


def brute_force(affs, gt_affs, seg, neighborhood, mask=None):
    """Per-pair maximin edges by exhaustive search.

    Edges are ranked by (decreasing constrained affinity, increasing flat (C, z, y, x) index), the tie rule of
    malis_weights. For every voxel pair (u, v), both labelled, the maximin edge is the edge of rank k for the smallest k
    such that u and v are connected by the edges of rank <= k (connected components recomputed from scratch for
    every k). Positive pairs (same label) are counted on min(affs, gt_affs), negative ones (different labels) on
    max(affs, gt_affs). Returns, per pass, the unnormalised counts and the normalised weights.
    """
    edges = existing_edges(seg.shape, neighborhood, mask)
    results = []
    for positive in (True, False):
        value = (np.minimum if positive else np.maximum)(affs, gt_affs).reshape(-1)
        ranked = sorted(edges, key=lambda e: (-float(value[e[0]]), e[0]))
        pairs = counted_pairs(seg, positive)
        counts = np.zeros(affs.shape)
        for k in range(len(ranked)):
            component = components(ranked[: k + 1], seg.size)
            joined = component[pairs[:, 0]] == component[pairs[:, 1]]
            counts.reshape(-1)[ranked[k][0]] += joined.sum()
            pairs = pairs[~joined]
        total = counts.sum()
        results.append((counts, counts / total if total else counts))
    return results


def maximin_values(affs, gt_affs, seg, neighborhood, mask, positive):
    """Each counted pair's maximin value: the best, over all paths, of the path's weakest constrained affinity.

    Found by thresholding at every distinct value from high to low: no tie rule is involved.
    """
    value = (np.minimum if positive else np.maximum)(affs, gt_affs).reshape(-1)
    edges = existing_edges(seg.shape, neighborhood, mask)
    best = {}
    for threshold in sorted(set(value.tolist()), reverse=True):
        component = components([e for e in edges if value[e[0]] >= threshold], seg.size)
        for a, b in counted_pairs(seg, positive).tolist():
            if (a, b) not in best and component[a] == component[b]:
                best[(a, b)] = threshold
    return best


def random_case(shape, neighborhood, seed, n_labels=3, quantise=None, with_mask=False):
    rng = np.random.default_rng(seed)
    seg = rng.integers(0, n_labels + 1, size=shape).astype(np.uint64)
    affs = rng.random((len(neighborhood), *shape)).astype(np.float32)
    if quantise:
        affs = (rng.integers(0, quantise + 1, size=affs.shape) / quantise).astype(np.float32)
    mask = (rng.random(affs.shape) < 0.75).astype(np.uint8) if with_mask else None
    return affs, gt_affinities(seg, neighborhood), seg, mask


@pytest.mark.parametrize(
    "shape,neighborhood,seed,with_mask",
    [
        ((1, 3, 4), NEAREST, 0, False),
        ((1, 3, 4), NEAREST, 1, False),
        ((1, 3, 4), NEAREST, 2, True),
        ((2, 2, 3), NEAREST, 3, False),
        ((2, 2, 3), NEAREST, 4, False),
        ((2, 2, 3), NEAREST, 5, True),
        ((2, 3, 3), MIXED, 6, False),
        ((2, 3, 3), MIXED, 7, True),
        ((3, 6, 6), NEAREST, 8, False),
        ((3, 6, 6), MIXED, 9, True),
    ],
)
def test_matches_brute_force(shape, neighborhood, seed, with_mask):
    # The larger cases have more labels, so that label dictionaries of many entries are merged.
    n_labels = 3 if np.prod(shape) < 50 else 12
    affs, gt_affs, seg, mask = random_case(shape, neighborhood, seed, n_labels=n_labels, with_mask=with_mask)
    (pos_counts, pos_expected), (neg_counts, neg_expected) = brute_force(affs, gt_affs, seg, neighborhood, mask)
    assert pos_counts.sum() > 0 and neg_counts.sum() > 0, "the case must exercise both passes"
    pos, neg = malis_weights(affs, gt_affs, seg, neighborhood, mask)
    assert pos.dtype == np.float32 and pos.shape == affs.shape
    np.testing.assert_allclose(pos, pos_expected, atol=1e-6, rtol=0)
    np.testing.assert_allclose(neg, neg_expected, atol=1e-6, rtol=0)
    loss_weights = malis_loss_weights(affs, gt_affs, seg, neighborhood, mask)
    np.testing.assert_allclose(loss_weights, pos_expected + neg_expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("seed", [10, 11, 12])
@pytest.mark.parametrize("positive", [True, False])
def test_pairs_per_affinity_level_match_maximin_values(seed, positive):
    """Tie-free check: however ties are broken, the pairs given to the edges of one affinity level are exactly the
    pairs whose maximin value (best path's weakest edge, by definition) is that level. Affinities are quantised to
    quarters so that many edges tie."""
    shape = (2, 3, 3)
    affs, gt_affs, seg, mask = random_case(shape, NEAREST, seed, quantise=4, with_mask=seed == 12)
    best = maximin_values(affs, gt_affs, seg, NEAREST, mask, positive)
    weights = malis_weights(affs, gt_affs, seg, NEAREST, mask)[0 if positive else 1]
    value = (np.minimum if positive else np.maximum)(affs, gt_affs)
    total = len(best)
    assert total > 0
    for level in sorted(set(value.reshape(-1).tolist())):
        expected = sum(1 for v in best.values() if v == level) / total
        assert weights[value == level].sum() == pytest.approx(expected, abs=1e-6), level


def line(values, length):
    """A (3, 1, 1, length) affinity array for NEAREST whose x channel is ``values`` at x = 1..length-1."""
    a = np.zeros((3, 1, 1, length), dtype=np.float32)
    a[2, 0, 0, 1:] = values
    return a


def test_hand_computed_line():
    """Voxels 0-1-2-3 with labels 1 1 2 2; x edges e01 = 0.9, e12 = 0.6, e23 = 0.3 (stored at x = 1, 2, 3).

    Positive pass, min(affs, gt) = (0.9, 0, 0.3): e01 joins {0},{1} (1 same-label pair), e23 joins {2},{3} (1 pair),
    e12 joins {0,1},{2,3} (no same-label pair) -> (1/2, 0, 1/2).
    Negative pass, max(affs, gt) = (1, 0.6, 1): e01 and e23 join equal labels (0 pairs), then e12 joins
    {0,1},{2,3}: 2 x 2 = 4 different-label pairs -> (0, 1, 0).
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


def test_hand_computed_line_with_background_and_ties():
    """Labels 1 0 1 2; x edges 0.8, 0.7, 0.4; all ground-truth affinities 0 (background or different labels).

    Positive pass: min = (0, 0, 0), a three-way tie, processed in flat-index order e01, e12, e23. e01 joins {0} and
    the background voxel 1 (0 pairs); e12 joins {0,1},{2}: the label-1 pair (0, 2), which only connects through
    background; e23 joins label 2 to it (0 same-label pairs) -> (0, 1, 0).
    Negative pass: max = (0.8, 0.7, 0.4): e01 (background: 0 pairs), e12 (1 and 1: 0 pairs), then e23 joins {0,1,2}
    (two label-1 voxels) and {3} (label 2): 2 pairs -> (0, 0, 1).
    """
    seg = np.array([[[1, 0, 1, 2]]], dtype=np.uint64)
    affs = line([0.8, 0.7, 0.4], 4)
    gt_affs = line([0, 0, 0], 4)
    np.testing.assert_array_equal(gt_affs, gt_affinities(seg, NEAREST))
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_array_equal(pos, line([0, 1, 0], 4))
    np.testing.assert_array_equal(neg, line([0, 0, 1], 4))


def test_masked_edges_get_no_weight_and_join_nothing():
    """Labels 1 1 1; e01 = 0.9 (the strongest edge) is masked out. Unmasked, e01 would take pair (0,1) and e12 the
    pairs (0,2),(1,2): (1/3, 2/3). Masked, voxel 0 is never joined, so only pair (1,2) counts: (0, 1)."""
    seg = np.array([[[1, 1, 1]]], dtype=np.uint64)
    affs = line([0.9, 0.5], 3)
    gt_affs = line([1, 1], 3)
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST)
    np.testing.assert_allclose(pos, line([1 / 3, 2 / 3], 3), atol=1e-7)
    mask = np.ones_like(affs, dtype=np.uint8)
    mask[2, 0, 0, 1] = 0
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST, mask)
    np.testing.assert_array_equal(pos, line([0, 1], 3))
    np.testing.assert_array_equal(neg, np.zeros_like(affs))


def test_masked_edge_separates_objects():
    """Labels 1 2 with the only edge masked: the two objects are never joined, so no negative pair is counted."""
    seg = np.array([[[1, 2]]], dtype=np.uint64)
    affs = line([0.9], 2)
    gt_affs = line([0], 2)
    assert malis_weights(affs, gt_affs, seg, NEAREST)[1][2, 0, 0, 1] == 1
    mask = np.zeros_like(affs, dtype=np.uint8)
    pos, neg = malis_weights(affs, gt_affs, seg, NEAREST, mask)
    assert not pos.any() and not neg.any()


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
