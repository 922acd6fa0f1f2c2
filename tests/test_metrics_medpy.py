"""lmisa_lite.metrics against medpy.metric.binary (dc, asd, assd, hd95) on random 3D shapes with anisotropic voxels.

Where the definitions differ (ASSD's averaging, empty masks, multi-label maps, connectivity) the tests state the
difference explicitly, as the module docstring of :mod:`lmisa_lite.metrics` documents it.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage

from lmisa_lite.metrics import assd, dice, evaluate_case, hd95

medpy_binary = pytest.importorskip("medpy.metric.binary")

SPACINGS = [(0.8, 1.2, 3.0), (1.0, 1.0, 1.0), None]
SEEDS = [0, 1, 2, 3]
SHAPE = (26, 22, 12)


def blob(rng: np.random.Generator, shape=SHAPE, *, sigma: float = 2.0, fraction: float = 0.35) -> np.ndarray:
    """Smoothed random noise thresholded to keep ``fraction`` of the voxels: blobby, several parts, holes."""
    noise = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return noise > np.quantile(noise, 1 - fraction)


def pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A reference and a prediction that overlaps it partly: the reference plus independent noise, smoothed."""
    rng = np.random.default_rng(seed)
    target = blob(rng)
    noise = ndimage.gaussian_filter(rng.normal(size=SHAPE), 2.0)
    pred = ndimage.gaussian_filter(target.astype(float), 1.0) + 0.6 * noise / noise.std() > 0.5
    return pred, target


def ours(metric, pred, target, **kwargs) -> float:
    return metric(pred.astype(np.uint8), target.astype(np.uint8), labels=[1], **kwargs)[1]


def surface_size(mask: np.ndarray) -> int:
    """Voxels of medpy's surface (the mask minus its face-connected erosion)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return int(np.count_nonzero(mask & ~ndimage.binary_erosion(mask, structure=structure)))


@pytest.mark.parametrize("seed", SEEDS)
def test_random_pairs_are_not_trivial(seed):
    pred, target = pair(seed)
    score = ours(dice, pred, target)
    assert 0.3 < score < 0.95, "partial overlap, so the comparisons below test something"
    assert surface_size(pred) != surface_size(target)


@pytest.mark.parametrize("seed", SEEDS)
def test_dice_equals_medpy_dc(seed):
    pred, target = pair(seed)
    assert ours(dice, pred, target) == pytest.approx(medpy_binary.dc(pred, target), rel=1e-12)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_hd95_equals_medpy(seed, spacing):
    pred, target = pair(seed)
    expected = medpy_binary.hd95(pred, target, voxelspacing=spacing)
    assert ours(hd95, pred, target, spacing=spacing) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_assd_is_the_mean_of_medpys_two_directed_asd(seed, spacing):
    """Our ASSD averages the two directed mean distances, each exactly medpy's ``asd``."""
    pred, target = pair(seed)
    forward = medpy_binary.asd(pred, target, voxelspacing=spacing)
    backward = medpy_binary.asd(target, pred, voxelspacing=spacing)
    assert ours(assd, pred, target, spacing=spacing) == pytest.approx(0.5 * (forward + backward), rel=1e-12)


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("seed", SEEDS)
def test_medpy_assd_pools_all_surface_voxels_instead(seed, spacing):
    """medpy >= 0.5 takes the mean over the surface voxels of both masks: the directed means weighted by the
    surface sizes. It equals ours only when both surfaces have as many voxels; these pairs do not."""
    pred, target = pair(seed)
    forward = medpy_binary.asd(pred, target, voxelspacing=spacing)
    backward = medpy_binary.asd(target, pred, voxelspacing=spacing)
    n_pred, n_target = surface_size(pred), surface_size(target)
    pooled = (n_pred * forward + n_target * backward) / (n_pred + n_target)
    medpy_assd = medpy_binary.assd(pred, target, voxelspacing=spacing)
    mean_of_means = ours(assd, pred, target, spacing=spacing)
    assert medpy_assd == pytest.approx(pooled, rel=1e-12) or medpy_assd == pytest.approx(mean_of_means, rel=1e-12)
    assert mean_of_means != pytest.approx(pooled, rel=1e-6)
    assert abs(mean_of_means - pooled) < 0.05 * pooled, "a small difference on shapes of similar size"


@pytest.mark.parametrize("spacing", [(0.8, 1.2, 3.0), None])
def test_equal_surface_sizes_make_both_assd_definitions_agree(spacing):
    a = np.zeros(SHAPE, bool)
    a[4:12, 5:14, 2:8] = True
    b = np.roll(a, (2, -1, 1), axis=(0, 1, 2))  # the same box, moved: equal surfaces
    assert surface_size(a) == surface_size(b)
    assert ours(assd, a, b, spacing=spacing) == pytest.approx(
        medpy_binary.assd(a, b, voxelspacing=spacing), rel=1e-12)


@pytest.mark.parametrize("spacing", [(0.8, 1.2, 3.0), None])
def test_masks_touching_the_array_border_agree(spacing):
    """Both count voxels on the array border as surface (erosion with a background border)."""
    rng = np.random.default_rng(7)
    target = blob(rng, fraction=0.6)
    pred = np.roll(target, 3, axis=0)
    assert target[0].any() and target[:, :, -1].any()
    assert ours(hd95, pred, target, spacing=spacing) == pytest.approx(
        medpy_binary.hd95(pred, target, voxelspacing=spacing), rel=1e-12)
    forward = medpy_binary.asd(pred, target, voxelspacing=spacing)
    backward = medpy_binary.asd(target, pred, voxelspacing=spacing)
    assert ours(assd, pred, target, spacing=spacing) == pytest.approx(0.5 * (forward + backward), rel=1e-12)


def test_each_label_is_scored_like_medpy_on_its_binary_mask():
    """medpy binarises the whole array (any nonzero voxel); we score each label of a label map on its own."""
    rng = np.random.default_rng(3)
    target = blob(rng).astype(np.uint8) + blob(rng).astype(np.uint8)  # labels 0, 1, 2
    pred = np.roll(target, 2, axis=1)
    spacing = (0.8, 1.2, 3.0)
    rows = {row["label"]: row for row in evaluate_case(pred, target, spacing=spacing)}
    assert sorted(rows) == [1, 2]
    for label, row in rows.items():
        p, t = pred == label, target == label
        assert row["dice"] == pytest.approx(medpy_binary.dc(p, t), rel=1e-12)
        assert row["hd95"] == pytest.approx(medpy_binary.hd95(p, t, voxelspacing=spacing), rel=1e-12)
    merged = medpy_binary.dc(pred, target)  # labels 1 and 2 count as one object
    assert merged != pytest.approx(rows[1]["dice"]) and merged != pytest.approx(rows[2]["dice"])


def test_connectivity_is_medpys_default_face_connectivity():
    """Our surface is medpy's with connectivity=1; a full (26-neighbour) connectivity gives other distances."""
    pred, target = pair(0)
    spacing = (0.8, 1.2, 3.0)
    ours_hd = ours(hd95, pred, target, spacing=spacing)
    assert ours_hd == pytest.approx(medpy_binary.hd95(pred, target, voxelspacing=spacing, connectivity=1))
    forward = medpy_binary.asd(pred, target, voxelspacing=spacing, connectivity=3)
    backward = medpy_binary.asd(target, pred, voxelspacing=spacing, connectivity=3)
    assert ours(assd, pred, target, spacing=spacing) != pytest.approx(0.5 * (forward + backward), rel=1e-6)


def test_empty_masks_give_nan_where_medpy_raises():
    pred, target = pair(1)
    empty = np.zeros_like(target)
    for a, b in ((empty, target), (pred, empty)):
        for metric in (medpy_binary.hd95, medpy_binary.assd):
            with pytest.raises(RuntimeError, match="does not contain any binary object"):
                metric(a, b, voxelspacing=(0.8, 1.2, 3.0))
        assert math.isnan(ours(hd95, a, b, spacing=(0.8, 1.2, 3.0)))
        assert math.isnan(ours(assd, a, b, spacing=(0.8, 1.2, 3.0)))
        assert ours(dice, a, b) == 0.0 == medpy_binary.dc(a, b)


def test_two_empty_masks_give_nan_dice_without_a_warning():
    """medpy's dc of two empty masks is 0 / 0: NaN with a RuntimeWarning (its except branch meant 1.0)."""
    empty = np.zeros(SHAPE, bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = medpy_binary.dc(empty, empty)
    assert math.isnan(theirs) or theirs == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(ours(dice, empty, empty))
