"""One table of every value a profile changes: ``quick`` (tests), ``standard`` (``make tutorial``), ``paper``.

A profile reaches a notebook as its ``profile`` parameter. Each notebook's ``parameters`` cell holds plain
literals, the ``standard`` values below, and the cell after it calls :func:`apply_profile`, which replaces
every knob that still holds its standard value with the profile's value. So the three ways of choosing a
profile agree:

- ``lmisa-lite tutorial --profile quick`` (and ``make tutorial PROFILE=quick``) passes ``profile``;
- ``LMISA_PROFILE=quick`` is read when ``profile`` is None (how ``make test`` runs notebooks under nbval);
- ``papermill NB.ipynb out.ipynb -p profile quick``.

A value passed explicitly wins over the profile: ``-p profile quick -p steps 3`` trains 3 steps with the quick
profile's other settings. (A value equal to the standard one counts as not given: ``-p profile quick
-p steps 900`` trains the quick profile's steps.)

The ablation of notebooks 05-06 (:func:`lmisa_lite.ablation.run_ablation`) reads its settings from
:data:`ABLATION` through :func:`profile_settings`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from data_utils.phantoms import TASKS
from lmisa_lite.config import TrainConfig

PROFILE_NAMES = ("quick", "standard", "paper")
PROFILE_ENV = "LMISA_PROFILE"
#: The profile a notebook runs when neither its ``profile`` parameter nor ``LMISA_PROFILE`` names one.
DEFAULT_PROFILE = "standard"

#: Per notebook, each knob a profile changes: ``{knob: {profile: value}}``. The ``standard`` values are the
#: literals of the notebook's parameters cell (a test holds the two together).
NOTEBOOKS: dict[str, dict[str, dict[str, Any]]] = {
    "01_mlngm_across_scales": {
        "volume_shape": {"quick": (64, 64, 24), "standard": (96, 96, 48), "paper": (192, 192, 96)},
    },
    "02_data_and_domain_shift": {
        "n_subjects": {"quick": 2, "standard": 6, "paper": 20},
        "volume_shape": {"quick": (64, 64, 24), "standard": (96, 96, 48), "paper": (128, 128, 64)},
    },
    "03_build_and_train_2d": {
        "steps": {"quick": 8, "standard": 1800, "paper": 3000},
        "n_train": {"quick": 4, "standard": 100, "paper": 100},
        "n_val": {"quick": 2, "standard": 10, "paper": 20},
        "n_test": {"quick": 2, "standard": 20, "paper": 50},
        # the phantoms' grid, which notebook 04's volumes share (paper: 128 x 128 x 64 volumes)
        "image_size": {"quick": (64, 64), "standard": (96, 96), "paper": (128, 128)},
        "base_filters": {"quick": 8, "standard": 8, "paper": 16},
        "batch_size": {"quick": 2, "standard": 1, "paper": 1},
    },
    "04_train_3d": {
        "steps": {"quick": 4, "standard": 800, "paper": 3000},
        "n_train": {"quick": 2, "standard": 4, "paper": 30},
        "n_val": {"quick": 1, "standard": 1, "paper": 6},
        "n_test": {"quick": 1, "standard": 4, "paper": 10},
        "volume_shape": {"quick": (48, 48, 24), "standard": (96, 96, 48), "paper": (128, 128, 64)},
        "patch_size": {"quick": (32, 32, 16), "standard": (48, 48, 24), "paper": (96, 96, 48)},
        "base_filters": {"quick": 4, "standard": 8, "paper": 16},
    },
    "05_domain_adaptation_analysis": {
        "n_latent": {"quick": 8, "standard": 24, "paper": 60},
    },
    "06_ablation_and_unseen_domain": {
        # (task, direction) pairs; the paper profile runs both directions of both tasks
        "experiments": {
            "quick": [["kidney", "ct2mri"], ["heart", "mri2ct"]],
            "standard": [["kidney", "ct2mri"], ["heart", "mri2ct"]],
            "paper": [["kidney", "ct2mri"], ["kidney", "mri2ct"], ["heart", "ct2mri"], ["heart", "mri2ct"]],
        },
        # every variant is trained once per seed; the tables and the chart give the spread over seeds
        "seeds": {"quick": [0, 1], "standard": [0, 1], "paper": [0, 1, 2]},
    },
}

#: Settings of the ablation per profile: data sizes (``n_train`` cases per training domain, ``n_val`` source
#: validation cases, ``n_test`` target and unseen test cases), where 2D phantoms cut the subject (``plane``, see
#: :func:`data_utils.phantoms.make_phantom`), the 2D ``image_size`` (phantoms are rendered at
#: that size, the field of view is fixed) and ``crop`` (2D training sees the central ``crop`` x ``crop`` of each
#: image, or the whole image when None; evaluation always segments whole images), the 3D ``volume_shape`` and
#: ``patch_size``, and :class:`~lmisa_lite.config.TrainConfig` fields shared by every variant. ``tasks``
#: (optional) maps a task to settings that replace the profile's for that task only.
ABLATION: dict[str, dict[str, Any]] = {
    "quick": {
        "plane": "organs",
        "n_train": 4,
        "n_val": 2,
        "n_test": 2,
        "image_size": 64,
        "crop": None,
        "volume_shape": (48, 48, 24),
        "patch_size": (32, 32, 16),
        "steps": 4,
        "batch_size": 2,
        "base_filters": 4,
        "val_every": 2,
        "lr_decay_every": 100,
        "checkpoint_every": 100,
    },
    # Sized for `make tutorial` on two CPU cores, where notebooks 05-06 train twenty models (two experiments,
    # five variants, two seeds). 1200 steps of batch 1: on 100 + 100 images the source validation Dice is
    # still rising at 900 steps and flat by 1800 (benchmarks/critic_investigation.py: MLNGM + reconstruction
    # 91.3 -> 94.2 % on the kidney, 73.7 -> 91.2 % on the heart); 1200 is what the tutorial's 20 minutes hold.
    # Notebook 06 reports for every variant whether its source validation was still improving at the end. The
    # heart trains on the central 96 x 96 of each image (which holds every heart of the phantoms); training the
    # kidney on crops was worse (false positives in the margins it never saw). The ablation keeps the 2D
    # phantoms through the organs (plane "organs", data_utils.phantoms): on slices drawn anywhere along the
    # body (96 x 96, a third without kidney) these 24 images and 1200 steps did not learn (standard run of
    # commit 1f01db8: source validation Dice about 22 % on the kidney, target 17.5 % for the full method).
    "standard": {
        "plane": "organs",
        "n_train": 24,
        "n_val": 4,
        "n_test": 8,
        "image_size": 128,
        "crop": None,
        "volume_shape": (96, 96, 48),
        "patch_size": (64, 64, 32),
        "steps": 1200,
        "batch_size": 1,
        "base_filters": 8,
        "val_every": 100,
        "lr_decay_every": 200,
        "checkpoint_every": 200,
        "tasks": {"heart": {"crop": 96}},
    },
    "paper": {
        "plane": "organs",
        "n_train": 100,
        "n_val": 10,
        "n_test": 20,
        "image_size": 128,
        "crop": None,
        "volume_shape": (96, 96, 48),
        "patch_size": (64, 64, 32),
        "steps": 5000,
        "batch_size": 4,
        "base_filters": 16,
        "val_every": 250,
        "lr_decay_every": 500,
        "checkpoint_every": 250,
    },
}
#: Ablation settings that describe the data rather than a TrainConfig field.
DATA_KEYS = ("n_train", "n_val", "n_test", "plane", "image_size", "crop", "volume_shape", "patch_size")
#: TrainConfig fields that the ablation sets itself: a profile or an override may not change them.
RESERVED = ("task", "spatial_dims", "num_classes", "seed", "out_dir", "resume", "device", "progress",
            "use_mlngm", "use_reconstruction", "use_shape_constraint", "supervise_target")


def resolve_profile(profile: str | None = None) -> str:
    """The profile to run: ``profile`` when given, else ``LMISA_PROFILE``, else ``"standard"``.

    Raises:
        ValueError: If the name is not one of :data:`PROFILE_NAMES` (naming where it came from).

    Examples:
        >>> resolve_profile("quick")
        'quick'
    """
    source = "profile"
    if profile is None:
        profile, source = os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE, PROFILE_ENV
    if profile not in PROFILE_NAMES:
        raise ValueError(f"{source}={profile!r}: expected one of {', '.join(PROFILE_NAMES)}")
    return profile


def _comparable(value: Any) -> Any:
    """Lists and tuples compare alike (papermill passes tuples as JSON lists)."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(v) for v in value)
    return value


def notebook_settings(notebook: str, profile: str | None = None) -> dict[str, Any]:
    """The values of a notebook's profiled knobs under ``profile`` (resolved as :func:`resolve_profile`).

    Args:
        notebook: The notebook's name without ``.ipynb`` (a key of :data:`NOTEBOOKS`).
        profile: ``"quick"``, ``"standard"``, ``"paper"`` or None.

    Raises:
        ValueError: For an unknown notebook or profile.

    Examples:
        >>> notebook_settings("03_build_and_train_2d", "quick")["steps"]
        8
    """
    if notebook not in NOTEBOOKS:
        raise ValueError(f"notebook={notebook!r}: expected one of {list(NOTEBOOKS)}")
    name = resolve_profile(profile)
    return {knob: values[name] for knob, values in NOTEBOOKS[notebook].items()}


def apply_profile(notebook: str, namespace: MutableMapping[str, Any], *, verbose: bool = True) -> dict[str, Any]:
    """Give a notebook's knobs their profile's values, unless a value was passed explicitly.

    Reads ``namespace["profile"]`` (None: ``LMISA_PROFILE``, else ``"standard"``). Every knob of
    :data:`NOTEBOOKS` that still holds its standard value gets the profile's; a knob holding anything else was
    set on purpose (``papermill -p steps 3``, or an edit of the parameters cell) and keeps it.

    Args:
        notebook: The notebook's name without ``.ipynb``.
        namespace: The notebook's globals (``globals()``), updated in place; ``profile`` becomes the resolved
            name.
        verbose: Print one line with the profile and the values in force.

    Returns:
        ``{knob: value}`` in force, ``profile`` first.

    Raises:
        ValueError: For an unknown notebook or profile.

    Examples:
        >>> params = {"profile": "quick", "steps": 900, "n_train": 7}
        >>> apply_profile("03_build_and_train_2d", params, verbose=False)["steps"], params["n_train"]
        (8, 7)
    """
    name = resolve_profile(namespace.get("profile"))
    chosen = notebook_settings(notebook, name)
    in_force: dict[str, Any] = {"profile": name}
    for knob, value in chosen.items():
        standard = NOTEBOOKS[notebook][knob]["standard"]
        if knob not in namespace or _comparable(namespace[knob]) == _comparable(standard):
            namespace[knob] = value
        in_force[knob] = namespace[knob]
    namespace["profile"] = name
    if verbose:
        print(f"profile {name}: " + ", ".join(f"{k}={v}" for k, v in in_force.items() if k != "profile"))
    return in_force


def profile_settings(profile: str = "standard", *, overrides: Mapping[str, Any] | None = None,
                     task: str | None = None) -> dict[str, Any]:
    """The ablation settings of a profile, for a task, with ``overrides`` applied (see :data:`ABLATION`).

    Args:
        profile: ``"quick"``, ``"standard"`` or ``"paper"``.
        overrides: Changes: data keys (:data:`DATA_KEYS`) or :class:`~lmisa_lite.config.TrainConfig` fields
            such as ``steps``, ``batch_size``, ``base_filters`` or ``lr``; not the fields an ablation sets
            itself (:data:`RESERVED`: task, seed, device, the variant flags...).
        task: ``"kidney"`` or ``"heart"``: apply the profile's settings for that task (its ``tasks`` entry);
            None gives the profile's common settings.

    Returns:
        A new dict (without the ``tasks`` entry).

    Raises:
        ValueError: For an unknown profile, or an override key that is unknown or reserved.

    Examples:
        >>> profile_settings("quick", overrides={"steps": 2})["steps"]
        2
    """
    if profile not in ABLATION:
        raise ValueError(f"profile={profile!r}: expected one of {list(ABLATION)}")
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = [k for k in overrides if k in RESERVED or (k not in fields and k not in DATA_KEYS)]
    if bad:
        raise ValueError(f"overrides: cannot set {bad}; allowed keys are {list(DATA_KEYS)} and TrainConfig "
                         f"fields other than {list(RESERVED)}")
    if task is not None and task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")
    common = {k: v for k, v in ABLATION[profile].items() if k != "tasks"}
    settings = {**common, **ABLATION[profile].get("tasks", {}).get(task, {}), **overrides}
    for key, low in (("n_train", 1), ("n_val", 0), ("n_test", 1)):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"overrides: {key}={value!r}, expected an integer >= {low}")
    crop, size = settings.get("crop"), settings["image_size"]
    if crop is not None:
        largest = min(size) if not np.isscalar(size) else size
        if isinstance(crop, bool) or not isinstance(crop, (int, np.integer)) or not 8 <= crop <= largest:
            raise ValueError(f"overrides: crop={crop!r}, expected None or an integer from 8 to the image size "
                             f"({largest})")
    return settings


def data_shapes(settings: Mapping[str, Any], dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(phantom shape, network input size)``: the 2D image (or its crop) or the 3D volume and patch."""
    if dims == 2:
        size = settings["image_size"]
        size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        crop = settings.get("crop")
        return size, size if crop is None else (int(crop), int(crop))
    return tuple(int(s) for s in settings["volume_shape"]), tuple(int(s) for s in settings["patch_size"])
