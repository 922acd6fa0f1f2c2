"""Static slice montages: evenly spaced slices of co-registered panels, with label overlays, in one figure.

Widgets need a live kernel; a montage is what readers of an executed notebook rendered to HTML see instead.
:meth:`lmisa_lite.viewer.SliceViewer.static_montage` and :func:`lmisa_lite.viewer.show_montage` draw theirs
with :func:`montage_figure`, in the orientation and colours of :mod:`lmisa_lite.display`.
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

# One panel's overlays in drawing order: (labels of the image's shape, "fill" or "contour").
Overlay = tuple[np.ndarray, str]


def montage_figure(images: Sequence[np.ndarray], overlays: Sequence[Sequence[Overlay]], *, n: int, axis: int,
                   titles: Sequence[str], clims: Sequence[tuple[float, float]], cmap: str, opacity: float,
                   class_names: Mapping[int, str], num_classes: int,
                   spacing: Sequence[float] | None = None) -> Figure:
    """A figure of ``n`` evenly spaced slices per panel, one row of slices per panel.

    The figure is closed in pyplot, so it shows once when returned as the last value of a cell.

    Args:
        images: Panels of one shape, ``(X, Y)`` or ``(X, Y, Z)``.
        overlays: Per panel, the label maps to draw over its image, each filled (``"fill"``, with opacity
            ``opacity``) or outlined (``"contour"``); empty where a panel has none.
        n: Slices per panel (at least 1; at most the number of slices; one for 2D arrays).
        axis: Slicing axis of 3D arrays, 0, 1 or 2.
        titles: Panel titles (empty strings allowed); each slice is titled with its panel's title and, in 3D,
            its axis and index.
        clims: Display range ``(low, high)`` of each panel.
        cmap: Colour map of the images.
        opacity: Opacity of filled overlays, 0 to 1.
        class_names: Class -> name for the legend, drawn below the slices when a panel has an overlay.
        num_classes: Number of label values coloured, background included.
        spacing: Voxel size per axis, for the aspect ratio of the slices.

    Returns:
        A Figure at most 840 px wide with ``len(images) * min(n, slices)`` axes.

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
    n = min(n, size)
    index = np.linspace(0, size - 1, n + 2)[1:-1].round().astype(int) if size > n else np.arange(n)
    legend = any(len(panel) > 0 for panel in overlays)
    aspect = slice_aspect(spacing, ndim, axis)
    colours = class_cmap(num_classes)
    fig = plt.figure(dpi=DPI)
    axes = [fig.add_subplot(len(images), n, j + 1) for j in range(len(images) * n)]
    for j, ax in enumerate(axes):
        i, k = divmod(j, n)
        k = int(index[k])
        ax.imshow(take_slice(images[i], axis, k), cmap=cmap, origin="lower", interpolation="nearest",
                  clim=clims[i], aspect=aspect)
        for labels, style in overlays[i]:
            lab = take_slice(labels, axis, k)
            if style == "fill":
                ax.imshow(lab, cmap=colours, vmin=-0.5, vmax=num_classes - 0.5, origin="lower",
                          interpolation="nearest", alpha=opacity, aspect=aspect)
            else:
                draw_contours(ax, lab)
        ax.set_axis_off()
        # Name and slice on two lines: six slices share 840 px, 140 px each.
        where = f"{AXIS_NAMES[axis][0]}={k}" if ndim == 3 else ""
        ax.set_title("\n".join(t for t in (titles[i], where) if t), fontsize=9)
    h, wd = take_slice(images[0], axis, 0).shape
    lines = 2 if ndim == 3 and any(titles) else 1
    place_axes(fig, axes, n, aspect * h / wd, side=min(2.4, MAX_WIDTH_IN / n), top_in=0.05,
               bottom_in=0.4 if legend else 0.05, title_in=0.1 + 0.18 * lines)
    if legend:
        fig.legend(handles=legend_handles(class_names), loc="lower center", ncol=min(len(class_names), 6),
                   fontsize=9, frameon=False)
    plt.close(fig)
    return fig
