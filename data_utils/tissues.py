"""Tissue properties and the imaging physics that turn a tissue map into CT and MR images.

A phantom is first a map of tissue classes. Each modality then sees the same map through its own physics:

- CT: every tissue has a Hounsfield value without and with iodinated contrast (enhancement depends on the
  tissue's blood supply), plus a tissue texture; the scanner blurs (point-spread function) and adds noise.
- MRI: every tissue has a proton density and T1/T2 relaxation times; a sequence turns them into a signal
  (spin echo or balanced SSFP), flowing blood loses signal in spin echo (flow void), the receive coil adds a
  smooth multiplicative bias, the magnitude image carries Rician noise, and the overall scale is arbitrary.

Because the two physics are unrelated, a boundary that is strong in one modality can be weak or inverted
in the other (fat dark in CT, bright in T1; bone bright in CT, dark in MRI; kidney brighter than liver in
contrast CT, slightly darker in T1). Values are approximate (1.5 T relaxation times in ms, CT in HU).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

__all__ = ["SEQUENCES", "TISSUES", "Tissue", "bias_field", "render_ct", "render_mri", "smooth_noise"]


class Tissue(NamedTuple):
    """Physical properties of one tissue class.

    Attributes:
        hu: CT number without contrast agent (HU).
        hu_contrast: CT number in a typical contrast-enhanced phase (HU).
        pd: Proton density relative to water.
        t1: T1 relaxation time at 1.5 T (ms).
        t2: T2 relaxation time at 1.5 T (ms).
        texture_hu: Amplitude of the tissue texture in CT (HU per unit of the texture field).
        texture_mr: Relative amplitude of the tissue texture in MRI.
        flow: 0 for static tissue, 1 for fast-flowing blood (signal loss in spin echo).
    """

    hu: float
    hu_contrast: float
    pd: float
    t1: float
    t2: float
    texture_hu: float = 5.0
    texture_mr: float = 0.04
    flow: float = 0.0


# Values marked "approx." are not from the shared reference table but typical literature values.
TISSUES: dict[str, Tissue] = {
    "air": Tissue(-1000, -1000, 0.0, 1000, 1, 0, 0.0),
    "lung": Tissue(-850, -850, 0.15, 1200, 40, 25, 0.3),
    "fat": Tissue(-100, -100, 0.95, 260, 85, 10, 0.05),
    "muscle": Tissue(45, 60, 0.7, 870, 47, 8, 0.06),
    "liver": Tissue(60, 110, 0.7, 580, 45, 6, 0.04),
    "spleen": Tissue(45, 120, 0.8, 1060, 80, 6, 0.04),
    "kidney_cortex": Tissue(35, 180, 0.8, 970, 87, 8, 0.05),
    "kidney_medulla": Tissue(35, 90, 0.8, 1410, 85, 8, 0.05),
    "pancreas": Tissue(40, 100, 0.75, 725, 43, 10, 0.08),  # approx.
    "fluid": Tissue(10, 10, 1.0, 4000, 2000, 3, 0.02),  # CSF, bile, urine
    "blood": Tissue(40, 330, 0.9, 1440, 290, 5, 0.03, 1.0),  # arterial, left heart
    "blood_venous": Tissue(40, 170, 0.9, 1440, 200, 5, 0.03, 0.6),  # approx. T2; right heart, veins
    "myocardium": Tissue(45, 110, 0.8, 1030, 50, 6, 0.04),
    "bone": Tissue(1000, 1000, 0.05, 1000, 1, 60, 0.2),  # cortical bone
    "marrow": Tissue(250, 280, 0.8, 550, 50, 50, 0.15),
    "disc": Tissue(80, 90, 0.8, 1100, 100, 8, 0.05),  # approx.
    "cord": Tissue(35, 40, 0.75, 800, 80, 4, 0.03),  # approx.
    "bowel_wall": Tissue(40, 110, 0.75, 800, 60, 8, 0.05),  # approx.
    "bowel_content": Tissue(20, 20, 0.85, 1500, 150, 35, 0.35),  # approx.; chyme and faeces
    "table": Tissue(100, 100, 0.0, 1000, 1, 20, 0.0),  # scanner couch: seen by CT, no MR signal
}

# Sequence parameters: TR and TE in ms, flip angle in degrees; ``void`` is the signal lost by fast flow.
SEQUENCES: dict[str, dict[str, float | str]] = {
    "t1_se": {"kind": "se", "tr": 500.0, "te": 10.0, "void": 0.85},
    "t2_se": {"kind": "se", "tr": 3000.0, "te": 90.0, "void": 0.85},
    "bssfp": {"kind": "bssfp", "flip": 60.0, "void": 0.0},
}


def _table(names: Sequence[str]) -> np.ndarray:
    """Property rows ``(len(names), 8)`` for a list of tissue names."""
    unknown = [n for n in names if n not in TISSUES]
    if unknown:
        raise ValueError(f"tissues: unknown tissue names {unknown}; expected names from {sorted(TISSUES)}")
    return np.array([TISSUES[n] for n in names], dtype=np.float64)


def _jitter(names: Sequence[str], rng: np.random.Generator, amount: float) -> np.ndarray:
    """One random factor per distinct tissue name (so organs of one tissue stay alike), ``(len(names),)``."""
    distinct = sorted(set(names))
    draws = dict(zip(distinct, rng.uniform(1 - amount, 1 + amount, len(distinct))))
    return np.array([draws[n] for n in names])


def smooth_noise(shape: tuple[int, ...], sigma: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation.

    Args:
        shape: Array shape, e.g. ``(X, Y, Z)``.
        sigma: Smoothing width in voxels, one per axis (0 for none).
        rng: Random generator.

    Returns:
        Float32 field of ``shape`` with mean about 0 and standard deviation 1.

    Examples:
        >>> f = smooth_noise((32, 32), (2.0, 2.0), np.random.default_rng(0))
        >>> f.shape, round(float(f.std()), 3)
        ((32, 32), 1.0)
    """
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma, mode="wrap")
    return field / max(float(field.std()), 1e-12)


def bias_field(
    shape: tuple[int, ...], spacing: Sequence[float], rng: np.random.Generator, *, strength: float = 0.25
) -> np.ndarray:
    """A smooth multiplicative receive-coil bias field.

    The logarithm of the field is a sum of a few random cosines with wavelengths longer than the field of
    view, scaled so that it spans ``[-strength, strength]``; the field itself spans about
    ``[exp(-strength), exp(strength)]``.

    Args:
        shape: Array shape ``(X, Y)`` or ``(X, Y, Z)``.
        spacing: Voxel size in mm, one per axis.
        rng: Random generator.
        strength: Half-range of the log-field; 0 gives a field of ones.

    Returns:
        Float32 positive field of ``shape``.

    Examples:
        >>> b = bias_field((64, 64), (2.5, 2.5), np.random.default_rng(0), strength=0.3)
        >>> bool(b.min() > 0.7 and b.max() < 1.4)
        True
    """
    axes = [((np.arange(n) + 0.5) / n - 0.5) * n * s for n, s in zip(shape, spacing)]
    fov = max(n * s for n, s in zip(shape, spacing))
    log = np.zeros(shape, np.float32)
    for _ in range(3):
        mode = np.ones((1,) * len(shape), np.float32)
        for axis, a in enumerate(axes):
            w = 2 * np.pi / (fov * rng.uniform(1.2, 3.0))
            wave = np.cos(w * a + rng.uniform(0, 2 * np.pi)).astype(np.float32)
            mode = mode * wave.reshape([-1 if i == axis else 1 for i in range(len(shape))])
        log += rng.uniform(-1, 1) * mode
    span = float(np.abs(log).max())
    return np.exp(log * (strength / span if span > 0 else 0.0)).astype(np.float32)


def _blur(image: np.ndarray, psf_mm: float, spacing: Sequence[float]) -> np.ndarray:
    # A voxel averages its footprint (box of std 0.29 voxel) on top of the scanner PSF: partial volume.
    sigma = [np.sqrt(0.29**2 + (psf_mm / s) ** 2) if n > 1 else 0.0 for s, n in zip(spacing, image.shape)]
    return ndimage.gaussian_filter(image, sigma, mode="nearest")


def render_ct(
    tissue_map: np.ndarray,
    *,
    tissues: Sequence[str],
    spacing: Sequence[float],
    rng: np.random.Generator,
    contrast: bool = True,
    enhancement: float = 1.0,
    texture: np.ndarray | None = None,
    psf_mm: float = 1.0,
    noise_hu: float = 12.0,
    jitter: float = 0.1,
) -> np.ndarray:
    """Render a CT image in Hounsfield units from a tissue map.

    Args:
        tissue_map: Integer map ``(X, Y)`` or ``(X, Y, Z)``; value ``i`` means tissue ``tissues[i]``.
        tissues: Tissue name (a key of :data:`TISSUES`) for each map value.
        spacing: Voxel size in mm per axis.
        rng: Random generator for the per-scan variation and the noise.
        contrast: Use contrast-enhanced CT numbers (False: plain CT).
        enhancement: Scale of the contrast uptake (timing and dose), 1 for the tabulated phase.
        texture: Unit-variance texture field of the map's shape, or None for homogeneous tissues.
        psf_mm: Standard deviation of the scanner point-spread function in mm.
        noise_hu: Standard deviation of the image noise in HU.
        jitter: Relative per-tissue variation of the enhancement; also sets a +-(50 * jitter) HU offset.

    Returns:
        Float32 image in HU, same shape as ``tissue_map``.

    Raises:
        ValueError: If a tissue name is unknown.

    Examples:
        >>> m = np.zeros((16, 16), np.uint8); m[4:12, 4:12] = 1
        >>> img = render_ct(m, tissues=["air", "fat"], spacing=(2.5, 2.5), rng=np.random.default_rng(0))
        >>> round(float(img[8, 8]) / 100), round(float(img[0, 0]) / 100)
        (-1, -10)
    """
    table = _table(tissues)
    hu = table[:, 0] + rng.uniform(-50, 50, len(tissues)) * jitter * (np.abs(table[:, 0]) < 500)
    if contrast:
        hu = hu + enhancement * (table[:, 1] - table[:, 0]) * _jitter(tissues, rng, jitter)
    image = hu.astype(np.float32)[tissue_map]
    if texture is not None:
        image += table[:, 5].astype(np.float32)[tissue_map] * texture
    image = _blur(image, psf_mm, spacing)
    image += rng.normal(0.0, noise_hu, image.shape).astype(np.float32)
    return image.astype(np.float32, copy=False)


def render_mri(
    tissue_map: np.ndarray,
    *,
    tissues: Sequence[str],
    spacing: Sequence[float],
    rng: np.random.Generator,
    sequence: str = "t1_se",
    texture: np.ndarray | None = None,
    psf_mm: float = 1.5,
    bias: float = 0.25,
    noise: float = 0.03,
    scale: float = 1000.0,
    jitter: float = 0.05,
) -> np.ndarray:
    """Render a magnitude MR image from a tissue map.

    Signal equations: spin echo ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``; balanced SSFP (TR << T2)
    ``PD sin(a) / ((T1/T2 + 1) - cos(a) (T1/T2 - 1))``. The noiseless image is blurred by the PSF,
    multiplied by a smooth bias field, made Rician (magnitude of signal plus complex Gaussian noise) and
    scaled.

    Args:
        tissue_map: Integer map ``(X, Y)`` or ``(X, Y, Z)``; value ``i`` means tissue ``tissues[i]``.
        tissues: Tissue name (a key of :data:`TISSUES`) for each map value.
        spacing: Voxel size in mm per axis.
        rng: Random generator for sequence timing, per-tissue variation, bias and noise.
        sequence: A key of :data:`SEQUENCES`.
        texture: Unit-variance texture field of the map's shape, or None.
        psf_mm: Standard deviation of the point-spread function in mm.
        bias: Half-range of the log bias field (0: no bias).
        noise: Noise standard deviation relative to the brightest tissue's signal (0: noiseless).
        scale: Arbitrary intensity scale of the scanner.
        jitter: Relative variation of T1, T2 (and half of it for PD) per tissue, and of TR, TE, flip angle.

    Returns:
        Float32 non-negative image, same shape as ``tissue_map``.

    Raises:
        ValueError: If ``sequence`` or a tissue name is unknown.

    Examples:
        >>> m = np.zeros((16, 16), np.uint8); m[4:12, 4:12] = 1
        >>> img = render_mri(m, tissues=["muscle", "fat"], spacing=(2.5, 2.5), rng=np.random.default_rng(0))
        >>> bool(img[8, 8] > 2 * img[0, 0] > 0)
        True
    """
    if sequence not in SEQUENCES:
        raise ValueError(f"sequence must be one of {sorted(SEQUENCES)}, got {sequence!r}")
    seq = SEQUENCES[sequence]
    table = _table(tissues)
    pd = table[:, 2] * _jitter(tissues, rng, jitter / 2)
    t1, t2 = table[:, 3] * _jitter(tissues, rng, jitter), table[:, 4] * _jitter(tissues, rng, jitter)

    def vary(value: float | str) -> float:  # scanner-to-scanner spread of the sequence timing
        return float(value) * rng.uniform(1 - jitter, 1 + jitter)

    if seq["kind"] == "se":
        signal = pd * (1 - np.exp(-vary(seq["tr"]) / t1)) * np.exp(-vary(seq["te"]) / t2)
    else:
        a, ratio = np.deg2rad(vary(seq["flip"])), t1 / t2
        signal = pd * np.sin(a) / ((ratio + 1) - np.cos(a) * (ratio - 1))
    signal = signal * (1 - float(seq["void"]) * table[:, 7])
    image = signal.astype(np.float32)[tissue_map]
    if texture is not None:
        image *= 1 + table[:, 6].astype(np.float32)[tissue_map] * texture
        np.maximum(image, 0, out=image)
    image = _blur(image, psf_mm, spacing) * bias_field(image.shape, spacing, rng, strength=bias)
    sigma = noise * float(signal.max())
    if sigma > 0:  # Rician magnitude: |signal + n_real + i n_imag|
        real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
        imag = rng.normal(0.0, sigma, image.shape).astype(np.float32)
        image = np.hypot(real, imag)
    return (image * np.float32(scale)).astype(np.float32, copy=False)
