"""Turn loaded cases into arrays a network can take: normalisation, resampling, cropping and slicing.

The MLNGM-based network input itself is :func:`lmisa_lite.preprocessing.network_input`.

Arrays follow the package convention ``(X, Y)`` or ``(X, Y, Z)``, with 2D slices along the last axis.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from data_utils.case import Case


def zscore(x: np.ndarray, *, eps: float = 1e-8) -> np.ndarray:
    """Shift and scale ``x`` to zero mean and unit standard deviation.

    Args:
        x: Array of any shape.
        eps: Arrays whose standard deviation is below this are returned as zeros.

    Returns:
        Float32 array of the same shape.

    Raises:
        ValueError: If ``x`` holds NaN or infinite values.

    Examples:
        >>> z = zscore(np.array([1.0, 2.0, 3.0]))
        >>> z.dtype, [round(float(v), 3) for v in z]
        (dtype('float32'), [-1.225, 0.0, 1.225])
        >>> zscore(np.full((2, 2), 7.0)).tolist()
        [[0.0, 0.0], [0.0, 0.0]]
    """
    x = np.asarray(x)
    mean = x.mean(dtype=np.float64)
    std = x.std(dtype=np.float64)
    if not np.isfinite(std):
        raise ValueError("x contains NaN or infinite values; cannot z-score it")
    if std < eps:
        return np.zeros(x.shape, dtype=np.float32)
    return ((x - mean) / std).astype(np.float32)


def _target_shape(array_shape: tuple[int, ...], shape: Sequence[int | None]) -> tuple[int, ...]:
    if len(shape) != len(array_shape):
        raise ValueError(f"shape {tuple(shape)} needs one entry per array axis, array is {array_shape}")
    target = tuple(n if s is None else int(s) for n, s in zip(array_shape, shape))
    if any(s < 1 for s in target):
        raise ValueError(f"shape entries must be positive (or None to keep an axis), got {tuple(shape)}")
    return target


def _crop_pad_offsets(array_shape: tuple[int, ...], target: tuple[int, ...]) -> list[int]:
    """Index in the input of the output's first voxel, per axis (negative where padding)."""
    return [(n - s) // 2 if n >= s else -((s - n) // 2) for n, s in zip(array_shape, target)]


def crop_or_pad(array: np.ndarray, shape: Sequence[int | None], *, value: float = 0) -> np.ndarray:
    """Centre-crop or pad ``array`` to ``shape``, axis by axis.

    Where an axis shrinks, ``(n - s) // 2`` voxels are cut from its start and the rest from its end;
    where it grows, ``(s - n) // 2`` voxels of ``value`` go before and the rest after. Cropping and then
    padding back to the original size therefore puts the kept voxels where they were.

    Args:
        array: ``(X, Y)`` or ``(X, Y, Z)`` (any number of axes works).
        shape: Target size per axis; ``None`` keeps that axis.
        value: Fill value for padding.

    Returns:
        Array of the target shape and the input dtype.

    Raises:
        ValueError: If ``shape`` has the wrong length or a non-positive entry.

    Examples:
        >>> crop_or_pad(np.arange(5), (3,)).tolist()
        [1, 2, 3]
        >>> crop_or_pad(np.ones((2, 2)), (4, None)).shape
        (4, 2)
    """
    array = np.asarray(array)
    target = _target_shape(array.shape, shape)
    out = np.full(target, value, dtype=array.dtype)
    src, dst = [], []
    for n, s, start in zip(array.shape, target, _crop_pad_offsets(array.shape, target)):
        if n >= s:  # crop (an offset of 0 is also what padding by one voxel gives, so test the sizes)
            src.append(slice(start, start + s))
            dst.append(slice(0, s))
        else:
            src.append(slice(0, n))
            dst.append(slice(-start, -start + n))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _spacing_tuple(case: Case, spacing: float | Sequence[float]) -> tuple[float, ...]:
    if np.isscalar(spacing):
        spacing = (float(spacing),) * case.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != case.ndim or any(s <= 0 for s in spacing):
        raise ValueError(
            f"spacing must be {case.ndim} positive values for case {case.case_id!r}, got {spacing}"
        )
    return spacing


def resample(case: Case, spacing: float | Sequence[float], *, order: int = 1) -> Case:
    """Resample a case to a new voxel size.

    The new grid covers the same field of view: it has ``round(n * old / new)`` voxels per axis and its
    first voxel's outer edge coincides with the old grid's. The image is interpolated with a spline of
    ``order`` (1 = linear), the label with nearest neighbour.

    Args:
        case: A 2D or 3D case.
        spacing: Target voxel size in mm, one value per axis or one for all.
        order: Spline order for the image (0-5).

    Returns:
        A new case with the resampled image and label and the updated ``spacing`` and ``affine``.

    Raises:
        ValueError: If ``spacing`` does not give one positive value per axis.

    Examples:
        >>> c = Case(np.zeros((8, 8, 4)), None, (1.0, 1.0, 2.0), "c0", "ct")
        >>> resample(c, 2.0).shape
        (4, 4, 4)
    """
    new_spacing = _spacing_tuple(case, spacing)
    factors = np.array(new_spacing) / np.array(case.spacing)
    shape = tuple(max(1, round(n / f)) for n, f in zip(case.shape, factors))
    # New voxel i sits at old index (i + 0.5) * f - 0.5: the outer edges of the first voxels coincide.
    offset = 0.5 * factors - 0.5
    image = ndimage.affine_transform(
        case.image, factors, offset=offset, output_shape=shape, order=order, mode="nearest"
    )
    label = None
    if case.label is not None:
        label = ndimage.affine_transform(
            case.label, factors, offset=offset, output_shape=shape, order=0, mode="nearest"
        )
    step = np.eye(4)
    step[: case.ndim, : case.ndim] = np.diag(factors)
    step[: case.ndim, 3] = offset
    return dataclasses.replace(
        case, image=image, label=label, spacing=new_spacing, affine=case.affine @ step
    )


def fit_to_shape(case: Case, shape: Sequence[int | None], *, image_value: float | None = None) -> Case:
    """Centre-crop or pad a case's image and label to ``shape``, keeping the voxel size.

    This does not rescale: call :func:`resample` first to change the voxel size, then this to get a
    fixed array size. The affine is shifted so the voxels keep their world positions.

    Args:
        case: A 2D or 3D case.
        shape: Target size per axis; ``None`` keeps that axis.
        image_value: Fill for padded image voxels; default the image minimum (air in CT, background in
            MR). Padded label voxels are 0.

    Returns:
        A new case of the target shape.

    Raises:
        ValueError: If ``shape`` does not match the case's number of axes.

    Examples:
        >>> c = Case(np.ones((6, 6)), np.ones((6, 6)), (1.0, 1.0), "c0", "ct")
        >>> fit_to_shape(c, (4, 8)).shape
        (4, 8)
    """
    target = _target_shape(case.shape, shape)
    fill = float(case.image.min()) if image_value is None else float(image_value)
    image = crop_or_pad(case.image, target, value=fill)
    label = None if case.label is None else crop_or_pad(case.label, target, value=0)
    shift = np.eye(4)
    shift[: case.ndim, 3] = _crop_pad_offsets(case.shape, target)
    return dataclasses.replace(case, image=image, label=label, affine=case.affine @ shift)


def extract_slices(case: Case, *, foreground_only: bool = False, min_foreground: int = 1) -> list[Case]:
    """Cut a 3D case into 2D cases, one per slice along the last axis.

    Each slice is a case with ``case_id`` suffixed ``_z012`` (the slice index), the in-plane spacing
    ``spacing[:2]`` and a 4x4 affine whose origin is moved to that slice (its third column still points
    along the dropped axis). A 2D case is returned as a one-element list (if it passes the foreground
    test).

    Args:
        case: A 3D case ``(X, Y, Z)`` (2D is passed through).
        foreground_only: Keep only slices with at least ``min_foreground`` labelled voxels.
        min_foreground: Foreground voxel count for ``foreground_only``.

    Returns:
        2D cases ``(X, Y)`` in slice order.

    Raises:
        ValueError: If ``foreground_only`` is set for an unlabelled case.

    Examples:
        >>> c = Case(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)), (1.0, 1.0, 2.0), "v", "ct")
        >>> [s.case_id for s in extract_slices(c)]
        ['v_z000', 'v_z001', 'v_z002']
    """
    if foreground_only and case.label is None:
        raise ValueError(f"foreground_only needs a label, but case {case.case_id!r} has none")

    def keep(label: np.ndarray | None) -> bool:
        return not foreground_only or int(np.count_nonzero(label)) >= min_foreground

    if case.ndim == 2:
        return [case] if keep(case.label) else []
    slices = []
    for z in range(case.shape[-1]):
        label = None if case.label is None else case.label[..., z]
        if not keep(label):
            continue
        affine = case.affine.copy()
        affine[:3, 3] = case.affine[:3, 3] + z * case.affine[:3, 2]
        slices.append(
            dataclasses.replace(
                case,
                image=np.ascontiguousarray(case.image[..., z]),
                label=None if label is None else np.ascontiguousarray(label),
                spacing=case.spacing[:2],
                case_id=f"{case.case_id}_z{z:03d}",
                affine=affine,
            )
        )
    return slices


def foreground_bbox(label: np.ndarray, *, margin: int | Sequence[int] = 0) -> tuple[slice, ...]:
    """Bounding box of the non-zero voxels of a label map, as slices for indexing.

    Args:
        label: ``(X, Y)`` or ``(X, Y, Z)`` label map.
        margin: Voxels added on each side (one value, or one per axis), clipped to the array.

    Returns:
        One ``slice`` per axis, so ``array[foreground_bbox(label)]`` crops to the foreground.

    Raises:
        ValueError: If ``label`` has no foreground, or ``margin`` has the wrong length or is negative.

    Examples:
        >>> lab = np.zeros((5, 5), np.uint8); lab[1:3, 2] = 1
        >>> foreground_bbox(lab)
        (slice(1, 3, None), slice(2, 3, None))
    """
    label = np.asarray(label)
    margins = [int(margin)] * label.ndim if np.isscalar(margin) else [int(m) for m in margin]
    if len(margins) != label.ndim or any(m < 0 for m in margins):
        raise ValueError(f"margin must be one or {label.ndim} non-negative integers, got {margin}")
    found = np.nonzero(label)
    if found[0].size == 0:
        raise ValueError("label has no foreground voxels; no bounding box")
    return tuple(
        slice(max(0, int(idx.min()) - m), min(n, int(idx.max()) + 1 + m))
        for idx, m, n in zip(found, margins, label.shape)
    )
