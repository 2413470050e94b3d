"""A real HTTP server on loopback serving a small neuroglancer precomputed volume, for the fetch tests.

* :func:`write_precomputed` encodes an (x, y, z) array into the format's objects (``info`` + chunks, ``raw`` or
  ``jpeg``), written here by hand from the format's description: the code under test must read what neuroglancer
  reads, not what it writes itself.
* :class:`StaticServer` (``http.server`` in a thread, HTTP/1.1 keep-alive) serves a dict of objects, optionally with
  ``Content-Encoding: gzip``; it counts the GETs per path, can fail every request after the first ``fail_after``
  chunk requests (503) and can answer chunk requests slowly (``delay``), to interrupt a fetch half way.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def jpeg_bytes(chunk_xyz: np.ndarray) -> bytes:
    """One uint8 chunk (x, y, z) as a JPEG whose rows, concatenated, are the voxels x fastest (neuroglancer's layout)."""
    from PIL import Image

    x, y, z = chunk_xyz.shape
    pixels = np.ascontiguousarray(chunk_xyz.transpose(2, 1, 0)).reshape(z * y, x)  # row = one x line
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


def write_precomputed(
    data_xyz: np.ndarray,
    chunk_size=(8, 8, 4),
    resolution=(9, 9, 20),
    voxel_offset=(0, 0, 0),
    encoding: str = "raw",
    key: str = "9_9_20",
    extra_scale: bool = True,
) -> dict[str, bytes]:
    """The objects of a one-channel precomputed volume holding ``data_xyz`` (x, y, z): path → bytes.

    With ``extra_scale``, a second (2×-downsampled, empty) scale is listed in ``info`` first, so that picking the
    scale by voxel size is exercised.
    """
    size = data_xyz.shape
    scale = {
        "key": key,
        "size": list(size),
        "resolution": list(resolution),
        "voxel_offset": list(voxel_offset),
        "chunk_sizes": [list(chunk_size)],
        "encoding": encoding,
    }
    scales = [scale]
    if extra_scale:
        coarse = dict(scale, key="coarse", resolution=[2 * r for r in resolution], size=[max(1, s // 2) for s in size])
        scales = [coarse, scale]
    info = {"@type": "neuroglancer_multiscale_volume", "type": "image", "data_type": data_xyz.dtype.name, "num_channels": 1, "scales": scales}
    objects = {"info": json.dumps(info).encode()}
    for cx in range(0, size[0], chunk_size[0]):
        for cy in range(0, size[1], chunk_size[1]):
            for cz in range(0, size[2], chunk_size[2]):
                ex, ey, ez = (min(c + n, s) for c, n, s in zip((cx, cy, cz), chunk_size, size))
                chunk = data_xyz[cx:ex, cy:ey, cz:ez]
                ox, oy, oz = voxel_offset
                name = f"{key}/{cx + ox}-{ex + ox}_{cy + oy}-{ey + oy}_{cz + oz}-{ez + oz}"
                if encoding == "raw":
                    objects[name] = chunk.astype(chunk.dtype.newbyteorder("<")).tobytes(order="F")
                else:
                    objects[name] = jpeg_bytes(chunk)
    return objects


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
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

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
                if server.gzip_paths == "*" or relative in server.gzip_paths:
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
        self._server.shutdown()
        self._server.server_close()
