"""Importing the published TF1 checkpoints: every variable lands in the right layer with the right layout."""

import json

import numpy as np
import pytest
import tensorflow as tf

from lsd_nm.checkpoints import assign_weights, list_checkpoints, load_checkpoint
from lsd_nm.config import ConfigError
from lsd_nm.experiment import load_network_config, load_network_folder
from lsd_nm.networks import build_model, network_io
from lsd_nm.tf1 import SCOPES, find_tf1_checkpoints, import_tf1_checkpoint

TINY = {
    "unet": {"num_fmaps": 3, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2], [1, 2, 2]]},
    "input_shape": [21, 44, 44],
    "predict_input_shape": [21, 44, 44],
}


def make_folder(tmp_path, network, **extra):
    folder = tmp_path / "toy" / network
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"network": network, **TINY, **extra}))
    return folder


def tf1_variables(config, in_channels, rng):
    """Random values under the original's TF1 names for a tiny U-Net (DHWIO kernels, (k, out, in) transposed)."""
    u = config.unet
    variables = {}

    def conv(name, c_in, c_out, k=3):
        variables[f"{name}/kernel"] = rng.normal(scale=0.3, size=(k, k, k, c_in, c_out)).astype(np.float32)
        variables[f"{name}/bias"] = rng.normal(scale=0.1, size=(c_out,)).astype(np.float32)

    levels = len(u.downsample_factors)
    fmaps = [u.num_fmaps * u.fmap_inc_factor**lvl for lvl in range(levels + 1)]
    c = in_channels
    for lvl in range(levels + 1):
        conv(f"unet_layer_{lvl}_left_0", c, fmaps[lvl])
        conv(f"unet_layer_{lvl}_left_1", fmaps[lvl], fmaps[lvl])
        c = fmaps[lvl]
    for lvl in reversed(range(levels)):
        f = u.downsample_factors[lvl]
        variables[f"unet_up_{lvl + 1}_to_{lvl}/kernel"] = rng.normal(scale=0.3, size=(*f, fmaps[lvl], fmaps[lvl + 1])).astype(np.float32)
        variables[f"unet_up_{lvl + 1}_to_{lvl}/bias"] = rng.normal(scale=0.1, size=(fmaps[lvl],)).astype(np.float32)
        out = u.num_fmaps_out if (lvl == 0 and u.num_fmaps_out) else fmaps[lvl]
        conv(f"unet_layer_{lvl}_right_0", 2 * fmaps[lvl], out)
        conv(f"unet_layer_{lvl}_right_1", out, out)
    top = u.num_fmaps_out or u.num_fmaps
    heads = {"mtlsd": {"embedding_0": 10, "affs_0": 3}, "lsd": {"embedding_0": 10}}.get(config.network, {"affs_0": len(config.neighborhood)})
    for name, channels in heads.items():
        conv(name, top, channels, k=1)
    return variables


def write_tf1_checkpoint(prefix, scope, variables, extra_scope_vars=None):
    """A real TF1 checkpoint written with tf.compat.v1 (graph mode, Saver), as the original's training did."""
    with tf.Graph().as_default():
        for name, value in variables.items():
            tf.compat.v1.get_variable(f"{scope}/{name}", value.shape, tf.float32, initializer=tf.compat.v1.constant_initializer(value))
            # an Adam slot as TF1 names them: it must be ignored
            tf.compat.v1.get_variable(f"{scope}/{scope}/{name}/Adam", value.shape, tf.float32, initializer=tf.compat.v1.zeros_initializer())
        tf.compat.v1.get_variable("gunpowder/iteration", [1], tf.float32, initializer=tf.compat.v1.zeros_initializer())
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(prefix))


def reference_forward(variables, config, x):
    """Independent re-computation from the raw TF1 variables with tf.nn ops (channels-last)."""
    u = config.unet

    def conv(x, name):
        y = tf.nn.conv3d(x, variables[f"{name}/kernel"], strides=[1] * 5, padding="VALID")
        return tf.nn.bias_add(y, variables[f"{name}/bias"])

    def crop(x, shape):
        off = [(int(a) - b) // 2 for a, b in zip(x.shape[1:4], shape)]
        return x[:, off[0] : off[0] + shape[0], off[1] : off[1] + shape[1], off[2] : off[2] + shape[2], :]

    def level(x, lvl):
        left = tf.nn.relu(conv(tf.nn.relu(conv(x, f"unet_layer_{lvl}_left_0")), f"unet_layer_{lvl}_left_1"))
        if lvl == len(u.downsample_factors):
            return left
        f = list(u.downsample_factors[lvl])
        below = level(tf.nn.max_pool3d(left, [1, *f, 1], [1, *f, 1], "VALID"), lvl + 1)
        kernel = variables[f"unet_up_{lvl + 1}_to_{lvl}/kernel"]
        out_shape = [1, *(int(s) * d for s, d in zip(below.shape[1:4], f)), kernel.shape[3]]
        up = tf.nn.relu(tf.nn.bias_add(tf.nn.conv3d_transpose(below, kernel, out_shape, [1, *f, 1], "VALID"), variables[f"unet_up_{lvl + 1}_to_{lvl}/bias"]))
        merged = tf.concat([crop(left, up.shape[1:4]), up], axis=-1)
        return tf.nn.relu(conv(tf.nn.relu(conv(merged, f"unet_layer_{lvl}_right_0")), f"unet_layer_{lvl}_right_1"))

    features = level(x, 0)
    names = {"lsds": "embedding_0", "affs": "affs_0"}
    return {head: tf.sigmoid(conv(features, tf1)).numpy() for head, tf1 in names.items() if f"{tf1}/kernel" in variables}


@pytest.mark.parametrize("network", ["baseline", "mtlsd", "lsd", "long_range", "acrlsd"])
def test_import_matches_reference(tmp_path, network):
    extra = {"unet": {**TINY["unet"], "num_fmaps_out": 5}} if network == "mtlsd" else {}
    if network == "long_range":
        extra = {"neighborhood": [[-1, 0, 0], [0, -1, 0], [0, 0, -1], [-3, 0, 0], [0, -3, 0], [0, 0, -3]]}
    if network == "acrlsd":
        extra = {"autocontext": {"auto_input_shape": [23, 48, 48]}}
    folder = make_folder(tmp_path, network, **extra)
    config = load_network_config(folder)
    rng = np.random.default_rng(3)
    io = network_io(config, "train")
    in_channels = sum(t.channels for t in io.inputs.values())
    variables = tf1_variables(config, in_channels, rng)
    write_tf1_checkpoint(folder / "train_net_checkpoint_400000", SCOPES[network], variables)
    (folder / "checkpoint").write_text('model_checkpoint_path: "train_net_checkpoint_500000"\n')  # as published: wrong

    iteration, path = import_tf1_checkpoint(load_network_folder(folder))
    assert iteration == 400000
    assert [it for it, _ in list_checkpoints(folder)] == [400000]
    weights, optimizer, trained = load_checkpoint(path)
    assert optimizer is None and trained == config

    # every kernel and bias landed in its layer, unchanged
    renamed = {k.replace("embedding_0", "lsds_0"): v for k, v in variables.items()}
    assert set(weights) == set(renamed)
    for name, value in renamed.items():
        np.testing.assert_array_equal(weights[name], value)

    model = build_model(config, "train")
    assign_weights(model, weights, "test")
    inputs = {n: rng.uniform(-1, 1, size=(1, *t.shape, t.channels)).astype(np.float32) for n, t in io.inputs.items()}
    ours = model(inputs)
    if network == "acrlsd":  # channel 0 = raw cropped to the LSDs' shape, channels 1–10 = LSDs
        raw = inputs["raw"]
        off = [(a - b) // 2 for a, b in zip(raw.shape[1:4], inputs["lsds"].shape[1:4])]
        s = inputs["lsds"].shape[1:4]
        x = np.concatenate([raw[:, off[0] : off[0] + s[0], off[1] : off[1] + s[1], off[2] : off[2] + s[2]], inputs["lsds"]], -1)
    else:
        (x,) = inputs.values()
    reference = reference_forward(variables, config, x)
    assert set(reference) == set(io.outputs)
    for head, expected in reference.items():
        np.testing.assert_allclose(np.asarray(ours[head]), expected, atol=1e-5)


def test_newest_present_checkpoint_is_picked(tmp_path):
    folder = make_folder(tmp_path, "baseline")
    config = load_network_config(folder)
    variables = tf1_variables(config, 1, np.random.default_rng(0))
    write_tf1_checkpoint(folder / "train_net_checkpoint_300000", "setup01", variables)
    write_tf1_checkpoint(folder / "train_net_checkpoint_400000", "setup01", variables)
    assert [c.iteration for c in find_tf1_checkpoints(folder)] == [300000, 400000]
    assert import_tf1_checkpoint(load_network_folder(folder))[0] == 400000
    assert import_tf1_checkpoint(load_network_folder(folder), iteration=300000)[0] == 300000
    with pytest.raises(ConfigError) as e:
        import_tf1_checkpoint(load_network_folder(folder), iteration=400000)
    assert str(e.value) == f"{folder / 'train_net_checkpoint_400000'} exists already; remove it to import again"
    with pytest.raises(ConfigError) as e:
        import_tf1_checkpoint(load_network_folder(folder), iteration=500000)
    assert str(e.value) == f"{folder}: no TF1 checkpoint of iteration 500000 (found: 300000, 400000)"


def test_wrong_scope_is_a_one_line_error(tmp_path):
    folder = make_folder(tmp_path, "mtlsd")
    baseline = make_folder(tmp_path / "other", "baseline")
    variables = tf1_variables(load_network_config(baseline), 1, np.random.default_rng(0))
    write_tf1_checkpoint(folder / "train_net_checkpoint_400000", "setup01", variables)
    with pytest.raises(ConfigError) as e:
        import_tf1_checkpoint(load_network_folder(folder))
    assert str(e.value) == f"{folder / 'train_net_checkpoint_400000'}: no variables under the scope 'setup02'"


def test_no_checkpoint(tmp_path):
    folder = make_folder(tmp_path, "lsd")
    with pytest.raises(ConfigError) as e:
        import_tf1_checkpoint(load_network_folder(folder))
    assert str(e.value) == f"{folder}: no TF1 checkpoint (train_net_checkpoint_<N>.index + .data-*) to import"
