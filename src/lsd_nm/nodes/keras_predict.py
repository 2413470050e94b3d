"""KerasPredict: add a Keras network's predictions to every batch that passes through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gunpowder as gp
import numpy as np
from gunpowder.nodes.generic_predict import GenericPredict

from ..checkpoints import assign_weights, load_checkpoint
from ..device import select_device
from .layout import from_keras, to_keras


class KerasPredict(GenericPredict):
    """Predict with a Keras model built in the predicting process and loaded from a checkpoint once.

    The network's output is centred in its input (valid convolutions); each requested output ROI must lie inside
    it and is cut out of it, so requests may be smaller than the network's output (e.g. the autocontext crop).

    Args:
        model_fn (callable): returns the Keras model (called once, in :meth:`start`).
        checkpoint (Path): a ``train_net_checkpoint_<N>`` folder whose weights are loaded.
        inputs (dict): network input name → :class:`gunpowder.ArrayKey` (channels-first).
        outputs (dict): head → key of the prediction (float32 in [0, 1], channels-first).
        array_specs (dict, optional): specs of the outputs (e.g. a voxel size).
        device (str, optional): ``cpu``, ``gpu``, ``gpu:N`` (default: a GPU if there is one).
        check (callable, optional): ``check(trained_config)`` run on the checkpoint's config before loading.
        tf32 (bool): allow TensorFloat-32 on the GPU (the network config's ``tf32``); default FP32.
    """

    def __init__(
        self,
        model_fn: Callable,
        checkpoint: Path,
        inputs: dict[str, gp.ArrayKey],
        outputs: dict[str, gp.ArrayKey],
        array_specs: dict | None = None,
        device: str | None = None,
        check: Callable | None = None,
        tf32: bool = False,
    ):
        super().__init__(inputs, outputs, array_specs, spawn_subprocess=False)
        self.model_fn = model_fn
        self.checkpoint = Path(checkpoint)
        self.device = device
        self.check = check
        self.tf32 = tf32

    def start(self):

        select_device(self.device, tf32=self.tf32)
        weights, _, trained = load_checkpoint(self.checkpoint)
        if self.check is not None:
            self.check(trained)
        self.model = self.model_fn()
        assign_weights(self.model, weights, str(self.checkpoint))
        self._forward = None

    def predict(self, batch, request):
        import tensorflow as tf

        if self._forward is None:
            self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        x = {name: to_keras(batch[key].data) for name, key in self.inputs.items()}
        preds = self._forward(x)
        # the output is centred in the first input's ROI
        first = next(iter(self.inputs.values()))
        in_roi = batch[first].spec.roi
        for head, key in self.outputs.items():
            if key not in request:
                continue
            data = from_keras(preds[head])
            voxel_size = self.spec[key].voxel_size
            out_shape = gp.Coordinate(data.shape[1:])
            context = (in_roi.shape - out_shape * voxel_size) / 2
            out_roi = gp.Roi(in_roi.offset + context, out_shape * voxel_size)
            wanted = request[key].roi
            if not out_roi.contains(wanted):
                raise ValueError(f"requested {key} ROI {wanted} is outside the network output {out_roi}")
            begin = (wanted.offset - out_roi.offset) / voxel_size
            end = begin + wanted.shape / voxel_size
            data = data[(slice(None),) + tuple(slice(b, e) for b, e in zip(begin, end))]
            spec = self.spec[key].copy()
            spec.roi = wanted
            spec.dtype = np.float32
            batch[key] = gp.Array(np.ascontiguousarray(data, dtype=np.float32), spec)

    def stop(self):
        pass
