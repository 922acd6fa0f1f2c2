"""Tests for lmisa_lite.metrics, with distances checked against a brute-force reference."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lmisa_lite.metrics import CASE_COLUMNS, assd, dice, evaluate_case, hd95, iou, pooled_dice, precision, recall

# --- an independent reference: explicit neighbour checks and all-pairs distances -------------------------


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of mask voxels with a face neighbour that is background or outside the array."""
    points = []
    for voxel in np.argwhere(mask):
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            neighbour = voxel.copy()
            neighbour[axis] += step
            outside = neighbour[axis] < 0 or neighbour[axis] >= mask.shape[axis]
            if outside or not mask[tuple(neighbour)]:
                points.append(voxel)
                break
    return np.array(points, dtype=float).reshape(-1, mask.ndim)


def brute_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """For each surface voxel of a, the distance to the nearest surface voxel of b (all pairs)."""
    sa = brute_surface(a) * np.asarray(spacing)
    sb = brute_surface(b) * np.asarray(spacing)
    return np.sqrt(((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1)).min(axis=1)


def brute_assd_hd95(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float]:
    d_ab, d_ba = brute_directed(a, b, spacing), brute_directed(b, a, spacing)
    return 0.5 * (d_ab.mean() + d_ba.mean()), float(np.percentile(np.concatenate([d_ab, d_ba]), 95))


def random_labels(rng: np.random.Generator, shape, n_classes: int) -> np.ndarray:
    """Blobby random label map: thresholded smoothed noise, so masks have interiors and holes."""
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    edges = np.quantile(noise, np.linspace(0, 1, n_classes + 1)[1:-1])
    return np.digitize(noise, edges).astype(np.uint8)


# --- surface distances -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((13, 11), (1.0, 1.0)), ((13, 11), (0.7, 2.5)), ((9, 8, 7), (1.0, 1.0, 1.0)), ((9, 8, 7), (0.8, 1.3, 3.0))],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(shape, spacing, seed):
    rng = np.random.default_rng(seed)
    pred, target = random_labels(rng, shape, 3), random_labels(rng, shape, 3)
    got_assd = assd(pred, target, spacing=spacing, labels=[1, 2])
    got_hd95 = hd95(pred, target, spacing=spacing, labels=[1, 2])
    for label in (1, 2):
        want_assd, want_hd95 = brute_assd_hd95(pred == label, target == label, spacing)
        assert got_assd[label] == pytest.approx(want_assd, rel=1e-12, abs=1e-12)
        assert got_hd95[label] == pytest.approx(want_hd95, rel=1e-12, abs=1e-12)


def test_small_objects_far_from_the_border_match_brute_force():
    # Exercises the crop around the objects: the full-array reference must agree with it.
    pred = np.zeros((30, 25, 12), np.uint8)
    target = np.zeros_like(pred)
    pred[10:14, 5:9, 3:6] = 1
    target[12:17, 7:10, 4:8] = 1
    target[20:22, 18:20, 9:11] = 1  # a second, distant component
    spacing = (0.9, 1.1, 2.5)
    want_assd, want_hd95 = brute_assd_hd95(pred == 1, target == 1, spacing)
    assert assd(pred, target, spacing=spacing)[1] == pytest.approx(want_assd, rel=1e-12)
    assert hd95(pred, target, spacing=spacing)[1] == pytest.approx(want_hd95, rel=1e-12)


def test_offset_squares_analytic():
    # Two 5x5 squares, the second shifted 2 voxels along x. Each surface is a ring of 16 voxels. From one
    # ring to the other: 6 voxels at 0 (on the shared top and bottom rows), 4 at 1, 6 at 2, mean 16/16 = 1
    # in both directions. Pooled: 12 zeros, 8 ones, 12 twos -> the 95th percentile is 2.
    a = np.zeros((12, 10), np.uint8)
    a[2:7, 2:7] = 1
    b = np.roll(a, 2, axis=0)
    assert assd(a, b) == {1: pytest.approx(1.0)}
    assert hd95(a, b) == {1: pytest.approx(2.0)}
    # With 0.5 mm along x and 2 mm along y the nearest partners change: per ring, the two rows along x
    # give 1 + 0.5 each, the trailing column 3 x 1 mm, and the leading column 3 x 1 mm (its old 1-voxel
    # step along y now costs 2 mm, so the 2-voxel step along x wins). Mean 9/16 in both directions.
    assert assd(a, b, spacing=(0.5, 2.0)) == {1: pytest.approx(9.0 / 16.0)}


def test_shifted_small_square_with_anisotropic_spacing():
    # 3x3 squares shifted one voxel along x (2 mm); y voxels are 1 mm. Ring of 8: the 3 voxels of the
    # leading row are 2 mm away, the middle of the trailing row is 1 mm from its neighbours, the rest 0.
    a = np.zeros((8, 8), np.uint8)
    a[2:5, 2:5] = 1
    b = np.roll(a, 1, axis=0)
    assert assd(a, b, spacing=(2.0, 1.0)) == {1: pytest.approx(7.0 / 8.0)}


def test_single_voxels_give_the_euclidean_distance_in_mm():
    pred = np.zeros((6, 7, 8), np.uint8)
    target = np.zeros_like(pred)
    pred[1, 2, 3] = 2
    target[4, 0, 5] = 2
    spacing = (0.5, 1.5, 3.0)
    want = math.sqrt((3 * 0.5) ** 2 + (2 * 1.5) ** 2 + (2 * 3.0) ** 2)
    assert assd(pred, target, spacing=spacing)[2] == pytest.approx(want)
    assert hd95(pred, target, spacing=spacing)[2] == pytest.approx(want)
    assert assd(pred, target)[2] == pytest.approx(math.sqrt(9 + 4 + 4))


def test_distances_are_symmetric_and_zero_for_identical_masks():
    rng = np.random.default_rng(5)
    a, b = random_labels(rng, (10, 9, 6), 2), random_labels(rng, (10, 9, 6), 2)
    spacing = (1.0, 0.6, 2.0)
    assert assd(a, b, spacing=spacing)[1] == pytest.approx(assd(b, a, spacing=spacing)[1])
    assert hd95(a, b, spacing=spacing)[1] == pytest.approx(hd95(b, a, spacing=spacing)[1])
    assert assd(a, a, spacing=spacing) == {1: 0.0}
    assert hd95(a, a, spacing=spacing) == {1: 0.0}


# --- overlap metrics -------------------------------------------------------------------------------------


def test_identical_and_disjoint_masks():
    a = np.zeros((6, 6), np.uint8)
    a[1:3, 1:4] = 1
    b = np.zeros_like(a)
    b[4:6, 0:2] = 1
    for metric in (dice, iou, precision, recall):
        assert metric(a, a) == {1: 1.0}
        assert metric(a, b) == {1: 0.0}


def test_partial_overlap_counts():
    pred = np.zeros((5, 5), np.uint8)
    target = np.zeros_like(pred)
    pred[0, 0:4] = 1  # 4 voxels
    target[0, 2:5] = 1  # 3 voxels, 2 of them shared
    assert dice(pred, target)[1] == pytest.approx(2 * 2 / (4 + 3))
    assert iou(pred, target)[1] == pytest.approx(2 / 5)
    assert precision(pred, target)[1] == pytest.approx(2 / 4)
    assert recall(pred, target)[1] == pytest.approx(2 / 3)


def test_multiclass_scores_each_label_on_its_own():
    rng = np.random.default_rng(3)
    pred, target = random_labels(rng, (12, 10, 5), 4), random_labels(rng, (12, 10, 5), 4)
    scores = dice(pred, target)
    assert sorted(scores) == [1, 2, 3]
    for label, value in scores.items():
        p, t = pred == label, target == label
        assert value == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))
    rows = evaluate_case(pred, target, spacing=(1.0, 1.0, 2.0), class_names=["bg", "A", "B", "C"])
    assert [r["class"] for r in rows] == ["A", "B", "C"]
    assert rows[1]["assd"] == pytest.approx(assd(pred, target, spacing=(1.0, 1.0, 2.0))[2])
    assert rows[2]["hd95"] == pytest.approx(hd95(pred, target, spacing=(1.0, 1.0, 2.0))[3])
    assert rows[0]["iou"] == pytest.approx(iou(pred, target)[1])


def test_labels_default_to_foreground_found_in_either_array():
    pred = np.array([[0, 1, 1], [0, 0, 0]], np.uint8)
    target = np.array([[0, 0, 0], [3, 3, 0]], np.uint8)
    assert sorted(dice(pred, target)) == [1, 3]
    assert sorted(dice(pred, target, labels=range(1, 5))) == [1, 2, 3, 4]


# --- empty masks -----------------------------------------------------------------------------------------


def test_empty_prediction():
    target = np.zeros((6, 6), np.uint8)
    target[2:4, 2:4] = 1
    (row,) = evaluate_case(np.zeros_like(target), target, labels=[1])
    assert (row["empty_pred"], row["empty_target"]) == (True, False)
    assert row["dice"] == 0.0 and row["iou"] == 0.0 and row["recall"] == 0.0
    assert math.isnan(row["precision"]) and math.isnan(row["assd"]) and math.isnan(row["hd95"])


def test_empty_target():
    pred = np.zeros((6, 6), np.uint8)
    pred[0:2, 0:2] = 1
    (row,) = evaluate_case(pred, np.zeros_like(pred), labels=[1])
    assert (row["empty_pred"], row["empty_target"]) == (False, True)
    assert row["dice"] == 0.0 and row["iou"] == 0.0 and row["precision"] == 0.0
    assert math.isnan(row["recall"]) and math.isnan(row["assd"]) and math.isnan(row["hd95"])


def test_both_empty_gives_nan_everywhere_and_both_flags():
    zeros = np.zeros((4, 4, 3), np.uint8)
    (row,) = evaluate_case(zeros, zeros, labels=[2])
    assert tuple(row) == CASE_COLUMNS
    assert row["label"] == 2 and row["class"] == "label 2"
    assert row["empty_pred"] and row["empty_target"]
    for name in ("dice", "iou", "precision", "recall", "assd", "hd95"):
        assert math.isnan(row[name]), name
    assert math.isnan(dice(zeros, zeros, labels=[2])[2])
    assert dice(zeros, zeros) == {}


# --- input checks ----------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 5\).*\(5, 4\)"):
        dice(np.zeros((4, 5), np.uint8), np.zeros((5, 4), np.uint8))


def test_spacing_must_match_ndim_and_be_positive():
    a = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError, match="spacing"):
        assd(a, a, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, spacing=(1.0, 0.0))


def test_rejects_float_maps_wrong_rank_and_background_label():
    a = np.ones((4, 4), np.uint8)
    with pytest.raises(ValueError, match="pred must be an integer label map"):
        dice(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="target must be 2D"):
        dice(np.ones((4, 4), np.uint8), np.ones(4, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        dice(a, a, labels=range(2))
    with pytest.raises(ValueError, match="class_names"):
        evaluate_case(a, a, class_names="kidney")


def test_pooled_dice_equals_the_dice_of_the_stacked_cases():
    rng = np.random.default_rng(3)
    preds = [rng.integers(0, 3, (6, 7)) for _ in range(4)]
    targets = [rng.integers(0, 3, (6, 7)) for _ in range(4)]
    targets[1][:] = 0  # a case without foreground
    pooled = pooled_dice(preds, targets)
    stacked = dice(np.stack(preds, -1), np.stack(targets, -1))
    assert pooled.keys() == stacked.keys() == {1, 2}
    assert all(pooled[k] == pytest.approx(stacked[k]) for k in pooled)
    # each case one vote would differ: the empty case scores 0 where anything was predicted
    assert pooled_dice(preds, targets, labels=[1])[1] != pytest.approx(np.mean([dice(p, t, labels=[1])[1]
                                                                                for p, t in zip(preds, targets)]))
    assert np.isnan(pooled_dice([np.zeros((2, 2), int)], [np.zeros((2, 2), int)], labels=[1])[1])
    with pytest.raises(ValueError, match="2 predictions for 1"):
        pooled_dice(preds[:2], targets[:1])
    with pytest.raises(ValueError):
        pooled_dice([np.zeros((2, 2), int)], [np.zeros((3, 2), int)])
