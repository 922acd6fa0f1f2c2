"""The tutorial runner and the sweep, on tiny notebooks written by the tests."""
from __future__ import annotations

import json

import nbformat
import pytest

from lmisa_lite.tutorial import find_notebooks, parse_grid, record_metrics, run_sweep, run_tutorial


def _write_notebook(path, body: str, *, params: str = "out_dir = 'x'\nscale = 1\n", title: str | None = None) -> None:
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_code_cell("import os\nfrom lmisa_lite.tutorial import record_metrics"), p,
                nbformat.v4.new_code_cell(body)]
    if title:
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {title}\n\nWhat this notebook does."))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_parse_grid_reads_json_values_and_rejects_bad_items():
    assert parse_grid(["a=1,2", "b=x,true"]) == {"a": [1, 2], "b": ["x", True]}
    with pytest.raises(ValueError, match="key=v1"):
        parse_grid(["novalues"])


def test_record_metrics_writes_json(tmp_path):
    import numpy as np

    path = record_metrics("01_x", {"dice": np.float32(0.5), "n": np.int64(3)}, out_dir=tmp_path)
    assert json.loads(path.read_text()) == {"dice": 0.5, "n": 3}


def test_find_notebooks_orders_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        find_notebooks(tmp_path)
    for name in ("02_b.ipynb", "01_a.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks(tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in find_notebooks(tmp_path, select=["02"])] == ["02_b.ipynb"]


@pytest.mark.slow
def test_run_tutorial_executes_in_order_and_reports(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_first.ipynb",
                    "record_metrics('01_first', {'profile': os.environ['LMISA_PROFILE'], 'v': 2 * scale}, out_dir=out_dir)")
    _write_notebook(nbs / "02_second.ipynb", "print('hello')")
    out = run_tutorial("quick", tmp_path / "run", notebooks_dir=nbs, parameters={"scale": 21})
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["01_first"] == {"profile": "quick", "v": 42}
    assert [r["status"] for r in metrics["_run"]["notebooks"]] == ["ok", "ok"]
    for name in ("01_first.ipynb", "01_first.html", "02_second.ipynb", "index.html"):
        assert (out / name).is_file(), name
    assert "02_second.html" in (out / "index.html").read_text()


_FIGURE_AND_RESULTS = """
from pathlib import Path
from lmisa_lite.plots import network_diagram
from tqdm.auto import tqdm
for _ in tqdm(range(3), disable=False):  # a bar the notebook asks for explicitly
    pass
folder = Path(out_dir) / "ablation" / "kidney_ct2mri_2d"
folder.mkdir(parents=True)
network_diagram().savefig(folder / "dice_by_variant.png", dpi=20)
(Path(out_dir) / "results.md").write_text("# Ablation: kidney\\n\\n| variant | Dice (%) |\\n| --- | ---: |\\n| lmisa | 61.2 |\\n")
record_metrics('01_pictures', {'nested': {'a': 0.123456789, 'b': [1, 2]}}, out_dir=out_dir)
network_diagram()
"""


@pytest.mark.slow
def test_index_is_a_landing_page_and_executed_copies_hold_no_progress_bar(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_pictures.ipynb", _FIGURE_AND_RESULTS, title="01 · Pictures and a table")
    out = run_tutorial("quick", tmp_path / "run", notebooks_dir=nbs)
    index = (out / "index.html").read_text()
    assert "lmisa-lite re-implements LMISA" in index, "it opens with what the tutorial is"
    assert "01 · Pictures and a table" in index, "each notebook by the title of its first heading"
    assert index.count("<img") == 2, "the notebook's first picture and the ablation chart"
    assert "<th>lmisa</th>" in index or "<td>lmisa</td>" in index, "results.md as an HTML table"
    assert "Ablation" in index and "<pre>" not in index
    assert "nested.a" in index and "0.1235" in index, "metrics flattened into rows, numbers rounded"
    assert "torch" in index and "commit" in index, "the environment"
    executed = nbformat.read(out / "01_pictures.ipynb", as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not any("widget-view" in str(o.get("data", {})) or "it/s" in str(o.get("text", "")) for o in outputs), \
        "no progress bar is saved in an executed copy"
    assert any("image/png" in o.get("data", {}) for o in outputs), "a library figure shows as a picture"


@pytest.mark.slow
def test_failing_notebook_stops_the_run_and_saves_the_traceback(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write_notebook(nbs / "01_bad.ipynb", "raise ValueError('broken on purpose')")
    _write_notebook(nbs / "02_never.ipynb", "print('unreachable')")
    with pytest.raises(RuntimeError, match="01_bad.ipynb failed") as info:
        run_tutorial("quick", tmp_path / "run", notebooks_dir=nbs)
    assert "broken on purpose" in str(info.value)
    assert "broken on purpose" in (tmp_path / "run" / "01_bad.error.txt").read_text()
    assert not (tmp_path / "run" / "02_never.ipynb").exists()
    assert "failed" in (tmp_path / "run" / "index.html").read_text()


@pytest.mark.slow
def test_sweep_collects_metrics_into_csv(tmp_path):
    import pandas as pd

    nb = tmp_path / "01_s.ipynb"
    _write_notebook(nb, "record_metrics('01_s', {'v': scale * 10}, out_dir=out_dir)")
    csv = run_sweep(nb, {"scale": [1, 2]}, out=tmp_path / "sweep")
    table = pd.read_csv(csv)
    assert table["scale"].tolist() == [1, 2]
    assert table["01_s.v"].tolist() == [10, 20]


def test_unknown_profile_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="profile"):
        run_tutorial("fast", tmp_path)
