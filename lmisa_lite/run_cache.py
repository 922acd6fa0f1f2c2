"""Reuse of finished ablation runs: a variant whose folder records the same training key is not retrained.

Each variant's folder holds ``run.json`` (its keys, config, timing and the checkpoint chosen), ``last.pt``,
``best.pt`` and ``result.csv``. The *training key* hashes the variant, its config (less what only changes
where or how fast it runs), the package version and a fingerprint of the training data; the *evaluation key*
adds the test data. A second call with the same settings loads the checkpoint instead of training and, when
the evaluation key matches too, reads ``result.csv`` back. An interrupted run resumes from ``last.pt``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_utils.atomic import atomic_write_text
from data_utils.case import Case
from lmisa_lite import __version__
from lmisa_lite.checkpoint import load_checkpoint, read_checkpoint
from lmisa_lite.config import TrainConfig
from lmisa_lite.reports import read_cases
from lmisa_lite.training import train

# Config fields that change where or how fast a run goes (at most its rounding), not what it learns.
# (closed_form_penalty is not one: under bfloat16 it changes the critic's gradients; see TrainConfig.)
VOLATILE_FIELDS = ("out_dir", "resume", "device", "progress", "amp", "batched_passes", "channels_last",
                   "num_workers")


def fingerprint(cases: Sequence[Case]) -> str:
    """A short hash of the cases' ids, images and labels."""
    digest = hashlib.sha256()
    for case in cases:
        digest.update(case.case_id.encode())
        digest.update(np.ascontiguousarray(case.image).tobytes())
        if case.label is not None:
            digest.update(np.ascontiguousarray(case.label).tobytes())
    return digest.hexdigest()[:16]


def cache_key(payload: Mapping[str, Any]) -> str:
    """A short hash of a JSON-serialisable description."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_record(path: Path) -> dict[str, Any]:
    """The ``run.json`` of a variant, or ``{}`` when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@dataclass
class VariantRun:
    """A trained (or reused) variant: what :func:`train_or_reuse` returns."""

    model: Any
    history: dict[str, list[float]]
    seconds: float
    cpu_seconds: float | None
    reused: bool
    train_key: str
    eval_key: str
    record: dict[str, Any]  # the run.json found, when the run was reused

    @property
    def checkpoint(self) -> Path:
        """``best.pt`` when it exists, else ``last.pt``."""
        folder = Path(self.record["folder"])
        return folder / "best.pt" if (folder / "best.pt").is_file() else folder / "last.pt"


def train_or_reuse(variant: str, config: TrainConfig, data: Mapping[str, list[Case]], *,
                   keys: Mapping[str, Any]) -> VariantRun:
    """Train one variant into ``config.out_dir``, or load it when an identical run finished there.

    Args:
        variant: The variant's name.
        config: Its config; ``out_dir`` is the variant's folder.
        data: ``source_train``, ``target_train`` and ``source_val`` case lists.
        keys: ``train`` and ``eval`` descriptions that enter the two keys.
    """
    folder = Path(config.out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in config.to_dict().items() if k not in VOLATILE_FIELDS}
    train_key = cache_key({"variant": variant, "config": settings, "version": __version__, **keys["train"]})
    eval_key = cache_key({"train": train_key, **keys["eval"]})
    record = read_record(folder / "run.json")
    last, best = folder / "last.pt", folder / "best.pt"
    last_state = read_checkpoint(last) if record.get("train_key") == train_key and last.is_file() else None
    if last_state is not None and last_state["step"] >= config.steps and "train_seconds" in record:
        model, _ = load_checkpoint(best if best.is_file() else last, device=config.device)
        return VariantRun(model, last_state["history"], record["train_seconds"], record.get("train_cpu_seconds"),
                          True, train_key, eval_key, {**record, "folder": str(folder)})

    if last_state is None:  # files of another configuration would be mistaken for this one's
        for stale in (last, best, folder / "result.csv"):
            stale.unlink(missing_ok=True)
    atomic_write_text(folder / "run.json",
                      json.dumps({"variant": variant, "train_key": train_key, "config": config.to_dict()},
                                 indent=2))
    run_config = dataclasses.replace(config, resume=last_state is not None)
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(run_config, data["source_train"], data["target_train"], val=data["source_val"] or None)
    seconds, cpu_seconds = time.perf_counter() - wall, time.process_time() - cpu
    if last_state is not None and last_state["history"]["time"]:
        seconds += float(last_state["history"]["time"][-1])  # a resumed run: count the time before, too
    model = result.best_model if result.best_model is not None else result.model
    return VariantRun(model, result.history, seconds, cpu_seconds, False, train_key, eval_key,
                      {"folder": str(folder)})


def cached_cases(run: VariantRun) -> pd.DataFrame | None:
    """The stored per-case scores of a reused run whose evaluation key matches, else None."""
    path = Path(run.record["folder"]) / "result.csv"
    if run.reused and run.record.get("eval_key") == run.eval_key and path.is_file():
        return read_cases(path)
    return None


def write_record(run: VariantRun, variant: str, config: TrainConfig, describe: Mapping[str, Any]) -> None:
    """Write the variant's ``run.json``: keys, config, timing, the checkpoint chosen and ``describe``."""
    record = {"variant": variant, "train_key": run.train_key, "eval_key": run.eval_key,
              "config": config.to_dict(), "train_seconds": run.seconds, "train_cpu_seconds": run.cpu_seconds,
              "checkpoint": run.checkpoint.name, **describe}
    atomic_write_text(Path(run.record["folder"]) / "run.json", json.dumps(record, indent=2, default=str))
