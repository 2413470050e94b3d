"""lsd_nm.evaluate.evaluate_run (03_predict/06_evaluate.py): the threshold sweep of a run against dense labels and
skeletons, on a synthetic volume with ideal affinities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from predict_volumes import OFFSET, VOXEL_SIZE, config, read_fragments
from test_segments import GT, SETTINGS, base_run, copy_run, run_script, written  # noqa: F401 - base_run: a fixture

from lsd_nm.config import ConfigError
from lsd_nm.data import write_container
from lsd_nm.evaluate import (
    SCORE_COLUMNS,
    evaluate_run,
    expected_run_length,
    rand_voi,
    relabel,
    sample_segments,
    scores_paths,
)
from lsd_nm.segments import all_thresholds, find_segments, load_lut
from lsd_nm.synthetic import read_skeletons


def _config(out: Path, dense: bool = True, skeletons: bool = True, **overrides):
    folder = out.parent
    values = dict(SETTINGS)
    if dense:
        values.update(gt_file=str(folder / "gt.zarr"), gt_dataset=GT)
    if skeletons:
        values.update(gt_skeletons=str(folder / "gt.skeletons.npz"))
    values.update(overrides)
    return config(out, **values)


def test_ideal_affinities_score_near_perfectly_and_the_files_are_written(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out)
    find_segments(cfg, progress=False)
    result = evaluate_run(cfg, progress=False)
    rows, best = result["rows"], result["best"]
    assert [r["threshold"] for r in rows] == all_thresholds(cfg)
    # dense VOI decides (ideal affinities: only label pieces cut off by the boundaries split)
    assert best["voi_sum"] == min(r["voi_sum"] for r in rows) < 0.1 and 0 < best["threshold"] < 1
    # the watershed floods thin label pieces (mean affinity ≤ 0.5) from a neighbour: a few merges remain
    assert best["arand"] < 0.01 and best["normalized_erl"] == max(r["normalized_erl"] for r in rows) > 0.9
    assert best["number_of_merging_segments"] <= 2 and best["sites_voi_split"] + best["sites_voi_merge"] < 0.2
    assert rows[0]["voi_split"] > 1.0 and rows[0]["normalized_erl"] < 0.5  # t = 0: every fragment is a segment
    # the sweep equals scoring the written-out segmentation directly (the GT covers the fragments here)
    truth = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:]
    segmentation = relabel(read_fragments(out), load_lut(cfg, best["threshold"]))
    direct = rand_voi(truth, segmentation)
    assert all(direct[k] == pytest.approx(best[k], abs=1e-12) for k in direct)
    skeletons = read_skeletons(out.parent / "gt.skeletons.npz")
    on_skeletons = sample_segments(skeletons["positions"], segmentation, VOXEL_SIZE, OFFSET)
    erl = expected_run_length(**skeletons, segment_ids=on_skeletons)
    assert all(erl[k] == pytest.approx(best[k], abs=1e-9) for k in erl)

    csv_path, json_path, png_path = scores_paths(out)
    assert (result["csv"], result["json"], result["png"]) == (csv_path, json_path, png_path)
    assert csv_path == tmp_path / "run" / "out.scores.csv" and png_path.name == "out.voi_vs_threshold.png"
    with open(csv_path) as f:
        table = list(csv.DictReader(f))
    assert tuple(next(iter(csv.reader(open(csv_path))))[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    assert len(table) == len(rows) and {"sites_voi_split", "number_of_split_skeletons", "max_erl"} <= set(table[0])
    saved = json.loads(json_path.read_text())
    assert saved["best"]["threshold"] == best["threshold"] and len(saved["rows"]) == len(rows)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((out / "volumes").glob("segmentation_*"))  # the sweep writes no segmentation


def test_without_dense_labels_the_site_voi_decides(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out, dense=False)
    find_segments(cfg, progress=False)
    result = evaluate_run(cfg, progress=False)
    for row in result["rows"]:
        assert (row["voi_split"], row["voi_merge"]) == (row["sites_voi_split"], row["sites_voi_merge"])
    best = result["best"]
    assert best["voi_sum"] == min(r["sites_voi_split"] + r["sites_voi_merge"] for r in result["rows"]) < 0.2
    assert "nvi_split" not in best  # no dense scores without dense labels


def test_skeleton_nodes_outside_the_fragments_are_left_out(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    skeletons = dict(np.load(out.parent / "gt.skeletons.npz"))
    far = np.array([[1e6, 1e6, 1e6], [1e6, 1e6, 2e6]], np.float32)
    extra = {
        "node_ids": np.array([9001, 9002], np.uint64), "positions": far,
        "neuron_ids": np.array([9000, 9000], np.uint64), "edges": np.array([[9001, 9002]], np.uint64),
    }  # fmt: skip
    np.savez_compressed(out.parent / "far.npz", **{k: np.concatenate([skeletons[k], extra[k]]) for k in extra})
    cfg = _config(out, dense=False, gt_skeletons=str(out.parent / "far.npz"))
    find_segments(cfg, progress=False)
    with_far = evaluate_run(cfg, progress=False)["rows"]
    without = evaluate_run(_config(out, dense=False), progress=False)["rows"]
    assert with_far == without and with_far[0]["sites_num_bg_sites"] == 0


def test_bad_inputs_are_one_line_errors_and_write_nothing(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out)
    before = written(tmp_path)
    with pytest.raises(ConfigError, match=r"^no LUT for threshold 0.0 \('.*seg_hist_quant_75_0.npz'\); run 04_find"):
        evaluate_run(cfg, progress=False)
    with pytest.raises(ConfigError, match=r"^nothing to evaluate against"):
        evaluate_run(_config(out, dense=False, skeletons=False), progress=False)
    with pytest.raises(ConfigError, match=r"^gt_skeletons '.*missing.npz' does not exist$"):
        evaluate_run(_config(out, gt_skeletons=str(tmp_path / "missing.npz")), progress=False)
    empty = tmp_path / "run" / "empty.zarr"
    zarr.open_group(empty, mode="w", zarr_format=2)
    before_empty = written(tmp_path)
    with pytest.raises(ConfigError, match=r"^fragments \(run 02_extract_fragments first\) '.*' does not exist$"):
        evaluate_run(_config(empty), progress=False)
    assert written(tmp_path) == before_empty

    find_segments(cfg, progress=False)
    labels = zarr.open_array(out.parent / "gt.zarr" / GT, mode="r")[:]
    write_container(out.parent / "coarse.zarr", {GT: labels}, (40, 9, 9), OFFSET)
    write_container(out.parent / "shifted.zarr", {GT: labels}, VOXEL_SIZE, (50, 18, 36))
    before = written(tmp_path)
    coarse = _config(out, gt_file=str(out.parent / "coarse.zarr"))
    message = f"ground truth '{out.parent}/coarse.zarr/{GT}' has voxel size (40, 9, 9) nm, the fragments (20, 9, 9) nm"
    with pytest.raises(ConfigError) as error:
        evaluate_run(coarse, progress=False)
    assert str(error.value) == message
    with pytest.raises(ConfigError, match=r"offset \(50, 18, 36\) nm\) is not on the fragments' voxel grid$"):
        evaluate_run(_config(out, gt_file=str(out.parent / "shifted.zarr")), progress=False)
    assert written(tmp_path) == before

    done = run_script("06_evaluate.py", coarse, tmp_path)
    assert (done.returncode, done.stderr) == (2, f"error: {message}\n")
    assert written(tmp_path) == before | {"config.json"}


def test_the_script_prints_the_best_row(base_run: Path, tmp_path: Path) -> None:
    out = copy_run(base_run, tmp_path)
    cfg = _config(out, thresholds=(0.4, 0.6, 0.1), extract_thresholds=[])
    find_segments(cfg, progress=False)
    done = run_script("06_evaluate.py", cfg, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("best: threshold 0.4, voi_split ") and "normalized_erl 0.9" in done.stdout
    assert scores_paths(out)[1].is_file()
