"""A 2D model on 2D test images against the same model slice by slice on volumes (kidney CT -> MRI), over seeds.

Trains notebook 03's setting (the full method, 100 + 100 images on the phantoms' 96 x 96 grid, 10 CT
validation images for the checkpoint) for each of ``--steps`` and ``--seeds``, then scores the kept model on
the 20 MRI test images of notebook 03 (Dice pooled over their pixels, and the mean of per-image Dice) and on 4
MRI test volumes of notebook 04 (Dice per volume, averaged). With one anatomy for 2D and 3D the pooled image
Dice and the volume Dice measure the same thing and should agree within sampling noise. One row per (steps,
seed), written after each run (temporary file, then rename); a finished row is not run again.

    python benchmarks/bench_2d_on_volumes.py --steps 900 1800 --seeds 0 1 2
    python benchmarks/bench_2d_on_volumes.py --summary
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from csv_rows import read_rows, write_rows  # noqa: E402 (after the path)
DEFAULT_OUT = ROOT / "results" / "3d" / "2d_images_vs_volumes.csv"
FIELDS = ("steps", "seed", "images_pooled_dice", "images_mean_dice", "images_without_kidney", "volumes_dice",
          "n_volumes", "source_val_dice", "best_step", "train_seconds")


def run(steps: int, seed: int, threads: int) -> dict:
    """Train and score one seed at one length; returns the CSV row (Dice in %)."""
    import numpy as np
    import torch

    from data_utils.phantoms import CLASS_NAMES, make_dataset
    from lmisa_lite.evaluation import evaluate
    from lmisa_lite.inference import predict_volume
    from lmisa_lite.metrics import pooled_dice
    from lmisa_lite.preprocessing import model_input
    from lmisa_lite.training import TrainConfig, train

    torch.set_num_threads(threads)
    task, names = "kidney", CLASS_NAMES["kidney"]
    source, target = (make_dataset(task, m, n=100, dims=2, seed=seed) for m in ("ct", "mri"))
    val = make_dataset(task, "ct", n=10, dims=2, seed=seed + 1)
    images = make_dataset(task, "mri", n=20, dims=2, seed=seed + 2)  # notebook 03's test images
    volumes = make_dataset(task, "mri", n=4, dims=3, seed=seed + 2)  # notebook 04's test volumes
    # notebook 03's training cell
    config = TrainConfig(task=task, steps=steps, seed=seed, device="cpu", progress=False,
                         val_every=max(2, steps // 18), checkpoint_every=10**9, lr_decay_every=max(1, steps // 6))
    result = train(config, source, target, val=val)
    model = result.best_model or result.model
    predictions = [predict_volume(model, model_input(model, c.image)) for c in images]
    pooled = pooled_dice(predictions, [c.label for c in images], labels=[1])[1]
    per_image = float(evaluate(model, images, class_names=names, progress=False)["dice"].mean())
    on_volumes = float(evaluate(model, volumes, class_names=names, progress=False)["dice"].mean())
    val_dice = [d for d in result.history["val_dice"] if not np.isnan(d)]
    return {"steps": steps, "seed": seed, "images_pooled_dice": round(100 * pooled, 2),
            "images_mean_dice": round(100 * per_image, 2),
            "images_without_kidney": sum(not c.label.any() for c in images),
            "volumes_dice": round(100 * on_volumes, 2), "n_volumes": len(volumes),
            "source_val_dice": round(100 * val_dice[-1], 2), "best_step": result.best_step,
            "train_seconds": round(result.seconds, 1)}


def summary(rows: list[dict]) -> str:
    """Per length: mean +- sd over seeds of each Dice, and the per-seed gap volumes - pooled images."""
    def stats(values: list[float]) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else float("nan")
        return f"{statistics.mean(values):.1f} +- {sd:.1f}"

    lines = ["| steps | seeds | images, pooled | images, mean per image | volumes | gap volumes - images (per seed) |",
             "|---:|---:|---:|---:|---:|---|"]
    for steps in sorted({int(r["steps"]) for r in rows}):
        chosen = sorted((r for r in rows if int(r["steps"]) == steps), key=lambda r: int(r["seed"]))
        pooled, mean, vol = ([float(r[k]) for r in chosen]
                             for k in ("images_pooled_dice", "images_mean_dice", "volumes_dice"))
        gaps = ", ".join(f"{v - p:+.1f}" for v, p in zip(vol, pooled))
        lines.append(f"| {steps} | {len(chosen)} | {stats(pooled)} | {stats(mean)} | {stats(vol)} | {gaps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", nargs="+", type=int, default=[900, 1800])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--summary", action="store_true", help="print the table of --out and stop")
    args = parser.parse_args()
    rows = read_rows(args.out)
    if not args.summary:
        done = {(int(r["steps"]), int(r["seed"])) for r in rows}
        for steps in args.steps:
            for seed in args.seeds:
                if (steps, seed) not in done:
                    rows.append(run(steps, seed, args.threads))
                    write_rows(args.out, rows, FIELDS)
                    print(f"{steps} steps, seed {seed}: {rows[-1]}", flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
