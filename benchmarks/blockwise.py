"""Blockwise prediction against the bare network, 1 vs 2 workers, and fragments + agglomeration throughput.

Run: .venv/bin/python benchmarks/blockwise.py [--setup 02_train/synthetic/baseline] [--iteration latest]
     (needs `make synthetic` and a trained synthetic network, e.g. `make train DATASET=synthetic NETWORK=baseline
     ITERATION=500`; appends three rows to benchmarks/RESULTS.md)

On the synthetic test volume 01_data/funke/synthetic/testing/test_0.zarr (104 × 296 × 296 voxels, 20 × 9 × 9 nm),
everything written into a temporary folder:

* **network**: the checkpoint's model and the same ``tf.function`` forward as a prediction worker, on the blocks'
  raw read into memory beforehand, one pass per block of the blockwise run, after one warm-up pass;
* **01_predict_blockwise** with 1 worker (``num_workers: 1``: in this process, serially; TensorFlow keeps the threads
  of the network measurement, all cores) and with 2 workers (worker processes, ``cores / 2`` threads each), each timed
  from the call to its return. A thread polls daisy's done-block records, which splits each time into the start (until
  the first block is recorded: model loading, and for worker processes their Python and TensorFlow start) and the
  blocks (first to last block recorded; ``blocks − 1`` blocks in that span);
* **02_extract_fragments + 03_agglomerate** (1 worker, the run config's default blocks) over the predicted
  affinities: voxels per second.

Targets (issue 03_predict): overhead ≤ 15 % at 1 worker (blockwise time / network time − 1); 2 workers ≥ 1.7× faster
than 1. The machine is shared: the rows carry the load average at the start and at the end of the run.
"""

import argparse
import os
import platform
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402

RAW_FILE = REPO_ROOT / "01_data/funke/synthetic/testing/test_0.zarr"


class DonePoller:
    """Polls a daisy task's done-block records in a thread: the times at which the count grew."""

    def __init__(self, tracking: Path, interval: float = 0.1) -> None:
        self.tracking, self.interval = tracking, interval
        self.times: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _count(self) -> int:
        import zarr

        try:
            return int(np.count_nonzero(zarr.open_array(self.tracking / "done", mode="r")[:]))
        except Exception:  # not created yet, or being written
            return 0

    def _run(self) -> None:
        last = 0
        while not self._stop.is_set():
            count = self._count()
            if count > last:
                self.times.append((time.perf_counter(), count))
                last = count
            time.sleep(self.interval)

    def __enter__(self):
        self.start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.end = time.perf_counter()
        self._stop.set()
        self._thread.join()
        count = self._count()
        if not self.times or self.times[-1][1] < count:
            self.times.append((self.end, count))

    def split(self) -> tuple[float, float, float, int]:
        """(total, start: until the first block was recorded, blocks: first to last recorded, blocks recorded)."""
        first, last = self.times[0][0], self.times[-1][0]
        return self.end - self.start, first - self.start, last - first, self.times[-1][1]


def network_time(run, repeats: int = 1) -> tuple[float, int, tuple, tuple, int]:
    """The bare forward passes of the blockwise run's blocks (raw in memory), best of ``repeats``: (time, blocks,
    input shape, output shape, output voxels of the region)."""
    import tensorflow as tf
    from funlib.geometry import Coordinate, Roi

    from lsd_nm.checkpoints import assign_weights, load_checkpoint, resolve_checkpoint
    from lsd_nm.experiment import load_network_config
    from lsd_nm.fragments import open_dataset, read_padded
    from lsd_nm.networks import build_model, network_io
    from lsd_nm.nodes.layout import to_keras

    folder = run.path(run.setup)
    config = load_network_config(folder)
    _, checkpoint = resolve_checkpoint(folder, run.iteration)
    model = build_model(config, "predict")
    assign_weights(model, load_checkpoint(checkpoint)[0], str(checkpoint))
    forward = tf.function(lambda x: model(x, training=False))
    raw = open_dataset(run.path(run.raw_file), run.raw_dataset, "raw")
    vs = raw.voxel_size
    in_shape = Coordinate(config.predict_input_shape)
    out_shape = Coordinate(next(iter(network_io(config, "predict").outputs.values())).shape)
    context = (in_shape - out_shape) * vs / 2
    out_roi = raw.roi.grow(-context, -context)
    # the blocks of the blockwise run: write ROIs of one network output from the region's begin, overhanging its end
    grid = [-(-s // (o * v)) for s, o, v in zip(out_roi.shape, out_shape, vs)]
    array = raw.open("r")
    inputs = []
    for index in np.ndindex(*grid):
        begin = out_roi.begin + Coordinate(i * o * v for i, o, v in zip(index, out_shape, vs)) - context
        data = read_padded(array, raw, Roi(begin, in_shape * vs)).astype(np.float32)
        inputs.append({"raw": to_keras(data / 255.0 * 2.0 - 1.0)})
    forward(inputs[0])  # tracing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            {k: v.numpy() for k, v in forward(x).items()}
        best = min(best, time.perf_counter() - start)
    voxels = int(np.prod([s // v for s, v in zip(out_roi.shape, vs)]))
    return best, len(inputs), tuple(in_shape), tuple(out_shape), voxels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", default="02_train/synthetic/baseline", help="a trained synthetic network folder")
    parser.add_argument("--iteration", default="latest")
    args = parser.parse_args()

    from lsd_nm.agglomerate import agglomerate
    from lsd_nm.fragments import extract_fragments
    from lsd_nm.predict_blockwise import predict_blockwise
    from lsd_nm.run_config import RunConfig

    load_start = os.getloadavg()[0]
    iteration = args.iteration if args.iteration == "latest" else int(args.iteration)
    with tempfile.TemporaryDirectory() as tmp:

        def run_config(name: str, workers: int) -> RunConfig:
            return RunConfig(
                setup=str(REPO_ROOT / args.setup), iteration=iteration, raw_file=str(RAW_FILE),
                out_file=str(Path(tmp) / f"{name}.zarr"), num_workers=workers, device="cpu",
            )  # fmt: skip

        net, blocks, in_shape, out_shape, voxels = network_time(run_config("network", 1))
        timings = {}
        for workers in (1, 2):
            run = run_config(f"predict_{workers}", workers)
            tracking = Path(run.out_file) / ".blocks" / f"predict_{Path(args.setup).name}"
            with DonePoller(tracking) as poller:
                result = predict_blockwise(run, progress=False)
            assert result.processed == blocks, (result, blocks)
            timings[workers] = poller.split()

        segment = run_config("predict_1", 1)
        start = time.perf_counter()
        fragment_blocks = extract_fragments(segment, progress=False).total
        fragments = time.perf_counter() - start
        start = time.perf_counter()
        agglomerate(segment, progress=False)
        agglomeration = time.perf_counter() - start
    load_end = os.getloadavg()[0]

    (t1, s1, b1, n1), (t2, s2, b2, n2) = timings[1], timings[2]
    per_block_1, per_block_2 = b1 / max(n1 - 1, 1), b2 / max(n2 - 1, 1)
    machine = (
        f"{platform.machine()}, {os.cpu_count()} cores, load {load_start:.1f} → {load_end:.1f} (shared machine"
        f"{': loaded, times pessimistic' if max(load_start, load_end) > 0.5 * (os.cpu_count() or 1) else ''})"
    )
    what = (
        f"{Path(args.setup).name} on synthetic test_0, {blocks} blocks {in_shape}→{out_shape}, "
        f"{voxels / 1e6:.1f} Mvoxels"
    )
    lines = [
        f"| {date.today()} | 01_predict_blockwise, 1 worker, vs the bare network ({what}) | {t1:.2f} s "
        f"(start {s1:.2f} s + blocks {b1:.2f} s) vs network {net:.2f} s | overhead {100 * (t1 / net - 1):+.0f}% (target ≤ +15%); "
        f"per block {per_block_1:.3f} s vs {net / blocks:.3f} s | {machine} |",
        f"| {date.today()} | 01_predict_blockwise, 2 workers vs 1 ({what}) | {t2:.2f} s (start {s2:.2f} s + blocks "
        f"{b2:.2f} s) vs {t1:.2f} s | {t1 / t2:.2f}× faster (target ≥ 1.7×); per block {per_block_2:.3f} s vs "
        f"{per_block_1:.3f} s: {per_block_1 / per_block_2:.2f}× | {machine} |",
        f"| {date.today()} | 02_extract_fragments + 03_agglomerate, 1 worker, {fragment_blocks} blocks, "
        f"{voxels / 1e6:.1f} Mvoxels | {fragments:.2f} s + {agglomeration:.2f} s | "
        f"{voxels / (fragments + agglomeration):,.0f} voxels/s (fragments {voxels / fragments:,.0f}, agglomeration "
        f"{voxels / agglomeration:,.0f}) | {machine} |",
    ]
    with Path(__file__).with_name("RESULTS.md").open("a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
