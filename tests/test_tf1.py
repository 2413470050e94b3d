"""Importing the published TF1 checkpoints: every variable lands in the right layer with the right layout."""

import json

import numpy as np
import pytest
import tensorflow as tf

from lsd_nm.checkpoints import assign_weights, list_checkpoints, load_checkpoint, model_weights
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


# ---- the Adam state ------------------------------------------------------------------------------------------------

LR, BETA1, BETA2, EPSILON = 0.01, 0.95, 0.999, 1e-8  # the paper's Adam, with a step size that makes updates visible


def write_trained_tf1_checkpoint(prefix, scope, variables, steps, iteration):
    """A TF1 checkpoint after real TF1 Adam steps, made as the original made it: ``minimize`` called inside the
    network's variable scope (slots ``<scope>/<scope>/…/Adam``), one optimizer per entry of ``steps`` (name → steps
    it takes, in the order they are made), gunpowder's iteration counter beside them."""
    with tf.Graph().as_default():
        rng = np.random.default_rng(11)
        with tf.compat.v1.variable_scope(scope):
            tvars = [
                tf.compat.v1.get_variable(name, value.shape, tf.float32, initializer=tf.compat.v1.constant_initializer(value))
                for name, value in variables.items()
            ]
            # a loss whose gradient differs from element to element
            loss = tf.add_n([tf.reduce_sum(tf.sin(3.0 * v) * rng.normal(size=v.shape).astype(np.float32)) for v in tvars])
            ops = {name: tf.compat.v1.train.AdamOptimizer(LR, BETA1, BETA2, EPSILON, name=name).minimize(loss) for name in steps}
        tf.compat.v1.get_variable("gunpowder/iteration", [1], tf.float32, initializer=tf.compat.v1.constant_initializer(float(iteration)))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            for name, count in steps.items():
                for _ in range(count):
                    session.run(ops[name])
            tf.compat.v1.train.Saver().save(session, str(prefix))


def restored_adam(config, state):
    """(iterations, ``<layer>/<variable>`` → (m, v)) of a checkpoint's optimizer state, read back through Keras."""
    from lsd_nm.checkpoints import _weighted_layers, build_optimizer

    model = build_model(config, "train")
    optimizer = build_optimizer(config, model)
    for variable, value in zip(optimizer.variables, state, strict=True):
        variable.assign(value)
    moments = {}
    for name, variable in _weighted_layers(model):
        index = optimizer._get_variable_index(variable)
        moments[name] = (optimizer._momentums[index].numpy(), optimizer._velocities[index].numpy())
    return int(optimizer.iterations.numpy()), moments


def test_training_on_from_an_import_takes_the_next_tf1_adam_step(tmp_path):
    """Import after 3 TF1 Adam steps, train one step with KerasTrain: the update is TF1's 4th Adam step, by hand:
    m ← β1·m + (1 − β1)·g, v ← β2·v + (1 − β2)·g², w ← w − lr·sqrt(1 − β2_power)/(1 − β1_power)·m/(sqrt(v) + ε),
    with the checkpoint's m, v and beta powers (a fresh Adam would have m = v = 0 and step 1's bias correction)."""
    import gunpowder as gp

    from lsd_nm.checkpoints import _weighted_layers
    from lsd_nm.nodes import KerasTrain
    from lsd_nm.nodes.keras_train import weighted_mse

    folder = make_folder(tmp_path, "baseline", optimizer={"learning_rate": LR, "beta1": BETA1, "beta2": BETA2, "epsilon": EPSILON})
    config = load_network_config(folder)
    variables = tf1_variables(config, 1, np.random.default_rng(5))
    prefix = folder / "train_net_checkpoint_3"
    write_trained_tf1_checkpoint(prefix, "setup01", variables, {"Adam": 3}, iteration=3)
    reader = tf.train.load_checkpoint(str(prefix))
    tf1 = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    assert "setup01/setup01/unet_layer_0_left_0/kernel/Adam_1" in tf1  # the original's naming

    iteration, path = import_tf1_checkpoint(load_network_folder(folder))
    weights, state, _ = load_checkpoint(path)
    assert iteration == 3 and state is not None
    step, moments = restored_adam(config, state)
    assert step == 3
    for name in variables:
        np.testing.assert_array_equal(moments[name][0], tf1[f"setup01/setup01/{name}/Adam"])
        np.testing.assert_array_equal(moments[name][1], tf1[f"setup01/setup01/{name}/Adam_1"])

    io = network_io(config, "train")
    rng = np.random.default_rng(8)
    x = {n: rng.uniform(-1, 1, size=(1, *t.shape, t.channels)).astype(np.float32) for n, t in io.inputs.items()}
    out = io.outputs["affs"]
    gt = rng.uniform(0, 1, size=(1, *out.shape, out.channels)).astype(np.float32)
    w = rng.uniform(0.5, 2, size=gt.shape).astype(np.float32)

    # the gradient at the imported weights, on its own
    model = build_model(config, "train")
    assign_weights(model, weights, "test")
    named = list(_weighted_layers(model))
    with tf.GradientTape() as tape:
        loss = weighted_mse(gt, model(x, training=True)["affs"], w)
    gradients = dict(zip([n for n, _ in named], tape.gradient(loss, [v for _, v in named])))

    keys = {"raw": gp.ArrayKey("RAW_T"), "gt": gp.ArrayKey("GT_T"), "w": gp.ArrayKey("W_T")}
    node = KerasTrain(lambda: build_model(config, "train"), config, folder, {"raw": keys["raw"]}, {"affs": (keys["gt"], keys["w"])}, device="cpu")
    node.start()
    assert node.iteration == 3
    node._step(x, {"affs": gt}, {"affs": w})
    after = model_weights(node.model)

    b1p, b2p = float(tf1["setup01/beta1_power"]), float(tf1["setup01/beta2_power"])
    assert b1p == pytest.approx(BETA1**4, rel=1e-6)  # 3 steps taken: the 4th uses β^4
    lr_t = LR * np.sqrt(1 - b2p) / (1 - b1p)
    fresh_lr = LR * np.sqrt(1 - BETA2) / (1 - BETA1)
    for name in variables:
        g = np.asarray(gradients[name], np.float64)
        m = BETA1 * tf1[f"setup01/setup01/{name}/Adam"].astype(np.float64) + (1 - BETA1) * g
        v = BETA2 * tf1[f"setup01/setup01/{name}/Adam_1"].astype(np.float64) + (1 - BETA2) * g**2
        expected = -lr_t * m / (np.sqrt(v) + EPSILON)
        # float32 weights (|w| < 2) hold an update to ~2 ulp: 2.4e-7 absolute
        np.testing.assert_allclose(after[name] - weights[name], expected, rtol=1e-4, atol=2.4e-7)
        fresh = -fresh_lr * (1 - BETA1) * g / (np.sqrt((1 - BETA2) * g**2) + EPSILON)
        assert np.abs(fresh - expected).max() > 1e-4  # a fresh Adam's step is far outside the tolerance


def test_malis_takes_its_malis_optimizer_and_its_own_beta_powers(tmp_path):
    folder = make_folder(tmp_path, "malis", optimizer={"learning_rate": LR})
    config = load_network_config(folder)
    variables = tf1_variables(config, 1, np.random.default_rng(6))
    prefix = folder / "train_net_checkpoint_7"
    write_trained_tf1_checkpoint(prefix, "setup07", variables, {"Adam": 2, "malis_optimizer": 5}, iteration=7)
    reader = tf.train.load_checkpoint(str(prefix))
    assert {"setup07/beta1_power", "setup07/beta1_power_1"} <= set(reader.get_variable_to_shape_map())

    _, path = import_tf1_checkpoint(load_network_folder(folder))
    step, moments = restored_adam(config, load_checkpoint(path)[1])
    assert step == 5  # the malis optimizer's steps, not the MSE phase's 2 nor the 7 iterations
    for name in variables:
        np.testing.assert_array_equal(moments[name][0], reader.get_tensor(f"setup07/setup07/{name}/malis_optimizer"))
        np.testing.assert_array_equal(moments[name][1], reader.get_tensor(f"setup07/setup07/{name}/malis_optimizer_1"))


def write_named(prefix, values):
    """A TF1 checkpoint of exactly these variables (name → value)."""
    with tf.Graph().as_default():
        for name, value in values.items():
            value = np.asarray(value, np.float32)
            tf.compat.v1.get_variable(name, value.shape, tf.float32, initializer=tf.compat.v1.constant_initializer(value))
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(prefix))


def _with_slots(variables, scope, **extra):
    values = {f"{scope}/{n}": v for n, v in variables.items()}
    values.update({f"{scope}/{scope}/{n}/Adam": np.full_like(v, 0.01) for n, v in variables.items()})
    values.update({f"{scope}/{scope}/{n}/Adam_1": np.full_like(v, 0.002) for n, v in variables.items()})
    values.update(extra)
    return values


def test_beta_powers_underflowed_as_after_400000_steps_take_the_global_step(tmp_path):
    folder = make_folder(tmp_path, "baseline")
    config = load_network_config(folder)
    variables = tf1_variables(config, 1, np.random.default_rng(0))
    extra = {"setup01/beta1_power": 0.0, "setup01/beta2_power": 0.0, "gunpowder/iteration": [400000.0]}
    write_named(folder / "train_net_checkpoint_400000", _with_slots(variables, "setup01", **extra))
    _, path = import_tf1_checkpoint(load_network_folder(folder))
    step, moments = restored_adam(config, load_checkpoint(path)[1])
    assert step == 400000 and all((m == np.float32(0.01)).all() and (v == np.float32(0.002)).all() for m, v in moments.values())


def test_beta_powers_of_other_betas_are_a_one_line_error(tmp_path):
    folder = make_folder(tmp_path, "baseline")  # β1 0.95, β2 0.999
    config = load_network_config(folder)
    variables = tf1_variables(config, 1, np.random.default_rng(0))
    extra = {"setup01/beta1_power": 0.9**4, "setup01/beta2_power": 0.999**4}  # 3 steps with β1 = 0.9
    write_named(folder / "train_net_checkpoint_3", _with_slots(variables, "setup01", **extra))
    with pytest.raises(ConfigError) as e:
        import_tf1_checkpoint(load_network_folder(folder))
    assert str(e.value) == (
        f"{folder / 'train_net_checkpoint_3'}: beta1_power 0.6561 and beta2_power 0.996006 do not fit the config's "
        "beta1 0.95 and beta2 0.999"
    )
    assert list_checkpoints(folder) == []
