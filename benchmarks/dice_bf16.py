"""Does bfloat16 training keep the target Dice? The default 2D kidney run, float32 against bfloat16, 3 seeds.

Each seed ``s`` trains ``TrainConfig(seed=s)`` (the defaults: 900 steps, batch 1, 8 filters, 128 x 128) on
kidney CT -> MRI phantoms: 100 CT source cases (data seed ``4s``), 100 MRI target cases (``4s + 1``), 10 CT
validation cases for choosing the checkpoint (``4s + 2``); the selected model (``best_model``) is scored on
20 MRI test cases (``4s + 3``) by :func:`lmisa_lite.evaluation.evaluate` (float32 inference in both arms,
its default). The two arms differ only in ``amp``: ``False`` (float32) and ``True`` (bfloat16 autocast on a
CPU). Both run the default fast path otherwise (batched passes, channels-last).

Writes ``results/speed/bf16_dice.csv`` (columns ``seed, arm, target_dice, seconds``; ``target_dice`` is the
mean Dice over the test cases in percent, ``seconds`` the training wall time; how the committed table was
made: ``results/speed/README.md``) after every run, and skips the runs already in that file, so an interrupted
measurement continues where it stopped (delete the file to measure again). Then prints each arm's mean +- sd
over seeds and the paired per-seed difference. bfloat16 may be the CPU default
(``lmisa_lite.device.CPU_BF16_BY_DEFAULT``) if its mean is not more than 1 point below float32's (a higher
Dice is no reason against it; the seed-to-seed spread of this adversarial training is several points, so three
seeds cannot resolve a gain either).

    python benchmarks/dice_bf16.py                  # 6 runs, a few minutes each on 2 cores
    python benchmarks/dice_bf16.py --threads 2 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "speed" / "bf16_dice.csv"
FIELDS = ("seed", "arm", "target_dice", "seconds")
ARMS = {"float32": False, "bfloat16": True}  # arm -> TrainConfig.amp
TOLERANCE = 1.0  # Dice points
#: The 2D phantoms the committed table was measured on (128 x 128, the plane through the organs), before the
#: package's default 2D phantoms became slices of the subject's volume (data_utils.phantoms).
LEGACY_2D = dict(plane="organs", shape=(128, 128))


def run(seed: int, arm: str, steps: int | None = None) -> tuple[float, float]:
    """Train and score one seed in one arm; returns (target Dice in percent, training seconds)."""
    from data_utils.phantoms import CLASS_NAMES, make_dataset
    from lmisa_lite.evaluation import evaluate
    from lmisa_lite.training import TrainConfig, train

    source = make_dataset("kidney", "ct", n=100, dims=2, seed=4 * seed + 0, **LEGACY_2D)
    target = make_dataset("kidney", "mri", n=100, dims=2, seed=4 * seed + 1, **LEGACY_2D)
    val = make_dataset("kidney", "ct", n=10, dims=2, seed=4 * seed + 2, **LEGACY_2D)
    test = make_dataset("kidney", "mri", n=20, dims=2, seed=4 * seed + 3, **LEGACY_2D)
    config = TrainConfig(seed=seed, amp=ARMS[arm], image_size=(128, 128), progress=False)
    if steps is not None:
        config = config.with_overrides(steps=steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp=True on a CPU without native bfloat16 warns that it is slow
        result = train(config, source, target, val=val)
    seconds = time.perf_counter() - start
    scores = evaluate(result.best_model, test, class_names=CLASS_NAMES["kidney"], progress=False)
    return 100 * float(scores["dice"].mean()), seconds


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [dict(seed=int(r["seed"]), arm=r["arm"], target_dice=float(r["target_dice"]),
                     seconds=float(r["seconds"])) for r in csv.DictReader(f)]


def write_rows(path: Path, rows: list[dict]) -> None:
    from data_utils.atomic import atomic_path

    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r["seed"], list(ARMS).index(r["arm"]))):
            writer.writerow({**row, "target_dice": f"{row['target_dice']:.2f}",
                             "seconds": f"{row['seconds']:.1f}"})


def summarise(rows: list[dict], seeds: list[int]) -> bool:
    """Print mean +- sd per arm and the paired differences; True when bfloat16 stays within tolerance."""
    by = {(r["seed"], r["arm"]): r for r in rows}
    complete = [s for s in seeds if all((s, arm) in by for arm in ARMS)]

    def sd(values):
        return statistics.stdev(values) if len(values) > 1 else float("nan")

    print(f"{'arm':9s} {'target Dice (%) per seed':32s} {'mean +- sd':>14s} {'train s (mean)':>15s}")
    means = {}
    for arm in ARMS:
        dice = [by[s, arm]["target_dice"] for s in complete]
        seconds = [by[s, arm]["seconds"] for s in complete]
        means[arm] = statistics.mean(dice) if dice else float("nan")
        print(f"{arm:9s} {', '.join(f'{d:.2f}' for d in dice):32s} {means[arm]:6.2f} +- {sd(dice):5.2f} "
              f"{statistics.mean(seconds) if seconds else float('nan'):15.0f}")
    diffs = [by[s, "bfloat16"]["target_dice"] - by[s, "float32"]["target_dice"] for s in complete]
    if not diffs:
        print("no seed has both arms yet")
        return False
    mean_diff = statistics.mean(diffs)
    print(f"paired bfloat16 - float32 per seed {', '.join(f'{d:+.2f}' for d in diffs)}: "
          f"{mean_diff:+.2f} +- {sd(diffs):.2f} points (seeds {complete})")
    gap = means["bfloat16"] - means["float32"]
    ok = gap >= -TOLERANCE
    verdict = "met, bfloat16 can be the CPU default" if ok else "NOT met, keep it a switch"
    print(f"bfloat16 mean - float32 mean: {gap:+.2f} points; rule (bfloat16 not more than {TOLERANCE:g} "
          f"point below float32): {verdict}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV file (default results/speed/...)")
    parser.add_argument("--steps", type=int, default=None, help="fewer steps (a quick check of the script)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = read_rows(args.out)
    done = {(r["seed"], r["arm"]) for r in rows}
    for seed in args.seeds:
        for arm in ARMS:
            if (seed, arm) in done:
                continue
            dice, seconds = run(seed, arm, args.steps)
            print(f"seed {seed} {arm:9s} target Dice {dice:6.2f}%  training {seconds:5.0f} s", flush=True)
            rows.append(dict(seed=seed, arm=arm, target_dice=dice, seconds=seconds))
            write_rows(args.out, rows)
    summarise(rows, args.seeds)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
