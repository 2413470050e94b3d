"""The paper's zebrafinch ROIs (03_predict/configs/rois/zebrafinch.json) and their checks (lsd_nm.rois)."""

import itertools
import json

import numpy as np
import pytest

from lsd_nm.config import ConfigError
from lsd_nm.rois import check_roi_against_skeletons, get_roi, load_rois

EDGES_UM = [10.8, 18.0, 25.2, 32.4, 39.6, 46.8, 54.0, 61.2, 68.4, 75.6]
"""The cube edges of paper.md §1.1."""
VOLUMES_UM3 = [1260, 5832, 16003, 34012, 62099, 102503, 157464, 229221, 320014, 432081]
"""Their volumes (the ends, 1,260 and 432,081 µm³, are the authors' table values)."""


def test_the_registry_holds_the_papers_rois():
    registry = load_rois("zebrafinch")
    assert registry.voxel_size == (20, 9, 9)
    names = list(registry.rois)
    assert names == [f"{n}_micron_roi" for n in (11, 18, 25, 32, 40, 47, 54, 61, 68, 76)] + ["benchmark_roi"]
    cubes = [registry.rois[n] for n in names[:-1]]
    assert [roi.roi_shape for roi in cubes] == [(round(e * 1000),) * 3 for e in EDGES_UM]
    assert [round(roi.volume_um3()) for roi in cubes] == VOLUMES_UM3
    assert round(registry.rois["benchmark_roi"].volume_um3()) == 774543
    # the one published offset (original.md §6.4.7), and every other one marked as derived
    first = registry.rois["11_micron_roi"]
    assert (first.roi_offset, first.roi_shape, first.offset_source) == ((50800, 43200, 44100), (10800,) * 3, "published")
    assert {registry.rois[n].offset_source for n in names[1:]} == {"derived"}
    # nested: each ROI holds the one before
    rois = [registry.rois[n] for n in names]
    assert all(outer.contains(inner) for inner, outer in itertools.pairwise(rois))
    assert not rois[0].contains(rois[1])


def test_an_unknown_roi_lists_the_names():
    with pytest.raises(ConfigError) as e:
        get_roi("12_micron_roi")
    assert str(e.value).startswith("unknown ROI '12_micron_roi' of dataset 'zebrafinch' (expected one of: 11_micron_roi, 18_micron_roi,")


def test_a_registry_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_rois("hemi", tmp_path / "hemi.json")
    assert str(e.value) == f"no ROI registry for dataset 'hemi' at {tmp_path / 'hemi.json'} (registries exist for: zebrafinch)"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"roi_offset": [50800, 43200, 44101]}, "ROI 'a': roi_offset [50800, 43200, 44101] is not a multiple of the voxel size [20, 9, 9]"),
        ({"roi_shape": [0, 9, 9]}, "ROI 'a': roi_shape must be positive, got [0, 9, 9]"),
        ({"offset_source": "guessed"}, "key 'rois.a.offset_source': input should be 'published' or 'derived', got \"guessed\""),
        ({"extra": 1}, "unknown key 'rois.a.extra' (expected one of: note, offset_source, roi_offset, roi_shape)"),
    ],
)
def test_bad_registries_are_one_line_errors(tmp_path, change, message):
    roi = {"roi_offset": [50800, 43200, 44100], "roi_shape": [10800] * 3, "offset_source": "published", "note": "n"}
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"dataset": "x", "voxel_size": [20, 9, 9], "rois": {"a": {**roi, **change}}}))
    with pytest.raises(ConfigError) as e:
        load_rois("x", path)
    assert str(e.value) == f"{path}: {message}"


def skeletons(positions, masked, components):
    n = len(positions)
    return {
        "node_ids": np.arange(1, n + 1, dtype=np.uint64),
        "positions": np.asarray(positions, np.float32),
        "neuron_ids": np.ones(n, np.uint64),
        "edges": np.zeros((0, 2), np.uint64),
        "masked_11_micron_roi_masked": np.asarray(masked, bool),
        "component_id_11_micron_roi_masked": np.asarray(components, np.uint64),
    }


def test_skeletons_that_agree_with_the_roi():
    roi = get_roi("11_micron_roi")
    none = np.iinfo(np.uint64).max
    s = skeletons([(50800, 43200, 44100), (61580, 53991, 54891), (0, 0, 0)], [True, False, False], [0, 1, none])
    report = check_roi_against_skeletons(roi, "11_micron_roi", s, "11_micron_roi_masked")
    assert report == {
        "nodes": 2, "outside": 0, "bbox_begin": (50800.0, 43200.0, 44100.0), "bbox_end": (61580.0, 53991.0, 54891.0),
    }  # fmt: skip


def test_marked_nodes_outside_the_roi_are_counted_and_a_roi_without_any_is_refused():
    """The original reads the nodes inside the ROI and ignores the rest of an attribute collection: a marked node
    outside is counted, not refused; a ROI that holds none of the marked nodes is the wrong one."""
    roi = get_roi("11_micron_roi")
    s = skeletons([(50800, 43200, 44100), (61600, 43200, 44100)], [True, True], [0, 0])
    report = check_roi_against_skeletons(roi, "11_micron_roi", s, "11_micron_roi_masked")
    corner = (50800.0, 43200.0, 44100.0)
    assert report == {"nodes": 1, "outside": 1, "bbox_begin": corner, "bbox_end": corner}
    s = skeletons([(61600, 43200, 44100), (0, 0, 0)], [True, True], [0, 0])
    with pytest.raises(ConfigError) as e:
        check_roi_against_skeletons(roi, "11_micron_roi", s, "11_micron_roi_masked")
    assert str(e.value) == (
        "ROI '11_micron_roi' [50800, 43200, 44100]+[10800, 10800, 10800] nm disagrees with the skeletons' "
        "'11_micron_roi_masked': 2 of 2 marked nodes lie outside it (e.g. node 1 at [61600.0, 43200.0, 44100.0] nm, "
        "z, y, x)"
    )
    with pytest.raises(ConfigError) as e:
        check_roi_against_skeletons(roi, "11_micron_roi", s, "18_micron_roi_masked")
    assert str(e.value) == (
        "the skeletons have no masked_18_micron_roi_masked or component_id_18_micron_roi_masked "
        "(they have: component_id_11_micron_roi_masked, masked_11_micron_roi_masked)"
    )
