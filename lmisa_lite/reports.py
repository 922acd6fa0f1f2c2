"""Reports of the ablation: per-variant summaries, the paper-shaped tables, the markdown and the bar chart."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_utils.atomic import atomic_path
from lmisa_lite.evaluation import summarize, to_markdown
from lmisa_lite.variants import MODALITY_TITLES, VARIANT_DESCRIPTIONS


def crop_note(settings: Mapping[str, Any], dims: int) -> str:
    """`` (trained on their central C x C)`` when a 2D profile trains on crops, else empty."""
    crop = settings.get("crop")
    return "" if dims != 2 or crop is None else f" (trained on their central {crop} x {crop})"


def save_figure(fig: Any, path: str | os.PathLike) -> None:
    """Save a matplotlib figure atomically (format from the suffix)."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")


def read_cases(path: str | os.PathLike) -> pd.DataFrame:
    """Read a per-case results table written by the ablation (ids and names as strings; distances in mm)."""
    df = pd.read_csv(
        path, dtype={"case_id": str, "modality": str, "class": str, "variant": str, "domain": str}
    )
    df.attrs["distance_unit"] = "mm"
    return df


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


def ablation_markdown(
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
    """The markdown of ``results.md``: what was run, then the target (and unseen) tables and the variants."""
    n = {
        d: int(summary.loc[(summary["domain"] == d) & (summary["class"] == "mean"), "n_cases"].max())
        for d in summary["domain"].unique()
    }
    lines = [
        f"# Ablation: {task}, {MODALITY_TITLES[source]} → {MODALITY_TITLES[target]}",
        "",
        (
            f"{dims}D, profile `{profile}`, seed {seed}, phantoms of {' x '.join(map(str, shape))} voxels"
            f"{crop_note(settings, dims)}: "
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
