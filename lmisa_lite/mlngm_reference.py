"""Slow, literal MLNGM implementations that the vectorised code in :mod:`lmisa_lite.mlngm` is tested against.

Two references, for two questions:

- :func:`literal_mlngm` asks "is the vectorised local normalisation right?". It runs the level loop of
  :func:`lmisa_lite.mlngm.mlngm_levels` (same level sizes and resizing) with two steps swapped for
  independent code: the Sobel magnitude from ``skimage.filters.sobel`` and the local min-max normalisation
  as an explicit loop over voxels (:func:`literal_local_normalise`). It matches :func:`lmisa_lite.mlngm.mlngm`
  to float rounding.
- :func:`published_mlngm` asks "is this the published method?". It is a line-by-line port of the authors'
  MATLAB script (``MLNGM/localNormGI.m``), sharing no code with :mod:`lmisa_lite.mlngm`: its own
  :func:`imresize3` (MATLAB's cubic resampling with antialiasing, mirrored boundary and the nominal scale in
  the coordinate mapping), its own :func:`imgradient3` (3D Sobel, replicated boundary) and the per-voxel
  loop of the script. :func:`lmisa_lite.mlngm.mlngm` differs from it only at the resampler's boundary
  (weights renormalised inside the image instead of a mirrored image): with ``boundary="inside"`` the port
  matches it to float32 rounding, and with the published boundary the tests ask for a Pearson correlation
  >= 0.995 on smooth test images of odd sizes and on thin volumes.

Both are slow (seconds for one 256 x 256 slice) and exist only for the tests and the benchmark.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.filters import sobel

from lmisa_lite.mlngm import combine_levels, mlngm_levels

__all__ = ["imgradient3", "imresize3", "literal_local_normalise", "literal_mlngm", "published_mlngm"]


# ------------------------------------------------------------------------------- per-voxel normalisation
def literal_local_normalise(g: np.ndarray, window: int, threshold: float, planar: bool) -> np.ndarray:
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


def literal_mlngm(
    image: np.ndarray,
    *,
    levels: int = 4,
    window: int = 3,
    threshold: float = 1e-3,
    planar: bool = True,
    skip_small: bool = False,
) -> np.ndarray:
    """:func:`lmisa_lite.mlngm.mlngm` with the per-voxel loop and scikit-image's Sobel filter.

    Args:
        image: Intensities, ``(X, Y)`` or ``(X, Y, Z)``.
        levels, window, threshold, planar, skip_small: As in :func:`lmisa_lite.mlngm.mlngm`.

    Returns:
        Float32 array of the same shape, values in [0, 1].
    """
    maps = mlngm_levels(image, levels=levels, window=window, threshold=threshold, planar=planar,
                        skip_small=skip_small, gradient=lambda x: sobel(x, mode="nearest"),
                        normalise=literal_local_normalise)
    return combine_levels(maps)


# ------------------------------------------------------------------------------ port of the MATLAB script
def _cubic(t: float) -> float:
    """MATLAB's ``cubic`` kernel of ``imresize`` (Keys, ``a = -0.5``)."""
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _contributions(n_in: int, n_out: int, scale: float, boundary: str) -> np.ndarray:
    """``(n_out, n_in)`` resampling matrix, built as MATLAB's ``imresize>contributions`` builds it."""
    width = 4.0
    if scale < 1:  # antialiasing: the kernel is stretched by 1 / scale
        def kernel(t: float) -> float:
            return scale * _cubic(scale * t)
        width = width / scale
    else:
        kernel = _cubic
    matrix = np.zeros((n_out, n_in))
    for x in range(1, n_out + 1):  # MATLAB's 1-based output and input indices
        u = x / scale + 0.5 * (1 - 1 / scale)
        left = math.floor(u - width / 2)
        pairs = []
        for j in range(left, left + math.ceil(width) + 2):
            m = (j - 1) % (2 * n_in)  # symmetric boundary: input [1..n, n..1] repeated
            if boundary == "symmetric" or 1 <= j <= n_in:
                pairs.append((m if m < n_in else 2 * n_in - 1 - m, kernel(u - j)))
        total = sum(weight for _, weight in pairs)
        for source, weight in pairs:
            matrix[x - 1, source] += weight / total
    return matrix


def imresize3(volume: np.ndarray, size: float | Sequence[int], *, boundary: str = "symmetric") -> np.ndarray:
    """MATLAB's ``imresize3(V, scale)`` and ``imresize3(V, [X Y Z])`` with the default cubic method.

    Args:
        volume: ``(X, Y, Z)`` float array.
        size: A scale factor, giving an output of ``ceil(scale * n)`` on every axis and the nominal
            ``scale`` in the coordinate mapping; or the output size, with per-axis scale ``n_out / n_in``.
        boundary: ``"symmetric"`` as MATLAB (the image mirrored beyond its edges), or ``"inside"``: the
            weights of samples outside the image dropped, the rest renormalised (as ``lmisa_lite.mlngm``).

    Returns:
        The resized float64 volume.

    Raises:
        ValueError: If ``boundary`` is neither of the two.
    """
    if boundary not in ("symmetric", "inside"):
        raise ValueError(f"boundary must be 'symmetric' or 'inside', got {boundary!r}")
    x = np.asarray(volume, np.float64)
    if np.isscalar(size):
        scales = [float(size)] * x.ndim
        shape = [math.ceil(s * n) for s, n in zip(scales, x.shape)]
    else:
        shape = [int(n) for n in size]
        scales = [m / n for m, n in zip(shape, x.shape)]
    for axis, (n_out, scale) in enumerate(zip(shape, scales)):
        matrix = _contributions(x.shape[axis], n_out, scale, boundary)
        x = np.moveaxis(np.tensordot(matrix, x, axes=(1, axis)), 0, axis)
    return x


def imgradient3(volume: np.ndarray) -> np.ndarray:
    """MATLAB's ``imgradient3(V)``: 3D Sobel gradient magnitude with a replicated boundary.

    Args:
        volume: ``(X, Y, Z)`` float array.

    Returns:
        Float64 gradient magnitude of the same shape.
    """
    x = np.asarray(volume, np.float64)
    derivative, smooth = np.array([-1.0, 0.0, 1.0]), np.array([1.0, 2.0, 1.0])
    total = np.zeros_like(x)
    for axis in range(3):
        factors = [derivative if d == axis else smooth for d in range(3)]
        kernel = np.einsum("i,j,k->ijk", *factors)
        total += ndimage.correlate(x, kernel, mode="nearest") ** 2
    return np.sqrt(total)


def published_mlngm(image: np.ndarray, *, levels: int = 4, window: int = 3, threshold: float = 1e-3,
                    boundary: str = "symmetric") -> np.ndarray:
    """Port of the published ``localNormGI.m``: MLNGM of a volume (a 2D image is a one-slice volume).

    The script's steps, in its order: for each scale ``1 / 2**k``, ``imresize3`` the volume, take
    ``imgradient3``, and for every voxel off the in-plane border normalise the in-plane ``window x window``
    neighbourhood of the gradient by its min and max, or set 0 when its sample std is below ``threshold``
    times the level's gradient std; resize each map back to the input size, sum, scale to [0, 1]. One guard
    is added: a window whose max equals its min gives 0 (the script divides 0 by 0 there when the whole
    level is flat). The script reads the volume as it is stored; here it is taken as float64.

    Args:
        image: ``(X, Y)`` or ``(X, Y, Z)`` intensities (the script's ``I``).
        levels: The script's ``nLevel``.
        window: ``2 * hW + 1`` of the script.
        threshold: The script's ``1 / 1000``.
        boundary: Boundary rule of every :func:`imresize3`; ``"symmetric"`` as published.

    Returns:
        Float64 array of the input's shape, values in [0, 1].

    Examples:
        >>> img = np.zeros((19, 14)); img[5:12, 4:10] = 1.0
        >>> out = published_mlngm(img)
        >>> out.shape, float(out.min()), float(out.max())
        ((19, 14), 0.0, 1.0)
    """
    volume = np.asarray(image, np.float64)
    if volume.ndim == 2:
        volume = volume[:, :, None]
    hw = window // 2
    total = np.zeros(volume.shape)
    for k in range(levels):
        gradient = imgradient3(imresize3(volume, 1 / 2**k, boundary=boundary))
        level_std = np.std(gradient, ddof=1) if gradient.size > 1 else 0.0
        normalised = np.zeros(gradient.shape)
        for r in range(hw, gradient.shape[0] - hw):
            for c in range(hw, gradient.shape[1] - hw):
                for s in range(gradient.shape[2]):
                    patch = gradient[r - hw : r + hw + 1, c - hw : c + hw + 1, s]
                    lo, hi = patch.min(), patch.max()
                    if np.std(patch, ddof=1) < level_std * threshold or hi == lo:
                        continue
                    normalised[r, c, s] = (gradient[r, c, s] - lo) / (hi - lo)
        total += imresize3(normalised, volume.shape, boundary=boundary)
    spread = total.max() - total.min()
    total = (total - total.min()) / spread if spread > 0 else np.zeros_like(total)
    return total.reshape(np.shape(image))
