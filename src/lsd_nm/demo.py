"""``make demo``: the paper's pipeline end to end on the embedded synthetic dataset, on a CPU, with a report.

Generates the synthetic dataset, trains the ``02_train/synthetic`` networks named in ``02_train/synthetic/demo.json``
(iterations there too), predicts the held-apart test volume blockwise, extracts fragments, agglomerates, sweeps the
merge thresholds, evaluates against the dense labels and the skeletons, scores a no-learning reference (affinities
from raw intensity alone) through the same path, and writes ``demo/report.md``, ``demo/report.json`` and pictures.
Every stage is a command of the tutorial (printed, and listed in the report); a re-run resumes: finished stages are
skipped, a crashed one continues from its last checkpoint or done block.

Run: ``python -m lsd_nm demo [--networks baseline mtlsd ...] [--fast] [--out demo]``
     (or: ``make demo [DEMO_NETWORKS="baseline mtlsd lsd acrlsd"] [DEMO_FAST=1]``)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, get_args

import numpy as np

from . import REPO_ROOT
from .checkpoints import checkpoint_path, latest_checkpoint
from .config import ConfigError, StrictBaseModel, load_model
from .data import (
    COMPRESSOR,
    FRAGMENTS,
    NEURON_IDS,
    RAW,
    atomic_path,
    open_dataset,
    read_array,
    write_container,
    write_text,
)
from .datasets import DATA_DIR, get_dataset, volume_path
from .evaluate import SEAM_RATIO, scores_paths
from .experiment import AUTOCONTEXT_NETWORKS, NetworkType, load_network_folder, merge_config
from .luts import apply_lut, load_lut
from .run_config import load_run_config
from .train import read_losses
from .view import CHROMIUM_NAMES

DEMO_CONFIG = REPO_ROOT / "02_train" / "synthetic" / "demo.json"
DATASET = "synthetic"
REPORT_KEYS = ("iterations", "train_seconds", "best_threshold", "voi_split", "voi_merge", "voi_sum", "arand",
               "erl_nm", "normalized_erl", "predict_voxels_per_second")  # fmt: skip
METRIC_KEYS = REPORT_KEYS[2:-1]
NO_LEARNING = "no_learning"
NO_SCREENSHOT = (
    "no Chromium on PATH, so the neuroglancer screenshot is skipped "
    "(`apt-get install chromium` as root, or put chromium on PATH, then run `make demo` again: it adds only the screenshot)"
)


class NoLearningConfig(StrictBaseModel):
    """The no-learning reference: affinities from smoothed raw intensity (membranes are dark)."""

    sigma: tuple[float, float, float] = (0.0, 9.0, 9.0)
    """Gaussian smoothing of raw before the affinities (nm, zyx)."""
    low_percentile: float = 5.0
    """Intensity percentile mapped to affinity 0 (membrane)."""
    high_percentile: float = 60.0
    """Intensity percentile mapped to affinity 1 (cytoplasm)."""


class DemoConfig(StrictBaseModel):
    """What ``make demo`` runs (``02_train/synthetic/demo.json`` holds the deltas)."""

    networks: list[str] = ["baseline", "mtlsd"]
    """Networks trained, predicted and scored (``DEMO_NETWORKS`` overrides); aclsd/acrlsd train their lsd net first."""
    iterations: dict[str, int] = {}
    """Training iterations per network (every network of ``networks`` needs one)."""
    fast_iterations: int = 6
    """Training iterations of every network with ``--fast`` (``DEMO_FAST=1``): the plumbing, not the results."""
    seed: int = 1
    """Seed of the initial weights and the augmentations."""
    test_volume: str = "test_0.zarr"
    """The held-apart test volume of the synthetic dataset."""
    roi_offset: tuple[int, int, int] = (2400, 1260, 1260)
    """Offset (nm) of the evaluated region: the test volume minus the context of an autocontext net on each side,
    so that every network is scored on the same voxels."""
    roi_shape: tuple[int, int, int] = (1280, 1944, 1944)
    """Shape (nm) of the evaluated region (64 × 216 × 216 voxels)."""
    fast_roi_shape: tuple[int, int, int] = (480, 1260, 1260)
    """Shape (nm) of the evaluated region with ``--fast`` (one network output)."""
    num_workers: int = 2
    """Worker processes of every blockwise step."""
    block_size: tuple[int, int, int] = (640, 972, 972)
    """Write size (nm) of the post-processing blocks."""
    context: tuple[int, int, int] = (240, 243, 243)
    """Context (nm) of the post-processing blocks: 12 × 27 × 27 voxels, the paper's; the watersheds of two blocks then
    agree near their common face (3 × 6 × 6 voxels left seams of 1.6-2.6× on the faces: ``benchmarks/seams.py``)."""
    fragments_in_xy: bool = True
    """Watershed fragments per section (the data are anisotropic: 20 nm sections, 9 nm pixels)."""
    merge_function: str = "hist_quant_75"
    """waterz merge function (the paper's best)."""
    thresholds: tuple[float, float, float] = (0.0, 1.0, 0.05)
    """The merge-threshold sweep: [min, max, step]."""
    no_learning: NoLearningConfig = NoLearningConfig()
    """The no-learning reference."""


# ---------------------------------------------------------------------------------------------------------------------
# plan: which networks, in which folders, with which run configs


@dataclass(frozen=True)
class Plan:
    """Where everything of one demo run lives."""

    out: Path
    config: DemoConfig
    networks: list[str]
    """Networks scored (they predict affinities)."""
    trained: list[str]
    """Networks trained, in order (the lsd net before the autocontext nets)."""
    iterations: dict[str, int]
    roi_offset: tuple[int, int, int]
    roi_shape: tuple[int, int, int]
    data_dir: Path
    fast: bool
    chromium: str | None = None
    """The Chromium executable for the neuroglancer screenshot; None: none on ``PATH``, the screenshot is skipped."""

    @property
    def train_root(self) -> Path:
        return self.out / "train" / DATASET

    def folder(self, network: str) -> Path:
        return self.train_root / network

    def run_config(self, name: str) -> Path:
        return self.out / "configs" / f"{name}.json"

    def out_file(self, name: str) -> Path:
        return self.out / f"{name}.zarr"

    @property
    def test_volume(self) -> Path:

        return volume_path(DATASET, self.config.test_volume, test=True, data_dir=self.data_dir)

    @property
    def voxel_size(self) -> tuple[int, ...]:

        return tuple(get_dataset(DATASET).voxel_size)

    @property
    def roi_voxels(self) -> int:
        return math.prod(s // v for s, v in zip(self.roi_shape, self.voxel_size))

    def roi_crop(self, offset: Sequence[int]) -> tuple[slice, ...]:
        """The evaluated region in an array of the test volume's grid that starts at ``offset`` (nm)."""
        begin = [(o - r) // v for o, r, v in zip(self.roi_offset, offset, self.voxel_size)]
        return tuple(slice(b, b + s // v) for b, s, v in zip(begin, self.roi_shape, self.voxel_size))


def make_plan(out: Path, networks: Sequence[str] | None, fast: bool, config_path: Path = DEMO_CONFIG) -> Plan:
    """Validate the choice of networks against ``demo.json`` and the network folders; one-line errors."""

    config = load_model(DemoConfig, config_path)
    chosen = list(networks) if networks else list(config.networks)
    if not chosen:
        raise ConfigError("DEMO_NETWORKS is empty: name at least one of " + ", ".join(get_args(NetworkType)))
    for name in chosen:
        if not (REPO_ROOT / "02_train" / DATASET / name / "config.json").is_file():
            raise ConfigError(f"DEMO_NETWORKS: '{name}' is not a network folder of 02_train/{DATASET}/")
        if name == "lsd":
            raise ConfigError("DEMO_NETWORKS: 'lsd' predicts no affinities; name 'acrlsd' or 'aclsd' (they train lsd first)")
    trained: list[str] = []
    for name in chosen:
        lsd = load_network_folder(REPO_ROOT / "02_train" / DATASET / name).lsd
        if lsd is not None and lsd.name not in trained:
            trained.append(lsd.name)
        if name not in trained:
            trained.append(name)
    iterations = {}
    for name in trained:
        if fast:
            iterations[name] = config.fast_iterations
        elif name in config.iterations:
            iterations[name] = config.iterations[name]
        else:
            raise ConfigError(f"{config_path}: 'iterations' has no entry for '{name}' (expected an integer)")
    roi_shape = config.fast_roi_shape if fast else config.roi_shape
    chromium = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    return Plan(
        Path(out).resolve(), config, chosen, trained, iterations, config.roi_offset, roi_shape, DATA_DIR, fast, chromium
    )


def write_training_folders(plan: Plan) -> None:
    """The demo's network folders: the repository's synthetic configs, with the demo's schedule on top.

    The dataset-level ``config.json`` is copied as is; each network's gets ``save_every`` (a checkpoint at the end
    and in between, so a crash loses little) and, for the autocontext nets, the lsd iteration the demo trains.
    A folder's config is rewritten only when it changes (checkpoints carry the config they were trained with).
    """
    source = REPO_ROOT / "02_train" / DATASET
    _write_if_changed(plan.train_root / "config.json", json.loads((source / "config.json").read_text()))
    for name in plan.trained:
        config = json.loads((source / name / "config.json").read_text())
        iterations = plan.iterations[name]
        delta: dict[str, Any] = {"train": {"save_every": max(1, min(500, iterations // 2))}}
        if "autocontext" in config:
            lsd = Path(config["autocontext"].get("lsd_setup", "../lsd")).name
            delta["autocontext"] = {"lsd_iteration": plan.iterations[lsd]}
        _write_if_changed(plan.folder(name) / "config.json", merge_config(config, delta))


def _write_if_changed(path: Path, data: dict) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if not (path.exists() and path.read_text() == text):
        write_text(path, text)


def write_run_configs(plan: Plan) -> None:
    """One ``03_predict`` run config per scored network, and one for the no-learning reference (no ``setup``)."""
    test = plan.test_volume
    skeletons = test.with_name(test.name.removesuffix(".zarr") + ".skeletons.npz")
    common = {
        "raw_file": _shown(test),
        "num_workers": plan.config.num_workers,
        "block_size": list(plan.config.block_size),
        "context": list(plan.config.context),
        "fragments_in_xy": plan.config.fragments_in_xy,
        "merge_function": plan.config.merge_function,
        "thresholds": list(plan.config.thresholds),
        "extract_thresholds": [0.5],
        "gt_file": _shown(test),
        "gt_dataset": "volumes/labels/neuron_ids",
        "gt_skeletons": _shown(skeletons),
    }
    for name in plan.networks:
        _write_if_changed(plan.run_config(name), {
            "setup": _shown(plan.folder(name)),
            "iteration": plan.iterations[name],
            "out_file": _shown(plan.out_file(name)),
            "roi_offset": list(plan.roi_offset),
            "roi_shape": list(plan.roi_shape),
            **common,
        })  # fmt: skip
    _write_if_changed(plan.run_config(NO_LEARNING), {"out_file": _shown(plan.out_file(NO_LEARNING)), **common})


def _shown(path: Path) -> str:
    """A path as written into configs and commands: relative to the repository when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------------------------
# the no-learning reference


def intensity_affinities(raw: np.ndarray, voxel_size: Sequence[int], config: NoLearningConfig) -> np.ndarray:
    """Nearest-neighbour affinities from raw intensity alone: bright cytoplasm is connected, dark membrane is not.

    The raw is smoothed (``config.sigma`` nm), mapped linearly from its ``low_percentile`` (0) to its
    ``high_percentile`` (1) and clipped; the affinity of a voxel to its predecessor along z, y and x is the smaller of
    the two values (the channels of ``neighborhood`` (-1,0,0), (0,-1,0), (0,0,-1); the first plane of each is 0).

    Args:
        raw: (z, y, x) uint8 or float raw.
        voxel_size: nm (z, y, x).
        config: smoothing and contrast.

    Returns:
        (3, z, y, x) float32 affinities in [0, 1].
    """
    from scipy import ndimage

    sigma = [s / v for s, v in zip(config.sigma, voxel_size)]
    smooth = ndimage.gaussian_filter(raw.astype(np.float32), sigma) if any(sigma) else raw.astype(np.float32)
    low, high = np.percentile(smooth, [config.low_percentile, config.high_percentile])
    value = np.clip((smooth - low) / max(high - low, 1e-6), 0.0, 1.0)
    affs = np.zeros((3, *raw.shape), dtype=np.float32)
    affs[0, 1:] = np.minimum(value[1:], value[:-1])
    affs[1, :, 1:] = np.minimum(value[:, 1:], value[:, :-1])
    affs[2, :, :, 1:] = np.minimum(value[:, :, 1:], value[:, :, :-1])
    return affs


def write_no_learning_affinities(plan: Plan) -> None:
    """``<out>/no_learning.zarr/volumes/affs`` (uint8 ×255) over the evaluated region, as a network would write it."""
    import zarr

    raw, vs, offset = read_array(plan.test_volume, RAW)
    affs = intensity_affinities(raw, vs, plan.config.no_learning)
    affs = (affs[(slice(None), *plan.roi_crop(offset))] * 255).astype(np.uint8)
    with atomic_path(plan.out_file(NO_LEARNING)) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=2)
        array = group.require_group("volumes").create_array("affs", data=affs, chunks=(3, 32, 128, 128), compressors=COMPRESSOR)
        array.attrs.update({
            "resolution": [int(v) for v in vs],
            "offset": [int(v) for v in plan.roi_offset],
            "lsd_nm_no_learning": plan.config.no_learning.model_dump(mode="json"),
        })  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# stages


@dataclass
class Stage:
    """One step of the demo: a command of the tutorial (run as a process) or a function of this module."""

    name: str
    estimate: float
    """Expected seconds on a 2-core CPU (for the ETA)."""
    command: list[str] | None = None
    function: Callable[[], None] | None = None
    outputs: list[Path] = field(default_factory=list)
    """Files that must exist for the stage to count as done."""
    always: bool = False
    """Run even when done before (cheap, and its result depends on the others)."""
    inputs: list[Path] = field(default_factory=list)
    """Files whose content defines the stage's result (a change re-runs it)."""
    overwrite: str | None = None
    """The command's flag that replaces outputs made with other settings (added when the inputs changed)."""

    @property
    def shown(self) -> str:
        """The command that re-runs this stage."""
        if self.command is None:
            return "make demo"
        words = ["python", *(_shown(Path(w)) if w.startswith("/") else w for w in self.command[1:])]
        return shlex.join(words)

    @property
    def key(self) -> str:
        """A digest of the command and of its inputs' contents (computed when the stage is about to run)."""
        digest = hashlib.sha256(json.dumps([self.name, self.command]).encode())
        for path in self.inputs:
            digest.update(path.read_bytes() if path.exists() else b"missing")
        return digest.hexdigest()[:16]


def _python(*args: str | Path) -> list[str]:
    return [sys.executable, *(str(a) for a in args)]


def plan_stages(plan: Plan) -> list[Stage]:
    """Every stage of the demo, in order."""

    stages = [
        Stage("synthetic data", 45, _python(REPO_ROOT / "01_data/make_synthetic.py", "--dataset", DATASET), always=True),
        Stage("masks", 10, _python(REPO_ROOT / "01_data/create_masks.py", "--dataset", DATASET), always=True),
        Stage("training folders", 1, function=lambda: write_training_folders(plan), always=True),
    ]
    for name in plan.trained:
        n = plan.iterations[name]
        todo = max(0, n - latest_checkpoint(plan.folder(name))[0])
        stages.append(Stage(
            f"train {name}", 25 + todo * 0.18,
            _python("-m", "lsd_nm", "train", plan.folder(name), n, "--seed", plan.config.seed),
            outputs=[checkpoint_path(plan.folder(name), n)],
            inputs=[plan.train_root / "config.json", plan.folder(name) / "config.json"],
        ))  # fmt: skip
    stages.append(Stage("run configs", 1, function=lambda: write_run_configs(plan), always=True))
    for name in plan.networks:
        config = plan.run_config(name)
        stages.append(Stage(
            f"predict {name}", 20 + plan.roi_voxels / 40_000 * (2 if name in AUTOCONTEXT_NETWORKS else 1),
            _python(REPO_ROOT / "03_predict/01_predict_blockwise.py", config), outputs=[plan.out_file(name) / "volumes/affs"],
            inputs=[config, checkpoint_path(plan.folder(name), plan.iterations[name]) / "weights.npz"], overwrite="--overwrite",
        ))  # fmt: skip
        stages.append(Stage(
            f"segment {name}", 60, _python(REPO_ROOT / "03_predict/segment.py", config, "--start", 2),
            outputs=[scores_paths(plan.out_file(name))[1]],
            inputs=[config, plan.out_file(name) / "volumes/affs/.zattrs"], overwrite="--overwrite",
        ))  # fmt: skip
    stages.append(Stage(
        "no-learning affinities", 10, function=lambda: write_no_learning_affinities(plan),
        outputs=[plan.out_file(NO_LEARNING) / "volumes/affs"], inputs=[DEMO_CONFIG],
    ))  # fmt: skip
    stages.append(Stage(
        "segment no_learning", 60, _python(REPO_ROOT / "03_predict/segment.py", plan.run_config(NO_LEARNING), "--start", 2),
        outputs=[scores_paths(plan.out_file(NO_LEARNING))[1]],
        inputs=[plan.run_config(NO_LEARNING), plan.out_file(NO_LEARNING) / "volumes/affs/.zattrs"], overwrite="--overwrite",
    ))  # fmt: skip
    stages.append(Stage("pictures", 20, function=lambda: draw_pictures(plan), always=True))
    if plan.chromium is not None:
        best = plan.networks[-1]
        stages.append(Stage(
            "neuroglancer screenshot", 25,
            _python(REPO_ROOT / "01_data/view_data.py", plan.out / "view" / f"{best}.zarr", "--screenshot",
                    plan.out / "neuroglancer.png", "--chromium", plan.chromium),
            outputs=[plan.out / "neuroglancer.png"],
        ))  # fmt: skip
    return stages


class StageFailed(Exception):
    """A stage failed; the message names it and the command that re-runs it."""


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


def run_stages(plan: Plan, stages: list[Stage]) -> dict[str, dict[str, Any]]:
    """Run the stages in order, skipping those done before; returns the state (seconds per stage)."""
    state_path = plan.out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    start = time.time()
    spent_estimate = spent = 0.0
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    for i, stage in enumerate(stages, 1):
        record = state.get(stage.name)
        key = stage.key  # hashes the inputs' contents: once per stage
        changed = record is not None and record.get("key") != key
        done = record is not None and not changed and all(p.exists() for p in stage.outputs)
        if done and not stage.always:
            print(f"demo [{i}/{len(stages)}] {stage.name}: done before ({_clock(record['seconds'])}), skipped", flush=True)
            continue
        remaining = sum(s.estimate for s in stages[i - 1 :])
        speed = min(3.0, max(0.5, spent / spent_estimate)) if spent_estimate > 60 else 1.0
        print(
            f"demo [{i}/{len(stages)}] {stage.name} — elapsed {_clock(time.time() - start)}, "
            f"ETA {_clock(remaining * speed)}  ({stage.shown})",
            flush=True,
        )
        began = time.time()
        if stage.command is not None:
            command = stage.command
            if stage.overwrite and changed:
                command = [*command, stage.overwrite]  # made before with other settings: replace, do not resume
            code = subprocess.call(command, cwd=REPO_ROOT, env=environment)
            if code != 0:
                raise StageFailed(f"stage '{stage.name}' failed (exit {code}); re-run it with: {stage.shown}  (or `make demo`, which resumes)")
        else:
            try:
                stage.function()
            except Exception as e:
                raise StageFailed(f"stage '{stage.name}' failed ({type(e).__name__}: {e}); `make demo` re-runs it") from e
        missing = [p for p in stage.outputs if not p.exists()]
        if missing:
            raise StageFailed(f"stage '{stage.name}' did not write {missing[0]}; re-run it with: {stage.shown}")
        seconds = time.time() - began
        spent += seconds
        spent_estimate += stage.estimate
        state[stage.name] = {"key": key, "seconds": round(seconds, 2)}
        write_text(state_path, json.dumps(state, indent=2) + "\n")
        print(f"demo [{i}/{len(stages)}] {stage.name}: done in {_clock(seconds)}", flush=True)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# results


def _best(plan: Plan, name: str) -> dict[str, Any]:

    scores = json.loads(scores_paths(plan.out_file(name))[1].read_text())
    best = scores["best"]
    return {
        "best_threshold": best["threshold"],
        "voi_split": best["voi_split"],
        "voi_merge": best["voi_merge"],
        "voi_sum": best["voi_sum"],
        "arand": best["arand"],
        "erl_nm": best["erl"],
        "normalized_erl": best["normalized_erl"],
        "seams": _seams(scores.get("seams")),
    }


def _seams(seams: dict | None) -> dict[str, Any]:
    """The seam check of step 6 (scores.json's ``seams``) per axis: ``{"face_rate", "median_rate", "ratio",
    "seam"}``, or ``"one block"`` / ``"no labelled pairs"``; empty without a seam check."""
    if seams is None:
        return {}
    out: dict[str, Any] = {a: "one block" for a in seams["one_block"]}
    out.update({a: "no labelled pairs" for a in seams["unmeasured"]})
    for row in seams["axes"]:
        out[row["axis"]] = {k: row[k] for k in ("face_rate", "median_rate", "ratio", "seam")}
    return {a: out[a] for a in "zyx" if a in out}


def seams_table(results: dict[str, Any]) -> str:
    """The seam check per network as a markdown table: per axis the block faces' false-split rate vs the median of
    the other planes, their ratio, and **seam** where it is above the limit of step 6."""

    def cell(value: Any) -> str:
        if not isinstance(value, dict):
            return value
        ratio = "none elsewhere" if value["ratio"] is None else f"{value['ratio']:.1f}×"
        verdict = " **seam**" if value["seam"] else ""
        return f"{100 * value['face_rate']:.1f} % vs {100 * value['median_rate']:.1f} % ({ratio}){verdict}"

    lines = ["| network | z | y | x |", "|---|---|---|---|"]
    rows = [*results["networks"].items(), ("no learning (raw intensity)", results[NO_LEARNING])]
    for name, row in rows:
        seams = row.get("seams", {})
        lines.append(f"| {name} | " + " | ".join(cell(seams.get(a, "—")) for a in "zyx") + " |")
    return "\n".join(lines)


def collect_results(plan: Plan, state: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``report.json``: the numbers of every network and of the no-learning reference."""

    networks = {}
    for name in plan.networks:
        losses = read_losses(plan.folder(name))
        predict_seconds = state[f"predict {name}"]["seconds"]
        networks[name] = {
            "iterations": plan.iterations[name],
            "train_seconds": round(sum(r[2] for r in losses if r[0] <= plan.iterations[name]), 1),
            **_best(plan, name),
            "predict_voxels_per_second": round(plan.roi_voxels / predict_seconds, 1),
        }
    return {
        "networks": networks,
        NO_LEARNING: _best(plan, NO_LEARNING),
        "dataset": DATASET,
        "test_volume": _shown(plan.test_volume),
        "seconds_total": round(sum(r["seconds"] for r in state.values()), 1),
    }


def quality_verdicts(results: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The issue's quality targets: (target, met, measured)."""
    reference = results[NO_LEARNING]["voi_sum"]
    verdicts = []
    for name, row in results["networks"].items():
        verdicts.append((
            f"{name}: VOI sum ≤ half the no-learning reference's ({reference / 2:.3f})",
            row["voi_sum"] <= reference / 2,
            f"{row['voi_sum']:.3f}",
        ))  # fmt: skip
    nets = results["networks"]
    if "mtlsd" in nets and "baseline" in nets:
        verdicts.append((
            f"mtlsd: VOI sum ≤ baseline's ({nets['baseline']['voi_sum']:.3f})",
            nets["mtlsd"]["voi_sum"] <= nets["baseline"]["voi_sum"],
            f"{nets['mtlsd']['voi_sum']:.3f}",
        ))  # fmt: skip
    return verdicts


def results_table(results: dict[str, Any]) -> str:
    """The results as a markdown table (one row per network and the no-learning reference)."""
    lines = [
        "| network | iterations | train (s) | best threshold | VOI split | VOI merge | VOI sum | ARAND | ERL (µm) | norm. ERL | predict (voxels/s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [(name, row) for name, row in results["networks"].items()] + [("no learning (raw intensity)", results[NO_LEARNING])]
    for name, row in rows:
        lines.append(
            f"| {name} | {row.get('iterations', '—')} | {row['train_seconds'] if 'train_seconds' in row else '—'} "
            f"| {row['best_threshold']:.2f} | {row['voi_split']:.3f} | {row['voi_merge']:.3f} | **{row['voi_sum']:.3f}** "
            f"| {row['arand']:.3f} | {row['erl_nm'] / 1000:.2f} | {row['normalized_erl']:.3f} "
            f"| {format(row['predict_voxels_per_second'], ',.0f') if 'predict_voxels_per_second' in row else '—'} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# pictures


def _label_colours(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """RGB per voxel: a random colour per id (stable for an id), black for 0."""
    ids, inverse = np.unique(labels, return_inverse=True)
    rng = np.random.default_rng(seed)
    colours = rng.uniform(0.15, 1.0, size=(len(ids), 3))
    colours[ids == 0] = 0.0
    return colours[inverse.reshape(labels.shape)]


def error_masks(truth: np.ndarray, segmentation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels in split and in merge errors (of labelled voxels; 0 in ``truth`` is ignored).

    A voxel is in a *merge* error when its segment mostly covers another neuron than its own (its neuron was merged
    into that segment), and in a *split* error when its neuron mostly lies in another segment than its own (its
    neuron was split off there). Majorities are counted over the whole volume given.

    Returns:
        ``(split, merge)`` boolean arrays of ``truth``'s shape.
    """
    labelled = truth != 0
    t_ids, t = np.unique(truth[labelled], return_inverse=True)
    s_ids, s = np.unique(segmentation[labelled], return_inverse=True)
    pairs, counts = np.unique(t.astype(np.int64) * len(s_ids) + s, return_counts=True)
    pair_t, pair_s = pairs // len(s_ids), pairs % len(s_ids)
    main_segment = np.zeros(len(t_ids), dtype=np.int64)
    main_truth = np.zeros(len(s_ids), dtype=np.int64)
    # for each truth id (segment id) the segment (truth id) sharing most voxels; ties: the smaller index
    order = np.lexsort((-counts, pair_t))
    first = np.unique(pair_t[order], return_index=True)[1]
    main_segment[pair_t[order][first]] = pair_s[order][first]
    order = np.lexsort((-counts, pair_s))
    first = np.unique(pair_s[order], return_index=True)[1]
    main_truth[pair_s[order][first]] = pair_t[order][first]
    split = np.zeros(truth.shape, dtype=bool)
    merge = np.zeros(truth.shape, dtype=bool)
    split[labelled] = main_segment[t] != s
    merge[labelled] = main_truth[s] != t
    return split, merge


def best_segmentation(plan: Plan, name: str) -> tuple[np.ndarray, float]:
    """The segmentation of a run at its best threshold, relabelled in memory from the fragments and the LUT."""

    threshold = _best(plan, name)["best_threshold"]
    config = load_run_config(plan.run_config(name))
    fragments = open_dataset(plan.out_file(name), FRAGMENTS, "fragments").open("r")[:]
    return apply_lut(fragments, load_lut(config, threshold)), threshold


def _truth_and_raw(plan: Plan) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:

    raw, vs, offset = read_array(plan.test_volume, RAW)
    truth, _, _ = read_array(plan.test_volume, NEURON_IDS)
    crop = plan.roi_crop(offset)
    return raw[crop], truth[crop], vs


def draw_pictures(plan: Plan) -> None:
    """Slice panels per run, the loss curves, the VOI curves of all runs, and the viewer container of the last net."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    raw, truth, vs = _truth_and_raw(plan)
    z = raw.shape[0] // 2
    extent = (0, raw.shape[2] * vs[2] / 1000, raw.shape[1] * vs[1] / 1000, 0)
    names = [*plan.networks, NO_LEARNING]
    for name in names:
        segmentation, threshold = best_segmentation(plan, name)
        split, merge = error_masks(truth, segmentation)
        overlay = np.repeat((raw[z] / 255.0)[..., None], 3, axis=2) * 0.6
        overlay[split[z]] = (0.2, 0.5, 1.0)
        overlay[merge[z]] = (1.0, 0.25, 0.2)
        fig = Figure(figsize=(16, 4.6), dpi=80)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 4)
        axes[0].imshow(raw[z], cmap="gray", vmin=0, vmax=255, extent=extent)
        axes[0].set_title(f"raw (section {z} of the evaluated region)")
        axes[1].imshow(_label_colours(truth[z]), extent=extent, interpolation="nearest")
        axes[1].set_title("ground truth")
        axes[2].imshow(_label_colours(segmentation[z], seed=1), extent=extent, interpolation="nearest")
        axes[2].set_title(f"{name}: segmentation at t = {threshold:.2f}")
        axes[3].imshow(overlay, extent=extent, interpolation="nearest")
        axes[3].set_title(f"errors: split {split.mean():.1%} (blue), merge {merge.mean():.1%} (red)")
        for ax in axes:
            ax.set_xlabel("x (µm)")
        axes[0].set_ylabel("y (µm)")
        fig.tight_layout()
        fig.savefig(plan.out / f"slices_{name}.png")
        if name == plan.networks[-1]:
            view = plan.out / "view" / f"{name}.zarr"
            view.parent.mkdir(parents=True, exist_ok=True)
            write_container(view, {RAW: raw, "volumes/segmentation": segmentation.astype(np.uint64)}, vs, plan.roi_offset)

    fig = Figure(figsize=(7, 4.5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, name in enumerate(plan.trained):
        rows = read_losses(plan.folder(name))
        if not rows:
            continue
        it = np.array([r[0] for r in rows])
        loss = np.array([r[1] for r in rows])
        window = max(1, min(50, len(loss) // 10))
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(it, loss, color=f"C{i}", alpha=0.2, linewidth=0.6)
        ax.plot(it[window - 1 :], smooth, color=f"C{i}", label=f"{name} (running mean of {window})")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.set_title("training loss (synthetic)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plan.out / "loss_curves.png")

    fig = Figure(figsize=(7, 5.5), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        rows = json.loads(scores_paths(plan.out_file(name))[1].read_text())["rows"]
        rows = sorted((r for r in rows if r.get("voi_split") is not None), key=lambda r: r["threshold"])
        colour = "0.4" if name == NO_LEARNING else f"C{i}"
        label = "no learning (raw intensity)" if name == NO_LEARNING else name
        ax.plot([r["voi_split"] for r in rows], [r["voi_merge"] for r in rows], "-o", markersize=2.5, color=colour, label=label)
        best = min(rows, key=lambda r: r["voi_split"] + r["voi_merge"])
        ax.plot([best["voi_split"]], [best["voi_merge"]], "o", markersize=10, markerfacecolor="none", color=colour)
    ax.set_xlabel("VOI split (bits)")
    ax.set_ylabel("VOI merge (bits)")
    ax.set_title("VOI over merge thresholds (circles: lowest VOI sum)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(plan.out / "voi_curves.png")


# ---------------------------------------------------------------------------------------------------------------------
# the report


def machine() -> str:
    """A one-line description of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory_text = f", {memory:.0f} GiB"
    except (ValueError, OSError):
        memory_text = ""
    return f"{cpu}, {os.cpu_count()} cores{memory_text}, Python {platform.python_version()}"


def write_report(plan: Plan, stages: list[Stage], state: dict[str, dict[str, Any]], results: dict[str, Any]) -> Path:
    """``report.json`` (the numbers) and ``report.md`` (what ran, the numbers, the pictures, the commands)."""
    _write_if_changed(plan.out / "report.json", results)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    verdicts = quality_verdicts(results)
    shape = tuple(s // v for s, v in zip(plan.roi_shape, plan.voxel_size))
    lines = [
        f"# lsd-nm demo{' (DEMO_FAST: the plumbing, not the results)' if plan.fast else ''}",
        "",
        f"{date.today().isoformat()} · {machine()} · stages took {_clock(results['seconds_total'])} (min:s; `make setup` not included)"
        + (f" · largest process {peak:.1f} GiB" if peak > 0 else ""),
        "",
        f"Dataset `{DATASET}` (embedded, 20 × 9 × 9 nm); test volume `{results['test_volume']}`, evaluated region "
        f"offset {plan.roi_offset} nm, shape {shape} voxels = {plan.roi_voxels:,} voxels, the same for every network. "
        f"Segmentation: watershed fragments, waterz agglomeration ({plan.config.merge_function}), merge thresholds "
        f"{plan.config.thresholds[0]}–{plan.config.thresholds[1]} in steps of {plan.config.thresholds[2]}; the best "
        "threshold has the lowest VOI sum. VOI in bits against the dense labels (0 ignored); ERL on the skeletons.",
        "",
        "## Results",
        "",
        results_table(results),
        "",
        "Training time is the time spent in training iterations (`loss.tsv`); prediction throughput is the evaluated "
        "voxels over the wall time of `01_predict_blockwise` with its "
        f"{plan.config.num_workers} workers (including their start-up{'; acrlsd/aclsd include predicting their LSDs' if any(n in AUTOCONTEXT_NETWORKS for n in plan.networks) else ''}).",
        "",
        "## Seams",
        "",
        "False splits on the planes between the post-processing blocks against the median of the other planes, at "
        f"the best threshold (blocks of {plan.config.block_size} nm; a seam: more than {SEAM_RATIO}× the median; "
        "see `06_evaluate` in the README):",
        "",
        seams_table(results),
        "",
        "## Quality targets",
        "",
        *[f"- {'met' if ok else '**missed**'}: {target} — measured {measured}" for target, ok, measured in verdicts],
        "",
    ]
    if not all(ok for _, ok, _ in verdicts):
        lines += [
            "A missed target is reported, not tuned away: the networks train for "
            + ", ".join(f"{n} {plan.iterations[n]}" for n in plan.trained)
            + " iterations on three small synthetic volumes to fit the CPU budget; see the curves below.",
            "",
        ]
    lines += [
        "## Pictures",
        "",
        "![VOI curves](voi_curves.png)",
        "",
        "![loss curves](loss_curves.png)",
        "",
        *[f"![slices {name}](slices_{name}.png)\n" for name in [*plan.networks, NO_LEARNING]],
        f"Neuroglancer: the {plan.networks[-1]} segmentation over raw (`view/{plan.networks[-1]}.zarr`):",
        "",
        "![neuroglancer](neuroglancer.png)" if plan.chromium is not None else f"*{NO_SCREENSHOT}*",
        "",
        "## What ran",
        "",
        "Each stage and the command that re-runs it on its own (`make demo` re-runs what is missing):",
        "",
        "| stage | seconds | command |",
        "|---|---:|---|",
        *[f"| {s.name} | {state.get(s.name, {}).get('seconds', 0):.0f} | `{s.shown}` |" for s in stages],
        "",
    ]
    path = plan.out / "report.md"
    write_text(path, "\n".join(lines))
    return path


def demo(out: Path, networks: Sequence[str] | None = None, fast: bool = False) -> dict[str, Any]:
    """Run (or resume) the demo into ``out``; returns the results of ``report.json``."""
    start = time.time()
    plan = make_plan(out, networks, fast)
    plan.out.mkdir(parents=True, exist_ok=True)
    print(
        f"demo: networks {', '.join(plan.networks)} (training {', '.join(f'{n} {plan.iterations[n]}' for n in plan.trained)} "
        f"iterations) into {_shown(plan.out)}{' — DEMO_FAST' if fast else ''}",
        flush=True,
    )
    if plan.chromium is None:
        print(f"demo: {NO_SCREENSHOT}", flush=True)
    stages = plan_stages(plan)
    state = run_stages(plan, stages)
    results = collect_results(plan, state)
    path = write_report(plan, stages, state, results)
    print()
    print(results_table(results))
    print()
    print(seams_table(results))
    for target, ok, measured in quality_verdicts(results):
        print(f"{'met' if ok else 'MISSED'}: {target} — measured {measured}")
    print(f"\ndemo: done in {_clock(time.time() - start)} (this run); report: {path}")
    return results


def run_demo(out: Path | str | None = None, networks: Sequence[str] | None = None, fast: bool = False) -> dict[str, Any]:
    """``make demo``: :func:`demo` into ``out`` (default ``demo/``, ``demo/fast/`` when ``fast``); a failed stage is a
    :class:`~lsd_nm.config.ConfigError` (one line: the stage and the command that re-runs it)."""
    out = Path(out) if out else REPO_ROOT / "demo" / ("fast" if fast else "")
    try:
        return demo(out, networks, fast)
    except StageFailed as e:
        raise ConfigError(str(e)) from None
