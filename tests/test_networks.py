"""The paper's U-Net: shapes, parameter counts and cost exactly as in the original (§4.1 of the spec)."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from lsd_nm.config import ConfigError
from lsd_nm.experiment import NetworkConfig, UNetConfig, load_network_config, load_network_folder
from lsd_nm.networks import build_model, folder_io, network_io, unet_output_shape

ZEBRAFINCH = REPO / "02_train" / "zebrafinch"
NETWORKS = ["baseline", "lsd", "mtlsd", "aclsd", "acrlsd", "long_range", "malis"]

# U-Net parameters (§4.1) plus the heads
PARAMETERS = {
    "baseline": 95_853_456 + 39,
    "malis": 95_853_456 + 39,
    "long_range": 95_853_456 + 156,
    "lsd": 95_853_456 + 130,
    "mtlsd": 95_856_160 + 150 + 45,
    "aclsd": 95_856_372 + 39,
    "acrlsd": 95_856_696 + 39,
}


@pytest.mark.parametrize("network", NETWORKS)
def test_zebrafinch_parameter_counts(network):
    config = load_network_config(ZEBRAFINCH / network)
    assert network_io(config, "train").parameters == PARAMETERS[network]
    assert network_io(config, "predict").parameters == PARAMETERS[network]


@pytest.mark.parametrize("network", NETWORKS)
def test_zebrafinch_shapes(network):
    ios = folder_io(load_network_folder(ZEBRAFINCH / network))
    for head in ios["train"].outputs.values():
        assert head.shape == (48, 56, 56)
    for head in ios["predict"].outputs.values():
        assert head.shape == (60, 272, 272)
    if network in ("aclsd", "acrlsd"):
        assert ios["auto"].inputs["raw"].shape == (120, 484, 484)
        assert ios["auto"].outputs["lsds"].shape == (84, 272, 272)
        assert ios["train"].inputs["lsds"].shape == (84, 268, 268)
    if network == "acrlsd":
        assert ios["train"].inputs["raw"].shape == (120, 484, 484)
        assert ios["predict"].inputs["raw"].shape == ios["predict"].inputs["lsds"].shape == (96, 484, 484)


def test_every_layer_shape_of_the_paper_table():
    layers = {layer["name"]: layer for layer in network_io(load_network_config(ZEBRAFINCH / "mtlsd")).layers}
    expected = {
        "unet_layer_0_left_0": ((84, 268, 268), (82, 266, 266), 1, 12),
        "unet_layer_0_left_1": ((82, 266, 266), (80, 264, 264), 12, 12),
        "unet_down_0_to_1": ((80, 264, 264), (80, 88, 88), 12, 12),
        "unet_layer_1_left_1": ((78, 86, 86), (76, 84, 84), 60, 60),
        "unet_down_1_to_2": ((76, 84, 84), (76, 28, 28), 60, 60),
        "unet_layer_2_left_1": ((74, 26, 26), (72, 24, 24), 300, 300),
        "unet_down_2_to_3": ((72, 24, 24), (24, 8, 8), 300, 300),
        "unet_layer_3_left_1": ((22, 6, 6), (20, 4, 4), 1500, 1500),
        "unet_up_3_to_2": ((20, 4, 4), (60, 12, 12), 1500, 300),
        "unet_layer_2_right_0": ((60, 12, 12), (58, 10, 10), 600, 300),
        "unet_layer_2_right_1": ((58, 10, 10), (56, 8, 8), 300, 300),
        "unet_up_2_to_1": ((56, 8, 8), (56, 24, 24), 300, 60),
        "unet_layer_1_right_0": ((56, 24, 24), (54, 22, 22), 120, 60),
        "unet_layer_1_right_1": ((54, 22, 22), (52, 20, 20), 60, 60),
        "unet_up_1_to_0": ((52, 20, 20), (52, 60, 60), 60, 12),
        "unet_layer_0_right_0": ((52, 60, 60), (50, 58, 58), 24, 14),
        "unet_layer_0_right_1": ((50, 58, 58), (48, 56, 56), 14, 14),
        "lsds_0": ((48, 56, 56), (48, 56, 56), 14, 10),
        "affs_0": ((48, 56, 56), (48, 56, 56), 14, 3),
    }
    for name, (in_shape, out_shape, c_in, c_out) in expected.items():
        layer = layers[name]
        assert (tuple(layer["in_shape"]), tuple(layer["out_shape"]), layer["c_in"], layer["c_out"]) == (
            in_shape,
            out_shape,
            c_in,
            c_out,
        ), name
    # the skips are cropped at offset (in − out) // 2: (6,6,6), (10,30,30), (14,102,102)
    for lvl, offset in ((2, (6, 6, 6)), (1, (10, 30, 30)), (0, (14, 102, 102))):
        crop = layers[f"crop_{lvl}"]
        assert tuple((i - o) // 2 for i, o in zip(crop["in_shape"], crop["out_shape"])) == offset


def test_forward_cost_per_output_voxel():
    io = network_io(load_network_config(ZEBRAFINCH / "baseline"), "predict")
    assert float(f"{io.flops_per_output_voxel:.3g}") == 9.13e5


@pytest.mark.parametrize("network", ["baseline", "mtlsd", "aclsd", "acrlsd"])
def test_keras_model_matches_the_arithmetic(network):
    config = load_network_config(ZEBRAFINCH / network)
    model = build_model(config, "train")
    io = network_io(config, "train")
    assert model.count_params() == io.parameters
    for name, spec in io.outputs.items():
        assert tuple(model.get_layer(name).output.shape) == (1, *spec.shape, spec.channels)
    for name, spec in io.inputs.items():
        assert tuple(model.get_layer(name).output.shape) == (1, *spec.shape, spec.channels)


def test_original_layer_names():
    model = build_model(load_network_config(ZEBRAFINCH / "mtlsd"), "train")
    names = {layer.name for layer in model.layers if layer.weights}
    assert names == {
        *(f"unet_layer_{lvl}_{side}_{i}" for lvl in range(4) for side in ("left", "right") for i in range(2) if not (lvl == 3 and side == "right")),
        "unet_up_3_to_2",
        "unet_up_2_to_1",
        "unet_up_1_to_0",
        "lsds_0",
        "affs_0",
    }


@pytest.mark.parametrize("network", NETWORKS)
def test_synthetic_models_run(network):
    """The CPU-sized synthetic nets: a forward pass on zeros gives the described shapes, in [0, 1]."""
    config = load_network_config(REPO / "02_train" / "synthetic" / network)
    io = network_io(config, "train")
    model = build_model(config, "train")
    out = model({n: np.zeros((1, *t.shape, t.channels), np.float32) for n, t in io.inputs.items()})
    for name, spec in io.outputs.items():
        assert tuple(out[name].shape) == (1, *spec.shape, spec.channels)
        assert 0.0 <= float(np.min(out[name])) <= float(np.max(out[name])) <= 1.0


def test_not_divisible_is_a_one_line_error():
    unet = UNetConfig()
    with pytest.raises(ConfigError) as e:
        unet_output_shape(unet, (84, 270, 268))
    assert str(e.value) == (
        "input shape (84, 270, 268): unet_down_0_to_1 gets shape (80, 266, 264), not divisible by the downsample factor (1, 3, 3)"
    )


def test_too_small_is_a_one_line_error():
    with pytest.raises(ConfigError) as e:
        unet_output_shape(UNetConfig(), (30, 268, 268))
    assert str(e.value) == (
        "input shape (30, 268, 268): layer unet_layer_1_right_0 would have output shape (0, 22, 22) (≤ 0); use a larger input"
    )


def test_autocontext_section_required():
    with pytest.raises(Exception, match="needs an 'autocontext' section"):
        NetworkConfig.model_validate({"network": "acrlsd"})


def test_mknet_script_bad_config(tmp_path):
    folder = tmp_path / "02_train" / "toy" / "baseline"
    folder.mkdir(parents=True)
    shim = (ZEBRAFINCH / "baseline" / "mknet.py").read_text().replace(
        'sys.path.insert(0, str(here.parents[3] / "src"))', f"sys.path.insert(0, {str(REPO / 'src')!r})"
    )
    (folder / "mknet.py").write_text(shim)
    (folder / "config.json").write_text('{"network": "baseline", "input_shape": [84, 270, 268]}')
    result = subprocess.run([sys.executable, "mknet.py"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {folder / 'config.json'}: input_shape (84, 270, 268): unet_down_0_to_1 gets shape (80, 266, 264), "
        "not divisible by the downsample factor (1, 3, 3)\n"
    )
    assert not (folder / "net_train.json").exists()
    # the key named is the one at fault, in the file that sets it (here the dataset's, for every network)
    (folder.parent / "config.json").write_text('{"predict_input_shape": [96, 486, 484]}')
    (folder / "config.json").write_text('{"network": "baseline"}')
    result = subprocess.run([sys.executable, "mknet.py"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {folder.parent / 'config.json'}: predict_input_shape (96, 486, 484): ")


def test_a_bad_value_names_the_file_that_sets_it(tmp_path):
    """A too-short input_shape in the network's file was once blamed on the dataset's file, which also sets one."""
    folder = tmp_path / "toy" / "baseline"
    folder.mkdir(parents=True)
    (folder.parent / "config.json").write_text('{"input_shape": [84, 268, 268]}')
    (folder / "config.json").write_text('{"network": "baseline", "input_shape": [84, 268]}')
    with pytest.raises(ConfigError) as e:
        load_network_config(folder)
    assert str(e.value) == f"{folder / 'config.json'}: key 'input_shape': too few values, got [84, 268]"


def test_mknet_script_writes_descriptions(tmp_path):
    import json
    import shutil

    folder = tmp_path / "02_train" / "synthetic" / "mtlsd"
    shutil.copytree(REPO / "02_train" / "synthetic" / "mtlsd", folder)
    shutil.copy(REPO / "02_train" / "synthetic" / "config.json", folder.parent / "config.json")
    shim = (folder / "mknet.py").read_text().replace(
        'sys.path.insert(0, str(here.parents[3] / "src"))', f"sys.path.insert(0, {str(REPO / 'src')!r})"
    )
    (folder / "mknet.py").write_text(shim)
    result = subprocess.run([sys.executable, "mknet.py"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "parameters: " in result.stdout
    train = json.loads((folder / "net_train.json").read_text())
    assert train["network"] == "mtlsd"
    assert train["inputs"]["raw"]["shape"] == [30, 88, 88]
    assert train["outputs"]["lsds"] == {"channels": 10, "shape": [10, 48, 48], "dtype": "uint8"}
    assert train["outputs"]["affs"]["channels"] == 3
    predict = json.loads((folder / "net_predict.json").read_text())
    assert predict["outputs"]["affs"]["shape"] == [24, 140, 140]
    # the cost at both shapes (the paper's 9.13e5 FLOP per output voxel is the prediction shape's)
    assert f"forward cost: {train['flops_per_output_voxel']:.3e} FLOP per output voxel" in result.stdout
    assert f"; forward cost {predict['flops_per_output_voxel']:.3e} FLOP per output voxel" in result.stdout
