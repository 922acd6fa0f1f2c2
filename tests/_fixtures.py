"""Writers for tiny data-set fixtures in the published layouts (NIfTI headers written as-is)."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

# KiTS19 stores arrays as (slice, row, column) with an affine that maps the first axis to -z.
KITS_SPACING = (3.0, 0.78, 0.78)  # slice thickness, in-plane spacing


def kits_affine(slice_mm: float = KITS_SPACING[0], pixel_mm: float = KITS_SPACING[1]) -> np.ndarray:
    return np.array(
        [[0.0, 0.0, -pixel_mm, 0.0], [0.0, -pixel_mm, 0.0, 0.0], [-slice_mm, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]]
    )


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    dtype: type | None = None,
    slope: float | None = None,
    inter: float | None = None,
) -> Path:
    """Write ``data`` unchanged (raw values) with ``affine`` and optional scaling in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    img = nib.Nifti1Image(data, np.eye(4) if affine is None else affine, dtype=dtype or data.dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, inter if inter is not None else 0.0)
    nib.save(img, path)
    return path


def world(affine: np.ndarray, index) -> np.ndarray:
    """World coordinates of a voxel index under ``affine``."""
    return (np.asarray(affine) @ np.r_[np.asarray(index, dtype=float), 1.0])[:3]
