"""Tests for lmisa_lite.mlngm.

The per-voxel loop in ``lmisa_lite._mlngm_reference`` is the executable specification: the vectorised NumPy
code must reproduce it, and the Torch code must agree with the NumPy code.

Measured tolerances (float32 outputs in [0, 1]):
- literal loop vs ``mlngm``: max abs difference 0 to ~1e-17 on the test images; asserted below 1e-6.
- ``a * I + b`` (a > 0): max abs difference <= 6e-8; asserted below 1e-6.
- inversion ``-I``: exact invariance in exact arithmetic (gradient magnitude ignores sign and the resampler
  weights sum to 1); measured max abs difference 0; asserted below 1e-5 to leave room for rounding.
- ``mlngm_torch`` vs ``mlngm``: Pearson r >= 0.9999 measured (max abs difference ~1e-6, up to ~0.07 on the
  cubic-window ramp, where float32 round-off decides near-flat windows); asserted r >= 0.99.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from lmisa_lite._mlngm_reference import _literal_local_normalise, _literal_mlngm
from lmisa_lite.mlngm import _level_shapes, _local_normalise, _resize, _resize_torch, mlngm, mlngm_torch


# ------------------------------------------------------------------------------------------- test images
def _blobs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random smooth blobs."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)


def _disk(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Two nested disks (cylinders in 3D) with Gaussian noise."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt(grids[0] ** 2 + grids[1] ** 2)
    return 1.0 * (radius < 0.6) + 2.0 * (radius < 0.3) + 0.1 * rng.standard_normal(shape)


def _ramp(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """An intensity ramp with a bright rectangle (sharp edges) on top; ``seed`` shifts the rectangle."""
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    image = 3.0 * grids[0] + 2.0 * grids[1]
    x0, y0 = shape[0] // 3 + seed % 3, shape[1] // 4 + seed % 2
    image[x0 : x0 + shape[0] // 3, y0 : y0 + shape[1] // 2] += 2.0
    if len(shape) == 3:
        image[..., : shape[2] // 2] += 0.5 * grids[0][..., : shape[2] // 2]
    return image


IMAGES = [_blobs, _disk, _ramp]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


# ---------------------------------------------------------------------------------------- basic contract
@pytest.mark.parametrize("shape", [(40, 36), (24, 20, 10)])
@pytest.mark.parametrize("make", IMAGES)
def test_shape_dtype_range_determinism(shape, make):
    image = make(shape).astype(np.float32)
    out = mlngm(image)
    assert out.shape == shape
    assert out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    np.testing.assert_array_equal(out, mlngm(image))


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, bool])
def test_accepts_real_dtypes(dtype):
    image = _disk((32, 32)) > 1.0 if dtype is bool else (50 * _disk((32, 32)) + 60).astype(dtype)
    out = mlngm(image)
    assert out.dtype == np.float32 and np.isfinite(out).all() and out.max() == 1.0


@pytest.mark.parametrize("shape", [(30, 30), (12, 12, 4)])
def test_constant_image_gives_zeros_without_warnings(shape):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = mlngm(np.full(shape, 7.5, np.float32))
        out_t = mlngm_torch(torch.full((2, 1, *shape), -3.0))
    assert out.dtype == np.float32 and not out.any()
    assert not out_t.any()


@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("shape", [(30, 26), (20, 18, 6)])
def test_border_is_zero_for_one_level(window, shape):
    out = mlngm(_disk(shape), levels=1, window=window)
    r = window // 2
    assert out.max() == 1.0
    for border in (out[:r], out[-r:], out[:, :r], out[:, -r:]):
        assert not border.any()
    assert out[r:-r, r:-r].any()


def test_homogeneous_windows_are_zero():
    image = np.zeros((32, 32))
    image[:, 16:] = 1.0  # one vertical step edge, flat everywhere else
    out = mlngm(image, levels=1)
    assert not out[:, :13].any() and not out[:, 19:].any()
    assert out[2:-2, 15:17].min() > 0.0


def test_guard_when_local_max_equals_local_min():
    # With threshold 0 no window is "homogeneous", so only the max == min guard avoids 0 / 0.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _local_normalise(np.full((9, 9), 2.0), 3, 0.0, True).any()
        ramp = np.add.outer(np.arange(20.0), np.zeros(20))  # same gradient everywhere inside
        assert np.isfinite(mlngm(ramp, threshold=0.0)).all()
        assert not mlngm(ramp, levels=1)[3:-3, 3:-3].any()


def test_threshold_masks_low_contrast_windows():
    rng = np.random.default_rng(1)
    g = rng.random((16, 16))
    g[4:12, 4:12] = 5.0 + 1e-6 * rng.random((8, 8))  # nearly flat patch, far below the global spread
    kept = _local_normalise(g, 3, 0.0, True)
    masked = _local_normalise(g, 3, 1e-3, True)
    assert kept[6:10, 6:10].any()
    assert not masked[6:10, 6:10].any()
    np.testing.assert_array_equal(masked[:, :3], kept[:, :3])


# ------------------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "image",
    [
        np.array([0.0, 1.0, np.nan, 2.0]).reshape(2, 2),
        np.array([[0.0, np.inf], [1.0, 2.0]]),
        np.zeros(8),
        np.zeros((4, 4, 4, 2)),
        np.zeros((0, 5)),
        np.zeros((4, 4), complex),
        np.array([["a", "b"], ["c", "d"]]),
    ],
)
def test_bad_image_raises(image):
    with pytest.raises(ValueError, match="image"):
        mlngm(image)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"levels": 0}, "levels"),
        ({"levels": -2}, "levels"),
        ({"levels": 2.0}, "levels"),
        ({"levels": True}, "levels"),
        ({"window": 4}, "window"),
        ({"window": 1}, "window"),
        ({"window": 2}, "window"),
        ({"window": 3.0}, "window"),
        ({"threshold": -1e-3}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
    ],
)
def test_bad_options_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        mlngm(np.zeros((8, 8)), **kwargs)
    with pytest.raises(ValueError, match=name):
        mlngm_torch(torch.zeros(1, 1, 8, 8), **kwargs)


@pytest.mark.parametrize(
    "x",
    [
        torch.zeros(8, 8),
        torch.zeros(1, 8, 8),
        torch.zeros(1, 1, 2, 8, 8, 8),
        torch.tensor([[[[0.0, float("nan")], [1.0, 2.0]]]]),
        torch.tensor([[[[0.0, float("-inf")], [1.0, 2.0]]]]),
        torch.zeros(0, 1, 8, 8),
        np.zeros((1, 1, 8, 8)),
    ],
)
def test_bad_tensor_raises(x):
    with pytest.raises(ValueError, match="x"):
        mlngm_torch(x)


# ------------------------------------------------------------------------------------------- invariances
@pytest.mark.parametrize("shape", [(48, 40), (24, 24, 8)])
@pytest.mark.parametrize("a, b", [(3.7, -250.0), (1e-3, 1e3), (1000.0, 7.0)])
def test_affine_intensity_invariance(shape, a, b):
    image = _disk(shape, seed=2)
    np.testing.assert_allclose(mlngm(a * image + b), mlngm(image), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(48, 40), (24, 24, 8)])
@pytest.mark.parametrize("make", IMAGES)
def test_intensity_inversion_invariance(shape, make):
    image = make(shape, 3)
    np.testing.assert_allclose(mlngm(-image), mlngm(image), rtol=0, atol=1e-5)


# -------------------------------------------------------------------------- executable specification
@pytest.mark.parametrize("make", IMAGES)
@pytest.mark.parametrize("shape, planar", [((24, 24), True), ((16, 16, 8), True), ((16, 16, 8), False)])
def test_matches_literal_loop(shape, planar, make):
    image = make(shape, 4)
    expected = _literal_mlngm(image, planar=planar)
    np.testing.assert_allclose(mlngm(image, planar=planar), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(13, 11), (9, 10, 7)])
@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("planar", [True, False])
def test_local_normalise_matches_literal(shape, window, planar):
    rng = np.random.default_rng(5)
    g = rng.random(shape)
    g[2:6, 2:6] = 0.5  # flat windows exercise the threshold and the max == min guard
    expected = _literal_local_normalise(g, window, 1e-3, planar)
    np.testing.assert_allclose(_local_normalise(g, window, 1e-3, planar), expected, rtol=0, atol=1e-12)


def test_planar_and_cubic_windows():
    volume = _disk((20, 20, 8), seed=6)
    volume[..., 4:] *= 1.5  # structure along Z that only a cubic window sees
    assert np.abs(mlngm(volume, planar=True) - mlngm(volume, planar=False)).max() > 0.05
    image = _disk((24, 24))
    np.testing.assert_array_equal(mlngm(image, planar=True), mlngm(image, planar=False))


def test_level_sizes_for_small_images():
    assert _level_shapes((512, 512), 4, 3) == [(512, 512), (256, 256), (128, 128), (64, 64)]
    assert _level_shapes((24, 24), 4, 3) == [(24, 24), (12, 12), (6, 6)]
    assert _level_shapes((16, 16, 8), 4, 3) == [(16, 16, 8), (8, 8, 4)]
    assert _level_shapes((64, 64, 4), 4, 3) == [(64, 64, 4), (32, 32, 3), (16, 16, 3), (8, 8, 3)]
    assert _level_shapes((64, 64, 4), 4, 5) == [(64, 64, 4), (32, 32, 4), (16, 16, 4)]
    assert _level_shapes((5, 5), 4, 3) == [(5, 5)]
    # Fewer levels than asked must not change the result of asking for more.
    image = _disk((24, 24))
    np.testing.assert_array_equal(mlngm(image, levels=3), mlngm(image, levels=8))


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (1, 30), (5, 5), (7, 7, 1), (12, 12, 2)])
def test_tiny_images(shape):
    image = np.random.default_rng(7).random(shape)
    out = mlngm(image)
    out_t = mlngm_torch(torch.from_numpy(image)[None, None])[0, 0].numpy()
    assert out.shape == shape and np.isfinite(out).all() and 0.0 <= out.min() <= out.max() <= 1.0
    np.testing.assert_allclose(out_t, out, atol=1e-6)


def test_numpy_resize_matches_torch_antialiased_bicubic():
    image = np.random.default_rng(8).random((50, 37))
    for shape in [(25, 19), (7, 5), (50, 20), (120, 90)]:
        x = torch.from_numpy(image)[None, None]
        expected = F.interpolate(x, size=shape, mode="bicubic", antialias=True, align_corners=False)[0, 0]
        expected = expected.numpy()
        np.testing.assert_allclose(_resize(image, shape), expected, atol=1e-12)


def test_torch_volume_resize_matches_numpy():
    # Torch has no tricubic mode; the separable bicubic passes must reproduce the NumPy resampler exactly.
    volume = np.random.default_rng(10).random((20, 18, 12))
    for shape in [(10, 9, 6), (20, 18, 6), (10, 9, 12), (40, 36, 24), (3, 3, 3)]:
        out = _resize_torch(torch.from_numpy(volume)[None, None], shape)[0, 0].numpy()
        np.testing.assert_allclose(out, _resize(volume, shape), atol=1e-12)


# ------------------------------------------------------------------------------------------------ torch
@pytest.mark.parametrize("make", IMAGES)
@pytest.mark.parametrize("shape, planar", [((64, 56), True), ((32, 32, 16), True), ((32, 32, 16), False)])
def test_torch_agrees_with_numpy(shape, planar, make):
    image = make(shape, 9)
    expected = mlngm(image, planar=planar)
    out = mlngm_torch(torch.from_numpy(image.astype(np.float32))[None, None], planar=planar)
    assert out.shape == (1, 1, *shape) and out.dtype == torch.float32
    assert _pearson(out[0, 0].numpy(), expected) >= 0.99


@pytest.mark.parametrize("shape", [(32, 28), (16, 16, 6)])
def test_torch_batch_and_channels_are_independent(shape):
    # Different contents and intensity ranges, one of them constant, in a (2, 2) batch.
    images = [_blobs(shape, 1), 100.0 * _disk(shape, 2), -5.0 * _ramp(shape, 3), np.full(shape, 4.0)]
    x = torch.from_numpy(np.stack(images).astype(np.float32)).reshape(2, 2, *shape)
    out = mlngm_torch(x)
    for b in range(2):
        for c in range(2):
            alone = mlngm_torch(x[b : b + 1, c : c + 1])
            np.testing.assert_allclose(out[b : b + 1, c : c + 1].numpy(), alone.numpy(), rtol=0, atol=1e-6)
    assert out[0, 0].max() == 1.0 and not out[1, 1].any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64, torch.uint8])
def test_torch_dtypes(dtype):
    image = torch.from_numpy(60 * _disk((40, 40)) + 80)
    x = image.to(dtype)[None, None]
    out = mlngm_torch(x)
    assert out.dtype == (dtype if dtype.is_floating_point else torch.float32)
    expected = mlngm_torch(x.to(torch.float64 if dtype == torch.float64 else torch.float32))
    np.testing.assert_allclose(out.float().numpy(), expected.float().numpy(), rtol=0, atol=1e-2)
    assert _pearson(out.double().numpy(), mlngm(x[0, 0].double().numpy())) >= 0.99


def test_torch_inside_autograd_returns_detached_result():
    x = torch.from_numpy(_disk((32, 32)).astype(np.float32))[None, None].requires_grad_()
    loss = (x * 2).sum()
    out = mlngm_torch(x * 2)
    assert not out.requires_grad
    loss.backward()  # the caller's graph is untouched
    assert x.grad is not None
