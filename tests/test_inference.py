"""Tests for lmisa_lite.inference.predict_volume: shapes, padding, slices and sliding windows."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from lmisa_lite.inference import predict_volume
from lmisa_lite.networks import LMISANet


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def net(dims: int, num_classes: int = 3) -> LMISANet:
    torch.manual_seed(0)
    model = LMISANet(spatial_dims=dims, num_classes=num_classes, base_filters=4, depth=3)
    # Train briefly-free but non-trivial batch-norm statistics, so eval mode differs from train mode.
    with torch.no_grad():
        model(torch.randn((4, 1) + (16,) * dims))
    return model.eval()


def direct(model: LMISANet, image: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        _, logits = model(torch.from_numpy(image)[None, None])
    return torch.softmax(logits, 1)[0].numpy()


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_2d_image_matches_one_forward_pass():
    model, image = net(2), rand(32, 24)
    probs = predict_volume(model, image, device="cpu", return_probs=True)
    assert probs.shape == (3, 32, 24) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, direct(model, image), rtol=1e-5, atol=1e-6)
    labels = predict_volume(model, image, device="cpu")
    assert labels.dtype == np.uint8 and labels.shape == (32, 24)
    np.testing.assert_array_equal(labels, probs.argmax(0))


@pytest.mark.parametrize("shape", [(30, 21), (17, 33), (5, 9)])
def test_odd_2d_sizes_are_padded_and_cropped_back(shape):
    model, image = net(2), rand(*shape)
    probs = predict_volume(model, image, device="cpu", return_probs=True)
    assert probs.shape == (3, *shape)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    # Padding uses the image minimum and is centred: the same as padding by hand.
    padded = np.full((-(-shape[0] // 4) * 4, -(-shape[1] // 4) * 4), image.min(), np.float32)
    ox, oy = (padded.shape[0] - shape[0]) // 2, (padded.shape[1] - shape[1]) // 2
    padded[ox:ox + shape[0], oy:oy + shape[1]] = image
    expected = direct(model, padded)[:, ox:ox + shape[0], oy:oy + shape[1]]
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_2d_model_on_a_volume_goes_slice_by_slice(batch_size):
    model, volume = net(2), rand(20, 16, 5)
    probs = predict_volume(model, volume, device="cpu", batch_size=batch_size, return_probs=True)
    assert probs.shape == (3, 20, 16, 5)
    for z in range(5):
        single = predict_volume(model, volume[..., z], device="cpu", return_probs=True)
        np.testing.assert_allclose(probs[..., z], single, rtol=1e-5, atol=1e-6)
    assert predict_volume(model, volume, device="cpu").shape == (20, 16, 5)


def test_sliding_window_of_the_whole_volume_equals_a_forward_pass():
    model, volume = net(3), rand(16, 16, 8)
    uniform = predict_volume(model, volume, patch_size=(16, 16, 8), blend="uniform", device="cpu",
                             return_probs=True)
    # one window: a forward pass, in predict_volume's channels-last format (last-bit differences on some CPUs)
    np.testing.assert_allclose(uniform, direct(model, volume), rtol=1e-5, atol=1e-6)
    gaussian = predict_volume(model, volume, patch_size=(16, 16, 8), device="cpu", return_probs=True)
    np.testing.assert_allclose(gaussian, uniform, rtol=1e-5, atol=1e-6)
    whole = predict_volume(model, volume, device="cpu", return_probs=True)  # no patch: the whole volume
    np.testing.assert_allclose(whole, uniform, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_sliding_window_covers_odd_volumes(overlap):
    model, volume = net(3), rand(21, 18, 11)
    probs = predict_volume(model, volume, patch_size=(8, 8, 8), overlap=overlap, batch_size=5, device="cpu",
                           return_probs=True)
    assert probs.shape == (3, 21, 18, 11)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    labels = predict_volume(model, volume, patch_size=(8, 8, 8), overlap=overlap, device="cpu")
    assert labels.shape == (21, 18, 11) and labels.dtype == np.uint8


def test_sliding_window_uses_the_training_patch_by_default():
    model, volume = net(3), rand(24, 16, 16)
    model.patch_size = (8, 8, 8)
    default = predict_volume(model, volume, device="cpu", return_probs=True)
    explicit = predict_volume(model, volume, patch_size=(8, 8, 8), device="cpu", return_probs=True)
    whole = predict_volume(model, volume, patch_size=(24, 16, 16), device="cpu", return_probs=True)
    np.testing.assert_array_equal(default, explicit)
    assert not np.allclose(default, whole)  # windows see less context than the whole volume


def test_training_mode_is_restored():
    model = net(2).train()
    predict_volume(model, rand(8, 8), device="cpu")
    assert model.training
    model.eval()
    predict_volume(model, rand(8, 8), device="cpu")
    assert not model.training


@pytest.mark.parametrize("dims, image, kwargs, words", [
    (2, np.zeros((2, 8, 8, 8), np.float32), {}, ["image", "(X, Y)"]),
    (3, np.zeros((8, 8), np.float32), {}, ["3D model", "volume"]),
    (3, np.zeros((8, 8, 8), np.float32), {"patch_size": (6, 8, 8)}, ["patch_size", "multiple of 4"]),
    (3, np.zeros((8, 8, 8), np.float32), {"patch_size": (8, 8)}, ["patch_size"]),
    (2, np.zeros((8, 8), np.float32), {"overlap": 1.0}, ["overlap"]),
    (2, np.zeros((8, 8), np.float32), {"blend": "max"}, ["blend"]),
    (2, np.full((8, 8), np.nan, np.float32), {}, ["NaN"]),
])
def test_clear_errors(dims, image, kwargs, words):
    with pytest.raises(ValueError) as err:
        predict_volume(net(dims), image, device="cpu", **kwargs)
    for word in words:
        assert word in str(err.value)


class EdgeBlindModel(torch.nn.Module):
    """Segments ``x > 0`` in a window's interior, but is confidently wrong within ``edge`` voxels of its
    borders (a network that lacks context at window edges, exaggerated)."""

    spatial_dims, depth, num_classes = 3, 2, 2

    def __init__(self, edge: int = 2) -> None:
        super().__init__()
        self.edge = edge

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        truth = (x[:, 0] > 0).float() * 2 - 1  # +1 foreground, -1 background
        near_edge = torch.zeros_like(truth, dtype=torch.bool)
        for axis in (1, 2, 3):
            n, idx = truth.shape[axis], torch.arange(truth.shape[axis])
            edge = min(self.edge, n // 4)
            shape = [1, 1, 1, 1]
            shape[axis] = n
            near_edge |= ((idx < edge) | (idx >= n - edge)).reshape(shape)
        score = torch.where(near_edge, -8.0 * truth, 3.0 * truth)  # wrong and overconfident at the edges
        return x, torch.stack([-score, score], dim=1)


def test_gaussian_blending_beats_uniform_where_windows_are_worse_at_their_edges():
    field = ndimage.gaussian_filter(np.random.default_rng(3).normal(size=(32, 32, 16)), 2.0)
    truth = (field > np.median(field)).astype(np.uint8)  # smooth random blobs, half the voxels
    volume = np.where(truth, 1.0, -1.0).astype(np.float32)
    model = EdgeBlindModel()
    accuracy = {}
    for blend in ("gaussian", "uniform"):
        labels = predict_volume(model, volume, patch_size=(16, 16, 8), overlap=0.5, blend=blend, device="cpu")
        inner = (slice(2, -2), slice(2, -2), slice(2, -2))  # the volume's own border is at every window's edge
        accuracy[blend] = float(np.mean(labels[inner] == truth[inner]))
    assert accuracy["gaussian"] > 0.98
    assert accuracy["gaussian"] > accuracy["uniform"] + 0.05

