"""Slice viewer for volumes, label maps and predictions: ipywidgets controls, matplotlib drawing.

Orientation: a slice along one axis keeps the other two axes in order and is drawn transposed with
``origin="lower"``, so the first remaining axis runs left to right and the second bottom to top. For an axial
slice of an ``(X, Y, Z)`` array that is ``array[:, :, z].T``: X horizontal, Y up. For RAS data the patient's right
is on the right of the screen (neurological convention) and anterior at the top; coronal slices show X against Z
and sagittal slices Y against Z, superior at the top. 2D ``(X, Y)`` arrays are drawn the same way.

The interactive figure is a plain :class:`matplotlib.figure.Figure` outside pyplot, rendered to PNG into an
``ipywidgets.Image``: it updates in JupyterLab with the default inline backend, needs no ipympl, and never shows
up as a stray figure at the end of a cell.

Sizes: figures are at most 840 px wide at 100 dpi (:data:`MAX_FIGURE_PX`), the width of a notebook's output
area in JupyterLab's default layout on a 1280-px screen with the file browser open. The picture is shown at
its own size, never stretched to the output width, and only shrinks (keeping its aspect) in a narrower output
area, so text drawn at 9 pt or more stays at least 12 px tall on screen. Controls carry CSS classes
(``lmisa-...``) by which pages and tests find them regardless of their descriptions.
"""
from __future__ import annotations

import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap, to_hex, to_rgba
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
_LAYERS = ("label", "prediction")
_DPI = 100
MAX_FIGURE_PX = 840
_MAX_WIDTH_IN = MAX_FIGURE_PX / _DPI
_PANELS_PER_ROW = 4  # 4 panels of 210 px in one row; more wrap into balanced rows (5 -> 3 + 2)
_PANEL_IN = 3.6  # panel side when few panels share the width (2 panels: 720 px)
_MAX_SAMPLES = 1_000_000  # voxels used to estimate percentiles of large volumes

Panels = np.ndarray | Sequence[Any] | Mapping[str, Any] | None


def class_colour(k: int) -> tuple[float, float, float, float]:
    """RGBA colour of class ``k``; classes past the table reuse it cyclically (class 0 is transparent)."""
    return CLASS_COLOURS[0] if k <= 0 else CLASS_COLOURS[1 + (k - 1) % (len(CLASS_COLOURS) - 1)]


def _class_cmap(num_classes: int) -> ListedColormap:
    return ListedColormap([class_colour(k) for k in range(max(num_classes, 2))], name="lmisa_classes")


def _class_names(class_names: Sequence[str] | Mapping[int, str] | None, num_classes: int) -> dict[int, str]:
    """Names of the foreground classes 1..num_classes-1 (a leading 'background' entry in a list is skipped)."""
    names = {k: f"class {k}" for k in range(1, num_classes)}
    if isinstance(class_names, Mapping):
        names.update({int(k): str(v) for k, v in class_names.items() if int(k) > 0})
    elif class_names is not None:
        given = [str(n) for n in class_names]
        if given and given[0].lower() in ("background", "bg"):
            given = given[1:]
        names.update({k: n for k, n in enumerate(given, start=1)})
    return names


def _legend_handles(names: Mapping[int, str]) -> list[Patch]:
    return [Patch(facecolor=class_colour(k), edgecolor="none", label=n) for k, n in sorted(names.items())]


def _take(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2D slice ``index`` along ``axis`` in display orientation (transposed, drawn with origin lower)."""
    if volume.ndim == 2:
        return volume.T
    return np.take(volume, index, axis=axis).T


def _draw_contours(ax: Axes, label2d: np.ndarray) -> list[Any]:
    """Outline each class of a display-oriented 2D label slice; returns the contour sets (for removal)."""
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


def _aspect(spacing: Sequence[float] | None, ndim: int, axis: int) -> float:
    if spacing is None:
        return 1.0
    h, v = [a for a in range(ndim) if a != axis][:2] if ndim == 3 else (0, 1)
    return float(spacing[v]) / float(spacing[h])


def _place_axes(fig: Figure, axes: Sequence[Axes], ncols: int, ratio: float, *, side: float,
                top_in: float = 0.35, bottom_in: float = 0.0, title_in: float = 0.3) -> None:
    """Resize ``fig`` and lay ``axes`` out row by row: cells ``side`` inches wide and ``side * ratio`` tall."""
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


def _grid(n: int) -> tuple[int, int]:
    """``(rows, columns)`` for ``n`` panels: at most :data:`_PANELS_PER_ROW` per row, rows filled evenly."""
    rows = math.ceil(n / _PANELS_PER_ROW)
    return rows, math.ceil(n / rows)


def _image_widget(css_class: str) -> w.Image:
    """An empty PNG ``ipywidgets.Image`` shown at its natural size.

    A box stretches its children to its width by default, which blurs a small picture and shrinks a large
    one together with its text. ``align_self`` keeps the natural width; ``max_width`` only lets the picture
    shrink, keeping its aspect, when the output area is narrower than it.
    """
    image = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto", align_self="flex-start",
                                                  object_fit="contain"))
    image.add_class(css_class)
    return image


def _inline(control: w.ToggleButtons, css_class: str, *, description_width: str | None = None
            ) -> w.ToggleButtons:
    """Put a ToggleButtons' description beside its buttons, as for sliders, rather than above them.

    ipywidgets lays a ToggleButtons' label out as a block over the buttons; the class ``widget-inline-hbox``
    is the one ipywidgets gives its own one-line controls (sliders, dropdowns), with a right-aligned label.
    """
    control.add_class("widget-inline-hbox")
    control.add_class(css_class)
    if description_width is not None:
        control.style.description_width = description_width
    return control


def _row(children: Sequence[w.Widget]) -> w.HBox:
    """A row of controls that wraps onto a second line in a narrow output area instead of overflowing it."""
    return w.HBox(list(children), layout=w.Layout(flex_flow="row wrap", align_items="center"))


def _decimals_format(low: float, high: float) -> str:
    """Readout format with as many decimals as a range ``low..high`` needs (HU: none; [0, 1]: two).

    A fixed number of significant digits would print "-200.0" or "0.2500"; slider readouts have room for
    about ten characters.
    """
    decimals = 2 - math.floor(math.log10(high - low)) if high > low else 2
    return f".{int(np.clip(decimals, 0, 4))}f"


def render_png(fig: Figure) -> bytes:
    """PNG bytes of ``fig`` at the widgets' resolution (100 dpi), for an ``ipywidgets.Image``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, pil_kwargs={"compress_level": 1})  # speed over size
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
        ax.imshow(lab, cmap=_class_cmap(num_classes), vmin=-0.5, vmax=max(num_classes, 2) - 0.5,
                  origin="lower", interpolation="nearest", alpha=alpha)
    else:
        _draw_contours(ax, lab)
    if legend:
        names = _class_names(class_names, num_classes)
        present = {k: names[k] for k in np.unique(lab) if k > 0}
        if present:
            ax.legend(handles=_legend_handles(present), loc="upper right", fontsize=8, framealpha=0.7)
    return shown


def _as_panels(image: Panels) -> tuple[list[np.ndarray], list[str]]:
    if isinstance(image, Mapping):
        titles = [str(k) for k in image]
        arrays = [np.asarray(v) for v in image.values()]
        where = [repr(t) for t in titles]
    else:
        arrays = [np.asarray(v) for v in image] if isinstance(image, (list, tuple)) else [np.asarray(image)]
        titles = [f"panel {i + 1}" for i in range(len(arrays))] if len(arrays) > 1 else [""]
        where = [str(i) for i in range(len(arrays))]
    if not arrays:
        raise ValueError("image must hold at least one array")
    for a, at in zip(arrays, where):
        if a.ndim not in (2, 3):
            raise ValueError(f"image[{at}] must be 2D (X, Y) or 3D (X, Y, Z); got shape {a.shape}")
        if a.shape != arrays[0].shape:
            raise ValueError(f"image[{at}] has shape {a.shape}; all panels need {arrays[0].shape}")
    return arrays, titles


def _aligned(name: str, value: Panels, titles: list[str], shape: tuple[int, ...]) -> list[np.ndarray | None]:
    """Label or prediction arrays, one per panel (None where a panel has none), shape-checked."""
    n = len(titles)
    if value is None:
        out: list[Any] = [None] * n
    elif isinstance(value, Mapping):
        unknown = [k for k in value if str(k) not in titles]
        if unknown:
            raise ValueError(f"{name} has keys {unknown} that match no panel title {titles}")
        out = [value.get(t) for t in titles]
    elif isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must hold one entry per image panel ({n}); got {len(value)}")
        out = list(value)
    else:
        out = [value] * n
    result: list[np.ndarray | None] = []
    for i, v in enumerate(out):
        if v is None:
            result.append(None)
            continue
        a = np.asarray(v)
        if a.shape != shape:
            at = f"[{titles[i]!r}]" if isinstance(value, Mapping) else f"[{i}]" if n > 1 else ""
            raise ValueError(f"{name}{at} has shape {a.shape}; the image has shape {shape}")
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        elif not np.issubdtype(a.dtype, np.integer):
            a = np.rint(a).astype(np.int64)
        result.append(a)
    return result


class SliceViewer:
    """Browse one or several co-registered volumes slice by slice, with label and prediction overlays.

    All panels move in lock-step (same axis, same slice). Controls: slice slider, axis choice (3D only),
    contrast by percentiles of each panel's whole volume (default) or one window ``(low, high)`` shared by all
    panels, label and prediction toggles, overlay style (filled colour or outlines) and opacity. Classes keep
    the colours of :data:`CLASS_COLOURS` everywhere. In ``"fill"`` style a panel that has both a label and a
    prediction outlines the label over the filled prediction. See the module docstring for the orientation.

    Args:
        image: One array ``(X, Y)`` or ``(X, Y, Z)``, or a list/tuple/dict of arrays of one shape shown side by
            side (dict keys become titles).
        label: Ground-truth labels: one array (drawn on every panel) or a list/dict aligned with the panels
            (``None`` entries allowed).
        prediction: Predicted labels, given like ``label``.
        titles: Panel titles (default: dict keys, else ``"panel 1"``, ...).
        axis: Slicing axis of 3D arrays (0, 1, 2 or -1 for Z).
        window: Fixed intensity window ``(low, high)``; when given, contrast starts in window mode.
        percentiles: Percentile range ``(low, high)`` for the default per-panel contrast.
        opacity: Opacity of filled overlays, 0 to 1.
        class_names: Names of classes 1, 2, ... (list, optionally led by ``"background"``, or dict).
        cmap: Colour map of the images.
        figsize: Figure size in inches (default: 3.6 in per panel, at most 4 panels per row and at most
            8.4 in = 840 px wide; 4 panels are 210 px each).
        style: ``"fill"`` or ``"contour"``.
        spacing: Voxel size per axis (mm), used for the aspect ratio of the slices.

    Attributes:
        slider, axis_selector, overlay_toggle, prediction_toggle, opacity_slider, style_selector,
        contrast_selector, percentile_slider, window_slider, legend: The controls, with CSS classes
            ``lmisa-slice-slider``, ``lmisa-axis-selector``, ``lmisa-label-toggle``,
            ``lmisa-prediction-toggle``, ``lmisa-opacity-slider``, ``lmisa-style-selector``,
            ``lmisa-contrast-selector``, ``lmisa-percentile-slider`` and ``lmisa-window-slider``.
        image_widget: ``ipywidgets.Image`` holding the rendered PNG (CSS class ``lmisa-slice-image``).
        widget: The top-level ``VBox`` (CSS class ``lmisa-slice-viewer``; also ``lmisa-compare-viewer``
            when made by :meth:`compare`).
        figure: The one matplotlib Figure, one axes per panel.

    Raises:
        ValueError: On arrays that are not 2D/3D, shapes that differ (the message names the panel and
            argument), or options out of range.

    Examples:
        >>> vol = np.random.rand(16, 16, 8).astype(np.float32)
        >>> lab = (vol > 0.8).astype(np.uint8)
        >>> viewer = SliceViewer({"CT": vol, "MRI": 1 - vol}, label=lab, class_names=["kidney"])
        >>> viewer.set_slice(2)
        >>> bool(np.array_equal(viewer.current_slices()[0], vol[:, :, 2].T))
        True
        >>> fig = viewer.static_montage(n=4)
    """

    def __init__(self, image: Panels, *, label: Panels = None, prediction: Panels = None,
                 titles: Sequence[str] | None = None, axis: int = -1,
                 window: tuple[float, float] | None = None, percentiles: tuple[float, float] = (1, 99),
                 opacity: float = 0.4, class_names: Sequence[str] | Mapping[int, str] | None = None,
                 cmap: str = "gray", figsize: tuple[float, float] | None = None, style: str = "fill",
                 spacing: Sequence[float] | None = None) -> None:
        self._images, default_titles = _as_panels(image)
        if titles is not None:
            if len(titles) != len(self._images):
                raise ValueError(f"titles must hold one entry per image panel ({len(self._images)}); "
                                 f"got {len(titles)}")
            default_titles = [str(t) for t in titles]
        self.titles = default_titles
        shape = self._images[0].shape
        self.ndim = len(shape)
        self._layers = {"label": _aligned("label", label, self.titles, shape),
                        "prediction": _aligned("prediction", prediction, self.titles, shape)}
        if self.ndim == 3 and axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis must be 0, 1, 2 (or -1) for 3D arrays; got {axis}")
        if not 0 <= percentiles[0] < percentiles[1] <= 100:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {percentiles}")
        if window is not None and not window[0] < window[1]:
            raise ValueError(f"window must be (low, high) with low < high; got {window}")
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1]; got {opacity}")
        if style not in ("fill", "contour"):
            raise ValueError(f"style must be 'fill' or 'contour'; got {style!r}")
        if spacing is not None and len(spacing) != self.ndim:
            raise ValueError(f"spacing must have {self.ndim} values; got {tuple(spacing)}")
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.cmap = cmap
        labelled = [a for layer in self._layers.values() for a in layer if a is not None]
        self.num_classes = max([int(a.max(initial=0)) + 1 for a in labelled] + [2])
        if class_names is None and self.num_classes > len(CLASS_COLOURS):
            # Unmapped label codes (e.g. 205, 500): list the classes present rather than every code below.
            present = set().union(*(np.unique(a).tolist() for a in labelled)) - {0}
            self.class_names = {int(k): f"class {k}" for k in sorted(present)}
        else:
            self.class_names = _class_names(class_names, self.num_classes)
        self.num_classes = max(self.num_classes, max(self.class_names) + 1)
        self._class_cmap = _class_cmap(self.num_classes)
        self._percentile_cache: dict[tuple[int, float, float], tuple[float, float]] = {}
        self._hold = False
        self._contours: list[list[Any]] = [[] for _ in self._images]
        self._build_widgets(axis % 3 if self.ndim == 3 else 2, window, percentiles, opacity, style)
        self._build_figure(figsize)
        self._redraw()

    # ------------------------------------------------------------------ construction
    def _build_widgets(self, axis: int, window: tuple[float, float] | None,
                       percentiles: tuple[float, float], opacity: float, style: str) -> None:
        size = self._images[0].shape[axis] if self.ndim == 3 else 1
        self.slider = w.IntSlider(value=size // 2, min=0, max=size - 1, continuous_update=True,
                                  description=f"{AXIS_NAMES[axis][0]} slice", disabled=self.ndim == 2,
                                  layout=w.Layout(width="520px"))
        self.slider.add_class("lmisa-slice-slider")
        self.axis_selector = _inline(
            w.ToggleButtons(options=[(n.split()[0], i) for i, n in enumerate(AXIS_NAMES)], value=axis,
                            description="axis", tooltips=list(AXIS_NAMES), style={"button_width": "48px"}),
            "lmisa-axis-selector")
        if self.ndim == 2:
            self.slider.layout.display = "none"
            self.axis_selector.layout.display = "none"
        has = {k: any(a is not None for a in v) for k, v in self._layers.items()}
        self.overlay_toggle = w.Checkbox(value=has["label"], description="label", disabled=not has["label"],
                                         indent=False, layout=w.Layout(width="90px"))
        self.overlay_toggle.add_class("lmisa-label-toggle")
        self.prediction_toggle = w.Checkbox(value=has["prediction"], description="prediction",
                                            disabled=not has["prediction"], indent=False,
                                            layout=w.Layout(width="110px"))
        self.prediction_toggle.add_class("lmisa-prediction-toggle")
        # Button widths hold the longest label ("contour", "percentile") plus the buttons' 20 px of padding.
        self.style_selector = _inline(
            w.ToggleButtons(options=["fill", "contour"], value=style, style={"button_width": "84px"},
                            tooltips=["filled colour", "class outlines"]),
            "lmisa-style-selector")
        self.opacity_slider = w.FloatSlider(value=opacity, min=0.0, max=1.0, step=0.05, description="opacity",
                                            continuous_update=True, layout=w.Layout(width="300px"))
        self.opacity_slider.add_class("lmisa-opacity-slider")
        lo = float(min(np.nanmin(a) for a in self._images))
        hi = float(max(np.nanmax(a) for a in self._images))
        hi = hi if hi > lo else lo + 1.0
        start = window if window is not None else self._percentiles(0, percentiles)
        self.contrast_selector = _inline(
            w.ToggleButtons(options=["percentile", "window"], description="contrast",
                            value="window" if window is not None else "percentile",
                            style={"button_width": "96px"}),
            "lmisa-contrast-selector")
        # One decimal reads "1.0 – 99.0" or "0.5 – 99.5": narrower than the 72-px readout box of a slider.
        self.percentile_slider = w.FloatRangeSlider(value=tuple(percentiles), min=0.0, max=100.0, step=0.5,
                                                    description="percentiles", readout_format=".1f",
                                                    continuous_update=False, layout=w.Layout(width="420px"))
        self.percentile_slider.add_class("lmisa-percentile-slider")
        self.window_slider = w.FloatRangeSlider(value=(max(lo, start[0]), min(hi, start[1])), min=lo, max=hi,
                                                step=(hi - lo) / 500, description="window",
                                                readout_format=_decimals_format(lo, hi),
                                                continuous_update=False, layout=w.Layout(width="420px"))
        self.window_slider.add_class("lmisa-window-slider")
        self.legend = w.HTML(self._legend_html())
        self.image_widget = _image_widget("lmisa-slice-image")
        overlays = [self.overlay_toggle, self.prediction_toggle, self.style_selector, self.opacity_slider]
        if not (has["label"] or has["prediction"]):
            for c in overlays:
                c.layout.display = "none"
        self.widget = w.VBox([_row([self.axis_selector, self.slider]), _row(overlays),
                              _row([self.contrast_selector, self.percentile_slider, self.window_slider]),
                              self.legend, self.image_widget])
        self.widget.add_class("lmisa-slice-viewer")
        self._show_contrast_control()
        self.slider.observe(self._on_change, "value")
        self.axis_selector.observe(self._on_axis, "value")
        for c in (*overlays, self.percentile_slider, self.window_slider):
            c.observe(self._on_change, "value")
        self.contrast_selector.observe(self._on_contrast_mode, "value")

    def _build_figure(self, figsize: tuple[float, float] | None) -> None:
        n = len(self._images)
        nrows, self._ncols = _grid(n)
        self._side = min(_PANEL_IN, _MAX_WIDTH_IN / self._ncols)
        self._fixed_ratio = None
        if figsize is not None:
            self._side = figsize[0] / self._ncols
            self._fixed_ratio = ((figsize[1] - 0.35) / nrows - 0.3) / self._side
        self.figure = Figure(figsize=figsize or (self._side * self._ncols, self._side), dpi=_DPI)
        self.axes: list[Axes] = [self.figure.add_subplot(nrows, self._ncols, i + 1) for i in range(n)]
        self._artists: list[dict[str, AxesImage]] = []
        blank = np.zeros((2, 2))
        for ax, title, i in zip(self.axes, self.titles, range(n)):
            ax.set_axis_off()
            if title:
                ax.set_title(title, fontsize=11)
            arts = {"image": ax.imshow(blank, cmap=self.cmap, origin="lower", interpolation="nearest")}
            for layer in _LAYERS:
                if self._layers[layer][i] is not None:
                    arts[layer] = ax.imshow(blank.astype(int), cmap=self._class_cmap, vmin=-0.5,
                                            vmax=self.num_classes - 0.5, origin="lower",
                                            interpolation="nearest")
            self._artists.append(arts)
        self._suptitle = self.figure.suptitle("", fontsize=11)

    def _legend_html(self) -> str:
        if not any(a is not None for layer in self._layers.values() for a in layer):
            return ""
        items = [f'<span style="display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;'
                 f'background:{to_hex(class_colour(k))}"></span>{html.escape(name)}'
                 for k, name in sorted(self.class_names.items())]
        return f'<div class="lmisa-legend" style="font-size:13px">{"".join(items)}</div>'

    # ------------------------------------------------------------------ state
    @property
    def axis(self) -> int:
        """The slicing axis (2 for 2D arrays)."""
        return int(self.axis_selector.value) if self.ndim == 3 else 2

    def _percentiles(self, i: int, pct: tuple[float, float]) -> tuple[float, float]:
        key = (i, float(pct[0]), float(pct[1]))
        if key not in self._percentile_cache:
            image = self._images[i]
            step = math.ceil((image.size / _MAX_SAMPLES) ** (1 / image.ndim))
            lo, hi = (float(v) for v in np.nanpercentile(image[(slice(None, None, step),) * image.ndim], pct))
            self._percentile_cache[key] = (lo, hi if hi > lo else lo + 1e-6)
        return self._percentile_cache[key]

    def contrast(self, i: int) -> tuple[float, float]:
        """Display range ``(low, high)`` of panel ``i`` under the current contrast setting."""
        if self.contrast_selector.value == "window":
            lo, hi = self.window_slider.value
            return float(lo), float(hi) if hi > lo else float(lo) + 1e-6
        return self._percentiles(i, self.percentile_slider.value)

    def current_slices(self, which: str = "image") -> list[np.ndarray | None]:
        """The 2D arrays shown now, one per panel, in display orientation (e.g. ``image[:, :, k].T``).

        Args:
            which: ``"image"``, ``"label"`` or ``"prediction"`` (panels without that layer give ``None``).

        Returns:
            One 2D array ``(v, h)`` (or ``None``) per panel.

        Raises:
            ValueError: If ``which`` is unknown.
        """
        if which == "image":
            volumes: list[np.ndarray | None] = list(self._images)
        elif which in _LAYERS:
            volumes = self._layers[which]
        else:
            raise ValueError(f"which must be 'image', 'label' or 'prediction'; got {which!r}")
        k = self.slider.value
        return [None if v is None else _take(v, self.axis, k) for v in volumes]

    def set_slice(self, k: int) -> None:
        """Show slice ``k`` along the current axis.

        Raises:
            ValueError: If ``k`` is outside ``0..slider.max``.
        """
        if not self.slider.min <= k <= self.slider.max:
            raise ValueError(f"slice index must be in 0..{self.slider.max}; got {k}")
        self.slider.value = int(k)

    # ------------------------------------------------------------------ events and drawing
    def _on_change(self, _change: Any = None) -> None:
        self._redraw()

    def _on_axis(self, change: Any) -> None:
        size = self._images[0].shape[change["new"]]
        self._hold = True
        try:
            self.slider.max = max(size - 1, self.slider.min)
            self.slider.value = size // 2
            self.slider.description = f"{AXIS_NAMES[change['new']][0]} slice"
        finally:
            self._hold = False
        self._redraw()

    def _on_contrast_mode(self, _change: Any) -> None:
        self._show_contrast_control()
        self._redraw()

    def _show_contrast_control(self) -> None:
        window = self.contrast_selector.value == "window"
        self.window_slider.layout.display = None if window else "none"
        self.percentile_slider.layout.display = "none" if window else None

    def _layer_style(self, i: int, layer: str) -> str:
        both = all(self._layers[name][i] is not None for name in _LAYERS)
        if layer == "label" and both:
            return "contour"
        return self.style_selector.value

    def _redraw(self) -> None:
        if self._hold:
            return
        shown = {"label": self.overlay_toggle.value, "prediction": self.prediction_toggle.value}
        slices = {"image": self.current_slices(), **{layer: self.current_slices(layer) for layer in _LAYERS}}
        aspect = _aspect(self.spacing, self.ndim, self.axis)
        for i, (ax, arts) in enumerate(zip(self.axes, self._artists)):
            for cs in self._contours[i]:
                cs.remove()
            self._contours[i] = []
            img = slices["image"][i]
            h, wd = img.shape
            extent = (-0.5, wd - 0.5, -0.5, h - 0.5)
            arts["image"].set_data(img)
            arts["image"].set_clim(*self.contrast(i))
            for layer in _LAYERS:
                if layer not in arts:
                    continue
                lab = slices[layer][i]
                fill = self._layer_style(i, layer) == "fill"
                arts[layer].set_data(lab)
                arts[layer].set_alpha(self.opacity_slider.value)
                arts[layer].set_visible(shown[layer] and fill)
                if shown[layer] and not fill:
                    self._contours[i] += _draw_contours(ax, lab)
            for art in arts.values():
                art.set_extent(extent)
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
            ax.set_aspect(aspect)
        h, wd = slices["image"][0].shape
        _place_axes(self.figure, self.axes, self._ncols, self._fixed_ratio or aspect * h / wd,
                    side=self._side, top_in=0.35 if self.ndim == 3 else 0.05,
                    title_in=0.3 if any(self.titles) else 0.05)
        if self.ndim == 3:
            self._suptitle.set_text(f"{AXIS_NAMES[self.axis]} slice {self.slider.value} / {self.slider.max}")
        self.image_widget.value = render_png(self.figure)

    # ------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def display(self) -> None:
        """Show the viewer in a notebook (the same as leaving ``viewer`` as the last line of a cell)."""
        self._ipython_display_()

    def close(self) -> None:
        """Close the widgets (frees their front-end models); the viewer is unusable afterwards."""
        for c in self.widget.children:
            for child in getattr(c, "children", ()):
                child.close()
            c.close()
        self.widget.close()

    def static_montage(self, n: int = 6, *, axis: int | None = None) -> Figure:
        """A static figure of ``n`` evenly spaced slices per panel, with the overlays currently switched on.

        For executed notebooks rendered to HTML (widgets need a live kernel). The figure is closed in pyplot,
        so it shows once when returned as the last value of a cell.

        Args:
            n: Slices per panel (one for 2D arrays; at most the number of slices).
            axis: Slicing axis (default: the viewer's current axis).

        Returns:
            A Figure with one row per panel and ``n`` axes per row.

        Raises:
            ValueError: If ``n < 1`` or ``axis`` is invalid.
        """
        import matplotlib.pyplot as plt

        if n < 1:
            raise ValueError(f"n must be at least 1; got {n}")
        if axis is not None and self.ndim == 3 and axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis must be 0, 1, 2 (or -1) for 3D arrays; got {axis}")
        axis = self.axis if axis is None or self.ndim == 2 else axis % 3
        size = self._images[0].shape[axis] if self.ndim == 3 else 1
        n = min(n, size)
        index = np.linspace(0, size - 1, n + 2)[1:-1].round().astype(int) if size > n else np.arange(n)
        shown = {layer: self._layers[layer] if on else [None] * len(self._images)
                 for layer, on in (("label", self.overlay_toggle.value),
                                   ("prediction", self.prediction_toggle.value))}
        legend = any(a is not None for layer in shown.values() for a in layer)
        aspect = _aspect(self.spacing, self.ndim, axis)
        fig = plt.figure(dpi=_DPI)
        axes = [fig.add_subplot(len(self._images), n, j + 1) for j in range(len(self._images) * n)]
        for j, ax in enumerate(axes):
            i, k = divmod(j, n)
            k = int(index[k])
            ax.imshow(_take(self._images[i], axis, k), cmap=self.cmap, origin="lower",
                      interpolation="nearest", clim=self.contrast(i), aspect=aspect)
            for layer in _LAYERS:
                if shown[layer][i] is None:
                    continue
                lab = _take(shown[layer][i], axis, k)
                if self._layer_style(i, layer) == "fill":
                    ax.imshow(lab, cmap=self._class_cmap, vmin=-0.5, vmax=self.num_classes - 0.5,
                              origin="lower", interpolation="nearest", alpha=self.opacity_slider.value,
                              aspect=aspect)
                else:
                    _draw_contours(ax, lab)
            ax.set_axis_off()
            # Name and slice on two lines: six slices share 840 px, 140 px each.
            where = f"{AXIS_NAMES[axis][0]}={k}" if self.ndim == 3 else ""
            ax.set_title("\n".join(t for t in (self.titles[i], where) if t), fontsize=9)
        h, wd = _take(self._images[0], axis, 0).shape
        lines = 2 if self.ndim == 3 and any(self.titles) else 1
        _place_axes(fig, axes, n, aspect * h / wd, side=min(2.4, _MAX_WIDTH_IN / n), top_in=0.05,
                    bottom_in=0.4 if legend else 0.05, title_in=0.1 + 0.18 * lines)
        if legend:
            fig.legend(handles=_legend_handles(self.class_names), loc="lower center",
                       ncol=min(len(self.class_names), 6), fontsize=9, frameon=False)
        plt.close(fig)
        return fig

    @classmethod
    def compare(cls, image: np.ndarray, label: np.ndarray | None, predictions: Mapping[str, np.ndarray],
                **kwargs: Any) -> SliceViewer:
        """Ground truth and each prediction side by side on the same image.

        Args:
            image: ``(X, Y)`` or ``(X, Y, Z)``.
            label: Ground truth of the same shape (its panel is left out when ``None``).
            predictions: Name -> predicted labels, one panel each.
            **kwargs: Further :class:`SliceViewer` options (``class_names``, ``axis``, ...).

        Returns:
            A viewer whose first panel is ``"ground truth"`` and the others the named predictions; its
            widget has the CSS classes ``lmisa-slice-viewer`` and ``lmisa-compare-viewer``.

        Examples:
            >>> vol = np.random.rand(8, 8, 4); gt = (vol > 0.5).astype(np.uint8)
            >>> SliceViewer.compare(vol, gt, {"model": gt}).titles
            ['ground truth', 'model']
        """
        names = [str(k) for k in predictions]
        titles = (["ground truth"] if label is not None else []) + names
        labels = ([label] if label is not None else []) + [None] * len(names)
        preds = ([None] if label is not None else []) + list(predictions.values())
        viewer = cls([image] * len(titles), label=labels, prediction=preds, titles=titles, **kwargs)
        viewer.widget.add_class("lmisa-compare-viewer")
        return viewer


def show_montage(image: Panels, *, label: Panels = None, prediction: Panels = None, n: int = 6,
                 axis: int = -1, **kwargs: Any) -> Figure:
    """Static montage of ``n`` evenly spaced slices per panel (see :meth:`SliceViewer.static_montage`).

    Args:
        image, label, prediction: As for :class:`SliceViewer`.
        n: Slices per panel.
        axis: Slicing axis of 3D arrays.
        **kwargs: Further :class:`SliceViewer` options.

    Returns:
        The montage Figure.

    Examples:
        >>> fig = show_montage(np.random.rand(8, 8, 6), n=3)
        >>> len(fig.axes)
        3
    """
    viewer = SliceViewer(image, label=label, prediction=prediction, axis=axis, **kwargs)
    try:
        return viewer.static_montage(n)
    finally:
        viewer.close()
