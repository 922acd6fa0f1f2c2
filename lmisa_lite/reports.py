"""Reports of the ablation: per-variant summaries, the spread over seeds, the paper-shaped tables, the markdown
and the bar chart."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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


def seed_means(cases: pd.DataFrame) -> pd.DataFrame:
    """Per variant, domain and seed: the mean Dice (%) and ASSD (mm) over test cases and structures.

    Args:
        cases: Rows as in :attr:`AblationResult.cases` (``variant``, ``domain``, ``seed`` and the metrics).

    Returns:
        Columns ``variant``, ``domain``, ``seed``, ``dice``, ``assd``, ``n_cases``; variants in order of
        appearance.

    Examples:
        >>> cases = pd.DataFrame({"variant": ["a"] * 4, "domain": ["target"] * 4, "seed": [0, 0, 1, 1],
        ...                       "case_id": ["c0", "c1", "c2", "c3"], "label": [1] * 4,
        ...                       "dice": [0.5, 0.7, 0.8, 0.8], "assd": [1.0, 3.0, 2.0, 2.0]})
        >>> seed_means(cases)[["seed", "dice", "assd"]].to_dict("records")
        [{'seed': 0, 'dice': 60.0, 'assd': 2.0}, {'seed': 1, 'dice': 80.0, 'assd': 2.0}]
    """
    rows = []
    for (variant, domain, seed), group in cases.groupby(["variant", "domain", "seed"], sort=False):
        mean = summarize(group, metrics=("dice", "assd")).loc["mean"]
        rows.append({"variant": variant, "domain": domain, "seed": int(seed), "dice": float(mean["dice"]),
                     "assd": float(mean["assd"]), "n_cases": int(mean["n_cases"])})
    return pd.DataFrame(rows)


def over_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample standard deviation over seeds of :func:`seed_means`, per variant and domain.

    Returns:
        Columns ``variant``, ``domain``, ``n_seeds``, ``dice``, ``dice_sd`` and, when ``per_seed`` has them,
        ``assd``, ``assd_sd`` (sd NaN with one seed).
    """
    grouped = per_seed.groupby(["variant", "domain"], sort=False)
    stats = {"n_seeds": ("seed", "nunique")}
    for metric in [m for m in ("dice", "assd") if m in per_seed]:
        stats |= {metric: (metric, "mean"), f"{metric}_sd": (metric, "std")}
    return grouped.agg(**stats).reset_index()


def paired_differences(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Each variant against the one before it (in the table's order), seed by seed, in Dice points.

    Returns:
        One row per consecutive pair and domain: ``variant``, ``versus``, ``domain``, ``n_seeds``, ``mean``
        and ``sd`` of the per-seed differences (variant minus versus), ``wins`` (seeds where the variant is
        higher) and ``per_seed`` (the differences, seed order).

    Examples:
        >>> per_seed = pd.DataFrame({"variant": ["a", "a", "b", "b"], "domain": ["target"] * 4,
        ...                          "seed": [0, 1, 0, 1], "dice": [50.0, 60.0, 55.0, 58.0]})
        >>> paired_differences(per_seed)[["variant", "versus", "mean", "wins"]].to_dict("records")
        [{'variant': 'b', 'versus': 'a', 'mean': 1.5, 'wins': 1}]
    """
    variants = list(dict.fromkeys(per_seed["variant"]))
    rows = []
    for domain, part in per_seed.groupby("domain", sort=False):
        table = part.pivot(index="seed", columns="variant", values="dice")
        for before, after in zip(variants, variants[1:]):
            if before not in table or after not in table:
                continue
            diff = (table[after] - table[before]).dropna()
            rows.append({"variant": after, "versus": before, "domain": domain, "n_seeds": len(diff),
                         "mean": float(diff.mean()), "sd": float(diff.std()) if len(diff) > 1 else np.nan,
                         "wins": int((diff > 0).sum()), "per_seed": [round(float(d), 2) for d in diff]})
    return pd.DataFrame(rows, columns=["variant", "versus", "domain", "n_seeds", "mean", "sd", "wins",
                                       "per_seed"])


def seeds_markdown(per_seed: pd.DataFrame) -> str:
    """The spread over seeds as markdown: mean +- sd of the mean Dice per variant and domain, then the
    paired per-seed differences between consecutive variants."""
    spread = over_seeds(per_seed)
    lines = ["### Over seeds: mean Dice (%) ± sd over seeds (each seed: mean over test cases)", "",
             "| variant | domain | seeds | Dice | per seed |", "|---|---|---:|---:|---|"]
    for row in spread.itertuples():
        values = per_seed[(per_seed["variant"] == row.variant) & (per_seed["domain"] == row.domain)]
        sd = "" if np.isnan(row.dice_sd) else f" ± {row.dice_sd:.1f}"
        lines.append(f"| `{row.variant}` | {row.domain} | {row.n_seeds} | {row.dice:.1f}{sd} | "
                     f"{', '.join(f'{v:.1f}' for v in values['dice'])} |")
    paired = paired_differences(per_seed)
    if not paired.empty:
        lines += ["", "### Paired per-seed differences (Dice points, variant minus the one above it)", "",
                  "| variant | versus | domain | mean ± sd | higher in | per seed |", "|---|---|---|---:|---:|---|"]
        for row in paired.itertuples():
            sd = "" if np.isnan(row.sd) else f" ± {row.sd:.1f}"
            lines.append(f"| `{row.variant}` | `{row.versus}` | {row.domain} | {row.mean:+.1f}{sd} | "
                         f"{row.wins}/{row.n_seeds} | {', '.join(f'{d:+.1f}' for d in row.per_seed)} |")
    return "\n".join(lines) + "\n"


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
    per_seed: pd.DataFrame | None = None,
) -> Any:
    """Bar chart of the mean Dice per variant, target and unseen side by side.

    With ``per_seed`` of two or more seeds, the bars are means over seeds, the error bars the standard
    deviation over seeds and each seed's mean is a dot; otherwise the error bars are the std over test cases.

    Args:
        summary: From :func:`summarize_ablation`.
        ax: Matplotlib axes; None makes a new figure.
        title: Axes title.
        domain_labels: Legend text per domain, e.g. ``{"target": "target: MRI"}``; default the domain names.
        per_seed: From :func:`seed_means`, or None.

    Returns:
        The matplotlib ``Axes``.
    """
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(7, 3.6))
    means = summary[summary["class"] == "mean"]
    seeds = per_seed is not None and per_seed["seed"].nunique() > 1
    if seeds:  # bars: means over seeds; error bars: sd over seeds
        means = over_seeds(per_seed).rename(columns={"dice_sd": "dice_std"})
    variants = list(dict.fromkeys(means["variant"]))
    domains = [d for d in ("target", "unseen") if d in set(means["domain"])]
    width = 0.8 / len(domains)
    x = np.arange(len(variants))
    for i, domain in enumerate(domains):
        part = means[means["domain"] == domain].set_index("variant").reindex(variants)
        offset = x + (i - (len(domains) - 1) / 2) * width
        colour = ("tab:blue", "tab:orange")[i]
        ax.bar(offset, part["dice"], width, yerr=part["dice_std"], capsize=3, color=colour,
               label=(domain_labels or {}).get(domain, domain))
        if seeds:
            dots = per_seed[per_seed["domain"] == domain]
            ax.scatter(offset[[variants.index(v) for v in dots["variant"]]], dots["dice"], s=10, color="black",
                       zorder=3, label="one seed" if i == 0 else None)
    ax.set_xticks(x, variants, rotation=20, ha="right")
    ax.set_ylabel("mean Dice (%)" + (" ± sd over seeds" if seeds else " ± sd over cases"))
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
    seed: int | Sequence[int],
    settings: Mapping[str, Any],
    shape: tuple[int, ...],
    per_seed: pd.DataFrame | None = None,
) -> str:
    """The markdown of ``results.md``: what was run, then the target (and unseen) tables (pooled over the
    seeds' test cases), the spread over seeds when there are several, and the variants."""
    seeds = [seed] if np.isscalar(seed) else list(seed)
    seed_text = (f"seed {seeds[0]}" if len(seeds) == 1 else
                 f"seeds {', '.join(map(str, seeds))} (each seed its own data sets and initialisation)")
    n = {
        d: int(summary.loc[(summary["domain"] == d) & (summary["class"] == "mean"), "n_cases"].max())
        for d in summary["domain"].unique()
    }
    lines = [
        f"# Ablation: {task}, {MODALITY_TITLES[source]} → {MODALITY_TITLES[target]}",
        "",
        (
            f"{dims}D, profile `{profile}`, {seed_text}, phantoms of {' x '.join(map(str, shape))} voxels"
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
    if per_seed is not None and per_seed["seed"].nunique() > 1:
        lines += [seeds_markdown(per_seed)]
    lines += ["Variants:", ""]
    lines += [
        f"- `{v}`: {VARIANT_DESCRIPTIONS[v]}"
        for v in dict.fromkeys(summary["variant"])
        if v in VARIANT_DESCRIPTIONS
    ]
    return "\n".join(lines) + "\n"
