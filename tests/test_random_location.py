"""A min_masked no batch location can reach is a one-line error within seconds (gunpowder's RandomLocation would
search forever), also from PreCache's workers and from ``python train.py``; reachable ones still give batches."""

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import gunpowder as gp
import numpy as np
import pytest
from conftest import REPO
from funlib.persistence import Array

from lsd_nm.config import user_error
from lsd_nm.nodes import PreCache, RandomLocation, random_location

MASK, RAW = gp.ArrayKey("RL_MASK"), gp.ArrayKey("RL_RAW")


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: raise TimeoutError in the test after ``seconds``."""

    def alarm(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mask_source(mask, voxel=(1, 1, 1), offset=(0, 0, 0)):
    return gp.ArraySource(MASK, Array(mask, offset, voxel), interpolatable=False)


def request_for(shape, voxel=(1, 1, 1), seed=None):
    request = gp.BatchRequest(random_seed=seed)
    request[MASK] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), gp.Coordinate(shape) * gp.Coordinate(voxel)))
    return request


def first_error(pipeline, request):
    with pytest.raises(Exception) as e:
        with gp.build(pipeline):
            pipeline.request_batch(request)
    error = user_error(e.value)
    assert error is not None, f"not a ConfigError: {e.value!r}"
    return str(error)


@pytest.mark.parametrize("precache", [False, True], ids=["in-process", "precache"])
def test_unreachable_min_masked_is_a_one_line_error(precache):
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[:3, :3, :3] = 1  # 27 voxels: at most 27/500 of a 5×10×10 request
    pipeline = mask_source(mask) + RandomLocation(min_masked=0.5, mask=MASK, volume="train_0.zarr", setting="train.min_masked in a/config.json")
    if precache:
        pipeline += PreCache(cache_size=2, num_workers=1)
    start = time.time()
    with deadline(30):
        message = first_error(pipeline, request_for((5, 10, 10)))
    assert message == (
        "train_0.zarr: no batch location has 0.5 of its 5×10×10 RL_MASK voxels masked in (at most 0.054); lower train.min_masked in a/config.json"
    )
    assert time.time() - start < 10


def test_empty_mask_is_an_error_too():
    pipeline = mask_source(np.zeros((4, 8, 8), np.uint8)) + RandomLocation(min_masked=0.1, mask=MASK)
    with deadline(30):
        message = first_error(pipeline, request_for((2, 4, 4)))
    assert message == "no batch location has 0.1 of its 2×4×4 RL_MASK voxels masked in (at most 0.000); lower min_masked"


@pytest.mark.parametrize("holes", [0, 1])
def test_a_single_location_that_reaches_min_masked_is_found(monkeypatch, caplog, holes):
    """One fully masked-in 4×4×4 cube among 7·17·17 locations: too rare for 100 random samples, so every location
    is checked; it is found (a warning says batches are slow), and with one voxel less none qualifies."""
    monkeypatch.setattr(random_location, "SAMPLES", 100)
    mask = np.zeros((10, 20, 20), np.uint8)
    mask[3:7, 5:9, 12:16] = 1
    mask[3, 5, 12] = 1 - holes
    pipeline = mask_source(mask) + RandomLocation(min_masked=1.0, mask=MASK, volume="v")
    with deadline(60):
        if holes:
            message = first_error(pipeline, request_for((4, 4, 4), seed=3))
            assert message == "v: no batch location has 1 of its 4×4×4 RL_MASK voxels masked in (at most 0.984); lower min_masked"
            return
        with caplog.at_level(logging.WARNING, logger="lsd_nm.nodes.random_location"):
            with gp.build(pipeline):
                batch = pipeline.request_batch(request_for((4, 4, 4), seed=3))
    assert batch[MASK].data.all()
    assert batch[MASK].spec.roi == gp.Roi((0, 0, 0), (4, 4, 4))  # RandomLocation shifts the batch back
    assert "v: none of 100 random batch locations has 1 of the mask request masked in (some do)" in caplog.text


@pytest.mark.parametrize("samples", [10, 10_000], ids=["sampled-first", "all-checked"])
def test_the_best_fraction_agrees_with_brute_force(monkeypatch, samples):
    """As in training: anisotropic voxels, an offset, a padded mask and an unbounded (padded) raw; the guard's
    best fraction is the one found by sliding the request over the padded mask voxel by voxel."""
    monkeypatch.setattr(random_location, "SAMPLES", samples)
    voxel, offset, padding = gp.Coordinate((20, 9, 9)), gp.Coordinate((2, 10, 10)), gp.Coordinate((2, 5, 5))
    rng = np.random.default_rng(5)
    mask = np.zeros((10, 30, 30), np.uint8)
    mask[2:8, 5:25, 8:28] = rng.random((6, 20, 20)) < 0.8
    shape = (6, 12, 12)
    padded = np.pad(mask, [(p, p) for p in padding])
    best = max(
        padded[z : z + shape[0], y : y + shape[1], x : x + shape[2]].mean()
        for z in range(padded.shape[0] - shape[0] + 1)
        for y in range(padded.shape[1] - shape[1] + 1)
        for x in range(padded.shape[2] - shape[2] + 1)
    )
    assert 0.5 < best < 1

    def pipeline(min_masked):
        raw = gp.ArraySource(RAW, Array(np.zeros(mask.shape, np.float32), offset * voxel, voxel), interpolatable=True)
        sources = (mask_source(mask, voxel, offset * voxel) + gp.Pad(MASK, padding * voxel), raw + gp.Pad(RAW, None))
        return sources + gp.MergeProvider() + RandomLocation(min_masked=min_masked, mask=MASK)

    request = request_for(shape, voxel, seed=1)
    request[RAW] = gp.ArraySpec(roi=gp.Roi((-40, -90, -90), gp.Coordinate((10, 32, 32)) * voxel))
    with deadline(60):
        message = first_error(pipeline(best + 1e-9), request.copy())
        assert message == f"no batch location has {best + 1e-9:g} of its 6×12×12 RL_MASK voxels masked in (at most {np.floor(best * 1000) / 1000:.3f}); lower min_masked"
        with gp.build(p := pipeline(best)):
            assert p.request_batch(request.copy())[MASK].data.mean() == best


class Raise(gp.BatchFilter):
    """Raises in prepare; holds a lambda, so gunpowder's wrapped error (which names this node) cannot be pickled."""

    def __init__(self):
        self.error = lambda: ValueError("the node's own error")

    def setup(self):
        pass

    def prepare(self, request):
        raise self.error()


def test_precache_relays_errors_that_cannot_be_pickled():
    """gunpowder's PreCache waits forever for an error its worker cannot pickle; ours raises the error's text."""
    pipeline = mask_source(np.ones((4, 8, 8), np.uint8)) + Raise() + PreCache(cache_size=2, num_workers=1)
    with deadline(30), pytest.raises(Exception) as e:
        with gp.build(pipeline):
            pipeline.request_batch(request_for((2, 4, 4)))
    assert user_error(e.value) is None
    assert "RuntimeError: in a PreCache worker: " in str(e.value) and "ValueError: the node's own error" in str(e.value)


def test_train_py_stops_with_one_line_error(tmp_path):
    """``python train.py`` on a volume whose mask is nearly empty: one line on stderr, exit code 2, no hang."""
    from lsd_nm.data import LABELS_MASK, NEURON_IDS, write_container
    from lsd_nm.data import RAW as RAW_DATASET
    from lsd_nm.synthetic import generate_volume

    raw, labels = generate_volume((40, 128, 128), (20, 9, 9), seed=20)
    mask = np.zeros(labels.shape, np.uint8)
    mask[:4, :16, :16] = 1
    volume = tmp_path / "data/funke/synthetic/training/train_0.zarr"
    volume.parent.mkdir(parents=True)
    write_container(volume, {RAW_DATASET: raw, NEURON_IDS: labels, LABELS_MASK: mask}, (20, 9, 9), (0, 0, 0))
    dataset = tmp_path / "02_train/synthetic"
    (dataset / "baseline").mkdir(parents=True)
    config = json.loads((REPO / "02_train/synthetic/config.json").read_text())
    config["unet"]["num_fmaps"] = 3
    config["train"].update({"cache_size": 2, "num_workers": 1, "min_masked": 0.9})
    (dataset / "config.json").write_text(json.dumps(config))
    for name in ("config.json", "train.py"):
        shutil.copy(REPO / "02_train/synthetic/baseline" / name, dataset / "baseline" / name)
    environment = {**os.environ, "LSD_NM_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "train.py", "2"], cwd=dataset / "baseline", env=environment, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {volume}: no batch location has 0.9 of its "), result.stderr
    assert last.endswith(f"LABELS_MASK voxels masked in (at most {last.split('(at most ')[1][:5]}); lower train.min_masked in {dataset / 'baseline/config.json'}")
    assert "Traceback" not in result.stderr
    assert not list((dataset / "baseline").glob("train_net_checkpoint_*"))
