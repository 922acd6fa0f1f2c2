"""lmisa-lite: LMISA cross-modality domain adaptation for medical image segmentation, in PyTorch.

The main names are importable from the package itself (loaded on first use, so ``import lmisa_lite`` stays
quick)::

    from lmisa_lite import mlngm, LMISANet, TrainConfig, train, predict_volume, evaluate
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "mlngm": "lmisa_lite.mlngm",
    "mlngm_torch": "lmisa_lite.mlngm",
    "LMISANet": "lmisa_lite.networks",
    "ShapeCritic": "lmisa_lite.networks",
    "count_parameters": "lmisa_lite.networks",
    "layer_table": "lmisa_lite.networks",
    "TrainConfig": "lmisa_lite.config",
    "TrainResult": "lmisa_lite.training",
    "train": "lmisa_lite.training",
    "load_checkpoint": "lmisa_lite.checkpoint",
    "predict_volume": "lmisa_lite.inference",
    "evaluate": "lmisa_lite.evaluation",
    "summarize": "lmisa_lite.evaluation",
    "dice": "lmisa_lite.metrics",
    "assd": "lmisa_lite.metrics",
    "hd95": "lmisa_lite.metrics",
    "run_ablation": "lmisa_lite.ablation",
    "evaluate_unseen": "lmisa_lite.ablation",
    "mlngm_explorer": "lmisa_lite.widgets",
    "SliceViewer": "lmisa_lite.widgets",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmisa_lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
