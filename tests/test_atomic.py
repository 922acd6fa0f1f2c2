"""Atomic writes: a failed write leaves the old file and no temporary file behind."""
from __future__ import annotations

import pytest

from data_utils.atomic import atomic_path, atomic_write_text


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    target = tmp_path / "results.md"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.md"]


def test_success_replaces_the_file_with_a_readable_one(tmp_path):
    target = tmp_path / "sub" / "figure.png"
    with atomic_path(target, suffix=".png") as tmp:
        assert tmp.parent == target.parent and tmp.name.endswith(".png")
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png"
    assert target.stat().st_mode & 0o777 == 0o644
    atomic_write_text(target, "again")
    assert target.read_text() == "again"
    assert sorted(p.name for p in target.parent.iterdir()) == ["figure.png"]
