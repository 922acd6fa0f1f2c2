"""Tests for lmisa_lite.latent: bottleneck features, PCA and t-SNE embeddings, domain classifier, plotting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmisa_lite.latent import (
    bottleneck_features,
    domain_classifier_accuracy,
    embed_pca,
    embed_tsne,
    plot_latent,
    proxy_a_distance,
)
from lmisa_lite.networks import LMISANet

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
