"""Loaders for the public data sets in their published folder layouts.

Each loader returns a list of :class:`~data_utils.case.Case` in canonical ``(X, Y, Z)`` order (see
:func:`data_utils.nifti.load_case`), sorted by case number, with labels translated to this package's
classes: the kidney task is binary (kidney = 1) and the heart task uses MYO=1, LAC=2, LVC=3, AA=4.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from data_utils.case import Case
from data_utils.nifti import load_case, nifti_stem, to_canonical

# MMWHS codes: 205 MYO, 420 LAC, 500 LVC, 550 RA, 600 RV, 820 AA, 850 PA. Structures the cross-modality
# benchmark does not segment become background.
MMWHS_LABEL_MAP: dict[int, int] = {0: 0, 205: 1, 420: 2, 500: 3, 550: 0, 600: 0, 820: 4, 850: 0}

# KiTS19: 1 kidney, 2 tumour; the tumour lies inside the kidney, so both count as kidney.
KITS19_LABEL_MAP: dict[int, int] = {0: 0, 1: 1, 2: 1}

# CHAOS MR masks: grey-level ranges (inclusive) of each organ and the class it becomes here.
CHAOS_GREY_LEVELS: dict[str, tuple[int, int, int]] = {
    "liver": (55, 70, 0),
    "right_kidney": (110, 135, 1),
    "left_kidney": (175, 200, 1),
    "spleen": (240, 255, 0),
}

_CHAOS_SEQUENCES = {
    "T1DUAL_in": (("T1DUAL", "DICOM_anon", "InPhase"), "T1DUAL", "mri"),
    "T1DUAL_out": (("T1DUAL", "DICOM_anon", "OutPhase"), "T1DUAL", "mri"),
    "T2SPIR": (("T2SPIR", "DICOM_anon"), "T2SPIR", "mri_t2"),
}


def _existing_folder(root: str | os.PathLike, what: str = "data folder") -> Path:
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{what} not found: {root}")
    if not root.is_dir():
        raise ValueError(f"{what} {root} is not a folder")
    return root


def _number(text: str) -> int:
    """Last integer in ``text`` (for sorting file and folder names numerically)."""
    found = re.findall(r"\d+", text)
    return int(found[-1]) if found else -1


def load_mmwhs(
    root: str | os.PathLike,
    modality: str,
    *,
    label_map: Mapping[int, int] | None = None,
) -> list[Case]:
    """Load the labelled MMWHS 2017 training volumes of one modality.

    Layout: ``root/ct_train/ct_train_1001_image.nii.gz`` with ``ct_train_1001_label.nii.gz`` next to it
    (``mr_train/mr_train_1001_...`` for MRI). ``root`` may also be the ``ct_train``/``mr_train`` folder.
    Labels 205/420/500/820 become MYO=1, LAC=2, LVC=3, AA=4 and the other structures (550 RA, 600 RV,
    850 PA) background.

    Args:
        root: The challenge folder holding ``ct_train``/``mr_train``, or one of those folders.
        modality: ``"ct"``, or ``"mri"`` (also accepted: ``"mr"``).
        label_map: Replacement for :data:`MMWHS_LABEL_MAP` (code -> class). Every code present in a
            label file must be a key.

    Returns:
        Cases sorted by case number; ``case_id`` like ``"ct_train_1001"``, ``modality`` ``"ct"`` or
        ``"mri"``, ``task`` ``"heart"``.

    Raises:
        FileNotFoundError: If ``root`` or a label file is missing.
        ValueError: If no images are found, or a label file holds a code outside the map (the message
            names the file).

    Examples:
        >>> cases = load_mmwhs("MMWHS", "mri")  # doctest: +SKIP
        >>> cases[0].case_id, cases[0].label.max()  # doctest: +SKIP
        ('mr_train_1001', 4)
    """
    key = modality.lower()
    if key not in ("ct", "mri", "mr"):
        raise ValueError(f"modality must be 'ct' or 'mri' (or 'mr'), got {modality!r}")
    prefix = "ct_train" if key == "ct" else "mr_train"
    root = _existing_folder(root)
    folder = root / prefix if (root / prefix).is_dir() else root
    pattern = re.compile(rf"^{prefix}_(\d+)_image\.nii(\.gz)?$")
    images = sorted(
        (p for p in folder.iterdir() if pattern.match(p.name)), key=lambda p: int(pattern.match(p.name)[1])
    )
    if not images:
        raise ValueError(f"no MMWHS images named {prefix}_<n>_image.nii.gz in {folder}")
    mapping = MMWHS_LABEL_MAP if label_map is None else dict(label_map)
    cases = []
    for image in images:
        label = image.with_name(image.name.replace("_image.nii", "_label.nii"))
        if not label.exists():
            raise FileNotFoundError(f"label file not found for {image}: expected {label}")
        case_id = nifti_stem(image)[: -len("_image")]
        cases.append(
            load_case(
                image,
                label,
                modality="ct" if key == "ct" else "mri",
                case_id=case_id,
                task="heart",
                label_map=mapping,
            )
        )
    return cases


def _kits_case_id(value: int | str) -> str:
    if isinstance(value, (int, np.integer)):
        return f"case_{int(value):05d}"
    text = str(value)
    return f"case_{int(text):05d}" if text.isdigit() else text


def load_kits19(root: str | os.PathLike, *, case_ids: Iterable[int | str] | None = None) -> list[Case]:
    """Load KiTS19 CT volumes with a binary kidney label (kidney and tumour -> 1).

    Layout: ``root/case_00000/imaging.nii.gz`` and ``segmentation.nii.gz``; ``root`` may also be the
    repository folder holding ``data/``. The files store the slice axis first, with an affine that says so;
    canonical reorientation brings the axial slices to the last axis, giving ``(X, Y, Z)``. Cases without
    ``segmentation.nii.gz`` (the test cases 210-299) load with ``label=None``.

    Args:
        root: Folder holding the ``case_XXXXX`` folders.
        case_ids: Cases to load, as numbers (``3``) or names (``"case_00003"``); default all, sorted.

    Returns:
        Cases with ``case_id`` like ``"case_00000"``, ``modality="ct"``, ``task="kidney"``.

    Raises:
        FileNotFoundError: If ``root``, a requested case or its ``imaging.nii.gz`` is missing.
        ValueError: If no cases are found or a segmentation holds values other than 0, 1, 2.

    Examples:
        >>> cases = load_kits19("kits19/data", case_ids=[0, 1])  # doctest: +SKIP
        >>> cases[0].shape  # (X, Y, Z), slices last  # doctest: +SKIP
        (512, 512, 611)
    """
    root = _existing_folder(root)
    if not any(root.glob("case_*")) and (root / "data").is_dir():
        root = root / "data"
    if case_ids is None:
        folders = sorted((p for p in root.glob("case_*") if p.is_dir()), key=lambda p: _number(p.name))
        if not folders:
            raise ValueError(f"no KiTS19 case_XXXXX folders in {root}")
    else:
        folders = [root / _kits_case_id(c) for c in case_ids]
        for folder in folders:
            if not folder.is_dir():
                raise FileNotFoundError(f"KiTS19 case folder not found: {folder}")
    cases = []
    for folder in folders:
        image = folder / "imaging.nii.gz"
        label = folder / "segmentation.nii.gz"
        cases.append(
            load_case(
                image,
                label if label.exists() else None,
                modality="ct",
                case_id=folder.name,
                task="kidney",
                label_map=KITS19_LABEL_MAP,
            )
        )
    return cases


def _default_label_path(image: Path) -> Path | None:
    name = image.name
    index = name.rfind("image")
    if index < 0:
        return None
    candidate = image.with_name(name[:index] + "label" + name[index + len("image") :])
    return candidate if candidate.exists() else None


def load_nifti_folder(
    root: str | os.PathLike,
    image_pattern: str = "*_image.nii*",
    label_pattern: str | Callable[[Path], str | os.PathLike | None] | None = None,
    *,
    modality: str = "",
    task: str = "",
    label_map: Mapping[int, int] | None = None,
) -> list[Case]:
    """Load any folder of NIfTI images, each paired with an optional label file.

    Pairing rule for the label of an image ``<folder>/<stem>.nii.gz``:

    - ``label_pattern=None``: the last ``"image"`` in the file name is replaced by ``"label"``
      (``ct_01_image.nii.gz`` -> ``ct_01_label.nii.gz``); if that file does not exist, or the name has
      no ``"image"``, the case is unlabelled.
    - a string: formatted with ``stem`` (the image name without ``.nii``/``.nii.gz``) and read relative
      to the image's folder, e.g. ``"{stem}_seg.nii.gz"`` or ``"../labels/{stem}.nii.gz"``; the file
      must exist.
    - a callable: called with the image path, returns the label path, or ``None`` for no label.

    Args:
        root: Folder to search.
        image_pattern: Glob for the images, relative to ``root`` (``"**/*.nii.gz"`` searches subfolders).
        label_pattern: How to find each image's label (see above).
        modality: Stored on every case.
        task: Stored on every case.
        label_map: Optional code -> class translation (see :func:`~data_utils.nifti.load_case`).

    Returns:
        Cases sorted by path; ``case_id`` is the image path relative to ``root`` without extension and
        without a trailing ``"_image"``.

    Raises:
        FileNotFoundError: If ``root`` or a label named by a string pattern is missing.
        ValueError: If no file matches ``image_pattern``, or a file is invalid (see ``load_case``).

    Examples:
        >>> cases = load_nifti_folder("scans", "*.nii.gz", "../masks/{stem}.nii.gz")  # doctest: +SKIP
    """
    root = _existing_folder(root)
    images = sorted(p for p in root.glob(image_pattern) if p.is_file())
    if not images:
        raise ValueError(f"no files matching {image_pattern!r} in {root}")
    cases = []
    for image in images:
        if label_pattern is None:
            label = _default_label_path(image)
        elif callable(label_pattern):
            found = label_pattern(image)
            label = None if found is None else Path(found)
        else:
            label = image.parent / label_pattern.format(stem=nifti_stem(image))
            if not label.exists():
                raise FileNotFoundError(
                    f"label file not found for {image}: expected {label} (label_pattern {label_pattern!r})"
                )
        relative = image.relative_to(root)
        case_id = str(relative.parent / nifti_stem(image)).replace(os.sep, "/")
        case_id = case_id.removesuffix("_image")
        cases.append(
            load_case(image, label, modality=modality, case_id=case_id, task=task, label_map=label_map)
        )
    return cases


# --------------------------------------------------------------------------------------------- CHAOS


def _chaos_mask_classes(grey: np.ndarray, path: Path) -> np.ndarray:
    """Map a CHAOS mask's grey levels to classes (kidneys 1, everything else 0)."""
    out = np.zeros(grey.shape, dtype=np.uint8)
    known = grey == 0
    for low, high, target in CHAOS_GREY_LEVELS.values():
        inside = (grey >= low) & (grey <= high)
        known |= inside
        out[inside] = target
    if not known.all():
        bad = np.unique(grey[~known])[:8].tolist()
        raise ValueError(
            f"mask file {path} has grey levels {bad} outside the CHAOS organ ranges "
            f"{[(lo, hi) for lo, hi, _ in CHAOS_GREY_LEVELS.values()]}"
        )
    return out


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image  # Pillow is a dependency of matplotlib and scikit-image

    try:
        with Image.open(path) as img:
            grey = np.asarray(img)
    except Exception as err:
        raise ValueError(f"cannot read mask file {path}: {err}") from err
    if grey.ndim == 3:  # RGB(A) saved masks repeat the grey level in every colour channel
        grey = grey[..., 0]
    return grey.astype(np.int32)


def _dicom_geometry(ds, path: Path):
    try:
        position = np.array([float(v) for v in ds.ImagePositionPatient])
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    except AttributeError as err:
        raise ValueError(f"DICOM file {path} lacks a geometry attribute: {err}") from err
    return position, orientation[:3], orientation[3:], row_spacing, col_spacing


def _load_chaos_series(series_dir: Path, mask_dir: Path | None, pydicom) -> tuple:
    """Read one CHAOS DICOM series (and its PNG masks) into RAS arrays ``(X, Y, Z)``."""
    files = sorted(series_dir.glob("*.dcm"))
    if not files:
        raise ValueError(f"no DICOM files (*.dcm) in {series_dir}")
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array.astype(np.float32)
        except Exception as err:
            raise ValueError(f"cannot read DICOM file {path}: {err}") from err
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        geometry = _dicom_geometry(ds, path)
        instance = int(getattr(ds, "InstanceNumber", _number(path.stem)) or _number(path.stem))
        slices.append((path, pixels * slope + intercept, geometry, instance))
    thickness = float(getattr(ds, "SliceThickness", 1.0) or 1.0)  # used only for a single-slice series

    first = slices[0]
    _, row_dir, col_dir, row_spacing, col_spacing = first[2]
    normal = np.cross(row_dir, col_dir)
    for path, pixels, geometry, _ in slices:
        if pixels.shape != first[1].shape:
            raise ValueError(f"DICOM file {path} has shape {pixels.shape}, expected {first[1].shape}")
        if not np.allclose(np.r_[geometry[1], geometry[2]], np.r_[row_dir, col_dir], atol=1e-4):
            raise ValueError(f"DICOM file {path} has a different ImageOrientationPatient from {first[0]}")

    masks = None
    if mask_dir is not None:
        pngs = sorted(mask_dir.glob("*.png"), key=lambda p: (_number(p.stem), p.name))
        if len(pngs) != len(slices):
            raise ValueError(f"{mask_dir} holds {len(pngs)} PNG masks for {len(slices)} DICOM slices")
        by_stem = {s[0].stem: s for s in slices}
        if all(p.stem in by_stem for p in pngs):  # masks named after their DICOM files
            ordered = [by_stem[p.stem] for p in pngs]
        else:  # otherwise mask order follows the acquisition (instance) order
            ordered = sorted(slices, key=lambda s: (s[3], s[0].name))
        masks = {}
        for png, s in zip(pngs, ordered):
            grey = _read_png(png)
            if grey.shape != s[1].shape:
                raise ValueError(f"mask file {png} has shape {grey.shape}, DICOM {s[0]} has {s[1].shape}")
            masks[s[0]] = _chaos_mask_classes(grey, png)

    slices.sort(key=lambda s: float(np.dot(s[2][0], normal)))
    positions = np.array([np.dot(s[2][0], normal) for s in slices])
    if len(slices) > 1 and np.any(np.diff(positions) <= 1e-4):
        raise ValueError(f"{series_dir} has several DICOM slices at the same position")
    if len(slices) > 1:
        step = (slices[-1][2][0] - slices[0][2][0]) / (len(slices) - 1)
        gaps = np.diff(positions)
        if np.abs(gaps - gaps.mean()).max() > 0.05 * gaps.mean():
            raise ValueError(
                f"{series_dir} has uneven slice gaps {np.round(gaps, 3).tolist()}: missing slices?"
            )
    else:
        step = normal * thickness

    # DICOM pixel (row r, column c) lies at IPP + c * col_spacing * row_dir + r * row_spacing * col_dir
    # (LPS). Storing arrays as (column, row, slice) makes the voxel axes (i, j, k) = (c, r, slice).
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_spacing
    lps[:3, 1] = col_dir * row_spacing
    lps[:3, 2] = step
    lps[:3, 3] = slices[0][2][0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS
    image = np.stack([s[1].T for s in slices], axis=-1)
    label = None if masks is None else np.stack([masks[s[0]].T for s in slices], axis=-1)
    return image, label, affine


def load_chaos(root: str | os.PathLike, *, sequence: str = "T1DUAL_in") -> list[Case]:
    """Load CHAOS abdominal MR series (DICOM + PNG masks) with a binary kidney label.

    Layout: ``root/MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/*.dcm`` and
    ``root/MR/<id>/T2SPIR/DICOM_anon/*.dcm``, with masks in ``T1DUAL/Ground/*.png`` (shared by both T1
    phases) and ``T2SPIR/Ground/*.png``; ``root`` may also be the ``MR`` folder. Mask grey levels: liver
    55-70, right kidney 110-135, left kidney 175-200, spleen 240-255; both kidneys become 1, the rest 0.
    Slices are sorted by position along the slice normal, the affine is built from
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing and converted from LPS to RAS, and the
    arrays are then reoriented to canonical ``(X, Y, Z)`` order. Masks are paired with slices by file name
    when they share it, otherwise in acquisition (InstanceNumber) order. Patients without masks load
    with ``label=None``.

    Needs ``pydicom`` (``pip install 'lmisa-lite[dicom]'``).

    Args:
        root: The CHAOS training folder (holding ``MR``) or the ``MR`` folder.
        sequence: ``"T1DUAL_in"`` (in-phase T1), ``"T1DUAL_out"`` (opposed-phase T1) or ``"T2SPIR"``.

    Returns:
        Cases sorted by patient number; ``case_id`` like ``"chaos_1_t1dual_in"``, ``modality`` ``"mri"``
        for T1 and ``"mri_t2"`` for T2SPIR, ``task="kidney"``.

    Raises:
        ImportError: If pydicom is not installed.
        FileNotFoundError: If ``root`` is missing.
        ValueError: If no patients or DICOM files are found, masks and slices do not match, or a mask
            holds a grey level outside the organ ranges (the message names the file).

    Examples:
        >>> cases = load_chaos("CHAOS_Train_Sets/Train_Sets", sequence="T2SPIR")  # doctest: +SKIP
    """
    from data_utils.optional import optional_import

    if sequence not in _CHAOS_SEQUENCES:
        raise ValueError(f"sequence must be one of {sorted(_CHAOS_SEQUENCES)}, got {sequence!r}")
    pydicom = optional_import("pydicom", extra="dicom")
    root = _existing_folder(root)
    mr = root / "MR" if (root / "MR").is_dir() else root
    patients = sorted((p for p in mr.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not patients:
        raise ValueError(f"no CHAOS patient folders (MR/<number>) in {root}")
    series_parts, ground_seq, modality = _CHAOS_SEQUENCES[sequence]
    cases = []
    for patient in patients:
        series_dir = patient.joinpath(*series_parts)
        if not series_dir.is_dir():
            raise FileNotFoundError(f"CHAOS series folder not found: {series_dir}")
        mask_dir = patient / ground_seq / "Ground"
        has_masks = mask_dir.is_dir() and any(mask_dir.glob("*.png"))
        image, label, affine = _load_chaos_series(series_dir, mask_dir if has_masks else None, pydicom)
        zooms = tuple(float(s) for s in np.linalg.norm(affine[:3, :3], axis=0))
        if label is not None:
            label = to_canonical(label, affine, zooms)[0]
        image, affine, spacing = to_canonical(image, affine, zooms)
        cases.append(
            Case(
                image=np.ascontiguousarray(image, dtype=np.float32),
                label=None if label is None else np.ascontiguousarray(label),
                spacing=spacing,
                case_id=f"chaos_{patient.name}_{sequence.lower()}",
                modality=modality,
                affine=affine,
                task="kidney",
            )
        )
    return cases
