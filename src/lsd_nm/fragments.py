"""Step 2 of ``03_predict``: fragments — a seeded watershed per block of the predicted affinities (paper §6.4.2).

Per block (read = write ROI ± ``context``): affinities (uint8 ×255 → [0, 1]) × optional mask; foreground = mean
affinity > 0.5; a watershed of the inverted Euclidean distance transform of the foreground (voxel units) from seeds
at its maxima within a window of ``min_seed_distance`` voxels (every voxel of the read ROI gets a fragment, face
connectivity). The seeds (run config ``seeds``): ``original`` is ``lsd.post.fragments`` — maxima over all voxels
(a boundary wider than the window becomes fragments of its own), ``mahotas.label`` and ``mahotas.cwatershed``, the
read ROI cut at the affinities' edge; ``foreground`` keeps the maxima on the foreground only, adds the maximum of
every foreground component that got no seed (so a component is never flooded from a neighbour), floods with
scikit-image and pads the read ROI with zeros beyond the affinities. Optionally per z-section (``fragments_in_xy``),
masked, filtered by mean affinity (``filter_fragments``) and merged within the block by waterz up to
``epsilon_agglomerate``. The result is cropped to the write ROI, the ``replace_sections`` are set to 0, and it is
relabelled ``block_index · voxels_per_block + 1, 2, …`` (unique across blocks, never 0 for a fragment); every
fragment's centre of mass (nm) becomes a node of the region graph.

With ``roi_offset``/``roi_shape`` only the blocks of that region are processed (it must lie inside the affinities, on
their voxel grid; blocks read context beyond it where there are affinities): ``volumes/fragments`` keeps the
affinities' extent, voxel for voxel, but outside the region it stays 0 and has no nodes, so agglomeration,
segments and evaluation cover the region only.

Run: ``python 03_predict/02_extract_fragments.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from funlib.geometry import Coordinate, Roi

from .blockwise import BlockwiseResult, Geometry, OutputDataset, block_geometry, block_index, run_job
from .config import ConfigError
from .data import (
    AFFS, FRAGMENTS, FRAGMENTS_ID, FRAGMENTS_SETTINGS, LABELS_COMPRESSOR, Volume, atomic_path, fragments_id,
    open_dataset, read_padded, voxel_slices,
)  # fmt: skip
from .contacts import FACES, face_views, save_faces
from .graph import GraphOwner, check_owner, check_reachable, create_graph, graph_exists, open_graph, write_nodes
from .mutex_watershed import MutexWatershed, mutex_settings, mutex_watershed_fragments
from .run_config import RunConfig, Seeds
from .steps import EXTRACT_FRAGMENTS

MIN_SEED_DISTANCE = 10
"""Window (voxels) of the maximum filter that picks seeds, as in the original."""
EPSILON_SCORING = "OneMinus<HistogramQuantileAffinity<RegionGraphType, 25, ScoreValue, 256, false>>"


# ---- the watershed ------------------------------------------------------------------------------------------------


def distance_transform(foreground: np.ndarray) -> np.ndarray:
    """The Euclidean distance (voxel units, float32) of every foreground voxel to the nearest background voxel: the
    values of ``scipy.ndimage.distance_transform_edt(foreground).astype(float32)``, computed by the ``edt`` package
    (2× faster; the squared distances are integers, so both give the same float32 square roots; a test checks it).
    Without any background voxel scipy's answer is no distance to anything, but it is what the fragments were made
    from: then scipy computes it."""
    if foreground.all():
        from scipy import ndimage

        return ndimage.distance_transform_edt(foreground).astype(np.float32)
    import edt

    return edt.edt(np.ascontiguousarray(foreground), black_border=False, parallel=1)


def _first_maximum(values: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The flat index of the first voxel (C order) holding each id's largest value, in the order of ``ids``.

    ``ndimage.maximum_position`` breaks ties by numpy's unstable sort, whose order differs between CPUs (with and
    without AVX-512): its seeds, and so the fragments, were not the same on every machine.
    """
    where = np.flatnonzero(np.isin(labels, ids))  # ascending: the first hit of an id is its first voxel
    of, value = labels.ravel()[where], values.ravel()[where]
    largest = np.full(int(ids.max()) + 1, -np.inf)
    np.maximum.at(largest, of, value)
    top = where[value == largest[of]]
    found, first = np.unique(labels.ravel()[top], return_index=True)  # return_index sorts stably
    return top[first[np.searchsorted(found, ids)]]


def _seed_positions(seeds: np.ndarray, n: int) -> np.ndarray:
    """(n, ndim) int64: the first voxel (C order) of each seed 1…n of a seed label array."""
    where = np.flatnonzero(seeds)
    found, first = np.unique(seeds.ravel()[where], return_index=True)
    positions = np.zeros((n, seeds.ndim), np.int64)
    positions[found.astype(np.int64) - 1] = np.stack(np.unravel_index(where[first], seeds.shape), axis=1)
    return positions


def _seeded_watershed(foreground: np.ndarray, min_seed_distance: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Watershed of the inverted distance transform of ``foreground`` from its maxima; every voxel gets an id ≥ 1
    (if there is any foreground). Returns the labels, their number and each label's seed
    (:func:`_seed_positions`)."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    dist = distance_transform(foreground)
    maxima = (ndimage.maximum_filter(dist, size=min_seed_distance) == dist) & foreground
    seeds, n = ndimage.label(maxima)
    components, num_components = ndimage.label(foreground)
    if num_components:
        # a component whose maxima all lost to a larger neighbour within the window would otherwise be flooded
        # from that neighbour, across the boundary: give it its own seed at its maximum
        seeded = np.zeros(num_components + 1, dtype=bool)
        seeded[components[maxima]] = True
        missing = np.flatnonzero(~seeded[1:]) + 1
        if len(missing):
            for position in _first_maximum(dist, components, missing):
                n += 1
                seeds[np.unravel_index(position, dist.shape)] = n
    if n == 0:
        return np.zeros(foreground.shape, dtype=np.uint64), 0, np.zeros((0, foreground.ndim), np.int64)
    labels = watershed(dist.max() - dist, seeds)
    return labels.astype(np.uint64), n, _seed_positions(seeds, n)


def _original_watershed(foreground: np.ndarray, min_seed_distance: int) -> tuple[np.ndarray, int, np.ndarray]:
    """``lsd.post.fragments.watershed_from_boundary_distance``: seeds = the maxima of the distance transform over
    *all* voxels (a boundary wider than the window is a plateau of maxima: fragments of its own), labelled with
    ``mahotas.label``, flooded by ``mahotas.cwatershed`` (face connectivity, its tie-breaking); every voxel gets an
    id ≥ 1. Returns the labels, their number and each label's seed (:func:`_seed_positions`)."""
    import mahotas
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(foreground)  # float64, as the original's surface
    seeds, n = mahotas.label(ndimage.maximum_filter(dist, min_seed_distance) == dist)
    if n == 0:  # cannot happen (the global maximum is a seed); kept as the original has it
        return np.zeros(foreground.shape, dtype=np.uint64), 0, np.zeros((0, foreground.ndim), np.int64)
    return mahotas.cwatershed(dist.max() - dist, seeds).astype(np.uint64), int(n), _seed_positions(seeds, int(n))


def watershed_from_affinities(
    affs: np.ndarray,
    fragments_in_xy: bool = False,
    min_seed_distance: int = MIN_SEED_DISTANCE,
    seeds: Seeds = "foreground",
    max_affinity_value: float = 1.0,
    return_seeds: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Fragments (uint64, 1…n; 0 only where there is no foreground at all) of affinities in [0, max_affinity_value].

    Args:
        affs: (channels, z, y, x) float affinities, channels z, y, x first.
        fragments_in_xy: watershed each z-section on the mean of the y and x affinities.
        min_seed_distance: maximum-filter window (voxels) for the seeds.
        seeds: ``foreground`` (maxima on the foreground, one seed per unseeded component, scikit-image) or
            ``original`` (``lsd.post.fragments``: maxima over all voxels, mahotas).
        max_affinity_value: what an affinity of 1 is stored as (the foreground is mean > half of it).
        return_seeds: also return the (n, 3) voxel (z, y, x) of each fragment's seed (the first voxel of its
            plateau of maxima).
    """
    if seeds == "original":
        # the original's expressions, on the stored values (e.g. uint8 as float32 against 127.5), so that the
        # foreground is the same voxel for voxel
        shed = _original_watershed
        threshold = 0.5 * max_affinity_value
    else:
        if max_affinity_value != 1.0:
            affs = affs / max_affinity_value
        shed = _seeded_watershed
        threshold = 0.5
    if not fragments_in_xy:
        labels, _, positions = shed(np.mean(affs, axis=0) > threshold, min_seed_distance)
        return (labels, positions) if return_seeds else labels
    in_plane = 0.5 * (affs[1] + affs[2]) if seeds == "original" else None
    labels = np.zeros(affs.shape[1:], dtype=np.uint64)
    all_positions = []
    next_id = 0
    for z in range(affs.shape[1]):
        plane = in_plane[z] if in_plane is not None else np.mean(affs[1:3, z], axis=0)
        section, n, positions = shed(plane > threshold, min_seed_distance)
        labels[z] = np.where(section > 0, section + np.uint64(next_id), 0)
        all_positions.append(np.concatenate([np.full((n, 1), z, np.int64), positions], axis=1))
        next_id += n
    if return_seeds:
        return labels, np.concatenate(all_positions) if all_positions else np.zeros((0, 3), np.int64)
    return labels


def zero_sections(fragments: np.ndarray, first_section: int, sections: Sequence[int]) -> np.ndarray:
    """``fragments`` (z, y, x) with the listed sections set to 0 (the original's ``replace_sections``).

    Args:
        fragments: fragments whose section 0 is the volume's section ``first_section``.
        first_section: world z of ``fragments[0]`` / voxel size.
        sections: the volume's sections to zero.
    """
    local = [s - first_section for s in sections if 0 <= s - first_section < fragments.shape[0]]
    if local:
        fragments = fragments.copy()
        fragments[local] = 0
    return fragments


def relabel_consecutive(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids 1…n in order of the old ids, 0 kept."""
    import fastremap  # np.unique's result, ~8 times faster on a block (hashing, not sorting every voxel)

    unique, inverse = fastremap.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape).astype(np.uint64)
    return inverse if unique[0] == 0 else inverse + 1


def fragments_in_block(
    affs: np.ndarray,
    mask: np.ndarray | None,
    fragments_in_xy: bool,
    epsilon_agglomerate: float,
    filter_fragments: float,
    seeds: Seeds = "foreground",
    mutex: MutexWatershed | None = None,
    return_seeds: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fragments of one read ROI (uint64), before cropping; with ``return_seeds`` also the watershed's basins
    (uint64 1…n, 0 where there is no fragment) and the (n, 3) voxel of each basin's seed (for the mutex watershed,
    which has no seeds: each cluster's first voxel, which blocks that see the cluster differently do not share, so
    its halves at a face are scored by their affinities, never joined blindly).

    Args:
        affs: (channels, z, y, x) affinities as stored (uint8 ×255, or float in [0, 1]).
        mask: optional (z, y, x) mask; fragments only where it is non-zero.
        fragments_in_xy: per-section watershed.
        epsilon_agglomerate: merge fragments with waterz (25th-percentile score) below this (0: off).
        filter_fragments: drop fragments whose mean affinity is below this (0: off).
        seeds: the watershed's seeds (see :func:`watershed_from_affinities`).
        mutex: the mutex watershed instead of the watershed (``fragments_method`` ``mutex_watershed``).
        return_seeds: also return the basins and their seeds.
    """
    max_value = 255.0 if affs.dtype == np.uint8 else 1.0
    if seeds == "original":
        stored = affs.astype(np.float32)
        if mask is not None:
            stored = stored * (mask > 0)
        fragments, positions = watershed_from_affinities(
            stored, fragments_in_xy, seeds=seeds, max_affinity_value=max_value, return_seeds=True
        )
    affs = affs.astype(np.float32) / max_value
    if mask is not None:
        affs = affs * (mask > 0)
    if mutex is not None:
        fragments = relabel_consecutive(mutex_watershed_fragments(affs, mutex, fragments_in_xy))
        positions = _seed_positions(fragments, int(fragments.max()))
    elif seeds != "original":
        fragments, positions = watershed_from_affinities(affs, fragments_in_xy, return_seeds=True)
    if mask is not None:
        fragments[mask == 0] = 0
    basins = fragments.copy() if return_seeds else None
    if filter_fragments > 0 and fragments.max() > 0:
        from scipy import ndimage

        # the original averaged affs[0:2] in xy mode, i.e. z and y; the in-plane affinities are y and x
        mean = np.mean(affs[1:3] if fragments_in_xy else affs, axis=0)
        ids = np.unique(fragments[fragments > 0])
        means = np.asarray(ndimage.mean(mean, fragments, ids))
        fragments[np.isin(fragments, ids[means < filter_fragments])] = 0
    if epsilon_agglomerate > 0 and fragments.max() > 0:
        import waterz

        local = relabel_consecutive(fragments)
        merged = next(
            waterz.agglomerate(
                np.ascontiguousarray(affs[:3]), [epsilon_agglomerate], fragments=np.ascontiguousarray(local),
                scoring_function=EPSILON_SCORING, discretize_queue=256,
            )  # fmt: skip
        )
        fragments = np.array(merged, copy=True)  # waterz reuses its buffer between yields
    if return_seeds:
        return fragments, np.where(fragments != 0, basins, np.uint64(0)), positions
    return fragments


def centers_of_mass(labels: np.ndarray, offset: Sequence[int], voxel_size: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """id → centre of mass (nm, rounded) of every non-zero id of ``labels`` whose voxel 0 lies at ``offset`` (nm)."""
    import fastremap

    ids, inverse, counts = fastremap.unique(labels, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    coords = np.indices(labels.shape).reshape(3, -1)
    centers = np.stack([np.bincount(inverse, weights=c) for c in coords], axis=1) / counts[:, None]
    nm = np.rint(np.asarray(offset) + centers * np.asarray(voxel_size)).astype(np.int64)
    return {int(i): tuple(int(x) for x in c) for i, c in zip(ids, nm) if i != 0}


# ---- the blockwise step -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FragmentsJob:
    """Everything a worker needs (picklable)."""

    affs: Volume
    fragments: Volume
    mask: Volume | None
    geometry: Geometry
    db_location: str
    fragments_in_xy: bool
    epsilon_agglomerate: float
    filter_fragments: float
    seeds: Seeds = "foreground"
    replace_sections: tuple[int, ...] = ()
    faces: Path | None = None
    """The folder of the blocks' views across their faces (:func:`lsd_nm.contacts.face_views`)."""
    mutex: MutexWatershed | None = None


def _setup_worker(job: FragmentsJob) -> dict[str, Any]:
    return {
        "affs": job.affs.open("r"),
        "fragments": job.fragments.open("r+"),
        "mask": job.mask.open("r") if job.mask is not None else None,
        "db": open_graph(job.db_location, "r+"),
    }


def _read_mask(array, volume: Volume, roi: Roi, voxel_size: Coordinate) -> np.ndarray:
    """The mask in ``roi`` at ``voxel_size`` (repeated when its voxels are an integer multiple)."""
    factor = volume.voxel_size / voxel_size
    coarse = Roi(roi.begin, roi.shape).snap_to_grid(volume.voxel_size, mode="grow")
    data = read_padded(array, volume, coarse)
    for axis, f in enumerate(factor):
        data = np.repeat(data, f, axis=axis)
    start = [(b - c) // v for b, c, v in zip(roi.begin, coarse.begin, voxel_size)]
    shape = [s // v for s, v in zip(roi.shape, voxel_size)]
    return data[tuple(slice(s, s + n) for s, n in zip(start, shape))]


def process_block(job: FragmentsJob, block, resources: dict[str, Any]) -> None:
    """Fragments of one block → ``volumes/fragments`` and nodes of the region graph."""
    geometry = job.geometry
    read_roi, write_roi = block.read_roi, block.write_roi.intersect(geometry.region)
    if write_roi.empty:
        return
    if job.seeds == "original" or job.mutex is not None:
        # (mutex watershed: zero padding would be voxels that repel each other, and the attraction into them from
        # the face would carry those repulsions into the volume)
        # the original reads the block's context only where there are affinities (no zero padding beyond them,
        # which would be a boundary at the volume's faces)
        read_roi = read_roi.intersect(job.affs.roi)
    affs = read_padded(resources["affs"], job.affs, read_roi)
    mask = None
    if job.mask is not None:
        mask = _read_mask(resources["mask"], job.mask, read_roi, geometry.voxel_size)
    fragments, basins, seeds = fragments_in_block(
        affs, mask, job.fragments_in_xy, job.epsilon_agglomerate, job.filter_fragments, job.seeds, job.mutex,
        return_seeds=True,
    )
    crop = tuple(
        slice((w - r) // v, (w - r) // v + s // v)
        for w, r, s, v in zip(write_roi.begin, read_roi.begin, write_roi.shape, geometry.voxel_size)
    )
    cropped = zero_sections(fragments[crop], write_roi.begin[0] // geometry.voxel_size[0], job.replace_sections)
    local = relabel_consecutive(cropped)
    index = block_index(block.write_roi, geometry.write_total, geometry.block_size)
    first = index * geometry.voxels_per_block
    ids = np.where(local > 0, local + np.uint64(first), np.uint64(0)).astype(np.uint64)
    # which seed's basin this block's watershed puts the voxels on either side of each face into: agglomeration
    # tells a fragment cut by a face from a boundary
    region = geometry.region
    inside = [
        (write_roi.begin[d] - geometry.voxel_size[d] >= region.begin[d], write_roi.end[d] < region.end[d])
        for d in range(3)
    ]
    origin = tuple((r - t) // v for r, t, v in zip(read_roi.begin, geometry.total_roi.begin, geometry.voxel_size))
    views = face_views(basins, seeds, origin, crop, inside)
    # nodes and views first: a block whose fragments are written is then never without them (a crash in between
    # leaves the block undone, and re-running it writes the same nodes, views and ids again)
    write_nodes(resources["db"], centers_of_mass(ids, write_roi.begin, geometry.voxel_size))
    with atomic_path(job.faces / f"{index}.npz", suffix=".partial.npz") as tmp:
        save_faces(tmp, views)
    resources["fragments"][voxel_slices(job.fragments, write_roi)] = ids


def fingerprint(config: RunConfig, affs: Volume, mutex: MutexWatershed | None = None) -> dict[str, Any]:
    """The settings that determine the fragments (a different one means other fragments)."""
    wanted: dict[str, Any] = {
        "affs_roi": [list(affs.roi.offset), list(affs.roi.shape)],
        "voxel_size": list(affs.voxel_size),
        "block_size": list(config.block_size),
        "context": list(config.context),
        "fragments_in_xy": config.fragments_in_xy,
        "epsilon_agglomerate": config.epsilon_agglomerate,
        "filter_fragments": config.filter_fragments,
        "mask": [config.mask_file and str(config.path(config.mask_file)), config.mask_dataset],
        "min_seed_distance": MIN_SEED_DISTANCE,
    }
    if config.roi_offset is not None:  # only with a ROI: fragments of the whole volume keep their fingerprint
        wanted["roi"] = [list(config.roi_offset), list(config.roi_shape)]
    if config.seeds != "foreground":  # fragments made before the option existed had foreground seeds
        wanted["seeds"] = config.seeds
    if mutex is not None:  # fragments made before the option existed came from the watershed
        wanted.update(mutex.settings())
    if config.replace_sections:
        wanted["replace_sections"] = sorted(set(config.replace_sections))
    return wanted


def check_fragments(config: RunConfig, affs: Volume) -> tuple[Geometry, Volume | None]:
    """The checks of this step that need no fragments yet: block geometry over ``affs`` (existing, or to be predicted),
    the mask, and a reachable, writable region graph; returns the geometry and the mask.

    Raises:
        ConfigError: the first problem, as one line.
    """
    geometry = block_geometry(config, affs)
    mask = None
    if config.mask_file is not None:
        mask = open_dataset(config.path(config.mask_file), config.mask_dataset, "mask")
        if any(m % v for m, v in zip(mask.voxel_size, affs.voxel_size)):
            raise ConfigError(
                f"mask voxel size {tuple(mask.voxel_size)} nm is not a multiple of the affinities' "
                f"{tuple(affs.voxel_size)} nm"
            )
    sections = (affs.roi.begin[0] // affs.voxel_size[0], affs.roi.end[0] // affs.voxel_size[0])
    outside = [s for s in config.replace_sections if not sections[0] <= s < sections[1]]
    if outside:
        raise ConfigError(
            f"replace_sections {outside} lie outside the affinities' sections {sections[0]}…{sections[1] - 1} "
            "(z voxel indices: world z / voxel size)"
        )
    check_reachable(config.db_location)
    # another run's graph in this db is refused whatever this run does (its own is replaced with new fragments)
    check_owner(config.db_location, config.out_path, fragments_id(config.out_path), replacing=True)
    return geometry, mask


def extract_fragments(config: RunConfig, overwrite: bool = False, progress: bool = True) -> BlockwiseResult:
    """Write ``volumes/fragments`` into ``out_file`` and the fragment nodes into the region graph, blockwise.

    Re-running with the same settings resumes (done blocks are skipped). Fragments made with other settings are
    not replaced unless ``overwrite`` (which also drops the region graph and the agglomeration's done blocks).

    Args:
        config: the run config (``out_file``, ``block_size``, ``context``, ``num_workers``, ``worker_command``,
            ``db``, ``fragments_in_xy``, ``seeds``, ``epsilon_agglomerate``, ``filter_fragments``,
            ``replace_sections``, ``mask_file/mask_dataset``, ``roi_offset/roi_shape``: only that region gets
            fragments).
        overwrite: start over, replacing existing fragments and the region graph.
        progress: show daisy's progress bar.

    Raises:
        ConfigError: missing affinities or mask, ``replace_sections`` outside the affinities, bad geometry (a ROI outside the affinities or off their voxel grid
            included), unreachable database, fragments from other settings — all before anything is written.
    """
    import zarr

    config.check_own_fragments("02_extract_fragments")
    out_file = config.out_path
    affs = open_dataset(out_file, AFFS, "affinities")
    shape = zarr.open_array(affs.path, mode="r").shape
    if len(shape) != 4:
        raise ConfigError(f"affinities '{affs.path}' must be (channels, z, y, x)")
    mutex = mutex_settings(config, affs.path, shape[0]) if config.fragments_method == "mutex_watershed" else None
    geometry, mask = check_fragments(config, affs)

    output = OutputDataset(
        out_file / FRAGMENTS, affs.roi, affs.voxel_size, chunk_shape=tuple(geometry.block_size / affs.voxel_size),
        dtype=np.uint64, settings_attr=FRAGMENTS_SETTINGS, settings=fingerprint(config, affs, mutex),
        compressor=LABELS_COMPRESSOR,
    )  # fmt: skip
    tracking = config.blocks_dir / "extract_fragments"
    if output.reusable(overwrite):
        if not graph_exists(config.db_location):  # fragments without their nodes: they cannot be resumed
            raise ConfigError(
                f"'{output.path}' exists but the region graph '{config.db_location}' does not; "
                "pass --overwrite to start over"
            )
        check_owner(config.db_location, out_file, fragments_id(out_file))
    else:
        EXTRACT_FRAGMENTS.invalidate_later(config)  # new fragment ids: no edges, LUTs or segmentations of them yet
        output.create(tracking)
        shutil.rmtree(config.blocks_dir / FACES, ignore_errors=True)
        # the new fragments get an id, and the new graph names them as its owner
        new_id = uuid.uuid4().hex
        zarr.open_array(output.path, mode="r+").attrs[FRAGMENTS_ID] = new_id
        create_graph(config.db_location, GraphOwner(str(out_file.resolve()), new_id))
    job = FragmentsJob(
        affs=affs,
        fragments=output.volume,
        mask=mask,
        geometry=geometry,
        db_location=config.db_location,
        fragments_in_xy=config.fragments_in_xy,
        epsilon_agglomerate=config.epsilon_agglomerate,
        filter_fragments=config.filter_fragments,
        seeds=config.seeds,
        replace_sections=tuple(sorted(set(config.replace_sections))),
        faces=config.blocks_dir / FACES,
        mutex=mutex,
    )
    job.faces.mkdir(parents=True, exist_ok=True)
    return run_job(
        "extract_fragments", geometry.total_roi, geometry.read_roi, geometry.write_roi,
        job, process_block, _setup_worker, config, tracking, progress,
        preload=("scipy.ndimage", "skimage.segmentation", "mwatershed"),
    )
