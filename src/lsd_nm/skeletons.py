"""Ground-truth skeletons: the ``*.skeletons.npz`` format, skeletonizing labels, and cropping to an evaluated ROI.

A skeletons file holds four arrays: ``node_ids`` (N,) uint64, ``positions`` (N, 3) float32 zyx in nm (world units,
offset included), ``neuron_ids`` (N,) uint64 (the label each node belongs to) and ``edges`` (E, 2) uint64 node-id
pairs. It lies beside its container: ``<name>.zarr`` → ``<name>.skeletons.npz`` (:func:`skeletons_path`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .data import atomic_path


def skeletons_path(container: Path) -> Path:
    """The skeletons file beside a container: ``<name>.zarr`` → ``<name>.skeletons.npz``."""
    container = Path(container)
    return container.with_name(container.name.removesuffix(".zarr") + ".skeletons.npz")


def skeletonize(labels: np.ndarray, voxel_size, offset) -> dict[str, np.ndarray]:
    """Ground-truth skeletons of every labelled object, with kimimaro (TEASAR).

    Returns:
        A dict of arrays (the format of the ``*.skeletons.npz`` files):
        ``node_ids`` (N,) uint64, ``positions`` (N, 3) float32 zyx in nm (world units, offset included),
        ``neuron_ids`` (N,) uint64 (the label each node belongs to), and ``edges`` (E, 2) uint64 node-id pairs.
    """
    import kimimaro

    skeletons = kimimaro.skeletonize(
        labels,
        teasar_params={"scale": 1.5, "const": 150},
        anisotropy=tuple(float(v) for v in voxel_size),
        dust_threshold=200,
        fix_branching=True,
        progress=False,
        parallel=1,
    )
    node_ids, positions, neuron_ids, edges = [], [], [], []
    next_id = 1
    for neuron in sorted(skeletons):
        s = skeletons[neuron]
        if len(s.vertices) < 2:
            continue
        ids = np.arange(next_id, next_id + len(s.vertices), dtype=np.uint64)
        node_ids.append(ids)
        positions.append(s.vertices.astype(np.float32) + np.asarray(offset, np.float32))
        neuron_ids.append(np.full(len(ids), neuron, np.uint64))
        edges.append(ids[s.edges.astype(np.int64)])
        next_id += len(ids)
    if not node_ids:
        return {
            "node_ids": np.zeros(0, np.uint64),
            "positions": np.zeros((0, 3), np.float32),
            "neuron_ids": np.zeros(0, np.uint64),
            "edges": np.zeros((0, 2), np.uint64),
        }
    return {
        "node_ids": np.concatenate(node_ids),
        "positions": np.concatenate(positions),
        "neuron_ids": np.concatenate(neuron_ids),
        "edges": np.concatenate(edges),
    }


def write_skeletons(path: Path, skeletons: dict[str, np.ndarray]) -> None:
    """Write skeletons (the four arrays, see :func:`skeletonize`) to an ``.npz`` file, atomically."""
    with atomic_path(path, suffix=".partial.npz") as tmp:
        np.savez_compressed(tmp, **skeletons)


def read_skeletons(path: Path) -> dict[str, np.ndarray]:
    """Read a ``*.skeletons.npz`` file written by :func:`write_skeletons`."""
    with np.load(path) as f:
        return {k: f[k] for k in ("node_ids", "positions", "neuron_ids", "edges")}


def crop_skeletons(
    skeletons: Mapping[str, np.ndarray], begin: Sequence[int], end: Sequence[int]
) -> dict[str, np.ndarray]:
    """The skeleton nodes with ``begin ≤ position < end`` (nm) and the edges between two of them, as the original
    keeps only the nodes inside the evaluated ROI.

    Args:
        skeletons: arrays as returned by :func:`read_skeletons`.
        begin: the ROI's begin (nm, zyx).
        end: the ROI's end (nm, zyx).
    """
    positions = np.asarray(skeletons["positions"], dtype=np.float64).reshape(-1, 3)
    inside = np.all((positions >= np.asarray(begin)) & (positions < np.asarray(end)), axis=1)
    node_ids = np.asarray(skeletons["node_ids"])
    edges = np.asarray(skeletons["edges"]).reshape(-1, 2)
    kept = node_ids[inside]
    edges = edges[np.isin(edges[:, 0], kept) & np.isin(edges[:, 1], kept)]
    return {
        "node_ids": kept,
        "positions": np.asarray(skeletons["positions"])[inside],
        "neuron_ids": np.asarray(skeletons["neuron_ids"])[inside],
        "edges": edges,
    }
