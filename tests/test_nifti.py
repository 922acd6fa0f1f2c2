from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
from _fixtures import kits_affine, world, write_nifti

from data_utils.case import Case
from data_utils.nifti import load_case, nifti_stem, save_case

SHAPE = (16, 12, 6)


def _volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(50, 20, SHAPE).astype(np.float32)
    label = rng.integers(0, 3, SHAPE).astype(np.uint8)
    return image, label


@pytest.mark.parametrize("ext", [".nii.gz", ".nii"])
def test_round_trip_keeps_values_affine_and_spacing(tmp_path, ext):
    image, label = _volume()
    affine = np.array([[0.8, 0, 0, -40.0], [0, 0.7, 0, 12.5], [0, 0, 3.0, -100.0], [0, 0, 0, 1]])
    case = Case(image, label, (0.8, 0.7, 3.0), "c1", "ct", affine=affine, task="kidney")
    save_case(case, tmp_path / f"img{ext}", tmp_path / f"lab{ext}")

    assert nib.load(tmp_path / f"img{ext}").get_data_dtype() == np.float32
    assert nib.load(tmp_path / f"lab{ext}").get_data_dtype() == np.uint8
    loaded = load_case(tmp_path / f"img{ext}", tmp_path / f"lab{ext}", modality="ct", task="kidney")
    assert loaded.image.dtype == np.float32 and loaded.label.dtype == np.uint8
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.label, label)
    np.testing.assert_allclose(loaded.affine, affine, atol=1e-5)
    np.testing.assert_allclose(loaded.spacing, (0.8, 0.7, 3.0), rtol=1e-6)
    assert (loaded.case_id, loaded.modality, loaded.task) == ("img", "ct", "kidney")


def test_round_trip_2d_case(tmp_path):
    image = np.arange(16 * 12, dtype=np.float32).reshape(16, 12)
    case = Case(image, (image % 3).astype(np.uint8), (0.5, 0.6), "slice", "mri")
    save_case(case, tmp_path / "s.nii.gz", tmp_path / "s_label.nii.gz")
    loaded = load_case(tmp_path / "s.nii.gz", tmp_path / "s_label.nii.gz", case_id="slice")
    assert loaded.shape == (16, 12)
    np.testing.assert_array_equal(loaded.image, image)
    np.testing.assert_array_equal(loaded.label, case.label)
    np.testing.assert_allclose(loaded.spacing, (0.5, 0.6), rtol=1e-6)


def test_save_uses_spacing_when_affine_is_default_identity(tmp_path):
    case = Case(np.zeros(SHAPE), None, (2.0, 3.0, 4.0), "c", "ct")
    save_case(case, tmp_path / "c.nii.gz")
    np.testing.assert_allclose(nib.load(tmp_path / "c.nii.gz").affine, np.diag([2.0, 3.0, 4.0, 1.0]))
    assert load_case(tmp_path / "c.nii.gz").spacing == (2.0, 3.0, 4.0)


def test_save_creates_folders_and_leaves_no_temporary_files(tmp_path):
    image, label = _volume()
    target = tmp_path / "a" / "b"
    save_case(Case(image, label, (1, 1, 1), "c", "ct"), target / "img.nii.gz", target / "lab.nii.gz")
    assert sorted(os.listdir(target)) == ["img.nii.gz", "lab.nii.gz"]


def test_failed_save_keeps_old_file_and_removes_temporary(tmp_path, monkeypatch):
    image, _ = _volume()
    path = tmp_path / "img.nii.gz"
    save_case(Case(image, None, (1, 1, 1), "c", "ct"), path)
    before = path.read_bytes()

    def broken_save(img, filename):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_case(Case(image + 1, None, (1, 1, 1), "c", "ct"), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["img.nii.gz"]


def test_scl_slope_and_inter_are_applied(tmp_path):
    raw = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) - 100
    write_nifti(tmp_path / "ct.nii.gz", raw, np.eye(4), slope=2.0, inter=-1024.0)
    assert nib.load(tmp_path / "ct.nii.gz").get_data_dtype() == np.int16
    case = load_case(tmp_path / "ct.nii.gz")
    assert case.image.dtype == np.float32
    np.testing.assert_array_equal(case.image, raw.astype(np.float32) * 2.0 - 1024.0)


def test_kits_like_affine_brings_slices_to_last_axis(tmp_path):
    stored = np.zeros((6, 16, 12), np.int16)  # (slice, row, column) as KiTS19 stores it
    stored[1, 3, 5] = 900
    label = np.zeros_like(stored, dtype=np.uint8)
    label[1, 3, 5] = 1
    affine = kits_affine(3.0, 0.78)
    write_nifti(tmp_path / "imaging.nii.gz", stored, affine)
    write_nifti(tmp_path / "segmentation.nii.gz", label, affine)

    case = load_case(tmp_path / "imaging.nii.gz", tmp_path / "segmentation.nii.gz")
    assert case.shape == (12, 16, 6)
    np.testing.assert_allclose(case.spacing, (0.78, 0.78, 3.0), rtol=1e-6)
    assert np.all(np.diag(case.affine)[:3] > 0)  # RAS+
    hit = np.argwhere(case.image == 900)
    assert len(hit) == 1 and np.array_equal(hit, np.argwhere(case.label == 1))
    np.testing.assert_allclose(world(case.affine, hit[0]), world(affine, (1, 3, 5)))
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "imaging.nii.gz"))
    np.testing.assert_allclose(case.affine, canonical.affine)
    np.testing.assert_array_equal(case.image, canonical.get_fdata())


def test_lps_affine_is_flipped_to_ras(tmp_path):
    data = np.zeros(SHAPE, np.float32)
    data[2, 4, 1] = 7.0
    lps = np.diag([-0.9, -0.9, 2.5, 1.0])
    lps[:3, 3] = (100.0, 80.0, -30.0)
    write_nifti(tmp_path / "lps.nii.gz", data, lps)
    case = load_case(tmp_path / "lps.nii.gz")
    assert case.shape == SHAPE
    assert np.all(np.diag(case.affine)[:3] > 0)
    (hit,) = np.argwhere(case.image == 7.0)
    assert tuple(hit) == (SHAPE[0] - 1 - 2, SHAPE[1] - 1 - 4, 1)
    np.testing.assert_allclose(world(case.affine, hit), world(lps, (2, 4, 1)))


def test_2d_nifti_and_single_slice_volumes_load_as_2d(tmp_path):
    plane = np.arange(16 * 12, dtype=np.float32).reshape(16, 12)
    write_nifti(tmp_path / "flat.nii.gz", plane, np.diag([0.5, 0.6, 1.0, 1.0]))
    write_nifti(tmp_path / "thin.nii.gz", plane[..., None], np.diag([0.5, 0.6, 4.0, 1.0]))
    write_nifti(tmp_path / "four.nii.gz", plane[..., None, None], np.diag([0.5, 0.6, 4.0, 1.0]))
    for name in ("flat", "thin", "four"):
        case = load_case(tmp_path / f"{name}.nii.gz")
        assert case.shape == (16, 12), name
        np.testing.assert_array_equal(case.image, plane)
        np.testing.assert_allclose(case.spacing, (0.5, 0.6), rtol=1e-6)


def test_single_coronal_slice_keeps_world_positions(tmp_path):
    data = np.zeros((16, 1, 6), np.float32)  # one coronal plane: (X, 1, Z)
    data[3, 0, 4] = 1.0
    affine = np.diag([0.8, 2.0, 3.0, 1.0])
    write_nifti(tmp_path / "cor.nii.gz", data, affine)
    case = load_case(tmp_path / "cor.nii.gz")
    assert case.shape == (16, 6)
    assert case.spacing == pytest.approx((0.8, 3.0))
    (hit,) = np.argwhere(case.image == 1.0)
    np.testing.assert_allclose(world(case.affine, (*hit, 0)), world(affine, (3, 0, 4)))


def test_nifti_stem():
    assert nifti_stem("a/b/ct_1_image.nii.gz") == "ct_1_image"
    assert nifti_stem("x.nii") == "x"


# ------------------------------------------------------------------------------------------ errors


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.nii.gz"):
        load_case(tmp_path / "nothere.nii.gz")
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32))
    with pytest.raises(FileNotFoundError, match="lab.nii.gz"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.nii.gz").write_bytes(b"this is not a nifti file")
    with pytest.raises(ValueError, match="broken.nii.gz"):
        load_case(tmp_path / "broken.nii.gz")
    with pytest.raises(ValueError, match="folder"):
        load_case(tmp_path)


def test_shape_mismatch(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32))
    write_nifti(tmp_path / "lab.nii.gz", np.zeros((16, 12, 5), np.uint8))
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*shape"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")


def test_affine_mismatch(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    write_nifti(tmp_path / "lab.nii.gz", np.zeros(SHAPE, np.uint8), np.diag([1.0, 1.0, 2.5, 1.0]))
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*affine"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")


def test_same_grid_stored_in_other_order_is_accepted(tmp_path):
    image, label = _volume()
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    lps = ras.copy()
    lps[:2, :2] *= -1
    lps[:2, 3] = (SHAPE[0] - 1, SHAPE[1] - 1)  # the same voxel grid, stored flipped in x and y
    write_nifti(tmp_path / "img.nii.gz", image, ras)
    write_nifti(tmp_path / "lab.nii.gz", label[::-1, ::-1], lps)
    case = load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
    np.testing.assert_array_equal(case.label, label)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(tmp_path, bad):
    data = np.zeros(SHAPE, np.float32)
    data[0, 0, 0] = bad
    write_nifti(tmp_path / "nan.nii.gz", data)
    with pytest.raises(ValueError, match=r"nan\.nii\.gz.*NaN"):
        load_case(tmp_path / "nan.nii.gz")


def test_non_integer_label(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32))
    label = np.zeros(SHAPE, np.float32)
    label[1, 1, 1] = 0.5
    write_nifti(tmp_path / "soft.nii.gz", label)
    with pytest.raises(ValueError, match=r"soft\.nii\.gz.*non-integer"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "soft.nii.gz")


def test_integer_valued_float_label_is_accepted(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32))
    label = np.zeros(SHAPE, np.float32)
    label[1, 1, 1] = 2.0
    write_nifti(tmp_path / "lab.nii.gz", label)
    case = load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
    assert case.label.dtype == np.uint8 and case.label[1, 1, 1] == 2 and case.label.sum() == 2


def test_label_codes_need_a_map(tmp_path):
    write_nifti(tmp_path / "img.nii.gz", np.zeros(SHAPE, np.float32))
    label = np.zeros(SHAPE, np.int16)
    label[0, 0, 0] = 820
    label[1, 0, 0] = 205
    write_nifti(tmp_path / "lab.nii.gz", label)
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*0\.\.255"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
    case = load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", label_map={0: 0, 205: 1, 820: 4})
    assert case.label[0, 0, 0] == 4 and case.label[1, 0, 0] == 1 and case.label.sum() == 5
    with pytest.raises(ValueError, match=r"lab\.nii\.gz.*unexpected label values \[820\]"):
        load_case(tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz", label_map={0: 0, 205: 1})


def test_save_rejects_bad_paths_and_missing_label(tmp_path):
    case = Case(np.zeros(SHAPE), None, (1, 1, 1), "c", "ct")
    with pytest.raises(ValueError, match=r"img\.png"):
        save_case(case, tmp_path / "img.png")
    with pytest.raises(ValueError, match="no label"):
        save_case(case, tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz")
