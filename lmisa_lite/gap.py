"""The modality gap, measured pixel by pixel inside the body.

A phantom renders one subject in every modality (same seed, same anatomy), so two renderings can be compared
where it matters: at the same pixel, inside the body. Three measures answer different questions:

- Pearson's r: do the two images have the same values up to a linear rescaling (z-scoring)? This is what a
  network trained on one modality needs from the other.
- Spearman's rho: do they put the pixels in the same order? No monotone intensity transform (windowing,
  z-scoring, histogram matching) can change it, so it isolates what only a change of representation can fix.
- Normalised mutual information (NMI): does one image predict the other through any mapping at all, even
  one that inverts or reorders the tissues? It is high whenever both images show the same structures.

The histogram distance (the Wasserstein-1 distance between the z-scored values) is kept as a foil: it ignores
where the values are, so histogram matching brings it to 0 and two unrelated noise images score well on it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from scipy.stats import rankdata

from data_utils.phantoms import make_tissue_map

__all__ = ["AGREEMENT_COLUMNS", "OUTSIDE_BODY", "agreement_table", "body_mask", "compare_modalities",
           "histogram_distance", "modality_agreement", "normalized_mutual_information", "pair_matrix",
           "plot_agreement", "plot_pair_matrices"]

#: Structures of the tissue map that are not the patient: the air around the body and the scanner couch.
OUTSIDE_BODY = ("outside", "table")

#: Column names of :func:`agreement_table`, keyed by the measure.
AGREEMENT_COLUMNS = {"histogram_distance": "histogram distance (whole image)", "pearson": "Pearson r (body)",
                     "spearman": "Spearman rho (body)", "nmi": "NMI (body)"}


def body_mask(task: str, *, dims: int = 2, shape: Sequence[int] | None = None, seed: int = 0) -> np.ndarray:
    """Where the subject of ``make_phantom(task, ..., seed=seed)`` is: every structure but air and couch.

    Gas inside the body (bowel) counts as body; only the structures of :data:`OUTSIDE_BODY` do not.

    Args:
        task: ``"kidney"`` or ``"heart"``.
        dims: 2 (one axial slice) or 3, as for the phantom.
        shape: Array shape, as for the phantom (its default when None).
        seed: Subject seed, as for the phantom.

    Returns:
        A boolean mask of the phantom's shape, ``(X, Y)`` or ``(X, Y, Z)``.

    Examples:
        >>> mask = body_mask("kidney", seed=3)
        >>> mask.shape, bool(mask[0, 0]), bool(mask[48, 48])
        ((96, 96), False, True)
    """
    ids, names = make_tissue_map(task, dims=dims, shape=shape, seed=seed)
    outside = [k for k, name in enumerate(names) if name in OUTSIDE_BODY]
    return ~np.isin(ids, outside)


def _values(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of ``a`` and ``b`` inside ``mask``, as two float64 vectors."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the two images differ in shape: {a.shape} and {b.shape}")
    if mask is None:
        return a.ravel(), b.ravel()
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != a.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the images' {a.shape}")
    if mask.sum() < 2:
        raise ValueError("the mask selects fewer than two pixels")
    return a[mask], b[mask]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two vectors; NaN when one of them is constant."""
    x, y = x - x.mean(), y - y.mean()
    norm = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / norm) if norm > 0 else float("nan")


def _rank_bins(ranks: np.ndarray, bins: int) -> np.ndarray:
    """Equal-count bin of every value, from its rank (ties share a bin), so monotone transforms keep it."""
    q = (ranks - 0.5) / ranks.size
    return np.minimum((q * bins).astype(np.int64), bins - 1)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def normalized_mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 16) -> float:
    """NMI of two images' values, ``2 I(A; B) / (H(A) + H(B))``, in [0, 1].

    Each image's values are put into ``bins`` equal-count bins (by rank), so the result does not depend on
    any monotone rescaling of either image. 0: the images are independent; 1: each one determines the other
    (an inverted or reordered contrast included, up to values that fall on a bin edge). With
    :func:`skimage.metrics.normalized_mutual_information`'s ``Y = (H(A) + H(B)) / H(A, B)`` on the same bins,
    this is ``2 (Y - 1) / Y``. The estimate is biased upwards by about ``(bins - 1)**2 / (2 n ln(bins))`` for
    ``n`` independent values (0.004 for 16 bins and 10,000).

    Args:
        a: Values of one image, any shape.
        b: Values of the other, the same shape.
        bins: Bins per image.

    Returns:
        The NMI; 0 when both images are constant.

    Raises:
        ValueError: If the shapes differ or ``bins < 2``.

    Examples:
        >>> x = np.arange(64.0)
        >>> nmi = normalized_mutual_information
        >>> round(nmi(x, -x**3), 3), round(nmi(x, x // 16), 3)  # inverted; a coarse copy (4 levels)
        (1.0, 0.667)
    """
    x, y = _values(a, b, None)
    return _nmi_of_ranks(rankdata(x), rankdata(y), bins)


def _nmi_of_ranks(rank_a: np.ndarray, rank_b: np.ndarray, bins: int) -> float:
    """:func:`normalized_mutual_information` from the two vectors' ranks (ties averaged)."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    joint = np.zeros((bins, bins))
    np.add.at(joint, (_rank_bins(rank_a, bins), _rank_bins(rank_b, bins)), 1.0)
    joint /= joint.sum()
    h_a, h_b, h_ab = _entropy(joint.sum(1)), _entropy(joint.sum(0)), _entropy(joint.ravel())
    return 2.0 * (h_a + h_b - h_ab) / (h_a + h_b) if h_a + h_b > 0 else 0.0


def histogram_distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Wasserstein-1 distance between the z-scored values of two images (inside ``mask``).

    It compares the two distributions of values and ignores where the values are: shuffling the pixels of
    either image does not change it.

    Args:
        a: One image, any shape.
        b: The other, the same shape.
        mask: Boolean mask of that shape; all pixels when None.

    Returns:
        The distance, in standard deviations (0 for identical histograms).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=1000)
        >>> histogram_distance(x, 5 * x + 2) < 1e-9, histogram_distance(x, np.sort(x)) < 1e-9
        (True, True)
    """
    x, y = _values(a, b, mask)
    x, y = (x - x.mean()) / (x.std() + 1e-12), (y - y.mean()) / (y.std() + 1e-12)
    # between two samples of one size, W1 is the mean absolute difference of the sorted values
    return float(np.abs(np.sort(x) - np.sort(y)).mean())


def modality_agreement(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *,
                       bins: int = 16) -> dict[str, float]:
    """Pixel-wise agreement of two renderings of one subject, inside ``mask``.

    Args:
        a: One rendering (e.g. the CT or its MLNGM map), ``(X, Y)`` or ``(X, Y, Z)``.
        b: The other (e.g. the MRI), the same shape.
        mask: Boolean mask of the pixels to compare (e.g. :func:`body_mask`); all pixels when None.
        bins: Bins per image for the NMI.

    Returns:
        ``{"pearson": r, "spearman": rho, "nmi": nmi}``; a correlation is NaN when an image is constant in
        the mask.

    Raises:
        ValueError: If the shapes differ or the mask selects fewer than two pixels.

    Examples:
        >>> x = np.linspace(0.0, 1.0, 64)
        >>> {k: round(v, 2) for k, v in modality_agreement(x, 1 - x**2).items()}
        {'pearson': -0.97, 'spearman': -1.0, 'nmi': 1.0}
    """
    x, y = _values(a, b, mask)
    rank_x, rank_y = rankdata(x), rankdata(y)
    return {"pearson": _pearson(x, y), "spearman": _pearson(rank_x, rank_y),
            "nmi": _nmi_of_ranks(rank_x, rank_y, bins)}


def agreement_table(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], mask: np.ndarray | None = None, *,
                    bins: int = 16) -> pd.DataFrame:
    """The histogram distance (whole images) and the agreement measures (inside ``mask``) of image pairs.

    Args:
        pairs: Name of each comparison (e.g. ``"raw"``, ``"MLNGM"``) and its two images, of one shape.
        mask: Boolean mask of the pixels to compare pixel by pixel; all pixels when None.
        bins: Bins per image for the NMI.

    Returns:
        One row per pair (index: the names), the columns of :data:`AGREEMENT_COLUMNS`.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(32, 32))
        >>> table = agreement_table({"same": (x, x), "inverted": (x, -x)})
        >>> table.round(2).to_dict("index")["inverted"]["Pearson r (body)"]
        -1.0
    """
    rows = {name: {"histogram_distance": histogram_distance(a, b),
                   **modality_agreement(a, b, mask, bins=bins)} for name, (a, b) in pairs.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")[list(AGREEMENT_COLUMNS)]
    return table.rename(columns=AGREEMENT_COLUMNS).rename_axis("comparison")


def compare_modalities(images: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray], mask: np.ndarray,
                       *, bins: int = 16) -> pd.DataFrame:
    """Every pair of one subject's modalities: raw, histogram-matched and as MLNGM maps.

    Each pair ``(first, second)`` is taken once, in the order of ``images`` (every measure but the Pearson r
    of the histogram-matched images is symmetric). Its histogram-matched comparison maps ``second``'s values
    onto ``first``'s histogram (:func:`skimage.exposure.match_histograms`), the best any global intensity
    transform can do for the histogram distance; being monotone, it leaves Spearman's rho and the NMI as they
    are (up to ties it creates).

    Args:
        images: Modality name -> image of one subject, all of one shape.
        maps: Modality name -> the MLNGM map of that image.
        mask: Boolean body mask of that shape.
        bins: Bins per image for the NMI.

    Returns:
        Long format: columns ``first``, ``second``, ``comparison`` (``"raw"``, ``"histogram-matched"``,
        ``"MLNGM"``) and those of :data:`AGREEMENT_COLUMNS`, one row per pair and comparison.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(16, 16))
        >>> rows = compare_modalities({"a": x, "b": -x}, {"a": x**2, "b": x**2}, np.ones((16, 16), bool))
        >>> len(rows), rows.loc[rows.comparison == "MLNGM", "Pearson r (body)"].round(2).tolist()
        (3, [1.0])
    """
    from skimage.exposure import match_histograms

    tables = []
    for first, second in combinations(images, 2):
        a, b = images[first], images[second]
        pairs = {"raw": (a, b), "histogram-matched": (a, match_histograms(b, a)),
                 "MLNGM": (maps[first], maps[second])}
        table = agreement_table(pairs, mask, bins=bins).reset_index()
        tables.append(table.assign(first=first, second=second))
    columns = ["first", "second", "comparison", *AGREEMENT_COLUMNS.values()]
    return pd.concat(tables, ignore_index=True)[columns]


def _scaled(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` scaled so that its 1st to 99th percentile inside ``mask`` spans [0, 1] (clipped)."""
    low, high = np.percentile(image[mask], [1, 99])
    return np.clip((image - low) / (high - low if high > low else 1.0), 0, 1)


def _mid_slice(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 2 else array[:, :, array.shape[2] // 2]


def plot_agreement(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], mask: np.ndarray, *,
                   labels: tuple[str, str] | Mapping[str, tuple[str, str]] = ("CT", "MRI"),
                   bins: int = 16) -> Figure:
    """Each pair side by side (top) and its joint histogram inside the mask (bottom), with the measures.

    Args:
        pairs: Name -> two images of one shape, ``(X, Y)`` or ``(X, Y, Z)`` (the middle slice is shown).
        mask: Boolean mask of the pixels to compare; outlined in the top row.
        labels: What the first and the second image of a pair are, for the axes: one pair of names for all,
            or pair name -> names (``("CT", "MRI")`` for pairs it leaves out).
        bins: Bins per image for the NMI in the titles.

    Returns:
        The figure (outside pyplot, so it shows once when it is a cell's last value).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(32, 32))
        >>> len(plot_agreement({"same": (x, x), "inverted": (x, -x)}, x > -1).axes)
        4
    """
    mask = np.asarray(mask, dtype=bool)
    table = agreement_table(pairs, mask, bins=bins)
    plane = _mid_slice(mask)
    fig = Figure(figsize=(3.3 * len(pairs), 5.6), layout="constrained")
    axes = fig.subplots(2, len(pairs), squeeze=False, height_ratios=[0.62, 1])
    for k, (name, (a, b)) in enumerate(pairs.items()):
        first, second = labels.get(name, ("CT", "MRI")) if isinstance(labels, Mapping) else labels
        row = {key: table.loc[name, column] for key, column in AGREEMENT_COLUMNS.items()}
        side = np.concatenate([_scaled(_mid_slice(a), plane), _scaled(_mid_slice(b), plane)])
        ax = axes[0, k]
        ax.imshow(side.T, cmap="gray", origin="lower")
        if plane.any() and not plane.all():
            ax.contour(np.concatenate([plane, plane]).T, levels=[0.5], colors="tab:orange", linewidths=0.6)
        ax.set_title(f"{name}\nhistogram distance {row['histogram_distance']:.3f}", fontsize=9)
        ax.set_xlabel(f"{first}  |  {second}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        x, y = _values(a, b, mask)
        x, y = (x - x.mean()) / (x.std() + 1e-12), (y - y.mean()) / (y.std() + 1e-12)
        lims = [np.percentile(v, [0.5, 99.5]) for v in (x, y)]
        ax = axes[1, k]
        ax.hist2d(x, y, bins=48, range=lims, norm=LogNorm(), cmap="viridis")
        ax.set_title(f"r = {row['pearson']:.2f}, \u03c1 = {row['spearman']:.2f}, NMI = {row['nmi']:.2f}",
                     fontsize=9)
        ax.set_xlabel(f"{first} (z-scored)", fontsize=8)
        ax.set_ylabel(f"{second} (z-scored)", fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def pair_matrix(rows: pd.DataFrame, column: str, comparison: str) -> pd.DataFrame:
    """One measure of :func:`compare_modalities` rows as a symmetric modality x modality matrix.

    Args:
        rows: Rows of :func:`compare_modalities` (of one task; several subjects are averaged).
        column: The measure, one of :data:`AGREEMENT_COLUMNS`'s values.
        comparison: ``"raw"``, ``"histogram-matched"`` or ``"MLNGM"``.

    Returns:
        The mean of the measure for every pair, in both halves; NaN on the diagonal.

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(16, 16))
        >>> rows = compare_modalities({"a": x, "b": -x}, {"a": x**2, "b": x**2}, np.ones((16, 16), bool))
        >>> pair_matrix(rows, "Spearman rho (body)", "raw").round(2).values.tolist()
        [[nan, -1.0], [-1.0, nan]]
    """
    chosen = rows[rows["comparison"] == comparison]
    means = chosen.groupby(["first", "second"], sort=False)[column].mean()
    names = list(pd.unique(pd.concat([rows["first"], rows["second"]])))
    matrix = pd.DataFrame(np.nan, index=names, columns=names)
    for (first, second), value in means.items():
        matrix.loc[first, second] = matrix.loc[second, first] = value
    return matrix


def plot_pair_matrices(rows: pd.DataFrame, column: str = "Spearman rho (body)", *,
                       comparisons: Sequence[str] = ("raw", "MLNGM")) -> Figure:
    """Heat maps of one measure for every pair of modalities: one panel per task and comparison.

    Args:
        rows: Rows of :func:`compare_modalities` with a ``task`` column added (subjects are averaged).
        column: The measure; correlations are drawn from -1 (blue) to 1 (red), others from 0.
        comparisons: Which comparisons to draw, in order.

    Returns:
        The figure (outside pyplot, so it shows once when it is a cell's last value).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(16, 16))
        >>> rows = compare_modalities({"a": x, "b": -x}, {"a": x**2, "b": x**2}, np.ones((16, 16), bool))
        >>> len(plot_pair_matrices(rows.assign(task="demo")).axes)  # two panels and a colour bar
        3
    """
    panels = [(task, c) for task in pd.unique(rows["task"]) for c in comparisons]
    correlation = column in (AGREEMENT_COLUMNS["pearson"], AGREEMENT_COLUMNS["spearman"])
    limits = (-1.0, 1.0) if correlation else (0.0, float(rows[column].max()))
    cmap = "RdBu_r" if correlation else "viridis"
    fig = Figure(figsize=(3.4 * len(panels) + 1.0, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (task, comparison) in zip(axes, panels):
        matrix = pair_matrix(rows[rows["task"] == task], column, comparison)
        image = ax.imshow(matrix.values, vmin=limits[0], vmax=limits[1], cmap=cmap)
        n = len(matrix)
        ax.set_xticks(range(n), matrix.columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), matrix.index, fontsize=8)
        ax.set_title(f"{task}, {comparison}", fontsize=10)
        for (i, j), value in np.ndenumerate(matrix.values):
            if np.isfinite(value):  # white on the darkest colours
                strong = abs(value) > 0.6 if correlation else value < 0.3 * limits[1]
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="w" if strong else "k")
    fig.colorbar(image, ax=list(axes), shrink=0.85, label=column)
    return fig
