"""What defines a training run: :class:`TrainConfig`, its ``key=value`` parsing, and the networks it describes.

A run is a config plus its data (:func:`lmisa_lite.training.train`). The config is a plain dataclass with
defaults that train a useful 2D kidney model on a CPU; :meth:`TrainConfig.with_overrides` reads the command
line's ``key=value`` strings, and :meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict` are what
checkpoints store.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Iterable

from data_utils.phantoms import CLASS_NAMES
from lmisa_lite.networks import NORMS, LMISANet, ShapeCritic

#: Classes per task, background included (the phantoms' class names are the one source).
TASK_CLASSES = {task: len(names) for task, names in CLASS_NAMES.items()}
#: Fields that shape the networks or the data they see: a resumed run must not change them.
ARCHITECTURE_FIELDS = ("task", "spatial_dims", "num_classes", "image_size", "base_filters", "critic_filters",
                       "depth", "norm", "ema_decay", "use_mlngm", "use_reconstruction", "use_shape_constraint",
                       "supervise_target")
#: Where the gradient penalty can be taken (``TrainConfig.gp_on``) and what the critic can see as real.
GP_PLACES = ("labels", "reconstruction")
CRITIC_REAL = ("onehot", "smoothed", "noised")


@dataclass
class TrainConfig:
    """Everything that defines a training run; a run is this config plus its data.

    The defaults train a useful 2D kidney model (CT -> MRI phantoms on their 96 x 96 grid) on one CPU core in a
    few minutes (900 steps; on 128 x 128 images a step took about 0.085 s on a core with native bfloat16, 0.13 s
    in float32). They keep the
    published loss weights and optimiser (Adam, lr 1e-3, x0.8 decay at fixed intervals, ``alpha = beta = 40``,
    gradient-penalty weight 10, one critic step per generator step, batch size 1 for 2D) with two changes for
    CPU speed: half the published width (``base_filters=8``; the published network has 16), and Adam
    ``betas=(0.5, 0.999)``, common for adversarial training, with which the source segmentation converged
    about twice as fast as with ``(0.9, 0.999)`` on the phantoms. For 3D, set ``spatial_dims=3``,
    ``image_size=(64, 64, 32)`` and ``batch_size=2`` (published).

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

    And one from a measured investigation of the shape critic (``benchmarks/critic_investigation.py``, table and
    command in ``results/investigation/shape_critic.md``): the critic's term enters the network's loss with
    weight ``adv_weight=0.2`` (published: 1). Kidney CT -> MRI and heart MRI -> CT, 100 + 100 training images,
    1800 steps (where source validation has flattened), seeds 0-2, target Dice in %
    (``results/investigation/shape_critic_closed_form.csv``):

    ==========================  ==============  ==============
    setting                     kidney          heart
    ==========================  ==============  ==============
    no critic                   91.0 +- 0.7     68.0 +- 4.7
    critic, weight 1 (paper)    84.6 +- 3.4     75.4 +- 1.0
    critic, weight 0.2          88.6 +- 2.2     76.0 +- 1.0
    ==========================  ==============  ==============

    With weight 1 the critic cost the kidney 2.2-10.3 points in every seed; at 0.2 it costs 2.4 on average
    (higher in 1 of 3 seeds) and keeps the heart's gain (+8.1, higher in 3 of 3). At 900 steps (runs made before
    ``closed_form_penalty``), sharpened predictions (``critic_fake_temperature=0.5``) and three critic updates
    per step (``n_critic=3``) scored a little above weight 0.2 in the mean over both tasks (74.5 and 74.1
    against 72.2), but sharpening on top of weight 0.2 added nothing at 1800 steps (81.6 against 82.4; three
    updates were not run there); the authors' penalty on reconstruction/input lines
    (``gp_on="reconstruction"``), softened or noised real maps and a warm-up did worse, and a ten times slower
    critic collapsed the target prediction (kidney 27 %). ``adv_weight=1`` restores the published weight.

    The critic does not earn its place reliably on these phantoms, though. On three more seeds (3-5, held out
    from the choice; float32 on a CPU without native bfloat16) weight 0.2 against no critic gave +2.3 +- 0.9
    points on the kidney and -31.2 +- 32.4 on the heart, where two runs' target predictions collapsed (20 and
    5 %) while their source validation stayed at 91 %. Over all six seeds: kidney -0.0 +- 3.1 (higher in 4 of
    6), heart -11.6 +- 29.9 (higher in 4 of 6: gains of 4-13 points, two collapses).

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
        adv_weight: Weight of the adversarial term in the network's loss (published: 1, beside
            ``alpha = beta = 40``; 0.2 measured better, see above).
        adv_warmup: Steps at the start in which the adversarial term is left out of the network's loss (the
            critic trains all the same).
        adv_ramp: Steps after the warm-up over which the adversarial weight rises linearly to ``adv_weight``.
        gp_on: Where the gradient penalty is taken: ``"labels"`` (WGAN-GP: between real and fake label
            maps) or ``"reconstruction"`` (the authors' released code: between the target's reconstruction
            and its input).
        critic_real: What the critic sees as real: ``"onehot"`` source labels, ``"smoothed"`` (Gaussian
            blur of ``critic_real_amount`` voxels) or ``"noised"`` (mixed with a random point of the
            simplex, weight ``critic_real_amount``); see :mod:`lmisa_lite.adversarial`.
        critic_real_amount: Blur in voxels (``"smoothed"``) or mixing weight in [0, 1] (``"noised"``).
        critic_fake_temperature: Target predictions shown to the critic are ``softmax(logits / T)``; below
            1 sharpens them.
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
        foreground_share: 3D: share of labelled source patches centred on a random foreground voxel (the
            rest, and every target patch, are placed uniformly); None uses
            :data:`lmisa_lite.sampling.FOREGROUND_SHARE` (a third), 0 places every patch uniformly.
        critic_real_uniform: 3D: the critic's real label maps come from source patches of their own, placed
            uniformly as the target's patches are (True), or are the labels of the labelled batch, a share of
            whose patches is centred on the organ (False). With False the critic can tell real from fake by
            how often a patch holds the organ, whatever the shapes. No effect in 2D or when
            ``foreground_share=0``.
        augment_3d: 3D: rotate (about z), zoom and shift each patch as the published 3D model was trained
            (:func:`lmisa_lite.sampling.sample_batch`).
        val_every: Validate every this many steps (and after the last step) when validation cases are given.
        val_batch_size: Images or patches per validation forward pass.
        checkpoint_every: Write ``last.pt`` every this many steps (and after the last step).
        out_dir: Folder for ``last.pt`` and ``best.pt``; None writes no files.
        resume: Continue from ``out_dir/last.pt`` when it exists.
        seed: Seeds weights, batches and gradient-penalty draws.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        amp: Mixed precision. CUDA: float16 autocast with gradient scaling. CPU: bfloat16 autocast (no scaling
            needed: bfloat16 has float32's range). None (default) turns it on for CUDA, and for CPUs that
            compute bfloat16 natively (AMX or AVX512-BF16, detected at run time by
            :func:`lmisa_lite.device.cpu_has_native_bf16`; 1.4x faster steps with AMX); float32 elsewhere.
            True forces it on (on a CPU without native bfloat16 that is much slower than float32: the
            network's forward and backward pass 14 times slower on an AVX2 CPU), False keeps float32.
            Losses, softmax and the gradient norm of the critic's penalty are float32 either way.
            bfloat16 is the CPU default because it kept the target Dice of float32 on the default 2D kidney
            run: 86.9 +- 2.9 against 87.2 +- 4.2 % over three seeds, paired differences -1.7, +1.5, -0.6
            points (``benchmarks/dice_bf16.py``, ``results/speed/bf16_dice.csv``);
            :data:`lmisa_lite.device.CPU_BF16_BY_DEFAULT` turns that default off. When other programs share
            the cores, use one thread (``torch.set_num_threads(1)``): two threads then wait for each other,
            bfloat16 loses its lead over float32, and one thread is several times faster than two.
        batched_passes: Run the network once per step on the labelled source, target and unlabelled source
            batches together (concatenated, outputs split back), and the critic once on real and fake
            maps together: the same losses and gradients as one pass per batch (instance norm normalises
            each image on its own), in fewer, larger convolutions. With ``norm="batch"`` the network keeps
            one pass per batch, so that batch statistics stay per domain as published. False: one pass per
            batch everywhere (the reference the speed benchmark compares against).
        closed_form_penalty: Compute the input gradient that the critic's gradient penalty constrains by
            :meth:`lmisa_lite.networks.ShapeCritic.score_gradient` (its backward pass written out as transposed
            convolutions), so that the penalty's own gradient is one ordinary backward pass. Equal to autograd's
            double backward in float32 (tested), a 3D critic step about 30% faster, and right under CPU
            bfloat16 autocast, where the double backward gave the critic's stem and first convolutions
            gradients with a relative error of about 1 (0.03 with this switch). False: autograd's double
            backward (the reference of the speed benchmark; results before this switch used it).
        channels_last: Keep network, critic and their inputs in channels-last memory format
            (``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D), faster for the convolutions
            of oneDNN (CPU) and cuDNN (CUDA); the returned networks are plain (contiguous) again.
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
    image_size: tuple[int, ...] = (96, 96)
    lr: float = 1e-3
    lr_decay: float = 0.8
    lr_decay_every: int = 150
    critic_lr: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)
    alpha: float = 40.0
    beta: float = 40.0
    gp_weight: float = 10.0
    n_critic: int = 1
    adv_weight: float = 0.2
    adv_warmup: int = 0
    adv_ramp: int = 0
    gp_on: str = "labels"
    critic_real: str = "onehot"
    critic_real_amount: float = 1.0
    critic_fake_temperature: float = 1.0
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
    foreground_share: float | None = None
    critic_real_uniform: bool = True
    augment_3d: bool = False
    val_every: int = 50
    val_batch_size: int = 8
    checkpoint_every: int = 100
    out_dir: str | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool | None = None
    batched_passes: bool = True
    closed_form_penalty: bool = True
    channels_last: bool = True
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
            example = "(96, 96)" if self.spatial_dims == 2 else "(64, 64, 32)"
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
        if self.foreground_share is not None and not 0 <= self.foreground_share <= 1:
            raise ValueError(f"foreground_share={self.foreground_share}: expected a share in [0, 1] or None")
        if self.gp_on not in GP_PLACES:
            raise ValueError(f"gp_on={self.gp_on!r}: expected one of {list(GP_PLACES)}")
        if self.critic_real not in CRITIC_REAL:
            raise ValueError(f"critic_real={self.critic_real!r}: expected one of {list(CRITIC_REAL)}")
        amount_ok = self.critic_real_amount >= 0 and (self.critic_real != "noised" or self.critic_real_amount <= 1)
        if not amount_ok:
            raise ValueError(f"critic_real_amount={self.critic_real_amount}: expected >= 0 (a blur in voxels), "
                             "or in [0, 1] with critic_real='noised'")
        if not (self.critic_fake_temperature > 0 and self.adv_weight >= 0):
            raise ValueError(f"critic_fake_temperature={self.critic_fake_temperature}, adv_weight="
                             f"{self.adv_weight}: expected a positive temperature and a weight >= 0")
        if min(self.adv_warmup, self.adv_ramp) < 0:
            raise ValueError(f"adv_warmup={self.adv_warmup}, adv_ramp={self.adv_ramp}: expected steps >= 0")
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
        # configs saved before these fields existed describe batch-norm networks without weight averaging;
        # the speed switches (batched_passes, channels_last, closed_form_penalty) change no float32 result, so
        # missing ones take defaults
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


def build_networks(config: TrainConfig) -> tuple[LMISANet, ShapeCritic | None]:
    """The network and (when the shape constraint is on) the critic a config describes, freshly initialised.

    The network records its input (``input_kind``: MLNGM or raw intensities) and its training image or patch
    size (``patch_size``, the default sliding window of 3D inference), so that evaluation and inference prepare and cut its input as training did.

    Args:
        config: The run's config.

    Returns:
        ``(model, critic)``; ``critic`` is None when ``use_shape_constraint`` is False.
    """
    model = LMISANet(spatial_dims=config.spatial_dims, in_channels=1, num_classes=config.resolved_num_classes,
                     base_filters=config.base_filters, depth=config.depth, norm=config.norm,
                     input_kind="mlngm" if config.use_mlngm else "zscore",
                     patch_size=config.image_size)
    critic = None
    if config.use_shape_constraint:
        critic = ShapeCritic(spatial_dims=config.spatial_dims, in_channels=config.resolved_num_classes - 1,
                             base_filters=config.critic_filters or config.base_filters, depth=config.depth)
    return model, critic
