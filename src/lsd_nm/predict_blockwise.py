"""Step 1 of ``03_predict``: blockwise prediction of a volume larger than memory, with daisy 2.

One block is one network pass: it reads the network's prediction input (raw, and for the autocontext nets the
stored LSDs) around its write ROI, which is one network output. Outputs are written as uint8 (prediction ×255,
truncated) to ``volumes/affs`` and/or ``volumes/lsds`` of ``out_file`` with the attrs ``resolution`` and ``offset``
(nm). aclsd/acrlsd read ``volumes/lsds`` of the same ``out_file``; when they are not there, the configured lsd
network (``autocontext.lsd_setup`` at ``autocontext.lsd_iteration``) predicts them first, over the region the
affinities need. Each worker loads its model once; done blocks are recorded, so a re-run resumes. Every check (raw,
checkpoints, region, and existing outputs of both networks of a chain: another voxel size, ROI, network or iteration
needs ``--overwrite``) comes before the first block of either network.

Run: ``python 03_predict/01_predict_blockwise.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from funlib.geometry import Coordinate, Roi

from .blockwise import BlockwiseResult, run_job
from .checkpoints import check_compatible, load_checkpoint, resolve_checkpoint
from .config import ConfigError
from .experiment import NetworkConfig, load_network_config
from .fragments import Volume, blocks_dir, open_dataset, read_padded, voxel_slices
from .networks import lsd_folder, network_io
from .run_config import RunConfig

OUTPUTS = {"affs": "volumes/affs", "lsds": "volumes/lsds"}
FINGERPRINT_ATTR = "lsd_nm_prediction"


@dataclass(frozen=True)
class PredictJob:
    """Everything a prediction worker needs (picklable)."""

    config: NetworkConfig
    checkpoint: Path
    raw: Volume | None
    lsds: Volume | None
    outputs: dict[str, Volume]
    device: str | None
    threads: int


def _setup_worker(job: PredictJob) -> dict[str, Any]:
    """Load the model once per worker (TensorFlow threads split between the workers)."""
    import tensorflow as tf

    from .checkpoints import assign_weights
    from .device import select_device
    from .networks import build_model

    try:
        tf.config.threading.set_intra_op_parallelism_threads(job.threads)
    except RuntimeError:
        pass  # TensorFlow already running in this process (serial path): keep its threads
    select_device(job.device, tf32=job.config.tf32)
    model = build_model(job.config, "predict")
    assign_weights(model, load_checkpoint(job.checkpoint)[0], str(job.checkpoint))
    return {
        "forward": tf.function(lambda x: model(x, training=False)),
        "raw": job.raw.open("r") if job.raw is not None else None,
        "lsds": job.lsds.open("r") if job.lsds is not None else None,
        "outputs": {head: volume.open("r+") for head, volume in job.outputs.items()},
    }


def process_block(job: PredictJob, block, resources: dict[str, Any]) -> None:
    """One network pass: read the block's input (zeros outside the volume), write its output where it is inside."""
    from .nodes.layout import from_keras, to_keras

    x = {}
    if job.raw is not None:
        raw = read_padded(resources["raw"], job.raw, block.read_roi).astype(np.float32)
        x["raw"] = to_keras(raw / 255.0 * 2.0 - 1.0)
    if job.lsds is not None:
        x["lsds"] = to_keras(read_padded(resources["lsds"], job.lsds, block.read_roi).astype(np.float32) / 255.0)
    preds = resources["forward"](x)
    for head, volume in job.outputs.items():
        data = np.floor(np.clip(from_keras(preds[head]), 0.0, 1.0) * 255.0).astype(np.uint8)
        inside = block.write_roi.intersect(volume.roi)
        crop = tuple(slice((b - w) // v, (e - w) // v) for b, e, w, v in zip(inside.begin, inside.end, block.write_roi.begin, volume.voxel_size))
        resources["outputs"][head][(slice(None), *voxel_slices(volume, inside))] = data[(slice(None), *crop)]


def _existing_voxel_size(path: Path) -> tuple[int, ...] | None:
    """The ``resolution`` attr (nm) of an existing output dataset, or None."""
    import zarr

    resolution = zarr.open_array(path, mode="r").attrs.asdict().get("resolution")
    return tuple(int(v) for v in resolution) if resolution is not None else None


def _check_output(path: Path, fingerprint: dict, voxel_size: Coordinate, overwrite: bool) -> bool:
    """Whether an output dataset can be kept as it is (an earlier run with the same settings: resume).

    Raises:
        ConfigError: it exists from other settings (another voxel size, ROI, network or iteration) and
            ``overwrite`` is not given.
    """
    import zarr

    if not path.exists():
        return False
    existing = zarr.open_array(path, mode="r").attrs.asdict().get(FINGERPRINT_ATTR)
    if existing == fingerprint and not overwrite:
        return True
    if overwrite:
        return False
    stored = _existing_voxel_size(path)
    if stored is not None and stored != tuple(voxel_size):
        raise ConfigError(
            f"'{path}' has voxel size {stored} nm, the raw {tuple(voxel_size)} nm; pass --overwrite to predict it again"
        )
    differs = sorted(k for k in fingerprint if (existing or {}).get(k) != fingerprint[k])
    raise ConfigError(f"'{path}' exists from other settings ({', '.join(differs)}); pass --overwrite to replace it")


def _create_output(
    path: Path, channels: int, roi: Roi, voxel_size: Coordinate, chunk: Coordinate, fingerprint: dict, tracking: Path
) -> None:
    """Create an output dataset (replacing what is there) and forget its done blocks."""
    import zarr

    from .data import COMPRESSOR

    shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(tracking, ignore_errors=True)
    container = path.parents[1]
    group = zarr.open_group(container, mode="a")
    shape = (channels,) + tuple(s // v for s, v in zip(roi.shape, voxel_size))
    array = group.require_group("volumes").create_array(
        path.name, shape=shape, chunks=(channels,) + tuple(min(c, s) for c, s in zip(chunk, shape[1:])),
        dtype=np.uint8, fill_value=0, compressors=COMPRESSOR,
    )
    array.attrs.update({"resolution": [int(v) for v in voxel_size], "offset": [int(v) for v in roi.offset], FINGERPRINT_ATTR: fingerprint})


@dataclass(frozen=True)
class _Pass:
    """One network's prediction over a region: what it writes and how its blocks are laid out."""

    folder: Path
    config: NetworkConfig
    checkpoint: Path
    out_roi: Roi
    voxel_size: Coordinate
    in_shape: Coordinate
    out_shape: Coordinate
    channels: dict[str, int]
    """Output head → channels."""
    paths: dict[str, Path]
    """Output head → its dataset in out_file."""
    fingerprint: dict
    tracking: Path

    @property
    def context(self) -> Coordinate:
        return (self.in_shape - self.out_shape) * self.voxel_size / 2


def _plan(run: RunConfig, folder: Path, iteration, out_roi: Roi, voxel_size: Coordinate) -> _Pass:
    """Resolve the checkpoint and lay out the prediction of ``out_roi`` with the network of ``folder`` (no writes)."""
    config = load_network_config(folder)
    it, checkpoint = resolve_checkpoint(folder, iteration)
    check_compatible(checkpoint, load_checkpoint(checkpoint)[2], config)
    io = network_io(config, "predict")
    out_file = run.path(run.out_file)
    return _Pass(
        folder=folder,
        config=config,
        checkpoint=checkpoint,
        out_roi=out_roi,
        voxel_size=voxel_size,
        in_shape=Coordinate(config.predict_input_shape),
        out_shape=Coordinate(next(iter(io.outputs.values())).shape),
        channels={head: spec.channels for head, spec in io.outputs.items()},
        paths={head: out_file / OUTPUTS[head] for head in io.outputs},
        fingerprint={
            "setup": str(folder), "iteration": it, "roi": [list(out_roi.offset), list(out_roi.shape)],
            "voxel_size": list(voxel_size),
        },  # fmt: skip
        tracking=blocks_dir(run) / f"predict_{folder.name}",
    )


def _run_pass(
    run: RunConfig, plan: _Pass, raw: Volume | None, lsds: Volume | None, keep: bool, progress: bool
) -> tuple[dict[str, Volume], BlockwiseResult]:
    """Create the outputs of ``plan`` (unless ``keep``: resume into them) and predict its blocks."""
    vs = plan.voxel_size
    if not keep:
        for head, path in plan.paths.items():
            _create_output(path, plan.channels[head], plan.out_roi, vs, plan.out_shape, plan.fingerprint, plan.tracking)
    outputs = {head: Volume(path, plan.out_roi, vs) for head, path in plan.paths.items()}
    inputs = network_io(plan.config, "predict").inputs
    job = PredictJob(plan.config, plan.checkpoint, raw if "raw" in inputs else None, lsds if "lsds" in inputs else None,
                     outputs, run.device, max(1, (os.cpu_count() or 1) // run.num_workers))
    context = plan.context
    result = run_job(
        f"predict_{plan.folder.name}", plan.out_roi.grow(context, context), Roi(-context, plan.in_shape * vs),
        Roi((0, 0, 0), plan.out_shape * vs), job, process_block, _setup_worker, run, plan.tracking, progress,
        fit="overhang",
    )
    return outputs, result


def predict_blockwise(run: RunConfig, overwrite: bool = False, progress: bool = True) -> BlockwiseResult:
    """Predict ``run.raw_file`` with ``run.setup`` blockwise into ``run.out_file`` (LSDs first for aclsd/acrlsd).

    The region is ``roi_offset``/``roi_shape`` if given, else the raw volume shrunk by the network's context.
    Every check comes before any block of any network runs: raw present, checkpoints present, region inside the raw
    volume and voxel-aligned, and existing outputs (``volumes/lsds`` of an autocontext chain included) made with the
    same settings — an output of another voxel size, ROI, network or iteration needs ``overwrite``.

    Args:
        run: the run config (``setup``, ``iteration``, ``raw_file``, ``raw_dataset``, ``out_file``,
            ``roi_offset``/``roi_shape``, ``num_workers``, ``worker_command``, ``device``).
        overwrite: replace outputs made with other settings (and predict them again).
        progress: show daisy's progress bar.

    Returns:
        The blocks of the (last) network's prediction: total, processed now, skipped.

    Raises:
        ConfigError: any of the checks above, as one line, before anything is predicted.
    """
    import zarr

    if run.setup is None:
        raise ConfigError("no 'setup' (network folder) in the run config: nothing to predict with")
    folder = run.path(run.setup)
    config = load_network_config(folder)
    raw = open_dataset(run.path(run.raw_file), run.raw_dataset, "raw")
    vs = raw.voxel_size
    io = network_io(config, "predict")
    context = (Coordinate(config.predict_input_shape) - Coordinate(next(iter(io.outputs.values())).shape)) * vs / 2
    if run.roi_offset is not None:
        out_roi = Roi(run.roi_offset, run.roi_shape)
        if any(x % v for x, v in zip(tuple(out_roi.offset) + tuple(out_roi.shape), tuple(vs) * 2)):
            raise ConfigError(f"roi_offset/roi_shape {tuple(out_roi.offset)}/{tuple(out_roi.shape)} nm are not multiples of the voxel size {tuple(vs)} nm")
        if not raw.roi.contains(out_roi):
            raise ConfigError(f"the ROI {out_roi} is not inside the raw volume {raw.roi}")
    else:
        out_roi = raw.roi.grow(-context, -context)
        if out_roi.empty or any(s <= 0 for s in out_roi.shape):
            raise ConfigError(f"raw volume {raw.roi} is smaller than the network's context; give roi_offset/roi_shape")
    plans = []
    if config.autocontext is not None:
        # the LSDs over everything the affs net reads (a re-run resumes them, or skips them when done)
        lsd_dir = lsd_folder(folder, config)
        plans.append(_plan(run, lsd_dir, config.autocontext.lsd_iteration, out_roi.grow(context, context), vs))
    plans.append(_plan(run, folder, run.iteration, out_roi, vs))
    # every existing output is checked before any block runs (a mismatched affs must not wait for the LSD pass)
    keep = [all([_check_output(p, plan.fingerprint, vs, overwrite) for p in plan.paths.values()]) for plan in plans]
    out_file = run.path(run.out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    zarr.open_group(out_file, mode="a", zarr_format=2)
    lsds = None
    for plan, kept in zip(plans, keep):
        outputs, result = _run_pass(run, plan, raw, lsds, kept, progress)
        lsds = outputs.get("lsds")
    return result


def main(argv: Sequence[str]) -> int:
    """``01_predict_blockwise.py CONFIG.json [--overwrite]``."""
    from .fragments import run_blockwise_step

    return run_blockwise_step(
        argv, "01_predict_blockwise.py", "blockwise network prediction into out_file", predict_blockwise, "predict"
    )
