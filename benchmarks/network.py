"""Forward and train-step time of the zebrafinch U-Net at the paper's shapes on this machine, against its peak.

Run: .venv/bin/python benchmarks/network.py [--repeats 3]   (appends lines to benchmarks/RESULTS.md)

The peak is measured in the same run: a large float32 matmul (2·n³ FLOP) through TensorFlow. A network's FLOP
are counted from its layer list (multiply-adds ×2 of convolutions and transposed convolutions), as mknet prints.
"""

import argparse
import os
import platform
import resource
import time
from datetime import date

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import append_rows  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402
from lsd_nm.experiment import load_network_config  # noqa: E402
from lsd_nm.networks import build_model, network_io  # noqa: E402
from lsd_nm.nodes.keras_train import weighted_mse  # noqa: E402


def best_of(fn, repeats):
    fn()  # tracing / warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    import keras
    import tensorflow as tf

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    n = 4096
    a = tf.random.normal((n, n))
    matmul = tf.function(lambda: tf.matmul(a, a))
    peak = 2 * n**3 / best_of(lambda: matmul().numpy(), args.repeats)

    config = load_network_config(REPO_ROOT / "02_train" / "zebrafinch" / "baseline")
    rows = []
    for role in ("train", "predict"):
        io = network_io(config, role)
        model = build_model(config, role)
        x = {"raw": np.random.default_rng(0).uniform(-1, 1, (1, *io.inputs["raw"].shape, 1)).astype(np.float32)}
        out_voxels = int(np.prod(io.outputs["affs"].shape))
        flops = io.flops_per_output_voxel * out_voxels
        forward = tf.function(lambda x: model(x, training=False))
        t = best_of(lambda: forward(x)["affs"].numpy(), args.repeats)
        rows.append((f"zebrafinch U-Net forward {io.inputs['raw'].shape}→{io.outputs['affs'].shape}", t, flops / t, out_voxels / t))
        if role == "train":
            optimizer = keras.optimizers.Adam(5e-5, 0.95, 0.999, 1e-8)
            gt = np.random.default_rng(1).uniform(size=(1, *io.outputs["affs"].shape, 3)).astype(np.float32)
            w = np.ones_like(gt)

            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    loss = weighted_mse(gt, model(x, training=True)["affs"], w)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables))
                return loss

            t = best_of(lambda: step(x).numpy(), args.repeats)
            # a train step is ~3× the forward cost (forward, and backward w.r.t. inputs and weights)
            rows.append((f"zebrafinch U-Net train step {io.inputs['raw'].shape}→{io.outputs['affs'].shape}", t, 3 * flops / t, out_voxels / t))
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    machine = f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, load {os.getloadavg()[0]:.1f}"
    lines = [
        f"| {date.today()} | {name} | {t:.2f} s | {fl / 1e9:.1f} GFLOP/s = {100 * fl / peak:.0f}% of matmul peak {peak / 1e9:.0f} GFLOP/s; {vox:,.0f} output voxels/s | {peak_rss:.1f} GB peak RSS (whole run) | {machine} |"
        for name, t, fl, vox in rows
    ]
    append_rows(lines)


if __name__ == "__main__":
    main()
