"""Static slice montages: slices of co-registered panels, with label overlays, in one figure.

Widgets need a live kernel; a montage is what readers of an executed notebook rendered to HTML see instead.
:meth:`lmisa_lite.viewer.SliceViewer.static_montage` and :func:`lmisa_lite.viewer.show_montage` draw theirs
with :func:`montage_figure`, in the orientation and colours of :mod:`lmisa_lite.display`. :func:`case_montage`
lays out a stack of test cases instead of the slices of one volume: one column per case, in the order given
(e.g. worst first), each case with its own contrast and title.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from lmisa_lite.display import (
    AXIS_NAMES,
    DPI,
    MAX_WIDTH_IN,
    class_cmap,
    draw_contours,
    legend_handles,
    place_axes,
    slice_aspect,
    take_slice,
)
from lmisa_lite.panels import label_classes

# One panel's overlays in drawing order: (labels of the image's shape, "fill" or "contour").
Overlay = tuple[np.ndarray, str]


def montage_slices(size: int, n: int) -> np.ndarray:
    """The slices a montage of ``n`` slices shows out of ``size``: evenly spaced, or all of them.

    Fewer slices than ``size`` are spread evenly and leave out both ends (the first and last slices of a
    volume are mostly empty); ``n >= size`` shows every slice, the first and the last included.

    Args:
        size: Number of slices along the axis (at least 1).
        n: Slices wanted (at least 1).

    Returns:
        ``min(n, size)`` increasing integer indices.

    Examples:
        >>> montage_slices(12, 4).tolist(), montage_slices(4, 4).tolist(), montage_slices(3, 8).tolist()
        ([2, 4, 7, 9], [0, 1, 2, 3], [0, 1, 2])
    """
    n = min(n, size)
    return np.linspace(0, size - 1, n + 2)[1:-1].round().astype(int) if size > n else np.arange(n)


def montage_figure(images: Sequence[np.ndarray], overlays: Sequence[Sequence[Overlay]], *, n: int, axis: int,
                   titles: Sequence[str], clims: Sequence[tuple[float, float]], cmap: str, opacity: float,
                   class_names: Mapping[int, str], num_classes: int,
                   spacing: Sequence[float] | None = None, index: Sequence[int] | None = None,
                   slice_titles: Sequence[Sequence[str]] | None = None,
                   slice_percentiles: tuple[float, float] | None = None) -> Figure:
    """A figure of ``n`` slices per panel (evenly spaced, or ``index``), one row of slices per panel.

    The figure is closed in pyplot, so it shows once when returned as the last value of a cell.

    Args:
        images: Panels of one shape, ``(X, Y)`` or ``(X, Y, Z)``.
        overlays: Per panel, the label maps to draw over its image, each filled (``"fill"``, with opacity
            ``opacity``) or outlined (``"contour"``); empty where a panel has none.
        n: Slices per panel (one for 2D arrays), chosen by :func:`montage_slices`; ignored with ``index``.
        axis: Slicing axis of 3D arrays, 0, 1 or 2.
        titles: Panel titles (empty strings allowed); each slice is titled with its panel's title and, in 3D,
            its axis and index (or its entry of ``slice_titles``).
        clims: Display range ``(low, high)`` of each panel.
        cmap: Colour map of the images.
        opacity: Opacity of filled overlays, 0 to 1.
        class_names: Class -> name for the legend, drawn below the slices when a panel has an overlay.
        num_classes: Number of label values coloured, background included.
        spacing: Voxel size per axis, for the aspect ratio of the slices.
        index: The slices to show, in this order (e.g. ``range(4)`` for the first four entries of a stack).
        slice_titles: Per panel, one second title line per slice shown, instead of ``"Z=k"``.
        slice_percentiles: ``(low, high)``: each slice's display range from its own percentiles instead of
            its panel's ``clims`` (for stacks of unrelated images, such as test cases).

    Returns:
        A Figure at most 840 px wide with ``len(images) * min(n, slices)`` axes (or ``len(index)`` per panel).

    Raises:
        ValueError: If ``index`` is empty or out of range, or ``slice_titles`` does not match the slices.

    Examples:
        >>> vol = np.random.rand(8, 8, 6); lab = (vol > 0.5).astype(np.uint8)
        >>> fig = montage_figure([vol], [[(lab, "contour")]], n=3, axis=2, titles=["CT"], clims=[(0.0, 1.0)],
        ...                      cmap="gray", opacity=0.4, class_names={1: "kidney"}, num_classes=2)
        >>> len(fig.axes)
        3
    """
    import matplotlib.pyplot as plt

    ndim = images[0].ndim
    size = images[0].shape[axis] if ndim == 3 else 1
    chosen = _chosen_slices(size, n, index, slice_titles, len(images))
    n = len(chosen)
    legend = any(len(panel) > 0 for panel in overlays)
    aspect = slice_aspect(spacing, ndim, axis)
    colours = class_cmap(num_classes)
    fig = plt.figure(dpi=DPI)
    axes = [fig.add_subplot(len(images), n, j + 1) for j in range(len(images) * n)]
    for j, ax in enumerate(axes):
        i, col = divmod(j, n)
        k = int(chosen[col])
        image = take_slice(images[i], axis, k)
        clim = clims[i] if slice_percentiles is None else _percentile_range(image, slice_percentiles)
        ax.imshow(image, cmap=cmap, origin="lower", interpolation="nearest", clim=clim, aspect=aspect)
        for labels, style in overlays[i]:
            lab = take_slice(labels, axis, k)
            if style == "fill":
                ax.imshow(lab, cmap=colours, vmin=-0.5, vmax=num_classes - 0.5, origin="lower",
                          interpolation="nearest", alpha=opacity, aspect=aspect)
            else:
                draw_contours(ax, lab)
        ax.set_axis_off()
        # Name and slice on two lines: six slices share 840 px, 140 px each.
        where = slice_titles[i][col] if slice_titles is not None else (
            f"{AXIS_NAMES[axis][0]}={k}" if ndim == 3 else "")
        ax.set_title("\n".join(t for t in (titles[i], where) if t), fontsize=9)
    h, wd = take_slice(images[0], axis, 0).shape
    lines = 2 if (ndim == 3 or slice_titles is not None) and any(titles) else 1
    place_axes(fig, axes, n, aspect * h / wd, side=min(2.4, MAX_WIDTH_IN / n), top_in=0.05,
               bottom_in=0.4 if legend else 0.05, title_in=0.1 + 0.18 * lines)
    if legend:
        fig.legend(handles=legend_handles(class_names), loc="lower center", ncol=min(len(class_names), 6),
                   fontsize=9, frameon=False)
    plt.close(fig)
    return fig


def _chosen_slices(size: int, n: int, index: Sequence[int] | None,
                   slice_titles: Sequence[Sequence[str]] | None, panels: int) -> np.ndarray:
    """The slice indices of a montage, checked against the number of slices and of slice titles."""
    chosen = montage_slices(size, n) if index is None else np.asarray(index, dtype=int).ravel()
    if chosen.size == 0 or chosen.min() < 0 or chosen.max() >= size:
        raise ValueError(f"index: expected slices in 0..{size - 1}, got {chosen.tolist()}")
    if slice_titles is not None and [len(t) for t in slice_titles] != [len(chosen)] * panels:
        raise ValueError(f"slice_titles: expected {len(chosen)} titles for each of the {panels} panels")
    return chosen


def _percentile_range(image: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float]:
    """``(low, high)`` display range of one slice from its own percentiles (never empty)."""
    lo, hi = (float(v) for v in np.nanpercentile(image, percentiles))
    return lo, hi if hi > lo else lo + 1e-6


def case_montage(image: np.ndarray, label: np.ndarray | None, predictions: Mapping[str, np.ndarray], *,
                 cases: Sequence[str], scores: Mapping[str, Sequence[float]] | None = None,
                 score_format: str = "Dice {:.1f}%", n: int | None = None,
                 class_names: Sequence[str] | Mapping[int, str] | None = None,
                 percentiles: tuple[float, float] = (1, 99), opacity: float = 0.4,
                 cmap: str = "gray") -> Figure:
    """Test cases side by side: one column per case in stack order, the truth and each model in rows.

    The static counterpart of ``SliceViewer.compare`` on a stack of cases. Unlike a volume's slices, cases
    differ in intensity scale, so each column gets its own contrast (``percentiles`` of that case's image).
    The ground-truth row is titled with the case names, each model's row with its score on that case.

    Args:
        image: ``(X, Y, N)``: ``N`` cases of one size stacked along the last axis.
        label: ``(X, Y, N)`` ground truth (its row is left out when ``None``).
        predictions: Model name -> ``(X, Y, N)`` predicted labels, one row each.
        cases: ``N`` case names (e.g. case ids), in stack order.
        scores: Model name -> ``N`` scores (e.g. Dice in %), shown with ``score_format`` under the model's
            name; models without an entry show the name only.
        score_format: Format of one score.
        n: Cases shown: the first ``n`` of the stack (default all, the first and the last included).
        class_names: Names of classes 1, 2, ... (list, optionally led by ``"background"``, or dict).
        percentiles: ``(low, high)`` percentiles of each case's intensities that set its display range.
        opacity: Opacity of the filled labels, 0 to 1.
        cmap: Colour map of the images.

    Returns:
        A Figure at most 840 px wide, ``n`` columns, one row for the truth and one per model.

    Raises:
        ValueError: If ``image`` is not ``(X, Y, N)``, the layers or ``cases`` do not match it, a score list
            has another length, or ``n`` is out of range.

    Examples:
        >>> img = np.random.rand(8, 8, 3); gt = (img > 0.5).astype(np.uint8)
        >>> fig = case_montage(img, gt, {"model": gt}, cases=["a", "b", "c"], scores={"model": [90, 80, 70]})
        >>> len(fig.axes), fig.axes[3].get_title()
        (6, 'model\\nDice 90.0%')
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image: expected cases stacked as (X, Y, N), got shape {image.shape}")
    count = image.shape[2]
    n = count if n is None else n
    if not 1 <= n <= count or len(cases) != count:
        raise ValueError(f"n={n}, cases: expected 1 <= n <= {count} and {count} case names, got {len(cases)}")
    if label is None and not predictions:
        raise ValueError("label, predictions: nothing to show; give a label or at least one prediction")
    rows = [("ground truth", label, [str(c) for c in cases[:n]])] if label is not None else []
    for name, pred in predictions.items():
        values = (scores or {}).get(name)
        if values is not None and len(values) != count:
            raise ValueError(f"scores[{name!r}]: expected {count} scores, one per case, got {len(values)}")
        rows.append((str(name), pred, [""] * n if values is None else
                     [score_format.format(float(v)) for v in list(values)[:n]]))
    layers = [np.asarray(layer) for _, layer, _ in rows]
    if any(layer.shape != image.shape for layer in layers):
        raise ValueError(f"label, predictions: expected the image's shape {image.shape}, got "
                         f"{[layer.shape for layer in layers]}")
    names, num_classes = label_classes(layers, class_names)
    return montage_figure([image] * len(rows), [[(layer.astype(np.int64), "fill")] for layer in layers], n=n,
                          axis=2, titles=[title for title, _, _ in rows], clims=[(0.0, 1.0)] * len(rows),
                          cmap=cmap, opacity=opacity, class_names=names, num_classes=num_classes,
                          index=range(n), slice_titles=[notes for _, _, notes in rows],
                          slice_percentiles=percentiles)
