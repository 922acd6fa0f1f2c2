"""Notebook figures and training callbacks."""
from __future__ import annotations

import math

import numpy as np

from lmisa_lite.networks import LMISANet
from lmisa_lite.plots import LiveLossPlot, PredictionSnapshots, network_diagram, plot_history


def test_plot_history_draws_present_terms_and_validation_points():
    nan = math.nan
    history = {"step": [0, 1, 2, 3], "loss_seg": [1.0, 0.8, 0.6, 0.5], "loss_adv": [nan] * 4,
               "val_dice": [nan, 0.4, nan, 0.7]}
    fig = plot_history(history, smooth=1)
    ax_loss, ax_dice = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["seg"], "all-NaN terms are left out"
    np.testing.assert_allclose(ax_dice.lines[0].get_ydata(), [0.4, 0.7])


def test_live_plot_collects_rows_without_display():
    live = LiveLossPlot(every=2, display=False)
    for step in range(5):
        live(step, {"step": step, "loss_seg": 1.0 / (step + 1), "val_dice": math.nan}, None)
    assert live.history["step"] == [0, 1, 2, 3, 4]


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


def test_network_diagram_has_content():
    fig = network_diagram()
    assert len(fig.axes[0].texts) >= 8
