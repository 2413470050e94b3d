"""RandomLocation: gunpowder's, but a ``min_masked`` that no location can reach is an error instead of a silent hang."""

from __future__ import annotations

import itertools
import logging

import gunpowder as gp
import numpy as np

from ..config import ConfigError

logger = logging.getLogger(__name__)

SAMPLES = 10_000
"""Random locations tried (vectorised) before all locations are checked."""

CHUNK = 1 << 20
"""Locations checked at once when all are checked (bounds the memory used)."""


class RandomLocation(gp.RandomLocation):
    """:class:`gunpowder.RandomLocation` that first makes sure some location satisfies ``min_masked``.

    gunpowder draws locations until one has at least ``min_masked`` of the mask request masked in, without a
    bound: when no location can (an almost empty mask, a request larger than the masked-in region) it loops
    forever. Before each selection this node tries :data:`SAMPLES` random locations of the same grid at once from
    the mask's integral image; only if none of them qualifies does it check every location, and raises a
    one-line :class:`ConfigError` if none qualifies (naming the best fraction there is). A request whose
    qualifying locations are rare, but exist, is served, with a warning. (Counting attempts in :meth:`accepts`
    would not do: gunpowder calls it only for locations that already have ``min_masked``.)

    Args:
        min_masked (float): the fraction of the mask request that must be masked in (0: no check).
        mask (:class:`gunpowder.ArrayKey`): the mask to check.
        volume (str, optional): what to call the data in errors (e.g. the volume's path).
        setting (str): where ``min_masked`` is set, named in errors (e.g. ``train.min_masked in config.json``).
        **kwargs: passed on to :class:`gunpowder.RandomLocation`.
    """

    def __init__(self, min_masked: float = 0, mask: gp.ArrayKey | None = None, volume: str | None = None, setting: str = "min_masked", **kwargs):
        super().__init__(min_masked=min_masked, mask=mask, **kwargs)
        self.volume = volume
        self.setting = setting
        self.warned = False

    def prepare(self, request):
        if self.mask is not None and self.min_masked > 0 and self.mask in request:
            self._check_min_masked(request)
        return super().prepare(request)

    def _check_min_masked(self, request):
        grid = self._mask_grid(request)
        if grid is None:
            return  # no location at all: gunpowder says so
        begin, step, count, size = grid
        total = int(np.prod(count))
        voxels = int(np.prod(size))
        if total > SAMPLES:
            rng = np.random.default_rng(request.random_seed)
            samples = rng.integers(0, count, size=(SAMPLES, len(count)))
            if (self._masked_in(begin + samples * step, size) / voxels >= self.min_masked).any():
                return
        best = 0
        for start in range(0, total, CHUNK):
            indices = np.stack(np.unravel_index(np.arange(start, min(start + CHUNK, total)), count), axis=1)
            masked_in = self._masked_in(begin + indices * step, size)
            best = max(best, int(masked_in.max()))
            if best / voxels >= self.min_masked:
                if total > SAMPLES and not self.warned:
                    logger.warning(
                        "%s: none of %d random batch locations has %g of the mask request masked in (some do): batches are slow to find; lower %s",
                        self.volume or self.mask, SAMPLES, self.min_masked, self.setting,
                    )
                    self.warned = True
                return
        prefix = f"{self.volume}: " if self.volume else ""
        shape = "×".join(str(s) for s in size)
        reached = np.floor(best / voxels * 1000) / 1000  # rounded down: never shown as reaching min_masked
        raise ConfigError(
            f"{prefix}no batch location has {self.min_masked:g} of its {shape} {self.mask} voxels masked in "
            f"(at most {reached:.3f}); lower {self.setting}"
        )

    def _mask_grid(self, request):
        """The locations gunpowder chooses from for ``request``, as mask boxes in voxels of the mask array.

        Returns (first box begin, step between boxes, number of boxes per axis, box shape), or None if there are
        none or infinitely many. The same grid as gunpowder's: every requested ROI stays inside what upstream
        provides, on multiples of the requested arrays' least common voxel size.
        """
        lcm = self.spec.get_lcm_voxel_size(request.array_specs.keys())
        shifts = None
        for key, spec in request.items():
            if spec.roi is None:
                continue
            provided = self.upstream_spec[key].roi
            key_shifts = provided.shift(-spec.roi.begin).grow((0,) * spec.roi.dims, -(spec.roi.shape - lcm))
            shifts = key_shifts if shifts is None else shifts.intersect(key_shifts)
        if shifts is None:
            return None
        shifts = shifts.snap_to_grid(lcm, mode="shrink")
        if shifts.unbounded or shifts.empty:
            return None
        mask_roi = request[self.mask].roi
        voxel_size = self.spec[self.mask].voxel_size
        begin = (mask_roi.begin + shifts.begin - self.mask_spec.roi.begin) // voxel_size
        return np.array(begin), np.array(lcm // voxel_size), np.array(shifts.shape // lcm), np.array(mask_roi.shape // voxel_size)

    def _masked_in(self, begins: np.ndarray, size: np.ndarray) -> np.ndarray:
        """Masked-in voxels of the boxes ``[b, b + size)`` for each row ``b`` of ``begins``, from the integral image."""
        integral = self.mask_integral
        dims = integral.ndim
        total = np.zeros(len(begins), np.int64)
        for corner in itertools.product((0, 1), repeat=dims):
            # the integral image is inclusive: the box sum takes its values just before each corner
            at = begins - 1 + np.array(corner) * size
            inside = (at >= 0).all(axis=1)
            value = integral[tuple(np.maximum(at, 0).T)].astype(np.int64) * inside
            total += value if (dims - sum(corner)) % 2 == 0 else -value
        return total
