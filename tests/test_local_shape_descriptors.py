"""Our LSD targets equal lsds' (the reference): the function on random label volumes, and the gunpowder node."""

import gunpowder as gp
import numpy as np
import pytest
from funlib.persistence import Array
from lsd.train.gp import AddLocalShapeDescriptor as ReferenceNode
from lsd.train.local_shape_descriptor import get_local_shape_descriptors as reference
from scipy import ndimage

from lsd_nm.config import ConfigError
from lsd_nm.local_shape_descriptors import local_shape_descriptors
from lsd_nm.nodes import AddLocalShapeDescriptor


def random_labels(shape, seed, cells=20):
    """Voronoi cells with large uint64 ids (all touching some border), 5 % background speckle, and single-voxel
    labels (some of which a subsampled grid misses)."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.uint64)
    seeds[tuple(rng.integers(0, s, cells) for s in shape)] = rng.integers(2**62, 2**64 - 1, cells, dtype=np.uint64)
    nearest = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    labels = seeds[tuple(nearest)]
    labels[rng.random(shape) < 0.05] = 0
    labels[tuple(rng.integers(0, s, 5) for s in shape)] = np.arange(1, 6, dtype=np.uint64)
    return labels


CASES = {
    # name: (shape, voxel size, sigma, downsample, ROI as (offset, shape) in voxels or None)
    "anisotropic, downsample 2": ((12, 30, 30), (20, 9, 9), 50.0, 2, None),
    "anisotropic, downsample 2, ROI": ((12, 30, 30), (20, 9, 9), (60.0, 40.0, 40.0), 2, ((2, 6, 4), (8, 12, 20))),
    "anisotropic, downsample 1, sigma not a float32": ((10, 24, 24), (20, 9, 9), 33.3, 1, None),
    "isotropic, downsample 1": ((16, 16, 16), (8, 8, 8), 20.0, 1, None),
    "isotropic, downsample 2, odd shape": ((17, 19, 16), (8, 8, 8), 24.0, 2, ((2, 2, 0), (12, 16, 16))),
    "2-D, downsample 1": ((40, 36), (9, 9), 30.0, 1, None),
    "2-D, downsample 2, ROI": ((41, 40), (4, 4), (12.0, 20.0), 2, ((4, 2), (30, 36))),
}


@pytest.mark.parametrize("name", CASES)
def test_equals_lsds_on_random_labels(name):
    shape, voxel_size, sigma, downsample, roi = CASES[name]
    labels = random_labels(shape, seed=len(name))
    roi = gp.Roi(*roi) if roi is not None else None
    sigmas = sigma if isinstance(sigma, tuple) else (sigma,) * 3
    expected = reference(labels, sigmas, voxel_size=voxel_size, roi=roi, downsample=downsample)
    ours = local_shape_descriptors(labels, sigma, voxel_size=voxel_size, roi=roi, downsample=downsample)
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape == ((10 if len(shape) == 3 else 6),) + (roi.shape if roi else shape)
    # not a degenerate volume: every channel takes values strictly inside (0, 1)
    assert ((expected > 0) & (expected < 1)).reshape(expected.shape[0], -1).any(axis=1).all()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)
    # background is 0 in every channel
    crop = roi.to_slices() if roi else ...
    assert not ours[:, labels[crop] == 0].any()


@pytest.mark.parametrize("dtype", [np.uint64, np.int32])
@pytest.mark.parametrize("components", ["0129", "345", "9", "678"])
def test_components_and_listed_labels_equal_lsds(components, dtype):
    labels = random_labels((10, 24, 24), seed=7).astype(dtype)
    listed = np.unique(labels)[::2]
    args = dict(voxel_size=(20, 9, 9), downsample=2)
    expected = reference(labels, (40.0,) * 3, components=components, labels=listed, **args)
    ours = local_shape_descriptors(labels, 40.0, components=components, labels=listed, **args)
    assert ours.shape == (len(components), 10, 24, 24)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(roi=gp.Roi((1, 0, 0), (4, 8, 8)), downsample=2), "multiples of downsample 2"),
        (dict(roi=gp.Roi((0, 0, 0), (12, 8, 8))), "inside the array"),
        (dict(components="0a"), "components"),
        (dict(sigma=0.0), "sigma"),
        (dict(voxel_size=(20, 9)), "voxel_size"),
    ],
)
def test_bad_input_is_a_one_line_error(args, message):
    args = {"sigma": 40.0, **args}
    with pytest.raises(ConfigError, match=message) as error:
        local_shape_descriptors(np.ones((8, 8, 8), np.uint64), **args)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="integer labels"):
        local_shape_descriptors(np.ones((8, 8, 8), np.float32), 40.0)


LABELS, MASK, UNLABELLED, LSDS, LSDS_MASK = (gp.ArrayKey(n) for n in ("LABELS", "MASK", "UNLABELLED", "LSDS", "LSDS_MASK"))


def run_node(node_class, labels, mask, voxel_size, roi, **kwargs):
    """One batch of ``source + Pad + node``: the descriptors, their mask and the labels in ``roi``."""
    zero = (0,) * labels.ndim
    sources = tuple(
        gp.ArraySource(key, Array(data, zero, voxel_size), interpolatable=False) + gp.Pad(key, None)
        for key, data in ((LABELS, labels), (MASK, mask), (UNLABELLED, (labels != 0).astype(np.uint8)))
    )
    pipeline = sources + gp.MergeProvider() + node_class(LABELS, LSDS, **kwargs)
    request = gp.BatchRequest()
    for key in (LSDS, LABELS) + ((LSDS_MASK,) if "lsds_mask" in kwargs else ()):
        request[key] = gp.ArraySpec(roi=roi)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request)
    return {key: batch[key] for key in request.array_specs}


@pytest.mark.parametrize(
    "masks",
    [
        {},
        {"lsds_mask": LSDS_MASK, "labels_mask": MASK},
        {"lsds_mask": LSDS_MASK, "unlabelled": UNLABELLED},
    ],
    ids=["descriptors", "labels_mask", "unlabelled"],
)
def test_node_equals_lsds_node(masks):
    """In a pipeline as in training: the labels' context is read through a Pad (zeros beyond the volume) and part of
    the volume is masked out."""
    voxel_size = gp.Coordinate((20, 9, 9))
    labels = random_labels((24, 48, 48), seed=3)
    mask = np.ones(labels.shape, np.uint8)
    mask[:, :, :12] = 0
    labels[mask == 0] = 0
    # near the volume's edge: the 3-sigma context (126 nm: 6 sections, 14 voxels in-plane; both nodes need it even
    # for downsample 2) reaches into the padding
    roi = gp.Roi((2, 20, 4), (10, 24, 24)) * voxel_size
    kwargs = dict(sigma=42.0, downsample=2, **masks)
    expected = run_node(ReferenceNode, labels, mask, voxel_size, roi, **kwargs)
    ours = run_node(AddLocalShapeDescriptor, labels, mask, voxel_size, roi, **kwargs)
    assert ours[LSDS].data.shape == (10, 10, 24, 24)
    assert ((ours[LSDS].data > 0) & (ours[LSDS].data < 1)).any()
    for key in expected:
        assert ours[key].spec.roi == expected[key].spec.roi
        assert ours[key].data.dtype == expected[key].data.dtype
        np.testing.assert_allclose(ours[key].data, expected[key].data, rtol=0, atol=1e-5)


def test_node_in_2d_equals_lsds_node():
    voxel_size = gp.Coordinate((4, 4))
    labels = random_labels((40, 40), seed=5)
    roi = gp.Roi((8, 8), (20, 24)) * voxel_size
    expected = run_node(ReferenceNode, labels, labels * 0 + 1, voxel_size, roi, sigma=8.0, downsample=2)
    ours = run_node(AddLocalShapeDescriptor, labels, labels * 0 + 1, voxel_size, roi, sigma=8.0, downsample=2)
    assert ours[LSDS].data.shape == (6, 20, 24)
    np.testing.assert_allclose(ours[LSDS].data, expected[LSDS].data, rtol=0, atol=1e-5)
