"""01_data/create_masks.py: ones, 0 where hemi is unlabelled, the labels' attrs, blockwise, idempotent."""

import numpy as np
import pytest
import zarr
from s3_server import run_script, write_volume

from lsd_nm.config import ConfigError
from lsd_nm.data import LABELS_MASK, NEURON_IDS, open_volume, read_array
from lsd_nm.datasets import load_datasets
from lsd_nm.masks import blocks, create_mask, create_masks

UNLABELLED = 2**64 - 3
ZEBRAFINCH = load_datasets()["zebrafinch"].volumes[0]
HEMI = load_datasets()["hemi"].volumes[0]


@pytest.fixture
def data_dir(tmp_path):
    """A data folder with one zebrafinch, one hemi and one synthetic test volume."""
    root = tmp_path / "data"
    write_volume(root / "funke/zebrafinch/training" / ZEBRAFINCH, seed=1, unlabelled_id=0)  # a label 0 region
    write_volume(root / "funke/hemi/training" / HEMI, voxel_size=(8, 8, 8), offset=(16, 24, 32), seed=2, unlabelled_id=UNLABELLED)
    write_volume(root / "funke/synthetic/testing/test_0.zarr", seed=3, chunk_shape=(8, 48, 48))
    return root


def test_blocks_tile_the_array_once_along_chunk_borders():
    shape, chunks = (10, 50, 50), (4, 20, 20)
    got = list(blocks(shape, chunks, max_voxels=4 * 20 * 40))
    assert got[:3] == [
        (slice(0, 4), slice(0, 20), slice(0, 40)),
        (slice(0, 4), slice(0, 20), slice(40, 50)),
        (slice(0, 4), slice(20, 40), slice(0, 40)),
    ]
    assert len(got) == 3 * 3 * 2
    cover = np.zeros(shape, int)
    for block in got:
        cover[block] += 1
        assert all(s.start % c == 0 for s, c in zip(block, chunks))
    assert (cover == 1).all()
    assert list(blocks(shape, chunks, max_voxels=10**9)) == [(slice(0, 10), slice(0, 50), slice(0, 50))]
    # a block is never smaller than one chunk, even when max_voxels is
    assert len(list(blocks(shape, chunks, max_voxels=1))) == 3 * 3 * 3


def test_hemi_mask_is_zero_exactly_where_unlabelled(data_dir):
    container = data_dir / "funke/hemi/training" / HEMI
    result = create_mask(container, UNLABELLED, max_voxels=1)  # one chunk at a time
    labels, _, _ = read_array(container, NEURON_IDS)
    mask, voxel_size, offset = read_array(container, LABELS_MASK)
    assert mask.dtype == np.uint8 and mask.shape == labels.shape
    assert np.array_equal(mask, (labels != np.uint64(UNLABELLED)).astype(np.uint8))
    assert result.masked_out == 8 * 48 * 12 and result.voxels == 8 * 48 * 48
    assert (voxel_size, offset) == ((8, 8, 8), (16, 24, 32))
    array = zarr.open_array(container / LABELS_MASK, mode="r")
    assert array.chunks == zarr.open_array(container / NEURON_IDS, mode="r").chunks
    assert array.attrs.asdict() == zarr.open_array(container / NEURON_IDS, mode="r").attrs.asdict()
    # what training reads: funlib with the bucket's `resolution` attr
    volume = open_volume(container / LABELS_MASK)
    assert tuple(volume.voxel_size) == (8, 8, 8) and tuple(volume.offset) == (16, 24, 32)


def test_masks_of_every_volume_through_the_script(data_dir):
    result = run_script("01_data/create_masks.py", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    zf = data_dir / "funke/zebrafinch/training" / ZEBRAFINCH
    hemi = data_dir / "funke/hemi/training" / HEMI
    test = data_dir / "funke/synthetic/testing/test_0.zarr"
    assert result.stdout.splitlines() == [
        f"{zf / LABELS_MASK}: 0 of 18432 voxels masked out",
        f"{hemi / LABELS_MASK}: 4608 of 18432 voxels masked out",
        f"{test / LABELS_MASK}: 0 of 18432 voxels masked out",
    ]
    for container in (zf, test):  # no unlabelled id: ones everywhere, including where the label is 0
        labels, _, _ = read_array(container, NEURON_IDS)
        assert np.array_equal(read_array(container, LABELS_MASK)[0], np.ones(labels.shape, np.uint8))
    assert (read_array(zf, NEURON_IDS)[0] == 0).sum() >= 4608
    hemi_mask = read_array(hemi, LABELS_MASK)[0]
    assert hemi_mask[:, :, :12].max() == 0 and hemi_mask[:, :, 12:].min() == 1

    again = run_script("01_data/create_masks.py", "--data-dir", str(data_dir))
    assert again.returncode == 0
    assert again.stdout.splitlines()[1] == f"{hemi / LABELS_MASK}: exists, kept (--force rewrites it)"
    forced = run_script("01_data/create_masks.py", "--data-dir", str(data_dir), "--force", "--dataset", "hemi")
    assert forced.stdout.splitlines() == [f"{hemi / LABELS_MASK}: 4608 of 18432 voxels masked out"]
    assert np.array_equal(read_array(hemi, LABELS_MASK)[0], hemi_mask)
    assert sorted(p.name for p in (hemi / "volumes/labels").iterdir()) == [".zattrs", ".zgroup", "labels_mask", "neuron_ids"]


def test_an_interrupted_mask_is_never_taken_for_a_mask(data_dir):
    container = data_dir / "funke/hemi/training" / HEMI
    stale = container / (LABELS_MASK + ".partial")
    stale.mkdir(parents=True)
    (stale / "garbage").write_bytes(b"x")
    create_mask(container, UNLABELLED)
    assert not stale.exists()
    assert read_array(container, LABELS_MASK)[0].sum() == 8 * 48 * 36


def test_an_incomplete_volume_stops_before_anything_is_written(data_dir):
    broken = data_dir / "funke/zebrafinch/training" / ZEBRAFINCH
    (broken / NEURON_IDS / ".zarray").unlink()  # as an interrupted fetch leaves it
    with pytest.raises(ConfigError) as e:
        create_masks(data_dir)
    assert str(e.value) == (
        f"{broken}: no readable {NEURON_IDS} (an interrupted download? run `make fetch-data DATASET=zebrafinch` again)"
    )
    assert not list(data_dir.rglob("labels_mask*"))


def test_a_broken_synthetic_volume_gets_the_advice_of_its_dataset(tmp_path, tiny_datasets_file):
    """`make masks` on a broken synthetic volume once advised `make fetch-data`, which cannot fetch it."""
    from lsd_nm.synthetic import make_synthetic

    paths = make_synthetic("tiny", data_dir=tmp_path, workers=1, datasets_file=tiny_datasets_file)
    (paths[0] / NEURON_IDS / ".zarray").unlink()
    with pytest.raises(ConfigError) as e:
        create_masks(tmp_path, datasets_file=tiny_datasets_file)
    assert str(e.value) == (
        f"{paths[0]}: no readable {NEURON_IDS} (an interrupted generation? run `make synthetic DATASET=tiny ARGS=--force` "
        "to draw it again)"
    )


def test_no_volumes_is_an_error(tmp_path):
    result = run_script("01_data/create_masks.py", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr == f"error: no volumes under {tmp_path / 'funke'} (run `make synthetic` or `make fetch-data` first)\n"
