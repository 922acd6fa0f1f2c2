"""MLNGM: multi-resolution locally normalised gradient magnitude.

CT and MRI show the same anatomy with unrelated intensities: fat is dark in CT and bright in T1-weighted MRI,
blood can be bright or dark depending on contrast agent and sequence, and MRI adds a smooth coil bias. A
network trained on one modality therefore sees a different input distribution on the other (the modality
gap). What the two do share is *where* tissue boundaries are. MLNGM keeps only that:

1. Sobel gradient magnitude, which is zero in homogeneous tissue and large at boundaries, whatever the sign
   or size of the intensity step (so contrast inversions between modalities cancel out);
2. a min-max normalisation of the gradient in a small window around each voxel, which throws away the edge
   *strength* (different in CT and MRI) and keeps the local edge *pattern*; windows that are flat compared
   with the whole image are set to 0 so noise in uniform regions is not blown up to full contrast;
3. the same at several scales (1, 1/2, 1/4, 1/8), summed, so that coarse organ outlines and fine detail both
   contribute.

The result is an edge map in [0, 1] that looks alike for CT and MRI of the same anatomy, so a segmentation
network trained on source-modality maps transfers to the target modality with far less adaptation.
:func:`mlngm` computes it for one NumPy image ``(X, Y)`` or volume ``(X, Y, Z)``, as :func:`combine_levels`
of :func:`mlngm_levels` (the maps of each scale); :func:`mlngm_torch` for batches ``(B, C, X, Y)`` or
``(B, C, X, Y, Z)`` on any device. The definition is that of the authors' MATLAB script
``MLNGM/localNormGI.m``, which :func:`lmisa_lite.mlngm_reference.published_mlngm` ports line by line:

- The input is first min-max scaled to [0, 1] (MLNGM is invariant to ``a * image + b``, ``a != 0``; scaling
  makes this hold to float rounding too, and gives zeros for a constant image).
- Level ``k`` is ``imresize3(I, 1 / 2**k)``: ``ceil(n / 2**k)`` voxels on every axis, the third one
  included (:func:`level_shapes`), output sample ``j`` (0-based) centred on input coordinate
  ``(j + 0.5) / s - 0.5`` with the *nominal* scale ``s = 2**-k`` (MATLAB's ``u = x / s + 0.5 * (1 - 1 / s)``),
  not ``n_out / n_in``, which differs when ``n`` is not a multiple of ``2**k``. Each level's map is resized
  back to the input size with per-axis scale ``n_in / n_level``, as ``imresize3`` given an output size does.
- Resizing (:func:`resize`) is separable cubic convolution (Keys, ``a = -0.5``) with the kernel widened by
  the shrink factor when downsampling (anti-aliasing), as in ``imresize3`` and ``F.interpolate(mode=
  "bicubic", antialias=True)``, one sparse matrix product per axis. At the image boundary the weights are
  renormalised over the voxels inside (as in Torch) where MATLAB mirrors the image, the one difference from
  the script: Pearson r with its port >= 0.995 on smooth test images, ~0.95 on a ramp (a flat gradient).
- Small images keep every level, as published (a level narrower than ``window`` in-plane is all zeros).
  ``skip_small=True``, this package's earlier policy, drops levels ``k > 0`` under ``2 * window`` in-plane
  and keeps ``>= min(Z, window)`` slices (mapped with ``n_out / n_in``), a full cube for ``planar=False``.
- Sobel boundaries replicate the edge voxel; so does the cubic (``planar=False``) window along the 3rd axis.
  In-plane, the outer ``window // 2`` voxels of every level are 0, so no in-plane padding rule is needed.
- The local standard deviation is the sample one (``n - 1``); a window is homogeneous when it is below
  ``threshold`` times the sample standard deviation of the whole level's gradient magnitude. A window whose
  maximum equals its minimum also gives 0.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

__all__ = ["combine_levels", "level_shapes", "mlngm", "mlngm_levels", "mlngm_torch", "resize"]


# ----------------------------------------------------------------------------------------------- validation
def _check_options(levels: int, window: int, threshold: float) -> None:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
    number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if not number or not math.isfinite(float(threshold)) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")


# --------------------------------------------------------------------------------------------------- levels
def level_shapes(shape: Sequence[int], levels: int = 4, *, window: int = 3,
                 skip_small: bool = False) -> list[tuple[int, ...]]:
    """Spatial shape of each MLNGM level, level 0 (full size) first.

    Args:
        shape: Spatial shape of the input, ``(X, Y)`` or ``(X, Y, Z)``.
        levels: Number of scales ``1, 1/2, ..., 1/2**(levels-1)``.
        window: Side of the normalisation window; only used with ``skip_small``.
        skip_small: False (as published): level ``k`` is ``ceil(n / 2**k)`` on every axis, all levels kept.
            True: levels ``k > 0`` smaller than ``2 * window`` in-plane are dropped and the third axis is not
            shrunk below ``min(Z, window)`` voxels.

    Returns:
        One shape tuple per level.

    Raises:
        ValueError: If ``levels`` is not a positive integer or ``window`` not an odd integer >= 3.

    Examples:
        >>> level_shapes((197, 233)), level_shapes((40, 40, 5), skip_small=True)
        ([(197, 233), (99, 117), (50, 59), (25, 30)], [(40, 40, 5), (20, 20, 3), (10, 10, 3)])
    """
    _check_options(levels, window, 0.0)
    shapes = []
    for k in range(levels):
        in_plane, through_plane = ([-(-n // 2**k) for n in part] for part in (shape[:2], shape[2:]))
        if skip_small:
            if k > 0 and min(in_plane) < 2 * window:
                break
            through_plane = [max(m, min(n, window)) for m, n in zip(through_plane, shape[2:])]
        shapes.append(tuple(in_plane + through_plane))
    return shapes


# --------------------------------------------------------------------------------------------------- resize
def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (zero for ``|t| >= 2``)."""
    a, t = -0.5, np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _resize_weights(n_in: int, n_out: int, scale: float | None = None) -> np.ndarray:
    """``(n_out, n_in)`` matrix of the anti-aliased cubic resampler, rows summing to 1."""
    step = n_in / n_out if scale is None else 1.0 / scale  # input samples per output sample
    stretch = 1.0 / step if step > 1 else 1.0  # widen the kernel by the shrink factor
    centre = step * (np.arange(n_out) + 0.5)
    weights = _keys_cubic((np.arange(n_in)[None, :] + 0.5 - centre[:, None]) * stretch)
    total = weights.sum(axis=1, keepdims=True)
    return weights / np.where(total == 0, 1.0, total)


def _resize_axis(x: np.ndarray, axis: int, n_out: int, scale: float | None) -> np.ndarray:
    """The resampler along one axis as a sparse (banded) matrix product, without transposed copies: no work
    on zero weights, and one thread, so no BLAS threads compete with the rest of the pipeline."""
    weights = sparse.csr_array(_resize_weights(x.shape[axis], n_out, scale))
    if axis == 0:
        return (weights @ x.reshape(x.shape[0], -1)).reshape((n_out,) + x.shape[1:])
    if axis == x.ndim - 1:
        return (weights @ x.reshape(-1, x.shape[-1]).T).T.reshape(x.shape[:-1] + (n_out,))
    out = np.empty((x.shape[0], n_out) + x.shape[2:])  # middle axis of a volume: one product per slab
    for i in range(x.shape[0]):
        out[i] = weights @ x[i]
    return out


def resize(x: np.ndarray, shape: Sequence[int], scale: Sequence[float | None] | None = None) -> np.ndarray:
    """Anti-aliased cubic resize, axis by axis, as MATLAB's ``imresize3`` (but for the boundary rule).

    Args:
        x: Real array, any number of axes.
        shape: Output shape, one size per axis of ``x``.
        scale: Per-axis scale of the coordinate mapping (output samples per input sample): output sample
            ``j`` is centred on input coordinate ``(j + 0.5) / scale - 0.5``; ``scale=(0.5, 0.5)`` with
            ``shape = ceil(0.5 * x.shape)`` is ``imresize3(x, 0.5)``. None (all axes or one) uses
            ``shape[a] / x.shape[a]``, as ``imresize3(x, shape)`` does.

    Returns:
        Float64 array of ``shape`` (``x`` itself when ``shape == x.shape``).

    Raises:
        ValueError: If ``shape`` or ``scale`` does not have one positive entry per axis.

    Examples:
        >>> x = np.arange(9.0)  # a ramp: inside the image, a sample equals the coordinate it is centred on
        >>> round(float(resize(x, (5,), (0.5,))[2]), 6), round(float(resize(x, (5,))[2]), 6)  # scale 1/2, 5/9
        (4.5, 4.0)
    """
    x = np.asarray(x)
    scale = (None,) * x.ndim if scale is None else tuple(scale)
    if len(shape) != x.ndim or len(scale) != x.ndim or min(shape) < 1 or any(s is not None and not s > 0
                                                                             for s in scale):
        raise ValueError(f"shape and scale need one positive entry per axis of {x.shape}: {shape}, {scale}")
    for axis in sorted(range(x.ndim), key=lambda a: shape[a] / x.shape[a]):  # most-shrunk first: least work
        if x.shape[axis] != shape[axis]:
            x = _resize_axis(x, axis, shape[axis], scale[axis])
    return x


# ----------------------------------------------------------------------------------------- numpy pipeline
def _shifted(a: np.ndarray, axis: int, start: int, length: int) -> np.ndarray:
    """View of ``a`` holding ``length`` samples from ``start`` along ``axis``."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(start, start + length)
    return a[tuple(index)]


def _window_reduce(a: np.ndarray, axis: int, window: int, op: np.ufunc) -> np.ndarray:
    """Reduce every run of ``window`` consecutive samples along ``axis`` with ``op`` ("valid" mode)."""
    length = a.shape[axis] - window + 1
    out = op(_shifted(a, axis, 0, length), _shifted(a, axis, 1, length))
    for k in range(2, window):
        op(out, _shifted(a, axis, k, length), out=out)
    return out


def _sobel_magnitude(x: np.ndarray) -> np.ndarray:
    """2D or 3D Sobel gradient magnitude with replicated edges, from shifted views of one padded copy
    (1.7x faster on a 256 x 256 x 64 volume than three ``scipy.ndimage.sobel`` calls, with strided passes)."""
    padded = np.pad(x, 1, mode="edge")
    total = np.zeros(x.shape)
    for axis in range(x.ndim):
        d = padded
        for other in range(x.ndim):
            n = d.shape[other] - 2
            if other == axis:  # derivative [-1, 0, 1]
                d = _shifted(d, other, 2, n) - _shifted(d, other, 0, n)
            else:  # smoothing [1, 2, 1]
                mid = _shifted(d, other, 1, n)
                d = _shifted(d, other, 0, n) + _shifted(d, other, 2, n)
                d += mid
                d += mid
        total += d * d
    return np.sqrt(total)


def _local_normalise(g: np.ndarray, window: int, threshold: float, planar: bool) -> np.ndarray:
    """Window min-max normalisation of a gradient-magnitude map (float64 in, float64 out).

    Only the in-plane interior is computed (the outer ``window // 2`` voxels are 0 by definition); along the
    third axis a cubic window sees replicated edge slices. Window minima, maxima and sums come from shifted
    views: about 6x faster on a 256 x 256 x 64 volume than ``scipy.ndimage`` min, max and uniform filters.
    """
    r = window // 2
    out = np.zeros_like(g)
    if min(g.shape[:2]) < window:
        return out
    cubic = g.ndim == 3 and not planar
    axes = [0, 1, 2] if cubic else [0, 1]
    g_pad = np.pad(g, ((0, 0), (0, 0), (r, r)), mode="edge") if cubic else g
    n = window ** len(axes)
    limit = threshold * (g.std(ddof=1) if g.size > 1 else 0.0)
    # Window variance from sums of g and g^2. Variance is shift-invariant: centring on the global mean limits
    # cancellation in sum(g^2) - sum(g)^2 / n. Later steps work in place to keep the peak memory down.
    centred = g_pad - g.mean()
    total = centred
    for axis in axes:
        total = _window_reduce(total, axis, window, np.add)
    total_sq = np.square(centred, out=centred)
    for axis in axes:
        total_sq = _window_reduce(total_sq, axis, window, np.add)
    del centred
    total *= total
    total /= n
    scaled_variance = np.subtract(total_sq, total, out=total_sq)  # (n - 1) * sample variance
    del total
    np.maximum(scaled_variance, 0.0, out=scaled_variance)  # rounding can dip below 0
    keep = scaled_variance >= (n - 1) * limit * limit  # sample std >= limit
    del scaled_variance, total_sq

    local_min, spread = g_pad, g_pad
    for axis in axes:
        local_min = _window_reduce(local_min, axis, window, np.minimum)
        spread = _window_reduce(spread, axis, window, np.maximum)
    spread -= local_min  # local max - local min
    keep &= spread > 0
    normalised = np.subtract(g[r : g.shape[0] - r, r : g.shape[1] - r], local_min, out=local_min)
    np.divide(normalised, spread, out=normalised, where=keep)
    normalised[~keep] = 0.0
    out[r : g.shape[0] - r, r : g.shape[1] - r] = normalised
    return out


def _as_image(image: np.ndarray) -> np.ndarray:
    x = np.asarray(image)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"image must be a real numeric array, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise ValueError("image must be real-valued, got a complex array")
    if x.ndim not in (2, 3) or x.size == 0:
        raise ValueError(f"image must be a non-empty 2D (X, Y) or 3D (X, Y, Z) array, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    return x


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _level_maps(x: Any, spatial: Sequence[int], shapes: Sequence[Sequence[int]], resize_fn: Callable,
                gradient: Callable, normalise: Callable) -> Iterator[dict[str, Any]]:
    """The level loop of MLNGM, for arrays and tensors: scale ``2**-k`` where it is not ``n_out / n_in``
    (``n`` not a multiple of ``2**k``), but not where ``skip_small`` kept more than ``ceil(n / 2**k)``."""
    for k, shape in enumerate(shapes):
        scale = [None if m * 2**k == n or m != -(-n // 2**k) else 0.5**k for n, m in zip(spatial, shape)]
        resized = resize_fn(x, shape, scale)
        grad = gradient(resized)
        normalised = normalise(grad)
        yield {"resized": resized, "gradient": grad, "normalised": normalised,
               "upsampled": resize_fn(normalised, spatial, None)}


def mlngm_levels(image: np.ndarray, *, levels: int = 4, window: int = 3, threshold: float = 1e-3,
                 planar: bool = True, skip_small: bool = False, gradient: Callable | None = None,
                 normalise: Callable | None = None) -> list[dict[str, np.ndarray]]:
    """What each scale contributes to :func:`mlngm`; ``combine_levels(mlngm_levels(...))`` is the MLNGM.

    Args:
        image, levels, window, threshold, planar, skip_small: As in :func:`mlngm`.
        gradient: Replaces the Sobel magnitude: ``gradient(level_image)``, same shape out.
        normalise: Replaces the local normalisation: ``normalise(gradient, window, threshold, planar)``, same
            shape out.

    Returns:
        One dict per level (:func:`level_shapes`), level 0 first, of float64 arrays: ``"resized"`` (the
        image min-max scaled to [0, 1] and resized to the level), ``"gradient"`` (its gradient magnitude),
        ``"normalised"`` (that locally normalised) and ``"upsampled"`` (that resized to the image's shape).

    Raises:
        ValueError: As :func:`mlngm`.

    Examples:
        >>> img = np.zeros((37, 29)); img[10:25, 8:20] = 1.0
        >>> maps = mlngm_levels(img)
        >>> [m["resized"].shape for m in maps], np.array_equal(combine_levels(maps), mlngm(img))
        ([(37, 29), (19, 15), (10, 8), (5, 4)], True)
    """
    x = _minmax(_as_image(image))
    _check_options(levels, window, threshold)
    normalise = _local_normalise if normalise is None else normalise
    shapes = level_shapes(x.shape, levels, window=window, skip_small=skip_small)
    return list(_level_maps(x, x.shape, shapes, resize, _sobel_magnitude if gradient is None else gradient,
                            lambda g: normalise(g, window, float(threshold), planar)))


def combine_levels(maps: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """The MLNGM from per-level maps: the sum of their ``"upsampled"`` maps, min-max scaled to [0, 1].

    Args:
        maps: Output of :func:`mlngm_levels`, or a leading part of it for fewer levels.

    Returns:
        Float32 array of the image's shape (zeros when the sum is constant).

    Raises:
        ValueError: If ``maps`` is empty.
    """
    if not maps:
        raise ValueError("maps must hold at least one level")
    return _minmax(sum(level["upsampled"] for level in maps)).astype(np.float32)


def mlngm(image: np.ndarray, *, levels: int = 4, window: int = 3, threshold: float = 1e-3,
          planar: bool = True, skip_small: bool = False) -> np.ndarray:
    """Multi-resolution locally normalised gradient magnitude of one image or volume.

    The exact definition (resizing, boundaries, small images) is in the module docstring. Computation is in
    float64 on one thread; a 256 x 256 x 64 volume needs about 1 s of CPU time and 270 MiB.

    Args:
        image: Intensities, ``(X, Y)`` or ``(X, Y, Z)``, any real dtype, finite.
        levels: Number of scales ``1, 1/2, ..., 1/2**(levels-1)``.
        window: Odd side length of the normalisation window (3 as published).
        threshold: Windows whose sample standard deviation is below ``threshold`` times the level's global
            gradient standard deviation are set to 0.
        planar: For volumes, normalise over ``window x window x 1`` in-plane windows (as published); when
            False, use ``window``-sided cubes. Ignored for 2D images.
        skip_small: Drop levels below ``2 * window`` in-plane and keep ``>= min(Z, window)`` slices
            (:func:`level_shapes`); False (default) keeps every level at ``ceil(n / 2**k)``, as published.

    Returns:
        Float32 array of the same shape with values in [0, 1]; all zeros for a constant image.

    Raises:
        ValueError: If ``image`` is not a non-empty, finite 2D or 3D real array, or an option is invalid:
            ``levels`` not a positive integer, ``window`` not an odd integer >= 3, ``threshold`` < 0 or NaN.

    Examples:
        >>> img = np.zeros((64, 64), np.float32); img[16:48, 16:48] = 1.0
        >>> out = mlngm(img); out.shape, out.dtype, float(out.min()), float(out.max())
        ((64, 64), dtype('float32'), 0.0, 1.0)
    """
    return combine_levels(mlngm_levels(image, levels=levels, window=window, threshold=threshold,
                                       planar=planar, skip_small=skip_small))


# ----------------------------------------------------------------------------------------- torch pipeline
def _sobel_kernels(ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(ndim, 1, 3, ..., 3)`` Sobel kernels, one derivative axis per output channel."""
    factors = [[[-1.0, 0, 1] if d == axis else [1.0, 2, 1] for d in range(ndim)] for axis in range(ndim)]
    kernels = np.stack([functools.reduce(np.multiply.outer, map(np.array, f)) for f in factors])
    return torch.from_numpy(kernels).unsqueeze(1).to(dtype=dtype, device=device)


def _sobel_magnitude_torch(x: torch.Tensor) -> torch.Tensor:
    ndim = x.dim() - 2
    conv = F.conv2d if ndim == 2 else F.conv3d
    padded = F.pad(x, (1, 1) * ndim, mode="replicate")
    grads = conv(padded, _sobel_kernels(ndim, x.dtype, x.device))
    return grads.square().sum(dim=1, keepdim=True).sqrt()


def _local_normalise_torch(g: torch.Tensor, window: int, threshold: float, planar: bool) -> torch.Tensor:
    """Same as :func:`_local_normalise` for ``(N, 1, X, Y)`` or ``(N, 1, X, Y, Z)``, per image."""
    ndim = g.dim() - 2
    r = window // 2
    if ndim == 2:
        size, pad = (window, window), (r, r, r, r)
        max_pool, avg_pool = F.max_pool2d, F.avg_pool2d
    else:
        rz = 0 if planar else r
        size, pad = (window, window, 2 * rz + 1), (rz, rz, r, r, r, r)
        max_pool, avg_pool = F.max_pool3d, F.avg_pool3d
    n = math.prod(size)
    stats_shape = (-1,) + (1,) * (ndim + 1)
    centred = g - g.flatten(1).mean(dim=1).reshape(stats_shape)
    padded = F.pad(centred, pad, mode="replicate")
    local_max = max_pool(padded, size, stride=1)
    local_min = -max_pool(-padded, size, stride=1)
    mean = avg_pool(padded, size, stride=1)
    mean_sq = avg_pool(padded * padded, size, stride=1)
    variance = (mean_sq - mean * mean).clamp_min(0.0) * (n / (n - 1))
    limit = threshold * (g.flatten(1).std(dim=1).reshape(stats_shape) if g[0].numel() > 1 else 0.0)
    spread = local_max - local_min
    keep = (variance >= limit * limit) & (spread > 0)
    out = torch.where(keep, (centred - local_min) / torch.where(spread > 0, spread, 1.0), 0.0)
    out[:, :, :r] = out[:, :, -r:] = 0.0
    out[:, :, :, :r] = out[:, :, :, -r:] = 0.0
    return out


def _resize_torch(x: torch.Tensor, shape: Sequence[int], scale: Sequence[float | None] | None = None
                  ) -> torch.Tensor:
    """:func:`resize` of ``(N, 1, X, Y)`` or ``(N, 1, X, Y, Z)`` to spatial ``shape``.

    ``F.interpolate`` maps with ``n_in / n_out``; for another ``scale`` the matrices of :func:`resize` are
    applied. Torch has no tricubic mode, so volumes are resized with two bicubic passes: in-plane with the
    slices as channels, then along Z with the in-plane voxels as channels and a dummy height of 1.
    """
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    if scale is not None and any(s is not None for s in scale):
        for axis, (n_out, s) in enumerate(zip(shape, scale), start=2):
            if x.shape[axis] != n_out:
                weights = torch.from_numpy(_resize_weights(x.shape[axis], n_out, s)).to(x)
                x = torch.movedim(torch.movedim(x, axis, -1) @ weights.T, -1, axis)
        return x
    cubic = {"mode": "bicubic", "antialias": True, "align_corners": False}
    if x.dim() == 4:
        return F.interpolate(x, size=tuple(shape), **cubic)
    n, _, sx, sy, sz = x.shape
    if (sx, sy) != tuple(shape[:2]):
        planes = x[:, 0].permute(0, 3, 1, 2)  # (N, Z, X, Y)
        x = F.interpolate(planes, size=tuple(shape[:2]), **cubic).permute(0, 2, 3, 1).unsqueeze(1)
        sx, sy = shape[:2]
    if sz != shape[2]:  # Z as the width: torch 2.13's CPU kernel mis-resizes the height of width-1 images
        rows = x.reshape(n, sx * sy, 1, sz)
        x = F.interpolate(rows, size=(1, shape[2]), **cubic).reshape(n, 1, sx, sy, shape[2])
    return x


def mlngm_torch(x: torch.Tensor, *, levels: int = 4, window: int = 3, threshold: float = 1e-3,
                planar: bool = True, skip_small: bool = False) -> torch.Tensor:
    """MLNGM of a batch of images or volumes, each image and channel on its own, on any device.

    Same definition and level loop as :func:`mlngm`, from convolutions and pooling (for a data pipeline or a
    GPU), resizing with ``F.interpolate(mode="bicubic", antialias=True)`` or, where the nominal scale is not
    ``n_out / n_in``, the matrices of :func:`resize`. Float32 arithmetic and the order of the separable passes
    are the remaining differences from :func:`mlngm` (Pearson r > 0.99 on the test images). Float16 and
    bfloat16 are computed in float32, float64 in float64. Runs without autograd; the result is detached.

    Args:
        x: ``(B, C, X, Y)`` or ``(B, C, X, Y, Z)`` tensor, finite.
        levels, window, threshold, planar, skip_small: As in :func:`mlngm`.

    Returns:
        Tensor of the same shape and device, values in [0, 1], dtype of ``x`` for floating inputs and float32
        otherwise; all zeros for constant images.

    Raises:
        ValueError: If ``x`` is not a finite 4D or 5D real tensor or an option is invalid (as :func:`mlngm`).

    Examples:
        >>> x = torch.zeros(2, 1, 64, 64); x[:, :, 16:48, 16:48] = 1.0
        >>> y = mlngm_torch(x); tuple(y.shape), y.dtype, float(y.max())
        ((2, 1, 64, 64), torch.float32, 1.0)
    """
    if not isinstance(x, torch.Tensor):
        # The project reports every bad argument as ValueError, wrong types included.
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")  # noqa: TRY004
    if x.dim() not in (4, 5) or x.numel() == 0:
        raise ValueError(f"x must be non-empty (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError("x must be real-valued, got a complex tensor")
    _check_options(levels, window, threshold)
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    with torch.no_grad():
        y = x.detach().to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        if not torch.isfinite(y).all():
            raise ValueError("x contains NaN or infinite values")
        batch, channels, *spatial = y.shape
        y = _minmax_torch(y.reshape(batch * channels, 1, *spatial))
        total = torch.zeros_like(y)
        shapes = level_shapes(spatial, levels, window=window, skip_small=skip_small)
        for level in _level_maps(y, spatial, shapes, _resize_torch, _sobel_magnitude_torch,
                                 lambda g: _local_normalise_torch(g, window, float(threshold), planar)):
            total += level["upsampled"]
        return _minmax_torch(total).reshape(batch, channels, *spatial).to(out_dtype)


def _minmax_torch(x: torch.Tensor) -> torch.Tensor:
    """Min-max scaling of each ``x[i]`` to [0, 1]; zeros where ``x[i]`` is constant."""
    stats_shape = (-1,) + (1,) * (x.dim() - 1)
    lo = x.flatten(1).amin(dim=1).reshape(stats_shape)
    spread = x.flatten(1).amax(dim=1).reshape(stats_shape) - lo
    return torch.where(spread > 0, (x - lo) / torch.where(spread > 0, spread, 1.0), 0.0)
