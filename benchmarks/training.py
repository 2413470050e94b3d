"""Training throughput: the zebrafinch mtlsd network's bare train step vs the whole pipeline per iteration, and the
time of the LSD targets (lsds, as used by the pipeline) vs lsd-lite at the same sigma.

Run: .venv/bin/python benchmarks/training.py [--iterations 6]   (needs `make synthetic masks`; appends to RESULTS.md)

The pipeline trains on the synthetic anisotropic volumes (20×9×9 nm, like zebrafinch) in a scratch copy of
02_train/zebrafinch/mtlsd, so the repository's folder stays untouched. Target: the pipeline adds ≤ 10 % to the step.
"""

import argparse
import os
import platform
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402
from lsd_nm.datasets import DATA_DIR, get_dataset, volume_path  # noqa: E402


def lsd_times(repeats=3):
    from lsd.train.local_shape_descriptor import get_local_shape_descriptors
    from lsd_lite import get_lsds

    from lsd_nm.data import NEURON_IDS, read_array

    labels, voxel_size, _ = read_array(volume_path("synthetic", "train_0.zarr"), NEURON_IDS)
    # the labels an mtlsd batch needs: the output (48,56,56) grown by 3 sigma (360 nm) per side
    crop = labels[:84, :136, :136]
    out = {}
    for name, fn in (
        ("lsds", lambda: get_local_shape_descriptors(crop, sigma=(120.0,) * 3, voxel_size=voxel_size, downsample=2)),
        ("lsd-lite", lambda: get_lsds(crop, sigma=120.0, voxel_size=voxel_size, downsample=2)),
    ):
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = min(times)
    return crop.shape, out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=6)
    args = parser.parse_args()
    import dask

    dask.config.set(scheduler="synchronous")
    from lsd_nm.train import read_losses, train

    with tempfile.TemporaryDirectory() as tmp:
        # the zebrafinch mtlsd recipe, trained on the synthetic anisotropic volumes under a zebrafinch volume's name
        data = Path(tmp) / "data"
        names = get_dataset("zebrafinch").volumes
        for i, volume in enumerate(get_dataset("synthetic").volumes):
            shutil.copytree(volume_path("synthetic", volume, data_dir=DATA_DIR), volume_path("zebrafinch", names[i], data_dir=data))
        folder = Path(tmp) / "02_train" / "zebrafinch" / "mtlsd"
        shutil.copytree(REPO_ROOT / "02_train" / "zebrafinch" / "mtlsd", folder, ignore=shutil.ignore_patterns("train_net_*", "snapshots", "log", "loss.*"))
        train(folder, args.iterations, data_dir=data)
        rows = read_losses(folder)
        pipeline = float(np.median([r[2] for r in rows[2:]]))  # wall time per iteration, after warm-up

        step = bare_step(folder)
    shape, lsd = lsd_times()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    lines = [
        f"| {date.today()} | zebrafinch mtlsd (84,268,268)→(48,56,56): pipeline per iteration vs bare train step | "
        f"{pipeline:.2f} s vs {step:.2f} s | pipeline overhead {100 * (pipeline / step - 1):+.0f}% (target ≤ +10%) | {machine} |",
        f"| {date.today()} | LSD targets of one mtlsd batch, labels {shape}, sigma 120 nm, downsample 2 | "
        f"lsds {lsd['lsds']:.2f} s, lsd-lite {lsd['lsd-lite']:.2f} s | computed in the PreCache workers, beside the step | {machine} |",
    ]
    with Path(__file__).with_name("RESULTS.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def bare_step(folder: Path, repeats: int = 3) -> float:
    """The train step alone (fixed inputs, no pipeline) of the folder's network."""
    import keras
    import tensorflow as tf

    from lsd_nm.experiment import load_network_config
    from lsd_nm.networks import build_model, network_io
    from lsd_nm.nodes.keras_train import weighted_mse

    config = load_network_config(folder)
    io = network_io(config)
    model = build_model(config)
    optimizer = keras.optimizers.Adam(5e-5, 0.95, 0.999, 1e-8)
    rng = np.random.default_rng(0)
    x = {"raw": rng.uniform(-1, 1, (1, *io.inputs["raw"].shape, 1)).astype(np.float32)}
    gts = {h: rng.uniform(size=(1, *t.shape, t.channels)).astype(np.float32) for h, t in io.outputs.items()}

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            preds = model(x, training=True)
            loss = tf.add_n([weighted_mse(gts[h], preds[h], tf.ones_like(gts[h])) for h in gts])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    step(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(x).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    main()
