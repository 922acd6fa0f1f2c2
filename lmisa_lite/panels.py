"""The slice viewer's inputs: image panels, the label/prediction layers aligned with them, and class names.

:class:`~lmisa_lite.viewer.SliceViewer` shows one or several co-registered arrays side by side. This module
turns what a caller passes (one array, a list or a dict of arrays) into checked lists, one entry per panel,
with error messages that name the panel and the argument at fault.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lmisa_lite.display import CLASS_COLOURS, resolve_class_names

# One array, a list/tuple of arrays (one per panel) or a dict title -> array; None for "no such layer".
Panels = np.ndarray | Sequence[Any] | Mapping[str, Any] | None


def as_panels(image: Panels) -> tuple[list[np.ndarray], list[str]]:
    """The image panels and their default titles.

    Args:
        image: One array ``(X, Y)`` or ``(X, Y, Z)``, or a list/tuple/dict of arrays of one shape.

    Returns:
        ``(arrays, titles)``: dict keys as titles; ``"panel 1"``, ... for several unnamed arrays; ``[""]``
        for one.

    Raises:
        ValueError: If there is no array, an array is not 2D/3D, or the shapes differ.

    Examples:
        >>> arrays, titles = as_panels({"CT": np.zeros((4, 4)), "MRI": np.ones((4, 4))})
        >>> titles
        ['CT', 'MRI']
    """
    if isinstance(image, Mapping):
        titles = [str(k) for k in image]
        arrays = [np.asarray(v) for v in image.values()]
        where = [repr(t) for t in titles]
    else:
        arrays = [np.asarray(v) for v in image] if isinstance(image, (list, tuple)) else [np.asarray(image)]
        titles = [f"panel {i + 1}" for i in range(len(arrays))] if len(arrays) > 1 else [""]
        where = [str(i) for i in range(len(arrays))]
    if not arrays:
        raise ValueError("image must hold at least one array")
    for a, at in zip(arrays, where):
        if a.ndim not in (2, 3):
            raise ValueError(f"image[{at}] must be 2D (X, Y) or 3D (X, Y, Z); got shape {a.shape}")
        if a.shape != arrays[0].shape:
            raise ValueError(f"image[{at}] has shape {a.shape}; all panels need {arrays[0].shape}")
    return arrays, titles


def align_layer(name: str, value: Panels, titles: list[str],
                shape: tuple[int, ...]) -> list[np.ndarray | None]:
    """Label or prediction arrays, one per panel (None where a panel has none), shape-checked.

    Args:
        name: ``"label"`` or ``"prediction"``, for error messages.
        value: ``None``; one array (for every panel); a list/tuple with one entry per panel; or a dict keyed
            by panel title (``None`` entries and missing titles allowed).
        titles: The panel titles.
        shape: The image shape every array must have.

    Returns:
        One integer array (booleans viewed as uint8, floats rounded to int64) or ``None`` per panel.

    Raises:
        ValueError: If a dict key matches no title, a list has the wrong length, or a shape differs.
    """
    n = len(titles)
    if value is None:
        out: list[Any] = [None] * n
    elif isinstance(value, Mapping):
        unknown = [k for k in value if str(k) not in titles]
        if unknown:
            raise ValueError(f"{name} has keys {unknown} that match no panel title {titles}")
        out = [value.get(t) for t in titles]
    elif isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must hold one entry per image panel ({n}); got {len(value)}")
        out = list(value)
    else:
        out = [value] * n
    result: list[np.ndarray | None] = []
    for i, v in enumerate(out):
        if v is None:
            result.append(None)
            continue
        a = np.asarray(v)
        if a.shape != shape:
            at = f"[{titles[i]!r}]" if isinstance(value, Mapping) else f"[{i}]" if n > 1 else ""
            raise ValueError(f"{name}{at} has shape {a.shape}; the image has shape {shape}")
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        elif not np.issubdtype(a.dtype, np.integer):
            a = np.rint(a).astype(np.int64)
        result.append(a)
    return result


def label_classes(labelled: Sequence[np.ndarray],
                  class_names: Sequence[str] | Mapping[int, str] | None) -> tuple[dict[int, str], int]:
    """The named classes of the label layers and the number of label values to colour.

    Args:
        labelled: The label and prediction arrays shown (those that are not ``None``).
        class_names: Names of classes 1, 2, ... (list, optionally led by ``"background"``, or dict), or
            ``None``.

    Returns:
        ``(names, num_classes)``: class -> name, and the number of label values (at least 2, and above every
        named class). Without names and with codes past :data:`~lmisa_lite.display.CLASS_COLOURS`
        (e.g. 205, 500), only the classes present are named.

    Examples:
        >>> label_classes([np.array([[0, 2]])], ["background", "kidney"])
        ({1: 'kidney', 2: 'class 2'}, 3)
    """
    num_classes = max([int(a.max(initial=0)) + 1 for a in labelled] + [2])
    if class_names is None and num_classes > len(CLASS_COLOURS):
        # Unmapped label codes (e.g. 205, 500): list the classes present rather than every code below.
        present = set().union(*(np.unique(a).tolist() for a in labelled)) - {0}
        names = {int(k): f"class {k}" for k in sorted(present)}
    else:
        names = resolve_class_names(class_names, num_classes)
    return names, max(num_classes, max(names) + 1)
