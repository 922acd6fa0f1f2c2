"""Read and write cases as NIfTI files, in canonical (RAS) voxel order.

Every loader in :mod:`data_utils.loaders` goes through :func:`load_case`, so all of them share the same
rules: arrays are reoriented to the closest canonical (RAS+) order, so that 3D arrays read ``(X, Y, Z)``
with axial slices along the last axis; the header's intensity scaling is applied; images become float32
and label maps uint8.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import nibabel as nib
import numpy as np

from data_utils.case import Case
from data_utils.atomic import atomic_path

# Largest difference (mm) tolerated between the image and label affines. Files written by different
# tools store the same grid with float32 rounding differences of about 1e-5 mm.
AFFINE_ATOL = 1e-3

NIFTI_SUFFIXES = (".nii.gz", ".nii")


def nifti_stem(path: str | os.PathLike) -> str:
    """Return a file name without its ``.nii`` or ``.nii.gz`` extension.

    Args:
        path: A file path.

    Returns:
        The file name with a NIfTI extension removed (other names are returned unchanged).

    Examples:
        >>> nifti_stem("ct_train/ct_train_1001_image.nii.gz")
        'ct_train_1001_image'
    """
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def to_canonical(
    data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Reorient a 3D array to the closest canonical (RAS+) voxel order, like ``nib.as_closest_canonical``.

    Axes are only permuted and flipped, never resampled: afterwards the first axis increases towards the
    patient's Right, the second towards Anterior and the third towards Superior.

    Args:
        data: 3D array ``(I, J, K)`` in the voxel order of ``affine``.
        affine: 4x4 voxel-to-world (RAS mm) matrix of ``data``.
        zooms: Voxel size (mm) along each axis of ``data``, 3 values.

    Returns:
        ``(canonical, new_affine, new_zooms)``: the reoriented array (a view of ``data`` where possible),
        the 4x4 affine that maps its voxels to the same world positions, and the voxel size along its axes.

    Examples:
        >>> flipped = np.diag([-2.0, 1.0, 3.0, 1.0])  # first axis runs towards the Left
        >>> data, affine, zooms = to_canonical(np.arange(24).reshape(2, 3, 4), flipped, (2.0, 1.0, 3.0))
        >>> data.shape, int(data[0, 0, 0]), affine[:3, 3].tolist(), zooms
        ((2, 3, 4), 12, [-2.0, 0.0, 0.0], (2.0, 1.0, 3.0))
    """
    ornt = nib.io_orientation(affine)
    canonical = nib.apply_orientation(data, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    new_zooms = [0.0, 0.0, 0.0]
    for axis, (target, _flip) in enumerate(ornt):
        new_zooms[int(target)] = float(zooms[axis])
    return canonical, new_affine, tuple(new_zooms)


def _drop_single_slice(data: np.ndarray, affine: np.ndarray, zooms: tuple[float, ...]):
    """Turn a 3D array with one axis of length 1 into a 2D array.

    The length-1 axis is moved to the end (the affine's columns and the zooms follow it), then dropped;
    the 4x4 affine keeps that axis as its third column, so it still maps ``(i, j, 0)`` to world space.
    """
    singles = [axis for axis in range(3) if data.shape[axis] == 1]
    if not singles or data.shape.count(1) == 3:
        return data, affine, zooms
    axis = 2 if 2 in singles else singles[0]
    order = [a for a in range(3) if a != axis] + [axis]
    data = np.transpose(data, order)[..., 0]
    affine = affine.copy()
    affine[:3, :3] = affine[:3, order]
    return data, affine, tuple(zooms[a] for a in order[:2])


def _read_nifti(path: str | os.PathLike, *, role: str, as_label: bool):
    """Read one NIfTI file and return ``(array, affine, spacing)`` in canonical order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{role} file not found: {path}")
    if path.is_dir():
        raise ValueError(f"{role} path {path} is a folder; expected a NIfTI file (.nii or .nii.gz)")
    try:
        img = nib.load(path)
        if as_label:
            data = np.asanyarray(img.dataobj)
        else:
            data = img.get_fdata(dtype=np.float32)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as err:  # nibabel raises many types for damaged or foreign files
        raise ValueError(f"cannot read {role} file {path}: {err}") from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
        zooms = zooms[:2] + (float(np.linalg.norm(affine[:3, 2])) or 1.0,)
    if data.ndim != 3:
        raise ValueError(f"{role} file {path} holds a {data.ndim}D array {data.shape}; expected 2D or 3D")
    data, affine, zooms = to_canonical(data, affine, zooms[:3])
    data, affine, zooms = _drop_single_slice(data, affine, zooms)
    return data, affine, zooms


def _label_codes(data: np.ndarray, path: Path) -> np.ndarray:
    """Check that a label array holds integers and return it with an integer dtype."""
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return data
    if not np.isfinite(data).all():
        raise ValueError(f"label file {path} contains NaN or infinite values; expected integer labels")
    if not np.array_equal(data, np.round(data)):
        sample = np.unique(data[data != np.round(data)])[:5]
        raise ValueError(
            f"label file {path} contains non-integer values (e.g. {sample.tolist()}); expected integer labels"
        )
    if data.size and (data.min() < np.iinfo(np.int32).min or data.max() > np.iinfo(np.int32).max):
        raise ValueError(f"label file {path} has values outside the int32 range")
    return data.astype(np.int32)


def _map_labels(codes: np.ndarray, label_map: Mapping[int, int] | None, path: Path) -> np.ndarray:
    """Apply ``label_map`` to integer label codes and return uint8 classes."""
    present = np.unique(codes)
    if label_map is None:
        bad = present[(present < 0) | (present > 255)]
        if bad.size:
            raise ValueError(
                f"label file {path} has values {bad[:8].tolist()} outside 0..255; pass a label_map "
                "to translate the data set's codes"
            )
        return codes.astype(np.uint8)
    unknown = [int(v) for v in present if int(v) not in label_map]
    if unknown:
        raise ValueError(
            f"label file {path} has unexpected label values {unknown[:8]}; expected only "
            f"{sorted(int(k) for k in label_map)}"
        )
    out = np.zeros(codes.shape, dtype=np.uint8)
    for value in present:
        target = int(label_map[int(value)])
        if not 0 <= target <= 255:
            raise ValueError(f"label_map sends {int(value)} to {target}; classes must lie in 0..255")
        if target:
            out[codes == value] = target
    return out


def load_case(
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
    *,
    modality: str = "",
    case_id: str | None = None,
    task: str = "",
    label_map: Mapping[int, int] | None = None,
) -> Case:
    """Load a NIfTI image (and optionally its label map) as a :class:`~data_utils.case.Case`.

    Both files are reoriented to the closest canonical (RAS+) voxel order, so 3D arrays come back as
    ``(X, Y, Z)`` with axial slices along the last axis, whatever order the file stores. The spacing is
    the header's voxel size (``pixdim``) permuted to that order. The header's intensity scaling
    (``scl_slope``/``scl_inter``) is applied and the image is returned as float32.

    A file holding a single slice, stored either as a 2D NIfTI or as 3D with one axis of length 1, is
    returned as a 2D ``(X, Y)`` case: the length-1 axis is dropped and becomes the third column of the
    4x4 affine. Trailing length-1 axes beyond the third (``(X, Y, Z, 1)``) are dropped too.

    Args:
        image_path: The image file (``.nii`` or ``.nii.gz``; other formats nibabel reads also work).
        label_path: The label map on the same voxel grid, or ``None`` for an unlabelled case.
        modality: Stored on the case, e.g. ``"ct"`` or ``"mri"``.
        case_id: Identifier; defaults to the image file name without its extension.
        task: Stored on the case, e.g. ``"kidney"`` or ``"heart"``.
        label_map: Translation from the file's label codes to classes, e.g. ``{0: 0, 1: 1, 2: 1}``.
            Every code found in the file must be a key. Without a map, labels must lie in 0..255.

    Returns:
        The case: image float32 ``(X, Y, Z)`` or ``(X, Y)``, label uint8 of the same shape (or ``None``),
        spacing in mm, canonical affine.

    Raises:
        FileNotFoundError: If a file does not exist.
        ValueError: If a file cannot be read, is not 2D/3D, the image holds NaN or infinite values, the
            label holds non-integer or unexpected values, or image and label differ in shape or affine.
            The message names the file.

    Examples:
        >>> import tempfile, numpy as np
        >>> from data_utils.case import Case
        >>> folder = tempfile.mkdtemp()
        >>> c = Case(np.ones((4, 3, 2)), np.zeros((4, 3, 2)), (1.0, 1.0, 2.0), "c0", "ct")
        >>> save_case(c, f"{folder}/img.nii.gz", f"{folder}/lab.nii.gz")
        >>> load_case(f"{folder}/img.nii.gz", f"{folder}/lab.nii.gz", modality="ct").spacing
        (1.0, 1.0, 2.0)
    """
    image_path = Path(image_path)
    image, affine, spacing = _read_nifti(image_path, role="image", as_label=False)
    if not np.isfinite(image).all():
        count = int(image.size - np.count_nonzero(np.isfinite(image)))
        raise ValueError(f"image file {image_path} contains {count} NaN or infinite values")
    label = None
    if label_path is not None:
        label_path = Path(label_path)
        codes, label_affine, _ = _read_nifti(label_path, role="label", as_label=True)
        if codes.shape != image.shape:
            raise ValueError(
                f"label file {label_path} has shape {codes.shape} but image file {image_path} has "
                f"shape {image.shape} (after reorientation); they must share one voxel grid"
            )
        if not np.allclose(label_affine, affine, rtol=0.0, atol=AFFINE_ATOL):
            raise ValueError(
                f"label file {label_path} has a different affine from image file {image_path}:\n"
                f"{np.round(label_affine, 4)}\nvs\n{np.round(affine, 4)}"
            )
        label = _map_labels(_label_codes(codes, label_path), label_map, label_path)
    return Case(
        image=np.ascontiguousarray(image, dtype=np.float32),
        label=None if label is None else np.ascontiguousarray(label),
        spacing=spacing,
        case_id=nifti_stem(image_path) if case_id is None else case_id,
        modality=modality,
        affine=affine,
        task=task,
    )


def _affine_for(case: Case) -> np.ndarray:
    """Return the case affine with its axis columns scaled to ``case.spacing``.

    ``case.spacing`` is authoritative: each voxel axis keeps its direction but gets the case's voxel size.
    This leaves consistent cases unchanged and turns the default identity affine into ``diag(spacing)``.
    """
    affine = np.array(case.affine, dtype=np.float64)
    for axis, size in enumerate(case.spacing):
        column = affine[:3, axis]
        norm = np.linalg.norm(column)
        direction = column / norm if norm > 0 else np.eye(3)[axis]
        affine[:3, axis] = direction * size
    if case.ndim == 2 and np.linalg.norm(affine[:3, 2]) == 0:
        affine[:3, 2] = (0.0, 0.0, 1.0)
    return affine


def _check_nifti_path(path: str | os.PathLike, role: str) -> Path:
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise ValueError(f"{role} path {path} must end with .nii or .nii.gz")
    return path


def save_nifti(img: nib.Nifti1Image, path: str | os.PathLike) -> None:
    """Write a nibabel image to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    The image goes to a temporary file in the same folder, then is renamed onto ``path``: an interrupted write
    leaves no partial file and keeps any earlier one.
    """
    path = Path(path)
    with atomic_path(path, suffix=".nii.gz" if path.name.endswith(".nii.gz") else ".nii") as tmp:
        nib.save(img, tmp)


def _nifti_image(array: np.ndarray, affine: np.ndarray, dtype: type) -> nib.Nifti1Image:
    data = np.asarray(array, dtype=dtype)
    if data.ndim == 2:
        data = data[..., None]
    img = nib.Nifti1Image(data, affine)
    img.set_data_dtype(dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return img


def save_case(
    case: Case,
    image_path: str | os.PathLike,
    label_path: str | os.PathLike | None = None,
) -> None:
    """Write a case as NIfTI: the image as float32 and, if ``label_path`` is given, the label as uint8.

    The files carry the case affine with each axis column scaled to ``case.spacing`` (so a case with the
    default identity affine is written with ``diag(spacing)``). 2D cases are written as ``(X, Y, 1)``;
    :func:`load_case` reads them back as 2D. Each file is written to a temporary file in the target folder
    and then renamed, so a reader never sees a half-written file. Missing folders are created.

    Args:
        case: The case to write.
        image_path: Target for the image, ending in ``.nii`` or ``.nii.gz`` (compressed).
        label_path: Target for the label map, or ``None`` to write the image only.

    Raises:
        ValueError: If a path does not end in ``.nii``/``.nii.gz``, or ``label_path`` is given for an
            unlabelled case.

    Examples:
        >>> import tempfile, numpy as np
        >>> from data_utils.case import Case
        >>> c = Case(np.zeros((4, 4)), None, (0.5, 0.5), "c0", "mri")
        >>> save_case(c, f"{tempfile.mkdtemp()}/sub/c0.nii.gz")
    """
    image_path = _check_nifti_path(image_path, "image")
    if label_path is not None:
        label_path = _check_nifti_path(label_path, "label")
        if case.label is None:
            raise ValueError(f"case {case.case_id!r} has no label to write to {label_path}")
    affine = _affine_for(case)
    save_nifti(_nifti_image(case.image, affine, np.float32), image_path)
    if label_path is not None:
        save_nifti(_nifti_image(case.label, affine, np.uint8), label_path)
