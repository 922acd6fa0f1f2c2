"""Tests for lmisa_lite.sampling.sample_batch: foreground-centred 3D patches and the 3D augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_utils.phantoms import make_dataset
from lmisa_lite.config import TrainConfig
from lmisa_lite.sampling import FOREGROUND_SHARE, LABELLED_SOURCE, Pool, grid_batches, sample_batch, step_generator
from lmisa_lite.training import train

PATCH = (16, 16, 8)


def _pool(labelled: bool = True) -> Pool:
    """One (48, 48, 24) volume whose foreground is a small cube in a corner that few random patches reach."""
    image = np.random.default_rng(0).normal(scale=0.5, size=(48, 48, 24)).astype(np.float32)
    label = np.zeros(image.shape, np.uint8)
    label[2:6, 40:44, 1:4] = 1
    image[label == 1] += 5.0
    return Pool([image], [label] if labelled else None, np.zeros(1, np.int64))


def _draw(pool: Pool, step: int, **kwargs):
    return sample_batch(pool, batch_size=4, patch_size=PATCH,
                        generator=step_generator(0, step, stream=LABELLED_SOURCE), **kwargs)


def _share_with_foreground(**kwargs) -> float:
    pool = _pool()
    return float(np.mean([(y.flatten(1) > 0).any(1).float().mean() for _, y in
                          (_draw(pool, step, **kwargs) for step in range(40))]))


def test_foreground_share_one_puts_foreground_in_every_patch():
    pool = _pool()
    for step in range(10):
        x, y = _draw(pool, step, foreground_share=1.0)
        assert x.shape == (4, 1, *PATCH) and y.shape == (4, *PATCH)
        assert bool((y.flatten(1) > 0).any(1).all())
        assert torch.equal(x[:, 0] > 2.5, y > 0)  # the label map travels with its image


def test_default_share_oversamples_the_foreground():
    uniform, default = _share_with_foreground(foreground_share=0.0), _share_with_foreground()
    assert uniform < 0.15  # the cube sits in a corner
    assert default > uniform + 0.5 * FOREGROUND_SHARE


def test_unlabelled_pools_ignore_the_share():
    pool = _pool(labelled=False)
    x0, y0 = _draw(pool, 3, foreground_share=1.0)
    x1, _ = _draw(pool, 3, foreground_share=0.0)
    assert y0 is None and torch.equal(x0, x1)


def test_draws_are_reproducible_and_patches_are_cut_from_the_volume():
    pool = _pool()
    a, b = _draw(pool, 5, foreground_share=0.5), _draw(pool, 5, foreground_share=0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    volume = torch.from_numpy(pool.images[0])
    for patch in a[0][:, 0]:  # without augmentation every patch is a window of the volume
        windows = volume.unfold(0, PATCH[0], 1).unfold(1, PATCH[1], 1).unfold(2, PATCH[2], 1)
        assert bool((windows == patch).flatten(3).all(-1).any())


def test_augmentation_resamples_image_and_labels_together():
    pool = _pool()
    plain_x, plain_y = _draw(pool, 7, foreground_share=1.0)
    x, y = _draw(pool, 7, foreground_share=1.0, augment=True)
    assert x.shape == plain_x.shape and x.dtype == torch.float32 and y.dtype == torch.int64
    assert set(torch.unique(y).tolist()) <= {0, 1} and bool((y > 0).any())
    assert not torch.equal(x, plain_x)  # rotated, zoomed or shifted
    inside = x[:, 0][y > 0]  # labels follow the image: the bright cube is where the label is
    assert float((inside > 2.5).float().mean()) > 0.9
    again = _draw(pool, 7, foreground_share=1.0, augment=True)
    assert torch.equal(again[0], x) and torch.equal(again[1], y)


def test_2d_pools_are_unchanged_by_the_3d_options():
    images = np.random.default_rng(1).normal(size=(3, 16, 16)).astype(np.float32)
    pool = Pool(images, (images > 1).astype(np.uint8), np.arange(3))
    a = sample_batch(pool, batch_size=2, patch_size=(16, 16), generator=step_generator(0, 0, stream=0))
    b = sample_batch(pool, batch_size=2, patch_size=(16, 16), generator=step_generator(0, 0, stream=0),
                     foreground_share=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_bad_share(share):
    with pytest.raises(ValueError, match="foreground_share"):
        _draw(_pool(), 0, foreground_share=share)


def test_3d_sampling_switches_reach_the_patches():
    ct = make_dataset("kidney", "ct", n=1, dims=3, seed=0, shape=(48, 48, 24))
    mri = make_dataset("kidney", "mri", n=1, dims=3, seed=1, shape=(48, 48, 24))
    base = dict(spatial_dims=3, image_size=(16, 16, 8), base_filters=2, steps=2, progress=False,
                use_shape_constraint=False, val_every=1)
    seen = {}
    for share in (0.0, 1.0):
        history = train(TrainConfig(foreground_share=share, augment_3d=True, **base), ct, mri,
                        val=ct).history
        seen[share] = history["loss_seg"]
    assert seen[0.0] != seen[1.0]  # other patches, other losses
    with pytest.raises(ValueError, match="foreground_share"):
        TrainConfig(foreground_share=1.5)


@pytest.mark.parametrize("shape, patch", [((20, 18, 11), (8, 8, 4)), ((16, 16, 8), (8, 8, 4)),
                                          ((9, 8, 4), (8, 8, 4))])
def test_validation_windows_lie_inside_the_volume_and_own_each_voxel_once(shape, patch):
    rng = np.random.default_rng(0)
    volume = rng.normal(size=shape).astype(np.float32)
    label = (rng.random(shape) < 0.3).astype(np.uint8)
    pool = Pool([volume], [label], np.array([0]))
    owned_count = np.zeros(shape, int)
    batches = list(grid_batches(pool, patch_size=patch, batch_size=3))
    for x, y, case_index, owned in batches:
        assert x.shape[2:] == y.shape[1:] == owned.shape[1:] == patch and (case_index == 0).all()
        for xi, yi, oi in zip(x[:, 0].numpy(), y.numpy(), owned.numpy()):
            # find the window: its values are a block of the volume, never padding
            hits = [c for c in np.ndindex(*(s - p + 1 for s, p in zip(shape, patch)))
                    if np.array_equal(volume[tuple(slice(a, a + p) for a, p in zip(c, patch))], xi)]
            assert len(hits) == 1
            window = tuple(slice(a, a + p) for a, p in zip(hits[0], patch))
            np.testing.assert_array_equal(label[window], yi)
            owned_count[window] += oi
    np.testing.assert_array_equal(owned_count, 1)  # the owned voxels partition the volume
    with pytest.raises(ValueError, match="smaller than the patch"):
        list(grid_batches(pool, patch_size=(32, 8, 4), batch_size=1))
