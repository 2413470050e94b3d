"""The training pipeline's parts on tiny arrays: alignment under augmentation, targets, weights, quantisation."""

import json

import gunpowder as gp
import numpy as np
import pytest
from funlib.persistence import Array

from lsd_nm.config import ConfigError
from lsd_nm.experiment import load_network_config
from lsd_nm.nodes import QuantizeUInt8
from lsd_nm.pipelines import training_volumes

VOXEL = gp.Coordinate((20, 9, 9))
RAW, LABELS, MASK, AFFS, AFFS_MASK, SCALE = (gp.ArrayKey(n) for n in ("RAW", "LABELS", "MASK", "AFFS", "AFFS_MASK", "SCALE"))


def source(key, data, interpolatable, voxel=VOXEL):
    return gp.ArraySource(key, Array(data, (0, 0, 0), voxel), interpolatable=interpolatable)


def test_augmentations_keep_raw_and_labels_aligned():
    """A label boundary painted into raw stays on the boundary after the paper's elastic + simple augment."""
    # four quadrants with ids 1..4, large enough that rotations and misalignments never read outside
    labels = np.zeros((20, 160, 160), np.uint64)
    labels[:, :, 80:] = 2
    labels[:, :, :80] = 1
    labels[:, 80:, :] += 2
    raw = np.full(labels.shape, 0.8, np.float32)
    boundary = np.zeros(labels.shape, bool)
    boundary[:, :, 79:81] = True
    boundary[:, 79:81, :] = True
    raw[boundary] = 0.0
    pipeline = (source(RAW, raw, True), source(LABELS, labels, False)) + gp.MergeProvider()
    pipeline += gp.ElasticAugment([4, 4, 10], [0, 2, 2], [0, np.pi / 2], prob_slip=0.05, prob_shift=0.05, max_misalign=10, subsample=8)
    pipeline += gp.SimpleAugment(transpose_only=[1, 2])
    request = gp.BatchRequest()
    roi = gp.Roi((4 * 20, 60 * 9, 60 * 9), (12 * 20, 40 * 9, 40 * 9))
    request[RAW] = gp.ArraySpec(roi=roi)
    request[LABELS] = gp.ArraySpec(roi=roi)
    import random

    random.seed(3)
    np.random.seed(3)
    with gp.build(pipeline):
        for _ in range(3):
            batch = pipeline.request_batch(request)
            r, lab = batch[RAW].data, batch[LABELS].data.astype(np.int64)
            # voxels whose 5x5 in-plane neighbourhood holds one label only are away from the boundary: bright raw
            # (raw is interpolated linearly, labels by nearest neighbour: right at the boundary they may differ)
            same = np.ones(lab.shape, bool)
            for dy in (-2, -1, 0, 1, 2):
                for dx in (-2, -1, 0, 1, 2):
                    same &= lab == np.roll(np.roll(lab, dy, 1), dx, 2)
            interior = same[:, 2:-2, 2:-2] & (lab[:, 2:-2, 2:-2] > 0)
            dark = r[:, 2:-2, 2:-2] < 0.2
            assert interior.sum() > 1000
            assert (dark & interior).sum() / interior.sum() < 0.002
            # and the painted boundary lies where the labels change
            assert dark.sum() > 0 and (dark & ~same[:, 2:-2, 2:-2]).sum() / dark.sum() > 0.9


def test_grow_boundary_and_affinities_by_hand():
    labels = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 3, 0]]], np.uint64)  # (1, 3, 4), voxel size 1
    vs = gp.Coordinate((1, 1, 1))
    mask = np.ones_like(labels, np.uint8)
    pipeline = (source(LABELS, labels, False, vs), source(MASK, mask, False, vs)) + gp.MergeProvider()
    pipeline += gp.GrowBoundary(LABELS, MASK, steps=1, only_xy=True)
    request = gp.BatchRequest()
    request[LABELS] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), (1, 3, 4)))
    request[MASK] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), (1, 3, 4)))
    with gp.build(pipeline):
        grown = pipeline.request_batch(request)[LABELS].data
    # each object eroded by one voxel in-plane where it touches another object (the volume border counts as inside)
    assert grown.tolist() == [[[1, 0, 0, 2], [0, 0, 0, 0], [0, 0, 0, 0]]]  # 3 touches 1 and 2 above: all eroded

    pipeline = (source(LABELS, labels, False, vs), source(MASK, mask, False, vs)) + gp.MergeProvider()
    pipeline += gp.Pad(LABELS, None) + gp.Pad(MASK, None)
    pipeline += gp.AddAffinities([[-1, 0, 0], [0, -1, 0], [0, 0, -1]], LABELS, AFFS, labels_mask=MASK, affinities_mask=AFFS_MASK, dtype=np.float32)
    pipeline += gp.BalanceLabels(AFFS, SCALE, AFFS_MASK)
    request = gp.BatchRequest()
    for key in (LABELS, AFFS, AFFS_MASK, SCALE):
        request[key] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), (1, 3, 4)))
    with gp.build(pipeline):
        batch = pipeline.request_batch(request)
    affs, affs_mask, scale = batch[AFFS].data, batch[AFFS_MASK].data, batch[SCALE].data
    # z: the neighbour below is padding (label 0): no affinity, and masked out
    assert affs[0].tolist() == [[[0] * 4] * 3]
    assert affs_mask[0].tolist() == [[[0] * 4] * 3]
    # y: voxel (y, x) vs (y-1, x)
    assert affs[1].tolist() == [[[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]]
    # x: voxel (y, x) vs (y, x-1)
    assert affs[2].tolist() == [[[0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 1, 0]]]
    # balance: over masked-in entries, frac(1) = 9/16 and frac(0) = 7/16 (y and x channels; the padding row and
    # column are masked out) → weights 1/(2·frac)
    inside = affs_mask.astype(bool)
    ones = affs[inside].sum()
    n = inside.sum()
    np.testing.assert_allclose(scale[inside & (affs == 1)], n / (2 * ones))
    np.testing.assert_allclose(scale[inside & (affs == 0)], n / (2 * (n - ones)))
    assert np.all(scale[~inside] == 0)


def test_long_range_affinities_by_hand():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(8, 30, 30)).astype(np.uint64)
    config = load_network_config(__import__("conftest").REPO / "02_train/zebrafinch/long_range")
    neighborhood = [list(o) for o in config.neighborhood]
    vs = gp.Coordinate((1, 1, 1))
    pipeline = source(LABELS, labels, False, vs) + gp.Pad(LABELS, None) + gp.AddAffinities(neighborhood, LABELS, AFFS, dtype=np.uint8)
    request = gp.BatchRequest()
    request[AFFS] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), labels.shape))
    with gp.build(pipeline):
        affs = pipeline.request_batch(request)[AFFS].data
    assert affs.shape == (12, 8, 30, 30)
    for c, (dz, dy, dx) in enumerate(config.neighborhood):
        for z, y, x in [(7, 29, 29), (5, 28, 27), (0, 0, 0), (3, 10, 20)]:
            zz, yy, xx = z + dz, y + dy, x + dx
            inside = zz >= 0 and yy >= 0 and xx >= 0
            expected = int(inside and labels[z, y, x] > 0 and labels[z, y, x] == labels[zz, yy, xx])
            assert affs[c, z, y, x] == expected, (c, z, y, x)


def test_quantize_uint8():
    data = np.array([[[[0.0, 0.5, 0.999, 1.0, 0.00393]]]], np.float32)  # (1, 1, 1, 5)
    key = gp.ArrayKey("LSDS_Q")
    pipeline = gp.ArraySource(key, Array(data, (0, 0, 0), (1, 1, 1)), interpolatable=True) + QuantizeUInt8(key)
    request = gp.BatchRequest()
    request[key] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), (1, 1, 5)))
    with gp.build(pipeline):
        out = pipeline.request_batch(request)[key].data
    assert (out * 255).round().astype(int).ravel().tolist() == [0, 127, 254, 255, 1]
    np.testing.assert_array_equal(out, np.floor(data * 255) / 255)


def network_folder(tmp_path, network="baseline"):
    folder = tmp_path / "02_train" / "synthetic" / network
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"network": network}))
    return folder


def test_no_volumes_is_a_one_line_error(tmp_path):
    config = load_network_config(network_folder(tmp_path))
    with pytest.raises(ConfigError) as e:
        training_volumes(config, data_dir=tmp_path / "data")
    assert str(e.value) == (
        f"no volumes of dataset 'synthetic' in {tmp_path / 'data/funke/synthetic/training'}: get them with `make synthetic DATASET=synthetic`"
    )


def test_missing_mask_says_make_masks(tmp_path):
    from lsd_nm.data import NEURON_IDS, write_container
    from lsd_nm.data import RAW as RAW_DS

    config = load_network_config(network_folder(tmp_path))
    path = tmp_path / "data/funke/synthetic/training/train_0.zarr"
    path.parent.mkdir(parents=True)
    write_container(path, {RAW_DS: np.zeros((4, 8, 8), np.uint8), NEURON_IDS: np.ones((4, 8, 8), np.uint64)}, (20, 9, 9), (0, 0, 0))
    with pytest.raises(ConfigError) as e:
        training_volumes(config, data_dir=tmp_path / "data")
    assert str(e.value) == f"{path}: no volumes/labels/labels_mask; create the masks first with `make masks`"


def renumber(labels):
    from lsd_nm.nodes import RenumberConnectedComponents

    key = gp.ArrayKey("RENUMBER")
    pipeline = gp.ArraySource(key, Array(labels, (0, 0, 0), (1, 1, 1)), interpolatable=False) + RenumberConnectedComponents(key)
    request = gp.BatchRequest()
    request[key] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), labels.shape))
    with gp.build(pipeline):
        return pipeline.request_batch(request)[key].data


def original_renumber(labels):
    """The original's RenumberConnectedComponents: malis seg_to_affgraph (6-neighbourhood, 1 iff the same non-zero
    label), connected components by union-find, then prune_and_renum(threshold 1): ids by decreasing size,
    components of one voxel (so every background voxel) to 0. Equal sizes keep their root order here."""
    flat = labels.reshape(-1)
    parent = list(range(flat.size))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for p in np.ndindex(labels.shape):
        for offset in ((-1, 0, 0), (0, -1, 0), (0, 0, -1)):
            q = tuple(a + o for a, o in zip(p, offset))
            if all(0 <= a < s for a, s in zip(q, labels.shape)) and labels[p] != 0 and labels[p] == labels[q]:
                parent[find(np.ravel_multi_index(q, labels.shape))] = find(np.ravel_multi_index(p, labels.shape))
    roots = np.array([find(i) for i in range(flat.size)])
    ids, sizes = np.unique(roots, return_counts=True)
    order = np.argsort(-sizes, kind="stable")
    renum = dict(zip(ids[order].tolist(), range(1, len(ids) + 1)))
    for root, size in zip(ids.tolist(), sizes.tolist()):
        if size <= 1:
            renum[root] = 0
    return np.array([renum[r] for r in roots.tolist()], dtype=np.uint64).reshape(labels.shape)


def test_renumber_connected_components():
    """Pieces of one label get their own ids, largest first; one-voxel pieces become 0, as in the original."""
    labels = np.array([[[5, 5, 0, 5], [0, 0, 0, 5], [7, 0, 7, 7], [0, 7, 7, 7]]], np.uint64)
    out = renumber(labels)
    assert out.dtype == np.uint64
    # 7 at (2, 0) touches the big 7 only diagonally: a component of its own, of one voxel -> 0
    assert out.tolist() == [[[2, 2, 0, 3], [0, 0, 0, 3], [0, 0, 1, 1], [0, 1, 1, 1]]]
    np.testing.assert_array_equal(out, original_renumber(labels))


def test_renumber_connected_components_matches_the_original():
    """Random 3D labels: the same background (with the one-voxel pieces), the same pieces, ids by decreasing size."""
    rng = np.random.default_rng(0)
    labels = rng.choice(np.array([0, 3, 9, 2**64 - 3], dtype=np.uint64), size=(4, 7, 7), p=[0.2, 0.3, 0.3, 0.2])
    out, expected = renumber(labels), original_renumber(labels)
    assert (expected == 0).sum() > (labels == 0).sum(), "the case must have one-voxel pieces"
    np.testing.assert_array_equal(out == 0, expected == 0)
    pairs = set(zip(out[out > 0].tolist(), expected[expected > 0].tolist()))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs}), "a one-to-one map of the pieces"
    sizes = np.bincount(out.ravel())[1:]
    assert sizes.min() > 1 and (np.diff(sizes) <= 0).all() and len(sizes) == expected.max()


def test_lsd_targets_match_the_reference():
    """The pipeline's LSD targets (our gunpowder node, sigma 120 nm, downsample 2) equal lsd-lite's whole-array LSDs
    away from the volume border (the node computes them on the request grown by its 3-sigma context)."""
    from lsd_lite import get_lsds

    from lsd_nm.nodes import AddLocalShapeDescriptor
    from lsd_nm.synthetic import generate_volume

    _, labels = generate_volume((40, 96, 96), tuple(VOXEL), seed=4)
    key, lsds = gp.ArrayKey("LSD_LABELS"), gp.ArrayKey("LSD_TARGETS")
    pipeline = source(key, labels, False) + gp.Pad(key, None) + AddLocalShapeDescriptor(key, lsds, sigma=120.0, downsample=2)
    request = gp.BatchRequest()
    # the centre, well inside: 3 sigma = 360 nm = 18 sections, 40 voxels in-plane
    roi = gp.Roi((20 * 20, 40 * 9, 40 * 9), (4 * 20, 16 * 9, 16 * 9))
    request[lsds] = gp.ArraySpec(roi=roi)
    request[key] = gp.ArraySpec(roi=roi)  # as in training: the labels are requested too
    with gp.build(pipeline):
        ours = pipeline.request_batch(request)[lsds].data
    reference = get_lsds(labels, sigma=120.0, voxel_size=tuple(VOXEL), downsample=2)[:, 20:24, 40:56, 40:56]
    assert ours.shape == reference.shape == (10, 4, 16, 16)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_precache_arrangement_on_a_cpu_and_with_a_gpu():
    """Where the train step runs on the CPU, the PreCache workers (at most one per core) run at lower priority with
    a cache of two batches per worker; with a GPU the config's workers and cache apply at full priority."""
    import os

    from lsd_nm.pipelines import CPU_PRECACHE_NICENESS, precache_arrangement

    config = load_network_config(__import__("conftest").REPO / "02_train" / "zebrafinch" / "mtlsd")  # 10 workers, cache 40
    workers = min(10, os.cpu_count() or 1)
    assert precache_arrangement(config, "cpu") == {"num_workers": workers, "cache_size": 2 * workers, "niceness": CPU_PRECACHE_NICENESS}
    assert precache_arrangement(config, "gpu:0") == {"num_workers": workers, "cache_size": 40, "niceness": 0}
    # a CPU shared with other busy processes: the workers at the step's priority
    shared = config.model_copy(update={"train": config.train.model_copy(update={"precache_niceness": 0})})
    assert precache_arrangement(shared, "cpu") == {"num_workers": workers, "cache_size": 2 * workers, "niceness": 0}


class _Priority(gp.BatchProvider):
    """A source whose one array holds the niceness of the process that provided it."""

    def __init__(self, key):
        self.key = key

    def setup(self):
        self.provides(self.key, gp.ArraySpec(roi=gp.Roi((0,), (1,)), voxel_size=gp.Coordinate((1,)), dtype=np.int64))

    def provide(self, request):
        import os

        batch = gp.Batch()
        spec = self.spec[self.key].copy()
        spec.roi = request[self.key].roi
        batch[self.key] = gp.Array(np.array([os.nice(0)], np.int64), spec)
        return batch


def test_precache_workers_run_at_the_given_niceness():
    import os

    from lsd_nm.nodes import PreCache

    key = gp.ArrayKey("NICENESS")
    request = gp.BatchRequest()
    request[key] = gp.ArraySpec(roi=gp.Roi((0,), (1,)))
    mine = os.nice(0)
    pipeline = _Priority(key) + PreCache(cache_size=2, num_workers=1, niceness=3)
    with gp.build(pipeline):
        for _ in range(2):
            assert pipeline.request_batch(request)[key].data.tolist() == [min(mine + 3, 19)]
    assert os.nice(0) == mine  # the requesting process keeps its priority
