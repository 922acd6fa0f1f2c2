"""Where and how a model runs: ``device="auto"`` resolved in one place, a context for inference on any device,
and the speed settings every pass shares: the memory format (channels-last) and the mixed precision (float16
autocast on CUDA, bfloat16 autocast on CPUs that compute it natively).
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn

#: Whether ``amp=None`` (the TrainConfig default) trains in bfloat16 on CPUs with native bfloat16 (AMX or
#: AVX512-BF16). Set from the target Dice of the default 2D kidney run over three seeds
#: (``benchmarks/dice_bf16.py``): bfloat16 86.9 +- 2.9 %, float32 87.2 +- 4.2 %, paired -0.3 +- 1.6 points, so
#: bfloat16 stays within the required point of float32. Its steps are 1.4x faster there (two threads, AMX; not
#: measured alone on AVX512-BF16, where the Dice runs' times shared the machine with other jobs).
CPU_BF16_BY_DEFAULT = True
#: ``/proc/cpuinfo`` flags of x86 CPUs whose matrix units compute bfloat16 natively (AMX tiles, AVX512-BF16
#: dot products); oneDNN runs bfloat16 convolutions on them about twice as fast as float32 ones. Elsewhere
#: bfloat16 is emulated and slower than float32.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_CPUINFO = "/proc/cpuinfo"


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


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, device: str | torch.device = "auto") -> Iterator[torch.device]:
    """Run ``model`` in eval mode without gradients on ``device`` (as :func:`resolve_device` reads it).

    Yields the device. Afterwards, also after an error, the model goes back to the device its parameters were
    on and to the train/eval mode it was in.
    """
    target = resolve_device(device)
    param = next(model.parameters(), None)
    home = param.device if param is not None else target
    was_training = model.training
    model.to(target).eval()
    try:
        with torch.no_grad():
            yield target
    finally:
        model.to(home).train(was_training)


def _read_cpu_flags() -> set[str]:
    """The feature flags of the first CPU in ``/proc/cpuinfo`` (Linux).

    Raises:
        OSError: Where the file does not exist (macOS, Windows) or cannot be read.
    """
    with open(_CPUINFO, encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    return set()


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX or AVX512-BF16) and PyTorch can use it (oneDNN).

    Read once from ``/proc/cpuinfo`` and cached (``cpu_has_native_bf16.cache_clear()`` reads it again);
    False on any other system and on any error.

    Examples:
        >>> isinstance(cpu_has_native_bf16(), bool)
        True
    """
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        flags = _read_cpu_flags()
    except Exception:  # noqa: BLE001 - detection must never break a run: no answer means no bfloat16
        return False
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def autocast_dtype(device: str | torch.device, amp: bool | None) -> torch.dtype | None:
    """The mixed-precision dtype of a run on ``device`` (``TrainConfig.amp``), or None for float32.

    ``amp=False``: float32. ``amp=True``: float16 on CUDA, bfloat16 on CPU (also where the CPU emulates it,
    which is slower than float32). ``amp=None``: float16 on CUDA; bfloat16 on CPUs with native bfloat16
    (:func:`cpu_has_native_bf16`) when :data:`CPU_BF16_BY_DEFAULT`; float32 otherwise. Other devices:
    float32.

    Examples:
        >>> autocast_dtype("cpu", False) is None
        True
        >>> autocast_dtype("cpu", True)
        torch.bfloat16
    """
    kind = torch.device(device).type
    if amp is False:
        return None
    if kind == "cuda":
        return torch.float16
    if kind == "cpu":
        if amp:
            return torch.bfloat16
        return torch.bfloat16 if CPU_BF16_BY_DEFAULT and cpu_has_native_bf16() else None
    return None


def autocast(device: str | torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` in ``dtype`` (from :func:`autocast_dtype`); None: a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def channels_last_format(spatial_dims: int, enabled: bool = True) -> torch.memory_format:
    """The channels-last memory format of ``spatial_dims``-D convolutions (``torch.channels_last`` for 2D,
    ``torch.channels_last_3d`` for 3D); ``torch.contiguous_format`` when not ``enabled``.

    oneDNN (CPU) and cuDNN (CUDA) run convolutions on channels-last tensors without the layout conversions
    that plain (channels-first) tensors cost them.
    """
    if not enabled:
        return torch.contiguous_format
    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


def memory_format_of(module: nn.Module) -> torch.memory_format:
    """The memory format of a module's convolution weights: channels-last or ``torch.contiguous_format``."""
    for param in module.parameters():
        if param.dim() not in (4, 5) or param.is_contiguous():
            continue  # 1x1 kernels on one channel, say, are both formats at once: they tell nothing
        fmt = torch.channels_last if param.dim() == 4 else torch.channels_last_3d
        if param.is_contiguous(memory_format=fmt):
            return fmt
    return torch.contiguous_format


@contextlib.contextmanager
def in_memory_format(module: nn.Module, fmt: torch.memory_format) -> Iterator[nn.Module]:
    """Run ``module`` with its weights in memory format ``fmt``; afterwards (also after an error) they go back
    to the format they were in. The parameters stay the same objects (their data is replaced)."""
    before = memory_format_of(module)
    if fmt != before:
        module.to(memory_format=fmt)
    try:
        yield module
    finally:
        if fmt != before:
            module.to(memory_format=before)
