"""Speed of LMISA training steps (network + critic) and of inference: the reference path against the default.

Every configuration runs twice per repeat, once per arm, each time in its own subprocess (so that the peak
resident memory, ``ru_maxrss``, printed for an arm is that arm's alone: Python, PyTorch and the data
included):

- ``reference``: the step as it was, one float32 pass per batch in plain memory format, the gradient penalty
  by autograd's double backward (``TrainConfig(batched_passes=False, channels_last=False, amp=False,
  closed_form_penalty=False)``; inference: ``channels_last=False``, ``amp=False``).
- ``default``: ``TrainConfig()``'s settings: one batched pass per network, channels-last, the penalty's input
  gradient in closed form, and bfloat16 autocast where the CPU computes bfloat16 natively (float16 on CUDA);
  inference with ``channels_last=True, amp=None``.

The arms alternate (reference, default, reference, default, ...) so that a busy machine slows both alike; the
speed-up is the median over the repeats of reference time / default time. Achieved GFLOP/s count the
convolution and matrix FLOPs of one step (forward, backward and the gradient penalty's double backward, by
:mod:`torch.utils.flop_counter`'s formulas) against matrix-multiply peaks measured in the same run::

    python benchmarks/bench_training.py                     # 2D at 8 and 16 filters, 3D; 3-4 minutes
    python benchmarks/bench_training.py --all --repeats 3   # also batch norm, batch 4, inference
    python benchmarks/bench_training.py --threads 1 --only train2d
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    # name: what runs. 2D: the tutorial defaults (8 filters, batch 1, instance norm, weight average), the
    # published width (16 filters), the published training (batch norm, no average) and batch 4;
    # 3D: the published batch size 2 on (64, 64, 32) patches of a (96, 96, 48) phantom.
    "train2d": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=8,
                    steps=12),
    "train2d_w16": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=16,
                        steps=10),
    "train3d": dict(kind="train", spatial_dims=3, image_size=(64, 64, 32), batch_size=2, base_filters=8,
                    steps=5),
    "train2d_bn": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=8,
                       steps=10, norm="batch", ema_decay=0.0),
    "train2d_b4": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=4, base_filters=8,
                       steps=6),
    "infer2d": dict(kind="infer", spatial_dims=2, volume=(128, 128, 48), batch_size=8, base_filters=8,
                    repeats=2),
    "infer3d": dict(kind="infer", spatial_dims=3, volume=(96, 96, 48), patch=(64, 64, 32), batch_size=2,
                    base_filters=8, repeats=1),
}
DEFAULT_CONFIGS = ("train2d", "train2d_w16", "train3d")
#: Speed-ups the default path should reach over the reference (issue: 2x in 2D, 2.5x in 3D).
TARGETS = {"train2d": 2.0, "train2d_w16": 2.0, "train3d": 2.5}
ARMS = {
    "reference": dict(train=dict(batched_passes=False, channels_last=False, amp=False, closed_form_penalty=False),
                      infer=dict(channels_last=False, amp=False)),
    "default": dict(train={}, infer=dict(channels_last=True, amp=None)),
}


def _flop_counter():
    """A dispatch mode that adds up the FLOPs of the ops :mod:`torch.utils.flop_counter` has formulas for.

    (``FlopCounterMode`` itself tracks modules with backward hooks, which ``torch.autograd.grad`` inside the
    gradient penalty does not support.)
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.total += formula(*args, **kwargs, out_val=out)
            return out

    return Counter()


def matmul_peak(dtype_name: str, size: int = 2048, seconds: float = 1.0) -> float:
    """GFLOP/s of a square matrix product in this process (the best of a few timed batches)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def worker(name: str, arm: str, threads: int | None) -> dict:
    """Run one configuration in one arm in this process and return its measurements."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    cfg = CONFIGS[name]
    switches = ARMS[arm][cfg["kind"]]
    result = dict(name=name, arm=arm, threads=torch.get_num_threads())
    if cfg["kind"] == "train":
        from data_utils.phantoms import make_dataset
        from lmisa_lite.training import TrainConfig, train

        dims = cfg["spatial_dims"]
        shape = (128, 128) if dims == 2 else (96, 96, 48)
        source = make_dataset("kidney", "ct", n=4, dims=dims, seed=0, shape=shape)
        target = make_dataset("kidney", "mri", n=4, dims=dims, seed=0, shape=shape)
        config = TrainConfig(spatial_dims=dims, image_size=cfg["image_size"], batch_size=cfg["batch_size"],
                             base_filters=cfg["base_filters"], steps=cfg["steps"], device="cpu",
                             progress=False, **{k: cfg[k] for k in ("norm", "ema_decay") if k in cfg},
                             **switches)
        history = train(config, source, target).history
        # Step 0 carries one-off costs (allocation, first-call dispatch); the median of the rest.
        seconds = statistics.median(np.diff(history["time"]))
        counter = _flop_counter()
        with counter:
            train(config.with_overrides(steps=1), source, target)
        result.update(seconds=seconds, units=cfg["batch_size"], gflop=counter.total / 1e9)
    else:
        from lmisa_lite.inference import predict_volume
        from lmisa_lite.networks import LMISANet

        dims = cfg["spatial_dims"]
        # instance norm, as TrainConfig builds it by default
        model = LMISANet(spatial_dims=dims, num_classes=2, base_filters=cfg["base_filters"], norm="instance")
        model.eval()
        volume = np.random.default_rng(0).normal(size=cfg["volume"]).astype(np.float32)
        options = dict(batch_size=cfg["batch_size"], device="cpu", **switches)
        if dims == 3:
            options["patch_size"] = cfg["patch"]
        predict_volume(model, volume[..., :8] if dims == 2 else volume, **options)  # warm-up
        start = time.perf_counter()
        for _ in range(cfg["repeats"]):
            predict_volume(model, volume, **options)
        seconds = (time.perf_counter() - start) / cfg["repeats"]
        counter = _flop_counter()
        with counter:
            predict_volume(model, volume, **options)
        unit = volume.shape[-1] if dims == 2 else 1  # slices per second (2D) or volumes per second (3D)
        result.update(seconds=seconds, units=unit, gflop=counter.total / 1e9)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _run_worker(name: str, arm: str, threads: int | None) -> dict | str:
    cmd = [sys.executable, __file__, "--worker", name, "--arm", arm]
    cmd += ["--threads", str(threads)] if threads else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        return proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="run these configurations")
    parser.add_argument("--all", action="store_true", help="run every configuration")
    parser.add_argument("--repeats", type=int, default=3, help="runs per arm and configuration (default 3)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--arm", default="default", choices=sorted(ARMS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.arm, args.threads)))
        return 0

    import torch

    from lmisa_lite.device import autocast_dtype, cpu_has_native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"))
    default_dtype = autocast_dtype("cpu", None)
    print(f"# lmisa-lite training benchmark: torch {torch.__version__}, {platform.machine()}, "
          f"{os.cpu_count()} CPUs, CPU device, torch threads={threads}, {env}")
    print(f"# native bfloat16: {cpu_has_native_bf16()}; default arm computes in "
          f"{'float32' if default_dtype is None else str(default_dtype).replace('torch.', '')}")
    # Without native bfloat16, a 2048^2 bfloat16 product runs on a slow fallback for minutes; no arm uses it.
    peaks = {dtype: matmul_peak(dtype) for dtype in ("float32", "bfloat16")
             if dtype == "float32" or cpu_has_native_bf16()}
    print(f"# matmul peak (2048^2, this run): float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 "
          + (f"{peaks['bfloat16']:.0f} GFLOP/s" if "bfloat16" in peaks else "not measured (not native)"))
    print("# train: full LMISA step = network on 3 batches (labelled source, unlabelled source, target) + "
          "1 critic step with gradient penalty, depth 4; samples/s = batch_size / median seconds per step")
    print("# infer: predict_volume; samples/s = slices/s (2D model) or volumes/s (3D sliding window, "
          "overlap 0.5)")
    print("# reference = one float32 pass per batch, plain memory format, penalty by double backward; "
          "default = TrainConfig() settings")
    names = list(CONFIGS) if args.all else (args.only or list(DEFAULT_CONFIGS))
    print(f"{'config':12s} {'arm':9s} {'time':>13s} {'samples/s':>9s} {'peak RSS':>9s} {'GFLOP/s':>8s}  "
          "of matmul peak")
    summary = []
    for name in names:
        runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
        failed = None
        for _ in range(args.repeats):
            for arm in ARMS:
                row = _run_worker(name, arm, args.threads)
                if isinstance(row, str):
                    failed = f"{name} ({arm}): failed\n{row}"
                    break
                runs[arm].append(row)
            if failed:
                break
        if failed:
            print(failed)
            continue
        unit = "s/step" if CONFIGS[name]["kind"] == "train" else "s/vol"
        rss = {}
        for arm, rows in runs.items():
            seconds = statistics.median(r["seconds"] for r in rows)
            rss[arm] = max(r["peak_rss_mb"] for r in rows)
            gflops = rows[0]["gflop"] / seconds
            dtype = "float32" if arm == "reference" or default_dtype is None else "bfloat16"
            print(f"{name:12s} {arm:9s} {seconds:7.3f} {unit:5s} {rows[0]['units'] / seconds:9.2f} "
                  f"{rss[arm]:6.0f} MB {gflops:8.1f} {100 * gflops / peaks[dtype]:5.1f}% of {dtype}")
        ratios = [r["seconds"] / d["seconds"] for r, d in zip(runs["reference"], runs["default"])]
        speedup = statistics.median(ratios)
        target = TARGETS.get(name)
        met = target is not None and speedup >= target
        verdict = "" if target is None else f" (target {target:g}x: {'met' if met else 'NOT met'})"
        memory = rss["default"] - rss["reference"]
        print(f"{'':12s} speed-up {speedup:.2f}x{verdict}; per repeat "
              f"{', '.join(f'{r:.2f}' for r in ratios)}; peak RSS default - reference {memory:+.0f} MB")
        summary.append((name, speedup, target))
    missed = [n for n, s, t in summary if t is not None and s < t]
    print(f"# targets: {'all met' if not missed else 'not met for ' + ', '.join(missed)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
