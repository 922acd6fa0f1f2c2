"""The shape constraint's switches: real-map softening, sharpened predictions, where the penalty is taken, and
the adversarial weight's warm-up and ramp."""
from __future__ import annotations

import math

import pytest
import torch

from data_utils.phantoms import make_dataset
from lmisa_lite.adversarial import adversarial_scale, critic_update, fake_maps, real_maps, smooth_maps
from lmisa_lite.config import TrainConfig, build_networks
from lmisa_lite.training import train


def labels(num_classes=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.zeros(2, size, size, dtype=torch.long)
    y[:, 8:14, 8:14] = 1
    y[:, 14:18, 10:16] = num_classes - 1
    return y[torch.randperm(2, generator=g)]


def test_smoothed_real_maps_soften_edges_and_keep_the_partition_of_unity():
    config = TrainConfig(task="heart", critic_real="smoothed", critic_real_amount=1.5)
    y = labels(5)
    soft = real_maps(config, y)
    hard = real_maps(TrainConfig(task="heart"), y)
    assert soft.shape == hard.shape == (2, 4, 32, 32)
    assert 0 < float(soft[hard == 1].min()) < 1  # edges are no longer hard
    assert float(soft.sum(1).max()) <= 1 + 1e-5  # foreground of a partition of unity
    # far from any structure the background stays background; deep inside one the class stays near 1
    assert float(soft[:, :, 0, 31].max()) < 1e-3
    assert float(soft[:, 0, 10:12, 10:12].min()) > 0.6
    # and the mass of each class is kept (edges replicated, structures away from the border)
    torch.testing.assert_close(soft.sum((2, 3)), hard.sum((2, 3)), rtol=1e-4, atol=1e-3)


def test_smoothing_works_in_3d_and_a_zero_blur_changes_nothing():
    maps = torch.zeros(1, 2, 9, 9, 9)
    maps[0, 0, 4, 4, 4] = 1
    blurred = smooth_maps(maps, 1.0)
    assert blurred.shape == maps.shape and float(blurred[0, 0].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(blurred[0, 0, 4, 4, 4]) < 0.1 and float(blurred[0, 1].abs().max()) == 0
    assert smooth_maps(maps, 0) is maps


def test_noised_real_maps_mix_with_the_simplex_reproducibly():
    config = TrainConfig(critic_real="noised", critic_real_amount=0.2)
    y = labels(2)
    a = real_maps(config, y, torch.Generator().manual_seed(1))
    b = real_maps(config, y, torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    inside, outside = a[y[:, None] == 1], a[y[:, None] == 0]
    assert float(inside.min()) >= 0.8 - 1e-6 and float(outside.max()) <= 0.2 + 1e-6
    assert float(outside.max()) > 0  # background voxels got some foreground
    with pytest.raises(ValueError, match="critic_real_amount"):
        TrainConfig(critic_real="noised", critic_real_amount=1.5)


def test_fake_maps_are_sharpened_by_the_temperature():
    logits = torch.tensor([[[[0.0]], [[1.0]]]])  # p(foreground) = sigmoid(1)
    plain = float(fake_maps(TrainConfig(), logits))
    sharp = float(fake_maps(TrainConfig(critic_fake_temperature=0.25), logits))
    assert plain == pytest.approx(1 / (1 + math.exp(-1)))
    assert sharp == pytest.approx(1 / (1 + math.exp(-4)))


def test_adversarial_scale_warms_up_then_ramps():
    config = TrainConfig(adv_weight=2.0, adv_warmup=10, adv_ramp=4)
    assert [adversarial_scale(config, s) for s in (0, 9, 10, 11, 13, 100)] == [0.0, 0.0, 0.5, 1.0, 2.0, 2.0]
    assert adversarial_scale(TrainConfig(), 0) == TrainConfig().adv_weight
    assert adversarial_scale(TrainConfig(use_shape_constraint=False), 50) == 0.0


@pytest.mark.parametrize("bad", [dict(gp_on="input"), dict(critic_real="soft"), dict(adv_warmup=-1),
                                 dict(critic_fake_temperature=0), dict(adv_weight=-1)])
def test_bad_switches_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        TrainConfig(**bad)


def test_penalty_on_reconstruction_interpolates_images_not_label_maps():
    config = TrainConfig(task="heart", image_size=(32, 32), base_filters=4, amp=False, channels_last=False)
    _, critic = build_networks(config)
    y = labels(5)
    logits = torch.randn(2, 5, 32, 32)
    x = torch.randn(2, 1, 32, 32)
    outs = {}
    for place in ("labels", "reconstruction"):
        net = TrainConfig(**{**config.to_dict(), "gp_on": place})
        c = build_networks(net)[1]
        c.load_state_dict(critic.state_dict())
        opt = torch.optim.SGD(c.parameters(), lr=0.0)
        outs[place] = critic_update(net, c, opt, y, logits, torch.Generator().manual_seed(0),
                                    images_t=(x, torch.zeros_like(x)))
    # same Wasserstein estimate (same maps, same weights), a different penalty
    torch.testing.assert_close(outs["labels"]["wasserstein"], outs["reconstruction"]["wasserstein"])
    assert not torch.allclose(outs["labels"]["gp"], outs["reconstruction"]["gp"])
    with pytest.raises(ValueError, match="images_t"):
        critic_update(TrainConfig(**{**config.to_dict(), "gp_on": "reconstruction"}), critic,
                      torch.optim.SGD(critic.parameters(), lr=0.0), y, logits, torch.Generator())


def test_warm_up_keeps_the_critic_out_of_the_network_loss_but_trains_it():
    ct = make_dataset("kidney", "ct", n=2, dims=2, seed=0, shape=(64, 64))
    mri = make_dataset("kidney", "mri", n=2, dims=2, seed=1, shape=(64, 64))
    config = TrainConfig(steps=4, image_size=(64, 64), base_filters=4, progress=False, adv_warmup=2,
                         critic_real="smoothed", critic_fake_temperature=0.5, gp_on="reconstruction")
    history = train(config, ct, mri).history
    assert [math.isnan(v) for v in history["loss_adv"]] == [True, True, False, False]
    assert all(math.isfinite(v) for v in history["loss_critic"])

