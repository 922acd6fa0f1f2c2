"""Slice viewer for volumes, label maps and predictions: ipywidgets controls over one matplotlib figure.

:class:`SliceViewer` browses one or several co-registered volumes in lock-step; :func:`show_montage` is its
static counterpart for executed notebooks. Slices are drawn in the orientation described in
:mod:`lmisa_lite.display` (X horizontal, Y up for axial slices) and figures keep to its 840-px width. Controls
carry CSS classes (``lmisa-...``) by which pages and tests find them regardless of their descriptions.

The interactive figure is a plain :class:`matplotlib.figure.Figure` outside pyplot, rendered to PNG into an
``ipywidgets.Image``: it updates in JupyterLab with the default inline backend, needs no ipympl, and never
shows up as a stray figure at the end of a cell.

The shared drawing helpers (:data:`CLASS_COLOURS`, :func:`class_colour`, :func:`plot_overlay`,
:func:`render_png`, ...) live in :mod:`lmisa_lite.display` and the input checks in :mod:`lmisa_lite.panels`;
the public ones are importable from here too.
"""
from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from lmisa_lite.display import (
    AXIS_NAMES,
    CLASS_COLOURS,
    DPI,
    MAX_FIGURE_PX,
    MAX_WIDTH_IN,
    class_cmap,
    class_colour,
    control_row,
    decimals_format,
    draw_contours,
    image_widget,
    inline_buttons,
    panel_grid,
    place_axes,
    plot_overlay,
    render_png,
    slice_aspect,
    take_slice,
)
from lmisa_lite.montage import montage_figure
from lmisa_lite.panels import Panels, align_layer, as_panels, label_classes

__all__ = ["AXIS_NAMES", "CLASS_COLOURS", "MAX_FIGURE_PX", "Panels", "SliceViewer", "class_colour",
           "plot_overlay", "render_png", "show_montage"]

_LAYERS = ("label", "prediction")
_PANEL_IN = 3.6  # panel side when few panels share the width (2 panels: 720 px)
_MAX_SAMPLES = 1_000_000  # voxels used to estimate percentiles of large volumes


class SliceViewer:
    """Browse one or several co-registered volumes slice by slice, with label and prediction overlays.

    All panels move in lock-step (same axis, same slice). Controls: slice slider, axis choice (3D only),
    contrast by percentiles of each panel's whole volume (default) or one window ``(low, high)`` shared by all
    panels, label and prediction toggles, overlay style (filled colour or outlines) and opacity. Classes keep
    the colours of :data:`CLASS_COLOURS` everywhere. In ``"fill"`` style a panel that has both a label and a
    prediction outlines the label over the filled prediction. See :mod:`lmisa_lite.display` for the
    orientation.

    Args:
        image: One array ``(X, Y)`` or ``(X, Y, Z)``, or a list/tuple/dict of arrays of one shape shown side
            by side (dict keys become titles).
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
        self._images, default_titles = as_panels(image)
        if titles is not None:
            if len(titles) != len(self._images):
                raise ValueError(f"titles must hold one entry per image panel ({len(self._images)}); "
                                 f"got {len(titles)}")
            default_titles = [str(t) for t in titles]
        self.titles = default_titles
        shape = self._images[0].shape
        self.ndim = len(shape)
        self._layers = {"label": align_layer("label", label, self.titles, shape),
                        "prediction": align_layer("prediction", prediction, self.titles, shape)}
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
        self.class_names, self.num_classes = label_classes(labelled, class_names)
        self._class_cmap = class_cmap(self.num_classes)
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
        self.axis_selector = inline_buttons(
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
        self.style_selector = inline_buttons(
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
        self.contrast_selector = inline_buttons(
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
                                                readout_format=decimals_format(lo, hi),
                                                continuous_update=False, layout=w.Layout(width="420px"))
        self.window_slider.add_class("lmisa-window-slider")
        self.legend = w.HTML(self._legend_html())
        self.image_widget = image_widget("lmisa-slice-image")
        overlays = [self.overlay_toggle, self.prediction_toggle, self.style_selector, self.opacity_slider]
        if not (has["label"] or has["prediction"]):
            for c in overlays:
                c.layout.display = "none"
        contrast = [self.contrast_selector, self.percentile_slider, self.window_slider]
        self.widget = w.VBox([control_row([self.axis_selector, self.slider]), control_row(overlays),
                              control_row(contrast), self.legend, self.image_widget])
        self.widget.add_class("lmisa-slice-viewer")
        self._show_contrast_control()
        self.slider.observe(self._on_change, "value")
        self.axis_selector.observe(self._on_axis, "value")
        for c in (*overlays, self.percentile_slider, self.window_slider):
            c.observe(self._on_change, "value")
        self.contrast_selector.observe(self._on_contrast_mode, "value")

    def _build_figure(self, figsize: tuple[float, float] | None) -> None:
        n = len(self._images)
        nrows, self._ncols = panel_grid(n)
        self._side = min(_PANEL_IN, MAX_WIDTH_IN / self._ncols)
        self._fixed_ratio = None
        if figsize is not None:
            self._side = figsize[0] / self._ncols
            self._fixed_ratio = ((figsize[1] - 0.35) / nrows - 0.3) / self._side
        self.figure = Figure(figsize=figsize or (self._side * self._ncols, self._side), dpi=DPI)
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
        return [None if v is None else take_slice(v, self.axis, k) for v in volumes]

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
        aspect = slice_aspect(self.spacing, self.ndim, self.axis)
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
                    self._contours[i] += draw_contours(ax, lab)
            for art in arts.values():
                art.set_extent(extent)
            ax.set_xlim(extent[:2])
            ax.set_ylim(extent[2:])
            ax.set_aspect(aspect)
        h, wd = slices["image"][0].shape
        place_axes(self.figure, self.axes, self._ncols, self._fixed_ratio or aspect * h / wd,
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
        if n < 1:
            raise ValueError(f"n must be at least 1; got {n}")
        if axis is not None and self.ndim == 3 and axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"axis must be 0, 1, 2 (or -1) for 3D arrays; got {axis}")
        axis = self.axis if axis is None or self.ndim == 2 else axis % 3
        shown = {"label": self.overlay_toggle.value, "prediction": self.prediction_toggle.value}
        overlays = [[(self._layers[layer][i], self._layer_style(i, layer)) for layer in _LAYERS
                     if shown[layer] and self._layers[layer][i] is not None]
                    for i in range(len(self._images))]
        return montage_figure(self._images, overlays, n=n, axis=axis, titles=self.titles,
                              clims=[self.contrast(i) for i in range(len(self._images))], cmap=self.cmap,
                              opacity=self.opacity_slider.value, class_names=self.class_names,
                              num_classes=self.num_classes, spacing=self.spacing)

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
