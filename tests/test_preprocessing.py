"""The network input: MLNGM then z-score, or z-score only, chosen by what the model was trained on."""
from __future__ import annotations

import numpy as np
import pytest

from data_utils.case import Case
from data_utils.prepare import zscore
from lmisa_lite import preprocessing
from lmisa_lite.config import TrainConfig, build_networks
from lmisa_lite.evaluation import evaluate
from lmisa_lite.networks import LMISANet
from lmisa_lite.preprocessing import input_kind, model_input, network_input

SHAPE = (16, 12, 6)


# ------------------------------------------------------------------------------------------ network_input


def test_network_input_without_mlngm_zscores_volume_or_slices():
    image = np.random.default_rng(2).normal(0, 1, SHAPE) * np.arange(1, 7)  # contrast differs per slice
    np.testing.assert_allclose(network_input(image, use_mlngm=False), zscore(image), atol=1e-6)
    per_slice = network_input(image, use_mlngm=False, slicewise=True)
    assert per_slice.dtype == np.float32
    for z in range(SHAPE[2]):
        np.testing.assert_allclose(per_slice[..., z], zscore(image[..., z]), atol=1e-6)
    assert not np.allclose(per_slice, zscore(image), atol=1e-3)


@pytest.fixture
def recorded_mlngm(monkeypatch):
    """Stand-in MLNGM that records its calls, to check how network_input drives it."""
    calls = []

    def fake(image, *, levels=4, window=3):
        calls.append((image.shape, levels, window))
        return np.abs(image) ** 2

    monkeypatch.setattr(preprocessing, "mlngm", fake)
    return calls


def test_network_input_slicewise_uses_2d_mlngm_per_slice(recorded_mlngm):
    image = np.random.default_rng(3).normal(0, 1, SHAPE)
    out = network_input(image, slicewise=True, levels=3, window=5)
    assert recorded_mlngm == [((16, 12), 3, 5)] * SHAPE[2]
    for z in range(SHAPE[2]):
        np.testing.assert_allclose(out[..., z], zscore(image[..., z] ** 2), atol=1e-5)


def test_network_input_volume_uses_one_3d_mlngm(recorded_mlngm):
    image = np.random.default_rng(4).normal(0, 1, SHAPE)
    out = network_input(image)
    assert recorded_mlngm == [(SHAPE, 4, 3)]
    np.testing.assert_allclose(out, zscore(image**2), atol=1e-5)


def test_network_input_with_real_mlngm():
    from lmisa_lite.mlngm import mlngm

    image = np.zeros((32, 32), np.float32)
    image[8:24, 10:20] = 100.0
    out = network_input(image)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, zscore(mlngm(image)), atol=1e-5)
    assert abs(float(out.mean())) < 1e-4


def test_network_input_rejects_other_dims():
    with pytest.raises(ValueError, match="image"):
        network_input(np.zeros((2, 3, 4, 5)), use_mlngm=False)


# ------------------------------------------------------------------------------------------ model_input


def test_networks_record_their_input_from_the_config():
    raw, _ = build_networks(TrainConfig(use_mlngm=False, image_size=(32, 32), base_filters=2))
    edges, _ = build_networks(TrainConfig(spatial_dims=3, image_size=(16, 16, 8), base_filters=2))
    assert (raw.input_kind, raw.patch_size) == ("zscore", (32, 32))
    assert (edges.input_kind, edges.patch_size) == ("mlngm", (16, 16, 8))
    assert input_kind(object()) == "mlngm"  # a network built by hand: LMISA's input
    with pytest.raises(ValueError, match="input_kind"):
        LMISANet(base_filters=2, input_kind="hu")


def test_model_input_follows_the_model(recorded_mlngm):
    image = np.random.default_rng(5).normal(0, 1, SHAPE)
    raw2d = LMISANet(spatial_dims=2, base_filters=2, depth=2, input_kind="zscore")
    per_slice = model_input(raw2d, image)  # a 2D model meets a volume: slice by slice
    assert recorded_mlngm == []
    for z in range(SHAPE[2]):
        np.testing.assert_allclose(per_slice[..., z], zscore(image[..., z]), atol=1e-6)
    edges3d = LMISANet(spatial_dims=3, base_filters=2, depth=2)
    np.testing.assert_allclose(model_input(edges3d, image), zscore(image**2), atol=1e-5)
    assert recorded_mlngm == [(SHAPE, 4, 3)]


def test_raw_intensity_model_is_evaluated_on_raw_input_without_any_flag(monkeypatch):
    """evaluate() reads the input from the model: a z-score model never sees an MLNGM map."""
    seen = []
    monkeypatch.setattr(preprocessing, "mlngm", lambda *a, **k: seen.append("mlngm") or a[0])
    label = np.zeros((16, 16), np.uint8)
    label[4:10, 4:10] = 1
    case = Case(np.where(label, 200.0, 40.0).astype(np.float32), label, (1.0, 1.0), "c", "ct")
    raw = LMISANet(spatial_dims=2, base_filters=2, depth=2, input_kind="zscore").eval()
    evaluate(raw, [case], device="cpu", progress=False)
    assert seen == []
    edges = LMISANet(spatial_dims=2, base_filters=2, depth=2).eval()
    evaluate(edges, [case], device="cpu", progress=False)
    assert seen == ["mlngm"]
    with pytest.raises(ValueError, match="contradicts the model"):
        evaluate(raw, [case], use_mlngm=True, device="cpu", progress=False)
