"""predict_scan: predict a whole (small) volume in memory with gunpowder's Scan.

Writes ``<network folder>/test_prediction.zarr`` with ``pred_affs`` and/or ``pred_lsds`` (uint8, prediction ×255,
truncated as the original stored them), each with the attrs ``resolution`` and ``offset`` (nm) of the real ROI
(the original assumed offset 0). aclsd/acrlsd read ``pred_lsds`` of their lsd net's ``test_prediction.zarr``
(acrlsd joins raw and LSDs with a MergeProvider), or compute the LSDs in the same pipeline from the lsd checkpoint
(``lsds_on_the_fly``). A raw volume smaller than one network input is padded with zeros, not refused.
"""

from __future__ import annotations

from pathlib import Path

import gunpowder as gp
import numpy as np

from .checkpoints import check_compatible, resolve_checkpoint
from .config import ConfigError
from .data import RAW as RAW_DATASET
from .data import write_container
from .datasets import get_dataset, volume_path
from .device import check_device
from .experiment import NetworkConfig, NetworkFolder
from .networks import build_model, network_io, smallest_input_for, unet_output_shape
from .nodes import KerasPredict, QuantizeUInt8, ZarrSource

OUT_FILE = "test_prediction.zarr"
DATASETS = {"affs": "pred_affs", "lsds": "pred_lsds"}
RAW, LSDS = gp.ArrayKey("RAW"), gp.ArrayKey("LSDS")


def default_raw_file(config: NetworkConfig) -> Path:
    """The dataset's first test volume (synthetic) or its first training volume (the original's default)."""
    ds = get_dataset(config.dataset)
    if ds.test_volumes:
        return volume_path(config.dataset, ds.test_volumes[0], test=True)
    return volume_path(config.dataset, ds.volumes[0])


def _spec(path: Path, dataset: str, key: gp.ArrayKey) -> gp.ArraySpec:
    """ROI and voxel size of a zarr dataset (attrs ``resolution`` and ``offset``)."""
    if not (Path(path) / dataset).exists():
        raise ConfigError(f"{path}: no dataset '{dataset}'")
    source = ZarrSource(str(path), {key: dataset})
    with gp.build(source):
        return source.spec[key].copy()


def _source(path: Path, dataset: str, key: gp.ArrayKey, scale_shift: bool):
    pipeline = (
        ZarrSource(str(path), {key: dataset}, {key: gp.ArraySpec(interpolatable=True)})
        # uint8 → [0, 1]
        + gp.Normalize(key)
        # zeros outside the volume
        + gp.Pad(key, None)
    )
    # raw: [0, 1] → [-1, 1], as in training
    return pipeline + gp.IntensityScaleShift(key, 2, -1) if scale_shift else pipeline


def _output_roi(roi: gp.Roi, context: gp.Coordinate, chunk: gp.Coordinate, voxel_size: gp.Coordinate) -> gp.Roi:
    """``roi`` shrunk by ``context`` (nm), but along every axis at least one output chunk (centred; input padded)."""
    out = roi.grow(-context, -context)
    begin, shape = list(out.offset), list(out.shape)
    for a in range(3):
        if shape[a] < chunk[a]:
            centre = roi.offset[a] + roi.shape[a] // 2
            begin[a] = (centre - chunk[a] // 2) // voxel_size[a] * voxel_size[a]
            shape[a] = chunk[a]
    return gp.Roi(begin, shape)


PROVENANCE = "lsd_nm_prediction"
"""Attr of a ``test_prediction.zarr`` array: the network, folder, iteration and checkpoint that predicted it."""


def _provenance(container: Path, head: str) -> dict | None:
    """The provenance attr of ``container``'s prediction of ``head`` (``{}`` if none is recorded), None if absent."""
    import zarr

    path = Path(container) / DATASETS[head]
    if not path.exists():
        return None
    return zarr.open_array(path, mode="r").attrs.asdict().get(PROVENANCE, {})


def predict_scan(
    folder: NetworkFolder,
    iteration: int | str = "latest",
    raw_file: Path | None = None,
    raw_dataset: str = RAW_DATASET,
    out_file: Path | None = None,
    lsds_on_the_fly: bool = False,
    device: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Predict a volume with a network folder's checkpoint and write it; returns the output container.

    Every array of the output records where it comes from (attr ``lsd_nm_prediction``: network, folder, iteration,
    checkpoint). An output of another checkpoint is not replaced without ``overwrite``; aclsd/acrlsd refuse LSDs that
    the lsd net's ``autocontext.lsd_iteration`` did not predict.

    Args:
        folder: the network folder (read once by the caller).
        iteration: the checkpoint (an int or ``"latest"``).
        raw_file, raw_dataset: the raw volume (default: the dataset's test volume, ``volumes/raw``).
        out_file: the output container (default: ``<folder>/test_prediction.zarr``); replaced only when complete.
        lsds_on_the_fly: aclsd/acrlsd: predict the LSDs with the lsd net here instead of reading them from disk.
        device: ``cpu``, ``gpu``, ``gpu:N`` (default: a GPU if there is one).
        overwrite: replace an output predicted with another checkpoint.

    Raises:
        ConfigError: no such checkpoint, an output of another checkpoint without ``overwrite``, stored LSDs of
            another lsd iteration — before anything is predicted.
    """
    check_device(device)
    config = folder.config
    it, checkpoint = resolve_checkpoint(folder.path, iteration)
    raw_file = Path(raw_file) if raw_file else default_raw_file(config)
    out_file = Path(out_file) if out_file else folder.path / OUT_FILE
    provenance = {"network": config.network, "folder": str(folder.path), "iteration": it, "checkpoint": str(checkpoint)}
    made_by = _provenance(out_file, next(iter(network_io(config, "predict").outputs)))
    if made_by is not None and made_by.get("iteration") != it and not overwrite:
        raise ConfigError(
            f"{out_file} holds the prediction of iteration {made_by.get('iteration', '(not recorded)')}; "
            f"pass --overwrite to replace it with iteration {it}'s"
        )
    io = network_io(config, "predict")
    in_shape = gp.Coordinate(config.predict_input_shape)
    out_shape = gp.Coordinate(next(iter(io.outputs.values())).shape)
    outputs = {head: gp.ArrayKey(f"PRED_{head.upper()}") for head in io.outputs}
    raw_shape = in_shape  # the raw input of a chunk

    if not config.is_autocontext:
        spec = _spec(raw_file, raw_dataset, RAW)
        pipeline = _source(raw_file, raw_dataset, RAW, scale_shift=True)
        region, context = spec.roi, (in_shape - out_shape) / 2
        inputs = {"raw": RAW}
    elif lsds_on_the_fly:
        lsd_config = folder.lsd.config
        _, lsd_checkpoint = resolve_checkpoint(folder.lsd.path, config.autocontext.lsd_iteration)
        # a raw input large enough for the lsd net to give LSDs over the whole affs input
        raw_shape = gp.Coordinate(smallest_input_for(lsd_config.unet, tuple(in_shape), tuple(lsd_config.predict_input_shape)))
        lsd_at_shape = lsd_config.model_copy(update={"predict_input_shape": tuple(raw_shape)})
        spec = _spec(raw_file, raw_dataset, RAW)
        pipeline = (
            _source(raw_file, raw_dataset, RAW, scale_shift=True)
            # the frozen lsd net's LSDs over the affs net's input
            + KerasPredict(lambda: build_model(lsd_at_shape, "predict"), lsd_checkpoint, {"raw": RAW}, {"lsds": LSDS},
                           device=device, check=lambda trained: check_compatible(lsd_checkpoint, trained, lsd_config),
                           tf32=config.tf32)
            # what storing them as uint8 would do
            + QuantizeUInt8(LSDS)
        )
        # the same region as the lsd net's own prediction: raw shrunk by the lsd net's context
        region = spec.roi
        context = (raw_shape - gp.Coordinate(unet_output_shape(lsd_config.unet, tuple(raw_shape)))) / 2
        inputs = {"lsds": LSDS} if config.network == "aclsd" else {"raw": RAW, "lsds": LSDS}
    else:
        lsd_file = folder.lsd.path / OUT_FILE
        if not lsd_file.exists():
            raise ConfigError(f"{lsd_file}: no LSDs; predict them first (python predict_scan.py in {lsd_file.parent}) or use --lsds-on-the-fly")
        lsd_made_by = _provenance(lsd_file, "lsds") or {}
        if lsd_made_by.get("iteration") != config.autocontext.lsd_iteration:
            raise ConfigError(
                f"{lsd_file}: its LSDs come from iteration {lsd_made_by.get('iteration', '(not recorded)')} of the lsd "
                f"net, {config.network} needs iteration {config.autocontext.lsd_iteration} (autocontext.lsd_iteration); "
                f"predict them with `python predict_scan.py {config.autocontext.lsd_iteration} --overwrite` in "
                f"{lsd_file.parent}, or use --lsds-on-the-fly"
            )
        spec = _spec(lsd_file, DATASETS["lsds"], LSDS)
        lsds = _source(lsd_file, DATASETS["lsds"], LSDS, scale_shift=False)
        if config.network == "acrlsd":
            # raw and LSDs from two containers: each request goes to the provider of its key
            pipeline = (_source(raw_file, raw_dataset, RAW, scale_shift=True), lsds) + gp.MergeProvider()
            inputs = {"raw": RAW, "lsds": LSDS}
        else:
            pipeline, inputs = lsds, {"lsds": LSDS}
        # as the original: affinities over the whole LSD region, LSDs zero-padded around it
        region, context = spec.roi, gp.Coordinate((0, 0, 0))

    voxel_size = spec.voxel_size
    model_raw_shape = tuple(raw_shape) if config.network == "acrlsd" else None
    pipeline += KerasPredict(
        lambda: build_model(config, "predict", raw_shape=model_raw_shape), checkpoint, inputs, outputs,
        device=device, check=lambda trained: check_compatible(checkpoint, trained, config), tf32=config.tf32,
    )
    # one network pass per chunk: inputs at the input size, predictions at the output size, all centred
    chunk = gp.BatchRequest()
    centre = raw_shape * voxel_size / 2
    if RAW in inputs.values() or lsds_on_the_fly:
        chunk[RAW] = gp.ArraySpec(roi=gp.Roi(centre - raw_shape * voxel_size / 2, raw_shape * voxel_size))
    if LSDS in inputs.values():
        chunk[LSDS] = gp.ArraySpec(roi=gp.Roi(centre - in_shape * voxel_size / 2, in_shape * voxel_size))
    for key in outputs.values():
        chunk[key] = gp.ArraySpec(roi=gp.Roi(centre - out_shape * voxel_size / 2, out_shape * voxel_size))
    pipeline += gp.Scan(chunk)

    out_roi = _output_roi(region, context * voxel_size, out_shape * voxel_size, voxel_size)
    request = gp.BatchRequest()
    for key in outputs.values():
        request[key] = gp.ArraySpec(roi=out_roi)
    with gp.build(pipeline):
        batch = pipeline.request_batch(request)
    arrays = {DATASETS[head]: np.floor(np.clip(batch[key].data, 0, 1) * 255).astype(np.uint8) for head, key in outputs.items()}
    write_container(out_file, arrays, voxel_size, out_roi.offset, attrs={PROVENANCE: provenance})
    return out_file
