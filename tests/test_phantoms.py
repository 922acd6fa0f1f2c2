"""Tests for the synthetic phantoms (data_utils.phantoms) and their imaging physics (data_utils.tissues)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from data_utils.case import Case
from data_utils.phantoms import (
    CLASS_NAMES,
    DEFAULT_SHAPES,
    FIELD_OF_VIEW_MM,
    MODALITIES,
    TASKS,
    axial_slice,
    make_dataset,
    make_phantom,
    make_tissue_map,
    num_classes,
)
from data_utils.tissues import bias_field, render_ct, render_mri

SMALL_3D = (48, 48, 24)  # quick volumes for the 3D checks


def _mask(task: str, name: str, *, dims: int = 2, shape=None, seed: int = 0) -> np.ndarray:
    ids, names = make_tissue_map(task, dims=dims, shape=shape, seed=seed)
    return ids == names.index(name)


def _body(task: str, *, dims: int = 2, shape=None, seed: int = 0) -> np.ndarray:
    ids, names = make_tissue_map(task, dims=dims, shape=shape, seed=seed)
    return (ids != names.index("outside")) & (ids != names.index("table"))


def _seeds_with(task: str, n: int) -> list[int]:
    """The first ``n`` subject seeds whose 2D slice (a random slice of the volume) holds every label."""
    seeds, seed = [], 0
    while len(seeds) < n:
        label = make_phantom(task, "ct", dims=2, seed=seed).label
        seeds += [seed] if set(np.unique(label)) == set(range(num_classes(task))) else []
        seed += 1
    return seeds


def _zscore_in(image: np.ndarray, region: np.ndarray) -> np.ndarray:
    return (image - image[region].mean()) / image[region].std()


# ------------------------------------------------------------------------------------------ shapes, metadata
@pytest.mark.parametrize("task", TASKS)
def test_2d_defaults(task):
    case = make_phantom(task, "ct", dims=2)
    assert isinstance(case, Case)
    assert case.image.shape == case.label.shape == (96, 96) == DEFAULT_SHAPES[3][:2]
    assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
    assert case.spacing == pytest.approx((320 / 96, 320 / 96))  # the volumes' in-plane grid
    assert np.allclose(np.diag(case.affine), (320 / 96, 320 / 96, 1.0, 1.0))
    assert (case.case_id, case.modality, case.task) == (f"{task}_ct_s0000", "ct", task)


def test_3d_defaults_and_spacing():
    case = make_phantom("kidney", "mri", seed=7)
    assert case.image.shape == (96, 96, 48) and case.ndim == 3
    assert case.spacing == pytest.approx((320 / 96, 320 / 96, 4.0))
    assert np.allclose(case.affine, np.diag([*case.spacing, 1.0]))
    assert case.case_id == "kidney_mri_s0007"


def test_custom_shape_keeps_the_field_of_view():
    case = make_phantom("heart", "ct", dims=2, shape=(64, 80), seed=_seeds_with("heart", 1)[0])
    assert case.image.shape == (64, 80)
    assert case.spacing == pytest.approx((FIELD_OF_VIEW_MM[0] / 64, FIELD_OF_VIEW_MM[1] / 80))
    assert set(np.unique(case.label)) >= {1, 2, 3, 4}


def test_constants():
    assert TASKS == ("kidney", "heart")
    assert MODALITIES == ("ct", "mri", "mri_t2", "ct_noncontrast")
    assert CLASS_NAMES["heart"] == ["background", "MYO", "LAC", "LVC", "AA"]
    assert (num_classes("kidney"), num_classes("heart")) == (2, 5)


# ------------------------------------------------------------------------------ one anatomy for 2D and 3D
@pytest.mark.parametrize("task", TASKS)
def test_a_2d_case_is_a_slice_of_the_subjects_volume(task):
    for seed in range(3):
        k = axial_slice(task, seed)
        volume = make_phantom(task, "mri", dims=3, seed=seed)
        case = make_phantom(task, "mri", dims=2, seed=seed)
        assert case.spacing == pytest.approx(volume.spacing[:2])
        np.testing.assert_array_equal(case.label, volume.label[..., k])
        ids2, _ = make_tissue_map(task, dims=2, seed=seed)
        ids3, _ = make_tissue_map(task, dims=3, seed=seed)
        assert np.mean(ids2 == ids3[..., k]) > 0.9  # only noise-drawn details (vessels, gas, bowel) differ


@pytest.mark.parametrize("task", TASKS)
def test_2d_cases_lack_the_organ_as_often_as_volume_slices(task):
    slices = [axial_slice(task, seed) for seed in range(400)]
    assert min(slices) == 0 and max(slices) == DEFAULT_SHAPES[3][2] - 1
    assert abs(np.mean(slices) - (DEFAULT_SHAPES[3][2] - 1) / 2) < 2.5  # uniform over the volume's slices
    empty_2d = np.mean([not c.label.any() for c in make_dataset(task, "ct", n=40, dims=2, seed=0)])
    volumes = make_dataset(task, "ct", n=4, dims=3, seed=0)
    empty_3d = np.mean([1 - c.label.any(axis=(0, 1)).mean() for c in volumes])
    assert 0.1 < empty_3d < 0.6 and 0.05 < empty_2d < 0.7
    assert abs(empty_2d - empty_3d) < 0.25  # 40 draws against 4 volumes: a loose bound


# ----------------------------------------------------------------------------------------- seeds, pairing
@pytest.mark.parametrize("dims, shape", [(2, None), (3, SMALL_3D)])
def test_same_seed_is_bit_identical(dims, shape):
    a = make_phantom("heart", "mri", dims=dims, shape=shape, seed=3)
    b = make_phantom("heart", "mri", dims=dims, shape=shape, seed=3)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)


@pytest.mark.parametrize("task", TASKS)
def test_different_seeds_give_different_subjects(task):
    a, b = (make_phantom(task, "ct", dims=2, seed=s) for s in _seeds_with(task, 2))
    assert not np.array_equal(a.label, b.label)
    assert not np.allclose(a.image, b.image)


@pytest.mark.parametrize("task", TASKS)
def test_one_subject_has_one_label_map_in_every_modality(task):
    cases = [make_phantom(task, m, dims=2, seed=5) for m in MODALITIES]
    for other in cases[1:]:
        assert np.array_equal(other.label, cases[0].label)
    # ... while inside the body the intensities are far from rescaled copies of each other
    body = _body(task, seed=5)
    assert abs(np.corrcoef(cases[0].image[body], cases[1].image[body])[0, 1]) < 0.7


def test_datasets_are_unpaired_and_splits_disjoint():
    ct0 = make_dataset("kidney", "ct", n=4, dims=2, seed=0)
    mri0 = make_dataset("kidney", "mri", n=4, dims=2, seed=0)
    ct1 = make_dataset("kidney", "ct", n=4, dims=2, seed=1)
    ids = [c.case_id for c in ct0 + mri0 + ct1]
    assert len(set(ids)) == 12
    for other in mri0 + ct1:
        assert not any(other.label.any() and np.array_equal(other.label, c.label) for c in ct0)
    assert [c.case_id for c in make_dataset("kidney", "ct", n=4, dims=2, seed=0)] == [c.case_id for c in ct0]
    # a case_id names the subject seed that reproduces it
    again = make_phantom("kidney", "mri", dims=2, seed=int(mri0[2].case_id.rsplit("_s", 1)[1]))
    assert np.array_equal(again.image, mri0[2].image)
    assert make_dataset("heart", "ct", n=0, dims=2) == []


# ----------------------------------------------------------------------------------------------- anatomy
def test_label_classes():
    for seed in range(3):
        kidney = make_phantom("kidney", "ct", dims=3, shape=SMALL_3D, seed=seed).label
        assert set(np.unique(kidney)) == {0, 1}
    for seed in range(12):
        assert set(np.unique(make_phantom("kidney", "ct", dims=2, seed=seed).label)) <= {0, 1}
    complete = 0
    for seed in range(6):
        heart = make_phantom("heart", "ct", dims=3, shape=SMALL_3D, seed=seed).label
        assert set(np.unique(heart)) <= {0, 1, 2, 3, 4}
        complete += set(np.unique(heart)) == {0, 1, 2, 3, 4}
    assert complete >= 5


def test_two_kidneys_left_and_right():
    for seed in range(6):
        kidney = make_phantom("kidney", "mri", dims=3, shape=SMALL_3D, seed=seed).label == 1
        parts, n = ndimage.label(kidney)
        sizes = ndimage.sum(kidney, parts, range(1, n + 1))
        big = np.argsort(sizes)[::-1][:2] + 1
        assert sizes[big - 1].sum() >= 0.95 * kidney.sum()
        x = sorted(ndimage.center_of_mass(kidney, parts, big[i])[0] for i in range(2))
        assert x[0] < SMALL_3D[0] / 2 < x[1]  # one on each side of the midline


@pytest.mark.parametrize("dims, shape, least", [(2, None, 0.25), (3, SMALL_3D, 0.4)])
def test_myocardium_surrounds_the_lv_cavity(dims, shape, least):
    shares = []
    for seed in (_seeds_with("heart", 6) if dims == 2 else range(6)):
        label = make_phantom("heart", "mri", dims=dims, shape=shape, seed=seed).label
        cavity = label == 3
        ring = ndimage.binary_dilation(cavity, iterations=1) & ~cavity
        shares.append(np.mean(label[ring] == 1))
    assert min(shares) > least and np.median(shares) > 0.6  # open only towards the atrium and aorta


# ----------------------------------------------------------------------------------------------- physics
def test_kidney_liver_contrast_flips_between_ct_and_t1():
    ct, t1 = [], []
    for seed in _seeds_with("kidney", 10):
        liver = _mask("kidney", "liver", seed=seed)
        if liver.sum() < 30:
            continue
        body = _body("kidney", seed=seed)
        for modality, out in (("ct", ct), ("mri", t1)):
            case = make_phantom("kidney", modality, dims=2, seed=seed)
            z = _zscore_in(case.image, body)
            out.append(z[case.label == 1].mean() - z[liver].mean())
    assert len(ct) >= 6
    assert min(ct) > 0  # enhancing cortex brighter than liver in contrast CT
    assert np.mean(t1) < 0 and np.mean(np.array(t1) < 0) >= 0.75  # slightly darker in T1


@pytest.mark.parametrize("task", TASKS)
def test_fat_and_bone_invert_between_ct_and_mri(task):
    fat, muscle, bone = (_mask(task, n, seed=2) for n in ("subcutaneous_fat", "muscle", "bone"))
    ct, mri = (make_phantom(task, m, dims=2, seed=2).image for m in ("ct", "mri"))
    assert ct[fat].mean() < ct[muscle].mean() < ct[bone].mean()
    assert mri[fat].mean() > mri[muscle].mean() > mri[bone].mean()


def test_blood_and_myocardium_in_bssfp_and_cta():
    seed = _seeds_with("heart", 1)[0]
    label = make_phantom("heart", "ct", dims=2, seed=seed).label
    for modality, blood_over_muscle in (("ct", 2.0), ("mri", 1.5)):
        image = make_phantom("heart", modality, dims=2, seed=seed).image
        blood = [image[label == k].mean() for k in (2, 3, 4)]  # LA, LV cavity, aorta
        assert min(blood) > blood_over_muscle * image[label == 1].mean()  # bright blood, darker myocardium
        assert max(blood) / min(blood) < 1.4  # chambers and aorta look alike: shape must tell them apart


def test_ct_in_hounsfield_units():
    image = make_phantom("kidney", "ct_noncontrast", dims=2, seed=1).image
    outside = _mask("kidney", "outside", seed=1)
    assert abs(np.median(image[outside]) + 1000) < 30


@pytest.mark.parametrize("modality", ["mri", "mri_t2"])
def test_mri_is_non_negative_with_a_rician_background(modality):
    image = make_phantom("heart", modality, dims=2, seed=6).image
    assert image.min() >= 0
    outside = ndimage.binary_erosion(_mask("heart", "outside", seed=6), iterations=4)
    noise = image[outside]
    assert noise.mean() > 0
    assert 1.6 < noise.mean() / noise.std() < 2.3  # Rayleigh: mean / std = 1.91


def test_bias_field_is_smooth_and_multiplicative():
    rng = np.random.default_rng(0)
    field = bias_field((64, 64, 16), (5.0, 5.0, 12.0), rng, strength=0.25)
    assert 0.7 < field.min() and field.max() < 1.35 and field.max() / field.min() > 1.2
    assert np.abs(np.diff(field, 2, axis=0)).max() < 0.01  # no structure at the voxel scale
    uniform = np.ones((64, 64), np.uint8)
    flat = render_mri(uniform, tissues=["air", "fat"], spacing=(5.0, 5.0), rng=np.random.default_rng(1),
                      noise=0.0, bias=0.0)
    biased = render_mri(uniform, tissues=["air", "fat"], spacing=(5.0, 5.0), rng=np.random.default_rng(1),
                        noise=0.0, bias=0.25)
    assert np.ptp(flat) < 1e-3 * flat.mean()
    ratio = biased / flat
    assert ratio.max() / ratio.min() > 1.2 and np.abs(np.diff(ratio, 2, axis=1)).max() < 0.01


def test_mri_bias_differs_between_the_kidneys_but_ct_does_not():
    spread = {"ct": [], "mri": []}
    for seed in range(6):  # whole kidneys: a slice cuts the two through different parts
        label = make_phantom("kidney", "ct", dims=3, shape=SMALL_3D, seed=seed).label
        side = np.arange(label.shape[0])[:, None, None] < label.shape[0] // 2
        for modality, values in spread.items():
            image = make_phantom("kidney", modality, dims=3, shape=SMALL_3D, seed=seed).image
            left, right = image[(label == 1) & side].mean(), image[(label == 1) & ~side].mean()
            values.append(abs(left - right) / abs(left + right) * 2)
    assert np.median(spread["mri"]) > 2 * np.median(spread["ct"])


def test_renderers_reject_unknown_names():
    m = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="sequence"):
        render_mri(m, tissues=["fat"], spacing=(1, 1), rng=np.random.default_rng(), sequence="flair")
    with pytest.raises(ValueError, match="tissue"):
        render_ct(m, tissues=["unobtainium"], spacing=(1, 1), rng=np.random.default_rng())


# ------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"task": "liver"}, "task"),
        ({"modality": "pet"}, "modality"),
        ({"dims": 4}, "dims"),
        ({"dims": True}, "dims"),
        ({"shape": (10, 10)}, "shape"),
        ({"shape": (64, 64, 32)}, "shape"),
        ({"shape": (64.5, 64)}, "shape"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_arguments(kwargs, word):
    args = {"task": "kidney", "modality": "ct", "dims": 2, "shape": None, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=word):
        make_phantom(args.pop("task"), args.pop("modality"), **args)


def test_bad_dataset_and_helper_arguments():
    with pytest.raises(ValueError, match="n must"):
        make_dataset("kidney", "ct", n=-1)
    with pytest.raises(ValueError, match="modality"):
        make_dataset("kidney", "xray", n=1)
    with pytest.raises(ValueError, match="task"):
        make_tissue_map("brain", dims=2)
    with pytest.raises(ValueError, match="task"):
        num_classes("brain")


@pytest.mark.parametrize("task", TASKS)
def test_the_organs_plane_keeps_every_organ_in_every_slice(task):
    cases = make_dataset(task, "ct", n=6, dims=2, seed=0, shape=(64, 64), plane="organs")
    assert all(set(np.unique(c.label)) == set(range(num_classes(task))) for c in cases)
    # the same subjects as the default slices, cut at another plane
    default = make_dataset(task, "ct", n=6, dims=2, seed=0, shape=(64, 64))
    assert [c.case_id for c in cases] == [c.case_id for c in default]
    with pytest.raises(ValueError, match="plane"):
        make_phantom(task, "ct", dims=2, plane="coronal")
