"""Headless tests of the slice viewer and the MLNGM explorer (Agg backend, tiny arrays)."""
from __future__ import annotations

import ipywidgets as w
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties, findfont
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from PIL import ImageFont

from lmisa_lite.mlngm import mlngm
from lmisa_lite.montage import case_montage, montage_figure, montage_slices
from lmisa_lite.widgets import (
    CLASS_COLOURS,
    SliceViewer,
    mlngm_explorer,
    mlngm_pyramid,
    plot_overlay,
    show_montage,
)

matplotlib.use("Agg")  # headless, also when this file runs on its own

SHAPE = (12, 10, 8)
OUTPUT_PX = 840  # a notebook's output area in JupyterLab's default layout at 1280 px, file browser open
MIN_TEXT_PX = 10
# How the image widget must be laid out so that a box never stretches (upscales) the picture.
IMAGE_LAYOUT = {"max_width": "100%", "height": "auto", "align_self": "flex-start", "object_fit": "contain"}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE).astype(np.float32)


@pytest.fixture
def label() -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:8, 2:7, 2:6] = 1
    lab[8:11, 6:9, 1:7] = 2
    return lab


def _shown(viewer: SliceViewer, panel: int, layer: str = "image"):
    return viewer._artists[panel][layer]


def test_slider_moves_the_displayed_slice(volume):
    viewer = SliceViewer(volume)
    assert viewer.slider.max == SHAPE[2] - 1
    png = viewer.image_widget.value
    viewer.slider.value = 5
    np.testing.assert_array_equal(viewer.current_slices()[0], volume[:, :, 5].T)
    np.testing.assert_array_equal(_shown(viewer, 0).get_array(), volume[:, :, 5].T)
    assert viewer.image_widget.value != png
    viewer.set_slice(1)
    np.testing.assert_array_equal(_shown(viewer, 0).get_array(), volume[:, :, 1].T)
    with pytest.raises(ValueError, match="slice index"):
        viewer.set_slice(SHAPE[2])
    assert plt.get_fignums() == []  # the viewer's figure stays out of pyplot


def test_axis_change_updates_slider_and_slices(volume):
    viewer = SliceViewer(volume)
    viewer.axis_selector.value = 0
    assert viewer.slider.max == SHAPE[0] - 1
    viewer.slider.value = 3
    np.testing.assert_array_equal(viewer.current_slices()[0], volume[3].T)
    viewer.axis_selector.value = 1
    assert viewer.slider.max == SHAPE[1] - 1
    np.testing.assert_array_equal(_shown(viewer, 0).get_array(), volume[:, viewer.slider.value, :].T)
    assert _shown(viewer, 0).get_extent() == [-0.5, SHAPE[0] - 0.5, -0.5, SHAPE[2] - 0.5]


def test_overlay_toggles_style_and_opacity(volume, label):
    viewer = SliceViewer(volume, label=label, prediction=np.roll(label, 1, axis=0), titles=["both"])
    viewer.set_slice(3)
    pred = _shown(viewer, 0, "prediction")
    np.testing.assert_array_equal(pred.get_array(), np.roll(label, 1, axis=0)[:, :, 3].T)
    # A panel with both layers outlines the label and fills the prediction.
    assert pred.get_visible() and not _shown(viewer, 0, "label").get_visible()
    assert len(viewer.axes[0].collections) == 2  # one outline per class in the slice
    viewer.overlay_toggle.value = False
    assert len(viewer.axes[0].collections) == 0
    viewer.opacity_slider.value = 0.8
    assert pred.get_alpha() == pytest.approx(0.8)
    viewer.prediction_toggle.value = False
    assert not pred.get_visible()
    viewer.prediction_toggle.value = True
    viewer.style_selector.value = "contour"
    assert not pred.get_visible() and len(viewer.axes[0].collections) == 2


def test_label_only_panel_fills_and_toggles(volume, label):
    viewer = SliceViewer(volume, label=label, class_names=["background", "kidney", "tumour"])
    lab = _shown(viewer, 0, "label")
    assert lab.get_visible() and lab.get_alpha() == pytest.approx(0.4)
    viewer.overlay_toggle.value = False
    assert not lab.get_visible()
    assert "kidney" in viewer.legend.value and "tumour" in viewer.legend.value
    assert viewer.prediction_toggle.disabled


def test_panels_move_in_lock_step(volume):
    images = [volume, 2 * volume, volume[::-1].copy()]
    viewer = SliceViewer(images)
    viewer.slider.value = 6
    for shown, image in zip(viewer.current_slices(), images):
        np.testing.assert_array_equal(shown, image[:, :, 6].T)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(_shown(viewer, i).get_array(), image[:, :, 6].T)
    assert viewer.titles == ["panel 1", "panel 2", "panel 3"]
    assert len(viewer.figure.axes) == 3


def test_dict_input_gives_titles_and_aligns_layers(volume, label):
    viewer = SliceViewer({"CT": volume, "MRI": 1 - volume}, prediction={"MRI": label})
    assert [ax.get_title() for ax in viewer.axes] == ["CT", "MRI"]
    preds = viewer.current_slices("prediction")
    assert preds[0] is None
    np.testing.assert_array_equal(preds[1], label[:, :, viewer.slider.value].T)
    assert "prediction" not in viewer._artists[0]
    with pytest.raises(ValueError, match="PET"):
        SliceViewer({"CT": volume}, label={"PET": label})


def test_compare_puts_truth_and_predictions_side_by_side(volume, label):
    viewer = SliceViewer.compare(volume, label, {"mlngm": label, "raw": np.zeros_like(label)})
    assert viewer.titles == ["ground truth", "mlngm", "raw"]
    assert len(viewer.figure.axes) == 3
    assert viewer.current_slices("label")[1:] == [None, None]
    assert viewer.current_slices("prediction")[0] is None
    assert "label" in viewer._artists[0] and "prediction" in viewer._artists[2]


def test_static_montage_has_n_axes_per_panel(volume, label):
    viewer = SliceViewer({"CT": volume, "MRI": volume}, label=label, class_names=["kidney", "tumour"])
    fig = viewer.static_montage(n=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 4
    assert fig.axes[0].get_title().startswith("CT")
    assert len(fig.axes[0].images) == 2  # image + label overlay
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["kidney", "tumour"]
    assert plt.get_fignums() == []  # closed in pyplot: shown once when returned from a cell
    assert len(show_montage(volume, n=50).axes) == SHAPE[2]  # at most one axes per slice
    sagittal = viewer.static_montage(n=2, axis=0)
    np.testing.assert_array_equal(sagittal.axes[0].images[0].get_array(), volume[4].T)  # linspace(0, 11, 4)
    with pytest.raises(ValueError, match="axis"):
        viewer.static_montage(axis=3)


def test_montage_slices_spread_evenly_or_show_every_entry():
    assert montage_slices(12, 4).tolist() == [2, 4, 7, 9]  # fewer than all: both ends left out
    assert montage_slices(4, 4).tolist() == [0, 1, 2, 3]  # as many as there are: first and last included
    assert montage_slices(3, 10).tolist() == [0, 1, 2]
    assert montage_slices(1, 1).tolist() == [0]


def test_montage_figure_takes_chosen_slices_titles_and_per_slice_contrast(volume):
    stack = volume * np.array([1.0, 10.0, 100.0, 1000.0, 1.0, 1.0, 1.0, 1.0])  # each entry its own scale
    common = {"axis": 2, "titles": ["cases"], "clims": [(0.0, 1.0)], "cmap": "gray", "opacity": 0.4,
              "class_names": {}, "num_classes": 2}
    fig = montage_figure([stack], [[]], n=99, index=[3, 0, 1], slice_titles=[["worst", "next", "third"]],
                         slice_percentiles=(1, 99), **common)
    assert [ax.get_title() for ax in fig.axes] == ["cases\nworst", "cases\nnext", "cases\nthird"]
    for ax, k in zip(fig.axes, [3, 0, 1]):
        np.testing.assert_array_equal(ax.images[0].get_array(), stack[:, :, k].T)
        assert ax.images[0].get_clim() == pytest.approx(tuple(np.percentile(stack[:, :, k], [1, 99])))
    shared = montage_figure([stack], [[]], n=2, **common)
    assert [ax.images[0].get_clim() for ax in shared.axes] == [(0.0, 1.0)] * 2
    with pytest.raises(ValueError, match="index"):
        montage_figure([stack], [[]], n=2, index=[8], **common)
    with pytest.raises(ValueError, match="slice_titles"):
        montage_figure([stack], [[]], n=2, slice_titles=[["one"]], **common)


def test_case_montage_shows_cases_in_order_with_their_scores_and_own_contrast(volume, label):
    cases = [f"case_s{k:04d}" for k in range(SHAPE[2])]
    scale = np.arange(1, SHAPE[2] + 1) ** 3.0
    stack = volume * scale
    dice = {"model": np.linspace(10, 80, SHAPE[2])}
    fig = case_montage(stack, label, {"model": label, "other": label}, cases=cases, scores=dice,
                       class_names=["kidney", "tumour"])
    assert len(fig.axes) == 3 * SHAPE[2]  # every case: the first and the last included
    columns = fig.axes[: SHAPE[2]]
    assert [ax.get_title() for ax in columns] == [f"ground truth\n{c}" for c in cases]
    assert fig.axes[SHAPE[2]].get_title() == "model\nDice 10.0%"
    assert fig.axes[2 * SHAPE[2] - 1].get_title() == "model\nDice 80.0%"
    assert fig.axes[2 * SHAPE[2]].get_title() == "other"
    for k, ax in enumerate(columns):
        assert ax.images[0].get_clim() == pytest.approx(tuple(np.percentile(stack[:, :, k], [1, 99])))
        assert len(ax.images) == 2  # image + filled label
    assert fig.get_size_inches()[0] * fig.dpi <= OUTPUT_PX
    _assert_readable(case_montage(stack, label, {"model": label}, cases=cases, scores=dice, n=4))
    first = case_montage(stack, None, {"model": label}, cases=cases, n=2)
    assert [ax.get_title() for ax in first.axes] == ["model", "model"]
    np.testing.assert_array_equal(first.axes[1].images[0].get_array(), stack[:, :, 1].T)
    assert plt.get_fignums() == []
    with pytest.raises(ValueError, match="n="):
        case_montage(stack, label, {}, cases=cases, n=SHAPE[2] + 1)
    with pytest.raises(ValueError, match="cases"):
        case_montage(stack, label, {}, cases=cases[:-1])
    with pytest.raises(ValueError, match="scores"):
        case_montage(stack, label, {"model": label}, cases=cases, scores={"model": [1.0]})
    with pytest.raises(ValueError, match="shape"):
        case_montage(stack, label[:, :, :-1], {}, cases=cases)
    with pytest.raises(ValueError, match="image"):
        case_montage(stack[:, :, 0], label[:, :, 0], {}, cases=cases[:1])


def test_invalid_inputs_raise_value_errors(volume, label):
    with pytest.raises(ValueError, match=r"image\[1\]"):
        SliceViewer([volume, volume[:-1]])
    with pytest.raises(ValueError, match="label"):
        SliceViewer(volume, label=label[:, :, :-1])
    with pytest.raises(ValueError, match="prediction"):
        SliceViewer([volume, volume], prediction=[label])
    with pytest.raises(ValueError, match="2D"):
        SliceViewer(np.zeros(5))
    with pytest.raises(ValueError, match="3D"):
        SliceViewer(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="titles"):
        SliceViewer([volume, volume], titles=["one"])
    with pytest.raises(ValueError, match="window"):
        SliceViewer(volume, window=(1.0, 0.0))


def test_2d_image_has_no_active_slider(label):
    image = np.arange(20.0).reshape(5, 4)
    lab = label[:5, :4, 3]
    viewer = SliceViewer(image, label=lab)
    assert viewer.slider.disabled
    assert viewer.axis_selector.layout.display == "none"
    np.testing.assert_array_equal(viewer.current_slices()[0], image.T)
    np.testing.assert_array_equal(viewer.current_slices("label")[0], lab.T)
    assert len(viewer.static_montage().axes) == 1


def test_contrast_percentiles_and_window(volume):
    viewer = SliceViewer(volume, percentiles=(5, 95))
    assert _shown(viewer, 0).get_clim() == pytest.approx(tuple(np.percentile(volume, [5, 95])))
    viewer.contrast_selector.value = "window"
    viewer.window_slider.value = (0.25, 0.5)
    assert _shown(viewer, 0).get_clim() == pytest.approx((0.25, 0.5))
    assert viewer.percentile_slider.layout.display == "none"
    assert SliceViewer(volume, window=(0.1, 0.9)).contrast(0) == pytest.approx((0.1, 0.9))


def test_widgets_carry_css_classes(volume):
    viewer = SliceViewer(volume)
    assert "lmisa-slice-viewer" in viewer.widget._dom_classes
    assert "lmisa-slice-slider" in viewer.slider._dom_classes
    assert viewer.image_widget.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert viewer.figure.get_size_inches()[0] * viewer.figure.dpi <= OUTPUT_PX


def _with_class(root: w.Widget, css_class: str) -> list[w.Widget]:
    """Widgets in the displayed tree under ``root`` (itself included) that carry ``css_class``."""
    found = [root] if css_class in root._dom_classes else []
    for child in getattr(root, "children", ()):
        found += _with_class(child, css_class)
    return found


def test_controls_have_css_classes_independent_of_descriptions(volume, label, ct_mri):
    viewer = SliceViewer(volume, label=label, prediction=label)
    assert _with_class(viewer.widget, "lmisa-label-toggle") == [viewer.overlay_toggle]
    assert _with_class(viewer.widget, "lmisa-prediction-toggle") == [viewer.prediction_toggle]
    assert _with_class(viewer.widget, "lmisa-compare-viewer") == []
    compare = SliceViewer.compare(volume, label, {"model": label})
    assert _with_class(compare.widget, "lmisa-compare-viewer") == [compare.widget]
    assert "lmisa-slice-viewer" in compare.widget._dom_classes
    assert _with_class(compare.widget, "lmisa-prediction-toggle") == [compare.prediction_toggle]
    explorer = mlngm_explorer(ct_mri, levels=2)
    assert _with_class(explorer.widget, "lmisa-mlngm-levels") == [explorer.levels_slider]
    assert _with_class(explorer.widget, "lmisa-mlngm-level") == [explorer.level_selector]


def _png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` in pixels from a PNG's header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


@pytest.mark.parametrize(("n", "rows"), [(1, 1), (2, 1), (4, 1), (5, 2), (8, 2)])
def test_default_figure_fits_the_output_area_with_readable_panels(volume, n, rows):
    viewer = SliceViewer([volume] * n)
    width, _ = _png_size(viewer.image_widget.value)
    assert width <= OUTPUT_PX
    boxes = [ax.get_window_extent() for ax in viewer.axes]  # pixels at the PNG's 100 dpi
    assert len({round(b.y0) for b in boxes}) == rows
    assert min(b.width for b in boxes) >= 190  # at most 4 per row: about 200 px each
    assert {k: getattr(viewer.image_widget.layout, k) for k in IMAGE_LAYOUT} == IMAGE_LAYOUT


def _overlap(a: Bbox, b: Bbox, tol: float = 1.0) -> bool:
    return a.x0 < b.x1 - tol and b.x0 < a.x1 - tol and a.y0 < b.y1 - tol and b.y0 < a.y1 - tol


def _assert_readable(fig: Figure) -> None:
    """All text at least MIN_TEXT_PX tall at the figure's dpi; titles inside the figure, clear of the rest."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
    assert texts
    for t in texts:
        assert t.get_fontsize() * fig.dpi / 72 >= MIN_TEXT_PX, t.get_text()
    frames = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes]
    titles = [(ax, ax.title.get_window_extent(renderer)) for ax in fig.axes if ax.get_title()]
    for ax, box in titles:
        assert box.x0 >= -1 and box.x1 <= fig.bbox.width + 1 and box.y1 <= fig.bbox.height + 1, ax.get_title()
        clash = [a.get_title() or "axes" for a, other in frames + titles
                 if other is not box and _overlap(box, other)]
        assert not clash, f"title {ax.get_title()!r} overlaps {clash}"


def test_figures_fit_840_px_with_readable_titles(volume, label, ct_mri):
    images = {"CT": volume, "MRI (T1)": volume, "MLNGM of CT": volume, "MLNGM of MRI": volume}
    viewer = SliceViewer(images, label=label, class_names=["kidney", "tumour"])
    _assert_readable(viewer.figure)
    montage = viewer.static_montage(n=6)
    assert montage.get_size_inches()[0] * montage.dpi <= OUTPUT_PX
    _assert_readable(montage)
    explorer = mlngm_explorer({"CT": ct_mri["CT"], "MRI (T1)": ct_mri["MRI"]}, levels=3)
    for level in (0, 1, "sum"):
        explorer.update(level=level)
        assert _png_size(explorer.image_widget.value)[0] <= OUTPUT_PX
        _assert_readable(explorer.figure)
    assert {k: getattr(explorer.image_widget.layout, k) for k in IMAGE_LAYOUT} == IMAGE_LAYOUT
    static = mlngm_explorer(ct_mri, levels=4).static_figure()
    assert static.get_size_inches()[0] * static.dpi <= OUTPUT_PX
    _assert_readable(static)


def test_button_labels_and_descriptions_fit(volume, label, ct_mri):
    # JupyterLab's widget font is 13 px; buttons add 10 px of padding on each side; labels are 80 px wide.
    font = ImageFont.truetype(findfont(FontProperties(family="DejaVu Sans")), 13)
    viewer = SliceViewer(volume, label=label)
    explorer = mlngm_explorer(ct_mri, levels=3)
    toggles = [viewer.axis_selector, viewer.style_selector, viewer.contrast_selector,
               explorer.window_selector, explorer.level_selector]
    for control in toggles:
        button = int(control.style.button_width.removesuffix("px"))
        for text in control._options_labels:
            assert font.getlength(text) + 20 <= button, (text, control.style.button_width)
        column = int((control.style.description_width or "80px").removesuffix("px"))
        assert font.getlength(control.description) <= column, control.description
        # The description sits beside the buttons, as a slider's does, not on a line of its own.
        assert "widget-inline-hbox" in control._dom_classes


def test_range_readouts_stay_short(volume):
    viewer = SliceViewer(volume)
    fmt = viewer.percentile_slider.readout_format
    for low, high in [(1, 99), (0.5, 99.5), (2, 98)]:
        text = f"{low:{fmt}} – {high:{fmt}}"
        assert len(text) <= 10 and float(text.split(" – ")[1]) == high  # exact at the slider's 0.5 step
    hounsfield = SliceViewer(volume * 3000 - 1024)
    fmt = hounsfield.window_slider.readout_format
    assert max(len(f"{v:{fmt}}") for v in hounsfield.window_slider.value) <= 5  # "-1024", not "-1024.0"
    fmt = viewer.window_slider.readout_format  # intensities in [0, 1]
    assert f"{0.25:{fmt}}" != f"{0.3:{fmt}}"


def test_class_colours_and_plot_overlay():
    assert CLASS_COLOURS[0][3] == 0.0
    assert len({c for c in CLASS_COLOURS[1:5]}) == 4
    _, ax = plt.subplots()
    image = np.random.default_rng(1).random((6, 5))
    lab = np.zeros((6, 5), np.uint8)
    lab[1:3, 1:4] = 2
    shown = plot_overlay(ax, image, lab, class_names={2: "LAC"}, alpha=0.5)
    np.testing.assert_array_equal(shown.get_array(), image.T)
    overlay = ax.images[1]
    assert overlay.get_alpha() == 0.5
    assert overlay.cmap(overlay.norm(2)) == pytest.approx(to_rgba(CLASS_COLOURS[2]))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["LAC"]
    with pytest.raises(ValueError, match="label2d"):
        plot_overlay(ax, image, lab[:5])


@pytest.fixture
def ct_mri() -> dict[str, np.ndarray]:
    x, y = np.mgrid[:32, :32]
    body = ((x - 16) ** 2 + (y - 16) ** 2 < 144).astype(np.float64)
    organ = ((x - 13) ** 2 + (y - 18) ** 2 < 16).astype(np.float64)
    noise = np.random.default_rng(2).normal(0, 0.02, (32, 32))
    return {"CT": 40 * body + 200 * organ + noise, "MRI": 2 * body - 1.5 * organ + noise}


def test_mlngm_pyramid_sums_to_mlngm(ct_mri):
    pyramid = mlngm_pyramid(ct_mri["CT"], levels=4, window=3, threshold=1e-3)
    # every level of the published script, the 4x4 one too (skip_small=True would drop it)
    assert [p["resized"].shape for p in pyramid] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    total = sum(p["upsampled"] for p in pyramid)
    total = (total - total.min()) / (total.max() - total.min())
    np.testing.assert_allclose(total, mlngm(ct_mri["CT"], levels=4, window=3, threshold=1e-3), atol=1e-6)
    with pytest.raises(ValueError, match="2D"):
        mlngm_pyramid(np.zeros((8, 8, 8)))


def test_mlngm_explorer_updates_with_level(ct_mri):
    explorer = mlngm_explorer(ct_mri, levels=3)
    assert "lmisa-mlngm-explorer" in explorer.widget._dom_classes
    level0 = explorer.current_panels()
    png = explorer.image_widget.value
    explorer.update(level=2)
    level2 = explorer.current_panels()
    assert level0["CT"]["image"].shape == (32, 32) and level2["CT"]["image"].shape == (8, 8)
    assert level2["MRI"]["normalised"].shape == (8, 8)
    np.testing.assert_array_equal(level0["CT"]["mlngm"], level2["CT"]["mlngm"])
    assert explorer.image_widget.value != png
    explorer.update(level="sum")
    assert explorer.current_panels()["CT"]["gradient"].shape == (32, 32)
    explorer.update(levels=1)
    assert list(explorer.level_selector.options) == [0, "sum"]
    np.testing.assert_allclose(explorer.current_panels()["CT"]["mlngm"], mlngm(ct_mri["CT"], levels=1),
                               atol=1e-6)
    with pytest.raises(ValueError, match="window"):
        explorer.update(window=4)
    with pytest.raises(ValueError, match="2D"):
        mlngm_explorer({"CT": np.zeros((8, 8, 8))})


def test_mlngm_explorer_static_figure(ct_mri):
    explorer = mlngm_explorer(ct_mri, levels=2)
    fig = explorer.static_figure()
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * (2 + 2)  # per image: image, two levels, MLNGM
    assert fig.axes[-1].get_title().startswith("MLNGM")
    assert plt.get_fignums() == []
