"""Blockwise prediction: equals the in-memory Scan prediction, resumes, predicts LSDs first for autocontext nets."""

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from conftest import REPO
from test_predict import OFFSET, VOXEL, make_network

from lsd_nm.config import ConfigError
from lsd_nm.data import RAW, write_container
from lsd_nm.experiment import load_network_folder
from lsd_nm.predict import predict_scan
from lsd_nm.predict_blockwise import predict_blockwise
from lsd_nm.run_config import RunConfig


@pytest.fixture
def raw_file(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=(30, 104, 104), dtype=np.uint8)
    path = tmp_path / "raw.zarr"
    write_container(path, {RAW: raw}, VOXEL, OFFSET)
    return path


def run_config(tmp_path, folder, raw_file, **extra):
    return RunConfig.model_validate({"setup": str(folder), "raw_file": str(raw_file), "out_file": str(tmp_path / "out.zarr"), "num_workers": 1, "device": "cpu", **extra})


@pytest.mark.parametrize("workers", [1, 2])
def test_blockwise_equals_scan(tmp_path, raw_file, workers):
    folder, _ = make_network(tmp_path / "toy", "mtlsd", unet={"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2], [1, 2, 2]], "num_fmaps_out": 5})
    config = run_config(tmp_path, folder, raw_file, num_workers=workers)
    result = predict_blockwise(config, progress=False)
    assert result.processed == result.total > 1
    scan = zarr.open_group(predict_scan(load_network_folder(folder), raw_file=raw_file, device="cpu"), mode="r")
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    for name, scan_name in (("volumes/affs", "pred_affs"), ("volumes/lsds", "pred_lsds")):
        assert out[name].dtype == np.uint8
        assert out[name].shape == scan[scan_name].shape
        assert out[name].attrs["offset"] == scan[scan_name].attrs["offset"]
        assert out[name].attrs["resolution"] == [20, 9, 9]
        assert np.abs(out[name][:].astype(int) - scan[scan_name][:].astype(int)).max() <= 1
    # a second run skips every block and leaves the output as it was
    before = out["volumes/affs"][:]
    again = predict_blockwise(config, progress=False)
    assert again.processed == 0 and again.skipped == result.total
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "out.zarr", mode="r")["volumes/affs"][:], before)


def test_autocontext_predicts_lsds_first(tmp_path, raw_file):
    make_network(tmp_path / "toy", "lsd", seed=1)
    folder, _ = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    predict_blockwise(run_config(tmp_path, folder, raw_file), progress=False)
    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    affs, lsds = out["volumes/affs"], out["volumes/lsds"]
    assert affs.shape[0] == 3 and lsds.shape[0] == 10
    # the LSDs cover what the affs net reads: the affinities' region grown by the context (10, 20, 20) voxels
    assert [a - c for a, c in zip(affs.attrs["offset"], (200, 180, 180))] == lsds.attrs["offset"]
    assert lsds[:].max() > 0


def test_bad_inputs(tmp_path, raw_file):
    folder, _ = make_network(tmp_path / "toy", "baseline")
    with pytest.raises(ConfigError, match="is not inside the raw volume"):
        predict_blockwise(run_config(tmp_path, folder, raw_file, roi_offset=[0, 0, 0], roi_shape=[200, 900, 900]), progress=False)
    with pytest.raises(ConfigError, match="no checkpoint for iteration 9"):
        predict_blockwise(run_config(tmp_path, folder, raw_file, iteration=9), progress=False)
    assert not (tmp_path / "out.zarr").exists()
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"setup": str(folder), "raw_file": str(tmp_path / "none.zarr"), "out_file": str(tmp_path / "o.zarr")}))
    result = subprocess.run([sys.executable, str(REPO / "03_predict/01_predict_blockwise.py"), str(cfg)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"error: raw '{tmp_path / 'none.zarr/volumes/raw'}' does not exist\n"
    assert not (tmp_path / "o.zarr").exists()


AUTOCONTEXT = {"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]}


def _written(folder):
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("network", ["aclsd", "acrlsd"])
def test_stored_lsds_of_another_voxel_size_are_a_one_line_error_before_any_block(tmp_path, raw_file, network):
    """aclsd/acrlsd read ``volumes/lsds`` of out_file: LSDs stored there at another voxel size than the raw are not
    used (nor replaced) without --overwrite; the error comes before any block of either network runs."""
    make_network(tmp_path / "toy", "lsd", seed=1)
    folder, _ = make_network(tmp_path / "toy", network, seed=2, autocontext=AUTOCONTEXT)
    out = tmp_path / "out.zarr"
    write_container(out, {"volumes/lsds": np.zeros((10, 15, 104, 52), np.uint8)}, (40, 9, 18), OFFSET)
    before = _written(tmp_path)
    config = run_config(tmp_path, folder, raw_file)
    with pytest.raises(ConfigError) as error:
        predict_blockwise(config, progress=False)
    assert str(error.value) == (
        f"'{out}/volumes/lsds' has voxel size (40, 9, 18) nm, the raw (20, 9, 9) nm; "
        "pass --overwrite to predict it again"
    )
    assert _written(tmp_path) == before  # no affs, no done-block records: nothing ran

    # --overwrite predicts them again, at the raw's voxel size
    predict_blockwise(config, overwrite=True, progress=False)
    assert zarr.open_array(out / "volumes/lsds", mode="r").attrs["resolution"] == list(VOXEL)


def test_stored_affs_of_another_roi_stop_the_autocontext_chain_before_the_lsd_pass(tmp_path, raw_file):
    """An existing ``volumes/affs`` made with other settings (here: another ROI, no fingerprint) is found before the
    LSD pass of an acrlsd chain runs a block, not after it."""
    make_network(tmp_path / "toy", "lsd", seed=1)
    folder, _ = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext=AUTOCONTEXT)
    out = tmp_path / "out.zarr"
    write_container(out, {"volumes/affs": np.zeros((3, 4, 8, 8), np.uint8)}, VOXEL, OFFSET)
    before = _written(tmp_path)
    with pytest.raises(ConfigError) as error:
        predict_blockwise(run_config(tmp_path, folder, raw_file), progress=False)
    assert str(error.value) == (
        f"'{out}/volumes/affs' exists from other settings (iteration, raw, roi, setup, voxel_size, weights); "
        "pass --overwrite to replace it"
    )
    assert _written(tmp_path) == before and not (out / "volumes/lsds").exists() and not (out / ".blocks").exists()


def _done(tracking) -> set[int]:
    """The indices daisy has recorded done (its ``done`` array: one byte per block of its grid)."""
    try:
        return set(np.flatnonzero(zarr.open_array(tracking / "done", mode="r")[:]).tolist())
    except Exception:  # not created yet, or being written
        return set()


def _command_line(process) -> list[str]:
    """A process's command line ([] once it has gone)."""
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _grid_index(write_roi, total_roi) -> int:
    """Where daisy records a block as done: its write ROI's position in the grid of write-sized cells over the task's
    total ROI, in C order (the test checks this against daisy while the reference runs)."""
    grid = [-(-t // w) for t, w in zip(total_roi.shape, write_roi.shape)]
    position = [(b - t) // w for b, t, w in zip(write_roi.begin, total_roi.begin, write_roi.shape)]
    return int(np.ravel_multi_index(position, grid))


def test_kill_9_a_worker_then_the_driver_then_rerun_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    """``01_predict_blockwise.py`` with 2 workers over 245 blocks: SIGKILL one worker once blocks are recorded done,
    then (a few blocks later) the driver and what is left of its workers. A re-run skips exactly the blocks recorded
    done before the kill — none of them is predicted again (the re-run runs in this process, where every predicted
    block is seen) — and the output equals an uninterrupted run's, bit for bit."""
    import os
    import signal
    import time

    import psutil  # installed with kimimaro
    from funlib.geometry import Roi

    from lsd_nm import predict_blockwise as module

    folder, _ = make_network(tmp_path / "toy", "baseline")
    shape = (40, 200, 200)  # the network's output (4, 24, 24) voxels tiles 20 × 160 × 160: 5 × 7 × 7 blocks
    raw = np.random.default_rng(3).integers(0, 256, size=shape, dtype=np.uint8)
    write_container(tmp_path / "raw.zarr", {RAW: raw}, VOXEL, OFFSET)
    total = Roi(OFFSET, [s * v for s, v in zip(shape, VOXEL)])  # the prediction's ROI grown by the context
    seen = []  # (block's grid index, indices recorded done when it started), per block predicted in this process

    def recording(job, block, resources):
        seen.append((_grid_index(block.write_roi, total), _done(tracking)))
        original(job, block, resources)

    original = module.process_block
    monkeypatch.setattr(module, "process_block", recording)

    tracking = tmp_path / "reference.zarr/.blocks/predict_baseline"
    reference = run_config(tmp_path, folder, tmp_path / "raw.zarr", out_file=str(tmp_path / "reference.zarr"))
    assert predict_blockwise(reference, progress=False).processed == 245
    # daisy records each block done at _grid_index as soon as it is processed
    assert all(done == {index for index, _ in seen[:n]} for n, (_, done) in enumerate(seen))
    every_block = {index for index, _ in seen}
    assert len(every_block) == 245
    expected = zarr.open_array(tmp_path / "reference.zarr/volumes/affs", mode="r")[:]

    out = tmp_path / "interrupted.zarr"
    config = run_config(tmp_path, folder, tmp_path / "raw.zarr", out_file=str(out), num_workers=2)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.model_dump(mode="json", exclude_defaults=True)))
    tracking = out / ".blocks/predict_baseline"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    driver = subprocess.Popen(
        [sys.executable, str(REPO / "03_predict/01_predict_blockwise.py"), str(config_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True,
    )  # fmt: skip
    children = []
    try:
        deadline = time.monotonic() + 90
        while len(_done(tracking)) < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        children = psutil.Process(driver.pid).children(recursive=True)
        workers = [p for p in children if "daisy._subprocess_worker" in _command_line(p)]
        assert workers, f"no worker process found ({len(_done(tracking))} blocks done)"
        at_worker_kill = len(_done(tracking))
        os.kill(workers[0].pid, signal.SIGKILL)
        while len(_done(tracking)) < at_worker_kill + 5 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        children = psutil.Process(driver.pid).children(recursive=True)
        os.kill(driver.pid, signal.SIGKILL)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the workers left behind (they share the driver's process group)
        driver.wait()
        for child in children:
            if child.is_running():
                child.kill()
        psutil.wait_procs(children, timeout=10)
    done_before = _done(tracking)
    assert 3 <= at_worker_kill < at_worker_kill + 5 <= len(done_before) < 245, (at_worker_kill, len(done_before))

    seen.clear()
    result = predict_blockwise(config.model_copy(update={"num_workers": 1}), progress=False)
    predicted = {index for index, _ in seen}
    assert (result.skipped, result.processed) == (len(done_before), len(seen)) and len(predicted) == len(seen)
    assert not predicted & done_before and predicted | done_before == every_block
    assert np.array_equal(zarr.open_array(out / "volumes/affs", mode="r")[:], expected)


def test_a_worker_imports_no_training_stack():
    """Unpickling a prediction worker's job imports the step's module: not gunpowder (nor TensorFlow, which the
    worker's setup imports when it builds the model)."""
    code = "import sys, lsd_nm.predict_blockwise; print(sorted(m for m in ('gunpowder', 'dask', 'tensorflow') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("network", ["mtlsd", "acrlsd"])
def test_the_traced_pass_equals_the_network_on_floats(tmp_path, network):
    """A worker's pass takes the stored uint8 inputs and gives the stored uint8 outputs: exactly
    floor(clip(network(x / 255 · 2 − 1 for raw, x / 255 for LSDs), 0, 1) · 255), computed in float32."""
    import tensorflow as tf

    from lsd_nm.checkpoints import assign_weights, load_weights
    from lsd_nm.experiment import load_network_config
    from lsd_nm.networks import build_model, network_io
    from lsd_nm.predict_blockwise import _forward_function

    extra = {"autocontext": AUTOCONTEXT} if network == "acrlsd" else {}
    folder, _ = make_network(tmp_path / "toy", network, seed=4, **extra)
    config = load_network_config(folder)
    model = build_model(config, "predict")
    assign_weights(model, load_weights(folder / "train_net_checkpoint_7"), "test")
    rng = np.random.default_rng(5)
    stored = {n: rng.integers(0, 256, (s.channels, *s.shape), dtype=np.uint8) for n, s in network_io(config, "predict").inputs.items()}
    floats = {n: x.astype(np.float32) / 255.0 for n, x in stored.items()}
    if "raw" in floats:
        floats["raw"] = floats["raw"] * 2.0 - 1.0
    # the network on float32 inputs, as the worker ran it before it took uint8
    reference = tf.function(lambda x: model(x, training=False))({n: np.moveaxis(x, 0, -1)[None] for n, x in floats.items()})
    forward = _forward_function(model, config, {n: np.dtype(np.uint8) for n in stored})
    out = forward({n: tf.constant(x) for n, x in stored.items()})
    assert set(out) == set(reference)
    for head, prediction in reference.items():
        expected = np.floor(np.clip(np.moveaxis(np.asarray(prediction)[0], -1, 0), 0.0, 1.0) * 255.0).astype(np.uint8)
        assert out[head].dtype == tf.uint8
        np.testing.assert_array_equal(out[head].numpy(), expected)


def test_a_resume_with_another_raw_or_other_weights_is_refused_before_any_block(tmp_path, raw_file):
    """The prediction's settings hold the raw (file and dataset) and the weights' digest: resuming an unfinished
    prediction with another raw_file, or after the checkpoint of the same iteration was replaced, would mix two
    predictions in one volumes/affs."""
    import shutil

    from lsd_nm.checkpoints import weights_digest
    from lsd_nm.segment import check_run

    folder, _ = make_network(tmp_path / "toy", "baseline")
    config = run_config(tmp_path, folder, raw_file)
    predict_blockwise(config, progress=False)
    out = tmp_path / "out.zarr"
    settings = zarr.open_array(out / "volumes/affs", mode="r").attrs["lsd_nm_prediction"]
    assert settings["raw"] == [str(raw_file.resolve()), "volumes/raw"]
    assert settings["weights"] == weights_digest(folder / "train_net_checkpoint_7")
    before = zarr.open_array(out / "volumes/affs", mode="r")[:]

    other = tmp_path / "other.zarr"
    shutil.copytree(raw_file, other)
    changed = run_config(tmp_path, folder, other)
    for check in (lambda: predict_blockwise(changed, progress=False), lambda: check_run(changed, 1)):
        with pytest.raises(ConfigError, match=r"volumes/affs' exists from other settings \(raw\); pass --overwrite"):
            check()
    # the same iteration, retrained: other weights
    shutil.rmtree(folder)
    make_network(tmp_path / "toy", "baseline", seed=5)
    with pytest.raises(ConfigError, match=r"exists from other settings \(weights\)"):
        predict_blockwise(config, progress=False)
    np.testing.assert_array_equal(zarr.open_array(out / "volumes/affs", mode="r")[:], before)
    # the same checkpoint saved again (other file bytes, same values) keeps the digest
    from lsd_nm.checkpoints import load_checkpoint, save_checkpoint

    weights, _, trained = load_checkpoint(folder / "train_net_checkpoint_7")
    digest = weights_digest(folder / "train_net_checkpoint_7")
    save_checkpoint(folder, 7, trained, weights)
    assert weights_digest(folder / "train_net_checkpoint_7") == digest


def test_step_1_alone_writes_into_a_folder_that_does_not_exist_yet(tmp_path, raw_file):
    """The checks of the later steps (here step 2's region graph beside out_file) never require what step 1 makes:
    the script of step 1 alone, then step 2's, into a folder that does not exist yet."""
    folder, _ = make_network(tmp_path / "toy", "baseline")
    out = tmp_path / "not" / "yet" / "out.zarr"
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"setup": str(folder), "raw_file": str(raw_file), "out_file": str(out), "num_workers": 1,
                               "device": "cpu", "block_size": [200, 468, 468], "context": [40, 36, 36]}))
    for script in ("01_predict_blockwise.py", "02_extract_fragments.py"):
        result = subprocess.run([sys.executable, str(REPO / "03_predict" / script), str(cfg)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "volumes/affs").is_dir() and (out / "volumes/fragments").is_dir()
    assert (tmp_path / "not/yet/out.rag.db").is_file()
    # a db of its own in another folder that does not exist yet: step 2 makes that folder
    config = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**config, "db": str(tmp_path / "graphs" / "run.db")}))
    result = subprocess.run([sys.executable, str(REPO / "03_predict/02_extract_fragments.py"), str(cfg), "--overwrite"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "graphs/run.db").is_file()


def _raw(tmp_path, name, data, resolution=VOXEL):
    path = tmp_path / name
    array = zarr.open_group(path, mode="w", zarr_format=2).create_array("volumes/raw", data=data)
    if resolution is not None:
        array.attrs["resolution"] = resolution
    array.attrs["offset"] = list(OFFSET)
    return path


def test_raw_the_network_was_not_trained_on_is_refused_before_any_work(tmp_path, raw_file):
    """Garbage affinities at exit 0 before: a raw of another voxel size than the training data's, one without or
    with a fractional resolution (1 nm assumed, 20.5 truncated), float or uint16 raw (scaled as uint8)."""
    root = tmp_path / "synthetic"  # a network folder of the synthetic dataset: trained at 20 x 9 x 9 nm
    folder, _ = make_network(root, "baseline")
    data = zarr.open_array(raw_file / "volumes/raw", mode="r")[:]
    cases = {
        "iso": (data, [8, 8, 8], r"has voxel size \(8, 8, 8\) nm, but baseline was trained on synthetic at \(20, 9, 9\) nm: resample"),
        "none": (data, None, r"has no attr 'resolution' \(its voxel size in nm, z y x\)"),
        "half": (data, [20.5, 9, 9], r"attr 'resolution' is \[20.5, 9, 9\]; expected 3 whole numbers of nm"),
        "float": (data.astype(np.float32) / 255, list(VOXEL), r"is float32; the networks take uint8 raw \(0-255"),
        "uint16": (data.astype(np.uint16) * 256, list(VOXEL), r"is uint16; the networks take uint8 raw"),
    }
    for name, (values, resolution, message) in cases.items():
        config = run_config(tmp_path, folder, _raw(tmp_path, f"{name}.zarr", values, resolution))
        with pytest.raises(ConfigError, match=message):
            predict_blockwise(config, progress=False)
        assert not (tmp_path / "out.zarr").exists()
    # the same raw as uint8 at the training voxel size predicts
    assert predict_blockwise(run_config(tmp_path, folder, _raw(tmp_path, "ok.zarr", data)), progress=False).processed > 0


def test_a_gpu_device_on_a_machine_without_one_is_refused_before_any_work(tmp_path, raw_file, monkeypatch):
    """Before: 477 lines of tracebacks from inside every worker, after 21 s."""
    from lsd_nm import device

    monkeypatch.setattr(device, "visible_gpus", lambda: 0)
    folder, _ = make_network(tmp_path / "toy", "baseline")
    config = run_config(tmp_path, folder, raw_file, device="gpu", num_workers=2)
    with pytest.raises(ConfigError, match=r"^device 'gpu': this machine has no GPU"):
        predict_blockwise(config, progress=False)
    assert not (tmp_path / "out.zarr").exists()


def test_overwrite_keeps_a_prediction_of_the_same_settings(tmp_path, raw_file):
    """``segment.py --overwrite`` (to redo the post-processing) re-predicted an unchanged prediction: hours on a GPU."""
    folder, _ = make_network(tmp_path / "toy", "baseline")
    config = run_config(tmp_path, folder, raw_file)
    first = predict_blockwise(config, progress=False)
    chunks = {p: p.stat().st_mtime_ns for p in (tmp_path / "out.zarr" / "volumes" / "affs").rglob("*") if p.is_file()}
    again = predict_blockwise(config, overwrite=True, progress=False)
    assert (again.processed, again.skipped) == (0, first.total)
    assert {p: p.stat().st_mtime_ns for p in chunks} == chunks  # not one chunk written again
