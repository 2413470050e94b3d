"""The one JSON config of a ``03_predict`` run, read by every step (:mod:`lsd_nm.steps`).

Relative paths resolve against the repository root (so ``"setup": "02_train/synthetic/mtlsd"`` works from any
working directory); absolute paths are kept. ROIs, block sizes and contexts are in nm.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from . import REPO_ROOT
from .config import ConfigError, NonNegativeInt, PositiveFloat, PositiveInt, StrictBaseModel, load_model

Seeds = Literal["original", "foreground"]
"""How the fragments' watershed is seeded (see :attr:`RunConfig.seeds`)."""

FragmentsMethod = Literal["watershed", "mutex_watershed"]
"""How step 2 makes fragments (see :attr:`RunConfig.fragments_method`)."""

MergeFunction = Literal[
    "mean",
    "hist_quant_10", "hist_quant_10_initmax", "hist_quant_25", "hist_quant_25_initmax",
    "hist_quant_50", "hist_quant_50_initmax", "hist_quant_75", "hist_quant_75_initmax",
    "hist_quant_90", "hist_quant_90_initmax",
]  # fmt: skip


class RunConfig(StrictBaseModel):
    """Prediction, segmentation and evaluation of one volume with one network."""

    setup: str | None = None
    """The network folder, e.g. ``02_train/synthetic/mtlsd`` (None: ``out_file`` already holds ``volumes/affs``,
    e.g. from another tool, and step 1 has nothing to do)."""
    iteration: PositiveInt | Literal["latest"] = "latest"
    """The checkpoint to predict with."""
    raw_file: str
    """The zarr container with the raw data."""
    raw_dataset: str = "volumes/raw"
    """The raw dataset in it."""
    out_file: str
    """The zarr container that receives ``volumes/affs``, ``volumes/lsds``, ``volumes/fragments``, segmentations, LUTs."""
    roi_offset: tuple[int, int, int] | None = None
    """Offset (nm) of the region to process (default: the whole raw volume shrunk by the network's context)."""
    roi_shape: tuple[PositiveInt, PositiveInt, PositiveInt] | None = None
    """Shape (nm) of that region."""
    num_workers: PositiveInt = 2
    """Worker processes per blockwise step; the cores are split between them (1: in process, the next block's pass
    overlapping the last one's writes). On 2 CPU cores, 2 workers predicted 1.19× as fast as 1 (benchmarks/RESULTS.md)."""
    worker_command: list[str] = []
    """A prefix for worker command lines (e.g. ``["bsub", "-n", "5"]`` or ``["singularity", "exec", "--nv", "img.sif"]``)."""
    scheduler_host: str = "127.0.0.1"
    """The address workers reach this machine's scheduler at (default: loopback, local workers only; with a
    ``worker_command`` that starts workers on other nodes: this machine's hostname or IP)."""
    block_timeout: PositiveFloat | None = None
    """Seconds a worker may spend on one block before it counts as frozen (an NFS or GPU hang, a stopped process):
    it is killed, with one line, and its block is retried. None: 10× the slowest block finished so far in the step,
    at least 120 s (60 min until a first block has finished)."""
    device: str | None = None
    """Where the network runs: ``cpu``, ``gpu``, ``gpu:N`` (default: a GPU if there is one)."""
    block_size: tuple[PositiveInt, PositiveInt, PositiveInt] = (1200, 1620, 1620)
    """Write size (nm) of the post-processing blocks (fragments, agglomeration, segmentation)."""
    context: tuple[NonNegativeInt, NonNegativeInt, NonNegativeInt] = (240, 243, 243)
    """Context (nm) read around each post-processing block."""
    db: str | None = None
    """The region graph: a ``postgresql://user@host:port/dbname`` URL, or a SQLite file (default: beside out_file)."""
    fragments_in_xy: bool = False
    """Seeded watershed per section (anisotropic data) instead of in 3D."""
    seeds: Seeds = "foreground"
    """The watershed's seeds. ``original``: as ``lsd.post.fragments`` — maxima of the distance transform over all
    voxels (a wide boundary becomes fragments of its own), labelled and flooded with mahotas, blocks cut at the
    affinities' edge. ``foreground``: maxima on the foreground only, plus one seed in every foreground component that
    got none, flooded with scikit-image, blocks zero-padded beyond the affinities (segments better on the synthetic
    test volume with the per-section watershed the demo runs: see README.md, "Where we differ from the original")."""
    fragments_method: FragmentsMethod = "watershed"
    """How step 2 makes fragments. ``watershed``: the seeded watershed of the distance transform of the foreground
    (the paper's; ``seeds`` says how it is seeded). ``mutex_watershed``: ``mwatershed.agglom`` on the affinities with
    every offset of the network (long-range ones included), each plus its ``mutex_bias``, in the same blocks with the
    same context; better where cells touch across one-voxel boundaries (see README.md, "Fragments: watershed or mutex
    watershed"). Either way waterz agglomerates the fragments."""
    mutex_bias: list[float] | None = None
    """The mutex watershed's bias, one per affinity offset, added to the affinities in [0, 1] (an edge below minus
    the bias repels). None: volara's −0.5 for the nearest-neighbour offsets (no component beyond ±1) and −0.7 for the
    long-range ones."""
    mutex_strides: list[tuple[PositiveInt, PositiveInt, PositiveInt]] | None = None
    """The mutex watershed's strides (voxels, z y x), one per affinity offset: an offset's edges are used at every
    stride-th voxel only (e.g. ``[2, 2, 2]`` for a long-range offset: fewer repulsive edges, fewer splits). None: every
    edge of every offset (volara's default)."""
    mutex_min_size: NonNegativeInt = 10
    """Clusters of the mutex watershed smaller than this (voxels; per section with ``fragments_in_xy``) give their
    voxels to the clusters around them, flooded over the boundary (1 − the mean nearest-neighbour affinity) from the
    clusters that remain, as the watershed floods from its seeds. 0 or 1: every cluster is a fragment (volara's
    way), so each voxel of a wide boundary is a fragment of its own: on the demo's affinities 760,000 fragments of
    one voxel, which the agglomeration never merges well (VOI sum 5.6 against 2.3 with 10; see 03_predict/README.md)."""
    mutex_randomized_strides: bool = False
    """Use each edge with probability 1 / (product of its offset's stride) instead of on the stride's grid (volara's
    default: off). mwatershed draws these itself, unseeded: the fragments then differ from run to run."""
    replace_sections: list[int] = []
    """Sections (z voxel indices, world z / voxel size, as the original) whose fragments are set to 0 (e.g. sections
    with large artefacts)."""
    epsilon_agglomerate: float = 0.0
    """Merge fragments within a block up to this threshold right after the watershed (0: off)."""
    filter_fragments: float = 0.0
    """Remove fragments whose mean affinity is below this (0: off)."""
    mask_file: str | None = None
    """A container with a mask outside which no fragments are made."""
    mask_dataset: str | None = None
    """The mask dataset in it."""
    merge_function: MergeFunction = "hist_quant_75"
    """waterz scoring of region-graph edges (the paper's best: 75th percentile of boundary affinities)."""
    thresholds: tuple[float, float, float] = (0.0, 1.0, 0.02)
    """The evaluation sweep: [min, max, step] of merge thresholds."""
    extract_thresholds: list[float] = [0.5]
    """Thresholds whose segmentations are written as ``volumes/segmentation_<int(round(100·t))>``."""
    gt_file: str | None = None
    """Ground truth container for evaluation."""
    gt_dataset: str | None = None
    """Dense ground-truth labels in it (e.g. ``volumes/labels/neuron_ids``)."""
    gt_skeletons: str | None = None
    """Ground-truth skeletons (``*.skeletons.npz``) for ERL and site-based VOI."""
    min_cut: bool = False
    """Also compute the min-cut metric at the best threshold (needs ``gt_skeletons``; slow on large region graphs)."""
    fragments_file: str | None = None
    """A container whose fragments steps 4–6 use instead of out_file's own (e.g. the authors' published supervoxels
    from ``make fetch-published``, with their region graph as ``db``); steps 2 and 3, which make out_file's own
    fragments and edges, refuse a config that sets it. LUTs and scores still go to out_file."""
    fragments_dataset: str = "volumes/fragments"
    """The fragments dataset in ``fragments_file`` (or in out_file)."""
    scores_stem: str | None = None
    """Where step 6 writes: ``<scores_stem>.scores.csv``, ``.scores.json`` and ``.voi_vs_threshold.png`` (default:
    out_file without ``.zarr``), so that several evaluations of one run (ROIs, skeleton sets, masks) keep their own."""
    gt_ignore_ids: list[int] = []
    """Labels of ``gt_dataset`` that are no object and are ignored like 0 (hemi: 18446744073709551613 = 2^64 − 3)."""
    eval_mask_file: str | None = None
    """A container with an evaluation mask (non-zero = scored), e.g. the neuropil or hemi's ellipsoid body: dense
    ground truth outside it is ignored; with ``skeleton_masked``, skeleton nodes outside it are dropped (where the
    skeletons carry no per-ROI mask of their own)."""
    eval_mask_dataset: str | None = None
    """The mask dataset in it (any voxel size: sampled at each voxel's or node's position)."""
    skeleton_roi: str | None = None
    """The ROI of the skeletons' per-ROI arrays (e.g. ``11_micron_roi``): the authors' components of the nodes in it,
    ``component_id_<skeleton_roi>_masked`` with ``skeleton_masked`` (``component_id_<skeleton_roi>`` without), are
    used where the skeletons file has them; otherwise components are the connected pieces of the kept skeletons."""
    skeleton_masked: bool = False
    """Score only skeleton nodes inside the neuropil mask, as the paper's headline numbers: the skeletons'
    ``masked_<skeleton_roi>_masked`` where the file has it, else ``eval_mask_file``/``eval_mask_dataset`` at the nodes."""
    site_background: Literal["segment", "drop"] = "segment"
    """Skeleton nodes on fragment 0 in the site VOI: ``segment`` keeps them as one segment 0, as the original
    ``05_evaluate_annotations.py`` (the paper's numbers); ``drop`` leaves them out (counted in ``sites_num_bg_sites``
    either way)."""
    score_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Score only this merge threshold (e.g. the paper's for a network) instead of choosing one on these scores; its
    LUT is made by step 4 beside the sweep's. Not together with ``threshold_from``."""
    threshold_from: str | None = None
    """Another evaluation's ``*.scores.json`` (e.g. on the validation skeletons): step 6 then scores only that file's
    best threshold (its lowest VOI sum) instead of choosing one on this run's own scores — the paper's
    validation → test protocol."""

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if (self.roi_offset is None) != (self.roi_shape is None):
            raise ValueError("give both roi_offset and roi_shape, or neither")
        if self.score_threshold is not None and self.threshold_from is not None:
            raise ValueError("give score_threshold or threshold_from, not both")
        if (self.mask_file is None) != (self.mask_dataset is None):
            raise ValueError("give both mask_file and mask_dataset, or neither")
        if self.gt_dataset is not None and self.gt_file is None:
            raise ValueError("gt_dataset needs gt_file")
        if (self.eval_mask_file is None) != (self.eval_mask_dataset is None):
            raise ValueError("give both eval_mask_file and eval_mask_dataset, or neither")
        for label in self.gt_ignore_ids:
            if not 0 < label < 2**64:
                raise ValueError(f"gt_ignore_ids: {label} is not a label id (1 … 2^64 − 1)")
        mutex = [k for k in ("mutex_bias", "mutex_strides") if getattr(self, k) is not None]
        mutex += ["mutex_randomized_strides"] if self.mutex_randomized_strides else []
        mutex += ["mutex_min_size"] if self.mutex_min_size != type(self).model_fields["mutex_min_size"].default else []
        if mutex and self.fragments_method != "mutex_watershed":
            raise ValueError(f"{', '.join(mutex)}: only for fragments_method \"mutex_watershed\"")
        if self.seeds != "foreground" and self.fragments_method == "mutex_watershed":
            raise ValueError("seeds: only for fragments_method \"watershed\" (the mutex watershed has no seeds)")
        outside = [t for t in self.extract_thresholds if not 0.0 <= t <= 1.0]
        if outside:
            raise ValueError(f"extract_thresholds {outside}: merge thresholds lie in [0, 1]")
        low, high, step = self.thresholds
        if step <= 0 or high <= low:
            raise ValueError(f"thresholds {list(self.thresholds)}: expected [min, max, step] with step > 0 and max > min")
        return self

    def path(self, value: str | None) -> Path | None:
        """A path of this config, resolved against the repository root when relative."""
        if value is None:
            return None
        p = Path(value)
        return p if p.is_absolute() else REPO_ROOT / p

    @property
    def out_path(self) -> Path:
        """``out_file``, resolved."""
        return self.path(self.out_file)

    @property
    def fragments_path(self) -> Path:
        """The container of the fragments: ``fragments_file`` if set, else out_file (resolved)."""
        return self.path(self.fragments_file) if self.fragments_file is not None else self.out_path

    def check_own_fragments(self, step: str) -> None:
        """Steps 2 and 3 make out_file's own ``volumes/fragments``: refuse a config that points elsewhere."""
        if self.fragments_file is not None or self.fragments_dataset != "volumes/fragments":
            raise ConfigError(
                f"{step} makes out_file's own volumes/fragments and edges: remove fragments_file/fragments_dataset "
                "(they are for fragments made elsewhere, e.g. the authors' published supervoxels)"
            )

    @property
    def blocks_dir(self) -> Path:
        """Where the steps of this run record their done blocks and settings (and workers write their logs)."""
        return self.out_path / ".blocks"

    @property
    def db_location(self) -> str:
        """The region graph: a PostgreSQL URL, or the SQLite file (default ``<out_file without .zarr>.rag.db``)."""
        if self.db is not None and self.db.startswith("postgresql://"):
            return self.db
        if self.db is not None:
            return str(self.path(self.db))
        out = self.path(self.out_file)
        return str(out.with_name(out.name.removesuffix(".zarr") + ".rag.db"))


def load_run_config(path: Path) -> RunConfig:
    """Read and validate a run config (one-line errors naming the file and key)."""
    return load_model(RunConfig, Path(path))


def load_predict_config(paths: Sequence[str | Path]) -> RunConfig:
    """The run config of step 1 from its arguments ``[NETWORK_FOLDER] CONFIG.json``: with a network folder (a network
    folder's ``predict.py``), that folder's network, whatever the config's ``setup`` says."""
    if len(paths) > 2:
        raise ConfigError(f"expected [NETWORK_FOLDER] CONFIG.json, got {len(paths)} paths")
    folder, config_path = (None, paths[0]) if len(paths) == 1 else paths
    config = load_run_config(Path(config_path))
    if folder is not None:
        config = config.model_copy(update={"setup": str(Path(folder).resolve())})
    return config
