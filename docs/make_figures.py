"""Make the figures shown in README.md.

    python docs/make_figures.py                 # docs/phantoms.png
    python docs/make_figures.py --results runs/standard   # also docs/results.png from a tutorial run

``phantoms.png``: for each task, the CT and MRI phantom of one subject (mid slice, label outlines) and their MLNGM
maps. ``results.png``: the ablation bar charts that a tutorial run wrote.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from data_utils.phantoms import make_phantom  # noqa: E402
from lmisa_lite._atomic import atomic_path  # noqa: E402
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
    fig.suptitle("Synthetic phantoms of one subject per task (mid-slices, label outlines) and their MLNGM maps")
    _save(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="a tutorial run folder holding artifacts/*/dice_by_variant.png")
    args = parser.parse_args()
    phantom_figure(HERE / "phantoms.png")
    print(f"wrote {HERE / 'phantoms.png'}")
    if args.results:
        charts = sorted(Path(args.results).glob("artifacts/**/dice_by_variant.png"))
        if not charts:
            raise SystemExit(f"--results {args.results}: no artifacts/**/dice_by_variant.png found")
        images = [plt.imread(p) for p in charts]
        fig, axes = plt.subplots(1, len(images), figsize=(6 * len(images), 4))
        for ax, img, p in zip(np.atleast_1d(axes), images, charts):
            ax.imshow(img)
            ax.set_axis_off()
            ax.set_title(p.parent.name, fontsize=9)
        fig.tight_layout()
        _save(fig, HERE / "results.png")
        print(f"wrote {HERE / 'results.png'}")


if __name__ == "__main__":
    main()
