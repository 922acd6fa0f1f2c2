"""The same seed and thread count give identical numbers: training history, weights and test metrics.

A short 2D run (6 steps, 32x32, 2 base filters, validation every 2 steps) is trained twice with one PyTorch
thread; both best models are evaluated on two target cases. What still changes numbers across machines,
thread counts and library versions is listed in the README section "Reproducibility".
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from data_utils.phantoms import make_dataset
from lmisa_lite.evaluation import evaluate
from lmisa_lite.training import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (32, 32)


@pytest.fixture(scope="module")
def data():
    return {
        "source": make_dataset("kidney", "ct", n=2, dims=2, seed=0, shape=SHAPE),
        "target": make_dataset("kidney", "mri", n=2, dims=2, seed=0, shape=SHAPE),
        "val": make_dataset("kidney", "ct", n=1, dims=2, seed=10, shape=SHAPE),
        "test": make_dataset("kidney", "mri", n=2, dims=2, seed=20, shape=SHAPE),
    }


def run(data, seed: int):
    """Train once and evaluate the best model; returns (history without wall times, weights, test metrics)."""
    assert torch.get_num_threads() == 1
    config = TrainConfig(steps=6, image_size=SHAPE, base_filters=2, val_every=2, seed=seed, device="cpu",
                         progress=False)
    result = train(config, data["source"], data["target"], val=data["val"])
    assert result.best_model is not None
    history = {k: v for k, v in result.history.items() if k != "time"}  # seconds differ from run to run
    weights = {k: v.detach().clone() for k, v in result.best_model.state_dict().items()}
    metrics = evaluate(result.best_model, data["test"], device="cpu", progress=False)
    return history, result.best_step, weights, metrics


@pytest.fixture(scope="module")
def runs(data, one_thread):
    return {"a": run(data, seed=0), "b": run(data, seed=0), "other": run(data, seed=1)}


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


def test_same_seed_gives_an_identical_history(runs):
    (history_a, best_a, _, _), (history_b, best_b, _, _) = runs["a"], runs["b"]
    assert sorted(history_a) == sorted(history_b)
    for key in history_a:
        assert len(history_a[key]) == 6
        assert all(_same(x, y) for x, y in zip(history_a[key], history_b[key])), key
    assert best_a == best_b
    assert any(not math.isnan(v) for v in history_a["val_loss"]), "validation ran"


def test_same_seed_gives_identical_weights(runs):
    weights_a, weights_b = runs["a"][2], runs["b"][2]
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key


def test_same_seed_gives_identical_test_metrics(runs):
    metrics_a, metrics_b = runs["a"][3], runs["b"][3]
    assert len(metrics_a) == 2 and metrics_a["case_id"].nunique() == 2  # two cases, one class each
    pd.testing.assert_frame_equal(metrics_a, metrics_b, check_exact=True)
    assert np.array_equal(metrics_a["dice"].to_numpy(), metrics_b["dice"].to_numpy(), equal_nan=True)


def test_another_seed_gives_other_numbers(runs):
    (history_a, _, weights_a, metrics_a), (history_o, _, weights_o, metrics_o) = runs["a"], runs["other"]
    assert history_a["loss_g"] != history_o["loss_g"]
    assert any(not torch.equal(weights_a[k], weights_o[k]) for k in weights_a)
    assert not np.array_equal(metrics_a["dice"].to_numpy(), metrics_o["dice"].to_numpy())
