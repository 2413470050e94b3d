"""The steps of a ``03_predict`` run: one :class:`Step` per numbered script, in order (:data:`STEPS`).

A step's definition is the one place that says what it is called (its number, script ``03_predict/<name>.py`` and
subcommand), what it leaves in a run (its done-block tracking under ``<out_file>/.blocks`` and the outputs derived
from earlier steps' results) and which later steps a re-run of it makes stale (``invalidates``). Every other place
derives from it: the command line's subcommands and step numbers, ``segment``'s chain and ``check_run``'s messages,
``status``; and a step never names another's files: it asks the other's definition (:meth:`Step.clear`,
:meth:`Step.read_record`).

The resume/refuse rule of each step's outputs (:class:`lsd_nm.blockwise.OutputDataset`) already catches most stale
work by the settings and digests it was made with: a LUT records the region graph's edges, a segmentation its LUT,
the fragments the affinities' settings. New fragments are the exception — their ids start over, so the region
graph's edges, every LUT and every segmentation made from the old ones mean nothing — so step 2 invalidates steps 3
to 5 when it makes new fragments.

The per-block work of a step stays in its module (a picklable job, ``worker_setup``, ``process_block``, run with
:func:`lsd_nm.blockwise.run_job`); the drivers bind each definition to its module's function.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .run_config import RunConfig


@dataclass(frozen=True)
class Step:
    """One step of a ``03_predict`` run."""

    number: int
    """Its place in the run (1 …), the number its script's name starts with."""
    name: str
    """``<number:02d>_<what>``: the script is ``03_predict/<name>.py``."""
    command: str
    """Its ``lsd-nm`` subcommand."""
    summary: str
    """One line: what it makes (the subcommand's help)."""
    tracking: tuple[str, ...] = ()
    """Glob patterns under ``<out_file>/.blocks`` of what records its finished work: daisy's done-block folders,
    markers, its settings record, views it leaves for later blocks."""
    blockwise: tuple[str, ...] = ()
    """Those of ``tracking`` that are daisy's done-block folders (``status`` counts their blocks)."""
    outputs: tuple[str, ...] = ()
    """Glob patterns under ``out_file`` of its outputs dropped with its tracking when an earlier step makes them stale
    (empty: outputs whose own settings say when they are stale, or that it rewrites every time)."""
    record: str | None = None
    """A file under ``.blocks`` with the settings its finished work was made with, read by later steps."""
    invalidates: tuple[int, ...] = ()
    """The later steps whose finished work is stale once this step has made new outputs."""

    @property
    def script(self) -> str:
        """Its script's file name in ``03_predict/``."""
        return f"{self.name}.py"

    def tracking_paths(self, config: RunConfig) -> list[Path]:
        """What exists of its tracking in a run, sorted."""
        return sorted(p for pattern in self.tracking for p in config.blocks_dir.glob(pattern))

    def done_block_folders(self, config: RunConfig) -> list[Path]:
        """Its daisy done-block folders that exist in a run, sorted."""
        return sorted(p for pattern in self.blockwise for p in config.blocks_dir.glob(pattern) if p.is_dir())

    def record_path(self, config: RunConfig) -> Path:
        """Its settings record (see :attr:`record`)."""
        if self.record is None:
            raise ValueError(f"{self.name} keeps no settings record")
        return config.blocks_dir / self.record

    def read_record(self, config: RunConfig) -> dict | None:
        """The settings its finished work was made with, or None (it has not finished, or was cleared)."""
        path = self.record_path(config)
        return json.loads(path.read_text()) if path.is_file() else None

    def write_record(self, config: RunConfig, settings: dict) -> None:
        """Record the settings its work is made with (atomically), also for work made elsewhere (e.g. the authors'
        region graph, whose edges stand for this step's)."""
        from .data import write_text

        path = self.record_path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(settings) + "\n")

    def clear(self, config: RunConfig) -> None:
        """Forget its finished work in a run: its tracking and the outputs of :attr:`outputs`, so that it runs
        again from the start (and refuses nothing of its own)."""
        found = self.tracking_paths(config)
        found += sorted(p for pattern in self.outputs for p in config.out_path.glob(pattern))
        for path in found:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def invalidate_later(self, config: RunConfig) -> None:
        """Clear every later step this one :attr:`invalidates` (called when it has made new outputs)."""
        for number in self.invalidates:
            step(number).clear(config)


PREDICT = Step(
    1, "01_predict_blockwise", "predict", "step 1: predict affinities (and LSDs) blockwise into out_file",
    tracking=("predict_*",), blockwise=("predict_*",),
)  # fmt: skip
"""The prediction's outputs keep the checkpoint and shapes they were made with; step 2 records the affinities' and
refuses fragments of other ones, so a new prediction invalidates nothing by itself."""
EXTRACT_FRAGMENTS = Step(
    2, "02_extract_fragments", "extract-fragments", "step 2: blockwise watershed fragments and region-graph nodes",
    tracking=("extract_fragments", "fragments_faces"), blockwise=("extract_fragments",), invalidates=(3, 4, 5),
)  # fmt: skip
AGGLOMERATE = Step(
    3, "03_agglomerate", "agglomerate", "step 3: blockwise waterz agglomeration into region-graph edges",
    tracking=("agglomerate", "agglomerate_contacts", "agglomerate.merged", "agglomerate.json"),
    blockwise=("agglomerate",), record="agglomerate.json",
)  # fmt: skip
"""Its edges may come out the same (another merge function, then back): each LUT of step 4 records the edges it was
made from and is kept while they are the same, so a re-run invalidates nothing by itself."""
FIND_SEGMENTS = Step(
    4, "04_find_segments", "find-segments", "step 4: fragment → segment LUTs at every merge threshold",
    outputs=("luts/fragment_segment/*.npz",),
)  # fmt: skip
"""Each segmentation of step 5 records the LUT it was made from."""
EXTRACT_SEGMENTATION = Step(
    5, "05_extract_segmentation", "extract-segmentation", "step 5: blockwise segmentations at extract_thresholds",
    tracking=("segmentation_*",), blockwise=("segmentation_*",), outputs=("volumes/segmentation_*",),
)  # fmt: skip
EVALUATE = Step(6, "06_evaluate", "evaluate", "step 6: VOI, ARAND and ERL of a run over its merge thresholds")
"""It scores the run anew every time it runs."""

STEPS: tuple[Step, ...] = (PREDICT, EXTRACT_FRAGMENTS, AGGLOMERATE, FIND_SEGMENTS, EXTRACT_SEGMENTATION, EVALUATE)
"""The steps of a run, in order."""
NAMES: list[str] = [s.name for s in STEPS]
"""Their names, in order (each is a script ``03_predict/<name>.py``)."""


def step(number: int) -> Step:
    """The step of a number (1 …)."""
    if not 1 <= number <= len(STEPS):
        raise ValueError(f"no step {number}: the steps are 1 to {len(STEPS)}")
    return STEPS[number - 1]
