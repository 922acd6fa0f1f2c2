"""What a run ran on: package versions, the device, threads and the source commit, for notebooks and reports."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

#: Packages whose versions can change a result or a figure.
PACKAGES = ("lmisa-lite", "torch", "numpy", "scipy", "scikit-image", "scikit-learn", "nibabel", "matplotlib",
            "pandas", "papermill")


def git_commit(folder: str | os.PathLike | None = None) -> str | None:
    """The short commit of the source tree (the package's own checkout by default), or None outside git."""
    folder = Path(folder) if folder is not None else Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, str]:
    """Python, the packages of :data:`PACKAGES`, the compute device, threads and the commit, as strings.

    Examples:
        >>> info = environment()
        >>> sorted(k for k in info if k in ("python", "torch", "device", "torch threads"))
        ['device', 'python', 'torch', 'torch threads']
    """
    import torch

    from lmisa_lite.device import cpu_has_native_bf16

    info = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    if torch.cuda.is_available():
        info["device"] = f"CUDA: {torch.cuda.get_device_name(0)}"
    else:
        bf16 = "native bf16" if cpu_has_native_bf16() else "no native bf16"
        info["device"] = f"CPU ({os.cpu_count()} cores, {bf16})"
    info["torch threads"] = str(torch.get_num_threads())
    info["commit"] = git_commit() or "unknown"
    return info


def environment_table():
    """:func:`environment` as a one-column :class:`pandas.DataFrame`, for a notebook's environment cell."""
    import pandas as pd

    return pd.DataFrame({"value": environment()}).rename_axis("")
