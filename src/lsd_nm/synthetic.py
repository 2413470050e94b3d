"""The embedded dataset: synthetic EM-like volumes of densely packed neurites.

The real training data (zebrafinch, fib25, hemi) lives in a public S3 bucket. So that every step of the tutorial runs
offline, this module writes volumes that look like neuropil and are laid out like the bucket's zarrs:

* neurites are random walks (persistent direction, branching, varicosities) of varied calibre, crossing at all
  angles; every voxel belongs to the nearest neurite tube (a Voronoi partition around the tubes), so neurites are
  densely packed and touch;
* the raw image renders dark membranes (1–2 voxels thick) on every label boundary, intracellular texture, dark
  mitochondria, vesicle clouds, blur, noise and per-section brightness/contrast jitter; a few membranes are faint;
* a few objects are unlabelled (id 0), as glia and unproofread objects are in the real ground truth;
* ground-truth skeletons are derived from the labels with kimimaro (:mod:`lsd_nm.skeletons` has the format).

Everything is a pure function of the seed: the same seed gives identical bytes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .config import ConfigError, StrictBaseModel
from .data import NEURON_IDS, RAW, read_array, write_container
from .datasets import DATA_DIR, DATASETS_FILE, get_dataset, volume_path
from .skeletons import skeletonize, skeletons_path, write_skeletons


class SyntheticParams(StrictBaseModel):
    """How synthetic neuropil is drawn. Lengths in nm."""

    neurite_spacing: float = 170.0
    """Mean distance between neurite centrelines (sets how many neurites are drawn)."""
    radius_classes: list[tuple[float, float, float]] = [(0.08, 20.0, 30.0), (0.62, 35.0, 70.0), (0.26, 80.0, 150.0), (0.04, 180.0, 300.0)]
    """(probability, min radius, max radius) of thin processes, axons, dendrites and thick dendrites."""
    step: float = 30.0
    """Step of the centreline random walk."""
    persistence: float = 0.1
    """How much the walk direction changes per step (std of the added unit-vector noise)."""
    branch_rate: float = 0.5
    """Branches per µm of centreline."""
    tube_fraction: float = 0.9
    """Part of a neurite's radius that is its own for sure; the rest of space goes to the nearest tube."""
    unlabelled_fraction: float = 0.04
    """Fraction of voxels whose objects are left unlabelled (id 0), like glia in the real ground truth."""
    membrane_width: float = 7.0
    """Half-width of the dark membrane profile."""
    membrane_contrast: float = 105.0
    """How much darker a membrane is than cytoplasm (grey values)."""
    faint_membranes: float = 0.12
    """Fraction of the volume where membranes are faint (a hard case)."""
    mitochondria_per_um: float = 0.9
    """Mitochondria per µm of centreline of neurites thicker than 60 nm."""
    vesicle_clouds_per_um: float = 0.5
    """Vesicle clouds per µm of axon centreline."""
    blur_nm: float = 5.0
    """Standard deviation of the imaging blur."""
    noise: float = 11.0
    """Standard deviation of the additive noise (grey values)."""
    section_jitter: float = 0.07
    """Relative std of per-section contrast (brightness jitter is 100 times that, in grey values)."""


@dataclass
class Neurite:
    """One centreline: points (N, 3) in nm, radius per point, and the neuron it belongs to."""

    points: np.ndarray
    radii: np.ndarray
    neuron: int
    is_axon: bool


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_direction(rng: np.random.Generator) -> np.ndarray:
    return _unit(rng.normal(size=3))


def _walk(rng, start, direction, radius, extent, params, max_length) -> np.ndarray:
    """A persistent random walk from ``start`` until it leaves the volume (plus a margin) or reaches max_length."""
    points = [start]
    p, d = start.copy(), direction.copy()
    margin = 2 * radius + params.step
    for _ in range(int(max_length / params.step)):
        d = _unit(d + params.persistence * rng.normal(size=3))
        p = p + params.step * d
        points.append(p)
        if np.any(p < -margin) or np.any(p > extent + margin):
            break
    return np.array(points)


def draw_neurites(rng: np.random.Generator, extent: np.ndarray, params: SyntheticParams) -> list[Neurite]:
    """Centrelines of neurites (each with its branches) until their length fills the volume densely."""
    probs = np.array([c[0] for c in params.radius_classes])
    target_length = float(np.prod(extent)) / params.neurite_spacing**2
    diag = float(np.linalg.norm(extent))
    neurites: list[Neurite] = []
    total, neuron = 0.0, 0
    while total < target_length:
        neuron += 1
        _, rmin, rmax = params.radius_classes[rng.choice(len(probs), p=probs / probs.sum())]
        radius = rng.uniform(rmin, rmax)
        is_axon = radius < 90.0
        start, direction = rng.uniform(0, 1, size=3) * extent, _random_direction(rng)
        forward = _walk(rng, start, direction, radius, extent, params, 2 * diag)
        backward = _walk(rng, start, -direction, radius, extent, params, 2 * diag)
        trunk = np.concatenate([backward[::-1], forward[1:]])
        branches = [trunk]
        n_branches = rng.poisson(params.branch_rate * len(trunk) * params.step / 1000.0)
        for _ in range(n_branches):
            at = trunk[rng.integers(len(trunk))]
            branches.append(_walk(rng, at, _random_direction(rng), radius, extent, params, rng.uniform(0.3, 1.0) * diag))
        for i, points in enumerate(branches):
            r = radius * (1.0 if i == 0 else rng.uniform(0.45, 0.8))
            # varicosities (boutons) on axons, slow calibre changes on dendrites
            phase = rng.uniform(0, 2 * math.pi)
            period = rng.uniform(300, 900) if is_axon else rng.uniform(1500, 3000)
            s = np.arange(len(points)) * params.step
            radii = r * (1.0 + (0.35 if is_axon else 0.15) * np.sin(2 * math.pi * s / period + phase) ** 2)
            neurites.append(Neurite(points, radii, neuron, is_axon))
            inside = np.all((points >= 0) & (points <= extent), axis=1)
            total += inside.sum() * params.step
    return neurites


def _rasterize_centrelines(neurites, shape, voxel_size):
    """Label and radius of the centreline voxels (densely sampled along each segment)."""
    ids = np.zeros(shape, np.int32)
    radius = np.zeros(shape, np.float32)
    half_voxel = float(min(voxel_size)) / 2
    for k, n in enumerate(neurites):
        seg = np.diff(n.points, axis=0)
        sub = max(1, int(math.ceil(float(np.linalg.norm(seg, axis=1).max()) / half_voxel)))
        t = np.linspace(0, 1, sub, endpoint=False)
        pts = (n.points[:-1, None, :] + t[None, :, None] * seg[:, None, :]).reshape(-1, 3)
        rad = np.repeat(n.radii[:-1], sub)
        vox = np.floor(pts / voxel_size).astype(np.int64)
        keep = np.all((vox >= 0) & (vox < shape), axis=1)
        vox, rad = vox[keep], rad[keep]
        ids[vox[:, 0], vox[:, 1], vox[:, 2]] = k + 1
        radius[vox[:, 0], vox[:, 1], vox[:, 2]] = rad
    return ids, radius


def _smooth_noise(rng, shape, sigma_vox) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit std."""
    field = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma_vox, mode="wrap")
    return field / (field.std() + 1e-8)


def _boundaries(labels: np.ndarray) -> np.ndarray:
    """Voxels on the 'lower' side of a label change along any axis (a one-voxel boundary)."""
    b = np.zeros(labels.shape, bool)
    for axis in range(3):
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        b[tuple(lo)] |= labels[tuple(lo)] != labels[tuple(hi)]
    return b


def _stamp_ellipsoids(field, centres, axes, radii, voxel_size, value_fn, within=None):
    """Add ``value_fn(normalised distance)`` inside oriented ellipsoids (nm) to ``field``."""
    for c, a, r in zip(centres, axes, radii):
        half = np.ceil(np.max(r) / voxel_size).astype(int) + 1
        cv = np.floor(c / voxel_size).astype(int)
        lo, hi = np.maximum(cv - half, 0), np.minimum(cv + half + 1, field.shape)
        if np.any(hi <= lo):
            continue
        grid = np.stack(np.meshgrid(*[np.arange(l, h) for l, h in zip(lo, hi)], indexing="ij"), -1)
        rel = (grid + 0.5) * voxel_size - c
        # a: (3, 3) orthonormal axes (rows), r: semi-axes
        dist = np.sqrt(np.sum(((rel @ a.T) / r) ** 2, axis=-1))
        inside = dist < 1.0
        if within is not None:
            inside &= within[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == within[tuple(np.clip(cv, 0, np.array(field.shape) - 1))]
        view = field[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        view[inside] += value_fn(dist[inside])


def _frame(direction: np.ndarray) -> np.ndarray:
    """An orthonormal frame whose first row is ``direction``."""
    other = np.array([1.0, 0, 0]) if abs(direction[0]) < 0.9 else np.array([0, 1.0, 0])
    u = _unit(np.cross(direction, other))
    return np.stack([direction, u, np.cross(direction, u)])


def generate_volume(
    shape: tuple[int, int, int],
    voxel_size: tuple[int, int, int],
    seed: int,
    params: SyntheticParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic volume.

    Args:
        shape: the volume's shape in voxels (z, y, x).
        voxel_size: the voxel size in nm (z, y, x); anisotropic (20, 9, 9) or isotropic (8, 8, 8).
        seed: the random seed; the same seed gives identical arrays.
        params: drawing parameters (defaults: :class:`SyntheticParams`).

    Returns:
        ``(raw, labels)``: uint8 intensities and uint64 neuron ids (0 = unlabelled).
    """
    params = params or SyntheticParams()
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    vs = np.asarray(voxel_size, np.float64)
    extent = np.asarray(shape) * vs

    # ---- labels: tubes around the centrelines, then every voxel to its nearest tube -------------------------------
    neurites = draw_neurites(rng, extent, params)
    cl_ids, cl_radius = _rasterize_centrelines(neurites, shape, vs)
    dist, idx = ndimage.distance_transform_edt(cl_ids == 0, sampling=vs, return_indices=True)
    nearest = tuple(idx)
    tube = dist < params.tube_fraction * cl_radius[nearest]
    tube_ids = np.where(tube, cl_ids[nearest], 0)
    del dist, idx, nearest
    idx = ndimage.distance_transform_edt(tube_ids == 0, sampling=vs, return_distances=False, return_indices=True)
    part = tube_ids[tuple(idx)]  # index of the neurite (+1) that owns each voxel
    del idx, tube_ids
    neuron_of_part = np.array([0] + [n.neuron for n in neurites], np.int64)
    neurons = neuron_of_part[part]

    # every connected piece of a neuron is one object; give objects random, non-consecutive ids like real data
    from skimage.measure import label as connected_components

    objects = connected_components(neurons, background=-1, connectivity=1)
    n_objects = int(objects.max())
    object_ids = np.zeros(n_objects + 1, np.uint64)
    object_ids[1:] = rng.choice(2**31, size=n_objects, replace=False).astype(np.uint64) + 1

    # unlabelled objects (glia-like): chosen at random until their volume reaches the target fraction
    sizes = np.bincount(objects.ravel(), minlength=n_objects + 1)
    unlabelled = np.zeros(n_objects + 1, bool)
    covered = 0
    for o in rng.permutation(np.arange(1, n_objects + 1)):
        if covered >= params.unlabelled_fraction * objects.size:
            break
        if covered + sizes[o] <= 1.5 * params.unlabelled_fraction * objects.size:
            unlabelled[o] = True
            covered += sizes[o]
    labels = np.where(unlabelled[objects], np.uint64(0), object_ids[objects])

    # ---- raw: cytoplasm, texture, organelles, membranes, blur, section jitter, noise ------------------------------
    smooth_vox = 25.0 / vs
    img = np.empty(shape, np.float32)
    brightness = rng.normal(178, 9, size=n_objects + 1).astype(np.float32)
    brightness[unlabelled] = rng.normal(196, 5, size=int(unlabelled.sum()))
    img[:] = brightness[objects]
    img += 7.0 * _smooth_noise(rng, shape, smooth_vox)
    img += 4.0 * _smooth_noise(rng, shape, 0.6 * smooth_vox)

    organelles = np.zeros(shape, np.float32)
    for n in neurites:
        inside = np.all((n.points >= 0) & (n.points < extent), axis=1)
        length_um = inside.sum() * params.step / 1000.0
        mean_r = float(n.radii.mean())
        pick = np.flatnonzero(inside)
        if len(pick) < 3:
            continue
        if mean_r > 60:
            k = rng.poisson(params.mitochondria_per_um * length_um)
            at = rng.choice(pick[1:-1] if len(pick) > 2 else pick, size=k)
            centres = n.points[at]
            axes = [_frame(_unit(n.points[i + 1] - n.points[i - 1])) for i in at]
            radii = [np.array([rng.uniform(150, 450), 0.55 * n.radii[i], 0.45 * n.radii[i]]) for i in at]
            _stamp_ellipsoids(organelles, centres, axes, radii, vs, lambda d: 70.0 + 0 * d, within=objects)
        if n.is_axon:
            k = rng.poisson(params.vesicle_clouds_per_um * length_um)
            for i in rng.choice(pick, size=k):
                # a cloud of small dark vesicles (~40 nm) inside the bouton
                m = rng.integers(8, 20)
                centres = n.points[i] + rng.normal(scale=0.6 * n.radii[i], size=(m, 3))
                eye = [np.eye(3)] * m
                rr = [np.full(3, rng.uniform(16, 24))] * m
                _stamp_ellipsoids(organelles, centres, eye, rr, vs, lambda d: 45.0 * (1 - d**2), within=objects)
    cristae = 1.0 + 0.25 * _smooth_noise(rng, shape, 0.5 * smooth_vox)
    img -= np.minimum(organelles, 85.0) * cristae  # overlapping vesicles do not get darker than a mitochondrion

    boundary = _boundaries(objects)
    bdist = ndimage.distance_transform_edt(~boundary, sampling=vs)
    faint = _smooth_noise(rng, shape, 300.0 / vs) > _gauss_quantile(1 - params.faint_membranes)
    contrast = params.membrane_contrast * np.where(faint, 0.3, 1.0).astype(np.float32)
    contrast *= 1.0 + 0.15 * _smooth_noise(rng, shape, smooth_vox)
    img -= contrast * np.exp(-((bdist / params.membrane_width) ** 2)).astype(np.float32)
    del bdist, boundary

    img = ndimage.gaussian_filter(img, params.blur_nm / vs)
    section_contrast = 1.0 + params.section_jitter * rng.normal(size=shape[0])
    section_brightness = 100.0 * params.section_jitter * rng.normal(size=shape[0])
    mean = float(img.mean())
    img = (img - mean) * section_contrast[:, None, None].astype(np.float32) + mean + section_brightness[:, None, None].astype(np.float32)
    img += params.noise * rng.normal(size=shape).astype(np.float32)
    raw = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return raw, labels


def _gauss_quantile(q: float) -> float:
    """Quantile of the standard normal distribution."""
    from scipy.special import ndtri

    return float(ndtri(q))


def _draw_and_write(dataset: str, volume: str, test: bool, voxel_size, recipe, data_dir: Path) -> str:
    """Draw one volume, write its container and its skeletons (the skeletons first: the container marks done)."""
    path = volume_path(dataset, volume, test, data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw, labels = generate_volume(recipe.shape, voxel_size, recipe.seed)
    write_skeletons(skeletons_path(path), skeletonize(labels, voxel_size, recipe.offset))
    write_container(path, {RAW: raw, NEURON_IDS: labels}, voxel_size, recipe.offset)
    return volume


def _is_current(path: Path, recipe) -> bool:
    """Whether a generated volume is complete and drawn with the recipe's shape and offset (a changed recipe in
    ``datasets.json`` redraws it)."""
    import zarr

    if not (path.exists() and skeletons_path(path).exists()):
        return False
    try:
        raw = zarr.open_array(path / RAW, mode="r")
    except (FileNotFoundError, ValueError, KeyError):
        return False
    offset = tuple(int(o) for o in raw.attrs.asdict().get("offset", (0, 0, 0)))
    return tuple(raw.shape) == tuple(recipe.shape) and offset == tuple(recipe.offset)


def make_synthetic(
    dataset: str = "synthetic",
    data_dir: Path | None = None,
    workers: int = 2,
    force: bool = False,
    datasets_file: Path | None = None,
) -> list[Path]:
    """Generate every volume of a synthetic dataset of ``datasets.json`` (skipping complete ones unless ``force``).

    Returns:
        The container paths, training volumes first.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    data_dir = Path(data_dir) if data_dir is not None else DATA_DIR
    ds = get_dataset(dataset, datasets_file or DATASETS_FILE)
    if ds.synthetic is None:
        raise ConfigError(f"dataset '{dataset}' is not synthetic: fetch it with `make fetch-data DATASET={dataset}`")
    jobs = [(v, False) for v in ds.volumes] + [(v, True) for v in ds.test_volumes]
    paths = [volume_path(dataset, v, t, data_dir) for v, t in jobs]
    todo = [(v, t) for (v, t), p in zip(jobs, paths) if force or not _is_current(p, ds.synthetic[v])]
    if todo:
        # spawn, not fork: the caller may have threads (zarr, TensorFlow) that a fork would copy mid-flight
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo))), mp_context=context) as pool:
            futures = [pool.submit(_draw_and_write, dataset, v, t, ds.voxel_size, ds.synthetic[v], data_dir) for v, t in todo]
            for f in tqdm(futures, desc=f"synthetic {dataset}", unit="volume"):
                f.result()
    return paths


def make_synthetic_lines(
    dataset: str = "synthetic", data_dir: Path | None = None, workers: int = 2, force: bool = False, png: Path | None = None
) -> Iterator[str]:
    """``make synthetic``: :func:`make_synthetic`, yielding the volumes written, then (with ``png``) the picture of
    the first one's middle section (:func:`plot_volume`)."""
    paths = make_synthetic(dataset, data_dir=data_dir, workers=workers, force=force)
    yield from map(str, paths)
    if png:
        yield str(plot_volume(paths[0], png))


def plot_volume(container: Path, out_png: Path, section: int | None = None) -> Path:
    """Save a PNG of one section of a container: raw, its neuron ids, and the ids over raw.

    Args:
        container: a zarr container with ``volumes/raw`` and ``volumes/labels/neuron_ids``.
        out_png: where to write the picture.
        section: the z index (default: the middle section).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, voxel_size, _ = read_array(container, RAW)
    labels, _, _ = read_array(container, NEURON_IDS)
    z = raw.shape[0] // 2 if section is None else section
    ids, inverse = np.unique(labels[z], return_inverse=True)
    colours = np.random.default_rng(0).uniform(0.15, 1.0, size=(len(ids), 3))
    colours[ids == 0] = 0.0
    rgb = colours[inverse.reshape(labels[z].shape)]
    extent_nm = (0, raw.shape[2] * voxel_size[2], raw.shape[1] * voxel_size[1], 0)
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4), constrained_layout=True)
    axes[0].imshow(raw[z], cmap="gray", vmin=0, vmax=255, extent=extent_nm)
    axes[0].set_title(f"raw (section {z}, voxel size {tuple(voxel_size)} nm)")
    axes[1].imshow(rgb, extent=extent_nm, interpolation="nearest")
    axes[1].set_title(f"neuron ids ({len(ids) - (0 in ids)} objects; black = unlabelled)")
    axes[2].imshow(raw[z], cmap="gray", vmin=0, vmax=255, extent=extent_nm)
    axes[2].imshow(rgb, alpha=0.35, extent=extent_nm, interpolation="nearest")
    axes[2].set_title("ids over raw")
    for ax in axes:
        ax.set_xlabel("x (nm)")
    axes[0].set_ylabel("y (nm)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
