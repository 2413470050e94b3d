"""Local shape descriptors (LSDs, Sheridan et al. 2023): the training targets, computed per label in its bounding box.

For a voxel ``v`` of object ``L`` the descriptor summarises the part of ``L`` that a Gaussian of standard deviation
``sigma`` (nm) around ``v`` sees. With ``g`` that Gaussian and the sums running over the voxels ``u`` of ``L``:

* **size** ``n(v) = Σ g(u - v)``: the Gaussian-weighted volume of ``L`` near ``v`` (in (0, 1]);
* **mean** ``μ(v) = Σ g(u - v)·u / n(v)``: the centre of that volume, in nm;
* **covariance** ``C(v) = Σ g(u - v)·u uᵀ / n(v) - μ μᵀ``: its extent and orientation, in nm².

The ten channels, in lsds' order (z, y, x; 2-D inputs have the six y, x ones: mean 0-1, variance 2-3, Pearson 4,
size 5):

==========  ===================================================  ===========================================
channel     quantity                                             scaled to [0, 1] by
==========  ===================================================  ===========================================
0, 1, 2     mean offset ``μ - v`` along z, y, x                   ``/ sigma · 0.5 + 0.5``
3, 4, 5     variance ``C_zz, C_yy, C_xx``                          ``/ sigma²``
6, 7, 8     Pearson coefficients of zy, zx, yx                     ``· 0.5 + 0.5``
9           size ``n``                                            (as is)
==========  ===================================================  ===========================================

then clipped to [0, 1]; background (label 0) is 0 in every channel. Variances below 10⁻³ nm² are raised to 10⁻³
(lsds' guard against dividing by 0 in the Pearson coefficients). As in lsds, the statistics are taken on a grid
subsampled by ``downsample`` (every ``downsample``-th voxel, from the array's first voxel) with the coordinates of
that grid, and each full-resolution voxel takes the descriptor of its grid cell (``voxel // downsample``).

**Numerically lsds' values.** lsds (``lsd.train.local_shape_descriptor``) filters, per label, the label's mask
times 1, z, y, x, z², y², x², zy, zx, yx (float32 coordinates ``i · voxel_size · downsample`` from the array's
origin) with scipy's separable Gaussian (truncated at 3 sigma, zero outside the array, axes in order, each pass
summed in double and stored as float32), then combines the ten filtered volumes in float32. Here the same sums are
formed in the same order with the same roundings, so the results agree to the last bit on everything tested (the
tests require ≤ 1e-5). Anything less exact would not do: ``E[x²] - E[x]²`` in float32 cancels badly far from
the origin, and for thin objects lsds' Pearson coefficients are ratios of such rounding residues.

**The bounding-box trick.** lsds filters every label over the whole (subsampled) batch: O(labels × volume). But a
label's filtered volumes are exactly zero farther than the kernel radius ``r = int(3·sigma/voxel + 0.5)`` from the
label, and its descriptors are only read at its own voxels. So, per label, with ``O`` the bounding box (on the
subsampled grid) of the label's voxels inside the ROI (aligned to that grid: ``voxel // downsample``) and ``S``
the box of the label's subsampled voxels clipped to ``O`` grown by ``r``:

* the z pass runs on ``O_z × S_y × S_x``, from the labels on ``S_z``;
* the y pass on ``O_z × O_y × S_x``; the x pass on ``O``;

and each pass computes, line by line, only the outputs the next one reads (the x pass: the cells the label's
voxels take; the y pass: those within ``r_x`` of them; the z pass: those within ``r_y`` of these) and whose
window reaches the label. The terms skipped are exactly the ones lsds adds as +0, so every sum is unchanged. A
label then costs about its own extent times the kernel length, and the full-resolution scatter touches each voxel
of the ROI once, instead of once per label.

The smoothing is numba, not scipy, by measurement (``benchmarks/lsd_targets.py``): scipy's ``gaussian_filter``
of the ten moments on each label's box grown by ``r`` takes 6-9× as long as the compiled passes on the same
labels, because it has to filter the whole grown box, where the passes compute only what the next one reads
(over all ten moments at once, vectorised along each line).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit, types
from numba.typed import Dict

from .config import ConfigError

_NUM_CHANNELS = {2: 6, 3: 10}
_CHANNELS_2D = [1, 2, 4, 5, 8, 9]
"""Where lsds' six 2-D channels (mean y, x; variance yy, xx; Pearson yx; size) sit among the ten 3-D ones."""


def local_shape_descriptors(
    segmentation: np.ndarray,
    sigma: float | Sequence[float],
    voxel_size: Sequence[int] | None = None,
    roi=None,
    labels: Sequence[int] | None = None,
    downsample: int = 1,
    components: str | None = None,
) -> np.ndarray:
    """The LSDs of a label volume, equal to lsds' ``get_local_shape_descriptors`` (mode ``gaussian``).

    Args:
        segmentation: integer (z, y, x) or (y, x) labels; 0 is background.
        sigma: the Gaussian's standard deviation in nm, one value or one per axis (a longer tuple is cut to the
            array's dimensions, as lsds does for 2-D).
        voxel_size: the voxel size in nm (integers, one per axis); default 1.
        roi: where to compute the descriptors (a :class:`funlib.geometry.Roi` in voxels, inside the array, offset
            and shape multiples of ``downsample``); the statistics still see the whole array. Default: all of it.
        labels: only these labels get descriptors (other non-zero voxels get lsds' values for an unlisted label:
            0.5 in the mean and Pearson channels, 0 elsewhere). Default: every label in ``roi``.
        downsample: the subsampling factor of the statistics' grid (1: none).
        components: the channels to return, as lsds' component string (e.g. ``"0129"``); default all.

    Returns:
        float32 ``(channels,) + roi shape``.
    """
    seg = np.ascontiguousarray(segmentation)
    dims = seg.ndim
    if dims not in (2, 3):
        raise ConfigError(f"segmentation: expected a 2-D or 3-D label array, got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer):
        raise ConfigError(f"segmentation: expected integer labels, got dtype {seg.dtype}")
    sigma = _per_axis("sigma", sigma, dims, float, truncate=True)
    if any(s <= 0 for s in sigma):
        raise ConfigError(f"sigma: expected positive values in nm, got {sigma}")
    voxel_size = _per_axis("voxel_size", 1 if voxel_size is None else voxel_size, dims, int)
    if any(v <= 0 for v in voxel_size):
        raise ConfigError(f"voxel_size: expected positive integers, got {voxel_size}")
    if int(downsample) != downsample or downsample < 1:
        raise ConfigError(f"downsample: expected a positive integer, got {downsample}")
    df = int(downsample)
    lo, hi = (0,) * dims, tuple(seg.shape)
    if roi is not None:
        lo, hi = tuple(int(o) for o in roi.offset), tuple(int(o) for o in roi.end)
        if len(lo) != dims or any(a < 0 or b > s or a >= b for a, b, s in zip(lo, hi, seg.shape)):
            raise ConfigError(f"roi: expected a non-empty ROI in voxels inside the array of shape {seg.shape}, got {roi}")
    if any(a % df or b % df for a, b in zip(lo, hi)):
        raise ConfigError(f"roi: offset and end must be multiples of downsample {df}, got {lo} to {hi}")
    channels = list(range(_NUM_CHANNELS[dims]))
    if components is not None:
        try:
            channels = [int(c) for c in components]
        except (TypeError, ValueError):
            channels = None
        if not channels or any(not 0 <= c < _NUM_CHANNELS[dims] for c in channels):
            raise ConfigError(f"components: expected digits 0-{_NUM_CHANNELS[dims] - 1} for {dims}-D labels, got {components!r}")

    # 2-D is 3-D with one section and no smoothing along z (a one-tap kernel of weight 1 changes nothing)
    if dims == 2:
        seg = seg[None]
        sigma, voxel_size, lo, hi = (1.0,) + sigma, (1,) + voxel_size, (0,) + lo, (1,) + hi
    step = np.array([v * df for v in voxel_size], np.float64)
    weights = [_gaussian_weights(s / st) for s, st in zip(sigma, step)]
    if dims == 2:
        weights[0] = np.ones(1)
    selected = np.unique(_as_int64(np.asarray(labels, seg.dtype).ravel())) if labels is not None else np.zeros(0, np.int64)
    out = _descriptors(
        _as_int64(seg),
        np.array(lo, np.int64),
        np.array(hi, np.int64),
        df,
        step,
        weights[0],
        weights[1],
        weights[2],
        np.array(sigma, np.float32),
        np.array([s**2 for s in sigma], np.float32),
        selected,
        labels is not None,
    )
    if dims == 2:
        out = out[_CHANNELS_2D, 0]
    if channels != list(range(out.shape[0])):
        out = out[channels]
    return out


def _per_axis(name: str, value, dims: int, kind: type, truncate: bool = False) -> tuple:
    values = tuple(value) if isinstance(value, Sequence | np.ndarray) else (value,) * dims
    if truncate:
        values = values[:dims]
    if len(values) != dims or any(kind(v) != v for v in values):
        raise ConfigError(f"{name}: expected one {kind.__name__} or {dims} of them, got {value}")
    return tuple(kind(v) for v in values)


def _gaussian_weights(sigma: float) -> np.ndarray:
    """Taps 0..r of scipy's Gaussian (``truncate=3``): the same float64 values ``gaussian_filter`` uses."""
    radius = int(3.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return (phi / phi.sum())[radius:].copy()


def _as_int64(seg: np.ndarray) -> np.ndarray:
    """Labels as int64 (uint64 ids are reinterpreted: equality, all that matters here, is kept)."""
    if seg.dtype == np.int64:
        return seg
    if seg.dtype == np.uint64:
        return seg.view(np.int64)
    return seg.astype(np.int64)


# ---- compiled parts ------------------------------------------------------------------------------------------------


@njit(cache=True)
def _descriptors(seg, lo, hi, df, step, w0, w1, w2, sigma, sigma_sq, selected, restrict):
    """All labels' descriptors in the ROI ``[lo, hi)`` of ``seg`` (3-D): (10, roi shape) float32."""
    nz, ny, nx = hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]
    out = np.zeros((10, nz, ny, nx), np.float32)
    ids = Dict.empty(key_type=types.int64, value_type=types.int64)
    for k in range(selected.shape[0]):
        if selected[k] != 0:
            ids[selected[k]] = len(ids)

    # ---- index the ROI: each voxel's label slot (-1 background, -2 unlisted), each label's box and voxel count
    index = np.empty((nz, ny, nx), np.int64)
    cap = max(16, len(ids))
    box = np.empty((cap, 6), np.int64)
    for k in range(len(ids)):
        box[k, 0:3] = hi
        box[k, 3:6] = -1
    count = np.zeros(cap, np.int64)
    previous, slot = np.int64(0), np.int64(-1)
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                label = seg[lo[0] + z, lo[1] + y, lo[2] + x]
                if label != previous:
                    previous = label
                    if label == 0:
                        slot = -1
                    elif label in ids:
                        slot = ids[label]
                    elif restrict:
                        slot = -2
                    else:
                        slot = len(ids)
                        ids[label] = slot
                        if slot == box.shape[0]:
                            box = _grow(box)
                            count = _grow(count)
                        box[slot, 0:3] = hi
                        box[slot, 3:6] = -1
                index[z, y, x] = slot
                if slot >= 0:
                    count[slot] += 1
                    p = (lo[0] + z, lo[1] + y, lo[2] + x)
                    for d in range(3):
                        box[slot, d] = min(box[slot, d], p[d])
                        box[slot, 3 + d] = max(box[slot, 3 + d], p[d])
    n = len(ids)

    # ---- each label's voxels, grouped (a counting sort of the ROI by slot)
    start = np.zeros(n + 1, np.int64)
    for k in range(n):
        start[k + 1] = start[k] + count[k]
    members = np.empty(start[n], np.int64)
    fill = start[:n].copy()
    flat = index.ravel()
    out_flat = out.reshape(10, -1)
    for v in range(flat.shape[0]):
        k = flat[v]
        if k >= 0:
            members[fill[k]] = v
            fill[k] += 1
        elif k == -2:
            # lsds leaves an unlisted label's statistics 0: its mean offsets and Pearson channels become 0.5
            for c in (0, 1, 2, 6, 7, 8):
                out_flat[c, v] = 0.5

    # ---- each label's support on the subsampled grid (over the whole array, not just the ROI)
    sub = np.array([(seg.shape[0] + df - 1) // df, (seg.shape[1] + df - 1) // df, (seg.shape[2] + df - 1) // df])
    support = np.empty((max(n, 1), 6), np.int64)
    for k in range(n):
        support[k, 0:3] = sub
        support[k, 3:6] = -1
    previous, slot = np.int64(0), np.int64(-1)
    for z in range(sub[0]):
        for y in range(sub[1]):
            for x in range(sub[2]):
                label = seg[z * df, y * df, x * df]
                if label != previous:
                    previous = label
                    slot = ids[label] if label != 0 and label in ids else -1
                if slot >= 0:
                    p = (z, y, x)
                    for d in range(3):
                        support[slot, d] = min(support[slot, d], p[d])
                        support[slot, 3 + d] = max(support[slot, 3 + d], p[d])

    labels = np.empty(n, np.int64)
    for label, k in ids.items():
        labels[k] = label
    radius = np.array([w0.shape[0] - 1, w1.shape[0] - 1, w2.shape[0] - 1])
    for k in range(n):
        if count[k] == 0:
            continue  # a listed label that is not in the ROI
        o_lo = box[k, 0:3] // df
        o_hi = box[k, 3:6] // df + 1
        s_lo = np.maximum(support[k, 0:3], o_lo - radius)
        s_hi = np.minimum(support[k, 3:6] + 1, o_hi + radius)
        # the grid cells the label's voxels read
        needed = np.zeros((o_hi[0] - o_lo[0], o_hi[1] - o_lo[1], o_hi[2] - o_lo[2]), np.bool_)
        for m in range(start[k], start[k + 1]):
            v = members[m]
            needed[(lo[0] + v // (ny * nx)) // df - o_lo[0], (lo[1] + (v // nx) % ny) // df - o_lo[1], (lo[2] + v % nx) // df - o_lo[2]] = True
        sums = _smoothed_moments(seg, labels[k], df, step, w0, w1, w2, o_lo, o_hi, s_lo, s_hi, needed)
        block = _normalised(sums, o_lo, step, sigma, sigma_sq, needed)
        # scatter: every voxel of the label takes its grid cell's descriptor
        for m in range(start[k], start[k + 1]):
            v = members[m]
            z = v // (ny * nx)
            y = (v // nx) % ny
            x = v % nx
            bz = (lo[0] + z) // df - o_lo[0]
            by = (lo[1] + y) // df - o_lo[1]
            bx = (lo[2] + x) // df - o_lo[2]
            for c in range(10):
                out_flat[c, v] = block[c, bz, by, bx]
    return out


@njit(cache=True)
def _grow(a):
    bigger = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
    bigger[: a.shape[0]] = a
    return bigger


@njit(cache=True)
def _smooth(line, r, w, acc, first, last, need_first, need_last):
    """``acc[i] = Σ_j w[|j|]·line[i + r + j]`` for the outputs ``i`` in ``[need_first, need_last]`` that see the
    non-zero ``line[first..last]``; returns the range computed (the other outputs are 0 or not needed).

    The sum is scipy's for a symmetric kernel, in its order (centre, then the pairs from the farthest in), in
    float64; the terms skipped are those where scipy adds +0.
    """
    begin = max(need_first, first - 2 * r)
    end = min(need_last, last) + 1
    for i in range(begin, end):
        acc[i] = line[i + r] * w[0]
    for j in range(r, 0, -1):
        wj = w[j]
        for i in range(begin, end):
            acc[i] += (line[i + r - j] + line[i + r + j]) * wj
    return begin, end


@njit(cache=True)
def _smoothed_moments(seg, label, df, step, w0, w1, w2, o_lo, o_hi, s_lo, s_hi, needed):
    """The label's mask times 1, z, y, x, zz, yy, xx, zy, zx, yx, Gaussian-smoothed, at the ``needed`` cells of
    the box ``[o_lo, o_hi)`` (elsewhere 0); ``[s_lo, s_hi)`` bounds the label's subsampled voxels that matter.

    Each pass computes only the outputs the next pass reads: the x pass the needed cells, the y pass those within
    ``r_x`` of them along x, the z pass those within ``r_y`` of these along y.
    """
    r0, r1, r2 = w0.shape[0] - 1, w1.shape[0] - 1, w2.shape[0] - 1
    nz, ny, nx = o_hi[0] - o_lo[0], o_hi[1] - o_lo[1], o_hi[2] - o_lo[2]
    result = np.zeros((10, nz, ny, nx), np.float32)
    if s_lo[0] >= s_hi[0] or s_lo[1] >= s_hi[1] or s_lo[2] >= s_hi[2]:
        return result
    sy, sx = s_hi[1] - s_lo[1], s_hi[2] - s_lo[2]

    # ---- which outputs each pass needs, as a [first, last] range per line (last < first: none)
    x_first = np.full((nz, ny), nx, np.int64)
    x_last = np.full((nz, ny), -1, np.int64)
    y_first = np.full((nz, sx), ny, np.int64)
    y_last = np.full((nz, sx), -1, np.int64)
    z_first = np.full((sy, sx), nz, np.int64)
    z_last = np.full((sy, sx), -1, np.int64)
    for zi in range(nz):
        for yi in range(ny):
            for xi in range(nx):
                if needed[zi, yi, xi]:
                    x_first[zi, yi] = min(x_first[zi, yi], xi)
                    x_last[zi, yi] = xi
            if x_last[zi, yi] < 0:
                continue
            # the y pass is read at x within r_x of these cells
            for x in range(max(s_lo[2], o_lo[2] + x_first[zi, yi] - r2), min(s_hi[2], o_lo[2] + x_last[zi, yi] + r2 + 1)):
                y_first[zi, x - s_lo[2]] = min(y_first[zi, x - s_lo[2]], yi)
                y_last[zi, x - s_lo[2]] = yi
        for xs in range(sx):
            if y_last[zi, xs] < 0:
                continue
            for y in range(max(s_lo[1], o_lo[1] + y_first[zi, xs] - r1), min(s_hi[1], o_lo[1] + y_last[zi, xs] + r1 + 1)):
                z_first[y - s_lo[1], xs] = min(z_first[y - s_lo[1], xs], zi)
                z_last[y - s_lo[1], xs] = zi

    acc = np.empty(max(nz, ny, nx))

    # ---- along z: the moments of the mask, from the labels, on O_z × S_y × S_x
    pass_z = np.zeros((10, nz, sy, sx), np.float32)
    line = np.zeros((10, nz + 2 * r0))
    base = o_lo[0] - r0
    for yi in range(sy):
        y = s_lo[1] + yi
        cy = np.float32(y * step[1])
        for xi in range(sx):
            if z_last[yi, xi] < 0:
                continue
            x = s_lo[2] + xi
            cx = np.float32(x * step[2])
            first, last = -1, -1
            for z in range(s_lo[0], s_hi[0]):
                if seg[z * df, y * df, x * df] == label:
                    cz = np.float32(z * step[0])
                    p = z - base
                    if first < 0:
                        first = p
                    last = p
                    line[0, p] = 1.0
                    line[1, p] = cz
                    line[2, p] = cy
                    line[3, p] = cx
                    line[4, p] = cz * cz
                    line[5, p] = cy * cy
                    line[6, p] = cx * cx
                    line[7, p] = cz * cy
                    line[8, p] = cz * cx
                    line[9, p] = cy * cx
            if first < 0:
                continue
            for c in range(10):
                begin, end = _smooth(line[c], r0, w0, acc, first, last, z_first[yi, xi], z_last[yi, xi])
                for i in range(begin, end):
                    pass_z[c, i, yi, xi] = acc[i]
                line[c, first : last + 1] = 0.0

    # ---- along y: on O_z × O_y × S_x
    pass_y = np.zeros((10, nz, ny, sx), np.float32)
    line = np.zeros((10, ny + 2 * r1))
    base = o_lo[1] - r1
    for zi in range(nz):
        for xi in range(sx):
            if y_last[zi, xi] < 0:
                continue
            first, last = -1, -1
            for yi in range(sy):
                if pass_z[0, zi, yi, xi] != 0:
                    if first < 0:
                        first = s_lo[1] + yi - base
                    last = s_lo[1] + yi - base
            if first < 0:
                continue
            for c in range(10):
                for p in range(first, last + 1):
                    line[c, p] = pass_z[c, zi, p + base - s_lo[1], xi]
                begin, end = _smooth(line[c], r1, w1, acc, first, last, y_first[zi, xi], y_last[zi, xi])
                for i in range(begin, end):
                    pass_y[c, zi, i, xi] = acc[i]
                line[c, first : last + 1] = 0.0

    # ---- along x: on the needed cells of O
    line = np.zeros((10, nx + 2 * r2))
    base = o_lo[2] - r2
    for zi in range(nz):
        for yi in range(ny):
            if x_last[zi, yi] < 0:
                continue
            first, last = -1, -1
            for xi in range(sx):
                if pass_y[0, zi, yi, xi] != 0:
                    if first < 0:
                        first = s_lo[2] + xi - base
                    last = s_lo[2] + xi - base
            if first < 0:
                continue
            for c in range(10):
                for p in range(first, last + 1):
                    line[c, p] = pass_y[c, zi, yi, p + base - s_lo[2]]
                begin, end = _smooth(line[c], r2, w2, acc, first, last, x_first[zi, yi], x_last[zi, yi])
                for i in range(begin, end):
                    result[c, zi, yi, i] = acc[i]
                line[c, first : last + 1] = 0.0
    return result


@njit(cache=True)
def _normalised(sums, o_lo, step, sigma, sigma_sq, needed):
    """The ten scaled channels at the needed cells, from the smoothed moments, with lsds' float32 operations in
    lsds' order."""
    half = np.float32(0.5)
    floor = np.float32(1e-3)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    _, nz, ny, nx = sums.shape
    block = np.empty(sums.shape, np.float32)
    for zi in range(nz):
        cz = np.float32((o_lo[0] + zi) * step[0])
        for yi in range(ny):
            cy = np.float32((o_lo[1] + yi) * step[1])
            for xi in range(nx):
                if not needed[zi, yi, xi]:
                    continue
                cx = np.float32((o_lo[2] + xi) * step[2])
                n = sums[0, zi, yi, xi]
                if n == 0:
                    n = one
                mz = sums[1, zi, yi, xi] / n
                my = sums[2, zi, yi, xi] / n
                mx = sums[3, zi, yi, xi] / n
                vz = sums[4, zi, yi, xi] / n - mz * mz
                vy = sums[5, zi, yi, xi] / n - my * my
                vx = sums[6, zi, yi, xi] / n - mx * mx
                czy = sums[7, zi, yi, xi] / n - mz * my
                czx = sums[8, zi, yi, xi] / n - mz * mx
                cyx = sums[9, zi, yi, xi] / n - my * mx
                if vz < floor:
                    vz = floor
                if vy < floor:
                    vy = floor
                if vx < floor:
                    vx = floor
                values = (
                    (mz - cz) / sigma[0] * half + half,
                    (my - cy) / sigma[1] * half + half,
                    (mx - cx) / sigma[2] * half + half,
                    vz / sigma_sq[0],
                    vy / sigma_sq[1],
                    vx / sigma_sq[2],
                    czy / np.sqrt(vz * vy) * half + half,
                    czx / np.sqrt(vz * vx) * half + half,
                    cyx / np.sqrt(vy * vx) * half + half,
                    n,
                )
                for c in range(10):
                    block[c, zi, yi, xi] = min(max(values[c], zero), one)
    return block
