"""Notebook figures and training callbacks."""
from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from lmisa_lite.display import MAX_FIGURE_PX
from lmisa_lite.networks import LMISANet
from lmisa_lite.plots import (
    HISTORY_PANELS,
    InlineFigure,
    LiveLossPlot,
    PredictionSnapshots,
    network_diagram,
    plot_history,
)


def _panels(fig: Figure) -> dict:
    return {ax.get_title(): ax for ax in fig.axes}


def test_plot_history_has_one_labelled_panel_per_term_and_dice_in_percent():
    nan = math.nan
    history = {"step": [0, 1, 2, 3], "loss_seg": [1.0, 0.8, 0.6, 0.5], "loss_rec": [0.9, 0.5, 0.3, 0.2],
               "loss_adv": [nan] * 4, "wasserstein": [0.0, 2.0, -1.0, 0.5], "val_dice": [nan, 0.4, nan, 0.7]}
    fig = plot_history(history, smooth=1)
    panels = _panels(fig)
    assert list(panels) == [title for _, title, _, _ in HISTORY_PANELS]
    assert all(ax.get_ylabel() for ax in fig.axes), "every panel says what it plots"
    assert panels["segmentation"].get_yscale() == "log" and panels["reconstruction"].get_yscale() == "log"
    assert panels["Wasserstein estimate"].get_yscale() == "linear", "critic scores can be negative"
    assert not panels["adversarial"].lines and "not in this run" in panels["adversarial"].texts[0].get_text()
    np.testing.assert_allclose(panels["source validation Dice"].lines[0].get_ydata(), [40.0, 70.0])
    assert panels["source validation Dice"].get_ylim() == (0, 100)


def test_plot_history_smooths_long_runs_and_tolerates_missing_keys():
    steps = list(range(50))
    fig = plot_history({"step": steps, "loss_seg": [1 / (s + 1) for s in steps]}, smooth=5)
    seg = _panels(fig)["segmentation"]
    assert len(seg.lines) == 2, "each step faint, the moving average bold"
    assert np.isnan(seg.lines[1].get_ydata()[:4]).all()
    assert not _panels(fig)["source validation Dice"].lines


def test_figures_show_as_png_without_pyplot_and_fit_the_notebook():
    fig = network_diagram()
    assert isinstance(fig, InlineFigure) and len(fig.axes[0].texts) >= 8
    assert fig._repr_png_().startswith(b"\x89PNG"), "IPython gets a picture, not '<Figure size ...>'"
    for figure in (fig, plot_history({"step": [0], "loss_seg": [1.0]})):
        assert figure.get_figwidth() * figure.dpi <= MAX_FIGURE_PX


def test_live_plot_collects_rows_without_display():
    live = LiveLossPlot(every=2, display=False)
    for step in range(5):
        live(step, {"step": step, "loss_seg": 1.0 / (step + 1), "val_dice": math.nan}, None)
    assert live.history["step"] == [0, 1, 2, 3, 4]
    assert isinstance(live.figure, InlineFigure)


def test_prediction_snapshots_keep_interval_and_last_step():
    model = LMISANet(spatial_dims=2, num_classes=2, base_filters=2)
    images = [np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)]
    snaps = PredictionSnapshots(images, every=3, total_steps=5)
    for step in range(5):
        snaps(step, {}, model)
    assert snaps.steps == [1, 4, 5]
    assert snaps.predictions[0][0].shape == (16, 16)
    fig = snaps.figure(references=[np.zeros((16, 16), np.uint8)])
    assert len(fig.axes) == 4
    assert fig.get_figwidth() * fig.dpi <= MAX_FIGURE_PX
