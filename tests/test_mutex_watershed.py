"""Mutex-watershed fragments (``fragments_method`` ``mutex_watershed``): the block function against mwatershed itself,
the blockwise step, the settings it records and its one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from predict_volumes import BLOCK, SHAPE, VOXEL_SIZE, config, graph, make_out_file, read_fragments, same_partition

from lsd_nm.config import ConfigError
from lsd_nm.data import write_container
from lsd_nm.fragments import extract_fragments
from lsd_nm.mutex_watershed import MutexWatershed, default_bias, mutex_watershed_fragments
from lsd_nm.run_config import load_run_config

OFFSETS = ((-1, 0, 0), (0, -1, 0), (0, 0, -1), (-2, 0, 0), (0, -8, 0), (0, 0, -8))
MUTEX = {"fragments_method": "mutex_watershed"}
BLOCK_VOXELS = tuple(b // v for b, v in zip(BLOCK, VOXEL_SIZE))


def _noisy_affs(shape=(6, 20, 24), seed=0) -> np.ndarray:
    """Two halves in x (an affinity of 0 across), smoothed noise everywhere: ties are rare."""
    rng = np.random.default_rng(seed)
    affs = np.clip(0.75 + 0.3 * rng.standard_normal((len(OFFSETS), *shape)), 0, 1)
    x = np.arange(shape[2])
    for c, (_, _, dx) in enumerate(OFFSETS):
        crosses = (x >= 12) & (x + dx < 12)
        affs[c][..., crosses] = 0.0
    for voxel in ((2, 5, 5), (3, 8, 14)):  # every edge of these repels: clusters of one
        for c, offset in enumerate(OFFSETS):
            affs[(c, *voxel)] = 0.0
            affs[(c, *(v - o for v, o in zip(voxel, offset)))] = 0.0
    return affs.astype(np.float32)


def _check_against_library(ours: np.ndarray, reference: np.ndarray) -> None:
    """``ours`` is mwatershed's labelling, except that each voxel mwatershed leaves 0 (a cluster of one) has an
    id of its own."""
    clustered = reference > 0
    assert same_partition(ours[clustered], reference[clustered])
    alone = ours[~clustered]
    assert len(np.unique(alone)) == alone.size and not np.isin(alone, ours[clustered]).any()
    assert (ours > 0).all()


def test_the_block_function_is_mwatersheds_agglom_with_volaras_biases():
    import mwatershed

    affs = _noisy_affs()
    assert default_bias(OFFSETS) == (-0.5, -0.5, -0.5, -0.7, -0.7, -0.7)
    weights = affs.astype(np.float64) + np.array(default_bias(OFFSETS)).reshape(-1, 1, 1, 1)
    reference = mwatershed.agglom(weights, offsets=[list(o) for o in OFFSETS])
    ours = mutex_watershed_fragments(affs, MutexWatershed(OFFSETS, default_bias(OFFSETS)))
    assert (reference == 0).any() and len(np.unique(reference)) > 10  # the case has clusters of one and many others
    _check_against_library(ours, reference)
    assert not np.isin(ours[..., :12], ours[..., 12:]).any()  # nothing crosses the zero affinities

    strides = ((1, 1, 1),) * 3 + ((2, 2, 2),) * 3
    reference = mwatershed.agglom(weights, offsets=[list(o) for o in OFFSETS], strides=[list(s) for s in strides])
    _check_against_library(mutex_watershed_fragments(affs, MutexWatershed(OFFSETS, default_bias(OFFSETS), strides)),
                           reference)  # fmt: skip


def test_the_block_function_per_section_uses_the_in_plane_offsets_of_each_section():
    import mwatershed

    affs = _noisy_affs(seed=3)
    mutex = MutexWatershed(OFFSETS, (-0.4,) * 6)
    ours = mutex_watershed_fragments(affs, mutex, fragments_in_xy=True)
    planar = [1, 2, 4, 5]
    for z in range(affs.shape[1]):
        weights = affs[planar, z : z + 1].astype(np.float64) - 0.4
        reference = mwatershed.agglom(weights, offsets=[list(OFFSETS[c]) for c in planar])
        _check_against_library(ours[z : z + 1], reference)
    assert not np.isin(ours[0], ours[1:]).any()  # sections share no id


def _mutex_config(out: Path, **overrides):
    return config(out, **MUTEX, **overrides)


def test_fragments_blockwise_never_cross_a_boundary_and_equal_one_block_where_the_context_covers_the_volume(
    tmp_path: Path,
) -> None:
    """Ideal affinities: 1 inside a label, 0 to and from its one-voxel boundary. Every repulsive edge touches a
    boundary voxel, which has no attractive edge: the mutex watershed is then the connected components of the
    attractive edges in any edge order, so blocks that see the whole volume agree with one block exactly, cut at
    their faces. With a smaller context a label that leaves the block's read ROI and comes back is two fragments.
    (``mutex_min_size`` 0: mwatershed's clusters as they are, each boundary voxel alone.)"""
    out, single = tmp_path / "out.zarr", tmp_path / "single.zarr"
    labels, _ = make_out_file(out)
    make_out_file(single)
    whole = tuple(s * v for s, v in zip(SHAPE, VOXEL_SIZE))
    cfg = _mutex_config(out, context=whole, mutex_min_size=0)
    result = extract_fragments(cfg, progress=False)
    assert (result.total, result.processed) == (8, 8)
    assert extract_fragments(_mutex_config(single, block_size=whole, context=whole, mutex_min_size=0), progress=False).total == 1
    blockwise, one = read_fragments(out), read_fragments(single)
    assert (blockwise > 0).all()
    per_block = int(np.prod(BLOCK_VOXELS))
    index = 0
    for z in range(0, SHAPE[0], BLOCK_VOXELS[0]):
        for y in range(0, SHAPE[1], BLOCK_VOXELS[1]):
            for x in range(0, SHAPE[2], BLOCK_VOXELS[2]):
                inside = tuple(slice(s, s + b) for s, b in zip((z, y, x), BLOCK_VOXELS))
                assert same_partition(blockwise[inside], one[inside])
                assert ((np.unique(blockwise[inside]) - 1) // per_block == index).all()  # the watershed's ids
                index += 1
    for fragment in np.unique(one):
        inside = labels[one == fragment]
        assert len(np.unique(inside)) == 1 and (inside[0] != 0 or inside.size == 1)  # boundary voxels: alone
    nodes, _ = graph(cfg)
    assert sorted(nodes) == sorted(int(i) for i in np.unique(blockwise))

    small = tmp_path / "small.zarr"
    make_out_file(small)
    extract_fragments(_mutex_config(small, mutex_min_size=0), progress=False)
    fragments = read_fragments(small)
    assert all(len(np.unique(labels[fragments == f])) == 1 for f in np.unique(fragments))


def test_a_resume_with_another_fragments_method_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    extract_fragments(config(out), progress=False)
    before = read_fragments(out)
    keys = "fragments_method, mutex_bias, mutex_min_size, mutex_offsets, mutex_randomized_strides"  # strides None: as if absent
    with pytest.raises(ConfigError, match=rf"exists from other settings \({keys}\); pass --overwrite"):
        extract_fragments(_mutex_config(out), progress=False)
    assert np.array_equal(read_fragments(out), before)
    assert extract_fragments(_mutex_config(out), overwrite=True, progress=False).processed == 8
    settings = zarr.open_array(out / "volumes/fragments", mode="r").attrs["lsd_nm_fragments"]
    assert settings["mutex_offsets"] == [[-1, 0, 0], [0, -1, 0], [0, 0, -1]]  # the mtlsd network's neighborhood
    assert settings["mutex_bias"] == [-0.5, -0.5, -0.5]
    with pytest.raises(ConfigError, match=r"exists from other settings \(mutex_bias\); pass --overwrite"):
        extract_fragments(_mutex_config(out, mutex_bias=[-0.4, -0.5, -0.5]), progress=False)
    with pytest.raises(ConfigError, match=rf"exists from other settings \({keys}\); pass --overwrite"):
        extract_fragments(config(out), progress=False)


def test_unknown_offsets_and_a_bias_per_offset_are_one_line_errors_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    affs = np.full((4, 8, 16, 16), 200, np.uint8)
    write_container(out, {"volumes/affs": affs}, VOXEL_SIZE, (0, 0, 0))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError) as e:
        extract_fragments(_mutex_config(out, setup=None), progress=False)
    assert str(e.value) == (
        f"fragments_method \"mutex_watershed\": the offsets of the 4 channels of '{out}/volumes/affs' are unknown "
        "(setup is null and the dataset has no attr 'neighborhood'): give the network as setup, or the offsets as "
        "that attr"
    )
    with pytest.raises(ConfigError, match=r"^fragments_method \"mutex_watershed\": the neighborhood of "
                       r"02_train/synthetic/mtlsd has 3 offsets, '.*/volumes/affs' 4 channels$"):  # fmt: skip
        extract_fragments(_mutex_config(out), progress=False)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before

    # the attr 'neighborhood' (volara's convention) names them
    zarr.open_array(out / "volumes/affs", mode="r+").attrs["neighborhood"] = [[-1, 0, 0], [0, -1, 0], [0, 0, -1],
                                                                              [0, -4, 0]]  # fmt: skip
    with pytest.raises(ConfigError) as e:
        extract_fragments(_mutex_config(out, setup=None, mutex_bias=[-0.5] * 3), progress=False)
    assert str(e.value) == "mutex_bias: 3 values, expected one per affinity offset (4)"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    extract_fragments(_mutex_config(out, setup=None), progress=False)
    settings = zarr.open_array(out / "volumes/fragments", mode="r").attrs["lsd_nm_fragments"]
    assert settings["mutex_bias"] == [-0.5, -0.5, -0.5, -0.7]
    assert len(np.unique(read_fragments(out))) == 1  # uniform attraction: one fragment


def test_an_unknown_method_and_mutex_options_without_it_are_refused(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"setup": "s", "raw_file": "r", "out_file": "o", "fragments_method": "mws"}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value).startswith(f"{path}: key 'fragments_method': input should be 'watershed' or 'mutex_watershed'")
    path.write_text('{"setup": "s", "raw_file": "r", "out_file": "o", "mutex_bias": [-0.5, -0.5, -0.5]}')
    with pytest.raises(ConfigError, match='mutex_bias: only for fragments_method "mutex_watershed"'):
        load_run_config(path)
    path.write_text('{"setup": "s", "raw_file": "r", "out_file": "o", "fragments_method": "mutex_watershed", '
                    '"seeds": "original"}')  # fmt: skip
    with pytest.raises(ConfigError, match='seeds: only for fragments_method "watershed"'):
        load_run_config(path)
    path.write_text('{"setup": "s", "raw_file": "r", "out_file": "o", "mutex_min_size": 50}')
    with pytest.raises(ConfigError, match='mutex_min_size: only for fragments_method "mutex_watershed"'):
        load_run_config(path)
    # a config written out whole (every key, defaults included) reads back
    path.write_text('{"setup": "s", "raw_file": "r", "out_file": "o"}')
    path.write_text(load_run_config(path).model_dump_json())
    assert load_run_config(path).mutex_min_size == 10


def test_small_clusters_are_flooded_from_their_neighbours_over_the_lower_boundary():
    """Hand-worked, one row of 9 voxels: clusters 1 (4 voxels), 2 (2 voxels), 3 (3 voxels). With min_size 3 only
    cluster 2 is small: its voxel 4 (boundary 0.1, low) joins 1, its voxel 5 (boundary 0.9) is reached first from
    3's side (the kept voxel 6 pushes it at once, before voxel 4 is flooded) and joins 3. With min_size 4 clusters 2
    and 3 are small and both flood from 1. Clusters at or above min_size keep their ids; min_size 0 or 1 changes
    nothing; a block where no cluster is large enough (min_size 5) stays as it is."""
    from lsd_nm.mutex_watershed import NEAREST, absorb_small_clusters

    labels = np.array([[[1, 1, 1, 1, 2, 2, 3, 3, 3]]], dtype=np.uint64)
    boundary = np.array([0.5, 0.5, 0.5, 0.5, 0.1, 0.9, 0.5, 0.5, 0.5], dtype=np.float32)
    affs = np.broadcast_to(1.0 - boundary, (3, 1, 1, 9)).astype(np.float32)  # the mean of the channels: 1 − boundary
    assert absorb_small_clusters(labels, affs, NEAREST, 3).tolist() == [[[1, 1, 1, 1, 1, 3, 3, 3, 3]]]
    assert absorb_small_clusters(labels, affs, NEAREST, 4).tolist() == [[[1] * 9]]
    for size in (0, 1, 2, 5):
        assert np.array_equal(absorb_small_clusters(labels, affs, NEAREST, size), labels)


def test_the_default_min_size_gives_boundary_voxels_to_the_cells_beside_them(tmp_path: Path) -> None:
    """Ideal affinities, one-voxel boundaries (label 0): with ``mutex_min_size`` 0 each boundary voxel is a fragment
    of its own (the test above); with the default (10) every fragment has at least 10 voxels, the clusters of 10 or
    more voxels are the same fragments as before (the others' voxels added to them), and the settings record the min
    size (a resume with another one refuses)."""
    out, bare = tmp_path / "out.zarr", tmp_path / "bare.zarr"
    labels, _ = make_out_file(out)
    make_out_file(bare)
    whole = tuple(s * v for s, v in zip(SHAPE, VOXEL_SIZE))
    cfg = _mutex_config(out, block_size=whole, context=whole)
    assert cfg.mutex_min_size == 10
    extract_fragments(cfg, progress=False)
    extract_fragments(_mutex_config(bare, block_size=whole, context=whole, mutex_min_size=0), progress=False)
    fragments, clusters = read_fragments(out), read_fragments(bare)
    _, sizes = np.unique(fragments, return_counts=True)
    _, inverse, cluster_sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    kept = (cluster_sizes >= 10)[inverse.reshape(clusters.shape)]
    assert sizes.min() >= 10 and (~kept).sum() >= (labels == 0).sum() > 0  # at least every boundary voxel moved
    assert same_partition(fragments[kept], clusters[kept])
    assert len(sizes) == len(np.unique(clusters[kept]))
    with pytest.raises(ConfigError, match="pass --overwrite"):
        extract_fragments(_mutex_config(out, block_size=whole, context=whole, mutex_min_size=20), progress=False)
