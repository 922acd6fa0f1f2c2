"""The main job end to end: every notebook under the quick profile, as `lmisa-lite tutorial` runs them.

Besides running, the executed copies must teach: pictures rather than ``<Figure size ...>`` text, a picture
early on, exercises at the end, no progress bar frozen at its first state; and the index is a landing page.
"""
from __future__ import annotations

import json
import re

import nbformat
import pytest

from lmisa_lite.cli import main
from lmisa_lite.tutorial import find_notebooks

PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm's text: "train:   0%|          | 0/8"


def _code_cells(nb) -> list:
    """The notebook's own code cells (papermill's injected-parameters cell left out)."""
    return [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]


def _teaching_problems(name: str, nb) -> list[str]:
    """What an executed copy lacks of the acceptance points; empty when it has them all."""
    problems = []
    cells = _code_cells(nb)
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/plain", "") + out.get("text", "")
            if "Figure size" in text and "image/png" not in data:
                problems.append(f"{name}: code cell {i + 1} ({cell.get('id')}) prints a figure's repr, not a picture")
            if PROGRESS_BAR.search(text):
                problems.append(f"{name}: code cell {i + 1} ({cell.get('id')}) holds a progress bar: {text[:40]!r}")
    if not any("image/png" in out.get("data", {}) for cell in cells[:4] for out in cell.get("outputs", [])):
        problems.append(f"{name}: no picture in its first four code cells")
    headings = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("#")]
    if not any("Try" in h or "Exercise" in h for h in headings):
        problems.append(f"{name}: no 'Try it yourself' (or 'Exercise') heading")
    return problems


def _latent_problems(metrics: dict) -> list[str]:
    latent = metrics.get("05_domain_adaptation_analysis", {}).get("latent")
    if not isinstance(latent, dict) or len(latent) < 2 or not all(isinstance(b, dict) for b in latent.values()):
        return [f"05: metrics 'latent' is not one block per variant: {latent!r}"[:200]]
    shared = set.intersection(*(set(b) for b in latent.values()))
    numeric = [k for k in shared if all(isinstance(b[k], (int, float)) for b in latent.values())]
    spreads = {k: max(b[k] for b in latent.values()) - min(b[k] for b in latent.values()) for k in numeric}
    if not any(spread > 1e-6 for spread in spreads.values()):
        return [f"05: the latent measures are the same for every variant: {latent}"]
    return []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_tutorial_end_to_end(tmp_path):
    out = tmp_path / "quick"
    assert main(["tutorial", "--profile", "quick", "--out", str(out)]) == 0
    notebooks = find_notebooks()
    assert [nb.name[:2] for nb in notebooks] == ["01", "02", "03", "04", "05", "06"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["status"] for r in metrics["_run"]["notebooks"]] == ["ok"] * len(notebooks)
    for nb in notebooks:
        assert (out / nb.name).is_file() and (out / nb.with_suffix(".html").name).is_file()
        assert nb.stem in metrics, f"{nb.name} recorded its numbers"
    index = (out / "index.html").read_text()
    assert all(nb.with_suffix(".html").name in index for nb in notebooks)
    assert "Ablation" in index, "the results table is on the index page"
    ablation = metrics["06_ablation_and_unseen_domain"]["mean_dice"]
    assert set(ablation) == {"kidney_ct2mri", "heart_mri2ct"}
    assert 0 <= metrics["03_build_and_train_2d"]["target_dice"] <= 1

    problems = [p for nb in notebooks for p in _teaching_problems(nb.name, nbformat.read(out / nb.name, 4))]
    problems += [f"index.html has no {tag}" for tag in ("<img", "<table") if tag not in index]
    problems += _latent_problems(metrics)
    assert not problems, "the executed tutorial misses acceptance points:\n" + "\n".join(problems)
