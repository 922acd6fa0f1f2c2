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

Two implementations share one definition:

- :func:`mlngm` for a single NumPy image ``(X, Y)`` or volume ``(X, Y, Z)``, vectorised NumPy/SciPy (shifted
  views and sparse matrix products, single-threaded; a 256 x 256 x 64 volume takes about a second);
- :func:`mlngm_torch` for batches ``(B, C, X, Y)`` or ``(B, C, X, Y, Z)`` on any device, for on-the-fly use
  in a data pipeline or on a GPU.

Definition details shared by both:

- The input is first min-max scaled to [0, 1]. MLNGM is invariant to ``a * image + b`` for any ``a != 0``
  in exact arithmetic (a negative ``a`` flips the sign of every gradient, not its magnitude); scaling first
  makes this hold to float rounding too, and gives zeros for a constant image.
- Resizing is separable cubic convolution (Keys kernel, ``a = -0.5``) whose kernel is widened by the shrink
  factor when downsampling (anti-aliasing), with pixel-centre alignment; this is the scheme of MATLAB's
  ``imresize`` and of ``torch.nn.functional.interpolate(mode="bicubic", antialias=True)``. It is implemented
  here as one sparse matrix product per axis. On a 256 x 256 x 64 volume this was 8-100x faster than
  ``scipy.ndimage.zoom(order=3)`` after a Gaussian pre-filter and than ``skimage.transform.resize(order=3,
  anti_aliasing=True)``, and it lets the NumPy and Torch paths agree to float precision.
- Level ``k`` has size ``ceil(n / 2**k)`` per axis. Levels whose in-plane size (first two axes) would fall
  below ``2 * window`` voxels are not computed (the remaining levels are still summed), so small images get
  fewer levels instead of near-empty ones. The third axis of a volume is never shrunk below
  ``min(Z, window)`` voxels.
- Sobel boundaries replicate the edge voxel; so does the cubic (``planar=False``) window along the third axis.
  In-plane, the outer ``window // 2`` voxels of every level are 0, so no in-plane padding rule is needed.
- The local standard deviation is the sample one (``n - 1``); a window is homogeneous when it is below
  ``threshold`` times the sample standard deviation of the whole level's gradient magnitude. A window whose
  maximum equals its minimum also gives 0.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse

__all__ = ["mlngm", "mlngm_torch"]


# ----------------------------------------------------------------------------------------------- validation
def _check_options(levels: int, window: int, threshold: float) -> None:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    if (
        isinstance(window, bool)
        or not isinstance(window, (int, np.integer))
        or window < 3
        or window % 2 == 0
    ):
        raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
    number = isinstance(threshold, (int, float, np.integer, np.floating)) and not isinstance(threshold, bool)
    if not number or not math.isfinite(float(threshold)) or threshold < 0:
        raise ValueError(f"threshold must be a finite number >= 0, got {threshold!r}")


def _level_shapes(shape: Sequence[int], levels: int, window: int) -> list[tuple[int, ...]]:
    """Spatial shape of each level; stops early when the in-plane size would drop below ``2 * window``."""
    shapes = []
    for k in range(levels):
        factor = 2**k
        in_plane = [math.ceil(n / factor) for n in shape[:2]]
        if k > 0 and min(in_plane) < 2 * window:
            break
        through_plane = [max(math.ceil(n / factor), min(n, window)) for n in shape[2:]]
        shapes.append(tuple(in_plane + through_plane))
    return shapes


# --------------------------------------------------------------------------------------------------- resize
def _keys_cubic(t: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.5`` (zero for ``|t| >= 2``)."""
    a = -0.5
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t < 1, near, np.where(t < 2, far, 0.0))


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of the anti-aliased cubic resampler, rows summing to 1."""
    scale = n_in / n_out
    stretch = 1.0 / scale if scale > 1 else 1.0  # widen the kernel by the shrink factor
    centre = scale * (np.arange(n_out) + 0.5)
    weights = _keys_cubic((np.arange(n_in)[None, :] + 0.5 - centre[:, None]) * stretch)
    total = weights.sum(axis=1, keepdims=True)
    return weights / np.where(total == 0, 1.0, total)


def _resize_axis(x: np.ndarray, axis: int, n_out: int) -> np.ndarray:
    """Apply the resampler along one axis as a sparse (banded) matrix product, without transposed copies.

    Sparse products skip the zero weights and run in one thread, so they neither waste work on the zeros
    of a dense matrix nor start BLAS threads that compete with the rest of the pipeline on a busy machine.
    """
    weights = sparse.csr_array(_resize_weights(x.shape[axis], n_out))
    if axis == 0:
        return (weights @ x.reshape(x.shape[0], -1)).reshape((n_out,) + x.shape[1:])
    if axis == x.ndim - 1:
        return (weights @ x.reshape(-1, x.shape[-1]).T).T.reshape(x.shape[:-1] + (n_out,))
    out = np.empty((x.shape[0], n_out) + x.shape[2:])  # middle axis of a volume: one product per slab
    for i in range(x.shape[0]):
        out[i] = weights @ x[i]
    return out


def _resize(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Resize ``x`` to ``shape`` axis by axis, most-shrunk axis first (least work)."""
    order = sorted(range(x.ndim), key=lambda axis: shape[axis] / x.shape[axis])
    for axis in order:
        if x.shape[axis] != shape[axis]:
            x = _resize_axis(x, axis, shape[axis])
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
    """2D or 3D Sobel gradient magnitude with replicated edges, same shape as ``x``.

    Built from shifted views of one padded copy; on a 256 x 256 x 64 volume this was about 1.7x faster than
    three ``scipy.ndimage.sobel`` calls, whose passes along the first axes of a volume are strided.
    """
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
    axes = [0, 1]
    if g.ndim == 3 and not planar:
        axes.append(2)
        g_pad = np.pad(g, ((0, 0), (0, 0), (r, r)), mode="edge")
    else:
        g_pad = g
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
    if x.ndim not in (2, 3):
        raise ValueError(f"image must be 2D (X, Y) or 3D (X, Y, Z), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"image must not be empty, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError("image contains NaN or infinite values")
    return x


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def mlngm(
    image: np.ndarray,
    *,
    levels: int = 4,
    window: int = 3,
    threshold: float = 1e-3,
    planar: bool = True,
) -> np.ndarray:
    """Multi-resolution locally normalised gradient magnitude of one image or volume.

    The exact definition (resizing, boundaries, small images) is in the module docstring. Computation is in
    float64 on one thread; a 256 x 256 x 64 volume needs about 1 s of CPU time and 250 MiB.

    Args:
        image: Intensities, ``(X, Y)`` or ``(X, Y, Z)``, any real dtype, finite.
        levels: Number of scales ``1, 1/2, ..., 1/2**(levels-1)``. Levels that would be smaller than
            ``2 * window`` voxels in-plane are skipped.
        window: Odd side length of the normalisation window (3 as published).
        threshold: Windows whose sample standard deviation is below ``threshold`` times the level's global
            gradient standard deviation are set to 0.
        planar: For volumes, normalise over ``window x window x 1`` in-plane windows (as published); when
            False, use ``window``-sided cubes. Ignored for 2D images.

    Returns:
        Float32 array of the same shape with values in [0, 1]; all zeros for a constant image.

    Raises:
        ValueError: If ``image`` is not a non-empty, finite 2D or 3D real array, ``levels`` is not a
            positive integer, ``window`` is not an odd integer >= 3, or ``threshold`` is negative or not
            finite.

    Examples:
        >>> import numpy as np
        >>> img = np.zeros((64, 64), np.float32)
        >>> img[16:48, 16:48] = 1.0
        >>> out = mlngm(img)
        >>> out.shape, out.dtype, float(out.min()), float(out.max())
        ((64, 64), dtype('float32'), 0.0, 1.0)
    """
    x = _as_image(image)
    _check_options(levels, window, threshold)
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros(x.shape, np.float32)
    x = (x - lo) / (hi - lo)
    total = np.zeros_like(x)
    for shape in _level_shapes(x.shape, levels, window):
        level = _resize(x, shape)  # returns x itself at full size
        normalised = _local_normalise(_sobel_magnitude(level), window, float(threshold), planar)
        total += _resize(normalised, x.shape)
    return _minmax(total).astype(np.float32)


# ----------------------------------------------------------------------------------------- torch pipeline
def _sobel_kernels(ndim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``(ndim, 1, 3, ..., 3)`` Sobel kernels, one derivative axis per output channel."""
    derivative = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64)
    kernels = []
    for axis in range(ndim):
        k = torch.ones((1,) * ndim, dtype=torch.float64)
        for other in range(ndim):
            v = derivative if other == axis else smooth
            k = k * v.reshape([3 if d == other else 1 for d in range(ndim)])
        kernels.append(k)
    return torch.stack(kernels).unsqueeze(1).to(dtype=dtype, device=device)


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
    if g[0].numel() > 1:
        global_std = g.flatten(1).std(dim=1, correction=1).reshape(stats_shape)
    else:
        global_std = torch.zeros_like(g)
    limit = threshold * global_std
    spread = local_max - local_min
    keep = (variance >= limit * limit) & (spread > 0)
    out = torch.where(keep, (centred - local_min) / torch.where(spread > 0, spread, 1.0), 0.0)
    out[:, :, :r] = 0.0
    out[:, :, -r:] = 0.0
    out[:, :, :, :r] = 0.0
    out[:, :, :, -r:] = 0.0
    return out


def _resize_torch(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Anti-aliased cubic resize of ``(N, 1, X, Y)`` or ``(N, 1, X, Y, Z)`` to spatial ``shape``.

    Torch has no tricubic mode, so volumes are resized separably with the 2D bicubic mode: in-plane with the
    slices as channels, then along Z with the in-plane voxels as channels and a dummy height of 1.
    """
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    cubic = {"mode": "bicubic", "antialias": True, "align_corners": False}
    if x.dim() == 4:
        return F.interpolate(x, size=tuple(shape), **cubic)
    n, _, sx, sy, sz = x.shape
    if (sx, sy) != tuple(shape[:2]):
        planes = x[:, 0].permute(0, 3, 1, 2)  # (N, Z, X, Y)
        x = F.interpolate(planes, size=tuple(shape[:2]), **cubic).permute(0, 2, 3, 1).unsqueeze(1)
        sx, sy = shape[:2]
    if sz != shape[2]:
        # Z as the width, with a dummy height of 1: torch 2.13's CPU kernel mis-resizes the height of
        # images whose width is 1.
        rows = x.reshape(n, sx * sy, 1, sz)
        x = F.interpolate(rows, size=(1, shape[2]), **cubic).reshape(n, 1, sx, sy, shape[2])
    return x


def mlngm_torch(
    x: torch.Tensor,
    *,
    levels: int = 4,
    window: int = 3,
    threshold: float = 1e-3,
    planar: bool = True,
) -> torch.Tensor:
    """MLNGM of a batch of images or volumes, each image and channel on its own, on any device.

    Same definition as :func:`mlngm`, built from convolutions and pooling so it runs on the fly in a data
    pipeline or on a GPU. Resizing is ``F.interpolate(mode="bicubic", antialias=True)``, the same
    anti-aliased cubic as :func:`mlngm`. Torch has no tricubic mode, so volumes are resized separably with two
    bicubic passes (in-plane, then along Z); plain ``mode="trilinear"`` does not anti-alias and agreed only
    to Pearson r ~ 0.88-0.97 on the test volumes. The remaining difference from :func:`mlngm` is float32
    arithmetic and the order of the separable passes; Pearson r with it exceeds 0.99 on the test images in 2D
    and 3D. Float16 and bfloat16 inputs are computed in float32, float64 in float64. Runs without autograd;
    the result is detached.

    Args:
        x: ``(B, C, X, Y)`` or ``(B, C, X, Y, Z)`` tensor, finite.
        levels: Number of scales, as in :func:`mlngm`.
        window: Odd window side length >= 3, as in :func:`mlngm`.
        threshold: Homogeneity threshold relative to each level's global gradient std, as in :func:`mlngm`.
        planar: In-plane windows for volumes (as published) when True, cubic windows when False.

    Returns:
        Tensor of the same shape and device, values in [0, 1], dtype of ``x`` for floating inputs and float32
        otherwise; all zeros for constant images.

    Raises:
        ValueError: If ``x`` is not a finite 4D or 5D real tensor, or an option is invalid (see
            :func:`mlngm`).

    Examples:
        >>> import torch
        >>> x = torch.zeros(2, 1, 64, 64)
        >>> x[:, :, 16:48, 16:48] = 1.0
        >>> y = mlngm_torch(x)
        >>> tuple(y.shape), y.dtype, float(y.max())
        ((2, 1, 64, 64), torch.float32, 1.0)
    """
    if not isinstance(x, torch.Tensor):
        # The project reports every bad argument as ValueError, wrong types included.
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")  # noqa: TRY004
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (B, C, X, Y) or (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError("x must be real-valued, got a complex tensor")
    if x.numel() == 0:
        raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
    _check_options(levels, window, threshold)
    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        y = x.detach().to(work_dtype)
        if not torch.isfinite(y).all():
            raise ValueError("x contains NaN or infinite values")
        batch, channels, *spatial = y.shape
        y = y.reshape(batch * channels, 1, *spatial)
        stats_shape = (-1,) + (1,) * (len(spatial) + 1)
        lo = y.flatten(1).amin(dim=1).reshape(stats_shape)
        spread = y.flatten(1).amax(dim=1).reshape(stats_shape) - lo
        y = (y - lo) / torch.where(spread > 0, spread, 1.0)
        total = torch.zeros_like(y)
        for shape in _level_shapes(spatial, levels, window):
            level = _resize_torch(y, shape)
            gradient = _sobel_magnitude_torch(level)
            normalised = _local_normalise_torch(gradient, window, float(threshold), planar)
            total += _resize_torch(normalised, spatial)
        lo = total.flatten(1).amin(dim=1).reshape(stats_shape)
        spread = total.flatten(1).amax(dim=1).reshape(stats_shape) - lo
        total = torch.where(spread > 0, (total - lo) / torch.where(spread > 0, spread, 1.0), 0.0)
        return total.reshape(batch, channels, *spatial).to(out_dtype)
