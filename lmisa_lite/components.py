"""Connected components of a segmentation: the false-positive blobs a Dice score hides.

A prediction can score a high Dice and still scatter small islands far from the organ; a radiologist has to
dismiss each one. :func:`false_positive_components` counts, per class, the connected components of the
prediction that touch no voxel of that class in the reference; :func:`component_table` does it for a list
of cases, one row per case and class. :func:`score_predictions` puts them next to Dice, ASSD and HD95 for
several models' predictions of the same cases, and :func:`dice_by_slice_region` tells where along z a
volume's errors sit: in slices through the middle of the organ, near its poles, or in slices without it.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from data_utils.case import Case
from lmisa_lite.metrics import evaluate_case

#: Slice regions of :func:`dice_by_slice_region`, in table order.
SLICE_REGIONS = ("middle", "poles", "no organ")


def false_positive_components(pred: np.ndarray, target: np.ndarray, *, labels: Iterable[int] | None = None,
                              connectivity: int = 1) -> dict[int, int]:
    """Per class, the number of predicted connected components that overlap no reference voxel of the class.

    Args:
        pred: Integer label map ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        labels: Classes to count; None takes every non-zero label of ``pred`` or ``target``.
        connectivity: Neighbourhood of :func:`scipy.ndimage.generate_binary_structure`: 1 (faces) up to
            ``ndim`` (faces, edges and corners).

    Returns:
        ``{label: count}``.

    Raises:
        ValueError: If the shapes differ or ``connectivity`` is out of range.

    Examples:
        >>> target = np.zeros((8, 8), np.uint8); target[1:3, 1:3] = 1
        >>> pred = target.copy(); pred[6, 6] = 1; pred[6, 1] = 1
        >>> false_positive_components(pred, target)
        {1: 2}
    """
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must have the same shape")
    if not 1 <= connectivity <= pred.ndim:
        raise ValueError(f"connectivity={connectivity}: expected 1 to {pred.ndim}")
    structure = ndimage.generate_binary_structure(pred.ndim, connectivity)
    if labels is None:
        labels = sorted((set(np.unique(pred).tolist()) | set(np.unique(target).tolist())) - {0})
    counts = {}
    for label in labels:
        parts, n = ndimage.label(pred == label, structure=structure)
        touching = np.unique(parts[(target == label) & (parts > 0)])
        counts[int(label)] = int(n - len(touching))
    return counts


def component_table(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray], *,
                    case_ids: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                    connectivity: int = 1) -> pd.DataFrame:
    """False-positive components of several cases: one row per case and foreground class.

    Args:
        predictions: Predicted label maps.
        targets: Reference label maps, in the same order.
        case_ids: Names of the cases (default ``"0"``, ``"1"``...).
        class_names: Names of all classes, background first (default ``"label 1"``...).
        connectivity: As for :func:`false_positive_components`.

    Returns:
        Columns ``case_id``, ``label``, ``class``, ``fp_components``.

    Examples:
        >>> t = np.zeros((6, 6), np.uint8); t[:2, :2] = 1
        >>> p = t.copy(); p[4, 4] = 1
        >>> component_table([p, t], [t, t], class_names=["background", "kidney"])["fp_components"].tolist()
        [1, 0]
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    case_ids = [str(i) for i in range(len(targets))] if case_ids is None else list(case_ids)
    n_labels = len(class_names) if class_names is not None else 1 + max(
        [int(np.max(t)) for t in targets] + [int(np.max(p)) for p in predictions] + [1])
    rows = []
    for case_id, pred, target in zip(case_ids, predictions, targets):
        counts = false_positive_components(pred, target, labels=range(1, n_labels), connectivity=connectivity)
        for label, count in counts.items():
            name = class_names[label] if class_names is not None else f"label {label}"
            rows.append({"case_id": case_id, "label": label, "class": name, "fp_components": count})
    return pd.DataFrame(rows, columns=["case_id", "label", "class", "fp_components"])


def score_predictions(predictions: dict[str, Sequence[np.ndarray]], cases: Sequence[Case], *,
                      class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Dice, ASSD, HD95 (mm) and false-positive components of several models' predictions of ``cases``.

    Args:
        predictions: ``{model name: label maps in the order of cases}``.
        cases: Labelled cases (their ``spacing`` turns distances into mm).
        class_names: Names of all classes, background first.

    Returns:
        One row per model, case and foreground class: ``model``, ``case_id``, ``class``, ``dice``, ``assd``,
        ``hd95`` (NaN where undefined, see :mod:`lmisa_lite.metrics`) and ``fp_components``.

    Examples:
        >>> from data_utils.case import Case
        >>> t = np.zeros((6, 6), np.uint8); t[:2, :2] = 1
        >>> case = Case(t.astype(np.float32), t, (1.0, 1.0), "c0", "ct", np.eye(4), "kidney")
        >>> p = t.copy(); p[4, 4] = 1
        >>> score_predictions({"m": [p]}, [case])[["model", "dice", "fp_components"]].to_dict("records")
        [{'model': 'm', 'dice': 0.8888888888888888, 'fp_components': 1}]
    """
    rows = []
    for name, preds in predictions.items():
        if len(preds) != len(cases):
            raise ValueError(f"{name!r}: {len(preds)} predictions for {len(cases)} cases")
        for pred, case in zip(preds, cases):
            labels = range(1, len(class_names)) if class_names is not None else None
            scores = evaluate_case(pred, case.label, spacing=case.spacing, labels=labels, class_names=class_names)
            counts = false_positive_components(pred, case.label, labels=[r["label"] for r in scores])
            rows += [{"model": name, "case_id": case.case_id, "class": r["class"], "dice": r["dice"],
                      "assd": r["assd"], "hd95": r["hd95"], "fp_components": counts[r["label"]]} for r in scores]
    return pd.DataFrame(rows, columns=["model", "case_id", "class", "dice", "assd", "hd95", "fp_components"])


def score_summary(scores: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean Dice (%), ASSD and HD95 (mm) and false-positive components per case.

    Args:
        scores: From :func:`score_predictions`.

    Returns:
        Indexed by model (in order of appearance), columns ``Dice (%)``, ``ASSD (mm)``, ``HD95 (mm)``,
        ``false-positive components per case``.
    """
    per_case = scores.groupby(["model", "case_id"], sort=False).agg(
        dice=("dice", "mean"), assd=("assd", "mean"), hd95=("hd95", "mean"), fp=("fp_components", "sum"))
    table = per_case.groupby("model", sort=False).mean()
    table["dice"] *= 100
    return table.rename(columns={"dice": "Dice (%)", "assd": "ASSD (mm)", "hd95": "HD95 (mm)",
                                 "fp": "false-positive components per case"})


def dice_by_slice_region(pred: np.ndarray, target: np.ndarray, *, pole_share: float = 0.4) -> dict[str, float]:
    """Foreground Dice of a volume's axial slices grouped by where they cut the organ.

    A slice whose reference foreground area is below ``pole_share`` of the largest slice area is a pole slice
    (the organ's top or bottom, where one slice alone is ambiguous); the others are middle slices. Slices
    without reference foreground cannot have a Dice: for them the value is the share of those slices in which
    something was predicted (false alarms).

    Args:
        pred: Predicted label map ``(X, Y, Z)``; every non-zero label counts as foreground.
        target: Reference label map of the same shape.
        pole_share: Area threshold, relative to the largest slice, that separates poles from the middle.

    Returns:
        ``{"middle": dice, "poles": dice, "no organ": share of slices with a false alarm}`` (NaN when a
        region has no slice). Dice is pooled over the voxels of the region's slices.

    Examples:
        >>> t = np.zeros((4, 4, 4), np.uint8); t[:, :, 1] = 1; t[:2, :2, 2] = 1
        >>> p = t.copy(); p[0, 0, 0] = 1
        >>> dice_by_slice_region(p, t)
        {'middle': 1.0, 'poles': 1.0, 'no organ': 0.5}
    """
    pred, target = np.asarray(pred) > 0, np.asarray(target) > 0
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred {pred.shape} and target {target.shape}: expected two volumes of one shape")
    area = target.sum(axis=(0, 1))
    groups = {"middle": area >= pole_share * area.max(), "poles": (area > 0) & (area < pole_share * area.max())}
    out = {}
    for name, chosen in groups.items():
        p, t = pred[..., chosen], target[..., chosen]
        total = p.sum() + t.sum()
        out[name] = float(2 * (p & t).sum() / total) if total else float("nan")
    empty = area == 0
    out["no organ"] = float(pred[..., empty].any(axis=(0, 1)).mean()) if empty.any() else float("nan")
    return out
