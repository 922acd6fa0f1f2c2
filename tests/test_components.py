"""Tests for lmisa_lite.components: false-positive connected components."""
from __future__ import annotations

import numpy as np
import pytest

from data_utils.case import Case
from lmisa_lite.components import (
    SLICE_REGIONS,
    component_table,
    dice_by_slice_region,
    false_positive_components,
    score_predictions,
    score_summary,
)


def _volume() -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((12, 12, 6), np.uint8)
    target[2:5, 2:5, 1:4] = 1
    target[7:10, 7:10, 1:4] = 2
    return target, target.copy()


def test_a_perfect_prediction_has_none():
    target, pred = _volume()
    assert false_positive_components(pred, target) == {1: 0, 2: 0}


def test_islands_away_from_the_reference_are_counted_and_overlapping_ones_are_not():
    target, pred = _volume()
    pred[0, 11, 0] = 1  # island of class 1
    pred[11, 0, 5] = 1  # another
    pred[5, 2, 2] = 1  # grows the true kidney: same component, not counted
    pred[8, 8, 2] = 1  # class 1 inside class 2's organ: a class-1 component touching no class-1 voxel
    assert false_positive_components(pred, target) == {1: 3, 2: 0}
    assert false_positive_components(pred, target, labels=[2]) == {2: 0}


def test_connectivity_decides_whether_diagonal_voxels_join():
    target = np.zeros((6, 6), np.uint8)
    pred = np.zeros((6, 6), np.uint8)
    pred[1, 1] = pred[2, 2] = 1
    assert false_positive_components(pred, target) == {1: 2}
    assert false_positive_components(pred, target, connectivity=2) == {1: 1}


def test_a_missed_organ_is_no_false_positive():
    target, _ = _volume()
    assert false_positive_components(np.zeros_like(target), target) == {1: 0, 2: 0}


def test_component_table_rows():
    target, pred = _volume()
    pred[0, 11, 0] = 2
    table = component_table([pred, target], [target, target], case_ids=["a", "b"],
                            class_names=["background", "one", "two"])
    assert table.to_dict("records") == [
        {"case_id": "a", "label": 1, "class": "one", "fp_components": 0},
        {"case_id": "a", "label": 2, "class": "two", "fp_components": 1},
        {"case_id": "b", "label": 1, "class": "one", "fp_components": 0},
        {"case_id": "b", "label": 2, "class": "two", "fp_components": 0},
    ]


def test_errors():
    with pytest.raises(ValueError, match="shape"):
        false_positive_components(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="connectivity"):
        false_positive_components(np.zeros((4, 4)), np.zeros((4, 4)), connectivity=3)
    with pytest.raises(ValueError, match="predictions"):
        component_table([np.zeros((4, 4))], [])


def _case(label: np.ndarray, spacing=(2.0, 2.0, 4.0)) -> Case:
    return Case(label.astype(np.float32), label, spacing, "c0", "mri", np.diag([*spacing, 1.0]), "kidney")


def test_score_predictions_and_summary():
    target, pred = _volume()
    target[target == 2] = 1
    pred[pred == 2] = 1
    noisy = pred.copy()
    noisy[0, 11, 0] = noisy[11, 0, 5] = 1
    scores = score_predictions({"good": [pred], "noisy": [noisy]}, [_case(target)],
                               class_names=["background", "kidney"])
    assert scores["model"].tolist() == ["good", "noisy"] and scores["fp_components"].tolist() == [0, 2]
    assert scores["dice"].iloc[0] == 1.0 and scores["hd95"].iloc[0] == 0.0
    summary = score_summary(scores)
    assert list(summary.index) == ["good", "noisy"]
    assert summary.loc["good", "Dice (%)"] == 100.0
    assert summary.loc["noisy", "false-positive components per case"] == 2
    assert summary.loc["noisy", "ASSD (mm)"] > 0  # the islands are far from the organ, in mm


def test_dice_by_slice_region():
    target = np.zeros((10, 10, 8), np.uint8)
    target[2:8, 2:8, 2:6] = 1  # middle slices 2-5 ...
    target[4:6, 4:6, 1] = target[4:6, 4:6, 6] = 1  # ... and two small pole slices
    pred = target.copy()
    pred[..., 1] = pred[..., 6] = 0  # the poles missed
    pred[0, 0, 0] = 1  # a false alarm in one of the two empty slices
    regions = dice_by_slice_region(pred, target)
    assert regions == {"middle": 1.0, "poles": 0.0, "no organ": 0.5}
    assert list(regions) == list(SLICE_REGIONS)
    with pytest.raises(ValueError, match="volumes"):
        dice_by_slice_region(pred[..., 0], target[..., 0])
