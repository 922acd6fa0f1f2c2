"""The main job end to end: every notebook under the quick profile, as `lmisa-lite tutorial` runs them."""
from __future__ import annotations

import json

import pytest

from lmisa_lite.cli import main
from lmisa_lite.tutorial import find_notebooks


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
