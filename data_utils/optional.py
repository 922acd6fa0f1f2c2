"""Lazy import of optional dependencies with an error that names the extra to install."""
from __future__ import annotations

import importlib
from types import ModuleType


def optional_import(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError that says which extra provides it.

    Args:
        module: Dotted module name, e.g. ``"pydicom"``.
        extra: The ``pip install lmisa-lite[EXTRA]`` extra that installs it.

    Returns:
        The imported module.

    Raises:
        ImportError: If the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{module!r} is needed for this feature: install it with `pip install 'lmisa-lite[{extra}]'`"
        ) from err
