"""The published TF1 checkpoints: fetch them into a network folder and find the iteration that is really there.

The bucket holds, per dataset and network, ``funke/<dataset>/training/checkpoints/<network>/`` with the TF1 files
``train_net_checkpoint_<N>.{index,data-00000-of-00001,meta}`` and a ``checkpoint`` state file. The published state
file names iteration 500000 while 400000 is what was published, so TensorFlow found nothing and training silently
restarted from scratch. Here the state file is not copied: the iteration is found from the ``.index`` and ``.data``
files on disk, and a ``checkpoint`` file naming it is written, so TF tools (``tf.train.latest_checkpoint``) and our
importer agree with no hand edits. Converting the weights into our networks belongs to :mod:`lsd_nm.networks`.

Run: python 01_data/fetch_checkpoint.py --dataset zebrafinch --network mtlsd [--out DIR]
     (or: make fetch-checkpoint DATASET=zebrafinch NETWORK=mtlsd)
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from . import REPO_ROOT
from .config import ConfigError
from .s3 import BUCKET, DEFAULT_JOBS, S3Error, TransferSummary, download, list_prefixes, make_client, positive_int, s3_error

if TYPE_CHECKING:
    from botocore.client import BaseClient

TRAIN_DIR = REPO_ROOT / "02_train"
NETWORKS = ("baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis")
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
    folder = Path(folder)
    name = checkpoint.prefix.name
    path = folder / STATE_FILE
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
    os.replace(tmp, path)
    return path


def _published_state(client: BaseClient, bucket: str, key: str) -> str | None:
    """What the bucket's state file names (None if there is none)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise s3_error(e, client, bucket, key) from None
    except BotoCoreError as e:
        raise s3_error(e, client, bucket, key) from None
    return parse_state(body.decode(errors="replace"))


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
    from .datasets import get_dataset, load_datasets

    ds = get_dataset(dataset)
    if ds.synthetic is not None:
        real = [name for name, d in load_datasets().items() if d.synthetic is None]
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


def main(argv: Sequence[str] | None = None) -> int:
    """``01_data/fetch_checkpoint.py``: parse the arguments, fetch, say which iteration the folder now holds."""
    from .cli import run

    parser = argparse.ArgumentParser(
        prog="fetch_checkpoint.py", description="Download a network's published TF1 checkpoints into 02_train/<dataset>/<network>/."
    )
    parser.add_argument("--dataset", required=True, help="zebrafinch, fib25 or hemi")
    parser.add_argument("--network", required=True, help=", ".join(NETWORKS))
    parser.add_argument("--out", type=Path, default=None, help="network folder (default: 02_train/<dataset>/<network>/)")
    parser.add_argument("--bucket", default=BUCKET, help=f"the bucket (default: {BUCKET})")
    parser.add_argument("--endpoint-url", default=None, help="an S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL, else AWS)")
    parser.add_argument("--jobs", type=positive_int, default=DEFAULT_JOBS, help=f"objects transferred in parallel (default: {DEFAULT_JOBS})")
    args = parser.parse_args(argv)

    def fetch() -> None:
        found, published, summary = fetch_checkpoint(args.dataset, args.network, args.out, args.bucket, args.endpoint_url, args.jobs)
        print(summary.line())
        note = ""
        if published is not None and PurePosixPath(published).name != found.prefix.name:
            note = f" (the bucket's state file names {PurePosixPath(published).name}, which is not there: ignored)"
        print(f"iteration {found.iteration}: {found.prefix}{note}")

    return run(fetch)
