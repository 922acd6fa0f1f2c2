"""Make the figures shown in README.md.

    python docs/make_figures.py                           # docs/phantoms.png
    python docs/make_figures.py --results runs/standard   # docs/results.png from a tutorial run

``phantoms.png``: for each task, the CT and MRI phantom of one subject (mid slice, label outlines) and their
MLNGM maps. ``results.png``: mean Dice per ablation variant over seeds (error bars: sd over seeds, dots: each
seed), target and unseen contrast, one panel per experiment, drawn from the ``results.csv`` files of a tutorial
run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_utils.phantoms import make_phantom  # noqa: E402
from data_utils.atomic import atomic_path  # noqa: E402
from lmisa_lite.mlngm import mlngm  # noqa: E402

HERE = Path(__file__).resolve().parent


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def phantom_figure(path: Path, *, seed: int = 3) -> None:
    modalities = [("ct", "CT"), ("mri", "MRI")]
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.6), layout="constrained")
    for row, task in enumerate(("kidney", "heart")):
        for col, (modality, name) in enumerate(modalities):
            case = make_phantom(task, modality, dims=3, seed=seed)
            z = int(np.argmax((case.label > 0).sum(axis=(0, 1))))  # the slice with most foreground
            image, label = case.image[:, :, z], case.label[:, :, z]
            ax = axes[row, col]
            ax.imshow(image.T, cmap="gray", origin="lower")
            ax.contour(label.T, levels=np.arange(label.max()) + 0.5, colors="tab:orange", linewidths=0.7,
                       origin="lower")
            ax.set_title(f"{task}: {name}")
            ax = axes[row, col + 2]
            ax.imshow(mlngm(case.image)[:, :, z].T, cmap="gray", origin="lower")
            ax.set_title(f"{task}: MLNGM of {name}")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("Synthetic phantoms of one subject per task (mid-slices, label outlines) and their MLNGM "
                 "maps")
    _save(fig, path)


def results_figure(run: Path, path: Path) -> None:
    import pandas as pd

    from lmisa_lite.experiments import plot_ablation, summarize_ablation
    from lmisa_lite.reports import seed_means

    tables = sorted(run.glob("artifacts/ablation/*/results.csv"), key=lambda t: (t.parent.name[0] != "k", t))
    if not tables:
        raise SystemExit(f"--results {run}: no artifacts/ablation/*/results.csv (run the tutorial first)")
    fig, axes = plt.subplots(1, len(tables), figsize=(7 * len(tables), 4), squeeze=False,
                             layout="constrained")
    for ax, table in zip(axes[0], tables):
        task, direction, dims = table.parent.name.split("_")
        source, target = direction.split("2")
        cases = pd.read_csv(table)
        plot_ablation(summarize_ablation(cases), ax=ax, per_seed=seed_means(cases),
                      title=f"{task}, {source.upper()} -> {target.upper()} ({dims.upper()})")
    _save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="a tutorial run folder (e.g. runs/standard): make "
                        "docs/results.png from its ablation results instead of docs/phantoms.png")
    args = parser.parse_args()
    if args.results:
        results_figure(Path(args.results), HERE / "results.png")
        print(f"wrote {HERE / 'results.png'}")
    else:
        phantom_figure(HERE / "phantoms.png")
        print(f"wrote {HERE / 'phantoms.png'}")


if __name__ == "__main__":
    main()
