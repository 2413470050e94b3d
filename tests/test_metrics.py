"""Metrics of ``lsd_nm.evaluate`` against hand-computed tiny cases and scikit-image.

Hand-computed numbers use H(1/3) = log2(3) − 2/3 (the entropy in bits of a 1/3–2/3 split).
"""

import csv
import json
import math
import time

import matplotlib.image
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from lsd_nm.evaluate import plot_voi, write_scores
from lsd_nm.luts import apply_lut
from lsd_nm.metrics import (
    RAND_VOI_KEYS,
    best_row,
    contingency_table,
    expected_run_length,
    face_split_rates,
    min_cut_metric,
    rand_voi,
    sample_segments,
    site_segments,
    sites_voi,
    sweep_thresholds,
)

LOG3 = math.log2(3)


def assert_scores(scores: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key


# ---------------------------------------------------------------------------------------------------------------------
# rand_voi: hand-computed


def test_rand_voi_pure_split():
    """GT 1 (4 voxels) is split in halves 5/6, GT 2 is segment 7; the two GT-0 voxels are ignored (one has test 7).

    n_ij = (2, 2, 2), a = (4, 2), b = (2, 2, 2), N = 6.
    H(a) = H(1/3) = log2 3 − 2/3, H(b) = H(a,b) = log2 3.
    voi_split = H(a,b) − H(a) = 2/3, voi_merge = 0.
    rand_split = Σn²/Σa² = 12/20, rand_merge = Σn²/Σb² = 12/12, arand = 1 − 2·0.6·1/1.6 = 0.25.
    """
    truth = np.array([1, 1, 1, 1, 2, 2, 0, 0])
    test = np.array([5, 5, 6, 6, 7, 7, 7, 0])
    assert_scores(
        rand_voi(truth, test),
        {
            "voi_split": 2 / 3,
            "voi_merge": 0.0,
            "rand_split": 0.6,
            "rand_merge": 1.0,
            "arand": 0.25,
            "nvi_split": (2 / 3) / LOG3,
            "nvi_merge": 0.0,
            "nid": 1 - (LOG3 - 2 / 3) / LOG3,
        },
    )


def test_rand_voi_test_zero_is_a_label():
    """A test that is 0 everywhere merges the two GT objects: voi_merge = H(a) = 1 bit, not an empty score.

    n = (2, 2), a = (2, 2), b = (4): rand_split = 8/8, rand_merge = 8/16, arand = 1 − 2·0.5/1.5 = 1/3;
    H(a,b) = 1, H(b) = 0, so nvi_merge = 1 and nid = 1 − (1 + 0 − 1)/1 = 1.
    """
    assert_scores(
        rand_voi(np.array([1, 1, 2, 2]), np.zeros(4, np.uint64)),
        {"voi_split": 0.0, "voi_merge": 1.0, "rand_split": 1.0, "rand_merge": 0.5, "arand": 1 / 3,
         "nvi_split": 0.0, "nvi_merge": 1.0, "nid": 1.0},
    )  # fmt: skip


def test_rand_voi_split_and_merge():
    """truth (1,1,1,2,2,2), test (1,1,2,2,3,3): pairs (1,1)×2, (1,2)×1, (2,2)×1, (2,3)×2.

    H(a) = 1, H(b) = log2 3, H(a,b) = log2 3 + 1/3, so voi_split = log2 3 − 2/3 and voi_merge = 1/3.
    Σn² = 10, Σa² = 18, Σb² = 12: rand_split = 5/9, rand_merge = 5/6, F = 2Σn²/(Σa²+Σb²) = 2/3, arand = 1/3.
    """
    truth = np.array([1, 1, 1, 2, 2, 2])
    test = np.array([1, 1, 2, 2, 3, 3])
    assert_scores(
        rand_voi(truth, test),
        {"voi_split": LOG3 - 2 / 3, "voi_merge": 1 / 3, "rand_split": 5 / 9, "rand_merge": 5 / 6, "arand": 1 / 3,
         "nvi_split": (LOG3 - 2 / 3) / (LOG3 + 1 / 3), "nvi_merge": (1 / 3) / (LOG3 + 1 / 3),
         "nid": 1 - (2 / 3) / LOG3},
    )  # fmt: skip


def test_rand_voi_perfect_and_gt_background_ignored():
    truth = np.array([0, 0, 1, 1, 2])
    test = np.array([1, 2, 3, 3, 4])
    assert_scores(
        rand_voi(truth, test),
        {"voi_split": 0.0, "voi_merge": 0.0, "arand": 0.0, "rand_split": 1.0, "rand_merge": 1.0, "nid": 0.0},
    )


def test_rand_voi_uint64_ids_are_exact():
    """Ids near 2**64 give the same scores as small ids (no float conversion, no dense table)."""
    truth = np.array([1, 1, 1, 2, 2, 2], np.uint64)
    test = np.array([1, 1, 2, 2, 3, 3], np.uint64)
    big = np.uint64(2**64 - 10)
    assert rand_voi(truth * np.uint64(2**40), test + big) == rand_voi(truth, test)


def test_rand_voi_errors():
    with pytest.raises(ValueError, match="shape"):
        rand_voi(np.ones(3, int), np.ones(4, int))
    with pytest.raises(ValueError, match="no voxel"):
        rand_voi(np.zeros(3, int), np.ones(3, int))


def test_face_split_rates_hand_worked():
    """One neuron in two rows of six voxels (the last voxel of row 0 unlabelled); a block face between x = 2 and 3.
    False splits per plane along x: 0|1 1/2, 1|2 1/2, 2|3 (the face) 2/2, 3|4 0/2, 4|5 1/1 (the unlabelled voxel's pair
    is not counted): face 1.0, median of the others 0.5, max 1.0, ratio 2. y has one plane and no face: no row."""
    truth = np.ones((1, 2, 6), np.uint64)
    truth[0, 0, 5] = 0
    test = np.array([[[1, 2, 2, 3, 3, 4], [5, 5, 6, 7, 7, 8]]], np.uint64)
    rows = face_split_rates(truth, test, [[], [], [3]])
    assert rows == [{"axis": "x", "faces": 1, "face_rate": 1.0, "median_rate": 0.5, "max_rate": 1.0, "ratio": 2.0}]
    # faces outside the volume are ignored; a perfect segmentation has rate 0 everywhere (ratio NaN, median 0)
    [row] = face_split_rates(truth, np.ones_like(test), [[], [], [0, 3, 6]])
    assert row["faces"] == 1 and row["face_rate"] == 0.0 and math.isnan(row["ratio"])


def test_contingency_table_counts():
    n_ij, a_i, b_j = contingency_table(np.array([[1, 1], [2, 0]]), np.array([[7, 8], [7, 9]]))
    assert n_ij.tolist() == [1, 1, 1]
    assert a_i.tolist() == [2, 1]
    assert b_j.tolist() == [2, 1]  # test 9 sits on GT 0 and is dropped


# ---------------------------------------------------------------------------------------------------------------------
# rand_voi against scikit-image


@pytest.fixture(scope="module")
def random_pair():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 12, (20, 30, 30))
    test = (truth + rng.integers(0, 3, truth.shape) * (rng.random(truth.shape) < 0.3)) % 15  # splits, merges, 0s
    return truth, test


def test_voi_matches_skimage(random_pair):
    """skimage's ``variation_of_information(truth, test, ignore_labels=[0])`` returns, in bits (log2),
    ``[H(test|truth), H(truth|test)]`` = ``[voi_split, voi_merge]``; its ignore_labels drops truth 0 only, as we do.
    """
    truth, test = random_pair
    ours = rand_voi(truth, test)
    split, merge = variation_of_information(truth, test, ignore_labels=[0])
    assert ours["voi_split"] == pytest.approx(split, abs=1e-9)
    assert ours["voi_merge"] == pytest.approx(merge, abs=1e-9)
    assert ours["voi_split"] > 0.1 and ours["voi_merge"] > 0.1  # a case with both errors
    # without background, swapping the arguments swaps split and merge
    forward, backward = rand_voi(truth + 1, test + 1), rand_voi(test + 1, truth + 1)
    assert forward["voi_split"] == pytest.approx(backward["voi_merge"], abs=1e-12)
    assert forward["voi_merge"] == pytest.approx(backward["voi_split"], abs=1e-12)


def test_voi_matches_skimage_on_large_ids(random_pair):
    truth, test = random_pair
    ours = rand_voi(truth.astype(np.uint64) * np.uint64(2**50), test.astype(np.uint64) + np.uint64(2**63))
    split, merge = variation_of_information(truth, test, ignore_labels=[0])
    assert ours["voi_split"] == pytest.approx(split, abs=1e-9)
    assert ours["voi_merge"] == pytest.approx(merge, abs=1e-9)


def test_arand_vs_skimage_counts_pairs_differently(random_pair):
    """Where the definitions differ, and where they agree.

    funlib/waterz (and we) use Σn_ij² over voxels, self-pairs included; skimage's ``adapted_rand_error`` counts pairs of
    distinct voxels, Σn_ij² − N (likewise for a and b). Both use F = Σn²/(½Σa² + ½Σb²) = 2PR/(P+R) at alpha = 0.5.
    Also, skimage's second output (documented as precision, "divided by the number in the test image") divides by the
    *truth* sizes: it is the pair-counted ``rand_split``, and its third output the pair-counted ``rand_merge``.
    So skimage's values equal ours exactly once self-pairs are removed from our contingency table.
    """
    truth, test = random_pair
    n_ij, a_i, b_j = contingency_table(truth, test)
    n = a_i.sum()
    pairs = lambda x: float(np.dot(x, x) - n)  # noqa: E731
    are, second, third = adapted_rand_error(truth, test)
    assert second == pytest.approx(pairs(n_ij) / pairs(a_i), abs=1e-12)
    assert third == pytest.approx(pairs(n_ij) / pairs(b_j), abs=1e-12)
    assert are == pytest.approx(1 - pairs(n_ij) / (0.5 * pairs(a_i) + 0.5 * pairs(b_j)), abs=1e-12)
    # ours: the same formulas with self-pairs; on 18,000 voxels the two differ by well under 1e-3
    ours = rand_voi(truth, test)
    sq = lambda x: float(np.dot(x, x))  # noqa: E731
    assert ours["rand_split"] == pytest.approx(sq(n_ij) / sq(a_i), abs=1e-12)
    assert ours["arand"] == pytest.approx(1 - sq(n_ij) / (0.5 * sq(a_i) + 0.5 * sq(b_j)), abs=1e-12)
    assert abs(ours["arand"] - are) < 1e-3
    assert ours["arand"] != pytest.approx(are, abs=1e-9)


def test_arand_differs_from_skimage_on_a_tiny_case():
    """truth (1,1,1,2,2,2), test (1,1,2,2,3,3): ours 1/3; skimage 1 − (10−6)/(½(18−6) + ½(12−6)) = 5/9."""
    truth = np.array([1, 1, 1, 2, 2, 2])
    test = np.array([1, 1, 2, 2, 3, 3])
    assert rand_voi(truth, test)["arand"] == pytest.approx(1 / 3)
    assert adapted_rand_error(truth, test)[0] == pytest.approx(5 / 9)


def test_rand_voi_is_fast_on_ten_million_voxels():
    """10^7 voxels with uint64 ids and 32,000 (truth, test) pairs: a few seconds at most (sort-based counting)."""
    z, y, x = np.ogrid[:100, :320, :320]
    truth = ((z // 10) * 10000 + (y // 16) * 100 + x // 16 + 1).astype(np.uint64) * np.uint64(2**33)
    test = ((z // 5) * 10000 + (y // 12) * 100 + x // 12).astype(np.uint64) + np.uint64(2**63)
    assert truth.size == 10_240_000 and test.dtype == np.uint64
    start = time.perf_counter()
    scores = rand_voi(truth, test)
    assert time.perf_counter() - start < 30  # a guard against dense tables / quadratic code, not a benchmark
    assert scores["voi_split"] > 0 and scores["voi_merge"] > 0


# ---------------------------------------------------------------------------------------------------------------------
# skeletons: a two-skeleton toy
#
#   skeleton A (neuron 1): nodes 1-2-3-4 along x at 0, 3, 7, 12 nm: edges 3, 4, 5 nm, L_A = 12
#   skeleton B (neuron 2): nodes 10-11-12 along x at 0, 6, 8 nm (y = 100): edges 6, 2 nm, L_B = 8
#   L = 20; max ERL = (12² + 8²)/20 = 10.4


@pytest.fixture
def toy():
    return {
        "node_ids": np.array([1, 2, 3, 4, 10, 11, 12], np.uint64),
        "positions": np.array([[0, 0, 0], [0, 0, 3], [0, 0, 7], [0, 0, 12], [0, 100, 0], [0, 100, 6], [0, 100, 8]],
                              np.float32),  # fmt: skip
        "neuron_ids": np.array([1, 1, 1, 1, 2, 2, 2], np.uint64),
        "edges": np.array([[1, 2], [2, 3], [3, 4], [10, 11], [11, 12]], np.uint64),
    }


def erl_of(toy, segments):
    return expected_run_length(**toy, segment_ids=np.array(segments, np.uint64))


def test_erl_perfect(toy):
    scores = erl_of(toy, [7, 7, 7, 7, 9, 9, 9])
    assert scores["erl"] == pytest.approx(10.4)
    assert scores["max_erl"] == pytest.approx(10.4)
    assert scores["normalized_erl"] == pytest.approx(1.0)
    assert scores["total_path_length"] == pytest.approx(20.0)
    assert scores["correct_edges"] == 5
    assert scores["number_of_skeletons"] == 2


def test_erl_split(toy):
    """A split between nodes 2 and 3: A keeps 3 nm in segment 10 and 5 nm in 20 → ERL_A = (9 + 25)/12;
    ERL_B = 64/8 = 8; total = (12/20)·34/12 + (8/20)·8 = 4.9, not the last skeleton's 8 (the old funlib pitfall)."""
    scores = erl_of(toy, [10, 10, 20, 20, 30, 30, 30])
    assert scores["erl"] == pytest.approx(4.9)
    assert scores["normalized_erl"] == pytest.approx(4.9 / 10.4)
    assert scores["number_of_split_skeletons"] == 1
    assert (scores["split_edges"], scores["merged_edges"], scores["omitted_edges"]) == (1, 0, 0)


def test_erl_omitted(toy):
    """Node 2 on background: edges 1-2 and 2-3 are omitted, only 3-4 (5 nm) counts → (25 + 64)/20 = 4.45;
    their lengths stay in L_A."""
    scores = erl_of(toy, [10, 0, 10, 10, 30, 30, 30])
    assert scores["erl"] == pytest.approx(4.45)
    assert scores["total_path_length"] == pytest.approx(20.0)
    assert (scores["split_edges"], scores["merged_edges"], scores["omitted_edges"]) == (0, 0, 2)
    assert scores["number_of_split_skeletons"] == 0


def test_erl_merged(toy):
    """Segment 10 holds nodes 1, 2 (A) and 10 (B): it merges. A: 1-2 merged (counts 0), 2-3 split, 3-4 correct 5 nm
    in segment 40 (merges are per edge, so A keeps it); B: 10-11 split, 11-12 correct 2 nm → (25 + 4)/20 = 1.45."""
    scores = erl_of(toy, [10, 10, 40, 40, 10, 50, 50])
    assert scores["erl"] == pytest.approx(1.45)
    assert (scores["correct_edges"], scores["merged_edges"], scores["split_edges"]) == (2, 1, 2)
    assert scores["number_of_merging_segments"] == 1
    assert scores["number_of_split_skeletons"] == 2


def test_erl_everything_merged_is_zero(toy):
    scores = erl_of(toy, [5] * 7)
    assert scores["erl"] == 0.0
    assert scores["merged_edges"] == 5
    assert scores["number_of_merging_segments"] == 1


def test_erl_background_is_never_a_merging_segment(toy):
    """Nodes of both skeletons on 0 are omissions, not a merge through segment 0: A keeps 4 + 5 nm, B 2 nm."""
    scores = erl_of(toy, [0, 7, 7, 7, 0, 9, 9])
    assert scores["number_of_merging_segments"] == 0
    assert scores["erl"] == pytest.approx((9**2 + 2**2) / 20)


def test_erl_rejects_bad_graphs(toy):
    bad = dict(toy, edges=np.array([[1, 99]], np.uint64))
    with pytest.raises(ValueError, match="node id"):
        erl_of(bad, [1] * 7)
    across = dict(toy, edges=np.array([[4, 10]], np.uint64))
    with pytest.raises(ValueError, match="two different skeletons"):
        erl_of(across, [1] * 7)


def _original_site_voi(components, segments) -> tuple[float, float]:
    """The original's site VOI spelled out with counters: every site with a component, segment 0 a label."""
    from collections import Counter

    pairs = [(c, s) for c, s in zip(components, segments) if c != 0]
    n = len(pairs)

    def h(counter) -> float:
        return -sum(k / n * math.log2(k / n) for k in counter.values())

    h_ab, h_a, h_b = h(Counter(pairs)), h(Counter(c for c, _ in pairs)), h(Counter(s for _, s in pairs))
    return h_ab - h_a, h_ab - h_b


def test_sites_voi_keeps_background_sites_as_segment_0():
    """Sites (1,5) (1,5) (1,0) (2,5) (2,6), the original's rule: the site on 0 stays, segment 0 is a label.
    H(a,b) = log2 5 − 2/5 (pair counts 2,1,1,1), H(a) = log2 5 − (3·log2 3 + 2)/5, H(b) = log2 5 − 3·log2 3/5 →
    voi_split = 3·log2 3/5 = 0.950978…, voi_merge = 3·log2 3/5 − 2/5 = 0.550978…"""
    scores = sites_voi(np.array([1, 1, 1, 2, 2]), np.array([5, 5, 0, 5, 6]))
    assert scores["voi_split"] == pytest.approx(3 * LOG3 / 5, abs=1e-12)
    assert scores["voi_split"] == pytest.approx(0.9509775004, abs=1e-9)
    assert scores["voi_merge"] == pytest.approx(3 * LOG3 / 5 - 0.4, abs=1e-12)
    assert (scores["num_sites"], scores["num_bg_sites"]) == (5, 1)


def test_sites_voi_background_of_two_neurons_is_one_merged_segment():
    """(1,0) (1,3) (2,0) (2,4): segment 0 holds a site of each neuron → H(a,b) = 2, H(a) = 1, H(b) = 1.5:
    voi_split = 1, voi_merge = 0.5; dropping the background leaves (1,3) (2,4): perfect."""
    neurons, segments = np.array([1, 1, 2, 2]), np.array([0, 3, 0, 4])
    kept = sites_voi(neurons, segments)
    assert (kept["voi_split"], kept["voi_merge"]) == pytest.approx((1.0, 0.5), abs=1e-12)
    assert (kept["num_sites"], kept["num_bg_sites"]) == (4, 2)
    dropped = sites_voi(neurons, segments, background="drop")
    assert (dropped["voi_split"], dropped["voi_merge"]) == (0.0, 0.0)
    assert (dropped["num_sites"], dropped["num_bg_sites"]) == (2, 2)
    with pytest.raises(ValueError, match="background must be"):
        sites_voi(neurons, segments, background="ignore")


def test_sites_voi_drop_rule_on_request():
    """background="drop" (not the paper's rule): the site on 0 is dropped → truth (1,1,2,2), test (5,5,5,6).
    voi_split = ½·0 + ½·1 = 0.5; voi_merge = ¾·H(1/3) (segment 5 holds 2 sites of 1 and 1 of 2)."""
    scores = sites_voi(np.array([1, 1, 1, 2, 2]), np.array([5, 5, 0, 5, 6]), background="drop")
    assert scores["voi_split"] == pytest.approx(0.5, abs=1e-12)
    assert scores["voi_merge"] == pytest.approx(0.75 * (LOG3 - 2 / 3), abs=1e-12)
    assert (scores["num_sites"], scores["num_bg_sites"]) == (4, 1)


def test_sites_voi_follows_the_original_rule_on_random_cases():
    """Random sites (a third on fragment 0, some without a component): equal to the counting reference to 1e-12."""
    rng = np.random.default_rng(26)
    for _ in range(20):
        n = int(rng.integers(5, 300))
        components = rng.integers(0, 6, n).astype(np.uint64)
        components[0] = 1
        segments = np.where(rng.random(n) < 1 / 3, 0, rng.integers(1, 9, n)).astype(np.uint64)
        scores = sites_voi(components, segments)
        split, merge = _original_site_voi(components.tolist(), segments.tolist())
        assert (scores["voi_split"], scores["voi_merge"]) == pytest.approx((split, merge), abs=1e-12)
        assert scores["num_bg_sites"] == int(((segments == 0) & (components != 0)).sum())


def test_sites_voi_of_a_segmentation_that_misses_every_node():
    """All nodes on segment 0 (a network after a few iterations can predict no foreground): by the original's rule
    every neuron is merged into segment 0 (voi_split 0, voi_merge = H(2/3, 1/3)); dropping them leaves nothing to
    score: NaN (best_row skips it) instead of an error that ends step 6."""
    scores = sites_voi(np.array([1, 1, 2]), np.array([0, 0, 0]))
    assert (scores["voi_split"], scores["voi_merge"]) == pytest.approx((0.0, LOG3 - 2 / 3), abs=1e-12)
    assert (scores["num_sites"], scores["num_bg_sites"]) == (3, 3)
    dropped = sites_voi(np.array([1, 1, 2]), np.array([0, 0, 0]), background="drop")
    assert set(dropped) == {*RAND_VOI_KEYS, "num_sites", "num_bg_sites"}
    assert all(math.isnan(dropped[k]) for k in RAND_VOI_KEYS)
    assert (dropped["num_sites"], dropped["num_bg_sites"]) == (0, 3)
    assert best_row([{"threshold": 0.5, "voi_sum": dropped["voi_split"] + dropped["voi_merge"]}]) is None


def test_site_segments_keep_fragment_0_and_unlisted_fragments():
    """As funlib.segment's replace_values: fragment 0 stays 0, fragment 7 (not in the LUT) keeps its id."""
    lut = (np.array([1, 2, 3], np.uint64), np.array([1, 1, 3], np.uint64))
    assert site_segments(np.array([0, 1, 2, 3, 7], np.uint64), lut).tolist() == [0, 1, 1, 3, 7]
    assert apply_lut(np.array([0, 1, 2, 3, 7], np.uint64), lut).tolist() == [0, 1, 1, 3, 0]  # the volumes' rule


def test_sample_segments():
    segmentation = np.arange(1, 25, dtype=np.uint64).reshape(2, 3, 4)
    positions = np.array([
        [100, 18, 0],        # the first voxel's corner → [0, 0, 0]
        [139.9, 44.9, 35.9],  # → [1, 2, 3], the last voxel
        [99.9, 18, 0],       # before the offset → 0
        [140, 18, 0],        # z index 2, past the end → 0
        [120, 27, 9],        # → [1, 1, 1]
    ])  # fmt: skip
    segments = sample_segments(positions, segmentation, voxel_size=(20, 9, 9), offset=(100, 18, 0))
    assert segments.dtype == np.uint64
    assert segments.tolist() == [1, 24, 0, 0, int(segmentation[1, 1, 1])]


# ---------------------------------------------------------------------------------------------------------------------
# min-cut metric


def line(xs):
    return np.array([[0, 0, x] for x in xs], np.float64)


def sites(fragments, components, positions, edges=()):
    """Skeleton arrays for the min-cut metric: node ids 1 … N, node-id edges."""
    n = len(fragments)
    skeletons = {
        "node_ids": np.arange(1, n + 1, dtype=np.uint64), "positions": np.asarray(positions, np.float64),
        "neuron_ids": np.asarray(components, np.uint64), "edges": np.asarray(edges, np.uint64).reshape(-1, 2),
    }  # fmt: skip
    return np.asarray(fragments, np.uint64), skeletons


def lut_of(mapping):
    return np.array(list(mapping), np.uint64), np.array(list(mapping.values()), np.uint64)


@pytest.mark.parametrize("segment", [100, 2**64 - 1])
def test_min_cut_one_weak_edge(segment):
    """Fragments 1-2-3-4 in one segment, A on 1 (2 sites), B on 4 (1 site); B is the second largest, so the cut
    runs from B's fragment 4 (source) to A's 1: the weak edge 2-3 (score 0.45, capacity 0.55): 1 split."""
    fragments, skeletons = sites([1, 1, 4], [1, 1, 2], line([0, 10, 40]), [(1, 2)])
    lut = lut_of({1: segment, 2: segment, 3: segment, 4: segment})
    edges = [(1, 2, 0.1), (2, 3, 0.45), (3, 4, 0.1)]
    assert min_cut_metric(edges, lut, 0.5, fragments, skeletons) == (
        {"splits_needed": 1, "merges_needed": 0, "unsplittable": 0}
    )


def test_min_cut_takes_the_source_side_of_the_cut():
    """Chain 1-2-3 (scores 0.5, 0.5: capacity 0.5 each) and fragment 4 hanging off 2 (score 0.1). A: 3 sites on
    fragment 1 and one on 4 (4 sites, the largest); B: 2 sites on 3. The source is B's fragment 3, the sink A's
    closest, fragment 1 (19 nm from B's last site; fragment 4 is 31.9 nm away). Both 2-3 and 1-2 are minimum cuts:
    the source side of the residual graph is {3} alone, so A keeps 1, 2 and 4 together: 1 split, 0 merges. (The cut
    closest to the sink, {2, 3, 4} | {1}, would need a second cut between B and A's fragment 4 and a merge of A.)"""
    fragments, skeletons = sites(
        [1, 1, 1, 4, 3, 3], [1, 1, 1, 1, 2, 2], [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 30, 10], [0, 0, 20], [0, 0, 21]],
        [(1, 2), (2, 3), (3, 4), (5, 6)],
    )
    lut = lut_of({1: 9, 2: 9, 3: 9, 4: 9})
    edges = [(1, 2, 0.5), (2, 3, 0.5), (2, 4, 0.1)]
    assert min_cut_metric(edges, lut, 0.5, fragments, skeletons) == (
        {"splits_needed": 1, "merges_needed": 0, "unsplittable": 0}
    )


def test_min_cut_recurses_on_the_source_side_and_its_complement():
    """Chain 1-2-3 (scores 0.3, 0.3); A: 3 sites on 1, B: 2 on 2, C: 1 on 3. The two largest are B (source, 2) and
    A (sink, 1): the cut is 1-2 and the source side {2, 3} (2-3 carries no flow) still holds B and C: a second cut,
    from C's 3 to B's 2, through 2-3. 2 splits, no merge."""
    fragments, skeletons = sites([1, 1, 1, 2, 2, 3], [1, 1, 1, 2, 2, 3], line([0, 1, 2, 10, 11, 20]))
    lut = lut_of({1: 5, 2: 5, 3: 5})
    assert min_cut_metric([(1, 2, 0.3), (2, 3, 0.3)], lut, 0.5, fragments, skeletons) == {
        "splits_needed": 2, "merges_needed": 0, "unsplittable": 0,
    }  # fmt: skip


def test_min_cut_merges_count_split_edges_and_unsplittable_fragments():
    """Segment 7 = {1, 2} (edge score 0.2), segment 3 = {3} alone. A's chain runs over fragments 1, 3, 1, 3: three
    split edges → 3 − 1 = 2 merges (not 2 pieces − 1). B has sites on 2 and on 1: fragment 1 holds A and B, it is
    unsplittable and leaves both lists; A, left with no fragment of segment 7, is dropped; B alone: no cut."""
    fragments, skeletons = sites(
        [1, 3, 1, 3, 2, 1], [1, 1, 1, 1, 2, 2], line([0, 10, 20, 30, 40, 50]), [(1, 2), (2, 3), (3, 4), (5, 6)]
    )
    lut = lut_of({1: 7, 2: 7, 3: 3})
    assert min_cut_metric([(1, 2, 0.2)], lut, 0.5, fragments, skeletons) == {
        "splits_needed": 0, "merges_needed": 2, "unsplittable": 1,
    }  # fmt: skip


def test_min_cut_graph_holds_only_edges_at_or_below_the_threshold():
    """Segment {1, 2, 3, 4}: edges 1-2 (0.2), 2-3 (0.4), 1-4 (0.45) and 2-4 without a score (04_find_segments unites
    it at every threshold; the cut graph never holds it). A: 2 sites on 1; B: sites on 3 (x = 30) and 4 (x = 60).
    The cut runs from A's 1 to B's closest fragment, 3: flow 0.6 through 2-3.
    At 0.4, 1-4 is not in the graph: the source side is {1, 2}, B's 3 and 4 stay together: 1 split, 0 merges.
    At 0.45 it is, unused by the flow: the source reaches 4, the source side {1, 2, 4} holds A and B's 4, a second
    cut (1-4) follows, and B ends in two pieces: 2 splits, 1 merge."""
    fragments, skeletons = sites([1, 1, 3, 4], [1, 1, 2, 2], line([0, 1, 30, 60]), [(1, 2), (3, 4)])
    lut = lut_of({1: 5, 2: 5, 3: 5, 4: 5})
    edges = [(1, 2, 0.2), (2, 3, 0.4), (1, 4, 0.45), (2, 4, None)]
    assert min_cut_metric(edges, lut, 0.4, fragments, skeletons) == (
        {"splits_needed": 1, "merges_needed": 0, "unsplittable": 0}
    )
    assert min_cut_metric(edges, lut, 0.45, fragments, skeletons) == (
        {"splits_needed": 2, "merges_needed": 1, "unsplittable": 0}
    )


def test_min_cut_no_merge_and_unlisted_fragments():
    # no segment merges: only skeleton 1's split edge across segments 5 and 6 counts (1 edge − 1 = 0 merges)
    fragments, skeletons = sites([1, 2, 3], [1, 1, 2], line([0, 1, 9]), [(1, 2)])
    lut = lut_of({1: 5, 2: 6, 3: 7})
    assert min_cut_metric([(1, 2, 0.9)], lut, 0.5, fragments, skeletons) == (
        {"splits_needed": 0, "merges_needed": 0, "unsplittable": 0}
    )
    # two skeletons inside fragment 4, which the LUT does not list (it keeps its id as its segment): unsplittable;
    # sites on fragment 0 are no segment's
    fragments, skeletons = sites([4, 4, 0, 0], [1, 2, 1, 2], line([0, 1, 2, 3]))
    assert min_cut_metric([], lut_of({1: 5}), 0.5, fragments, skeletons) == (
        {"splits_needed": 0, "merges_needed": 0, "unsplittable": 1}
    )


# ---------------------------------------------------------------------------------------------------------------------
# threshold sweep


def test_relabel_large_ids_and_missing_fragments():
    """Fragments absent from the LUT (7) map to 0, as in the original's extraction; uint64 ids above 2**63 stay exact."""
    big = 2**63 + 1
    fragments = np.array([[0, big], [5, 7]], np.uint64)
    lut = (np.array([5, big, 9], np.uint64), np.array([100, 200, 300], np.uint64))
    expected = [[0, 200], [100, 0]]
    assert apply_lut(fragments, lut).tolist() == expected
    assert apply_lut(fragments, np.stack(lut)).tolist() == expected  # the original's (2, N) fragment_segment_lut
    assert apply_lut(fragments, lut).dtype == np.uint64
    small = apply_lut(np.array([3, 1, 2]), (np.array([1, 2, 3], np.int64), np.array([7, 8, 9], np.uint64)))
    assert small.tolist() == [9, 7, 8]
    assert apply_lut(fragments, (np.zeros(0, np.uint64), np.zeros(0, np.uint64))).tolist() == [[0, 0], [0, 0]]


def test_sweep_thresholds_dense_and_skeletons():
    """Four fragments (quadrants along x); GT objects are fragments {1, 2} and {3, 4}.
    t = 0.2: every fragment its own segment → voi_split = 1, voi_merge = 0; t = 0.5: perfect; t = 0.8: all one
    segment → voi_split = 0, voi_merge = 1, ERL 0."""
    fragments = np.repeat(np.array([1, 2, 3, 4], np.uint64), 2)[None, None, :].repeat(2, axis=0)  # (2, 1, 8)
    truth = np.where(fragments <= 2, 1, 2).astype(np.uint64)
    f = np.array([1, 2, 3, 4], np.uint64)
    luts = {
        0.8: (f, np.array([9, 9, 9, 9], np.uint64)),
        0.2: (f, np.array([1, 2, 3, 4], np.uint64)),
        0.5: (f, np.array([5, 5, 6, 6], np.uint64)),
    }
    # one skeleton per object along x, one node per voxel (voxel size 1, offset 0)
    positions = np.array([[0, 0, x + 0.5] for x in range(8)])
    skeletons = {
        "node_ids": np.arange(1, 9, dtype=np.uint64),
        "positions": positions,
        "neuron_ids": np.array([1, 1, 1, 1, 2, 2, 2, 2], np.uint64),
        "edges": np.array([[1, 2], [2, 3], [3, 4], [5, 6], [6, 7], [7, 8]], np.uint64),
    }
    node_fragments = sample_segments(positions, fragments, (1, 1, 1), (0, 0, 0))
    assert node_fragments.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    rows = sweep_thresholds(luts, fragments, truth, skeletons, node_fragments)
    assert [r["threshold"] for r in rows] == [0.2, 0.5, 0.8]
    assert [(r["voi_split"], r["voi_merge"], r["voi_sum"]) for r in rows] == [(1.0, 0.0, 1.0), (0.0, 0.0, 0.0), (0.0, 1.0, 1.0)]
    # ERL: at 0.2 each skeleton keeps two 1 nm runs → Σ c² / L = 4·1/6; perfect = (3² + 3²)/6 = 3
    assert [r["erl"] for r in rows] == pytest.approx([4 / 6, 3.0, 0.0])
    assert rows[1]["normalized_erl"] == pytest.approx(1.0)
    assert rows[2]["sites_voi_merge"] == pytest.approx(1.0)
    # skeletons only: the site VOI fills voi_split/voi_merge
    only = sweep_thresholds(luts, skeletons=skeletons, node_fragments=node_fragments)
    assert [r["voi_sum"] for r in only] == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError):
        sweep_thresholds(luts)


ROWS = [
    {"threshold": 0.1, "voi_split": 1.0, "voi_merge": 0.25, "arand": 0.5, "extra": 1},
    {"threshold": 0.2, "voi_split": 0.5, "voi_merge": 0.5, "arand": 0.25},
    {"threshold": 0.3, "voi_split": 0.25, "voi_merge": 1.5, "arand": 0.75, "erl": np.float64(2.0), "nid": float("nan")},
]


def test_write_scores(tmp_path):
    csv_path, json_path = write_scores(ROWS, tmp_path / "out")
    assert (csv_path.name, json_path.name) == ("scores.csv", "scores.json")
    assert csv_path.read_text() == (
        "threshold,voi_split,voi_merge,voi_sum,arand,erl,extra,nid\n"
        "0.1,1.0,0.25,1.25,0.5,,1,\n"
        "0.2,0.5,0.5,1.0,0.25,,,\n"
        "0.3,0.25,1.5,1.75,0.75,2.0,,\n"
    )
    with open(csv_path) as f:
        assert [float(r["voi_sum"]) for r in csv.DictReader(f)] == [1.25, 1.0, 1.75]
    data = json.loads(json_path.read_text())
    assert data["best"] == {"threshold": 0.2, "voi_split": 0.5, "voi_merge": 0.5, "arand": 0.25, "voi_sum": 1.0}
    assert len(data["rows"]) == 3
    assert data["rows"][2]["nid"] is None  # NaN is not JSON
    assert data["rows"][2]["erl"] == 2.0
    assert not list((tmp_path / "out").glob("*.partial"))
    assert write_scores([], tmp_path, name="empty")[1].read_text() == '{\n  "rows": [],\n  "best": null\n}\n'


def test_plot_voi(tmp_path):
    path = plot_voi([dict(r, voi_sum=r["voi_split"] + r["voi_merge"]) for r in ROWS], tmp_path / "voi_vs_threshold.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    assert matplotlib.image.imread(path).shape[:2] == (500, 600)


def test_sweep_thresholds_scores_background_sites_by_the_chosen_rule():
    """Skeleton 1 on fragments (1, 1, 0), skeleton 2 on (2, 9): fragment 9 is not in the LUT and keeps its id, so
    skeleton 2 is split; the node on 0 is segment 0 (the original's rule) or dropped."""
    skeletons = {
        "node_ids": np.arange(1, 6, dtype=np.uint64),
        "positions": np.array([[0, 0, x] for x in (0, 1, 2, 10, 11)], np.float64),
        "neuron_ids": np.array([1, 1, 1, 2, 2], np.uint64),
        "edges": np.array([[1, 2], [2, 3], [4, 5]], np.uint64),
    }
    node_fragments = np.array([1, 1, 0, 2, 9], np.uint64)
    luts = {0.5: (np.array([1, 2], np.uint64), np.array([1, 2], np.uint64))}
    kept = sweep_thresholds(luts, skeletons=skeletons, node_fragments=node_fragments)[0]
    # pairs (1,1) ×2, (1,0), (2,2), (2,9): H(a,b) = log2 5 − 2/5, H(a) = log2 5 − (3·log2 3 + 2)/5, every segment
    # holds one skeleton: voi_merge = 0
    assert kept["voi_split"] == pytest.approx(3 * LOG3 / 5, abs=1e-12) and kept["voi_merge"] == 0.0
    assert (kept["sites_num_sites"], kept["sites_num_bg_sites"]) == (5, 1)
    assert (kept["split_edges"], kept["omitted_edges"], kept["correct_edges"]) == (1, 1, 1)
    dropped = sweep_thresholds(luts, skeletons=skeletons, node_fragments=node_fragments, site_background="drop")[0]
    assert dropped["voi_split"] == pytest.approx(0.5, abs=1e-12)  # (1,1) ×2, (2,2), (2,9)
    assert (dropped["sites_num_sites"], dropped["sites_num_bg_sites"]) == (4, 1)
