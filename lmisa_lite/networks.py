"""The LMISA dual-task generator and its WGAN-GP shape critic, in 2D or 3D.

Both networks follow the published LMISA layout. With ``num_classes=5`` and the default width they have exactly
the published number of trainable parameters: 773,632 (2D) and 2,289,760 (3D) for the generator, 102,352 (2D)
and 319,312 (3D) for a critic with 4 input channels. Matching those counts pins down details the description
leaves open: only the 7x7 stem convolution has a bias, every later convolution (transposed ones and the 1x1
heads included) is bias-free, the encoder has no normalisation, and each decoder block normalises the output of
each of its four convolutions.

Generator, for ``base_filters=16, depth=4`` (channels @ resolution, S the input size)::

    stem 7x7            ->  16 @ S
    encoder block 0     ->  32 @ S      (two 3x3 convs, each added to the block input; output = [input, convs])
    max-pool, block 1   ->  64 @ S/2
    max-pool, block 2   -> 128 @ S/4
    max-pool, block 3   -> 256 @ S/8    (the bottleneck, returned by ``encode``)
    decoder block 2     ->  64 @ S/4    (3x3 transposed conv x2, concat skip, two 3x3 convs + 1x1 shortcut)
    decoder block 1     ->  32 @ S/2
    decoder block 0     ->  16 @ S
    1x1 heads           ->   1 @ S (reconstruction), num_classes @ S (segmentation logits)
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F

SLOPE = 0.2  # LeakyReLU negative slope of the published networks

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _is_channels_last(x: Tensor) -> bool:
    fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d if x.dim() == 5 else None
    return fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt)


def _channels_last_like(y: Tensor, x: Tensor) -> Tensor:
    """``y`` in ``x``'s memory format when ``x`` is channels-last (and ``y`` has lost it)."""
    if not _is_channels_last(x):
        return y
    return y.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)


class _ChannelsLastCat(torch.autograd.Function):
    """Concatenation along channels whose backward hands each input a channels-last gradient.

    The gradient of a concatenation is a channel slice of the output's gradient; for channels-last tensors
    such a slice interleaves with the other inputs' channels in memory, and every elementwise op on it then
    runs about twenty times slower on CPU than on a dense tensor (leaky ReLU's backward at 16 channels:
    2.2 ms against 0.1 ms). One copy per input makes them dense again.
    """

    @staticmethod
    def forward(ctx, *inputs: Tensor) -> Tensor:
        ctx.sizes = [x.shape[1] for x in inputs]
        return torch.cat(inputs, dim=1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:
        fmt = torch.channels_last if grad.dim() == 4 else torch.channels_last_3d
        return tuple(g.contiguous(memory_format=fmt) for g in grad.split(ctx.sizes, dim=1))


class _PlainGradient(torch.autograd.Function):
    """Identity whose backward hands on the gradient in plain (contiguous) layout."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        return grad.contiguous()


def _instance_norm(norm: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``norm(x)`` in ``x``'s memory format; a channels-last single image in plain layout (see InstanceNorm2d)."""
    if len(x) == 1 and _is_channels_last(x):
        return _channels_last_like(_PlainGradient.apply(norm(x.contiguous())), x)
    return _channels_last_like(norm(x), x)


def batched_forward(module: nn.Module, inputs: Sequence[Tensor]) -> list[Any]:
    """``module`` on the concatenation of ``inputs`` (along the batch), its outputs split back: one entry per
    input, a tuple when the module returns several tensors. With instance norm (or none, as in the critic)
    this equals one pass per input, in fewer, larger convolutions.

    Examples:
        >>> [tuple(y.shape) for y in batched_forward(nn.Identity(), [torch.zeros(2, 1), torch.zeros(3, 1)])]
        [(2, 1), (3, 1)]
    """
    if len(inputs) == 1:
        return [module(inputs[0])]
    sizes = [len(x) for x in inputs]
    out = module(torch.cat(list(inputs)))
    if isinstance(out, Tensor):
        return list(out.split(sizes))
    return list(zip(*(o.split(sizes) for o in out)))


def _cat_channels(inputs: list[Tensor]) -> Tensor:
    """``torch.cat(inputs, dim=1)``, with dense channels-last gradients for channels-last inputs."""
    if torch.is_grad_enabled() and all(_is_channels_last(x) for x in inputs):
        return _ChannelsLastCat.apply(*inputs)
    return torch.cat(inputs, dim=1)


class InstanceNorm2d(nn.InstanceNorm2d):
    """:class:`torch.nn.InstanceNorm2d` whose output keeps a channels-last input channels-last.

    PyTorch's instance norm returns plain (channels-first) tensors whatever its input; every later
    elementwise op on a mix of both formats then takes a slow strided path (leaky ReLU's backward about ten
    times slower on CPU). Converting the output back costs one copy. Same parameters, same values.

    A channels-last batch of one image goes through in plain layout (input and incoming gradient): there,
    PyTorch 2.13's instance norm computes the right output but wrong gradients on CPU (input and weight
    gradients off by the size of the gradients themselves), which kept every one-image pass from learning.
    Larger batches are right and keep the faster path (the two copies would cost about 10% of a 2D step).
    """

    def forward(self, input: Tensor) -> Tensor:
        return _instance_norm(super().forward, input)


class InstanceNorm3d(nn.InstanceNorm3d):
    """:class:`torch.nn.InstanceNorm3d` whose output keeps a ``channels_last_3d`` input in that format (see
    :class:`InstanceNorm2d`)."""

    def forward(self, input: Tensor) -> Tensor:
        return _instance_norm(super().forward, input)


# decoder normalisations by name (LMISANet(norm=...)), one class per spatial dimensionality
NORMS = {
    "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d},
    # affine, no running statistics: the same learnable scale and shift per channel as batch norm
    "instance": {2: partial(InstanceNorm2d, affine=True), 3: partial(InstanceNorm3d, affine=True)},
}
_POOL = {2: nn.MaxPool2d, 3: nn.MaxPool3d}
#: What a network can be trained on (``LMISANet(input_kind=...)``): the MLNGM map then a z-score, or the
#: z-scored raw intensities (the baseline without the modality-independent input).
INPUT_KINDS = ("mlngm", "zscore")


def _act(x: Tensor) -> Tensor:
    return F.leaky_relu(x, SLOPE)


def _max_pool(pool: nn.Module, x: Tensor) -> Tensor:
    """``pool(x)`` in the dtype of ``x``.

    CPU autocast runs 3D max pooling in float32: a float32 copy of a bfloat16 input, and a float32 output that
    turns the rest of the level float32 too (adds, activations, concatenations and the skip connection). Max
    pooling only picks values, so its result is the same in bfloat16; autocast is off for it.
    """
    if x.dtype in (torch.bfloat16, torch.float16) and torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return pool(x)
    return pool(x)


def _check_options(spatial_dims: int, depth: int, min_depth: int, **positive: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if depth < min_depth:
        raise ValueError(f"depth must be at least {min_depth}, got {depth}")
    for name, value in positive.items():
        if value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def _check_input(x: Tensor, *, spatial_dims: int, in_channels: int, depth: int) -> None:
    if x.ndim != spatial_dims + 2:
        raise ValueError(
            f"input must have shape (B, C, {', '.join('XYZ'[:spatial_dims])}) for a {spatial_dims}D network, "
            f"got {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"input has {x.shape[1]} channels, the network expects {in_channels}")
    divisor = 2 ** (depth - 1)
    size = tuple(x.shape[2:])
    if any(s % divisor for s in size):
        raise ValueError(
            f"input spatial size {size} must be divisible by {divisor} (2**(depth-1)); "
            "pad the input first, as lmisa_lite.inference.predict_volume does"
        )


class _EncoderBlock(nn.Module):
    """Two 3x3 convolutions, each added to the block input; returns ``[input, result]`` (2x channels)."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        conv = _CONV[spatial_dims]
        self.conv1 = conv(channels, channels, 3, padding=1, bias=False)
        self.conv2 = conv(channels, channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        h = _act(self.conv1(x) + x)
        h = _act(self.conv2(h) + x)
        return _cat_channels([x, h])


class _DecoderBlock(nn.Module):
    """2x transposed-conv upsampling, concatenation with the skip, two 3x3 convs and a 1x1 shortcut."""

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, channels: int,
                 norm: str) -> None:
        super().__init__()
        conv, norm = _CONV[spatial_dims], NORMS[norm][spatial_dims]
        joined = channels + skip_channels
        # kernel 3, stride 2, padding 1, output_padding 1 doubles every spatial size exactly
        self.up = _CONV_T[spatial_dims](in_channels, channels, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.norm_up = norm(channels)
        self.conv1 = conv(joined, channels, 3, padding=1, bias=False)
        self.norm1 = norm(channels)
        self.conv2 = conv(channels, channels, 3, padding=1, bias=False)
        self.norm2 = norm(channels)
        self.shortcut = conv(joined, channels, 1, bias=False)
        self.norm_shortcut = norm(channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        joined = _cat_channels([_act(self.norm_up(self.up(x))), skip])
        h = _act(self.norm1(self.conv1(joined)) + self.norm_shortcut(self.shortcut(joined)))
        return _act(self.norm2(self.conv2(h)) + h)


class LMISANet(nn.Module):
    """Dual-task encoder-decoder: one shared body, a reconstruction head and a segmentation head.

    Args:
        spatial_dims: 2 for ``(B, C, X, Y)`` inputs, 3 for ``(B, C, X, Y, Z)``.
        in_channels: Input channels (1 for an MLNGM map).
        num_classes: Segmentation classes including background (channel 0).
        base_filters: Width of the stem and first encoder block; doubles at each level.
        depth: Encoder blocks; the input is pooled ``depth - 1`` times, so every spatial size must be divisible
            by ``2**(depth-1)``.
        norm: Normalisation in the decoder. ``"batch"`` (published) normalises with the statistics of the
            batch in training and with running averages at inference. ``"instance"`` normalises every image
            by its own statistics, in training and at inference alike; with one image per batch it trains
            exactly as batch norm does, but it has no running averages for inference to drift from (see
            :class:`lmisa_lite.training.TrainConfig`). Both have the same trainable parameters.
        input_kind: What the network was trained on, so that callers prepare its input the same way:
            ``"mlngm"`` (MLNGM map, then z-score; LMISA) or ``"zscore"`` (z-scored raw intensities). See
            :func:`lmisa_lite.preprocessing.model_input`.
        patch_size: The training image ``(X, Y)`` or patch ``(X, Y, Z)``; for 3D models the default sliding
            window of :func:`lmisa_lite.inference.predict_volume`. None when unknown.

    Raises:
        ValueError: If an option is out of range.

    Examples:
        >>> net = LMISANet(spatial_dims=2, num_classes=5)
        >>> recon, logits = net(torch.zeros(1, 1, 32, 32))
        >>> tuple(recon.shape), tuple(logits.shape)
        ((1, 1, 32, 32), (1, 5, 32, 32))
        >>> count_parameters(net)
        773632
    """

    def __init__(
        self, *, spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, base_filters: int = 16,
        depth: int = 4, norm: str = "batch", input_kind: str = "mlngm",
        patch_size: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        _check_options(spatial_dims, depth, 2, in_channels=in_channels, base_filters=base_filters)
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2 (background and one structure), got {num_classes}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {sorted(NORMS)}, got {norm!r}")
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {list(INPUT_KINDS)}, got {input_kind!r}")
        self.input_kind = input_kind
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.spatial_dims, self.in_channels, self.num_classes = spatial_dims, in_channels, num_classes
        self.base_filters, self.depth, self.norm = base_filters, depth, norm
        conv = _CONV[spatial_dims]
        widths = [base_filters * 2**level for level in range(depth)]
        self.stem = conv(in_channels, base_filters, 7, padding=3)
        # block `level` sees `widths[level]` channels and emits twice that, which is the next block's width
        self.encoder = nn.ModuleList(_EncoderBlock(spatial_dims, w) for w in widths)
        self.pools = nn.ModuleList(_POOL[spatial_dims](2) for _ in range(depth - 1))
        self.decoder = nn.ModuleList(
            _DecoderBlock(spatial_dims, 2 * widths[level + 1] if level == depth - 2 else widths[level + 1],
                          2 * widths[level], widths[level], norm)
            for level in reversed(range(depth - 1))
        )
        self.reconstruction_head = conv(base_filters, 1, 1, bias=False)
        self.segmentation_head = conv(base_filters, num_classes, 1, bias=False)

    def _encode(self, x: Tensor) -> list[Tensor]:
        _check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, depth=self.depth)
        h = _act(self.stem(x))
        features = []
        for level, block in enumerate(self.encoder):
            if level:
                h = _max_pool(self.pools[level - 1], h)
            h = block(h)
            features.append(h)
        return features

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck features of ``x``.

        Args:
            x: ``(B, in_channels, *S)`` with every size in ``S`` divisible by ``2**(depth-1)``.

        Returns:
            ``(B, base_filters * 2**depth, *S / 2**(depth-1))``, e.g. ``(B, 256, X/8, Y/8)`` by default.

        Raises:
            ValueError: If the shape of ``x`` does not fit the network.
        """
        return self._encode(x)[-1]

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruct the input and segment it.

        Args:
            x: ``(B, in_channels, *S)`` with every size in ``S`` divisible by ``2**(depth-1)``.

        Returns:
            ``(reconstruction, seg_logits)``: ``(B, 1, *S)`` and ``(B, num_classes, *S)``.

        Raises:
            ValueError: If the shape of ``x`` does not fit the network.
        """
        features = self._encode(x)
        h = features[-1]
        for block, skip in zip(self.decoder, reversed(features[:-1])):
            h = block(h, skip)
        return self.reconstruction_head(h), self.segmentation_head(h)


class ShapeCritic(nn.Module):
    """WGAN critic that scores patches of foreground label maps (real one-hot or predicted probabilities).

    A 7x7 stem, then ``depth`` single 3x3 convolutions with a 2x max-pool before all but the first, then a
    1x1 convolution to one score per patch. There is no normalisation: WGAN-GP penalises the gradient per
    sample, which batch statistics would couple across the batch.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Foreground channels, i.e. ``num_classes - 1``.
        base_filters: Width of the stem and first convolution; doubles at each level.
        depth: Number of 3x3 convolutions; spatial sizes must be divisible by ``2**(depth-1)``.

    Raises:
        ValueError: If an option is out of range.

    Examples:
        >>> critic = ShapeCritic(spatial_dims=2, in_channels=4)
        >>> tuple(critic(torch.zeros(2, 4, 32, 32)).shape)
        (2, 1, 4, 4)
        >>> count_parameters(critic)
        102352
    """

    def __init__(self, *, spatial_dims: int = 2, in_channels: int = 1, base_filters: int = 16, depth: int = 4) -> None:
        super().__init__()
        _check_options(spatial_dims, depth, 1, in_channels=in_channels, base_filters=base_filters)
        self.spatial_dims, self.in_channels, self.base_filters, self.depth = spatial_dims, in_channels, base_filters, depth
        conv = _CONV[spatial_dims]
        self.stem = conv(in_channels, base_filters, 7, padding=3)
        widths = [base_filters * 2**level for level in range(depth)]
        self.convs = nn.ModuleList(
            conv(c_in, c_out, 3, padding=1, bias=False) for c_in, c_out in zip([base_filters] + widths, widths)
        )
        self.pools = nn.ModuleList(_POOL[spatial_dims](2) for _ in range(depth - 1))
        self.score = conv(widths[-1], 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Score ``x``.

        Args:
            x: ``(B, in_channels, *S)`` with every size in ``S`` divisible by ``2**(depth-1)``.

        Returns:
            Patch scores ``(B, 1, *S / 2**(depth-1))``; higher means "looks like a real label map".

        Raises:
            ValueError: If the shape of ``x`` does not fit the critic.
        """
        _check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, depth=self.depth)
        h = _act(self.stem(x))
        for level, conv in enumerate(self.convs):
            if level:
                h = _max_pool(self.pools[level - 1], h)
            h = _act(conv(h))
        return self.score(h)

    def score_gradient(self, x: Tensor) -> Tensor:
        """The gradient of each sample's mean patch score with respect to ``x``, as a function of the weights.

        Equals ``torch.autograd.grad(self(x).flatten(1).mean(1).sum(), x, create_graph=True)[0]`` to float
        rounding (tested), what WGAN-GP's penalty differentiates once more. The critic is piecewise linear in
        ``x``: a forward pass without graph keeps where each leaky ReLU was negative and where each max-pool
        took its values, and the backward pass is written out as transposed convolutions of the weights.
        Autograd's double backward of the convolutions is slower (its weight gradient runs as a convolution
        with an image-sized kernel: 3D critic step 300 against 210 ms) and, under CPU bfloat16 autocast, wrong
        for the stem and first convolutions (relative error 1.0 against float32, 0.03 here; see the tests).

        Args:
            x: ``(B, in_channels, *S)``, as for :meth:`forward`.

        Returns:
            A tensor of ``x``'s shape (in the autocast dtype under autocast), with a graph to the weights.
        """
        _check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, depth=self.depth)
        dims = self.spatial_dims
        pool = F.max_pool2d if dims == 2 else F.max_pool3d
        pool_backward = (torch.ops.aten.max_pool2d_with_indices_backward if dims == 2
                         else torch.ops.aten.max_pool3d_with_indices_backward)
        transposed = F.conv_transpose2d if dims == 2 else F.conv_transpose3d
        slopes, pooled = [], []  # per layer: d act / d pre-activation; per pool: (its input, indices)
        with torch.no_grad():
            pre = self.stem(x)
            slopes.append(torch.ones_like(pre).masked_fill_(~(pre > 0), SLOPE))
            h = _act(pre)
            for level, conv in enumerate(self.convs):
                if level:
                    with torch.autocast(x.device.type, enabled=False):  # max-pooling picks values: any dtype
                        h_pooled, indices = pool(h, 2, return_indices=True)
                    pooled.append((h, indices))
                    h = h_pooled
                pre = conv(h)
                slopes.append(torch.ones_like(pre).masked_fill_(~(pre > 0), SLOPE))
                h = _act(pre)
            scores = self.score(h)
        # d(mean patch score) / d(score map), then back through each layer
        grad = torch.full_like(scores, 1.0 / scores[0].numel())
        grad = transposed(grad, self.score.weight)
        for level in range(len(self.convs) - 1, -1, -1):
            conv = self.convs[level]
            grad = transposed(grad * slopes[level + 1], conv.weight, padding=conv.padding)
            if level:
                h, indices = pooled[level - 1]
                grad = pool_backward(grad.to(h.dtype), h, [2] * dims, [2] * dims, [0] * dims, [1] * dims, False,
                                     indices)
        return transposed(grad * slopes[0], self.stem.weight, padding=self.stem.padding)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (batch-norm scale and shift count; running statistics do not).

    Args:
        module: Any module.

    Returns:
        The total number of elements of parameters with ``requires_grad``.

    Examples:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def layer_table(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], int]]:
    """One row per layer call on a zero input: name, output shape and the layer's own parameters.

    Args:
        model: A network, e.g. :class:`LMISANet` or :class:`ShapeCritic`.
        input_shape: Full input shape including batch and channels, e.g. ``(1, 1, 32, 32)``.

    Returns:
        ``[(name, output_shape, parameters), ...]`` in call order, for leaf modules only.
        ``pandas.DataFrame(rows, columns=["layer", "output", "parameters"])`` makes it a table.

    Examples:
        >>> rows = layer_table(ShapeCritic(in_channels=4), (1, 4, 32, 32))
        >>> rows[0]
        ('stem', (1, 16, 32, 32), 3152)
    """
    rows: list[tuple[str, tuple[int, ...], int]] = []
    hooks = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            own = sum(p.numel() for p in module.parameters(recurse=False))
            hooks.append(module.register_forward_hook(
                lambda _m, _i, out, name=name, own=own: rows.append((name, tuple(out.shape), own))
            ))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            model(torch.zeros(input_shape, device=param.device if param is not None else None))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return rows
