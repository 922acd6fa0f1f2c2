"""The network's input: the MLNGM edge map then a z-score (LMISA), or the z-scored intensities (a baseline).

A trained :class:`lmisa_lite.networks.LMISANet` records which of the two it was trained on
(``model.input_kind``, saved in its checkpoint), so :func:`model_input` prepares any image the way that model
expects, and evaluation, inference from the command line, the ablation and the notebooks all go through it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from data_utils.prepare import zscore
from lmisa_lite.mlngm import mlngm
from lmisa_lite.networks import INPUT_KINDS


def network_input(
    image: np.ndarray,
    *,
    use_mlngm: bool = True,
    slicewise: bool = False,
    levels: int = 4,
    window: int = 3,
) -> np.ndarray:
    """Prepare an image for the network: MLNGM edge map, then z-score.

    Args:
        image: ``(X, Y)`` or ``(X, Y, Z)`` intensities in any unit (HU, MR signal).
        use_mlngm: Compute the MLNGM map first; ``False`` z-scores the raw intensities (the baseline
            without the modality-independent input).
        slicewise: For a volume fed to a 2D model: compute the 2D map and z-score each ``(X, Y)`` slice
            along the last axis separately, as the 2D model sees them. No effect on a 2D image.
        levels: MLNGM resolution levels.
        window: MLNGM local normalisation window (voxels).

    Returns:
        Float32 array of the same shape as ``image``.

    Raises:
        ValueError: If ``image`` is not 2D or 3D (or holds NaN/inf).

    Examples:
        >>> x = network_input(np.random.rand(32, 32, 4), use_mlngm=False, slicewise=True)
        >>> x.shape, bool(abs(x[..., 0].mean()) < 1e-5)
        ((32, 32, 4), True)
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (X, Y) or (X, Y, Z), got shape {image.shape}")

    def prepare(x: np.ndarray) -> np.ndarray:
        return zscore(mlngm(x, levels=levels, window=window) if use_mlngm else x)

    if slicewise and image.ndim == 3:
        out = np.empty(image.shape, dtype=np.float32)
        for z in range(image.shape[-1]):
            out[..., z] = prepare(image[..., z])
        return out
    return prepare(image)


def input_kind(model: Any) -> str:
    """The input a network was trained on: ``model.input_kind`` (``"mlngm"`` or ``"zscore"``).

    Anything without the attribute (a network built by hand) counts as ``"mlngm"``, LMISA's input.

    Raises:
        ValueError: If the attribute holds something else.
    """
    kind = getattr(model, "input_kind", "mlngm")
    if kind not in INPUT_KINDS:
        raise ValueError(f"model.input_kind={kind!r}: expected one of {list(INPUT_KINDS)}")
    return kind


def model_input(model: Any, image: np.ndarray, *, slicewise: bool | None = None) -> np.ndarray:
    """Prepare ``image`` the way ``model`` was trained (see :func:`input_kind`).

    Args:
        model: A network with ``input_kind`` and ``spatial_dims`` (an :class:`~lmisa_lite.networks.LMISANet`).
        image: ``(X, Y)`` or ``(X, Y, Z)`` intensities.
        slicewise: Prepare a volume slice by slice; None does so exactly when a 2D model meets a volume.

    Returns:
        Float32 array of the same shape as ``image``.

    Examples:
        >>> from lmisa_lite.networks import LMISANet
        >>> raw = LMISANet(base_filters=4, input_kind="zscore")
        >>> x = model_input(raw, np.arange(12.0).reshape(3, 4))
        >>> bool(np.allclose(x, (np.arange(12) - 5.5) / np.arange(12).std()))
        True
    """
    image = np.asarray(image)
    if slicewise is None:
        slicewise = getattr(model, "spatial_dims", 2) == 2 and image.ndim == 3
    return network_input(image, use_mlngm=input_kind(model) == "mlngm", slicewise=slicewise)
