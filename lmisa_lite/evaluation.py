"""Evaluate a segmentation model on labelled cases and summarise the result the way papers report it.

The protocol is that of the cross-modality cardiac literature: every test volume is segmented whole,
every foreground class of every volume is scored (Dice, ASSD, ...) and the scores are then averaged over
volumes per class. Undefined scores (empty masks, see :mod:`lmisa_lite.metrics`) stay NaN, are skipped
by the averages and are counted next to them.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from data_utils.case import Case
from data_utils.atomic import atomic_write_text
from lmisa_lite.metrics import ClassNames, class_name, evaluate_case

#: Columns of the per-case table returned by :func:`evaluate`, in order.
COLUMNS = ("case_id", "modality", "label", "class", "dice", "assd", "hd95", "precision", "recall", "iou",
           "empty_pred", "empty_target")
#: Metrics that are fractions in [0, 1]; :func:`summarize` reports them in percent.
RATIO_METRICS = ("dice", "iou", "precision", "recall")
#: Metrics that are distances (mm when the cases carry their spacing).
DISTANCE_METRICS = ("assd", "hd95")
_TITLES = {"dice": "Dice", "iou": "IoU", "precision": "Precision", "recall": "Recall", "assd": "ASSD",
           "hd95": "HD95", "n_cases": "cases"}


def _network_predictor(
    model: Any, *, dims: int | None, use_mlngm: bool | None, device: str, patch_size: Sequence[int] | None
) -> Callable[[Case], np.ndarray]:
    """A function case -> label map that prepares the network input and runs the model on it."""
    model_dims = getattr(model, "spatial_dims", None)
    if dims is None:
        dims = model_dims
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3 (the model's spatial dimensions), got {dims!r}")
    if model_dims is not None and model_dims != dims:
        raise ValueError(f"dims={dims} contradicts the model, whose spatial_dims is {model_dims}")
    # Imported here so that scoring precomputed predictions needs neither torch nor the network code.
    from lmisa_lite.inference import predict_volume
    from lmisa_lite.preprocessing import input_kind, network_input

    trained_on_mlngm = input_kind(model) == "mlngm"
    if use_mlngm is not None and bool(use_mlngm) != trained_on_mlngm:
        raise ValueError(f"use_mlngm={use_mlngm} contradicts the model, which was trained on "
                         f"{'MLNGM maps' if trained_on_mlngm else 'z-scored intensities'} "
                         f"(model.input_kind={input_kind(model)!r}); leave use_mlngm out")

    def predict(case: Case) -> np.ndarray:
        if dims == 3 and case.ndim == 2:
            raise ValueError(f"case {case.case_id!r} is 2D, but the model is 3D")
        slicewise = dims == 2 and case.ndim == 3
        x = network_input(case.image, use_mlngm=trained_on_mlngm, slicewise=slicewise)
        return predict_volume(model, x, patch_size=patch_size, device=device)

    return predict


def evaluate(
    model: Any,
    cases: Iterable[Case],
    *,
    dims: int | None = None,
    use_mlngm: bool | None = None,
    class_names: ClassNames | None = None,
    labels: Iterable[int] | None = None,
    device: str = "auto",
    patch_size: Sequence[int] | None = None,
    progress: bool = True,
    predict_fn: Callable[[Case], np.ndarray] | None = None,
) -> pd.DataFrame:
    """Segment every case and score every foreground class against its label map.

    Each image is prepared as the model was trained (``model.input_kind``: MLNGM then z-score, or z-score
    only; slice by slice when a 2D model meets a 3D volume, see :func:`lmisa_lite.preprocessing.model_input`) and ``lmisa_lite.inference.predict_volume``. Volumes are scored
    whole, with distances in mm from ``case.spacing``.

    Args:
        model: A trained ``LMISANet``; may be None when ``predict_fn`` is given.
        cases: Labelled cases, ``case.image`` and ``case.label`` of shape ``(X, Y)`` or ``(X, Y, Z)``.
        dims: Spatial dimensions of the model (2 or 3); None reads ``model.spatial_dims``.
        use_mlngm: None (the default) reads the input from the model (``model.input_kind``); True or False
            only confirm it, and one that contradicts the model raises ValueError.
        class_names: ``{label: name}`` or a sequence indexed by label (index 0 is background).
        labels: Foreground labels to score; None takes ``range(1, model.num_classes)`` and, without a
            model, every nonzero label found in the prediction or the reference of each case.
        device: Torch device for inference; ``"auto"`` picks CUDA when available.
        patch_size: Sliding-window patch for 3D models; None uses the model's training patch
            (``model.patch_size``, see :func:`lmisa_lite.inference.predict_volume`).
        progress: Show a progress bar over cases.
        predict_fn: Optional replacement for the network: a callable ``case -> label map`` of the shape
            of ``case.label``, for scoring stored predictions or a different model.

    Returns:
        One row per case and class with the columns of :data:`COLUMNS`: ``case_id``, ``modality``,
        ``label``, ``class``, ``dice``, ``assd``, ``hd95``, ``precision``, ``recall``, ``iou`` (NaN where
        undefined) and the flags ``empty_pred``, ``empty_target``. ``attrs["distance_unit"]`` is ``"mm"``.

    Raises:
        ValueError: If neither ``model`` nor ``predict_fn`` is given, ``dims`` is not 2 or 3 or
            contradicts the model, a case has no label map, or a prediction has the wrong shape.

    Examples:
        >>> import numpy as np
        >>> from data_utils.case import Case
        >>> label = np.zeros((8, 8), np.uint8); label[2:6, 2:6] = 1
        >>> case = Case(np.zeros((8, 8), np.float32), label, (1.0, 1.0), "c0", "ct")
        >>> df = evaluate(None, [case], predict_fn=lambda c: c.label, progress=False)
        >>> df[["case_id", "label", "dice", "assd"]].to_dict("records")
        [{'case_id': 'c0', 'label': 1, 'dice': 1.0, 'assd': 0.0}]
    """
    if predict_fn is None:
        if model is None:
            raise ValueError("model is None: give a trained network, or a predict_fn(case) -> label map")
        predict_fn = _network_predictor(model, dims=dims, use_mlngm=use_mlngm, device=device,
                                        patch_size=patch_size)
    if labels is None and getattr(model, "num_classes", None) is not None:
        labels = range(1, int(model.num_classes))
    labels = None if labels is None else list(labels)

    rows = []
    total = len(cases) if hasattr(cases, "__len__") else None
    for case in tqdm(cases, total=total, desc="evaluate", unit="case", disable=not progress):
        if case.label is None:
            raise ValueError(f"case {case.case_id!r} has no label map to score against")
        pred = np.asarray(predict_fn(case))
        if pred.shape != case.label.shape:
            raise ValueError(f"prediction for case {case.case_id!r} has shape {pred.shape}, its label "
                             f"{case.label.shape}")
        for row in evaluate_case(pred, case.label, spacing=case.spacing, labels=labels,
                                 class_names=class_names):
            rows.append({"case_id": case.case_id, "modality": case.modality, **row})

    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype({"label": int, "empty_pred": bool, "empty_target": bool,
                    **{m: float for m in RATIO_METRICS + DISTANCE_METRICS}})
    df.attrs["distance_unit"] = "mm"
    return df


def _stats(values: np.ndarray) -> tuple[float, float, int]:
    """Mean, population standard deviation and NaN count of ``values``, ignoring the NaNs."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return float("nan"), float("nan"), int(values.size)
    return float(finite.mean()), float(finite.std()), int(values.size - finite.size)


def summarize(
    df: pd.DataFrame,
    *,
    class_names: ClassNames | None = None,
    metrics: Sequence[str] = ("dice", "assd"),
    percent: bool = True,
) -> pd.DataFrame:
    """Average per-case scores over cases, per class, plus a ``mean`` row across classes.

    For every class, each metric gets its mean over cases (NaNs skipped), the standard deviation over
    cases (population, ``ddof=0``) and the number of cases where it was NaN. The ``mean`` row holds the
    mean of the class means (the paper's "average" column); its standard deviation is taken over cases of
    each case's class average, and its NaN count is the total over classes.

    Args:
        df: Per-case table as returned by :func:`evaluate` (needs ``case_id``, ``label`` and the metrics).
        class_names: Names for the rows, ``{label: name}`` or a sequence indexed by label; None keeps
            the ``class`` column of ``df``.
        metrics: Metric columns to summarise, in order.
        percent: Report the ratio metrics (Dice, IoU, precision, recall) in percent.

    Returns:
        A DataFrame indexed by class name (then ``"mean"``) with columns ``n_cases`` and, per metric
        ``m``, ``m`` (mean), ``m_std`` and ``m_nan``. ``attrs`` records ``percent`` (the metrics given in
        percent) and ``distance_unit`` (copied from ``df.attrs``, if set).

    Raises:
        ValueError: If ``df`` is empty or lacks a needed column.

    Examples:
        >>> import pandas as pd
        >>> df = pd.DataFrame({"case_id": ["a", "b"], "label": [1, 1], "class": ["kidney"] * 2,
        ...                    "dice": [0.8, 0.9], "assd": [2.0, float("nan")]})
        >>> s = summarize(df)
        >>> s[["n_cases", "dice", "dice_std", "assd", "assd_nan"]].round(6).to_dict("index")["kidney"]
        {'n_cases': 2, 'dice': 85.0, 'dice_std': 5.0, 'assd': 2.0, 'assd_nan': 1}
    """
    metrics = list(metrics)
    missing = [c for c in ["case_id", "label", *metrics] if c not in df.columns]
    if missing:
        raise ValueError(f"df lacks the columns {missing}; expected the table returned by evaluate()")
    if df.empty:
        raise ValueError("df has no rows to summarise")
    scale = {m: 100.0 if percent and m in RATIO_METRICS else 1.0 for m in metrics}
    case_keys = [c for c in ("case_id", "modality") if c in df.columns]

    rows: dict[str, dict[str, float]] = {}
    for label, group in df.groupby("label", sort=True):
        if class_names is not None or "class" not in group.columns:
            name = class_name(int(label), class_names)
        else:
            name = str(group["class"].iloc[0])
        row: dict[str, float] = {"n_cases": len(group)}
        for m in metrics:
            row[m], row[f"{m}_std"], row[f"{m}_nan"] = _stats(group[m].to_numpy(float) * scale[m])
        rows[name] = row

    mean_row: dict[str, float] = {"n_cases": int(df.groupby(case_keys).ngroups)}
    for m in metrics:
        class_means = np.array([r[m] for r in rows.values()])
        mean_row[m] = _stats(class_means)[0]
        per_case = df.groupby(case_keys)[m].apply(lambda v: _stats(v.to_numpy(float))[0])
        mean_row[f"{m}_std"] = _stats(per_case.to_numpy(float) * scale[m])[1]
        mean_row[f"{m}_nan"] = sum(r[f"{m}_nan"] for r in rows.values())
    rows["mean"] = mean_row

    summary = pd.DataFrame.from_dict(rows, orient="index")
    summary.index.name = "class"
    summary = summary.astype({"n_cases": int, **{f"{m}_nan": int for m in metrics}})
    summary.attrs["percent"] = [m for m in metrics if scale[m] != 1.0]
    if "distance_unit" in df.attrs:
        summary.attrs["distance_unit"] = df.attrs["distance_unit"]
    return summary


def _default_index(df: pd.DataFrame) -> bool:
    """Whether ``df`` has the 0..n-1 index pandas gives by default (not worth printing or saving)."""
    index = df.index
    return isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1 and index.name is None


def _cell(value: Any, decimals: int) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{value:.{decimals}f}"
    return str(value)


def to_markdown(summary_df: pd.DataFrame, *, title: str | None = None, decimals: int = 1) -> str:
    """Render a table as GitHub-flavoured markdown, merging ``m``/``m_std`` pairs into "mean ± std".

    A metric with a ``m_nan`` column gets ``(k NaN)`` appended where k > 0. Other columns are printed
    as they are; the index is printed unless it is the default 0..n-1 range.

    Args:
        summary_df: Usually the output of :func:`summarize`; any DataFrame works.
        title: Optional bold line above the table.
        decimals: Digits after the decimal point for floats.

    Returns:
        The markdown text, ending with a newline.

    Raises:
        ValueError: If ``decimals`` is negative.

    Examples:
        >>> import pandas as pd
        >>> s = pd.DataFrame({"dice": [85.0], "dice_std": [2.5]}, index=pd.Index(["LVC"], name="class"))
        >>> print(to_markdown(s), end="")
        | class | Dice |
        | --- | ---: |
        | LVC | 85.0 ± 2.5 |
    """
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    percent = set(summary_df.attrs.get("percent", ()))
    unit = summary_df.attrs.get("distance_unit")
    merged = [c for c in summary_df.columns if f"{c}_std" in summary_df.columns]
    hidden = {f"{c}_std" for c in merged} | {f"{c}_nan" for c in merged}
    columns = [c for c in summary_df.columns if c not in hidden]

    def header(column: Any) -> str:
        text = _TITLES.get(column, str(column))
        if column in percent:
            return f"{text} (%)"
        if unit and column in DISTANCE_METRICS:
            return f"{text} ({unit})"
        return text

    def cell(row: dict[Any, Any], column: Any) -> str:
        text = _cell(row[column], decimals)
        if column in merged:
            std = row[f"{column}_std"]
            if not pd.isna(row[column]) and not pd.isna(std):
                text += f" ± {_cell(std, decimals)}"
            n_nan = int(row.get(f"{column}_nan", 0))
            if n_nan:
                text += f" ({n_nan} NaN)"
        return text

    show_index = not _default_index(summary_df)
    head = ([str(summary_df.index.name or "")] if show_index else []) + [header(c) for c in columns]
    align = (["---"] if show_index else []) + ["---:"] * len(columns)
    body = []
    # itertuples keeps each column's dtype (iterrows would turn integer counts into floats).
    for key, *values in summary_df.itertuples(name=None):
        row = dict(zip(summary_df.columns, values))
        body.append(([str(key)] if show_index else []) + [cell(row, c) for c in columns])

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = ([f"**{title}**", ""] if title else []) + [line(head), line(align)] + [line(b) for b in body]
    return "\n".join(lines) + "\n"


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV atomically: to a temporary file in the same folder, then renamed into place.

    The index is written unless it is the default 0..n-1 range. Missing parent folders are created.

    Args:
        df: The table, e.g. from :func:`evaluate` or :func:`summarize`.
        path: Destination ``.csv`` file; replaced if it exists.

    Returns:
        The path written.

    Examples:
        >>> import pandas as pd, tempfile, pathlib
        >>> out = write_csv(pd.DataFrame({"dice": [0.9]}), pathlib.Path(tempfile.mkdtemp()) / "scores.csv")
        >>> out.read_text()
        'dice\\n0.9\\n'
    """
    return atomic_write_text(path, df.to_csv(index=not _default_index(df)))
