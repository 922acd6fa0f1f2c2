"""The profile table: notebooks' literals are its standard values, and every way of choosing a profile agrees
(the runner, ``LMISA_PROFILE`` and ``papermill -p profile``), with explicit parameters winning."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lmisa_lite.profiles import (ABLATION, NOTEBOOKS, PROFILE_NAMES, apply_profile, notebook_settings,
                                 profile_settings, resolve_profile)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def _parameters(name: str) -> dict:
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    values = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
                else:  # a, b = "ct", "mri"
                    for elt, val in zip(target.elts, ast.literal_eval(node.value)):
                        values[elt.id] = val
    return values


def test_every_numbered_notebook_has_a_row_and_its_literals_are_the_standard_values():
    names = sorted(p.stem for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    assert names == sorted(NOTEBOOKS)
    for name in names:
        params = _parameters(name)
        assert params["profile"] is None, name
        for knob, values in NOTEBOOKS[name].items():
            assert set(values) == set(PROFILE_NAMES), (name, knob)
            assert json.dumps(params[knob]) == json.dumps(values["standard"]), (name, knob)


def test_apply_profile_keeps_explicit_values_and_reads_the_environment(monkeypatch):
    monkeypatch.setenv("LMISA_PROFILE", "quick")
    params = {"profile": None, "steps": 1800, "n_train": 7, "image_size": [96, 96]}
    in_force = apply_profile("03_build_and_train_2d", params, verbose=False)
    quick = notebook_settings("03_build_and_train_2d", "quick")
    assert params["profile"] == "quick" and in_force["profile"] == "quick"
    assert params["steps"] == quick["steps"] and params["image_size"] == quick["image_size"]
    assert params["n_train"] == 7  # not the standard value: set on purpose
    assert params["n_val"] == quick["n_val"]  # missing knobs are filled in
    paper = {"profile": "paper"}
    apply_profile("03_build_and_train_2d", paper, verbose=False)  # the parameter wins over the environment
    assert paper["steps"] == NOTEBOOKS["03_build_and_train_2d"]["steps"]["paper"]


def test_unknown_profiles_and_notebooks_are_named(monkeypatch):
    with pytest.raises(ValueError, match="profile='fast'"):
        resolve_profile("fast")
    monkeypatch.setenv("LMISA_PROFILE", "slow")
    with pytest.raises(ValueError, match="LMISA_PROFILE='slow'"):
        resolve_profile()
    with pytest.raises(ValueError, match="notebook='07_x'"):
        notebook_settings("07_x", "quick")


def test_ablation_profiles_share_their_keys():
    keys = set(ABLATION["standard"]) - {"tasks"}
    for name in PROFILE_NAMES:
        assert set(ABLATION[name]) - {"tasks"} == keys, name
        assert profile_settings(name, task="heart")["n_train"] >= 1


def _head_notebook(name: str, folder: Path) -> Path:
    """The notebook up to the cell that applies the profile, then a cell that writes the knobs to JSON."""
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    cut = next(i for i, c in enumerate(nb.cells) if "apply_profile(" in c.source and c.cell_type == "code")
    knobs = ["profile", *NOTEBOOKS[name]]
    dump = nbformat.v4.new_code_cell(
        "import json as _json\n"
        f"_json.dump({{k: globals()[k] for k in {knobs!r}}}, open('knobs.json', 'w'))")
    # The imports cell is left out: the head needs apply_profile alone.
    nb.cells = [nbformat.v4.new_code_cell("from lmisa_lite.profiles import apply_profile")]
    nb.cells += [c for c in nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4).cells[2:cut + 1]
                 if c.cell_type == "code"] + [dump]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def _papermill(path: Path, *args: str, env: dict | None = None) -> dict:
    subprocess.run([sys.executable, "-m", "papermill", str(path), str(path.with_suffix(".out.ipynb")),
                    "--cwd", str(path.parent), "-k", "python3", "--no-progress-bar", *args],
                   check=True, capture_output=True, env={**os.environ, **(env or {})})
    return json.loads((path.parent / "knobs.json").read_text())


def _listed(values: dict) -> dict:
    return json.loads(json.dumps(values))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_papermill_profile_parameter_gives_the_profile(name, tmp_path, monkeypatch):
    monkeypatch.delenv("LMISA_PROFILE", raising=False)
    head = _head_notebook(name, tmp_path)
    got = _papermill(head, "-p", "profile", "quick")
    assert got == _listed({"profile": "quick", **notebook_settings(name, "quick")})


@pytest.mark.slow
def test_explicit_parameter_wins_and_environment_chooses_too(tmp_path, monkeypatch):
    name = "03_build_and_train_2d"
    monkeypatch.delenv("LMISA_PROFILE", raising=False)
    head = _head_notebook(name, tmp_path)
    got = _papermill(head, "-p", "profile", "quick", "-p", "steps", "3")
    assert got == _listed({"profile": "quick", **notebook_settings(name, "quick"), "steps": 3})
    got = _papermill(head, env={"LMISA_PROFILE": "paper"})
    assert got == _listed({"profile": "paper", **notebook_settings(name, "paper")})
    got = _papermill(head)
    assert got == _listed({"profile": "standard", **notebook_settings(name, "standard")})


@pytest.mark.slow
def test_the_runner_passes_its_profile(tmp_path, monkeypatch):
    from lmisa_lite.tutorial import run_notebook

    monkeypatch.delenv("LMISA_PROFILE", raising=False)
    name = "04_train_3d"
    head = _head_notebook(name, tmp_path)
    run_notebook(head, tmp_path / "run", profile="quick", html_report=False)
    got = json.loads((tmp_path / "knobs.json").read_text())
    assert got == _listed({"profile": "quick", **notebook_settings(name, "quick")})
