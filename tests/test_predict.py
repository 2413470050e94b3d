"""predict_scan: datasets, shapes, offsets and dtype, and equality with a whole-array forward pass."""

import json
import shutil

import numpy as np
import pytest
import zarr

from lsd_nm.checkpoints import assign_weights, model_weights, save_checkpoint
from lsd_nm.config import ConfigError
from lsd_nm.data import RAW, write_container
from lsd_nm.experiment import load_network_config, load_network_folder
from lsd_nm.networks import build_model
from lsd_nm.predict import predict_scan

TINY = {
    "unet": {"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2], [1, 2, 2]]},
    "input_shape": [22, 56, 56],
    "predict_input_shape": [24, 64, 64],
}
VOXEL = (20, 9, 9)
OFFSET = (100, 90, 90)


def make_network(root, network, seed=0, **extra):
    """A network folder with a checkpoint of random weights (the iteration is arbitrary)."""
    import keras

    folder = root / network
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"network": network, **TINY, **extra}))
    config = load_network_config(folder)
    keras.utils.set_random_seed(seed)
    save_checkpoint(folder, 7, config, model_weights(build_model(config)))
    return folder, config


@pytest.fixture
def raw_file(tmp_path):
    raw = np.random.default_rng(0).integers(0, 256, size=(30, 72, 72), dtype=np.uint8)
    path = tmp_path / "raw.zarr"
    write_container(path, {RAW: raw}, VOXEL, OFFSET)
    return path, raw


def forward(config, folder, inputs, role="predict"):
    """A whole-array Keras forward pass with the folder's checkpoint (channels-first numpy out)."""
    from lsd_nm.checkpoints import load_checkpoint

    shapes = {k: v.shape[1:] for k, v in inputs.items()}
    cfg = config.model_copy(update={"predict_input_shape": tuple(next(iter(shapes.values())))})
    model = build_model(cfg, role, raw_shape=shapes.get("raw") if config.network == "acrlsd" else None)
    assign_weights(model, load_checkpoint(folder / "train_net_checkpoint_7")[0], "test")
    out = model({k: np.moveaxis(v, 0, -1)[None].astype(np.float32) for k, v in inputs.items()})
    return {k: np.moveaxis(np.asarray(v)[0], -1, 0) for k, v in out.items()}


def test_baseline_matches_whole_array_forward(tmp_path, raw_file):
    path, raw = raw_file
    folder, config = make_network(tmp_path / "toy", "baseline")
    out = predict_scan(load_network_folder(folder), raw_file=path, device="cpu")
    assert out == folder / "test_prediction.zarr"
    root = zarr.open_group(out, mode="r")
    assert set(root.array_keys()) == {"pred_affs"}
    affs = root["pred_affs"]
    assert affs.dtype == np.uint8
    assert affs.shape == (3, 10, 32, 32)  # raw shrunk by the context (10, 20, 20) on each side
    assert dict(affs.attrs) == {
        "resolution": [20, 9, 9], "offset": [100 + 10 * 20, 90 + 20 * 9, 90 + 20 * 9],
        "lsd_nm_prediction": {"network": "baseline", "folder": str(folder), "iteration": 7,
                              "checkpoint": str(folder / "train_net_checkpoint_7")},
    }  # fmt: skip
    expected = forward(config, folder, {"raw": raw[None] / 255.0 * 2 - 1})["affs"]
    assert expected.shape == affs.shape
    assert np.abs(affs[:].astype(int) - np.floor(expected * 255).astype(int)).max() <= 1


def test_mtlsd_writes_affs_and_lsds(tmp_path, raw_file):
    path, _ = raw_file
    folder, _ = make_network(tmp_path / "toy", "mtlsd", unet={**TINY["unet"], "num_fmaps_out": 5})
    root = zarr.open_group(predict_scan(load_network_folder(folder), raw_file=path, device="cpu"), mode="r")
    assert root["pred_affs"].shape == (3, 10, 32, 32)
    assert root["pred_lsds"].shape == (10, 10, 32, 32)
    assert root["pred_lsds"].dtype == np.uint8


def test_small_raw_is_padded(tmp_path):
    path = tmp_path / "small.zarr"
    write_container(path, {RAW: np.full((12, 40, 40), 128, np.uint8)}, VOXEL, (0, 0, 0))
    folder, _ = make_network(tmp_path / "toy", "baseline")
    affs = zarr.open_group(predict_scan(load_network_folder(folder), raw_file=path, device="cpu"), mode="r")["pred_affs"]
    assert affs.shape == (3, 4, 24, 24)  # one network output, centred on the volume
    assert affs.attrs["offset"] == [(6 - 2) * 20, (20 - 12) * 9, (20 - 12) * 9]


def test_autocontext_from_disk_and_on_the_fly(tmp_path, raw_file):
    path, raw = raw_file
    lsd_folder, lsd_config = make_network(tmp_path / "toy", "lsd", seed=1)
    acrlsd_folder, config = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    aclsd_folder, _ = make_network(tmp_path / "toy", "aclsd", seed=3, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    with pytest.raises(ConfigError, match="no LSDs; predict them first"):
        predict_scan(load_network_folder(acrlsd_folder), raw_file=path, device="cpu")
    lsds = zarr.open_group(predict_scan(load_network_folder(lsd_folder), raw_file=path, device="cpu"), mode="r")["pred_lsds"]
    assert lsds.shape == (10, 10, 32, 32)

    from_disk = zarr.open_group(predict_scan(load_network_folder(acrlsd_folder), raw_file=path, device="cpu"), mode="r")["pred_affs"]
    # affinities over the whole LSD region
    assert from_disk.shape == (3, 10, 32, 32) and from_disk.attrs["offset"] == lsds.attrs["offset"]
    aclsd = zarr.open_group(predict_scan(load_network_folder(aclsd_folder), raw_file=path, device="cpu"), mode="r")["pred_affs"]
    assert aclsd.shape == (3, 10, 32, 32)

    # acrlsd from disk equals a whole-array pass on (raw, stored LSDs zero-padded by the context)
    lsd_in = np.pad(lsds[:] / 255.0, ((0, 0), (10, 10), (20, 20), (20, 20)))
    expected = forward(config, acrlsd_folder, {"raw": raw[None] / 255.0 * 2 - 1, "lsds": lsd_in})["affs"]
    assert np.abs(from_disk[:].astype(int) - np.floor(expected * 255).astype(int)).max() <= 1


def test_lsds_on_the_fly_agree_with_stored_ones(tmp_path):
    """Where the affs net sees only LSDs that were stored (not the zero padding), both ways give the same."""
    path = tmp_path / "raw.zarr"
    write_container(path, {RAW: np.random.default_rng(4).integers(0, 256, size=(44, 104, 104), dtype=np.uint8)}, VOXEL, OFFSET)
    lsd_folder, _ = make_network(tmp_path / "toy", "lsd", seed=1)
    folder, _ = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    predict_scan(load_network_folder(lsd_folder), raw_file=path, device="cpu")
    from_disk = zarr.open_group(predict_scan(load_network_folder(folder), raw_file=path, device="cpu"), mode="r")["pred_affs"]
    otf = zarr.open_group(predict_scan(load_network_folder(folder), raw_file=path, out_file=tmp_path / "otf.zarr", lsds_on_the_fly=True, device="cpu"), mode="r")["pred_affs"]
    assert otf.shape == from_disk.shape == (3, 24, 64, 64)
    assert otf.attrs["offset"] == from_disk.attrs["offset"]
    interior = (slice(None), slice(10, 14), slice(20, 44), slice(20, 44))  # the LSD region shrunk by the context
    assert np.abs(otf[interior].astype(int) - from_disk[interior].astype(int)).max() <= 1
    # at the border the on-the-fly LSDs (from padded raw) differ from the zero padding of stored ones
    assert np.abs(otf[:].astype(int) - from_disk[:].astype(int)).max() > 1


def test_a_prediction_of_another_iteration_is_not_replaced_silently(tmp_path, raw_file):
    """predict_scan once overwrote another iteration's test_prediction.zarr without a word, and aclsd/acrlsd then
    read LSDs of unknown provenance."""
    path, _ = raw_file
    lsd_folder, _ = make_network(tmp_path / "toy", "lsd", seed=1)
    acrlsd_folder, _ = make_network(tmp_path / "toy", "acrlsd", seed=2, autocontext={"lsd_iteration": 7, "auto_input_shape": [44, 104, 104]})
    out = predict_scan(load_network_folder(lsd_folder), raw_file=path, device="cpu")
    weights = lsd_folder / "train_net_checkpoint_7"
    shutil.copytree(weights, lsd_folder / "train_net_checkpoint_9")  # a newer checkpoint: "latest" is 9
    before = (out / "pred_lsds/.zattrs").read_text()
    with pytest.raises(ConfigError) as e:
        predict_scan(load_network_folder(lsd_folder), raw_file=path, device="cpu")
    assert str(e.value) == f"{out} holds the prediction of iteration 7; pass --overwrite to replace it with iteration 9's"
    assert (out / "pred_lsds/.zattrs").read_text() == before
    predict_scan(load_network_folder(lsd_folder), raw_file=path, device="cpu", overwrite=True)
    with pytest.raises(ConfigError) as e:
        predict_scan(load_network_folder(acrlsd_folder), raw_file=path, device="cpu")
    assert str(e.value).startswith(
        f"{out}: its LSDs come from iteration 9 of the lsd net, acrlsd needs iteration 7 (autocontext.lsd_iteration); "
    )


def test_missing_checkpoint(tmp_path, raw_file):
    folder = tmp_path / "toy" / "baseline"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"network": "baseline", **TINY}))
    with pytest.raises(ConfigError, match="no checkpoint for iteration latest"):
        predict_scan(load_network_folder(folder), raw_file=raw_file[0])
