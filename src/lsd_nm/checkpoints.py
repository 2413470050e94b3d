"""Checkpoints of a network folder: ``train_net_checkpoint_<iteration>/``.

Each checkpoint is a folder holding

* ``weights.npz``: every layer variable as ``<layer name>/<variable name>`` (``unet_layer_0_left_0/kernel``, …),
* ``optimizer.npz``: the optimizer's variables in order (Keras Adam: its step count, learning rate, then the first
  and second moment of every trainable variable), absent for imports of checkpoints without optimizer state,
* ``config.json``: the :class:`~lsd_nm.experiment.NetworkConfig` the net was trained with.

It is written to ``….partial`` and renamed when complete, so a crash never leaves a checkpoint that looks complete.
The latest checkpoint is found by scanning the folder: there is no index file to edit.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from .config import ConfigError
from .data import atomic_path
from .datasets import get_dataset
from .experiment import NetworkConfig

PREFIX = "train_net_checkpoint_"
WEIGHTS = "weights.npz"
OPTIMIZER = "optimizer.npz"
CONFIG = "config.json"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")


def checkpoint_path(folder: Path, iteration: int) -> Path:
    """Where the checkpoint of ``iteration`` lives in a network folder."""
    return Path(folder) / f"{PREFIX}{int(iteration)}"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a folder as (iteration, path), oldest first."""
    found = []
    for path in Path(folder).glob(f"{PREFIX}*"):
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / WEIGHTS).exists() and (path / CONFIG).exists():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(folder: Path) -> tuple[int, Path | None]:
    """The newest complete checkpoint as (iteration, path), or (0, None)."""
    found = list_checkpoints(folder)
    return found[-1] if found else (0, None)


UNREADABLE = ".unreadable"
"""Suffix a checkpoint that cannot be read is renamed with (kept for inspection, no longer found as a checkpoint)."""


def _read_error(path: Path) -> str | None:
    """Why a checkpoint cannot be read in full (None: it can): every array of its npz files (their CRCs checked) and
    its config."""
    try:
        for name in (WEIGHTS, OPTIMIZER):
            if name == WEIGHTS or (path / name).exists():
                with np.load(path / name) as f:
                    for key in f.files:
                        f[key]
        load_checkpoint_config(path)
    except Exception as e:  # noqa: BLE001 - whatever a damaged file raises (BadZipFile, EOFError, ValueError, …)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'damaged'}"
    return None


def latest_readable_checkpoint(folder: Path, say=print) -> tuple[int, Path | None]:
    """The newest checkpoint that can be read in full, as (iteration, path), or (0, None). Newer ones that cannot
    (truncated by a full disk or a copy, damaged) are renamed ``<name>.unreadable``, each with one line to ``say``.

    Args:
        folder: the network folder.
        say: where the line about a skipped checkpoint goes.
    """
    for iteration, path in reversed(list_checkpoints(folder)):
        error = _read_error(path)
        if error is None:
            return iteration, path
        aside = path.with_name(path.name + UNREADABLE)
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        say(f"note: {path} cannot be read ({error}): moved to {aside.name}, skipped")
    return 0, None


def resolve_checkpoint(folder: Path, iteration: int | str = "latest") -> tuple[int, Path]:
    """The checkpoint of ``iteration`` (an int or ``"latest"``); a one-line :class:`ConfigError` if there is none."""
    folder = Path(folder)
    found = dict(list_checkpoints(folder))
    if iteration == "latest":
        if found:
            it = max(found)
            return it, found[it]
    elif int(iteration) in found:
        return int(iteration), found[int(iteration)]
    have = ", ".join(str(i) for i in sorted(found)) or "none"
    dataset, network = folder.resolve().parent.name, folder.resolve().name
    try:
        published = get_dataset(dataset).synthetic is None  # generated datasets have no published checkpoints
    except ConfigError:
        published = True
    fetch = f" or import the published one with `make fetch-checkpoint DATASET={dataset} NETWORK={network}`"
    raise ConfigError(
        f"{folder}: no checkpoint for iteration {iteration} (found: {have}); train it with "
        f"`make train DATASET={dataset} NETWORK={network} ITERATION=<n>`{fetch if published else ''}"
    )


def _weighted_layers(model):
    for layer in model.layers:
        for variable in layer.weights:
            yield f"{layer.name}/{variable.name}", variable


def model_weights(model) -> dict[str, np.ndarray]:
    """The model's variables by ``<layer>/<variable>`` name."""
    return {name: np.asarray(v.numpy()) for name, v in _weighted_layers(model)}


def assign_weights(model, weights: dict[str, np.ndarray], source: str) -> None:
    """Set the model's variables from a name → array dict; missing, extra or mis-shaped variables are errors."""
    variables = dict(_weighted_layers(model))
    missing = sorted(set(variables) - set(weights))
    extra = sorted(set(weights) - set(variables))
    if missing or extra:
        raise ConfigError(f"{source}: weights do not fit the network (missing: {missing[:4]}, unexpected: {extra[:4]})")
    for name, variable in variables.items():
        if tuple(variable.shape) != tuple(weights[name].shape):
            raise ConfigError(
                f"{source}: {name} has shape {tuple(weights[name].shape)}, the network expects {tuple(variable.shape)}"
            )
        variable.assign(weights[name])


def build_optimizer(config: NetworkConfig, model):
    """The Keras Adam a network trains with (``config.optimizer``), built for the model's trainable variables.

    Keras' Adam is TF1's ``AdamOptimizer`` in its epsilon-hat form: step t uses
    lr·sqrt(1 − β2^t)/(1 − β1^t) · m/(sqrt(v) + ε), with t = its ``iterations`` + 1.
    """
    import keras

    c = config.optimizer
    optimizer = keras.optimizers.Adam(learning_rate=c.learning_rate, beta_1=c.beta1, beta_2=c.beta2, epsilon=c.epsilon)
    optimizer.build(model.trainable_variables)
    return optimizer


def optimizer_state(optimizer) -> list[np.ndarray]:
    """The optimizer's variables in order, as a checkpoint stores them."""
    return [np.asarray(v.numpy()) for v in optimizer.variables]


def adam_state(config: NetworkConfig, model, iterations: int, moments: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """The optimizer state of an Adam that has taken ``iterations`` steps and holds ``moments``, as a checkpoint
    stores it (what training restores).

    Args:
        config: the network's config (its Adam constants).
        model: the network (its trainable variables decide the state's layout).
        iterations: steps taken (the next one uses β^(iterations + 1)).
        moments: ``<layer>/<variable>`` → (first moment m, second moment v) for every trainable variable.
    """
    optimizer = build_optimizer(config, model)
    optimizer.iterations.assign(iterations)
    for name, variable in _weighted_layers(model):
        if variable.trainable:
            index = optimizer._get_variable_index(variable)  # the slot layout is Keras' own: ask it, do not guess
            optimizer._momentums[index].assign(moments[name][0])
            optimizer._velocities[index].assign(moments[name][1])
    return optimizer_state(optimizer)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def save_checkpoint(folder: Path, iteration: int, config: NetworkConfig, weights: dict[str, np.ndarray], optimizer: list[np.ndarray] | None = None) -> Path:
    """Write a checkpoint atomically and return its path."""
    final = checkpoint_path(folder, iteration)
    with atomic_path(final) as tmp:
        tmp.mkdir(parents=True)
        _write_npz(tmp / WEIGHTS, weights)
        if optimizer is not None:
            _write_npz(tmp / OPTIMIZER, {f"{i:04d}": v for i, v in enumerate(optimizer)})
        (tmp / CONFIG).write_text(config.model_dump_json(indent=2) + "\n")
    return final


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], list[np.ndarray] | None, NetworkConfig]:
    """Read a checkpoint: (weights, optimizer variables or None, config)."""
    path = Path(path)
    optimizer = None
    if (path / OPTIMIZER).exists():
        with np.load(path / OPTIMIZER) as f:
            optimizer = [f[k] for k in sorted(f.files)]
    return load_weights(path), optimizer, load_checkpoint_config(path)


def load_weights(path: Path) -> dict[str, np.ndarray]:
    """The weights of a checkpoint alone (prediction needs no optimizer state, which is twice their size with Adam)."""
    with np.load(Path(path) / WEIGHTS) as f:
        return {k: f[k] for k in f.files}


def weights_digest(path: Path) -> str:
    """A digest (sha256, hex) of a checkpoint's weights — names, dtypes, shapes and values, not the file's bytes
    (``np.savez`` stamps the time into them): two checkpoints predict alike exactly when their digests agree."""
    import hashlib

    digest = hashlib.sha256()
    with np.load(Path(path) / WEIGHTS) as f:
        for name in sorted(f.files):
            array = np.ascontiguousarray(f[name])
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def load_checkpoint_config(path: Path) -> NetworkConfig:
    """The config a checkpoint was trained with, without reading its arrays."""
    return NetworkConfig.model_validate(json.loads((Path(path) / CONFIG).read_text()))


ARCHITECTURE_KEYS = ("network", "unet", "neighborhood")
"""The parts of a config that decide the weights' shapes: a checkpoint must agree with the folder on these."""


def config_differences(trained: NetworkConfig, current: NetworkConfig) -> list[str]:
    """``key: checkpoint value != folder value`` for every architecture key that differs."""

    def flat(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from flat(f"{prefix}.{k}", v)
        else:
            yield prefix, value

    a = dict(kv for key in ARCHITECTURE_KEYS for kv in flat(key, trained.model_dump(mode="json")[key]))
    b = dict(kv for key in ARCHITECTURE_KEYS for kv in flat(key, current.model_dump(mode="json")[key]))
    return [f"{k}: checkpoint {json.dumps(a.get(k))} != folder {json.dumps(b.get(k))}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def check_compatible(path: Path, trained: NetworkConfig, current: NetworkConfig) -> None:
    """A one-line :class:`ConfigError` saying exactly what differs if the checkpoint does not fit the folder."""
    diffs = config_differences(trained, current)
    if diffs:
        raise ConfigError(f"{path} was trained with a different network: {'; '.join(diffs)}")
