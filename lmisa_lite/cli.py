"""The ``lmisa-lite`` command line.

Subcommands: ``mlngm`` (NIfTI in, NIfTI out), ``phantoms`` (write a synthetic data set), ``train``,
``predict``, ``tutorial`` (the main job) and ``sweep`` (a papermill parameter grid).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lmisa_lite import __version__


def _check_nifti_name(path: Path, what: str) -> None:
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise SystemExit(f"lmisa-lite: {what} {path}: expected a .nii or .nii.gz file name")


def cmd_mlngm(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np

    from data_utils.nifti import save_nifti
    from lmisa_lite.mlngm import mlngm

    src, dst = Path(args.input), Path(args.output)
    _check_nifti_name(dst, "OUT")
    if not src.is_file():
        raise SystemExit(f"lmisa-lite: IN {src}: file not found")
    try:
        img = nib.load(str(src))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:
        raise SystemExit(f"lmisa-lite: IN {src}: not a readable NIfTI image ({err})") from err
    shape = data.shape
    squeezed = data.reshape(shape[:2]) if data.ndim == 3 and shape[2] == 1 else data
    if squeezed.ndim not in (2, 3):
        raise SystemExit(f"lmisa-lite: IN {src}: expected a 2D or 3D image, got shape {shape}")
    try:
        out = mlngm(squeezed, levels=args.levels, window=args.window, threshold=args.threshold,
                    planar=not args.cubic)
    except ValueError as err:
        raise SystemExit(f"lmisa-lite: {src}: {err}") from err
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    result = nib.Nifti1Image(out.reshape(shape).astype(np.float32), img.affine, header)
    save_nifti(result, dst)
    print(f"wrote {dst} ({'x'.join(map(str, shape))}, MLNGM levels={args.levels} window={args.window})")
    return 0


def cmd_phantoms(args: argparse.Namespace) -> int:
    from data_utils.nifti import save_case
    from data_utils.phantoms import make_dataset

    shape = tuple(int(s) for s in args.shape.split("x")) if args.shape else None
    cases = make_dataset(args.task, args.modality, n=args.n, dims=args.dims, seed=args.seed, shape=shape)
    out = Path(args.out)
    for case in _progress(cases, "phantoms"):
        save_case(case, out / f"{case.case_id}_image.nii.gz", out / f"{case.case_id}_label.nii.gz")
    print(f"wrote {len(cases)} {args.task}/{args.modality} cases to {out}")
    return 0


def _progress(items, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, leave=False, disable=not sys.stderr.isatty())


def _load_domain(args: argparse.Namespace, modality: str, *, n: int, seed: int):
    """Cases for one domain: phantoms by default, or a real data set through the loader options."""
    if args.data == "phantoms":
        from data_utils.phantoms import make_dataset

        return make_dataset(args.task, modality, n=n, dims=args.dims, seed=seed)
    from data_utils import loaders

    if args.data_root is None:
        raise SystemExit(f"lmisa-lite train: --data {args.data} needs --data-root DIR")
    if args.data == "mmwhs":
        return loaders.load_mmwhs(args.data_root, modality)
    if args.data == "kits19":
        return loaders.load_kits19(args.data_root)
    if args.data == "chaos":
        return loaders.load_chaos(args.data_root)
    raise SystemExit(f"lmisa-lite train: unknown --data {args.data!r}")


def cmd_train(args: argparse.Namespace) -> int:
    from lmisa_lite.training import TrainConfig, train

    config = TrainConfig(task=args.task, spatial_dims=args.dims, out_dir=args.out)
    if args.steps is not None:
        config = config.with_overrides([f"steps={args.steps}"])
    config = config.with_overrides(args.set or [])
    source = _load_domain(args, args.source, n=args.n_train, seed=args.seed)
    target = _load_domain(args, args.target, n=args.n_train, seed=args.seed)
    val = _load_domain(args, args.source, n=args.n_val, seed=args.seed + 1) if args.data == "phantoms" else None
    result = train(config, source, target, val=val)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(f"trained {config.steps} steps in {result.seconds:.0f} s; best checkpoint: {result.best_checkpoint}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np

    from data_utils.nifti import save_nifti
    from lmisa_lite.inference import predict_volume
    from lmisa_lite.preprocessing import model_input
    from lmisa_lite.training import load_checkpoint

    src, dst = Path(args.input), Path(args.output)
    _check_nifti_name(dst, "OUT")
    if not src.is_file():
        raise SystemExit(f"lmisa-lite: IN {src}: file not found")
    model, config = load_checkpoint(args.checkpoint)
    img = nib.load(str(src))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    shape = data.shape
    vol = data.reshape(shape[:2]) if data.ndim == 3 and shape[2] == 1 else data
    if not np.isfinite(vol).all():
        raise SystemExit(f"lmisa-lite: IN {src}: image contains NaN or infinite values")
    x = model_input(model, vol)  # prepared as the model was trained (MLNGM or raw intensities)
    seg = predict_volume(model, x, device=args.device)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    save_nifti(nib.Nifti1Image(seg.reshape(shape).astype(np.uint8), img.affine, header), dst)
    print(f"wrote {dst}")
    return 0


def cmd_tutorial(args: argparse.Namespace) -> int:
    from lmisa_lite.tutorial import run_tutorial

    try:
        out = run_tutorial(args.profile, args.out, select=args.only or None)
    except RuntimeError as err:
        print(f"lmisa-lite tutorial: {err}", file=sys.stderr)
        return 1
    print(f"tutorial finished: open {out / 'index.html'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lmisa_lite.tutorial import parse_grid, run_sweep

    try:
        grid = parse_grid(args.grid)
    except ValueError as err:
        raise SystemExit(f"lmisa-lite sweep: {err}") from err
    csv = run_sweep(args.notebook, grid, out=args.out, profile=args.profile)
    print(f"sweep finished: {csv}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmisa-lite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lmisa-lite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("mlngm", help="MLNGM map of a NIfTI image (2D or 3D), keeping affine and header")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--cubic", action="store_true", help="cubic (3D) local windows instead of in-plane ones")
    p.set_defaults(func=cmd_mlngm)

    p = sub.add_parser("phantoms", help="write synthetic CT/MRI phantoms as NIfTI image/label pairs")
    p.add_argument("--task", choices=["kidney", "heart"], default="kidney")
    p.add_argument("--modality", default="ct", help="ct, mri, mri_t2 or ct_noncontrast")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--dims", type=int, choices=[2, 3], default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", default=None, help="e.g. 128x128 or 96x96x48")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_phantoms)

    p = sub.add_parser("train", help="train LMISA (phantoms by default)")
    p.add_argument("--task", choices=["kidney", "heart"], default="kidney")
    p.add_argument("--source", default="ct")
    p.add_argument("--target", default="mri")
    p.add_argument("--dims", type=int, choices=[2, 3], default=2)
    p.add_argument("--steps", type=int, default=None, help="generator steps (default: TrainConfig's, 900)")
    p.add_argument("--out", required=True, help="folder for last.pt, best.pt and the history")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a TrainConfig field")
    p.add_argument("--data", choices=["phantoms", "mmwhs", "kits19", "chaos"], default="phantoms")
    p.add_argument("--data-root", default=None)
    p.add_argument("--n-train", type=int, default=100, help="training cases per domain (phantoms)")
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment a NIfTI image with a trained checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("tutorial", help="execute the notebooks (the main job)")
    p.add_argument("--profile", choices=["quick", "standard", "paper"], default="standard")
    p.add_argument("--out", default=None, help="default runs/PROFILE")
    p.add_argument("--only", action="append", help="run only notebooks starting with this prefix")
    p.set_defaults(func=cmd_tutorial)

    p = sub.add_parser("sweep", help="run a notebook over a parameter grid with papermill")
    p.add_argument("--notebook", required=True)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2")
    p.add_argument("--profile", choices=["quick", "standard", "paper"], default="quick")
    p.add_argument("--out", default="runs/sweep")
    p.set_defaults(func=cmd_sweep)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as error:  # bad settings or data found by the library: one line, no traceback
        raise SystemExit(f"lmisa-lite {args.command}: {error}") from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
