"""``segment.py CONFIG``: the whole ``03_predict`` chain — predict, fragments, agglomerate, segments, segmentation,
evaluation — in order, each step resuming (finished blocks and LUTs are not redone).

:func:`check_run` makes every check of the steps to come before the first of them starts (a bad block size, an
unreachable or read-only region graph, bad thresholds or a missing ground truth surface at once, not after hours of
prediction); the command line runs it before a single step too.

Run: ``python 03_predict/segment.py CONFIG.json [--overwrite] [--start N]``   (or: ``make segment CONFIG=…``)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .agglomerate import agglomerate, scoring_function
from .blockwise import BlockwiseResult, block_geometry, check_worker_command, run_lock
from .config import ConfigError
from .data import AFFS, FRAGMENTS, Volume, open_dataset
from .evaluate import check_ground_truth, evaluate_run, evaluation_lines
from .graph import check_graph_of, check_reachable, graph_exists
from .fragments import check_fragments, extract_fragments
from .luts import all_thresholds, segmentation_dataset
from .predict_blockwise import plan_prediction, predict_blockwise
from .run_config import RunConfig, load_run_config
from .segments import extract_segmentation, find_segments
from .steps import AGGLOMERATE, EVALUATE, EXTRACT_FRAGMENTS, EXTRACT_SEGMENTATION, FIND_SEGMENTS, PREDICT, STEPS, Step


class StepError(ConfigError):
    """A problem found by the checks of one step (its message starts with the step's name)."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step, self.message = step, message


RUNS: dict[Step, Callable[[RunConfig, bool], Any]] = {
    PREDICT: lambda config, overwrite: predict_blockwise(config, overwrite=overwrite),
    EXTRACT_FRAGMENTS: lambda config, overwrite: extract_fragments(config, overwrite=overwrite),
    AGGLOMERATE: lambda config, overwrite: agglomerate(config, overwrite=overwrite),
    FIND_SEGMENTS: lambda config, overwrite: find_segments(config, overwrite=overwrite),
    EXTRACT_SEGMENTATION: lambda config, overwrite: extract_segmentation(config, overwrite=overwrite),
    EVALUATE: lambda config, overwrite: evaluate_run(config),
}
"""Each step's work, ``(config, overwrite) → result``: the one place a step's definition
(:mod:`lsd_nm.steps`) meets its module's function, for this chain and the command line's subcommands."""


def check_run(config: RunConfig, first_step: int = 1, overwrite: bool = False) -> None:
    """Every check of steps ``first_step``…6 that can be made before ``first_step`` starts, writing nothing: the
    prediction's (network, checkpoints, raw, region, existing outputs), every step's block geometry, the mask, the
    region graph reachable and writable, the merge function and thresholds, and the ground truth of step 6.

    Raises:
        StepError: the first problem, as one line naming the step whose check it is.
    """

    def step(number: int, check):
        try:
            return check()
        except ConfigError as e:
            raise StepError(STEPS[number - 1].name, str(e)) from None

    def existing_fragments(number: int) -> Volume:
        return step(number, lambda: open_dataset(
            config.fragments_path, config.fragments_dataset, "fragments (run 02_extract_fragments first)"
        ))  # fmt: skip

    if first_step <= 5:  # every blockwise step starts its workers through it
        step(first_step, lambda: check_worker_command(config.worker_command))
    # the affinities (steps 2 and 3 read them) and the fragments (steps 3 to 6)
    affs = fragments = None
    if first_step == 1 and config.setup is not None:
        affs = step(1, lambda: plan_prediction(config, overwrite).affs)
        if affs is None:
            raise StepError(PREDICT.name, f"'{config.setup}' predicts no affinities to segment")
    elif first_step <= 3:
        affs = step(max(first_step, 2), lambda: open_dataset(config.out_path, AFFS, "affinities"))
    if first_step <= 2 and config.fragments_file is None:
        fragments = Volume(config.out_path / FRAGMENTS, affs.roi, affs.voxel_size)  # step 2 will make them here
    if first_step <= 2:
        step(2, lambda: check_fragments(config, affs))
    elif first_step <= 5:
        step(first_step, lambda: check_reachable(config.db_location))
        if first_step <= 4 and not graph_exists(config.db_location):
            raise StepError(
                STEPS[first_step - 1].name,
                f"db '{config.db_location}': no region graph there (run {EXTRACT_FRAGMENTS.name} first)",
            )
        if first_step <= 4:
            step(first_step, lambda: check_graph_of(config))
        fragments = existing_fragments(first_step)
        step(first_step, lambda: block_geometry(config, fragments))
    step(3, lambda: scoring_function(config.merge_function))
    step(4, lambda: all_thresholds(config))
    if first_step == 6 or config.gt_dataset is not None or config.gt_skeletons is not None:
        if fragments is None:
            fragments = existing_fragments(6)
        step(6, lambda: check_ground_truth(config, fragments))


def run_step(config: RunConfig, step: Step, overwrite: bool = False) -> Any:
    """One step of a run config, as its subcommand runs it: every check of the steps from it on first (nothing
    written; a problem of this step is told without the step's name, one of a later step with it), then the step
    under the run's lock (one writer per ``out_file``). Returns the step's result (see :data:`RUNS`)."""
    try:
        check_run(config, step.number, overwrite)
    except StepError as e:
        raise ConfigError(e.message if e.step == step.name else str(e)) from None
    with run_lock(config):
        return RUNS[step](config, overwrite)


def step_lines(step: Step, result: Any) -> list[str]:
    """What a step's subcommand prints of its result (:func:`run_step`)."""
    if step is FIND_SEGMENTS:
        folder = next(iter(result.values())).parent if result else "(no thresholds)"
        return [f"find segments: {len(result)} LUTs in {folder}"]
    if step is EXTRACT_SEGMENTATION:
        return [f"{segmentation_dataset(t)}: {r}" for t, r in result.items()]
    if step is EVALUATE:
        return evaluation_lines(result)
    name = {PREDICT: "predict", EXTRACT_FRAGMENTS: "fragments", AGGLOMERATE: "agglomerate"}[step]
    return [f"{name}: {result}"]


def segment_lines(config_path: Path, overwrite: bool = False, start_step: int = 1) -> Iterator[str]:
    """``lsd-nm segment``: :func:`segment` of the run config at ``config_path`` under the run's lock, then the
    evaluation's lines (:func:`~lsd_nm.evaluate.evaluation_lines`) and where the outputs are."""
    config = load_run_config(config_path)
    with run_lock(config):
        evaluation = segment(config, config_path, overwrite=overwrite, start_step=start_step)
    if evaluation is not None:
        yield from evaluation_lines(evaluation)
    yield f"outputs: {config.out_path} (volumes, LUTs, region graph {config.db_location})"


def segment(config: RunConfig, config_path: Path, overwrite: bool = False, start_step: int = 1) -> dict | None:
    """Run every step of a run config from step ``start_step`` on (after :func:`check_run`); on a failure, say which
    step and the command that re-runs it. Returns the evaluation (see :func:`~lsd_nm.evaluate.evaluate_run`), or None
    when there is no ground truth."""
    try:
        check_run(config, start_step, overwrite)
    except StepError as e:
        raise ConfigError(f"{e} (re-run: python 03_predict/{e.step}.py {config_path})") from None
    start = time.time()
    evaluation = None
    for step in STEPS:
        i, name = step.number, step.name
        if i < start_step:
            print(f"[{i}/{len(STEPS)}] {name}: skipped (--start {start_step})")
            continue
        if step is PREDICT and config.setup is None:
            print(f"[{i}/{len(STEPS)}] {name}: no network ('setup') in the config, the affinities are in out_file")
            continue
        if step is EVALUATE and config.gt_dataset is None and config.gt_skeletons is None:
            print(f"[{i}/{len(STEPS)}] {name}: no ground truth in the config, skipped")
            continue
        print(f"[{i}/{len(STEPS)}] {name} (elapsed {time.time() - start:.0f} s)", flush=True)
        try:
            result = RUNS[step](config, overwrite)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e} (re-run: python 03_predict/{name}.py {config_path})") from None
        if step is EVALUATE:
            evaluation = result
        results = result.values() if isinstance(result, dict) and step is EXTRACT_SEGMENTATION else [result]
        blockwise = [r for r in results if isinstance(r, BlockwiseResult)]
        if blockwise:
            total = BlockwiseResult(*(sum(getattr(r, k) for r in blockwise) for k in ("total", "processed", "skipped")))
            print(f"{name}: {total}", flush=True)
    print(f"segment: done in {time.time() - start:.0f} s")
    return evaluation
