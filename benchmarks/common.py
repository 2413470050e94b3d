"""What the benchmarks share: the machine column of a RESULTS.md row, appending rows, and the ratios that
``make benchmark`` draws against their goals (``benchmarks/run_all.py``). Importing it keeps TensorFlow's start-up
lines off a benchmark's output, as lsd_nm's commands do."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lsd_nm.tensorflow_logs import hide_import_noise

hide_import_noise()

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass
class Ratio:
    """One measured ratio and its goal, as ``make benchmark`` draws it."""

    name: str
    """A short label (the plot's y tick)."""
    value: float
    """The measured ratio."""
    goal: float
    """The goal it is held against."""
    higher_is_better: bool
    """True: the goal is a minimum (speed-ups); False: a maximum (overheads, e.g. iteration / bare step)."""
    detail: str = ""
    """What was compared, in a few words."""

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def as_dict(self) -> dict:
        return {**asdict(self), "met": self.met}


def load() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def machine(load_start: float, load_end: float | None = None) -> str:
    """The machine column: architecture, cores, and the load average at the start (and end) of the measurement."""
    cores = os.cpu_count() or 1
    loads = f"{load_start:.1f}" if load_end is None else f"{load_start:.1f} → {load_end:.1f}"
    busy = max(load_start, load_end or 0.0) > 0.5 * cores
    return f"{platform.machine()}, {cores} cores, load {loads}{' (shared machine: loaded, times pessimistic)' if busy else ''}"


HEADER = "| date | what | time | memory | machine |\n|---|---|---|---|---|\n"


def append_rows(lines: list[str]) -> None:
    """Append table rows to RESULTS.md and print them; after a note (a line that is no table row) a new table
    starts with its own header, so that every row renders as one."""
    last = next((line for line in reversed(RESULTS.read_text().splitlines()) if line.strip()), "")
    with RESULTS.open("a") as f:
        if not last.startswith("|"):
            f.write("\n" + HEADER)
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def output_arguments(parser) -> None:
    """The options every benchmark shares: where its rows and ratios go."""
    parser.add_argument("--print-only", action="store_true", help="print the rows, do not append them to RESULTS.md")
    parser.add_argument(
        "--ratios",
        type=Path,
        default=None,
        help="also write the ratios and their goals to this JSON file (for run_all.py)",
    )


def write_ratios(path: Path | None, ratios: list[Ratio]) -> None:
    """Write the ratios and their goals where ``--ratios`` says (for run_all.py); nothing if it says nowhere."""
    if path is not None:
        path.write_text(json.dumps([r.as_dict() for r in ratios], indent=1))


def report(args, lines: list[str], ratios: list[Ratio] = ()) -> None:
    """Print the rows or append them to RESULTS.md; write the ratios where ``--ratios`` says."""
    print("\n".join(lines)) if args.print_only else append_rows(lines)
    write_ratios(args.ratios, ratios)


class DonePoller:
    """Polls a daisy task's done-block records in a thread: the times at which the count grew."""

    def __init__(self, tracking: Path, interval: float = 0.2) -> None:
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

    def split(self) -> dict[str, float]:
        """total, start (until the first block was recorded), blocks (first to last recorded), per block (the span
        over the blocks recorded after the first)."""
        (first, n_first), (last, n_last) = self.times[0], self.times[-1]
        return {
            "total": self.end - self.start, "start": first - self.start, "blocks": last - first,
            "per_block": (last - first) / max(n_last - n_first, 1), "count": n_last,
        }  # fmt: skip
