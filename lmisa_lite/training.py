"""Training LMISA: one config dataclass, one visible loop, resumable checkpoints, optional data parallelism.

Each step draws three batches: labelled source images (segmentation loss), unlabelled source images
(reconstruction) and unlabelled target images (reconstruction and the shape critic). With ``G`` the dual-task
network and ``D`` the shape critic::

    generator: loss_g = beta * CE(seg(xs), ys) + alpha * (wMSE(rec(xu), xu) + wMSE(rec(xt), xt))
                        - mean(D(softmax(seg(xt))[foreground]))
    critic:    loss_c = mean(D(fake)) - mean(D(one_hot(ys)[foreground])) + gp_weight * GP

Target labels are never used (unless ``supervise_target``), neither for training nor for choosing the
checkpoint: ``best.pt`` is the step with the lowest loss on labelled *source* validation cases.

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
import dataclasses
import difflib
import math
import os
import time
import types
import typing
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from data_utils.case import Case
from lmisa_lite.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from lmisa_lite.losses import (critic_wasserstein, foreground_probs, generator_adversarial, gradient_penalty,
                               one_hot_foreground, segmentation_ce, weighted_mse)
from lmisa_lite.networks import NORMS, LMISANet, ShapeCritic
from lmisa_lite.sampling import (LABELLED_SOURCE, TARGET, UNLABELLED_SOURCE, Pool, grid_batches, prepare_pool,
                                 sample_batch, step_generator)

TASK_CLASSES = {"kidney": 2, "heart": 5}  # background included
# One entry per step: the step index, the network's learning rate, the generator loss and its terms
# (loss_seg and loss_rec unweighted), the critic loss, its gradient penalty and the Wasserstein estimate
# mean(D(real)) - mean(D(fake)), source validation loss and Dice (NaN between validations) and the seconds
# since the run started (counted across resumes).
HISTORY_KEYS = ("step", "lr", "loss_g", "loss_seg", "loss_rec", "loss_adv", "loss_critic", "gp",
                "wasserstein", "val_loss", "val_dice", "time")
GRADIENT_PENALTY = 3  # random stream of the gradient-penalty interpolation weights
# Fields that shape the networks or the data they see: a resumed run must not change them.
_ARCHITECTURE = ("task", "spatial_dims", "num_classes", "image_size", "base_filters", "critic_filters",
                 "depth", "norm", "ema_decay", "use_mlngm", "use_reconstruction", "use_shape_constraint",
                 "supervise_target")

Callback = Callable[[int, dict, nn.Module], Any]


@dataclass
class TrainConfig:
    """Everything that defines a training run; a run is this config plus its data.

    The defaults train a useful 2D kidney model (128 x 128 CT -> MRI phantoms) on one CPU core in about five
    minutes (900 steps of about 0.3 s). They keep the published loss weights and optimiser (Adam, lr 1e-3,
    x0.8 decay at fixed intervals, ``alpha = beta = 40``, gradient-penalty weight 10, one critic step per
    generator step, batch size 1 for 2D) with two changes for CPU speed: half the published width
    (``base_filters=8``; the published network has 16), and Adam ``betas=(0.5, 0.999)``, common for
    adversarial training, with which the source segmentation converged about twice as fast as with
    ``(0.9, 0.999)`` on the phantoms. For 3D, set ``spatial_dims=3``, ``image_size=(64, 64, 32)`` and
    ``batch_size=2`` (published).

    One change for stability: the decoder uses instance norm (``norm="instance"``) where the published network
    has batch norm (``norm="batch"``). With one image per batch, batch norm in training normalises each image
    by its own statistics, which is what instance norm does; at inference batch norm switches to running
    averages over the last few training images of both domains, and target predictions then swing from one
    checkpoint to the next (kidney CT -> MRI phantoms: target Dice 0.60-0.83 over five checkpoints 50 steps
    apart, 0.84-0.86 for the same weights normalised per image). Same trainable parameters either way.
    And one for the same reason: validation, checkpoints and the returned model use an exponential moving
    average of the weights (``ema_decay=0.99``, about the last 100 steps); the adversarial game keeps single
    steps noisy on the target (0.66 after the last step of a run whose average scored 0.87). ``norm="batch",
    ema_decay=0`` trains the published way.

    Attributes:
        task: ``"kidney"`` (2 classes) or ``"heart"`` (5 classes); sets ``num_classes`` when that is None.
        spatial_dims: 2 (images or slices) or 3 (volumes, trained on random patches).
        num_classes: Classes including background; None derives it from ``task``.
        steps: Total generator steps (a resumed run continues up to this number).
        batch_size: Items per batch and per process, for each of the three batches of a step.
        image_size: 2D image size ``(X, Y)`` (cases are centre-cropped or padded to it) or 3D patch
            ``(X, Y, Z)``; every size must be divisible by ``2**(depth-1)``.
        lr: Adam learning rate of the network.
        lr_decay: Factor applied to both learning rates every ``lr_decay_every`` steps.
        lr_decay_every: Interval of the decay in steps (fixed: extending ``steps`` keeps the schedule).
        critic_lr: Adam learning rate of the critic; None uses ``lr``.
        betas: Adam betas of both optimisers.
        alpha: Weight of the reconstruction loss.
        beta: Weight of the source segmentation loss.
        gp_weight: Weight of the gradient penalty.
        n_critic: Critic updates per generator step (on the same batches).
        base_filters: Width of the first level of the network (published: 16).
        critic_filters: Width of the first level of the critic; None uses ``base_filters``.
        depth: Levels of network and critic (inputs are pooled ``depth - 1`` times).
        norm: Decoder normalisation, ``"instance"`` or ``"batch"`` (published); see the note above.
        ema_decay: Decay of the moving average of the network weights that validation, checkpoints and the
            result use (ramped up as ``min(ema_decay, (1 + step) / (10 + step))``); 0 uses the trained
            weights as they are.
        use_mlngm: Train on MLNGM maps (True) or on z-scored raw intensities (False).
        use_reconstruction: Keep the reconstruction loss (False also skips the unlabelled source batch).
        use_shape_constraint: Keep the shape critic (False skips it entirely).
        supervise_target: Oracle run: the segmentation loss becomes the mean of the source and the target
            cross-entropy, so the target domain is supervised too (needs target labels). An upper bound to
            compare against, not domain adaptation.
        flip_augment: Random flips along every axis (off by default: the published 2D model used none).
        val_every: Validate every this many steps (and after the last step) when validation cases are given.
        val_batch_size: Images or patches per validation forward pass.
        checkpoint_every: Write ``last.pt`` every this many steps (and after the last step).
        out_dir: Folder for ``last.pt`` and ``best.pt``; None writes no files.
        resume: Continue from ``out_dir/last.pt`` when it exists.
        seed: Seeds weights, batches and gradient-penalty draws.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: Mixed precision (float16 autocast and gradient scaling); None turns it on for CUDA only.
        num_workers: Threads for the up-front preprocessing (MLNGM) of the cases; 0 uses the calling thread.
        progress: Show a progress bar with the current losses.

    Examples:
        >>> TrainConfig().with_overrides(["steps=100", "image_size=64,64"]).image_size
        (64, 64)
    """

    task: str = "kidney"
    spatial_dims: int = 2
    num_classes: int | None = None
    steps: int = 900
    batch_size: int = 1
    image_size: tuple[int, ...] = (128, 128)
    lr: float = 1e-3
    lr_decay: float = 0.8
    lr_decay_every: int = 150
    critic_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)
    alpha: float = 40.0
    beta: float = 40.0
    gp_weight: float = 10.0
    n_critic: int = 1
    base_filters: int = 8
    critic_filters: int | None = None
    depth: int = 4
    norm: str = "instance"
    ema_decay: float = 0.99
    use_mlngm: bool = True
    use_reconstruction: bool = True
    use_shape_constraint: bool = True
    supervise_target: bool = False
    flip_augment: bool = False
    val_every: int = 50
    val_batch_size: int = 8
    checkpoint_every: int = 100
    out_dir: str | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    num_workers: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        self.image_size = tuple(int(s) for s in self.image_size)
        self.betas = tuple(float(b) for b in self.betas)
        if self.out_dir is not None:
            self.out_dir = os.fspath(self.out_dir)
        self.validate()

    def validate(self) -> None:
        """Check every field.

        Raises:
            ValueError: Naming the first field that is out of range and what was expected.
        """
        if self.num_classes is None and self.task not in TASK_CLASSES:
            raise ValueError(f"task={self.task!r}: expected one of {sorted(TASK_CLASSES)} or a num_classes")
        if self.num_classes is not None and self.num_classes < 2:
            raise ValueError(f"num_classes={self.num_classes}: expected >= 2 (background and a structure)")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims={self.spatial_dims}: expected 2 or 3")
        bad_critic = self.critic_filters is not None and self.critic_filters < 1
        if self.depth < 2 or self.base_filters < 1 or bad_critic:
            raise ValueError("depth must be >= 2 and base_filters/critic_filters >= 1, got "
                             f"depth={self.depth}, base_filters={self.base_filters}, "
                             f"critic_filters={self.critic_filters}")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r}: expected one of {sorted(NORMS)}")
        divisor = 2 ** (self.depth - 1)
        if len(self.image_size) != self.spatial_dims or any(s < 1 or s % divisor for s in self.image_size):
            example = "(128, 128)" if self.spatial_dims == 2 else "(64, 64, 32)"
            raise ValueError(f"image_size={self.image_size}: expected {self.spatial_dims} sizes, each a "
                             f"multiple of {divisor} (2**(depth-1)), e.g. {example}")
        positive = dict(steps=self.steps + 1, batch_size=self.batch_size, lr_decay_every=self.lr_decay_every,
                        n_critic=self.n_critic, val_every=self.val_every, val_batch_size=self.val_batch_size,
                        checkpoint_every=self.checkpoint_every, num_workers=self.num_workers + 1)
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected "
                                 f"{'>= 0' if name in ('steps', 'num_workers') else '>= 1'}")
        if not (self.lr > 0 and (self.critic_lr is None or self.critic_lr > 0)):
            raise ValueError(f"lr={self.lr}, critic_lr={self.critic_lr}: expected positive learning rates")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay}: expected a decay in [0, 1) (0: no averaging)")
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"lr_decay={self.lr_decay}: expected a factor in (0, 1]")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas}: expected two numbers in [0, 1)")
        if min(self.alpha, self.beta, self.gp_weight) < 0:
            raise ValueError(f"alpha={self.alpha}, beta={self.beta}, gp_weight={self.gp_weight}: "
                             "expected >= 0")
        if self.resume and self.out_dir is None:
            raise ValueError("resume=True needs out_dir (the folder holding last.pt)")

    @property
    def resolved_num_classes(self) -> int:
        """``num_classes``, or the task's number of classes when it is None."""
        return self.num_classes if self.num_classes is not None else TASK_CLASSES[self.task]

    def with_overrides(self, items: Iterable[str] = (), /, **values: Any) -> TrainConfig:
        """A copy with fields replaced, from ``"key=value"`` strings (command line) and/or keywords.

        Strings are converted with the field's type: ``"steps=100"``, ``"resume=true"``, ``"amp=none"``,
        ``"image_size=64,64"`` (or ``"(64, 64)"``), ``"out_dir=runs/a"``.

        Args:
            items: ``"key=value"`` strings.
            **values: Fields given as Python values.

        Returns:
            A new, validated :class:`TrainConfig`.

        Raises:
            ValueError: For an unknown key, a string without ``=``, a value that does not convert, or a
                field out of range.

        Examples:
            >>> TrainConfig().with_overrides(["resume=true", "out_dir=runs/a"], steps=10).resume
            True
        """
        if isinstance(items, str):
            items = [items]
        hints = typing.get_type_hints(type(self))
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, raw = str(item).partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"override {item!r}: expected key=value, e.g. steps=100")
            _check_key(key, hints)
            changes[key] = _parse(key, raw.strip(), hints[key])
        for key, value in values.items():
            _check_key(key, hints)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_overrides(cls, items: Iterable[str] = (), /, **values: Any) -> TrainConfig:
        """The default config with overrides, see :meth:`with_overrides`.

        Examples:
            >>> TrainConfig.from_overrides(["steps=100", "resume=true", "out_dir=/tmp/run"]).steps
            100
        """
        return cls().with_overrides(items, **values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: For keys that are not fields.
        """
        hints = typing.get_type_hints(cls)
        for key in data:
            _check_key(key, hints)
        # configs saved before these fields existed describe batch-norm networks without weight averaging
        return cls(**{"norm": "batch", "ema_decay": 0.0, **data})


def _check_key(key: str, hints: dict[str, Any]) -> None:
    if key not in hints:
        close = difflib.get_close_matches(key, hints, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(hints)}"
        raise ValueError(f"unknown TrainConfig key {key!r}{hint}")


def _parse(key: str, raw: str, hint: Any) -> Any:
    """Convert the string ``raw`` to the field type ``hint`` (bool, int, float, str, X | None, tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and raw.lower() in ("none", "null", ""):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse(key, raw, inner)
    try:
        if hint is bool:
            truth = {"true": True, "1": True, "yes": True, "on": True,
                     "false": False, "0": False, "no": False, "off": False}
            return truth[raw.lower()]
        if hint in (int, float, str):
            return hint(raw)
        if origin is tuple:
            parts = [p.strip() for p in raw.strip("()[] ").split(",") if p.strip()]
            fixed = Ellipsis not in args
            if fixed and len(parts) != len(args):
                raise ValueError
            return tuple(_parse(key, p, args[i] if fixed else args[0]) for i, p in enumerate(parts))
    except (KeyError, ValueError):
        pass
    else:
        raise TypeError(f"TrainConfig field {key!r} has an unsupported type {hint}")
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    expected = names.get(hint, "comma-separated values, e.g. 64,64" if origin is tuple else str(hint))
    raise ValueError(f"{key}={raw!r}: expected {expected}")


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; pass anything else to :class:`torch.device`.

    Args:
        device: ``"auto"``, a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a :class:`torch.device`.

    Returns:
        The device.

    Raises:
        ValueError: For a string that is not a device, or CUDA requested where none is available.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return resolved


def build_networks(config: TrainConfig) -> tuple[LMISANet, ShapeCritic | None]:
    """The network and (when the shape constraint is on) the critic a config describes, freshly initialised.

    Args:
        config: The run's config.

    Returns:
        ``(model, critic)``; ``critic`` is None when ``use_shape_constraint`` is False.
    """
    model = LMISANet(spatial_dims=config.spatial_dims, in_channels=1, num_classes=config.resolved_num_classes,
                     base_filters=config.base_filters, depth=config.depth, norm=config.norm)
    # predict_volume uses this as its default sliding-window patch for 3D models.
    model.patch_size = tuple(config.image_size)
    critic = None
    if config.use_shape_constraint:
        critic = ShapeCritic(spatial_dims=config.spatial_dims, in_channels=config.resolved_num_classes - 1,
                             base_filters=config.critic_filters or config.base_filters, depth=config.depth)
    return model, critic


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                    ) -> tuple[LMISANet, TrainConfig]:
    """Rebuild the trained network of a checkpoint (``last.pt`` or ``best.pt``).

    Args:
        path: Checkpoint file written by :func:`train`.
        device: Where to put the network (``"auto"`` allowed).

    Returns:
        ``(model, config)``: the network in eval mode and the run's :class:`TrainConfig`.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is not an lmisa-lite checkpoint.

    Examples:
        >>> model, config = load_checkpoint("runs/kidney/best.pt")  # doctest: +SKIP
    """
    state = read_checkpoint(path)
    try:
        config = TrainConfig.from_dict(state["config"])
        model, _ = build_networks(config)
        model.load_state_dict(state.get("ema") or state["model"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise ValueError(f"checkpoint {path}: does not hold a trained lmisa-lite network ({err})") from err
    return model.to(resolve_device(device)).eval(), config


@dataclass
class _Distributed:
    """Process-group facts of this run: a plain single process unless launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created: bool = False  # train() initialised the group, so it also destroys it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: torch.device) -> _Distributed:
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _Distributed()
    created = False
    if not initialised:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created = True
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return _Distributed(dist.get_rank(), dist.get_world_size(), local_rank, created)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


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
    """Deterministic kernels for the duration of train (CPU runs), restoring the caller's setting after."""
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@torch.no_grad()
def _update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``average``'s weights towards ``model``'s by ``1 - decay``; copy the buffers (batch-norm
    statistics) as they are."""
    for kept, current in zip(average.parameters(), model.parameters()):
        kept.lerp_(current, 1 - decay)
    for kept, current in zip(average.buffers(), model.buffers()):
        kept.copy_(current)


def _validate(model: LMISANet, pool: Pool, config: TrainConfig, device: torch.device, n_cases: int
              ) -> tuple[float, float]:
    """Source validation: mean ``CE + alpha * wMSE`` over all images/patches, and the mean foreground Dice of
    the cases (overlap counts summed over each case's slices or patches)."""
    from lmisa_lite.inference import evaluation_mode  # inference imports this module

    num_classes = model.num_classes
    inter = np.zeros((n_cases, num_classes - 1))
    total = np.zeros((n_cases, num_classes - 1))  # |prediction| + |reference|
    loss_sum, count = 0.0, 0
    batches = grid_batches(pool, patch_size=config.image_size, batch_size=config.val_batch_size)
    with evaluation_mode(model, device):
        for x, y, case_index in batches:
            x, y = x.to(device), y.to(device)
            recon, logits = model(x)
            loss = config.beta * segmentation_ce(logits.float(), y)
            if config.use_reconstruction:
                loss = loss + config.alpha * weighted_mse(recon.float(), x)
            loss_sum += float(loss) * len(x)
            count += len(x)
            pred = logits.argmax(1)
            for k in range(1, num_classes):
                p, g = (pred == k).flatten(1), (y == k).flatten(1)
                np.add.at(inter[:, k - 1], case_index, (p & g).sum(1).cpu().numpy())
                np.add.at(total[:, k - 1], case_index, (p.sum(1) + g.sum(1)).cpu().numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2 * inter / total, np.nan)  # a class absent from both is not scored
    return loss_sum / count, float(np.nanmean(dice)) if np.isfinite(dice).any() else math.nan


def _row_to_postfix(row: dict[str, float]) -> dict[str, str]:
    keys = ("loss_seg", "loss_rec", "loss_adv", "loss_critic", "val_dice")
    return {k.replace("loss_", ""): f"{row[k]:.3g}" for k in keys if not math.isnan(row[k])}


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
    device = resolve_device(config.device)
    ddp = _init_distributed(device)
    if ddp.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ddp.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    use_amp = device.type == "cuda" and config.amp is not False
    if config.amp and device.type != "cuda":
        warnings.warn("amp=True has no effect on CPU: mixed precision is used on CUDA only", stacklevel=2)
    out_dir = Path(config.out_dir) if config.out_dir is not None else None
    last_path = best_path = None
    if out_dir is not None:
        last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"

    # ---- data: network inputs computed once ----------------------------------------------------------------
    prep = dict(spatial_dims=config.spatial_dims, image_size=config.image_size, use_mlngm=config.use_mlngm,
                num_workers=config.num_workers)
    if not target:
        raise ValueError("target: expected at least one Case, got none")
    source_pool = prepare_pool(source, labelled=True, **prep)
    target_pool = prepare_pool(target, labelled=config.supervise_target, **prep)
    val_pool = prepare_pool(val, labelled=True, **prep) if val and ddp.is_main else None

    # ---- networks, optimisers, schedules ------------------------------------------------------------------
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(config.seed)
        model, critic = build_networks(config)
    model.to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=config.lr, betas=config.betas)
    sched_g = torch.optim.lr_scheduler.StepLR(opt_g, config.lr_decay_every, gamma=config.lr_decay)
    opt_c = sched_c = None
    if critic is not None:
        critic.to(device)
        opt_c = torch.optim.Adam(critic.parameters(), lr=config.critic_lr or config.lr, betas=config.betas)
        sched_c = torch.optim.lr_scheduler.StepLR(opt_c, config.lr_decay_every, gamma=config.lr_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    # the moving average of the weights: what validation, checkpoints and the result use
    ema = copy.deepcopy(model) if config.ema_decay > 0 else None  # never optimised; updated under no_grad

    # Everything with a state_dict that a resumed run needs back.
    stateful = dict(model=model, critic=critic, opt_g=opt_g, opt_c=opt_c, sched_g=sched_g, sched_c=sched_c,
                    scaler=scaler, ema=ema)
    start, history = 0, {k: [] for k in HISTORY_KEYS}
    best_val, best_step, best_state = math.inf, None, None
    if config.resume and last_path is not None and last_path.is_file():
        state = read_checkpoint(last_path, map_location=device)
        saved = TrainConfig.from_dict(state["config"])
        changed = [k for k in _ARCHITECTURE if getattr(saved, k) != getattr(config, k)]
        if changed:
            raise ValueError(f"checkpoint {last_path}: cannot resume, config differs in {', '.join(changed)}")
        for key, obj in stateful.items():
            if obj is not None:
                obj.load_state_dict(state[key])
        set_rng_state(state["rng"])
        start, history = state["step"], state["history"]
        best_val, best_step = state["best_val_loss"], state["best_step"]
        if ddp.is_main and best_path is not None and best_path.is_file():
            saved_best = read_checkpoint(best_path)
            best_state = saved_best.get("ema") or saved_best["model"]
    elif config.resume and ddp.is_main:
        warnings.warn(f"resume=True but {last_path} does not exist: starting from step 0", stacklevel=2)

    def checkpoint(step: int) -> dict[str, Any]:
        return dict(step=step, config=config.to_dict(), rng=rng_state(), history=history,
                    best_val_loss=best_val, best_step=best_step,
                    **{key: None if obj is None else obj.state_dict() for key, obj in stateful.items()})

    if ddp.enabled:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        critic = None if critic is None else nn.parallel.DistributedDataParallel(critic, device_ids=ids)
    net, critic_net = _unwrap(model), None if critic is None else _unwrap(critic)
    evaluated = net if ema is None else ema

    num_classes = config.resolved_num_classes
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=use_amp)
    flip = config.flip_augment
    time_offset = history["time"][-1] if history["time"] else 0.0
    bar = tqdm(total=config.steps, initial=start, desc="train", dynamic_ncols=True, leave=True,
               disable=not (config.progress and ddp.is_main))

    def draw(pool: Pool, stream: int, step: int):
        generator = step_generator(config.seed, step, stream=stream, rank=ddp.rank)
        x, y = sample_batch(pool, batch_size=config.batch_size, patch_size=config.image_size,
                            generator=generator, flip=flip)
        return x.to(device), None if y is None else y.to(device)

    with ExitStack() as scope:  # undone on exit, errors included
        scope.callback(bar.close)
        if ddp.created:
            scope.callback(dist.destroy_process_group)
        scope.enter_context(_deterministic(device.type == "cpu"))
        for step in range(start, config.steps):
            model.train()
            xs, ys = draw(source_pool, LABELLED_SOURCE, step)
            xt, yt = draw(target_pool, TARGET, step)
            xu, _ = draw(source_pool, UNLABELLED_SOURCE, step) if config.use_reconstruction else (None, None)
            nan = math.nan
            loss_rec = loss_adv = loss_c = gp = wasserstein = None

            # ---- generator step: segment the source, reconstruct both domains, fool the critic ------------
            with autocast, _frozen(critic_net):
                _, logits_s = model(xs)
                loss_seg = segmentation_ce(logits_s, ys)
                needs_target = config.use_reconstruction or critic is not None or config.supervise_target
                rec_t, logits_t = model(xt) if needs_target else (None, None)
                if config.supervise_target:
                    loss_seg = (loss_seg + segmentation_ce(logits_t, yt)) / 2
                loss_g = config.beta * loss_seg
                if config.use_reconstruction:
                    rec_u, _ = model(xu)
                    loss_rec = weighted_mse(rec_u, xu) + weighted_mse(rec_t, xt)
                    loss_g = loss_g + config.alpha * loss_rec
                if critic is not None:
                    # The critic judges shapes only: foreground probabilities of target predictions.
                    loss_adv = generator_adversarial(critic_net(foreground_probs(logits_t)))
                    loss_g = loss_g + loss_adv
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            scaler.step(opt_g)
            scaler.update()
            if ema is not None:
                _update_average(ema, net, min(config.ema_decay, (1 + step) / (10 + step)))

            # ---- critic step(s): real source label maps vs target predictions (WGAN-GP) --------------------
            if critic is not None:
                # float32 throughout: the penalty differentiates through the critic twice; float16 underflows
                real = one_hot_foreground(ys, num_classes)
                fake = foreground_probs(logits_t.detach().float())
                gp_generator = torch.Generator(device).manual_seed(
                    step_generator(config.seed, step, stream=GRADIENT_PENALTY, rank=ddp.rank).initial_seed())
                for _ in range(config.n_critic):
                    loss_w = critic_wasserstein(critic(real), critic(fake))
                    # The penalty holds the critic 1-Lipschitz on lines between real and fake label maps, the
                    # only region where it is ever evaluated; that keeps its scores a distance estimate.
                    gp = gradient_penalty(critic, real, fake, generator=gp_generator)
                    loss_c = loss_w + config.gp_weight * gp
                    opt_c.zero_grad(set_to_none=True)
                    loss_c.backward()
                    opt_c.step()
                wasserstein = -loss_w
                sched_c.step()

            lr = sched_g.get_last_lr()[0]
            sched_g.step()

            # ---- bookkeeping: history (averaged over processes), validation, checkpoints -------------------
            values = [loss_g, loss_seg, loss_rec, loss_adv, loss_c, gp, wasserstein]
            values = torch.tensor([nan if v is None else v.item() for v in values], dtype=torch.float64)
            if ddp.enabled:
                dist.all_reduce(values)
                values /= ddp.world_size
            row = dict(zip(("loss_g", "loss_seg", "loss_rec", "loss_adv", "loss_critic", "gp", "wasserstein"),
                           values.tolist()))
            row = dict(step=step, lr=lr, **row, val_loss=nan, val_dice=nan,
                       time=time_offset + time.perf_counter() - started)
            last, improved = step == config.steps - 1, False
            if val_pool is not None and ((step + 1) % config.val_every == 0 or last):
                row["val_loss"], row["val_dice"] = _validate(evaluated, val_pool, config, device, len(val))
                if row["val_loss"] < best_val:
                    best_val, best_step, improved = row["val_loss"], step, True
                    best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
            for key in HISTORY_KEYS:
                history[key].append(row[key])
            if improved and best_path is not None:
                save_checkpoint(checkpoint(step + 1), best_path)
            if ddp.is_main and last_path is not None and ((step + 1) % config.checkpoint_every == 0 or last):
                save_checkpoint(checkpoint(step + 1), last_path)
            if ddp.is_main:
                for callback in callbacks or ():
                    callback(step, row, evaluated)
            bar.update(1)
            if step % 10 == 0 or last or not math.isnan(row["val_loss"]):
                bar.set_postfix(_row_to_postfix(row), refresh=False)
        if ddp.enabled:
            # Each process updated its own batch-norm running statistics; keep rank 0's everywhere.
            for module in [m for m in (net, ema) if m is not None]:
                for buffer in module.buffers():
                    dist.broadcast(buffer, 0)

    best_model = None
    if best_state is not None:
        best_model = copy.deepcopy(evaluated)
        best_model.load_state_dict(best_state)
        best_model.eval()
    written = ddp.is_main and out_dir is not None
    return TrainResult(
        model=evaluated.eval(), critic=None if critic_net is None else critic_net.eval(), history=history,
        config=config,
        seconds=time.perf_counter() - started, best_step=best_step, best_model=best_model,
        best_checkpoint=best_path if written and best_path.is_file() else None,
        last_checkpoint=last_path if written and last_path.is_file() else None,
    )
