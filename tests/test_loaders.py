from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fixtures import kits_affine, world, write_nifti

from data_utils.loaders import load_chaos, load_kits19, load_mmwhs, load_nifti_folder

# ------------------------------------------------------------------------------------------ MMWHS

MMWHS_CODES = (0, 205, 420, 500, 550, 600, 820, 850)
MMWHS_CLASSES = {0: 0, 205: 1, 420: 2, 500: 3, 550: 0, 600: 0, 820: 4, 850: 0}
# MMWHS headers are often not RAS: this one flips x and y (LPS-like).
MMWHS_AFFINE = np.array([[-0.9, 0, 0, 60.0], [0, -0.9, 0, 40.0], [0, 0, 1.6, -80.0], [0, 0, 0, 1]])


def _mmwhs_label(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(MMWHS_CODES, dtype=np.int16)[rng.integers(0, len(MMWHS_CODES), (16, 12, 6))]


def _write_mmwhs(root: Path, prefix: str, numbers) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    written = {}
    for n in numbers:
        label = _mmwhs_label(n)
        image = (label * 2 + n).astype(np.int16)
        write_nifti(root / prefix / f"{prefix}_{n}_image.nii.gz", image, MMWHS_AFFINE)
        write_nifti(root / prefix / f"{prefix}_{n}_label.nii.gz", label, MMWHS_AFFINE)
        written[n] = (image, label)
    return written


def test_mmwhs_ct_maps_codes_and_sorts_by_number(tmp_path):
    written = _write_mmwhs(tmp_path, "ct_train", [1010, 1002, 1001])
    cases = load_mmwhs(tmp_path, "ct")
    assert [c.case_id for c in cases] == ["ct_train_1001", "ct_train_1002", "ct_train_1010"]
    for case in cases:
        image, codes = written[int(case.case_id[-4:])]
        assert (case.modality, case.task, case.shape) == ("ct", "heart", (16, 12, 6))
        assert case.label.dtype == np.uint8
        # The header flips x and y, so the canonical arrays are the stored ones flipped back.
        np.testing.assert_array_equal(case.image, image[::-1, ::-1].astype(np.float32))
        expected = np.vectorize(MMWHS_CLASSES.get)(codes[::-1, ::-1])
        np.testing.assert_array_equal(case.label, expected)
        assert set(np.unique(case.label)) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("modality", ["mri", "mr", "MRI"])
def test_mmwhs_mri_accepts_both_names_and_subfolder_root(tmp_path, modality):
    _write_mmwhs(tmp_path, "mr_train", [1001])
    _write_mmwhs(tmp_path, "ct_train", [1001, 1002])
    for root in (tmp_path, tmp_path / "mr_train"):
        cases = load_mmwhs(root, modality)
        assert [c.case_id for c in cases] == ["mr_train_1001"]
        assert cases[0].modality == "mri"


def test_mmwhs_custom_label_map(tmp_path):
    _, codes = _write_mmwhs(tmp_path, "ct_train", [1001])[1001]
    everything = {code: i for i, code in enumerate(MMWHS_CODES)}
    (case,) = load_mmwhs(tmp_path, "ct", label_map=everything)
    assert case.label.max() == 7
    np.testing.assert_array_equal(case.label == 6, codes[::-1, ::-1] == 820)


def test_mmwhs_unknown_code_names_the_file(tmp_path):
    _write_mmwhs(tmp_path, "ct_train", [1001, 1002])
    label = _mmwhs_label(1002)
    label[0, 0, 0] = 421
    write_nifti(tmp_path / "ct_train" / "ct_train_1002_label.nii.gz", label, MMWHS_AFFINE)
    with pytest.raises(ValueError, match=r"ct_train_1002_label\.nii\.gz.*\[421\]"):
        load_mmwhs(tmp_path, "ct")


def test_mmwhs_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_mmwhs(tmp_path / "missing", "ct")
    (tmp_path / "ct_train").mkdir()
    with pytest.raises(ValueError, match="no MMWHS images"):
        load_mmwhs(tmp_path, "ct")
    with pytest.raises(ValueError, match="modality"):
        load_mmwhs(tmp_path, "pet")
    _write_mmwhs(tmp_path, "ct_train", [1001])
    (tmp_path / "ct_train" / "ct_train_1001_label.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="ct_train_1001_label"):
        load_mmwhs(tmp_path, "ct")


# ------------------------------------------------------------------------------------------ KiTS19

KITS_STORED = (6, 16, 12)  # (slice, row, column)


def _write_kits(root: Path, number: int, *, labelled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(number)
    image = rng.integers(-1000, 1000, KITS_STORED).astype(np.int16)
    seg = np.zeros(KITS_STORED, np.uint8)
    seg[2:4, 5:9, 3:6] = 1
    seg[3, 6:8, 4] = 2  # tumour inside the kidney
    folder = root / f"case_{number:05d}"
    write_nifti(folder / "imaging.nii.gz", image, kits_affine())
    if labelled:
        write_nifti(folder / "segmentation.nii.gz", seg, kits_affine())
    return image, seg


def test_kits19_slices_last_and_tumour_is_kidney(tmp_path):
    image, seg = _write_kits(tmp_path, 0)
    _write_kits(tmp_path, 1)
    _write_kits(tmp_path, 210, labelled=False)
    cases = load_kits19(tmp_path)
    assert [c.case_id for c in cases] == ["case_00000", "case_00001", "case_00210"]
    case = cases[0]
    assert (case.modality, case.task) == ("ct", "kidney")
    assert case.shape == (KITS_STORED[2], KITS_STORED[1], KITS_STORED[0])
    np.testing.assert_allclose(case.spacing, (0.78, 0.78, 3.0), rtol=1e-6)
    assert set(np.unique(case.label)) == {0, 1}
    assert case.label.sum() == np.count_nonzero(seg)
    # Every voxel keeps its world position: compare each stored voxel with its canonical counterpart.
    for stored_index in [(0, 0, 0), (3, 6, 4), (5, 15, 11), (2, 9, 1)]:
        point = world(kits_affine(), stored_index)
        canonical = np.linalg.solve(case.affine, np.r_[point, 1.0])[:3]
        ijk = tuple(int(v) for v in np.round(canonical))
        np.testing.assert_allclose(canonical, ijk, atol=1e-6)
        assert case.image[ijk] == image[stored_index]
        assert case.label[ijk] == (seg[stored_index] > 0)
    assert cases[2].label is None


def test_kits19_case_ids_and_data_subfolder(tmp_path):
    for n in (0, 3, 7):
        _write_kits(tmp_path / "data", n)
    cases = load_kits19(tmp_path, case_ids=[7, "case_00003", "0"])
    assert [c.case_id for c in cases] == ["case_00007", "case_00003", "case_00000"]
    with pytest.raises(FileNotFoundError, match="case_00004"):
        load_kits19(tmp_path / "data", case_ids=[4])


def test_kits19_errors(tmp_path):
    with pytest.raises(ValueError, match="no KiTS19"):
        load_kits19(tmp_path)
    _write_kits(tmp_path, 0)
    seg = np.zeros(KITS_STORED, np.uint8)
    seg[0, 0, 0] = 3
    write_nifti(tmp_path / "case_00000" / "segmentation.nii.gz", seg, kits_affine())
    with pytest.raises(ValueError, match=r"case_00000.segmentation\.nii\.gz.*\[3\]"):
        load_kits19(tmp_path)
    (tmp_path / "case_00000" / "imaging.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="imaging.nii.gz"):
        load_kits19(tmp_path)


# ------------------------------------------------------------------------------------------ folders


def test_nifti_folder_default_pairing(tmp_path):
    label = np.zeros((16, 12, 6), np.uint8)
    label[2, 3, 4] = 1
    write_nifti(tmp_path / "b_image.nii.gz", np.ones((16, 12, 6), np.float32))
    write_nifti(tmp_path / "b_label.nii.gz", label)
    write_nifti(tmp_path / "a_image.nii", np.zeros((16, 12, 6), np.float32))  # no label: unlabelled
    cases = load_nifti_folder(tmp_path, modality="mri")
    assert [c.case_id for c in cases] == ["a", "b"]
    assert cases[0].label is None
    np.testing.assert_array_equal(cases[1].label, label)
    assert cases[1].modality == "mri"


def test_nifti_folder_string_and_callable_patterns(tmp_path):
    label = np.zeros((16, 12), np.uint8)
    label[1, 2] = 2
    write_nifti(tmp_path / "scans" / "p1.nii.gz", np.ones((16, 12), np.float32))
    write_nifti(tmp_path / "masks" / "p1_seg.nii.gz", label)
    (case,) = load_nifti_folder(tmp_path / "scans", "*.nii.gz", "../masks/{stem}_seg.nii.gz")
    assert case.case_id == "p1" and case.shape == (16, 12)
    np.testing.assert_array_equal(case.label, label)

    (case,) = load_nifti_folder(tmp_path, "scans/*.nii.gz", lambda p: tmp_path / "masks" / "p1_seg.nii.gz")
    assert case.case_id == "scans/p1"
    np.testing.assert_array_equal(case.label, label)
    (case,) = load_nifti_folder(tmp_path, "scans/*.nii.gz", lambda p: None)
    assert case.label is None


def test_nifti_folder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"no files matching.*\*_image"):
        load_nifti_folder(tmp_path)
    write_nifti(tmp_path / "x_image.nii.gz", np.ones((4, 4, 2), np.float32))
    with pytest.raises(FileNotFoundError, match="x_image_mask.nii.gz"):
        load_nifti_folder(tmp_path, label_pattern="{stem}_mask.nii.gz")
    with pytest.raises(FileNotFoundError):
        load_nifti_folder(tmp_path / "nope")


# ------------------------------------------------------------------------------------------ CHAOS

ROWS, COLS = 16, 12
ROW_MM, COL_MM = 1.5, 1.2  # PixelSpacing = [between rows, between columns]
ORIGIN = (-10.0, -20.0)  # LPS x, y of the first pixel
TOP_Z, STEP_Z = 30.0, 6.0  # instance k lies at z = TOP_Z - (k - 1) * STEP_Z (head to foot)
PHASE_BASE = {"InPhase": 0, "OutPhase": 5000, "T2SPIR": 10000}


def _pixels(base: int, instance: int) -> np.ndarray:
    return (base + 1000 * instance + np.arange(ROWS * COLS).reshape(ROWS, COLS)).astype(np.uint16)


def _mask(instance: int) -> np.ndarray:
    grey = np.zeros((ROWS, COLS), np.uint8)
    grey[1 + instance : 4 + instance, 1:4] = 126  # right kidney
    grey[2 + instance, 2] = 118  # still right kidney (110-135)
    grey[1 + instance : 4 + instance, 7:10] = 189  # left kidney
    grey[10:12, 0:6] = 63  # liver
    grey[12:15, 8:11] = 252  # spleen
    return grey


def _kidneys(grey: np.ndarray) -> np.ndarray:
    return (((grey >= 110) & (grey <= 135)) | ((grey >= 175) & (grey <= 200))).astype(np.uint8)


def _write_dicom(path: Path, pixels: np.ndarray, instance: int) -> None:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], TOP_Z - (instance - 1) * STEP_Z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [ROW_MM, COL_MM]
    ds.SliceThickness = STEP_Z
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def _write_png(path: Path, grey: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grey).save(path)


def _write_chaos_patient(mr: Path, patient: int, *, masks: bool = True) -> None:
    base = mr / str(patient)
    for instance in (1, 2, 3):
        # In-phase files carry even numbers, opposed-phase odd ones; the T1 masks share the in-phase names.
        in_name, out_name = f"IMG-0004-{2 * instance:05d}", f"IMG-0004-{2 * instance - 1:05d}"
        _write_dicom(base / "T1DUAL/DICOM_anon/InPhase" / f"{in_name}.dcm", _pixels(0, instance), instance)
        _write_dicom(
            base / "T1DUAL/DICOM_anon/OutPhase" / f"{out_name}.dcm", _pixels(5000, instance), instance
        )
        t2_name = f"IMG-0002-{instance:05d}"
        _write_dicom(base / "T2SPIR/DICOM_anon" / f"{t2_name}.dcm", _pixels(10000, instance), instance)
        if masks:
            _write_png(base / "T1DUAL/Ground" / f"{in_name}.png", _mask(instance))
            _write_png(base / "T2SPIR/Ground" / f"{t2_name}.png", _mask(instance))


def _expected_at(case, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and label expected at every voxel of ``case``, found through the affine (RAS -> LPS)."""
    ijk = np.indices(case.shape).reshape(3, -1)
    ras = case.affine[:3, :3] @ ijk + case.affine[:3, 3:4]
    col = np.round((-ras[0] - ORIGIN[0]) / COL_MM).astype(int)
    row = np.round((-ras[1] - ORIGIN[1]) / ROW_MM).astype(int)
    instance = np.round((TOP_Z - ras[2]) / STEP_Z).astype(int) + 1
    image = np.array([_pixels(base, k)[r, c] for r, c, k in zip(row, col, instance)], np.float32)
    label = np.array([_kidneys(_mask(k))[r, c] for r, c, k in zip(row, col, instance)], np.uint8)
    return image.reshape(case.shape), label.reshape(case.shape)


@pytest.mark.parametrize("sequence, base", [("T1DUAL_in", 0), ("T1DUAL_out", 5000), ("T2SPIR", 10000)])
def test_chaos_geometry_pixels_and_kidney_masks(tmp_path, sequence, base):
    _write_chaos_patient(tmp_path / "MR", 2)
    _write_chaos_patient(tmp_path / "MR", 10, masks=False)
    cases = load_chaos(tmp_path, sequence=sequence)
    assert [c.case_id for c in cases] == [f"chaos_2_{sequence.lower()}", f"chaos_10_{sequence.lower()}"]
    case = cases[0]
    assert case.shape == (COLS, ROWS, 3)
    assert case.modality == ("mri_t2" if sequence == "T2SPIR" else "mri")
    assert case.task == "kidney"
    np.testing.assert_allclose(case.spacing, (COL_MM, ROW_MM, STEP_Z))
    assert np.all(np.diag(case.affine)[:3] > 0)  # canonical RAS+
    image, label = _expected_at(case, base)
    np.testing.assert_array_equal(case.image, image)
    np.testing.assert_array_equal(case.label, label)
    assert case.label.sum() > 0
    assert cases[1].label is None


def test_chaos_mask_errors_name_the_file(tmp_path):
    _write_chaos_patient(tmp_path / "MR", 1)
    ground = tmp_path / "MR/1/T2SPIR/Ground"
    bad = _mask(2)
    bad[0, 0] = 90  # between the liver and right-kidney ranges
    _write_png(ground / "IMG-0002-00002.png", bad)
    with pytest.raises(ValueError, match=r"IMG-0002-00002\.png.*\[90\]"):
        load_chaos(tmp_path / "MR", sequence="T2SPIR")
    (ground / "IMG-0002-00002.png").unlink()
    with pytest.raises(ValueError, match="2 PNG masks for 3 DICOM slices"):
        load_chaos(tmp_path, sequence="T2SPIR")


def test_chaos_errors(tmp_path):
    with pytest.raises(ValueError, match="sequence"):
        load_chaos(tmp_path, sequence="T1")
    (tmp_path / "MR").mkdir()
    with pytest.raises(ValueError, match="no CHAOS patient"):
        load_chaos(tmp_path)


def test_chaos_missing_slice_is_reported(tmp_path):
    _write_chaos_patient(tmp_path / "MR", 1)
    series = tmp_path / "MR/1/T2SPIR"
    _write_dicom(series / "DICOM_anon/IMG-0002-00004.dcm", _pixels(10000, 4), 4)
    _write_png(series / "Ground/IMG-0002-00004.png", _mask(0))
    assert load_chaos(tmp_path, sequence="T2SPIR")[0].shape == (COLS, ROWS, 4)
    (series / "DICOM_anon/IMG-0002-00002.dcm").unlink()
    (tmp_path / "MR/1/T2SPIR/Ground/IMG-0002-00002.png").unlink()
    with pytest.raises(ValueError, match="uneven slice gaps"):
        load_chaos(tmp_path, sequence="T2SPIR")
