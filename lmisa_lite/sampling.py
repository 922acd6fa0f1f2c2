"""Prepared training data and stateless batch sampling.

Cases are turned into network inputs once, up front (:func:`prepare_pool`). Every batch is then drawn with
a :class:`torch.Generator` seeded from ``(seed, step, stream, rank)`` (:func:`step_generator`), so the
batches of step 1000 are the same whether a run got there in one go or was resumed from a checkpoint, and
each process of a data-parallel run draws its own shard.

3D patches: a share of the patches of a labelled pool (:data:`FOREGROUND_SHARE` unless told otherwise) is
centred on a random foreground voxel, as nnU-Net's foreground oversampling and MONAI's
``RandCropByPosNegLabeld`` do; the rest lie anywhere in the volume. Without it a small organ is missing from
most patches, and a short run learns to predict background everywhere. ``augment=True`` adds the published
3D augmentation (rotation about the axial axis within +-15 degrees, zoom 0.75-1.2, integer shifts), resampled
while the patch is cut.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from scipy import ndimage

from data_utils.case import Case
from data_utils.prepare import crop_or_pad
from lmisa_lite.preprocessing import network_input

# Independent random streams within one step.
LABELLED_SOURCE, UNLABELLED_SOURCE, TARGET = 0, 1, 2
#: Share of 3D patches of a labelled pool centred on a foreground voxel (nnU-Net oversamples a third).
FOREGROUND_SHARE = 1 / 3
#: The published 3D augmentation: rotation (degrees, about z), zoom range, largest integer shift (voxels).
ROTATION_DEG, ZOOM, MAX_SHIFT = 15.0, (0.75, 1.2), 4


@dataclass
class Pool:
    """Network inputs of one domain, ready to sample from.

    Attributes:
        images: 2D models: one array ``(N, X, Y)`` of images or slices, all of the training ``image_size``.
            3D models: a list of whole volumes ``(X, Y, Z)``, each at least the patch size.
        labels: Matching uint8 label maps (same layout), or ``None`` for an unlabelled pool.
        case_index: For each entry of ``images``, the position of its case in the input list.
        foreground: 3D labelled pools: per volume, the ``(N, 3)`` voxel indices of its foreground (label > 0),
            filled on first use; empty otherwise.
    """

    images: np.ndarray | list[np.ndarray]
    labels: np.ndarray | list[np.ndarray] | None
    case_index: np.ndarray
    foreground: dict[int, np.ndarray] = field(default_factory=dict)

    def foreground_voxels(self, i: int) -> np.ndarray:
        """The ``(N, 3)`` foreground voxel indices of volume ``i`` (computed once, then kept)."""
        if i not in self.foreground:
            self.foreground[i] = np.argwhere(self.labels[i] > 0)
        return self.foreground[i]

    def __len__(self) -> int:
        return len(self.images)


def step_generator(seed: int, step: int, *, stream: int, rank: int = 0) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, step, stream, rank)``.

    Args:
        seed: The run's seed.
        step: 0-based training step.
        stream: Which draw within the step (e.g. :data:`LABELLED_SOURCE`).
        rank: Process rank in a data-parallel run.

    Returns:
        A freshly seeded :class:`torch.Generator`.

    Examples:
        >>> a = torch.rand(2, generator=step_generator(0, 5, stream=TARGET))
        >>> torch.equal(a, torch.rand(2, generator=step_generator(0, 5, stream=TARGET)))
        True
    """
    # SeedSequence hashes the tuple, so neighbouring steps get unrelated states.
    state = np.random.SeedSequence([seed, step, stream, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _fit(array: np.ndarray, shape: Sequence[int], fill: float) -> np.ndarray:
    """Centre-crop or pad ``array`` to ``shape``, padding with ``fill``."""
    if tuple(array.shape) == tuple(shape):
        return array
    return crop_or_pad(array, tuple(shape), value=fill)


def _prepare_case(case: Case, *, spatial_dims: int, image_size: tuple[int, ...], use_mlngm: bool,
                  labelled: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    if labelled and case.label is None:
        raise ValueError(f"case {case.case_id!r} has no label, but this domain is used with labels")
    if spatial_dims == 3 and case.ndim != 3:
        raise ValueError(f"case {case.case_id!r} is 2D {case.shape}; a 3D model needs 3D volumes")
    slicewise = spatial_dims == 2 and case.ndim == 3
    x = network_input(case.image, use_mlngm=use_mlngm, slicewise=slicewise).astype(np.float32)
    y = case.label if labelled else None
    if spatial_dims == 3:
        # Volumes smaller than a patch are padded, so every random patch lies inside the volume.
        shape = tuple(max(s, p) for s, p in zip(x.shape, image_size))
        return [_fit(x, shape, float(x.min()))], None if y is None else [_fit(y, shape, 0)]
    images = [x] if x.ndim == 2 else [x[..., k] for k in range(x.shape[-1])]
    labels = None if y is None else ([y] if y.ndim == 2 else [y[..., k] for k in range(y.shape[-1])])
    # Pad with each image's minimum: the background of an MLNGM map or of a z-scored image.
    images = [_fit(im, image_size, float(im.min())) for im in images]
    labels = None if labels is None else [_fit(lb, image_size, 0) for lb in labels]
    return images, labels


def prepare_pool(cases: Sequence[Case], *, spatial_dims: int, image_size: Sequence[int], use_mlngm: bool,
                 labelled: bool, num_workers: int = 0) -> Pool:
    """Compute the network input of every case once.

    2D model and 2D cases: each image, centre-cropped or padded to ``image_size``. 2D model and 3D cases:
    every slice along the last axis (MLNGM and z-score per slice). 3D model: whole volumes, padded up to
    at least ``image_size``; patches are cut when sampling.

    Args:
        cases: The cases of one domain.
        spatial_dims: 2 or 3 (the model's).
        image_size: ``(X, Y)`` or the 3D patch ``(X, Y, Z)``.
        use_mlngm: MLNGM then z-score (True) or z-score of the raw intensities (False).
        labelled: Keep labels (every case must have one).
        num_workers: Threads for the preprocessing; 0 runs it in the calling thread.

    Returns:
        The :class:`Pool`.

    Raises:
        ValueError: If ``cases`` is empty, a labelled case lacks its label or dimensions do not fit.

    Examples:
        >>> from data_utils.phantoms import make_dataset
        >>> pool = prepare_pool(make_dataset("kidney", "ct", n=2, dims=2, seed=0), spatial_dims=2,
        ...                     image_size=(64, 64), use_mlngm=True, labelled=True)
        >>> pool.images.shape
        (2, 64, 64)
    """
    if len(cases) == 0:
        raise ValueError("cases: expected at least one Case, got none")
    image_size = tuple(int(s) for s in image_size)

    def work(case: Case):
        return _prepare_case(case, spatial_dims=spatial_dims, image_size=image_size, use_mlngm=use_mlngm,
                             labelled=labelled)

    if num_workers > 0:
        with ThreadPoolExecutor(num_workers) as executor:
            prepared = list(executor.map(work, cases))
    else:
        prepared = [work(case) for case in cases]
    images = [im for ims, _ in prepared for im in ims]
    labels = None if not labelled else [lb for _, lbs in prepared for lb in lbs]
    case_index = np.array([i for i, (ims, _) in enumerate(prepared) for _ in ims], dtype=np.int64)
    if spatial_dims == 2:
        images = np.stack(images)
        labels = None if labels is None else np.stack(labels)
    return Pool(images, labels, case_index)


def _corner(shape: Sequence[int], patch: Sequence[int], centre: Sequence[int] | None,
            generator: torch.Generator) -> list[int]:
    """A patch corner: anywhere in the volume, or so that the patch holds ``centre`` (near its middle)."""
    if centre is None:
        return [int(torch.randint(s - p + 1, (1,), generator=generator)) for s, p in zip(shape, patch)]
    return [int(np.clip(c - p // 2, 0, s - p)) for c, s, p in zip(centre, shape, patch)]


def _augmented_window(x: np.ndarray, y: np.ndarray | None, corner: Sequence[int], patch: Sequence[int],
                      generator: torch.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Cut the patch at ``corner`` rotated about z, zoomed and shifted (linear image, nearest labels)."""
    angle, zoom, *shift = (torch.rand(5, generator=generator) * 2 - 1).tolist()
    angle = np.deg2rad(ROTATION_DEG) * angle
    zoom = ZOOM[0] + (ZOOM[1] - ZOOM[0]) * (zoom + 1) / 2
    shift = np.round(np.array(shift) * MAX_SHIFT)
    c, s = np.cos(angle), np.sin(angle)
    # output voxel o -> input voxel: centre + R (o - patch centre) / zoom + shift; a zoom > 1 enlarges
    matrix = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) / zoom
    middle = (np.array(patch) - 1) / 2
    offset = np.array(corner) + middle + shift - matrix @ middle
    out = ndimage.affine_transform(x, matrix, offset, output_shape=tuple(patch), order=1, mode="nearest")
    if y is not None:
        y = ndimage.affine_transform(y, matrix, offset, output_shape=tuple(patch), order=0, mode="constant")
    return out.astype(np.float32), y


def sample_batch(pool: Pool, *, batch_size: int, patch_size: Sequence[int], generator: torch.Generator,
                 flip: bool = False, foreground_share: float | None = None,
                 augment: bool = False) -> tuple[Tensor, Tensor | None]:
    """Draw a batch (with replacement) from ``pool``.

    Args:
        pool: From :func:`prepare_pool`.
        batch_size: Number of images or patches.
        patch_size: 2D: the pool's image size. 3D: the patch ``(X, Y, Z)`` cut at a random position.
        generator: Source of all randomness of this draw.
        flip: Randomly flip each item along each spatial axis (3D augmentation).
        foreground_share: 3D, labelled pool: probability that a patch is centred on a random foreground
            voxel (the rest are placed uniformly). None: :data:`FOREGROUND_SHARE`; 0 places every patch
            uniformly. Ignored for 2D items and unlabelled pools (the target domain has no labels to aim at).
        augment: 3D: rotate (about z, within +-:data:`ROTATION_DEG` degrees), zoom (:data:`ZOOM`) and shift
            (integers up to :data:`MAX_SHIFT` voxels) each patch, as the published 3D model was trained.

    Returns:
        ``(images, labels)``: ``(B, 1, *patch_size)`` float32 and ``(B, *patch_size)`` int64 (or ``None``).

    Raises:
        ValueError: If ``foreground_share`` is outside [0, 1].

    Examples:
        >>> from data_utils.phantoms import make_dataset
        >>> pool = prepare_pool(make_dataset("kidney", "ct", n=1, dims=3, shape=(32, 32, 16)), spatial_dims=3,
        ...                     image_size=(16, 16, 8), use_mlngm=False, labelled=True)
        >>> x, y = sample_batch(pool, batch_size=2, patch_size=(16, 16, 8), generator=step_generator(0, 0,
        ...                     stream=LABELLED_SOURCE), foreground_share=1.0, augment=True)
        >>> tuple(x.shape), bool((y > 0).any())
        ((2, 1, 16, 16, 8), True)
    """
    share = FOREGROUND_SHARE if foreground_share is None else float(foreground_share)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"foreground_share must be in [0, 1], got {foreground_share!r}")
    idx = torch.randint(len(pool), (batch_size,), generator=generator).tolist()
    xs, ys = [], []
    for i in idx:
        x = pool.images[i]
        y = None if pool.labels is None else pool.labels[i]
        if x.ndim == 3:
            centre = None
            if y is not None and share > 0 and float(torch.rand((), generator=generator)) < share:
                voxels = pool.foreground_voxels(i)
                if len(voxels):
                    centre = voxels[int(torch.randint(len(voxels), (1,), generator=generator))]
            corner = _corner(x.shape, patch_size, centre, generator)
            if augment:
                x, y = _augmented_window(x, y, corner, patch_size, generator)
            else:
                window = tuple(slice(c, c + p) for c, p in zip(corner, patch_size))
                x, y = x[window], None if y is None else y[window]
        if flip:
            axes = [a for a in range(x.ndim) if bool(torch.rand((), generator=generator) < 0.5)]
            x, y = np.flip(x, axes), None if y is None else np.flip(y, axes)
        xs.append(np.ascontiguousarray(x))
        ys.append(None if y is None else np.ascontiguousarray(y))
    images = torch.from_numpy(np.stack(xs)).unsqueeze(1)
    labels = None if pool.labels is None else torch.from_numpy(np.stack(ys).astype(np.int64))
    return images, labels


def grid_batches(pool: Pool, *, patch_size: Sequence[int], batch_size: int
                 ) -> Iterator[tuple[Tensor, Tensor, np.ndarray, Tensor]]:
    """Cover every labelled entry of ``pool`` in deterministic batches (validation).

    2D entries are taken whole. 3D volumes are tiled with windows of ``patch_size`` that lie inside the
    volume: a regular grid, plus one window per axis moved back to end at the border where the size is not a
    multiple of the patch. Padding instead would hand the network windows that are partly a constant block it
    never saw in training, and with instance norm that block shifts the statistics of the whole window (the
    validation Dice of a 64 x 64 x 32 model on a padded 96 x 96 x 48 volume read 0 while the same model scored
    0.29 with sliding-window inference). Each voxel is *owned* by exactly one window, so counts over owned
    voxels partition the volume.

    Args:
        pool: A labelled :class:`Pool` (3D volumes at least ``patch_size``, as :func:`prepare_pool` makes them).
        patch_size: 2D image size or 3D patch size.
        batch_size: Items per batch.

    Yields:
        ``(images (B, 1, *P), labels (B, *P) int64, case_index (B,), owned (B, *P) bool)``: ``owned`` marks
        the voxels that no earlier window of the case covered.
    """
    def axis_windows(size: int, patch: int) -> list[tuple[int, slice]]:
        """(corner, owned part in window coordinates) along one axis."""
        if size < patch:
            raise ValueError(f"volume size {size} is smaller than the patch {patch}: prepare the pool first")
        regular = [(c, slice(0, patch)) for c in range(0, size - patch + 1, patch)]
        covered = len(regular) * patch
        return regular + ([(size - patch, slice(covered - (size - patch), patch))] if covered < size else [])

    def items():
        for i in range(len(pool)):
            x, y = pool.images[i], pool.labels[i]
            if x.ndim == 2:
                yield x, y, pool.case_index[i], np.ones(x.shape, bool)
                continue
            for placed in itertools.product(*(axis_windows(s, p) for s, p in zip(x.shape, patch_size))):
                window = tuple(slice(c, c + p) for (c, _), p in zip(placed, patch_size))
                owned = np.zeros(tuple(patch_size), bool)
                owned[tuple(part for _, part in placed)] = True
                yield x[window], y[window], pool.case_index[i], owned

    iterator = items()
    while chunk := list(itertools.islice(iterator, batch_size)):
        xs, ys, cs, owned = zip(*chunk)
        yield (torch.from_numpy(np.stack(xs)).unsqueeze(1), torch.from_numpy(np.stack(ys).astype(np.int64)),
               np.array(cs), torch.from_numpy(np.stack(owned)))
