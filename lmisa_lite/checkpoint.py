"""Checkpoint files: atomic writes, plain-data contents, clear errors, loading a network and resuming a run.

A checkpoint is a dict of tensors and plain Python values (no pickled classes), so that it loads with
``torch.load(..., weights_only=True)``. The keys written by :func:`lmisa_lite.training.train` are::

    format, version, step, config, model, critic, opt_g, opt_c, sched_g, sched_c, scaler,
    rng, history, best_val_loss, best_step, ema

``model`` holds the trained weights (what a resumed run continues from) and ``ema`` their moving average
(what :func:`load_checkpoint` and inference use), when the run kept one.
"""
from __future__ import annotations

import math
import os
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_utils.atomic import atomic_path
from lmisa_lite.config import ARCHITECTURE_FIELDS, TrainConfig, build_networks
from lmisa_lite.device import resolve_device
from lmisa_lite.networks import LMISANet

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


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[LMISANet, TrainConfig]:
    """Rebuild the trained network of a checkpoint (``last.pt`` or ``best.pt``).

    Args:
        path: Checkpoint file written by :func:`train`.
        device: Where to put the network (``"auto"`` allowed).

    Returns:
        ``(model, config)``: the network in eval mode and the run's :class:`TrainConfig`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not an lmisa-lite checkpoint.

    Examples:
        >>> model, config = load_checkpoint("runs/kidney/best.pt")  # doctest: +SKIP
    """
    state = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(state["config"])
        model, _ = build_networks(config)
        model.load_state_dict(state.get("ema") or state["model"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path}: does not hold a trained lmisa-lite network ({err})") from err
    return model.to(resolve_device(device)).eval(), config


@dataclass
class Progress:
    """Where a run stands: what :func:`resume_training` gives back and every checkpoint records."""

    step: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best_val_loss: float = math.inf
    best_step: int | None = None
    best_state: dict[str, torch.Tensor] | None = None  # the weights of best_step (kept on rank 0 only)


def resume_training(config: TrainConfig, stateful: dict[str, Any], *, last_path: Path | None,
                    best_path: Path | None, device: torch.device, history_keys: tuple[str, ...],
                    is_main: bool = True) -> Progress:
    """Restore a run from ``last_path`` when ``config.resume`` asks for it; else a fresh :class:`Progress`.

    Args:
        config: The run's config; its architecture fields must equal those the checkpoint was written with.
        stateful: ``{key: object with load_state_dict}`` (None entries are skipped), filled in place.
        last_path: ``last.pt``, or None when the run writes no files.
        best_path: ``best.pt``, whose weights become :attr:`Progress.best_state` (on the main process).
        device: Where the tensors go.
        history_keys: The history's keys, for a fresh run.
        is_main: Whether this is rank 0 (which alone warns and reads ``best.pt``).

    Returns:
        The step to start from, the history so far and the best validation so far.

    Raises:
        ValueError: If the checkpoint's config differs from ``config`` in an architecture field.
    """
    fresh = Progress(history={k: [] for k in history_keys})
    if not config.resume or last_path is None:
        return fresh
    if not last_path.is_file():
        if is_main:
            warnings.warn(f"resume=True but {last_path} does not exist: starting from step 0", stacklevel=3)
        return fresh
    state = read_checkpoint(last_path, map_location=device)
    saved = TrainConfig.from_dict(state["config"])
    changed = [k for k in ARCHITECTURE_FIELDS if getattr(saved, k) != getattr(config, k)]
    if changed:
        raise ValueError(f"checkpoint {last_path}: cannot resume, config differs in {', '.join(changed)}")
    for key, obj in stateful.items():
        if obj is not None:
            obj.load_state_dict(state[key])
    set_rng_state(state["rng"])
    progress = Progress(state["step"], state["history"], state["best_val_loss"], state["best_step"])
    if is_main and best_path is not None and best_path.is_file():
        saved_best = read_checkpoint(best_path)
        progress.best_state = saved_best.get("ema") or saved_best["model"]
    return progress


def checkpoint_state(config: TrainConfig, progress: Progress, stateful: dict[str, Any]) -> dict[str, Any]:
    """Everything a checkpoint holds: the run's progress, its config, the random states and every state dict."""
    return dict(step=progress.step, config=config.to_dict(), rng=rng_state(), history=progress.history,
                best_val_loss=progress.best_val_loss, best_step=progress.best_step,
                **{key: None if obj is None else obj.state_dict() for key, obj in stateful.items()})
