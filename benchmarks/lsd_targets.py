"""LSD training targets: lsds' AddLocalShapeDescriptor against ours, on the batches training computes.

Run: .venv/bin/python benchmarks/lsd_targets.py [--repeats 3]   (appends to benchmarks/RESULTS.md; ~3 min on 2 cores)

Batches (labels drawn by ``lsd_nm.synthetic.generate_volume``, neurites of the paper's sizes; 4-5 % unlabelled):

* **mtlsd**: zebrafinch mtlsd, descriptors on the output (48, 56, 56) from labels (84, 136, 136) at 20×9×9 nm
  (the output grown by 3 sigma), sigma 120 nm, downsample 2;
* **fib25**: the lsd repo's fib25 nets, output 92³ from labels 152³ at 8 nm, sigma 80 nm, downsample 2;
* **mtlsd + labels_mask**: the mtlsd batch with its first 50 columns outside the labelled region (labels 0, mask
  0, as at the edge of a padded volume), with the LSD mask from the labels mask;
* **mtlsd, whole crop**: the function on all of the (84, 136, 136) labels (as the earlier rows measured lsds).

Each is timed as a gunpowder node in a pipeline (source → node; the function for the whole crop), lsds and ours
alternating in one run, ``--repeats`` times after a warm-up; the rows give the medians and their ratio (goal ≥ 5×).
The outputs are checked to agree (max |diff| ≤ 1e-5) before timing.

A last row justifies numba over scipy for the smoothing: per label, scipy's ``gaussian_filter`` (what lsds uses) of
the ten moment volumes cropped to the label's box grown by the kernel radius, against our numba passes on the same
labels.
"""

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))
from common import Ratio, output_arguments, report  # noqa: E402  (first: before gunpowder imports TensorFlow)

import gunpowder as gp  # noqa: E402
import numpy as np  # noqa: E402
from funlib.persistence import Array  # noqa: E402
from lsd.train.gp import AddLocalShapeDescriptor as LsdsNode  # noqa: E402
from lsd.train.local_shape_descriptor import get_local_shape_descriptors  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from lsd_nm import local_shape_descriptors as lsd_module  # noqa: E402
from lsd_nm.nodes import AddLocalShapeDescriptor  # noqa: E402
from lsd_nm.synthetic import generate_volume  # noqa: E402

LABELS, MASK, LSDS, LSDS_MASK = (gp.ArrayKey(n) for n in ("LABELS", "MASK", "LSDS", "LSDS_MASK"))


def batch(shape, voxel_size, seed, masked_columns=0):
    """Synthetic labels (and their mask), ``masked_columns`` of them outside the labelled region."""
    _, labels = generate_volume(shape, voxel_size, seed=seed)
    mask = np.ones(labels.shape, np.uint8)
    mask[..., :masked_columns] = 0
    labels[mask == 0] = 0
    return labels, mask


def node_runner(stack, node_class, labels, mask, voxel_size, output_shape, sigma, with_mask):
    """A function requesting one batch of ``sources + node`` (built in ``stack``): the descriptors (and LSD mask)."""
    voxel_size = gp.Coordinate(voxel_size)
    sources = tuple(
        gp.ArraySource(key, Array(data, (0, 0, 0), voxel_size), interpolatable=False) for key, data in ((LABELS, labels), (MASK, mask))
    )
    masks = dict(lsds_mask=LSDS_MASK, labels_mask=MASK) if with_mask else {}
    pipeline = sources + gp.MergeProvider() + node_class(LABELS, LSDS, sigma=sigma, downsample=2, **masks)
    offset = (gp.Coordinate(labels.shape) - gp.Coordinate(output_shape)) / 2
    roi = gp.Roi(offset, output_shape) * voxel_size
    request = gp.BatchRequest()
    for key in (LSDS, LABELS) + ((LSDS_MASK,) if with_mask else ()):
        request[key] = gp.ArraySpec(roi=roi)
    stack.enter_context(gp.build(pipeline))

    def run():
        out = pipeline.request_batch(request)
        return np.concatenate([out[LSDS].data] + ([out[LSDS_MASK].data] if with_mask else []))

    return run


def compare(name, lsds, ours, repeats):
    """Check the two agree, then time them alternately: (name, lsds median, ours median, max |diff|)."""
    diff = float(np.abs(lsds().astype(np.float64) - ours()).max())
    assert diff <= 1e-5, f"{name}: ours differs from lsds by {diff}"
    times = {"lsds": [], "ours": []}
    for _ in range(repeats):
        for key, fn in (("lsds", lsds), ("ours", ours)):
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    print(f"{name}: lsds {times['lsds']}, ours {times['ours']}, max |diff| {diff}", flush=True)
    return name, statistics.median(times["lsds"]), statistics.median(times["ours"]), diff


def smoothing_backends(labels, voxel_size, sigma, output_shape, downsample=2):
    """Seconds of the per-label smoothing with scipy (boxes grown by the kernel radius) and with our numba passes."""
    lo = (np.array(labels.shape) - output_shape) // 2
    roi_labels = labels[tuple(slice(a, a + s) for a, s in zip(lo, output_shape))].astype(np.int64)
    sub = np.ascontiguousarray(labels[::downsample, ::downsample, ::downsample]).astype(np.int64)
    step = np.array(voxel_size, np.float64) * downsample
    sub_sigma = tuple(sigma / s for s in step)
    weights = [lsd_module._gaussian_weights(s) for s in sub_sigma]
    radius = np.array([len(w) - 1 for w in weights])
    coords = np.stack(np.meshgrid(*(np.arange(n) * s for n, s in zip(sub.shape, step)), indexing="ij")).astype(np.float32)
    tasks = []
    for label in np.unique(roi_labels):
        if label == 0:
            continue
        voxels = np.argwhere(roi_labels == label) + lo
        o_lo, o_hi = voxels.min(0) // downsample, voxels.max(0) // downsample + 1
        found = np.argwhere(sub == label)
        s_lo = np.maximum(found.min(0), o_lo - radius) if len(found) else o_hi
        s_hi = np.minimum(found.max(0) + 1, o_hi + radius) if len(found) else o_lo
        needed = np.zeros(o_hi - o_lo, bool)
        needed[tuple((voxels // downsample - o_lo).T)] = True
        tasks.append((label, o_lo, o_hi, s_lo, s_hi, needed))
    lsd_module._smoothed_moments(sub, *tasks[0][:1], 1, step, *weights, *tasks[0][1:])  # compiled before timing
    seconds = {"scipy": 0.0, "numba": 0.0}
    for label, o_lo, o_hi, s_lo, s_hi, needed in tasks:
        start = time.perf_counter()
        c_lo, c_hi = np.maximum(o_lo - radius, 0), np.minimum(o_hi + radius, sub.shape)
        crop = tuple(slice(a, b) for a, b in zip(c_lo, c_hi))
        inner = tuple(slice(a, b) for a, b in zip(o_lo - c_lo, o_hi - c_lo))
        mask = (sub[crop] == label).astype(np.float32)
        masked = coords[(slice(None),) + crop] * mask
        moments = [mask, *masked] + [masked[i] * masked[j] for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
        for m in moments:
            gaussian_filter(m, sub_sigma, mode="constant", cval=0.0, truncate=3.0)[inner]
        seconds["scipy"] += time.perf_counter() - start
        start = time.perf_counter()
        # the subsampled labels with downsample 1 read exactly what the full labels with downsample 2 do
        lsd_module._smoothed_moments(sub, label, 1, step, *weights, o_lo, o_hi, s_lo, s_hi, needed)
        seconds["numba"] += time.perf_counter() - start
    return seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    output_arguments(parser)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    mtlsd = dict(voxel_size=(20, 9, 9), output_shape=(48, 56, 56), sigma=120.0)
    fib25 = dict(voxel_size=(8, 8, 8), output_shape=(92, 92, 92), sigma=80.0)
    zf_labels, zf_mask = batch((84, 136, 136), mtlsd["voxel_size"], seed=1)
    fib_labels, fib_mask = batch((152, 152, 152), fib25["voxel_size"], seed=2)
    cut_labels, cut_mask = batch((84, 136, 136), mtlsd["voxel_size"], seed=1, masked_columns=50)
    counts = {name: len(np.unique(x)) - 1 for name, x in (("mtlsd", zf_labels), ("fib25", fib_labels), ("cut", cut_labels))}

    rows = []
    for name, (labels, mask, setting, with_mask) in {
        f"mtlsd batch: labels (84, 136, 136) at 20×9×9 nm, {counts['mtlsd']} labels → LSDs (48, 56, 56), sigma 120 nm, downsample 2": (zf_labels, zf_mask, mtlsd, False),
        f"fib25 batch: labels 152³ at 8 nm, {counts['fib25']} labels → LSDs 92³, sigma 80 nm, downsample 2": (fib_labels, fib_mask, fib25, False),
        f"mtlsd batch with labels_mask (50 of 136 columns masked out, {counts['cut']} labels) → LSDs + LSD mask": (cut_labels, cut_mask, mtlsd, True),
    }.items():
        with contextlib.ExitStack() as stack:
            runners = [node_runner(stack, node, labels, mask, **setting, with_mask=with_mask) for node in (LsdsNode, AddLocalShapeDescriptor)]
            rows.append(compare(name, *runners, args.repeats))
    whole = dict(sigma=120.0, voxel_size=mtlsd["voxel_size"], downsample=2)
    rows.append(
        compare(
            f"mtlsd whole crop: the function on all of labels (84, 136, 136), {counts['mtlsd']} labels",
            lambda: get_local_shape_descriptors(zf_labels, (120.0,) * 3, voxel_size=whole["voxel_size"], downsample=2),
            lambda: lsd_module.local_shape_descriptors(zf_labels, **whole),
            args.repeats,
        )
    )
    backends = {name: smoothing_backends(labels, **{k: v for k, v in setting.items()}) for name, labels, setting in (("mtlsd", zf_labels, mtlsd), ("fib25", fib_labels, fib25))}
    print(backends)

    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {load_before:.1f} → {os.getloadavg()[0]:.1f}"
    today = date.today()
    lines = [
        f"| {today} | LSD targets, {name} (median of {args.repeats}) | lsds {t_lsds:.2f} s vs ours {t_ours:.3f} s | "
        f"{t_lsds / t_ours:.1f}× faster (goal ≥ 5×); max abs diff {diff:.1g} | {machine} |"
        for name, t_lsds, t_ours, diff in rows
    ]
    lines.append(
        f"| {today} | LSD smoothing per label, scipy gaussian_filter on the label's box grown by 3 sigma vs our numba "
        f"passes (mtlsd; fib25 batch) | scipy {backends['mtlsd']['scipy']:.2f} s vs numba {backends['mtlsd']['numba']:.3f} s; "
        f"scipy {backends['fib25']['scipy']:.2f} s vs numba {backends['fib25']['numba']:.3f} s | "
        f"numba {backends['mtlsd']['scipy'] / backends['mtlsd']['numba']:.1f}× and {backends['fib25']['scipy'] / backends['fib25']['numba']:.1f}× faster | {machine} |"
    )
    short = ("mtlsd batch", "fib25 batch", "mtlsd batch, masked", "mtlsd whole crop")
    ratios = [Ratio(f"LSD targets: ours vs lsds, {label}", t_lsds / t_ours, 5.0, True) for label, (_, t_lsds, t_ours, _) in zip(short, rows)]
    report(args, lines, ratios)


if __name__ == "__main__":
    main()
