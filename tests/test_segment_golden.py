"""segment.py's outputs on a fixed synthetic case stay bit for bit what they were when the package was restructured.

The digests below were computed by the code before the restructuring of the 03_predict half (all argv parsing into
``cli.py``, one blockwise layer, metrics apart from step 6); the restructuring promised no change of behaviour or
output. A deliberate change of what a step computes must update them, and say why in its commit. They were updated
once: a seedless component's seed, among voxels tied for its largest distance, is its first voxel in C order (it was
the choice of an unstable sort, which differed between CPUs).
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import zarr
from conftest import REPO
from predict_volumes import ideal_affinities

from lsd_nm.data import NEURON_IDS, RAW, write_container
from lsd_nm.skeletons import skeletonize, write_skeletons
from lsd_nm.synthetic import generate_volume

VOXEL = (20, 9, 9)
OFFSET = (40, 18, 36)


def _digest(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.dtype.str, part.shape)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _noisy_case(tmp_path):
    raw, labels = generate_volume((24, 120, 120), VOXEL, seed=5)
    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 40.0, size=(3, *labels.shape))
    affs = np.clip(ideal_affinities(labels).astype(np.float64) * 0.85 + 20 + noise, 0, 255).astype(np.uint8)
    volume = tmp_path / "gt.zarr"
    write_container(volume, {RAW: raw, NEURON_IDS: labels}, VOXEL, OFFSET)
    write_skeletons(tmp_path / "gt.skeletons.npz", skeletonize(labels, VOXEL, OFFSET))
    write_container(tmp_path / "out.zarr", {"volumes/affs": affs}, VOXEL, OFFSET)
    return volume


def _without_avx512() -> dict[str, str]:
    """An environment in which numpy runs none of its AVX-512 code (its sorts, reductions): this CPU then computes
    as one without AVX-512 does. Empty on a CPU without it (this run is already that case)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    found = [name for name in __cpu_dispatch__ if __cpu_features__.get(name) and name.startswith(("X86_V4", "AVX512"))]
    return {"NPY_DISABLE_CPU_FEATURES": " ".join(found)} if found else {}


def _segment_digests(tmp_path, environment: dict[str, str]) -> dict[str, str]:
    volume = _noisy_case(tmp_path)
    config = {
        "setup": None, "raw_file": str(volume), "out_file": str(tmp_path / "out.zarr"), "num_workers": 2,
        "block_size": [240, 540, 540], "context": [40, 36, 36], "thresholds": [0.0, 1.0, 0.1],
        "extract_thresholds": [0.3, 0.5], "merge_function": "hist_quant_75", "gt_file": str(volume),
        "gt_dataset": NEURON_IDS, "gt_skeletons": str(tmp_path / "gt.skeletons.npz"),
    }  # fmt: skip
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config))
    script = str(REPO / "03_predict/segment.py")
    env = {**os.environ, **environment}
    result = subprocess.run([sys.executable, script, str(path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    out = zarr.open_group(tmp_path / "out.zarr", mode="r")
    digests = {}
    for name in ("volumes/fragments", "volumes/segmentation_30", "volumes/segmentation_50"):
        array = out[name]
        # the fragments' id is drawn anew by every run (it tells one run's region graph from another's)
        attrs = {k: v for k, v in array.attrs.asdict().items() if k != "lsd_nm_fragments_id"}
        digests[name] = _digest(array[:], attrs)
    luts = sorted((tmp_path / "out.zarr/luts/fragment_segment").glob("*.npz"))
    assert len(luts) == 10
    with np.load(luts[3]) as lut:
        digests["lut"] = _digest(luts[3].name, lut["fragments"], lut["segments"])
    scores = json.loads((tmp_path / "out.scores.json").read_text())
    digests["scores"] = _digest(scores)
    return digests


def test_segment_outputs_are_bit_identical_to_the_reference(tmp_path):
    """On this CPU, and, where it has AVX-512, as a CPU without it computes (a seed chosen by an unstable sort's
    tie once made 30 voxels of one block another fragment on an AMD EPYC without AVX-512)."""
    environments = {"this_cpu": {}}
    without = _without_avx512()
    if without:
        environments["without_avx512"] = without
    digests = {name: _segment_digests(tmp_path / name, env) for name, env in environments.items()}
    assert digests == {name: EXPECTED for name in environments}


EXPECTED = {
    "volumes/fragments": "3eb6263c31dd9658",
    "volumes/segmentation_30": "597ae1f4a2d98003",
    "volumes/segmentation_50": "4d65ff7edb9f4d0b",
    "lut": "c037f2994b666ac9",
    "scores": "3b661b7ce504df47",
}
