"""Blockwise prediction against the bare network: the tax of being blockwise at 1 worker, 2 workers against 1, and
where a worker's start-up goes.

Run: .venv/bin/python benchmarks/blockwise.py [--network mtlsd] [--repeats 3]
     (needs `make synthetic`; appends rows to benchmarks/RESULTS.md; ~3 min on 2 cores)

Everything runs in a scratch folder: a copy of ``02_train/synthetic/<network>`` with a checkpoint of random weights
(the time of a pass does not depend on the weights) and a raw volume of 104 × 600 × 600 voxels at 20 × 9 × 9 nm
(the synthetic test volume, mirrored out to 600 voxels in y and x): 64 blocks (44, 180, 180) → (24, 140, 140).

* **network**: the checkpoint's model in a ``tf.function``, its float32 input already in memory (one array per
  block of the blockwise run), its output left in TensorFlow: the bare network, one pass per block;
* **1 worker**: ``predict_blockwise`` with ``num_workers: 1`` in this process (serially; TensorFlow has the threads
  of the network measurement, all cores), from the call to its return: model build and tracing, reading raw,
  writing the outputs — all the tax. The two run in pairs, ``--repeats`` of them, in alternating order (network
  first, then blockwise first, …), so that a load drifting on a shared machine favours neither; the result is the
  median of the pairs' ratios. Goal: ≤ 10 % over the network.
* **1 vs 2 workers, as a user runs them**: ``03_predict/01_predict_blockwise.py CONFIG`` as a process with
  ``num_workers`` 1 (all threads, in the process) and 2 (two worker processes, one thread each), in pairs as above;
  each pays its Python, TensorFlow and model start-up. A thread polls daisy's done-block records, which splits each
  run into its start (to the first block recorded) and its blocks. Goal: 2 workers no slower than 1.
* **worker start-up**: a fresh process doing what a worker does before its first block, step by step.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import DonePoller, Ratio, load, machine, output_arguments, report  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402

TEST_VOLUME = REPO_ROOT / "01_data/funke/synthetic/testing/test_0.zarr"
SHAPE_YX = 600
"""The scratch raw's size in y and x (voxels): 4 × 4 blocks in y, x (and 4 in z) for the synthetic networks."""
GOAL_OVERHEAD = 1.10
GOAL_TWO_WORKERS = 1.0


def scratch(tmp: Path, network: str) -> tuple[Path, Path]:
    """The scratch raw volume and network folder (with a checkpoint of random weights)."""
    import keras

    from lsd_nm.checkpoints import model_weights, save_checkpoint
    from lsd_nm.data import RAW, read_array, write_container
    from lsd_nm.experiment import load_network_config
    from lsd_nm.networks import build_model

    if not TEST_VOLUME.exists():
        raise SystemExit(f"{TEST_VOLUME} is missing: run `make synthetic` first")
    raw, voxel_size, _ = read_array(TEST_VOLUME, RAW)
    pad = [(0, 0)] + [(0, SHAPE_YX - s) for s in raw.shape[1:]]
    write_container(tmp / "raw.zarr", {RAW: np.pad(raw, pad, mode="reflect")}, voxel_size, (0, 0, 0))
    datasets = tmp / "02_train" / "synthetic"
    shutil.copytree(
        REPO_ROOT / "02_train" / "synthetic" / network,
        datasets / network,
        ignore=shutil.ignore_patterns("train_net_*", "snapshots", "log"),
    )
    shutil.copy(REPO_ROOT / "02_train" / "synthetic" / "config.json", datasets / "config.json")
    config = load_network_config(datasets / network)
    keras.utils.set_random_seed(0)
    save_checkpoint(datasets / network, 1, config, model_weights(build_model(config)))
    return tmp / "raw.zarr", datasets / network


def network_inputs(run):
    """The bare network (the checkpoint's model in a ``tf.function``) and its float32 inputs, one per block of the
    blockwise run (write ROIs of one network output from the region's begin, overhanging its end)."""
    import tensorflow as tf
    from funlib.geometry import Coordinate, Roi

    from lsd_nm.checkpoints import assign_weights, load_weights, resolve_checkpoint
    from lsd_nm.data import open_dataset, read_padded
    from lsd_nm.experiment import load_network_config
    from lsd_nm.networks import build_model, network_io

    folder = run.path(run.setup)
    config = load_network_config(folder)
    _, checkpoint = resolve_checkpoint(folder, run.iteration)
    model = build_model(config, "predict")
    assign_weights(model, load_weights(checkpoint), str(checkpoint))
    forward = tf.function(lambda x: model(x, training=False))
    raw = open_dataset(run.path(run.raw_file), run.raw_dataset, "raw")
    vs = raw.voxel_size
    in_shape = Coordinate(config.predict_input_shape)
    out_shape = Coordinate(next(iter(network_io(config, "predict").outputs.values())).shape)
    context = (in_shape - out_shape) * vs / 2
    out_roi = raw.roi.grow(-context, -context)
    grid = [-(-s // (o * v)) for s, o, v in zip(out_roi.shape, out_shape, vs)]
    array = raw.open("r")
    inputs = []
    for index in np.ndindex(*grid):
        begin = out_roi.begin + Coordinate(i * o * v for i, o, v in zip(index, out_shape, vs)) - context
        data = read_padded(array, raw, Roi(begin, in_shape * vs)).astype(np.float32)
        inputs.append({"raw": (data / 255.0 * 2.0 - 1.0)[None, ..., None]})
    forward(inputs[0])  # tracing
    voxels = int(np.prod([s // v for s, v in zip(out_roi.shape, vs)]))
    return forward, inputs, (tuple(in_shape), tuple(out_shape), voxels)


def bare_network(forward, inputs) -> float:
    """The passes alone: the outputs stay in TensorFlow (a call returns once its pass is done)."""
    start = time.perf_counter()
    for x in inputs:
        forward(x)
    return time.perf_counter() - start


STARTUP = r"""
import os, sys, time, json
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from lsd_nm import predict_blockwise  # what unpickling a worker's job imports
t1 = time.perf_counter()
import tensorflow, keras
t2 = time.perf_counter()
from lsd_nm.checkpoints import assign_weights, load_weights
from lsd_nm.experiment import load_network_config
from lsd_nm.networks import build_model
config = load_network_config(sys.argv[1])
tensorflow.config.threading.set_intra_op_parallelism_threads(int(sys.argv[3]))
model = build_model(config, "predict")
assign_weights(model, load_weights(sys.argv[2]), "checkpoint")
t3 = time.perf_counter()
forward = predict_blockwise._forward_function(model, config, {"raw": __import__("numpy").dtype("uint8")})
t4 = time.perf_counter()
import gunpowder  # what a worker imported before it stopped importing the training nodes with it
t5 = time.perf_counter()
print(json.dumps({"imports": t1 - t0, "tensorflow": t2 - t1, "model": t3 - t2, "trace": t4 - t3, "gunpowder": t5 - t4}))
"""


def block_anatomy(run, forward, inputs, n: int = 16) -> dict[str, float]:
    """Where a block's time goes, one part after the other (no look-ahead), on ``n`` blocks: read raw right after a
    pass, our traced pass (uint8 in and out), the bare network's pass, and writing the outputs (medians, ms)."""
    from funlib.geometry import Coordinate, Roi

    from lsd_nm import predict_blockwise as step

    plan = step.plan_prediction(run)
    p = plan.passes[0]
    for output in p.outputs.values():
        output.create(p.tracking)
    job = step.PredictJob(
        p.folder.config,
        p.checkpoint,
        plan.raw,
        None,
        {h: o.volume for h, o in p.outputs.items()},
        run.device,
        os.cpu_count() or 1,
    )
    resources = step._setup_worker(job)
    size = p.out_shape * p.voxel_size
    grid = [-(-s // b) for s, b in zip(p.out_roi.shape, size)]
    parts: dict[str, list[float]] = {"read": [], "pass": [], "network": [], "write": []}
    for i, index in enumerate(list(np.ndindex(*grid))[:n]):
        begin = p.out_roi.begin + Coordinate(k * b for k, b in zip(index, size))
        forward(inputs[i])  # a pass first, as in a run
        start = time.perf_counter()
        x = step._read_input(job, Roi(begin - p.context, p.in_shape * p.voxel_size), resources)
        parts["read"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = {h: t.numpy() for h, t in resources["forward"](x).items()}
        parts["pass"].append(time.perf_counter() - start)
        start = time.perf_counter()
        forward(inputs[i])
        parts["network"].append(time.perf_counter() - start)
        start = time.perf_counter()
        where = tuple(
            slice((b - o) // v, (b - o) // v + s)
            for b, o, v, s in zip(begin, p.out_roi.begin, p.voxel_size, p.out_shape)
        )
        for head, array in resources["outputs"].items():
            array[(slice(None), *where)] = out[head]
        parts["write"].append(time.perf_counter() - start)
    return {k: 1000 * statistics.median(v) for k, v in parts.items()}


def worker_startup(folder: Path, checkpoint: Path, threads: int) -> dict[str, float]:
    """What a fresh worker process spends before its first block, step by step (Python's own start apart)."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", STARTUP, str(folder), str(checkpoint), str(threads)],
        capture_output=True,
        text=True,
        check=True,
    )
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    steps["process"] = time.perf_counter() - start - steps["gunpowder"]
    return steps


def cli_run(config_file: Path, tracking: Path) -> dict[str, float]:
    """``03_predict/01_predict_blockwise.py CONFIG`` as a process, split by its done-block records."""
    shutil.rmtree(json.loads(config_file.read_text())["out_file"], ignore_errors=True)
    with DonePoller(tracking) as poller:
        subprocess.run([sys.executable, str(REPO_ROOT / "03_predict/01_predict_blockwise.py"), str(config_file)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return poller.split()


def run(network: str = "mtlsd", repeats: int = 3) -> tuple[list[str], list[Ratio], dict]:
    """Measure; returns the RESULTS.md rows, the ratios against their goals, and per-block numbers for others."""
    from lsd_nm.predict_blockwise import predict_blockwise
    from lsd_nm.run_config import RunConfig

    load_start = load()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        raw_file, folder = scratch(tmp, network)

        def run_config(name: str, workers: int) -> RunConfig:
            return RunConfig(
                setup=str(folder),
                raw_file=str(raw_file),
                out_file=str(tmp / f"{name}.zarr"),
                num_workers=workers,
                device="cpu",
            )

        forward, inputs, (in_shape, out_shape, voxels) = network_inputs(run_config("network", 1))
        blocks = len(inputs)

        def serial_run(i: int) -> dict:
            config = run_config(f"serial_{i}", 1)
            with DonePoller(config.blocks_dir / f"predict_{network}") as poller:
                result = predict_blockwise(config, progress=False)
            assert result.processed == blocks, (result, blocks)
            return poller.split()

        # pairs in alternating order (network first, then blockwise first, …): a load that drifts during the run
        # favours neither side; each pair's ratio counts, the median of them is the result
        nets, serial = [], []
        for i in range(repeats):
            if i % 2 == 0:
                nets.append(bare_network(forward, inputs))
                serial.append(serial_run(i))
            else:
                serial.append(serial_run(i))
                nets.append(bare_network(forward, inputs))
        pair_ratios = sorted(s["total"] / n for s, n in zip(serial, nets))
        net = statistics.median(nets)
        one = {k: statistics.median(s[k] for s in serial) for k in serial[0]}

        cli: dict[int, list[dict]] = {1: [], 2: []}
        for i in range(repeats):
            for workers in (1, 2) if i % 2 == 0 else (2, 1):
                config = run_config(f"cli_{workers}", workers)
                path = tmp / f"cli_{workers}.json"
                path.write_text(config.model_dump_json())
                cli[workers].append(cli_run(path, config.blocks_dir / f"predict_{network}"))
        cli_ratios = sorted(a["total"] / b["total"] for a, b in zip(cli[1], cli[2]))
        best = {w: {k: statistics.median(s[k] for s in runs) for k in runs[0]} for w, runs in cli.items()}
        startup = {
            threads: worker_startup(folder, folder / "train_net_checkpoint_1", threads) for threads in (cores, 1)
        }
        anatomy = block_anatomy(run_config("anatomy", 1), forward, inputs)
    load_end = load()

    where = machine(load_start, load_end)
    today = date.today()
    what = f"{network} (random weights), {blocks} blocks {in_shape}→{out_shape}, {voxels / 1e6:.1f} Mvoxels"
    overhead = statistics.median(pair_ratios)
    speedup = statistics.median(cli_ratios)
    s1, s2 = startup[cores], startup[1]

    def steps(s):
        return (
            f"imports {s['imports']:.2f} s, TensorFlow {s['tensorflow']:.2f} s, model + weights {s['model']:.2f} s, "
            f"trace {s['trace']:.2f} s; no longer imported: gunpowder (and dask) {s['gunpowder']:.2f} s"
        )

    lines = [
        f"| {today} | 01_predict_blockwise, 1 worker in process, vs the bare network ({what}; {repeats} pairs, medians) | "
        f"{one['total']:.2f} s (start {one['start']:.2f} s + blocks {one['blocks']:.2f} s) vs network {net:.2f} s | "
        f"overhead {100 * (overhead - 1):+.1f}% (median of the pairs' ratios {', '.join(f'{r:.2f}' for r in pair_ratios)}; goal "
        f"≤ +10%); per block {one['per_block'] * 1000:.0f} ms vs "
        f"{net / blocks * 1000:.0f} ms | {where} |",
        f"| {today} | 01_predict_blockwise.py as a process, 2 workers (1 thread each) vs 1 worker ({cores} threads) ({what}; "
        f"{repeats} pairs, medians) | {best[2]['total']:.2f} s (start {best[2]['start']:.2f} s, per block "
        f"{best[2]['per_block'] * 1000:.0f} ms) vs {best[1]['total']:.2f} s (start {best[1]['start']:.2f} s, per block "
        f"{best[1]['per_block'] * 1000:.0f} ms) | 2 workers {speedup:.2f}× as fast (median of the pairs' ratios "
        f"{', '.join(f'{r:.2f}' for r in cli_ratios)}; goal ≥ 1.0×) | {where} |",
        f"| {today} | a block of 01_predict_blockwise, part by part, 1 worker ({network}; medians of 16 blocks, one part "
        f"after the other) | read {anatomy['read']:.0f} ms + pass {anatomy['pass']:.0f} ms + write {anatomy['write']:.0f}"
        f" ms vs the bare network's pass {anatomy['network']:.0f} ms | reading and writing are "
        f"{100 * (anatomy['read'] + anatomy['write']) / anatomy['network']:.0f}% and the conversions in the pass "
        f"{100 * (anatomy['pass'] / anatomy['network'] - 1):+.0f}% of the network's time | {where} |",
        f"| {today} | prediction worker start-up, a fresh process ({network}) | {s2['process']:.2f} s (1 thread), "
        f"{s1['process']:.2f} s ({cores} threads) | 1 thread: {steps(s2)}; the rest is Python's own start and exit | {where} |",
    ]
    ratios = [
        Ratio("prediction: 1 worker / bare network", overhead, GOAL_OVERHEAD, False, f"{blocks} blocks"),
        Ratio("prediction: 2 workers vs 1 (speed-up)", speedup, GOAL_TWO_WORKERS, True, f"{blocks} blocks, processes"),
    ]
    numbers = {
        "network_per_block": net / blocks, "out_shape": out_shape, "voxels": voxels, "blocks": blocks,
        "voxels_per_s": voxels / min(best[1]["total"], best[2]["total"]),
    }  # fmt: skip
    return lines, ratios, numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", default="mtlsd", help="a network of 02_train/synthetic")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--numbers", type=Path, default=None, help="write the per-block numbers to this JSON file (for run_all.py)"
    )
    output_arguments(parser)
    args = parser.parse_args()
    lines, ratios, numbers = run(args.network, args.repeats)
    report(args, lines, ratios)
    if args.numbers is not None:
        args.numbers.write_text(json.dumps(numbers))


if __name__ == "__main__":
    main()
