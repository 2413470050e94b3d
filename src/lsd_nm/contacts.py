"""The contact statistics of region-graph edges, collected blockwise for :mod:`lsd_nm.region_merging`, and the
views of fragments blocks beyond their faces that tell a fragment cut by a block face from a boundary.

An edge's contacts are the face-adjacent voxel pairs between its two fragments; their affinities are kept as a
256-bin histogram (waterz's bins) and a sum. A block face cuts the watershed's fragments: the two halves of a cut
fragment become an edge whose contacts are the face, and its affinities there are whatever they are inside the
fragment — often low near its boundary, so the halves would merge late or never (a seam). Every fragments block
keeps which seed its watershed floods the two voxel layers at each face from (:func:`face_views`); a pair across a
face that both blocks' watersheds put into the basin of the same seed counts as affinity 1
(:func:`within_fragments`), as it would be inside one fragment of an unblocked run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BINS = 256
"""Histogram bins over [0, 1], as waterz's histogram quantiles."""


@dataclass(frozen=True)
class Contacts:
    """The contact statistics of region-graph edges: the affinities of every face-adjacent voxel pair between two
    fragments, as a histogram of 256 bins (sparse: ``starts`` indexes ``bins``/``counts`` per edge) and their sum."""

    edges: np.ndarray
    """(E, 2) uint64 fragment ids ``u < v``, sorted."""
    starts: np.ndarray
    """(E + 1,) int64: edge i's histogram is ``bins[starts[i]:starts[i + 1]]``, ``counts[…]``."""
    bins: np.ndarray
    """uint8 histogram bins (ascending per edge)."""
    counts: np.ndarray
    """uint32 voxel pairs per bin."""
    sums: np.ndarray
    """(E,) float64 sum of the contacts' affinities."""

    @staticmethod
    def concatenate(parts: list[Contacts]) -> Contacts:
        """The contacts of several blocks (disjoint edges) as one, sorted by edge."""
        parts = [p for p in parts if len(p.edges)]
        if not parts:
            return empty_contacts()
        edges = np.concatenate([p.edges for p in parts])
        sizes = np.concatenate([np.diff(p.starts) for p in parts])
        bins = np.concatenate([p.bins for p in parts])
        counts = np.concatenate([p.counts for p in parts])
        sums = np.concatenate([p.sums for p in parts])
        order = np.lexsort((edges[:, 1], edges[:, 0]))
        if np.any(np.diff(order) != 1):
            starts = np.concatenate([[0], np.cumsum(sizes)])
            pieces = [np.arange(starts[i], starts[i + 1]) for i in order]
            take = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
            bins, counts, sizes, edges, sums = bins[take], counts[take], sizes[order], edges[order], sums[order]
        return Contacts(edges, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64), bins, counts, sums)

    def save(self, path) -> None:
        np.savez(path, edges=self.edges, starts=self.starts, bins=self.bins, counts=self.counts, sums=self.sums)

    @staticmethod
    def load(path) -> Contacts:
        with np.load(path) as f:
            return Contacts(f["edges"], f["starts"], f["bins"], f["counts"], f["sums"])


def empty_contacts() -> Contacts:
    return Contacts(np.zeros((0, 2), np.uint64), np.zeros(1, np.int64), np.zeros(0, np.uint8),
                    np.zeros(0, np.uint32), np.zeros(0, np.float64))  # fmt: skip


def discretize(values: np.ndarray) -> np.ndarray:
    """waterz's bin of values in [0, 1] (float32): ``min(int(value · 256), 255)``, 0 for values ≤ 0 or NaN."""
    values = np.asarray(values, np.float32)
    scaled = np.where(values > 0, values, np.float32(0)) * np.float32(BINS)
    return np.minimum(scaled.astype(np.int64), BINS - 1)


def contacts_in_block(
    affs: np.ndarray, fragments: np.ndarray, owned: np.ndarray | None = None, within: list | None = None
) -> Contacts:
    """The contact statistics of the edges of one read ROI whose smaller id is in ``owned`` (all without).

    Args:
        affs: (channels, z, y, x) affinities as stored (uint8 ×255, or float in [0, 1]); the first 3 are used:
            channel d of voxel p links p and p − e_d (waterz's convention).
        fragments: (z, y, x) fragment ids (0: none, never part of an edge).
        owned: the fragment ids whose edges (as the smaller id) are wanted.
        within: per axis d, None or a boolean array over the voxel pairs (p, p − e_d), the shape of
            ``fragments`` one shorter along d: pairs that lie within one fragment of the watershed (cut apart by a
            block face only) count as affinity 1.
    """
    scale = np.float32(255.0 if affs.dtype == np.uint8 else 1.0)
    lows, highs, values = [], [], []
    for d in range(3):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[d], before[d] = slice(1, None), slice(None, -1)
        a, b = fragments[tuple(here)], fragments[tuple(before)]
        keep = (a != b) & (a != 0) & (b != 0)
        a, b = a[keep], b[keep]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        value = affs[d][tuple(here)].astype(np.float32) / scale
        if within is not None and within[d] is not None:
            value[within[d]] = 1.0
        value = value[keep]
        if owned is not None:
            mine = np.isin(lo, owned)
            lo, hi, value = lo[mine], hi[mine], value[mine]
        lows.append(lo)
        highs.append(hi)
        values.append(value)
    lo, hi, value = (np.concatenate(x) for x in (lows, highs, values))
    if lo.size == 0:
        return empty_contacts()
    bins = discretize(value)
    order = np.lexsort((bins, hi, lo))
    lo, hi, bins, value = lo[order], hi[order], bins[order], value[order]
    new_edge = np.concatenate([[True], (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])])
    new_bin = new_edge | np.concatenate([[False], bins[1:] != bins[:-1]])
    edge_first = np.flatnonzero(new_edge)
    bin_first = np.flatnonzero(new_bin)
    counts = np.diff(np.concatenate([bin_first, [lo.size]])).astype(np.uint32)
    starts = np.searchsorted(bin_first, np.concatenate([edge_first, [lo.size]])).astype(np.int64)
    sums = np.add.reduceat(value.astype(np.float64), edge_first)
    edges = np.stack([lo[edge_first], hi[edge_first]], axis=1).astype(np.uint64)
    return Contacts(edges, starts, bins[bin_first].astype(np.uint8), counts, sums)


# ---- fragments cut by block faces -----------------------------------------------------------------------------------

FACES = "fragments_faces"
"""The folder (in a run's ``.blocks``) of every fragments block's view beyond its faces (``<block index>.npz``)."""


SEED_BITS = 21
"""Bits per axis of a seed's code (:func:`seed_codes`): voxel coordinates below 2^21 from the blocks' first voxel."""


def seed_codes(basins: np.ndarray, seeds: np.ndarray, origin: Sequence[int]) -> np.ndarray:
    """uint64: per voxel, a code of its basin's seed that is the same in every block (the seed's voxel counted from
    the first voxel any block reads, packed 21 bits per axis, plus 1); 0 where there is no basin.

    Args:
        basins: the watershed's basins 1…n (0: none).
        seeds: (n, 3) the voxel of each basin's seed, in the coordinates of ``basins``.
        origin: the voxel of ``basins[0, 0, 0]`` counted from the first voxel any block reads.
    """
    where = np.asarray(seeds, np.int64) + np.asarray(origin, np.int64)
    if len(where) and (where.min() < 0 or where.max() >= 1 << SEED_BITS):
        raise ValueError(f"a seed at voxel {tuple(where.max(axis=0))}: the volume exceeds 2^{SEED_BITS} voxels")
    packed = (where[:, 0] << 2 * SEED_BITS) | (where[:, 1] << SEED_BITS) | where[:, 2]
    table = np.concatenate([[0], packed + 1]).astype(np.uint64)
    return table[basins.astype(np.int64)]


def face_views(basins: np.ndarray, seeds: np.ndarray, origin: Sequence[int], crop: tuple[slice, ...],
               inside: list[tuple[bool, bool]]) -> dict[str, np.ndarray]:  # fmt: skip
    """What a block's watershed says about the two voxel layers on either side of each face of its write ROI: for
    each face ``"<axis>-"``/``"<axis>+"`` (where ``inside`` says the layer beyond is in the processed region and the
    block read it), a (2, …) uint64 array of the :func:`seed_codes` of the layer inside the write ROI and of the layer
    beyond it, over the write ROI's extent in the other two axes.

    Args:
        basins: the watershed's basins of the read ROI (0 where there is no fragment).
        seeds: (n, 3) the voxel of each basin's seed within the read ROI.
        origin: the read ROI's first voxel counted from the first voxel any block reads.
        crop: the write ROI within ``basins``.
        inside: per axis, whether the layer below and the layer above the write ROI are in the processed region.
    """
    views = {}
    for d in range(3):
        for side, mine, beyond, wanted in (("-", crop[d].start, crop[d].start - 1, inside[d][0]),
                                           ("+", crop[d].stop - 1, crop[d].stop, inside[d][1])):  # fmt: skip
            if not wanted or not 0 <= beyond < basins.shape[d]:
                continue
            layers = []
            for index in (mine, beyond):
                where = list(crop)
                where[d] = index
                layers.append(seed_codes(basins[tuple(where)], seeds, origin))
            views[f"{d}{side}"] = np.stack(layers)
    return views


def within_fragments(fragments: np.ndarray, begin: tuple[int, ...], size: tuple[int, ...],
                     own: dict[str, np.ndarray], lower: list, upper: list) -> list:  # fmt: skip
    """The voxel pairs across this block's faces that lie in the basin of one seed in both blocks' watersheds (the
    ``within`` of :func:`contacts_in_block`): a fragment cut by the face, not a boundary. Both blocks must name the
    same seed: two watersheds that each put the pair into one fragment may still flood it from different seeds (a
    boundary between two neurons filled from either side), and such a pair is a boundary.

    Args:
        fragments: the fragments of the read ROI.
        begin: the write ROI's first voxel in ``fragments``.
        size: the write ROI's shape (voxels).
        own: this block's :func:`face_views`.
        lower: per axis, the :func:`face_views` of the block below (or None).
        upper: per axis, the :func:`face_views` of the block above (or None).
    """
    within = []
    for d in range(3):
        shape = list(fragments.shape)
        shape[d] -= 1
        mask = None
        for side, neighbour, mine, theirs in (("-", lower[d], begin[d], begin[d] - 1),
                                             ("+", upper[d], begin[d] + size[d] - 1, begin[d] + size[d])):  # fmt: skip
            opposite = f"{d}{'+' if side == '-' else '-'}"
            if neighbour is None or f"{d}{side}" not in own or opposite not in neighbour:
                continue
            if not (0 <= mine < fragments.shape[d] and 0 <= theirs < fragments.shape[d]):
                continue
            here, there = own[f"{d}{side}"], neighbour[opposite]  # each: (its own layer, the layer beyond)
            same = (here[0] == here[1]) & (here[0] == there[0]) & (here[0] == there[1]) & (here[0] != 0)
            if mask is None:
                mask = np.zeros(shape, bool)
            pair = [slice(b, b + s) for b, s in zip(begin, size)]
            pair[d] = min(mine, theirs)  # pair i joins voxels i + 1 and i
            mask[tuple(pair)] = same
        within.append(mask)
    return within


def save_faces(path, views: dict[str, np.ndarray]) -> None:
    np.savez(path, **views)


def load_faces(path) -> dict[str, np.ndarray] | None:
    """A block's :func:`face_views` (None: the block has none, e.g. it lies outside the processed region)."""
    if not Path(path).is_file():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in f.files}
