"""The main job: execute the numbered notebooks with papermill and collect their results.

Each notebook has a ``parameters`` cell of plain literals and a ``profile`` parameter; the cell after it
applies the profile's values (:mod:`lmisa_lite.profiles`). :func:`run_tutorial` passes ``profile`` and
``out_dir`` (where notebooks write their artefacts) to every notebook, and writes, for each notebook, the
executed copy and an HTML rendering, then ``metrics.json`` (the numbers every notebook recorded with
:func:`record_metrics`) and ``index.html``, the run's landing page: what the tutorial is, each notebook's
title, time and status with links, the key figures, the results tables, the environment and the recorded
numbers.
"""
from __future__ import annotations

import base64
import contextlib
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
#: Set for the kernels the runner starts. An executed copy cannot keep a live progress bar (the saved widget
#: shows its first state, "0%"), so tqdm (4.66 or later reads these) draws none there: TQDM_DISABLE turns off
#: the bars that leave ``disable`` to tqdm, and the delay those that set it, since tqdm draws no bar before its
#: delay has passed. Opened in JupyterLab, the notebooks keep their live bars.
KERNEL_ENVIRONMENT = {"TQDM_DISABLE": "1", "TQDM_DELAY": "1e9"}


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


@contextlib.contextmanager
def _temporary_environ(values: dict[str, str]):
    """Set environment variables for the duration of a ``with`` block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
    start = time.perf_counter()
    # The kernel inherits this process's environment: it names the profile too (for code that reads it outside
    # the parameters) and turns progress bars off (KERNEL_ENVIRONMENT).
    with _temporary_environ({PROFILE_ENV: profile, **KERNEL_ENVIRONMENT}):
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
    seconds = time.perf_counter() - start
    html_path = _render_html(executed) if html_report else None
    return {
        "notebook": notebook.name,
        "executed": executed.name,
        "html": html_path.name if html_path else None,
        "seconds": round(seconds, 1),
        "status": "ok",
    }


#: The landing page's opening paragraph (HTML).
INTRODUCTION = (
    "lmisa-lite re-implements LMISA (Jafari, Francis, Garibaldi and Chen, <i>Medical Image Analysis</i> 81, 2022, "
    '<a href="https://doi.org/10.1016/j.media.2022.102536">doi:10.1016/j.media.2022.102536</a>) in PyTorch and '
    "teaches it in a series of notebooks. LMISA segments images of a modality it has no labels for (say MRI) "
    "after training on labelled images of another (CT): the network sees multi-level normalised gradient "
    "magnitude (MLNGM) maps instead of raw intensities, reconstructs its input alongside the segmentation, and a "
    "shape critic pushes its predictions on the unlabelled modality towards plausible anatomy. The data are "
    "synthetic phantoms, each subject rendered as CT and as MRI, so every notebook runs on a laptop CPU. This "
    "page reports one run of all the notebooks by <code>lmisa-lite tutorial</code>."
)
_STYLE = """body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;line-height:1.45;
color:#222}h1{margin-bottom:.2em}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
td.num{text-align:right}.ok{color:#1a7f37;font-weight:bold}.failed{color:#c62828;font-weight:bold}
.figures{display:grid;grid-template-columns:repeat(auto-fill,minmax(26em,1fr));gap:1.2em}
figure{margin:0;border:1px solid #ddd;padding:.5em}figure img{max-width:100%}
figcaption{font-size:.9em;margin-top:.3em}.muted{color:#666;font-size:.9em}pre{background:#f6f6f6;padding:1em}"""


def _notebook_title(path: Path) -> str:
    """The text of a notebook's first markdown heading (``# 01 · ...``), or its file name without suffix."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return path.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            for line in "".join(cell.get("source", "")).splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip()
    return path.stem


def _pictures(executed: Path) -> list[str]:
    """The PNG outputs (base64, as stored) of the cells tagged ``key-figure``, else the first PNG output."""
    try:
        cells = json.loads(executed.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return []
    found = [("key-figure" in cell.get("metadata", {}).get("tags", []), "".join(png).replace("\n", ""))
             for cell in cells for output in cell.get("outputs", [])
             if (png := output.get("data", {}).get("image/png"))]
    return [png for tagged, png in found if tagged] or [png for _, png in found[:1]]


def _figure_html(png_base64: str, caption: str, link: str | None = None) -> str:
    image = f'<img src="data:image/png;base64,{png_base64}" alt="{html.escape(caption)}">'
    if link:
        image = f'<a href="{html.escape(link)}">{image}</a>'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _key_figures(records: list[dict[str, Any]], out_dir: Path) -> str:
    """Per notebook, the PNGs it saved as ``artifacts/figures/<notebook>*.png``, else the pictures of its cells
    tagged ``key-figure``, else its first picture; then the other PNGs of ``artifacts/figures/`` and the ablation
    charts (``dice_by_variant.png``)."""
    artifacts = out_dir / "artifacts"
    saved = sorted((artifacts / "figures").glob("*.png"))
    used: set[Path] = set()
    cards = []
    for rec in records:
        stem = Path(rec["notebook"]).stem
        link = rec.get("html") or rec["executed"]
        caption = f'<a href="{html.escape(link)}">{html.escape(rec.get("title", stem))}</a>'
        own = [path for path in saved if path.name.startswith(stem)]
        used.update(own)
        pictures = [base64.b64encode(path.read_bytes()).decode() for path in own]
        pictures = pictures or _pictures(out_dir / rec["executed"])
        cards += [_figure_html(png, caption, link) for png in pictures]
    extra = [path for path in saved if path not in used]
    charts = sorted(artifacts.rglob("dice_by_variant.png"))
    for path in extra + charts:
        name = path.parent.name.replace("_", " ") if path in charts else path.stem.replace("_", " ")
        caption = f"Ablation: mean Dice (%) per variant, {html.escape(name)}" if path in charts else html.escape(name)
        cards.append(_figure_html(base64.b64encode(path.read_bytes()).decode(), caption,
                                  path.relative_to(out_dir).as_posix()))
    return f'<h2>Key figures</h2><div class="figures">{"".join(cards)}</div>' if cards else ""


def _results_html(out_dir: Path) -> str:
    """``artifacts/results.md`` (notebook 06's ablation tables; else any ``results.md`` below) as HTML."""
    artifacts = out_dir / "artifacts"
    paths = [artifacts / "results.md"] if (artifacts / "results.md").is_file() else sorted(artifacts.rglob("results.md"))
    if not paths:
        return ""
    text = "\n\n".join(path.read_text(encoding="utf-8") for path in paths)
    text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())  # below h2
    try:
        import mistune  # nbconvert's markdown renderer
    except ImportError:
        body = f"<pre>{html.escape(text)}</pre>"
    else:
        body = mistune.create_markdown(escape=True, plugins=["table"])(text)
    return f"<h2>Results</h2>{body}"


def _metrics_html(metrics: dict[str, Any]) -> str:
    """metrics.json (without the run's own record) as rows of notebook, measure and value."""
    import pandas as pd

    numbers = {k: v for k, v in metrics.items() if not k.startswith("_")}
    if not numbers:
        return ""
    flat = pd.json_normalize(numbers, sep=".").iloc[0]
    rows, previous = [], None
    for key, value in flat.items():
        notebook, _, measure = key.partition(".")
        rows.append(("" if notebook == previous else notebook, measure,
                     f"{value:.4g}" if isinstance(value, float) else str(value)))
        previous = notebook
    table = pd.DataFrame(rows, columns=["notebook", "measure", "value"])
    note = ("<p class=\"muted\">The numbers each notebook recorded, as <code>metrics.json</code> holds them "
            "(outside checks read that file, so its units stay as recorded: Dice there is a fraction of 1, except "
            "in the ablation summaries, <code>mean_dice</code>, which are in percent like the tables above).</p>")
    return (f"<h2>Recorded numbers</h2>{note}<details><summary>{len(rows)} numbers from "
            f"{len(numbers)} notebooks</summary>{table.to_html(index=False)}</details>")


def _environment_html() -> str:
    from lmisa_lite.environment import environment

    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in environment().items())
    return f"<h2>Environment</h2><table>{rows}</table>"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def _index_html(records: list[dict[str, Any]], metrics: dict[str, Any], *, profile: str, out_dir: Path) -> str:
    """The run's landing page (see the module's docstring); figures are embedded, so the page stands alone."""
    rows = []
    for rec in records:
        links = [f'<a href="{html.escape(rec["executed"])}">notebook</a>']
        if rec.get("html"):
            links.append(f'<a href="{html.escape(rec["html"])}">HTML</a>')
        if rec.get("error"):
            links.append(f'<a href="{html.escape(rec["error"])}">error</a>')
        title = html.escape(rec.get("title") or rec["notebook"])
        if rec.get("html"):
            title = f'<a href="{html.escape(rec["html"])}">{title}</a>'
        seconds = _duration(rec["seconds"]) if rec.get("seconds") is not None else ""
        rows.append(f'<tr><td>{title}</td><td class="num">{seconds}</td>'
                    f'<td class="{rec["status"]}">{rec["status"]}</td><td>{" · ".join(links)}</td></tr>')
    total = sum(rec.get("seconds") or 0 for rec in records)
    finished = time.strftime("%Y-%m-%d %H:%M")
    summary = (f"Profile <b>{html.escape(profile)}</b> · {len(records)} notebook{'s' * (len(records) != 1)} · "
               f"{_duration(total)} in all · finished {finished}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lmisa-lite tutorial ({html.escape(profile)})</title>
<style>{_STYLE}</style></head>
<body><h1>lmisa-lite tutorial</h1><p class="muted">{summary}</p><p>{INTRODUCTION}</p>
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>time</th><th>status</th><th>files</th></tr>
{''.join(rows)}</table>
{_key_figures(records, out_dir)}
{_results_html(out_dir)}
{_environment_html()}
{_metrics_html(metrics)}
</body></html>
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
        title = _notebook_title(nb)
        try:
            rec = run_notebook(nb, out_dir, profile=profile, parameters=parameters, html_report=html_report)
        except RuntimeError as err:
            failure = err
            html_name = nb.with_suffix(".html").name
            records.append({"notebook": nb.name, "title": title, "executed": nb.name, "status": "failed",
                            "error": nb.with_suffix(".error.txt").name,
                            "html": html_name if html_report and (out_dir / html_name).exists() else None})
            break
        print(f"[lmisa-lite]   done in {rec['seconds']} s", flush=True)
        records.append({**rec, "title": title})
    metrics = _collect_metrics(out_dir / "artifacts")
    metrics["_run"] = {"profile": profile, "notebooks": records}
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(out_dir / "index.html", _index_html(records, metrics, profile=profile, out_dir=out_dir))
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
