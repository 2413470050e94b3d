"""A real S3-compatible server on loopback for the transfer tests: moto's standalone server, no mocks of boto3.

Fixtures (import them into a test module: ``from s3_server import moto_endpoint, bucket  # noqa: F401``):

* ``moto_endpoint`` (session): ``moto_server`` on a free 127.0.0.1 port; yields its URL.
* ``bucket`` (function): the server reset, the bucket ``open-neurodata`` created; yields a :class:`Bucket` to upload
  into (public-read by default, as the real bucket's objects are readable by unsigned requests).

Helpers: :func:`write_volume` (a small synthetic zarr v2 volume in the bucket's layout), :class:`ThrottledProxy`
(a TCP proxy that slows the server's answers down, so that a transfer can be killed half way).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
import zarr
from boto3.s3.transfer import TransferConfig

from lsd_nm.data import COMPRESSOR, NEURON_IDS, RAW, write_container
from lsd_nm.synthetic import generate_volume

BUCKET = "open-neurodata"
MOTO_SERVER = Path(sys.executable).with_name("moto_server")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start on {url}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def signed_client(endpoint: str):
    """A client with dummy credentials (moto accepts any), for creating buckets and uploading."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


class Bucket:
    """The bucket ``open-neurodata`` on the moto server."""

    def __init__(self, endpoint: str, name: str = BUCKET):
        self.endpoint = endpoint
        self.name = name
        self.client = signed_client(endpoint)

    def put(self, key: str, data: bytes, public: bool = True) -> None:
        extra = {"ACL": "public-read"} if public else {}
        self.client.put_object(Bucket=self.name, Key=key, Body=data, **extra)

    def put_multipart(self, key: str, data: bytes, part_size: int = 5 * 1024 * 1024) -> str:
        """Upload in parts (an ETag that is not a plain MD5); returns the ETag."""
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"multipart-{os.getpid()}-{threading.get_ident()}"
        path.write_bytes(data)
        try:
            config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
            self.client.upload_file(str(path), self.name, key, ExtraArgs={"ACL": "public-read"}, Config=config)
        finally:
            path.unlink()
        return self.client.head_object(Bucket=self.name, Key=key)["ETag"].strip('"')

    def upload_tree(self, folder: Path, prefix: str, public: bool = True) -> dict[str, bytes]:
        """Upload every file under ``folder`` as ``prefix/<relative path>``; returns key → bytes."""
        uploaded = {}
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"
                data = path.read_bytes()
                self.put(key, data, public)
                uploaded[key] = data
        return uploaded

    def objects(self, prefix: str = "") -> dict[str, bytes]:
        """Every object under ``prefix``: key → bytes."""
        result = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            for item in page.get("Contents", []):
                result[item["Key"]] = self.client.get_object(Bucket=self.name, Key=item["Key"])["Body"].read()
        return result


@pytest.fixture
def bucket(moto_endpoint: str) -> Bucket:
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"), timeout=10).read()
    b = Bucket(moto_endpoint)
    b.client.create_bucket(Bucket=b.name)
    return b


def write_volume(
    path: Path,
    shape=(8, 48, 48),
    voxel_size=(20, 9, 9),
    offset=(0, 0, 0),
    seed: int = 1,
    chunk_shape=(4, 24, 24),
    unlabelled_id: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A small synthetic zarr v2 volume in the bucket's layout (raw + neuron ids); returns ``(raw, labels)``.

    With ``unlabelled_id`` (hemi), the labels of the volume's first quarter along x are set to it.
    """
    raw, labels = generate_volume(shape, voxel_size, seed)
    if unlabelled_id is not None:
        labels[:, :, : shape[2] // 4] = np.uint64(unlabelled_id)
    write_container(path, {RAW: raw, NEURON_IDS: labels}, voxel_size, offset, chunk_shape)
    return raw, labels


def write_big_raw_volume(path: Path, shape=(24, 128, 128), labels_chunks=(8, 32, 32), seed: int = 5) -> None:
    """A volume whose raw is one large, incompressible chunk and whose labels are many small chunks."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(path, mode="w", zarr_format=2)
    raw = root.require_group("volumes").create_array("raw", data=rng.integers(0, 256, shape, dtype=np.uint8), chunks=shape, compressors=COMPRESSOR)
    labels = root["volumes"].require_group("labels").create_array(
        "neuron_ids", data=rng.integers(1, 16, shape, dtype=np.uint64), chunks=labels_chunks, compressors=COMPRESSOR
    )
    for array in (raw, labels):
        array.attrs.update({"resolution": [20, 9, 9], "offset": [0, 0, 0]})


class ThrottledProxy:
    """A TCP proxy to an HTTP server that sends the server's answers at ``rate`` bytes/s (shared by all connections).

    Args:
        upstream: ``host, port`` of the server.
        rate: bytes per second from the server to the clients, over all connections.
    """

    def __init__(self, upstream: tuple[str, int], rate: int):
        self.upstream = upstream
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._next_send = time.monotonic()
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _wait_for_budget(self, n: int) -> None:
        with self._lock:
            now = time.monotonic()
            self._next_send = max(self._next_send, now) + n / self.rate
            delay = self._next_send - now - n / self.rate
        if delay > 0:
            time.sleep(delay)

    def _pump(self, source: socket.socket, sink: socket.socket, throttle: bool) -> None:
        try:
            while True:
                data = source.recv(4096 if throttle else 65536)
                if not data:
                    break
                if throttle:
                    self._wait_for_budget(len(data))
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        for s in self._sockets:
            s.close()


def run_script(script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run one of the repository's scripts (path relative to the repository) with this Python; capture its output.

    The standard endpoint variables are removed from the environment unless ``env`` sets them.
    """
    base = {k: v for k, v in os.environ.items() if k not in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")}
    return subprocess.run(
        [sys.executable, str(REPO / script), *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout
    )


def files_under(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative posix path → bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}
