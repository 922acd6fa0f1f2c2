"""The ``lmisa-lite`` command line.

Subcommands: ``mlngm`` (NIfTI in, NIfTI out), ``phantoms`` (write a synthetic data set), ``train``,
``predict``, ``tutorial`` (the main job) and ``sweep`` (a papermill parameter grid).

Every failure ends with one line on stderr, ``lmisa-lite COMMAND: message``, naming the file or argument at
fault and what was expected, and a non-zero exit status: 2 for bad arguments or input files (a missing,
empty, damaged or 4D image, NaN voxels, a file that is not a checkpoint, an unknown notebook or parameter),
1 when a notebook or the library fails on valid input. ``--debug`` shows the Python traceback instead.
Outputs are written to a temporary file and renamed, so a failed command leaves no partial file behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from lmisa_lite import __version__

USAGE_ERROR = 2  # bad arguments or input files
RUN_ERROR = 1  # a notebook, or the library, failed on valid input
MAX_JOINED = 300  # characters: a longer multi-line message is cut after its first line


class CLIError(Exception):
    """A failure to report as one line, ``lmisa-lite COMMAND: message``, with exit status 2."""


class _UsageError(CLIError):
    """An argument argparse rejected; ``prog`` is the (sub)command it belongs to."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument raises :class:`_UsageError` (one line) instead of printing the usage."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(self.prog, f"{message} (see '{self.prog} --help')")


def _one_line(error: BaseException) -> str:
    """The message of ``error`` on one line: an ``OSError`` as ``file: reason``; the lines of a short text
    joined, a long one (a notebook's traceback) cut after its first line."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        names = [os.fspath(n) for n in (error.filename, error.filename2) if n is not None]
        text = f"{' -> '.join(names)}: {error.strerror}"
    else:
        text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " ".join(lines)
    return joined if len(lines) == 1 or len(joined) <= MAX_JOINED else f"{lines[0]} [...] (--debug shows all)"


def _existing_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise CLIError(f"{what} {path}: file not found")
    if not path.is_file():
        raise CLIError(f"{what} {path}: {'is a folder' if path.is_dir() else 'not a regular file'}; expected a file")
    if path.stat().st_size == 0:
        raise CLIError(f"{what} {path}: the file is empty")
    return path


def _check_output(path: Path, what: str = "OUT") -> Path:
    """Fail before any work when the NIfTI output ``path`` cannot be written."""
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise CLIError(f"{what} {path}: expected a .nii or .nii.gz file name")
    if path.is_dir():
        raise CLIError(f"{what} {path}: is a folder; expected a file name ending in .nii or .nii.gz")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(f"{what} {path}: {parent} is a file, not a folder")
    return path


def _read_image(path: Path, what: str = "IN"):
    """Read a 2D or 3D NIfTI image with finite voxels; returns ``(image, data, vol)``.

    ``data`` has the file's shape; ``vol`` drops trailing length-1 axes, a single slice ``(X, Y, 1)``
    becoming ``(X, Y)``.
    """
    import nibabel as nib
    import numpy as np

    _existing_file(path, what)
    try:  # nibabel raises many types for damaged or foreign files: ImageFileError, EOFError, OSError...
        img = nib.load(str(path))
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except Exception as err:
        raise CLIError(f"{what} {path}: not a readable NIfTI image ({_one_line(err)})") from err
    vol = data
    while vol.ndim > 3 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim == 3 and vol.shape[2] == 1:
        vol = vol[..., 0]
    if vol.ndim not in (2, 3):
        raise CLIError(f"{what} {path}: expected a 2D or 3D image, got a {data.ndim}D array of shape {data.shape}")
    if vol.size == 0:
        raise CLIError(f"{what} {path}: the image has no voxels (shape {data.shape})")
    bad = int(vol.size - np.count_nonzero(np.isfinite(vol)))
    if bad:
        raise CLIError(f"{what} {path}: {bad} of {vol.size} voxels are NaN or infinite; expected finite intensities")
    return img, data, vol


def cmd_mlngm(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np

    from data_utils.nifti import save_nifti
    from lmisa_lite.mlngm import mlngm

    src, dst = Path(args.input), _check_output(Path(args.output))
    img, data, vol = _read_image(src)
    out = mlngm(vol, levels=args.levels, window=args.window, threshold=args.threshold, planar=not args.cubic)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    result = nib.Nifti1Image(out.reshape(data.shape).astype(np.float32), img.affine, header)
    save_nifti(result, dst)
    print(f"wrote {dst} ({'x'.join(map(str, data.shape))}, MLNGM levels={args.levels} window={args.window})")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    """``--shape`` as argparse reads it: sizes joined by ``x``."""
    try:
        return tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes joined by x, e.g. 128x128 or 96x96x48, got {text!r}") from None


def _output_folder(path: Path, what: str = "--out") -> Path:
    if path.exists() and not path.is_dir():
        raise CLIError(f"{what} {path}: is a file; expected a folder (it is created if missing)")
    return path


def cmd_phantoms(args: argparse.Namespace) -> int:
    from data_utils.nifti import save_case
    from data_utils.phantoms import make_dataset

    out = _output_folder(Path(args.out))
    cases = make_dataset(args.task, args.modality, n=args.n, dims=args.dims, seed=args.seed, shape=args.shape)
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
        raise CLIError(f"--data {args.data} needs --data-root DIR (the data set's folder)")
    root = Path(args.data_root)
    if not root.is_dir():
        state = "is a file" if root.exists() else "folder not found"
        raise CLIError(f"--data-root {root}: {state}; expected the {args.data} data set's folder")
    if args.data == "mmwhs":
        return loaders.load_mmwhs(root, modality)
    if args.data == "kits19":
        return loaders.load_kits19(root)
    return loaders.load_chaos(root)  # argparse allows no other choice


def _train_config(args: argparse.Namespace):
    """The run's TrainConfig: the options, then the ``--set KEY=VALUE`` overrides, validated once."""
    from lmisa_lite.training import TrainConfig

    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    for item in args.set or []:
        key, sep, _ = item.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--set {item!r}: expected KEY=VALUE, e.g. --set steps=100")
        if key.strip() not in fields:
            close = difflib.get_close_matches(key.strip(), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(fields)}"
            raise CLIError(f"--set {item}: {key.strip()!r} is not a TrainConfig field ({hint})")
    options = {"task": args.task, "spatial_dims": args.dims, "out_dir": args.out}
    if args.steps is not None:
        options["steps"] = args.steps
    overridden = {item.partition("=")[0].strip() for item in args.set or []}  # --set wins over an option
    return TrainConfig().with_overrides(args.set or [], **{k: v for k, v in options.items() if k not in overridden})


def cmd_train(args: argparse.Namespace) -> int:
    from lmisa_lite.training import train

    _output_folder(Path(args.out))
    config = _train_config(args)
    source = _load_domain(args, args.source, n=args.n_train, seed=args.seed)
    target = _load_domain(args, args.target, n=args.n_train, seed=args.seed)
    val = _load_domain(args, args.source, n=args.n_val, seed=args.seed + 1) if args.data == "phantoms" else None
    result = train(config, source, target, val=val)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        print(f"trained {config.steps} steps in {result.seconds:.0f} s; best checkpoint: {result.best_checkpoint}")
    return 0


def _check_checkpoint(path: Path) -> Path:
    _existing_file(path, "--checkpoint")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive
        raise CLIError(f"--checkpoint {path}: not a PyTorch checkpoint; expected the best.pt or last.pt "
                       "that 'lmisa-lite train' writes")
    return path


def cmd_predict(args: argparse.Namespace) -> int:
    import nibabel as nib
    import numpy as np

    from data_utils.nifti import save_nifti
    from lmisa_lite.device import resolve_device
    from lmisa_lite.inference import predict_volume
    from lmisa_lite.preprocessing import model_input
    from lmisa_lite.training import load_checkpoint

    src, dst = Path(args.input), _check_output(Path(args.output))
    checkpoint = _check_checkpoint(Path(args.checkpoint))
    resolve_device(args.device)
    img, data, vol = _read_image(src)
    model, _ = load_checkpoint(checkpoint)
    if model.spatial_dims == 3 and vol.ndim != 3:
        raise CLIError(f"IN {src}: a 2D image of shape {data.shape}, but --checkpoint {checkpoint} holds a 3D "
                       "model; expected a volume (X, Y, Z)")
    x = model_input(model, vol)  # prepared as the model was trained (MLNGM or raw intensities)
    seg = predict_volume(model, x, device=args.device)
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    save_nifti(nib.Nifti1Image(seg.reshape(data.shape).astype(np.uint8), img.affine, header), dst)
    print(f"wrote {dst}")
    return 0


def cmd_tutorial(args: argparse.Namespace) -> int:
    from lmisa_lite.tutorial import find_notebooks, run_tutorial

    if args.only:
        find_notebooks(select=args.only)  # an unknown --only fails before the output folder is made
    if args.out is not None:
        _output_folder(Path(args.out))
    out = run_tutorial(args.profile, args.out, select=args.only or None)
    print(f"tutorial finished: open {out / 'index.html'}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from lmisa_lite.tutorial import parse_grid, run_sweep

    grid = parse_grid(args.grid)
    _output_folder(Path(args.out))
    csv = run_sweep(args.notebook, grid, out=args.out, profile=args.profile)
    print(f"sweep finished: {csv}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lmisa-lite", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"lmisa-lite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    # --debug is accepted after the subcommand too; SUPPRESS keeps the subparser from resetting it to False
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = command("mlngm", help="MLNGM map of a NIfTI image (2D or 3D), keeping affine and header")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--levels", type=int, default=4)
    p.add_argument("--window", type=int, default=3)
    p.add_argument("--threshold", type=float, default=1e-3)
    p.add_argument("--cubic", action="store_true", help="cubic (3D) local windows instead of in-plane ones")
    p.set_defaults(func=cmd_mlngm)

    p = command("phantoms", help="write synthetic CT/MRI phantoms as NIfTI image/label pairs")
    p.add_argument("--task", choices=["kidney", "heart"], default="kidney")
    p.add_argument("--modality", default="ct", help="ct, mri, mri_t2 or ct_noncontrast")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--dims", type=int, choices=[2, 3], default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shape", type=_shape, default=None, help="e.g. 128x128 or 96x96x48")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_phantoms)

    p = command("train", help="train LMISA (phantoms by default)")
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

    p = command("predict", help="segment a NIfTI image with a trained checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.set_defaults(func=cmd_predict)

    p = command("tutorial", help="execute the notebooks (the main job)")
    p.add_argument("--profile", choices=["quick", "standard", "paper"], default="standard")
    p.add_argument("--out", default=None, help="default runs/PROFILE")
    p.add_argument("--only", action="append", help="run only notebooks starting with this prefix")
    p.set_defaults(func=cmd_tutorial)

    p = command("sweep", help="run a notebook over a parameter grid with papermill")
    p.add_argument("--notebook", required=True)
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2")
    p.add_argument("--profile", choices=["quick", "standard", "paper"], default="quick")
    p.add_argument("--out", default="runs/sweep")
    p.set_defaults(func=cmd_sweep)
    return parser


def _report(prog: str, error: BaseException) -> int:
    """Print ``error`` as one line after ``prog`` and return the exit status for it."""
    if isinstance(error, (CLIError, ValueError, OSError)):
        print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    if isinstance(error, RuntimeError):  # a failing notebook (its log is saved next to it), a torch error
        print(f"{prog}: {_one_line(error)}", file=sys.stderr)
        return RUN_ERROR
    print(f"{prog}: unexpected {type(error).__name__}: {_one_line(error)} (rerun with --debug for the traceback)",
          file=sys.stderr)
    return RUN_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line on ``argv`` (default ``sys.argv[1:]``) and return the exit status.

    Errors are reported by one path: any exception a command raises becomes one line on stderr (see the module
    docstring), unless ``--debug`` is given, which lets it propagate with its traceback.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        return _report(error.prog, error)
    if not getattr(args, "func", None):
        parser.print_help()
        return USAGE_ERROR
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"lmisa-lite {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        return _report(f"lmisa-lite {args.command}", error)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
