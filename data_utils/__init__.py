"""Data utilities: synthetic CT/MRI phantoms, NIfTI I/O, dataset loaders and input preparation.

Everything is importable from the package itself (loaded on first use)::

    from data_utils import make_phantom, make_dataset, load_case, save_case, load_mmwhs, zscore
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Case": "data_utils.case",
    "make_phantom": "data_utils.phantoms",
    "make_dataset": "data_utils.phantoms",
    "load_case": "data_utils.nifti",
    "save_case": "data_utils.nifti",
    "load_mmwhs": "data_utils.loaders",
    "load_kits19": "data_utils.loaders",
    "load_nifti_folder": "data_utils.loaders",
    "load_chaos": "data_utils.loaders",
    "zscore": "data_utils.prepare",
    "crop_or_pad": "data_utils.prepare",
    "resample": "data_utils.prepare",
    "fit_to_shape": "data_utils.prepare",
    "extract_slices": "data_utils.prepare",
    "foreground_bbox": "data_utils.prepare",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'data_utils' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
