"""Training LMISA: one visible loop over a config and its data, resumable, optionally data-parallel.

Each step draws three batches: labelled source images (segmentation loss), unlabelled source images
(reconstruction) and unlabelled target images (reconstruction and the shape critic). With ``G`` the dual-task
network and ``D`` the shape critic::

    generator: loss_g = beta * CE(seg(xs), ys) + alpha * (wMSE(rec(xu), xu) + wMSE(rec(xt), xt))
                        - adv_weight * mean(D(softmax(seg(xt))[foreground]))
    critic:    loss_c = mean(D(fake)) - mean(D(one_hot(ys)[foreground])) + gp_weight * GP

What the critic compares, and when its term is on, is set in :mod:`lmisa_lite.adversarial`.

Target labels are never used (unless ``supervise_target``), neither for training nor for choosing the
checkpoint: ``best.pt`` is the step with the lowest loss on labelled *source* validation cases.

The settings live in :mod:`lmisa_lite.config`, the checkpoint files and resuming in
:mod:`lmisa_lite.checkpoint`, devices in :mod:`lmisa_lite.device` and the process group in
:mod:`lmisa_lite.distributed`; their main names stay importable from here.

Examples:
    >>> from data_utils.phantoms import make_dataset
    >>> ct = make_dataset("kidney", "ct", n=4, dims=2, seed=0)
    >>> mri = make_dataset("kidney", "mri", n=4, dims=2, seed=0)
    >>> config = TrainConfig(steps=2, image_size=(64, 64), base_filters=4, progress=False)
    >>> result = train(config, ct, mri)
    >>> len(result.history["loss_g"])
    2
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from data_utils.case import Case
from lmisa_lite.checkpoint import (Progress, checkpoint_state, load_checkpoint, resume_training,
                                   save_checkpoint)
from lmisa_lite.config import TASK_CLASSES, TrainConfig, build_networks
from lmisa_lite.device import (autocast, autocast_dtype, channels_last_format, cpu_has_native_bf16,
                               evaluation_mode, resolve_device)
from lmisa_lite.distributed import ProcessGroup, broadcast_buffers, init_distributed, mean_over_processes, wrap
from lmisa_lite.adversarial import adversarial_scale, critic_update, fake_maps
from lmisa_lite.losses import LOSS_TERMS, generator_adversarial, segmentation_ce, weighted_mse
from lmisa_lite.networks import LMISANet, ShapeCritic, batched_forward
from lmisa_lite.sampling import (LABELLED_SOURCE, TARGET, UNLABELLED_SOURCE, Pool, grid_batches, prepare_pool,
                                 sample_batch, step_generator)

__all__ = ["HISTORY_KEYS", "TASK_CLASSES", "TrainConfig", "TrainResult", "build_networks", "load_checkpoint",
           "resolve_device", "train"]

# One entry per step: the step index, the network's learning rate, the loss terms (LOSS_TERMS: the generator
# loss and its terms, loss_seg and loss_rec unweighted, the critic loss, its gradient penalty and the
# Wasserstein estimate mean(D(real)) - mean(D(fake))), source validation loss and Dice (NaN between
# validations) and the seconds since the run started (counted across resumes).
HISTORY_KEYS = ("step", "lr", *LOSS_TERMS, "val_loss", "val_dice", "time")
GRADIENT_PENALTY = 3  # random stream of the gradient-penalty interpolation weights
CRITIC_REAL = 4  # random stream of the 3D source patches whose label maps the critic sees as real

Callback = Callable[[int, dict, nn.Module], Any]


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: The network after the last step (plain module, eval mode, on the training device): the moving
            average of the weights when ``config.ema_decay > 0``, else the trained weights.
        critic: The shape critic after the last step, or None when the shape constraint is off.
        history: One list per key of :data:`HISTORY_KEYS`, one entry per step; loss terms a variant does not
            use and steps without validation hold NaN.
        config: The config the run used.
        seconds: Wall time of this call.
        best_step: Step (0-based) with the lowest source validation loss, or None without validation cases.
        best_model: A copy of :attr:`model` as it was at ``best_step``, or None.
        best_checkpoint: Path of ``best.pt``, or None when no file was written.
        last_checkpoint: Path of ``last.pt``, or None when no file was written.
    """

    model: LMISANet
    critic: ShapeCritic | None
    history: dict[str, list[float]]
    config: TrainConfig
    seconds: float
    best_step: int | None = None
    best_model: LMISANet | None = None
    best_checkpoint: Path | None = None
    last_checkpoint: Path | None = None

    def history_frame(self):
        """The history as a :class:`pandas.DataFrame`, one row per step."""
        import pandas as pd

        return pd.DataFrame(self.history)


@contextmanager
def _frozen(module: nn.Module | None) -> Iterator[None]:
    """Exclude the critic's parameters from the generator's backward pass (saves work; under DDP it also keeps
    the critic's gradient hooks from firing outside the critic step)."""
    params = [] if module is None else [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """Deterministic kernels for the duration of train (CPU runs), restoring the caller's settings after.

    Deterministic mode also fills every new tensor with NaN (``fill_uninitialized_memory``), a debugging aid
    that changes no result, written over by the kernels anyway, that cost about 8% of a CPU step; it is off
    while training.
    """
    import torch.utils.deterministic as det

    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
        det.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        det.fill_uninitialized_memory = before[2]


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``average``'s weights towards ``model``'s by ``1 - decay``; copy the buffers (batch-norm
    statistics) as they are. One fused update over all parameters (and one over all buffers)."""
    kept, current = list(average.parameters()), list(model.parameters())
    if kept:
        torch._foreach_lerp_(kept, current, 1 - decay)
    kept_buffers, current_buffers = list(average.buffers()), list(model.buffers())
    if kept_buffers:
        torch._foreach_copy_(kept_buffers, current_buffers)


def _validate(model: LMISANet, pool: Pool, config: TrainConfig, device: torch.device, n_cases: int,
              amp_dtype: torch.dtype | None = None) -> tuple[float, float]:
    """Source validation: mean ``CE + alpha * wMSE`` over all images/patches (whole windows, so voxels where a
    volume's last windows overlap count twice in the loss), and the mean foreground Dice of
    the cases (overlap counts summed over each case's slices or patches, each voxel once; see
    :func:`~lmisa_lite.sampling.grid_batches`). The network runs in the memory format and precision of
    training; losses and the argmax use float32 logits."""
    num_classes = model.num_classes
    fmt = channels_last_format(config.spatial_dims, config.channels_last)
    inter = np.zeros((n_cases, num_classes - 1))
    total = np.zeros((n_cases, num_classes - 1))  # |prediction| + |reference|
    loss_sum, count = 0.0, 0
    batches = grid_batches(pool, patch_size=config.image_size, batch_size=config.val_batch_size)
    with evaluation_mode(model, device):
        for x, y, case_index, owned in batches:
            x, y, owned = x.to(device).contiguous(memory_format=fmt), y.to(device), owned.to(device)
            with autocast(device, amp_dtype):
                recon, logits = model(x)
            recon, logits = recon.float(), logits.float()
            loss = config.beta * segmentation_ce(logits, y)
            if config.use_reconstruction:
                loss = loss + config.alpha * weighted_mse(recon, x)
            loss_sum += float(loss) * len(x)
            count += len(x)
            pred = logits.argmax(1)
            for k in range(1, num_classes):
                p, g = ((pred == k) & owned).flatten(1), ((y == k) & owned).flatten(1)
                np.add.at(inter[:, k - 1], case_index, (p & g).sum(1).cpu().numpy())
                np.add.at(total[:, k - 1], case_index, (p.sum(1) + g.sum(1)).cpu().numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2 * inter / total, np.nan)  # a class absent from both is not scored
    return loss_sum / count, float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan


def _row_to_postfix(row: dict[str, float]) -> dict[str, str]:
    keys = ("loss_seg", "loss_rec", "loss_adv", "loss_critic", "val_dice")
    return {k.replace("loss_", ""): f"{row[k]:.3g}" for k in keys if not math.isnan(row[k])}


def _start(config: TrainConfig) -> tuple[torch.device, ProcessGroup, torch.dtype | None]:
    """The device (one GPU per process under torchrun), the process group, and the autocast dtype (None:
    float32)."""
    device = resolve_device(config.device)
    group = init_distributed(device)
    if group.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", group.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp_dtype = autocast_dtype(device, config.amp)
    if config.amp and amp_dtype is None:
        warnings.warn(f"amp=True has no effect on {device.type}: mixed precision runs on CUDA and CPU only",
                      stacklevel=3)
    if config.amp and amp_dtype == torch.bfloat16 and not cpu_has_native_bf16():
        warnings.warn("amp=True on a CPU without native bfloat16 (AMX or AVX512-BF16): bfloat16 is emulated "
                      "there and slower than float32", stacklevel=3)
    return device, group, amp_dtype


def _networks_and_optimisers(config: TrainConfig, device: torch.device, amp_dtype: torch.dtype | None
                             ) -> dict[str, Any]:
    """Everything with a state_dict that a resumed run needs back: networks, optimisers, schedules, the
    gradient scaler and the moving average of the weights (what validation, checkpoints and the result use)."""
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        model, critic = build_networks(config)
    fmt = channels_last_format(config.spatial_dims, config.channels_last)
    model.to(device, memory_format=fmt)
    # fused: one kernel over all parameters per step instead of about ten small ops per parameter
    fused = dict(fused=True) if device.type in ("cpu", "cuda") else {}
    opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas, **fused)
    sched_g = torch.optim.lr_scheduler.StepLR(opt_g, config.lr_decay_every, gamma=config.lr_decay)
    opt_c = sched_c = None
    if critic is not None:
        critic.to(device, memory_format=fmt)
        opt_c = torch.optim.Adam(critic.parameters(), lr=config.critic_lr or config.lr, betas=config.betas,
                                 **fused)
        sched_c = torch.optim.lr_scheduler.StepLR(opt_c, config.lr_decay_every, gamma=config.lr_decay)
    # float16 needs loss scaling against underflow; bfloat16 has the range of float32 and needs none
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = copy.deepcopy(model) if config.ema_decay > 0 else None  # never optimised; updated under no_grad
    return dict(model=model, critic=critic, opt_g=opt_g, opt_c=opt_c, sched_g=sched_g, sched_c=sched_c,
                scaler=scaler, ema=ema)


def _generator_losses(config: TrainConfig, model: nn.Module, critic: nn.Module | None, batches: dict,
                      adv_scale: float = 1.0) -> dict[str, Any]:
    """The generator's loss and its terms for one step: segment the source, reconstruct both domains, fool
    the critic. Also returns the target logits, which the critic step judges, and the target's
    reconstruction. ``adv_scale`` weighs the adversarial term (:func:`lmisa_lite.adversarial.adversarial_scale`);
    at 0 the critic is not run.

    With ``config.batched_passes`` and instance norm the network runs once on the labelled source, target and
    unlabelled source batches together (each image is normalised on its own, so this equals one pass per
    batch up to float rounding). Batch norm keeps one pass per batch, in that order: its batch statistics
    (and running averages) stay per domain, as published. Losses are computed in float32 from upcast outputs
    (under autocast the network's outputs are bfloat16 or float16).
    """
    ys, xt, yt, xu = (batches[k] for k in ("ys", "xt", "yt", "xu"))
    names = ["s"]
    if config.use_reconstruction or critic is not None or config.supervise_target:
        names.append("t")
    if config.use_reconstruction:
        names.append("u")
    inputs = [batches["x" + name] for name in names]
    if config.batched_passes and config.norm == "instance":
        outputs = batched_forward(model, inputs)
    else:
        outputs = [model(x) for x in inputs]
    rec, logits = {}, {}
    for name, (r, lg) in zip(names, outputs):
        rec[name], logits[name] = r.float(), lg.float()
    out: dict[str, Any] = dict(loss_seg=segmentation_ce(logits["s"], ys), logits_t=logits.get("t"),
                               rec_t=rec.get("t"))
    if config.supervise_target:
        out["loss_seg"] = (out["loss_seg"] + segmentation_ce(logits["t"], yt)) / 2
    loss_g = config.beta * out["loss_seg"]
    if config.use_reconstruction:
        out["loss_rec"] = weighted_mse(rec["u"], xu) + weighted_mse(rec["t"], xt)
        loss_g = loss_g + config.alpha * out["loss_rec"]
    if critic is not None and adv_scale > 0:
        # The critic judges shapes only: foreground probabilities of target predictions.
        out["loss_adv"] = generator_adversarial(critic(fake_maps(config, logits["t"])).float())
        loss_g = loss_g + adv_scale * out["loss_adv"]
    out["loss_g"] = loss_g
    return out


def train(config: TrainConfig, source: Sequence[Case], target: Sequence[Case], *,
          val: Sequence[Case] | None = None, callbacks: Sequence[Callback] | None = None) -> TrainResult:
    """Train LMISA on labelled source cases and unlabelled target cases.

    Cases are preprocessed once (MLNGM + z-score, or z-score only). A 2D model trains on 2D cases as they are
    or on every slice (last axis) of 3D cases; a 3D model trains on random patches of ``image_size``.

    Under ``torchrun --nproc_per_node N`` (``WORLD_SIZE > 1``) the same call trains data-parallel: each
    process draws its own ``batch_size`` items per batch (the effective batch is N times larger), network and
    critic are wrapped in DistributedDataParallel (gloo on CPU, NCCL on CUDA, one GPU per process), and rank 0
    alone writes checkpoints, shows progress and runs validation and callbacks. Batch norm (``norm="batch"``)
    stays per process (plain BatchNorm, as with one process); rank 0's running statistics are copied to all
    ranks at the end.

    Args:
        config: The run's settings.
        source: Labelled source-domain cases.
        target: Target-domain cases; labels are ignored unless ``config.supervise_target``.
        val: Labelled source-domain cases for model selection (validation loss and Dice every
            ``config.val_every`` steps and after the last step); None disables validation and ``best.pt``.
        callbacks: Called on rank 0 as ``callback(step, row, model)`` after every step, once the optimisers
            have stepped and (when due) validation has run and checkpoints are written: ``step`` is the
            0-based index of the finished step, ``row`` the dict just appended to the history (keys
            :data:`HISTORY_KEYS`; ``val_loss`` and ``val_dice`` are NaN on steps without validation) and
            ``model`` the network that validation sees: the weight average when ``config.ema_decay > 0``
            (training mode; a callback that changes the mode must restore it).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: For empty case lists, missing labels, cases that do not fit ``spatial_dims``, or a
            ``last.pt`` whose architecture differs from ``config`` when resuming.

    Examples:
        >>> from data_utils.phantoms import make_dataset
        >>> ct = make_dataset("kidney", "ct", n=2, dims=2, seed=0)
        >>> mri = make_dataset("kidney", "mri", n=2, dims=2, seed=0)
        >>> result = train(TrainConfig(steps=1, image_size=(64, 64), base_filters=4, progress=False), ct, mri)
        >>> sorted(result.history) == sorted(HISTORY_KEYS)
        True
    """
    from tqdm.auto import tqdm

    config.validate()
    started = time.perf_counter()
    device, group, amp_dtype = _start(config)
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    last_path = None if out_dir is None else out_dir / "last.pt"
    best_path = None if out_dir is None else out_dir / "best.pt"

    # ---- data: network inputs computed once ----------------------------------------------------------------
    prep = dict(spatial_dims=config.spatial_dims, image_size=config.image_size, use_mlngm=config.use_mlngm,
                num_workers=config.num_workers)
    if not target:
        raise ValueError("target: expected at least one Case, got none")
    source_pool = prepare_pool(source, labelled=True, **prep)
    target_pool = prepare_pool(target, labelled=config.supervise_target, **prep)
    val_pool = prepare_pool(val, labelled=True, **prep) if val and group.is_main else None

    # ---- networks, optimisers, schedules; a resumed run gets its state back ---------------------------------
    stateful = _networks_and_optimisers(config, device, amp_dtype)
    run = resume_training(config, stateful, last_path=last_path, best_path=best_path, device=device,
                          history_keys=HISTORY_KEYS, is_main=group.is_main)
    net, ema, critic_net = stateful["model"], stateful["ema"], stateful["critic"]
    opt_g, opt_c, scaler = stateful["opt_g"], stateful["opt_c"], stateful["scaler"]
    model, critic = wrap(net, group, device), wrap(critic_net, group, device)
    evaluated = net if ema is None else ema
    fmt = channels_last_format(config.spatial_dims, config.channels_last)
    time_offset = run.history["time"][-1] if run.history["time"] else 0.0
    bar = tqdm(total=config.steps, initial=run.step, desc="train", dynamic_ncols=True, leave=True,
               disable=not (config.progress and group.is_main))

    def draw(pool: Pool, stream: int, step: int, share: float | None = config.foreground_share):
        generator = step_generator(config.seed, step, stream=stream, rank=group.rank)
        x, y = sample_batch(pool, batch_size=config.batch_size, patch_size=config.image_size,
                            generator=generator, flip=config.flip_augment,
                            foreground_share=share, augment=config.augment_3d)
        return x.to(device).contiguous(memory_format=fmt), None if y is None else y.to(device)

    # 3D: the labelled batch aims a share of its patches at the organ; the target's cannot. The critic's real
    # maps then come from source patches placed as the target's are (uniformly), or it would learn to tell
    # real from fake by how often a patch holds the organ, and push the target to predict more of it.
    separate_real = (critic is not None and config.spatial_dims == 3 and config.critic_real_uniform
                     and config.foreground_share != 0)

    with ExitStack() as scope:  # undone on exit, errors included
        scope.callback(bar.close)
        if group.created:
            scope.callback(dist.destroy_process_group)
        scope.enter_context(_deterministic(device.type == "cpu"))
        for step in range(run.step, config.steps):
            model.train()
            batches = dict(zip(("xs", "ys"), draw(source_pool, LABELLED_SOURCE, step)))
            batches.update(zip(("xt", "yt"), draw(target_pool, TARGET, step)))
            batches["xu"] = draw(source_pool, UNLABELLED_SOURCE, step)[0] if config.use_reconstruction else None

            # ---- generator step: segment the source, reconstruct both domains, fool the critic ------------
            with autocast(device, amp_dtype), _frozen(critic_net):
                losses = _generator_losses(config, model, critic, batches, adversarial_scale(config, step))
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(losses["loss_g"]).backward()
            scaler.step(opt_g)
            scaler.update()
            if ema is not None:
                update_average(ema, net, min(config.ema_decay, (1 + step) / (10 + step)))

            # ---- critic step(s): real source label maps vs target predictions (WGAN-GP) --------------------
            if critic is not None:
                real = draw(source_pool, CRITIC_REAL, step, share=0.0)[1] if separate_real else batches["ys"]
                gp_generator = torch.Generator(device).manual_seed(
                    step_generator(config.seed, step, stream=GRADIENT_PENALTY, rank=group.rank).initial_seed())
                losses.update(critic_update(config, critic, opt_c, real, losses["logits_t"],
                                            gp_generator, amp_dtype, images_t=(batches["xt"], losses["rec_t"])))
                stateful["sched_c"].step()
            lr = stateful["sched_g"].get_last_lr()[0]
            stateful["sched_g"].step()

            # ---- bookkeeping: history (averaged over processes), validation, checkpoints -------------------
            # one read of all loss terms (a single device sync on CUDA, not one per term)
            recorded = [k for k in LOSS_TERMS if k in losses]
            read = dict(zip(recorded, torch.stack([losses[k].detach().float() for k in recorded]).tolist()))
            values = torch.tensor([read.get(k, math.nan) for k in LOSS_TERMS], dtype=torch.float64)
            row = dict(step=step, lr=lr, **dict(zip(LOSS_TERMS, mean_over_processes(values, group).tolist())),
                       val_loss=math.nan, val_dice=math.nan, time=time_offset + time.perf_counter() - started)
            last, improved = step == config.steps - 1, False
            if val_pool is not None and ((step + 1) % config.val_every == 0 or last):
                row["val_loss"], row["val_dice"] = _validate(evaluated, val_pool, config, device, len(val),
                                                             amp_dtype)
                if row["val_loss"] < run.best_val_loss:
                    run.best_val_loss, run.best_step, improved = row["val_loss"], step, True
                    run.best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            for key in HISTORY_KEYS:
                run.history[key].append(row[key])
            run.step = step + 1
            if improved and best_path is not None:
                save_checkpoint(checkpoint_state(config, run, stateful), best_path)
            if group.is_main and last_path is not None and (run.step % config.checkpoint_every == 0 or last):
                save_checkpoint(checkpoint_state(config, run, stateful), last_path)
            if group.is_main:
                for callback in callbacks or ():
                    callback(step, row, evaluated)
            bar.update(1)
            if step % 10 == 0 or last or not math.isnan(row["val_loss"]):
                bar.set_postfix(_row_to_postfix(row), refresh=False)
        # Each process updated its own batch-norm running statistics; keep rank 0's everywhere.
        broadcast_buffers((net, ema), group)
    return _result(config, run, evaluated, critic_net, started, written=group.is_main and out_dir is not None,
                   paths=(best_path, last_path))


def _result(config: TrainConfig, run: Progress, evaluated: nn.Module, critic: nn.Module | None, started: float,
            *, written: bool, paths: tuple[Path | None, Path | None]) -> TrainResult:
    # The returned networks are plain (contiguous) whatever the training memory format was.
    evaluated.to(memory_format=torch.contiguous_format)
    if critic is not None:
        critic.to(memory_format=torch.contiguous_format)
    best_model = None
    if run.best_state is not None:
        best_model = copy.deepcopy(evaluated)
        best_model.load_state_dict(run.best_state)
        best_model.eval()
    best_path, last_path = paths
    return TrainResult(
        model=evaluated.eval(), critic=None if critic is None else critic.eval(), history=run.history,
        config=config, seconds=time.perf_counter() - started, best_step=run.best_step, best_model=best_model,
        best_checkpoint=best_path if written and best_path.is_file() else None,
        last_checkpoint=last_path if written and last_path.is_file() else None,
    )
