"""The 03_predict run config: required keys, defaults, path resolution, one-line errors."""

import pytest
from conftest import REPO

from lsd_nm.config import ConfigError
from lsd_nm.run_config import load_run_config


def write(tmp_path, text):
    path = tmp_path / "run.json"
    path.write_text(text)
    return path


def test_defaults_and_paths(tmp_path):
    config = load_run_config(write(tmp_path, '{"setup": "02_train/synthetic/mtlsd", "raw_file": "/data/raw.zarr", "out_file": "out/x.zarr"}'))
    assert config.iteration == "latest" and config.merge_function == "hist_quant_75"
    assert config.path(config.setup) == REPO / "02_train/synthetic/mtlsd"
    assert config.path(config.raw_file).as_posix() == "/data/raw.zarr"
    assert config.db_location == str(REPO / "out/x.rag.db")
    postgres = load_run_config(write(tmp_path, '{"setup": "s", "raw_file": "r", "out_file": "o.zarr", "db": "postgresql://u@h:5/db"}'))
    assert postgres.db_location == "postgresql://u@h:5/db"


def test_unknown_merge_function(tmp_path):
    path = write(tmp_path, '{"setup": "s", "raw_file": "r", "out_file": "o", "merge_function": "hist_quant_76"}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value).startswith(f"{path}: key 'merge_function': input should be 'mean', 'hist_quant_10',")


def test_missing_and_inconsistent_keys(tmp_path):
    path = write(tmp_path, '{"setup": "s", "raw_file": "r"}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value) == f"{path}: missing key 'out_file'"
    path = write(tmp_path, '{"setup": "s", "raw_file": "r", "out_file": "o", "roi_offset": [0, 0, 0]}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value) == f"{path}: give both roi_offset and roi_shape, or neither"


@pytest.mark.parametrize("thresholds", [[1.5], [0.5, -0.2]])
def test_extract_thresholds_outside_0_1_are_refused(tmp_path, thresholds):
    """They would write segmentation_150 or segmentation_-20: no merge score lies outside [0, 1]."""
    path = write(tmp_path, f'{{"setup": "s", "raw_file": "r", "out_file": "o", "extract_thresholds": {thresholds}}}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    outside = [t for t in thresholds if not 0 <= t <= 1]
    assert str(e.value) == f"{path}: extract_thresholds {outside}: merge thresholds lie in [0, 1]"
    assert load_run_config(write(tmp_path, '{"setup": "s", "raw_file": "r", "out_file": "o", "extract_thresholds": [0, 1]}'))


def test_readme_documents_every_key_and_the_example_validates():
    from lsd_nm.run_config import RunConfig

    readme = (REPO / "03_predict/README.md").read_text()
    for name in RunConfig.model_fields:
        assert f"| `{name}` |" in readme, name
    configs = REPO / "03_predict/configs"
    paths = [p for p in configs.rglob("*.json") if p.parent != configs / "rois"]  # rois/: the ROI registries
    assert len(paths) >= 2 + 11
    for path in paths:
        load_run_config(path)


def test_the_zebrafinch_roi_configs_are_the_registrys_rois():
    """One run config per ROI of the paper (the 10 nested cubes and the Benchmark ROI), with that ROI's region, the
    raw `make fetch-test-data ROI=<name>` writes, and the skeletons' per-ROI mask and components of that ROI."""
    from lsd_nm.paper_data import raw_path
    from lsd_nm.rois import load_rois

    rois = load_rois("zebrafinch").rois
    folder = REPO / "03_predict/configs/zebrafinch"
    assert sorted(p.stem for p in folder.glob("*.json")) == sorted(rois)
    for name, roi in rois.items():
        config = load_run_config(folder / f"{name}.json")
        assert (config.roi_offset, config.roi_shape) == (roi.roi_offset, roi.roi_shape), name
        assert config.path(config.raw_file) == raw_path(name, REPO / "01_data")
        assert (config.skeleton_roi, config.skeleton_masked) == (name, True)
        assert config.out_file == f"03_predict/out/zebrafinch_mtlsd_{name}.zarr"
    benchmark = load_run_config(folder / "benchmark_roi.json")
    assert load_run_config(REPO / "03_predict/configs/zebrafinch.json") == benchmark


def test_the_zebrafinch_config_is_the_papers_benchmark_roi():
    """774,543 µm³ (paper.md §1.2) on the (20, 9, 9) nm grid, with blocks and context on it too."""
    config = load_run_config(REPO / "03_predict/configs/zebrafinch.json")
    assert config.setup == "02_train/zebrafinch/mtlsd" and config.merge_function == "hist_quant_75"
    assert round(config.roi_shape[0] * config.roi_shape[1] * config.roi_shape[2] / 1e9) == 774543
    voxel = (20, 9, 9)
    for value in (config.roi_offset, config.roi_shape, config.block_size, config.context):
        assert all(x % v == 0 for x, v in zip(value, voxel)), value


def test_score_threshold_and_site_background(tmp_path):
    """score_threshold lies in [0, 1] and excludes threshold_from; site_background is 'segment' or 'drop'."""
    base = '"setup": "s", "raw_file": "r", "out_file": "o"'
    config = load_run_config(write(tmp_path, f'{{{base}, "score_threshold": 0.32, "thresholds": [0, 1, 0.1]}}'))
    assert (config.score_threshold, config.site_background) == (0.32, "segment")
    from lsd_nm.luts import all_thresholds

    assert 0.32 in all_thresholds(config) and len(all_thresholds(config)) == 11
    path = write(tmp_path, f'{{{base}, "score_threshold": 0.3, "threshold_from": "v.scores.json"}}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value) == f"{path}: give score_threshold or threshold_from, not both"
    path = write(tmp_path, f'{{{base}, "site_background": "ignore"}}')
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value) == f"{path}: key 'site_background': input should be 'segment' or 'drop', got \"ignore\""
