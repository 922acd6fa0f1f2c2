"""Tests for lmisa_lite.mlngm.

Two references in ``lmisa_lite.mlngm_reference`` are the executable specification: the per-voxel loop
(``literal_mlngm``), which the vectorised NumPy code must reproduce, and the port of the published MATLAB
script (``published_mlngm``), with its own ``imresize3``; the Torch code must agree with the NumPy code.

Measured tolerances (float32 outputs in [0, 1]):
- literal loop vs ``mlngm``: max abs difference 0 to ~1e-17 on the test images; asserted below 1e-6.
- published port with the boundary rule of ``mlngm`` (``boundary="inside"``) vs ``mlngm``: max abs difference
  ~3e-8 (float32 rounding) on odd sizes and thin volumes; asserted below 1e-6.
- published port as published (mirrored boundary) vs ``mlngm``: Pearson r 0.9966-0.9999 on the smooth test
  images of odd sizes and thin volumes (it was 0.84-0.999 before levels mapped with the nominal scale);
  asserted r >= 0.995. On the linear ramp, whose gradient is flat up to the border, the boundary rule
  dominates: r ~ 0.95-0.99 on every size, even ones included, so it is left out of that test.
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

from lmisa_lite import mlngm_reference
from lmisa_lite.mlngm import (
    _local_normalise,
    _resize_torch,
    combine_levels,
    level_shapes,
    mlngm,
    mlngm_levels,
    mlngm_torch,
    resize,
)
from lmisa_lite.mlngm_reference import literal_local_normalise, literal_mlngm, published_mlngm


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


def _phantom(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Nested ellipses (sharp edges), smooth texture and noise, as in the benchmark."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = np.sqrt((grids[0] / 0.8) ** 2 + (grids[1] / 0.6) ** 2)
    texture = ndimage.gaussian_filter(rng.standard_normal(shape), 3)
    return 100.0 * (r < 0.9) + 60.0 * (r < 0.4) + 30.0 * texture + 5.0 * rng.standard_normal(shape)


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
    expected = literal_mlngm(image, planar=planar)
    np.testing.assert_allclose(mlngm(image, planar=planar), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(13, 11), (9, 10, 7)])
@pytest.mark.parametrize("window", [3, 5])
@pytest.mark.parametrize("planar", [True, False])
def test_local_normalise_matches_literal(shape, window, planar):
    rng = np.random.default_rng(5)
    g = rng.random(shape)
    g[2:6, 2:6] = 0.5  # flat windows exercise the threshold and the max == min guard
    expected = literal_local_normalise(g, window, 1e-3, planar)
    np.testing.assert_allclose(_local_normalise(g, window, 1e-3, planar), expected, rtol=0, atol=1e-12)


def test_planar_and_cubic_windows():
    volume = _disk((20, 20, 8), seed=6)
    volume[..., 4:] *= 1.5  # structure along Z that only a cubic window sees
    assert np.abs(mlngm(volume, planar=True) - mlngm(volume, planar=False)).max() > 0.05
    image = _disk((24, 24))
    np.testing.assert_array_equal(mlngm(image, planar=True), mlngm(image, planar=False))


def test_level_sizes_as_published():
    # imresize3(I, 1 / 2**k): ceil(n / 2**k) on every axis, the third one included, every level kept.
    assert level_shapes((512, 512)) == [(512, 512), (256, 256), (128, 128), (64, 64)]
    assert level_shapes((197, 233)) == [(197, 233), (99, 117), (50, 59), (25, 30)]
    assert level_shapes((24, 24)) == [(24, 24), (12, 12), (6, 6), (3, 3)]
    assert level_shapes((64, 48, 16)) == [(64, 48, 16), (32, 24, 8), (16, 12, 4), (8, 6, 2)]
    assert level_shapes((40, 40, 5)) == [(40, 40, 5), (20, 20, 3), (10, 10, 2), (5, 5, 1)]
    assert level_shapes((5, 5), 2) == [(5, 5), (3, 3)]
    assert level_shapes((1, 30), 3) == [(1, 30), (1, 15), (1, 8)]
    with pytest.raises(ValueError, match="levels"):
        level_shapes((8, 8), 0)


def test_level_sizes_with_skip_small():
    # The earlier policy, kept as an option: no level under 2 * window in-plane, third axis >= min(Z, window).
    def shapes(shape, window=3):
        return level_shapes(shape, 4, window=window, skip_small=True)

    assert shapes((512, 512)) == [(512, 512), (256, 256), (128, 128), (64, 64)]
    assert shapes((24, 24)) == [(24, 24), (12, 12), (6, 6)]
    assert shapes((16, 16, 8)) == [(16, 16, 8), (8, 8, 4)]
    assert shapes((64, 64, 4)) == [(64, 64, 4), (32, 32, 3), (16, 16, 3), (8, 8, 3)]
    assert shapes((64, 64, 4), window=5) == [(64, 64, 4), (32, 32, 4), (16, 16, 4)]
    assert shapes((5, 5)) == [(5, 5)]
    # Fewer levels than asked must not change the result of asking for more.
    image = _disk((24, 24))
    few, many = mlngm(image, levels=3, skip_small=True), mlngm(image, levels=8, skip_small=True)
    np.testing.assert_array_equal(few, many)
    image = _disk((40, 40))  # as published, the 5 x 5 level 3 counts
    assert not np.array_equal(mlngm(image, levels=4), mlngm(image, levels=3))
    np.testing.assert_array_equal(mlngm(image, levels=4, skip_small=True), mlngm(image, levels=3))


@pytest.mark.parametrize("shape", [(35, 27), (20, 20, 5)])
def test_skip_small_numpy_and_torch_agree(shape):
    # In-plane the nominal scale, along a clamped third axis n_out / n_in: both resizing paths of Torch.
    image = _disk(shape, seed=11)
    expected = mlngm(image, skip_small=True)
    assert not np.array_equal(expected, mlngm(image))
    out = mlngm_torch(torch.from_numpy(image)[None, None], skip_small=True)[0, 0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-6)


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
        np.testing.assert_allclose(resize(image, shape), expected, atol=1e-12)


def test_torch_volume_resize_matches_numpy():
    # Torch has no tricubic mode; the separable bicubic passes must reproduce the NumPy resampler exactly,
    # and so must the matrix path that maps with the nominal scale.
    volume = np.random.default_rng(10).random((21, 18, 13))
    cases = [((10, 9, 6), None), ((21, 18, 6), None), ((10, 9, 13), None), ((40, 36, 24), None),
             ((3, 3, 3), None), ((11, 9, 7), (0.5, None, 0.5)), ((6, 5, 4), (0.25, 0.25, 0.25)),
             ((21, 18, 2), (None, None, 0.125))]
    for shape, scale in cases:
        out = _resize_torch(torch.from_numpy(volume)[None, None], shape, scale)[0, 0].numpy()
        np.testing.assert_allclose(out, resize(volume, shape, scale), atol=1e-12)


@pytest.mark.parametrize("n_in, k", [(197, 1), (197, 3), (233, 2), (37, 3), (29, 3), (5, 2), (16, 3), (1, 3)])
def test_resize_maps_with_the_nominal_scale_as_imresize3(n_in, k):
    # An independent implementation of MATLAB's imresize3 gives the same numbers: with the boundary rule of
    # resize everywhere, with MATLAB's mirrored boundary wherever the kernel stays inside the image.
    x = np.random.default_rng(12).random((n_in, 1, 1))
    n_out = -(-n_in // 2**k)
    got = resize(x, (n_out, 1, 1), (0.5**k, None, None))
    inside = mlngm_reference.imresize3(x, 0.5**k, boundary="inside")
    assert got.shape == inside.shape == (n_out, 1, 1)
    np.testing.assert_allclose(got, inside, atol=1e-12)
    mirrored = mlngm_reference.imresize3(x, 0.5**k)
    np.testing.assert_allclose(got[3:-3], mirrored[3:-3], atol=1e-12)  # kernels 2 * 2**k samples wide
    # Back up to the input size: per-axis scale n_out / n_in, as imresize3 given an output size.
    y = np.random.default_rng(12).random((n_out, 3, 2))
    expected = mlngm_reference.imresize3(y, (n_in, 3, 2), boundary="inside")
    np.testing.assert_allclose(resize(y, (n_in, 3, 2)), expected, atol=1e-12)


@pytest.mark.parametrize("shape", [(64, 64), (96, 48), (32, 32, 16), (16, 24, 8)])
def test_nominal_scale_is_the_old_map_on_sizes_divisible_by_the_factor(shape):
    # There n_out / n_in is exactly 2**-k: the results are bit for bit those of the size-based mapping.
    x = _blobs(shape, 13)
    for k in (1, 2, 3):
        level = tuple(n // 2**k for n in shape)
        np.testing.assert_array_equal(resize(x, level, (0.5**k,) * len(shape)), resize(x, level))


def test_resize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="shape"):
        resize(np.zeros((4, 4)), (2,))
    with pytest.raises(ValueError, match="scale"):
        resize(np.zeros((4, 4)), (2, 2), (0.5,))
    with pytest.raises(ValueError, match="scale"):
        resize(np.zeros((4, 4)), (2, 2), (0.5, -1.0))


# ------------------------------------------------------------------------ the published script (port)
ODD_AND_THIN = [(197, 233), (37, 29), (64, 48, 16), (40, 40, 5)]


@pytest.mark.parametrize("shape", [(37, 29), (45, 51), (64, 48, 16), (40, 40, 5), (23, 17, 3)])
def test_matches_published_port_with_the_same_boundary_rule(shape):
    # Level sizes, coordinate mapping, gradient, normalisation and sum as the script, to float32 rounding.
    image = _phantom(shape, 14)
    expected = published_mlngm(image, boundary="inside")
    np.testing.assert_allclose(mlngm(image), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", ODD_AND_THIN)
@pytest.mark.parametrize("make", [_blobs, _disk, _phantom])
def test_correlates_with_published_port(shape, make):
    image = make(shape, 1)
    assert _pearson(mlngm(image), published_mlngm(image)) >= 0.995


@pytest.mark.parametrize("shape", [(37, 29), (40, 40, 5)])
def test_torch_follows_the_nominal_scale_too(shape):
    image = _phantom(shape, 15)
    expected = mlngm(image)
    out64 = mlngm_torch(torch.from_numpy(image)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out64, expected, atol=1e-6)
    out32 = mlngm_torch(torch.from_numpy(image.astype(np.float32))[None, None])[0, 0].numpy()
    assert _pearson(out32, expected) >= 0.99


# --------------------------------------------------------------------------------------- per-level maps
def test_mlngm_levels_are_the_steps_of_mlngm():
    image = _phantom((37, 29), 16)
    maps = mlngm_levels(image)
    assert [m["resized"].shape for m in maps] == level_shapes(image.shape)
    for m in maps:
        assert sorted(m) == ["gradient", "normalised", "resized", "upsampled"]
        assert m["gradient"].shape == m["normalised"].shape == m["resized"].shape
        assert m["upsampled"].shape == image.shape
    np.testing.assert_array_equal(combine_levels(maps), mlngm(image))
    np.testing.assert_array_equal(combine_levels(maps[:2]), mlngm(image, levels=2))
    assert maps[0]["resized"].min() == 0.0 and maps[0]["resized"].max() == 1.0
    with pytest.raises(ValueError, match="maps"):
        combine_levels([])
    with pytest.raises(ValueError, match="window"):
        mlngm_levels(image, window=4)


def test_mlngm_levels_steps_can_be_replaced():
    image = _disk((24, 20), 17)
    calls = []

    def normalise(g, window, threshold, planar):
        calls.append((g.shape, window, threshold, planar))
        return g

    maps = mlngm_levels(image, levels=2, window=5, threshold=0.01, gradient=np.abs, normalise=normalise)
    assert calls == [((24, 20), 5, 0.01, True), ((12, 10), 5, 0.01, True)]
    np.testing.assert_array_equal(maps[1]["normalised"], np.abs(maps[1]["resized"]))


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
