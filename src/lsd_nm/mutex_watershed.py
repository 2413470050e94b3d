"""Fragments by the mutex watershed (``mwatershed.agglom``) on a block's affinities, every offset included.

Each affinity in [0, 1] plus its offset's bias is an edge weight between voxel ``p`` and ``p + offset`` (the
affinities' convention, offsets negative: ``[-1, 0, 0]`` links a voxel and the one before it in z): positive
attracts, negative repels, and edges are taken in descending magnitude — a merge unless a repulsion already joins
the two clusters. mwatershed gives a cluster of a single voxel the label 0; here every voxel of the block gets a
fragment, as the watershed's do, so those voxels are numbered after the clusters.

The run's offsets (:func:`affinity_offsets`) are the network's ``neighborhood``; for affinities from elsewhere
(``setup`` null) the dataset's attr ``neighborhood`` (volara's convention), or for three channels the nearest
neighbours z, y, x that every step assumes of such affinities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .config import ConfigError
from .run_config import RunConfig

NEAREST = ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
"""The offsets of three channels of unknown origin: the nearest neighbours z, y, x."""
SHORT_RANGE_BIAS = -0.5
"""volara's bias of a nearest-neighbour offset (no component beyond ±1)."""
LONG_RANGE_BIAS = -0.7
"""volara's bias of a long-range offset."""

Offset = tuple[int, int, int]


@dataclass(frozen=True)
class MutexWatershed:
    """What the mutex watershed of a run needs (picklable)."""

    offsets: tuple[Offset, ...]
    """One per affinity channel (voxels, z y x)."""
    bias: tuple[float, ...]
    """Added to each channel's affinities in [0, 1]."""
    strides: tuple[Offset, ...] | None = None
    """One per channel, or None: every edge."""
    randomized_strides: bool = False
    """Each edge with probability 1 / prod(stride) instead of on the stride's grid."""
    min_size: int = 0
    """Clusters below this many voxels are flooded from the others (:func:`absorb_small_clusters`); 0: off."""

    def settings(self) -> dict:
        """What the fragments depend on, for the output's recorded settings."""
        return {
            "fragments_method": "mutex_watershed",
            "mutex_offsets": [list(o) for o in self.offsets],
            "mutex_bias": list(self.bias),
            "mutex_strides": None if self.strides is None else [list(s) for s in self.strides],
            "mutex_randomized_strides": self.randomized_strides,
            **({"mutex_min_size": self.min_size} if self.min_size > 1 else {}),  # fragments made before it: off
        }


def is_long_range(offset: Sequence[int]) -> bool:
    """Whether an offset reaches beyond the nearest neighbours (a component beyond ±1)."""
    return max(abs(int(c)) for c in offset) > 1


def default_bias(offsets: Sequence[Sequence[int]]) -> tuple[float, ...]:
    """volara's biases: −0.5 for each nearest-neighbour offset, −0.7 for each long-range one."""
    return tuple(LONG_RANGE_BIAS if is_long_range(o) else SHORT_RANGE_BIAS for o in offsets)


def affinity_offsets(config: RunConfig, affs_path, channels: int) -> tuple[Offset, ...]:
    """The offsets of the run's ``channels`` affinity channels at ``affs_path``.

    Raises:
        ConfigError: they are unknown (no network, no attr ``neighborhood``, not three channels), or their number is
            not the number of channels.
    """
    import zarr

    if config.setup is not None:
        from .experiment import load_network_folder

        folder = load_network_folder(config.path(config.setup))
        offsets, source = folder.config.neighborhood, f"the neighborhood of {config.setup}"
    else:
        attr = zarr.open_array(affs_path, mode="r").attrs.asdict().get("neighborhood")
        if attr is not None:
            offsets, source = attr, f"the attr 'neighborhood' of '{affs_path}'"
        elif channels == len(NEAREST):
            offsets, source = NEAREST, "the nearest neighbours"
        else:
            raise ConfigError(
                f"fragments_method \"mutex_watershed\": the offsets of the {channels} channels of '{affs_path}' are "
                "unknown (setup is null and the dataset has no attr 'neighborhood'): give the network as setup, or "
                "the offsets as that attr"
            )
    try:
        offsets = tuple(tuple(int(c) for c in o) for o in offsets)
    except (TypeError, ValueError):
        offsets = ()
    if not offsets or any(len(o) != 3 for o in offsets):
        raise ConfigError(f"fragments_method \"mutex_watershed\": {source} is not a list of [z, y, x] offsets")
    if len(offsets) != channels:
        raise ConfigError(
            f"fragments_method \"mutex_watershed\": {source} has {len(offsets)} offsets, '{affs_path}' "
            f"{channels} channels"
        )
    return offsets


def mutex_settings(config: RunConfig, affs_path, channels: int) -> MutexWatershed:
    """The run's mutex watershed over the affinities at ``affs_path`` (``channels`` channels).

    Raises:
        ConfigError: unknown offsets, or ``mutex_bias``/``mutex_strides`` of another length than the offsets.
    """
    offsets = affinity_offsets(config, affs_path, channels)
    for key in ("mutex_bias", "mutex_strides"):
        value = getattr(config, key)
        if value is not None and len(value) != len(offsets):
            raise ConfigError(f"{key}: {len(value)} values, expected one per affinity offset ({len(offsets)})")
    bias = tuple(config.mutex_bias) if config.mutex_bias is not None else default_bias(offsets)
    strides = None if config.mutex_strides is None else tuple(tuple(s) for s in config.mutex_strides)
    return MutexWatershed(offsets, tuple(float(b) for b in bias), strides, config.mutex_randomized_strides,
                          config.mutex_min_size)  # fmt: skip


def absorb_small_clusters(labels: np.ndarray, affs: np.ndarray, offsets: Sequence[Offset], min_size: int) -> np.ndarray:
    """``labels`` (ids ≥ 1) where every cluster of fewer than ``min_size`` voxels has given its voxels to the clusters
    around it: a watershed over the boundary map 1 − (mean of the nearest-neighbour channels of ``affs``), flooded
    from the clusters that remain (their ids kept). Unchanged if ``min_size`` is 0 or no cluster is that large.

    Args:
        labels: (z, y, x) cluster ids ≥ 1.
        affs: (channels, z, y, x) affinities in [0, 1], one channel per offset.
        offsets: the channels' offsets; the nearest-neighbour ones make the boundary map (all, if none is).
        min_size: the smallest cluster kept (voxels).
    """
    if min_size <= 1:
        return labels
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    kept = (counts >= min_size)[inverse.reshape(labels.shape)]
    if kept.all() or not kept.any():
        return labels
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import watershed

    nearest = [c for c, o in enumerate(offsets) if not is_long_range(o)] or list(range(len(offsets)))
    boundary = 1.0 - np.mean(affs[nearest], axis=0, dtype=np.float32)
    # flooded: the small clusters' voxels, from the kept voxels that touch them (the rest of the block is left alone)
    small = ~kept
    region = binary_dilation(small)
    flooded = watershed(boundary, markers=np.where(kept & region, labels, 0), mask=region)
    out = labels.copy()
    reached = small & (flooded > 0)  # a small cluster with no kept neighbour stays as it is
    out[reached] = flooded[reached]
    return out


def _number_singletons(labels: np.ndarray) -> np.ndarray:
    """``labels`` with each 0 voxel (mwatershed's single-voxel clusters) given an id of its own after the others."""
    alone = labels == 0
    if alone.any():
        labels[alone] = labels.max() + 1 + np.arange(int(alone.sum()), dtype=labels.dtype)
    return labels


def _agglom(weights: np.ndarray, offsets, strides, randomized: bool) -> np.ndarray:
    import mwatershed

    labels = mwatershed.agglom(
        weights, offsets=[list(o) for o in offsets], strides=None if strides is None else [list(s) for s in strides],
        randomized_strides=randomized,
    )  # fmt: skip
    return _number_singletons(np.asarray(labels, dtype=np.uint64))


def mutex_watershed_fragments(affs: np.ndarray, mutex: MutexWatershed, fragments_in_xy: bool = False) -> np.ndarray:
    """Fragments (uint64, every voxel an id ≥ 1) of one read ROI's affinities.

    Args:
        affs: (channels, z, y, x) float affinities in [0, 1], one channel per ``mutex.offsets``.
        mutex: offsets, bias and strides.
        fragments_in_xy: each z-section on its own, with the offsets that stay in it (z component 0).
    """
    if affs.shape[0] != len(mutex.offsets):
        raise ValueError(f"affs have {affs.shape[0]} channels, expected one per offset ({len(mutex.offsets)})")
    weights = affs.astype(np.float64) + np.asarray(mutex.bias, dtype=np.float64).reshape(-1, 1, 1, 1)
    if not fragments_in_xy:
        labels = _agglom(np.ascontiguousarray(weights), mutex.offsets, mutex.strides, mutex.randomized_strides)
        return absorb_small_clusters(labels, affs, mutex.offsets, mutex.min_size)
    planar = [c for c, o in enumerate(mutex.offsets) if o[0] == 0]
    if not planar:
        raise ValueError("fragments_in_xy: no affinity offset lies within a section (z component 0)")
    offsets = [mutex.offsets[c] for c in planar]
    strides = None if mutex.strides is None else [mutex.strides[c] for c in planar]
    labels = np.zeros(affs.shape[1:], dtype=np.uint64)
    next_id = np.uint64(0)
    for z in range(affs.shape[1]):
        section = _agglom(np.ascontiguousarray(weights[planar, z : z + 1]), offsets, strides, mutex.randomized_strides)
        section = absorb_small_clusters(section, affs[planar, z : z + 1], offsets, mutex.min_size)
        labels[z] = section[0] + next_id
        next_id += section.max()
    return labels
