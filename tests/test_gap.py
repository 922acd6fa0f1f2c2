"""Tests for lmisa_lite.gap, on tiny synthetic arrays (and one small phantom for the body mask).

Measured on the arrays below: independent Gaussian noise (64 x 64, seeds 0-5) gives |r| and |rho| up to 0.027
and an NMI of 0.009-0.012 (16 bins; the bias estimate is 0.010); asserted below 0.06 and 0.03.
"""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from skimage.metrics import normalized_mutual_information as skimage_nmi

from lmisa_lite import gap
from lmisa_lite.gap import (
    AGREEMENT_COLUMNS,
    agreement_table,
    body_mask,
    compare_modalities,
    histogram_distance,
    modality_agreement,
    normalized_mutual_information,
    plot_agreement,
)


def _tissues() -> np.ndarray:
    """A 64 x 64 map of four 'tissues' (values 0..3), each a quarter of the pixels, in bands."""
    return np.repeat(np.arange(4), 16)[:, None] * np.ones((1, 64), dtype=np.int64)


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(64, 64))


def test_identical_images_agree_perfectly():
    x = _noise(0)
    assert modality_agreement(x, x) == pytest.approx({"pearson": 1.0, "spearman": 1.0, "nmi": 1.0})


def test_inverted_contrast_is_negative_correlation_with_full_information():
    x = _noise(0)
    result = modality_agreement(x, 10 - 3 * x)
    assert result["pearson"] == pytest.approx(-1.0)
    assert result["spearman"] == pytest.approx(-1.0)
    assert result["nmi"] == pytest.approx(1.0)


def test_reordered_tissues_lose_correlation_but_keep_the_information():
    tissues = _tissues() + 0.01 * _noise(1)
    ct_like = np.array([0.0, 1.0, 2.0, 3.0])[_tissues()]
    mri_like = np.array([2.0, 0.0, 3.0, 1.0])[_tissues()]  # same structures, another order of brightness
    result = modality_agreement(ct_like, mri_like)
    assert abs(result["spearman"]) < 0.5
    assert result["nmi"] == pytest.approx(1.0)
    assert modality_agreement(tissues, mri_like)["nmi"] > 0.6


def test_independent_noise_is_near_zero_on_every_measure():
    result = modality_agreement(_noise(0), _noise(1))
    assert abs(result["pearson"]) < 0.06 and abs(result["spearman"]) < 0.06
    assert 0 <= result["nmi"] < 0.03


def test_nmi_ignores_monotone_transforms_and_matches_skimage_on_its_bins():
    x, y = _noise(0), _noise(0) + _noise(1)
    nmi = normalized_mutual_information
    assert nmi(np.exp(x), y**3) == pytest.approx(nmi(x, y))
    a, b = _tissues(), (_tissues() + (_noise(2) > 1)) % 4  # four equal-count levels: one bin each
    y_sk = skimage_nmi(a, b, bins=4)
    assert normalized_mutual_information(a, b, bins=4) == pytest.approx(2 * (y_sk - 1) / y_sk)


def test_mask_restricts_the_comparison():
    x, y = _noise(0), _noise(1)
    mask = np.zeros_like(x, dtype=bool)
    mask[:32] = True
    agree_inside = np.where(mask, x, y)
    assert modality_agreement(x, agree_inside, mask)["pearson"] == pytest.approx(1.0)
    assert modality_agreement(x, agree_inside)["pearson"] < 0.7


def test_histogram_distance_ignores_where_the_values_are():
    x = _noise(0)
    shuffled = np.random.default_rng(5).permutation(x.ravel()).reshape(x.shape)
    assert histogram_distance(x, shuffled) == pytest.approx(0.0, abs=1e-12)
    assert abs(modality_agreement(x, shuffled)["pearson"]) < 0.06
    assert histogram_distance(x, np.exp(x)) > 0.2


def test_bad_inputs_are_rejected():
    x = _noise(0)
    with pytest.raises(ValueError, match="shape"):
        modality_agreement(x, x[:10])
    with pytest.raises(ValueError, match="mask"):
        modality_agreement(x, x, np.ones((3, 3), bool))
    with pytest.raises(ValueError, match="fewer than two"):
        modality_agreement(x, x, np.zeros_like(x, dtype=bool))
    with pytest.raises(ValueError, match="bins"):
        normalized_mutual_information(x, x, bins=1)
    assert np.isnan(modality_agreement(x, np.ones_like(x))["pearson"])


def test_agreement_table_has_one_row_per_pair():
    x = _noise(0)
    shuffled = np.random.default_rng(5).permutation(x.ravel()).reshape(x.shape)
    table = agreement_table({"same": (x, x), "inverted": (x, -x), "shuffled": (x, shuffled)})
    assert list(table.columns) == list(AGREEMENT_COLUMNS.values())
    assert list(table.index) == ["same", "inverted", "shuffled"]
    assert table.loc["inverted", "Spearman rho (body)"] == pytest.approx(-1.0)
    assert table.loc["shuffled", "histogram distance (whole image)"] == pytest.approx(0.0, abs=1e-9)
    assert abs(table.loc["shuffled", "Pearson r (body)"]) < 0.06


def test_compare_modalities_covers_every_pair():
    x = _noise(0)
    images = {"a": x, "b": -x, "c": np.exp(x)}
    maps = {k: np.abs(v) for k, v in images.items()}
    rows = compare_modalities(images, maps, np.ones_like(x, dtype=bool))
    assert len(rows) == 3 * 3
    assert set(zip(rows["first"], rows["second"])) == {("a", "b"), ("a", "c"), ("b", "c")}
    matched = rows[rows["comparison"] == "histogram-matched"]
    assert matched["histogram distance (whole image)"].max() < 0.01  # matched histograms, by construction
    inverted = rows[(rows["first"] == "a") & (rows["second"] == "b")].set_index("comparison")
    assert inverted.loc["histogram-matched", "Spearman rho (body)"] == pytest.approx(-1.0)  # order kept


def test_body_mask_is_the_subject_without_air_and_couch():
    mask = body_mask("heart", dims=2, shape=(48, 48), seed=1)
    assert mask.shape == (48, 48) and mask.dtype == bool
    assert not mask[0, 0] and mask[24, 24]
    assert 0.2 < mask.mean() < 0.8


def test_plot_agreement_draws_two_rows():
    x = _noise(0)
    fig = plot_agreement({"same": (x, x), "noise": (x, _noise(1))}, x > -1, labels={"noise": ("A", "B")})
    assert len(fig.axes) == 4
    assert "r = 1.00" in fig.axes[2].get_title()
    assert fig.axes[2].get_xlabel().startswith("CT") and fig.axes[3].get_xlabel().startswith("A")


def test_docstring_examples_run():
    assert doctest.testmod(gap).failed == 0
