"""Slice viewer for volumes, label maps and predictions: ipywidgets controls, matplotlib drawing.

Orientation: a slice along axis ``a`` keeps the other two axes in order, ``(h, v)``, and is drawn transposed with
``origin="lower"``: the first remaining axis runs left to right and the second bottom to top. For an axial slice
of an ``(X, Y, Z)`` array that is ``array[:, :, z].T`` with X horizontal and Y up; for RAS data the patient's
right is on the right of the screen (neurological convention) and anterior is at the top. Coronal slices show
X against Z and sagittal slices Y against Z, superior at the top.

The figure is a plain :class:`matplotlib.figure.Figure` outside pyplot, rendered to PNG into an
``ipywidgets.Image``: it updates in JupyterLab with the default inline backend, needs no ipympl, and never shows
up as a stray figure at the end of a cell.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import ipywidgets as w
import numpy as np
from matplotlib.colors import ListedColormap, to_hex, to_rgba
from matplotlib.figure import Figure

from lmisa_lite.overlay import (
    AXIS_NAMES,
    ArrayLike,
    class_cmap,
    class_legend_handles,
    draw_contours,
    legend_entries,
    montage_figure,
    panel_arrays,
    take_slice,
)

_DPI = 100
_MAX_WIDTH_IN = 12.0  # 1200 px at _DPI
