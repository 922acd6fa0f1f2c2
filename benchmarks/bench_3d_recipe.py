"""Target Dice of the 3D kidney model (CT -> MRI) against training steps, for one sampling recipe.

Trains the 3D LMISA of notebook 04 (standard data: 4 volumes per domain of (96, 96, 48), 2 target test
volumes) and segments the target test volumes with the Gaussian sliding window every ``--every`` steps, so
one run gives the whole curve of Dice against steps and seconds. The sampling options of
:func:`lmisa_lite.sampling.sample_batch` that no TrainConfig field exposes are set for the run.

    python benchmarks/bench_3d_recipe.py --steps 150 --patch 64 64 32 --seed 0 --augment
"""
from __future__ import annotations

import argparse
import functools
import json
import time

import torch

import lmisa_lite.training as training
from data_utils.phantoms import CLASS_NAMES, make_dataset
from lmisa_lite.config import TrainConfig
from lmisa_lite.evaluation import evaluate
from lmisa_lite.sampling import sample_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--patch", type=int, nargs=3, default=(64, 64, 32))
    parser.add_argument("--volume", type=int, nargs=3, default=(96, 96, 48))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--foreground-share", type=float, default=None)
    parser.add_argument("--augment", action="store_true")
    parser.add_argument("--n-train", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)

    task, shape = "kidney", tuple(args.volume)
    src = make_dataset(task, "ct", n=args.n_train, dims=3, seed=args.seed, shape=shape)
    tgt = make_dataset(task, "mri", n=args.n_train, dims=3, seed=args.seed, shape=shape)
    test = make_dataset(task, "mri", n=2, dims=3, seed=args.seed + 2, shape=shape)
    training.sample_batch = functools.partial(sample_batch, foreground_share=args.foreground_share,
                                              augment=args.augment)
    config = TrainConfig(task=task, spatial_dims=3, steps=args.steps, batch_size=args.batch,
                         image_size=tuple(args.patch), base_filters=8, seed=args.seed, device="cpu",
                         lr_decay_every=max(1, args.steps // 5), val_every=args.steps, progress=False)
    curve, spent = [], {"eval": 0.0}

    def probe(step: int, row: dict, model: torch.nn.Module) -> None:
        if (step + 1) % args.every and step + 1 != args.steps:
            return
        t0, train_s = time.perf_counter(), row["time"] - spent["eval"]  # evaluation time left out
        dice = float(evaluate(model, test, class_names=CLASS_NAMES[task], progress=False)["dice"].mean())
        spent["eval"] += time.perf_counter() - t0
        curve.append({"step": step + 1, "train_s": round(train_s, 1), "dice": round(dice, 3)})
        print(json.dumps(curve[-1]), flush=True)

    training.train(config, src, tgt, callbacks=[probe])
    print(json.dumps({"args": vars(args), "curve": curve}))


if __name__ == "__main__":
    main()
