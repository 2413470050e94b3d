"""The authors' MongoDB collections as ``mongodump`` files: skeletons and region graphs → numpy arrays.

A ``mongodump`` writes each collection to ``<collection>.bson``, a plain concatenation of BSON documents. The
public bucket holds two kinds (Sheridan et al.'s data notebook, ``lsd/tutorial/notebooks/lsd_data_download.ipynb``):

* **consolidated skeletons** (zebrafinch validation/test ground truth): ``<name>.nodes.bson`` (``id``, ``z``, ``y``,
  ``x`` in nm, ``neuron_id``), ``<name>.edges.bson`` (``source``/``target``, or ``u``/``v``), and per ROI a node mask
  and the connected components of the skeleton pieces inside it. The original reads these as daisy node-attribute
  collections ``<node_mask>[_<run_type>]`` (field ``masked``) and ``<node_components>[_<run_type>]`` (field
  ``component_id``), which daisy stores as separate collections ``nodes_<name>`` (documents ``{id, <field>}``); a
  dump may also carry them as fields of the node documents. Both are read.
* **region graphs** (per network and run): ``nodes.bson`` (``id``, ``center_z``, ``center_y``, ``center_x`` in nm)
  and ``edges_<merge_function>.bson`` (``u``, ``v``, ``merge_score`` — null where waterz never merged the pair —
  and ``agglomerated``).

Documents are decoded with pymongo's ``bson`` (streamed, one document at a time) into numpy columns, so memory
holds the arrays, not the documents. Every problem (missing file, a truncated or corrupt dump, a missing field, a
value of the wrong type) is a one-line :class:`~lsd_nm.config.ConfigError` naming the file and the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import ConfigError

Kind = Literal["int", "float", "float_or_none", "bool"]
"""How a field is read: ``int`` → int64, ``float`` → float64, ``float_or_none`` → float64 with null as NaN,
``bool`` → bool."""

NO_COMPONENT = np.uint64(np.iinfo(np.uint64).max)
"""``component_id_<roi>`` of a node that has no component for that ROI (the collection does not list it)."""

SKELETON_NODE_FIELDS: dict[str, Kind] = {"id": "int", "z": "float", "y": "float", "x": "float", "neuron_id": "int"}
"""The fields every consolidated skeleton node has (positions in nm, world units)."""
EDGE_ENDPOINTS = (("source", "target"), ("u", "v"))
"""Endpoint names of skeleton edges: daisy's ``endpoint_names`` of the original (``source``/``target``), else ``u``/``v``."""
MASK_FIELD = "masked"
COMPONENT_FIELD = "component_id"

_BATCH = 1 << 16
"""Documents per conversion to numpy (bounds the Python objects alive at once)."""


# ---- generic columns --------------------------------------------------------------------------------------------


def _open(path: Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None


def iter_documents(path: Path) -> Iterable[dict[str, Any]]:
    """The documents of a ``.bson`` dump, in file order.

    Raises:
        ConfigError: the file is missing, truncated or not BSON (one line, with the document's index).
    """
    import bson
    from bson.errors import BSONError

    path = Path(path)
    index = 0
    with _open(path) as f:
        try:
            for doc in bson.decode_file_iter(f):
                yield doc
                index += 1
        except BSONError as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"{path}: not a valid BSON dump at document {index} ({reason})") from None


def first_document(path: Path) -> dict[str, Any] | None:
    """The first document of a dump (None if it is empty)."""
    for doc in iter_documents(path):
        return doc
    return None


def _convert(values: list, kind: Kind, path: Path, name: str, start: int) -> np.ndarray:
    """One batch of a field's values as a numpy array of ``kind``; a wrong type names the first bad document."""

    def bad(check) -> ConfigError:
        index = next(i for i, v in enumerate(values) if not check(v))
        value = values[index]
        return ConfigError(
            f"{path}: document {start + index}: field '{name}' is {value!r} ({type(value).__name__}), expected {kind.replace('_', ' ')}"
        )

    is_number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if kind == "bool":
        if not all(isinstance(v, bool) for v in values):
            raise bad(lambda v: isinstance(v, bool))
        return np.array(values, dtype=bool)
    if kind == "float_or_none":
        if not all(v is None or is_number(v) for v in values):
            raise bad(lambda v: v is None or is_number(v))
        return np.array(values, dtype=np.float64)  # None → NaN
    if not all(is_number(v) for v in values):
        raise bad(is_number)
    if kind == "float":
        return np.array(values, dtype=np.float64)
    # ints: mongo shells store numbers as doubles; an integral double is the same id
    if not all(isinstance(v, int) or float(v).is_integer() for v in values):
        raise bad(lambda v: isinstance(v, int) or float(v).is_integer())
    return np.array([int(v) for v in values], dtype=np.int64)


@dataclass
class Columns:
    """Fields of every document of a dump, as arrays in document order."""

    arrays: dict[str, np.ndarray]
    """Field name → array (one value per document)."""
    count: int
    """Number of documents."""
    extra: dict[str, tuple[np.ndarray, list[Any]]] = field(default_factory=dict)
    """With ``collect_extra``: every other field (but ``_id``) → (indices of the documents that have it, values)."""


def read_columns(
    path: Path, fields: Mapping[str, Kind], optional: Mapping[str, Any] | None = None, collect_extra: bool = False
) -> Columns:
    """Read fields of every document of a ``.bson`` dump into numpy arrays.

    Args:
        path: the dump.
        fields: field name → how to read it (:data:`Kind`). A document without a field is an error unless the
            field is in ``optional``.
        optional: field name → the value used where a document does not have it.
        collect_extra: also keep every other field (but ``_id``), sparse (see :attr:`Columns.extra`).
    """
    path = Path(path)
    optional = dict(optional or {})
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in fields}
    batch: dict[str, list] = {name: [] for name in fields}
    extra: dict[str, tuple[list[int], list[Any]]] = {}
    count = 0
    start = 0

    def flush() -> None:
        nonlocal start
        for name, kind in fields.items():
            chunks[name].append(_convert(batch[name], kind, path, name, start))
            batch[name] = []
        start = count

    missing = object()
    for doc in iter_documents(path):
        for name in fields:
            value = doc.get(name, missing)
            if value is missing:
                if name not in optional:
                    keys = ", ".join(k for k in doc if k != "_id")
                    raise ConfigError(f"{path}: document {count} has no field '{name}' (it has: {keys})")
                value = optional[name]
            batch[name].append(value)
        if collect_extra:
            for key, value in doc.items():
                if key != "_id" and key not in fields:
                    indices, values = extra.setdefault(key, ([], []))
                    indices.append(count)
                    values.append(value)
        count += 1
        if count - start == _BATCH:
            flush()
    flush()
    arrays = {}
    for name, kind in fields.items():
        dtype = {"int": np.int64, "bool": bool}.get(kind, np.float64)
        arrays[name] = np.concatenate(chunks[name]) if count else np.zeros(0, dtype)
    return Columns(arrays, count, {k: (np.asarray(i, np.int64), v) for k, (i, v) in extra.items()})


def as_uint64(ids: np.ndarray) -> np.ndarray:
    """Ids stored as BSON int64 (daisy writes ``int(np.int64(id))``) back to uint64, bit for bit."""
    return np.asarray(ids, np.int64).view(np.uint64)


# ---- region graphs ----------------------------------------------------------------------------------------------


@dataclass
class RegionGraphArrays:
    """A region adjacency graph of fragments (supervoxels) with the merge score of every edge."""

    node_ids: np.ndarray
    """(N,) uint64 fragment ids."""
    centers: np.ndarray
    """(N, 3) float64 fragment centres, z, y, x in nm."""
    edges: np.ndarray
    """(E, 2) uint64 fragment-id pairs (u, v) as stored."""
    merge_scores: np.ndarray
    """(E,) float64: the threshold at which u and v first end up in one segment; NaN where waterz never merged them."""
    agglomerated: np.ndarray
    """(E,) bool: the edge came from agglomeration (False where the dump does not say)."""


def read_region_graph(nodes_path: Path, edges_path: Path) -> RegionGraphArrays:
    """Read a region graph dump: ``nodes.bson`` and ``edges_<merge_function>.bson``.

    Args:
        nodes_path: documents ``{id, center_z, center_y, center_x}``.
        edges_path: documents ``{u, v, merge_score, agglomerated}`` (``merge_score`` null or absent → NaN).
    """
    nodes = read_columns(nodes_path, {"id": "int", "center_z": "float", "center_y": "float", "center_x": "float"})
    edges = read_columns(
        edges_path,
        {"u": "int", "v": "int", "merge_score": "float_or_none", "agglomerated": "bool"},
        optional={"merge_score": None, "agglomerated": False},
    )
    node_ids = as_uint64(nodes.arrays["id"])
    _check_unique(node_ids, nodes_path)
    centers = np.stack([nodes.arrays[f"center_{a}"] for a in "zyx"], axis=1).reshape(-1, 3)
    pairs = np.stack([as_uint64(edges.arrays["u"]), as_uint64(edges.arrays["v"])], axis=1).reshape(-1, 2)
    return RegionGraphArrays(node_ids, centers, pairs, edges.arrays["merge_score"], edges.arrays["agglomerated"])


def _check_unique(ids: np.ndarray, path: Path) -> None:
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise ConfigError(f"{path}: node id {int(unique[counts > 1][0])} occurs {int(counts.max())} times (ids must be unique)")


# ---- consolidated skeletons -------------------------------------------------------------------------------------


@dataclass
class SkeletonAttribute:
    """One per-ROI node attribute found in a dump and the array it became."""

    source: str
    """Where it was read: ``<file>`` (an attribute collection) or ``<nodes file>:<field>``."""
    array: str
    """Its name in the ``.skeletons.npz``: ``masked_<key>`` or ``component_id_<key>``."""
    nodes: int
    """Nodes that have a value."""


@dataclass
class SkeletonDumpSummary:
    """What :func:`read_skeleton_dump` found."""

    nodes: int = 0
    edges: int = 0
    dropped_edges: int = 0
    """Edges with an endpoint that is not a node of the dump (left out)."""
    attributes: list[SkeletonAttribute] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Files and fields that are not per-ROI masks or components (e.g. daisy's ``meta`` collection), with why."""

    def line(self) -> str:
        """One line for the user."""
        arrays = ", ".join(a.array for a in self.attributes) or "none"
        text = f"{self.nodes} nodes, {self.edges} edges ({self.dropped_edges} dropped: endpoint not a node); per-ROI arrays: {arrays}"
        return text + (f"; skipped: {'; '.join(self.skipped)}" if self.skipped else "")


def attribute_key(name: str, roi_names: Iterable[str] = ()) -> str:
    """The ``<key>`` of the arrays ``masked_<key>`` / ``component_id_<key>`` for an attribute named ``name``.

    Attribute collections are named ``<node_mask>_<run_type>`` (e.g. ``zebrafinch_mask_11_micron_roi_masked``), where
    the run type begins with the ROI's name. When one of ``roi_names`` occurs in ``name`` as whole ``_``-separated
    words, the key is ``name`` from there on (``11_micron_roi_masked``); otherwise it is the whole name. daisy's
    ``nodes_`` collection prefix is never part of the key.

    Args:
        name: the collection (without ``.bson``) or field name.
        roi_names: ROI names, e.g. those of ``03_predict/configs/rois/zebrafinch.json``.
    """
    name = name.removeprefix("nodes_")
    best: tuple[int, int] | None = None  # (start, -length): the earliest, then the longest match
    for roi in roi_names:
        for m in re.finditer(rf"(?:^|_)({re.escape(roi)})(?=_|$)", name):
            candidate = (m.start(1), -len(roi))
            if best is None or candidate < best:
                best = candidate
    return name if best is None else name[best[0] :]


def _attribute_kind(field_name: str | None, values: list[Any]) -> Literal["mask", "components"] | None:
    """``mask`` (booleans; the field ``masked`` may also hold 0/1) or ``components`` (integers); None: neither."""
    bools = bool(values) and all(isinstance(v, bool) for v in values)
    ints = bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if field_name == MASK_FIELD:
        return "mask" if bools or (ints and set(values) <= {0, 1}) else None
    if field_name == COMPONENT_FIELD:
        return "components" if ints else None
    return "mask" if bools else "components" if ints else None


def find_skeleton_files(folder: Path) -> tuple[Path, Path, list[Path]]:
    """``(<name>.nodes.bson, <name>.edges.bson, other .bson files)`` of a consolidated skeleton dump folder.

    Raises:
        ConfigError: the folder is missing or does not hold exactly one ``*.nodes.bson`` and its ``*.edges.bson``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: folder not found (expected a skeleton dump with <name>.nodes.bson and <name>.edges.bson)")
    nodes = sorted(folder.glob("*.nodes.bson"))
    if len(nodes) != 1:
        found = ", ".join(p.name for p in nodes) or "none"
        raise ConfigError(f"{folder}: expected exactly one <name>.nodes.bson, found {found}")
    edges = nodes[0].with_name(nodes[0].name.removesuffix(".nodes.bson") + ".edges.bson")
    if not edges.is_file():
        raise ConfigError(f"{folder}: {nodes[0].name} has no {edges.name} beside it")
    others = sorted(p for p in folder.glob("*.bson") if p not in (nodes[0], edges))
    return nodes[0], edges, others


def read_skeleton_dump(folder: Path, roi_names: Iterable[str] = ()) -> tuple[dict[str, np.ndarray], SkeletonDumpSummary]:
    """Read consolidated skeletons (a ``mongodump`` folder) into the arrays of a ``.skeletons.npz``.

    Args:
        folder: holds ``<name>.nodes.bson``, ``<name>.edges.bson`` and any per-ROI attribute collections.
        roi_names: ROI names used to name the per-ROI arrays (see :func:`attribute_key`).

    Returns:
        The arrays — ``node_ids`` (N,) uint64, ``positions`` (N, 3) float32 z, y, x in nm, ``neuron_ids`` (N,)
        uint64, ``edges`` (E, 2) uint64 — plus, for every per-ROI attribute, ``masked_<key>`` (N,) bool (False where
        the attribute does not list the node) or ``component_id_<key>`` (N,) uint64 (:data:`NO_COMPONENT` where it
        does not); and a summary.
    """
    roi_names = list(roi_names)
    nodes_path, edges_path, others = find_skeleton_files(folder)
    summary = SkeletonDumpSummary()

    nodes = read_columns(nodes_path, SKELETON_NODE_FIELDS, collect_extra=True)
    node_ids = as_uint64(nodes.arrays["id"])
    _check_unique(node_ids, nodes_path)
    n = len(node_ids)
    arrays: dict[str, np.ndarray] = {
        "node_ids": node_ids,
        "positions": np.stack([nodes.arrays[a] for a in "zyx"], axis=1).reshape(-1, 3).astype(np.float32),
        "neuron_ids": as_uint64(nodes.arrays["neuron_id"]),
    }
    summary.nodes = n

    first = first_document(edges_path) or {}
    names = next((pair for pair in EDGE_ENDPOINTS if all(k in first for k in pair)), None)
    if names is None and first:
        keys = ", ".join(k for k in first if k != "_id")
        raise ConfigError(f"{edges_path}: document 0 has no endpoints 'source'/'target' or 'u'/'v' (it has: {keys})")
    names = names or EDGE_ENDPOINTS[0]
    edges = read_columns(edges_path, {names[0]: "int", names[1]: "int"})
    pairs = np.stack([as_uint64(edges.arrays[names[0]]), as_uint64(edges.arrays[names[1]])], axis=1).reshape(-1, 2)
    known = np.isin(pairs, node_ids).all(axis=1)
    arrays["edges"] = pairs[known]
    summary.edges = int(known.sum())
    summary.dropped_edges = int((~known).sum())

    order = np.argsort(node_ids)
    sorted_ids = node_ids[order]

    def add(source: str, name: str, kind: str, indices: np.ndarray, values: list[Any]) -> None:
        key = attribute_key(name, roi_names)
        array_name = f"masked_{key}" if kind == "mask" else f"component_id_{key}"
        previous = next((a for a in summary.attributes if a.array == array_name), None)
        if previous is not None:
            raise ConfigError(f"{folder}: {previous.source} and {source} both give the array '{array_name}'")
        if kind == "mask":
            column = np.zeros(n, bool)
            column[indices] = np.asarray(values, bool)
        else:
            column = np.full(n, NO_COMPONENT, np.uint64)
            column[indices] = as_uint64(np.asarray(values, np.int64))
        arrays[array_name] = column
        summary.attributes.append(SkeletonAttribute(source, array_name, len(indices)))

    for name, (indices, values) in sorted(nodes.extra.items()):
        kind = _attribute_kind(None, values)
        if kind is None:
            summary.skipped.append(f"{nodes_path.name}:{name} (neither booleans nor integers)")
            continue
        add(f"{nodes_path.name}:{name}", name, kind, indices, values)

    for path in others:
        doc = first_document(path)
        fields = [k for k in (doc or {}) if k not in ("_id", "id")]
        if doc is None or "id" not in doc or len(fields) != 1:
            summary.skipped.append(f"{path.name} (not a node attribute collection {{id, <attribute>}})")
            continue
        column = read_columns(path, {"id": "int"}, collect_extra=True)
        indices, values = column.extra.get(fields[0], (np.zeros(0, np.int64), []))
        if len(indices) != column.count:
            raise ConfigError(f"{path}: field '{fields[0]}' is missing in {column.count - len(indices)} documents")
        kind = _attribute_kind(fields[0], values)
        if kind is None:
            raise ConfigError(f"{path}: field '{fields[0]}' holds neither booleans (a mask) nor integers (component ids)")
        ids = as_uint64(column.arrays["id"])
        position = np.searchsorted(sorted_ids, ids)
        position[position == n] = 0
        found = sorted_ids[position] == ids if n else np.zeros(len(ids), bool)
        if not found.all():
            missing = int(ids[~found][0])
            raise ConfigError(f"{path}: node {missing} is not a node of {nodes_path.name}")
        add(path.name, path.name.removesuffix(".bson"), kind, order[position], values)
    return arrays, summary
