"""Tests for lmisa_lite.evaluation: per-case scoring, summaries, markdown and CSV output."""
from __future__ import annotations

import math
import sys
import types
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from data_utils.case import Case
from lmisa_lite.evaluation import COLUMNS, evaluate, summarize, to_markdown, write_csv
from lmisa_lite.metrics import assd, dice, evaluate_case

HEART = ["background", "MYO", "LAC", "LVC", "AA"]


def make_case(case_id: str, shape=(16, 14, 6), spacing=(1.0, 1.0, 2.5), seed=0, modality="ct") -> Case:
    """A small labelled volume with boxes for classes 1-3 (class 4 absent)."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    for value in (1, 2, 3):
        lo = [int(rng.integers(0, s // 2)) for s in shape]
        hi = [min(a + int(rng.integers(2, s // 2 + 1)), s) for a, s in zip(lo, shape)]
        label[tuple(slice(a, b) for a, b in zip(lo, hi))] = value
    image = label.astype(np.float32)
    return Case(image, label, spacing, case_id, modality)


def shifted(case: Case) -> np.ndarray:
    """A deterministic imperfect prediction: the label map moved one voxel along x."""
    return np.roll(case.label, 1, axis=0)


def test_evaluate_rows_match_metrics_on_each_case():
    cases = [make_case("a", seed=1), make_case("b", seed=2, spacing=(0.8, 0.8, 3.0), modality="mri")]
    df = evaluate(None, cases, predict_fn=shifted, class_names=HEART, progress=False)
    assert tuple(df.columns) == COLUMNS
    assert df.attrs["distance_unit"] == "mm"
    for case in cases:
        rows = df[df.case_id == case.case_id]
        assert set(rows.modality) == {case.modality}
        want = evaluate_case(shifted(case), case.label, spacing=case.spacing, class_names=HEART)
        assert rows["label"].tolist() == [r["label"] for r in want]
        assert rows["class"].tolist() == [HEART[r["label"]] for r in want]
        for name in ("dice", "assd", "hd95", "precision", "recall", "iou"):
            np.testing.assert_allclose(rows[name].to_numpy(), [r[name] for r in want])
    # Distances are in mm: the case spacing is used, not voxels.
    b = cases[1]
    assert df[(df.case_id == "b") & (df.label == 2)].assd.item() == pytest.approx(
        assd(shifted(b), b.label, spacing=b.spacing)[2]
    )
    assert df.label.dtype.kind == "i" and df.empty_pred.dtype == bool


def test_labels_follow_num_classes_and_absent_classes_are_flagged():
    model = SimpleNamespace(num_classes=5, spatial_dims=3)
    case = make_case("a", seed=3)
    df = evaluate(model, [case], predict_fn=lambda c: c.label, progress=False)
    assert df.label.tolist() == [1, 2, 3, 4]
    present = df[df.label < 4]
    assert (present.dice == 1.0).all() and (present.assd == 0.0).all()
    absent = df[df.label == 4].iloc[0]
    assert absent.empty_pred and absent.empty_target and math.isnan(absent.dice)


def test_empty_prediction_is_flagged_and_counted_in_summary():
    cases = [make_case("a", seed=4), make_case("b", seed=5)]

    def miss_class_two_in_b(case):
        pred = case.label.copy()
        if case.case_id == "b":
            pred[pred == 2] = 0
        return pred

    df = evaluate(None, cases, predict_fn=miss_class_two_in_b, labels=[1, 2, 3], progress=False)
    row = df[(df.case_id == "b") & (df.label == 2)].iloc[0]
    assert row.empty_pred and not row.empty_target
    assert row.dice == 0.0 and math.isnan(row.assd) and math.isnan(row.hd95)
    summary = summarize(df, class_names=HEART, metrics=("dice", "assd", "hd95"))
    assert summary.loc["LAC", "dice"] == pytest.approx(50.0)
    assert summary.loc["LAC", "assd"] == 0.0 and summary.loc["LAC", "assd_nan"] == 1
    assert summary.loc["LAC", "dice_nan"] == 0
    assert summary.loc["mean", "assd_nan"] == 1 and summary.loc["mean", "hd95_nan"] == 1


def test_summarize_means_stds_and_mean_row():
    nan = float("nan")
    df = pd.DataFrame({
        "case_id": ["c1", "c1", "c2", "c2", "c3", "c3"],
        "label": [1, 2, 1, 2, 1, 2],
        "class": ["x", "y"] * 3,
        "dice": [0.8, 0.6, 0.9, nan, 0.7, 0.5],
        "assd": [1.0, 3.0, 2.0, nan, 3.0, 5.0],
    })
    df.attrs["distance_unit"] = "mm"
    s = summarize(df)
    assert list(s.index) == ["x", "y", "mean"]
    assert list(s.columns) == ["n_cases", "dice", "dice_std", "dice_nan", "assd", "assd_std", "assd_nan"]
    assert s.loc["x", "dice"] == pytest.approx(80.0)
    assert s.loc["x", "dice_std"] == pytest.approx(np.std([80.0, 90.0, 70.0]))
    assert s.loc["y", "dice"] == pytest.approx(55.0) and s.loc["y", "dice_nan"] == 1
    assert s.loc["y", "assd_std"] == pytest.approx(1.0)
    # Mean row: mean of the class means; std over cases of each case's class average.
    assert s.loc["mean", "dice"] == pytest.approx((80.0 + 55.0) / 2)
    assert s.loc["mean", "dice_std"] == pytest.approx(np.std([70.0, 90.0, 60.0]))
    assert s.loc["mean", "assd"] == pytest.approx((2.0 + 4.0) / 2)
    assert s.loc["mean", "n_cases"] == 3 and s.loc["x", "n_cases"] == 3
    assert s.attrs == {"percent": ["dice"], "distance_unit": "mm"}
    raw = summarize(df, percent=False, class_names={1: "LV"})
    assert list(raw.index) == ["LV", "label 2", "mean"]
    assert raw.loc["LV", "dice"] == pytest.approx(0.8)


def test_summarize_rejects_incomplete_tables():
    with pytest.raises(ValueError, match="assd"):
        summarize(pd.DataFrame({"case_id": ["a"], "label": [1], "dice": [0.5]}))
    with pytest.raises(ValueError, match="no rows"):
        summarize(pd.DataFrame(columns=["case_id", "label", "dice", "assd"]))


def test_to_markdown_layout():
    nan = float("nan")
    summary = pd.DataFrame(
        {"n_cases": [2, 2], "dice": [85.04, nan], "dice_std": [5.0, nan], "dice_nan": [0, 2],
         "assd": [1.25, 2.0], "assd_std": [0.5, 0.0], "assd_nan": [1, 0]},
        index=pd.Index(["LV|C", "mean"], name="class"),
    )
    summary.attrs.update(percent=["dice"], distance_unit="mm")
    text = to_markdown(summary, title="MR -> CT", decimals=2)
    lines = text.splitlines()
    assert lines[0] == "**MR -> CT**" and lines[1] == ""
    assert lines[2] == "| class | cases | Dice (%) | ASSD (mm) |"
    assert lines[3] == "| --- | ---: | ---: | ---: |"
    assert lines[4] == "| LV\\|C | 2 | 85.04 ± 5.00 | 1.25 ± 0.50 (1 NaN) |"
    assert lines[5] == "| mean | 2 | n/a (2 NaN) | 2.00 ± 0.00 |"
    assert len(lines) == 6 and text.endswith("\n")
    assert "85.0 ± 5.0" in to_markdown(summary)


def test_to_markdown_plain_table_without_index():
    df = pd.DataFrame({"method": ["SIFA", "ours"], "mean Dice": [73.0, 74.25]})
    assert to_markdown(df).splitlines() == [
        "| method | mean Dice |", "| ---: | ---: |", "| SIFA | 73.0 |", "| ours | 74.2 |"]
    with pytest.raises(ValueError, match="decimals"):
        to_markdown(df, decimals=-1)


def test_write_csv_atomic_roundtrip(tmp_path):
    df = evaluate(None, [make_case("a", seed=6)], predict_fn=shifted, progress=False)
    path = write_csv(df, tmp_path / "out" / "scores.csv")
    assert path == tmp_path / "out" / "scores.csv"
    back = pd.read_csv(path)
    assert list(back.columns) == list(COLUMNS)
    np.testing.assert_allclose(back.dice, df.dice)
    summary = summarize(df)
    write_csv(summary, path)  # replaces the file; the class index is kept
    back = pd.read_csv(path, index_col="class")
    assert list(back.index) == list(summary.index)
    assert sorted(p.name for p in path.parent.iterdir()) == ["scores.csv"]


def test_evaluate_input_errors():
    case = make_case("a")
    with pytest.raises(ValueError, match="model is None"):
        evaluate(None, [case], progress=False)
    unlabelled = Case(case.image, None, case.spacing, "u", "ct")
    with pytest.raises(ValueError, match="'u' has no label"):
        evaluate(None, [unlabelled], predict_fn=lambda c: c.image, progress=False)
    with pytest.raises(ValueError, match=r"'a' has shape \(16, 14\)"):
        evaluate(None, [case], predict_fn=lambda c: c.label[..., 0], progress=False)
    with pytest.raises(ValueError, match="dims=3 contradicts"):
        evaluate(SimpleNamespace(spatial_dims=2), [case], dims=3, progress=False)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        evaluate(object(), [case], progress=False)


def test_progress_bar_runs(capsys):
    evaluate(None, [make_case("a")], predict_fn=shifted, progress=True)
    assert "evaluate" in capsys.readouterr().err


@pytest.fixture
def fake_pipeline(monkeypatch):
    """Stand-ins for lmisa_lite.preprocessing and lmisa_lite.inference that record how they are called."""
    calls: list[tuple] = []

    def network_input(image, *, use_mlngm=True, slicewise=False):
        calls.append(("network_input", image.shape, use_mlngm, slicewise))
        return image

    def predict_volume(model, image, *, patch_size=None, overlap=0.5, batch_size=4, device="auto"):
        calls.append(("predict_volume", model, image.shape, patch_size, device))
        return np.rint(image).astype(np.uint8)  # the fake images hold the label values

    prepare = types.ModuleType("lmisa_lite.preprocessing")
    prepare.network_input = network_input
    prepare.input_kind = lambda model: getattr(model, "input_kind", "mlngm")
    inference = types.ModuleType("lmisa_lite.inference")
    inference.predict_volume = predict_volume
    monkeypatch.setitem(sys.modules, "lmisa_lite.preprocessing", prepare)
    monkeypatch.setitem(sys.modules, "lmisa_lite.inference", inference)
    return calls


def test_network_path_prepares_input_and_slices_for_2d_models(fake_pipeline):
    volume = make_case("v", seed=7)
    plane = Case(volume.image[..., 2], volume.label[..., 2], (1.0, 1.0), "p", "ct")
    model_2d = SimpleNamespace(spatial_dims=2, num_classes=4, input_kind="zscore")
    df = evaluate(model_2d, [volume, plane], device="cpu", patch_size=(8, 8), progress=False)
    assert fake_pipeline == [
        ("network_input", volume.shape, False, True),
        ("predict_volume", model_2d, volume.shape, (8, 8), "cpu"),
        ("network_input", plane.shape, False, False),
        ("predict_volume", model_2d, plane.shape, (8, 8), "cpu"),
    ]
    scored = df[~df.empty_target]
    assert (scored.dice == 1.0).all()
    assert df.label.tolist() == [1, 2, 3] * 2

    fake_pipeline.clear()
    model_3d = SimpleNamespace(spatial_dims=3, num_classes=4)
    evaluate(model_3d, [volume], progress=False)
    assert fake_pipeline[0] == ("network_input", volume.shape, True, False)
    with pytest.raises(ValueError, match="'p' is 2D, but the model is 3D"):
        evaluate(model_3d, [plane], progress=False)


@pytest.mark.slow
def test_evaluate_real_network_path():
    """End to end with the real input preparation and inference (needs preprocessing.py and inference.py)."""
    import torch

    from lmisa_lite.inference import predict_volume
    from lmisa_lite.preprocessing import network_input
    from lmisa_lite.networks import LMISANet

    torch.manual_seed(0)
    grid = np.indices((24, 20, 6)).astype(np.float32)
    blob = ((grid[0] - 12) / 7) ** 2 + ((grid[1] - 10) / 6) ** 2 + ((grid[2] - 3) / 3) ** 2 < 1
    image = np.where(blob, 180.0, 40.0).astype(np.float32)  # a bright organ in soft tissue (HU)
    case = Case(image, blob.astype(np.uint8), (0.8, 0.8, 3.0), "blob", "ct")
    for dims in (2, 3):
        model = LMISANet(spatial_dims=dims, num_classes=2, base_filters=4, depth=2).eval()
        df = evaluate(model, [case], device="cpu", progress=False)
        assert tuple(df.columns) == COLUMNS and df.label.tolist() == [1]
        x = network_input(case.image, use_mlngm=True, slicewise=dims == 2)
        pred = predict_volume(model, x, device="cpu")
        assert pred.shape == case.shape
        want = dice(pred, case.label, labels=[1])[1]
        got = df.dice.item()
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
