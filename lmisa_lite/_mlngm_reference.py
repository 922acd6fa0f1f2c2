"""Literal, per-voxel-loop MLNGM: the executable specification of :mod:`lmisa_lite.mlngm`.

This mirrors the published procedure step by step, with the local normalisation as an explicit loop over
voxels, as in the original offline implementation. It is slow (seconds for one 512 x 512 slice) and exists
only so tests can check the vectorised code against it and benchmarks can time the difference. The Sobel
magnitude comes from ``skimage.filters.sobel`` (an independent n-D implementation); resizing and the level
sizes are shared with :mod:`lmisa_lite.mlngm`, in the role that ``imresize`` plays in the original.
"""
from __future__ import annotations

import numpy as np
from skimage.filters import sobel

from lmisa_lite.mlngm import _level_shapes, _resize


def _literal_local_normalise(g: np.ndarray, window: int, threshold: float, planar: bool) -> np.ndarray:
    """Local min-max normalisation, one voxel at a time.

    Args:
        g: Gradient magnitude, ``(X, Y)`` or ``(X, Y, Z)``.
        window: Odd window side length.
        threshold: Windows with sample std below ``threshold * std(g)`` (sample std) give 0.
        planar: ``window x window x 1`` windows when True, cubes when False (volumes only).

    Returns:
        Float64 array of the same shape; 0 on the outer ``window // 2`` in-plane border.
    """
    g3 = np.asarray(g, np.float64)
    if g3.ndim == 2:
        g3 = g3[:, :, None]
    nx, ny, nz = g3.shape
    r = window // 2
    rz = 0 if (planar or g.ndim == 2) else r
    limit = threshold * (np.std(g3, ddof=1) if g3.size > 1 else 0.0)
    out = np.zeros_like(g3)
    for i in range(r, nx - r):
        for j in range(r, ny - r):
            for k in range(nz):
                # Along the third axis the window repeats the first/last slice at the volume's ends.
                slices = [min(max(k + dk, 0), nz - 1) for dk in range(-rz, rz + 1)]
                values = g3[i - r : i + r + 1, j - r : j + r + 1][:, :, slices]
                lo, hi = values.min(), values.max()
                if np.std(values, ddof=1) < limit or hi == lo:
                    continue
                out[i, j, k] = (g3[i, j, k] - lo) / (hi - lo)
    return out.reshape(g.shape)


def _literal_mlngm(
    image: np.ndarray, *, levels: int = 4, window: int = 3, threshold: float = 1e-3, planar: bool = True
) -> np.ndarray:
    """MLNGM with the per-voxel loop above; same arguments and result as :func:`lmisa_lite.mlngm.mlngm`."""
    x = np.asarray(image, np.float64)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros(x.shape, np.float32)
    x = (x - lo) / (hi - lo)
    total = np.zeros_like(x)
    for shape in _level_shapes(x.shape, levels, window):
        level = _resize(x, shape)
        normalised = _literal_local_normalise(sobel(level, mode="nearest"), window, threshold, planar)
        total += _resize(normalised, x.shape)
    total = (total - total.min()) / max(total.max() - total.min(), np.finfo(np.float64).tiny)
    return total.astype(np.float32)
