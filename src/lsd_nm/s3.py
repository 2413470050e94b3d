"""Transfers from the public bucket ``open-neurodata``: the one download code for data, checkpoints and images.

Access is anonymous (unsigned requests): no credentials are read or stored. The endpoint is AWS unless
``--endpoint-url`` (or the standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables) names another one.

Every object is downloaded to ``<name>.<tag>.partial`` (``tag``: 8 hex digits of a hash of the object's ETag) and
renamed to its final name only when its size — and its MD5, when the ETag is a plain MD5 (single-part uploads) —
match the bucket's. So after a crash or ``kill -9`` a file with its final name is always complete. A re-run verifies
and skips complete objects, resumes a partial object where it stopped (a range request, only if the object has not
changed since) and fetches truncated or corrupted objects again.

Zarr metadata objects (``.zarray``, ``.zgroup``, ``.zattrs``, ``.zmetadata``, ``zarr.json``) are fetched after all
other objects: an interrupted container cannot be opened, instead of silently reading its missing chunks as zeros.

Run: ``python 01_data/fetch_data.py --dataset zebrafinch [--volume V ...|--all]`` (``make fetch-data``) and
``python 00_containers/download_imgs.py [--image lsd:v0.8.img ...|--all]``.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, TypeVar

from . import REPO_ROOT
from .config import ConfigError
from .datasets import DATA_DIR, get_dataset, load_datasets, volume_path

if TYPE_CHECKING:
    from botocore.client import BaseClient

T = TypeVar("T")

BUCKET = "open-neurodata"
"""The public bucket of the paper's data, checkpoints and images."""
REGION = "us-east-1"
"""The bucket's region (requests to other S3-compatible endpoints ignore it)."""
IMAGES = ("lsd:v0.8.img", "lsd_legacy.img")
"""The original Singularity images, under ``funke/singularity/``."""
IMAGES_PREFIX = "funke/singularity/"
IMAGES_DIR = REPO_ROOT / "00_containers"
ZARR_METADATA = frozenset({".zarray", ".zgroup", ".zattrs", ".zmetadata", "zarr.json"})
CHUNK_BYTES = 64 * 1024
"""Bytes read from the network per write: small enough that a partial file grows while a large object streams."""
DEFAULT_JOBS = 8
READ_TIMEOUT = 10
"""Seconds a read may wait for the endpoint (each of :data:`ATTEMPTS` tries): a silent endpoint is reported within
about half a minute, with what was being fetched."""
ATTEMPTS = 3

_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")


class S3Error(ConfigError):
    """A transfer problem (endpoint unreachable, bucket missing, access denied, …); the message is one line."""


@dataclass(frozen=True)
class RemoteObject:
    """One object of the bucket and where it goes on disk."""

    key: str
    size: int
    etag: str
    """The ETag without quotes: a plain MD5 for single-part uploads, ``<md5>-<parts>`` for multipart ones."""
    path: Path

    @property
    def md5(self) -> str | None:
        """The object's MD5 if its ETag is one, else None (multipart uploads: only the size can be checked)."""
        return self.etag if _PLAIN_MD5.match(self.etag) else None

    @property
    def partial_path(self) -> Path:
        """Where the object is downloaded before it is verified and renamed."""
        tag = hashlib.sha1(self.etag.encode()).hexdigest()[:8]
        return self.path.with_name(f"{self.path.name}.{tag}.partial")


@dataclass
class TransferSummary:
    """What one transfer did."""

    fetched: int = 0
    fetched_bytes: int = 0
    """Bytes received (a resumed object counts only the bytes fetched this time)."""
    resumed: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary printed at the end of a transfer."""
        return (
            f"fetched {plural(self.fetched, 'object')} ({self.fetched_bytes} bytes = {human_bytes(self.fetched_bytes)}, "
            f"{self.resumed} resumed); skipped {plural(self.skipped, 'complete object')} ({self.skipped_bytes} bytes); "
            f"{self.seconds:.1f} s"
        )


def transfer_lines(paths: Sequence[Path], summary: TransferSummary) -> list[str]:
    """What a download command prints: the local paths, then the transfer's summary line."""
    return [str(path) for path in paths] + [summary.line()]


def plural(n: int, word: str) -> str:
    """``plural(1, "object")`` → ``1 object``; ``plural(2, "object")`` → ``2 objects``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def human_bytes(n: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError  # unreachable


# ---- client and errors ------------------------------------------------------------------------------------------


def default_endpoint() -> str | None:
    """The endpoint named by the standard variables ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (None: AWS)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def make_client(endpoint_url: str | None = None, jobs: int = DEFAULT_JOBS) -> BaseClient:
    """An anonymous (unsigned) S3 client.

    Args:
        endpoint_url: an S3-compatible endpoint; None: :func:`default_endpoint`, else AWS.
        jobs: parallel transfers the client's connection pool must serve.
    """
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        signature_version=UNSIGNED,
        retries={"max_attempts": ATTEMPTS, "mode": "standard"},
        connect_timeout=10,
        read_timeout=READ_TIMEOUT,
        max_pool_connections=max(10, jobs),
    )
    endpoint_url = endpoint_url or default_endpoint()
    try:
        client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name=REGION, config=config)
    except ValueError:
        raise S3Error(f"invalid endpoint URL '{endpoint_url}' (expected e.g. http://127.0.0.1:5000)") from None
    client.meta.events.register("needs-retry.s3", _say_retry)
    return client


def _say_retry(attempts: int, caught_exception: Exception | None = None, request_dict=None, **_) -> None:
    """botocore's ``needs-retry`` event: a read that timed out is said at once (a silent endpoint is otherwise
    about 40 s of silence before its one-line error); the retry itself is botocore's."""
    from botocore.exceptions import ReadTimeoutError

    if isinstance(caught_exception, ReadTimeoutError) and attempts < ATTEMPTS:
        url = (request_dict or {}).get("url", "the S3 endpoint")
        print(f"note: no answer from {url.split('?')[0]} within {READ_TIMEOUT} s; trying again ({attempts + 1} of "
              f"{ATTEMPTS})", file=sys.stderr, flush=True)  # fmt: skip


def unless_missing(call: Callable[[], T], client: BaseClient, bucket: str, key: str) -> T | None:
    """``call()``, an S3 request about ``s3://bucket/key``: None if the object does not exist (404), any other
    failure a one-line :class:`S3Error` (:func:`s3_error`)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as e:
        if e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
            return None
        raise s3_error(e, client, bucket, key) from None
    except BotoCoreError as e:
        raise s3_error(e, client, bucket, key) from None


def s3_error(error: Exception, client: BaseClient, bucket: str, key: str) -> S3Error:
    """One line for a botocore exception raised while reading ``s3://bucket/key``."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    endpoint = client.meta.endpoint_url
    where = f"s3://{bucket}/{key}"
    if isinstance(error, EndpointConnectionError | ConnectTimeoutError):
        return S3Error(f"cannot reach the S3 endpoint {endpoint} (connection failed; check --endpoint-url and the network)")
    if isinstance(error, ReadTimeoutError):
        return S3Error(
            f"{where}: no answer from {endpoint} within {READ_TIMEOUT} s ({ATTEMPTS} tries); check the endpoint, "
            "then run again to resume"
        )
    if isinstance(error, ConnectionClosedError):
        return S3Error(f"{where}: the connection to {endpoint} was lost ({type(error).__name__}); run again to resume")
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return S3Error(f"bucket '{bucket}' does not exist at {endpoint}")
        if code in ("AccessDenied", "Forbidden", "403") or status == 403:
            return S3Error(f"access denied to {where} at {endpoint} (anonymous reads must be allowed; no credentials are used)")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return S3Error(f"{where}: not found at {endpoint}")
        message = error.response.get("Error", {}).get("Message", "")
        return S3Error(f"{where}: {code or status} {message}".rstrip())
    return S3Error(f"{where}: {type(error).__name__}: {error}")


# ---- listing ------------------------------------------------------------------------------------------------------


def _local_path(out: Path, relative: str, key: str) -> Path:
    """``out / relative``, refusing keys that would leave ``out`` (``..``, absolute paths)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise S3Error(f"refusing the object key '{key}' (it would be written outside {out})")
    return Path(out, *parts)


def list_objects(client: BaseClient, bucket: str, prefix: str, out: Path, strip: str = "") -> list[RemoteObject]:
    """Every object under ``prefix``, each with its destination ``out / (key without strip)``.

    Args:
        client: from :func:`make_client`.
        bucket: the bucket.
        prefix: a key prefix; end it with ``/`` to list one folder.
        out: the local folder the keys are mapped into.
        strip: a prefix removed from every key before it is joined to ``out``.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    objects = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith("/"):  # folder markers of some upload tools
                    continue
                relative = key.removeprefix(strip) if strip else key
                etag = item.get("ETag", "").strip('"')
                objects.append(RemoteObject(key, int(item["Size"]), etag, _local_path(out, relative, key)))
    except (BotoCoreError, ClientError) as e:
        raise s3_error(e, client, bucket, prefix) from None
    return objects


def check_readable(client: BaseClient, bucket: str, obj: RemoteObject) -> None:
    """HEAD one object, so that access problems show before anything is written."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.head_object(Bucket=bucket, Key=obj.key)
    except (BotoCoreError, ClientError) as e:
        raise s3_error(e, client, bucket, obj.key) from None


def list_prefixes(client: BaseClient, bucket: str, prefixes: Sequence[str], out: Path, strip: str = "") -> list[RemoteObject]:
    """:func:`list_objects` of several prefixes; an empty one or an unreadable first object is an :class:`S3Error`."""
    objects = []
    for prefix in prefixes:
        found = list_objects(client, bucket, prefix, out, strip)
        if not found:
            raise S3Error(f"no objects under s3://{bucket}/{prefix} at {client.meta.endpoint_url}")
        check_readable(client, bucket, found[0])
        objects += found
    return objects


# ---- downloading --------------------------------------------------------------------------------------------------


class _Stopped(Exception):
    """Another transfer failed or the user interrupted: stop streaming."""


def _hash_file(path: Path, md5, limit: int | None = None) -> None:
    with open(path, "rb") as f:
        remaining = limit
        while remaining is None or remaining > 0:
            block = f.read(4 * 1024 * 1024 if remaining is None else min(4 * 1024 * 1024, remaining))
            if not block:
                break
            md5.update(block)
            if remaining is not None:
                remaining -= len(block)


def is_complete(obj: RemoteObject) -> bool:
    """Whether the final file exists with the object's size and, for a plain-MD5 ETag, its MD5."""
    try:
        if obj.path.stat().st_size != obj.size or not obj.path.is_file():
            return False
    except FileNotFoundError:
        return False
    if obj.md5 is None:
        return True
    md5 = hashlib.md5()
    _hash_file(obj.path, md5)
    return md5.hexdigest() == obj.md5


@dataclass
class _Outcome:
    skipped: bool
    fetched_bytes: int = 0
    resumed: bool = False


def _get(client: BaseClient, bucket: str, obj: RemoteObject, offset: int) -> dict | None:
    """GET the object from ``offset`` (a range request that fails if the object changed since the partial began)."""
    from botocore.exceptions import BotoCoreError, ClientError

    extra = {"Range": f"bytes={offset}-", "IfMatch": f'"{obj.etag}"'} if offset else {}
    try:
        return client.get_object(Bucket=bucket, Key=obj.key, **extra)
    except ClientError as e:
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if offset and status in (412, 416):  # changed since the partial began, or a bad range: start again
            return None
        raise s3_error(e, client, bucket, obj.key) from None
    except BotoCoreError as e:
        raise s3_error(e, client, bucket, obj.key) from None


def _fetch(client: BaseClient, bucket: str, obj: RemoteObject, progress: Callable[[int], None], stop: threading.Event) -> _Outcome:
    """Make ``obj.path`` complete: skip it if it is, else download (resuming a partial file) and verify."""
    from botocore.exceptions import BotoCoreError

    if is_complete(obj):
        progress(obj.size)
        return _Outcome(skipped=True)
    obj.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.partial_path
    for stale in obj.path.parent.glob(glob.escape(obj.path.name) + ".*.partial"):
        if stale != tmp:  # a partial of an older version of the object
            stale.unlink(missing_ok=True)
    outcome = _Outcome(skipped=False)
    for attempt in range(2):
        offset = tmp.stat().st_size if tmp.exists() else 0
        if offset and offset >= obj.size:  # complete but not renamed, or too long: fetch it whole again
            tmp.unlink()
            offset = 0
        response = _get(client, bucket, obj, offset)
        if response is None:
            tmp.unlink(missing_ok=True)
            offset = 0
            response = _get(client, bucket, obj, 0)
        if offset and response["ResponseMetadata"]["HTTPStatusCode"] != 206:  # the server ignored the range
            offset = 0
        md5 = hashlib.md5()
        if offset:
            _hash_file(tmp, md5, offset)
            outcome.resumed = True
            progress(offset)
        try:
            with open(tmp, "ab" if offset else "wb") as f:
                for chunk in response["Body"].iter_chunks(CHUNK_BYTES):
                    if stop.is_set():
                        raise _Stopped
                    f.write(chunk)
                    md5.update(chunk)
                    outcome.fetched_bytes += len(chunk)
                    progress(len(chunk))
        except BotoCoreError as e:
            raise s3_error(e, client, bucket, obj.key) from None
        size = tmp.stat().st_size
        if size == obj.size and (obj.md5 is None or md5.hexdigest() == obj.md5):
            os.replace(tmp, obj.path)
            return outcome
        tmp.unlink()
        if not offset or attempt:  # a fresh download that does not match: the bucket or the network is at fault
            got = f"{size} bytes" + (f" with MD5 {md5.hexdigest()}" if obj.md5 else "")
            want = f"{obj.size} bytes" + (f" with MD5 {obj.md5}" if obj.md5 else "")
            raise S3Error(f"s3://{bucket}/{obj.key}: downloaded {got}, expected {want}; run again to retry")
        # a resumed partial that does not verify: fetch the whole object once more
    raise AssertionError  # unreachable


def is_zarr_metadata(obj: RemoteObject) -> bool:
    """Whether the object is zarr metadata (fetched last, so that an incomplete container does not open)."""
    return obj.path.name in ZARR_METADATA


def download(client: BaseClient, bucket: str, objects: Sequence[RemoteObject], jobs: int = DEFAULT_JOBS, desc: str = "fetch") -> TransferSummary:
    """Make every object complete on disk, ``jobs`` at a time, with a progress bar over bytes and objects.

    Args:
        client: from :func:`make_client`.
        bucket: the bucket.
        objects: from :func:`list_objects`.
        jobs: objects transferred in parallel.
        desc: the progress bar's label.
    """
    from tqdm import tqdm

    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    start = time.monotonic()
    summary = TransferSummary()
    phases = [[o for o in objects if not is_zarr_metadata(o)], [o for o in objects if is_zarr_metadata(o)]]
    stop = threading.Event()
    lock = threading.Lock()
    done = 0
    total = sum(o.size for o in objects)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, mininterval=0.5) as bar:

        def progress(n: int) -> None:
            with lock:
                bar.update(n)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for phase in phases:
                futures = {pool.submit(_fetch, client, bucket, o, progress, stop): o for o in phase}
                try:
                    for future in as_completed(futures):
                        outcome = future.result()
                        obj = futures[future]
                        done += 1
                        if outcome.skipped:
                            summary.skipped += 1
                            summary.skipped_bytes += obj.size
                        else:
                            summary.fetched += 1
                            summary.fetched_bytes += outcome.fetched_bytes
                            summary.resumed += outcome.resumed
                        with lock:
                            bar.set_postfix_str(f"{done}/{len(objects)} objects")
                except BaseException:
                    stop.set()
                    for future in futures:
                        future.cancel()
                    raise
    summary.seconds = time.monotonic() - start
    return summary


# ---- fetch-data ----------------------------------------------------------------------------------------------------


def volume_prefix(dataset: str, volume: str) -> str:
    """The bucket prefix of one training volume: ``funke/<dataset>/training/<volume>/``."""
    return f"funke/{dataset}/training/{volume}/"


def select_volumes(dataset: str, volumes: Sequence[str] = (), all_volumes: bool = False) -> list[str]:
    """The volumes to fetch: the named ones, all of them, or (the original's default) the first one.

    Args:
        dataset: a dataset of ``datasets.json`` that lives in the bucket.
        volumes: volume names (``.zarr`` may be left out); empty: see ``all_volumes``.
        all_volumes: every volume of the dataset.
    """

    ds = get_dataset(dataset)
    if ds.synthetic is not None:
        real = [name for name, d in load_datasets(user_path=None).items() if d.synthetic is None]
        raise ConfigError(
            f"dataset '{dataset}' is generated locally, not fetched: run `make synthetic DATASET={dataset}` "
            f"(datasets in the bucket: {', '.join(real)})"
        )
    if volumes and all_volumes:
        raise ConfigError("give either --volume or --all, not both")
    names = []
    for volume in volumes:
        name = volume if volume in ds.volumes or volume.endswith(".zarr") else volume + ".zarr"  # ".zarr" is optional
        if name not in ds.volumes:
            raise ConfigError(f"unknown volume '{volume}' of dataset '{dataset}' (expected one of: {', '.join(ds.volumes)})")
        names.append(name)
    if all_volumes:
        return list(ds.volumes)
    return list(dict.fromkeys(names)) if names else ds.volumes[:1]


def fetch_data(
    dataset: str,
    volumes: Sequence[str] = (),
    all_volumes: bool = False,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[list[Path], TransferSummary]:
    """Download training volumes, keeping the bucket's keys as local paths (``<out>/funke/<dataset>/training/…``).

    Args:
        dataset: zebrafinch, fib25 or hemi.
        volumes: volume names (``.zarr`` may be left out); empty: the first volume (or all, with ``all_volumes``).
        all_volumes: every volume of the dataset.
        bucket: the bucket.
        endpoint_url: an S3-compatible endpoint (None: the standard variables, else AWS).
        out: the data folder (default ``01_data/``).
        jobs: objects transferred in parallel.

    Returns:
        The local containers and what the transfer did.
    """

    out = Path(out) if out is not None else DATA_DIR
    chosen = select_volumes(dataset, volumes, all_volumes)
    client = make_client(endpoint_url, jobs)
    objects = list_prefixes(client, bucket, [volume_prefix(dataset, v) for v in chosen], out)
    summary = download(client, bucket, objects, jobs, desc=f"{dataset}: {plural(len(chosen), 'volume')}")
    return [volume_path(dataset, v, data_dir=out) for v in chosen], summary


# ---- download-imgs ---------------------------------------------------------------------------------------------------


def download_images(
    images: Sequence[str] = (),
    all_images: bool = False,
    bucket: str = BUCKET,
    endpoint_url: str | None = None,
    out: Path | None = None,
    jobs: int = DEFAULT_JOBS,
) -> tuple[list[Path], TransferSummary]:
    """Download the original Singularity images (``funke/singularity/<image>`` → ``<out>/<image>``).

    Args:
        images: image names (see :data:`IMAGES`); empty: ``lsd:v0.8.img`` (or all, with ``all_images``).
        all_images: both images.
        bucket: the bucket.
        endpoint_url: an S3-compatible endpoint (None: the standard variables, else AWS).
        out: where the images go (default ``00_containers/``).
        jobs: objects transferred in parallel.
    """
    if images and all_images:
        raise ConfigError("give either --image or --all, not both")
    for image in images:
        if image not in IMAGES:
            raise ConfigError(f"unknown image '{image}' (expected one of: {', '.join(IMAGES)})")
    chosen = list(IMAGES) if all_images else list(dict.fromkeys(images)) or [IMAGES[0]]
    out = Path(out) if out is not None else IMAGES_DIR
    client = make_client(endpoint_url, jobs)
    objects = []
    for image in chosen:
        key = IMAGES_PREFIX + image
        found = [o for o in list_objects(client, bucket, key, out, strip=IMAGES_PREFIX) if o.key == key]
        if not found:
            raise S3Error(f"s3://{bucket}/{key}: not found at {client.meta.endpoint_url}")
        check_readable(client, bucket, found[0])
        objects += found
    summary = download(client, bucket, objects, jobs, desc="images")
    return [o.path for o in objects], summary
