"""Synthetic abdominal (kidney) and thoracic (heart) phantoms, rendered as CT and MR images.

A subject seed draws an anatomy in millimetres of patient space: body habitus, organ sizes, positions and
orientations, and a smooth random displacement field. Organs are superquadrics and capsules painted in
anatomical order into a structure map (:mod:`data_utils.anatomy`); each structure has a tissue
(:mod:`data_utils.tissues`) and a label. This module holds the public API: tasks, modalities and classes,
the structure map, the rendered phantom and data sets of phantoms.
The same map is then rendered through CT or MR physics, so ``make_phantom(task, "ct", seed=s)`` and
``make_phantom(task, "mri", seed=s)`` show one subject with one label map and unrelated intensities.

Axes follow the package convention ``(X, Y)`` / ``(X, Y, Z)``: X towards the patient's right, Y towards
anterior, Z towards superior (RAS), axial slices along the last axis. The field of view is fixed
(:data:`FIELD_OF_VIEW_MM`), so the anatomy scales with ``shape`` and the spacing is FOV / shape.

One anatomy for 2D and 3D: a 2D phantom is one axial slice of the subject's default volume
(:data:`DEFAULT_SHAPES` ``[3]``), evaluated directly on that plane. The slice (:func:`axial_slice`) is drawn
uniformly from the volume's slices, so 2D cases lack the organ as often as the slices of a volume do, and the
default 2D grid is the volume's in-plane grid (96 x 96 at 3.33 mm): a 2D model meets the same images whether it
is tested on 2D cases or slice by slice on volumes. The label map of a 2D case equals that slice of the volume's
(the image differs in its noise, which is drawn on the grid it is rendered on).

``plane="organs"`` gives the 2D layout of earlier versions instead: the plane through the middle of the organs
of interest, so every case holds them. With ``shape=(128, 128)`` it reproduces the phantoms that the committed
tables of ``results/investigation`` and ``results/speed`` were measured on.

Seeds: ``make_phantom(..., seed=s)`` is subject ``s`` (anatomy from ``(s, task)``; scanner settings and noise
from ``(s, task, modality)``). ``make_dataset(task, modality, n=n, seed=k)`` takes subject seeds from
``numpy.random.SeedSequence([k, modality_code, i])``, ``i < n``: CT and MRI sets with the same ``k`` hold
different (unpaired) subjects, and ``k = 0, 1, 2`` give disjoint training, validation and test sets. A
case_id ends in ``_s<subject seed>``, the seed that reproduces the case with :func:`make_phantom`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_utils.anatomy import INF, STRUCTURES, Canvas, build_abdomen, build_thorax  # noqa: F401 (INF: re-exported)
from data_utils.case import Case
from data_utils.tissues import render_ct, render_mri, smooth_noise

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_SHAPES",
    "FIELD_OF_VIEW_MM",
    "MODALITIES",
    "PLANES",
    "TASKS",
    "axial_slice",
    "make_dataset",
    "make_phantom",
    "make_tissue_map",
    "num_classes",
]

TASKS = ("kidney", "heart")
MODALITIES = ("ct", "mri", "mri_t2", "ct_noncontrast")
CLASS_NAMES = {"kidney": ["background", "kidney"], "heart": ["background", "MYO", "LAC", "LVC", "AA"]}
DEFAULT_SHAPES = {2: (96, 96), 3: (96, 96, 48)}
#: Where a 2D phantom cuts its subject: a uniformly drawn slice of the volume (default) or the organs' plane.
PLANES = ("volume", "organs")
FIELD_OF_VIEW_MM = (320.0, 320.0, 192.0)
_MODALITY_CODES = {"ct": 1, "mri": 2, "mri_t2": 3, "ct_noncontrast": 4}
_TASK_CODES = {"kidney": 1, "heart": 2}
_MR_SEQUENCE = {("kidney", "mri"): "t1_se", ("heart", "mri"): "bssfp",
                ("kidney", "mri_t2"): "t2_se", ("heart", "mri_t2"): "t2_se"}


def num_classes(task: str) -> int:
    """Number of label classes including background (kidney: 2, heart: 5).

    Examples:
        >>> num_classes("heart")
        5
    """
    _check_choice("task", task, TASKS)
    return len(CLASS_NAMES[task])


# ------------------------------------------------------------------------------------------------ public
def _check_choice(argument: str, value: object, allowed: Sequence[object]) -> None:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{argument} must be one of {list(allowed)}, got {value!r}")


def _check(task: str, dims: int, shape: Sequence[int] | None, seed: int) -> tuple[int, ...]:
    """Validate the common arguments; returns the shape to use."""
    _check_choice("task", task, TASKS)
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if shape is None:
        return DEFAULT_SHAPES[dims]
    try:
        ok = len(shape) == dims and all(not isinstance(n, bool) and int(n) == n and n >= 16 for n in shape)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"shape must be {dims} integers >= 16 for dims={dims} "
                         f"(e.g. {DEFAULT_SHAPES[dims]}), got {shape!r}")
    return tuple(int(n) for n in shape)


def _coarse_noise(shape: tuple[int, ...], spacing: Sequence[float], rng: np.random.Generator,
                  *, cell: float = 7.0) -> np.ndarray:
    """Unit-variance noise with features of about ``2 * cell`` mm whatever the grid (upsampled linearly)."""
    coarse = [int(np.ceil(n * s / cell)) + 1 if n > 1 else 1 for n, s in zip(shape, spacing)]
    field = smooth_noise(tuple(coarse), [1.0 if n > 1 else 0.0 for n in coarse], rng)
    for axis, n in enumerate(shape):  # separable linear interpolation, one small matrix product per axis
        c = field.shape[axis]
        pos = np.clip((np.arange(n) + 0.5) * c / n - 0.5, 0, c - 1)
        lo = np.minimum(pos.astype(int), c - 2) if c > 1 else np.zeros(n, int)
        weights = np.zeros((n, c), np.float32)
        weights[np.arange(n), lo] = 1 - (pos - lo)
        if c > 1:
            weights[np.arange(n), lo + 1] = pos - lo
        field = np.moveaxis(np.tensordot(weights, field, axes=(1, axis)), 0, axis)
    return field


def axial_slice(task: str, seed: int) -> int:
    """Which slice of the subject's default volume its 2D phantom is: an index along z, uniform over slices.

    Args:
        task: ``"kidney"`` or ``"heart"``.
        seed: Subject seed (non-negative integer).

    Returns:
        The index ``k`` such that ``make_phantom(task, m, dims=2, seed=seed)`` shows the plane of
        ``make_phantom(task, m, dims=3, seed=seed)[..., k]`` (default shapes).

    Examples:
        >>> 0 <= axial_slice("kidney", 3) < DEFAULT_SHAPES[3][2]
        True
    """
    _check(task, 2, None, seed)
    rng = np.random.default_rng([seed, _TASK_CODES[task], 200])  # its own stream: the anatomy is unchanged
    return int(rng.integers(DEFAULT_SHAPES[3][2]))


def _subject(task: str, dims: int, shape: tuple[int, ...], seed: int,
             plane: str = "volume") -> tuple[np.ndarray, np.random.Generator, tuple[float, ...]]:
    """Structure map (``shape + (1,)`` in 2D), the subject's texture generator and the 3-axis spacing."""
    geo, tex = (np.random.default_rng(s) for s in np.random.SeedSequence([seed, _TASK_CODES[task]]).spawn(2))
    shape3 = tuple(shape) + (1,) * (3 - dims)
    spacing = tuple(f / n for f, n in zip(FIELD_OF_VIEW_MM, shape))
    spacing3 = spacing + (FIELD_OF_VIEW_MM[2],) * (3 - dims)
    nz = DEFAULT_SHAPES[3][2]
    z_slice = (axial_slice(task, seed) + 0.5 - nz / 2) * FIELD_OF_VIEW_MM[2] / nz  # a slice of the volume

    def canvas_at(organ_plane: float) -> Canvas:  # the anatomy names its organs' plane before painting
        z = None if dims == 3 else organ_plane if plane == "organs" else z_slice
        cv = Canvas(list(STRUCTURES[task]), shape3, spacing3, z, geo)
        cv.blob = smooth_noise(shape3, [3.0 / s if n > 1 else 0.0 for n, s in zip(shape3, spacing3)], tex)
        cv.lumps = _coarse_noise(shape3, spacing3, tex)
        return cv

    cv = (build_abdomen if task == "kidney" else build_thorax)(geo, canvas_at)
    return cv.ids, tex, spacing3


def make_tissue_map(task: str, *, dims: int = 3, shape: Sequence[int] | None = None, seed: int = 0,
                    plane: str = "volume") -> tuple[np.ndarray, list[str]]:
    """The structure map a phantom is rendered from (same subject and seeds as :func:`make_phantom`).

    Args:
        task: ``"kidney"`` or ``"heart"``.
        dims: 2 (one axial slice) or 3.
        shape: Array shape, by default :data:`DEFAULT_SHAPES` ``[dims]``.
        seed: Subject seed (non-negative integer).
        plane: 2D only: ``"volume"`` or ``"organs"``, as in :func:`make_phantom`.

    Returns:
        ``(structures, names)``: a uint8 map ``(X, Y)`` or ``(X, Y, Z)`` and the structure name of each value.

    Raises:
        ValueError: If an argument is not one of the allowed values.

    Examples:
        >>> ids, names = make_tissue_map("kidney", dims=2, seed=3)
        >>> ids.shape, names[ids[0, 0]]
        ((96, 96), 'outside')
    """
    shape = _check(task, dims, shape, seed)
    _check_choice("plane", plane, PLANES)
    return _subject(task, dims, shape, seed, plane)[0].reshape(shape), list(STRUCTURES[task])


def make_phantom(task: str, modality: str, *, dims: int = 3, shape: Sequence[int] | None = None,
                 seed: int = 0, plane: str = "volume") -> Case:
    """One synthetic subject, rendered in one modality.

    Args:
        task: ``"kidney"`` (abdomen; label kidney = 1) or ``"heart"`` (thorax; MYO = 1, LAC = 2, LVC = 3,
            AA = 4).
        modality: ``"ct"`` (contrast-enhanced), ``"mri"`` (kidney: T1-weighted spin echo; heart: bright-blood
            bSSFP), or the unseen contrasts ``"mri_t2"`` (T2-weighted spin echo) and ``"ct_noncontrast"``.
        dims: 2 for one axial slice of the subject's volume ``(X, Y)`` (:func:`axial_slice`; it may miss the
            organs, as slices of a volume do), 3 for a volume ``(X, Y, Z)``.
        shape: Array shape; default ``(96, 96)`` in 2D and ``(96, 96, 48)`` in 3D. The field of view is
            fixed, so the spacing is :data:`FIELD_OF_VIEW_MM` / shape (3.33 mm in plane, 4 mm between the
            slices of a volume).
        seed: Subject seed; the same seed gives the same anatomy and label map in every modality.
        plane: 2D only: ``"volume"`` (default) cuts the slice :func:`axial_slice` of the subject's volume;
            ``"organs"`` the plane through the middle of the organs of interest (every case holds them; the
            2D phantoms of earlier versions, which were 128 x 128).

    Returns:
        A :class:`~data_utils.case.Case` with a float32 image (CT in HU; MRI non-negative, arbitrary units),
        a uint8 label map, spacing in mm, a diagonal affine, ``case_id`` like ``"kidney_ct_s0007"``.

    Raises:
        ValueError: If an argument is not one of the allowed values.

    Examples:
        >>> case = make_phantom("heart", "mri", dims=2, seed=7)
        >>> case.case_id, case.image.shape, case.image.dtype.name, [round(s, 2) for s in case.spacing]
        ('heart_mri_s0007', (96, 96), 'float32', [3.33, 3.33])
    """
    shape = _check(task, dims, shape, seed)
    _check_choice("modality", modality, MODALITIES)
    _check_choice("plane", plane, PLANES)
    ids, tex, spacing3 = _subject(task, dims, shape, seed, plane)
    texture = smooth_noise(ids.shape, [0.8 if n > 1 else 0.0 for n in ids.shape], tex)  # tissue grain
    structures = STRUCTURES[task]
    common = {"tissues": [t for t, _ in structures.values()], "spacing": spacing3, "texture": texture}
    # scanner settings and noise depend on the modality too; the anatomy does not
    rng = np.random.default_rng([seed, _TASK_CODES[task], 100 + _MODALITY_CODES[modality]])
    u = rng.uniform
    if modality.startswith("ct"):
        image = render_ct(ids, rng=rng, contrast=modality == "ct", enhancement=u(0.8, 1.2),
                          psf_mm=u(0.7, 1.4), noise_hu=u(6, 18), **common)
    else:
        scale = float(np.exp(u(5.3, 8.3)))  # about 200 to 4000: MR intensities have no physical unit
        image = render_mri(ids, rng=rng, sequence=_MR_SEQUENCE[task, modality], psf_mm=u(1.0, 2.0),
                           bias=u(0.1, 0.3), noise=u(0.015, 0.04), scale=scale, **common)
    labels = np.array([lab for _, lab in structures.values()], np.uint8)[ids]
    spacing = spacing3[:dims]
    affine = np.diag([*spacing, *(1.0,) * (3 - dims), 1.0])
    return Case(image.reshape(shape), labels.reshape(shape), spacing, f"{task}_{modality}_s{seed:04d}",
                modality, affine, task)


def make_dataset(task: str, modality: str, *, n: int, dims: int = 2, seed: int = 0,
                 shape: Sequence[int] | None = None, plane: str = "volume") -> list[Case]:
    """``n`` phantoms of distinct subjects, unpaired across modalities and disjoint across ``seed`` values.

    Subject ``i`` has the seed drawn from ``numpy.random.SeedSequence([seed, modality_code, i])``, so a CT
    set and an MRI set built with the same ``seed`` contain different subjects, and sets built with seeds
    0, 1 and 2 (training, validation, test) share none.

    Args:
        task: ``"kidney"`` or ``"heart"``.
        modality: ``"ct"``, ``"mri"``, ``"mri_t2"`` or ``"ct_noncontrast"``.
        n: Number of cases (>= 0).
        dims: 2 or 3.
        seed: Data-set seed (non-negative integer).
        shape: Array shape, as in :func:`make_phantom`.
        plane: 2D only: ``"volume"`` or ``"organs"``, as in :func:`make_phantom`.

    Returns:
        A list of ``n`` cases; each ``case_id`` ends in the subject seed that :func:`make_phantom` accepts.

    Raises:
        ValueError: If an argument is not one of the allowed values.

    Examples:
        >>> cases = make_dataset("kidney", "ct", n=2, dims=2, seed=0)
        >>> len(cases), cases[0].case_id != cases[1].case_id
        (2, True)
    """
    shape = _check(task, dims, shape, seed)
    _check_choice("modality", modality, MODALITIES)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    subjects = [int(np.random.SeedSequence([seed, _MODALITY_CODES[modality], i]).generate_state(1)[0])
                for i in range(n)]
    _check_choice("plane", plane, PLANES)
    return [make_phantom(task, modality, dims=dims, shape=shape, seed=s, plane=plane) for s in subjects]
