"""The ``lmisa-lite`` command line: version, MLNGM on NIfTI files, phantoms, clear errors."""
from __future__ import annotations

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
    exe = subprocess.run([sys.executable, "-m", "lmisa_lite.cli", "--version"], capture_output=True, text=True)
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


def test_mlngm_command_errors_name_the_file(tmp_path, capsys):
    with pytest.raises(SystemExit, match="missing.nii.gz: file not found"):
        main(["mlngm", str(tmp_path / "missing.nii.gz"), str(tmp_path / "o.nii.gz")])
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(SystemExit, match="bad.nii.gz: not a readable NIfTI"):
        main(["mlngm", str(bad), str(tmp_path / "o.nii.gz")])
    with pytest.raises(SystemExit, match="expected a .nii or .nii.gz"):
        main(["mlngm", str(bad), str(tmp_path / "o.png")])
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.float32), np.eye(4)), tmp_path / "4d.nii")
    with pytest.raises(SystemExit, match="2D or 3D"):
        main(["mlngm", str(tmp_path / "4d.nii"), str(tmp_path / "o.nii")])
    assert not (tmp_path / "o.nii").exists()


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


def test_bad_settings_end_with_a_one_line_error(tmp_path):
    with pytest.raises(SystemExit, match=r"lmisa-lite phantoms: shape must be 3 integers >= 16"):
        main(["phantoms", "--dims", "3", "--shape", "48x48x8", "--out", str(tmp_path / "p")])
    with pytest.raises(SystemExit, match=r"lmisa-lite train: .*image_size"):
        main(["train", "--steps", "1", "--out", str(tmp_path / "r"), "--set", "image_size=60,60"])
