"""The main job: execute the numbered notebooks with papermill and collect their results.

Each notebook has a ``parameters`` cell of plain literals and a ``profile`` parameter; the cell after it
applies the profile's values (:mod:`lmisa_lite.profiles`). :func:`run_tutorial` passes ``profile`` and
``out_dir`` (where notebooks write their artefacts) to every notebook, and writes, for each notebook, the
executed copy and an HTML rendering, then ``metrics.json`` (the numbers every notebook recorded with
:func:`record_metrics`) and an ``index.html`` that links them.
"""
from __future__ import annotations

import html
import itertools
import json
import os
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from data_utils.atomic import atomic_write_text
from lmisa_lite.profiles import PROFILE_ENV, PROFILE_NAMES, resolve_profile

PROFILES = PROFILE_NAMES  # the profile names, as this module has always called them
METRICS_DIR = "metrics"


def default_notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the source tree this package was installed from."""
    return Path(__file__).resolve().parents[1] / "notebooks"


def current_profile(default: str = "standard") -> str:
    """The profile named by ``LMISA_PROFILE`` (or ``default``), validated.

    Raises:
        ValueError: If the variable names an unknown profile.
    """
    return resolve_profile(os.environ.get(PROFILE_ENV) or default)


def record_metrics(notebook: str, metrics: dict[str, Any], *, out_dir: str | os.PathLike) -> Path:
    """Save a notebook's key numbers for the run's ``metrics.json``.

    Args:
        notebook: Short notebook name, e.g. ``"01_mlngm_across_scales"``.
        metrics: JSON-serialisable numbers (NumPy scalars are converted).
        out_dir: The notebook's ``out_dir`` parameter.

    Returns:
        The path of the JSON file written (``out_dir/metrics/<notebook>.json``).

    Examples:
        >>> import tempfile
        >>> p = record_metrics("00_demo", {"dice": 0.9}, out_dir=tempfile.mkdtemp())
        >>> p.name
        '00_demo.json'
    """
    path = Path(out_dir) / METRICS_DIR / f"{notebook}.json"
    atomic_write_text(path, json.dumps(metrics, indent=2, default=_json_default))
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in metrics.json")


def find_notebooks(notebooks_dir: str | os.PathLike | None = None, *, select: Iterable[str] | None = None) -> list[Path]:
    """The numbered notebooks (``NN_*.ipynb``) in order, optionally only those whose name starts with ``select``."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else default_notebooks_dir()
    if not folder.is_dir():
        raise FileNotFoundError(f"notebooks folder not found: {folder}")
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no numbered notebooks (NN_name.ipynb) found in {folder}")
    if select:
        wanted = list(select)
        chosen = [p for p in found if any(p.stem.startswith(w) or p.name == w for w in wanted)]
        if not chosen:
            raise FileNotFoundError(f"no notebook in {folder} matches {', '.join(map(repr, wanted))}; "
                                    f"expected one of: {', '.join(p.stem for p in found)}")
        found = chosen
    return found


def _render_html(executed: Path) -> Path:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(executed))
    target = executed.with_suffix(".html")
    atomic_write_text(target, body)
    return target


def _collect_metrics(out_dir: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for path in sorted((out_dir / METRICS_DIR).glob("*.json")):
        merged[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return merged


def _failure_text(err: BaseException) -> str:
    parts = [f"{type(err).__name__}: {err}"]
    cell = getattr(err, "exec_count", None)
    if cell is not None:
        parts.insert(0, f"Failed in cell [{cell}]")
    tb = getattr(err, "traceback", None)
    parts.append("\n".join(tb) if isinstance(tb, list) else traceback.format_exc())
    return "\n".join(parts)


def run_notebook(
    notebook: Path,
    out_dir: Path,
    *,
    profile: str,
    parameters: dict[str, Any] | None = None,
    html_report: bool = True,
) -> dict[str, Any]:
    """Execute one notebook into ``out_dir`` with papermill; returns a status record.

    Raises:
        RuntimeError: If a cell fails; the message names the cell and ends with the traceback, which is also
            saved next to the executed copy as ``<name>.error.txt``.
    """
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / notebook.name
    declared = pm.inspect_notebook(str(notebook))  # the notebook's parameters, by name
    params = {"out_dir": str(out_dir.resolve() / "artifacts"), **(parameters or {})}
    if "profile" in declared:
        params = {"profile": profile, **params}
    # The kernel's environment names the profile too, for code that reads it outside the parameters.
    env_before = os.environ.get(PROFILE_ENV)
    os.environ[PROFILE_ENV] = profile
    start = time.perf_counter()
    try:
        pm.execute_notebook(
            str(notebook),
            str(executed),
            parameters=params,
            cwd=str(notebook.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    except Exception as err:  # papermill raises PapermillExecutionError for failing cells
        text = _failure_text(err)
        atomic_write_text(executed.with_suffix(".error.txt"), text)
        if html_report and executed.exists():
            _render_html(executed)
        raise RuntimeError(f"{notebook.name} failed (executed copy: {executed}).\n{text}") from err
    finally:
        if env_before is None:
            os.environ.pop(PROFILE_ENV, None)
        else:
            os.environ[PROFILE_ENV] = env_before
    seconds = time.perf_counter() - start
    html_path = _render_html(executed) if html_report else None
    return {
        "notebook": notebook.name,
        "executed": executed.name,
        "html": html_path.name if html_path else None,
        "seconds": round(seconds, 1),
        "status": "ok",
    }


def _index_html(records: list[dict[str, Any]], metrics: dict[str, Any], *, profile: str, results_md: str | None) -> str:
    rows = []
    for rec in records:
        links = [f'<a href="{html.escape(rec["executed"])}">notebook</a>']
        if rec.get("html"):
            links.append(f'<a href="{html.escape(rec["html"])}">HTML</a>')
        if rec.get("error"):
            links.append(f'<a href="{html.escape(rec["error"])}">error</a>')
        rows.append(
            f"<tr><td>{html.escape(rec['notebook'])}</td><td>{rec['status']}</td>"
            f"<td>{rec.get('seconds', '')}</td><td>{' · '.join(links)}</td></tr>"
        )
    results = f"<h2>Results</h2><pre>{html.escape(results_md)}</pre>" if results_md else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmisa-lite tutorial ({html.escape(profile)})</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px}}pre{{background:#f6f6f6;padding:1em;overflow:auto}}</style></head>
<body><h1>lmisa-lite tutorial run</h1><p>Profile: <b>{html.escape(profile)}</b></p>
<table><tr><th>notebook</th><th>status</th><th>seconds</th><th>files</th></tr>
{''.join(rows)}</table>{results}
<h2>Metrics</h2><pre>{html.escape(json.dumps(metrics, indent=2))}</pre></body></html>
"""


def run_tutorial(
    profile: str = "standard",
    out: str | os.PathLike | None = None,
    *,
    notebooks_dir: str | os.PathLike | None = None,
    select: Iterable[str] | None = None,
    parameters: dict[str, Any] | None = None,
    html_report: bool = True,
) -> Path:
    """Execute the numbered notebooks in order and write the run's report.

    Args:
        profile: ``"quick"`` (minutes, used in tests), ``"standard"`` (``make tutorial``) or ``"paper"``.
        out: Output folder; default ``runs/<profile>``.
        notebooks_dir: Where the notebooks are; default the source tree's ``notebooks/``.
        select: Only notebooks whose names start with one of these (e.g. ``["01", "02"]``).
        parameters: Extra papermill parameters passed to every notebook.
        html_report: Also render each executed notebook to HTML.

    Returns:
        The output folder, holding the executed notebooks, their HTML, ``metrics.json`` and ``index.html``.

    Raises:
        ValueError: If ``profile`` is unknown.
        RuntimeError: If a notebook fails; the report written so far marks it failed.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r}: expected one of {', '.join(PROFILES)}")
    out_dir = Path(out) if out is not None else Path("runs") / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(notebooks_dir, select=select)
    records: list[dict[str, Any]] = []
    failure: RuntimeError | None = None
    for nb in notebooks:
        print(f"[lmisa-lite] running {nb.name} (profile {profile}) ...", flush=True)
        try:
            rec = run_notebook(nb, out_dir, profile=profile, parameters=parameters, html_report=html_report)
        except RuntimeError as err:
            failure = err
            records.append({"notebook": nb.name, "executed": nb.name, "status": "failed",
                            "error": nb.with_suffix(".error.txt").name,
                            "html": nb.with_suffix(".html").name if html_report else None})
            break
        print(f"[lmisa-lite]   done in {rec['seconds']} s", flush=True)
        records.append(rec)
    metrics = _collect_metrics(out_dir / "artifacts")
    metrics["_run"] = {"profile": profile, "notebooks": records}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    results_md_path = out_dir / "artifacts" / "results.md"
    results_md = results_md_path.read_text(encoding="utf-8") if results_md_path.exists() else None
    atomic_write_text(out_dir / "index.html", _index_html(records, metrics, profile=profile, results_md=results_md))
    if failure is not None:
        raise failure
    return out_dir


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """Parse ``key=v1,v2`` strings into a grid; values are read as JSON where possible.

    Examples:
        >>> parse_grid(["seed=0,1", "use_mlngm=true,false"])
        {'seed': [0, 1], 'use_mlngm': [True, False]}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"--grid {item!r}: expected key=v1,v2,...")
        grid[key.strip()] = [_parse_value(v.strip()) for v in values.split(",")]
    return grid


def run_sweep(
    notebook: str | os.PathLike,
    grid: dict[str, list[Any]],
    *,
    out: str | os.PathLike = "runs/sweep",
    profile: str = "quick",
) -> Path:
    """Run one notebook over a parameter grid and collect each run's metrics into ``sweep.csv``.

    Args:
        notebook: Path of the notebook (or a name prefix such as ``"03"`` found in the notebooks folder).
        grid: Parameter name -> list of values; every combination is run.
        out: Output folder; each run goes to ``out/run_NNN``.
        profile: The profile whose defaults the parameters not in the grid take.

    Returns:
        Path of ``sweep.csv`` (one row per run: the parameters, then the flattened metrics).

    Raises:
        FileNotFoundError: If the notebook is not found (the message lists the numbered notebooks).
        ValueError: Before any run, for an empty grid, a prefix matching several notebooks, or a grid key the
            notebook's ``parameters`` cell does not define (the message lists those it does).
        RuntimeError: If a run fails (see :func:`run_notebook`).
    """
    import pandas as pd
    import papermill as pm

    nb = Path(notebook)
    if not nb.is_file():
        if len(nb.parts) > 1:
            raise FileNotFoundError(f"notebook {notebook}: file not found")
        matches = find_notebooks(select=[str(notebook)])
        if len(matches) > 1:
            raise ValueError(f"notebook {str(notebook)!r} matches {len(matches)} notebooks "
                             f"({', '.join(p.stem for p in matches)}); expected a prefix that picks one")
        nb = matches[0]
    if not grid:
        raise ValueError("grid: give at least one key=v1,v2 pair")
    try:  # papermill only warns about a parameter the notebook lacks: check them all before any run
        known = pm.inspect_notebook(str(nb))
    except Exception as err:
        raise ValueError(f"notebook {nb}: cannot read its parameters ({err})") from err
    unknown = [k for k in grid if k not in known]
    if unknown:
        have = f"its parameters are {', '.join(known)}" if known else "it has no cell tagged 'parameters'"
        raise ValueError(f"grid {', '.join(map(repr, unknown))}: not a parameter of notebook {nb.name}; {have}")
    out_dir = Path(out)
    keys = list(grid)
    rows = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        params = dict(zip(keys, combo))
        run_dir = out_dir / f"run_{i:03d}"
        print(f"[lmisa-lite] sweep run {i}: {params}", flush=True)
        run_notebook(nb, run_dir, profile=profile, parameters=params, html_report=False)
        flat = pd.json_normalize(_collect_metrics(run_dir / "artifacts"), sep=".")
        row = {**params, "run": run_dir.name, **(flat.iloc[0].to_dict() if len(flat.columns) else {})}
        rows.append(row)
    table = pd.DataFrame(rows)
    target = out_dir / "sweep.csv"
    atomic_write_text(target, table.to_csv(index=False))
    return target
