"""LMISA loss terms: reconstruction, segmentation and the WGAN-GP shape-adversarial pair.

With ``G`` the generator (:class:`lmisa_lite.networks.LMISANet`), ``D`` the shape critic, ``xs, ys`` a source
image and its label, ``xt`` a target image and ``K`` classes, one training step combines them as::

    recon_s, logits_s = G(xs)
    recon_t, logits_t = G(xt)
    fake = foreground_probs(logits_t)                            # (B, K-1, *S)
    real = one_hot_foreground(ys, K)                             # (B, K-1, *S)
    critic loss    = critic_wasserstein(D(real), D(fake.detach()))
                     + gp_weight * gradient_penalty(D, real, fake)
    generator loss = generator_adversarial(D(fake))
                     + alpha * (weighted_mse(recon_s, xs) + weighted_mse(recon_t, xt))
                     + beta * segmentation_ce(logits_s, ys)

The critic sees foreground channels only: background is one minus their sum, so it adds no shape information,
and it would otherwise dominate the critic's input.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

#: The loss terms a training step records, in order: the generator's total and its terms (segmentation and
#: reconstruction unweighted, adversarial), the critic's total, its gradient penalty and the Wasserstein
#: estimate mean(D(real)) - mean(D(fake)). The weights (alpha, beta, gp_weight) are TrainConfig fields.
LOSS_TERMS = ("loss_g", "loss_seg", "loss_rec", "loss_adv", "loss_critic", "gp", "wasserstein")


def weighted_mse(recon: Tensor, target: Tensor) -> Tensor:
    """Mean squared error that balances the voxels above zero and the rest of a z-scored input.

    In each sample, voxels with ``target > 0`` get weight ``1 - p`` and the others weight ``p``, where ``p`` is
    the fraction of voxels above zero. Both groups then carry the same total weight, so a small bright
    structure counts as much as the large dark background. A sample with only one group falls back to plain
    squared error (weight 1), instead of a weight of zero everywhere.

    Args:
        recon: Reconstruction ``(B, 1, *S)``.
        target: The network input it reconstructs, same shape (z-scored, so about half the voxels are > 0).

    Returns:
        Scalar: ``mean(w * (recon - target)**2)`` over all voxels of the batch.

    Raises:
        ValueError: If the shapes differ.

    Examples:
        >>> target = torch.tensor([[[[-1.0, -1.0], [-1.0, 3.0]]]])
        >>> float(weighted_mse(target + 1, target))  # 3 voxels x 0.25 + 1 voxel x 0.75, over 4 voxels
        0.375
    """
    if recon.shape != target.shape:
        raise ValueError(f"recon shape {tuple(recon.shape)} must equal target shape {tuple(target.shape)}")
    above = target > 0
    dims = tuple(range(1, target.ndim))
    p = above.float().mean(dim=dims, keepdim=True)
    weights = torch.where(above, 1 - p, p)
    mixed = (p > 0) & (p < 1)
    weights = torch.where(mixed, weights, torch.ones_like(weights))
    return (weights * (recon - target) ** 2).mean()


def _check_label(label: Tensor, num_classes: int) -> None:
    if label.dtype.is_floating_point or label.dtype.is_complex or label.dtype == torch.bool:
        raise ValueError(f"label must hold integer class indices, got dtype {label.dtype}")
    if label.numel() and (int(label.min()) < 0 or int(label.max()) >= num_classes):
        raise ValueError(
            f"label values must lie in [0, {num_classes}), got [{int(label.min())}, {int(label.max())}]"
        )


def segmentation_ce(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy between segmentation logits and an integer label map, averaged over voxels.

    Args:
        logits: ``(B, K, *S)`` unnormalised class scores.
        label: ``(B, *S)`` integer class indices in ``[0, K)``.

    Returns:
        Scalar mean cross-entropy.

    Raises:
        ValueError: If the shapes do not match, ``label`` is not integer, or it holds an index outside
            ``[0, K)``.

    Examples:
        >>> logits = torch.zeros(1, 2, 4, 4)
        >>> round(float(segmentation_ce(logits, torch.zeros(1, 4, 4, dtype=torch.long))), 4)  # log(2)
        0.6931
    """
    if logits.ndim != label.ndim + 1 or logits.shape[:1] + logits.shape[2:] != label.shape:
        raise ValueError(
            f"label shape {tuple(label.shape)} must be logits shape {tuple(logits.shape)} without the channel axis"
        )
    _check_label(label, logits.shape[1])
    return F.cross_entropy(logits, label.long())


def foreground_probs(logits: Tensor) -> Tensor:
    """Softmax class probabilities without the background channel: what the critic sees for target images.

    Args:
        logits: ``(B, K, *S)`` with ``K >= 2``.

    Returns:
        ``(B, K-1, *S)`` probabilities of classes ``1..K-1``.

    Raises:
        ValueError: If ``logits`` has fewer than 2 channels.

    Examples:
        >>> tuple(foreground_probs(torch.zeros(1, 5, 8, 8)).shape)
        (1, 4, 8, 8)
    """
    if logits.ndim < 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (B, K, ...) with K >= 2, got {tuple(logits.shape)}")
    return torch.softmax(logits, dim=1)[:, 1:]


def one_hot_foreground(label: Tensor, num_classes: int) -> Tensor:
    """One-hot encoding of a label map without the background channel: what the critic sees as real.

    Args:
        label: ``(B, *S)`` integer class indices in ``[0, num_classes)``.
        num_classes: ``K``, background included.

    Returns:
        Float ``(B, K-1, *S)``; channel ``k-1`` is 1 where ``label == k``.

    Raises:
        ValueError: If ``num_classes < 2``, ``label`` is not integer, or it holds an index outside
            ``[0, num_classes)``.

    Examples:
        >>> one_hot_foreground(torch.tensor([[0, 1, 2]]), 3)
        tensor([[[0., 1., 0.],
                 [0., 0., 1.]]])
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    _check_label(label, num_classes)
    one_hot = F.one_hot(label.long(), num_classes)  # (B, *S, K)
    return one_hot.movedim(-1, 1)[:, 1:].float()


def generator_adversarial(fake_scores: Tensor) -> Tensor:
    """Generator's Wasserstein loss: raise the critic's scores of predicted label maps.

    Args:
        fake_scores: Critic output for target predictions, any shape (e.g. ``(B, 1, *S/8)``).

    Returns:
        Scalar ``-mean(fake_scores)``.

    Examples:
        >>> float(generator_adversarial(torch.tensor([1.0, 3.0])))
        -2.0
    """
    return -fake_scores.mean()


def critic_wasserstein(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Critic's Wasserstein loss: score real label maps high and predicted ones low.

    Args:
        real_scores: Critic output for source one-hot labels.
        fake_scores: Critic output for target predictions (computed from detached predictions).

    Returns:
        Scalar ``mean(fake_scores) - mean(real_scores)``; its negative estimates the Wasserstein distance.

    Examples:
        >>> float(critic_wasserstein(torch.tensor([2.0]), torch.tensor([-1.0, 0.0])))
        -2.5
    """
    return fake_scores.mean() - real_scores.mean()


def gradient_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, *, generator: torch.Generator | None = None,
    score_gradient: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """WGAN-GP penalty ``mean((||grad critic(x_hat)||_2 - 1)**2)`` on random real/fake interpolates.

    Each sample gets one uniform ``eps`` and ``x_hat = eps * real + (1 - eps) * fake``. The critic value of a
    sample is the mean of its patch-score map, the same per-sample quantity that :func:`critic_wasserstein`
    averages, and the norm runs over all of that sample's channels and voxels.

    Args:
        critic: Maps ``(B, C, *S)`` to scores of shape ``(B, ...)``.
        real: Real label maps ``(B, C, *S)`` (foreground one-hot).
        fake: Predicted label maps, same shape (foreground probabilities).
        generator: Optional random generator for ``eps`` (on the device of ``real``), for reproducible
            penalties.
        score_gradient: Optional: maps ``x_hat`` to the gradient of each sample's critic value with respect to
            it, with a graph to the critic's parameters (e.g.
            :meth:`lmisa_lite.networks.ShapeCritic.score_gradient`); used instead of differentiating ``critic``
            by autograd, which is then not called.

    Returns:
        Scalar penalty, with a graph through the critic's parameters (``create_graph=True``) so that it can
        be added to the critic loss and back-propagated. ``real`` and ``fake`` are detached: the penalty
        trains the critic only.

    Raises:
        ValueError: If ``real`` and ``fake`` have different shapes.

    Examples:
        >>> critic = lambda x: 2 * x.flatten(1).sum(1)  # gradient norm 2 for a 1-element input
        >>> float(gradient_penalty(critic, torch.zeros(3, 1), torch.ones(3, 1)))
        1.0
    """
    if real.shape != fake.shape:
        raise ValueError(f"real shape {tuple(real.shape)} must equal fake shape {tuple(fake.shape)}")
    # WGAN-GP (Gulrajani et al., 2017) enforces the 1-Lipschitz constraint on the straight lines between samples
    # of the two distributions the critic compares, here real and predicted label maps. The released LMISA code
    # interpolated between the image reconstruction and the network input instead: those are not inputs of the
    # critic's distributions, so the constraint would be enforced where the critic is never evaluated. We follow
    # WGAN-GP.
    shape = (real.shape[0],) + (1,) * (real.ndim - 1)
    eps = torch.rand(shape, generator=generator, dtype=real.dtype, device=real.device)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    if score_gradient is not None:
        grad = score_gradient(x_hat)
    else:
        x_hat.requires_grad_(True)
        scores = critic(x_hat).reshape(real.shape[0], -1).mean(dim=1)
        (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()
