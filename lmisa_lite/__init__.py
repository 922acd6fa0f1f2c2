"""lmisa-lite: LMISA cross-modality domain adaptation, re-implemented in PyTorch."""
from __future__ import annotations

__version__ = "0.1.0"
