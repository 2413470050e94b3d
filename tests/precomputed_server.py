"""A real HTTP server on loopback serving a small neuroglancer precomputed volume, for the fetch tests.

* :func:`write_precomputed` encodes an (x, y, z) array into the format's objects (``info`` + chunks, ``raw`` or
  ``jpeg``, sharded or not) with TensorStore, the library the code under test reads them with.
* :class:`StaticServer` (``http.server`` in a thread, HTTP/1.1 keep-alive) serves a dict of objects, optionally with
  ``Content-Encoding: gzip``; it counts the GETs per path, can fail every request after the first ``fail_after``
  chunk requests (503) and can answer chunk requests slowly (``delay``), to interrupt a fetch half way.
"""

from __future__ import annotations

import gzip
import re
import socket
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np


def write_precomputed(
    data_xyz: np.ndarray,
    chunk_size=(8, 8, 4),
    resolution=(9, 9, 20),
    voxel_offset=(0, 0, 0),
    encoding: str = "raw",
    key: str = "9_9_20",
    extra_scale: bool = True,
    sharding: dict | None = None,
) -> dict[str, bytes]:
    """The objects of a one-channel precomputed volume holding ``data_xyz`` (x, y, z), written by TensorStore (the
    reader under test is TensorStore too; the objects are what neuroglancer reads): path → bytes.

    With ``extra_scale``, a second (2×-downsampled, empty) scale is listed in ``info`` first, so that picking the
    scale by voxel size is exercised. ``jpeg`` is written at quality 100; ``sharding`` is a neuroglancer sharding
    spec (``neuroglancer_uint64_sharded_v1``).
    """
    import tensorstore as ts

    size = [int(n) for n in data_xyz.shape]
    multiscale = {"data_type": data_xyz.dtype.name, "num_channels": 1, "type": "image"}
    with tempfile.TemporaryDirectory() as folder:
        kvstore = {"driver": "file", "path": folder + "/"}

        def create(scale_key, scale_resolution, scale_size, **more):
            scale = {
                "key": scale_key, "size": scale_size, "resolution": list(scale_resolution),
                "voxel_offset": list(voxel_offset), "chunk_size": list(chunk_size), "encoding": encoding, **more,
            }  # fmt: skip
            if encoding == "jpeg":
                scale["jpeg_quality"] = 100
            spec = {"driver": "neuroglancer_precomputed", "kvstore": kvstore, "scale_metadata": scale, "multiscale_metadata": multiscale}
            return ts.open(spec, create=True).result()

        if extra_scale:
            create("coarse", [2 * r for r in resolution], [max(1, n // 2) for n in size])
        store = create(key, resolution, size, **({"sharding": sharding} if sharding else {}))
        store[..., 0].write(data_xyz).result()
        root = Path(folder)
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class StaticServer:
    """Serves ``objects`` (path → bytes) under ``http://127.0.0.1:<port>/<prefix>/``.

    Args:
        objects: path (relative to the prefix) → body.
        prefix: the URL folder of the volume.
        gzip_paths: paths sent gzip-compressed with ``Content-Encoding: gzip`` (``"*"``: all).
    """

    def __init__(self, objects: dict[str, bytes], prefix: str = "bucket/volume", gzip_paths=()):
        self.objects = dict(objects)
        self.prefix = prefix.strip("/")
        self.gzip_paths = gzip_paths
        self.gets: Counter[str] = Counter()
        self.fail_after: int | None = None
        self.delay = 0.0
        """Seconds each chunk request waits before it is answered (to kill a fetch half way)."""
        self._chunk_gets = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def setup(self):
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self):
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def do_GET(self):
                path = self.path.split("?", 1)[0].lstrip("/")
                relative = path.removeprefix(server.prefix + "/") if path.startswith(server.prefix + "/") else None
                with server._lock:
                    server.gets[relative or path] += 1
                    is_chunk = relative is not None and relative != "info"
                    if is_chunk:
                        server._chunk_gets += 1
                    failing = is_chunk and server.fail_after is not None and server._chunk_gets > server.fail_after
                if failing:
                    self._send(503, b"unavailable")
                    return
                if is_chunk and server.delay:
                    time.sleep(server.delay)
                if relative is None or relative not in server.objects:
                    self._send(404, b"not found")
                    return
                body = server.objects[relative]
                ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if ranged:  # a byte range (sharded volumes read their shard indices so), sent as is
                    first = int(ranged[1])
                    last = int(ranged[2]) if ranged[2] else len(body) - 1
                    headers = {"Content-Range": f"bytes {first}-{last}/{len(body)}"}
                    self._send(206, body[first : last + 1], headers)
                elif server.gzip_paths == "*" or relative in server.gzip_paths:
                    self._send(200, gzip.compress(body), {"Content-Encoding": "gzip"})
                else:
                    self._send(200, body)

            def _send(self, status, body, headers=None):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/{self.prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def chunk_gets(self) -> Counter[str]:
        """GETs per chunk path (``info`` left out)."""
        return Counter({k: v for k, v in self.gets.items() if k != "info"})

    def close(self) -> None:
        """Stop serving, and end the kept-alive connections too (a client that pools them would still be served)."""
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
