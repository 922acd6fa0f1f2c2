"""Notebook 04's standard 3D recipe (kidney CT -> MRI) over seeds, against changes to it (the arms below).

Each run trains the 3D LMISA exactly as notebook 04's standard profile does (its data sizes, patch, steps and
schedule, read from :mod:`lmisa_lite.profiles`), keeps the checkpoint with the lowest loss on the labelled CT
validation volume, and segments the MRI test volumes with the Gaussian sliding window. Target labels are used
for scoring only. Arms:

- ``standard``: the notebook's setting (a third of the labelled patches centred on a kidney voxel; the critic's
  real label maps from uniformly placed source patches; the adversarial term left out of the network's loss for
  the first quarter of the steps and ramped in over the next quarter, ``adv_warmup`` and ``adv_ramp``);
- ``augment``: the same with the published 3D augmentation (rotation about z within +-15 degrees, zoom
  0.75-1.2, integer shifts), ``TrainConfig.augment_3d``;
- ``uniform``: every patch placed uniformly (``foreground_share=0``);
- ``lr_2e-3``: the network's learning rate doubled (the critic's kept at 1e-3);
- ``batch1``: batches of one patch and twice the steps (as many patches, twice the updates);
- ``volumes_12``: 12 training volumes per domain instead of the notebook's 4;
- ``no_warmup``: the adversarial term in the network's loss from the first step;
- ``real_centred``: no warm-up, and the critic's real label maps are those of the labelled batch, a third of
  whose patches are centred on a kidney voxel, while every target patch is placed uniformly
  (``critic_real_uniform=False``);
- ``no_critic``: MLNGM and reconstruction without the shape critic (``use_shape_constraint=False``);
- ``sharpened_no_warmup``: no warm-up, and target predictions shown to the critic as ``softmax(logits / 0.5)``
  (``critic_fake_temperature=0.5``), closer to the one-hot real maps.

A results file holds the runs of one version of the notebook's recipe, and its arms are changes to that
version's ``standard``; ``results/3d/README.md`` says which version each file measured.

Each seed draws its own phantoms (data-set seeds as notebook 04: ``seed`` for training, ``seed + 1`` for
validation, ``seed + 2`` for testing) and its own initialisation. One row per (arm, seed) goes to the CSV,
written after every run (to a temporary file, then renamed), so an interrupted sweep keeps what it finished and
resumes where it stopped.

    python benchmarks/bench_3d_recipe.py --arms standard augment --seeds 0 1 2
    python benchmarks/bench_3d_recipe.py --summary
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from csv_rows import read_rows, write_rows  # noqa: E402 (after the path)
DEFAULT_OUT = ROOT / "results" / "3d" / "recipe.csv"
FIELDS = ("arm", "seed", "steps", "batch_size", "patch", "n_train", "n_test", "target_dice", "source_val_dice",
          "best_step", "train_seconds", "seconds_per_step", "threads")
#: arm -> TrainConfig fields it changes; "steps" is a factor on the notebook's steps (the schedule follows),
#: "n_train" the number of training volumes per domain
ARMS = {"standard": {}, "augment": {"augment_3d": True}, "uniform": {"foreground_share": 0.0},
        "lr_2e-3": {"lr": 2e-3, "critic_lr": 1e-3}, "batch1": {"batch_size": 1, "steps": 2},
        "volumes_12": {"n_train": 12}, "no_warmup": {"adv_warmup": 0, "adv_ramp": 0},
        "real_centred": {"critic_real_uniform": False, "adv_warmup": 0, "adv_ramp": 0},
        "no_critic": {"use_shape_constraint": False},
        "sharpened_no_warmup": {"critic_fake_temperature": 0.5, "adv_warmup": 0, "adv_ramp": 0}}
#: notebook 04's ``critic_warmup``: share of the steps without the adversarial term, and again to ramp it in
WARMUP_SHARE = 0.25


def run(arm: str, seed: int, threads: int | None = None) -> dict:
    """Train and score one seed of one arm; returns the CSV row."""
    import numpy as np
    import torch

    from data_utils.phantoms import CLASS_NAMES, make_dataset
    from lmisa_lite.evaluation import evaluate
    from lmisa_lite.profiles import notebook_settings
    from lmisa_lite.training import TrainConfig, train

    if threads:
        torch.set_num_threads(threads)
    s = notebook_settings("04_train_3d", "standard")
    change = dict(ARMS[arm])
    task, steps, shape = "kidney", s["steps"] * change.pop("steps", 1), tuple(s["volume_shape"])
    batch_size, n_train = change.pop("batch_size", 2), change.pop("n_train", s["n_train"])
    data = {name: make_dataset(task, modality, n=n, dims=3, seed=seed + offset, shape=shape)
            for name, modality, n, offset in (("source", "ct", n_train, 0), ("target", "mri", n_train, 0),
                                              ("val", "ct", s["n_val"], 1), ("test", "mri", s["n_test"], 2))}
    # the notebook's training cell, with the arm's change
    config = TrainConfig(task=task, spatial_dims=3, steps=steps, batch_size=batch_size,
                         image_size=tuple(s["patch_size"]), base_filters=s["base_filters"], seed=seed, device="cpu",
                         progress=False,
                         val_every=max(2, steps // 10), checkpoint_every=10**9, lr_decay_every=max(1, steps // 5),
                         **{"adv_warmup": int(WARMUP_SHARE * steps), "adv_ramp": int(WARMUP_SHARE * steps), **change})
    result = train(config, data["source"], data["target"], val=data["val"])
    model = result.best_model or result.model
    dice = float(evaluate(model, data["test"], class_names=CLASS_NAMES[task], progress=False)["dice"].mean())
    val = [d for d in result.history["val_dice"] if not np.isnan(d)]
    return {"arm": arm, "seed": seed, "steps": steps, "batch_size": batch_size,
            "patch": "x".join(map(str, s["patch_size"])),
            "n_train": n_train, "n_test": s["n_test"], "target_dice": round(100 * dice, 2),
            "source_val_dice": round(100 * val[-1], 2), "best_step": result.best_step,
            "train_seconds": round(result.seconds, 1), "seconds_per_step": round(result.seconds / steps, 3),
            "threads": torch.get_num_threads()}


def summary(rows: list[dict]) -> str:
    """Mean +- sd of target Dice per arm, and each arm's paired per-seed difference to ``standard``."""
    by_arm: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_arm.setdefault(row["arm"], {})[int(row["seed"])] = row
    header = ("| arm | seeds | target Dice % (mean +- sd) | per seed | paired - standard | source val % per seed "
              "| s per step | training s |")
    lines = [header, "|---|---|---:|---|---|---|---:|---:|"]
    base = by_arm.get("standard", {})
    for arm, seeds in by_arm.items():
        dice = [float(seeds[k]["target_dice"]) for k in sorted(seeds)]
        sd = statistics.stdev(dice) if len(dice) > 1 else float("nan")
        paired = ", ".join(f"{float(seeds[k]['target_dice']) - float(base[k]['target_dice']):+.1f}"
                           for k in sorted(seeds) if k in base) if arm != "standard" else ""
        per_step = statistics.median(float(seeds[k]["seconds_per_step"]) for k in seeds)
        seconds = statistics.median(float(seeds[k]["train_seconds"]) for k in seeds)
        val = ", ".join(f"{float(seeds[k]['source_val_dice']):.1f}" for k in sorted(seeds))
        per_seed = ", ".join(f"{d:.1f}" for d in dice)
        lines.append(f"| {arm} | {', '.join(map(str, sorted(seeds)))} | {statistics.mean(dice):.1f} +- {sd:.1f} "
                     f"| {per_seed} | {paired} | {val} | {per_step:.2f} | {seconds:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=["standard", "augment"], choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--summary", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    rows = read_rows(args.out)
    if not args.summary:
        done = {(r["arm"], int(r["seed"])) for r in rows}
        for arm in args.arms:
            for seed in args.seeds:
                if (arm, seed) in done:
                    continue
                start = time.perf_counter()
                rows.append(run(arm, seed, args.threads))
                write_rows(args.out, rows, FIELDS)
                print(f"{arm} seed {seed}: target Dice {rows[-1]['target_dice']}% "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
