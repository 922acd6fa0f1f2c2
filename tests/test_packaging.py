"""The install files agree with each other: pyproject, constraints, environment.yml, Makefile, CI, README."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = _pyproject()["project"]
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python"))
    version = python.split("=")[-1]
    lower = re.search(r">=\s*([0-9.]+)", project["requires-python"]).group(1)
    assert tuple(map(int, version.split("."))) >= tuple(map(int, lower.split(".")))
    pip_lines = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    install = next(line for line in pip_lines if line.startswith("-e ."))
    extras = set(re.search(r"\[(.*)\]", install).group(1).split(","))
    assert extras == set(project["optional-dependencies"]), "environment.yml installs every extra of pyproject"
    assert "-c constraints.txt" in pip_lines, "environment.yml applies the same pins as the Makefile"
    # pyproject is the single source: environment.yml lists no package of its own besides python and pip.
    assert all(d in ("pip",) or str(d).startswith("python") for d in deps if not isinstance(d, dict))


def test_torch_is_pinned_for_every_install():
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", pins, re.M)
    deps = _pyproject()["project"]["dependencies"]
    assert any(d.startswith("torch") for d in deps)
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile


def test_readme_commands_are_the_make_targets_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make tutorial" in readme and "make test" in readme
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^tutorial:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_console_script_and_packages_declared():
    data = _pyproject()
    assert data["project"]["scripts"]["lmisa-lite"] == "lmisa_lite.cli:main"
    assert set(data["tool"]["setuptools"]["packages"]) == {"lmisa_lite", "data_utils"}
    import data_utils
    import lmisa_lite

    assert lmisa_lite.__version__ == data["project"]["version"]
    assert data_utils.__doc__


def test_notebooks_committed_without_outputs_and_with_one_parameters_cell():
    import json

    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "the tutorial has notebooks"
    for nb_path in notebooks:
        nb = json.loads(nb_path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), nb_path.name
        tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: exactly one cell tagged 'parameters'"
        assert "out_dir" in "".join(tagged[0]["source"]), f"{nb_path.name}: parameters define out_dir"


def test_papermill_reads_every_parameter():
    """``papermill --help-notebook`` lists each parameter; a line it cannot parse (two ``=``) is left out."""
    import ast

    import nbformat
    from papermill.translators import PythonTranslator

    for nb_path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assigned = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign)
                    for t in node.targets if isinstance(t, ast.Name)]
        found = PythonTranslator.inspect(cell)
        assert [p.name for p in found] == assigned, nb_path.name
