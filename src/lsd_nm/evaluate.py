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
from .data import Volume, atomic_path, open_dataset, read_at_positions, read_checked, read_on_grid, voxel_slices, write_text
from .graph import check_graph_of, check_reachable, graph_exists, read_graph_arrays
from .luts import all_thresholds, apply_lut, load_lut
from .metrics import RegionGraphEdges, best_row, face_split_rates, min_cut_metric, sweep_thresholds
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


def write_scores(
    rows: Sequence[Mapping[str, float]], out_dir: Path, name: str = "scores", extra: Mapping[str, object] | None = None
) -> tuple[Path, Path]:
    """Write ``<name>.csv`` and ``<name>.json`` (default ``scores.csv`` / ``scores.json``), atomically.

    The CSV has one line per row, columns ``threshold, voi_split, voi_merge, voi_sum, arand, erl, normalized_erl``
    (those present) followed by every other key in order of first appearance; a missing value is an empty cell.
    The JSON is ``{"rows": [...], "best": row with the lowest voi_sum or null}``. ``voi_sum`` is added where a row
    has ``voi_split`` and ``voi_merge`` but no ``voi_sum``.

    Args:
        rows: One dict per threshold.
        out_dir: The folder to write into (created if missing), e.g. beside ``out_file``.
        name: The file stem.
        extra: More keys of the JSON (e.g. ``threshold_rule``), after ``rows`` and ``best``.

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
    write_text(json_path, json.dumps({"rows": rows, "best": best_row(rows), **(extra or {})}, indent=2) + "\n")
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


def run_scores_paths(config: RunConfig) -> tuple[Path, Path, Path]:
    """Where step 6 writes for this config: :func:`scores_paths` of out_file, or ``<scores_stem>.scores.csv``,
    ``.scores.json`` and ``.voi_vs_threshold.png`` when the config sets ``scores_stem``."""
    if config.scores_stem is None:
        return scores_paths(config.out_path)
    stem = config.path(config.scores_stem)
    return tuple(stem.with_name(stem.name + suffix) for suffix in (".scores.csv", ".scores.json", ".voi_vs_threshold.png"))  # type: ignore[return-value]


def fixed_threshold(config: RunConfig) -> tuple[float, str]:
    """The threshold ``threshold_from`` fixes (the best row of another evaluation's scores.json) and the rule, in
    words, for the report.

    Raises:
        ConfigError: the file is missing, not JSON, or has no best threshold.
    """
    path = config.path(config.threshold_from)
    if not path.is_file():
        raise ConfigError(f"threshold_from '{path}' does not exist (evaluate the validation run first)")
    try:
        best = json.loads(path.read_text()).get("best")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise ConfigError(f"threshold_from '{path}': not a scores.json of 06_evaluate ({type(e).__name__})") from None
    if not isinstance(best, dict) or not isinstance(best.get("threshold"), int | float):
        raise ConfigError(f"threshold_from '{path}': it has no best threshold (a scores.json of 06_evaluate has 'best')")
    threshold = round(float(best["threshold"]), 10)
    return threshold, f"threshold {threshold} fixed by {path} (the lowest VOI sum there), not chosen on these scores"


def _ignore_labels(truth: np.ndarray, ignore: Sequence[int], mask: np.ndarray | None) -> np.ndarray:
    """Ground truth with the ignored labels and everything outside the mask set to 0 (which rand_voi skips)."""
    if not ignore and mask is None:
        return truth
    truth = np.array(truth)
    if ignore:
        truth[np.isin(truth, np.asarray(ignore, dtype=truth.dtype))] = 0
    if mask is not None:
        truth[mask == 0] = 0
    return truth


def _eval_mask(config: RunConfig) -> Volume | None:
    if config.eval_mask_file is None:
        return None
    return open_dataset(config.path(config.eval_mask_file), config.eval_mask_dataset, "eval_mask")


def evaluation_skeletons(config: RunConfig, roi) -> dict[str, np.ndarray]:
    """The skeleton pieces step 6 scores in ``roi`` (:func:`lsd_nm.skeletons.crop_skeletons`): cropped, masked when
    ``skeleton_masked`` (the file's ``masked_<skeleton_roi>_masked``, else ``eval_mask`` at the nodes), relabelled to
    the file's ``component_id_<key>`` for this ROI where it has one, else to connected components.

    Raises:
        ConfigError: missing or unreadable skeletons, no mask for ``skeleton_masked``, components that disagree with
            the edges, no skeleton edge left in the ROI.
    """
    path = config.path(config.gt_skeletons)
    if not path.is_file():
        raise ConfigError(f"gt_skeletons '{path}' does not exist")
    try:
        skeletons = read_skeletons(path)
    except (KeyError, ValueError, OSError) as e:
        raise ConfigError(f"gt_skeletons '{path}': not a skeletons .npz ({type(e).__name__}: {e})") from None
    key = None
    if config.skeleton_roi is not None:
        key = f"{config.skeleton_roi}_masked" if config.skeleton_masked else config.skeleton_roi
    node_mask = components = None
    own_mask = key is not None and f"masked_{key}" in skeletons
    if config.skeleton_masked:
        if own_mask:
            node_mask = skeletons[f"masked_{key}"]
        elif config.eval_mask_file is not None:
            node_mask = read_at_positions(_eval_mask(config), skeletons["positions"]) != 0
        else:
            have = sorted(k for k in skeletons if k.startswith("masked_")) or ["none"]
            wanted = f"masked_{key}" if key else "a masked_<skeleton_roi>_masked array (set skeleton_roi)"
            raise ConfigError(
                f"skeleton_masked: gt_skeletons '{path}' has no {wanted} (it has: {', '.join(have)}) and no "
                "eval_mask_file/eval_mask_dataset is given"
            )
    if key is not None and f"component_id_{key}" in skeletons and (own_mask or not config.skeleton_masked):
        components = skeletons[f"component_id_{key}"]
    cropped = crop_skeletons(
        skeletons, roi.begin, roi.end, node_mask=node_mask, component_ids=components,
        source=f"gt_skeletons '{path}' component_id_{key}",
    )  # fmt: skip
    if len(cropped["edges"]) == 0:
        raise ConfigError(f"gt_skeletons '{path}': no skeleton edge lies inside the fragments' ROI {roi}")
    return cropped


MIN_CUT_PREFIX = "min_cut_"
"""Prefix of the min-cut keys in a row of scores: ``min_cut_splits_needed``, ``min_cut_merges_needed``,
``min_cut_unsplittable`` (the keys of :func:`min_cut_metric`)."""


def _read_region_graph_edges(config: RunConfig) -> RegionGraphEdges:
    """The region graph's edges as arrays ``(pairs, merge_scores)`` (NaN: never merged), read in chunks without a
    Python object per edge (:func:`lsd_nm.graph.read_graph_arrays`); a one-line ConfigError if there is no region
    graph."""
    check_reachable(config.db_location)
    if not graph_exists(config.db_location):
        raise ConfigError(f"db '{config.db_location}': no region graph there (the min-cut metric needs it)")
    check_graph_of(config)
    _, pairs, scores = read_graph_arrays(config.db_location)
    return pairs, scores


def min_cut_scores(
    edges: RegionGraphEdges,
    lut: tuple[np.ndarray, np.ndarray],
    threshold: float,
    node_fragments: np.ndarray,
    skeletons: Mapping[str, np.ndarray],
) -> dict[str, int]:
    """:func:`min_cut_metric` of one threshold, its keys prefixed with ``min_cut_``.

    Args:
        edges: the region graph's edges (:data:`~lsd_nm.metrics.RegionGraphEdges`).
        lut: the threshold's ``(fragments, segments)`` LUT.
        threshold: the threshold (only edges with a score ≤ it are cut).
        node_fragments: the fragment under each skeleton node.
        skeletons: the skeleton arrays as scored, one entry per node as ``node_fragments``.
    """
    scores = min_cut_metric(edges, lut, threshold, node_fragments, skeletons)
    return {f"{MIN_CUT_PREFIX}{k}": v for k, v in scores.items()}


SEAM_RATIO = 1.5
"""A block-face false-split rate above this many times the median rate of the other planes is called a seam."""

SEAM_PREFIX = "seam_"
"""Prefix of the seam keys in the best row of scores: ``seam_<axis>_face_rate``, ``seam_<axis>_median_rate``,
``seam_<axis>_max_rate``, ``seam_<axis>_ratio`` and ``seam_<axis>_faces`` (see :func:`seam_check`)."""

SEAM_KEYS = ("face_rate", "median_rate", "max_rate", "ratio", "faces")


def block_faces(
    origin: Sequence[int], block_size: Sequence[int], roi: Roi, voxel_size: Sequence[int]
) -> list[list[int]]:
    """The planes between write blocks inside ``roi``, per axis, as voxel indices of an array over ``roi``.

    The blocks tile space from ``origin`` in steps of ``block_size`` (the post-processing steps' grid:
    :func:`lsd_nm.blockwise.block_geometry` lays its write blocks from the volume's offset). A face at ``p`` nm is
    given as the index of the first section after it, ``(p - roi.begin) / voxel_size``; faces on ``roi``'s border
    are not inside it.

    Args:
        origin: the grid's origin (nm), the offset of the volume the blocks were laid over.
        block_size: the write blocks' size (nm).
        roi: the evaluated region (nm), on the voxel grid of ``origin``.
        voxel_size: nm per voxel.

    Returns:
        Per axis (z, y, x), the sorted face indices (empty: one block along that axis).
    """
    faces = []
    for o, s, b, e, v in zip(origin, block_size, roi.begin, roi.end, voxel_size):
        first = o + -((o - b) // s) * s  # the first grid plane at or after b
        if first == b:
            first += s
        faces.append([(p - b) // v for p in range(first, e, s)])
    return faces


def seam_check(truth: np.ndarray, segmentation: np.ndarray, faces: Sequence[Sequence[int]]) -> dict:
    """The block-face false-split rates of ``segmentation`` against the other planes (:func:`face_split_rates`),
    with a verdict per axis: a seam when the faces' rate exceeds :data:`SEAM_RATIO` times the median of the other
    planes (or is above 0 where every other plane has none).

    Args:
        truth: (z, y, x) labels, 0 ignored.
        segmentation: (z, y, x) segment ids.
        faces: per axis, the face indices (:func:`block_faces`).

    Returns:
        ``{"axes": [...], "one_block": [...], "unmeasured": [...]}``: per axis with faces and labelled pairs on them
        and elsewhere, a row of :func:`face_split_rates` with ``"seam"`` (bool) added; the axes without a face (one
        block along them); the axes with faces but no labelled neighbour pairs on them or elsewhere.
    """
    rows = face_split_rates(truth, segmentation, faces)
    for row in rows:
        median, face = row["median_rate"], row["face_rate"]
        row["seam"] = bool(face > SEAM_RATIO * median if median > 0 else face > 0)
    measured = {row["axis"] for row in rows}
    one_block = ["zyx"[a] for a, f in enumerate(faces) if not f]
    unmeasured = ["zyx"[a] for a, f in enumerate(faces) if f and "zyx"[a] not in measured]
    return {"axes": rows, "one_block": one_block, "unmeasured": unmeasured}


def seam_scores(seams: Mapping) -> dict[str, float | int]:
    """The numbers of :func:`seam_check` as flat keys of a scores row: ``seam_<axis>_<key>`` for each measured axis
    and each of :data:`SEAM_KEYS`; a ratio without a median to divide by is None (NaN would compare unequal to
    itself in the rows)."""
    return {f"{SEAM_PREFIX}{row['axis']}_{k}": _plain(row[k]) for row in seams["axes"] for k in SEAM_KEYS}


def seam_lines(seams: Mapping) -> list[str]:
    """The seam check in words: one line per measured axis, e.g. ``seams: y faces 13.2 % false splits vs 3.4 %
    median elsewhere (3.9x) — a seam``, and one line for the axes of a single block, one for those not measured."""
    lines = []
    for row in seams["axes"]:
        ratio = f"{row['ratio']:.1f}x" if math.isfinite(row["ratio"]) else "none elsewhere"
        lines.append(
            f"seams: {row['axis']} faces {100 * row['face_rate']:.1f} % false splits vs "
            f"{100 * row['median_rate']:.1f} % median elsewhere ({ratio}) — {'a seam' if row['seam'] else 'no seam'}"
        )
    if seams["one_block"]:
        lines.append(f"seams: one block along {', '.join(seams['one_block'])}: no block face to check there")
    if seams["unmeasured"]:
        lines.append(f"seams: no labelled neighbours on or off the block faces along {', '.join(seams['unmeasured'])}")
    return lines


def evaluation_lines(result: Mapping) -> list[str]:
    """The evaluation (see :func:`evaluate_run`) in words, as step 6 and ``segment`` print it: the best threshold's
    scores, the rule that chose it, the seam check (:func:`seam_lines`) and the files written."""
    best = result["best"]
    keys = [k for k in ("threshold", "voi_split", "voi_merge", "voi_sum", "arand", "erl", "normalized_erl",
                        f"{MIN_CUT_PREFIX}splits_needed", f"{MIN_CUT_PREFIX}merges_needed")
            if best is not None and k in best]  # fmt: skip
    summary = ", ".join(f"{k} {best[k]:.4g}" for k in keys) if best else "no threshold scored"
    lines = [f"best: {summary}", f"rule: {result['rule']}"]
    lines += seam_lines(result["seams"]) if result.get("seams") else []
    return lines + [f"wrote {result['csv']}, {result['json']}, {result['png']}"]


def roi_background_sites(config: RunConfig, fragments: Volume, roi: Roi) -> int:
    """The original's ``number_of_background_sites``: the skeleton nodes inside ``roi`` on fragment 0, every node of
    the file counted whatever the mask (its site → fragment LUT reads all nodes of each block)."""
    positions = np.asarray(read_skeletons(config.path(config.gt_skeletons))["positions"], np.float64).reshape(-1, 3)
    inside = np.all((positions >= np.asarray(roi.begin)) & (positions < np.asarray(roi.end)), axis=1)
    if not inside.any():
        return 0
    return int(np.count_nonzero(read_at_positions(fragments, positions[inside]) == 0))


def check_ground_truth(
    config: RunConfig, fragments: Volume
) -> tuple[Volume, Volume | None, Roi | None, dict[str, np.ndarray] | None, Volume | None]:
    """The checks of step 6 that need no fragment ids (``fragments``: the existing ones, or where they will be):
    something to evaluate against, the dense labels on the fragments' grid and overlapping the evaluated region, the
    evaluation mask, the skeletons readable with an edge inside the region, the validation run of ``threshold_from``.

    Returns:
        ``(region, gt, dense_roi, skeletons, mask)``: the evaluated region (a Volume over the fragments), the dense
        ground truth and its ROI within the region (or None, None), the skeletons as scored
        (:func:`evaluation_skeletons`, or None), the evaluation mask (or None).

    Raises:
        ConfigError: the first problem, as one line.
    """
    if config.gt_dataset is None and config.gt_skeletons is None:
        raise ConfigError("nothing to evaluate against: set gt_file and gt_dataset, and/or gt_skeletons")
    if config.min_cut and config.gt_skeletons is None:
        raise ConfigError("min_cut needs gt_skeletons (the min-cut metric separates skeletons)")
    if config.skeleton_masked and config.gt_skeletons is None:
        raise ConfigError("skeleton_masked needs gt_skeletons")
    vs = fragments.voxel_size
    region = Volume(fragments.path, processing_roi(config, fragments), vs)
    mask = _eval_mask(config)
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
    skeletons = evaluation_skeletons(config, region.roi) if config.gt_skeletons is not None else None
    if config.threshold_from is not None:
        fixed_threshold(config)
    return region, gt, dense_roi, skeletons, mask


def evaluate_run(config: RunConfig, progress: bool = True) -> dict:
    """Score a run at every threshold (sweep and ``extract_thresholds``) without writing segmentations.

    The evaluated region is ``roi_offset``/``roi_shape`` if the config gives them (inside the fragments, on their
    voxel grid), else all the fragments; the fragments are out_file's ``volumes/fragments``, or ``fragments_dataset``
    of ``fragments_file``. Each threshold relabels them in memory through its LUT (written by ``04_find_segments``).
    Dense metrics use ``gt_file``/``gt_dataset``, both cropped to their common ROI within the region (same voxel
    size, aligned grids), with the labels of ``gt_ignore_ids`` and the voxels outside ``eval_mask`` ignored like 0.
    Skeleton metrics use ``gt_skeletons`` as the paper did (:func:`evaluation_skeletons`): the nodes inside the
    region (and inside the neuropil mask with ``skeleton_masked``), relabelled into the connected components of
    their pieces there; only the fragment under each node is read (the chunks that hold nodes, never the whole
    region), then mapped through each LUT. The best threshold has the lowest VOI sum: dense VOI when there are dense
    labels, else site VOI. With ``threshold_from`` only the threshold that file's evaluation chose is scored (the
    paper's validation → test protocol), with ``score_threshold`` only that threshold, and scores.json states either
    rule as ``threshold_rule``.

    With ``min_cut`` (and skeletons), the min-cut metric (:func:`min_cut_metric` on the region graph, slow on large
    graphs: the paper computed it only on ROIs up to ~16,000 µm³) is computed **for the best threshold only**: its row
    gets
    ``min_cut_splits_needed``, ``min_cut_merges_needed`` and ``min_cut_unsplittable``. The other rows do not have
    these keys, so ``scores.csv`` has the three columns (last) with empty cells in every other row, and in
    ``scores.json`` they appear in the best threshold's row and in ``best``.

    With dense labels, the segmentation of the best threshold gets the seam check (:func:`seam_check`): the
    false-split rate on the planes between the post-processing steps' write blocks (``block_size`` laid from the
    fragments' offset, as :func:`lsd_nm.blockwise.block_geometry` does) against the median of the other planes, per
    axis. Its numbers go into the best threshold's row as ``seam_<axis>_face_rate``, ``…_median_rate``,
    ``…_max_rate``, ``…_ratio`` and ``…_faces`` (empty cells in the other rows of ``scores.csv``), and scores.json
    gets ``seams``: ``threshold``, ``block_size``, ``seam_ratio`` (the limit), ``axes`` (those rows with their
    ``seam`` verdict), ``one_block`` (axes without a face) and ``unmeasured``.

    Writes :func:`run_scores_paths`.

    Args:
        config: the run config (``out_file``, ``fragments_file``/``fragments_dataset``, ``db``, ``merge_function``,
            ``thresholds``, ``extract_thresholds``, ``threshold_from``, ``roi_offset``/``roi_shape``, ``gt_file``,
            ``gt_dataset``, ``gt_ignore_ids``, ``eval_mask_file``/``eval_mask_dataset``, ``gt_skeletons``,
            ``skeleton_roi``, ``skeleton_masked``, ``min_cut``, ``scores_stem``).
        progress: show a progress bar over the thresholds.

    Returns:
        ``{"rows": [...], "best": row, "rule": str, "seams": seam check or None, "csv": path, "json": path,
        "png": path}``.

    Raises:
        ConfigError: nothing to evaluate against, missing fragments/ground truth/skeletons/mask/LUTs/region graph,
            mismatched voxel sizes or grids, a ROI outside the fragments, no common ROI — all before anything is
            written.
    """
    from tqdm import tqdm

    fragments = open_dataset(config.fragments_path, config.fragments_dataset, "fragments (run 02_extract_fragments first)")
    vs = fragments.voxel_size
    region, gt, dense_roi, skeletons, mask = check_ground_truth(config, fragments)
    truth = None
    if gt is not None:
        truth = read_checked(gt.open("r"), voxel_slices(gt, dense_roi), gt.path)
        on_mask = read_on_grid(mask, dense_roi, vs) if mask is not None else None
        truth = _ignore_labels(truth, config.gt_ignore_ids, on_mask)
    edges = None
    rule = "the threshold with the lowest VOI sum of these scores"
    extra = None
    if config.threshold_from is not None:
        threshold, rule = fixed_threshold(config)
        thresholds = [threshold]
        extra = {"threshold_rule": rule}
    elif config.score_threshold is not None:
        thresholds = [round(float(config.score_threshold), 10)]
        rule = f"threshold {thresholds[0]} given (score_threshold), not chosen on these scores"
        extra = {"threshold_rule": rule}
    else:
        thresholds = all_thresholds(config)
    luts = {t: load_lut(config, t) for t in thresholds}  # every LUT must exist before we start
    if config.min_cut:
        edges = _read_region_graph_edges(config)

    node_fragments = None
    background_sites = None
    if skeletons is not None:
        node_fragments = read_at_positions(fragments, skeletons["positions"])
        background_sites = roi_background_sites(config, fragments, region.roi)
    dense_fragments = None
    if truth is not None:
        dense_fragments = read_checked(fragments.open("r"), voxel_slices(fragments, dense_roi), fragments.path)
    rows = []
    for t in tqdm(thresholds, desc="evaluate", unit="threshold", disable=not progress):
        rows += sweep_thresholds(
            {t: luts[t]}, fragments=dense_fragments, truth=truth, skeletons=skeletons, node_fragments=node_fragments,
            site_background=config.site_background,
        )
    if background_sites is not None:
        for row in rows:
            row["number_of_background_sites"] = background_sites
    best = best_row(rows)
    seams = None
    if best is not None:
        row = next(r for r in rows if r["threshold"] == best["threshold"])
        if dense_fragments is not None:
            segmentation = apply_lut(dense_fragments, luts[best["threshold"]])
            faces = block_faces(fragments.roi.offset, config.block_size, dense_roi, vs)
            seams = {"threshold": best["threshold"], "block_size": list(config.block_size), "seam_ratio": SEAM_RATIO,
                     **seam_check(truth, segmentation, faces)}  # fmt: skip
            row.update(seam_scores(seams))
            extra = {**(extra or {}), "seams": {**seams, "axes": [{k: _plain(v) for k, v in r.items()}
                                                                 for r in seams["axes"]]}}  # fmt: skip
        if config.min_cut:
            row.update(min_cut_scores(edges, luts[best["threshold"]], best["threshold"], node_fragments, skeletons))
        best = dict(row)
    csv_path, json_path, png_path = run_scores_paths(config)
    write_scores(rows, csv_path.parent, name=csv_path.name.removesuffix(".csv"), extra=extra)
    plot_voi(rows, png_path)
    return {"rows": rows, "best": best, "rule": rule, "seams": seams, "csv": csv_path, "json": json_path,
            "png": png_path}  # fmt: skip
