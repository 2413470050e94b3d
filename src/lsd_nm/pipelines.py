"""The training pipeline of every network, assembled from a network folder's config (gunpowder 1.5).

One builder serves all seven networks and all datasets; what differs between them lives in their configs (§4.3 of
the original: the request, the node order, the per-network differences, the isotropic datasets' recipe).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gunpowder as gp
import numpy as np

from .checkpoints import check_compatible, resolve_checkpoint
from .config import ConfigError
from .data import LABELS_MASK as LABELS_MASK_DATASET
from .data import NEURON_IDS
from .data import RAW as RAW_DATASET
from .datasets import DATA_DIR, get_dataset, volume_path
from .device import runs_on_cpu
from .experiment import NetworkConfig, NetworkFolder
from .malis import malis_loss_weights
from .networks import build_auto_model, build_model, network_io
from .nodes import (
    AddLocalShapeDescriptor,
    KerasPredict,
    KerasTrain,
    PreCache,
    QuantizeUInt8,
    RandomLocation,
    RenumberConnectedComponents,
    Snapshot,
    ZarrSource,
)

# ---- array keys ------------------------------------------------------------------------------------------------------
RAW = gp.ArrayKey("RAW")
LABELS = gp.ArrayKey("LABELS")
LABELS_MASK = gp.ArrayKey("LABELS_MASK")
GT_AFFS = gp.ArrayKey("GT_AFFS")
GT_AFFS_MASK = gp.ArrayKey("GT_AFFS_MASK")
GT_AFFS_SCALE = gp.ArrayKey("GT_AFFS_SCALE")
GT_LSDS = gp.ArrayKey("GT_LSDS")
PRETRAINED_LSDS = gp.ArrayKey("PRETRAINED_LSDS")
PRED_AFFS = gp.ArrayKey("PRED_AFFS")
PRED_LSDS = gp.ArrayKey("PRED_LSDS")
AFFS_GRADIENT = gp.ArrayKey("AFFS_GRADIENT")
LSDS_GRADIENT = gp.ArrayKey("LSDS_GRADIENT")

SNAPSHOT_DATASETS = {
    RAW: "volumes/raw",
    LABELS: "volumes/labels/neuron_ids",
    LABELS_MASK: "volumes/labels/mask",
    GT_AFFS: "volumes/gt_affinities",
    GT_AFFS_MASK: "volumes/labels/gt_mask",
    PRED_AFFS: "volumes/pred_affinities",
    AFFS_GRADIENT: "volumes/affs_gradient",
    GT_LSDS: "volumes/gt_lsds",
    PRED_LSDS: "volumes/pred_lsds",
    LSDS_GRADIENT: "volumes/lsds_gradient",
    PRETRAINED_LSDS: "volumes/pretrained_lsds",
}
"""Where each array goes in a snapshot file (the original's names, with 'lsds' for its 'embedding')."""


def training_volumes(config: NetworkConfig, data_dir: Path = DATA_DIR) -> list[Path]:
    """The dataset's training volumes that are on disk, each checked for raw, labels and mask."""
    ds = get_dataset(config.dataset)
    paths = [volume_path(config.dataset, v, data_dir=data_dir) for v in ds.volumes]
    present = [p for p in paths if p.exists()]
    if not present:
        how = f"make synthetic DATASET={config.dataset}" if ds.synthetic else f"make fetch-data DATASET={config.dataset}"
        raise ConfigError(f"no volumes of dataset '{config.dataset}' in {paths[0].parent}: get them with `{how}`")
    for path in present:
        for dataset in (RAW_DATASET, NEURON_IDS):
            if not (path / dataset).exists():
                raise ConfigError(f"{path}: no {dataset}; the volume is incomplete, fetch it again")
        if not (path / LABELS_MASK_DATASET).exists():
            raise ConfigError(f"{path}: no {LABELS_MASK_DATASET}; create the masks first with `make masks`")
    return present


def _roi(shape, voxel_size: gp.Coordinate) -> gp.Roi:
    """A ROI of ``shape`` voxels centred on the origin (all of a request's ROIs share the centre)."""
    shape = gp.Coordinate(shape)
    return gp.Roi(-(shape // 2) * voxel_size, shape * voxel_size)


CPU_PRECACHE_NICENESS = 10
"""How much lower the PreCache workers' priority is than the train step's where the step runs on the CPU."""


def precache_arrangement(config: NetworkConfig, device: str | None) -> dict[str, int]:
    """PreCache's workers, cache size and niceness for a network trained on ``device``.

    Where the step runs on the CPU, the step and the workers share the cores, split deliberately (measured in
    benchmarks/training.py, see benchmarks/RESULTS.md): TensorFlow's step takes every core (intra-op threads =
    cores) and is ~95 % of an iteration's CPU at the paper's zebrafinch mtlsd shapes (a batch costs ~1.1
    core-seconds, 0.9 of it elastic augment; the step 2 cores × 9-14 s on 2 cores). The workers
    (``train.num_workers``, at most one per core) run at nice +10: where one competes with the step for a core, the
    step gets ~10 times its share, so batches are made in the cycles the step leaves idle, or at a tenth of a
    core beside it — and at full speed whenever the step waits for a batch. The cache is cut to two batches per
    worker: the config's (40, made for GPU nodes) would have the workers run ahead beside the first ~40 steps.
    With a GPU the config's ``num_workers`` (at most one per core) and ``cache_size`` apply at full priority.
    ``train.precache_niceness`` overrides the niceness (a CPU shared with other busy processes wants 0).
    """
    t = config.train
    workers = max(1, min(t.num_workers, os.cpu_count() or 1))
    if runs_on_cpu(device):
        niceness = CPU_PRECACHE_NICENESS if t.precache_niceness is None else t.precache_niceness
        return {"num_workers": workers, "cache_size": min(t.cache_size, 2 * workers), "niceness": niceness}
    return {"num_workers": workers, "cache_size": t.cache_size, "niceness": t.precache_niceness or 0}


@dataclass
class TrainingSetup:
    """What the train loop needs besides the pipeline: the request and the train node (for checkpoints)."""

    pipeline: gp.Pipeline
    request: gp.BatchRequest
    train_node: KerasTrain


def build_train_pipeline(
    folder: NetworkFolder,
    max_iteration: int,
    first_iteration: int = 1,
    phase: str = "euclid",
    device: str | None = None,
    data_dir: Path = DATA_DIR,
) -> TrainingSetup:
    """The training pipeline of a network folder.

    Args:
        folder: the network folder (read once by the caller).
        max_iteration: the last iteration (a checkpoint is written there).
        first_iteration: the iteration of the first batch (for snapshot numbering when resuming).
        phase: ``euclid`` (MSE) or ``malis`` (the malis network after its phase switch).
        device: ``cpu``, ``gpu``, ``gpu:N`` (default: a GPU if there is one).
        data_dir: where the datasets live.
    """
    config = folder.config
    t = config.train
    ds = get_dataset(config.dataset)
    voxel_size = gp.Coordinate(ds.voxel_size)
    io = network_io(config, "train")
    heads = set(io.outputs)
    out_shape = next(iter(io.outputs.values())).shape
    autocontext = config.is_autocontext
    raw_shape = config.autocontext.auto_input_shape if autocontext else config.input_shape
    labels_padding = gp.Coordinate(t.labels_padding)

    # ---- the request -------------------------------------------------------------------------------------------------
    request = gp.BatchRequest()
    request[RAW] = gp.ArraySpec(roi=_roi(raw_shape, voxel_size))
    for key in (LABELS, LABELS_MASK):
        request[key] = gp.ArraySpec(roi=_roi(out_shape, voxel_size))
    if "affs" in heads:
        for key in (GT_AFFS, GT_AFFS_MASK) + ((GT_AFFS_SCALE,) if phase == "euclid" else ()):
            request[key] = gp.ArraySpec(roi=_roi(out_shape, voxel_size))
    if "lsds" in heads:
        request[GT_LSDS] = gp.ArraySpec(roi=_roi(out_shape, voxel_size))
    if autocontext:
        request[PRETRAINED_LSDS] = gp.ArraySpec(roi=_roi(config.input_shape, voxel_size))
    snapshot_request = gp.BatchRequest()
    for head, pred, grad in (("affs", PRED_AFFS, AFFS_GRADIENT), ("lsds", PRED_LSDS, LSDS_GRADIENT)):
        if head in heads:
            snapshot_request[pred] = gp.ArraySpec(roi=_roi(out_shape, voxel_size))
            snapshot_request[grad] = gp.ArraySpec(roi=_roi(out_shape, voxel_size))

    # ---- the network's inputs and losses -------------------------------------------------------------------------
    inputs = {"raw": RAW} if not autocontext else {}
    if autocontext:
        inputs["lsds"] = PRETRAINED_LSDS
        if config.network == "acrlsd":
            inputs["raw"] = RAW
    targets, losses, weights_fns = {}, {}, {}
    if "lsds" in heads:
        # the LSD loss is weighted by the labels mask: background LSDs (all 0) are trained too, padding is not
        targets["lsds"] = (GT_LSDS, LABELS_MASK)
    if "affs" in heads:
        targets["affs"] = (GT_AFFS, GT_AFFS_SCALE if phase == "euclid" else GT_AFFS_MASK)
    if phase == "malis":

        neighborhood = [tuple(o) for o in config.neighborhood]

        def malis_weights(pred, batch):
            return malis_loss_weights(pred, batch[GT_AFFS].data, batch[LABELS].data, neighborhood, batch[GT_AFFS_MASK].data)

        def malis_loss(gt, pred, weights):
            import tensorflow as tf

            return tf.reduce_sum(weights * tf.square(gt - pred))

        weights_fns["affs"] = malis_weights
        losses["affs"] = malis_loss

    train_node = KerasTrain(
        lambda: build_model(config, "train"),
        config,
        folder.path,
        inputs=inputs,
        targets=targets,
        outputs={h: k for h, k in (("affs", PRED_AFFS), ("lsds", PRED_LSDS)) if h in heads},
        gradients={h: k for h, k in (("affs", AFFS_GRADIENT), ("lsds", LSDS_GRADIENT)) if h in heads},
        save_every=t.save_every,
        max_iteration=max_iteration,
        device=device,
        losses=losses,
        weights_fns=weights_fns,
        restore_optimizer=not (phase == "malis" and first_iteration == t.malis_phase_switch + 1),
        weights_inputs=[LABELS] if phase == "malis" else None,
    )

    # ---- sources: one branch per volume ----------------------------------------------------------------------------
    volumes = training_volumes(config, data_dir)
    sources = tuple(
        ZarrSource(
            str(path),
            {RAW: RAW_DATASET, LABELS: NEURON_IDS, LABELS_MASK: LABELS_MASK_DATASET},
            {
                RAW: gp.ArraySpec(interpolatable=True),
                LABELS: gp.ArraySpec(interpolatable=False),
                LABELS_MASK: gp.ArraySpec(interpolatable=False),
            },
            role="training volume",
        )
        # uint8 → float32 in [0, 1]
        + gp.Normalize(RAW)
        # raw may be read anywhere (zeros outside)
        + gp.Pad(RAW, None)
        # labels and mask are padded by the network's context: padding is masked out
        + gp.Pad(LABELS, labels_padding)
        + gp.Pad(LABELS_MASK, labels_padding)
        # a random batch location with at least min_masked of it inside the mask (an error if there is none)
        + RandomLocation(min_masked=t.min_masked, mask=LABELS_MASK, volume=str(path), setting=f"train.min_masked in {folder.path / 'config.json'}")
        for path in volumes
    )
    probabilities = None
    if t.sample_probabilities is not None and len(t.sample_probabilities) == len(ds.volumes):
        chosen = [t.sample_probabilities[ds.volumes.index(p.name)] for p in volumes]
        probabilities = [p / sum(chosen) for p in chosen]

    # ---- augmentations and targets -------------------------------------------------------------------------------
    pipeline = sources + gp.RandomProvider(probabilities=probabilities)  # one volume per batch
    for e in t.elastic:
        # smooth deformations, rotation in-plane, section slips, shifts and misalignments
        pipeline += gp.ElasticAugment(
            control_point_spacing=list(e.control_point_spacing),
            jitter_sigma=list(e.jitter_sigma),
            rotation_interval=list(e.rotation_interval),
            prob_slip=e.prob_slip,
            prob_shift=e.prob_shift,
            max_misalign=e.max_misalign,
            subsample=e.subsample,
        )
    # mirror any axis; transpose only the isotropic ones (y, x) for anisotropic data
    pipeline += gp.SimpleAugment(transpose_only=t.transpose_only)
    # contrast and brightness (per section for anisotropic data)
    i = t.intensity
    pipeline += gp.IntensityAugment(RAW, i.scale_min, i.scale_max, i.shift_min, i.shift_max, z_section_wise=i.z_section_wise)
    if "affs" in heads and t.grow_boundary is not None:
        # separate touching objects by background
        pipeline += gp.GrowBoundary(LABELS, LABELS_MASK, steps=t.grow_boundary.steps, only_xy=t.grow_boundary.only_xy)
    if phase == "malis":
        # MALIS counts pairs within connected objects
        pipeline += RenumberConnectedComponents(LABELS)
    if "lsds" in heads:
        # the 10 LSD channels (sigma in nm, statistics on a strided grid): lsds' values, computed per label
        pipeline += AddLocalShapeDescriptor(LABELS, GT_LSDS, sigma=config.lsds.sigma, downsample=config.lsds.downsample)
    if "affs" in heads:
        # affinities and their mask from the labels and the labels mask
        pipeline += gp.AddAffinities(
            [list(o) for o in config.neighborhood], LABELS, GT_AFFS, labels_mask=LABELS_MASK, affinities_mask=GT_AFFS_MASK, dtype=np.float32
        )
        if phase == "euclid":
            # class-balancing loss weights
            pipeline += gp.BalanceLabels(GT_AFFS, GT_AFFS_SCALE, GT_AFFS_MASK)
    # raw in [-1, 1]
    pipeline += gp.IntensityScaleShift(RAW, 2, -1)
    # prepare batches in parallel (a worker's error stops training)
    pipeline += PreCache(**precache_arrangement(config, device))
    if autocontext:
        lsd_config = folder.lsd.config
        try:
            _, lsd_checkpoint = resolve_checkpoint(folder.lsd.path, config.autocontext.lsd_iteration)
        except ConfigError as e:
            raise ConfigError(f"{config.network} needs the lsd net at iteration {config.autocontext.lsd_iteration}: {e}") from None
        # the frozen lsd net's LSDs from the larger raw input
        pipeline += KerasPredict(
            lambda: build_auto_model(lsd_config, config.autocontext.auto_input_shape),
            lsd_checkpoint,
            {"raw": RAW},
            {"lsds": PRETRAINED_LSDS},
            device=device,
            check=lambda trained: check_compatible(lsd_checkpoint, trained, lsd_config),
            tf32=config.tf32,
        )
        # as stored at inference: uint8
        pipeline += QuantizeUInt8(PRETRAINED_LSDS)
    # one training iteration
    pipeline += train_node
    # raw back to [0, 1] for snapshots
    pipeline += gp.IntensityScaleShift(RAW, 0.5, 0.5)
    # batches, predictions and gradients to snapshots/batch_<iteration>.hdf
    pipeline += Snapshot(
        {k: v for k, v in SNAPSHOT_DATASETS.items() if k in request or k in snapshot_request},
        folder.path / "snapshots",
        every=t.snapshot_every,
        first_iteration=first_iteration,
        additional_request=snapshot_request,
        dataset_dtypes={LABELS: np.uint64},
    )
    if t.profiling_every is not None:
        # where the time goes, on request
        pipeline += gp.PrintProfilingStats(every=t.profiling_every)
    return TrainingSetup(pipeline, request, train_node)

