"""Steps 4 and 5 of ``03_predict``: segments from the region graph at merge thresholds (paper §6.4.4–§6.4.5).

**Find segments** (:func:`find_segments`). All nodes and edges of the region graph are read once. For every threshold
t of the sweep (``thresholds`` = [min, max, step]: min, min + step, … below max, each rounded to 10 decimals so that
float drift cannot add or shift a threshold) and of ``extract_thresholds``, the segments are the connected
components of the fragments joined by the edges whose ``merge_score`` is not ``> t``, as the original
(funlib.segment's union-find skips an edge only when ``score > threshold``, both as float32, so a score equal to
float32(t) joins even where float32(t) lies above t, e.g. at 0.28): an edge without a score (waterz never
merged it below 1.0: NaN) joins at every threshold, as it did there (NaN > t is false); an edge to a fragment that is
no node is skipped (``make fetch-published`` skips and counts those of the authors' dumps; ``reproduce`` reports
the count). The LUT maps every fragment
(node) to its segment, whose id is **the smallest fragment id in the component**: fragment ids are ≥ 1, so a segment
is never 0 (the original used the 0-based index of the union-find representative, so one segment became background),
and a fragment that stays alone keeps its own id. Each LUT is saved atomically as
``<out_file>/luts/fragment_segment/seg_<merge_function>_<int(round(100·t))>.npz`` with the arrays ``fragments`` and
``segments`` (uint64, sorted by fragment) and ``edges_sha256`` (the region graph's edges it was made from). The
threshold in the name is rounded, not truncated (the original's ``int(0.29 * 100)`` is 28); two thresholds with the
same name are an error. Existing LUTs of the same edges are skipped; LUTs of other edges need ``--overwrite``.

**Extract segmentation** (:func:`extract_segmentation`). For each t in ``extract_thresholds``, blockwise (write =
read = ``block_size``, no context; blocks shrink at the volume's end), ``volumes/fragments`` is mapped through the
LUT into ``volumes/segmentation_<int(round(100·t))>`` (uint64, chunks = blocks, attrs ``resolution``/``offset`` of the
fragments). Fragments missing from the LUT become 0, as in the original. With ``roi_offset``/``roi_shape`` only the
blocks of that region are written (the fragments are 0 outside it, see :mod:`lsd_nm.fragments`). The thresholds
still to write go in one blockwise task (``segmentation_<t1>_<t2>…``): each block's fragments are read once and relabelled
through every LUT (a task of fewer than :data:`SERIAL_BELOW` blocks runs in this process, whatever ``num_workers``).
Its done blocks are recorded in ``<out_file>/.blocks/<task>``, so a re-run with the same thresholds skips them; a finished segmentation gets ``<out_file>/.blocks/segmentation_<t>.complete`` and is skipped by every
later run. A segmentation made from another LUT needs ``--overwrite``.

Run: ``python 03_predict/04_find_segments.py CONFIG.json [--overwrite]`` and
``python 03_predict/05_extract_segmentation.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from funlib.geometry import Coordinate, Roi

from .config import ConfigError
from .graph import check_graph_of, check_reachable, graph_exists, read_graph_arrays
from .luts import (
    all_thresholds,
    apply_lut,
    load_lut,
    lut_digest,
    lut_path,
    save_lut,
    segmentation_dataset,
    threshold_name,
)  # fmt: skip
from .run_config import RunConfig
from .steps import AGGLOMERATE

if TYPE_CHECKING:  # step 5 imports the blockwise machinery (daisy, zarr) where it starts: step 4 runs without it
    from .blockwise import BlockwiseResult
    from .data import Volume

# ---- connected components -----------------------------------------------------------------------------------------


def connected_components(
    nodes: np.ndarray, edges: np.ndarray, scores: np.ndarray, threshold: float
) -> np.ndarray:
    """The segment of every node: connected components over the edges whose score is not > threshold, compared
    as float32 (the original's union-find takes float scores and a float threshold).

    Args:
        nodes: (N,) unique fragment ids, all ≥ 1.
        edges: (E, 2) fragment-id pairs; edges to ids that are not in ``nodes`` are skipped.
        scores: (E,) merge scores; NaN (no score) joins at every threshold, as in the original (NaN > t is false).
        threshold: the merge threshold.

    Returns:
        (N,) uint64 segment ids: the smallest fragment id of each node's component (so never 0).
    """
    nodes = np.asarray(nodes, dtype=np.uint64)
    if nodes.size == 0:
        return np.zeros(0, np.uint64)
    if np.any(nodes == 0):
        raise ValueError("fragment id 0 (background) cannot be a node")
    order = np.argsort(nodes, kind="stable")
    sorted_nodes = nodes[order]
    edges = np.asarray(edges, dtype=np.uint64).reshape(-1, 2)
    # float32 on both sides, as the original; NaN > t is false: united, as the original
    keep = ~(np.asarray(scores, dtype=np.float32) > np.float32(threshold))
    # one endpoint at a time, indices as int32 where they fit: 10^8 edges stay within a few GB of temporaries
    index_type = np.int32 if len(nodes) < 2**31 else np.int64
    iu, known = _node_indices(sorted_nodes, edges, keep, 0, index_type)
    iv, found = _node_indices(sorted_nodes, edges, keep, 1, index_type)
    known &= found
    del found, keep
    if not known.all():
        iu, iv = iu[known], iv[known]
    del known
    roots = _smallest_in_component(len(nodes), iu, iv)
    segments = np.empty(len(nodes), np.uint64)
    segments[order] = sorted_nodes[roots]  # the nodes are sorted: the smallest index is the smallest id
    return segments


def _node_indices(
    sorted_nodes: np.ndarray, edges: np.ndarray, keep: np.ndarray, column: int, index_type: type
) -> tuple[np.ndarray, np.ndarray]:
    """The index into ``sorted_nodes`` of endpoint ``column`` of each kept edge, and whether that node exists."""
    ids = edges[keep, column]
    at = np.searchsorted(sorted_nodes, ids)
    np.clip(at, 0, len(sorted_nodes) - 1, out=at)
    found = sorted_nodes[at] == ids
    del ids
    return at.astype(index_type, copy=False), found


def _smallest_in_component(n: int, iu: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """For each of ``n`` nodes, the smallest node index of its connected component over the edges ``(iu, iv)``:
    vectorised union-find (every root hooks under the smallest root it has an edge to, then pointer jumping), a few
    numpy passes per round instead of scipy's sparse graph (whose import alone costs the step ~0.3 s)."""
    parent = np.arange(n, dtype=iu.dtype)
    while True:
        ru, rv = parent[iu], parent[iv]  # parent is compressed: these are the endpoints' roots
        apart = ru != rv
        if not apart.any():
            return parent
        np.minimum.at(parent, np.maximum(ru, rv)[apart], np.minimum(ru, rv)[apart])  # parent[x] ≤ x: no cycles
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand


def _read_graph(config: RunConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(nodes, edges, scores)`` of the region graph (nodes sorted; NaN for a missing score), read in chunks into
    arrays (:func:`lsd_nm.graph.read_graph_arrays`)."""
    return read_graph_arrays(config.db_location)


def _edges_digest(edges: np.ndarray, scores: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(edges, dtype=np.uint64).tobytes())
    digest.update(np.ascontiguousarray(scores, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _check_agglomerated(config: RunConfig) -> None:
    """The region graph's edges must exist and come from ``config.merge_function``."""
    check_reachable(config.db_location)
    if not graph_exists(config.db_location):
        raise ConfigError(f"db '{config.db_location}': no region graph there (run 02_extract_fragments first)")
    check_graph_of(config)
    record = AGGLOMERATE.read_record(config)
    if record is None:
        raise ConfigError(f"the region graph '{config.db_location}' has no edges yet (run 03_agglomerate first)")
    made_with = record.get("merge_function")
    if made_with != config.merge_function:
        raise ConfigError(
            f"the region graph's edges come from merge_function '{made_with}', not '{config.merge_function}'; "
            "run 03_agglomerate with it first"
        )


def find_segments(config: RunConfig, overwrite: bool = False, progress: bool = True) -> dict[float, Path]:
    """Write the fragment → segment LUT of every threshold (sweep and ``extract_thresholds``).

    Args:
        config: the run config (``out_file``, ``db``, ``merge_function``, ``thresholds``, ``extract_thresholds``).
        overwrite: recompute LUTs that exist (needed when they were made from other edges).
        progress: show a progress bar over the thresholds.

    Returns:
        Threshold → LUT path, for every threshold (written now or before).

    Raises:
        ConfigError: no region graph or no edges of ``merge_function``, colliding threshold names, LUTs made from
            other edges without ``overwrite`` — before any LUT is written.
    """
    from tqdm import tqdm

    thresholds = all_thresholds(config)
    _check_agglomerated(config)
    nodes, edges, scores = _read_graph(config)
    nodes = nodes[nodes != 0]
    digest = _edges_digest(edges, scores)
    paths = {t: lut_path(config, t) for t in thresholds}
    todo = []
    for t, path in paths.items():
        if path.is_file() and not overwrite:
            with np.load(path) as f:
                made_from = str(f["edges_sha256"]) if "edges_sha256" in f.files else None
            if made_from != digest:
                raise ConfigError(f"LUT '{path}' was made from another region graph; pass --overwrite to replace it")
            continue
        todo.append(t)
    for t in tqdm(todo, desc="find segments", unit="threshold", disable=not progress):
        save_lut(paths[t], nodes, connected_components(nodes, edges, scores, t), digest)
    return paths


# ---- extract segmentation -----------------------------------------------------------------------------------------


SERIAL_BELOW = 32
"""Segmentations of fewer blocks than this are written by this process even when the run has more workers: a block
costs ~20-40 ms (read the fragments, map them through each LUT, write), starting workers ~0.3 s locally and a
queue's wait on a cluster."""


@dataclass(frozen=True)
class SegmentationJob:
    """Everything a worker needs (picklable)."""

    fragments: Volume
    outputs: tuple[tuple[Path, Path], ...]
    """``(segmentation dataset, LUT file)`` of every threshold written in this task."""


def _setup_worker(job: SegmentationJob) -> dict[str, Any]:
    import zarr

    outputs = []
    for segmentation, lut in job.outputs:
        with np.load(lut) as f:
            outputs.append((zarr.open_array(segmentation, mode="r+"), (f["fragments"], f["segments"])))
    return {"fragments": job.fragments.open("r"), "outputs": outputs}


def process_block(job: SegmentationJob, block, resources: dict[str, Any]) -> None:
    """Relabel the fragments of this block's write ROI through every threshold's LUT into its segmentation (the
    fragments are read once; each LUT maps only the block's distinct ids)."""
    import fastremap

    from .data import voxel_slices

    where = voxel_slices(job.fragments, block.write_roi)
    fragments = resources["fragments"][where]
    ids, inverse = fastremap.unique(fragments, return_inverse=True)  # np.unique's result, ~8 times faster
    inverse = inverse.reshape(fragments.shape)
    for segmentation, lut in resources["outputs"]:
        segmentation[where] = apply_lut(ids, lut).astype(np.uint64)[inverse]


def _check_block_size(config: RunConfig, voxel_size: Coordinate) -> Coordinate:
    """``config.block_size`` (nm), checked to be a positive multiple of ``voxel_size``."""
    block = Coordinate(config.block_size)
    if any(b <= 0 or b % v for b, v in zip(block, voxel_size)):
        raise ConfigError(
            f"block_size {tuple(block)} nm is not a positive multiple of the voxel size {tuple(voxel_size)} nm"
        )
    return block


def extract_segmentation(
    config: RunConfig, overwrite: bool = False, progress: bool = True
) -> dict[float, BlockwiseResult]:
    """Write ``volumes/segmentation_<int(round(100·t))>`` for every t in ``extract_thresholds``, blockwise.

    Args:
        config: the run config (``out_file``, ``merge_function``, ``extract_thresholds``, ``block_size``,
            ``num_workers``, ``worker_command``).
        overwrite: replace segmentations made from another LUT (and start them over).
        progress: show daisy's progress bar.

    Returns:
        Threshold → the blocks processed and skipped.

    Raises:
        ConfigError: missing fragments, a missing LUT, a bad block size, a segmentation from another LUT without
            ``overwrite`` — all before anything is written.
    """
    from .blockwise import BlockwiseResult, OutputDataset, grid_aligned, processing_roi, run_job
    from .data import LABELS_COMPRESSOR, SEGMENTATION_SETTINGS, open_dataset, write_text

    out_file = config.out_path
    fragments = open_dataset(config.fragments_path, config.fragments_dataset, "fragments (run 02_extract_fragments first)")
    block = _check_block_size(config, fragments.voxel_size)
    # with roi_offset/roi_shape only the region's blocks (on the chunk grid): outside it the fragments are 0
    total = grid_aligned(processing_roi(config, fragments), fragments.roi.offset, block)
    thresholds = sorted({round(float(t), 10) for t in config.extract_thresholds})
    # every LUT must exist, and no segmentation of another LUT be in the way, before anything is written
    outputs = {
        t: OutputDataset(
            out_file / segmentation_dataset(t), fragments.roi, fragments.voxel_size,
            chunk_shape=tuple(b // v for b, v in zip(block, fragments.voxel_size)), dtype=np.uint64,
            settings_attr=SEGMENTATION_SETTINGS,
            settings={"lut": lut_path(config, t).name, "lut_sha256": lut_digest(load_lut(config, t)), "block_size": list(block)},
            refused_as="another LUT or block size", compressor=LABELS_COMPRESSOR,
        )
        for t in thresholds
    }  # fmt: skip
    reusable = {t: output.reusable(overwrite) for t, output in outputs.items()}
    grid = [-(-s // b) for s, b in zip(total.shape, block)]
    blocks = int(np.prod(grid))

    # a segmentation is complete once its task finished every block (a marker beside the done blocks); the others
    # are written together, one task reading each block's fragments once, resumable while that set stays the same
    complete = {t: _complete_marker(config, t) for t in thresholds}
    for t, output in outputs.items():
        if not reusable[t]:
            complete[t].unlink(missing_ok=True)
    todo = [t for t in thresholds if not (reusable[t] and complete[t].is_file())]
    results = {t: BlockwiseResult(total=blocks, processed=0, skipped=blocks) for t in thresholds if t not in todo}
    if not todo:
        return results
    task = "segmentation_" + "_".join(str(threshold_name(t)) for t in todo)
    tracking = config.blocks_dir / task
    for t in todo:
        if not reusable[t]:  # recreated: the task's done blocks no longer hold for it
            outputs[t].create(tracking)
    job = SegmentationJob(fragments, tuple((outputs[t].path, lut_path(config, t)) for t in todo))
    block_roi = Roi((0, 0, 0), block)
    if blocks < SERIAL_BELOW:  # cheaper here than starting workers
        config = config.model_copy(update={"num_workers": 1, "worker_command": []})
    result = run_job(
        task, total, block_roi, block_roi, job, process_block, _setup_worker, config, tracking, progress, preload=(),
    )  # fmt: skip
    for t in todo:
        write_text(complete[t], task + "\n")
        results[t] = result
    return {t: results[t] for t in thresholds}


def _complete_marker(config: RunConfig, threshold: float) -> Path:
    """The file that says ``segmentation_<threshold>`` has every block (written after its task finished)."""
    return config.blocks_dir / f"segmentation_{threshold_name(threshold)}.complete"
