"""Connected components of a segmentation: the false-positive blobs a Dice score hides.

A prediction can score a high Dice and still scatter small islands far from the organ; a radiologist has to
dismiss each one. :func:`false_positive_components` counts, per class, the connected components of the
prediction that touch no voxel of that class in the reference; :func:`component_table` does it for a list
of cases, one row per case and class.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage


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
