"""End to end in a real browser: each notebook runs in JupyterLab in headless Chromium and its widget is used.

For every (notebook, widget) pair in :data:`CASES` the test opens a copy of the notebook in a private
JupyterLab server (quick profile), runs all cells from the Run menu, waits for the kernel, finds the widget by
its CSS class, works its controls (found by their own ``lmisa-...`` CSS classes, not by their descriptions)
with the keyboard and mouse, and checks from the DOM and from screenshots that the picture follows. It also
checks that the widget fits a 1280x800 window without horizontal scrolling.

Screenshots go to the test's temporary folder and, when writable, to ``runs/browser-screenshots/<case>/``.
Needs Chromium (``.ci/install-browser`` installs Debian's); without it the tests are skipped with the reason.
Run alone with ``make test-browser``.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import browser_support as bs
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
SCREENSHOT_ROOT = REPO / "runs" / "browser-screenshots"
RUN_ALL_TIMEOUT = 180.0  # seconds per notebook under the quick profile
FILE_BUDGET = 360.0  # seconds for the whole file, server start included
TEST_TIMEOUT = 300  # hard stop per test (pytest-timeout), fixtures included
WIDGET_TIMEOUT = 30.0  # seconds for a widget view to appear or redraw

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(TEST_TIMEOUT)]


# -------------------------------------------------------------------------------------------- screenshots
@dataclass
class Evidence:
    """Screenshots and measurements of one case, kept in ``folder``."""

    folder: Path
    notes: dict[str, Any] = field(default_factory=dict)
    count: int = 0

    def shot(self, target: Any, name: str) -> np.ndarray:
        """Screenshot a page or element into ``NN-name.png``; returns its pixels ``(H, W, 3)`` uint8."""
        from PIL import Image

        self.count += 1
        path = self.folder / f"{self.count:02d}-{name}.png"
        png = target.screenshot(path=str(path))
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def write_notes(self) -> None:
        text = json.dumps(self.notes, indent=1, default=str)
        (self.folder / "notes.json").write_text(text, encoding="utf-8")


def publish(evidence: Evidence, name: str) -> Path | None:
    """Copy the case's screenshots to ``runs/browser-screenshots/<name>/`` when that folder is writable."""
    target = SCREENSHOT_ROOT / name
    try:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(evidence.folder, target)
    except OSError:
        return None
    return target


# ----------------------------------------------------------------------------------------- widget actions
def changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ between two screenshots (1.0 when their sizes differ)."""
    if a.shape != b.shape:
        return 1.0
    return float(np.any(a != b, axis=-1).mean())


def coloured_fraction(pixels: np.ndarray, *, chroma: int = 40) -> float:
    """Fraction of pixels with visible colour (max - min channel > ``chroma``): overlays on grey images."""
    rgb = pixels.astype(np.int16)
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > chroma).mean())


def image_of(widget: Any) -> Any:
    """The widget's rendered picture (the ``ipywidgets.Image`` holding the matplotlib PNG)."""
    return widget.locator("img.widget-image").first


def wait_image_changed(page: Any, image: Any, old_src: str, *, what: str) -> str:
    """Wait until the picture's ``src`` differs from ``old_src``, then until it settles; returns the last."""
    try:
        page.wait_for_function("([el, old]) => el.src !== old && el.complete && el.naturalWidth > 0",
                               arg=[image.element_handle(), old_src], timeout=WIDGET_TIMEOUT * 1000)
    except Exception as err:  # Playwright's TimeoutError
        raise AssertionError(f"the picture did not change in {WIDGET_TIMEOUT:.0f} s after {what}") from err
    return settle(page, image)


def settle(page: Any, image: Any, *, quiet: float = 1.0, timeout: float = WIDGET_TIMEOUT) -> str:
    """Wait until the picture has stopped changing for ``quiet`` seconds and the kernel is idle.

    A slider moved by several key presses sends several values; the kernel redraws for each, so the first
    new picture is not necessarily the last one.

    Returns:
        The picture's final ``src``.
    """
    deadline = time.monotonic() + timeout
    src, since = image.get_attribute("src") or "", time.monotonic()
    while time.monotonic() < deadline:
        page.wait_for_timeout(200)
        now = image.get_attribute("src") or ""
        if now != src:
            src, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet and bs.kernel_status(page) == "idle":
            return src
    raise AssertionError(f"the picture kept changing (or the kernel stayed busy) for {timeout:.0f} s")


def control(widget: Any, css_class: str) -> Any:
    """The one element inside ``widget`` with CSS class ``css_class`` (a control of the widget)."""
    found = widget.locator(f".{css_class}")
    count = found.count()
    assert count == 1, f"expected one element with CSS class {css_class!r} in the widget; found {count}"
    return found


def move_slider(page: Any, slider: Any, *, key: str = "ArrowRight", presses: int = 3) -> tuple[str, str]:
    """Focus the slider's handle and press ``key`` ``presses`` times, as a keyboard user would.

    Falls back to dragging the handle with the mouse when the keys do not move it.

    Returns:
        The handle's ``aria-valuenow`` before and after.
    """
    handle = slider.locator(".noUi-handle").first
    handle.scroll_into_view_if_needed()
    before = handle.get_attribute("aria-valuenow") or ""
    handle.focus()
    for _ in range(presses):
        page.keyboard.press(key)
        page.wait_for_timeout(100)
    after = handle.get_attribute("aria-valuenow") or ""
    if after == before:
        box = handle.bounding_box()
        track = slider.locator(".noUi-base").bounding_box()
        assert box is not None and track is not None, "the slider is not visible"
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + track["width"] / 5, y, steps=5)
        page.mouse.up()
        after = handle.get_attribute("aria-valuenow") or ""
    assert after != before, f"neither the keyboard nor the mouse moved the slider (value {before})"
    return before, after


def toggle(page: Any, widget: Any, checkbox: Any, evidence: Evidence, name: str) -> dict[str, Any]:
    """Click a checkbox twice; the picture must change each time and come back to what it was.

    Returns:
        Coloured-pixel fractions with the checkbox on and off, and the pixels changed by the click.
    """
    box = checkbox.locator("input[type=checkbox]")
    assert box.is_enabled(), f"the {name!r} checkbox is disabled"
    image = image_of(widget)
    image.scroll_into_view_if_needed()
    first_state = box.is_checked()
    first = evidence.shot(image, f"{name}-{'on' if first_state else 'off'}")
    src = image.get_attribute("src") or ""
    box.click()
    src = wait_image_changed(page, image, src, what=f"clicking the {name!r} checkbox")
    assert box.is_checked() != first_state
    second = evidence.shot(image, f"{name}-{'off' if first_state else 'on'}")
    box.click()
    wait_image_changed(page, image, src, what=f"clicking the {name!r} checkbox again")
    back = evidence.shot(image, f"{name}-{'on' if first_state else 'off'}-again")
    on, off = (first, second) if first_state else (second, first)
    result = {"coloured_on": coloured_fraction(on), "coloured_off": coloured_fraction(off),
              "changed": changed_fraction(first, second), "restored_changed": changed_fraction(first, back)}
    assert result["changed"] > 0.001, f"toggling {name!r} left the picture unchanged"
    assert result["coloured_on"] > result["coloured_off"] + 0.0005, (
        f"no {name} overlay colour appears when {name!r} is switched on (does the slice shown hold any "
        f"{name}?): {result}")
    assert result["restored_changed"] < 0.01, f"toggling {name!r} twice did not restore the picture: {result}"
    return result


# -------------------------------------------------------------------------------------- per-widget checks
def check_slice_viewer(page: Any, widget: Any, evidence: Evidence) -> None:
    """Slice slider moves the slice; the label overlay appears and disappears with its checkbox."""
    image = image_of(widget)
    slider = control(widget, "lmisa-slice-slider")
    image.scroll_into_view_if_needed()
    before_pixels = evidence.shot(image, "slice-before")
    src = image.get_attribute("src") or ""
    values = move_slider(page, slider)
    wait_image_changed(page, image, src, what=f"moving the slice slider {values[0]} -> {values[1]}")
    after_pixels = evidence.shot(image, "slice-after")
    evidence.notes["slice_slider"] = values
    evidence.notes["slice_changed"] = changed_fraction(before_pixels, after_pixels)
    assert evidence.notes["slice_changed"] > 0.001, "the slice slider moved but the picture looks the same"
    evidence.notes["label_toggle"] = toggle(page, widget, control(widget, "lmisa-label-toggle"), evidence,
                                            "label")


def check_comparison_viewer(page: Any, widget: Any, evidence: Evidence) -> None:
    """A slice viewer with ground truth and predictions: slider, label and prediction overlays all work."""
    prediction = control(widget, "lmisa-prediction-toggle")
    assert prediction.locator("input").is_enabled(), (
        "the comparison viewer's 'prediction' checkbox is disabled (no predictions shown)")
    check_slice_viewer(page, widget, evidence)
    evidence.notes["prediction_toggle"] = toggle(page, widget, prediction, evidence, "prediction")


def check_mlngm_explorer(page: Any, widget: Any, evidence: Evidence) -> None:
    """The levels slider and the 'level shown' buttons redraw the MLNGM figure."""
    image = image_of(widget)
    image.scroll_into_view_if_needed()
    first = evidence.shot(image, "mlngm-before")
    src = image.get_attribute("src") or ""
    levels = control(widget, "lmisa-mlngm-levels")
    values = move_slider(page, levels, key="ArrowLeft", presses=1)
    src = wait_image_changed(page, image, src, what=f"moving the levels slider {values[0]} -> {values[1]}")
    second = evidence.shot(image, "mlngm-levels-moved")
    evidence.notes["levels_slider"] = values
    evidence.notes["levels_changed"] = changed_fraction(first, second)
    assert evidence.notes["levels_changed"] > 0.001, "the levels slider moved but the figure looks the same"
    buttons = control(widget, "lmisa-mlngm-level").locator("button")
    assert buttons.count() >= 2, "no 'level shown' buttons in the MLNGM explorer"
    target = buttons.nth(1)
    target.click()
    wait_image_changed(page, image, src, what="choosing another level")
    assert "mod-active" in (target.get_attribute("class") or "")
    third = evidence.shot(image, "mlngm-level-1")
    evidence.notes["level_changed"] = changed_fraction(second, third)
    assert evidence.notes["level_changed"] > 0.001, "choosing another level left the figure unchanged"


def first(widgets: Any) -> Any:
    """The first widget of the class in the notebook."""
    return widgets.first


def showing_predictions(widgets: Any) -> Any:
    """The first viewer with an enabled prediction checkbox (CSS class ``lmisa-prediction-toggle``)."""
    enabled = widgets.page.locator(".lmisa-prediction-toggle input:enabled")
    return widgets.filter(has=enabled).first


@dataclass(frozen=True)
class Case:
    """One notebook and the widget in it to use: found by CSS class (and ``pick``), worked by ``check``."""

    notebook: str
    widget_class: str
    check: Callable[[Any, Any, Evidence], None]
    pick: Callable[[Any], Any] = first

    @property
    def id(self) -> str:
        return f"{Path(self.notebook).stem}-{self.widget_class}"


# A new notebook/widget pair is one more line here.
CASES = [
    Case("01_mlngm_across_scales.ipynb", "lmisa-mlngm-explorer", check_mlngm_explorer),
    Case("02_data_and_domain_shift.ipynb", "lmisa-slice-viewer", check_slice_viewer),
    Case("05_domain_adaptation_analysis.ipynb", "lmisa-compare-viewer", check_comparison_viewer,
         pick=showing_predictions),
]


# ------------------------------------------------------------------------------------------------- layout
_LAYOUT_JS = """
(el) => {
  const box = el.getBoundingClientRect();
  const out = el.closest('.jp-OutputArea-output') || el.parentElement;
  const scroller = el.closest('.jp-WindowedPanel-outer') || document.scrollingElement;
  const img = el.querySelector('img.widget-image');
  const wide = [...el.querySelectorAll('*')].filter(e => e.getBoundingClientRect().right > box.right + 1)
    .map(e => e.className.toString().slice(0, 80));
  return {left: box.left, right: box.right, width: box.width, height: box.height,
          viewport: window.innerWidth, output_client: out.clientWidth, output_scroll: out.scrollWidth,
          notebook_client: scroller.clientWidth, notebook_scroll: scroller.scrollWidth,
          image_natural: img ? [img.naturalWidth, img.naturalHeight] : null,
          image_shown: img ? [img.clientWidth, img.clientHeight] : null,
          sticking_out: wide.slice(0, 5)};
}
"""


def check_layout(widget: Any, evidence: Evidence) -> None:
    """The widget fits the 1280-px window: no wider than it, and no horizontal scrolling around it."""
    layout = widget.evaluate(_LAYOUT_JS)
    evidence.notes["layout"] = layout
    problems = []
    if layout["width"] > bs.VIEWPORT["width"] or layout["right"] > layout["viewport"] + 1:
        problems.append(f"the widget is {layout['width']:.0f} px wide and ends at x={layout['right']:.0f}")
    if layout["output_scroll"] > layout["output_client"] + 1:
        problems.append(f"its output area scrolls sideways ({layout['output_scroll']} px of content in "
                        f"{layout['output_client']} px)")
    if layout["notebook_scroll"] > layout["notebook_client"] + 1:
        problems.append(f"the notebook scrolls sideways ({layout['notebook_scroll']} px in "
                        f"{layout['notebook_client']} px)")
    if layout["sticking_out"]:
        problems.append(f"elements stick out of the widget's box: {layout['sticking_out']}")
    assert not problems, "layout overflows a 1280x800 window: " + "; ".join(problems)


# ------------------------------------------------------------------------------------------------ the run
def find_widget(page: Any, case: Case) -> Any:
    """The widget of ``case`` once its view is on the page; fails with what shows instead."""
    widgets = page.locator(f".{case.widget_class}")
    deadline = time.monotonic() + WIDGET_TIMEOUT
    while widgets.count() == 0:
        texts = bs.widget_fallback_texts(page)
        if texts or time.monotonic() > deadline:
            hint = (f"widget outputs show as text, so the ipywidgets manager did not load: {texts[:2]}"
                    if texts else f"none appeared within {WIDGET_TIMEOUT:.0f} s")
            raise AssertionError(f"{case.notebook}: no element with CSS class {case.widget_class!r} after "
                                 f"running all cells ({hint})")
        page.wait_for_timeout(250)
    widget = case.pick(widgets)
    if widget.count() == 0:
        raise AssertionError(f"{case.notebook}: none of the {widgets.count()} elements with CSS class "
                             f"{case.widget_class!r} is the one {case.pick.__name__!r} looks for")
    widget.scroll_into_view_if_needed()
    image_of(widget).wait_for(state="visible", timeout=WIDGET_TIMEOUT * 1000)
    return widget


def exercise(browser: Any, server: bs.LabServer, case: Case, notebook: str, evidence: Evidence, *,
             run_timeout: float) -> None:
    """Open ``notebook`` (path under the server root), run it, and use its widget as ``case`` says."""
    page = browser.new_page(viewport=bs.VIEWPORT)
    console: dict[str, int] = {}  # browser error message -> count

    def note(message: str) -> None:
        console[message[:300]] = console.get(message[:300], 0) + 1

    page.on("console", lambda m: note(f"console: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: note(f"pageerror: {e}"))
    start = time.monotonic()
    try:
        bs.open_notebook(page, server, notebook)
        evidence.notes["open_s"] = round(time.monotonic() - start, 1)
        bs.run_all_cells(page)
        progress = bs.wait_run_finished(page, timeout=run_timeout)
        evidence.notes["run_all_s"] = round(progress["seconds"], 1)
        evidence.notes["code_cells"] = len(progress["prompts"])
        widget = find_widget(page, case)
        evidence.shot(page, "widget-in-notebook")
        case.check(page, widget, evidence)
        widget.scroll_into_view_if_needed()
        check_layout(widget, evidence)
        evidence.shot(page, "final")
    except BaseException:
        with contextlib.suppress(Exception):
            evidence.shot(page, "failure")
        raise
    finally:
        evidence.notes["total_s"] = round(time.monotonic() - start, 1)
        evidence.notes["browser_errors"] = console
        evidence.write_notes()
        with contextlib.suppress(Exception):
            page.close()
        server.shutdown_kernels()


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def deadline() -> float:
    """Monotonic time by which the whole file must be done."""
    return time.monotonic() + FILE_BUDGET


@pytest.fixture(scope="module")
def chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="the Python package playwright is not installed "
                        "(pip install 'lmisa-lite[browser]')")
    path = bs.find_chromium()
    if path is None:
        where = (f"${bs.CHROMIUM_ENV}={os.environ[bs.CHROMIUM_ENV]!r} is not executable"
                 if os.environ.get(bs.CHROMIUM_ENV) else
                 f"looked for {', '.join(bs.CHROMIUM_CANDIDATES)} and chromium on PATH")
        pytest.skip(f"Chromium not found ({where}); install it with .ci/install-browser")
    return path


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = bs.launch_chromium(playwright, chromium)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def lab(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[bs.LabServer]:
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    bs.copy_notebooks(NOTEBOOKS, root / "notebooks")
    with bs.running_lab(root, base / "state", extra_env={"LMISA_PROFILE": "quick"}) as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_notebook_widget_in_browser(case: Case, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not (NOTEBOOKS / case.notebook).is_file():
        pytest.fail(f"notebooks/{case.notebook} does not exist; the browser test needs it to show a "
                    f"widget with CSS class {case.widget_class!r}")
    deadline = request.getfixturevalue("deadline")
    server = request.getfixturevalue("lab")
    browser = request.getfixturevalue("browser")
    left = deadline - time.monotonic()
    if left < 30:
        pytest.fail(f"the browser tests ran out of their {FILE_BUDGET:.0f} s budget before {case.notebook}")
    evidence = Evidence(tmp_path / "screenshots")
    evidence.folder.mkdir()
    try:
        exercise(browser, server, case, f"notebooks/{case.notebook}", evidence,
                 run_timeout=min(RUN_ALL_TIMEOUT, left - 20))
    finally:
        published = publish(evidence, case.id)
        timings = {k: v for k, v in evidence.notes.items() if k.endswith("_s")}
        print(f"screenshots: {published or evidence.folder}; seconds: {timings}")
