"""Rows of a benchmark's result CSV: read them back, write them whole (temporary file, then rename)."""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from data_utils.atomic import atomic_path


def read_rows(path: Path) -> list[dict]:
    """The rows of ``path`` as dicts of strings; none when the file does not exist yet."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Write ``rows`` with the columns ``fields``; a reader never sees a half-written file."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
