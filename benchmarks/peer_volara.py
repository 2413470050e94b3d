"""Post-processing side by side with volara 1.0.5 (e11bio), on the same affinities, in one run.

Run: .venv/bin/python benchmarks/peer_volara.py [--peer DIR] [--scratch DIR] [--workers 1 2]
     (opt-in in `make benchmark VOLARA=1`: volara needs its own environment, ~1 GB, installed on first use)

The comparison itself is the peer harness ``../shared/benchmarks/peer_volara`` beside the repository (``--peer``,
or ``PEER_VOLARA``): ``run_volara.py`` (mutex-watershed fragments → mean-affinity RAG → graph MWS → relabel) and
``run_ours.py`` (our steps 2-5 as processes), each printing one JSON line with its voxels/s (start-up included) and
VOI. Nothing of volara is part of this repository: its environment is made from the harness's
``requirements.lock.txt`` in a scratch folder (``--scratch``, or ``PEER_VOLARA_SCRATCH``; default
``<tmp>/lsd_nm_peer_volara``), once.

Cases (blocks of 16 × 128 × 128 voxels, as the harness's README runs them):

* **voronoi**: the harness's own case (``make_affs.py``): touching Voronoi cells, blurred, noisy affinities with
  leaks and holes, 48 × 256 × 256 at 20 × 9 × 9 nm;
* **demo**: the demo's mtlsd affinities of the synthetic test volume (``make_demo_case.py``), when ``make demo``
  has left ``demo/mtlsd.zarr`` in the repository.

Each case runs volara and ours alternately at each worker count, ours once per fragments method (``--methods``:
``watershed``, the paper's, and ``mutex_watershed``, volara's kind of fragments: ``fragments_method`` of the run
config, then our waterz agglomeration either way). Goals: ours ≥ 1.5 × volara's voxels/s, each method; 2 workers
≥ 1.7 × 1 worker; with mutex-watershed fragments on the voronoi case a VOI sum ≤ 0.15 (volara: 0.08).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import Ratio, load, machine, output_arguments, report  # noqa: E402

from lsd_nm import REPO_ROOT  # noqa: E402

GOAL = 1.5
GOAL_TWO_WORKERS = 1.7
"""Our steps 2-5 with 2 workers against 1 (speed-up)."""
GOAL_MUTEX_VOI = 0.15
"""VOI sum of our steps 2-5 with mutex-watershed fragments on the voronoi case (its touching cells)."""
METHODS = ("watershed", "mutex_watershed")
"""Our fragments methods (``fragments_method``)."""
BLOCK = ["16", "128", "128"]
STEPS = {  # the harness's step scripts → the modules each one imports before its first block
    "02_extract_fragments": "lsd_nm.fragments, scipy.ndimage, skimage.segmentation",
    "03_agglomerate": "lsd_nm.agglomerate, waterz",
    "04_find_segments": "lsd_nm.segments",
    "05_extract_segmentation": "lsd_nm.segments, lsd_nm.blockwise",
}
BLOCKWISE = ("02_extract_fragments", "03_agglomerate")
"""The steps whose blocks go to the workers on this case (extraction's 12 blocks stay in the step's process)."""
DEMO_MISSING = "the demo case is not measured: it needs the demo's affinities (demo/mtlsd.zarr): run `make demo` first"


def default_peer() -> Path:
    return Path(os.environ.get("PEER_VOLARA", REPO_ROOT.parent / "shared" / "benchmarks" / "peer_volara"))


def default_scratch() -> Path:
    return Path(os.environ.get("PEER_VOLARA_SCRATCH", Path(tempfile.gettempdir()) / "lsd_nm_peer_volara"))


def volara_python(peer: Path, scratch: Path) -> Path:
    """volara's environment in ``scratch/venv`` (made from the harness's lock file on first use)."""
    venv = scratch / "venv"
    python = venv / "bin" / "python"
    done = venv / ".installed"
    lock = peer / "requirements.lock.txt"
    if done.exists() and done.read_text() == lock.read_text():
        return python
    print(f"peer_volara: installing volara's environment into {venv} (once)", file=sys.stderr)
    scratch.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(lock)], check=True
    )
    done.write_text(lock.read_text())
    return python


def json_line(command: list[str], cwd: Path | None = None) -> dict:
    """Run a harness script; its last stdout line is its JSON result."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(
            f"{' '.join(command[:2])} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    return json.loads(lines[-1])


def cases(peer: Path, scratch: Path, python: Path) -> dict[str, Path]:
    """The cases' affinities (``affs`` and ``labels`` in one zarr each), made once per scratch folder."""
    made = {}
    voronoi = scratch / "voronoi.zarr"
    if not voronoi.exists():
        json_line([str(python), str(peer / "make_affs.py"), str(voronoi)], cwd=peer)
    made["voronoi"] = voronoi
    if (REPO_ROOT / "demo" / "mtlsd.zarr" / "volumes" / "affs").exists():
        demo = scratch / "demo.zarr"
        json_line([str(python), str(peer / "make_demo_case.py"), str(REPO_ROOT), str(demo)], cwd=peer)
        made["demo"] = demo
    else:
        print(f"peer_volara: {DEMO_MISSING}", file=sys.stderr)
    return made


def start_seconds(repeats: int = 3) -> dict[str, float]:
    """Each step's process start before its first block: a fresh interpreter importing what the step imports
    (median of ``repeats``)."""
    seconds = {}
    for step, modules in STEPS.items():
        runs = []
        for _ in range(repeats):
            begin = time.perf_counter()
            subprocess.run([sys.executable, "-c", f"import lsd_nm.cli, {modules}; import os; os._exit(0)"], check=True)
            runs.append(time.perf_counter() - begin)
        seconds[step] = sorted(runs)[len(runs) // 2]
    return seconds


def scaling_row(name: str, one: dict, two: dict, starts: dict[str, float], where: str) -> str:
    """Our steps at 1 and at 2 workers, and the 2-worker time if the blockwise steps' blocks split perfectly: the
    processes' start-up and the serial steps bound the speed-up (Amdahl). The starts are timed apart from the run
    (fresh interpreters importing what each step imports), so the bound is an estimate: a run has beaten it by 3 %."""
    steps = ", ".join(
        f"{step[3:]} {one['seconds'][step]:.2f} → {two['seconds'][step]:.2f} s" for step in STEPS
    )
    ideal = sum(
        starts[step] + (one["seconds"][step] - starts[step]) / 2 if step in BLOCKWISE else one["seconds"][step]
        for step in STEPS
    )
    bound = one["seconds_2_to_5"] / ideal
    serial = sum(starts.values()) + sum(one["seconds"][s] - starts[s] for s in STEPS if s not in BLOCKWISE)
    return (
        f"| {date.today()} | post-processing, ours: 2 workers vs 1 per step, {name} case (steps as processes, "
        f"start-up included) | {steps}; steps 2-5 {one['seconds_2_to_5']:.2f} → {two['seconds_2_to_5']:.2f} s "
        f"({one['seconds_2_to_5'] / two['seconds_2_to_5']:.2f}×, goal ≥ {GOAL_TWO_WORKERS}×) | process starts "
        f"(imports before the first block) {' + '.join(f'{starts[s]:.2f}' for s in STEPS)} s, with find_segments and the in-process "
        f"extraction {serial:.2f} s that 2 workers cannot share: with the blockwise steps' blocks split perfectly "
        f"2 workers would take about {ideal:.2f} s, {bound:.2f}× (an estimate: the starts are timed apart, in fresh "
        f"interpreters) | {where} |"
    )


def run(workers=(1, 2), peer: Path | None = None, scratch: Path | None = None,
        methods: tuple[str, ...] = METHODS) -> tuple[list[str], list[Ratio]]:
    """Measure; returns the RESULTS.md rows and the ratios (ours / volara voxels/s) against the goal."""
    peer, scratch = peer or default_peer(), scratch or default_scratch()
    if not (peer / "run_volara.py").exists():
        raise SystemExit(f"no peer harness in {peer}: pass --peer (or set PEER_VOLARA) to the peer_volara folder")
    python = volara_python(peer, scratch)
    load_start = load()
    results = {}
    for name, case in cases(peer, scratch, python).items():
        for w in workers:
            theirs = json_line([str(python), str(peer / "run_volara.py"), str(case), "affs", str(scratch / "volara.zarr"),
                                "--workers", str(w), "--block-size", *BLOCK, "--gt", str(case), "labels"], cwd=peer)  # fmt: skip
            for method in methods:
                ours = json_line([sys.executable, str(peer / "run_ours.py"), str(REPO_ROOT), str(case), str(scratch / "ours"),
                                  "--workers", str(w), "--block-size", *BLOCK, "--extract", "0.3", "0.5", "0.6",
                                  "--set", f'fragments_method="{method}"'], cwd=peer)  # fmt: skip
                results[name, w, method] = (theirs, ours)
    both = [(n, m) for n, m in sorted({(n, m) for n, _, m in results}) if (n, 1, m) in results and (n, 2, m) in results]
    starts = start_seconds() if both else {}
    load_end = load()
    where = machine(load_start, load_end)
    today = date.today()
    lines, ratios = [], []
    for (name, w, method), (theirs, ours) in results.items():
        ratio = ours["voxels_per_s"] / theirs["voxels_per_s"]
        best = min(ours["voi_independent"].items(), key=lambda kv: kv[1]["split"] + kv[1]["merge"])
        voi_ours = best[1]["split"] + best[1]["merge"]
        own = ours.get("their_best") or {}
        if own.get("voi_split") is not None:  # our evaluation's best threshold of its sweep
            own_voi = f"; ours at its evaluation's best threshold {own['threshold']}: {own['voi_split'] + own['voi_merge']:.2f}"
        else:
            own_voi = ""
        lines.append(
            f"| {today} | post-processing vs volara {theirs['volara']}, {name} case ({theirs['voxels'] / 1e6:.1f} Mvoxels, "
            f"blocks 16×128×128), {w} worker{'s' if w > 1 else ''} (ours: {method} fragments, steps 2-5 as four processes, start-up included, "
            f"3 segmentations extracted; volara: its four stages in one process, timed after its imports of "
            f"{theirs['import_seconds']:.1f} s) | ours "
            f"{ours['voxels_per_s']:,.0f} voxels/s (steps 2-5 {ours['seconds_2_to_5']:.1f} s) vs volara "
            f"{theirs['voxels_per_s']:,.0f} ({theirs['seconds']['total']:.1f} s) | {ratio:.2f}× (goal ≥ {GOAL}×); VOI "
            f"sum ours {voi_ours:.2f} (extracted at {best[0]}) vs volara {theirs.get('voi', {}).get('sum', float('nan')):.2f}"
            f"{own_voi} | {where} |"
        )
        label = f"{name}, {method}, {w} worker{'s' if w > 1 else ''}"
        ratios.append(Ratio(f"post-processing vs volara: {label}", ratio, GOAL, True, "voxels/s"))
        if method == "mutex_watershed" and name == "voronoi":
            ratios.append(Ratio(f"VOI sum: {label}", voi_ours, GOAL_MUTEX_VOI, False, f"volara {theirs.get('voi', {}).get('sum', float('nan')):.2f}"))
    if not any(n == "demo" for n, _, _ in results):
        lines.append(f"| {today} | post-processing vs volara, demo case | not measured | {DEMO_MISSING} | {where} |")
    for name, method in both:
        one, two = results[name, 1, method][1], results[name, 2, method][1]
        lines.append(scaling_row(f"{name} ({method} fragments)", one, two, starts, where))
        ratios.append(
            Ratio(
                f"post-processing: 2 workers vs 1 ({name}, {method})",
                two["voxels_per_s"] / one["voxels_per_s"],
                GOAL_TWO_WORKERS,
                True,
                "ours",
            )
        )
    return lines, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--peer",
        type=Path,
        default=None,
        help="the peer_volara harness folder (default: $PEER_VOLARA or ../shared/benchmarks/peer_volara)",
    )
    parser.add_argument("--scratch", type=Path, default=None, help="where volara's environment and the cases go")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="our fragments methods")
    output_arguments(parser)
    args = parser.parse_args()
    report(args, *run(tuple(args.workers), args.peer, args.scratch, tuple(args.methods)))


if __name__ == "__main__":
    main()
