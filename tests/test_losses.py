"""Loss terms: hand-computed values, the gradient penalty on linear critics, shapes and gradient flow."""
from __future__ import annotations

import math

import pytest
import torch

from lmisa_lite.losses import (
    critic_wasserstein,
    foreground_probs,
    generator_adversarial,
    gradient_penalty,
    one_hot_foreground,
    segmentation_ce,
    weighted_mse,
)
from lmisa_lite.config import TrainConfig
from lmisa_lite.networks import ShapeCritic

_DEFAULTS = TrainConfig()
ALPHA, BETA, GP_WEIGHT = _DEFAULTS.alpha, _DEFAULTS.beta, _DEFAULTS.gp_weight


def test_published_weights():
    """The config's loss weights are the published ones (the loss functions themselves take no weight)."""
    assert (ALPHA, BETA, GP_WEIGHT) == (40.0, 40.0, 10.0)


# ---- weighted_mse -------------------------------------------------------------------------------------------


def test_weighted_mse_hand_computed():
    # 3 of 4 voxels <= 0 (weight 1 - 3/4 = 0.25), 1 voxel > 0 (weight 1 - 1/4 = 0.75)
    target = torch.tensor([[[[-1.0, -1.0], [-1.0, 2.0]]]])
    recon = torch.zeros_like(target)
    expected = (0.25 * 1 + 0.25 * 1 + 0.25 * 1 + 0.75 * 4) / 4
    assert weighted_mse(recon, target).item() == pytest.approx(expected)


def test_weighted_mse_gives_both_groups_equal_total_weight():
    target = torch.randn(1, 1, 9, 7) + 0.7  # unbalanced: most voxels above zero
    above = target > 0
    assert 0.5 < above.float().mean() < 1
    recon = target + 1.0  # unit error everywhere
    loss_all = weighted_mse(recon, target)
    # error on one group only: the two halves of the loss must be equal
    only_above = weighted_mse(torch.where(above, recon, target), target)
    only_below = weighted_mse(torch.where(above, target, recon), target)
    assert only_above.item() == pytest.approx(only_below.item(), rel=1e-5)
    assert (only_above + only_below).item() == pytest.approx(loss_all.item(), rel=1e-5)


def test_weighted_mse_weights_each_sample_by_its_own_fractions():
    first = torch.tensor([[[[-1.0, -1.0], [-1.0, 2.0]]]])
    second = torch.tensor([[[[-1.0, 1.0], [1.0, 1.0]]]])
    batch = torch.cat([first, second])
    recon = torch.zeros_like(batch)
    separate = (weighted_mse(recon[:1], first) + weighted_mse(recon[1:], second)) / 2
    assert weighted_mse(recon, batch).item() == pytest.approx(separate.item())


def test_weighted_mse_single_group_falls_back_to_plain_mse():
    target = torch.zeros(1, 1, 4, 4)
    recon = torch.full_like(target, 0.5)
    assert weighted_mse(recon, target).item() == pytest.approx(0.25)


def test_weighted_mse_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="recon shape"):
        weighted_mse(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


# ---- segmentation -------------------------------------------------------------------------------------------


def test_segmentation_ce_against_log_softmax_by_hand():
    logits = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]], [[-1.0, 3.0]]]])  # (1, 3, 1, 2)
    label = torch.tensor([[[0, 2]]])
    first = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-1)))
    second = -math.log(math.exp(3) / (math.exp(0) + math.exp(1) + math.exp(3)))
    assert segmentation_ce(logits, label).item() == pytest.approx((first + second) / 2, rel=1e-6)
    assert segmentation_ce(logits, label.to(torch.uint8)).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_segmentation_ce_checks_label():
    logits = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="label shape"):
        segmentation_ce(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        segmentation_ce(logits, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        segmentation_ce(logits, torch.full((2, 4, 4), 3, dtype=torch.long))


def test_foreground_probs_drops_background_of_softmax():
    logits = torch.randn(2, 5, 4, 4, 3)
    fg = foreground_probs(logits)
    assert fg.shape == (2, 4, 4, 4, 3)
    background = torch.softmax(logits, dim=1)[:, :1]
    assert torch.allclose(fg.sum(dim=1, keepdim=True) + background, torch.ones_like(background), atol=1e-6)
    with pytest.raises(ValueError, match="K >= 2"):
        foreground_probs(torch.zeros(2, 1, 4, 4))


def test_one_hot_foreground():
    label = torch.tensor([[[0, 1], [2, 0]]], dtype=torch.uint8)
    out = one_hot_foreground(label, 3)
    assert out.shape == (1, 2, 2, 2) and out.dtype == torch.float32
    assert out[0, 0].tolist() == [[0, 1], [0, 0]]
    assert out[0, 1].tolist() == [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        one_hot_foreground(label, 2)
    with pytest.raises(ValueError, match="num_classes"):
        one_hot_foreground(label, 1)


# ---- Wasserstein terms and gradient penalty -----------------------------------------------------------------


def test_wasserstein_terms():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([[0.5], [-1.5]])
    assert critic_wasserstein(real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_adversarial(fake).item() == pytest.approx(0.5)


class _LinearCritic(torch.nn.Module):
    """f(x) = <w, x> per sample, so its input gradient is w and the gradient norm is ||w||."""

    def __init__(self, shape: tuple[int, ...], norm: float) -> None:
        super().__init__()
        w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        self.w = torch.nn.Parameter(w * norm / w.norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w).flatten(1).sum(dim=1).view(-1, 1, 1, 1)


def test_gradient_penalty_is_zero_for_one_lipschitz_linear_critic():
    real, fake = torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4)
    assert gradient_penalty(_LinearCritic((2, 4, 4), 1.0), real, fake).item() == pytest.approx(0.0, abs=1e-10)


def test_gradient_penalty_for_steeper_critic_and_its_gradient():
    critic = _LinearCritic((2, 4, 4), 3.0)
    penalty = gradient_penalty(critic, torch.rand(3, 2, 4, 4), torch.rand(3, 2, 4, 4))
    assert penalty.item() == pytest.approx(4.0, rel=1e-5)  # (3 - 1)**2
    penalty.backward()  # needs create_graph=True: d/dw (||w|| - 1)**2 = 2 (||w|| - 1) w / ||w||
    assert torch.allclose(critic.w.grad, 4.0 / 3.0 * critic.w.detach(), atol=1e-5)


def test_gradient_penalty_interpolates_per_sample_and_trains_critic_only():
    seen = []

    def critic(x):
        seen.append(x.detach())
        return x.pow(2).flatten(1).sum(dim=1)  # nonlinear, so the penalty has a graph to back-propagate

    source = torch.zeros(4, 2, 3, 3, requires_grad=True)
    fake = source + 1  # depends on a "generator" tensor
    gradient_penalty(critic, torch.zeros(4, 2, 3, 3), fake, generator=torch.Generator().manual_seed(1)).backward()
    x_hat = seen[0]
    per_sample = x_hat.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1]), "one interpolation weight per sample"
    assert torch.all((per_sample >= 0) & (per_sample <= 1))
    assert len(set(per_sample[:, 0].tolist())) == 4, "samples get different weights"
    assert source.grad is None, "the penalty does not reach the generator"


def test_gradient_penalty_is_reproducible_with_generator_and_backpropagates_into_shape_critic():
    torch.manual_seed(0)
    critic = ShapeCritic(in_channels=2)
    real = one_hot_foreground(torch.randint(0, 3, (2, 16, 16)), 3)
    fake = foreground_probs(torch.randn(2, 3, 16, 16))
    first = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    second = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    assert first.item() == second.item() and first.item() > 0
    (critic_wasserstein(critic(real), critic(fake)) + GP_WEIGHT * first).backward()
    assert critic.stem.weight.grad.abs().sum() > 0 and critic.score.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="fake shape"):
        gradient_penalty(critic, real, fake[:, :1])


def test_generator_terms_backpropagate_to_logits():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    label = torch.randint(0, 3, (2, 8, 8))
    critic = ShapeCritic(in_channels=2, depth=2)
    loss = generator_adversarial(critic(foreground_probs(logits))) + BETA * segmentation_ce(logits, label)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    recon = torch.zeros(2, 1, 8, 8, requires_grad=True)
    (ALPHA * weighted_mse(recon, torch.randn(2, 1, 8, 8))).backward()
    assert recon.grad.abs().sum() > 0
