"""Why does the shape critic lower the target Dice, and which setting makes it help? One arm per hypothesis.

Every arm is one set of :class:`~lmisa_lite.config.TrainConfig` switches (see :mod:`lmisa_lite.adversarial`),
trained on two experiments, each seed on its own phantoms:

- kidney CT -> MRI: 100 CT source cases (data seed ``4s``), 100 MRI target cases (``4s + 1``), 10 CT validation
  cases (``4s + 2``), 20 MRI test cases (``4s + 3``), 128 x 128 images;
- heart MRI -> CT: the same counts the other way round; training sees the central 96 x 96 of each image (which
  holds every heart of the phantoms), evaluation the whole 128 x 128 image.

The model kept is the one with the lowest source validation loss (``best_model``): no target label chooses
anything. Each row of the CSV holds the target test Dice (percent, mean over cases and foreground classes),
the source validation Dice of the kept model, its step, and ``shape_gap``, a label-free score of the target
predictions: per foreground class, the 1D Wasserstein distance between the foreground fractions of the
predicted *unlabelled target training* images and those of the source training labels (percent of the
image; 0 when the predicted structures have the sizes source anatomy has), averaged over classes.

Choosing a default uses no target label either. The rule, fixed before the runs: among the arms that keep the
shape critic, the one with the highest source-validation Dice, averaged over seeds and both experiments (a
critic that disturbs training shows there first); ``--summary`` prints it. The target Dice is the evidence of
whether that choice helps, not a way to choose.

The CSV is rewritten after every run (to a temporary file, then renamed), and runs already in it are skipped,
so an interrupted investigation continues. ``--jobs 2`` trains two runs at once, one thread each (on two cores
that is faster than one run on two threads).

    python benchmarks/critic_investigation.py --jobs 2                   # every arm, both experiments, 3 seeds
    python benchmarks/critic_investigation.py --arms baseline lmisa --experiments kidney_ct2mri --seeds 0
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "results" / "investigation" / "shape_critic.csv"
FIELDS = ("experiment", "arm", "seed", "steps", "target_dice", "source_val_dice", "best_step", "shape_gap",
          "seconds")

#: experiment -> (task, source modality, target modality, TrainConfig fields of the experiment)
EXPERIMENTS = {
    "kidney_ct2mri": ("kidney", "ct", "mri", {}),
    "heart_mri2ct": ("heart", "mri", "ct", {"image_size": (96, 96)}),
}
_NO_CRITIC = dict(use_shape_constraint=False)
#: arm -> TrainConfig fields that differ from the defaults (the defaults are the shape critic as published,
#: except where TrainConfig's docstring says otherwise)
ARMS = {
    "mlngm_recon": _NO_CRITIC,  # the variant below the full method: what the critic must beat
    "lmisa": {},
    "gp_on_reconstruction": dict(gp_on="reconstruction"),  # the authors' released code
    "real_smoothed": dict(critic_real="smoothed", critic_real_amount=1.0),
    "fake_sharpened": dict(critic_fake_temperature=0.5),
    "warmup": dict(adv_warmup=300, adv_ramp=300),
    "weight_0.2": dict(adv_weight=0.2),
    "critic_lr_1e-4": dict(critic_lr=1e-4),
    "real_noised": dict(critic_real="noised", critic_real_amount=0.1),
    "n_critic_3": dict(n_critic=3),
    "mlngm_recon_1800": dict(steps=1800, lr_decay_every=300, **_NO_CRITIC),
    "lmisa_1800": dict(steps=1800, lr_decay_every=300),
    # at the longer budget (where the source validation has flattened): the single changes that raised the
    # target Dice at 900 steps, alone and combined
    "weight_0.2_1800": dict(steps=1800, lr_decay_every=300, adv_weight=0.2),
    "sharpened_weight_0.2_1800": dict(steps=1800, lr_decay_every=300, critic_fake_temperature=0.5, adv_weight=0.2),
    "sharpened_n_critic_3_1800": dict(steps=1800, lr_decay_every=300, critic_fake_temperature=0.5, n_critic=3),
}


def shape_gap(model, target, source) -> float:
    """Label-free: how far the sizes of the predicted target structures are from source anatomy (see above)."""
    import numpy as np
    from scipy.stats import wasserstein_distance

    from lmisa_lite.inference import predict_volume
    from lmisa_lite.preprocessing import model_input

    classes = range(1, model.num_classes)
    predicted = [predict_volume(model, model_input(model, case.image), device="cpu") for case in target]
    pred = np.array([[np.mean(p == k) for k in classes] for p in predicted])
    real = np.array([[np.mean(case.label == k) for k in classes] for case in source])
    return 100 * float(np.mean([wasserstein_distance(pred[:, i], real[:, i]) for i in range(pred.shape[1])]))


def run(experiment: str, arm: str, seed: int, steps: int | None = None) -> dict:
    """Train and score one seed of one arm on one experiment; returns the CSV row."""
    import torch

    torch.set_num_threads(int(os.environ.get("INVESTIGATION_THREADS", "1")))
    from data_utils.phantoms import CLASS_NAMES, make_dataset
    from lmisa_lite.evaluation import evaluate
    from lmisa_lite.training import TrainConfig, train

    task, src, tgt, fields = EXPERIMENTS[experiment]
    source = make_dataset(task, src, n=100, dims=2, seed=4 * seed + 0)
    target = make_dataset(task, tgt, n=100, dims=2, seed=4 * seed + 1)
    val = make_dataset(task, src, n=10, dims=2, seed=4 * seed + 2)
    test = make_dataset(task, tgt, n=20, dims=2, seed=4 * seed + 3)
    config = TrainConfig(task=task, seed=seed, progress=False, **fields, **ARMS[arm])
    if steps is not None:
        config = config.with_overrides(steps=steps)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(config, source, target, val=val)
    seconds = time.perf_counter() - start
    model = result.best_model
    scores = evaluate(model, test, class_names=CLASS_NAMES[task], progress=False, device="cpu")
    return dict(experiment=experiment, arm=arm, seed=seed, steps=config.steps,
                target_dice=100 * float(scores["dice"].mean()),
                source_val_dice=100 * float(result.history["val_dice"][result.best_step]),
                best_step=result.best_step, shape_gap=shape_gap(model, target, source), seconds=seconds)


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for key in ("seed", "steps", "best_step"):
            r[key] = int(r[key])
        for key in ("target_dice", "source_val_dice", "shape_gap", "seconds"):
            r[key] = float(r[key])
    return rows


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    order = {name: i for i, name in enumerate(ARMS)}
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: (r["experiment"], order.get(r["arm"], 99), r["seed"])):
            writer.writerow({**row, **{k: f"{row[k]:.2f}" for k in ("target_dice", "source_val_dice",
                                                                      "shape_gap")},
                             "seconds": f"{row['seconds']:.1f}"})
    os.replace(tmp, path)


def summary(rows: list[dict], baseline: str = "mlngm_recon") -> list[dict]:
    """Per experiment and arm: mean +- sd over seeds of each score, and the paired per-seed difference of
    the target Dice against ``baseline`` (same experiment, same seeds)."""
    out = []
    by = {(r["experiment"], r["arm"], r["seed"]): r for r in rows}
    for experiment in EXPERIMENTS:
        for arm in ARMS:
            mine = sorted((r for r in rows if r["experiment"] == experiment and r["arm"] == arm),
                          key=lambda r: r["seed"])
            if not mine:
                continue
            entry = dict(experiment=experiment, arm=arm, seeds=[r["seed"] for r in mine])
            for key in ("target_dice", "source_val_dice", "shape_gap", "seconds"):
                values = [r[key] for r in mine]
                entry[key] = (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else float("nan"))
            diffs = [r["target_dice"] - by[experiment, baseline, r["seed"]]["target_dice"] for r in mine
                     if (experiment, baseline, r["seed"]) in by]
            entry["paired"] = diffs
            out.append(entry)
    return out


def chosen_arm(rows: list[dict]) -> str | None:
    """The rule of the module docstring: the critic arm with the best mean source-validation Dice over
    experiments (each experiment's mean over seeds), among arms measured on every experiment."""
    best, best_score = None, float("-inf")
    entries = summary(rows)
    for arm in ARMS:
        if ARMS[arm].get("use_shape_constraint", True) is False:
            continue
        means = [e["source_val_dice"][0] for e in entries if e["arm"] == arm]
        if len(means) == len(EXPERIMENTS) and statistics.mean(means) > best_score:
            best, best_score = arm, statistics.mean(means)
    return best


def markdown(rows: list[dict], command: str) -> str:
    """The summary as a markdown table (one row per experiment and arm), with the command that made it."""
    lines = [f"Made by `{command}`; one row per experiment and arm, mean +- sd over seeds, Dice in %.", "",
             "| experiment | arm | seeds | target Dice | source-val Dice | shape gap | target vs mlngm_recon, "
             "per seed | higher in |", "|---|---|---:|---:|---:|---:|---|---:|"]
    for e in summary(rows):
        def ms(key, e=e):
            mean, sd = e[key]
            return f"{mean:.1f} ± {sd:.1f}"
        paired = "" if e["arm"] == "mlngm_recon" else ", ".join(f"{d:+.1f}" for d in e["paired"])
        wins = "" if e["arm"] == "mlngm_recon" else f"{sum(d > 0 for d in e['paired'])}/{len(e['paired'])}"
        lines.append(f"| {e['experiment']} | `{e['arm']}` | {len(e['seeds'])} | {ms('target_dice')} | "
                     f"{ms('source_val_dice')} | {ms('shape_gap')} | {paired} | {wins} |")
    choice = chosen_arm(rows)
    if choice:
        lines += ["", f"Chosen by the label-free rule (best mean source-validation Dice among critic arms): `{choice}`."]
    return "\n".join(lines) + "\n"


def print_summary(rows: list[dict]) -> None:
    print(f"{'experiment':14s} {'arm':22s} {'n':>2s} {'target Dice':>14s} {'source val':>14s} "
          f"{'shape gap':>12s}  paired vs mlngm_recon (per seed)")
    for e in summary(rows):
        def ms(key, e=e):
            mean, sd = e[key]
            return f"{mean:6.1f} +- {sd:4.1f}"
        paired = ", ".join(f"{d:+.1f}" for d in e["paired"]) if e["arm"] != "mlngm_recon" else ""
        print(f"{e['experiment']:14s} {e['arm']:22s} {len(e['seeds']):2d} {ms('target_dice'):>14s} "
              f"{ms('source_val_dice'):>14s} {ms('shape_gap'):>12s}  {paired}")
    print("chosen by the label-free rule (best mean source-validation Dice among critic arms):", chosen_arm(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, one torch thread each (default 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV file (default results/investigation/)")
    parser.add_argument("--steps", type=int, default=None, help="fewer steps (a quick check of the script)")
    parser.add_argument("--summary", action="store_true", help="print the summary of the CSV and stop")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the summary as markdown here")
    args = parser.parse_args(argv)

    rows = read_rows(args.out)
    if not args.summary:
        done = {(r["experiment"], r["arm"], r["seed"]) for r in rows}
        # arm by arm in the order of ARMS (the most telling first), so a partial run has whole arms
        todo = [(e, a, s) for a in ARMS if a in args.arms for e in args.experiments for s in args.seeds
                if (e, a, s) not in done]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [pool.submit(run, e, a, s, args.steps) for e, a, s in todo]
            for future in as_completed(futures):
                row = future.result()
                print(f"{row['experiment']} {row['arm']:22s} seed {row['seed']}: target Dice "
                      f"{row['target_dice']:5.1f}  source val {row['source_val_dice']:5.1f}  shape gap "
                      f"{row['shape_gap']:5.2f}  {row['seconds']:4.0f} s", flush=True)
                rows.append(row)
                write_rows(args.out, rows)
    print_summary(rows)
    if args.markdown is not None:
        from data_utils.atomic import atomic_write_text

        command = "python benchmarks/critic_investigation.py " + " ".join(argv if argv is not None else sys.argv[1:])
        atomic_write_text(args.markdown, markdown(rows, command.strip()))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
