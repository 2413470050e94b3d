"""Every benchmark in one go (``make benchmark``): rows appended to RESULTS.md, the ratios drawn against their goals.

Run: .venv/bin/python benchmarks/run_all.py [--volara] [--only NAME ...]   (needs `make synthetic masks`; ~25 min on
     2 cores, ~5 more with --volara, plus volara's environment the first time)

Each benchmark runs as its own process (TensorFlow's threads, PreCache's forks and daisy's workers stay apart), one
after the other on the same machine: its rows carry the load average at its start and end; this run adds a
summary row with the load average before and after all of them. The ratios with a goal (speed-ups ≥ goal,
overheads ≤ goal) are drawn into ``benchmarks/results.png``; the projection onto the zebrafinch benchmark ROI uses
the prediction rate measured in the same run.

``--volara`` adds post-processing side by side with volara (``benchmarks/peer_volara.py``): opt-in, because volara
needs its own environment (installed into a scratch folder on first use) and the peer harness beside the
repository (``../shared/benchmarks/peer_volara``, or ``PEER_VOLARA``). Its second case, the demo's network affinities,
needs a finished ``make demo``; without it the case is not measured, and a row says so.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import Ratio, append_rows, load, machine  # noqa: E402

HERE = Path(__file__).parent
PLOT = HERE / "results.png"
BENCHMARKS = ["synthetic", "lsd_targets", "network", "training", "blockwise", "postprocessing", "published_data"]
"""In order; ``peer_volara`` joins with --volara."""
WITH_RATIOS = {"lsd_targets", "training", "blockwise", "postprocessing", "peer_volara"}
"""The scripts that take ``--ratios`` (the others only append their rows)."""


def run_benchmark(name: str, scratch: Path, extra: list[str]) -> tuple[list[Ratio], float]:
    """Run one benchmark script; its ratios and its wall time."""
    command = [sys.executable, str(HERE / f"{name}.py"), *extra]
    ratios_file = scratch / f"{name}.ratios.json"
    if name in WITH_RATIOS:
        command += ["--ratios", str(ratios_file)]
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(command)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        print(f"== {name} failed (exit {done.returncode}) after {seconds:.0f} s", flush=True)
        return [], seconds
    if not ratios_file.exists():
        return [], seconds
    return [Ratio(**{k: v for k, v in r.items() if k != "met"}) for r in json.loads(ratios_file.read_text())], seconds


def draw(ratios: list[Ratio], path: Path, title: str) -> None:
    """Each ratio as a dot against its goal (a tick), on a log scale; green where the goal is met."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 0.45 * len(ratios) + 1.6), constrained_layout=True)
    ax = fig.add_subplot()
    for y, r in enumerate(reversed(ratios)):
        color = "tab:green" if r.met else "tab:red"
        ax.plot([min(r.value, r.goal), max(r.value, r.goal)], [y, y], color=color, alpha=0.35, linewidth=4)
        ax.plot([r.goal], [y], marker="|", markersize=18, color="0.2")
        ax.plot([r.value], [y], marker="o", markersize=8, color=color)
        sign = "≥" if r.higher_is_better else "≤"
        ax.annotate(f"{r.value:.2f} (goal {sign} {r.goal:g})", (r.value, y), xytext=(8, 6), textcoords="offset points",
                    fontsize=8, color=color)  # fmt: skip
    ax.set_yticks(range(len(ratios)), [r.name for r in reversed(ratios)], fontsize=8)
    ax.set_xscale("log")
    values = [v for r in ratios for v in (r.value, r.goal)] or [1.0]
    ax.set_xlim(min(values) / 1.5, max(values) * 3)
    ax.set_xlabel("ratio (log scale); | = goal, ● = measured (green: goal met)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volara", action="store_true", help="add post-processing side by side with volara")
    parser.add_argument("--only", nargs="+", default=None, help="run only these benchmarks (names as in benchmarks/)")
    args = parser.parse_args()
    names = BENCHMARKS + (["peer_volara"] if args.volara else [])
    if args.only:
        names = [n for n in names if n in args.only]
    load_start, started = load(), datetime.now()
    ratios: list[Ratio] = []
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        numbers_file = scratch / "blockwise.numbers.json"
        for name in names:
            extra = []
            if name == "blockwise":
                extra = ["--numbers", str(numbers_file)]
            if name == "postprocessing" and numbers_file.exists():
                numbers = json.loads(numbers_file.read_text())
                extra = ["--prediction-rate", str(numbers["voxels_per_s"])]
            found, seconds[name] = run_benchmark(name, scratch, extra)
            ratios += found
    load_end = load()
    met = sum(r.met for r in ratios)
    summary = "; ".join(
        f"{r.name} {r.value:.2f} ({'met' if r.met else 'missed'}, goal {'≥' if r.higher_is_better else '≤'} {r.goal:g})"
        for r in ratios
    )
    row = (
        f"| {started:%Y-%m-%d} | make benchmark, {started:%H:%M}: {', '.join(f'{n} {s:.0f} s' for n, s in seconds.items())} | "
        f"{sum(seconds.values()) / 60:.1f} min | {met} of {len(ratios)} goals met: {summary}"
        f"{' (benchmarks/results.png)' if ratios else ''} | "
        f"{machine(load_start, load_end)} |"
    )
    append_rows([row])
    if ratios:
        draw(ratios, PLOT, f"make benchmark {started:%Y-%m-%d %H:%M} — {machine(load_start, load_end)}")
        print(f"drew {PLOT}")


if __name__ == "__main__":
    main()
