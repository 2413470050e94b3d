"""Helpers of the 03_predict tests: a synthetic out_file with ideal affinities, configs, reading results back."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lsd_nm.data import write_container
from lsd_nm.run_config import RunConfig
from lsd_nm.synthetic import generate_volume

SHAPE = (16, 96, 96)
VOXEL_SIZE = (20, 9, 9)
OFFSET = (40, 18, 36)
BLOCK = (160, 432, 432)  # 8 × 48 × 48 voxels: 2 × 2 × 2 blocks
CONTEXT = (40, 36, 36)  # 2 × 4 × 4 voxels


def boundary_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` with a one-voxel boundary: a voxel whose label differs from its predecessor along any axis is 0.

    After this, voxels of two different labels are never face-adjacent.
    """
    boundary = np.zeros(labels.shape, bool)
    for axis in range(3):
        hi = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        boundary[tuple(hi)] |= labels[tuple(hi)] != labels[tuple(lo)]
    return np.where(boundary, 0, labels)


def ideal_affinities(labels: np.ndarray) -> np.ndarray:
    """uint8 ×255 (3, z, y, x) affinities: voxel p, channel d links p and p − e_d; 255 iff both have the same
    non-zero label of :func:`boundary_labels` (0 on the first section of each axis)."""
    cut = boundary_labels(labels)
    affs = np.zeros((3,) + labels.shape, np.uint8)
    for axis in range(3):
        hi = [slice(None)] * 3
        lo = [slice(None)] * 3
        hi[axis], lo[axis] = slice(1, None), slice(None, -1)
        same = (cut[tuple(hi)] == cut[tuple(lo)]) & (cut[tuple(hi)] != 0)
        affs[axis][tuple(hi)] = same * 255
    return affs


def make_out_file(path: Path, seed: int = 1, shape: tuple[int, int, int] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """Write ``path`` (a zarr) with ``volumes/affs``; return ``(labels with boundaries, affs)``."""
    _, labels = generate_volume(shape, VOXEL_SIZE, seed)
    affs = ideal_affinities(labels)
    write_container(path, {"volumes/affs": affs}, VOXEL_SIZE, OFFSET)
    return boundary_labels(labels), affs


def config(out_file: Path, **overrides) -> RunConfig:
    """A run config for ``out_file`` (SQLite region graph beside it) with the test geometry."""
    values = dict(
        setup="02_train/synthetic/mtlsd", raw_file=str(out_file), out_file=str(out_file), num_workers=1,
        block_size=BLOCK, context=CONTEXT,
    )  # fmt: skip
    values.update(overrides)
    return RunConfig(**values)


def read_fragments(out_file: Path) -> np.ndarray:
    import zarr

    return zarr.open_array(Path(out_file) / "volumes/fragments", mode="r")[:]


def foreground(affs: np.ndarray) -> np.ndarray:
    """Where the watershed's foreground is: mean affinity > 0.5."""
    return affs.astype(np.float32).mean(axis=0) / 255.0 > 0.5


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label arrays are the same partition up to relabelling (0 is a label like any other)."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


def graph(cfg: RunConfig) -> tuple[dict, list]:
    """Nodes (id → centre) and sorted edges of a run's region graph, normalised."""
    from lsd_nm.graph import open_graph, read_edges, read_nodes

    db = open_graph(cfg.db_location, "r")
    try:
        return read_nodes(db), read_edges(db)
    finally:
        db.close()
