"""``make demo``: the DEMO_FAST run end to end (report keys, pictures, resume) and its parts on tiny cases."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lsd_nm.config import ConfigError
from lsd_nm.demo import (
    NO_LEARNING,
    NO_SCREENSHOT,
    REPORT_KEYS,
    NoLearningConfig,
    Stage,
    StageFailed,
    error_masks,
    intensity_affinities,
    make_plan,
    run_stages,
    seams_table,
)

REPO = Path(__file__).resolve().parents[1]
METRICS = {"best_threshold", "voi_split", "voi_merge", "voi_sum", "arand", "erl_nm", "normalized_erl"}


def test_intensity_affinities_are_the_smaller_neighbour_value():
    raw = np.array([[[0, 100, 200, 200]]], dtype=np.uint8)  # (1, 1, 4)
    config = NoLearningConfig(sigma=(0, 0, 0), low_percentile=0, high_percentile=100)
    affs = intensity_affinities(raw, (20, 9, 9), config)
    assert affs.shape == (3, 1, 1, 4) and affs.dtype == np.float32
    np.testing.assert_allclose(affs[2, 0, 0], [0.0, 0.0, 0.5, 1.0])
    assert not affs[0].any() and not affs[1].any()  # the first plane of each direction has no predecessor


def test_error_masks_mark_the_merged_and_the_split_off_voxels():
    truth = np.array([[[1, 1, 1, 1, 2, 2, 0, 3, 3]]], dtype=np.uint64)
    # neuron 1 lies mostly in segment 10 and one voxel in 11 (split off); segment 12 holds neurons 2 and 3
    segmentation = np.array([[[10, 10, 10, 11, 12, 12, 12, 12, 12]]], dtype=np.uint64)
    split, merge = error_masks(truth, segmentation)
    # neuron 2 (2 voxels) and neuron 3 (2 voxels) share segment 12: the tie goes to the smaller id, so 3 is merged
    assert split[0, 0].tolist() == [False, False, False, True, False, False, False, False, False]
    assert merge[0, 0].tolist() == [False, False, False, False, False, False, False, True, True]


def test_the_seams_table_shows_rates_ratio_and_verdict_per_axis():
    seam = {"face_rate": 0.132, "median_rate": 0.034, "ratio": 0.132 / 0.034, "seam": True}
    clean = {"face_rate": 0.042, "median_rate": 0.034, "ratio": 0.042 / 0.034, "seam": False}
    results = {
        "networks": {"mtlsd": {"seams": {"z": "one block", "y": seam, "x": clean}}},
        NO_LEARNING: {"seams": {"z": "one block", "y": {**clean, "ratio": None, "median_rate": 0.0}}},
    }
    assert seams_table(results).splitlines() == [
        "| network | z | y | x |",
        "|---|---|---|---|",
        "| mtlsd | one block | 13.2 % vs 3.4 % (3.9×) **seam** | 4.2 % vs 3.4 % (1.2×) |",
        "| no learning (raw intensity) | one block | 4.2 % vs 0.0 % (none elsewhere) | — |",
    ]


def test_unknown_or_affinity_free_networks_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="'nope' is not a network folder of 02_train/synthetic/"):
        make_plan(tmp_path, ["nope"], fast=True)
    with pytest.raises(ConfigError, match="'lsd' predicts no affinities"):
        make_plan(tmp_path, ["lsd"], fast=True)
    plan = make_plan(tmp_path, ["acrlsd", "baseline"], fast=False)
    assert plan.trained == ["lsd", "acrlsd", "baseline"] and plan.networks == ["acrlsd", "baseline"]
    bad = tmp_path / "demo.json"
    bad.write_text(json.dumps({"iterations": {"baseline": 10}}))
    with pytest.raises(ConfigError, match="'iterations' has no entry for 'mtlsd'"):
        make_plan(tmp_path, ["mtlsd"], fast=False, config_path=bad)


def test_stages_skip_what_is_done_and_a_failure_names_the_stage_and_its_command(tmp_path):
    plan = make_plan(tmp_path, ["baseline"], fast=True)
    plan.out.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "touched"
    write = Stage("write", 1, [sys.executable, "-c", f"open({str(out)!r}, 'a').write('x')"], outputs=[out])
    run_stages(plan, [write])
    run_stages(plan, [write])  # done before: not run again
    assert out.read_text() == "x"
    fail = Stage("boom", 1, [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(StageFailed, match=r"stage 'boom' failed \(exit 3\); re-run it with: python -c"):
        run_stages(plan, [write, fail])
    state = json.loads((plan.out / "state.json").read_text())
    assert set(state) == {"write"}  # the failed stage is not recorded done


def _non_blank(path: Path) -> bool:
    image = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    return image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 5


def test_fast_demo_writes_the_report_and_a_rerun_skips_finished_work(tmp_path, chromium):
    """A machine without Chromium still gets its report (the screenshot skipped, with how to get it); a re-run with
    Chromium adds the screenshot and redoes nothing else. (The first ``make demo`` on a fresh machine once failed at its
    last stage for want of Chromium, after 19 minutes, with no report.)"""
    env = {**os.environ, "LSD_NM_DATA_DIR": str(tmp_path / "data"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "lsd_nm", "demo", "--fast", "--out", str(tmp_path / "demo")]
    no_chromium = tmp_path / "empty_bin"
    no_chromium.mkdir()
    start = time.time()
    first = subprocess.run(
        command, cwd=tmp_path, env={**env, "PATH": str(no_chromium)}, capture_output=True, text=True, timeout=900
    )
    first_seconds = time.time() - start
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "demo"
    assert f"demo: {NO_SCREENSHOT}" in first.stdout
    assert not (out / "neuroglancer.png").exists() and f"*{NO_SCREENSHOT}*" in (out / "report.md").read_text()

    report = json.loads((out / "report.json").read_text())
    assert set(report) == {"networks", NO_LEARNING, "dataset", "test_volume", "seconds_total"}
    assert set(report["networks"]) == {"baseline", "mtlsd"}
    for row in report["networks"].values():
        assert set(row) == set(REPORT_KEYS) | {"seams"}
        assert all(math.isfinite(v) for k, v in row.items() if k != "seams")
        # the seam check of step 6 per axis: numbers where there is a block face, else "one block"
        assert list(row["seams"]) == ["z", "y", "x"] and isinstance(row["seams"]["y"], dict)
        assert all(v == "one block" or set(v) == {"face_rate", "median_rate", "ratio", "seam"}
                   for v in row["seams"].values())  # fmt: skip
        assert row["iterations"] == 6 and row["predict_voxels_per_second"] > 0 and row["train_seconds"] > 0
        assert row["voi_sum"] == pytest.approx(row["voi_split"] + row["voi_merge"])
    assert set(report[NO_LEARNING]) == METRICS | {"seams"}
    assert all(math.isfinite(v) for k, v in report[NO_LEARNING].items() if k != "seams")
    assert report["dataset"] == "synthetic" and report["test_volume"].endswith("testing/test_0.zarr")
    markdown = (out / "report.md").read_text()
    pictures = ["voi_curves.png", "loss_curves.png", "slices_baseline.png", "slices_mtlsd.png", f"slices_{NO_LEARNING}.png"]
    for name in pictures:
        assert _non_blank(out / name), name
        assert f"]({name})" in markdown  # embedded
    assert "| baseline | 6 |" in markdown and "python -m lsd_nm train" in markdown
    assert "## Seams" in markdown and seams_table(report) in markdown and seams_table(report) in first.stdout
    assert "demo [" in first.stdout and "ETA" in first.stdout and "report.md" in first.stdout

    checkpoints = sorted((out / "train/synthetic").glob("*/train_net_checkpoint_*"))
    assert [c.parent.name for c in checkpoints].count("mtlsd") >= 1
    stamps = {c: c.stat().st_mtime_ns for c in checkpoints}
    losses = (out / "train/synthetic/mtlsd/loss.tsv").read_text()
    affs = (out / "mtlsd.zarr/volumes/affs").stat().st_mtime_ns

    start = time.time()
    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    second_seconds = time.time() - start
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert second_seconds < first_seconds
    assert NO_SCREENSHOT not in second.stdout and "neuroglancer screenshot —" in second.stdout
    assert _non_blank(out / "neuroglancer.png") and "](neuroglancer.png)" in (out / "report.md").read_text()
    for stage in ("train baseline", "train mtlsd", "predict mtlsd", "segment mtlsd", "segment no_learning"):
        assert f"{stage}: done before" in second.stdout
    assert {c: c.stat().st_mtime_ns for c in checkpoints} == stamps
    assert (out / "train/synthetic/mtlsd/loss.tsv").read_text() == losses
    assert (out / "mtlsd.zarr/volumes/affs").stat().st_mtime_ns == affs
    again = json.loads((out / "report.json").read_text())
    assert again["networks"] == report["networks"] and again[NO_LEARNING] == report[NO_LEARNING]
