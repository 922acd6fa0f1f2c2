"""Display helpers shared by the notebook widgets: class colours, slice orientation, overlays, layout, PNGs.

Orientation: a slice along one axis keeps the other two axes in order and is drawn transposed with
``origin="lower"``, so the first remaining axis runs left to right and the second bottom to top. For an axial
slice of an ``(X, Y, Z)`` array that is ``array[:, :, z].T``: X horizontal, Y up. For RAS data the patient's
right is on the right of the screen (neurological convention) and anterior at the top; coronal slices show X
against Z and sagittal slices Y against Z, superior at the top. 2D ``(X, Y)`` arrays are drawn the same way.

Sizes: figures are at most 840 px wide at 100 dpi (:data:`MAX_FIGURE_PX`), the width of a notebook's output
area in JupyterLab's default layout on a 1280-px screen with the file browser open. The picture is shown at
its own size, never stretched to the output width, and only shrinks (keeping its aspect) in a narrower output
area, so text drawn at 9 pt or more stays at least 12 px tall on screen. Controls carry CSS classes
(``lmisa-...``) by which pages and tests find them regardless of their descriptions.
"""
from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_rgba
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Patch

# Okabe-Ito palette (safe for the common colour-vision deficiencies). Index = class; class 0 is transparent.
CLASS_COLOURS: tuple[tuple[float, float, float, float], ...] = (
    (0.0, 0.0, 0.0, 0.0),
    to_rgba("#E69F00"),  # 1 orange
    to_rgba("#56B4E9"),  # 2 sky blue
    to_rgba("#009E73"),  # 3 bluish green
    to_rgba("#CC79A7"),  # 4 reddish purple
    to_rgba("#F0E442"),  # 5 yellow
    to_rgba("#0072B2"),  # 6 blue
    to_rgba("#D55E00"),  # 7 vermillion
)
AXIS_NAMES = ("X (sagittal)", "Y (coronal)", "Z (axial)")
DPI = 100
MAX_FIGURE_PX = 840
MAX_WIDTH_IN = MAX_FIGURE_PX / DPI
PANELS_PER_ROW = 4  # 4 panels of 210 px in one row; more wrap into balanced rows (5 -> 3 + 2)


# ---------------------------------------------------------------------------------------------- colours
def class_colour(k: int) -> tuple[float, float, float, float]:
    """RGBA colour of class ``k``; classes past the table reuse it cyclically (class 0 is transparent)."""
    return CLASS_COLOURS[0] if k <= 0 else CLASS_COLOURS[1 + (k - 1) % (len(CLASS_COLOURS) - 1)]


def class_cmap(num_classes: int) -> ListedColormap:
    """Colour map of the label values ``0..num_classes-1`` (at least two), in the colours of the classes.

    Args:
        num_classes: Number of label values, background included.

    Returns:
        A ListedColormap named ``"lmisa_classes"``; draw labels with ``vmin=-0.5, vmax=num_classes - 0.5``.
    """
    return ListedColormap([class_colour(k) for k in range(max(num_classes, 2))], name="lmisa_classes")


def resolve_class_names(class_names: Sequence[str] | Mapping[int, str] | None,
                        num_classes: int) -> dict[int, str]:
    """Names of the foreground classes 1..num_classes-1 (a leading 'background' entry in a list is skipped).

    Args:
        class_names: Names of classes 1, 2, ... (list, optionally led by ``"background"``, or dict), or
            ``None``.
        num_classes: Number of label values, background included.

    Returns:
        Class -> name for every class ``1..num_classes-1`` (``"class k"`` where none is given) and every
        positive key of a dict.

    Examples:
        >>> resolve_class_names(["background", "kidney"], 3)
        {1: 'kidney', 2: 'class 2'}
    """
    names = {k: f"class {k}" for k in range(1, num_classes)}
    if isinstance(class_names, Mapping):
        names.update({int(k): str(v) for k, v in class_names.items() if int(k) > 0})
    elif class_names is not None:
        given = [str(n) for n in class_names]
        if given and given[0].lower() in ("background", "bg"):
            given = given[1:]
        names.update({k: n for k, n in enumerate(given, start=1)})
    return names


def legend_handles(names: Mapping[int, str]) -> list[Patch]:
    """Legend patches, one per class in class order, in the class colours.

    Args:
        names: Class -> name.

    Returns:
        Patches for ``Axes.legend(handles=...)`` or ``Figure.legend(handles=...)``.
    """
    return [Patch(facecolor=class_colour(k), edgecolor="none", label=n) for k, n in sorted(names.items())]


# ---------------------------------------------------------------------------------------------- slices
def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis`` in display orientation (transposed, drawn with origin lower).

    Args:
        volume: ``(X, Y)`` (returned transposed whatever ``axis`` and ``index``) or ``(X, Y, Z)``.
        axis: Slicing axis of a 3D array.
        index: Slice index along ``axis``.

    Returns:
        The slice ``(v, h)``: e.g. ``volume[:, :, index].T`` for ``axis=2``.

    Examples:
        >>> take_slice(np.zeros((4, 3, 2)), 2, 1).shape
        (3, 4)
    """
    if volume.ndim == 2:
        return volume.T
    return np.take(volume, index, axis=axis).T


def slice_aspect(spacing: Sequence[float] | None, ndim: int, axis: int) -> float:
    """Aspect ratio (vertical over horizontal voxel size) of slices along ``axis``; 1 without spacing.

    Args:
        spacing: Voxel size per axis, or ``None``.
        ndim: 2 or 3, the number of array axes.
        axis: Slicing axis of a 3D array (ignored in 2D).

    Returns:
        The value for ``Axes.set_aspect`` / ``imshow(aspect=...)``.
    """
    if spacing is None:
        return 1.0
    h, v = [a for a in range(ndim) if a != axis][:2] if ndim == 3 else (0, 1)
    return float(spacing[v]) / float(spacing[h])


def draw_contours(ax: Axes, label2d: np.ndarray) -> list[Any]:
    """Outline each class of a display-oriented 2D label slice in its class colour.

    Args:
        ax: Axes to draw into.
        label2d: Integer labels ``(v, h)``, already in display orientation.

    Returns:
        The contour sets, one per class present (for removal on the next redraw).
    """
    height, width = label2d.shape
    rows, cols = np.arange(-1, height + 1), np.arange(-1, width + 1)
    sets = []
    for k in np.unique(label2d):
        if k > 0:
            # Pad with background so that regions touching the border are closed at the pixel edge.
            mask = np.pad((label2d == k).astype(np.float32), 1)
            sets.append(ax.contour(cols, rows, mask, levels=[0.5], colors=[class_colour(int(k))],
                                   linewidths=1.5))
    return sets


# ---------------------------------------------------------------------------------------------- layout
def panel_grid(n: int) -> tuple[int, int]:
    """``(rows, columns)`` for ``n`` panels: at most :data:`PANELS_PER_ROW` per row, rows filled evenly.

    Examples:
        >>> panel_grid(5)
        (2, 3)
    """
    rows = math.ceil(n / PANELS_PER_ROW)
    return rows, math.ceil(n / rows)


def place_axes(fig: Figure, axes: Sequence[Axes], ncols: int, ratio: float, *, side: float,
               top_in: float = 0.35, bottom_in: float = 0.0, title_in: float = 0.3) -> None:
    """Resize ``fig`` and lay ``axes`` out row by row: cells ``side`` inches wide and ``side * ratio`` tall.

    Args:
        fig: The figure, resized to ``ncols`` cells across and as many rows as ``axes`` need.
        axes: Axes of ``fig`` in reading order.
        ncols: Cells per row.
        ratio: Height over width of a cell's picture, clipped to [0.3, 2].
        side: Cell width in inches.
        top_in: Space above the first row (suptitle), inches.
        bottom_in: Space below the last row (legend), inches.
        title_in: Space above each row's pictures (axes titles), inches.
    """
    ratio = float(np.clip(ratio, 0.3, 2.0))
    nrows = math.ceil(len(axes) / ncols)
    cell = side * ratio + title_in
    width, height = side * ncols, top_in + nrows * cell + bottom_in
    fig.set_size_inches(width, height)
    pad = 0.03 * side
    for j, ax in enumerate(axes):
        r, c = divmod(j, ncols)
        bottom = bottom_in + (nrows - 1 - r) * cell
        ax.set_position([(c * side + pad) / width, bottom / height, (side - 2 * pad) / width,
                         side * ratio / height])


def image_widget(css_class: str) -> w.Image:
    """An empty PNG ``ipywidgets.Image`` shown at its natural size.

    A box stretches its children to its width by default, which blurs a small picture and shrinks a large
    one together with its text. ``align_self`` keeps the natural width; ``max_width`` only lets the picture
    shrink, keeping its aspect, when the output area is narrower than it.

    Args:
        css_class: CSS class by which pages and tests find the picture.

    Returns:
        The Image widget; set its ``value`` to PNG bytes (:func:`render_png`).
    """
    image = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto", align_self="flex-start",
                                                  object_fit="contain"))
    image.add_class(css_class)
    return image


def inline_buttons(control: w.ToggleButtons, css_class: str, *, description_width: str | None = None
                   ) -> w.ToggleButtons:
    """Put a ToggleButtons' description beside its buttons, as for sliders, rather than above them.

    ipywidgets lays a ToggleButtons' label out as a block over the buttons; the class ``widget-inline-hbox``
    is the one ipywidgets gives its own one-line controls (sliders, dropdowns), with a right-aligned label.

    Args:
        control: The ToggleButtons, changed in place.
        css_class: CSS class by which pages and tests find the control.
        description_width: CSS width of the description, or ``None`` for the ipywidgets default.

    Returns:
        ``control``.
    """
    control.add_class("widget-inline-hbox")
    control.add_class(css_class)
    if description_width is not None:
        control.style.description_width = description_width
    return control


def control_row(children: Sequence[w.Widget]) -> w.HBox:
    """A row of controls that wraps onto a second line in a narrow output area instead of overflowing it.

    Args:
        children: The controls, left to right.

    Returns:
        An ``HBox`` with ``flex_flow="row wrap"``.
    """
    return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", align_items="center"))


def decimals_format(low: float, high: float) -> str:
    """Readout format with as many decimals as a range ``low..high`` needs (HU: none; [0, 1]: two).

    A fixed number of significant digits would print "-200.0" or "0.2500"; slider readouts have room for
    about ten characters.

    Examples:
        >>> decimals_format(-1000.0, 2000.0), decimals_format(0.0, 1.0)
        ('.0f', '.2f')
    """
    decimals = 2 - math.floor(math.log10(high - low)) if high > low else 2
    return f".{int(np.clip(decimals, 0, 4))}f"


# ---------------------------------------------------------------------------------------------- drawing
def render_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at the widgets' resolution (100 dpi), for an ``ipywidgets.Image``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})  # speed over size
    return buf.getvalue()


def plot_overlay(ax: Axes, image2d: np.ndarray, label2d: np.ndarray | None, *,
                 class_names: Sequence[str] | Mapping[int, str] | None = None, alpha: float = 0.4,
                 cmap: str = "gray", style: str = "fill", legend: bool = True) -> AxesImage:
    """Draw a 2D image with its label map on top, in the viewer's orientation.

    Args:
        ax: Matplotlib axes to draw into.
        image2d: Intensities, ``(X, Y)``; drawn as ``image2d.T`` with ``origin="lower"`` (X horizontal).
        label2d: Integer labels, ``(X, Y)``, or ``None`` for the image alone.
        class_names: Names of classes 1, 2, ... (list, optionally led by ``"background"``, or dict).
        alpha: Opacity of the filled label colours, 0 to 1.
        cmap: Colour map of the image.
        style: ``"fill"`` (translucent colour) or ``"contour"`` (class outlines).
        legend: Add a legend of the classes present.

    Returns:
        The AxesImage of the image.

    Raises:
        ValueError: If the arrays are not 2D, their shapes differ, or ``style``/``alpha`` is invalid.

    Examples:
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> lab = np.zeros((8, 8), np.uint8); lab[2:5, 2:5] = 1
        >>> _ = plot_overlay(ax, np.random.rand(8, 8), lab, class_names=["kidney"])
        >>> plt.close(fig)
    """
    image2d = np.asarray(image2d)
    if image2d.ndim != 2:
        raise ValueError(f"image2d must be 2D (X, Y); got shape {image2d.shape}")
    if style not in ("fill", "contour"):
        raise ValueError(f"style must be 'fill' or 'contour'; got {style!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha}")
    shown = ax.imshow(image2d.T, cmap=cmap, origin="lower", interpolation="nearest")
    ax.set_axis_off()
    if label2d is None:
        return shown
    label2d = np.asarray(label2d)
    if label2d.shape != image2d.shape:
        raise ValueError(f"label2d must have the image's shape {image2d.shape}; got {label2d.shape}")
    lab = label2d.astype(np.int64).T
    num_classes = int(lab.max(initial=0)) + 1
    if style == "fill":
        ax.imshow(lab, cmap=class_cmap(num_classes), vmin=-0.5, vmax=max(num_classes, 2) - 0.5,
                  origin="lower", interpolation="nearest", alpha=alpha)
    else:
        draw_contours(ax, lab)
    if legend:
        names = resolve_class_names(class_names, num_classes)
        present = {k: names[k] for k in np.unique(lab) if k > 0}
        if present:
            ax.legend(handles=legend_handles(present), loc="upper right", fontsize=8, framealpha=0.7)
    return shown
