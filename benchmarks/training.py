"""Training throughput per node: where an iteration of the zebrafinch mtlsd pipeline goes, against the bare train step.

Run: .venv/bin/python benchmarks/training.py [--iterations 6] [--workers N] [--cache C] [--niceness K]
     (needs `make synthetic masks`; appends rows to benchmarks/RESULTS.md; ~4 min on 2 idle cores)

The pipeline of ``lsd_nm.pipelines.build_train_pipeline`` trains the zebrafinch mtlsd recipe at the paper's shapes
(input (84, 268, 268), output (48, 56, 56)) on the synthetic anisotropic volumes (20×9×9 nm, like zebrafinch) in a
scratch copy of 02_train/zebrafinch/mtlsd, so the repository's folder stays untouched. In one process, in order:

1. **batch alone**: the nodes upstream of PreCache (sources, elastic augment, simple and intensity augment, grow
   boundary, LSD targets, affinities, balance) produce batches in this process while nothing else runs: each node's
   time per batch — the CPU a batch costs, single-threaded;
2. **pipeline vs bare step, in pairs**: after two warm-up iterations, each iteration — ``request_batch`` of the
   training request, PreCache workers preparing batches beside the step as in ``python train.py`` — is followed by
   one **bare step**: the train node's own compiled step (forward, losses, gradients, Adam update) on a fixed
   batch, with the PreCache processes stopped (SIGSTOP), so that nothing else of ours runs. A load that drifts on a
   shared machine then affects both sides of a pair alike; the ratio is the median of the pairs' ratios. Per
   iteration: the step (KerasTrain), the wait for a batch (PreCache) and the rest of the main process.

Goal: iteration ≤ 1.1 × the bare step. ``--workers``/``--cache``/``--niceness`` override the PreCache arrangement the
pipeline chooses (to compare arrangements).
"""

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import Ratio, load, machine, output_arguments, report  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402
from lsd_nm.datasets import DATA_DIR, get_dataset, volume_path  # noqa: E402

GOAL = 1.1
"""Iteration / bare step."""


def node_times(batch) -> dict[str, float]:
    """Seconds per node class in a batch's profiling statistics (nodes of one class summed)."""
    times: dict[str, float] = defaultdict(float)
    for (node, _method), summary in batch.profiling_stats.get_timing_summaries().items():
        times[node] += float(np.sum(summary.times))
    return times


def scratch_network(tmp: Path, workers: int | None, cache: int | None) -> tuple[Path, Path]:
    """The synthetic anisotropic volumes under zebrafinch volume names, and a copy of the zebrafinch mtlsd folder."""
    import json

    data = tmp / "data"
    names = get_dataset("zebrafinch").volumes
    for i, volume in enumerate(get_dataset("synthetic").volumes):
        source = volume_path("synthetic", volume, data_dir=DATA_DIR)
        if not source.exists():
            raise SystemExit(f"{source} is missing: run `make synthetic masks` first")
        shutil.copytree(source, volume_path("zebrafinch", names[i], data_dir=data))
    folder = tmp / "02_train" / "zebrafinch" / "mtlsd"
    ignore = shutil.ignore_patterns("train_net_*", "snapshots", "log", "loss.*")
    shutil.copytree(REPO_ROOT / "02_train" / "zebrafinch" / "mtlsd", folder, ignore=ignore)
    config = json.loads((folder / "config.json").read_text())
    for key, value in (("num_workers", workers), ("cache_size", cache)):
        if value is not None:
            config.setdefault("train", {})[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    return data, folder


@contextlib.contextmanager
def paused(processes):
    """Stop ``processes`` (SIGSTOP) for the duration, then let them go on (SIGCONT)."""
    import psutil

    stopped = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(signal.SIGSTOP)
            stopped.append(process)
    try:
        yield
    finally:
        for process in stopped:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGCONT)


def run(
    iterations: int = 6, workers: int | None = None, niceness: int | None = None, cache: int | None = None
) -> tuple[list[str], list[Ratio]]:
    """Measure; returns the RESULTS.md rows and the ratio against its goal."""
    import dask
    import gunpowder as gp
    import psutil

    from lsd_nm.experiment import load_network_folder
    from lsd_nm.nodes import KerasTrain, PreCache
    from lsd_nm.nodes.layout import to_keras

    # as train() does: dask's threaded scheduler does not survive PreCache's fork
    dask.config.set(scheduler="synchronous")
    from lsd_nm.pipelines import build_train_pipeline

    load_start = load()
    with tempfile.TemporaryDirectory() as tmp:
        data, folder = scratch_network(Path(tmp), workers, cache)
        setup = build_train_pipeline(load_network_folder(folder), 10**6, device="cpu", data_dir=data)
        train = setup.train_node
        assert isinstance(train, KerasTrain)
        with gp.build(setup.pipeline):
            precache = train.get_upstream_provider()
            assert isinstance(precache, PreCache), type(precache)
            if niceness is not None:
                precache.niceness = niceness
            upstream = precache.get_upstream_provider()

            # 1. the batch alone (the first one compiles or loads the LSD code)
            upstream.request_batch(setup.request)
            alone, alone_wall = defaultdict(list), []
            for _ in range(4):
                start = time.perf_counter()
                batch = upstream.request_batch(setup.request)
                alone_wall.append(time.perf_counter() - start)
                for node, seconds in node_times(batch).items():
                    alone[node].append(seconds)

            # 2. the bare step: the train node's compiled step on the last batch
            x = {name: to_keras(batch[key].data) for name, key in train.network_inputs.items()}
            gts = {h: to_keras(batch[gt].data) for h, (gt, _) in train.targets.items()}
            ws = {h: to_keras(batch[w].data) for h, (_, w) in train.targets.items()}

            def bare(n: int) -> list[float]:
                times = []
                for _ in range(n):
                    start = time.perf_counter()
                    float(train._step(x, gts, ws)[0])
                    times.append(time.perf_counter() - start)
                return times

            bare(1)  # tracing

            # 3. the pipeline (two warm-up iterations: the pool starts, the first batches), each iteration followed
            # by a bare step with the PreCache processes stopped (SIGSTOP): a load that drifts on a shared machine
            # affects both alike, and no batch is prepared during a bare step
            for _ in range(2):
                setup.pipeline.request_batch(setup.request)
            walls, steps, per_node = [], [], defaultdict(list)
            for _ in range(iterations):
                start = time.perf_counter()
                batch = setup.pipeline.request_batch(setup.request)
                walls.append(time.perf_counter() - start)
                for node, seconds in node_times(batch).items():
                    per_node[node].append(seconds)
                with paused(psutil.Process().children(recursive=True)):
                    steps += bare(1)
            arrangement = (precache.num_workers, precache.cache_size, precache.niceness)
    load_end = load()
    print(
        "pairs (iteration s, bare step s):",
        ", ".join(f"({w:.2f}, {b:.2f})" for w, b in zip(walls, steps)),
        file=sys.stderr,
    )

    cores = os.cpu_count() or 1
    step = statistics.median(steps)
    iteration = statistics.median(walls)
    train_time = statistics.median(per_node["KerasTrain"])
    wait = statistics.median(per_node["PreCache"])
    rest = statistics.median(w - t - p for w, t, p in zip(walls, per_node["KerasTrain"], per_node["PreCache"]))
    batch_nodes = {n: statistics.median(t) for n, t in alone.items() if n not in ("KerasTrain", "PreCache")}
    batch_cpu = statistics.median(alone_wall)
    share = batch_cpu / (cores * step)
    ratio = statistics.median(w / b for w, b in zip(walls, steps))
    where = machine(load_start, load_end)
    today = date.today()
    workers_, cache, nice = arrangement
    nodes = ", ".join(
        f"{node} {seconds:.2f}"
        for node, seconds in sorted(batch_nodes.items(), key=lambda kv: -kv[1])
        if seconds >= 0.005
    )
    lines = [
        f"| {today} | zebrafinch mtlsd (84,268,268)→(48,56,56): pipeline per iteration vs bare train step "
        f"({iterations} pairs) | {iteration:.2f} s vs {step:.2f} s (medians) | {ratio:.2f}× (median of the pairs' "
        f"ratios; goal ≤ {GOAL}×); per iteration: step {train_time:.2f} s, batch wait {wait:.2f} s, the rest "
        f"{rest:.2f} s; PreCache {workers_} workers at nice +{nice}, cache {cache}; TensorFlow {cores} threads "
        f"| {where} |",
        f"| {today} | zebrafinch mtlsd: one batch alone, per node (seconds, one core, nothing else running) | "
        f"{batch_cpu:.2f} s per batch | {nodes}; the batch is {100 * share:.1f}% of the step's {cores} × "
        f"{step:.1f} core-seconds: where the step keeps every core busy, the pipeline costs ≤ {1 + share:.2f}× | "
        f"{where} |",
    ]
    ratios = [Ratio("training: iteration / bare step", ratio, GOAL, False, f"{iteration:.1f} s vs {step:.1f} s")]
    return lines, ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--workers", type=int, default=None, help="PreCache workers (default: the pipeline's choice)")
    parser.add_argument(
        "--niceness", type=int, default=None, help="PreCache workers' niceness (default: the pipeline's)"
    )
    parser.add_argument("--cache", type=int, default=None, help="PreCache cache size (default: the pipeline's)")
    output_arguments(parser)
    args = parser.parse_args()
    report(args, *run(args.iterations, args.workers, args.niceness, args.cache))


if __name__ == "__main__":
    main()
