"""KerasTrain: one training iteration of a Keras network per batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import gunpowder as gp
import numpy as np
from gunpowder.nodes.generic_train import GenericTrain

from ..checkpoints import (
    assign_weights,
    build_optimizer,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    model_weights,
    optimizer_state,
    save_checkpoint,
)
from ..config import ConfigError
from ..device import select_device
from ..experiment import NetworkConfig
from .layout import from_keras, to_keras

logger = logging.getLogger(__name__)


def weighted_mse(gt, pred, weights):
    """TF1's ``tf.losses.mean_squared_error(gt, pred, weights)``: Σ w·(gt − pred)² / #(w ≠ 0), weights broadcast.

    (Keras' own MSE with ``sample_weight`` averages channels first, which is not what the paper trained with.)
    """
    import tensorflow as tf

    w = tf.broadcast_to(weights, tf.shape(pred))
    total = tf.reduce_sum(w * tf.square(gt - pred))
    return tf.math.divide_no_nan(total, tf.cast(tf.math.count_nonzero(w), tf.float32))


class KerasTrain(GenericTrain):
    """Train a Keras model (built in this process by ``model_fn``) on every batch that passes through.

    The loss is the sum over heads of :func:`weighted_mse` (or of ``losses[head]``). Checkpoints go to
    ``<folder>/train_net_checkpoint_<iteration>/`` every ``save_every`` iterations and at ``max_iteration``; the
    latest checkpoint is restored at start. TensorBoard scalars go to ``<folder>/log``.

    Args:
        model_fn (callable): returns the Keras model to train (called once, in :meth:`start`).
        config (:class:`NetworkConfig`): the folder's config; stored in every checkpoint, and checked against a
            restored checkpoint's.
        folder (Path): the network folder.
        inputs (dict): network input name → :class:`gunpowder.ArrayKey` (channels-first arrays).
        targets (dict): head → (ground-truth key, loss-weights key).
        outputs (dict, optional): head → key for the predictions (float32, channels-first).
        gradients (dict, optional): head → key for the gradient of the loss w.r.t. that head's output.
        save_every (int): checkpoint interval.
        max_iteration (int, optional): the last iteration; a checkpoint is also written there.
        log_every (int): TensorBoard interval.
        device (str, optional): ``cpu``, ``gpu``, ``gpu:N`` (default: a GPU if there is one).
        losses (dict, optional): head → ``loss(gt, pred, weights)`` replacing :func:`weighted_mse`.
        weights_fns (dict, optional): head → ``fn(pred, batch) -> weights`` computing that head's loss weights from
            the current prediction (numpy, channels-first; used for MALIS) instead of reading the weights key.
        weights_inputs (list, optional): further keys ``weights_fns`` read from the batch (e.g. the labels).
        loss_log (Path, optional): a TSV file that gets ``iteration, loss, seconds`` per iteration (seconds: wall
            time since the previous iteration), written before any checkpoint of that iteration.
        restore_optimizer (bool): restore the optimizer state with the weights (False: a fresh optimizer, as the
            original's MALIS phase had).
        on_save (callable, optional): ``on_save(iteration, path)`` after each checkpoint.
    """

    def __init__(
        self,
        model_fn: Callable,
        config: NetworkConfig,
        folder: Path,
        inputs: dict[str, gp.ArrayKey],
        targets: dict[str, tuple[gp.ArrayKey, gp.ArrayKey]],
        outputs: dict[str, gp.ArrayKey] | None = None,
        gradients: dict[str, gp.ArrayKey] | None = None,
        save_every: int = 10000,
        max_iteration: int | None = None,
        log_every: int = 1,
        device: str | None = None,
        losses: dict[str, Callable] | None = None,
        weights_fns: dict[str, Callable] | None = None,
        restore_optimizer: bool = True,
        on_save: Callable | None = None,
        weights_inputs: list[gp.ArrayKey] | None = None,
        loss_log: Path | None = None,
    ):
        self.weights_fns = weights_fns or {}
        all_inputs = dict(inputs)
        for key in weights_inputs or []:
            all_inputs[f"aux_{key}"] = key
        for head, (gt, weights) in targets.items():
            all_inputs[f"gt_{head}"] = gt
            # the weights key is requested either way (MALIS uses it as its mask)
            all_inputs[f"weights_{head}"] = weights
        super().__init__(all_inputs, outputs or {}, gradients or {}, spawn_subprocess=False)
        self.model_fn = model_fn
        self.config = config
        self.folder = Path(folder)
        self.network_inputs = dict(inputs)
        self.targets = dict(targets)
        self.save_every = save_every
        self.max_iteration = max_iteration
        self.log_every = log_every
        self.device = device
        self.losses = losses or {}
        self.restore_optimizer = restore_optimizer
        self.on_save = on_save
        self.loss_log = Path(loss_log) if loss_log is not None else None
        self.iteration = 0
        self.last_loss = float("nan")
        """The loss of the latest iteration."""
        self._last = None

    def start(self):
        import tensorflow as tf

        self.device_name = select_device(self.device, tf32=self.config.tf32)
        self.model = self.model_fn()
        self.optimizer = build_optimizer(self.config, self.model)
        self.iteration, path = latest_checkpoint(self.folder)
        if path is not None:
            weights, optimizer, trained = load_checkpoint(path)
            check_compatible(path, trained, self.config)
            assign_weights(self.model, weights, str(path))
            if optimizer is not None and self.restore_optimizer:
                self._set_optimizer_state(optimizer, path)
            logger.debug("resuming from %s", path)
        self.writer = tf.summary.create_file_writer(str(self.folder / "log"))
        heads = list(self.targets)
        gradient_heads = [h for h in self.gradients if h in heads]

        @tf.function(reduce_retracing=True)
        def step(x, gts, ws):
            with tf.GradientTape() as tape:
                preds = self.model(x, training=True)
                per_head = {h: self.losses.get(h, weighted_mse)(gts[h], preds[h], ws[h]) for h in heads}
                loss = tf.add_n(list(per_head.values()))
            variables = self.model.trainable_variables
            grads = tape.gradient(loss, list(variables) + [preds[h] for h in gradient_heads])
            self.optimizer.apply_gradients(zip(grads[: len(variables)], variables))
            return loss, per_head, preds, dict(zip(gradient_heads, grads[len(variables) :]))

        self._step = step

    def _set_optimizer_state(self, state: list[np.ndarray], path: Path) -> None:
        variables = self.optimizer.variables
        if len(variables) != len(state) or any(tuple(v.shape) != s.shape for v, s in zip(variables, state)):
            raise ConfigError(f"{path}: the optimizer state does not fit the network")
        for v, s in zip(variables, state):
            v.assign(s)

    def train_step(self, batch, request):
        import tensorflow as tf

        start = time.time()
        x = {name: to_keras(batch[key].data) for name, key in self.network_inputs.items()}
        gts = {h: to_keras(batch[gt].data) for h, (gt, _) in self.targets.items()}
        ws = {}
        for h, (_, weights) in self.targets.items():
            if h in self.weights_fns:
                # weights from the current prediction (MALIS): one forward pass without gradients first
                pred = from_keras(self.model(x, training=False)[h])
                ws[h] = to_keras(self.weights_fns[h](pred, batch))
            else:
                ws[h] = to_keras(batch[weights].data)
        loss, per_head, preds, grads = self._step(x, gts, ws)
        if not np.isfinite(float(loss)):
            # the weights are lost; the checkpoints written so far are not touched
            last, _ = latest_checkpoint(self.folder)
            kept = f"the checkpoint of iteration {last} is kept" if last else "no checkpoint was written"
            raise ConfigError(
                f"training diverged: the loss is {float(loss)} at iteration {self.iteration + 1}; {kept} "
                f"(a smaller optimizer.learning_rate than {self.config.optimizer.learning_rate} may help)"
            )
        self.iteration += 1
        batch.iteration = self.iteration
        batch.loss = self.last_loss = float(loss)
        now = time.time()
        if self.loss_log is not None:
            with self.loss_log.open("a") as f:
                f.write(f"{self.iteration}\t{batch.loss:.6g}\t{now - (self._last or start):.4f}\n")
        self._last = now
        for head, key in self.outputs.items():
            if key in request:
                batch[key] = self._array(from_keras(preds[head]), key, request)
        for head, key in self.gradients.items():
            if key in request:
                batch[key] = self._array(from_keras(grads[head]), key, request)
        if self.iteration % self.log_every == 0:
            with self.writer.as_default(step=self.iteration):
                tf.summary.scalar("loss", batch.loss)
                for h, v in per_head.items():
                    tf.summary.scalar(f"loss_{h}", float(v))
                tf.summary.scalar("seconds_per_iteration", time.time() - start)
        if self.iteration % self.save_every == 0 or self.iteration == self.max_iteration:
            self.save()

    def _array(self, data: np.ndarray, key: gp.ArrayKey, request) -> gp.Array:
        spec = self.spec[key].copy()
        spec.roi = request[key].roi
        spec.dtype = data.dtype
        return gp.Array(data.astype(np.float32), spec)

    def save(self) -> Path:
        """Write the current weights, optimizer state and config as the checkpoint of this iteration."""
        path = save_checkpoint(self.folder, self.iteration, self.config, model_weights(self.model), optimizer_state(self.optimizer))
        logger.debug("saved %s", path)
        if self.on_save is not None:
            self.on_save(self.iteration, path)
        return path

    def stop(self):
        if hasattr(self, "writer"):
            self.writer.flush()
