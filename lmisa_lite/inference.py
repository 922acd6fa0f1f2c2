"""Segment a prepared image or volume with a trained network: whole, slice by slice or by sliding windows."""
from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lmisa_lite.device import (autocast, autocast_dtype, channels_last_format, evaluation_mode,
                               in_memory_format)


def _padded(shape: Sequence[int], divisor: int) -> tuple[int, ...]:
    return tuple(-(-s // divisor) * divisor for s in shape)


def _pad_like_training(x: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Centre-pad the first axes of ``x`` to ``shape`` with each image's minimum (its background), as in
    training; a stack of slices ``(X, Y, Z)`` gets each slice's own minimum.

    Returns:
        The padded array and the window of ``x`` inside it (for cropping results back).
    """
    lead = len(shape)
    window = tuple(slice((s - n) // 2, (s - n) // 2 + n) for n, s in zip(x.shape, shape))
    if tuple(x.shape[:lead]) == tuple(shape):
        return x, window
    out = np.empty(tuple(shape) + x.shape[lead:], dtype=x.dtype)
    out[...] = x.min(axis=tuple(range(lead)), keepdims=True)
    out[window] = x
    return out, window


def _weight_map(patch: Sequence[int], blend: str) -> np.ndarray:
    """Blending weights of one window: uniform, or a Gaussian (sigma = patch / 8) that trusts the centre."""
    if blend == "uniform":
        return np.ones(patch, dtype=np.float32)
    axes = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) for p in patch]
    weights = np.ones(patch, dtype=np.float64)
    for axis, g in enumerate(axes):
        weights = weights * g.reshape([-1 if a == axis else 1 for a in range(len(patch))])
    return np.maximum(weights / weights.max(), 1e-3).astype(np.float32)  # no zero weight at window edges


def _starts(size: int, patch: int, overlap: float) -> list[int]:
    stride = max(1, int(round(patch * (1 - overlap))))
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # the last window ends at the border
    return starts


def _check_inputs(model: nn.Module, image: np.ndarray, *, overlap: float, batch_size: int, blend: str
                  ) -> tuple[int, int]:
    """The model's ``(spatial_dims, depth)``, after checking that the image and the options fit it."""
    dims, depth = getattr(model, "spatial_dims", None), getattr(model, "depth", None)
    if dims not in (2, 3) or depth is None:
        raise ValueError("model: expected a network with spatial_dims (2 or 3) and depth, e.g. LMISANet")
    if image.ndim not in (2, 3):
        raise ValueError(f"image: expected (X, Y) or (X, Y, Z), got shape {image.shape}")
    if dims == 3 and image.ndim != 3:
        raise ValueError(f"image: a 3D model needs a volume (X, Y, Z), got shape {image.shape}")
    if not np.isfinite(image).all():
        raise ValueError("image: contains NaN or infinite values")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap={overlap}: expected a fraction in [0, 1)")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if blend not in ("gaussian", "uniform"):
        raise ValueError(f"blend={blend!r}: expected 'gaussian' or 'uniform'")
    return dims, depth


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    *,
    patch_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    return_probs: bool = False,
    blend: str = "gaussian",
    amp: bool | None = False,
    channels_last: bool = True,
) -> np.ndarray:
    """Segment a prepared network input (see :func:`lmisa_lite.preprocessing.model_input`).

    - 2D model, 2D image ``(X, Y)``: padded to a multiple of ``2**(depth-1)``, one forward pass, cropped back.
    - 2D model, volume ``(X, Y, Z)``: the same, slice by slice along the last axis, ``batch_size`` slices per
      pass (prepare the volume with ``slicewise=True``).
    - 3D model, volume ``(X, Y, Z)``: sliding windows of ``patch_size`` with the given ``overlap``; softmax
      probabilities of overlapping windows are averaged with ``blend`` weights.

    Padding uses each image's minimum, the background value of a prepared input, as training does. The model
    is put in eval mode (and moved to ``device`` and to the memory format) for the call and restored
    afterwards.

    Args:
        model: A trained :class:`lmisa_lite.networks.LMISANet` (anything with ``spatial_dims`` and ``depth``
            attributes whose forward returns ``(reconstruction, seg_logits)``).
        image: Float ``(X, Y)`` or ``(X, Y, Z)``.
        patch_size: 3D models: window ``(X, Y, Z)``, each a multiple of ``2**(depth-1)``. None uses the
            model's training patch (``model.patch_size``, set by training and
            :func:`lmisa_lite.training.load_checkpoint`) or, when unknown, the whole padded volume. Ignored by
            2D models.
        overlap: Fraction of a window shared with its neighbour, in ``[0, 1)``.
        batch_size: Slices or windows per forward pass.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        return_probs: Return class probabilities instead of labels.
        blend: ``"gaussian"`` or ``"uniform"`` weighting of overlapping windows.
        amp: Mixed precision, as ``TrainConfig.amp``: False (default) computes in float32, so that
            probabilities are the same on every machine; None uses what training uses by default (float16
            on CUDA, bfloat16 on CPUs with native bfloat16, see :func:`lmisa_lite.device.autocast_dtype`);
            True forces it on. The softmax is float32 either way.
        channels_last: Run in channels-last memory format (faster convolutions; same values up to float
            rounding).

    Returns:
        uint8 labels of the image's shape, or float32 probabilities ``(C, *image.shape)``.

    Raises:
        ValueError: If ``image`` is not 2D/3D or does not fit the model, or an option is out of range.

    Examples:
        >>> from lmisa_lite.networks import LMISANet
        >>> net = LMISANet(spatial_dims=2, base_filters=4)
        >>> predict_volume(net, np.zeros((30, 21, 5), np.float32), device="cpu").shape
        (30, 21, 5)
    """
    image = np.asarray(image, dtype=np.float32)
    dims, depth = _check_inputs(model, image, overlap=overlap, batch_size=batch_size, blend=blend)
    divisor = 2 ** (depth - 1)
    fmt = channels_last_format(dims, channels_last)

    with evaluation_mode(model, device) as target, in_memory_format(model, fmt):
        run = _Forward(model, target, fmt, autocast_dtype(target, amp))
        if dims == 2:
            probs = _predict_slices(run, image, divisor, batch_size)
        else:
            probs = _predict_windows(run, image, patch_size, divisor, overlap, batch_size, blend)
    if return_probs:
        return probs
    return probs.argmax(0).astype(np.uint8)


class _Forward:
    """``(B, *S)`` inputs -> ``(B, C, *S)`` softmax probabilities as float32 NumPy, in the memory format and
    precision of the call."""

    def __init__(self, model: nn.Module, device: torch.device, fmt: torch.memory_format,
                 amp_dtype: torch.dtype | None) -> None:
        self.model, self.device, self.fmt, self.amp_dtype = model, device, fmt, amp_dtype
        self.num_classes = getattr(model, "num_classes", None)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).unsqueeze(1).to(self.device)
        with autocast(self.device, self.amp_dtype):
            _, logits = self.model(x.contiguous(memory_format=self.fmt))
        # back to plain layout before NumPy, which would otherwise get channels-last strides
        return torch.softmax(logits.float(), dim=1).contiguous().cpu().numpy()


def _predict_slices(forward: _Forward, image: np.ndarray, divisor: int, batch_size: int) -> np.ndarray:
    size = image.shape[:2]
    stack = image[..., None] if image.ndim == 2 else image  # (X, Y, Z)
    stack, window = _pad_like_training(stack, _padded(size, divisor))
    slices = np.moveaxis(stack, -1, 0)  # (Z, X', Y')
    probs = np.concatenate([forward(slices[i:i + batch_size])
                            for i in range(0, len(slices), batch_size)])  # (Z, C, X', Y')
    probs = np.moveaxis(probs, 0, -1)[(slice(None), *window)]  # (C, X, Y, Z)
    return probs[..., 0] if image.ndim == 2 else probs


def _predict_windows(forward: _Forward, volume: np.ndarray, patch_size: Sequence[int] | None, divisor: int,
                     overlap: float, batch_size: int, blend: str) -> np.ndarray:
    if patch_size is None:
        patch_size = getattr(forward.model, "patch_size", None)
    if patch_size is None:
        patch = _padded(volume.shape, divisor)
    else:
        patch = tuple(int(p) for p in patch_size)
        if len(patch) != 3 or any(p < 1 or p % divisor for p in patch):
            raise ValueError(f"patch_size={tuple(patch_size)}: expected 3 sizes, each a multiple of "
                             f"{divisor} (2**(depth-1))")
    # Pad to at least one window and to a multiple of the divisor, so every window fits the network.
    shape = _padded([max(s, p) for s, p in zip(volume.shape, patch)], divisor)
    padded, inside = _pad_like_training(volume, shape)
    weights = _weight_map(patch, blend)
    total = np.zeros((forward.num_classes, *shape), dtype=np.float32)
    norm = np.zeros(shape, dtype=np.float32)
    corners = list(itertools.product(*(_starts(s, p, overlap) for s, p in zip(shape, patch))))
    for i in range(0, len(corners), batch_size):
        chunk = corners[i:i + batch_size]
        windows = [tuple(slice(c, c + p) for c, p in zip(corner, patch)) for corner in chunk]
        probs = forward(np.stack([padded[w] for w in windows]))
        for window, p in zip(windows, probs):
            total[(slice(None), *window)] += p * weights
            norm[window] += weights
    return (total / norm)[(slice(None), *inside)]
