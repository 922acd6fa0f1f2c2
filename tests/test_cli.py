"""The ``lmisa-lite`` command line: version, MLNGM on NIfTI files, phantoms, train and predict, and its errors
(every failure: a non-zero exit and one line on stderr naming the file or argument)."""
from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from lmisa_lite import __version__
from lmisa_lite.cli import main
from lmisa_lite.mlngm import mlngm


def _blob(shape, seed=0):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(sum(g**2 for g in grid))
    return (1000 * (r < 0.6) + rng.normal(0, 5, shape)).astype(np.int16)


def test_version_via_console_script():
    exe = subprocess.run([sys.executable, "-m", "lmisa_lite.cli", "--version"], capture_output=True, text=True,
                         check=False)
    assert exe.returncode == 0
    assert exe.stdout.strip() == f"lmisa-lite {__version__}"


@pytest.mark.parametrize("shape", [(40, 36), (40, 36, 1), (32, 28, 12)])
def test_mlngm_command_keeps_affine_and_header(tmp_path, shape):
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.8, 0, -5], [0, 0, 2.5, 3], [0, 0, 0, 1]])
    img = nib.Nifti1Image(_blob(shape), affine)
    img.header.set_slope_inter(2.0, -100.0)
    img.header["descrip"] = b"test volume"
    src, dst = tmp_path / "in.nii.gz", tmp_path / "out" / "map.nii.gz"
    nib.save(img, src)
    assert main(["mlngm", str(src), str(dst)]) == 0
    out = nib.load(dst)
    assert out.shape == shape
    np.testing.assert_allclose(out.affine, affine)
    assert out.header["descrip"].tobytes().rstrip(b"\0") == b"test volume"
    data = out.get_fdata()
    expected = mlngm(nib.load(src).get_fdata(dtype=np.float32).reshape([s for s in shape if s > 1] or shape))
    np.testing.assert_allclose(data.reshape(expected.shape), expected, atol=1e-6)
    assert data.min() >= 0 and data.max() <= 1
    assert not list((tmp_path / "out").glob(".*")), "no temporary files left behind"


def test_help_lists_subcommands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("mlngm", "phantoms", "train", "predict", "tutorial", "sweep"):
        assert cmd in out


def test_train_then_predict_writes_a_label_map_with_the_input_affine(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--task", "kidney", "--dims", "2", "--steps", "2", "--n-train", "2", "--n-val", "1",
                 "--out", str(run), "--set", "base_filters=4", "--set", "image_size=64,64",
                 "--set", "progress=false"]) == 0
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    phantoms = tmp_path / "phantoms"
    assert main(["phantoms", "--task", "kidney", "--modality", "mri", "--n", "1", "--dims", "3",
                 "--shape", "48x48x16", "--out", str(phantoms)]) == 0
    image = next(phantoms.glob("*_image.nii.gz"))
    out = tmp_path / "seg" / "prediction.nii.gz"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--device", "cpu", str(image), str(out)]) == 0
    seg, src = nib.load(out), nib.load(image)
    assert seg.shape == src.shape and seg.get_data_dtype() == np.uint8
    np.testing.assert_allclose(seg.affine, src.affine)
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}
    assert not list(out.parent.glob(".*")), "no temporary files left behind"


# --- errors: one line on stderr naming the file or argument, a non-zero exit, no traceback, no output --------

def _nifti(path, data):
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.eye(4)), path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Small input files, good and bad, and a real checkpoint from one training step (2D, 32x32)."""
    import torch

    from data_utils.phantoms import make_dataset
    from lmisa_lite.training import TrainConfig, train

    d = tmp_path_factory.mktemp("inputs")
    image = _blob((32, 32)).astype(np.float32)
    _nifti(d / "ok.nii.gz", image)
    (d / "empty.nii.gz").write_bytes(b"")
    (d / "corrupt.nii").write_bytes(b"this is not a NIfTI file" * 20)
    whole = (d / "ok.nii.gz").read_bytes()
    (d / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    nan, inf = image.copy(), image.copy()
    nan[3, 4], inf[5, 6] = np.nan, -np.inf
    _nifti(d / "nan.nii.gz", nan)
    _nifti(d / "inf.nii.gz", inf)
    _nifti(d / "4d.nii.gz", np.zeros((8, 8, 4, 2)))
    (d / "folder.nii.gz").mkdir()
    (d / "afile").write_text("a file where a folder is expected")

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cases = make_dataset("kidney", "ct", n=1, dims=2, seed=0, shape=(32, 32))
        config = TrainConfig(steps=1, image_size=(32, 32), base_filters=2, depth=2, progress=False,
                             out_dir=str(d / "run"))
        train(config, cases, cases)
    finally:
        torch.set_num_threads(before)
    (d / "junk.pt").write_bytes(b"\x80\x02 not a torch file")
    torch.save({"weights": torch.zeros(2)}, d / "foreign.pt")
    ckpt = (d / "run" / "last.pt").read_bytes()
    (d / "truncated.pt").write_bytes(ckpt[: len(ckpt) // 2])
    return d


# (argv, the name the message must contain); {d}: the inputs folder, {out}: where an output would go, {ckpt}: a
# real checkpoint.
PREDICT = ["predict", "--checkpoint", "{ckpt}", "--device", "cpu"]
ERROR_CASES = {
    # mlngm: unreadable, empty, corrupt, non-finite, 4D inputs; bad output names; bad options
    "mlngm-missing": (["mlngm", "{d}/missing.nii.gz", "{out}"], "missing.nii.gz"),
    "mlngm-empty": (["mlngm", "{d}/empty.nii.gz", "{out}"], "empty.nii.gz"),
    "mlngm-corrupt": (["mlngm", "{d}/corrupt.nii", "{out}"], "corrupt.nii"),
    "mlngm-truncated": (["mlngm", "{d}/truncated.nii.gz", "{out}"], "truncated.nii.gz"),
    "mlngm-nan": (["mlngm", "{d}/nan.nii.gz", "{out}"], "nan.nii.gz"),
    "mlngm-inf": (["mlngm", "{d}/inf.nii.gz", "{out}"], "inf.nii.gz"),
    "mlngm-4d": (["mlngm", "{d}/4d.nii.gz", "{out}"], "4d.nii.gz"),
    "mlngm-in-is-folder": (["mlngm", "{d}/folder.nii.gz", "{out}"], "folder.nii.gz"),
    "mlngm-out-suffix": (["mlngm", "{d}/ok.nii.gz", "{out}.png"], "result.nii.gz.png"),
    "mlngm-out-is-folder": (["mlngm", "{d}/ok.nii.gz", "{d}/folder.nii.gz"], "folder.nii.gz"),
    "mlngm-out-under-file": (["mlngm", "{d}/ok.nii.gz", "{d}/afile/result.nii.gz"], "afile"),
    "mlngm-levels": (["mlngm", "{d}/ok.nii.gz", "{out}", "--levels", "0"], "levels"),
    # predict: the same inputs, and checkpoints that are missing, folders or not checkpoints
    "predict-missing": ([*PREDICT, "{d}/missing.nii.gz", "{out}"], "missing.nii.gz"),
    "predict-empty": ([*PREDICT, "{d}/empty.nii.gz", "{out}"], "empty.nii.gz"),
    "predict-corrupt": ([*PREDICT, "{d}/corrupt.nii", "{out}"], "corrupt.nii"),
    "predict-truncated": ([*PREDICT, "{d}/truncated.nii.gz", "{out}"], "truncated.nii.gz"),
    "predict-nan": ([*PREDICT, "{d}/nan.nii.gz", "{out}"], "nan.nii.gz"),
    "predict-inf": ([*PREDICT, "{d}/inf.nii.gz", "{out}"], "inf.nii.gz"),
    "predict-4d": ([*PREDICT, "{d}/4d.nii.gz", "{out}"], "4d.nii.gz"),
    "predict-out-suffix": ([*PREDICT, "{d}/ok.nii.gz", "{out}.png"], "result.nii.gz.png"),
    "checkpoint-missing": (["predict", "--checkpoint", "{d}/nope.pt", "{d}/ok.nii.gz", "{out}"], "nope.pt"),
    "checkpoint-folder": (["predict", "--checkpoint", "{d}", "{d}/ok.nii.gz", "{out}"], "--checkpoint"),
    "checkpoint-empty": (["predict", "--checkpoint", "{d}/empty.nii.gz", "{d}/ok.nii.gz", "{out}"],
                         "empty.nii.gz"),
    "checkpoint-junk": (["predict", "--checkpoint", "{d}/junk.pt", "{d}/ok.nii.gz", "{out}"], "junk.pt"),
    "checkpoint-nifti": (["predict", "--checkpoint", "{d}/ok.nii.gz", "{d}/ok.nii.gz", "{out}"], "ok.nii.gz"),
    "checkpoint-foreign": (["predict", "--checkpoint", "{d}/foreign.pt", "{d}/ok.nii.gz", "{out}"],
                           "foreign.pt"),
    "checkpoint-truncated": (["predict", "--checkpoint", "{d}/truncated.pt", "{d}/ok.nii.gz", "{out}"],
                             "truncated.pt"),
    "predict-device": (["predict", "--checkpoint", "{ckpt}", "--device", "tpu7", "{d}/ok.nii.gz", "{out}"],
                       "tpu7"),
    "predict-no-checkpoint": (["predict", "{d}/ok.nii.gz", "{out}"], "--checkpoint"),
    # train: data roots, overrides
    "train-data-root-missing": (["train", "--data", "mmwhs", "--data-root", "{d}/nonexistent", "--out", "{outdir}"],
                                "--data-root"),
    "train-data-root-file": (["train", "--data", "kits19", "--data-root", "{d}/afile", "--out", "{outdir}"],
                             "--data-root"),
    "train-no-data-root": (["train", "--data", "chaos", "--out", "{outdir}"], "--data-root"),
    "train-set-unknown": (["train", "--out", "{outdir}", "--set", "nosuch=2"], "nosuch"),
    "train-set-no-equals": (["train", "--out", "{outdir}", "--set", "steps"], "--set"),
    "train-set-bad-value": (["train", "--out", "{outdir}", "--set", "steps=many"], "steps"),
    "train-set-out-of-range": (["train", "--out", "{outdir}", "--set", "image_size=60,60"], "image_size"),
    "train-out-is-file": (["train", "--out", "{d}/afile", "--steps", "1"], "afile"),
    # phantoms
    "phantoms-shape-syntax": (["phantoms", "--shape", "big", "--out", "{outdir}"], "--shape"),
    "phantoms-shape-small": (["phantoms", "--dims", "3", "--shape", "48x48x8", "--out", "{outdir}"], "shape"),
    # tutorial and sweep: unknown notebooks and parameters
    "tutorial-only-unknown": (["tutorial", "--only", "09", "--out", "{outdir}"], "09"),
    "sweep-notebook-unknown": (["sweep", "--notebook", "09", "--grid", "seed=0,1", "--out", "{outdir}"], "09"),
    "sweep-notebook-ambiguous": (["sweep", "--notebook", "0", "--grid", "seed=0,1", "--out", "{outdir}"], "'0'"),
    "sweep-notebook-missing-file": (["sweep", "--notebook", "{d}/none.ipynb", "--grid", "seed=0", "--out",
                                     "{outdir}"], "none.ipynb"),
    "sweep-grid-unknown": (["sweep", "--notebook", "03", "--grid", "nosuch=2", "--out", "{outdir}"], "nosuch"),
    "sweep-grid-syntax": (["sweep", "--notebook", "03", "--grid", "seed", "--out", "{outdir}"], "--grid"),
    "unknown-command": (["segment", "{d}/ok.nii.gz"], "segment"),
}


def _argv(template, d, tmp_path):
    out, outdir = tmp_path / "out" / "result.nii.gz", tmp_path / "outdir"
    fill = {"d": str(d), "out": str(out), "outdir": str(outdir), "ckpt": str(d / "run" / "last.pt")}
    return [arg.format(**fill) for arg in template]


def _assert_nothing_written(tmp_path):
    for folder in (tmp_path / "out", tmp_path / "outdir"):
        left = sorted(p.name for p in folder.rglob("*")) if folder.exists() else []
        assert not left, f"output left behind in {folder}: {left}"


def _assert_one_line(stderr: str, command: str, name: str):
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith(f"lmisa-lite {command}:".replace(" :", ":")), lines[0]
    assert name in lines[0], f"{name!r} not named in: {lines[0]}"


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_every_failure_is_one_line_naming_the_culprit(case, inputs, tmp_path, capsys):
    template, name = ERROR_CASES[case]
    argv = _argv(template, inputs, tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2
    command = "" if case == "unknown-command" else argv[0]
    _assert_one_line(captured.err, command, name)
    _assert_nothing_written(tmp_path)


@pytest.mark.parametrize("case", ["predict-corrupt", "train-data-root-missing"])
def test_the_console_exit_status_is_non_zero(case, inputs, tmp_path):
    template, name = ERROR_CASES[case]
    argv = _argv(template, inputs, tmp_path)
    run = subprocess.run([sys.executable, "-m", "lmisa_lite.cli", *argv], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120, check=False)
    assert run.returncode == 2
    _assert_one_line(run.stderr, argv[0], name)
    assert run.stdout == ""
    _assert_nothing_written(tmp_path)


def test_sweep_with_an_unknown_parameter_lists_the_notebooks_parameters(tmp_path, capsys):
    assert main(["sweep", "--notebook", "03", "--grid", "nosuch=2", "--out", str(tmp_path / "s")]) == 2
    line = capsys.readouterr().err.strip()
    for parameter in ("seed", "steps", "out_dir"):
        assert parameter in line
    assert not (tmp_path / "s").exists(), "no run started"


def test_unknown_notebook_lists_the_notebooks_there(capsys):
    assert main(["sweep", "--notebook", "09", "--grid", "seed=1"]) == 2
    line = capsys.readouterr().err
    assert "no numbered notebooks" not in line
    assert "03_build_and_train_2d" in line


@pytest.mark.parametrize("position", ["global", "after-command"])
def test_debug_shows_the_traceback(tmp_path, position):
    argv = ["mlngm", str(tmp_path / "missing.nii.gz"), str(tmp_path / "o.nii.gz")]
    argv = ["--debug", *argv] if position == "global" else [*argv, "--debug"]
    from lmisa_lite.cli import CLIError

    with pytest.raises(CLIError, match="missing.nii.gz: file not found"):
        main(argv)


def test_a_failing_notebook_is_reported_in_one_line(monkeypatch, tmp_path, capsys):
    import lmisa_lite.tutorial

    def failing(*args, **kwargs):
        raise RuntimeError("03_x.ipynb failed (executed copy: runs/03_x.ipynb).\nFailed in cell [4]\n"
                           + "Traceback (most recent call last):\n  ...\n" * 40 + "ValueError: broken")

    monkeypatch.setattr(lmisa_lite.tutorial, "run_tutorial", failing)
    assert main(["tutorial", "--profile", "quick", "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lmisa-lite tutorial: 03_x.ipynb failed (executed copy: runs/03_x.ipynb).")


def test_an_unexpected_error_is_one_line_too(monkeypatch, tmp_path, capsys):
    import data_utils.phantoms

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(data_utils.phantoms, "make_dataset", broken)
    assert main(["phantoms", "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert err == "lmisa-lite phantoms: unexpected TypeError: a bug (rerun with --debug for the traceback)\n"


def test_the_small_checkpoint_predicts(inputs, tmp_path):
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", "--checkpoint", str(inputs / "run" / "last.pt"), "--device", "cpu",
                 str(inputs / "ok.nii.gz"), str(out)]) == 0
    assert nib.load(out).shape == (32, 32)


def test_set_overrides_win_over_options(tmp_path):
    from lmisa_lite.cli import _train_config, build_parser

    args = build_parser().parse_args(["train", "--out", str(tmp_path), "--steps", "5", "--dims", "3",
                                      "--set", "steps=7", "--set", "image_size=32,32,16"])
    config = _train_config(args)
    assert (config.steps, config.spatial_dims, config.image_size) == (7, 3, (32, 32, 16))


def test_long_messages_stay_whole_and_multi_line_ones_become_one_line():
    from lmisa_lite.cli import _one_line

    long = ValueError("unknown key; valid keys: " + ", ".join(f"key_{i}" for i in range(60)))
    assert _one_line(long) == str(long)
    assert _one_line(ValueError("label file a.nii has another affine:\n[[1 0]\n [0 1]]")) == (
        "label file a.nii has another affine: [[1 0] [0 1]]")
    assert _one_line(FileNotFoundError(2, "No such file or directory", "x/y.nii")) == (
        "x/y.nii: No such file or directory")
