"""The published TF1 checkpoints: fetch them into a network folder, find the iteration that is really there, and
import their weights into our checkpoints.

**Fetch** (:func:`fetch_checkpoint`). The bucket holds, per dataset and network,
``funke/<dataset>/training/checkpoints/<network>/`` with the TF1 files
``train_net_checkpoint_<N>.{index,data-00000-of-00001,meta}`` and a ``checkpoint`` state file. The published state
file names iteration 500000 while 400000 is what was published, so TensorFlow found nothing and training silently
restarted from scratch. Here the state file is not copied: the iteration is found from the ``.index`` and ``.data``
files on disk, and a ``checkpoint`` file naming it is written, so TF tools (``tf.train.latest_checkpoint``) and our
importer agree with no hand edits.

**Import** (:func:`import_tf1_checkpoint`). The original networks were TF1 graphs built with
``mala.networks.unet`` inside a variable scope per network (``setup01`` baseline, ``setup02`` mtlsd, ``setup03`` lsd
and the autocontext nets' frozen lsd net, ``setup04`` aclsd, ``setup05`` acrlsd, ``setup07`` malis, ``setup23``
long_range). Their variables are ``<scope>/<layer>/{kernel,bias}`` with our layer names, except the LSD head
(``embedding_0`` → ``lsds_0``). Kernel layouts need no change: convolutions are DHWIO in both, transposed
convolutions (kD, kH, kW, out, in) in both. TensorFlow 2 reads these checkpoints directly
(``tf.train.load_checkpoint``); the ``.meta`` file is not used.

The Adam state comes along (:func:`read_tf1_adam`), so that training on from an import (``train.py 400001``)
continues the original run: TF1's slots ``…/<scope>/<layer>/<variable>/Adam`` (first moment) and ``…/Adam_1``
(second moment) become the Keras Adam's moments, and its step count is recovered from ``beta1_power``/
``beta2_power`` (β^(t+1) after t steps), or — where those have underflowed to 0, as after the published 400000
iterations — taken from the global step ``gunpowder/iteration``. The malis network's checkpoints hold two optimizers:
its MSE phase's ``Adam`` and the ``malis_optimizer`` that trained after the phase switch, which is the one taken.
Both TF1's and Keras' Adam use the epsilon-hat form, lr·sqrt(1 − β2^t)/(1 − β1^t) · m/(sqrt(v) + ε).

Run: ``python 01_data/fetch_checkpoint.py --dataset zebrafinch --network mtlsd [--out DIR]``
(or ``make fetch-checkpoint DATASET=zebrafinch NETWORK=mtlsd``), then ``make import-checkpoint …``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, get_args

import numpy as np

from . import REPO_ROOT
from .checkpoints import OPTIMIZER, adam_state, checkpoint_path, model_weights, save_checkpoint
from .config import ConfigError
from .data import write_text
from .datasets import get_dataset, load_datasets
from .experiment import NetworkFolder, NetworkType
from .networks import build_model
from .s3 import BUCKET, DEFAULT_JOBS, S3Error, TransferSummary, download, list_prefixes, make_client, unless_missing

if TYPE_CHECKING:
    from botocore.client import BaseClient

TRAIN_DIR = REPO_ROOT / "02_train"
NETWORKS = get_args(NetworkType)
"""The networks of the original's fetch_checkpoint.py (the paper's names, which are also the bucket's folders)."""
STATE_FILE = "checkpoint"
"""TensorFlow's checkpoint state file: names the latest checkpoint prefix."""

_INDEX = re.compile(r"^(?P<base>.+)_checkpoint_(?P<iteration>\d+)\.index$")
_SHARD = re.compile(r"\.data-(?P<shard>\d{5})-of-(?P<count>\d{5})")
_STATE_PATH = re.compile(r'^model_checkpoint_path:\s*"(?P<path>[^"]*)"\s*$', re.MULTILINE)


@dataclass(frozen=True)
class TF1Checkpoint:
    """One complete TF1 checkpoint in a folder."""

    iteration: int
    prefix: Path
    """``<folder>/<base>_checkpoint_<N>``: what TF's readers take (without ``.index``)."""


def checkpoint_prefix(network: str, dataset: str) -> str:
    """The bucket prefix of a network's published checkpoints."""
    return f"funke/{dataset}/training/checkpoints/{network}/"


def complete_checkpoints(names: Iterable[str]) -> list[tuple[int, str]]:
    """The complete TF1 checkpoints among file names: ``(iteration, prefix name)`` by iteration.

    Complete means ``<prefix>.index`` and every ``<prefix>.data-XXXXX-of-NNNNN`` shard are there.

    Args:
        names: file names of one folder (or keys of one bucket prefix, without the prefix).
    """
    names = set(names)
    found = []
    for name in names:
        match = _INDEX.match(name)
        if match is None:
            continue
        prefix = name.removesuffix(".index")
        shards = [_SHARD.fullmatch(n.removeprefix(prefix)) for n in names if n.startswith(prefix + ".data-")]
        shards = [m for m in shards if m is not None]
        counts = {int(m["count"]) for m in shards}
        if len(counts) == 1 and {int(m["shard"]) for m in shards} == set(range(counts.pop())):
            found.append((int(match["iteration"]), prefix))
    return sorted(found)


def find_tf1_checkpoints(folder: Path) -> list[TF1Checkpoint]:
    """The complete TF1 checkpoints in ``folder`` (``.index`` and every ``.data`` shard present), by iteration.

    Args:
        folder: a network folder, e.g. ``02_train/zebrafinch/mtlsd``.
    """
    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    return [TF1Checkpoint(iteration, folder / prefix) for iteration, prefix in complete_checkpoints(names)]


def latest_tf1_checkpoint(folder: Path) -> TF1Checkpoint | None:
    """The complete TF1 checkpoint with the highest iteration in ``folder``, or None."""
    found = find_tf1_checkpoints(folder)
    return found[-1] if found else None


def parse_state(text: str) -> str | None:
    """The ``model_checkpoint_path`` a checkpoint state file names (None if it names none)."""
    match = _STATE_PATH.search(text)
    return match["path"] if match else None


def write_state(folder: Path, checkpoint: TF1Checkpoint) -> Path:
    """Write the ``checkpoint`` state file naming ``checkpoint`` (a relative path, as TF writes it), atomically."""
    name = checkpoint.prefix.name
    return write_text(Path(folder) / STATE_FILE, f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')


def _published_state(client: BaseClient, bucket: str, key: str) -> str | None:
    """What the bucket's state file names (None if there is none)."""
    body = unless_missing(lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read(), client, bucket, key)
    return None if body is None else parse_state(body.decode(errors="replace"))


def fetch_checkpoint(
    dataset: str,
    network: str,
    out: Path | None = None,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[TF1Checkpoint, str | None, TransferSummary]:
    """Download a network's published checkpoints and write a state file naming the iteration found on disk.

    Args:
        dataset: zebrafinch, fib25 or hemi.
        network: one of :data:`NETWORKS`.
        out: the network folder (default ``02_train/<dataset>/<network>/``).
        bucket: the bucket (default ``open-neurodata``).
        endpoint_url: an S3-compatible endpoint (None: the standard variables, else AWS).
        jobs: objects transferred in parallel.

    Returns:
        The checkpoint found, what the bucket's state file named (or None), and the transfer summary.
    """
    ds = get_dataset(dataset)
    if ds.synthetic is not None:
        real = [name for name, d in load_datasets(user_path=None).items() if d.synthetic is None]
        raise ConfigError(f"no published checkpoints for the generated dataset '{dataset}' (expected one of: {', '.join(real)})")
    if network not in NETWORKS:
        raise ConfigError(f"unknown network '{network}' (expected one of: {', '.join(NETWORKS)})")
    out = Path(out) if out is not None else TRAIN_DIR / dataset / network
    prefix = checkpoint_prefix(network, dataset)
    client = make_client(endpoint_url, jobs)
    listed = list_prefixes(client, bucket, [prefix], out, strip=prefix)
    objects = [o for o in listed if o.key != prefix + STATE_FILE]
    if not complete_checkpoints(o.key.removeprefix(prefix) for o in objects):
        raise S3Error(f"no complete TF1 checkpoint (<name>_checkpoint_<N>.index + .data-*) under s3://{bucket}/{prefix}")
    published = _published_state(client, bucket, prefix + STATE_FILE) if len(objects) < len(listed) else None
    summary = download(client, bucket, objects, jobs, desc=f"{dataset}/{network} checkpoints")
    found = latest_tf1_checkpoint(out)
    if found is None:  # the files were there when listed: the folder was changed meanwhile
        raise S3Error(f"{out}: no complete TF1 checkpoint after the download; run again")
    write_state(out, found)
    return found, published, summary


# ---- import into our checkpoints -------------------------------------------------------------------------------------

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


def fetched_checkpoint_lines(found: TF1Checkpoint, published: str | None, summary: TransferSummary) -> list[str]:
    """What ``make fetch-checkpoint`` prints of :func:`fetch_checkpoint`'s result: the transfer's summary and the
    iteration found; when the bucket's state file names a checkpoint that is not there, the line says it was ignored."""
    note = ""
    if published is not None and PurePosixPath(published).name != found.prefix.name:
        note = f" (the bucket's state file names {PurePosixPath(published).name}, which is not there: ignored)"
    return [summary.line(), f"iteration {found.iteration}: {found.prefix}{note}"]


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


GLOBAL_STEP = "gunpowder/iteration"
"""The iteration counter gunpowder's TF1 Train node kept in every checkpoint (float32, shape [1])."""


@dataclass(frozen=True)
class TF1Adam:
    """One TF1 Adam optimizer's state, under our variable names."""

    name: str
    """The optimizer's TF1 name (the slots' suffix): ``Adam``, or ``malis_optimizer``."""
    step: int
    """Steps it has taken (the next uses β^(step + 1))."""
    moments: dict[str, tuple[np.ndarray, np.ndarray]]
    """``<layer>/<variable>`` → (first moment m, second moment v)."""


def _our_name(tf1_name: str) -> str:
    """``<scope>/<layer>/<variable>`` → our ``<layer>/<variable>``."""
    _, layer, variable = tf1_name.split("/")
    return f"{_HEADS.get(layer, layer)}/{variable}"


def _adam_step(powers: tuple[float, ...] | None, betas: tuple[float, float], fallback: int, source: Path) -> int:
    """Steps taken by an Adam whose beta powers are ``powers`` (β^(t+1) after t steps); ``fallback`` where both have
    underflowed to 0 (or are unknown)."""
    if powers is None:
        return fallback
    tiny = float(np.finfo(np.float32).tiny)
    for i in (0, 1):  # β1's power counts more precisely while it is a normal float; β2's lasts longer
        if tiny <= powers[i] < 1:
            step = max(round(float(np.log(powers[i]) / np.log(betas[i]))) - 1, 0)
            # TF1 multiplied in float32: allow its rounding (relative ~1e-7 per step), not another β
            if not all(abs(p - b ** (step + 1)) <= 1e-3 * b ** (step + 1) for p, b in zip(powers, betas) if p >= tiny):
                raise ConfigError(
                    f"{source}: beta1_power {powers[0]:g} and beta2_power {powers[1]:g} do not fit the config's "
                    f"beta1 {betas[0]:g} and beta2 {betas[1]:g}"
                )
            return step
    return fallback


def read_tf1_adam(prefix: Path, scope: str, network: str, betas: tuple[float, float], iteration: int) -> TF1Adam | None:
    """The Adam state of one scope's variables in a TF1 checkpoint (None if it has none for every variable).

    Args:
        prefix: the checkpoint's prefix.
        scope: the network's variable scope.
        network: the network (malis: its ``malis_optimizer`` rather than its MSE phase's ``Adam``).
        betas: the config's (β1, β2), which turn the beta powers into a step count.
        iteration: the checkpoint's iteration (the step count if neither the beta powers nor the global step
            tell it).
    """
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    names = reader.get_variable_to_shape_map()
    variable = re.compile(rf"^{re.escape(scope)}/[^/]+/(?:kernel|bias)$")
    weights = {n for n in names if variable.match(n)}
    slot = re.compile(rf"^(?:.+/)?(?P<variable>{re.escape(scope)}/[^/]+/(?:kernel|bias))/(?P<slot>[^/]+)$")
    slots: dict[str, dict[str, str]] = {}  # slot suffix → TF1 variable → slot variable
    for name in names:
        match = slot.match(name)
        if match:
            slots.setdefault(match["slot"], {})[match["variable"]] = name
    # an optimizer <name> has the slots <name> (m) and <name>_1 (v) for every variable
    complete = sorted(s for s in slots if weights and set(slots[s]) == weights == set(slots.get(f"{s}_1", {})))
    preferred = ["malis_optimizer", "Adam"] if network == "malis" else ["Adam"]
    chosen = next((s for s in preferred if s in complete), complete[0] if len(complete) == 1 else None)
    if chosen is None:
        if len(complete) > 1:
            raise ConfigError(f"{prefix}: Adam slots of several optimizers ({', '.join(complete)}); cannot tell which trained last")
        return None

    # beta powers: one pair per optimizer, numbered in the order the optimizers were made (beta1_power,
    # beta1_power_1, …); the malis network's MSE-phase Adam was made before its malis_optimizer
    power = re.compile(r"^(?:.+/)?beta(?P<which>[12])_power(?:_(?P<number>\d+))?$")
    pairs: dict[int, dict[str, str]] = {}
    for name in names:
        match = power.match(name)
        if match:
            pairs.setdefault(int(match["number"] or 0), {})[match["which"]] = name
    numbers = sorted(k for k, v in pairs.items() if len(v) == 2)
    made = sorted(complete, key=lambda s: (s != "Adam", s))
    powers = None
    if len(numbers) == 1 or len(numbers) == len(made):
        pair = pairs[numbers[0 if len(numbers) == 1 else made.index(chosen)]]
        powers = tuple(float(np.ravel(reader.get_tensor(pair[k]))[0]) for k in "12")
    fallback = int(np.ravel(reader.get_tensor(GLOBAL_STEP))[0]) if GLOBAL_STEP in names else iteration
    moments = {_our_name(v): (reader.get_tensor(slots[chosen][v]), reader.get_tensor(slots[f"{chosen}_1"][v])) for v in weights}
    return TF1Adam(chosen, _adam_step(powers, betas, fallback, prefix), moments)


def import_tf1_checkpoint(folder: NetworkFolder, iteration: int | None = None, scope: str | None = None) -> tuple[int, Path]:
    """Convert a TF1 checkpoint in a network folder into our checkpoint of the same iteration, with its Adam state
    (see :func:`read_tf1_adam`; weights only if it has none).

    Args:
        folder: the network folder (its ``config.json`` says which network, hence which scope).
        iteration: which TF1 checkpoint (default: the newest one present — whatever the ``checkpoint`` file says).
        scope: the TF1 variable scope (default: :data:`SCOPES` of the folder's network).

    Returns:
        (iteration, path of the written checkpoint).
    """
    config, path = folder.config, folder.path
    found = {c.iteration: c.prefix for c in find_tf1_checkpoints(path)}
    if not found:
        raise ConfigError(f"{path}: no TF1 checkpoint (train_net_checkpoint_<N>.index + .data-*) to import")
    if iteration is None:
        iteration = max(found)
    elif iteration not in found:
        raise ConfigError(f"{path}: no TF1 checkpoint of iteration {iteration} (found: {', '.join(map(str, found))})")
    if checkpoint_path(path, iteration).exists():
        raise ConfigError(f"{checkpoint_path(path, iteration)} exists already; remove it to import again")
    scope = scope or SCOPES[config.network]
    weights = read_tf1_weights(found[iteration], scope)
    if not weights:
        raise ConfigError(f"{found[iteration]}: no variables under the scope '{scope}'")
    model = build_model(config, "train")
    expected = {name: value.shape for name, value in model_weights(model).items()}
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ConfigError(f"{found[iteration]}: scope '{scope}' does not fit the {config.network} network (missing: {missing[:4]}, unexpected: {extra[:4]})")
    for name, shape in expected.items():
        if weights[name].shape != shape:
            raise ConfigError(f"{found[iteration]}: {scope}/{name} has shape {weights[name].shape}, the network expects {shape}")
    betas = (config.optimizer.beta1, config.optimizer.beta2)
    adam = read_tf1_adam(found[iteration], scope, config.network, betas, iteration)
    state = None
    if adam is not None:
        for name, (m, v) in adam.moments.items():
            if m.shape != expected[name] or v.shape != expected[name]:
                raise ConfigError(f"{found[iteration]}: the {adam.name} slots of {scope}/{name} do not have its shape {expected[name]}")
        state = adam_state(config, model, adam.step, adam.moments)
    return iteration, save_checkpoint(path, iteration, config, {k: weights[k] for k in expected}, state)


def import_checkpoint_line(folder: NetworkFolder, iteration: int | None = None, scope: str | None = None) -> str:
    """``lsd-nm import-checkpoint``: :func:`import_tf1_checkpoint`, told in one line saying whether the checkpoint
    got the TF1 Adam state or only weights (training on then starts a fresh Adam)."""
    iteration, path = import_tf1_checkpoint(folder, iteration, scope)
    what = "weights and Adam state" if (path / OPTIMIZER).exists() else "weights (it has no Adam state: training on starts a fresh Adam)"
    return f"imported the TF1 checkpoint of iteration {iteration} into {path}: {what}"
