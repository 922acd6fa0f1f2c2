"""Tests for lmisa_lite.latent: bottleneck features, embeddings, domain classifier, CKA, shifts, plotting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_utils.phantoms import make_phantom
from lmisa_lite.latent import (
    bottleneck_features,
    domain_alignment,
    domain_classifier_accuracy,
    embed_pca,
    embed_tsne,
    foreground_shift,
    linear_cka,
    plot_latent,
    proxy_a_distance,
)
from lmisa_lite.networks import LMISANet
from lmisa_lite.preprocessing import model_input

# A classifier that does not converge or a 0/0 in the embeddings would make the numbers below meaningless.
pytestmark = [
    pytest.mark.filterwarnings("error::sklearn.exceptions.ConvergenceWarning"),
    pytest.mark.filterwarnings("error::RuntimeWarning"),
]


def two_domains(
    shift: float, *, n: int = 60, features: int = 8, seed: int = 0
) -> tuple[np.ndarray, list[str]]:
    """``n`` points per domain from unit Gaussians whose means differ by ``shift`` along every axis."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, (n, features)), rng.normal(shift, 1, (n, features))])
    return x, ["ct"] * n + ["mri"] * n


# ---- domain classifier -------------------------------------------------------------------------------------
# 64 features for 48 training points per fold: more channels than images, as for real bottleneck features
@pytest.mark.parametrize("features", [8, 64])
def test_separable_domains_are_classified_almost_perfectly(features):
    x, domains = two_domains(3.0, n=30, features=features)
    assert domain_classifier_accuracy(x, domains) >= 0.95


@pytest.mark.parametrize("features", [8, 64])
def test_identical_distributions_give_chance_accuracy(features):
    accuracies = [
        domain_classifier_accuracy(*two_domains(0.0, n=30, features=features, seed=s), seed=s)
        for s in range(3)
    ]
    assert abs(np.mean(accuracies) - 0.5) < 0.12


def test_accuracy_grows_with_the_domain_gap():
    small = domain_classifier_accuracy(*two_domains(0.3))
    large = domain_classifier_accuracy(*two_domains(1.5))
    assert 0.5 < small < large


def test_classifier_is_deterministic_for_a_seed_and_ignores_constant_features():
    x, domains = two_domains(1.0)
    accuracy = domain_classifier_accuracy(x, domains, seed=3)
    assert domain_classifier_accuracy(x, domains, seed=3) == accuracy
    with_constant = np.hstack([x, np.full((len(x), 1), 7.0)])
    assert domain_classifier_accuracy(with_constant, domains, seed=3) == accuracy


def test_classifier_standardises_features():
    # Without standardisation, the penalty would weigh the channels by their arbitrary units.
    x, domains = two_domains(0.8)
    scaled = x * np.logspace(-3, 3, x.shape[1]) + 100.0
    assert domain_classifier_accuracy(scaled, domains) == pytest.approx(
        domain_classifier_accuracy(x, domains)
    )


def test_classifier_rejects_bad_input():
    x, domains = two_domains(1.0, n=6)
    with pytest.raises(ValueError, match="domains"):
        domain_classifier_accuracy(x, domains[:-1])
    with pytest.raises(ValueError, match="domains"):
        domain_classifier_accuracy(x, ["a"] * 4 + ["b"] * 4 + ["c"] * 4)
    with pytest.raises(ValueError, match="folds"):
        domain_classifier_accuracy(x, domains, folds=7)
    with pytest.raises(ValueError, match="folds"):
        domain_classifier_accuracy(x, domains, folds=True)
    with pytest.raises(ValueError, match="features"):
        domain_classifier_accuracy(np.zeros(12), domains)
    with pytest.raises(ValueError, match="l2"):
        domain_classifier_accuracy(x, domains, l2=0)


def test_proxy_a_distance():
    assert proxy_a_distance(0.5) == 0.0
    assert proxy_a_distance(1.0) == 2.0
    assert proxy_a_distance(0.75) == pytest.approx(1.0)
    assert proxy_a_distance(0.25) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="acc"):
        proxy_a_distance(1.2)


# ---- linear CKA --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("debiased", [True, False])
def test_cka_of_identical_features_is_one(debiased):
    x = np.random.default_rng(0).normal(size=(24, 64))
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0)


def test_cka_of_unrelated_features_is_near_zero():
    rng = np.random.default_rng(1)
    # As many channels as samples: the plain estimate is biased far above 0, the debiased one is not.
    wide = [linear_cka(rng.normal(size=(24, 64)), rng.normal(size=(24, 64))) for _ in range(10)]
    assert abs(np.mean(wide)) < 0.05 and max(abs(v) for v in wide) < 0.2
    assert linear_cka(rng.normal(size=(24, 64)), rng.normal(size=(24, 64)), debiased=False) > 0.5
    # With many more samples than channels both estimates are near 0.
    x, y = rng.normal(size=(600, 4)), rng.normal(size=(600, 4))
    assert abs(linear_cka(x, y)) < 0.03 and linear_cka(x, y, debiased=False) < 0.03


@pytest.mark.parametrize("debiased", [True, False])
def test_cka_ignores_orthogonal_transforms_isotropic_scaling_and_shifts(debiased):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 12))
    y = x @ rng.normal(size=(12, 12)) + rng.normal(size=(30, 12))  # related, not equal
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    reference = linear_cka(x, y, debiased=debiased)
    assert 0.1 < reference < 0.99
    assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(x, 7.5 * y + 3.0, debiased=debiased) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(y, x, debiased=debiased) == pytest.approx(reference, abs=1e-10)
    # an anisotropic scaling is not a symmetry of CKA
    assert linear_cka(x * np.logspace(0, 2, 12), y, debiased=debiased) != pytest.approx(reference, abs=1e-3)


def test_plain_cka_matches_its_formula_and_grows_with_shared_signal():
    rng = np.random.default_rng(3)
    x, noise = rng.normal(size=(40, 6)), rng.normal(size=(40, 6))
    y = x + noise
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(x, y, debiased=False) == pytest.approx(expected)
    values = [linear_cka(x, x + s * noise) for s in (0.2, 1.0, 5.0)]
    assert values[0] > values[1] > values[2]


def test_cka_edge_cases_and_bad_input():
    x = np.random.default_rng(4).normal(size=(6, 3))
    assert linear_cka(x, np.ones((6, 3))) == 0.0  # no variance
    assert linear_cka(x, x[:, :1]) < 1.0  # different channel counts are allowed
    with pytest.raises(ValueError, match="rows"):
        linear_cka(x, x[:5])
    with pytest.raises(ValueError, match="N >= 4"):
        linear_cka(x[:3], x[:3])
    assert linear_cka(x[:3], x[:3], debiased=False) == pytest.approx(1.0)


# ---- foreground shift --------------------------------------------------------------------------------------
def test_foreground_shift_measures_the_move_in_units_of_the_organ_background_distance():
    rng = np.random.default_rng(5)
    background = rng.normal(0.0, 0.1, (20, 4))
    organ = rng.normal(0.0, 0.1, (20, 4)) + [2.0, 0.0, 0.0, 0.0]
    assert foreground_shift(organ, organ, background) == 0.0
    moved = organ + [0.0, 1.0, 0.0, 0.0]  # moved by half the organ-background distance, sideways
    expected = 1.0 / np.linalg.norm(organ.mean(0) - background.mean(0))
    assert foreground_shift(organ, moved, background) == pytest.approx(expected)
    assert foreground_shift(organ, background, background) == pytest.approx(1.0)
    assert foreground_shift(organ, moved[:5], background[:3]) > 0  # sizes may differ
    assert foreground_shift(background, background, background) == 0.0
    assert foreground_shift(background, organ, background) == float("inf")
    with pytest.raises(ValueError, match="channel"):
        foreground_shift(organ, moved[:, :3], background)


# ---- embeddings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(30, 5), (12, 40)])
def test_pca_matches_the_singular_value_decomposition(shape):
    x = np.random.default_rng(1).normal(size=shape) * np.linspace(3, 0.5, shape[1])
    coords, ratio = embed_pca(x, 3, return_variance=True)
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.abs(coords), np.abs(u[:, :3] * s[:3]), atol=1e-8)
    np.testing.assert_allclose(ratio, s[:3] ** 2 / (s**2).sum(), atol=1e-10)
    assert coords.shape == (shape[0], 3) and ratio[0] >= ratio[1] >= ratio[2]


def test_pca_signs_do_not_depend_on_the_row_order():
    x = np.random.default_rng(2).normal(size=(20, 6))
    order = np.random.default_rng(3).permutation(20)
    np.testing.assert_allclose(embed_pca(x[order], 3), embed_pca(x, 3)[order], atol=1e-10)


def test_pca_without_variance_gives_zeros():
    coords, ratio = embed_pca(np.full((5, 3), 2.0), 2, return_variance=True)
    np.testing.assert_array_equal(coords, 0.0)
    np.testing.assert_array_equal(ratio, 0.0)


def test_pca_separates_shifted_domains_along_the_first_axis():
    x, domains = two_domains(4.0)
    first = embed_pca(x, 2)[:, 0]
    is_mri = np.array(domains) == "mri"
    assert min(first[is_mri].min(), first[~is_mri].min()) < 0 < max(first[is_mri].max(), first[~is_mri].max())
    assert abs(first[is_mri].mean() - first[~is_mri].mean()) > 5


def test_pca_rejects_too_many_components():
    with pytest.raises(ValueError, match="n="):
        embed_pca(np.zeros((3, 2)), 3)


def test_tsne_keeps_clusters_apart_and_is_reproducible():
    x, domains = two_domains(6.0, n=15, features=10)
    y = embed_tsne(x, steps=400, seed=1)
    assert y.shape == (30, 2) and y.dtype == np.float64
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-9)
    np.testing.assert_array_equal(y, embed_tsne(x, steps=400, seed=1))
    labels = np.array(domains)
    centre_gap = np.linalg.norm(y[labels == "ct"].mean(0) - y[labels == "mri"].mean(0))
    spread = max(y[labels == d].std(0).sum() for d in ("ct", "mri"))
    assert centre_gap > 2 * spread
    with pytest.raises(ValueError, match="features"):
        embed_tsne(x[:3])
    with pytest.raises(ValueError, match="steps"):
        embed_tsne(x, steps=100)


def test_tsne_reduces_wide_features_and_accepts_more_dimensions_than_features():
    x, _ = two_domains(3.0, n=10, features=80)
    assert embed_tsne(x, 3, steps=250).shape == (20, 3)
    assert embed_tsne(x[:, :2], 3, steps=250).shape == (20, 3)  # random start: 3 > min(N, F)


# ---- bottleneck features on a tiny network -----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_net() -> LMISANet:
    torch.manual_seed(0)
    return LMISANet(spatial_dims=2, base_filters=4, depth=3)


def test_bottleneck_features_shape_and_global_average(tiny_net):
    images = np.random.default_rng(0).normal(size=(5, 32, 32)).astype(np.float32)
    features = bottleneck_features(tiny_net, images, device="cpu", batch_size=2)
    assert features.shape == (5, 4 * 2**3) and features.dtype == np.float32
    tiny_net.eval()
    with torch.no_grad():
        expected = tiny_net.encode(torch.from_numpy(images)[:, None]).mean((2, 3)).numpy()
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    maxima = bottleneck_features(tiny_net, images, device="cpu", pool="max")
    assert (maxima >= features - 1e-6).all()


def test_bottleneck_features_pad_odd_sizes_accept_layouts_and_restore_the_mode(tiny_net):
    tiny_net.train()
    images = np.random.default_rng(1).normal(size=(3, 30, 27)).astype(np.float32)
    features = bottleneck_features(tiny_net, images, device="cpu")
    assert features.shape == (3, 32)
    assert tiny_net.training  # restored
    np.testing.assert_allclose(
        bottleneck_features(tiny_net, images[:, None], device="cpu"), features, rtol=1e-6
    )
    np.testing.assert_allclose(bottleneck_features(tiny_net, list(images), device="cpu"), features, rtol=1e-6)
    assert bottleneck_features(tiny_net, images[0], device="cpu").shape == (1, 32)


def test_bottleneck_features_reject_bad_input(tiny_net):
    with pytest.raises(ValueError, match="images"):
        bottleneck_features(tiny_net, np.zeros((2, 2, 8, 8, 8)), device="cpu")
    with pytest.raises(ValueError, match="pool"):
        bottleneck_features(tiny_net, np.zeros((1, 8, 8)), device="cpu", pool="median")
    with pytest.raises(ValueError, match="model"):
        bottleneck_features(
            LMISANet(spatial_dims=3, base_filters=2, depth=2), np.zeros((1, 8, 8)), device="cpu"
        )


def test_bottleneck_features_pool_inside_masks(tiny_net):
    images = np.random.default_rng(2).normal(size=(3, 32, 32)).astype(np.float32)
    whole = bottleneck_features(tiny_net, images, device="cpu")
    ones = np.ones_like(images, dtype=bool)
    np.testing.assert_allclose(bottleneck_features(tiny_net, images, device="cpu", masks=ones), whole, rtol=1e-5)
    # a mask covering one 4 x 4 block (depth 3: 2**2 pixels per bottleneck position) picks that position
    mask = np.zeros_like(images)
    mask[:, 8:12, 4:8] = 1.0
    tiny_net.eval()
    with torch.no_grad():
        h = tiny_net.encode(torch.from_numpy(images)[:, None]).numpy()
    np.testing.assert_allclose(bottleneck_features(tiny_net, images, device="cpu", masks=mask), h[:, :, 2, 1],
                               rtol=1e-5, atol=1e-6)
    # half a block weighs that position by half, relative to a full one elsewhere
    mask[:, 8:10, 4:8], mask[:, 0:4, 0:4] = 0.0, 1.0
    expected = (0.5 * h[:, :, 2, 1] + h[:, :, 0, 0]) / 1.5
    np.testing.assert_allclose(bottleneck_features(tiny_net, list(images), device="cpu", masks=list(mask)),
                               expected, rtol=1e-5, atol=1e-6)


def test_bottleneck_features_masks_on_padded_images_and_bad_masks(tiny_net):
    images = np.random.default_rng(3).normal(size=(2, 30, 27)).astype(np.float32)
    ones = np.ones(images.shape, bool)
    np.testing.assert_allclose(bottleneck_features(tiny_net, images, device="cpu", masks=ones).shape, (2, 32))
    with pytest.raises(ValueError, match="masks"):
        bottleneck_features(tiny_net, images, device="cpu", masks=ones[:, :-1])
    with pytest.raises(ValueError, match="empty"):
        bottleneck_features(tiny_net, images, device="cpu", masks=np.zeros(images.shape, bool))
    with pytest.raises(ValueError, match="pool='mean'"):
        bottleneck_features(tiny_net, images, device="cpu", masks=ones, pool="max")


def test_domain_alignment_on_paired_phantoms(tiny_net):
    ct = [make_phantom("kidney", "ct", dims=2, shape=(32, 32), seed=k, plane="organs") for k in range(5)]
    mri = [make_phantom("kidney", "mri", dims=2, shape=(32, 32), seed=k, plane="organs") for k in range(5)]
    result = domain_alignment(tiny_net, ct, mri, names=("CT", "MRI"), folds=3, device="cpu")
    assert set(result.scores) == {"domain_accuracy", "proxy_a_distance", "cka", "foreground_shift"}
    assert result.features.shape == (10, 32) and result.domains == ["CT"] * 5 + ["MRI"] * 5
    xs = bottleneck_features(tiny_net, [model_input(tiny_net, c.image) for c in ct], device="cpu")
    xt = bottleneck_features(tiny_net, [model_input(tiny_net, c.image) for c in mri], device="cpu")
    np.testing.assert_allclose(result.features, np.concatenate([xs, xt]), rtol=1e-6)
    assert result.scores["cka"] == pytest.approx(linear_cka(xs, xt))
    accuracy = domain_classifier_accuracy(result.features, result.domains, folds=3)
    assert result.scores["domain_accuracy"] == accuracy
    assert result.scores["proxy_a_distance"] == pytest.approx(proxy_a_distance(accuracy))
    assert result.scores["foreground_shift"] >= 0
    # the same images in both "domains": perfectly aligned
    same = domain_alignment(tiny_net, ct[:4], ct[:4], folds=2, device="cpu").scores
    assert same["cka"] == pytest.approx(1.0)
    assert same["foreground_shift"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="subjects"):
        domain_alignment(tiny_net, ct, mri[:4], device="cpu")
    with pytest.raises(ValueError, match="subjects"):
        domain_alignment(tiny_net, ct[:3], mri[:3], device="cpu")


# ---- plotting ----------------------------------------------------------------------------------------------
def test_plot_latent_draws_one_series_per_domain():
    x, domains = two_domains(2.0, n=5)
    ax = plot_latent(embed_pca(x), domains, title="bottleneck")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ct", "mri"]
    assert ax.get_title() == "bottleneck"
    assert sum(len(c.get_offsets()) for c in ax.collections) == 10
    with pytest.raises(ValueError, match="embedding"):
        plot_latent(np.zeros((4, 3)), domains[:4])
    with pytest.raises(ValueError, match="domains"):
        plot_latent(np.zeros((4, 2)), domains)


def test_plot_latent_joins_pairs():
    x, domains = two_domains(2.0, n=4)
    ax = plot_latent(embed_pca(x), domains, paired=True)
    assert len(ax.lines) == 4
    with pytest.raises(ValueError, match="paired"):
        plot_latent(np.zeros((3, 2)), ["a", "a", "b"], paired=True)
