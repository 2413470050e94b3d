"""lsd_nm.fragments (03_predict/02_extract_fragments.py): blockwise seeded watershed on a synthetic volume.

The affinities are ideal (from labels with a one-voxel boundary, see predict_volumes.py), so the watershed's
foreground (mean affinity > 0.5) of two different labels is never face-adjacent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from scipy import ndimage
from predict_volumes import (
    BLOCK,
    CONTEXT,
    OFFSET,
    SHAPE,
    VOXEL_SIZE,
    config,
    foreground,
    graph,
    make_out_file,
    read_fragments,
    same_partition,
)  # fmt: skip

from lsd_nm.config import ConfigError
from lsd_nm.fragments import distance_transform, extract_fragments

REPO = Path(__file__).resolve().parents[1]
BLOCK_VOXELS = tuple(b // v for b, v in zip(BLOCK, VOXEL_SIZE))


def _blocks():
    """Voxel slices of the 2 × 2 × 2 write blocks."""
    for z in range(0, SHAPE[0], BLOCK_VOXELS[0]):
        for y in range(0, SHAPE[1], BLOCK_VOXELS[1]):
            for x in range(0, SHAPE[2], BLOCK_VOXELS[2]):
                yield tuple(slice(s, s + b) for s, b in zip((z, y, x), BLOCK_VOXELS))


def test_fragments_are_unique_per_block_respect_labels_and_become_nodes(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    labels, affs = make_out_file(out)
    cfg = config(out)
    result = extract_fragments(cfg, progress=False)
    assert (result.total, result.processed, result.skipped) == (8, 8, 0)

    array = zarr.open_array(out / "volumes/fragments", mode="r")
    assert array.dtype == np.uint64 and array.shape == SHAPE
    assert array.attrs["resolution"] == list(VOXEL_SIZE) and array.attrs["offset"] == list(OFFSET)
    fragments = array[:]
    assert (fragments > 0).all()  # no mask, no filter: every voxel belongs to a fragment

    # ids: block index · voxels per block + 1, 2, …: each block's ids are its own
    per_block = int(np.prod(BLOCK_VOXELS))
    for index, block in enumerate(_blocks()):
        ids = np.unique(fragments[block])
        assert ((ids - 1) // per_block == index).all()

    # no fragment covers two labels on the foreground (it may take in boundary voxels of its neighbours)
    fg = foreground(affs)
    for fragment in np.unique(fragments):
        assert len(np.unique(labels[(fragments == fragment) & fg])) <= 1

    # one node per fragment, at its centre of mass in nm
    nodes, edges = graph(cfg)
    assert sorted(nodes) == sorted(int(i) for i in np.unique(fragments)) and edges == []
    for fragment in list(nodes)[::7]:
        centre = np.argwhere(fragments == fragment).mean(axis=0) * VOXEL_SIZE + OFFSET
        assert np.abs(np.asarray(nodes[fragment]) - centre).max() <= 0.5


def test_blockwise_equals_a_single_block_on_the_foreground_when_every_block_sees_the_whole_volume(
    tmp_path: Path,
) -> None:
    """The property: with a context that covers the volume, each block's watershed sees what a single block does —
    the whole volume, plus zero padding wider than the seed window's half-width — so its EDT and seeds inside the
    volume are the same, and the foreground (mean affinity > 0.5) is flooded from them identically: foreground
    voxels lie below the boundary plateau and are all reached from their own component's seeds before any plateau
    voxel is taken. The blockwise fragments are that result cut at the block faces and relabelled. Hence, within
    every block, the blockwise partition of the foreground equals the single-block one up to relabelling. (Plateau
    voxels — boundaries — go to whichever neighbour reaches them first, a tie the padding's shape can break
    differently; and with a small context seeds near a block face depend on what the block sees.)
    """
    shape, block = (8, 48, 48), (80, 216, 216)
    whole = tuple(s * v for s, v in zip(shape, VOXEL_SIZE))
    blockwise, single = tmp_path / "blockwise.zarr", tmp_path / "single.zarr"
    _, affs = make_out_file(blockwise, shape=shape)
    make_out_file(single, shape=shape)
    assert extract_fragments(config(blockwise, block_size=block, context=whole), progress=False).total == 8
    assert extract_fragments(config(single, block_size=whole, context=whole), progress=False).total == 1
    a, b = read_fragments(blockwise), read_fragments(single)
    fg = foreground(affs)
    assert not same_partition(a[fg], b[fg])  # the blocks do cut fragments …
    for z in (0, 4):
        for y in (0, 24):
            for x in (0, 24):
                inside = (slice(z, z + 4), slice(y, y + 24), slice(x, x + 24))
                assert same_partition(a[inside][fg[inside]], b[inside][fg[inside]])  # … and nothing else differs


def test_fragments_in_xy_with_mask_and_filter_then_epsilon_merges_whole_fragments(tmp_path: Path) -> None:
    from lsd_nm.data import write_container

    mask = np.ones(SHAPE, np.uint8)
    mask[:, :, :20] = 0
    write_container(tmp_path / "mask.zarr", {"volumes/mask": mask}, VOXEL_SIZE, OFFSET)
    settings = dict(
        fragments_in_xy=True, mask_file=str(tmp_path / "mask.zarr"), mask_dataset="volumes/mask", filter_fragments=0.3
    )
    plain, merged = tmp_path / "plain.zarr", tmp_path / "merged.zarr"
    make_out_file(plain)
    make_out_file(merged)
    extract_fragments(config(plain, **settings), progress=False)
    extract_fragments(config(merged, epsilon_agglomerate=0.1, **settings), progress=False)

    fragments = read_fragments(plain)
    assert (fragments[:, :, :20] == 0).all() and (fragments[:, :, 20:] > 0).mean() > 0.5
    z_of = {}
    for z in range(SHAPE[0]):
        for fragment in np.unique(fragments[z]):
            assert z_of.setdefault(fragment, z) == z or fragment == 0  # in xy: a fragment lies in one section
    assert sorted(graph(config(plain, **settings))[0]) == sorted(int(i) for i in np.unique(fragments) if i)

    # waterz (3-D, as the original) merges whole fragments, also across sections: a coarser partition
    coarse = read_fragments(merged)
    assert (coarse == 0).sum() == (fragments == 0).sum()
    pairs = np.unique(np.stack([fragments.ravel(), coarse.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1] > len(np.unique(pairs[1]))


def test_a_rerun_skips_every_block_and_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    cfg = config(out)
    extract_fragments(cfg, progress=False)
    before, graph_before = read_fragments(out), graph(cfg)
    again = extract_fragments(cfg, progress=False)
    assert (again.processed, again.skipped) == (0, 8)
    assert np.array_equal(read_fragments(out), before) and graph(cfg) == graph_before


def _done_blocks(tracking: Path) -> int:
    try:
        return int(np.count_nonzero(zarr.open_array(tracking / "done", mode="r")[:]))
    except Exception:  # not created yet, or being written
        return 0


def test_kill_9_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Kill the driver and its 2 workers (SIGKILL to the process group) once some blocks are recorded done, re-run:
    the fragments and nodes equal those of an uninterrupted run, and the blocks recorded done are not redone."""
    small = dict(block_size=(80, 216, 216), context=CONTEXT)  # 4 × 4 × 4 = 64 blocks: a window to kill in
    reference, interrupted = tmp_path / "reference.zarr", tmp_path / "interrupted.zarr"
    make_out_file(reference)
    make_out_file(interrupted)
    extract_fragments(config(reference, **small), progress=False)

    cfg = config(interrupted, num_workers=2, **small)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(cfg.model_dump(mode="json", exclude_defaults=True)))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, str(REPO / "03_predict/02_extract_fragments.py"), str(config_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    tracking = interrupted / ".blocks" / "extract_fragments"
    try:
        deadline = time.monotonic() + 60
        while _done_blocks(tracking) < 3 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    done = _done_blocks(tracking)
    assert 3 <= done < 64, f"expected to kill mid-run, {done} of 64 blocks were done"

    result = extract_fragments(config(interrupted, **small), progress=False)
    assert result.skipped >= done and result.processed + result.skipped == 64
    assert np.array_equal(read_fragments(interrupted), read_fragments(reference))
    assert graph(config(interrupted, **small)) == graph(config(reference, **small))


def test_other_settings_need_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    extract_fragments(config(out), progress=False)
    before, nodes_before = read_fragments(out), graph(config(out))[0]
    with pytest.raises(ConfigError, match=r"exists from other settings \(fragments_in_xy\); pass --overwrite"):
        extract_fragments(config(out, fragments_in_xy=True), progress=False)
    assert np.array_equal(read_fragments(out), before)

    result = extract_fragments(config(out, fragments_in_xy=True), overwrite=True, progress=False)
    assert (result.processed, result.skipped) == (8, 0)
    after = read_fragments(out)
    assert not np.array_equal(after, before)
    assert sorted(graph(config(out))[0]) == sorted(int(i) for i in np.unique(after)) != sorted(nodes_before)


def _written(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_missing_affinities_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    zarr.open_group(out, mode="w", zarr_format=2)
    before = _written(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"setup": "x", "raw_file": str(out), "out_file": str(out)}))
    before = _written(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(REPO / "03_predict/02_extract_fragments.py"), str(config_file)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: affinities '{out}/volumes/affs' does not exist\n"
    assert _written(tmp_path) == before


def test_unreachable_database_is_a_one_line_error_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.zarr"
    make_out_file(out)
    before = _written(tmp_path)
    url = "postgresql://postgres@127.0.0.1:1/lsd_test"
    with pytest.raises(ConfigError) as error:
        extract_fragments(config(out, db=url), progress=False)
    message = str(error.value)
    assert message.startswith(f"db '{url}': cannot connect to PostgreSQL") and "\n" not in message
    assert _written(tmp_path) == before


def test_a_roi_gets_fragments_and_nodes_only_inside_it_and_so_does_agglomeration(tmp_path: Path) -> None:
    """``roi_offset``/``roi_shape``: only the region's blocks run. ``volumes/fragments`` keeps the affinities' extent
    (agglomeration needs them voxel for voxel) and is 0 outside the region; inside, every block reads the same
    affinities as in a run over the whole volume (context beyond the region included), so the fragments are those of
    the whole run, cut to the region."""
    from lsd_nm.agglomerate import agglomerate

    whole, part = tmp_path / "whole.zarr", tmp_path / "part.zarr"
    make_out_file(whole)
    make_out_file(part)
    extract_fragments(config(whole), progress=False)
    # y: the second block row; x: from the middle of the first block to the end (the grid starts at the affinities'
    # offset: blocks and chunks stay aligned, the first block writes only its part inside the region)
    begin = (OFFSET[0], OFFSET[1] + BLOCK[1], OFFSET[2] + 24 * VOXEL_SIZE[2])
    shape = (SHAPE[0] * VOXEL_SIZE[0], BLOCK[1], SHAPE[2] * VOXEL_SIZE[2] - 24 * VOXEL_SIZE[2])
    cfg = config(part, roi_offset=begin, roi_shape=shape)
    result = extract_fragments(cfg, progress=False)
    assert result.total == 4  # 2 (z) × 1 (y) × 2 (x) of the 8 blocks

    array = zarr.open_array(part / "volumes/fragments", mode="r")
    assert array.shape == SHAPE and array.attrs["offset"] == list(OFFSET)
    inside = tuple(slice((b - o) // v, (b - o + s) // v) for b, s, o, v in zip(begin, shape, OFFSET, VOXEL_SIZE))
    fragments, reference = array[:], read_fragments(whole)
    outside = np.ones(SHAPE, bool)
    outside[inside] = False
    assert (fragments[outside] == 0).all() and (fragments[inside] > 0).all()
    for block in _blocks():  # block by block (the ids of a block differ by its index in each run)
        a, b = fragments[block][~outside[block]], reference[block][~outside[block]]
        assert same_partition(a, b)
    nodes, _ = graph(cfg)
    assert sorted(nodes) == sorted(int(i) for i in np.unique(fragments) if i)
    end = np.asarray(begin) + np.asarray(shape)
    assert all((np.asarray(c) >= begin).all() and (np.asarray(c) < end).all() for c in nodes.values())

    assert agglomerate(cfg, progress=False).total == 4
    _, edges = graph(cfg)
    assert edges and all(u in nodes and v in nodes for u, v, _, _ in edges)

    # another ROI needs --overwrite; a ROI outside the affinities or off their grid is a one-line error
    with pytest.raises(ConfigError, match=r"exists from other settings \(roi\); pass --overwrite"):
        extract_fragments(config(part), progress=False)
    before = _written(tmp_path)
    outside_roi = config(part, roi_offset=(0, 0, 0), roi_shape=shape)
    with pytest.raises(ConfigError) as error:
        extract_fragments(outside_roi, progress=False)
    assert str(error.value) == (
        f"the ROI [0:{shape[0]}, 0:{shape[1]}, 0:{shape[2]}] ({shape[0]}, {shape[1]}, {shape[2]}) "
        "(roi_offset/roi_shape) "
        f"is not inside '{part}/volumes/affs' [40:360, 18:882, 36:900] (320, 864, 864)"
    )
    with pytest.raises(ConfigError, match=r"^roi_offset/roi_shape \(40, 22, 36\)/.* are not on the voxel grid of '"):
        extract_fragments(config(part, roi_offset=(40, 22, 36), roi_shape=shape), progress=False)
    assert _written(tmp_path) == before


# ---- seeds "original": lsd.post.fragments, exactly ---------------------------------------------------------------

_FACES = [(-1, 0, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1), (0, 1, 0), (1, 0, 0)]  # the cross, in mahotas' (flat) order


def _neighbours(p, shape):
    for d in _FACES if len(shape) == 3 else [o[1:] for o in _FACES if o[0] == 0]:
        q = tuple(a + b for a, b in zip(p, d))
        if all(0 <= c < s for c, s in zip(q, shape)):
            yield q


def _reference_label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Face-connected components, numbered in raster order of their first voxel."""
    labels = np.zeros(mask.shape, np.int64)
    n = 0
    for p in np.ndindex(mask.shape):
        if mask[p] and not labels[p]:
            n += 1
            labels[p], stack = n, [p]
            while stack:
                for q in _neighbours(stack.pop(), mask.shape):
                    if mask[q] and not labels[q]:
                        labels[q] = n
                        stack.append(q)
    return labels, n


def _reference_flood(surface: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """mahotas.cwatershed's flooding: a voxel takes the label of the first settled face neighbour that reaches it
    and enters the queue at its own surface value; the queue is ordered by (value, order of entry); markers enter
    first, in raster order."""
    import heapq
    import itertools

    labels, cost, done = markers.copy(), np.full(surface.shape, np.inf), np.zeros(surface.shape, bool)
    order, queue = itertools.count(), []
    for p in np.ndindex(surface.shape):
        if markers[p]:
            heapq.heappush(queue, (surface[p], next(order), p))
            cost[p] = surface[p]
    while queue:
        _, _, p = heapq.heappop(queue)
        if done[p]:
            continue
        done[p] = True
        for q in _neighbours(p, surface.shape):
            if not done[q] and surface[q] < cost[q]:
                cost[q], labels[q] = surface[q], labels[p]
                heapq.heappush(queue, (surface[q], next(order), q))
    return labels


def _reference_original(affs: np.ndarray, fragments_in_xy: bool) -> np.ndarray:
    """The original's watershed_from_affinities (original.md §6.4.2 step 3) on uint8 affinities: EDT of the
    foreground (mean > 0.5·255), seeds = voxels equal to their maximum filter (window 10) over all voxels,
    labelled, flooded on max(dist) − dist; per section with running id offsets in xy."""
    from scipy import ndimage

    def watershed(foreground):
        dist = ndimage.distance_transform_edt(foreground)
        seeds, n = _reference_label(ndimage.maximum_filter(dist, 10) == dist)
        return _reference_flood(dist.max() - dist, seeds), n

    stored = affs.astype(np.float32)
    if not fragments_in_xy:
        return watershed(stored.mean(axis=0) > 127.5)[0]
    out, offset = np.zeros(affs.shape[1:], np.int64), 0
    for z in range(affs.shape[1]):
        section, n = watershed(0.5 * (stored[1, z] + stored[2, z]) > 127.5)
        out[z], offset = section + offset, offset + n
    return out


def _boxes() -> np.ndarray:
    """A foreground (1, 24, 44) with a wide background plateau (x ≥ 30), two equal boxes side by side behind a
    one-voxel boundary (ties), and a thin box beside a thick one, inside its seed window (no seed of its own)."""
    fg = np.zeros((1, 24, 44), bool)
    fg[0, 1:11, 1:8] = fg[0, 1:11, 9:16] = True  # equal twins
    fg[0, 13:23, 1:14] = True  # thick …
    fg[0, 13:23, 15:17] = True  # … and thin, 2 voxels from it
    fg[0, 1:23, 18:28] = True
    return fg


def _affs(foreground: np.ndarray) -> np.ndarray:
    return np.repeat(foreground[None].astype(np.uint8) * 255, 3, axis=0)


def test_original_seeds_equal_a_reference_of_the_original_algorithm_on_plateaus_ties_and_seedless_components():
    from lsd_nm.fragments import watershed_from_affinities

    fg = np.concatenate([_boxes(), _boxes()[:, ::-1], _boxes()[:, :, ::-1]])
    affs = _affs(fg)
    for in_xy in (False, True):
        ours = watershed_from_affinities(affs.astype(np.float32), in_xy, seeds="original", max_affinity_value=255.0)
        expected = _reference_original(affs, in_xy)
        assert ours.dtype == np.uint64 and (ours > 0).all()
        np.testing.assert_array_equal(ours, expected)

    ours = watershed_from_affinities(affs.astype(np.float32), True, seeds="original", max_affinity_value=255.0)[0]
    thin = np.zeros(fg[0].shape, bool)
    thin[13:23, 15:17] = True
    assert set(np.unique(ours[thin])) <= set(np.unique(ours[~thin]))  # the thin box has no seed: flooded
    assert ours[0, 40] not in ours[fg[0]]  # the wide background is a fragment of its own
    foreground = watershed_from_affinities(affs[:, :1].astype(np.float32) / 255, True)[0]
    assert len(np.unique(foreground[thin])) == 1 and foreground[13, 15] not in foreground[fg[0] & ~thin]  # ours: a seed


@pytest.mark.parametrize("in_xy", [False, True])
def test_original_seeds_equal_the_reference_on_noisy_affinities(in_xy):
    from scipy import ndimage

    from lsd_nm.fragments import fragments_in_block

    rng = np.random.default_rng(7)
    smooth = ndimage.gaussian_filter(rng.normal(size=(3, 6, 30, 30)), (0, 1, 2, 2))
    affs = np.clip(128 + smooth * 400, 0, 255).astype(np.uint8)
    affs[1, 2, 5, :] = 127  # in-plane mean exactly 127.5: not foreground in the original
    affs[2, 2, 5, :] = 128
    ours = fragments_in_block(affs, None, in_xy, 0.0, 0.0, seeds="original")
    expected = _reference_original(affs, in_xy)
    assert len(np.unique(expected)) > 10
    np.testing.assert_array_equal(ours, expected)


def test_original_seeds_blockwise_cut_blocks_at_the_affinities_edge(tmp_path: Path) -> None:
    """One block whose context covers the volume reads exactly the affinities (no zero padding beyond them): its
    fragments are the reference's on the whole volume; with 8 blocks, each block's fragments are the reference's on
    what it reads."""
    shape = (8, 48, 48)
    whole = tuple(s * v for s, v in zip(shape, VOXEL_SIZE))
    one, eight = tmp_path / "one.zarr", tmp_path / "eight.zarr"
    _, affs = make_out_file(one, shape=shape)
    make_out_file(eight, shape=shape)
    assert extract_fragments(config(one, block_size=whole, context=whole, seeds="original"), progress=False).total == 1
    assert same_partition(read_fragments(one), _reference_original(affs, False))

    cfg = config(eight, block_size=(80, 216, 216), context=(40, 36, 36), seeds="original", fragments_in_xy=True)
    assert extract_fragments(cfg, progress=False).total == 8
    fragments = read_fragments(eight)
    size, context = (4, 24, 24), (2, 4, 4)  # voxels
    for begin in np.ndindex(2, 2, 2):
        block = tuple(slice(b * s, (b + 1) * s) for b, s in zip(begin, size))
        read = tuple(slice(max(b.start - c, 0), b.stop + c) for b, c in zip(block, context))  # numpy cuts at the end
        expected = _reference_original(affs[(slice(None), *read)], True)
        inner = tuple(slice(b.start - r.start, b.stop - r.start) for b, r in zip(block, read))
        assert same_partition(fragments[block], expected[inner])


def test_replace_sections_zeroes_whole_sections_in_every_block(tmp_path: Path) -> None:
    """The volume's second section and its last (the last of the second block along z, which the original's own
    index mapping missed) become 0; nothing else changes. Indices are world z / voxel size, as the original's."""
    plain, replaced = tmp_path / "plain.zarr", tmp_path / "replaced.zarr"
    make_out_file(plain)
    make_out_file(replaced)
    first = OFFSET[0] // VOXEL_SIZE[0]  # section index of the volume's z = 0
    extract_fragments(config(plain), progress=False)
    cfg = config(replaced, replace_sections=[first + 1, first + 15, first + 1])
    extract_fragments(cfg, progress=False)
    a, b = read_fragments(plain), read_fragments(replaced)
    assert (b[1] == 0).all() and (b[15] == 0).all()
    keep = [z for z in range(SHAPE[0]) if z not in (1, 15)]
    assert (b[keep] > 0).all() and same_partition(a[keep], b[keep])
    assert sorted(graph(cfg)[0]) == sorted(int(i) for i in np.unique(b) if i)

    with pytest.raises(ConfigError, match=r"exists from other settings \(replace_sections\); pass --overwrite"):
        extract_fragments(config(replaced), progress=False)
    with pytest.raises(ConfigError, match=r"exists from other settings \(replace_sections, seeds\); pass --overwrite"):
        extract_fragments(config(replaced, seeds="original"), progress=False)
    with pytest.raises(ConfigError) as error:
        extract_fragments(config(replaced, replace_sections=[first - 1, first + 16]), progress=False)
    assert str(error.value) == (
        f"replace_sections [{first - 1}, {first + 16}] lie outside the affinities' sections {first}…{first + 15} "
        "(z voxel indices: world z / voxel size)"
    )


@pytest.mark.parametrize("shape", [(24, 64, 64), (1, 40, 30), (3, 1, 9), (5, 6, 7)])
def test_the_distance_transform_is_scipys_to_the_bit(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) + shape[0])
    for density in (0.0, 0.05, 0.3, 0.7, 0.95, 1.0):
        foreground = rng.random(shape) < density
        if 0 < density < 1:  # wide regions too: large distances
            foreground = ndimage.binary_dilation(foreground, iterations=2)
        expected = ndimage.distance_transform_edt(foreground).astype(np.float32)
        got = distance_transform(foreground)
        assert got.dtype == np.float32 and np.array_equal(got, expected), (shape, density)


def test_a_seedless_components_seed_is_its_first_largest_voxel_in_c_order() -> None:
    """Ties for a component's largest distance go to its first voxel (C order) on every CPU (scipy's
    ``maximum_position`` broke them by numpy's unstable sort, differently with and without AVX-512)."""
    from lsd_nm.fragments import _first_maximum

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 6, size=(7, 9, 11)).astype(np.int32)
    values = rng.integers(0, 4, size=labels.shape).astype(np.float32)  # many ties
    ids = np.array([5, 2, 4])
    got = _first_maximum(values, labels, ids)
    flat_labels, flat_values = labels.ravel(), values.ravel()
    expected = []
    for i in ids:
        inside = flat_labels == i
        expected.append(int(np.flatnonzero(inside & (flat_values == flat_values[inside].max()))[0]))
    assert got.tolist() == expected
    # the ties were real: every id has several voxels at its maximum
    assert all(((flat_labels == i) & (flat_values == flat_values[e])).sum() > 1 for i, e in zip(ids, expected))
