"""The ablation's variants: which parts of LMISA each one keeps, and the TrainConfig that trains it.

==================  =====  ==============  ================  =====================
variant             MLNGM  reconstruction  shape critic      labels used
==================  =====  ==============  ================  =====================
source_only_raw     no     no              no                source
source_only_mlngm   yes    no              no                source
mlngm_recon         yes    yes             no                source
lmisa               yes    yes             yes               source
oracle              yes    no              no                source and target
==================  =====  ==============  ================  =====================

A new variant is one entry of :data:`_TABLE` (its flags and one line of description); everything else (the
ablation, its tables, the input its models take) follows from it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from data_utils.phantoms import TASKS
from lmisa_lite.config import TrainConfig
from lmisa_lite.profiles import DATA_KEYS, data_shapes, profile_settings


def _flags(mlngm: bool, reconstruction: bool, shape: bool, target_labels: bool = False) -> dict[str, bool]:
    return {
        "use_mlngm": mlngm,
        "use_reconstruction": reconstruction,
        "use_shape_constraint": shape,
        "supervise_target": target_labels,
    }


# name: (TrainConfig flags, description), in the order the tables list them
_TABLE: dict[str, tuple[dict[str, bool], str]] = {
    "source_only_raw": (_flags(False, False, False), "source labels, z-scored intensities, no adaptation"),
    "source_only_mlngm": (_flags(True, False, False), "source labels, MLNGM input"),
    "mlngm_recon": (_flags(True, True, False), "MLNGM + reconstruction of both domains"),
    "lmisa": (_flags(True, True, True), "MLNGM + reconstruction + shape critic (the full method)"),
    "oracle": (_flags(True, False, False, target_labels=True),
               "MLNGM, supervised on source and target labels (upper bound)"),
}
#: Training flags of each variant, in the order the tables list them.
VARIANTS: dict[str, dict[str, bool]] = {name: flags for name, (flags, _) in _TABLE.items()}
#: One line per variant for tables and notebooks.
VARIANT_DESCRIPTIONS: dict[str, str] = {name: text for name, (_, text) in _TABLE.items()}
_ALIASES = {"ct": "ct", "mri": "mri", "mr": "mri"}

#: The contrast no variant trains on, per task and direction. It is the extra contrast of the target's family
#: (CT -> MRI: T2-weighted MRI; MRI -> CT: non-contrast CT), except for the heart going MRI -> CT: without
#: contrast agent, blood and myocardium differ by about 5 HU, below the noise, so neither the chambers nor the
#: myocardium have an edge to find; T2-weighted MRI (a contrast of the source family no model saw) is used.
UNSEEN_MODALITY = {
    ("kidney", "ct2mri"): "mri_t2",
    ("kidney", "mri2ct"): "ct_noncontrast",
    ("heart", "ct2mri"): "mri_t2",
    ("heart", "mri2ct"): "mri_t2",
}
MODALITY_TITLES = {"ct": "CT", "mri": "MRI", "mri_t2": "T2-weighted MRI", "ct_noncontrast": "non-contrast CT"}


def parse_direction(direction: str) -> tuple[str, str]:
    """``(source, target)`` modalities of a direction such as ``"ct2mri"``, ``"CT->MRI"`` or ``"mr2ct"``.

    Args:
        direction: Two modalities (``ct``, ``mri`` or ``mr``, any case) joined by ``2``, ``->``, ``→`` or
            ``to``; spaces are ignored.

    Returns:
        ``("ct", "mri")`` or ``("mri", "ct")``.

    Raises:
        ValueError: If ``direction`` is not one of these forms.

    Examples:
        >>> parse_direction("CT->MRI"), parse_direction("mri2ct")
        (('ct', 'mri'), ('mri', 'ct'))
    """
    text = str(direction).strip().lower().replace(" ", "") if isinstance(direction, str) else None
    parts = None
    if text:
        for sep in ("->", "→", "_to_", "-to-", "to", "2"):
            if sep in text:
                parts = text.split(sep)
                break
    if (
        not parts
        or len(parts) != 2
        or any(p not in _ALIASES for p in parts)
        or _ALIASES[parts[0]] == _ALIASES[parts[1]]
    ):
        raise ValueError(f"direction={direction!r}: expected 'ct2mri' or 'mri2ct' (also 'CT->MRI', 'mr2ct')")
    return _ALIASES[parts[0]], _ALIASES[parts[1]]


def check_task(task: str) -> None:
    """Raise ValueError unless ``task`` is a phantom task."""
    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")


def check_dims(dims: int) -> None:
    """Raise ValueError unless ``dims`` is 2 or 3."""
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"dims={dims!r}: expected 2 or 3")


def check_seed(seed: int) -> None:
    """Raise ValueError unless ``seed`` is a non-negative integer."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")


def check_variants(variants: str | Iterable[str] | None) -> list[str]:
    """The chosen variant names in order, without repeats (None: all of :data:`VARIANTS`)."""
    if variants is None:
        return list(VARIANTS)
    chosen = [variants] if isinstance(variants, str) else list(variants)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"variants={variants!r}: expected a non-empty selection of {list(VARIANTS)}")
    return list(dict.fromkeys(chosen))


def variant_config(
    variant: str,
    task: str,
    *,
    dims: int = 2,
    profile: str = "standard",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    out_dir: str | os.PathLike | None = None,
    device: str = "auto",
    progress: bool = False,
) -> TrainConfig:
    """The :class:`TrainConfig` of one ablation variant.

    Args:
        variant: A key of :data:`VARIANTS`.
        task: ``"kidney"`` or ``"heart"``.
        dims: 2 or 3.
        profile: A key of :data:`PROFILES`.
        overrides: As for :func:`profile_settings`.
        seed: The run's seed (weights and batches).
        out_dir: Checkpoint folder of this variant, or None.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        progress: Show the training progress bar.

    Returns:
        The validated config.

    Raises:
        ValueError: For an unknown variant, task, profile or override, or bad ``dims``.

    Examples:
        >>> variant_config("mlngm_recon", "kidney", profile="quick").use_shape_constraint
        False
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {list(VARIANTS)}")
    check_task(task)
    check_dims(dims)
    check_seed(seed)
    settings = profile_settings(profile, overrides=overrides, task=task)
    _, size = data_shapes(settings, dims)
    train_fields = {k: v for k, v in settings.items() if k not in DATA_KEYS}
    return TrainConfig(
        task=task,
        spatial_dims=dims,
        image_size=size,
        seed=int(seed),
        out_dir=None if out_dir is None else os.fspath(out_dir),
        device=device,
        progress=progress,
        **train_fields,
        **VARIANTS[variant],
    )
