"""The LMISA ablation on phantoms: which part of the method buys how much on the target domain.

:func:`run_ablation` trains five variants on the same data with the same seed and scores each on the
target-domain test set and on an *unseen* contrast that no variant saw in training:

==================  =====  ==============  ================  =====================
variant             MLNGM  reconstruction  shape critic      labels used
==================  =====  ==============  ================  =====================
source_only_raw     no     no              no                source
source_only_mlngm   yes    no              no                source
mlngm_recon         yes    yes             no                source
lmisa               yes    yes             yes               source
oracle              yes    no              no                source and target
==================  =====  ==============  ================  =====================

The oracle is a jointly supervised model: an upper bound that needs the target labels LMISA does without.

Data are phantoms (:func:`data_utils.phantoms.make_dataset`) from four disjoint data-set seeds: labelled
source training cases, unlabelled target training cases, labelled source validation cases (checkpoint
selection, so no target label ever picks a model) and labelled target test cases. The unseen test cases share
the test seed but are rendered in the unseen contrast (:data:`UNSEEN_MODALITY`), hence are other subjects.

Files in ``out_dir``: ``results.csv`` (one row per variant, domain, case and class), ``results.md`` (tables
shaped like the paper's), ``dice_by_variant.png``, and per variant ``<variant>/best.pt`` and ``last.pt``,
``<variant>/result.csv`` and ``<variant>/run.json``. Run twice with the same settings, the second call reuses
each variant whose ``run.json`` records the same training key (config, data, package version): its checkpoint
is loaded instead of retrained and, if the evaluation key matches too, its ``result.csv`` is read back. So a
notebook that trains a subset of variants into a folder lets a later, complete ablation over the same folder
skip them, and an interrupted run continues from ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_utils.case import Case
from data_utils.phantoms import CLASS_NAMES, MODALITIES, TASKS, make_dataset
from data_utils.atomic import atomic_path, atomic_write_text
from lmisa_lite.evaluation import evaluate, summarize, to_markdown, write_csv
from lmisa_lite.training import TrainConfig, load_checkpoint, train


def _flags(mlngm: bool, reconstruction: bool, shape: bool, target_labels: bool = False) -> dict[str, bool]:
    return {
        "use_mlngm": mlngm,
        "use_reconstruction": reconstruction,
        "use_shape_constraint": shape,
        "supervise_target": target_labels,
    }


#: Training flags of each variant, in the order the tables list them.
VARIANTS: dict[str, dict[str, bool]] = {
    "source_only_raw": _flags(False, False, False),
    "source_only_mlngm": _flags(True, False, False),
    "mlngm_recon": _flags(True, True, False),
    "lmisa": _flags(True, True, True),
    "oracle": _flags(True, False, False, target_labels=True),
}
VARIANT_DESCRIPTIONS = {
    "source_only_raw": "source labels, z-scored intensities, no adaptation",
    "source_only_mlngm": "source labels, MLNGM input",
    "mlngm_recon": "MLNGM + reconstruction of both domains",
    "lmisa": "MLNGM + reconstruction + shape critic (the full method)",
    "oracle": "MLNGM, supervised on source and target labels (upper bound)",
}

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

#: Settings per profile: data sizes (``n_train`` cases per training domain, ``n_val`` source validation cases,
#: ``n_test`` target and unseen test cases), the 2D ``image_size`` (phantoms are rendered at that size, the
#: field of view is fixed) and ``crop`` (2D training sees the central ``crop`` x ``crop`` of each image, or the
#: whole image when None; evaluation always segments whole images), the 3D ``volume_shape`` and ``patch_size``,
#: and :class:`TrainConfig` fields shared by every variant. ``tasks`` (optional) maps a task to settings that
#: replace the profile's for that task only. ``standard`` is what ``make tutorial`` runs; ``quick`` is for
#: tests; ``paper`` is long.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
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
    # Sized for `make tutorial` on two CPU cores, where notebooks 05-06 train ten models (two experiments).
    # Learning is limited by the number of updates more than by the batch: 300 steps of batch 1 cost as much
    # as 200 steps of batch 2 and score about the same. The variants differ in cost per step (about
    # 1 : 1 : 2.6 : 3.3 : 1.8 in the order of VARIANTS); with 200 steps the five kidney models took 236 s
    # together on an otherwise idle 2-core machine. The heart's four small structures learn more slowly: it gets
    # 300 steps on the central 96 x 96 of each image (which holds every heart of the phantoms), about 260 s.
    # Training the kidney on crops was worse (false positives in the margins it never saw). Such short runs
    # rank the variants noisily; `paper` trains longer.
    "standard": {
        "n_train": 24,
        "n_val": 4,
        "n_test": 8,
        "image_size": 128,
        "crop": None,
        "volume_shape": (96, 96, 48),
        "patch_size": (64, 64, 32),
        "steps": 200,
        "batch_size": 2,
        "base_filters": 8,
        "val_every": 50,
        "lr_decay_every": 100,
        "checkpoint_every": 100,
        "tasks": {"heart": {"crop": 96, "steps": 300}},
    },
    "paper": {
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
DATA_KEYS = ("n_train", "n_val", "n_test", "image_size", "crop", "volume_shape", "patch_size")
# Fields that run_ablation sets itself; a profile or an override may not change them.
_RESERVED = (
    "task",
    "spatial_dims",
    "num_classes",
    "seed",
    "out_dir",
    "resume",
    "device",
    "progress",
    *_flags(True, True, True),
)
# Config fields that change where or how fast a run goes, not what it learns.
_VOLATILE = ("out_dir", "resume", "device", "progress", "amp", "num_workers")
# Data-set seed offsets: each role draws its own subjects.
_DATA_SEEDS = {"source_train": 0, "target_train": 1, "source_val": 2, "target_test": 3}
_ALIASES = {"ct": "ct", "mri": "mri", "mr": "mri"}


@dataclass
class AblationResult:
    """What :func:`run_ablation` returns.

    Attributes:
        cases: One row per variant, domain (``"target"``, ``"unseen"``), test case and class: columns
            ``variant``, ``domain`` and those of :func:`lmisa_lite.evaluation.evaluate`.
        summary: One row per variant, domain and class (plus ``mean``): ``n_cases``, ``dice`` (%),
            ``dice_std``, ``dice_nan``, ``assd`` (mm), ``assd_std``, ``assd_nan``.
        table: The markdown of ``results.md``.
        models: ``{variant: LMISANet}`` in eval mode, each the selected checkpoint (``best.pt``, else
            ``last.pt``).
        configs: ``{variant: TrainConfig}`` each variant trained with.
        histories: ``{variant: DataFrame}`` training history, one row per step.
        seconds: ``{variant: training wall time in s}`` (of the original run when a variant was reused).
        reused: Variants whose checkpoint came from an earlier identical run.
        paths: ``out_dir``, ``results_csv``, ``results_md``, ``chart``, and ``{variant}``: its checkpoint.
        task: ``"kidney"`` or ``"heart"``.
        source: Source modality.
        target: Target modality.
        unseen_modality: The unseen contrast, or None when it was not evaluated.
    """

    cases: pd.DataFrame
    summary: pd.DataFrame
    table: str
    models: dict[str, Any]
    configs: dict[str, TrainConfig]
    histories: dict[str, pd.DataFrame]
    seconds: dict[str, float]
    reused: list[str]
    paths: dict[str, Path]
    task: str
    source: str
    target: str
    unseen_modality: str | None = None


# ---- arguments ---------------------------------------------------------------------------------------------
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


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"task={task!r}: expected one of {list(TASKS)}")


def _check_dims(dims: int) -> None:
    if isinstance(dims, bool) or dims not in (2, 3):
        raise ValueError(f"dims={dims!r}: expected 2 or 3")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: expected a non-negative integer")


def _check_variants(variants: str | Iterable[str] | None) -> list[str]:
    if variants is None:
        return list(VARIANTS)
    chosen = [variants] if isinstance(variants, str) else list(variants)
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown or not chosen:
        raise ValueError(f"variants={variants!r}: expected a non-empty selection of {list(VARIANTS)}")
    return list(dict.fromkeys(chosen))


def profile_settings(
    profile: str = "standard", *, overrides: Mapping[str, Any] | None = None, task: str | None = None
) -> dict[str, Any]:
    """The settings of a profile, for a task, with ``overrides`` applied (see :data:`PROFILES`).

    Args:
        profile: ``"quick"``, ``"standard"`` or ``"paper"``.
        overrides: Changes: data keys (:data:`DATA_KEYS`) or :class:`TrainConfig` fields such as ``steps``,
            ``batch_size``, ``base_filters`` or ``lr``; not the fields an ablation sets itself (task, seed,
            device, the variant flags...).
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
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: expected one of {list(PROFILES)}")
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = [k for k in overrides if k in _RESERVED or (k not in fields and k not in DATA_KEYS)]
    if bad:
        raise ValueError(
            f"overrides: cannot set {bad}; allowed keys are {list(DATA_KEYS)} and TrainConfig fields "
            f"other than {list(_RESERVED)}"
        )
    if task is not None:
        _check_task(task)
    common = {k: v for k, v in PROFILES[profile].items() if k != "tasks"}
    settings = {**common, **PROFILES[profile].get("tasks", {}).get(task, {}), **overrides}
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


def _crop_note(settings: Mapping[str, Any], dims: int) -> str:
    crop = settings.get("crop")
    return "" if dims != 2 or crop is None else f" (trained on their central {crop} x {crop})"


def _shapes(settings: Mapping[str, Any], dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Phantom shape and network input (2D image or 3D patch) size."""
    if dims == 2:
        size = settings["image_size"]
        size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        crop = settings.get("crop")
        return size, size if crop is None else (int(crop), int(crop))
    return tuple(int(s) for s in settings["volume_shape"]), tuple(int(s) for s in settings["patch_size"])


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
    _check_task(task)
    _check_dims(dims)
    _check_seed(seed)
    settings = profile_settings(profile, overrides=overrides, task=task)
    _, size = _shapes(settings, dims)
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


# ---- data, keys, files -------------------------------------------------------------------------------------
def _fingerprint(cases: Sequence[Case]) -> str:
    digest = hashlib.sha256()
    for case in cases:
        digest.update(case.case_id.encode())
        digest.update(np.ascontiguousarray(case.image).tobytes())
        if case.label is not None:
            digest.update(np.ascontiguousarray(case.label).tobytes())
    return digest.hexdigest()[:16]


def _key(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_figure(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def _read_cases(path: Path) -> pd.DataFrame:
    df = pd.read_csv(
        path, dtype={"case_id": str, "modality": str, "class": str, "variant": str, "domain": str}
    )
    df.attrs["distance_unit"] = "mm"
    return df


# ---- scoring -----------------------------------------------------------------------------------------------
def _score(
    model: Any,
    cases: Sequence[Case],
    *,
    task: str,
    variant: str,
    domain: str,
    dims: int,
    use_mlngm: bool,
    device: str,
) -> pd.DataFrame:
    df = evaluate(
        model,
        cases,
        dims=dims,
        use_mlngm=use_mlngm,
        class_names=CLASS_NAMES[task],
        device=device,
        progress=False,
    )
    df.insert(0, "domain", domain)
    df.insert(0, "variant", variant)
    return df


def evaluate_unseen(
    models: Mapping[str, Any],
    task: str,
    *,
    modality: str | None = None,
    n: int = 8,
    seed: int = 0,
    dims: int = 2,
    direction: str | None = None,
    shape: Sequence[int] | None = None,
    use_mlngm: bool | Mapping[str, bool] | None = None,
    device: str = "auto",
) -> pd.DataFrame:
    """Score trained models, without retraining, on phantoms of a contrast none of them was trained on.

    Args:
        models: ``{name: model}``, e.g. :attr:`AblationResult.models`.
        task: ``"kidney"`` or ``"heart"``.
        modality: The unseen contrast (``"mri_t2"``, ``"ct_noncontrast"``...); None takes
            :data:`UNSEEN_MODALITY` for ``direction``.
        n: Number of test phantoms.
        seed: Data-set seed of the test phantoms (:func:`data_utils.phantoms.make_dataset`).
        dims: 2 or 3, the models' spatial dimensions.
        direction: The direction the models were trained in; needed when ``modality`` is None, and used to
            refuse a ``modality`` that training did use.
        shape: Phantom shape; None uses the default (``(128, 128)`` in 2D). Use the training size.
        use_mlngm: Whether each model takes MLNGM input: one bool for all, ``{name: bool}``, or None, which
            reads it from the variant name (:data:`VARIANTS`) and assumes MLNGM for other names.
        device: Inference device.

    Returns:
        One row per model, case and class: ``variant`` (the model's name), ``domain`` (``"unseen"``) and the
        columns of :func:`lmisa_lite.evaluation.evaluate`.

    Raises:
        ValueError: For an empty ``models``, an unknown task or modality, a modality used in training, or
            neither ``modality`` nor ``direction``.

    Examples:
        >>> from lmisa_lite.networks import LMISANet
        >>> df = evaluate_unseen({"untrained": LMISANet(base_filters=4)}, "kidney", direction="ct2mri", n=1,
        ...                      shape=(64, 64), device="cpu")
        >>> df[["variant", "domain", "modality", "class"]].iloc[0].tolist()
        ['untrained', 'unseen', 'mri_t2', 'kidney']
    """
    _check_task(task)
    _check_dims(dims)
    _check_seed(seed)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models: expected a non-empty mapping {name: trained model}")
    trained = parse_direction(direction) if direction is not None else ()
    if modality is None:
        if direction is None:
            raise ValueError(
                "modality: give the unseen contrast, or a direction to choose it from UNSEEN_MODALITY"
            )
        modality = UNSEEN_MODALITY[task, "".join((trained[0], "2", trained[1]))]
    if modality not in MODALITIES:
        raise ValueError(f"modality={modality!r}: expected one of {list(MODALITIES)}")
    if modality in trained:
        raise ValueError(f"modality={modality!r}: the models were trained on it (direction={direction!r})")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer")
    cases = make_dataset(task, modality, n=int(n), dims=dims, seed=int(seed), shape=shape)
    frames = []
    for name, model in models.items():
        if isinstance(use_mlngm, Mapping):
            flag = bool(use_mlngm.get(name, VARIANTS.get(name, {}).get("use_mlngm", True)))
        elif use_mlngm is None:
            flag = VARIANTS.get(name, {}).get("use_mlngm", True)
        else:
            flag = bool(use_mlngm)
        frames.append(
            _score(
                model,
                cases,
                task=task,
                variant=name,
                domain="unseen",
                dims=dims,
                use_mlngm=flag,
                device=device,
            )
        )
    out = pd.concat(frames, ignore_index=True)
    out.attrs["distance_unit"] = "mm"
    return out


# ---- summaries, tables, chart ------------------------------------------------------------------------------
def summarize_ablation(cases: pd.DataFrame) -> pd.DataFrame:
    """Per variant and domain, the :func:`lmisa_lite.evaluation.summarize` of Dice (%) and ASSD.

    Args:
        cases: Rows as in :attr:`AblationResult.cases` (needs ``variant`` and ``domain``).

    Returns:
        Columns ``variant``, ``domain``, ``class`` (the structures, then ``mean``), ``n_cases``, ``dice``,
        ``dice_std``, ``dice_nan``, ``assd``, ``assd_std``, ``assd_nan``; variants in order of appearance.

    Raises:
        ValueError: If ``cases`` lacks ``variant`` or ``domain``, or is empty.
    """
    if not {"variant", "domain"} <= set(cases.columns) or cases.empty:
        raise ValueError(
            "cases: expected the non-empty per-case table of run_ablation (variant, domain columns)"
        )
    frames = []
    for (variant, domain), group in cases.groupby(["variant", "domain"], sort=False):
        summary = summarize(group, metrics=("dice", "assd")).reset_index()
        summary.insert(0, "domain", domain)
        summary.insert(0, "variant", variant)
        frames.append(summary)
    return pd.concat(frames, ignore_index=True)


def ablation_table(summary: pd.DataFrame, *, domain: str = "target") -> pd.DataFrame:
    """The paper-shaped table of one domain: a row per variant, Dice then ASSD per structure and their mean.

    Args:
        summary: From :func:`summarize_ablation`.
        domain: ``"target"`` or ``"unseen"``.

    Returns:
        A DataFrame indexed by ``variant`` with columns ``Dice <structure>``..., ``Dice mean``,
        ``ASSD <structure>``..., ``ASSD mean`` (no ``mean`` columns with a single structure), each with
        ``_std`` and ``_nan`` companions that :func:`lmisa_lite.evaluation.to_markdown` folds in.

    Raises:
        ValueError: If ``summary`` has no rows for ``domain``.
    """
    part = summary[summary["domain"] == domain]
    if part.empty:
        raise ValueError(
            f"domain={domain!r}: no rows in summary (domains: {sorted(summary['domain'].unique())})"
        )
    structures = [c for c in dict.fromkeys(part["class"]) if c != "mean"]
    classes = structures + (["mean"] if len(structures) > 1 else [])
    rows = {}
    for variant, group in part.groupby("variant", sort=False):
        by_class = group.set_index("class")
        row = {}
        for metric, title in (("dice", "Dice"), ("assd", "ASSD")):
            for name in classes:
                for suffix in ("", "_std", "_nan"):
                    row[f"{title} {name}{suffix}"] = by_class.loc[name, f"{metric}{suffix}"]
        rows[variant] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "variant"
    return table


def plot_ablation(
    summary: pd.DataFrame,
    *,
    ax: Any = None,
    title: str | None = None,
    domain_labels: Mapping[str, str] | None = None,
) -> Any:
    """Bar chart of the mean Dice per variant (error bars: std over cases), target and unseen side by side.

    Args:
        summary: From :func:`summarize_ablation`.
        ax: Matplotlib axes; None makes a new figure.
        title: Axes title.
        domain_labels: Legend text per domain, e.g. ``{"target": "target: MRI"}``; default the domain names.

    Returns:
        The matplotlib ``Axes``.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 3.6))
    means = summary[summary["class"] == "mean"]
    variants = list(dict.fromkeys(means["variant"]))
    domains = [d for d in ("target", "unseen") if d in set(means["domain"])]
    width = 0.8 / len(domains)
    x = np.arange(len(variants))
    for i, domain in enumerate(domains):
        part = means[means["domain"] == domain].set_index("variant").reindex(variants)
        ax.bar(
            x + (i - (len(domains) - 1) / 2) * width,
            part["dice"],
            width,
            yerr=part["dice_std"],
            capsize=3,
            label=(domain_labels or {}).get(domain, domain),
            color=("tab:blue", "tab:orange")[i],
        )
    ax.set_xticks(x, variants, rotation=20, ha="right")
    ax.set_ylabel("mean Dice (%)")
    ax.set_ylim(0, 100)
    ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return ax


def _markdown(
    summary: pd.DataFrame,
    *,
    task: str,
    source: str,
    target: str,
    unseen: str | None,
    dims: int,
    profile: str,
    seed: int,
    settings: Mapping[str, Any],
    shape: tuple[int, ...],
) -> str:
    n = {
        d: int(summary.loc[(summary["domain"] == d) & (summary["class"] == "mean"), "n_cases"].max())
        for d in summary["domain"].unique()
    }
    lines = [
        f"# Ablation: {task}, {MODALITY_TITLES[source]} → {MODALITY_TITLES[target]}",
        "",
        (
            f"{dims}D, profile `{profile}`, seed {seed}, phantoms of {' x '.join(map(str, shape))} voxels"
            f"{_crop_note(settings, dims)}: "
            f"{settings['n_train']} labelled {MODALITY_TITLES[source]} and {settings['n_train']} unlabelled "
            f"{MODALITY_TITLES[target]} training cases, {settings['n_val']} {MODALITY_TITLES[source]} "
            f"validation cases (checkpoint selection), {settings['steps']} steps per variant. Dice in %, "
            "ASSD in mm, mean ± std over test cases; (k NaN): cases where the score is undefined (e.g. an "
            "empty prediction has no surface), left out of the mean."
        ),
        "",
        to_markdown(
            ablation_table(summary, domain="target"),
            title=f"Target domain: {MODALITY_TITLES[target]} ({n['target']} test cases)",
        ),
    ]
    if unseen is not None and "unseen" in n:
        lines += [
            to_markdown(
                ablation_table(summary, domain="unseen"),
                title=f"Unseen domain: {MODALITY_TITLES[unseen]} ({n['unseen']} test cases, "
                "not used in training)",
            )
        ]
    lines += ["Variants:", ""]
    lines += [
        f"- `{v}`: {VARIANT_DESCRIPTIONS[v]}"
        for v in dict.fromkeys(summary["variant"])
        if v in VARIANT_DESCRIPTIONS
    ]
    return "\n".join(lines) + "\n"


# ---- the ablation ------------------------------------------------------------------------------------------
def _make_data(
    task: str,
    source: str,
    target: str,
    unseen: str | None,
    *,
    dims: int,
    shape: tuple[int, ...],
    settings: Mapping[str, Any],
    seed: int,
) -> dict[str, list[Case]]:
    def data(modality: str, n: int, role: str) -> list[Case]:
        return make_dataset(
            task, modality, n=int(n), dims=dims, seed=4 * seed + _DATA_SEEDS[role], shape=shape
        )

    sets = {
        "source_train": data(source, settings["n_train"], "source_train"),
        "target_train": data(target, settings["n_train"], "target_train"),
        "source_val": data(source, settings["n_val"], "source_val"),
        "target_test": data(target, settings["n_test"], "target_test"),
    }
    sets["unseen_test"] = data(unseen, settings["n_test"], "target_test") if unseen else []
    return sets


def _run_variant(
    variant: str,
    config: TrainConfig,
    data: Mapping[str, list[Case]],
    *,
    task: str,
    dims: int,
    unseen: str | None,
    keys: Mapping[str, Any],
) -> dict[str, Any]:
    """Train (or reuse) one variant and score it; returns model, config, cases, history, seconds, reused."""
    from lmisa_lite import __version__
    from lmisa_lite.checkpoint import read_checkpoint

    folder = Path(config.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE}
    train_key = _key({"variant": variant, "config": settings, "version": __version__, **keys["train"]})
    eval_key = _key({"train": train_key, **keys["eval"]})
    record = _read_json(folder / "run.json")
    last, best = folder / "last.pt", folder / "best.pt"
    same_run = record.get("train_key") == train_key
    last_state = read_checkpoint(last) if same_run and last.is_file() else None
    reused = last_state is not None and last_state["step"] >= config.steps and "train_seconds" in record

    if reused:
        seconds, cpu_seconds = record["train_seconds"], record.get("train_cpu_seconds")
        model, _ = load_checkpoint(best if best.is_file() else last, device=config.device)
        history = last_state["history"]
    else:
        if last_state is None:  # files of another configuration would be mistaken for this one's
            for stale in (last, best, folder / "result.csv"):
                stale.unlink(missing_ok=True)
        atomic_write_text(
            folder / "run.json",
            json.dumps({"variant": variant, "train_key": train_key, "config": config.to_dict()}, indent=2),
        )
        run_config = dataclasses.replace(config, resume=last_state is not None)
        wall, cpu = time.perf_counter(), time.process_time()
        result = train(run_config, data["source_train"], data["target_train"], val=data["source_val"] or None)
        seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
        if last_state is not None:  # a resumed run: count the time spent before the interruption too
            seconds += float(last_state["history"]["time"][-1]) if last_state["history"]["time"] else 0.0
        model = result.best_model if result.best_model is not None else result.model
        history = result.history
        record = {}

    result_csv = folder / "result.csv"
    if reused and record.get("eval_key") == eval_key and result_csv.is_file():
        cases = _read_cases(result_csv)
    else:
        flags = VARIANTS[variant]
        device = config.device
        frames = [
            _score(
                model,
                data["target_test"],
                task=task,
                variant=variant,
                domain="target",
                dims=dims,
                use_mlngm=flags["use_mlngm"],
                device=device,
            )
        ]
        if unseen:
            frames.append(
                _score(
                    model,
                    data["unseen_test"],
                    task=task,
                    variant=variant,
                    domain="unseen",
                    dims=dims,
                    use_mlngm=flags["use_mlngm"],
                    device=device,
                )
            )
        cases = pd.concat(frames, ignore_index=True)
        write_csv(cases, result_csv)
    checkpoint = best if best.is_file() else last
    atomic_write_text(
        folder / "run.json",
        json.dumps(
            {
                "variant": variant,
                "train_key": train_key,
                "eval_key": eval_key,
                "config": config.to_dict(),
                "train_seconds": seconds,
                "train_cpu_seconds": cpu_seconds,
                "checkpoint": checkpoint.name,
                **keys["describe"],
            },
            indent=2,
            default=str,
        ),
    )
    return {
        "model": model,
        "cases": cases,
        "history": pd.DataFrame(history),
        "seconds": float(seconds),
        "reused": reused,
        "checkpoint": checkpoint,
    }


def run_ablation(
    task: str,
    direction: str,
    *,
    dims: int = 2,
    profile: str = "standard",
    out_dir: str | os.PathLike,
    seed: int = 0,
    variants: str | Iterable[str] | None = None,
    progress: bool = True,
    unseen: bool = True,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
) -> AblationResult:
    """Train and score the LMISA ablation variants on phantoms, on the same data and seed.

    Args:
        task: ``"kidney"`` or ``"heart"``.
        direction: ``"ct2mri"`` or ``"mri2ct"`` (also ``"CT->MRI"``...), see :func:`parse_direction`.
        dims: 2 (images) or 3 (volumes, trained on patches).
        profile: ``"quick"``, ``"standard"`` or ``"paper"`` (:data:`PROFILES`).
        out_dir: Folder for the results and the variants' checkpoints; reused variants are read from it.
        seed: Seeds the data sets and every variant's training.
        variants: Keys of :data:`VARIANTS` (one name or several), in the order to report them; None runs all.
        progress: Show a progress bar per training run and one line per variant.
        unseen: Also score every variant on the unseen contrast (:data:`UNSEEN_MODALITY`).
        overrides: Changes to the profile, e.g. ``{"steps": 2, "image_size": 32}`` (:func:`profile_settings`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...

    Returns:
        An :class:`AblationResult`.

    Raises:
        ValueError: Naming the argument that is out of range (task, direction, dims, profile, out_dir, seed,
            variants, overrides).

    Examples:
        >>> result = run_ablation("kidney", "ct2mri", profile="quick", out_dir="runs/ablation",
        ...                       overrides={"steps": 2})  # doctest: +SKIP
        >>> print(result.table)  # doctest: +SKIP
    """
    _check_task(task)
    source, target = parse_direction(direction)
    _check_dims(dims)
    _check_seed(seed)
    if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
        raise ValueError(f"out_dir={out_dir!r}: expected a folder for the results and checkpoints")
    chosen = _check_variants(variants)
    settings = profile_settings(profile, overrides=overrides, task=task)
    shape, _ = _shapes(settings, dims)
    unseen_modality = UNSEEN_MODALITY[task, f"{source}2{target}"] if unseen else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    data = _make_data(
        task, source, target, unseen_modality, dims=dims, shape=shape, settings=settings, seed=seed
    )
    describe = {
        "task": task,
        "source": source,
        "target": target,
        "unseen_modality": unseen_modality,
        "dims": dims,
        "profile": profile,
        "seed": seed,
        "shape": list(shape),
        "data_seeds": {role: 4 * seed + offset for role, offset in _DATA_SEEDS.items()},
        "sizes": {k: len(v) for k, v in data.items()},
    }
    keys = {
        "train": {
            "task": task,
            "source": source,
            "target": target,
            "dims": dims,
            "data": _fingerprint(data["source_train"] + data["target_train"] + data["source_val"]),
        },
        "eval": {
            "target_test": _fingerprint(data["target_test"]),
            "unseen": unseen_modality,
            "unseen_test": _fingerprint(data["unseen_test"]),
        },
        "describe": describe,
    }

    runs, configs = {}, {}
    for i, variant in enumerate(chosen, 1):
        configs[variant] = variant_config(
            variant,
            task,
            dims=dims,
            profile=profile,
            overrides=overrides,
            seed=seed,
            out_dir=out / variant,
            device=device,
            progress=progress,
        )
        runs[variant] = _run_variant(
            variant, configs[variant], data, task=task, dims=dims, unseen=unseen_modality, keys=keys
        )
        if progress:
            target_dice = runs[variant]["cases"].query("domain == 'target'")["dice"].mean() * 100
            how = "reused" if runs[variant]["reused"] else f"trained in {runs[variant]['seconds']:.0f} s"
            print(
                f"[ablation] {i}/{len(chosen)} {variant}: {how}, target Dice {target_dice:.1f}%", flush=True
            )

    cases = pd.concat([r["cases"] for r in runs.values()], ignore_index=True)
    cases.attrs["distance_unit"] = "mm"
    summary = summarize_ablation(cases)
    table = _markdown(
        summary,
        task=task,
        source=source,
        target=target,
        unseen=unseen_modality,
        dims=dims,
        profile=profile,
        seed=seed,
        settings=settings,
        shape=shape,
    )
    paths = {
        "out_dir": out,
        "results_csv": out / "results.csv",
        "results_md": out / "results.md",
        "chart": out / "dice_by_variant.png",
    }
    write_csv(cases, paths["results_csv"])
    atomic_write_text(paths["results_md"], table)

    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.6))
    legend = {
        "target": f"target: {MODALITY_TITLES[target]}",
        "unseen": f"unseen: {MODALITY_TITLES.get(unseen_modality, '')}",
    }
    plot_ablation(
        summary,
        ax=fig.add_subplot(),
        domain_labels=legend,
        title=f"{task}, {MODALITY_TITLES[source]} → {MODALITY_TITLES[target]} ({dims}D, {profile})",
    )
    _save_figure(fig, paths["chart"])
    paths.update({v: r["checkpoint"] for v, r in runs.items()})
    return AblationResult(
        cases=cases,
        summary=summary,
        table=table,
        models={v: r["model"] for v, r in runs.items()},
        configs=configs,
        histories={v: r["history"] for v, r in runs.items()},
        seconds={v: r["seconds"] for v, r in runs.items()},
        reused=[v for v, r in runs.items() if r["reused"]],
        paths=paths,
        task=task,
        source=source,
        target=target,
        unseen_modality=unseen_modality,
    )
