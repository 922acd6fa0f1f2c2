"""Figures and training callbacks for the notebooks: live loss curves, prediction snapshots, a diagram.

The callbacks follow :func:`lmisa_lite.training.train`'s ``callback(step, row, model)`` protocol. In a notebook
they redraw one figure in place (an IPython display handle), so printed output stays bounded however long the run.

Every figure here is an :class:`InlineFigure`: it shows as a picture wherever IPython displays it, also before
pyplot has drawn anything in the session (a plain :class:`~matplotlib.figure.Figure` then prints as
``<Figure size ...>``).
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lmisa_lite.display import DPI, MAX_WIDTH_IN

#: The panels of :func:`plot_history`: history key, title, y-axis label, and whether its values are
#: positive enough for a log axis (the cross-entropy and the weighted MSE are; critic scores can have any sign).
HISTORY_PANELS: tuple[tuple[str, str, str, bool], ...] = (
    ("loss_seg", "segmentation", "cross-entropy (source labels)", True),
    ("loss_rec", "reconstruction", "weighted MSE (both domains)", True),
    ("loss_adv", "adversarial", "\u2212mean critic score, target", False),
    ("loss_critic", "critic", "critic loss (with penalty)", False),
    ("wasserstein", "Wasserstein estimate", "mean score real \u2212 fake", False),
    ("val_dice", "source validation Dice", "Dice (%)", False),
)
LOSS_KEYS = tuple(key for key, *_ in HISTORY_PANELS if key != "val_dice")


class InlineFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that IPython shows as a PNG whatever the state of pyplot's backend.

    Examples:
        >>> InlineFigure(figsize=(1, 1))._repr_png_()[:4]
        b'\\x89PNG'
    """

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
        return buffer.getvalue()


def _new_figure(figsize: tuple[float, float]) -> InlineFigure:
    """A figure outside pyplot's registry, so it is shown only where it is displayed explicitly."""
    return InlineFigure(figsize=figsize, layout="constrained")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` finite values; NaN where fewer than ``window`` precede a step."""
    if window <= 1 or np.isfinite(values).sum() < window:
        return values
    kernel = np.ones(window) / window
    valid = np.convolve(values, kernel, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), valid])


def _draw_panel(ax: Axes, steps: np.ndarray, values: np.ndarray, *, smooth: int, log: bool) -> None:
    """One loss term: each step faint, its moving average bold; a note instead when the run has no such term."""
    keep = np.isfinite(values)
    if not keep.any():
        ax.text(0.5, 0.5, "not in this run", ha="center", va="center", transform=ax.transAxes, color="0.4")
        ax.set_yticks([])
        return
    steps, values = steps[keep], values[keep]
    averaged = smooth > 1 and len(values) >= smooth
    ax.plot(steps, values, color="tab:blue", alpha=0.3 if averaged else 1.0, lw=0.8 if averaged else 1.4)
    if averaged:
        ax.plot(steps, _smooth(values, smooth), color="tab:blue", lw=1.6)
    if log and np.all(values > 0):
        ax.set_yscale("log")
        # ticks at 1, 2 and 5 times powers of ten, written as plain numbers (0.2, not 2 x 10^-1)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())


def plot_history(history: dict[str, Sequence[float]], *, smooth: int = 10, fig: Figure | None = None) -> Figure:
    """One panel per loss term and one for the validation Dice (in %), against the training step.

    Each loss term is drawn per step (faint) and as a moving average over ``smooth`` steps (bold; a run shorter
    than that is drawn bold per step). The
    segmentation and reconstruction losses are positive and fall by orders of magnitude, so their axes are
    logarithmic; the adversarial term, the critic's loss and the Wasserstein estimate are differences of critic
    scores, which can have any sign, on linear axes. A term the run does not have (e.g. no critic) leaves its
    panel with a note.

    Args:
        history: ``TrainResult.history`` (or a partial one): lists keyed by ``step``, the loss names and
            ``val_dice`` (a fraction of 1; NaN on steps without validation).
        smooth: Moving-average window in steps.
        fig: Figure to draw into (cleared); a new one by default.

    Returns:
        The figure, six panels in two rows (:data:`HISTORY_PANELS`).

    Examples:
        >>> h = {"step": [0, 1, 2], "loss_seg": [1.0, 0.5, 0.2], "val_dice": [float("nan"), 0.5, 0.7]}
        >>> [ax.get_title() for ax in plot_history(h).axes][:2]
        ['segmentation', 'reconstruction']
    """
    fig = fig or _new_figure((MAX_WIDTH_IN, 4.8))
    fig.clear()
    axes = fig.subplots(2, 3, sharex=True).ravel()
    steps = np.asarray(history.get("step", []), dtype=float)
    for ax, (key, title, ylabel, log) in zip(axes, HISTORY_PANELS):
        values = np.asarray(history.get(key, []), dtype=float)
        values = values if values.size == steps.size else np.full(steps.size, np.nan)
        if key == "val_dice":
            keep = np.isfinite(values)
            if keep.any():
                ax.plot(steps[keep], 100 * values[keep], "o-", color="tab:green", ms=3)
            else:
                ax.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax.transAxes,
                        color="0.4")
            ax.set_ylim(0, 100)
        else:
            _draw_panel(ax, steps, values, smooth=smooth, log=log)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[3:]:
        ax.set_xlabel("step", fontsize=9)
    return fig


class LiveLossPlot:
    """A training callback that redraws :func:`plot_history` every ``every`` steps in one notebook output.

    Args:
        every: Redraw interval in steps (and at every validation).
        smooth: Moving-average window for the loss curves.
        display: Draw in the notebook; False only collects :attr:`history` (tests, scripts).

    Examples:
        >>> live = LiveLossPlot(every=10, display=False)
        >>> live(0, {"step": 0, "loss_seg": 1.0, "val_dice": float("nan")}, None)
        >>> live.history["loss_seg"]
        [1.0]
    """

    def __init__(self, *, every: int = 25, smooth: int = 10, display: bool = True) -> None:
        self.every, self.smooth, self.display = every, smooth, display
        self.history: dict[str, list[float]] = {}
        self.figure = _new_figure((MAX_WIDTH_IN, 4.8))
        self._handle: Any = None

    def __call__(self, step: int, row: dict[str, float], model: Any) -> None:
        for key, value in row.items():
            self.history.setdefault(key, []).append(float(value))
        validated = not math.isnan(float(row.get("val_dice", math.nan)))
        if self.display and (step % self.every == 0 or validated):
            self.show()

    def show(self) -> None:
        """Redraw the figure in place (first call creates the output)."""
        from IPython.display import display

        plot_history(self.history, smooth=self.smooth, fig=self.figure)
        if self._handle is None:
            self._handle = display(self.figure, display_id=True)
        else:
            self._handle.update(self.figure)


class PredictionSnapshots:
    """A training callback that keeps the model's segmentation of a few fixed images every ``every`` steps.

    Args:
        inputs: Images ``(X, Y)`` in their own intensities; each is prepared the way the model takes its input
            (:func:`lmisa_lite.preprocessing.model_input`: MLNGM then z-score, or z-score only).
        every: Snapshot interval in steps (the final step is always kept).
        total_steps: The run's number of steps, to keep the last one.

    Examples:
        >>> snaps = PredictionSnapshots([np.zeros((16, 16), np.float32)], every=5, total_steps=10)
        >>> snaps.steps
        []
    """

    def __init__(self, inputs: Sequence[np.ndarray], *, every: int = 100, total_steps: int | None = None) -> None:
        self.inputs = [np.asarray(x, dtype=np.float32) for x in inputs]
        self.every, self.total_steps = every, total_steps
        self.steps: list[int] = []
        self.predictions: list[list[np.ndarray]] = []
        self._prepared: list[np.ndarray] | None = None  # the network inputs, made at the first snapshot

    def __call__(self, step: int, row: dict[str, float], model: Any) -> None:
        last = self.total_steps is not None and step == self.total_steps - 1
        if step % self.every and not last:
            return
        from lmisa_lite.inference import predict_volume
        from lmisa_lite.preprocessing import model_input

        if self._prepared is None:
            self._prepared = [model_input(model, x) for x in self.inputs]
        device = next(model.parameters()).device
        self.steps.append(step + 1)
        self.predictions.append([predict_volume(model, x, device=device) for x in self._prepared])

    def figure(self, *, references: Sequence[np.ndarray] | None = None, max_columns: int = 6) -> Figure:
        """Rows: the images; columns: snapshots (evenly picked when there are many), then the reference."""
        picks = np.unique(np.linspace(0, len(self.steps) - 1, min(max_columns, len(self.steps))).round().astype(int))
        cols = len(picks) + (1 if references is not None else 0)
        side = min(2.2, MAX_WIDTH_IN / max(cols, 1))  # the row keeps within a notebook's output width
        fig = _new_figure((side * max(cols, 1), side * len(self.inputs)))
        axes = np.asarray(fig.subplots(len(self.inputs), max(cols, 1), squeeze=False))
        for r, x in enumerate(self.inputs):
            panels = [(f"step {self.steps[i]}", self.predictions[i][r]) for i in picks]
            if references is not None:
                panels.append(("reference", references[r]))
            for c, (title, seg) in enumerate(panels):
                ax = axes[r, c]
                ax.imshow(x.T, cmap="gray", origin="lower")
                masked = np.ma.masked_equal(np.asarray(seg).T, 0)
                ax.imshow(masked, cmap="tab10", vmin=0, vmax=9, alpha=0.55, origin="lower", interpolation="nearest")
                ax.set_title(title, fontsize=8)
                ax.set_axis_off()
        return fig


def network_diagram() -> Figure:
    """A block diagram of the dual-task network and the shape critic, and what each loss compares.

    Examples:
        >>> len(network_diagram().axes[0].texts) > 8
        True
    """
    fig = _new_figure((MAX_WIDTH_IN, 3.4))
    ax = fig.add_subplot()
    ax.set_xlim(0, MAX_WIDTH_IN)  # data units are inches, so boxes and text keep their proportions
    ax.set_ylim(0, 3.4)
    ax.set_axis_off()

    def box(x: float, y: float, w: float, h: float, text: str, colour: str, **style: Any) -> None:
        style = {"ec": "k", "lw": 0.8, **style}
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.04", fc=colour, **style))
        if text:
            ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", (x1, y1), (x0, y0), arrowprops={"arrowstyle": "->", "lw": 1})

    box(1.2, 1.1, 3.15, 1.5, "", "none", ls="--", ec="0.5")  # the shared body
    ax.text(2.78, 2.75, "one shared body", fontsize=9, ha="center", style="italic")
    box(0.05, 1.45, 0.95, 0.8, "MLNGM map\n(source or\ntarget)", "#e8e8e8")
    box(1.3, 1.25, 1.35, 1.2, "encoder\n7x7 stem,\n4 residual blocks,\n16-32-64-128 ch.", "#cfe2f3")
    box(2.9, 1.25, 1.35, 1.2, "decoder\n3 up-blocks\nwith skips,\nnormalised", "#cfe2f3")
    box(4.55, 2.55, 1.2, 0.6, "1x1 head:\nreconstruction", "#d9ead3")
    box(4.55, 0.55, 1.2, 0.6, "1x1 head:\nsegmentation", "#fce5cd")
    box(6.05, 2.55, 2.3, 0.6, "\u03b1 x weighted MSE\nvs the input (both domains)", "#ffffff")
    box(6.05, 1.4, 2.3, 0.6, "\u03b2 x cross-entropy\nvs source labels", "#ffffff")
    box(6.05, 0.08, 2.3, 0.85, "shape critic (WGAN-GP):\ntarget foreground probabilities\nvs real source label maps",
        "#f4cccc")
    arrow(1.04, 1.85, 1.3, 1.85)
    arrow(2.69, 1.85, 2.9, 1.85)
    arrow(4.29, 2.2, 4.55, 2.85)
    arrow(4.29, 1.5, 4.55, 0.85)
    arrow(5.79, 2.85, 6.05, 2.85)
    arrow(5.79, 0.95, 6.05, 1.7)
    arrow(5.79, 0.75, 6.05, 0.5)
    return fig
