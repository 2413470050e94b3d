"""Import the published TF1 checkpoints (``train_net_checkpoint_<N>.{index,data-*}``) into our checkpoints.

The original networks were TF1 graphs built with ``mala.networks.unet`` inside a variable scope per network
(``setup01`` baseline, ``setup02`` mtlsd, ``setup03`` lsd and the autocontext nets' frozen lsd net, ``setup04``
aclsd, ``setup05`` acrlsd, ``setup07`` malis, ``setup23`` long_range). Their variables are
``<scope>/<layer>/{kernel,bias}`` with our layer names, except the LSD head (``embedding_0`` → ``lsds_0``).
Kernel layouts need no change: convolutions are DHWIO in both, transposed convolutions (kD, kH, kW, out, in) in
both. TensorFlow 2 reads these checkpoints directly (``tf.train.load_checkpoint``); the ``.meta`` file is not used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoints import checkpoint_path, model_weights, save_checkpoint
from .config import ConfigError
from .experiment import load_network_config

SCOPES = {
    "baseline": "setup01",
    "mtlsd": "setup02",
    "lsd": "setup03",
    "aclsd": "setup04",
    "acrlsd": "setup05",
    "malis": "setup07",
    "long_range": "setup23",
}
"""The TF1 variable scope of each network's published checkpoints."""

_HEADS = {"embedding_0": "lsds_0", "affs_0": "affs_0"}


def find_tf1_checkpoints(folder: Path) -> dict[int, Path]:
    """Complete TF1 checkpoint prefixes in a folder by iteration (by their files, not the ``checkpoint`` file)."""
    from .checkpoints_tf1 import find_tf1_checkpoints as complete

    return {c.iteration: c.prefix for c in complete(folder)}


def read_tf1_weights(prefix: Path, scope: str) -> dict[str, np.ndarray]:
    """The kernels and biases of one scope, renamed to our ``<layer>/<variable>`` names (optimizer slots skipped)."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    weights = {}
    for name in reader.get_variable_to_shape_map():
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != scope or parts[2] not in ("kernel", "bias"):
            continue  # other scopes, Adam slots (<scope>/<scope>/…/Adam), gunpowder/iteration, beta powers
        layer = _HEADS.get(parts[1], parts[1])
        weights[f"{layer}/{parts[2]}"] = reader.get_tensor(name)
    return weights


def import_tf1_checkpoint(folder: Path, iteration: int | None = None, scope: str | None = None) -> tuple[int, Path]:
    """Convert a TF1 checkpoint in a network folder into our checkpoint of the same iteration.

    Args:
        folder: the network folder (its ``config.json`` says which network, hence which scope).
        iteration: which TF1 checkpoint (default: the newest one present — whatever the ``checkpoint`` file says).
        scope: the TF1 variable scope (default: :data:`SCOPES` of the folder's network).

    Returns:
        (iteration, path of the written checkpoint).
    """
    from .networks import build_model

    folder = Path(folder).resolve()
    config = load_network_config(folder)
    found = find_tf1_checkpoints(folder)
    if not found:
        raise ConfigError(f"{folder}: no TF1 checkpoint (train_net_checkpoint_<N>.index + .data-*) to import")
    if iteration is None:
        iteration = max(found)
    elif iteration not in found:
        raise ConfigError(f"{folder}: no TF1 checkpoint of iteration {iteration} (found: {', '.join(map(str, found))})")
    if checkpoint_path(folder, iteration).exists():
        raise ConfigError(f"{checkpoint_path(folder, iteration)} exists already; remove it to import again")
    scope = scope or SCOPES[config.network]
    weights = read_tf1_weights(found[iteration], scope)
    if not weights:
        raise ConfigError(f"{found[iteration]}: no variables under the scope '{scope}'")
    expected = {name: value.shape for name, value in model_weights(build_model(config, "train")).items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ConfigError(f"{found[iteration]}: scope '{scope}' does not fit the {config.network} network (missing: {missing[:4]}, unexpected: {extra[:4]})")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ConfigError(f"{found[iteration]}: {scope}/{name} has shape {weights[name].shape}, the network expects {shape}")
    return iteration, save_checkpoint(folder, iteration, config, {k: weights[k] for k in expected})
