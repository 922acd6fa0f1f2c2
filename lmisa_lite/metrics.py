"""Per-class overlap and surface-distance metrics for integer label maps.

Every metric compares a predicted label map with a reference label map of the same shape, 2D ``(X, Y)``
or 3D ``(X, Y, Z)``, one foreground class at a time (background 0 is never scored), and returns
``{label: value}``. Surface distances follow ``medpy.metric.binary`` (``tests/test_metrics_medpy.py``
compares the two): the surface of a mask is the mask minus its face-connected erosion (medpy's default
``connectivity=1``; voxels on the array border count as surface), distances are exact Euclidean distances
in mm when ``spacing`` is given (medpy's ``voxelspacing``) and in voxels otherwise, and HD95 is the 95th
percentile (linear interpolation) of both directed distance sets pooled together, as medpy's ``hd95``.
Dice equals medpy's ``dc`` and HD95 medpy's ``hd95`` to rounding.

Differences from medpy:

- ASSD is the mean of the two directed mean distances, ``(asd(P, T) + asd(T, P)) / 2`` with medpy's
  ``asd``: the formula of medpy up to 0.4, with which many published cross-modality results were computed.
  medpy 0.5 and later (its issue #108) pool instead: the mean over the surface voxels of *both* masks
  (Heimann et al., IEEE TMI 2009), which weights each direction by its surface size. The two agree when
  both surfaces have as many voxels (or both directions the same mean distance); on partly overlapping
  shapes of similar size they differ by a few percent.
- medpy binarises a whole array (any nonzero voxel is foreground); these functions score each label of a
  label map on its own: ``dice(pred, target)[k]`` is medpy's ``dc(pred == k, target == k)``.
- Empty masks: medpy's ``hd95``, ``asd`` and ``assd`` raise RuntimeError when either mask is empty, and its
  ``dc`` of two empty masks is a 0 / 0 (NaN with a RuntimeWarning in medpy 0.5); here they are NaN without
  a warning, as the table below sets out.
- The connectivity is fixed at 1 (face neighbours); medpy's ``connectivity=2`` or ``3`` takes thicker
  surfaces and gives other distances.

Empty masks never raise and never turn into a silent 0. For one class, with ``P`` the predicted voxels
and ``T`` the reference voxels:

============  =====================  =====================  ==============
metric        P empty, T not empty   T empty, P not empty   both empty
============  =====================  =====================  ==============
dice, iou     0 (no overlap)         0 (no overlap)         NaN
precision     NaN (0 / 0)            0                      NaN
recall        0                      NaN (0 / 0)            NaN
assd, hd95    NaN                    NaN                    NaN
============  =====================  =====================  ==============

:func:`evaluate_case` flags these cases with the columns ``empty_pred`` and ``empty_target``, so an
average over volumes can skip the NaNs and still report how many there were.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

#: Columns of the rows returned by :func:`evaluate_case`, in order.
CASE_COLUMNS = ("label", "class", "dice", "iou", "precision", "recall", "assd", "hd95", "empty_pred",
                "empty_target")

ClassNames = Mapping[int, str] | Sequence[str]


def _check_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    """Turn both inputs into arrays and check dtype, rank and shape."""
    pred, target = np.asarray(pred), np.asarray(target)
    for name, array in (("pred", pred), ("target", target)):
        if array.dtype != bool and not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                f"{name} must be an integer label map, got dtype {array.dtype} "
                "(turn network outputs into labels with argmax first)"
            )
        if array.ndim not in (2, 3):
            raise ValueError(f"{name} must be 2D (X, Y) or 3D (X, Y, Z), got shape {array.shape}")
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {pred.shape} does not match target shape {target.shape}")
    return pred, target


def _check_labels(pred: np.ndarray, target: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    """The foreground labels to score: the given ones, or every nonzero value found in either array."""
    if labels is None:
        found = np.union1d(np.unique(pred), np.unique(target))
        return [int(value) for value in found if value != 0]
    chosen = list(dict.fromkeys(int(value) for value in labels))
    if any(value <= 0 for value in chosen):
        raise ValueError(f"labels must be foreground labels (>= 1, background 0 is not scored), got {chosen}")
    return chosen


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    """Validate the voxel size: one positive value per axis, or None for distances in voxels."""
    if spacing is None:
        return None
    values = tuple(float(s) for s in spacing)
    if len(values) != ndim:
        raise ValueError(f"spacing {values} needs one value per array axis ({ndim})")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite, got {values}")
    return values


def _overlap(p: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Overlap ratios of two binary masks, following the empty-mask rules of the module docstring."""
    n_pred, n_target = int(np.count_nonzero(p)), int(np.count_nonzero(t))
    tp = int(np.count_nonzero(p & t))
    union = n_pred + n_target - tp
    return {
        "dice": 2.0 * tp / (n_pred + n_target) if union else float("nan"),
        "iou": tp / union if union else float("nan"),
        "precision": tp / n_pred if n_pred else float("nan"),
        "recall": tp / n_target if n_target else float("nan"),
    }


def _bounding_box(mask: np.ndarray, *, margin: int) -> tuple[slice, ...]:
    """Slices around the nonzero voxels of ``mask``, widened by ``margin`` voxels within the array."""
    box = []
    for axis, size in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=others))
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + margin + 1, size)))
    return tuple(box)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face neighbour outside the mask or outside the array."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure)


def _surface_distances(
    p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...] | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Directed surface distances (pred -> target, target -> pred), or None when either mask is empty."""
    if not p.any() or not t.any():
        return None
    # Both surfaces lie inside the box around the union, so cropping with a one-voxel margin changes
    # neither the erosion (the margin is background, or the array border as before) nor the distances.
    box = _bounding_box(p | t, margin=1)
    surface_p, surface_t = _surface(p[box]), _surface(t[box])
    to_t = ndimage.distance_transform_edt(~surface_t, sampling=spacing)
    to_p = ndimage.distance_transform_edt(~surface_p, sampling=spacing)
    return to_t[surface_p], to_p[surface_t]


def _assd(distances: tuple[np.ndarray, np.ndarray] | None) -> float:
    if distances is None:
        return float("nan")
    return float(0.5 * (distances[0].mean() + distances[1].mean()))


def _hd95(distances: tuple[np.ndarray, np.ndarray] | None) -> float:
    if distances is None:
        return float("nan")
    return float(np.percentile(np.concatenate(distances), 95))


def _per_label(
    pred: Any, target: Any, labels: Iterable[int] | None, score: Callable[[np.ndarray, np.ndarray], float]
) -> dict[int, float]:
    pred, target = _check_pair(pred, target)
    return {label: score(pred == label, target == label) for label in _check_labels(pred, target, labels)}


def class_name(label: int, class_names: ClassNames | None) -> str:
    """Display name of a class label.

    Args:
        label: Integer class label.
        class_names: A mapping ``{label: name}``, a sequence of names indexed by label, or None.

    Returns:
        The name of ``label``, or ``"label N"`` when ``class_names`` does not name it.

    Raises:
        ValueError: If ``class_names`` is a string (it would name the labels by its characters).

    Examples:
        >>> class_name(1, {1: "kidney"}), class_name(2, ["bg", "MYO", "LAC"]), class_name(3, None)
        ('kidney', 'LAC', 'label 3')
    """
    if isinstance(class_names, str):
        raise ValueError(  # noqa: TRY004 - bad arguments raise ValueError throughout the package
            "class_names must be a mapping {label: name} or a sequence of names, not a string"
        )
    if isinstance(class_names, Mapping) and label in class_names:
        return str(class_names[label])
    if isinstance(class_names, Sequence) and 0 <= label < len(class_names):
        return str(class_names[label])
    return f"label {label}"


def dice(pred: Any, target: Any, *, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` per foreground class.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        labels: Foreground labels to score, e.g. ``range(1, num_classes)``; None scores every nonzero
            label found in either array.

    Returns:
        ``{label: dice}``; 0 when exactly one of the masks is empty, NaN when both are.

    Raises:
        ValueError: If the shapes differ, an array is not an integer 2D/3D map, or ``labels`` holds 0.

    Examples:
        >>> import numpy as np
        >>> target = np.array([[0, 1, 1, 2]])
        >>> dice(np.array([[0, 1, 0, 2]]), target)
        {1: 0.6666666666666666, 2: 1.0}
    """
    return _per_label(pred, target, labels, lambda p, t: _overlap(p, t)["dice"])


def pooled_dice(preds: Sequence[Any], targets: Sequence[Any], *,
                labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice per foreground class over several cases pooled: ``2 sum|P & T| / (sum|P| + sum|T|)``.

    Every voxel of every case counts once, as the slices of a volume do in the volume's Dice; the mean of
    per-case Dice instead gives each case one vote, so a small cross-section missed, or a false alarm in a
    case without the class (Dice 0), weighs as much as a whole large organ. Use it to compare 2D test images
    with volumes cut into the same kind of slices.

    Args:
        preds: Predicted integer label maps, one per case (any shapes, each matching its target).
        targets: Reference label maps in the same order.
        labels: Foreground labels to score; None scores every nonzero label found in any case.

    Returns:
        ``{label: dice}``; NaN for a label absent from every prediction and every reference.

    Raises:
        ValueError: If the lists differ in length or a pair differs in shape.

    Examples:
        >>> import numpy as np
        >>> big, small = np.zeros((1, 8), int), np.zeros((1, 8), int)
        >>> big[0, :6] = 1; small[0, 0] = 1
        >>> pooled_dice([big, np.zeros((1, 8), int)], [big, small])  # per case: 1.0 and 0.0
        {1: 0.9230769230769231}
    """
    if len(preds) != len(targets):
        raise ValueError(f"preds and targets: {len(preds)} predictions for {len(targets)} references")
    pairs = [_check_pair(p, t) for p, t in zip(preds, targets)]
    if labels is None:
        chosen = sorted({label for p, t in pairs for label in _check_labels(p, t, None)})
    else:
        chosen = _check_labels(np.zeros(1, int), np.zeros(1, int), labels)
    out = {}
    for label in chosen:
        tp = total = 0
        for p, t in pairs:
            pl, tl = p == label, t == label
            tp += int(np.count_nonzero(pl & tl))
            total += int(np.count_nonzero(pl)) + int(np.count_nonzero(tl))
        out[label] = 2.0 * tp / total if total else float("nan")
    return out


def iou(pred: Any, target: Any, *, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Intersection over union (Jaccard index) ``|P & T| / |P | T|`` per foreground class.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        labels: Foreground labels to score; None scores every nonzero label found in either array.

    Returns:
        ``{label: iou}``; 0 when exactly one of the masks is empty, NaN when both are.

    Raises:
        ValueError: As for :func:`dice`.

    Examples:
        >>> import numpy as np
        >>> iou(np.array([[0, 1, 0, 1]]), np.array([[0, 1, 1, 0]]))
        {1: 0.3333333333333333}
    """
    return _per_label(pred, target, labels, lambda p, t: _overlap(p, t)["iou"])


def precision(pred: Any, target: Any, *, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Precision (positive predictive value) ``|P & T| / |P|`` per foreground class.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        labels: Foreground labels to score; None scores every nonzero label found in either array.

    Returns:
        ``{label: precision}``; NaN when the prediction is empty (0 / 0), 0 when only the reference is.

    Raises:
        ValueError: As for :func:`dice`.

    Examples:
        >>> import numpy as np
        >>> precision(np.array([[1, 1, 0, 0]]), np.array([[1, 0, 0, 0]]))
        {1: 0.5}
    """
    return _per_label(pred, target, labels, lambda p, t: _overlap(p, t)["precision"])


def recall(pred: Any, target: Any, *, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Recall (sensitivity) ``|P & T| / |T|`` per foreground class.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        labels: Foreground labels to score; None scores every nonzero label found in either array.

    Returns:
        ``{label: recall}``; NaN when the reference is empty (0 / 0), 0 when only the prediction is.

    Raises:
        ValueError: As for :func:`dice`.

    Examples:
        >>> import numpy as np
        >>> recall(np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]]))
        {1: 0.5}
    """
    return _per_label(pred, target, labels, lambda p, t: _overlap(p, t)["recall"])


def assd(
    pred: Any, target: Any, *, spacing: Sequence[float] | None = None, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """Average symmetric surface distance per foreground class (medpy's definition).

    The mean distance from each predicted surface voxel to the nearest reference surface voxel and the
    mean in the other direction are averaged.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        spacing: Voxel size in mm, one value per axis; None measures in voxels.
        labels: Foreground labels to score; None scores every nonzero label found in either array.

    Returns:
        ``{label: assd}`` in mm (or voxels); NaN when either mask is empty.

    Raises:
        ValueError: As for :func:`dice`, or if ``spacing`` does not hold one positive value per axis.

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((8, 8), np.uint8); a[2:5, 2:5] = 1
        >>> assd(a, np.roll(a, 1, axis=0), spacing=(2.0, 1.0))
        {1: 0.875}
    """
    pred, target = _check_pair(pred, target)
    sampling = _check_spacing(spacing, pred.ndim)
    return _per_label(pred, target, labels, lambda p, t: _assd(_surface_distances(p, t, sampling)))


def hd95(
    pred: Any, target: Any, *, spacing: Sequence[float] | None = None, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """95th percentile Hausdorff distance per foreground class (medpy's definition).

    The directed surface distances in both directions are pooled and their 95th percentile (numpy's
    linear interpolation) is taken.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        spacing: Voxel size in mm, one value per axis; None measures in voxels.
        labels: Foreground labels to score; None scores every nonzero label found in either array.

    Returns:
        ``{label: hd95}`` in mm (or voxels); NaN when either mask is empty.

    Raises:
        ValueError: As for :func:`assd`.

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((8, 8), np.uint8); a[2:5, 2:5] = 1
        >>> hd95(a, np.roll(a, 1, axis=0), spacing=(2.0, 1.0))
        {1: 2.0}
    """
    pred, target = _check_pair(pred, target)
    sampling = _check_spacing(spacing, pred.ndim)
    return _per_label(pred, target, labels, lambda p, t: _hd95(_surface_distances(p, t, sampling)))


def evaluate_case(
    pred: Any,
    target: Any,
    *,
    spacing: Sequence[float] | None = None,
    labels: Iterable[int] | None = None,
    class_names: ClassNames | None = None,
) -> list[dict[str, Any]]:
    """All metrics of one case, one row per foreground class.

    Each class mask and its surfaces are computed once and shared by all metrics.

    Args:
        pred: Predicted integer label map, ``(X, Y)`` or ``(X, Y, Z)``.
        target: Reference label map of the same shape.
        spacing: Voxel size in mm, one value per axis; None measures distances in voxels.
        labels: Foreground labels to score, e.g. ``range(1, num_classes)`` so that every class gets a row
            even when absent from both maps; None scores every nonzero label found in either array.
        class_names: Names for the ``class`` column: ``{label: name}`` or a sequence indexed by label
            (index 0 is background), e.g. ``["bg", "MYO", "LAC", "LVC", "AA"]``; unnamed labels
            are called ``"label N"``.

    Returns:
        A list of dicts with the keys of :data:`CASE_COLUMNS`: ``label``, ``class``, ``dice``, ``iou``,
        ``precision``, ``recall``, ``assd``, ``hd95`` (floats, NaN where undefined, see the module
        docstring), ``empty_pred`` and ``empty_target`` (bools).

    Raises:
        ValueError: As for :func:`assd`, or if ``class_names`` is a plain string.

    Examples:
        >>> import numpy as np
        >>> target = np.zeros((6, 6), np.uint8); target[1:4, 1:4] = 1
        >>> row = evaluate_case(target, target, labels=[1, 2], class_names={1: "kidney"})[1]
        >>> row["class"], row["dice"], row["empty_pred"], row["empty_target"]
        ('label 2', nan, True, True)
    """
    pred, target = _check_pair(pred, target)
    sampling = _check_spacing(spacing, pred.ndim)
    rows = []
    for label in _check_labels(pred, target, labels):
        p, t = pred == label, target == label
        distances = _surface_distances(p, t, sampling)
        rows.append({
            "label": label,
            "class": class_name(label, class_names),
            **_overlap(p, t),
            "assd": _assd(distances),
            "hd95": _hd95(distances),
            "empty_pred": not p.any(),
            "empty_target": not t.any(),
        })
    return rows
