"""Reproduce the paper's tables for one network: every ROI of the paper, our number beside the paper's.

Run: ``python 03_predict/07_reproduce.py --dataset zebrafinch --network mtlsd`` (or ``make reproduce DATASET=…
NETWORK=…``) after ``make fetch-test-data`` and ``make fetch-published``; ``--config RUN.json`` (repeatable) scores
our own ``03_predict`` runs instead of the authors' published supervoxels and region graphs.

**What is scored** (paper.md §1.1–§1.4, §4):

* zebrafinch — the ten nested cubes and the Benchmark ROI of ``03_predict/configs/rois/zebrafinch.json``, each
  neuropil-masked and unmasked, on skeletons (:func:`lsd_nm.evaluate.evaluation_skeletons`: cropped, masked,
  relabelled into connected components). **One threshold per network** (protocol.md §1), applied to every ROI and
  both masks: by default chosen once as the lowest VOI sum of the 12 validation skeletons on the neuropil-masked
  Benchmark ROI (``threshold_roi``, ``threshold_masked`` choose another), or the authors' own value
  (``threshold_rule="paper"``, :data:`PAPER_THRESHOLDS`); the 50 test skeletons are scored at it. Masked
  evaluations use the skeletons' own per-ROI mask and components where the authors' dump has them, else the
  neuropil mask volume (:func:`lsd_nm.rois.check_roi_against_skeletons`). On the authors' published supervoxels the
  unmasked rows are marked :data:`UNMASKED_NOTE` and not compared with the paper's: the bucket holds the
  neuropil-masked supervoxels only (protocol.md §5). With ``min_cut`` the min-cut metric is computed on the masked
  11, 18 and 25 µm cubes, as the paper's.
* hemi — its three ROIs (the bucket's ``roi_1`` … ``roi_3``, named after the paper's 12, 17 and 22 µm by their
  size), FIB-25 — the whole test region and its two sub-ROIs, on the dense consolidated labels (hemi's 2^64 − 3
  ignored, the mask applied). The paper reports these at the threshold with the lowest VOI sum on the same labels.

Each evaluation is step 6 itself (:func:`lsd_nm.evaluate.evaluate_run`) on a run config: the published fragments
and region graph as ``fragments_file``/``db`` (LUTs from step 4 in ``reproduce/work/``), or our run's own. Writes
``reproduce/<name>.csv`` (every number, ours, the paper's and the difference), ``<name>.md`` (the table and the
rules) and ``<name>.png`` (VOI sum against ROI size, as the paper's figure), ``<name>`` = ``<dataset>_<network>``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from funlib.geometry import Roi

from . import REPO_ROOT
from .config import ConfigError
from .data import open_dataset, write_text
from .evaluate import evaluate_run
from .paper_data import (
    SKELETON_DATASETS, SPLITS, published_manifest, skeletons_file, test_volumes_container,
)  # fmt: skip
from .rois import check_roi_against_skeletons, load_rois
from .run_config import RunConfig, load_run_config
from .segments import find_segments
from .skeletons import read_skeletons
from .steps import AGGLOMERATE

PAPER_NUMBERS = REPO_ROOT / "03_predict" / "paper_numbers.csv"
"""The paper's numbers, one row per dataset, network, ROI and mask, each with its source."""
OUT_DIR = REPO_ROOT / "reproduce"
DATASETS = ("zebrafinch", "hemi", "fib25")
HEMI_UNLABELLED = 2**64 - 3
"""hemi's label for unlabelled voxels: no object."""
HEMI_ROIS = {"12_micron_roi": 12.0, "17_micron_roi": 17.0, "22_micron_roi": 22.0}
"""The paper's hemi ROIs by edge (µm); the bucket's roi_1 … roi_3 are matched to them by their size."""
MIN_CUT_ROIS = ("11_micron_roi", "18_micron_roi", "25_micron_roi")
"""The paper computed the min-cut metric on the three smallest cubes ("up to ~16,000 µm³": 25.2³ = 16,003 µm³)."""
PAPER_THRESHOLDS = {
    "baseline": 0.28, "long_range": 0.06, "malis": 0.64, "mtlsd": 0.32, "aclsd": 0.16, "acrlsd": 0.16, "ffn": 0.5,
}  # fmt: skip
"""The one threshold of each network on every row of its zebrafinch CSV (protocol.md §1; FFN's is its own)."""
THRESHOLD_RULES = ("validation", "paper")
THRESHOLD_ROI = "benchmark_roi"
"""Where the validation skeletons choose the threshold by default (protocol.md §1: the natural reading)."""
UNMASKED_NOTE = "not reproducible from the bucket: the unmasked supervoxels are not published"
"""The bucket holds only the neuropil-masked supervoxels (protocol.md §5)."""
UNMASKED_OURS = "unmasked skeletons on masked supervoxels"
"""What our unmasked rows on the published supervoxels are (shown under this label, never against the paper's)."""
METRICS = ("voi_split", "voi_merge", "voi_sum", "erl", "normalized_erl")


@dataclass
class Row:
    """One line of the table: one ROI, masked or not."""

    roi: str
    masked: bool
    volume_um3: float | None = None
    status: str = "ok"
    """``ok``, or why it was not computed (one line)."""
    ours: dict = field(default_factory=dict)
    """Our scores at the chosen threshold (``threshold``, ``voi_split``, …, ``min_cut_*``)."""
    paper: dict = field(default_factory=dict)
    """The paper's row of :data:`PAPER_NUMBERS` (strings; empty where not published)."""
    threshold_rule: str = ""
    """Which rule chose the threshold (``validation``, ``paper``; empty where each row chooses its own)."""
    note: str = ""
    """Why the row is not compared with the paper's (:data:`UNMASKED_NOTE`), or empty."""


def load_paper_numbers(dataset: str, network: str, path: Path = PAPER_NUMBERS) -> dict[tuple[str, bool], dict]:
    """The paper's rows of a dataset and network: ``(roi, masked)`` → row."""
    with open(path, newline="") as f:
        return {
            (r["roi"], r["masked"] == "true"): r for r in csv.DictReader(f) if r["dataset"] == dataset and r["network"] == network
        }


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


# ---- the runs ---------------------------------------------------------------------------------------------------


def published_runs(dataset: str, network: str, work: Path, thresholds, data_dir: Path | None = None) -> list[tuple[str, RunConfig]]:
    """Run configs over the authors' published fragments and region graphs of a network (from the manifest of
    ``make fetch-published``): ``(run name, config)``, LUTs and scores in ``work``."""
    manifest = published_manifest(dataset, network, data_dir)
    if not manifest.is_file():
        raise ConfigError(
            f"{manifest}: not found; fetch the authors' results first (make fetch-published DATASET={dataset} NETWORK={network})"
        )
    runs = []
    for entry in json.loads(manifest.read_text())["runs"]:
        name = entry["run"] or "run"
        out = work / f"{name}.zarr"
        config = RunConfig(
            raw_file=entry["fragments_file"], out_file=str(out), fragments_file=entry["fragments_file"],
            fragments_dataset=entry["fragments_dataset"], db=entry["db"], merge_function=entry["merge_function"],
            thresholds=tuple(thresholds), extract_thresholds=[], num_workers=1,
        )  # fmt: skip
        # the edges are the authors' (their agglomeration with this merge function): what 04_find_segments checks
        AGGLOMERATE.write_record(config, {"merge_function": entry["merge_function"],
                                          "source": f"the authors' region graph, {manifest}"})  # fmt: skip
        runs.append((name, config))
    return runs


def _fragments_roi(config: RunConfig) -> Roi:
    return open_dataset(config.fragments_path, config.fragments_dataset, "fragments (run 02_extract_fragments first)").roi


def _inside(roi: Roi, config: RunConfig) -> bool:
    return _fragments_roi(config).contains(roi)


# ---- zebrafinch: skeletons ------------------------------------------------------------------------------------------


def _mask_dataset(container: Path) -> str | None:
    """The neuropil mask among the fetched test volumes (``volumes/*mask*``), if any."""
    volumes = container / "volumes"
    found = sorted(p.name for p in volumes.iterdir() if "mask" in p.name) if volumes.is_dir() else []
    return f"volumes/{found[0]}" if found else None


def _skeleton_paths(data_dir: Path | None) -> dict[str, Path]:
    paths = {split: skeletons_file("zebrafinch", split, data_dir) for split in SPLITS}
    for path in paths.values():
        if not path.is_file():
            raise ConfigError(f"{path}: not found; fetch the test skeletons first (make fetch-test-data DATASET=zebrafinch)")
    return paths


def _run_of(region: Roi, runs: Sequence[tuple[str, RunConfig]]) -> RunConfig | None:
    return next((config for _, config in runs if _inside(region, config)), None)


def _skeleton_config(
    run: RunConfig, roi, name: str, masked: bool, skeletons: dict, container: Path, mask: str | None, split: str,
    paths: dict[str, Path], stem: Path,
) -> tuple[RunConfig, int]:
    """The run config of step 6 on one ROI, mask and skeleton split, and the nodes the authors' per-ROI arrays of
    that split mark outside the ROI (ignored, as the original ignores them; a ConfigError if none is inside)."""
    key = f"{name}_masked" if masked else name
    outside = 0
    if masked:
        arrays = skeletons[split]
        if f"masked_{key}" in arrays or f"component_id_{key}" in arrays:
            outside = check_roi_against_skeletons(roi, name, arrays, key)["outside"]
        elif mask is None:
            raise ConfigError(
                f"the {split} skeletons have no masked_{key} and no neuropil mask was fetched "
                f"({container}/volumes/*mask*)"
            )
    return run.model_copy(update=dict(
        roi_offset=roi.roi_offset, roi_shape=roi.roi_shape, skeleton_roi=name, skeleton_masked=masked,
        gt_file=None, gt_dataset=None, min_cut=False, gt_skeletons=str(paths[split]), scores_stem=f"{stem}_{split}",
        eval_mask_file=str(container) if masked and mask else None, eval_mask_dataset=mask if masked else None,
    )), outside  # fmt: skip


@dataclass
class ThresholdChoice:
    """The one threshold of a network, applied to every ROI and mask."""

    threshold: float
    rule: str
    """``validation`` or ``paper``."""
    text: str
    """The rule in words, for the report."""
    scores_json: Path | None = None
    """The validation evaluation that chose it (rule ``validation``)."""


def choose_threshold(
    rule: str, network: str, runs: Sequence[tuple[str, RunConfig]], work: Path, data_dir: Path | None,
    threshold_roi: str = THRESHOLD_ROI, threshold_masked: bool = True, rois: Path | None = None,
    progress: bool = False,
) -> ThresholdChoice:
    """The network's one threshold (protocol.md §1): ``paper`` — the authors' value (:data:`PAPER_THRESHOLDS`);
    ``validation`` — the lowest VOI sum of the 12 validation skeletons on ``threshold_roi`` (masked by default),
    chosen once.

    Raises:
        ConfigError: an unknown rule, a network without a published threshold, a threshold ROI outside every run's
            fragments or one its validation skeletons cannot be scored on.
    """
    if rule == "paper":
        if network not in PAPER_THRESHOLDS:
            raise ConfigError(
                f"the paper gives no threshold for network '{network}' (it has: {', '.join(PAPER_THRESHOLDS)})"
            )
        t = PAPER_THRESHOLDS[network]
        return ThresholdChoice(t, "paper", f"{t} for every ROI and mask, the authors' value for {network}")
    if rule != "validation":
        raise ConfigError(f"unknown threshold rule '{rule}' (expected one of: {', '.join(THRESHOLD_RULES)})")
    registry = load_rois("zebrafinch", rois)
    if threshold_roi not in registry.rois:
        raise ConfigError(f"unknown threshold ROI '{threshold_roi}' (expected one of: {', '.join(registry.rois)})")
    roi = registry.rois[threshold_roi]
    run = _run_of(Roi(roi.roi_offset, roi.roi_shape), runs)
    if run is None:
        raise ConfigError(
            f"the threshold ROI '{threshold_roi}' is not inside the fragments of any run; choose another with "
            "--threshold-roi"
        )
    paths = _skeleton_paths(data_dir)
    skeletons = {"validation": read_skeletons(paths["validation"])}
    container = test_volumes_container("zebrafinch", data_dir)
    mask = _mask_dataset(container)
    stem = work / f"threshold_{threshold_roi}_{'masked' if threshold_masked else 'unmasked'}"
    try:
        config, _ = _skeleton_config(
            run, roi, threshold_roi, threshold_masked, skeletons, container, mask, "validation", paths, stem
        )
        chosen = evaluate_run(config, progress=progress)
    except ConfigError as e:
        raise ConfigError(f"threshold: the validation skeletons cannot be scored on '{threshold_roi}': {e}") from None
    if chosen["best"] is None:
        raise ConfigError(f"threshold: no threshold has a VOI sum on the validation skeletons of '{threshold_roi}'")
    t = float(chosen["best"]["threshold"])
    where = f"{threshold_roi}, {'masked' if threshold_masked else 'unmasked'}"
    return ThresholdChoice(
        t, "validation", f"{t}: the lowest VOI sum of the 12 validation skeletons on {where}, for every ROI and mask",
        chosen["json"],
    )


def zebrafinch_rows(
    runs: Sequence[tuple[str, RunConfig]], work: Path, data_dir: Path | None, min_cut: bool, progress: bool,
    choice: ThresholdChoice, rois: Path | None = None, published: bool = True,
) -> list[Row]:
    """Every ROI of the registry, masked and unmasked: the 50 test skeletons scored at the network's one threshold
    (see the module docstring)."""
    paths = _skeleton_paths(data_dir)
    skeletons = {split: read_skeletons(path) for split, path in paths.items()}
    container = test_volumes_container("zebrafinch", data_dir)
    mask = _mask_dataset(container)
    registry = load_rois("zebrafinch", rois)
    rows = []
    for name, roi in registry.rois.items():
        region = Roi(roi.roi_offset, roi.roi_shape)
        for masked in (True, False):
            row = Row(name, masked, roi.volume_um3(), threshold_rule=choice.rule)
            if published and not masked:
                row.note = UNMASKED_NOTE
            rows.append(row)
            run = _run_of(region, runs)
            if run is None:
                row.status = f"not inside the fragments of {', '.join(str(c.fragments_path / c.fragments_dataset) for _, c in runs)}"
                continue
            try:
                stem = work / f"{name}_{'masked' if masked else 'unmasked'}"
                test, outside = _skeleton_config(
                    run, roi, name, masked, skeletons, container, mask, "testing", paths, stem
                )
                fixed = (
                    dict(threshold_from=str(choice.scores_json)) if choice.scores_json is not None
                    else dict(score_threshold=choice.threshold)
                )  # fmt: skip
                with_min_cut = min_cut and masked and name in MIN_CUT_ROIS
                test = test.model_copy(update=dict(fixed, min_cut=with_min_cut))
                row.ours = dict(evaluate_run(test, progress=progress)["best"])
                row.ours["mask_nodes_outside_roi"] = outside
            except ConfigError as e:
                row.status = str(e)
    return rows


# ---- hemi, FIB-25: dense labels -------------------------------------------------------------------------------------


def _nearest_hemi_roi(volume_um3: float) -> str:
    edge = volume_um3 ** (1 / 3)
    return min(HEMI_ROIS, key=lambda name: abs(HEMI_ROIS[name] - edge))


def dense_rows(
    dataset: str, runs: Sequence[tuple[str, RunConfig]], work: Path, data_dir: Path | None, progress: bool
) -> list[Row]:
    """hemi's three ROIs or FIB-25's whole test region and sub-ROIs, scored against the consolidated labels at the
    threshold with the lowest VOI sum (see the module docstring)."""
    container = test_volumes_container(dataset, data_dir)
    if not (container / "volumes").is_dir():
        raise ConfigError(f"{container}: not found; fetch the test labels first (make fetch-test-data DATASET={dataset})")
    mask = _mask_dataset(container)
    volumes = container / "volumes"
    if dataset == "hemi":
        labels = {p.name: f"volumes/{p.name}/consolidated_ids" for p in sorted(volumes.glob("roi_*")) if (p / "consolidated_ids").is_dir()}
    else:
        labels = {"full": "volumes/neuron_ids"} if (volumes / "neuron_ids").is_dir() else {}
        labels |= {p.name.removesuffix("_relabelled_ids"): f"volumes/{p.name}" for p in sorted(volumes.glob("roi_*_relabelled_ids"))}
    if not labels:
        raise ConfigError(f"{container}: no test labels in it (make fetch-test-data DATASET={dataset})")
    rows = []
    for label, gt_dataset in labels.items():
        gt = open_dataset(container, gt_dataset, "ground truth")
        volume = float(np.prod(np.asarray(gt.roi.shape, np.float64) / 1000))
        name = _nearest_hemi_roi(volume) if dataset == "hemi" else label
        row = Row(name, True, volume)
        rows.append(row)
        # hemi has a run (fragments and region graph) per ROI, named after it (hemi_vanilla_400k_roi_1); FIB-25 one
        named = [c for n, c in runs if re.search(rf"(^|_){re.escape(label)}(_|$)", n)]
        run = next((c for c in named or [c for _, c in runs] if not _fragments_roi(c).intersect(gt.roi).empty), None)
        if run is None:
            row.status = f"no fragments overlap the labels {container / gt_dataset}"
            continue
        region = _fragments_roi(run).intersect(gt.roi)
        config = run.model_copy(update=dict(
            roi_offset=tuple(region.offset), roi_shape=tuple(region.shape), gt_file=str(container), gt_dataset=gt_dataset,
            gt_ignore_ids=[HEMI_UNLABELLED] if dataset == "hemi" else [], gt_skeletons=None, min_cut=False,
            eval_mask_file=str(container) if mask else None, eval_mask_dataset=mask, threshold_from=None,
            scores_stem=str(work / name),
        ))  # fmt: skip
        try:
            row.ours = dict(evaluate_run(config, progress=progress)["best"])
        except ConfigError as e:
            row.status = str(e)
    return rows


# ---- the report ---------------------------------------------------------------------------------------------------


INVARIANTS = ("number_of_components", "total_path_length", "max_erl")
"""What depends on the skeletons, the ROI and the mask alone (protocol.md §4): the same for every network."""
PAPER_INVARIANTS = {
    "number_of_components": "components", "total_path_length": "total_path_length", "max_erl": "max_erl",
}  # fmt: skip
"""Our key → its column in :data:`PAPER_NUMBERS`."""
INVARIANT_RTOL = 1e-5
"""Lengths agree to this relative difference (the original sums float32 edge lengths)."""
OURS = (
    "threshold", *METRICS, "max_erl", "number_of_components", "total_path_length", "sites_num_bg_sites",
    "number_of_background_sites", "mask_nodes_outside_roi", "min_cut_splits_needed", "min_cut_merges_needed",
)  # fmt: skip
COLUMNS = (
    ["roi", "masked", "volume_um3", "status", "invariants", "threshold_rule", "note", *OURS]
    + ["paper_components", "paper_total_path_length", "paper_max_erl"]
    + ["paper_threshold"] + [f"paper_{m}" for m in METRICS] + ["paper_background_sites", "paper_mcm_splits"]
    + ["paper_mcm_merges"] + [f"diff_{m}" for m in METRICS] + ["paper_source"]
)  # fmt: skip


def table(rows: Sequence[Row]) -> list[dict]:
    """The CSV lines: ours, the paper's and ours − paper's for each metric (empty where either is missing, and on
    rows with a note: those are not the paper's experiment)."""
    lines = []
    for row in rows:
        line = {"roi": row.roi, "masked": str(row.masked).lower(), "status": row.status}
        line["volume_um3"] = round(row.volume_um3, 1) if row.volume_um3 is not None else None
        line["threshold_rule"] = row.threshold_rule
        line["note"] = row.note
        for key in OURS:
            line[key] = row.ours.get(key)
        paper = row.paper
        line["paper_threshold"] = _number(paper.get("threshold"))
        for key, column in PAPER_INVARIANTS.items():
            line[f"paper_{column}"] = _number(paper.get(column))
        line["invariants"] = invariants_mark(row)
        line["paper_background_sites"] = _number(paper.get("background_sites"))
        line["paper_mcm_splits"] = _number(paper.get("mcm_splits"))
        line["paper_mcm_merges"] = _number(paper.get("mcm_merges"))
        line["paper_source"] = paper.get("source", "")
        for m in METRICS:
            theirs = _number(paper.get(m))
            line[f"paper_{m}"] = theirs
            ours = row.ours.get(m)
            comparable = ours is not None and theirs is not None and not row.note
            line[f"diff_{m}"] = ours - theirs if comparable else None
        lines.append(line)
    return lines


def invariants_mark(row: Row) -> str:
    """``✔`` when components, total path length and max ERL equal the paper's (lengths to
    :data:`INVARIANT_RTOL`), ``✘`` when one differs, empty when either side has none of them."""
    pairs = [(row.ours.get(key), _number(row.paper.get(column))) for key, column in PAPER_INVARIANTS.items()]
    pairs = [(ours, theirs) for ours, theirs in pairs if ours is not None and theirs is not None]
    if not pairs:
        return ""
    same = all(math.isclose(float(ours), theirs, rel_tol=INVARIANT_RTOL) for ours, theirs in pairs)
    return "✔" if same else "✘"


def _cell(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _count(value) -> str:
    return "–" if value is None else str(int(value))


def write_markdown(path: Path, dataset: str, network: str, source: str, rule: str, lines: Sequence[dict]) -> Path:
    """The table for people: one line per ROI and mask, ours | paper | difference for each metric; rows with a note
    show ours only, labelled, and the note."""
    out = [
        f"# {dataset}, {network}: our numbers beside the paper's",
        "",
        f"* Fragments and region graph: {source}.",
        f"* Threshold: {rule}.",
        "* VOI in bits (on skeleton nodes for zebrafinch, on voxels for hemi and FIB-25); ERL in nm; Δ = ours − paper.",
        "* Background sites: the scored sites on fragment 0 (one segment 0 of the site VOI), and every skeleton node "
        "inside the ROI on fragment 0 whatever the mask, as the original's number_of_background_sites counts them.",
        (
            f"* The paper's numbers: [{PAPER_NUMBERS.relative_to(REPO_ROOT)}](../{PAPER_NUMBERS.relative_to(REPO_ROOT)}) "
            "(source per row; the authors' bioRxiv-era data, the journal's tables may differ slightly)."
        ),
        "",
        "## Invariants first",
        "",
        "Components, total path length and max ERL depend on the skeletons, the ROI and the mask alone, whatever the "
        "network (protocol.md §4): a ✘ means the ROI, the mask or the cropping differs from the paper's, and the "
        "scores below are not comparable.",
        "",
        "| ROI | mask | components (ours / paper) | total path length nm (ours / paper) | max ERL nm (ours / paper) "
        "| | marked nodes outside the ROI (ignored) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {line['roi']} | {'neuropil' if line['masked'] == 'true' else 'none'} "
            f"| {_count(line['number_of_components'])} / {_count(line['paper_components'])} "
            f"| {_cell(line['total_path_length'], 0)} / {_cell(line['paper_total_path_length'], 0)} "
            f"| {_cell(line['max_erl'], 0)} / {_cell(line['paper_max_erl'], 0)} | {line['invariants'] or '–'} "
            f"| {_count(line['mask_nodes_outside_roi'])} |"
            for line in lines if line["status"] == "ok"
        ),
        "",
        "## Scores",
        "",
        "| ROI | mask | invariants | threshold (ours / paper, rule) | VOI split | VOI merge "
        "| VOI sum (ours / paper / Δ) "
        "| ERL (ours / paper / Δ) | nERL (ours / paper) | background sites (scored / in the ROI / paper) "
        "| min-cut splits + merges (ours / paper) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for line in lines:
        mask = "neuropil" if line["masked"] == "true" else "none"
        if line["status"] != "ok":
            out.append(f"| {line['roi']} | {mask} | | not computed: {line['status']} | | | | | | | |")
            continue
        rule_text = f", {line['threshold_rule']}" if line["threshold_rule"] else ""
        threshold = f"{_cell(line['threshold'], 2)} / {_cell(line['paper_threshold'], 2)}{rule_text}"
        ours_mcm = (
            f"{line['min_cut_splits_needed']} + {line['min_cut_merges_needed']}" if line["min_cut_splits_needed"] is not None else "–"
        )
        if line["note"]:
            out.append(
                f"| {line['roi']} | {mask} | {line['invariants'] or '–'} | {threshold} | {line['note']}; "
                f"ours ({UNMASKED_OURS}): VOI split {_cell(line['voi_split'])}, "
                f"merge {_cell(line['voi_merge'])}, "
                f"sum {_cell(line['voi_sum'])}, ERL {_cell(line['erl'], 0)}, nERL {_cell(line['normalized_erl'])} "
                f"| | | | | | |"
            )
            continue
        paper_mcm = (
            f"{int(line['paper_mcm_splits'])} + {int(line['paper_mcm_merges'])}" if line["paper_mcm_splits"] is not None else "–"
        )
        out.append(
            f"| {line['roi']} | {mask} | {line['invariants'] or '–'} | {threshold} "
            f"| {_cell(line['voi_split'])} / {_cell(line['paper_voi_split'])} "
            f"| {_cell(line['voi_merge'])} / {_cell(line['paper_voi_merge'])} "
            f"| {_cell(line['voi_sum'])} / {_cell(line['paper_voi_sum'])} / {_cell(line['diff_voi_sum'])} "
            f"| {_cell(line['erl'], 0)} / {_cell(line['paper_erl'], 0)} / {_cell(line['diff_erl'], 0)} "
            f"| {_cell(line['normalized_erl'])} / {_cell(line['paper_normalized_erl'])} "
            f"| {_count(line['sites_num_bg_sites'])} / {_count(line['number_of_background_sites'])} "
            f"/ {_count(line['paper_background_sites'])} "
            f"| {ours_mcm} / {paper_mcm} |"
        )
    return write_text(path, "\n".join(out) + "\n")


def plot_series(lines: Sequence[dict]) -> list[dict]:
    """The curves of :func:`plot_voi_vs_roi_size`: per mask ours and the paper's VOI sum over ROI volume, each
    ``{"label", "style", "colour", "xs", "ys"}``. Where the rows carry a note (unmasked on the published
    supervoxels) ours is labelled :data:`UNMASKED_OURS` and the paper's as another experiment: two curves of
    different supervoxels, not a comparison."""
    series = []
    for masked, colour in (("true", "C0"), ("false", "C1")):
        chosen = sorted(
            (line for line in lines if line["masked"] == masked and line["volume_um3"]), key=lambda x: x["volume_um3"]
        )
        noted = any(line["note"] for line in chosen)
        labels = {"ours": "ours, neuropil-masked", "paper": "paper, neuropil-masked"}
        if masked == "false":
            labels = {"ours": "ours, unmasked", "paper": "paper, unmasked"}
            if noted:
                labels = {"ours": f"ours, {UNMASKED_OURS}", "paper": "paper, unmasked (supervoxels not published)"}
        for who, style, key in (("ours", "-o", "voi_sum"), ("paper", "--s", "paper_voi_sum")):
            points = [(line["volume_um3"], line[key]) for line in chosen if line[key] is not None]
            if points:
                xs, ys = zip(*points)
                series.append({"label": labels[who], "style": style, "colour": colour, "xs": list(xs), "ys": list(ys)})
    return series


def plot_voi_vs_roi_size(path: Path, dataset: str, network: str, lines: Sequence[dict]) -> Path:
    """VOI sum against ROI volume (µm³, log scale), ours and the paper's, masked and unmasked: the paper's figure
    (the curves of :func:`plot_series`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for curve in plot_series(lines):
        alpha = 1.0 if curve["label"].startswith("ours") else 0.6
        ax.plot(curve["xs"], curve["ys"], curve["style"], color=curve["colour"], markersize=4, label=curve["label"],
                alpha=alpha)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("ROI volume (µm³)")
    ax.set_ylabel("VOI sum (bits)")
    ax.set_title(f"{dataset}, {network}: VOI over ROI size")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


def write_report(out_dir: Path, name: str, dataset: str, network: str, source: str, rule: str, rows: Sequence[Row]) -> dict[str, Path]:
    """``<out_dir>/<name>.csv``, ``.md`` and ``.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = table(rows)
    csv_path = out_dir / f"{name}.csv"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: _csv_value(line.get(c)) for c in COLUMNS} for line in lines)
    write_text(csv_path, buffer.getvalue())
    md = write_markdown(out_dir / f"{name}.md", dataset, network, source, rule, lines)
    png = plot_voi_vs_roi_size(out_dir / f"{name}.png", dataset, network, lines)
    return {"csv": csv_path, "md": md, "png": png}


def _csv_value(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(value) if isinstance(value, float) else str(value)


# ---- the driver -----------------------------------------------------------------------------------------------------


def result_lines(result: dict) -> list[str]:
    """What ``make reproduce`` prints of :func:`reproduce`'s result: the threshold chosen, a line per ROI (ours beside
    the paper's, or why it was not computed) and the report's files."""
    lines = [f"threshold: {result['threshold'].text}"] if result["threshold"] is not None else []
    for row in result["rows"]:
        mask = "masked" if row.masked else "unmasked"
        if row.status != "ok":
            lines.append(f"{row.roi} {mask}: not computed: {row.status}")
            continue
        ours = f"{row.roi} {mask}: threshold {row.ours.get('threshold')}, VOI sum {row.ours['voi_sum']:.3f}"
        if row.note:  # another experiment than the paper's: no paper number beside ours
            lines.append(f"{ours} ({UNMASKED_OURS}; {row.note})")
        else:
            lines.append(f"{ours} (paper {row.paper.get('voi_sum') or '–'})")
    return lines + [f"wrote {result['csv']}, {result['md']}, {result['png']}"]


def reproduce(
    dataset: str,
    network: str,
    configs: Sequence[Path] = (),
    name: str | None = None,
    thresholds: Sequence[float] = (0.0, 1.0, 0.02),
    min_cut: bool = False,
    rois: Path | None = None,
    data_dir: Path | None = None,
    out_dir: Path = OUT_DIR,
    progress: bool = False,
    threshold_rule: str = "validation",
    threshold_roi: str = THRESHOLD_ROI,
    threshold_masked: bool = True,
) -> dict:
    """Score every ROI of the paper's tables for a network and write the report (see the module docstring).

    Args:
        dataset: zebrafinch, hemi or fib25.
        network: the network (our name: baseline, long_range, malis, mtlsd, aclsd, acrlsd; the paper's rows of
            :data:`PAPER_NUMBERS` are looked up by it).
        configs: our own run configs to score (fragments, region graph and LUTs of each); empty: the authors'
            published supervoxels and region graphs (``make fetch-published``).
        name: the report's name (default ``<dataset>_<network>``, with our runs ``<dataset>_<network>_<config stem>``).
        thresholds: the sweep [min, max, step] for the published region graphs (our runs use their own).
        min_cut: also the min-cut metric, on the masked 11, 18 and 25 µm cubes (as the paper).
        rois: a zebrafinch ROI registry instead of ``03_predict/configs/rois/zebrafinch.json`` (e.g. to try offsets).
        data_dir: the data folder (default ``01_data/``).
        out_dir: where the report goes (default ``reproduce/``).
        progress: progress bars.
        threshold_rule: zebrafinch: ``validation`` (one threshold, the lowest VOI sum of the validation skeletons
            on ``threshold_roi``) or ``paper`` (the authors' threshold of the network, :data:`PAPER_THRESHOLDS`);
            either is applied to every ROI and mask.
        threshold_roi: the ROI of the validation rule (default the Benchmark ROI).
        threshold_masked: the validation rule on the neuropil-masked skeletons (default) or the unmasked ones.

    Returns:
        ``{"rows": [Row…], "threshold": ThresholdChoice or None, "csv": path, "md": path, "png": path}``.

    Raises:
        ConfigError: an unknown dataset, missing inputs (skeletons, labels, the published results or a run's
            config) — before anything is scored. A ROI that cannot be scored is a line of the report saying why.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset '{dataset}' for reproduce (expected one of: {', '.join(DATASETS)})")
    if threshold_rule not in THRESHOLD_RULES:
        raise ConfigError(f"unknown threshold rule '{threshold_rule}' (expected one of: {', '.join(THRESHOLD_RULES)})")
    if rois is not None:
        load_rois(dataset, rois)  # a bad registry fails first
    if dataset in SKELETON_DATASETS:
        known = load_rois(dataset, rois).rois
        if threshold_rule == "validation" and threshold_roi not in known:
            raise ConfigError(f"unknown threshold ROI '{threshold_roi}' (expected one of: {', '.join(known)})")
        if threshold_rule == "paper" and network not in PAPER_THRESHOLDS:
            raise ConfigError(
                f"the paper gives no threshold for network '{network}' (it has: {', '.join(PAPER_THRESHOLDS)})"
            )
    paper = load_paper_numbers(dataset, network)
    if not paper:
        with open(PAPER_NUMBERS, newline="") as f:
            networks = sorted({r["network"] for r in csv.DictReader(f) if r["dataset"] == dataset})
        raise ConfigError(f"the paper has no {dataset} numbers for network '{network}' (it has: {', '.join(networks)})")
    if configs:
        name = name or f"{dataset}_{network}_{Path(configs[0]).stem}"
        work = out_dir / "work" / name
        runs = [(Path(c).stem, load_run_config(Path(c))) for c in configs]
        source = "our runs " + ", ".join(str(Path(c)) for c in configs)
    else:
        name = name or f"{dataset}_{network}"
        work = out_dir / "work" / name
        runs = published_runs(dataset, network, work, thresholds, data_dir)
        manifest = published_manifest(dataset, network, data_dir)
        counts = "; ".join(
            f"{entry['run'] or 'run'}: {entry.get('null_scores', 0)} edges without a merge score (united at every "
            f"threshold, as the original), {entry.get('dangling_edges', 0)} dangling edges skipped (an endpoint is no "
            "node)"
            for entry in json.loads(manifest.read_text())["runs"]
        )
        source = f"the authors' published supervoxels and region graphs ({manifest}; {counts})"
    for _, config in runs:
        _fragments_roi(config)  # every run's fragments exist before anything is scored
    if dataset in SKELETON_DATASETS and threshold_rule == "validation":
        roi = load_rois(dataset, rois).rois[threshold_roi]
        if _run_of(Roi(roi.roi_offset, roi.roi_shape), runs) is None:
            raise ConfigError(
                f"the threshold ROI '{threshold_roi}' is not inside the fragments of any run; choose another with "
                "--threshold-roi"
            )
    if dataset in SKELETON_DATASETS:
        # fail on missing skeletons before the LUTs of a large region graph are computed
        for split in SPLITS:
            if not skeletons_file(dataset, split, data_dir).is_file():
                raise ConfigError(
                    f"{skeletons_file(dataset, split, data_dir)}: not found; fetch the test skeletons first "
                    f"(make fetch-test-data DATASET={dataset})"
                )
    choice = None
    if dataset in SKELETON_DATASETS and threshold_rule == "paper":
        t = PAPER_THRESHOLDS[network]
        runs = [(n, c.model_copy(update=dict(extract_thresholds=sorted({*c.extract_thresholds, t})))) for n, c in runs]
    for _, config in runs:
        find_segments(config, progress=progress)  # the LUTs (kept: a second reproduce reuses them)
    if dataset in SKELETON_DATASETS:
        choice = choose_threshold(
            threshold_rule, network, runs, work, data_dir, threshold_roi, threshold_masked, rois, progress
        )
        rows = zebrafinch_rows(runs, work, data_dir, min_cut, progress, choice, rois, published=not configs)
        rule = f"one threshold per network, {choice.text}; the 50 test skeletons are scored at it (the paper's rule)"
    else:
        rows = dense_rows(dataset, runs, work, data_dir, progress)
        rule = "the lowest VOI sum on the evaluated labels themselves, as the paper reports hemi and FIB-25"
    for row in rows:
        row.paper = paper.get((row.roi, row.masked), {})
    return {"rows": rows, "threshold": choice, **write_report(out_dir, name, dataset, network, source, rule, rows)}
