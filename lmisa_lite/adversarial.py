"""The shape constraint's side of a training step: what the critic compares, how strongly it pulls, its update.

The critic compares *real* maps (source labels, one-hot without background) with *fake* maps (the foreground
probabilities of target predictions). Every choice below is a :class:`~lmisa_lite.config.TrainConfig` field,
so that each can be measured against the published setting (``benchmarks/critic_investigation.py``):

- ``critic_real``: what counts as real. One-hot maps are hard (0 or 1) and softmax outputs never are, so a
  critic can tell them apart by hardness alone, whatever the shape; ``"smoothed"`` blurs the one-hot maps
  with a Gaussian of ``critic_real_amount`` voxels (the blurred maps of all classes still sum to one), and
  ``"noised"`` mixes each voxel's one-hot vector with a random point of the simplex (weight
  ``critic_real_amount``).
- ``critic_fake_temperature``: predictions are sharpened before the critic sees them
  (``softmax(logits / T)``, ``T < 1``), the other way of meeting the hardness of real maps.
- ``gp_on``: where the gradient penalty holds the critic 1-Lipschitz. ``"labels"`` (WGAN-GP): on lines
  between real and fake maps, where the critic is evaluated. ``"reconstruction"`` (the authors' released
  code): on lines between the target's reconstruction and its input, images the critic never scores; the
  critic is then not constrained on label maps at all. With more than one foreground class the one-channel
  images are repeated over the critic's input channels.
- ``adv_weight``, ``adv_warmup``, ``adv_ramp``: the weight of the critic's signal in the network's loss,
  zero for the first ``adv_warmup`` steps (the critic trains all the same) and then rising linearly to
  ``adv_weight`` over ``adv_ramp`` steps.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lmisa_lite.config import TrainConfig
from lmisa_lite.device import autocast, channels_last_format
from lmisa_lite.distributed import unwrap
from lmisa_lite.losses import critic_wasserstein, foreground_probs, gradient_penalty, one_hot_foreground
from lmisa_lite.networks import batched_forward

__all__ = ["adversarial_scale", "critic_update", "fake_maps", "real_maps", "smooth_maps"]


def adversarial_scale(config: TrainConfig, step: int) -> float:
    """The weight of the adversarial term in the network's loss at 0-based ``step``.

    Examples:
        >>> config = TrainConfig(adv_weight=0.5, adv_warmup=100, adv_ramp=100)
        >>> [adversarial_scale(config, s) for s in (0, 99, 149, 199, 500)]
        [0.0, 0.0, 0.25, 0.5, 0.5]
    """
    if not config.use_shape_constraint or step < config.adv_warmup:
        return 0.0
    if config.adv_ramp <= 0:
        return float(config.adv_weight)
    return float(config.adv_weight) * min(1.0, (step + 1 - config.adv_warmup) / config.adv_ramp)


def smooth_maps(maps: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of each channel of ``(B, C, *S)`` maps (2D or 3D), ``sigma`` in voxels, edges replicated.

    A blur is linear and keeps constants, so blurred one-hot maps of all classes still sum to one per voxel.

    Examples:
        >>> maps = torch.zeros(1, 1, 9, 9); maps[..., 4, 4] = 1
        >>> round(float(smooth_maps(maps, 1.0).sum()), 4), float(smooth_maps(maps, 1.0).max()) < 1
        (1.0, True)
    """
    if sigma <= 0:
        return maps
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
    kernel = torch.exp(-offsets**2 / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels, dims = maps.shape[1], maps.ndim - 2
    conv = F.conv2d if dims == 2 else F.conv3d
    out = maps
    for axis in range(dims):
        shape = [1] * (2 + dims)
        shape[2 + axis] = kernel.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - axis)] = pad[2 * (dims - 1 - axis) + 1] = radius
        out = conv(F.pad(out, pad, mode="replicate"), kernel.reshape(shape).expand(channels, *shape[1:]),
                   groups=channels)
    return out


def real_maps(config: TrainConfig, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """What the critic sees as real: the foreground one-hot maps of source labels, softened per
    ``config.critic_real`` (``"onehot"``, ``"smoothed"`` or ``"noised"``; see the module docstring)."""
    num_classes = config.resolved_num_classes
    if config.critic_real == "onehot":
        return one_hot_foreground(labels, num_classes)
    full = F.one_hot(labels.long(), num_classes).movedim(-1, 1).float()
    if config.critic_real == "smoothed":
        full = smooth_maps(full, config.critic_real_amount)
    else:  # noised: a mix with a uniformly random point of the simplex at each voxel
        noise = -torch.log(torch.rand(full.shape, generator=generator, device=full.device).clamp_min(1e-12))
        noise = noise / noise.sum(dim=1, keepdim=True)
        full = (1 - config.critic_real_amount) * full + config.critic_real_amount * noise
    return full[:, 1:]


def fake_maps(config: TrainConfig, logits: Tensor) -> Tensor:
    """What the critic sees as fake: foreground probabilities of target logits, sharpened by
    ``config.critic_fake_temperature`` (1: the plain softmax)."""
    temperature = config.critic_fake_temperature
    return foreground_probs(logits if temperature == 1 else logits / temperature)


def critic_update(config: TrainConfig, critic: nn.Module, opt_c: torch.optim.Optimizer, ys: Tensor,
                  logits_t: Tensor, generator: torch.Generator, amp_dtype: torch.dtype | None = None, *,
                  images_t: tuple[Tensor, Tensor] | None = None) -> dict[str, Tensor]:
    """``n_critic`` WGAN-GP updates of the critic: real source label maps against target predictions.

    With ``config.batched_passes`` the critic scores real and fake maps in one pass (it has no normalisation,
    so that equals two passes). Precision: under float16 autocast (CUDA) the critic step stays float32, as
    it has no gradient scaling and its penalty differentiates through the critic twice, where float16
    underflows. Under bfloat16 autocast (CPU), which has float32's range, the whole step runs in bfloat16:
    on a critic at initialisation and with its weights x3 the penalty agreed with float32 to 1e-3 and its
    parameter gradient to 2% (cosine 0.9997), the precision of every other bfloat16 gradient, and the
    penalty takes about a quarter less CPU time. Scores, losses and the gradient norm are float32 either way.
    With ``config.closed_form_penalty`` (default) the penalty's input gradient is
    :meth:`~lmisa_lite.networks.ShapeCritic.score_gradient`, not autograd's double backward: equal in float32,
    about 30% faster in 3D, and right under bfloat16, where the double backward's gradients of the critic's
    first layers are not (see that method).

    Args:
        images_t: ``(input, reconstruction)`` of the target batch; needed when ``config.gp_on`` is
            ``"reconstruction"`` (the penalty then interpolates between them).
    """
    real = real_maps(config, ys, generator)
    fake = fake_maps(config, logits_t.detach().float())
    fmt = channels_last_format(config.spatial_dims, config.channels_last)
    real, fake = real.contiguous(memory_format=fmt), fake.contiguous(memory_format=fmt)
    if config.gp_on == "labels":
        gp_ends = real, fake
    else:
        if images_t is None:
            raise ValueError("gp_on='reconstruction' needs images_t=(target input, its reconstruction)")
        gp_ends = tuple(x.detach().float().expand_as(real).contiguous(memory_format=fmt) for x in images_t)
    device = real.device
    amp_dtype = amp_dtype if amp_dtype == torch.bfloat16 else None
    params = [p for p in critic.parameters() if p.requires_grad]
    # the penalty's input gradient written out (ShapeCritic.score_gradient), or autograd's double backward
    score_gradient = unwrap(critic).score_gradient if config.closed_form_penalty else None
    for _ in range(config.n_critic):
        with autocast(device, amp_dtype):
            if config.batched_passes:
                real_scores, fake_scores = batched_forward(critic, [real, fake])
            else:
                real_scores, fake_scores = critic(real), critic(fake)
        loss_w = critic_wasserstein(real_scores.float(), fake_scores.float())
        with autocast(device, amp_dtype):
            gp = gradient_penalty(lambda x: critic(x).float(), *gp_ends, generator=generator,
                                  score_gradient=score_gradient)
        loss_c = loss_w + config.gp_weight * gp
        opt_c.zero_grad(set_to_none=True)
        # Gradients of the critic's parameters only: the penalty's interpolates require a gradient (for the
        # penalty itself), and a plain backward would also compute their gradient again, through the 7x7 stem
        # (about 6% of the 3D critic step).
        with warnings.catch_warnings():
            # Under DDP: the penalty's double backward returns the gradients of a few weights whose layout is
            # both plain and channels-last (one input channel, 1x1 kernels) with other strides on their
            # size-1 dimensions than the weights; DDP then copies those few values into its bucket and warns.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            loss_c.backward(inputs=params)
        opt_c.step()
    return dict(loss_critic=loss_c, gp=gp, wasserstein=-loss_w)
