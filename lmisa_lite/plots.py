"""Figures and training callbacks for the notebooks: live loss curves, prediction snapshots, a diagram.

The callbacks follow :func:`lmisa_lite.training.train`'s ``callback(step, row, model)`` protocol. In a notebook
they redraw one figure in place (an IPython display handle), so printed output stays bounded however long the run.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

LOSS_KEYS = ("loss_seg", "loss_rec", "loss_adv", "loss_critic", "wasserstein")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure outside pyplot's registry, so it is shown only where it is displayed explicitly."""
    return Figure(figsize=figsize, layout="constrained")


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(values) < window:
        return values
    kernel = np.ones(window) / window
    valid = np.convolve(values, kernel, mode="valid")
    return np.concatenate([np.full(window - 1, np.nan), valid])


def plot_history(history: dict[str, Sequence[float]], *, smooth: int = 10, fig: Figure | None = None) -> Figure:
    """Loss terms (left, smoothed, log scale where positive) and validation Dice (right) against the step.

    Args:
        history: ``TrainResult.history`` (or a partial one): lists keyed by ``step``, the loss names and
            ``val_dice``.
        smooth: Moving-average window in steps.
        fig: Figure to draw into (cleared); a new one by default.

    Returns:
        The figure.

    Examples:
        >>> h = {"step": [0, 1, 2], "loss_seg": [1.0, 0.5, 0.2], "val_dice": [float("nan"), 0.5, 0.7]}
        >>> len(plot_history(h).axes)
        2
    """
    fig = fig or _new_figure((10, 3.4))
    fig.clear()
    ax_loss, ax_dice = fig.subplots(1, 2)
    steps = np.asarray(history.get("step", []), dtype=float)
    for key in LOSS_KEYS:
        values = np.asarray(history.get(key, []), dtype=float)
        if values.size and not np.all(np.isnan(values)):
            ax_loss.plot(steps, _smooth(values, smooth), label=key.replace("loss_", ""), lw=1.2)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("loss terms (moving average)")
    if ax_loss.lines:
        ax_loss.legend(fontsize=8)
    dice = np.asarray(history.get("val_dice", []), dtype=float)
    keep = ~np.isnan(dice) if dice.size else np.zeros(0, bool)
    if keep.any():
        ax_dice.plot(steps[keep], dice[keep], "o-", color="tab:green")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("step")
    ax_dice.set_title("source validation Dice")
    return fig


class LiveLossPlot:
    """A training callback that redraws :func:`plot_history` every ``every`` steps in one notebook output.

    Args:
        every: Redraw interval in steps (and at every validation).
        smooth: Moving-average window for the loss curves.

    Examples:
        >>> live = LiveLossPlot(every=10, display=False)
        >>> live(0, {"step": 0, "loss_seg": 1.0, "val_dice": float("nan")}, None)
        >>> live.history["loss_seg"]
        [1.0]
    """

    def __init__(self, *, every: int = 25, smooth: int = 10, display: bool = True) -> None:
        self.every, self.smooth, self.display = every, smooth, display
        self.history: dict[str, list[float]] = {}
        self.figure = _new_figure((10, 3.4))
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
        fig = _new_figure((2.2 * max(cols, 1), 2.2 * len(self.inputs)))
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
    """A block diagram of the dual-task network and the shape critic, and what each loss compares."""
    fig = _new_figure((11, 4.2))
    ax = fig.add_subplot()
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 4.2)
    ax.set_axis_off()

    def box(x: float, y: float, w: float, h: float, text: str, colour: str) -> None:
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=colour, ec="k", lw=0.8))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", (x1, y1), (x0, y0), arrowprops=dict(arrowstyle="->", lw=1))

    box(0.1, 1.7, 1.3, 0.8, "MLNGM map\n(source or\ntarget)", "#e8e8e8")
    box(1.8, 1.5, 1.6, 1.2, "encoder\n7x7 stem,\n4 residual blocks\n16-32-64-128", "#cfe2f3")
    box(3.8, 1.5, 1.6, 1.2, "decoder\n3 up-blocks\nwith skips,\nnormalised", "#cfe2f3")
    box(5.9, 2.7, 1.5, 0.7, "1x1 head:\nreconstruction", "#d9ead3")
    box(5.9, 0.8, 1.5, 0.7, "1x1 head:\nsegmentation", "#fce5cd")
    box(8.0, 2.7, 2.8, 0.7, "alpha x weighted MSE\nvs the input (both domains)", "#ffffff")
    box(8.0, 1.5, 2.8, 0.7, "beta x cross-entropy\nvs source labels", "#ffffff")
    box(8.0, 0.2, 2.8, 0.8, "shape critic (WGAN-GP):\ntarget foreground probabilities\nvs real source label maps", "#f4cccc")
    arrow(1.4, 2.1, 1.8, 2.1)
    arrow(3.4, 2.1, 3.8, 2.1)
    arrow(5.4, 2.4, 5.9, 3.0)
    arrow(5.4, 1.8, 5.9, 1.15)
    arrow(7.4, 3.05, 8.0, 3.05)
    arrow(7.4, 1.2, 8.0, 1.8)
    arrow(7.4, 1.0, 8.0, 0.6)
    ax.text(2.8, 3.6, "one shared body", fontsize=9, ha="center", style="italic")
    return fig
