"""Where a model runs: ``device="auto"`` resolved in one place, and a context for inference on any device."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass anything else to :class:`torch.device`.

    Args:
        device: ``"auto"``, a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a :class:`torch.device`.

    Returns:
        The device.

    Raises:
        ValueError: For a string that is not a device, or CUDA requested where none is available.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return resolved


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, device: str | torch.device = "auto") -> Iterator[torch.device]:
    """Run ``model`` in eval mode without gradients on ``device`` (as :func:`resolve_device` reads it).

    Yields the device. Afterwards, also after an error, the model goes back to the device its parameters were
    on and to the train/eval mode it was in.
    """
    target = resolve_device(device)
    param = next(model.parameters(), None)
    home = param.device if param is not None else target
    was_training = model.training
    model.to(target).eval()
    try:
        with torch.no_grad():
            yield target
    finally:
        model.to(home).train(was_training)
