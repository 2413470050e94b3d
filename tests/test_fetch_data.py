"""01_data/fetch_data.py against a real S3 server on loopback, as a user runs it (a subprocess, unsigned requests)."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import zarr
from s3_server import (  # noqa: F401
    REPO,
    ThrottledProxy,
    bucket,
    files_under,
    free_port,
    moto_endpoint,
    run_script,
    write_big_raw_volume,
    write_volume,
)

from lsd_nm.data import NEURON_IDS, RAW, read_array
from lsd_nm.datasets import load_datasets

ZEBRAFINCH = load_datasets()["zebrafinch"].volumes
FIB25 = load_datasets()["fib25"].volumes
HEMI = load_datasets()["hemi"].volumes
SUMMARY = re.compile(
    r"^fetched (\d+) objects? \((\d+) bytes = [^,]+, (\d+) resumed\); skipped (\d+) complete objects? \((\d+) bytes\); [\d.]+ s$"
)


def summary(stdout: str) -> tuple[int, ...]:
    """(fetched, fetched bytes, resumed, skipped, skipped bytes) from the last line."""
    match = SUMMARY.match(stdout.splitlines()[-1])
    assert match, stdout
    return tuple(int(g) for g in match.groups())


def upload(bucket, tmp_path: Path, dataset: str, volumes, **kwargs) -> dict[str, dict[str, bytes]]:
    """Small synthetic volumes under the real keys; returns volume → (key → bytes)."""
    uploaded = {}
    for i, volume in enumerate(volumes):
        src = tmp_path / "src" / dataset / volume
        write_volume(src, seed=i + 1, **kwargs)
        uploaded[volume] = bucket.upload_tree(src, f"funke/{dataset}/training/{volume}")
    return uploaded


def local(out: Path) -> dict[str, bytes]:
    """Every file under ``out``, keyed like the bucket."""
    return files_under(out)


def stats(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file: a file fetched again gets a new inode (it is renamed into place)."""
    return {p.relative_to(out).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}


def fetch(endpoint: str, out: Path, *args: str, env=None) -> subprocess.CompletedProcess:
    return run_script("01_data/fetch_data.py", *args, "--endpoint-url", endpoint, "--out", str(out), env=env)


def test_first_volume_by_default_arrays_identical(bucket, tmp_path):
    uploaded = upload(bucket, tmp_path, "zebrafinch", ZEBRAFINCH[:2])
    out = tmp_path / "data"
    result = fetch(bucket.endpoint, out, "--dataset", "zebrafinch")
    assert result.returncode == 0, result.stderr
    container = out / "funke/zebrafinch/training" / ZEBRAFINCH[0]
    assert result.stdout.splitlines()[0] == str(container)
    assert local(out) == uploaded[ZEBRAFINCH[0]]  # the first volume only, every object, nothing else
    n, size = len(uploaded[ZEBRAFINCH[0]]), sum(map(len, uploaded[ZEBRAFINCH[0]].values()))
    assert summary(result.stdout) == (n, size, 0, 0, 0)
    for dataset in (RAW, NEURON_IDS):
        got, voxel_size, offset = read_array(container, dataset)
        want, _, _ = read_array(tmp_path / "src/zebrafinch" / ZEBRAFINCH[0], dataset)
        assert np.array_equal(got, want) and got.dtype == want.dtype
        assert (voxel_size, offset) == ((20, 9, 9), (0, 0, 0))
    assert "objects" in result.stderr  # the progress bar counts objects as well as bytes


def test_named_volumes_then_a_rerun_skips_everything(bucket, tmp_path):
    uploaded = upload(bucket, tmp_path, "zebrafinch", ZEBRAFINCH[:3])
    out = tmp_path / "data"
    args = ("--dataset", "zebrafinch", "--volume", ZEBRAFINCH[2], "--volume", ZEBRAFINCH[1].removesuffix(".zarr"))
    result = fetch(bucket.endpoint, out, *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:2] == [str(out / "funke/zebrafinch/training" / v) for v in (ZEBRAFINCH[2], ZEBRAFINCH[1])]
    assert local(out) == uploaded[ZEBRAFINCH[1]] | uploaded[ZEBRAFINCH[2]]
    before = stats(out)
    again = fetch(bucket.endpoint, out, *args)
    assert again.returncode == 0, again.stderr
    n = len(before)
    size = sum(map(len, local(out).values()))
    assert summary(again.stdout) == (0, 0, 0, n, size)
    assert stats(out) == before


def test_all_volumes_with_the_endpoint_from_the_environment(bucket, tmp_path):
    uploaded = upload(bucket, tmp_path, "fib25", FIB25, voxel_size=(8, 8, 8))
    out = tmp_path / "data"
    result = run_script("01_data/fetch_data.py", "--dataset", "fib25", "--all", "--jobs", "3", "--out", str(out),
                        env={"AWS_ENDPOINT_URL": bucket.endpoint})
    assert result.returncode == 0, result.stderr
    assert local(out) == {k: v for volume in FIB25 for k, v in uploaded[volume].items()}
    assert result.stdout.splitlines()[:4] == [str(out / "funke/fib25/training" / v) for v in FIB25]


def test_truncated_corrupted_and_missing_objects_are_fetched_again(bucket, tmp_path):
    uploaded = upload(bucket, tmp_path, "zebrafinch", ZEBRAFINCH[:1])[ZEBRAFINCH[0]]
    out = tmp_path / "data"
    assert fetch(bucket.endpoint, out, "--dataset", "zebrafinch").returncode == 0
    prefix = f"funke/zebrafinch/training/{ZEBRAFINCH[0]}/volumes/"
    truncated, corrupted, missing = prefix + "raw/0.0.0", prefix + "raw/1.1.1", prefix + "labels/neuron_ids/0.1.0"
    (out / truncated).write_bytes(uploaded[truncated][:-7])
    data = bytearray(uploaded[corrupted])
    data[len(data) // 2] ^= 0xFF  # same size, one bit pattern changed
    (out / corrupted).write_bytes(bytes(data))
    (out / missing).unlink()
    before = stats(out)
    result = fetch(bucket.endpoint, out, "--dataset", "zebrafinch")
    assert result.returncode == 0, result.stderr
    assert local(out) == uploaded
    repaired = {truncated, corrupted, missing}
    size = sum(len(uploaded[k]) for k in repaired)
    assert summary(result.stdout) == (3, size, 0, len(uploaded) - 3, sum(map(len, uploaded.values())) - size)
    after = stats(out)
    assert {k: v for k, v in after.items() if k not in repaired} == {k: v for k, v in before.items() if k not in repaired}


def test_kill_9_then_rerun_resumes_and_never_fetches_a_complete_object_twice(bucket, tmp_path):
    """An interrupted download leaves only complete files under their names; a re-run finishes the rest."""
    src = tmp_path / "src.zarr"
    write_big_raw_volume(src)  # raw: one ~390 kB chunk; labels: 48 small chunks
    uploaded = bucket.upload_tree(src, f"funke/zebrafinch/training/{ZEBRAFINCH[0]}")
    raw_chunk = f"funke/zebrafinch/training/{ZEBRAFINCH[0]}/volumes/raw/0.0.0"
    out = tmp_path / "data"
    server = urlparse(bucket.endpoint)
    proxy = ThrottledProxy((server.hostname, server.port), rate=250_000)
    try:
        proc = subprocess.Popen(
            [sys.executable, str(REPO / "01_data/fetch_data.py"), "--dataset", "zebrafinch", "--jobs", "4",
             "--endpoint-url", proxy.url, "--out", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            finals = [p for p in out.rglob("*") if p.is_file() and not p.name.endswith(".partial")] if out.exists() else []
            partials = list((out / raw_chunk).parent.glob("0.0.0.*.partial")) if out.exists() else []
            if len(finals) >= 5 and partials and partials[0].stat().st_size > 0:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                break
            assert proc.poll() is None, "the throttled download finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        proc.kill()
        proxy.close()
    assert proc.returncode == -signal.SIGKILL

    # every file under its final name is complete and identical; the big chunk is only a partial file
    interrupted = local(out)
    finals = {k: v for k, v in interrupted.items() if not k.endswith(".partial")}
    partial_bytes = sum(len(v) for k, v in interrupted.items() if k.endswith(".partial"))
    assert finals and all(uploaded[k] == v for k, v in finals.items())
    assert raw_chunk not in finals and 0 < partial_bytes < len(uploaded[raw_chunk]) + 1
    # zarr metadata comes last: the interrupted container does not open (rather than reading zeros)
    with pytest.raises(Exception):
        zarr.open_group(out / f"funke/zebrafinch/training/{ZEBRAFINCH[0]}", mode="r")["volumes/raw"][:]
    before = stats(out)

    result = fetch(bucket.endpoint, out, "--dataset", "zebrafinch")
    assert result.returncode == 0, result.stderr
    assert local(out) == uploaded  # complete, identical, no partial file left
    total = sum(map(len, uploaded.values()))
    done = sum(len(v) for v in finals.values())
    fetched, fetched_bytes, resumed, skipped, skipped_bytes = summary(result.stdout)
    assert (skipped, skipped_bytes) == (len(finals), done)  # no complete object fetched twice
    assert fetched == len(uploaded) - len(finals)
    assert resumed == 1 and fetched_bytes == total - done - partial_bytes  # the big chunk resumed where it stopped
    assert {k: v for k, v in stats(out).items() if k in finals} == {k: v for k, v in before.items() if k in finals}


def error_cases(endpoint: str):
    closed = f"http://127.0.0.1:{free_port()}"
    first_key = f"funke/zebrafinch/training/{ZEBRAFINCH[1]}/.zattrs"
    return {
        "unknown dataset": (
            ["--dataset", "zebrafish"],
            endpoint,
            "unknown dataset 'zebrafish' (expected one of: zebrafinch, fib25, hemi, synthetic, synthetic_iso)",
        ),
        "unknown volume": (
            ["--dataset", "fib25", "--volume", "trvol-250-3.zarr"],
            endpoint,
            "unknown volume 'trvol-250-3.zarr' of dataset 'fib25' (expected one of: " + ", ".join(FIB25) + ")",
        ),
        "generated dataset": (
            ["--dataset", "synthetic"],
            endpoint,
            "dataset 'synthetic' is generated locally, not fetched: run `make synthetic DATASET=synthetic` "
            "(datasets in the bucket: zebrafinch, fib25, hemi)",
        ),
        "volume and all": (["--dataset", "fib25", "--all", "--volume", FIB25[0]], endpoint, "give either --volume or --all, not both"),
        "bucket missing": (
            ["--dataset", "zebrafinch", "--bucket", "no-such-bucket"],
            endpoint,
            f"bucket 'no-such-bucket' does not exist at {endpoint}",
        ),
        "endpoint unreachable": (
            ["--dataset", "zebrafinch"],
            closed,
            f"cannot reach the S3 endpoint {closed} (connection failed; check --endpoint-url and the network)",
        ),
        "invalid endpoint": (["--dataset", "zebrafinch"], "not-a-url", "invalid endpoint URL 'not-a-url' (expected e.g. http://127.0.0.1:5000)"),
        "access denied": (
            ["--dataset", "zebrafinch", "--volume", ZEBRAFINCH[0], "--volume", ZEBRAFINCH[1]],
            endpoint,
            f"access denied to s3://open-neurodata/{first_key} at {endpoint} (anonymous reads must be allowed; no credentials are used)",
        ),
        "volume not in the bucket": (
            ["--dataset", "hemi"],
            endpoint,
            f"no objects under s3://open-neurodata/funke/hemi/training/{HEMI[0]}/ at {endpoint}",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["unknown dataset", "unknown volume", "generated dataset", "volume and all", "bucket missing", "endpoint unreachable",
     "invalid endpoint", "access denied", "volume not in the bucket"],
)
def test_errors_are_one_line_and_write_nothing(bucket, tmp_path, case):
    upload(bucket, tmp_path, "zebrafinch", ZEBRAFINCH[:1])
    private = tmp_path / "private.zarr"
    write_volume(private)
    keys = bucket.upload_tree(private, f"funke/zebrafinch/training/{ZEBRAFINCH[1]}", public=False)
    assert sorted(keys)[0].endswith("/.zattrs")
    args, endpoint, message = error_cases(bucket.endpoint)[case]
    out = tmp_path / "data"
    result = fetch(endpoint, out, *args)
    assert result.returncode == 2
    assert result.stderr == f"error: {message}\n"
    assert result.stdout == ""
    assert not out.exists()


def test_make_fetch_data_passes_volumes_and_args(bucket, tmp_path):
    uploaded = upload(bucket, tmp_path, "zebrafinch", ZEBRAFINCH[:3])
    out = tmp_path / "data"
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "fetch-data", "ENV_READY=", "DATASET=zebrafinch",
         f"VOLUMES={ZEBRAFINCH[0]} {ZEBRAFINCH[2]}", f"ARGS=--endpoint-url {bucket.endpoint} --out {out}"],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT")},
    )
    assert result.returncode == 0, result.stderr
    assert local(out) == uploaded[ZEBRAFINCH[0]] | uploaded[ZEBRAFINCH[2]]
