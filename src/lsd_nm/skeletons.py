"""Ground-truth skeletons: the ``*.skeletons.npz`` format, skeletonizing labels, and the pieces scored in a ROI.

A skeletons file holds four arrays: ``node_ids`` (N,) uint64, ``positions`` (N, 3) float32 zyx in nm (world units,
offset included), ``neuron_ids`` (N,) uint64 (the label each node belongs to) and ``edges`` (E, 2) uint64 node-id
pairs. It lies beside its container: ``<name>.zarr`` → ``<name>.skeletons.npz`` (:func:`skeletons_path`). Skeletons
converted from the authors' consolidated dumps (:mod:`lsd_nm.bson_dump`) may add per-ROI arrays: ``masked_<key>``
(N,) bool and ``component_id_<key>`` (N,) uint64 (:data:`NO_COMPONENT` where a node has none), ``<key>`` being the ROI
part of the authors' attribute name (e.g. ``11_micron_roi_masked``).

:func:`crop_skeletons` gives what the paper scores in a ROI (original.md §6.4.7, paper.md §4): the nodes inside the
ROI (and inside the node mask), the edges between two of them, and every node relabelled to its connected
component there — so a neuron that leaves the ROI and comes back is two skeletons, not one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .bson_dump import NO_COMPONENT
from .config import ConfigError
from .data import atomic_path

SKELETON_ARRAYS = ("node_ids", "positions", "neuron_ids", "edges")
"""The four arrays every skeletons file has."""
PER_ROI_PREFIXES = ("masked_", "component_id_")
"""Prefixes of the optional per-ROI arrays."""


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
    """Read a ``*.skeletons.npz`` file: the four arrays and any per-ROI ``masked_<key>`` / ``component_id_<key>``."""
    with np.load(path) as f:
        arrays = {k: f[k] for k in SKELETON_ARRAYS}
        arrays.update({k: f[k] for k in f.files if k.startswith(PER_ROI_PREFIXES)})
    return arrays


def crop_skeletons(
    skeletons: Mapping[str, np.ndarray],
    begin: Sequence[int],
    end: Sequence[int],
    node_mask: np.ndarray | None = None,
    component_ids: np.ndarray | None = None,
    source: str = "the skeletons",
) -> dict[str, np.ndarray]:
    """The skeleton pieces scored in a ROI, as the paper did: crop, mask, relabel into connected components.

    Kept are the nodes with ``begin ≤ position < end`` (nm) where ``node_mask`` is True, and the edges between two
    kept nodes. ``neuron_ids`` of the result are the kept nodes' components, numbered 1, 2, … in the order of their
    smallest original neuron id (then of their first node), so a neuron that stays whole keeps its rank:

    * without ``component_ids``: the connected components of the kept edges (a kept node without a kept edge is a
      component of its own: a site for the VOI, no length for the ERL);
    * with ``component_ids`` (the authors' ``component_id_<key>`` of this ROI): those, renumbered.

    Args:
        skeletons: arrays as returned by :func:`read_skeletons` (per-ROI arrays are ignored here).
        begin: the ROI's begin (nm, zyx).
        end: the ROI's end (nm, zyx).
        node_mask: (N,) bool, False for nodes to drop (e.g. outside the neuropil), or None.
        component_ids: (N,) uint64 component of each node in this ROI, or None to compute them.
        source: names ``component_ids`` in errors.

    Returns:
        The four arrays (``node_ids``, ``positions``, ``neuron_ids`` = component ids, ``edges``) of the kept nodes.

    Raises:
        ConfigError: an edge joins two neurons, a kept node has no component in ``component_ids``, or an edge joins
            two of its components.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    positions = np.asarray(skeletons["positions"], dtype=np.float64).reshape(-1, 3)
    keep = np.all((positions >= np.asarray(begin)) & (positions < np.asarray(end)), axis=1)
    if node_mask is not None:
        keep &= np.asarray(node_mask, bool)
    node_ids = np.asarray(skeletons["node_ids"])
    neuron_ids = np.asarray(skeletons["neuron_ids"])
    kept = np.flatnonzero(keep)
    edges = np.asarray(skeletons["edges"]).reshape(-1, 2).astype(node_ids.dtype)
    order = np.argsort(node_ids[kept], kind="stable")
    sorted_ids = node_ids[kept][order]
    where = np.searchsorted(sorted_ids, edges).clip(0, max(len(kept) - 1, 0))
    inside = (sorted_ids[where] == edges).all(axis=1) if len(kept) else np.zeros(len(edges), bool)
    edges, rows = edges[inside], order[where[inside]]  # rows: the edges' ends among the kept nodes
    u, v = rows[:, 0], rows[:, 1]
    neurons = neuron_ids[kept]
    if np.any(neurons[u] != neurons[v]):
        i = int(np.flatnonzero(neurons[u] != neurons[v])[0])
        raise ConfigError(
            f"skeleton edge ({int(edges[i, 0])}, {int(edges[i, 1])}) joins neurons {int(neurons[u[i]])} and {int(neurons[v[i]])}"
        )
    if component_ids is not None:
        given = np.asarray(component_ids, np.uint64)[kept]
        if np.any(given == NO_COMPONENT):
            i = int(np.flatnonzero(given == NO_COMPONENT)[0])
            raise ConfigError(
                f"{source}: {int((given == NO_COMPONENT).sum())} kept nodes have no component (e.g. node {int(node_ids[kept][i])})"
            )
        if np.any(given[u] != given[v]):
            i = int(np.flatnonzero(given[u] != given[v])[0])
            raise ConfigError(
                f"{source}: the skeleton edge ({int(edges[i, 0])}, {int(edges[i, 1])}) joins components "
                f"{int(given[u[i]])} and {int(given[v[i]])}"
            )
        _, labels = np.unique(given, return_inverse=True)
    else:
        graph = coo_matrix((np.ones(len(u), np.int8), (u, v)), shape=(len(kept), len(kept)))
        _, labels = connected_components(graph, directed=False) if len(kept) else (0, np.zeros(0, np.int64))
    labels = np.asarray(labels, np.int64).ravel()
    count = int(labels.max()) + 1 if len(labels) else 0
    # number the components by (smallest neuron id, first node): a neuron that stays one piece keeps its rank
    smallest = np.full(count, np.iinfo(np.uint64).max, np.uint64)
    np.minimum.at(smallest, labels, neurons.astype(np.uint64))
    first = np.full(count, len(labels), np.int64)
    np.minimum.at(first, labels, np.arange(len(labels)))
    rank = np.empty(count, np.uint64)
    rank[np.lexsort((first, smallest))] = np.arange(1, count + 1, dtype=np.uint64)
    return {
        "node_ids": node_ids[kept],
        "positions": np.asarray(skeletons["positions"])[kept],
        "neuron_ids": rank[labels] if count else np.zeros(0, np.uint64),
        "edges": edges,
    }
