"""Throughput and peak memory of LMISA training steps (network + critic) and of inference, 2D and 3D.

Each configuration runs in its own subprocess, so the peak resident memory (``ru_maxrss``) printed for it
belongs to that configuration alone (Python, PyTorch and the data included).

    python benchmarks/bench_training.py                 # all configurations, PyTorch's default threads
    python benchmarks/bench_training.py --threads 1 --only train2d
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {
    # name: what runs. 2D: the tutorial defaults (8 filters, batch 1, instance norm, weight average), the same
    # trained the published way (batch norm, no average) and the published width (16 filters);
    # 3D: the published batch size 2 on (64, 64, 32) patches of a (96, 96, 48) phantom.
    "train2d": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=8,
                    steps=8),
    "train2d_bn": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=8,
                       steps=8, norm="batch", ema_decay=0.0),
    "train2d_w16": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=1, base_filters=16,
                        steps=6),
    "train2d_b4": dict(kind="train", spatial_dims=2, image_size=(128, 128), batch_size=4, base_filters=8,
                       steps=5),
    "train3d": dict(kind="train", spatial_dims=3, image_size=(64, 64, 32), batch_size=2, base_filters=8,
                    steps=4),
    "infer2d": dict(kind="infer", spatial_dims=2, volume=(128, 128, 48), batch_size=8, base_filters=8,
                    repeats=2),
    "infer3d": dict(kind="infer", spatial_dims=3, volume=(96, 96, 48), patch=(64, 64, 32), batch_size=2,
                    base_filters=8, repeats=1),
}


def worker(name: str, threads: int | None) -> dict:
    """Run one configuration in this process and return its measurements."""
    import numpy as np
    import torch

    if threads:
        torch.set_num_threads(threads)
    cfg = CONFIGS[name]
    result = dict(name=name, threads=torch.get_num_threads(), **{k: v for k, v in cfg.items() if k != "kind"})
    if cfg["kind"] == "train":
        from data_utils.phantoms import make_dataset
        from lmisa_lite.training import TrainConfig, train

        dims = cfg["spatial_dims"]
        shape = (128, 128) if dims == 2 else (96, 96, 48)
        source = make_dataset("kidney", "ct", n=4, dims=dims, seed=0, shape=shape)
        target = make_dataset("kidney", "mri", n=4, dims=dims, seed=0, shape=shape)
        config = TrainConfig(spatial_dims=dims, image_size=cfg["image_size"], batch_size=cfg["batch_size"],
                             base_filters=cfg["base_filters"], steps=cfg["steps"], device="cpu",
                             progress=False, **{k: cfg[k] for k in ("norm", "ema_decay") if k in cfg})
        result.update(norm=config.norm, ema_decay=config.ema_decay)
        history = train(config, source, target).history
        # Step 0 carries one-off costs (allocation, first-call dispatch); time the rest.
        seconds = (history["time"][-1] - history["time"][0]) / (cfg["steps"] - 1)
        result.update(s_per_step=round(seconds, 3), samples_per_s=round(cfg["batch_size"] / seconds, 2))
    else:
        from lmisa_lite.inference import predict_volume
        from lmisa_lite.networks import LMISANet

        dims = cfg["spatial_dims"]
        # instance norm, as TrainConfig builds it by default
        model = LMISANet(spatial_dims=dims, num_classes=2, base_filters=cfg["base_filters"], norm="instance")
        model.eval()
        volume = np.random.default_rng(0).normal(size=cfg["volume"]).astype(np.float32)
        options = dict(batch_size=cfg["batch_size"], device="cpu")
        if dims == 3:
            options["patch_size"] = cfg["patch"]
        predict_volume(model, volume[..., :8] if dims == 2 else volume, **options)  # warm-up
        start = time.perf_counter()
        for _ in range(cfg["repeats"]):
            predict_volume(model, volume, **options)
        seconds = (time.perf_counter() - start) / cfg["repeats"]
        unit = volume.shape[-1] if dims == 2 else 1  # slices per second (2D) or volumes per second (3D)
        result.update(s_per_volume=round(seconds, 3), samples_per_s=round(unit / seconds, 2),
                      unit="slices" if dims == 2 else "volumes")
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice)")
    parser.add_argument("--only", action="append", choices=sorted(CONFIGS), help="run these configurations")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads)))
        return 0

    import torch

    threads = args.threads or torch.get_num_threads()
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"# lmisa-lite benchmark: torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"CPU device, torch threads={threads}, OMP_WAIT_POLICY={wait_policy}")
    print("# train: full LMISA step = network on 3 batches (labelled source, unlabelled source, target) + "
          "1 critic step with gradient penalty, depth 4; samples/s = batch_size / seconds per step")
    print("# infer: predict_volume; samples/s = slices/s (2D model) or volumes/s (3D sliding window, "
          "overlap 0.5)")
    for name in args.only or CONFIGS:
        cmd = [sys.executable, __file__, "--worker", name]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed\n{proc.stderr[-2000:]}")
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        skip = ("name", "samples_per_s", "peak_rss_mb")
        details = ", ".join(f"{k}={v}" for k, v in row.items() if k not in skip)
        print(f"{name:11s} {row['samples_per_s']:8.2f} samples/s  peak RSS {row['peak_rss_mb']:5d} MB  "
              f"({details})")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
