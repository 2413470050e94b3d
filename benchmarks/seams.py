"""Seams on the demo's affinities: each scored network's affinities post-processed (03_predict steps 2-4 and the
evaluation of step 6) as one block and in many blocks, at several contexts, and what the many blocks cost in VOI and
in false splits on the block faces.

Run: .venv/bin/python benchmarks/seams.py [--demo demo] [--networks baseline mtlsd] [--contexts 60,54,54 240,243,243]
     [--seeds foreground original] [--workers 1 2] [--print-only]
     (needs `make demo` first: its affinities `demo/<network>.zarr/volumes/affs` and run configs
     `demo/configs/<network>.json`; appends rows to benchmarks/RESULTS.md; ~2 min per row on 2 cores)

Each row is one run in a scratch folder: the network's affinities (inside the demo's evaluated region and its
context) copied into a fresh container, then ``extract_fragments``, ``agglomerate``, ``find_segments`` and
``evaluate_run`` with the demo's run config, changed only in ``block_size``, ``context``, ``seeds`` and
``num_workers``:

* **one block**: ``block_size`` = the evaluated region (64 × 216 × 216 voxels): no face, the reference;
* **2×2×2**: the demo's ``block_size`` (640 × 972 × 972 nm);
* **2×3×3**: 640 × 648 × 648 nm, 9 blocks per section.

Reported per row: the best threshold's VOI sum (dense labels of the test volume), its difference from one block's
(goal: within 0.03 bits), and the block-face false-split rate over the median of the other planes per axis
(``lsd_nm.evaluate.seam_check``; goal: at most 1.5, the threshold step 6 calls a seam). Rows with 2 workers must
score exactly as 1 worker does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import RESULTS, Ratio, load, machine, output_arguments, write_ratios  # noqa: E402

from lsd_nm.agglomerate import agglomerate  # noqa: E402
from lsd_nm.data import read_array, write_container  # noqa: E402
from lsd_nm.evaluate import evaluate_run  # noqa: E402
from lsd_nm.fragments import extract_fragments  # noqa: E402
from lsd_nm.run_config import RunConfig, load_run_config  # noqa: E402
from lsd_nm.segments import find_segments  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {"one block": None, "2×2×2": (640, 972, 972), "2×3×3": (640, 648, 648)}
"""Block layouts of a row: None is the evaluated region as one block."""
VOI_GOAL = 0.03
"""Many blocks score within this many bits (VOI sum) of one block."""
SEAM_GOAL = 1.5
"""The faces' false-split rate at most this many times the median of the other planes."""


def context_arg(text: str) -> tuple[int, int, int]:
    z, y, x = (int(v) for v in text.split(","))
    return z, y, x


def run_one(config: RunConfig, affs_path: Path, scratch: Path, **changes) -> dict:
    """Steps 2-4 and the evaluation on a copy of the affinities; the best row, its seams and the time taken."""
    if scratch.exists():
        shutil.rmtree(scratch)
    affs, voxel_size, offset = read_array(affs_path, "volumes/affs")
    out = scratch / "run.zarr"
    write_container(out, {"volumes/affs": affs}, voxel_size, offset)
    cfg = config.model_copy(update={"out_file": str(out), "db": None, "scores_stem": None, **changes})
    cfg = RunConfig.model_validate(cfg.model_dump())  # validated again with the changes
    start = time.perf_counter()
    extract_fragments(cfg, progress=False)
    agglomerate(cfg, progress=False)
    find_segments(cfg, progress=False)
    result = evaluate_run(cfg, progress=False)
    seconds = time.perf_counter() - start
    best = result["best"]
    seams = {row["axis"]: row for row in (result["seams"] or {}).get("axes", [])}
    return {"voi": best["voi_split"] + best["voi_merge"], "threshold": best["threshold"], "seams": seams,
            "seconds": seconds}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=REPO / "demo", help="the demo's output folder (make demo)")
    parser.add_argument("--networks", nargs="+", default=["baseline", "mtlsd"])
    parser.add_argument("--contexts", nargs="+", type=context_arg, default=[(60, 54, 54), (240, 243, 243)],
                        help="contexts (nm, z,y,x) of the many-block rows")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", default=["foreground"], choices=["foreground", "original"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2],
                        help="worker counts of the 2×3×3 rows (the others run at the first)")  # fmt: skip
    output_arguments(parser)
    args = parser.parse_args()

    configs = {}
    for network in args.networks:
        path = args.demo / "configs" / f"{network}.json"
        affs = args.demo / f"{network}.zarr"
        if not path.is_file() or not (affs / "volumes" / "affs").is_dir():
            sys.exit(f"error: no demo output for {network} ({path}, {affs}/volumes/affs): run `make demo` first")
        configs[network] = (load_run_config(path), affs)

    load_start = load()
    lines, ratios = [], []
    today = date.today().isoformat()
    with tempfile.TemporaryDirectory(prefix="seams-") as tmp:
        for network, (config, affs) in configs.items():
            for seeds in args.seeds:
                one = run_one(config, affs, Path(tmp) / "one", seeds=seeds, num_workers=args.workers[0],
                              block_size=tuple(config.roi_shape), context=config.context)  # fmt: skip
                rows = [("one block", config.context, args.workers[0], one)]
                for context in args.contexts:
                    for layout, block in LAYOUTS.items():
                        if block is None:
                            continue
                        counts = args.workers if layout == "2×3×3" else args.workers[:1]
                        for workers in counts:
                            result = run_one(config, affs, Path(tmp) / "many", seeds=seeds, num_workers=workers,
                                             block_size=block, context=context)  # fmt: skip
                            rows.append((layout, context, workers, result))
                            print(f"{network} {seeds} {layout} context {context} {workers} worker(s): VOI "
                                  f"{result['voi']:.3f} (one block {one['voi']:.3f})", flush=True)
                for layout, context, workers, result in rows:
                    delta = result["voi"] - one["voi"]
                    seam = ", ".join(f"{axis} {row['ratio']:.2f}×" if row["ratio"] is not None else f"{axis} –"
                                     for axis, row in result["seams"].items()) or "no face"  # fmt: skip
                    lines.append(
                        f"| {today} | {network} | {seeds} | {layout} | {'×'.join(map(str, context))} | {workers} | "
                        f"{result['voi']:.3f} at {result['threshold']:.2f} | {delta:+.3f} | {seam} | "
                        f"{result['seconds']:.0f} s |"
                    )
                    if layout == "2×3×3":
                        label = f"{network} {seeds} 9 blocks/section ctx {'×'.join(map(str, context))} {workers}w"
                        ratios.append(Ratio(f"{label}: |ΔVOI|", abs(delta), VOI_GOAL, False,
                                            "VOI sum, many blocks against one block (bits)"))  # fmt: skip
                        worst = max((row["ratio"] or 0.0 for row in result["seams"].values()), default=0.0)
                        ratios.append(Ratio(f"{label}: seam", worst, SEAM_GOAL, False,
                                            "block-face false splits / median plane, worst axis"))  # fmt: skip
    header = [
        "",
        "## Seams on the demo's affinities (`benchmarks/seams.py`)",
        "",
        f"Machine: {machine(load_start, load())}.",
        "",
        "| date | network | seeds | blocks | context (nm) | workers | best VOI sum | Δ vs one block | "
        "face / median false splits | time |",
        "|---|---|---|---|---|---:|---:|---:|---|---:|",
    ]
    if args.print_only:
        print("\n".join(header + lines))
    else:
        with RESULTS.open("a") as f:  # a section of its own: its table has its own columns
            f.write("\n".join(header + lines) + "\n")
        print("\n".join(lines))
    write_ratios(args.ratios, ratios)


if __name__ == "__main__":
    main()
