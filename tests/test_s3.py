"""The transfer code (lsd_nm.s3) against a real S3 server on loopback: verification, resuming, ordering, errors."""

import hashlib

import numpy as np
import pytest
from s3_server import bucket, files_under, moto_endpoint, write_volume  # noqa: F401

from lsd_nm.s3 import (
    RemoteObject,
    S3Error,
    TransferSummary,
    download,
    is_complete,
    list_objects,
    make_client,
)

KEY = "funke/zebrafinch/training/big.bin"


def random_bytes(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_plain_md5_etags_are_verified_and_multipart_ones_are_not(tmp_path):
    plain = RemoteObject("k", 3, "900150983cd24fb0d6963f7d28e17f72", tmp_path / "k")
    multipart = RemoteObject("k", 3, "900150983cd24fb0d6963f7d28e17f72-2", tmp_path / "k")
    assert plain.md5 == "900150983cd24fb0d6963f7d28e17f72"
    assert multipart.md5 is None
    assert plain.partial_path.parent == tmp_path and plain.partial_path.name.startswith("k.")
    assert plain.partial_path.name.endswith(".partial") and plain.partial_path != multipart.partial_path
    (tmp_path / "k").write_bytes(b"abc")  # md5("abc") is the plain ETag above
    assert is_complete(plain) and is_complete(multipart)
    (tmp_path / "k").write_bytes(b"abd")  # same size, other bytes: only the MD5 can tell
    assert not is_complete(plain) and is_complete(multipart)
    (tmp_path / "k").write_bytes(b"ab")
    assert not is_complete(plain) and not is_complete(multipart)


def test_download_is_identical_and_a_second_run_skips(bucket, tmp_path):
    uploaded = bucket.upload_tree(write_volume_dir(tmp_path), "funke/zebrafinch/training/v.zarr")
    client = make_client(bucket.endpoint)
    objects = list_objects(client, bucket.name, "funke/", tmp_path / "out")
    summary = download(client, bucket.name, objects, jobs=3)
    assert {f"funke/{k}": v for k, v in files_under(tmp_path / "out" / "funke").items()} == uploaded
    total = sum(map(len, uploaded.values()))
    assert (summary.fetched, summary.fetched_bytes, summary.resumed, summary.skipped) == (len(uploaded), total, 0, 0)
    again = download(client, bucket.name, objects, jobs=3)
    assert (again.fetched, again.skipped, again.skipped_bytes) == (0, len(uploaded), total)


def write_volume_dir(tmp_path):
    write_volume(tmp_path / "src.zarr")
    return tmp_path / "src.zarr"


def test_a_partial_file_is_resumed_with_a_range_request(bucket, tmp_path):
    data = random_bytes(300_000)
    bucket.put(KEY, data)
    client = make_client(bucket.endpoint)
    [obj] = list_objects(client, bucket.name, KEY, tmp_path)
    obj.path.parent.mkdir(parents=True)
    obj.partial_path.write_bytes(data[:100_000])
    summary = download(client, bucket.name, [obj])
    assert obj.path.read_bytes() == data
    assert (summary.fetched, summary.fetched_bytes, summary.resumed) == (1, 200_000, 1)
    assert not obj.partial_path.exists()


def test_a_corrupt_partial_file_is_fetched_again_whole(bucket, tmp_path):
    data = random_bytes(300_000)
    bucket.put(KEY, data)
    client = make_client(bucket.endpoint)
    [obj] = list_objects(client, bucket.name, KEY, tmp_path)
    obj.path.parent.mkdir(parents=True)
    obj.partial_path.write_bytes(b"x" * 100_000)  # the right tag, wrong bytes: the MD5 check catches it
    summary = download(client, bucket.name, [obj])
    assert obj.path.read_bytes() == data
    assert (summary.fetched, summary.fetched_bytes, summary.resumed) == (1, 200_000 + 300_000, 1)


def test_a_partial_file_of_another_version_is_discarded(bucket, tmp_path):
    data = random_bytes(1000)
    bucket.put(KEY, data)
    client = make_client(bucket.endpoint)
    [obj] = list_objects(client, bucket.name, KEY, tmp_path)
    obj.path.parent.mkdir(parents=True)
    stale = obj.path.with_name(obj.path.name + ".0123abcd.partial")  # begun when the object had another ETag
    stale.write_bytes(b"old")
    summary = download(client, bucket.name, [obj])
    assert obj.path.read_bytes() == data and not stale.exists()
    assert (summary.fetched_bytes, summary.resumed) == (1000, 0)


def test_multipart_objects_are_checked_by_size(bucket, tmp_path):
    data = random_bytes(6 * 1024 * 1024, seed=3)
    etag = bucket.put_multipart(KEY, data)
    assert etag.endswith("-2")
    client = make_client(bucket.endpoint)
    [obj] = list_objects(client, bucket.name, KEY, tmp_path)
    assert obj.md5 is None and obj.size == len(data)
    download(client, bucket.name, [obj])
    assert hashlib.sha256(obj.path.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_zarr_metadata_is_fetched_after_the_chunks(bucket, tmp_path):
    bucket.upload_tree(write_volume_dir(tmp_path), "funke/zebrafinch/training/v.zarr")
    client = make_client(bucket.endpoint)
    objects = list_objects(client, bucket.name, "funke/", tmp_path / "out")
    download(client, bucket.name, objects, jobs=4)
    metadata = [o.path.stat().st_mtime_ns for o in objects if o.path.name in (".zarray", ".zgroup", ".zattrs")]
    chunks = [o.path.stat().st_mtime_ns for o in objects if o.path.name not in (".zarray", ".zgroup", ".zattrs")]
    assert len(metadata) >= 5 and len(chunks) >= 8
    assert min(metadata) >= max(chunks)


def test_keys_that_would_leave_the_folder_are_refused(bucket, tmp_path):
    bucket.put("funke/zebrafinch/training/v.zarr/../../../../../escape", b"x")
    client = make_client(bucket.endpoint)
    listed = client.list_objects_v2(Bucket=bucket.name)["Contents"]
    assert [o["Key"] for o in listed] == ["funke/zebrafinch/training/v.zarr/../../../../../escape"]
    with pytest.raises(S3Error) as e:
        list_objects(client, bucket.name, "funke/", tmp_path / "out")
    assert str(e.value) == (
        f"refusing the object key 'funke/zebrafinch/training/v.zarr/../../../../../escape' "
        f"(it would be written outside {tmp_path / 'out'})"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "escape").exists()


def test_empty_objects(bucket, tmp_path):
    bucket.put("funke/a/empty", b"")
    client = make_client(bucket.endpoint)
    objects = list_objects(client, bucket.name, "funke/", tmp_path)
    summary = download(client, bucket.name, objects)
    assert files_under(tmp_path) == {"funke/a/empty": b""}
    assert (summary.fetched, summary.fetched_bytes) == (1, 0)
    assert download(client, bucket.name, objects).skipped == 1


def test_a_failed_object_leaves_no_file_under_its_name(bucket, tmp_path):
    bucket.put("funke/a/1", b"1" * 1000)
    bucket.put("funke/a/2", b"2" * 1000, public=False)  # unsigned reads are denied, as for a private object
    client = make_client(bucket.endpoint)
    objects = list_objects(client, bucket.name, "funke/", tmp_path)
    with pytest.raises(S3Error) as e:
        download(client, bucket.name, objects, jobs=1)
    assert str(e.value).startswith("access denied to s3://open-neurodata/funke/a/2 at ")
    assert not (tmp_path / "funke/a/2").exists()
    assert [p.name for p in (tmp_path / "funke/a").iterdir() if not p.name.endswith(".partial")] == ["1"]


def test_summary_line():
    summary = TransferSummary(fetched=3, fetched_bytes=1536, resumed=1, skipped=1, skipped_bytes=10, seconds=0.31)
    assert summary.line() == "fetched 3 objects (1536 bytes = 1.5 KiB, 1 resumed); skipped 1 complete object (10 bytes); 0.3 s"


def test_an_endpoint_that_never_answers_is_reported_within_half_a_minute(tmp_path):
    """An endpoint that accepts connections but never answers once gave four minutes of silence."""
    import socket
    import subprocess
    import sys
    import time

    from conftest import REPO

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepted by the kernel, never answered
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    start = time.time()
    try:
        done = subprocess.run(
            [sys.executable, str(REPO / "01_data/fetch_data.py"), "--dataset", "zebrafinch", "--endpoint-url", endpoint,
             "--out", str(tmp_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        server.close()
    seconds = time.time() - start
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    # each timed-out try is said as it happens (before: 40 s of silence, then the error)
    assert [line.split(" within ")[0] for line in lines[:-1]] == [f"note: no answer from {endpoint}/open-neurodata"] * 2
    assert lines[0].endswith("within 10 s; trying again (2 of 3)") and lines[1].endswith("trying again (3 of 3)")
    assert lines[-1].startswith("error: s3://open-neurodata/funke/zebrafinch/training/")
    assert lines[-1].endswith(f"no answer from {endpoint} within 10 s (3 tries); check the endpoint, then run again to resume")
    assert seconds < 60
