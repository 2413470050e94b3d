"""KerasTrain and KerasPredict: the paper's loss, learning, checkpoints, resuming, and predictions."""

import gunpowder as gp
import numpy as np
import pytest
from funlib.persistence import Array

from lsd_nm.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint, resolve_checkpoint
from lsd_nm.config import ConfigError, user_error
from lsd_nm.experiment import NetworkConfig
from lsd_nm.networks import build_model, network_io
from lsd_nm.nodes import KerasPredict, KerasTrain
from lsd_nm.nodes.keras_train import weighted_mse
from lsd_nm.synthetic import generate_volume

VOXEL = gp.Coordinate((20, 9, 9))
TINY = {
    "unet": {"num_fmaps": 4, "fmap_inc_factor": 2, "downsample_factors": [[1, 2, 2], [1, 2, 2]]},
    "input_shape": [22, 56, 56],
    "predict_input_shape": [24, 64, 64],
    "optimizer": {"learning_rate": 3e-3},  # a tiny net on one batch: learn fast enough to see it in 20 steps
}
RAW, LABELS, GT_AFFS, AFFS_WEIGHTS, PRED_AFFS, AFFS_GRADIENT = (
    gp.ArrayKey(n) for n in ("RAW", "LABELS", "GT_AFFS", "AFFS_WEIGHTS", "PRED_AFFS", "AFFS_GRADIENT")
)


def tiny_config(**changes) -> NetworkConfig:
    return NetworkConfig.model_validate({"network": "baseline", **TINY, **changes})


def test_weighted_mse_is_tf1_sum_by_nonzero_weights():
    rng = np.random.default_rng(0)
    gt = rng.uniform(size=(1, 4, 5, 6, 3)).astype(np.float32)
    pred = rng.uniform(size=(1, 4, 5, 6, 3)).astype(np.float32)
    weights = rng.uniform(size=(1, 4, 5, 6, 1)).astype(np.float32)
    weights[weights < 0.3] = 0.0  # some zero weights: they do not count
    expected = np.sum(np.broadcast_to(weights, gt.shape) * (gt - pred) ** 2) / np.count_nonzero(np.broadcast_to(weights, gt.shape))
    assert float(weighted_mse(gt, pred, weights)) == pytest.approx(expected, rel=1e-6)
    assert float(weighted_mse(gt, pred, np.zeros_like(weights))) == 0.0


def training_pipeline(config, folder, max_iteration, save_every=1000, fixed=True, before_train=None):
    raw, labels = generate_volume((40, 128, 128), tuple(VOXEL), seed=5)
    sources = (
        gp.ArraySource(RAW, Array(raw, (0, 0, 0), VOXEL), interpolatable=True),
        gp.ArraySource(LABELS, Array(labels, (0, 0, 0), VOXEL), interpolatable=False),
    ) + gp.MergeProvider()
    io = network_io(config)
    pipeline = (
        sources
        + gp.Normalize(RAW)
        + gp.AddAffinities(config.neighborhood, LABELS, GT_AFFS, dtype=np.float32)
        + gp.BalanceLabels(GT_AFFS, AFFS_WEIGHTS)
        + gp.IntensityScaleShift(RAW, 2, -1)
        + (before_train if before_train is not None else gp.IntensityScaleShift(RAW, 1, 0))
        + KerasTrain(
            lambda: build_model(config),
            config,
            folder,
            inputs={"raw": RAW},
            targets={"affs": (GT_AFFS, AFFS_WEIGHTS)},
            outputs={"affs": PRED_AFFS},
            gradients={"affs": AFFS_GRADIENT},
            save_every=save_every,
            max_iteration=max_iteration,
            device="cpu",
        )
    )
    request = gp.BatchRequest()
    centre = gp.Coordinate((20, 64, 64)) * VOXEL
    request[RAW] = gp.ArraySpec(roi=gp.Roi(centre - gp.Coordinate(io.inputs["raw"].shape) * VOXEL / 2, gp.Coordinate(io.inputs["raw"].shape) * VOXEL))
    out_roi = gp.Roi(centre - gp.Coordinate(io.outputs["affs"].shape) * VOXEL / 2, gp.Coordinate(io.outputs["affs"].shape) * VOXEL)
    for key in (LABELS, GT_AFFS, AFFS_WEIGHTS, PRED_AFFS, AFFS_GRADIENT):
        request[key] = gp.ArraySpec(roi=out_roi)
    return pipeline, request


def test_loss_falls_and_outputs_are_given(tmp_path):
    import keras

    keras.utils.set_random_seed(0)  # the initial weights
    config = tiny_config()
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=20)
    losses = []
    with gp.build(pipeline):
        for i in range(20):
            batch = pipeline.request_batch(request)
            losses.append(batch.loss)
            assert batch.iteration == i + 1
    assert np.mean(losses[-3:]) < 0.8 * losses[0]
    assert not tf32_enabled(), "training runs in FP32 unless the config allows TF32"
    assert batch[PRED_AFFS].data.shape == (3, 2, 16, 16)
    assert batch[AFFS_GRADIENT].data.shape == (3, 2, 16, 16)
    assert batch[PRED_AFFS].spec.roi == request[PRED_AFFS].roi
    assert np.abs(batch[AFFS_GRADIENT].data).sum() > 0
    # a checkpoint at max_iteration, carrying the config it was trained with
    assert [it for it, _ in list_checkpoints(tmp_path)] == [20]
    _, optimizer, trained = load_checkpoint(latest_checkpoint(tmp_path)[1])
    assert trained == config
    assert optimizer is not None and len(optimizer) > 0
    assert any((tmp_path / "log").iterdir())


def tf32_enabled() -> bool:
    import tensorflow as tf

    return tf.config.experimental.tensor_float_32_execution_enabled()


def test_tf32_follows_the_network_config(tmp_path):
    """KerasTrain, KerasPredict and the blockwise prediction worker set TF32 from the network config (default off)."""
    from lsd_nm.predict_blockwise import PredictJob, _setup_worker

    config = tiny_config(tf32=True)
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=1)
    with gp.build(pipeline):
        pipeline.request_batch(request)
        assert tf32_enabled()
    _, checkpoint = latest_checkpoint(tmp_path)
    raw = np.zeros((24, 64, 64), dtype=np.float32)
    source = gp.ArraySource(RAW, Array(raw, (0, 0, 0), VOXEL), interpolatable=True)
    request = gp.BatchRequest()
    request[RAW] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), gp.Coordinate(raw.shape) * VOXEL))
    out_shape = gp.Coordinate(network_io(config, "predict").outputs["affs"].shape)
    request[PRED_AFFS] = gp.ArraySpec(roi=gp.Roi((gp.Coordinate(raw.shape) - out_shape) / 2 * VOXEL, out_shape * VOXEL))
    for tf32 in (False, True):
        predict = KerasPredict(lambda: build_model(config, "predict"), checkpoint, {"raw": RAW}, {"affs": PRED_AFFS}, device="cpu", tf32=tf32)
        with gp.build(source + predict) as p:
            p.request_batch(request)
            assert tf32_enabled() is tf32
    for tf32 in (False, True):
        _setup_worker(PredictJob(config=tiny_config(tf32=tf32), checkpoint=checkpoint, raw=None, lsds=None, outputs={}, device="cpu", threads=1))
        assert tf32_enabled() is tf32


def test_resume_continues_the_iteration_count(tmp_path):
    config = tiny_config()
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=4, save_every=2)
    with gp.build(pipeline):
        for _ in range(4):
            pipeline.request_batch(request)
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4]
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=6, save_every=100)
    with gp.build(pipeline):
        iterations = [pipeline.request_batch(request).iteration for _ in range(2)]
    assert iterations == [5, 6]
    assert [it for it, _ in list_checkpoints(tmp_path)] == [2, 4, 6]


class _NanTargetsFrom(gp.BatchFilter):
    """Makes the affinity targets NaN from the ``first``-th batch on (as a diverging run makes its loss)."""

    def __init__(self, first: int):
        self.first, self.count = first, 0

    def process(self, batch, request):
        self.count += 1
        if self.count >= self.first:
            batch[GT_AFFS].data[:] = np.nan


def test_a_loss_that_is_no_number_stops_training_and_keeps_the_last_checkpoint(tmp_path):
    """A NaN loss once trained on to exit 0 and wrote NaN checkpoints."""
    config = tiny_config()
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=10, save_every=1)
    train = pipeline.children[0] if False else None  # noqa: F841 - the pipeline is rebuilt below with the NaN node
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=10, save_every=1, before_train=_NanTargetsFrom(3))
    with pytest.raises(Exception) as e:
        with gp.build(pipeline):
            for _ in range(10):
                pipeline.request_batch(request)
    assert str(user_error(e.value)) == (
        "training diverged: the loss is nan at iteration 3; the checkpoint of iteration 2 is kept "
        "(a smaller optimizer.learning_rate than 0.003 may help)"
    )
    assert [it for it, _ in list_checkpoints(tmp_path)] == [1, 2]


def test_checkpoint_of_another_network_says_what_differs(tmp_path):
    pipeline, request = training_pipeline(tiny_config(), tmp_path, max_iteration=1)
    with gp.build(pipeline):
        pipeline.request_batch(request)
    other = tiny_config(unet={**TINY["unet"], "num_fmaps": 3})
    pipeline, request = training_pipeline(other, tmp_path, max_iteration=2)
    with pytest.raises(Exception) as e:
        with gp.build(pipeline):
            pass
    assert str(user_error(e.value)) == f"{tmp_path / 'train_net_checkpoint_1'} was trained with a different network: unet.num_fmaps: checkpoint 4 != folder 3"


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    """The advice fits the dataset: a generated one has no published checkpoints to fetch (it once advised
    `make fetch-checkpoint DATASET=synthetic`, which then refused)."""
    folder = tmp_path / "synthetic" / "lsd"
    folder.mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        resolve_checkpoint(folder, 2000)
    assert str(e.value) == (
        f"{folder}: no checkpoint for iteration 2000 (found: none); train it with "
        "`make train DATASET=synthetic NETWORK=lsd ITERATION=<n>`"
    )
    folder = tmp_path / "zebrafinch" / "lsd"
    folder.mkdir(parents=True)
    with pytest.raises(ConfigError) as e:
        resolve_checkpoint(folder, 400000)
    assert str(e.value) == (
        f"{folder}: no checkpoint for iteration 400000 (found: none); train it with "
        "`make train DATASET=zebrafinch NETWORK=lsd ITERATION=<n>` or import the published one with "
        "`make fetch-checkpoint DATASET=zebrafinch NETWORK=lsd`"
    )


def test_predict_reproduces_the_trained_model(tmp_path):
    """save → load → identical outputs; requests smaller than the output are cut from its centre."""
    config = tiny_config()
    pipeline, request = training_pipeline(config, tmp_path, max_iteration=3)
    with gp.build(pipeline):
        for _ in range(3):
            pipeline.request_batch(request)
    _, checkpoint = latest_checkpoint(tmp_path)
    raw = np.random.default_rng(1).uniform(-1, 1, size=(24, 64, 64)).astype(np.float32)
    io = network_io(config, "predict")
    source = gp.ArraySource(RAW, Array(raw, (0, 0, 0), VOXEL), interpolatable=True)
    predict = KerasPredict(lambda: build_model(config, "predict"), checkpoint, {"raw": RAW}, {"affs": PRED_AFFS}, device="cpu")
    request = gp.BatchRequest()
    request[RAW] = gp.ArraySpec(roi=gp.Roi((0, 0, 0), gp.Coordinate(raw.shape) * VOXEL))
    out_shape = gp.Coordinate(io.outputs["affs"].shape)
    context = (gp.Coordinate(raw.shape) - out_shape) / 2
    # one voxel less on every side than the network gives
    request[PRED_AFFS] = gp.ArraySpec(roi=gp.Roi((context + 1) * VOXEL, (out_shape - 2) * VOXEL))
    with gp.build(source + predict) as p:
        batch = p.request_batch(request)
    # an independent forward pass of a model with the checkpoint's weights
    from lsd_nm.checkpoints import assign_weights

    model = build_model(config, "predict")
    assign_weights(model, load_checkpoint(checkpoint)[0], "test")
    expected = np.moveaxis(np.asarray(model({"raw": raw[None, ..., None]})["affs"])[0], -1, 0)
    assert batch[PRED_AFFS].data.shape == (3, *(out_shape - 2))
    np.testing.assert_allclose(batch[PRED_AFFS].data, expected[:, 1:-1, 1:-1, 1:-1], atol=1e-6)
    assert batch[PRED_AFFS].spec.roi == request[PRED_AFFS].roi
