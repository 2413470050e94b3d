"""Step 1 of ``03_predict``: blockwise prediction of a volume larger than memory, with daisy 2.

One block is one network pass: it reads the network's prediction input (raw, and for the autocontext nets the
stored LSDs) around its write ROI, which is one network output. Outputs are written as uint8 (prediction ×255,
truncated) to ``volumes/affs`` and/or ``volumes/lsds`` of ``out_file`` with the attrs ``resolution`` and ``offset``
(nm). aclsd/acrlsd read ``volumes/lsds`` of the same ``out_file``; when they are not there, the configured lsd
network (``autocontext.lsd_setup`` at ``autocontext.lsd_iteration``) predicts them first, over the region the
affinities need. Each worker loads its model and traces its pass once; done blocks are recorded, so a re-run resumes.
Every check (raw, checkpoints, region, and existing outputs of both networks of a chain: another voxel size, ROI,
network or iteration needs ``--overwrite``) comes before the first block of either network.

What a block costs beside the network (benchmarks/blockwise.py): a worker imports only what it needs (not
gunpowder), reads no optimizer state, converts uint8 in and out inside the traced pass, and writes zstd level 1;
with ``num_workers`` 1 the next block's pass runs while a block is written; worker processes skip the interpreter's
teardown once the blocks are done.

Run: ``python 03_predict/01_predict_blockwise.py CONFIG.json [--overwrite]``
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from funlib.geometry import Coordinate, Roi

from .blockwise import BlockwiseResult, OutputDataset, run_job
from .checkpoints import (
    assign_weights, check_compatible, load_checkpoint_config, load_weights, resolve_checkpoint, weights_digest,
)  # fmt: skip
from .config import ConfigError
from .data import AFFS, LSDS, PREDICTION_COMPRESSOR, PREDICTION_SETTINGS, Volume, open_dataset, read_padded, voxel_slices
from .device import check_device, select_device
from .experiment import NetworkConfig, NetworkFolder, load_network_folder
from .networks import build_model, network_io
from .run_config import RunConfig

OUTPUTS = {"affs": AFFS, "lsds": LSDS}


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
    region: Roi | None = None
    """The predicted region (nm): the write ROIs of the blocks tile it from its begin, in C order."""
    look_ahead: bool = False
    """Predict the next block of ``region`` (C order, the order daisy runs blocks in one process) while the current
    one is written: only where blocks come in that order (``num_workers`` 1)."""


def _setup_worker(job: PredictJob) -> dict[str, Any]:
    """Load the model once per worker (TensorFlow threads split between the workers) and trace its forward pass."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(job.threads)
        tf.config.threading.set_inter_op_parallelism_threads(job.threads)
    except RuntimeError:
        pass  # TensorFlow already running in this process (serial path): keep its threads
    select_device(job.device, tf32=job.config.tf32)
    model = build_model(job.config, "predict")
    assign_weights(model, load_weights(job.checkpoint), str(job.checkpoint))
    arrays = {name: volume.open("r") for name, volume in (("raw", job.raw), ("lsds", job.lsds)) if volume is not None}
    return {
        "forward": _forward_function(model, job.config, {name: array.dtype for name, array in arrays.items()}),
        **arrays,
        "outputs": {head: volume.open("r+") for head, volume in job.outputs.items()},
        "ahead": ThreadPoolExecutor(1, thread_name_prefix="predict-ahead") if job.look_ahead and job.region else None,
        "next": None,
    }


def _to_float(name: str, data: np.ndarray) -> np.ndarray:
    """A stored input as the network's float32 input: raw in [-1, 1], LSDs in [0, 1] (per voxel, in float32)."""
    x = data.astype(np.float32) / 255.0
    return x * 2.0 - 1.0 if name == "raw" else x


def _forward_function(model, config: NetworkConfig, dtypes: dict[str, np.dtype]):
    """The traced forward pass of a block: stored inputs (channels-first; ``dtypes`` of the stored arrays, uint8
    where not given) in, the stored uint8 outputs (``floor(clip(prediction, 0, 1) · 255)``, channels-first) out.

    uint8 inputs become floats by a 256-entry table (:func:`_to_float` of every value, hence the same numbers), and
    the conversions in and out run in TensorFlow's threads beside the network, not in Python: a block then costs
    little more than the network (benchmarks/blockwise.py). It is traced here, once, for the block's input shape.
    """
    import tensorflow as tf

    inputs = network_io(config, "predict").inputs
    uint8 = [name for name in inputs if dtypes.get(name, np.uint8) == np.uint8]
    tables = {name: tf.constant(_to_float(name, np.arange(256, dtype=np.uint8))) for name in uint8}
    signature = {
        name: tf.TensorSpec((spec.channels, *spec.shape), tf.uint8 if name in tables else tf.float32)
        for name, spec in inputs.items()
    }  # fmt: skip

    @tf.function(input_signature=[signature])
    def forward(stored):
        inputs = {}
        for name, x in stored.items():
            if name in tables:
                x = tf.gather(tables[name], tf.cast(x, tf.int32))
            # channels last (one channel: a reshape, no copy)
            inputs[name] = tf.reshape(x, (1, *x.shape[1:], 1)) if x.shape[0] == 1 else tf.transpose(x, (1, 2, 3, 0))[None]
        predictions = model(inputs, training=False)
        # channels first after the cast to uint8: the transpose moves a quarter of the bytes
        return {
            head: tf.transpose(tf.cast(tf.floor(tf.clip_by_value(p[0], 0.0, 1.0) * 255.0), tf.uint8), (3, 0, 1, 2))
            for head, p in predictions.items()
        }

    forward.get_concrete_function()
    return forward


def _read_input(job: PredictJob, read_roi: Roi, resources: dict[str, Any]) -> dict[str, np.ndarray]:
    """A block's stored inputs (zeros outside the volume), channels-first; as floats unless uint8."""
    x = {}
    for name, volume in (("raw", job.raw), ("lsds", job.lsds)):
        if volume is not None:
            data = read_padded(resources[name], volume, read_roi)
            data = data if data.ndim == 4 else data[None]
            x[name] = data if data.dtype == np.uint8 else _to_float(name, data)
    return x


def _predict(job: PredictJob, read_roi: Roi, resources: dict[str, Any]) -> dict[str, np.ndarray]:
    """Read a block's input and run the network: its uint8 outputs, channels-first."""
    return {head: p.numpy() for head, p in resources["forward"](_read_input(job, read_roi, resources)).items()}


def _next_block(job: PredictJob, block) -> tuple[Coordinate, Roi] | None:
    """The write ROI's begin and the read ROI of the block after ``block`` in C order over the region (None: it was
    the last)."""
    size = block.write_roi.shape
    grid = [-(-s // b) for s, b in zip(job.region.shape, size)]
    index = [(w - r) // b for w, r, b in zip(block.write_roi.begin, job.region.begin, size)]
    following = int(np.ravel_multi_index(index, grid)) + 1
    if following >= np.prod(grid):
        return None
    begin = job.region.begin + Coordinate(int(i) * b for i, b in zip(np.unravel_index(following, grid), size))
    return begin, Roi(begin + (block.read_roi.begin - block.write_roi.begin), block.read_roi.shape)


def process_block(job: PredictJob, block, resources: dict[str, Any]) -> None:
    """One network pass: read the block's input (zeros outside the volume), write its output where it is inside.

    With ``job.look_ahead``, the next block's pass runs while this block is written: a block is recorded done when
    this function returns, so its output must be written by then, but the network need not wait for the write. A
    look-ahead that was not for this block (a block skipped as done, or another order) is dropped; one that failed
    is computed again here, where its error belongs to its block.
    """
    predictions = None
    ahead, resources["next"] = resources["next"], None
    if ahead is not None:
        begin, future = ahead
        try:
            predictions = future.result()
        except Exception:  # noqa: BLE001 - computed again below, in its own block
            predictions = None
        if begin != block.write_roi.begin:
            predictions = None
    if predictions is None:
        predictions = _predict(job, block.read_roi, resources)
    following = _next_block(job, block) if resources["ahead"] is not None else None
    if following is not None:
        begin, read_roi = following
        resources["next"] = (begin, resources["ahead"].submit(_predict, job, read_roi, resources))
    for head, volume in job.outputs.items():
        inside = block.write_roi.intersect(volume.roi)
        crop = tuple(slice((b - w) // v, (e - w) // v) for b, e, w, v in zip(inside.begin, inside.end, block.write_roi.begin, volume.voxel_size))
        resources["outputs"][head][(slice(None), *voxel_slices(volume, inside))] = predictions[head][(slice(None), *crop)]


def _check_voxel_size(path: Path, voxel_size: Coordinate, overwrite: bool) -> None:
    """An existing output of another voxel size (e.g. from another tool, without our settings) needs ``overwrite``."""
    import zarr

    if overwrite or not path.exists():
        return
    resolution = zarr.open_array(path, mode="r").attrs.asdict().get("resolution")
    if resolution is not None and tuple(int(v) for v in resolution) != tuple(voxel_size):
        raise ConfigError(
            f"'{path}' has voxel size {tuple(int(v) for v in resolution)} nm, the raw {tuple(voxel_size)} nm; "
            "pass --overwrite to predict it again"
        )


def _check_raw(raw: Volume, folder: NetworkFolder) -> None:
    """The raw must be what the network was trained on: uint8 (0-255) at the training dataset's voxel size.

    Raises:
        ConfigError: another dtype (float in [0, 1] or uint16 would be scaled wrongly: garbage affinities), or
            another voxel size than the dataset's in ``01_data/datasets.json``.
    """
    import zarr

    from .datasets import get_dataset

    dtype = zarr.open_array(raw.path, mode="r").dtype
    if dtype != np.uint8:
        raise ConfigError(
            f"raw '{raw.path}' is {dtype}; the networks take uint8 raw (0-255, as they were trained): convert it to "
            "uint8 first, stating the intensity range mapped to 0-255"
        )
    dataset = folder.config.dataset
    try:
        trained = Coordinate(get_dataset(dataset).voxel_size)
    except ConfigError:  # a dataset the registry does not know: nothing to compare with
        return
    if trained != raw.voxel_size:
        raise ConfigError(
            f"raw '{raw.path}' has voxel size {tuple(raw.voxel_size)} nm, but {folder.path.name} was trained on "
            f"{dataset} at {tuple(trained)} nm: resample the raw to {tuple(trained)} nm first (a network sees "
            "structures at the scale it was trained at)"
        )


@dataclass(frozen=True)
class _Pass:
    """One network's prediction over a region: what it writes and how its blocks are laid out."""

    folder: NetworkFolder
    checkpoint: Path
    out_roi: Roi
    voxel_size: Coordinate
    in_shape: Coordinate
    out_shape: Coordinate
    outputs: dict[str, OutputDataset]
    """Output head → its dataset in out_file."""
    tracking: Path

    @property
    def context(self) -> Coordinate:
        return (self.in_shape - self.out_shape) * self.voxel_size / 2


def _plan(run: RunConfig, folder: NetworkFolder, setup: Path, iteration, out_roi: Roi, voxel_size: Coordinate) -> _Pass:
    """Resolve the checkpoint and lay out the prediction of ``out_roi`` with the network of ``folder`` (no writes);
    ``setup`` is the folder as the outputs' settings record it."""
    config = folder.config
    it, checkpoint = resolve_checkpoint(folder.path, iteration)
    check_compatible(checkpoint, load_checkpoint_config(checkpoint), config)
    io = network_io(config, "predict")
    out_shape = Coordinate(next(iter(io.outputs.values())).shape)
    # everything the predicted values depend on: a resume with another raw or other weights must not mix them in
    settings = {
        "setup": str(setup), "iteration": it, "roi": [list(out_roi.offset), list(out_roi.shape)],
        "voxel_size": list(voxel_size), "raw": [str(run.path(run.raw_file).resolve()), run.raw_dataset],
        "weights": weights_digest(checkpoint),
    }  # fmt: skip
    outputs = {
        head: OutputDataset(
            run.out_path / OUTPUTS[head], out_roi, voxel_size, chunk_shape=tuple(out_shape), dtype=np.uint8,
            settings_attr=PREDICTION_SETTINGS, settings=settings, channels=spec.channels, compressor=PREDICTION_COMPRESSOR,
            kept_on_overwrite=True,  # the same network, weights, raw and ROI predict the same values: hours saved
        )
        for head, spec in io.outputs.items()
    }  # fmt: skip
    return _Pass(
        folder=folder,
        checkpoint=checkpoint,
        out_roi=out_roi,
        voxel_size=voxel_size,
        in_shape=Coordinate(config.predict_input_shape),
        out_shape=out_shape,
        outputs=outputs,
        tracking=run.blocks_dir / f"predict_{folder.name}",
    )


def _run_pass(
    run: RunConfig, plan: _Pass, raw: Volume | None, lsds: Volume | None, keep: bool, progress: bool
) -> tuple[dict[str, Volume], BlockwiseResult]:
    """Create the outputs of ``plan`` (unless ``keep``: resume into them) and predict its blocks."""
    vs = plan.voxel_size
    if not keep:
        for output in plan.outputs.values():
            output.create(plan.tracking)
    outputs = {head: output.volume for head, output in plan.outputs.items()}
    inputs = network_io(plan.folder.config, "predict").inputs
    serial = run.num_workers == 1 and not run.worker_command
    job = PredictJob(plan.folder.config, plan.checkpoint, raw if "raw" in inputs else None, lsds if "lsds" in inputs else None,
                     outputs, run.device, max(1, (os.cpu_count() or 1) // run.num_workers), plan.out_roi, look_ahead=serial)
    context = plan.context
    result = run_job(
        f"predict_{plan.folder.name}", plan.out_roi.grow(context, context), Roi(-context, plan.in_shape * vs),
        Roi((0, 0, 0), plan.out_shape * vs), job, process_block, _setup_worker, run, plan.tracking, progress,
        fit="overhang", quick_exit=True,
    )
    return outputs, result


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict_blockwise` will do, every check done and nothing written (:func:`plan_prediction`)."""

    raw: Volume
    passes: list[_Pass]
    """The lsd net's pass first for aclsd/acrlsd, then the network's."""
    keep: list[bool]
    """Per pass: its outputs exist with the same settings (resume into them)."""

    @property
    def affs(self) -> Volume | None:
        """Where the affinities will be (``volumes/affs`` over the predicted region); None: the network predicts none."""
        output = self.passes[-1].outputs.get("affs")
        return output.volume if output is not None else None


def plan_prediction(run: RunConfig, overwrite: bool = False) -> Prediction:
    """Every check of step 1, and its plan; nothing is written.

    The region is ``roi_offset``/``roi_shape`` if given, else the raw volume shrunk by the network's context. Checked:
    the network folder(s), raw present, checkpoints present, region inside the raw volume and voxel-aligned, and
    existing outputs (``volumes/lsds`` of an autocontext chain included) made with the same settings — an output of
    another voxel size, ROI, network or iteration needs ``overwrite``.

    Raises:
        ConfigError: any of the checks above, as one line.
    """
    if run.setup is None:
        raise ConfigError("no 'setup' (network folder) in the run config: nothing to predict with")
    check_device(run.device, local=not run.worker_command)
    setup = run.path(run.setup)
    folder = load_network_folder(setup)
    config = folder.config
    raw = open_dataset(run.path(run.raw_file), run.raw_dataset, "raw")
    vs = raw.voxel_size
    _check_raw(raw, folder)
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
    if folder.lsd is not None:
        # the LSDs over everything the affs net reads (a re-run resumes them, or skips them when done)
        lsd = folder.lsd
        plans.append(_plan(run, lsd, lsd.path, config.autocontext.lsd_iteration, out_roi.grow(context, context), vs))
    plans.append(_plan(run, folder, setup, run.iteration, out_roi, vs))
    # every existing output is checked before any block runs (a mismatched affs must not wait for the LSD pass)
    for plan in plans:
        for output in plan.outputs.values():
            _check_voxel_size(output.path, vs, overwrite)
    keep = [all([output.reusable(overwrite) for output in plan.outputs.values()]) for plan in plans]
    return Prediction(raw, plans, keep)


def predict_blockwise(run: RunConfig, overwrite: bool = False, progress: bool = True) -> BlockwiseResult:
    """Predict ``run.raw_file`` with ``run.setup`` blockwise into ``run.out_file`` (LSDs first for aclsd/acrlsd).

    Every check of :func:`plan_prediction` comes before any block of any network runs.

    Args:
        run: the run config (``setup``, ``iteration``, ``raw_file``, ``raw_dataset``, ``out_file``,
            ``roi_offset``/``roi_shape``, ``num_workers``, ``worker_command``, ``device``).
        overwrite: replace outputs made with other settings (and predict them again).
        progress: show daisy's progress bar.

    Returns:
        The blocks of the (last) network's prediction: total, processed now, skipped.

    Raises:
        ConfigError: any check, as one line, before anything is predicted.
    """
    import zarr

    prediction = plan_prediction(run, overwrite)
    out_file = run.out_path
    out_file.parent.mkdir(parents=True, exist_ok=True)
    zarr.open_group(out_file, mode="a", zarr_format=2)
    lsds = None
    for plan, kept in zip(prediction.passes, prediction.keep):
        outputs, result = _run_pass(run, plan, prediction.raw, lsds, kept, progress)
        lsds = outputs.get("lsds")
    return result
