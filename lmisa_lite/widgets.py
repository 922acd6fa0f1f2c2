"""Notebook widgets: the slice viewer (from :mod:`lmisa_lite.viewer`) and an MLNGM explorer.

The MLNGM explorer takes named 2D images (e.g. ``{"CT": ct, "MRI": mri}``) and shows, for the chosen settings
and scale, each image resized to that scale, its Sobel gradient magnitude, the locally normalised map and the
final MLNGM, so one can see why CT and MRI end up alike. Every widget has a static figure for executed notebooks
rendered to HTML. Figures keep to the viewer's 840-px width (four 210-px columns) with titles of 9-10 pt.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lmisa_lite.display import (
    CLASS_COLOURS,
    MAX_WIDTH_IN,
    class_colour,
    control_row,
    image_widget,
    inline_buttons,
    place_axes,
    plot_overlay,
    render_png,
)
from lmisa_lite.mlngm import combine_levels, level_shapes, mlngm_levels, resize
from lmisa_lite.viewer import SliceViewer, show_montage

__all__ = ["CLASS_COLOURS", "MLNGMExplorer", "SliceViewer", "class_colour", "mlngm_explorer", "mlngm_pyramid",
           "plot_overlay", "show_montage"]

WINDOWS = (3, 5, 7, 9)
THRESHOLDS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
MAX_LEVELS = 6
_COLUMNS = ("image", "gradient", "normalised", "mlngm")
_TITLE_PT = 10  # 14 px at 100 dpi


def mlngm_pyramid(image: np.ndarray, *, levels: int = 4, window: int = 3,
                  threshold: float = 1e-3) -> list[dict[str, np.ndarray]]:
    """The per-scale steps of :func:`lmisa_lite.mlngm.mlngm` for a 2D image.

    The maps of :func:`lmisa_lite.mlngm.mlngm_levels`, which ``mlngm`` itself sums, so the min-max scaled sum
    of the ``"upsampled"`` maps equals ``mlngm(image, levels=levels, window=window, threshold=threshold)``.

    Args:
        image: Intensities, ``(X, Y)``.
        levels: Number of scales ``1, 1/2, ..., 1/2**(levels-1)``.
        window: Odd side length of the normalisation window.
        threshold: Homogeneity threshold relative to the level's gradient standard deviation.

    Returns:
        One dict per level with float64 arrays ``"resized"`` (the image min-max scaled to [0, 1] and resized,
        ``(ceil(X / 2**k), ceil(Y / 2**k))``), ``"gradient"`` (its Sobel magnitude), ``"normalised"`` (the
        locally normalised map) and ``"upsampled"`` (that map resized back to ``(X, Y)``).

    Raises:
        ValueError: If ``image`` is not a finite 2D array or an option is invalid.

    Examples:
        >>> img = np.zeros((64, 64)); img[16:48, 16:48] = 1.0
        >>> [p["resized"].shape for p in mlngm_pyramid(img, levels=3)]
        [(64, 64), (32, 32), (16, 16)]
    """
    shape = np.shape(image)
    if len(shape) != 2:
        raise ValueError(f"image must be 2D (X, Y); got shape {shape} (pass one slice, e.g. vol[:, :, z])")
    return mlngm_levels(image, levels=levels, window=window, threshold=threshold)


class MLNGMExplorer:
    """Sliders for the MLNGM settings and a figure of the intermediate maps of each named 2D image.

    One row per image, four columns: the image at the shown scale, its gradient magnitude, the locally
    normalised map and the final MLNGM (all levels). With ``level="sum"`` the middle columns show the sums of
    all levels, resized to full size.

    Args:
        images: Name -> 2D image ``(X, Y)``; one array is named ``"image"``.
        levels: Number of scales, 1 to 6.
        window: Normalisation window, one of 3, 5, 7, 9.
        threshold: Homogeneity threshold (added to the slider's choices when not among them).
        level: Scale shown first: ``0 .. levels-1`` or ``"sum"``.

    Attributes:
        levels_slider, window_selector, threshold_slider, level_selector: The controls, with CSS classes
            ``lmisa-mlngm-levels``, ``lmisa-mlngm-window``, ``lmisa-mlngm-threshold`` and
            ``lmisa-mlngm-level``.
        image_widget: ``ipywidgets.Image`` with the rendered figure (CSS class ``lmisa-mlngm-image``), 840 px
            wide: four columns of 210 px.
        widget: The top-level ``VBox`` (CSS class ``lmisa-mlngm-explorer``).
        figure: The matplotlib Figure drawn into ``image_widget``.

    Raises:
        ValueError: If an image is not 2D or an option is out of range.

    Examples:
        >>> img = np.zeros((64, 64)); img[16:48, 16:48] = 1.0
        >>> ex = MLNGMExplorer({"CT": img, "MRI": 1 - img}, levels=3)
        >>> ex.update(level=2)
        >>> ex.current_panels()["CT"]["image"].shape
        (16, 16)
    """

    def __init__(self, images: Mapping[str, np.ndarray] | np.ndarray, *, levels: int = 4, window: int = 3,
                 threshold: float = 1e-3, level: int | str = 0) -> None:
        if not isinstance(images, Mapping):
            images = {"image": images}
        if not images:
            raise ValueError("images must name at least one 2D image")
        for name, img in images.items():
            if np.ndim(img) != 2:
                raise ValueError(f"images[{str(name)!r}] must be 2D (X, Y); got shape {np.shape(img)}")
        if not 1 <= levels <= MAX_LEVELS:
            raise ValueError(f"levels must be in 1..{MAX_LEVELS}; got {levels}")
        if window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}; got {window}")
        # mlngm_pyramid checks the images' values and the options; the first pyramids start the cache.
        self._cache: dict[tuple[str, int, float], list[dict[str, np.ndarray]]] = {}
        self.images: dict[str, np.ndarray] = {}
        for name, img in images.items():
            pyramid = mlngm_pyramid(img, levels=levels, window=window, threshold=threshold)
            self.images[str(name)] = np.asarray(img, np.float64)
            self._cache[str(name), int(window), float(threshold)] = pyramid
        self._hold = False
        thresholds = sorted(set(THRESHOLDS) | {float(threshold)})
        self.levels_slider = w.IntSlider(value=levels, min=1, max=MAX_LEVELS, description="levels",
                                         continuous_update=False)
        self.levels_slider.add_class("lmisa-mlngm-levels")
        self.window_selector = inline_buttons(
            w.ToggleButtons(options=list(WINDOWS), value=window, description="window",
                            style={"button_width": "40px"}),
            "lmisa-mlngm-window")
        self.threshold_slider = w.SelectionSlider(options=[(f"{t:g}", t) for t in thresholds],
                                                  value=float(threshold), description="threshold",
                                                  continuous_update=False)
        self.threshold_slider.add_class("lmisa-mlngm-threshold")
        options = self._level_options(levels, window)
        if level not in options:
            raise ValueError(f"level must be one of {options}; got {level!r}")
        # "level shown" nearly fills the usual 80-px label column; a wider one keeps it off the buttons before.
        self.level_selector = inline_buttons(
            w.ToggleButtons(options=options, value=level, description="level shown",
                            style={"button_width": "48px"}),
            "lmisa-mlngm-level", description_width="100px")
        self.image_widget = image_widget("lmisa-mlngm-image")
        self.widget = w.VBox([control_row([self.levels_slider, self.threshold_slider]),
                              control_row([self.window_selector, self.level_selector]), self.image_widget])
        self.widget.add_class("lmisa-mlngm-explorer")
        self.figure = Figure(dpi=100)
        rows = len(self.images)
        self._axes = [[self.figure.add_subplot(rows, 4, 4 * r + c + 1) for c in range(4)] for r in range(rows)]
        for c in (self.levels_slider, self.window_selector, self.threshold_slider):
            c.observe(self._on_settings, "value")
        self.level_selector.observe(lambda _: self._redraw(), "value")
        self._redraw()

    @property
    def levels(self) -> int:
        """Number of scales summed into the MLNGM."""
        return int(self.levels_slider.value)

    @property
    def level(self) -> int | str:
        """Scale shown in the middle columns, or ``"sum"``."""
        return self.level_selector.value

    def _available(self, levels: int, window: int) -> int:
        return min(len(level_shapes(img.shape, levels, window=window)) for img in self.images.values())

    def _level_options(self, levels: int, window: int) -> list[Any]:
        return [*range(self._available(levels, window)), "sum"]

    def _pyramid(self, name: str) -> list[dict[str, np.ndarray]]:
        # Level k does not depend on how many levels are summed, so one pyramid per (window, threshold)
        # serves every `levels`; it is recomputed only when more levels are asked for.
        key = (name, int(self.window_selector.value), float(self.threshold_slider.value))
        cached = self._cache.get(key, [])
        if len(cached) < self.levels:
            cached = mlngm_pyramid(self.images[name], levels=self.levels, window=key[1], threshold=key[2])
            self._cache[key] = cached
        return cached[: self.levels]

    def update(self, *, levels: int | None = None, window: int | None = None, threshold: float | None = None,
               level: int | str | None = None) -> None:
        """Change several settings at once and redraw once (the same as moving the controls).

        Raises:
            ValueError: If a value is not one of the control's choices.
        """
        checks = [(levels, self.levels_slider, range(1, MAX_LEVELS + 1)),
                  (window, self.window_selector, WINDOWS),
                  (None if threshold is None else float(threshold), self.threshold_slider,
                   [v for _, v in self.threshold_slider.options])]
        for value, control, allowed in checks:
            if value is not None and value not in allowed:
                raise ValueError(f"{control.description} must be one of {list(allowed)}; got {value!r}")
        self._hold = True
        try:
            for value, control, _ in checks:
                if value is not None:
                    control.value = value
            if level is not None:
                if level not in self.level_selector.options:
                    raise ValueError(f"level must be one of {list(self.level_selector.options)}; got {level!r}")
                self.level_selector.value = level
        finally:
            self._hold = False
        self._redraw()

    def _on_settings(self, _change: Any) -> None:
        options = self._level_options(self.levels, int(self.window_selector.value))
        if list(self.level_selector.options) != options:
            current = self.level_selector.value
            held, self._hold = self._hold, True
            self.level_selector.options = options
            self.level_selector.value = current if current in options else options[-2]
            self._hold = held
        self._redraw()

    def current_panels(self) -> dict[str, dict[str, np.ndarray]]:
        """The maps shown now: name -> ``{"image", "gradient", "normalised", "mlngm"}`` 2D arrays ``(X', Y')``."""
        panels = {}
        for name, img in self.images.items():
            pyramid = self._pyramid(name)
            if self.level == "sum":
                maps = {"image": pyramid[0]["resized"],
                        "gradient": sum(resize(p["gradient"], img.shape) for p in pyramid),
                        "normalised": sum(p["upsampled"] for p in pyramid)}
            else:
                p = pyramid[int(self.level)]
                maps = {"image": p["resized"], "gradient": p["gradient"], "normalised": p["normalised"]}
            panels[name] = {**maps, "mlngm": _mlngm_map(pyramid)}
        return panels

    def _titles(self, name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
        """Column titles of one row, two lines each at most (a column is 210 px wide)."""
        mlngm = f"MLNGM\n{self.levels} level{'s' if self.levels > 1 else ''}"
        if self.level == "sum":
            return (f"{name}\nimage", "gradient\nall levels", "normalised\nall levels", mlngm)
        scale = f"1/{2 ** int(self.level)}" if self.level else "1"
        return (f"{name}\nscale {scale}, {shape[0]}x{shape[1]}", "gradient\nmagnitude", "locally\nnormalised",
                mlngm)

    def _redraw(self) -> None:
        if self._hold:
            return
        for ax_row, (name, maps) in zip(self._axes, self.current_panels().items()):
            titles = self._titles(name, maps["image"].shape)
            for ax, column, title in zip(ax_row, _COLUMNS, titles):
                _show_map(ax, maps[column], title, cmap="magma" if column == "gradient" else "gray",
                          fontsize=_TITLE_PT)
        h, wd = next(iter(self.images.values())).shape
        place_axes(self.figure, [ax for row in self._axes for ax in row], 4, wd / h,
                   side=MAX_WIDTH_IN / len(_COLUMNS), top_in=0.05, title_in=0.5)
        self.image_widget.value = render_png(self.figure)

    def static_figure(self) -> Figure:
        """Static fallback: per image, the image, the normalised map at every level and the MLNGM.

        Returns:
            A Figure (closed in pyplot, so it shows once when returned as the last value of a cell).
        """
        import matplotlib.pyplot as plt

        pyramids = {name: self._pyramid(name) for name in self.images}
        ncols = 2 + max(len(p) for p in pyramids.values())
        fig = plt.figure(dpi=100)
        axes = [fig.add_subplot(len(pyramids), ncols, j + 1) for j in range(len(pyramids) * ncols)]
        for r, (name, pyramid) in enumerate(pyramids.items()):
            row = axes[r * ncols:(r + 1) * ncols]
            _show_map(row[0], pyramid[0]["resized"], f"{name}\nimage")
            for k, p in enumerate(pyramid):
                _show_map(row[1 + k], p["normalised"], f"level {k}\nscale 1/{2 ** k}")
            for ax in row[1 + len(pyramid):-1]:
                ax.set_axis_off()
            _show_map(row[-1], _mlngm_map(pyramid), f"MLNGM\n{len(pyramid)} levels")
        h, wd = next(iter(self.images.values())).shape
        place_axes(fig, axes, ncols, wd / h, side=min(2.2, MAX_WIDTH_IN / ncols), top_in=0.05,
                   title_in=0.45)
        plt.close(fig)
        return fig

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _mlngm_map(pyramid: list[dict[str, np.ndarray]]) -> np.ndarray:
    """MLNGM from the levels of :func:`mlngm_pyramid`: their full-size sum, min-max scaled (float32)."""
    return combine_levels(pyramid)


def _show_map(ax: Axes, array: np.ndarray, title: str, cmap: str = "gray", fontsize: float = 9) -> None:
    """Draw a 2D map in the viewer's orientation (``array.T``, origin lower), replacing what was there."""
    for old in list(ax.images):
        old.remove()
    ax.imshow(np.asarray(array).T, cmap=cmap, origin="lower", interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def mlngm_explorer(images: Mapping[str, np.ndarray] | np.ndarray, *, levels: int = 4, window: int = 3,
                   threshold: float = 1e-3) -> MLNGMExplorer:
    """Explore MLNGM settings on named 2D images (``{"CT": ct, "MRI": mri}``); see :class:`MLNGMExplorer`.

    Args:
        images: Name -> 2D image ``(X, Y)``.
        levels: Number of scales, 1 to 6.
        window: Normalisation window, 3, 5, 7 or 9.
        threshold: Homogeneity threshold.

    Returns:
        The explorer: show ``explorer.widget`` (or leave ``explorer`` as the last line of a cell), and
        ``explorer.static_figure()`` for a static version.

    Raises:
        ValueError: If an image is not 2D or an option is out of range.

    Examples:
        >>> img = np.zeros((64, 64)); img[16:48, 16:48] = 1.0
        >>> ex = mlngm_explorer({"CT": img, "MRI": 1 - img}, levels=3)
        >>> sorted(ex.current_panels()["MRI"])
        ['gradient', 'image', 'mlngm', 'normalised']
    """
    return MLNGMExplorer(images, levels=levels, window=window, threshold=threshold)
