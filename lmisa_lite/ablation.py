"""The LMISA ablation on phantoms: which part of the method buys how much on the target domain.

:func:`run_ablation` trains the variants of :mod:`lmisa_lite.variants` on the same data with the same seed and
scores each on the target-domain test set and on an *unseen* contrast that no variant saw in training. The
oracle is a jointly supervised model: an upper bound that needs the target labels LMISA does without.

Data are phantoms (:func:`data_utils.phantoms.make_dataset`) from four disjoint data-set seeds: labelled
source training cases, unlabelled target training cases, labelled source validation cases (checkpoint
selection, so no target label ever picks a model) and labelled target test cases. The unseen test cases share
the test seed but are rendered in the unseen contrast (:data:`~lmisa_lite.variants.UNSEEN_MODALITY`), hence
are other subjects.

Files in ``out_dir``: ``results.csv`` (one row per variant, domain, case and class), ``results.md`` (tables
shaped like the paper's), ``dice_by_variant.png``, and per variant ``<variant>/best.pt`` and ``last.pt``,
``<variant>/result.csv`` and ``<variant>/run.json``. A second call with the same settings reuses finished
variants (:mod:`lmisa_lite.run_cache`): a notebook that trains a subset of variants into a folder lets a later,
complete ablation over the same folder skip them, and an interrupted run continues from ``last.pt``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_utils.atomic import atomic_write_text
from data_utils.case import Case
from data_utils.phantoms import CLASS_NAMES, MODALITIES, make_dataset
from lmisa_lite.config import TrainConfig
from lmisa_lite.evaluation import evaluate, write_csv
from lmisa_lite.profiles import data_shapes, profile_settings
from lmisa_lite.reports import ablation_markdown, plot_ablation, save_figure, seed_means, summarize_ablation
from lmisa_lite.run_cache import cached_cases, fingerprint, train_or_reuse, write_record
from lmisa_lite.variants import (MODALITY_TITLES, UNSEEN_MODALITY, check_dims, check_seed, check_task,
                                 check_variants, parse_direction, variant_config)

# Data-set seed offsets: each role draws its own subjects.
_DATA_SEEDS = {"source_train": 0, "target_train": 1, "source_val": 2, "target_test": 3}


@dataclass
class AblationResult:
    """What :func:`run_ablation` returns.

    Attributes:
        cases: One row per variant, domain (``"target"``, ``"unseen"``), seed, test case and class: columns
            ``variant``, ``domain``, ``seed`` and those of :func:`lmisa_lite.evaluation.evaluate`.
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
        seeds: The seeds run, in order; ``models``, ``configs``, ``histories``, ``seconds`` and the
            checkpoint paths are those of the first.
        per_seed: Per variant, domain and seed: the mean Dice (%) and ASSD over test cases
            (:func:`lmisa_lite.reports.seed_means`).
        runs: ``{(variant, seed): {"model", "config", "cases", "history", "seconds", "reused", "checkpoint"}}``.
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
    seeds: list[int] = field(default_factory=list)
    per_seed: pd.DataFrame | None = None
    runs: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)


# AblationResult fields keyed by variant, and the run entry each takes
_PER_VARIANT = {"models": "model", "configs": "config", "histories": "history", "seconds": "seconds"}


# ---- scoring -----------------------------------------------------------------------------------------------
def _score(model: Any, cases: Sequence[Case], *, task: str, variant: str, domain: str, dims: int,
           device: str, use_mlngm: bool | None = None) -> pd.DataFrame:
    """Per-case scores of one model on one domain; the input is prepared as the model was trained."""
    df = evaluate(model, cases, dims=dims, use_mlngm=use_mlngm, class_names=CLASS_NAMES[task], device=device,
                  progress=False)
    df.insert(0, "domain", domain)
    df.insert(0, "variant", variant)
    return df


def _unseen_modality(task: str, modality: str | None, direction: str | None) -> str:
    """The contrast to score on: ``modality``, or the direction's unseen one; never one training used."""
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
    return modality


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
            :data:`~lmisa_lite.variants.UNSEEN_MODALITY` for ``direction``.
        n: Number of test phantoms.
        seed: Data-set seed of the test phantoms (:func:`data_utils.phantoms.make_dataset`).
        dims: 2 or 3, the models' spatial dimensions.
        direction: The direction the models were trained in; needed when ``modality`` is None, and used to
            refuse a ``modality`` that training did use.
        shape: Phantom shape; None uses the default (``(96, 96)`` in 2D). Use the training size.
        use_mlngm: None (the default): each model's input is read from the model (``model.input_kind``).
            A bool or ``{name: bool}`` only confirms it; one that contradicts a model raises ValueError.
        device: Inference device.

    Returns:
        One row per model, case and class: ``variant`` (the model's name), ``domain`` (``"unseen"``) and the
        columns of :func:`lmisa_lite.evaluation.evaluate`.

    Raises:
        ValueError: For an empty ``models``, an unknown task or modality, a modality used in training,
            neither ``modality`` nor ``direction``, or a ``use_mlngm`` that contradicts a model.

    Examples:
        >>> from lmisa_lite.networks import LMISANet
        >>> df = evaluate_unseen({"untrained": LMISANet(base_filters=4)}, "kidney", direction="ct2mri", n=1,
        ...                      shape=(64, 64), device="cpu")
        >>> df[["variant", "domain", "modality", "class"]].iloc[0].tolist()
        ['untrained', 'unseen', 'mri_t2', 'kidney']
    """
    check_task(task)
    check_dims(dims)
    check_seed(seed)
    if not isinstance(models, Mapping) or not models:
        raise ValueError("models: expected a non-empty mapping {name: trained model}")
    modality = _unseen_modality(task, modality, direction)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: expected a positive integer")
    cases = make_dataset(task, modality, n=int(n), dims=dims, seed=int(seed), shape=shape)
    flags = use_mlngm if isinstance(use_mlngm, Mapping) else {}
    frames = [_score(model, cases, task=task, variant=name, domain="unseen", dims=dims, device=device,
                     use_mlngm=flags.get(name) if isinstance(use_mlngm, Mapping) else use_mlngm)
              for name, model in models.items()]
    out = pd.concat(frames, ignore_index=True)
    out.attrs["distance_unit"] = "mm"
    return out


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
    """The five case lists of an ablation, each role from its own data-set seed."""

    def data(modality: str, n: int, role: str) -> list[Case]:
        plane = {"plane": settings.get("plane", "volume")} if dims == 2 else {}
        return make_dataset(
            task, modality, n=int(n), dims=dims, seed=4 * seed + _DATA_SEEDS[role], shape=shape, **plane
        )

    sets = {
        "source_train": data(source, settings["n_train"], "source_train"),
        "target_train": data(target, settings["n_train"], "target_train"),
        "source_val": data(source, settings["n_val"], "source_val"),
        "target_test": data(target, settings["n_test"], "target_test"),
    }
    sets["unseen_test"] = data(unseen, settings["n_test"], "target_test") if unseen else []
    return sets




def _keys(data: Mapping[str, list[Case]], describe: Mapping[str, Any]) -> dict[str, Any]:
    """What the run cache hashes: the training data (train key), the test data (eval key), and a description
    of the run for ``run.json`` (``describe`` plus the data sizes and seeds)."""
    return {
        "train": {key: describe[key] for key in ("task", "source", "target", "dims")}
        | {"data": fingerprint(data["source_train"] + data["target_train"] + data["source_val"])},
        "eval": {
            "target_test": fingerprint(data["target_test"]),
            "unseen": describe["unseen_modality"],
            "unseen_test": fingerprint(data["unseen_test"]),
        },
        "describe": {**describe, "sizes": {k: len(v) for k, v in data.items()},
                     "data_seeds": {role: 4 * describe["seed"] + k for role, k in _DATA_SEEDS.items()}},
    }


def _run_variant(variant: str, config: TrainConfig, data: Mapping[str, list[Case]], *, task: str, dims: int,
                 unseen: str | None, keys: Mapping[str, Any]) -> dict[str, Any]:
    """Train (or reuse) one variant and score it on the target (and unseen) test cases."""
    run = train_or_reuse(variant, config, data, keys=keys)
    cases = cached_cases(run)
    if cases is None:
        score = dict(task=task, variant=variant, dims=dims, device=config.device)
        frames = [_score(run.model, data["target_test"], domain="target", **score)]
        if unseen:
            frames.append(_score(run.model, data["unseen_test"], domain="unseen", **score))
        cases = pd.concat(frames, ignore_index=True)
        write_csv(cases, Path(config.out_dir) / "result.csv")
    write_record(run, variant, config, keys["describe"])
    return {"model": run.model, "cases": cases, "history": pd.DataFrame(run.history), "seconds": float(run.seconds),
            "reused": run.reused, "checkpoint": run.checkpoint}


def _check_seeds(seed: int, seeds: Sequence[int] | None) -> list[int]:
    if seeds is None:
        check_seed(seed)
        return [int(seed)]
    chosen = [seeds] if np.isscalar(seeds) else list(seeds)
    for k in chosen:
        check_seed(k)
    if not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(f"seeds={seeds!r}: expected distinct non-negative integers")
    return [int(k) for k in chosen]


def _check_jobs(jobs: Any) -> None:
    if isinstance(jobs, bool) or not isinstance(jobs, (int, np.integer)) or jobs < 1:
        raise ValueError(f"jobs={jobs!r}: expected a positive integer (training runs at once)")


def _output_folder(out_dir: str | os.PathLike | None) -> Path:
    if out_dir is None or (isinstance(out_dir, str) and not out_dir.strip()):
        raise ValueError(f"out_dir={out_dir!r}: expected a folder for the results and checkpoints")
    return Path(out_dir)


def _one_thread() -> None:
    """Initialiser of a worker process: one torch thread (the other cores run the other workers)."""
    import torch

    torch.set_num_threads(1)


def _relative_cost(config: TrainConfig) -> float:
    """Rough work of a run's step: network passes (source; target; unlabelled source) plus the critic's."""
    target_pass = config.use_reconstruction or config.use_shape_constraint or config.supervise_target
    return config.steps * (1 + target_pass + config.use_reconstruction + 1.5 * config.use_shape_constraint)


def _run_all(work: Sequence[tuple[str, TrainConfig, Mapping[str, list[Case]], Mapping[str, Any]]], *, task: str,
             dims: int, unseen: str | None, progress: bool, jobs: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Every ``(variant, config, data, keys)`` of ``work``, keyed ``(variant, seed)`` in the order of ``work``.

    ``jobs > 1``: that many runs at once, each in a worker process of its own (started fresh, not forked, so that
    no thread pool of this process is copied) with one torch thread, the costliest runs first (so that no long
    run starts last, alone); a line per finished run replaces their progress bars, which a worker cannot show
    in a notebook.
    """
    score = dict(task=task, dims=dims, unseen=unseen)
    total, runs = len(work), {}
    if jobs <= 1:
        for i, (variant, config, data, keys) in enumerate(work, 1):
            run = _run_variant(variant, config, data, keys=keys, **score)
            runs[variant, config.seed] = {**run, "config": config}
            if progress:
                _print_progress(f"seed {config.seed}, {i}/{total} {variant}", run)
        return runs
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    done: dict[tuple[str, int], dict[str, Any]] = {}
    with ProcessPoolExecutor(min(jobs, total), mp_context=multiprocessing.get_context("spawn"),
                             initializer=_one_thread) as pool:
        futures = {pool.submit(_run_variant, variant, config.with_overrides(progress=False), data, keys=keys,
                               **score): (variant, config)
                   for variant, config, data, keys in sorted(work, key=lambda w: -_relative_cost(w[1]))}
        for i, future in enumerate(as_completed(futures), 1):
            variant, config = futures[future]
            run = future.result()
            done[variant, config.seed] = {**run, "config": config}
            if progress:
                _print_progress(f"seed {config.seed}, {i}/{total} {variant} ({jobs} at once)", run)
    return {(variant, config.seed): done[variant, config.seed] for variant, config, _, _ in work}


def _pooled_cases(runs: Mapping[tuple[str, int], Mapping[str, Any]]) -> pd.DataFrame:
    """Every run's per-case scores in one table, with a ``seed`` column after ``variant`` and ``domain``."""
    cases = pd.concat([r["cases"].assign(seed=k) for (_, k), r in runs.items()], ignore_index=True)
    cases.insert(2, "seed", cases.pop("seed"))
    cases.attrs["distance_unit"] = "mm"
    return cases


def _fill_per_variant(result: AblationResult, *, several_seeds: bool) -> AblationResult:
    """The per-variant fields from the first seed's runs; ``reused`` names every reused run."""
    first = {v: r for (v, k), r in result.runs.items() if k == result.seeds[0]}
    for name, key in _PER_VARIANT.items():
        setattr(result, name, {v: r[key] for v, r in first.items()})
    result.paths.update({v: r["checkpoint"] for v, r in first.items()})
    result.reused = [v if not several_seeds else f"{v} (seed {k})" for (v, k), r in result.runs.items()
                     if r["reused"]]
    return result


def _print_progress(what: str, run: Mapping[str, Any]) -> None:
    target_dice = run["cases"].query("domain == 'target'")["dice"].mean() * 100
    how = "reused" if run["reused"] else f"trained in {run['seconds']:.0f} s"
    print(f"[ablation] {what}: {how}, target Dice {target_dice:.1f}%", flush=True)


def _write_reports(out: Path, cases: pd.DataFrame, summary: pd.DataFrame, table: str, *, title: str,
                   target: str, unseen: str | None, per_seed: pd.DataFrame | None = None) -> dict[str, Path]:
    """``results.csv``, ``results.md`` and ``dice_by_variant.png`` in ``out``; returns their paths."""
    from matplotlib.figure import Figure

    paths = {"out_dir": out, "results_csv": out / "results.csv", "results_md": out / "results.md",
             "chart": out / "dice_by_variant.png"}
    write_csv(cases, paths["results_csv"])
    atomic_write_text(paths["results_md"], table)
    fig = Figure(figsize=(7, 3.6))
    legend = {"target": f"target: {MODALITY_TITLES[target]}",
              "unseen": f"unseen: {MODALITY_TITLES.get(unseen, '')}"}
    plot_ablation(summary, ax=fig.add_subplot(), domain_labels=legend, title=title, per_seed=per_seed)
    if per_seed is not None:
        write_csv(per_seed, out / "results_by_seed.csv")
        paths["results_by_seed_csv"] = out / "results_by_seed.csv"
    save_figure(fig, paths["chart"])
    return paths


def run_ablation(
    task: str,
    direction: str,
    *,
    dims: int = 2,
    profile: str = "standard",
    out_dir: str | os.PathLike,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    variants: str | Iterable[str] | None = None,
    progress: bool = True,
    unseen: bool = True,
    overrides: Mapping[str, Any] | None = None,
    device: str = "auto",
    jobs: int = 1,
) -> AblationResult:
    """Train and score the LMISA ablation variants on phantoms: for each seed, every variant on the same data.

    Args:
        task: ``"kidney"`` or ``"heart"``.
        direction: ``"ct2mri"`` or ``"mri2ct"`` (also ``"CT->MRI"``: :func:`~lmisa_lite.variants.parse_direction`).
        dims: 2 (images) or 3 (volumes, trained on patches).
        profile: ``"quick"``, ``"standard"`` or ``"paper"`` (:data:`lmisa_lite.profiles.ABLATION`).
        out_dir: Folder for the results and the variants' checkpoints; reused variants are read from it.
        seed: Seeds the data sets and every variant's training (when ``seeds`` is None).
        seeds: Several seeds: each draws its own data sets and initialisation and trains every variant into
            ``out_dir/seed<k>/<variant>``; results per seed, their mean +- sd and the paired per-seed
            differences go into the tables and the chart. None: the one ``seed``, in ``out_dir/<variant>``.
        variants: Keys of :data:`~lmisa_lite.variants.VARIANTS` (one name or several), in the order to report
            them; None runs all.
        progress: Show a progress bar per training run and one line per variant.
        unseen: Also score every variant on the unseen contrast (:data:`~lmisa_lite.variants.UNSEEN_MODALITY`).
        overrides: Changes to the profile, e.g. ``{"steps": 2, "image_size": 32}``
            (:func:`~lmisa_lite.profiles.profile_settings`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        jobs: Training runs at once, each in a process of its own with one torch thread (results equal to
            float rounding); 1 (default): one after the other in this process, with its threads.

    Returns:
        An :class:`AblationResult`.

    Raises:
        ValueError: Naming the argument that is out of range (task, direction, dims, profile, out_dir, seed,
            variants, overrides, jobs).

    Examples:
        >>> print(run_ablation("kidney", "ct2mri", profile="quick", out_dir="runs/ablation").table)  # doctest: +SKIP
    """
    check_task(task)
    source, target = parse_direction(direction)
    check_dims(dims)
    seed_list = _check_seeds(seed, seeds)
    out = _output_folder(out_dir)
    chosen = check_variants(variants)
    _check_jobs(jobs)
    settings = profile_settings(profile, overrides=overrides, task=task)
    shape, _ = data_shapes(settings, dims)
    unseen_modality = UNSEEN_MODALITY[task, f"{source}2{target}"] if unseen else None
    out.mkdir(parents=True, exist_ok=True)
    work = []  # (variant, config, data, keys) of every run
    for k in seed_list:
        data = _make_data(task, source, target, unseen_modality, dims=dims, shape=shape, settings=settings, seed=k)
        keys = _keys(data, {"task": task, "source": source, "target": target, "unseen_modality": unseen_modality,
                            "dims": dims, "profile": profile, "seed": k, "shape": list(shape)})
        root = out if seeds is None else out / f"seed{k}"  # one seed as before: <out>/<variant>
        configs = {v: variant_config(v, task, dims=dims, profile=profile, overrides=overrides, seed=k,
                                     out_dir=root / v, device=device, progress=progress) for v in chosen}
        work += [(v, config, data, keys) for v, config in configs.items()]
    runs = _run_all(work, task=task, dims=dims, unseen=unseen_modality, progress=progress, jobs=int(jobs))
    cases = _pooled_cases(runs)
    summary, per_seed = summarize_ablation(cases), seed_means(cases)
    table = ablation_markdown(summary, task=task, source=source, target=target, unseen=unseen_modality, dims=dims,
                              profile=profile, seed=seed_list, settings=settings, shape=shape, per_seed=per_seed)
    title = f"{task}, {MODALITY_TITLES[source]} → {MODALITY_TITLES[target]} ({dims}D, {profile})"
    paths = _write_reports(out, cases, summary, table, title=title, target=target, unseen=unseen_modality,
                           per_seed=per_seed)
    result = AblationResult(cases=cases, summary=summary, table=table, models={}, configs={}, histories={},
                            seconds={}, reused=[], paths=paths, task=task, source=source, target=target,
                            unseen_modality=unseen_modality, seeds=seed_list, per_seed=per_seed, runs=runs)
    return _fill_per_variant(result, several_seeds=seeds is not None)
