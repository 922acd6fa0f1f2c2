"""Checkpoint files: atomic writes, plain-data contents and clear errors when a file is not one.

A checkpoint is a dict of tensors and plain Python values (no pickled classes), so that it loads with
``torch.load(..., weights_only=True)``. The keys written by :func:`lmisa_lite.training.train` are::

    format, version, step, config, model, critic, opt_g, opt_c, sched_g, sched_c, scaler,
    rng, history, best_val_loss, best_step
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmisa_lite._atomic import atomic_path

FORMAT = "lmisa-lite-checkpoint"
VERSION = 1


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    A reader never sees a half-written file: an interrupted run leaves the previous checkpoint intact.

    Args:
        state: Tensors and plain Python values; ``format`` and ``version`` keys are added.
        path: Destination file; its folder is created if needed.

    Returns:
        The destination path.

    Examples:
        >>> import tempfile, torch
        >>> p = save_checkpoint({"step": 3, "w": torch.zeros(2)}, tempfile.mkdtemp() + "/last.pt")
        >>> read_checkpoint(p)["step"]
        3
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` with ``weights_only=True``.

    Args:
        path: The ``.pt`` file.
        map_location: Where tensors are placed.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not a readable lmisa-lite checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not an lmisa-lite checkpoint (no format={FORMAT!r} entry)")
    return state


def rng_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), NumPy and Python as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the random states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    py_state = state["python"]
    random.setstate((py_state["version"], tuple(int(v) for v in py_state["internal"].tolist()),
                     py_state["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
