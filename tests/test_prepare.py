from __future__ import annotations

import numpy as np
import pytest
from _fixtures import world

from data_utils.case import Case
from data_utils.prepare import (
    crop_or_pad,
    extract_slices,
    fit_to_shape,
    foreground_bbox,
    resample,
    zscore,
)

SHAPE = (16, 12, 6)


def _case(label: bool = True) -> Case:
    rng = np.random.default_rng(0)
    lab = np.zeros(SHAPE, np.uint8)
    lab[4:9, 3:7, 2:4] = 1
    affine = np.array([[0.8, 0, 0, -20.0], [0, 0.7, 0, 5.0], [0, 0, 3.0, 40.0], [0, 0, 0, 1]])
    image = rng.normal(0, 1, SHAPE)
    return Case(image, lab if label else None, (0.8, 0.7, 3.0), "v1", "ct", affine=affine, task="kidney")


# ------------------------------------------------------------------------------------------ zscore


def test_zscore_moments_and_dtype():
    x = np.random.default_rng(1).normal(300, 40, (16, 12)).astype(np.int16)
    z = zscore(x)
    assert z.dtype == np.float32 and z.shape == x.shape
    assert abs(float(z.mean())) < 1e-5 and abs(float(z.std()) - 1) < 1e-4
    np.testing.assert_allclose(z, (x - x.mean()) / x.std(), rtol=1e-5, atol=1e-5)


def test_zscore_constant_is_zero():
    z = zscore(np.full(SHAPE, 5.0))
    assert z.dtype == np.float32 and not z.any()
    assert not zscore(np.array([1.0, 1.0 + 1e-10]), eps=1e-6).any()


def test_zscore_rejects_non_finite():
    with pytest.raises(ValueError, match="NaN"):
        zscore(np.array([0.0, np.nan, 1.0]))


# ------------------------------------------------------------------------------------------ crop_or_pad


def test_crop_or_pad_centres():
    a = np.arange(7)
    assert crop_or_pad(a, (4,)).tolist() == [1, 2, 3, 4]
    assert crop_or_pad(a, (10,), value=-1).tolist() == [-1, 0, 1, 2, 3, 4, 5, 6, -1, -1]
    vol = np.random.default_rng(5).normal(size=SHAPE)
    out = crop_or_pad(vol, (10, 15, None))
    assert out.shape == (10, 15, 6) and out.dtype == vol.dtype
    np.testing.assert_array_equal(out[:, 1:13, :], vol[3:13, :, :])
    assert not out[:, 0].any() and not out[:, 13:].any()


def test_crop_then_pad_back_keeps_kept_voxels_in_place():
    vol = np.random.default_rng(6).normal(size=SHAPE)
    for shape in [(9, 5, 3), (10, 6, 4), (1, 1, 1)]:
        back = crop_or_pad(crop_or_pad(vol, shape), SHAPE)
        kept = back != 0
        np.testing.assert_array_equal(back[kept], vol[kept])
        assert kept.sum() == np.prod(shape)


def test_crop_or_pad_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        crop_or_pad(np.zeros((4, 4)), (4, 4, 4))
    with pytest.raises(ValueError, match="positive"):
        crop_or_pad(np.zeros((4, 4)), (0, 4))


# ------------------------------------------------------------------------------------------ resample


def test_resample_shape_values_and_affine():
    x = np.arange(SHAPE[0], dtype=np.float32)[:, None, None] * np.ones(SHAPE, np.float32)  # ramp along X
    case = Case(x, (x > 7).astype(np.uint8), (1.0, 1.0, 3.0), "r", "ct", affine=np.diag([1.0, 1.0, 3.0, 1.0]))
    out = resample(case, (2.0, 1.0, 1.5))
    assert out.shape == (8, 12, 12) and out.spacing == (2.0, 1.0, 1.5)
    assert out.image.dtype == np.float32 and out.label.dtype == np.uint8
    # New voxel i sits at old index 2 i + 0.5, so a linear ramp stays linear.
    np.testing.assert_allclose(out.image[:, 0, 0], 2 * np.arange(8) + 0.5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), (2.0, 1.0, 1.5))
    # The image value at a voxel equals the old ramp evaluated at that voxel's world x.
    for i in (0, 3, 7):
        assert out.image[i, 0, 0] == pytest.approx(world(out.affine, (i, 0, 0))[0], abs=1e-5)
    assert set(np.unique(out.label)) == {0, 1}
    assert out.case_id == case.case_id and out.task == case.task


def test_resample_keeps_label_position_in_world():
    case = _case()
    out = resample(case, 1.5)
    centre_old = world(case.affine, np.argwhere(case.label).mean(axis=0))
    centre_new = world(out.affine, np.argwhere(out.label).mean(axis=0))
    np.testing.assert_allclose(centre_new, centre_old, atol=1.5)
    assert out.shape == tuple(round(n * s / 1.5) for n, s in zip(SHAPE, case.spacing))


def test_resample_2d_and_bad_spacing():
    case = Case(np.ones((16, 12)), None, (0.5, 0.5), "s", "mri")
    out = resample(case, (1.0, 0.25))
    assert out.shape == (8, 24) and out.label is None
    np.testing.assert_allclose(out.image, 1.0)
    with pytest.raises(ValueError, match="spacing"):
        resample(case, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        resample(case, 0.0)


# ------------------------------------------------------------------------------------------ fit_to_shape


def test_fit_to_shape_pads_with_minimum_and_keeps_world_positions():
    case = _case()
    out = fit_to_shape(case, (20, 8, None))
    assert out.shape == (20, 8, 6)
    assert out.image[0, 0, 0] == pytest.approx(case.image.min())  # padded along X
    assert not out.label[:2].any()
    old = np.argwhere(case.label)[0]
    new = np.argwhere(out.label)[0]
    np.testing.assert_allclose(world(out.affine, new), world(case.affine, old))
    assert out.label.sum() == case.label.sum()
    assert fit_to_shape(case, (20, 8, 6), image_value=-5).image[0, 0, 0] == -5


# ------------------------------------------------------------------------------------------ slices


def test_extract_slices_ids_spacing_and_affine():
    case = _case()
    slices = extract_slices(case)
    assert [s.case_id for s in slices] == [f"v1_z{z:03d}" for z in range(6)]
    s = slices[3]
    assert s.shape == (16, 12) and s.spacing == (0.8, 0.7) and s.modality == "ct" and s.task == "kidney"
    np.testing.assert_array_equal(s.image, case.image[..., 3])
    np.testing.assert_allclose(world(s.affine, (5, 4, 0)), world(case.affine, (5, 4, 3)))


def test_extract_slices_foreground_only():
    case = _case()
    assert [s.case_id for s in extract_slices(case, foreground_only=True)] == ["v1_z002", "v1_z003"]
    case.label[0, 0, 5] = 1
    kept = extract_slices(case, foreground_only=True, min_foreground=2)
    assert [s.case_id for s in kept] == ["v1_z002", "v1_z003"]
    with pytest.raises(ValueError, match="label"):
        extract_slices(_case(label=False), foreground_only=True)


def test_extract_slices_passes_2d_through():
    flat = Case(np.ones((4, 4)), np.zeros((4, 4)), (1.0, 1.0), "f", "ct")
    (only,) = extract_slices(flat)
    assert only is flat
    assert extract_slices(flat, foreground_only=True) == []


def test_foreground_bbox():
    label = np.zeros(SHAPE, np.uint8)
    label[4:9, 3, 2:4] = 2
    box = foreground_bbox(label)
    assert box == (slice(4, 9), slice(3, 4), slice(2, 4))
    assert foreground_bbox(label, margin=5) == (slice(0, 14), slice(0, 9), slice(0, 6))
    assert foreground_bbox(label, margin=(1, 0, 2)) == (slice(3, 10), slice(3, 4), slice(0, 6))
    assert label[box].all()
    with pytest.raises(ValueError, match="no foreground"):
        foreground_bbox(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="margin"):
        foreground_bbox(label, margin=(1, 1))


def test_crop_or_pad_grows_an_axis_by_one_voxel():
    import numpy as np

    from data_utils.prepare import crop_or_pad

    out = crop_or_pad(np.ones((127, 126)), (128, 128))
    assert out.shape == (128, 128)
    assert out.sum() == 127 * 126
    assert out[:, 0].sum() == 0 and out[127, :].sum() == 0
