"""``segment.py CONFIG``: the whole ``03_predict`` chain — predict, fragments, agglomerate, segments, segmentation,
evaluation — in order, each step resuming (finished blocks and LUTs are not redone).

Run: ``python 03_predict/segment.py CONFIG.json [--overwrite] [--start N]``   (or: ``make segment CONFIG=…``)
"""

from __future__ import annotations

import time
from pathlib import Path

from .agglomerate import agglomerate
from .blockwise import BlockwiseResult
from .config import ConfigError
from .evaluate import evaluate_run
from .fragments import extract_fragments
from .predict_blockwise import predict_blockwise
from .run_config import STEPS, RunConfig
from .segments import extract_segmentation, find_segments


def segment(config: RunConfig, config_path: Path, overwrite: bool = False, start_step: int = 1) -> None:
    """Run every step of a run config from step ``start_step`` on; on a failure, say which step and the command that
    re-runs it."""
    functions = [
        lambda: predict_blockwise(config, overwrite=overwrite),
        lambda: extract_fragments(config, overwrite=overwrite),
        lambda: agglomerate(config, overwrite=overwrite),
        lambda: find_segments(config, overwrite=overwrite),
        lambda: extract_segmentation(config, overwrite=overwrite),
        lambda: evaluate_run(config),
    ]
    start = time.time()
    for i, (name, function) in enumerate(zip(STEPS, functions), 1):
        if i < start_step:
            print(f"[{i}/{len(STEPS)}] {name}: skipped (--start {start_step})")
            continue
        if name == "01_predict_blockwise" and config.setup is None:
            print(f"[{i}/{len(STEPS)}] {name}: no network ('setup') in the config, the affinities are in out_file")
            continue
        if name == "06_evaluate" and config.gt_dataset is None and config.gt_skeletons is None:
            print(f"[{i}/{len(STEPS)}] {name}: no ground truth in the config, skipped")
            continue
        print(f"[{i}/{len(STEPS)}] {name} (elapsed {time.time() - start:.0f} s)", flush=True)
        try:
            result = function()
        except ConfigError as e:
            raise ConfigError(f"{name}: {e} (re-run: python 03_predict/{name}.py {config_path})") from None
        results = result.values() if isinstance(result, dict) and name == "05_extract_segmentation" else [result]
        blockwise = [r for r in results if isinstance(r, BlockwiseResult)]
        if blockwise:
            total = BlockwiseResult(*(sum(getattr(r, k) for r in blockwise) for k in ("total", "processed", "skipped")))
            print(f"{name}: {total}", flush=True)
    print(f"segment: done in {time.time() - start:.0f} s")
