"""Step 6 of ``03_predict``: evaluate a run — score every merge threshold against dense labels and skeletons, write
``<out_file stem>.scores.csv``/``.scores.json`` and ``.voi_vs_threshold.png`` (the metrics: :mod:`lsd_nm.metrics`).

Run: ``python 03_predict/06_evaluate.py CONFIG.json``
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from funlib.geometry import Roi

from .blockwise import processing_roi
from .config import ConfigError
from .data import FRAGMENTS, Volume, atomic_path, open_dataset, read_checked, voxel_slices, write_text
from .graph import check_reachable, graph_exists, open_graph, read_edges
from .luts import all_thresholds, load_lut
from .metrics import best_row, min_cut_metric, sample_segments, sweep_thresholds
from .run_config import RunConfig
from .skeletons import crop_skeletons, read_skeletons

# the first columns of scores.csv, in this order; any other keys follow in order of first appearance
SCORE_COLUMNS = ("threshold", "voi_split", "voi_merge", "voi_sum", "arand", "erl", "normalized_erl")


def _plain(value):
    """A JSON-ready Python value: numpy scalars become Python numbers, NaN/inf become None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_scores(rows: Sequence[Mapping[str, float]], out_dir: Path, name: str = "scores") -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>.json`` (default ``scores.csv`` / ``scores.json``), atomically.

    The CSV has one line per row, columns ``threshold, voi_split, voi_merge, voi_sum, arand, erl, normalized_erl``
    (those present) followed by every other key in order of first appearance; a missing value is an empty cell.
    The JSON is ``{"rows": [...], "best": row with the lowest voi_sum or null}``. ``voi_sum`` is added where a row
    has ``voi_split`` and ``voi_merge`` but no ``voi_sum``.

    Args:
        rows: One dict per threshold.
        out_dir: The folder to write into (created if missing), e.g. beside ``out_file``.
        name: The file stem.

    Returns:
        ``(csv path, json path)``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{k: _plain(v) for k, v in r.items()} for r in rows]
    for r in rows:
        if "voi_sum" not in r and r.get("voi_split") is not None and r.get("voi_merge") is not None:
            r["voi_sum"] = r["voi_split"] + r["voi_merge"]
    keys = list(dict.fromkeys(k for r in rows for k in r))
    columns = [k for k in SCORE_COLUMNS if k in keys] + [k for k in keys if k not in SCORE_COLUMNS]

    csv_path = out_dir / f"{name}.csv"
    json_path = out_dir / f"{name}.json"
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    write_text(json_path, json.dumps({"rows": rows, "best": best_row(rows)}, indent=2) + "\n")
    return csv_path, json_path


def plot_voi(rows: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Plot VOI split against VOI merge over the thresholds (the paper's curves), each point labelled by threshold.

    The best threshold (lowest VOI sum) is circled. Uses matplotlib's object API (no pyplot state, no display).

    Args:
        rows: Rows with ``threshold``, ``voi_split`` and ``voi_merge``.
        path: The PNG to write, e.g. ``voi_vs_threshold.png``.

    Returns:
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted((r for r in rows if r.get("voi_split") is not None), key=lambda r: r["threshold"])
    fig = Figure(figsize=(6, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    split = [r["voi_split"] for r in rows]
    merge = [r["voi_merge"] for r in rows]
    ax.plot(split, merge, "-o", markersize=3)
    for r in rows:
        ax.annotate(f"{r['threshold']:.2f}", (r["voi_split"], r["voi_merge"]), fontsize=6, textcoords="offset points",
                    xytext=(3, 3))  # fmt: skip
    best = best_row([{**r, "voi_sum": r["voi_split"] + r["voi_merge"]} for r in rows])
    if best is not None:
        ax.plot([best["voi_split"]], [best["voi_merge"]], "o", markersize=10, markerfacecolor="none", color="C3",
                label=f"best: t = {best['threshold']:.2f}, VOI = {best['voi_sum']:.3f}")  # fmt: skip
        ax.legend(loc="upper right")
    ax.set_xlabel("VOI split (bits)")
    ax.set_ylabel("VOI merge (bits)")
    ax.set_title("VOI over merge thresholds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def scores_paths(out_file: Path) -> tuple[Path, Path, Path]:
    """Where a run's scores go, beside ``out_file``: ``<stem>.scores.csv``, ``<stem>.scores.json`` and
    ``<stem>.voi_vs_threshold.png``, with ``<stem>`` = out_file's name without ``.zarr`` (as the region graph's
    ``<stem>.rag.db``), so that several runs in one folder keep their own scores."""
    out_file = Path(out_file)
    stem = out_file.name.removesuffix(".zarr")
    return (
        out_file.with_name(f"{stem}.scores.csv"),
        out_file.with_name(f"{stem}.scores.json"),
        out_file.with_name(f"{stem}.voi_vs_threshold.png"),
    )


MIN_CUT_PREFIX = "min_cut_"
"""Prefix of the min-cut keys in a row of scores: ``min_cut_splits_needed``, ``min_cut_merges_needed``,
``min_cut_unsplittable`` (the keys of :func:`min_cut_metric`)."""


def _read_region_graph_edges(config: RunConfig) -> list[tuple[int, int, float | None]]:
    """The region graph's edges ``(u, v, merge_score)`` (None: never merged); a one-line ConfigError if there is
    no region graph."""
    check_reachable(config.db_location)
    if not graph_exists(config.db_location):
        raise ConfigError(f"db '{config.db_location}': no region graph there (the min-cut metric needs it)")
    db = open_graph(config.db_location, "r")
    try:
        return [(u, v, score) for u, v, score, _ in read_edges(db)]
    finally:
        db.close()


def min_cut_scores(
    edges: Sequence[tuple[int, int, float | None]],
    lut: tuple[np.ndarray, np.ndarray],
    node_fragments: np.ndarray,
    skeletons: Mapping[str, np.ndarray],
) -> dict[str, int]:
    """:func:`min_cut_metric` of one threshold, its keys prefixed with ``min_cut_``.

    Args:
        edges: the region graph's edges ``(u, v, merge_score)``.
        lut: the threshold's ``(fragments, segments)`` LUT.
        node_fragments: the fragment under each skeleton node.
        skeletons: the skeleton arrays (``neuron_ids``, ``positions``), one entry per node as ``node_fragments``.
    """
    fragment_ids, segment_ids = (np.asarray(x) for x in lut)
    segment_of_fragment = dict(zip(fragment_ids.tolist(), segment_ids.tolist()))
    scores = min_cut_metric(edges, node_fragments, segment_of_fragment, skeletons["neuron_ids"], skeletons["positions"])
    return {f"{MIN_CUT_PREFIX}{k}": v for k, v in scores.items()}


def check_ground_truth(
    config: RunConfig, fragments: Volume
) -> tuple[Volume, Volume | None, Roi | None, dict[str, np.ndarray] | None]:
    """The checks of step 6 that need no fragment ids (``fragments``: the existing ones, or where they will be):
    something to evaluate against, the dense labels on the fragments' grid and overlapping the evaluated region, the
    skeletons readable with an edge inside it.

    Returns:
        ``(region, gt, dense_roi, skeletons)``: the evaluated region (a Volume over the fragments), the dense ground
        truth and its ROI within the region (or None, None), the skeletons cropped to the region (or None).

    Raises:
        ConfigError: the first problem, as one line.
    """
    if config.gt_dataset is None and config.gt_skeletons is None:
        raise ConfigError("nothing to evaluate against: set gt_file and gt_dataset, and/or gt_skeletons")
    if config.min_cut and config.gt_skeletons is None:
        raise ConfigError("min_cut needs gt_skeletons (the min-cut metric separates skeletons)")
    vs = fragments.voxel_size
    region = Volume(fragments.path, processing_roi(config, fragments), vs)
    gt = dense_roi = None
    if config.gt_dataset is not None:
        gt = open_dataset(config.path(config.gt_file), config.gt_dataset, "ground truth")
        if gt.voxel_size != vs:
            raise ConfigError(
                f"ground truth '{gt.path}' has voxel size {tuple(gt.voxel_size)} nm, the fragments {tuple(vs)} nm"
            )
        if any((a - b) % v for a, b, v in zip(gt.roi.offset, fragments.roi.offset, vs)):
            raise ConfigError(
                f"ground truth '{gt.path}' (offset {tuple(gt.roi.offset)} nm) is not on the fragments' voxel grid"
            )
        dense_roi = gt.roi.intersect(region.roi)
        if dense_roi.empty:
            raise ConfigError(f"ground truth {gt.roi} and fragments {region.roi} do not overlap")
    skeletons = None
    if config.gt_skeletons is not None:
        path = config.path(config.gt_skeletons)
        if not path.is_file():
            raise ConfigError(f"gt_skeletons '{path}' does not exist")
        try:
            skeletons = read_skeletons(path)
        except (KeyError, ValueError, OSError) as e:
            raise ConfigError(f"gt_skeletons '{path}': not a skeletons .npz ({type(e).__name__}: {e})") from None
        skeletons = crop_skeletons(skeletons, region.roi.begin, region.roi.end)
        if len(skeletons["edges"]) == 0:
            raise ConfigError(f"gt_skeletons '{path}': no skeleton edge lies inside the fragments' ROI {region.roi}")
    return region, gt, dense_roi, skeletons


def evaluate_run(config: RunConfig, progress: bool = True) -> dict:
    """Score a run at every threshold (sweep and ``extract_thresholds``) without writing segmentations.

    The evaluated region is ``roi_offset``/``roi_shape`` if the config gives them (inside the fragments, on their
    voxel grid), else all the fragments. The fragments of the region are read once; each threshold relabels them in
    memory through its LUT (written by ``04_find_segments``). Dense metrics use ``gt_file``/``gt_dataset``, both
    cropped to their common ROI within the region (same voxel size, aligned grids). Skeleton metrics use
    ``gt_skeletons``: the nodes inside the region, the fragment under each node sampled once and then mapped through
    each LUT. The best threshold has the lowest VOI sum: dense VOI when there are dense labels, else site VOI.

    With ``min_cut`` (and skeletons), the min-cut metric (:func:`min_cut_metric` on the region graph, slow on large
    graphs: the paper computed it only on ROIs up to ~16,000 µm³) is computed **for the best threshold only**: its row
    gets
    ``min_cut_splits_needed``, ``min_cut_merges_needed`` and ``min_cut_unsplittable``. The other rows do not have
    these keys, so ``scores.csv`` has the three columns (last) with empty cells in every other row, and in
    ``scores.json`` they appear in the best threshold's row and in ``best``.

    Writes :func:`scores_paths`.

    Args:
        config: the run config (``out_file``, ``db``, ``merge_function``, ``thresholds``, ``extract_thresholds``,
            ``roi_offset``/``roi_shape``, ``gt_file``, ``gt_dataset``, ``gt_skeletons``, ``min_cut``).
        progress: show a progress bar over the thresholds.

    Returns:
        ``{"rows": [...], "best": row, "csv": path, "json": path, "png": path}``.

    Raises:
        ConfigError: nothing to evaluate against, missing fragments/ground truth/skeletons/LUTs/region graph,
            mismatched voxel sizes or grids, a ROI outside the fragments, no common ROI — all before anything is
            written.
    """
    from tqdm import tqdm

    out_file = config.out_path
    fragments = open_dataset(out_file, FRAGMENTS, "fragments (run 02_extract_fragments first)")
    vs = fragments.voxel_size
    region, gt, dense_roi, skeletons = check_ground_truth(config, fragments)
    truth = read_checked(gt.open("r"), voxel_slices(gt, dense_roi), gt.path) if gt is not None else None
    edges = None
    thresholds = all_thresholds(config)
    luts = {t: load_lut(config, t) for t in thresholds}  # every LUT must exist before we start
    if config.min_cut:
        edges = _read_region_graph_edges(config)

    volume = read_checked(fragments.open("r"), voxel_slices(fragments, region.roi), fragments.path)
    node_fragments = None
    if skeletons is not None:
        node_fragments = sample_segments(skeletons["positions"], volume, vs, region.roi.offset)
    dense_fragments = None
    if truth is not None:
        dense_fragments = volume[voxel_slices(region, dense_roi)]
    rows = []
    for t in tqdm(thresholds, desc="evaluate", unit="threshold", disable=not progress):
        rows += sweep_thresholds(
            {t: luts[t]}, fragments=dense_fragments, truth=truth, skeletons=skeletons, node_fragments=node_fragments
        )
    best = best_row(rows)
    if config.min_cut and best is not None:
        row = next(r for r in rows if r["threshold"] == best["threshold"])
        row.update(min_cut_scores(edges, luts[best["threshold"]], node_fragments, skeletons))
        best = dict(row)
    csv_path, json_path, png_path = scores_paths(out_file)
    write_scores(rows, csv_path.parent, name=csv_path.name.removesuffix(".csv"))
    plot_voi(rows, png_path)
    return {"rows": rows, "best": best, "csv": csv_path, "json": json_path, "png": png_path}
