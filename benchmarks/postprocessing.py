"""Post-processing per block (03_predict steps 2-5) and a projection onto the paper's zebrafinch benchmark ROI.

Run: .venv/bin/python benchmarks/postprocessing.py [--workers 1 2] [--prediction-rate VOXELS_PER_S]
     (needs `make synthetic`; appends rows to benchmarks/RESULTS.md; ~4 min on 2 cores)

Affinities like a good network's, made from the labels of the synthetic test volume (mirrored out to 120 × 360 ×
360 voxels at 20 × 9 × 9 nm: 2 × 2 × 2 whole blocks of the run config's default 1200 × 1620 × 1620 nm = 60 × 180 ×
180 voxels): 1 inside an object, 0 across a boundary or into background, blurred (1 voxel in-plane) and with noise
(σ 0.1), as uint8. The steps run as a user runs them, each as a process (``03_predict/0N_*.py CONFIG``) with the run
config's defaults (hist_quant_75, block size and context), at each ``--workers``. A thread polls each blockwise
step's done-block records: a step's time splits into its start (process, imports, per-worker setup, up to the
first block) and its blocks; the blocks' span over the blocks after the first gives the cost of a block at that
worker count (workers × span per block: CPU-seconds per block). ``04_find_segments`` is global (the whole region
graph at every threshold of the sweep): its time per voxel counts, start included.

The projection onto the zebrafinch benchmark ROI (4.78·10¹¹ voxels, paper.md §1.5): its number of blocks, the
CPU-hours of steps 2-5 at the measured per-block costs, the hours on W workers, and the number of GPUs above which
post-processing on W workers rather than prediction (the paper's 0.53-0.94 Mvoxel/s per GPU, zarr I/O included)
is the bottleneck. Assumes per-block costs that do not grow with the volume (true of steps 2, 3, 5) and a
find_segments that grows linearly with it (it is O(edges · log edges) and needs the region graph in memory: the
projection is its lower bound).
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
from common import DonePoller, load, machine, output_arguments, report  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402

TEST_VOLUME = REPO_ROOT / "01_data/funke/synthetic/testing/test_0.zarr"
SHAPE = (120, 360, 360)
"""The scratch volume (voxels): whole blocks of the default block size at 20 × 9 × 9 nm."""
ROI_VOXELS = 4.78e11
"""The zebrafinch benchmark ROI (paper.md §1.5)."""
PREDICT_BLOCK_VOXELS = 60 * 272 * 272
"""Output voxels of one prediction block at the paper's predict shape (96, 484, 484) → (60, 272, 272)."""
GPU_RATES = (0.53e6, 0.94e6)
"""The paper's end-to-end prediction rates per GPU (voxels/s; ACRLSD on a V100 … Baseline on a 2080Ti)."""
STEPS = {
    "02_extract_fragments": "extract_fragments",
    "03_agglomerate": "agglomerate",
    "04_find_segments": None,
    "05_extract_segmentation": "segmentation_50",
}
"""Each step's script and its done-block records (None: not blockwise)."""
PROJECTED_WORKERS = (1, 2, 16, 64, 256)


def network_like_affinities(shape=SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """(3, z, y, x) uint8 affinities from the test volume's labels (mirrored out to ``shape``), the labels, the
    voxel size."""
    from scipy.ndimage import gaussian_filter

    from lsd_nm.data import NEURON_IDS, read_array

    if not TEST_VOLUME.exists():
        raise SystemExit(f"{TEST_VOLUME} is missing: run `make synthetic` first")
    labels, voxel_size, _ = read_array(TEST_VOLUME, NEURON_IDS)
    labels = np.pad(labels, [(0, max(0, t - s)) for t, s in zip(shape, labels.shape)], mode="reflect")
    labels = labels[tuple(slice(0, t) for t in shape)]
    affs = np.zeros((3, *shape), np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        before = [slice(None)] * 3
        here[axis], before[axis] = slice(1, None), slice(None, -1)
        target = (slice(axis, axis + 1), *(slice(1, None) if a == axis else slice(None) for a in range(3)))
        affs[target] = ((labels[tuple(here)] == labels[tuple(before)]) & (labels[tuple(here)] > 0))[None]
    rng = np.random.default_rng(seed)
    affs = gaussian_filter(affs, (0, 0, 1, 1)) + rng.normal(0, 0.1, affs.shape).astype(np.float32)
    return np.floor(np.clip(affs, 0, 1) * 255).astype(np.uint8), labels, tuple(voxel_size)


def write_case(out: Path, affs: np.ndarray, voxel_size) -> None:
    import zarr

    from lsd_nm.data import AFFS

    group = zarr.open_group(out, mode="w", zarr_format=2)
    array = group.create_array(AFFS, data=affs, chunks=(3, 60, 180, 180))
    array.attrs.update({"resolution": list(voxel_size), "offset": [0, 0, 0]})


def run_steps(tmp: Path, affs: np.ndarray, voxel_size, workers: int) -> dict[str, dict]:
    """Steps 2-5 as processes at ``workers``; per step its split (see :class:`DonePoller`)."""
    from lsd_nm.run_config import RunConfig

    out = tmp / f"pp_{workers}.zarr"
    write_case(out, affs, voxel_size)
    config = RunConfig(raw_file=str(out), out_file=str(out), num_workers=workers, extract_thresholds=[0.5])
    path = tmp / f"pp_{workers}.json"
    path.write_text(config.model_dump_json(exclude_defaults=True))
    steps = {}
    for script, task in STEPS.items():
        command = [sys.executable, str(REPO_ROOT / "03_predict" / f"{script}.py"), str(path)]
        if task is None:
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            steps[script] = {"total": time.perf_counter() - start}
            continue
        with DonePoller(config.blocks_dir / task) as poller:
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        steps[script] = poller.split()
    return steps


def projection(
    block_voxels: int, cpu_per_block: float, find_per_voxel: float, prediction_rate: float | None
) -> list[str]:
    """The projection rows (what | number | result): blocks and CPU-hours; the GPUs above which post-processing is
    the bottleneck."""
    blocks = math.ceil(ROI_VOXELS / block_voxels)
    cpu_hours = blocks * cpu_per_block / 3600
    find_hours = ROI_VOXELS * find_per_voxel / 3600
    per_worker = block_voxels / cpu_per_block  # voxels/s of steps 2, 3 and 5 per worker
    low, high = GPU_RATES
    hours = ", ".join(f"{w}: {cpu_hours / w + find_hours:,.1f} h" for w in PROJECTED_WORKERS)
    gpus = ", ".join(f"{w}: {w * per_worker / high:,.1f}-{w * per_worker / low:,.1f}" for w in PROJECTED_WORKERS)
    cpu = ""
    if prediction_rate:
        cpu = f"; this machine's CPU prediction ({prediction_rate / 1e6:.3f} Mvoxel/s) would take {ROI_VOXELS / prediction_rate / 3600:,.0f} h"
    return [
        f"{blocks:,} blocks of {block_voxels / 1e6:.2f} Mvoxels ({math.ceil(ROI_VOXELS / PREDICT_BLOCK_VOXELS):,} "
        f"prediction blocks of 60×272×272) | {cpu_hours + find_hours:,.0f} CPU-hours (fragments + agglomeration + "
        f"extraction {cpu_hours:,.0f}, find_segments ≥ {find_hours:,.1f}) | hours on W workers — {hours}",
        f"post-processing rate per worker vs the paper's GPUs | {per_worker / 1e3:,.0f} kvoxels/s per worker (steps "
        f"2, 3, 5) | GPUs (0.94-0.53 Mvoxel/s each) above which W workers' post-processing rather than prediction is "
        f"the bottleneck — {gpus}; one GPU keeps {low / per_worker:.1f}-{high / per_worker:.1f} workers busy{cpu}",
    ]


def run(workers=(1, 2), prediction_rate: float | None = None) -> tuple[list[str], list, dict]:
    """Measure; returns the RESULTS.md rows, no ratios (no goal here), and the per-block numbers."""
    load_start = load()
    affs, _, voxel_size = network_like_affinities()
    voxels = int(np.prod(affs.shape[1:]))
    block_voxels = 60 * 180 * 180
    with tempfile.TemporaryDirectory() as tmp:
        measured = {w: run_steps(Path(tmp), affs, voxel_size, w) for w in workers}
    load_end = load()
    where = machine(load_start, load_end)
    today = date.today()
    lines, numbers = [], {}
    for w, steps in measured.items():
        per_block = {s: steps[s]["per_block"] * w for s, t in STEPS.items() if t is not None}
        find = steps["04_find_segments"]["total"]
        total = sum(s["total"] for s in steps.values())
        numbers[w] = {
            "cpu_per_block": sum(per_block.values()),
            "find_per_voxel": find / voxels,
            "voxels_per_s": voxels / total,
        }
        parts = ", ".join(f"{s[3:]} {t:.2f} s" for s, t in per_block.items())
        starts = ", ".join(f"{s[3:]} {steps[s]['start']:.1f} s" for s, t in STEPS.items() if t is not None)
        lines.append(
            f"| {today} | 03_predict steps 2-5 as processes, {w} worker{'s' if w > 1 else ''}, {voxels / 1e6:.1f} Mvoxels of "
            f"network-like affinities, blocks 60×180×180 | {total:.1f} s ({voxels / total:,.0f} voxels/s, start-up "
            f"included) | CPU-seconds per block: {parts}; find_segments {find:.1f} s; starts: {starts} | {where} |"
        )
    w = min(numbers, key=lambda k: numbers[k]["cpu_per_block"])
    for text in projection(block_voxels, numbers[w]["cpu_per_block"], numbers[w]["find_per_voxel"], prediction_rate):
        lines.append(f"| {today} | projection onto the zebrafinch benchmark ROI (4.78·10¹¹ voxels) from the {w}-worker "
                     f"per-block costs: {text} | {where} |")  # fmt: skip
    return lines, [], numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--prediction-rate", type=float, default=None, help="this machine's prediction voxels/s, for the projection"
    )
    output_arguments(parser)
    args = parser.parse_args()
    lines, ratios, _ = run(tuple(args.workers), args.prediction_rate)
    report(args, lines, ratios)


if __name__ == "__main__":
    main()
