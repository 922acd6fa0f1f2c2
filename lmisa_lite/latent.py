"""How far apart the two domains sit in the network's feature space.

Domain adaptation aims at features that look the same for source and target images. Three tools measure that
on the encoder bottleneck of a trained :class:`~lmisa_lite.networks.LMISANet`:

- :func:`bottleneck_features` turns prepared 2D images into one feature vector each (global pooling);
- :func:`embed_pca` and :func:`embed_tsne` map those vectors to 2D for a scatter plot (:func:`plot_latent`);
- :func:`domain_classifier_accuracy` trains a linear classifier to tell the domains apart: cross-validated
  accuracy near 0.5 means aligned features, near 1.0 separable ones. :func:`proxy_a_distance` turns that
  accuracy into the proxy A-distance of Ben-David et al. (0 = aligned, 2 = separable).

The forward pass runs in torch; PCA, t-SNE and the classifier come from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _as_stack(images: Any) -> np.ndarray:
    """``(N, X, Y)`` float32 from an array ``(X, Y)``, ``(N, X, Y)``, ``(N, 1, X, Y)``, a tensor or a list."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, (list, tuple)):
        shapes = {np.shape(im) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"images: expected images of one shape, got shapes {sorted(shapes)}")
        images = np.stack([np.asarray(im) for im in images])
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim == 2:
        stack = stack[None]
    elif stack.ndim == 4 and stack.shape[1] == 1:
        stack = stack[:, 0]
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(
            f"images: expected prepared 2D images (N, X, Y) or (N, 1, X, Y), got shape {stack.shape}"
        )
    if not np.isfinite(stack).all():
        raise ValueError("images: contains NaN or infinite values")
    return stack


def bottleneck_features(
    model: torch.nn.Module,
    images: Any,
    *,
    device: str | torch.device = "auto",
    pool: str = "mean",
    batch_size: int = 16,
) -> np.ndarray:
    """Encoder bottleneck features of prepared 2D images, one vector per image.

    Images are padded (with each image's minimum, the background of a prepared input, as in training) to a
    multiple of ``2**(depth-1)``, encoded with ``model.encode`` and pooled over space.

    Args:
        model: A 2D :class:`~lmisa_lite.networks.LMISANet` (anything with ``encode`` and ``depth``).
        images: Network inputs (see :func:`lmisa_lite.preprocessing.model_input`): ``(N, X, Y)``,
            ``(N, 1, X, Y)``, one ``(X, Y)`` image, a list of equally shaped ``(X, Y)`` arrays, or a tensor.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        pool: ``"mean"`` (global average pooling) or ``"max"`` (global max pooling).
        batch_size: Images per forward pass.

    Returns:
        float32 ``(N, F)``, ``F = base_filters * 2**depth`` channels of the bottleneck (256 by default).

    Raises:
        ValueError: If ``images`` is not a stack of 2D images, the model is not 2D, or ``pool`` or
            ``batch_size`` is invalid.

    Examples:
        >>> from lmisa_lite.networks import LMISANet
        >>> net = LMISANet(spatial_dims=2, base_filters=4)
        >>> bottleneck_features(net, np.zeros((3, 30, 30), np.float32), device="cpu").shape
        (3, 64)
    """
    from lmisa_lite.device import evaluation_mode

    if pool not in ("mean", "max"):
        raise ValueError(f"pool={pool!r}: expected 'mean' or 'max'")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if getattr(model, "spatial_dims", 2) != 2 or not hasattr(model, "encode"):
        raise ValueError("model: expected a 2D network with an encode method, e.g. LMISANet(spatial_dims=2)")
    stack = _as_stack(images)
    divisor = 2 ** (int(getattr(model, "depth", 1)) - 1)
    size = tuple(-(-s // divisor) * divisor for s in stack.shape[1:])
    if size != stack.shape[1:]:  # centred, like the padding of training and inference
        pad = [((s - n) // 2, s - n - (s - n) // 2) for n, s in zip(stack.shape[1:], size)]
        stack = np.stack([np.pad(im, pad, constant_values=im.min()) for im in stack])

    out = []
    with evaluation_mode(model, device) as target:
        for start in range(0, len(stack), batch_size):
            x = (
                torch.from_numpy(np.ascontiguousarray(stack[start : start + batch_size]))
                .unsqueeze(1)
                .to(target)
            )
            h = model.encode(x).float().flatten(2)  # (B, F, X' * Y')
            out.append((h.mean(2) if pool == "mean" else h.amax(2)).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def _as_features(features: Any, *, min_rows: int = 1) -> np.ndarray:
    """``(N, F)`` float64 from array-like features, checked to be finite with ``N >= min_rows``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"features: expected a 2D array (N, F) with N >= {min_rows}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: contains NaN or infinite values")
    return x


def embed_pca(
    features: Any, n: int = 2, *, return_variance: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Project features onto their ``n`` principal components (:class:`sklearn.decomposition.PCA`).

    The features are centred and decomposed by an exact (LAPACK) singular value decomposition. Each
    component's sign is fixed so that its largest loading is positive, which makes the picture reproducible
    across runs and platforms.

    Args:
        features: ``(N, F)``.
        n: Number of components, at most ``min(N, F)``.
        return_variance: Also return the fraction of the total variance each component explains.

    Returns:
        ``(N, n)`` float64 coordinates, or ``(coordinates, explained_variance_ratio (n,))`` with the ratios
        in decreasing order. Without any variance (one row, or only constant features) coordinates and
        ratios are 0.

    Raises:
        ValueError: If ``features`` is not a finite 2D array or ``n`` is out of range.

    Examples:
        >>> x = np.array([[0.0, 1.0], [2.0, 1.0], [5.0, 1.0]])
        >>> embed_pca(x, 1).round(3).ravel().tolist()
        [-2.333, -0.333, 2.667]
    """
    x = _as_features(features)
    if not 1 <= n <= min(x.shape):
        raise ValueError(f"n={n}: expected 1 <= n <= min(N, F) = {min(x.shape)}")
    pca = PCA(n_components=n, svd_solver="full")
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 variance ratios when nothing varies
        coords = pca.fit_transform(x)
        ratio = np.nan_to_num(pca.explained_variance_ratio_)
    return (coords, ratio) if return_variance else coords


def embed_tsne(
    features: Any,
    n: int = 2,
    *,
    perplexity: float = 15.0,
    steps: int = 1000,
    seed: int = 0,
    learning_rate: float | None = None,
) -> np.ndarray:
    """t-SNE embedding (:class:`sklearn.manifold.TSNE`, exact gradients; for a few hundred points).

    Features are reduced to at most 50 principal components first (:func:`embed_pca`). The map starts from
    the PCA of the (reduced) features and is optimised as in van der Maaten & Hinton (2008): 250 steps of
    early exaggeration (x12), then plain steps with adaptive gains; scikit-learn stops early once 300 steps
    bring no progress. Read a t-SNE map for its clusters, not for their sizes or the gaps between them.

    Args:
        features: ``(N, F)`` with ``N >= 4``.
        n: Output dimensions.
        perplexity: Effective number of neighbours, clipped to ``(N - 1) / 3``.
        steps: Most gradient steps (``max_iter``), at least 250 (the exaggeration phase).
        seed: ``random_state`` of the PCA initialisation (and of the random one where ``n > min(N, F)``);
            a fixed seed gives the same map.
        learning_rate: Step size; None uses scikit-learn's ``"auto"`` rule, ``max(N / 48, 50)`` in its units
            (which are 4 times those of the original paper's gradient).

    Returns:
        ``(N, n)`` float64 coordinates (centred).

    Raises:
        ValueError: If ``features`` has fewer than 4 rows or an option is out of range.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(0, 1, (10, 5)), rng.normal(8, 1, (10, 5))])
        >>> embed_tsne(x, steps=300).shape
        (20, 2)
    """
    x = _as_features(features, min_rows=4)
    if n < 1 or perplexity <= 0 or steps < 250:
        raise ValueError(
            f"n={n}, perplexity={perplexity}, steps={steps}: expected n >= 1, perplexity > 0, steps >= 250"
        )
    if x.shape[1] > 50:
        x = embed_pca(x, min(50, len(x)))
    tsne = TSNE(
        n_components=n,
        perplexity=min(perplexity, (len(x) - 1) / 3),
        learning_rate="auto" if learning_rate is None else float(learning_rate),
        max_iter=int(steps),
        init="pca" if n <= min(x.shape) else "random",
        method="exact",
        random_state=seed,
    )
    y = tsne.fit_transform(x).astype(np.float64)
    return y - y.mean(0)


def domain_classifier_accuracy(
    features: Any, domains: Sequence[Any], *, folds: int = 5, seed: int = 0, l2: float = 1.0
) -> float:
    """Cross-validated accuracy of a linear classifier that tells two domains apart from their features.

    The classifier is a scikit-learn pipeline of :class:`~sklearn.preprocessing.StandardScaler` (fit on each
    training part, so the held-out part is scaled with the training mean and standard deviation; constant
    features are left unscaled) and an L2-regularised :class:`~sklearn.linear_model.LogisticRegression` with
    ``C = 1 / l2``, i.e. penalty ``l2 / 2 * ||w||^2`` on the summed log-loss, bias not penalised. It is
    scored by :func:`~sklearn.model_selection.cross_val_score` over
    :class:`~sklearn.model_selection.StratifiedKFold` folds, shuffled with ``random_state=seed``. The
    regularisation matters: with more feature channels than images, any two sets of points are linearly
    separable, and only a penalised classifier measures a real difference.

    Args:
        features: ``(N, F)``, e.g. from :func:`bottleneck_features`.
        domains: ``N`` domain labels with exactly two distinct values (strings or numbers).
        folds: Number of cross-validation folds, at least 2 and at most the size of the smaller domain.
        seed: Seeds the fold assignment.
        l2: Strength of the L2 penalty (> 0).

    Returns:
        Mean held-out accuracy over the folds: about 0.5 when the domains are indistinguishable, 1.0 when a
        linear boundary separates them.

    Raises:
        ValueError: If ``features`` and ``domains`` disagree in length, there are not exactly two domains,
            ``folds`` does not fit the data, or ``l2`` is not positive.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(0, 1, (20, 3)), rng.normal(5, 1, (20, 3))])
        >>> domain_classifier_accuracy(x, ["ct"] * 20 + ["mri"] * 20)
        1.0
    """
    x = _as_features(features)
    labels = np.asarray(domains)
    if labels.shape != (len(x),):
        raise ValueError(
            f"domains: expected {len(x)} labels (one per row of features), got shape {labels.shape}"
        )
    names, counts = np.unique(labels, return_counts=True)
    if len(names) != 2:
        raise ValueError(f"domains: expected exactly two distinct domains, got {names.tolist()}")
    smallest = int(counts.min())
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= smallest:
        raise ValueError(
            f"folds={folds!r}: expected an integer in [2, {smallest}] (the smaller domain's size)"
        )
    if not l2 > 0:
        raise ValueError(f"l2={l2}: expected a positive penalty")
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=1000))
    splits = StratifiedKFold(n_splits=int(folds), shuffle=True, random_state=seed)
    return float(cross_val_score(classifier, x, labels, cv=splits, scoring="accuracy").mean())


def proxy_a_distance(acc: float) -> float:
    """Proxy A-distance ``2 * (1 - 2 * err)`` with ``err = 1 - acc`` the domain classifier's error.

    0 means the domains cannot be told apart (accuracy 0.5), 2 that they are perfectly separable. A
    below-chance accuracy gives a negative value (reported as it is, not clipped).

    Args:
        acc: Domain classifier accuracy in ``[0, 1]``, e.g. from :func:`domain_classifier_accuracy`.

    Returns:
        The proxy A-distance in ``[-2, 2]``.

    Raises:
        ValueError: If ``acc`` is not in ``[0, 1]``.

    Examples:
        >>> proxy_a_distance(0.5), proxy_a_distance(1.0), proxy_a_distance(0.75)
        (0.0, 2.0, 1.0)
    """
    acc = float(acc)
    if not 0.0 <= acc <= 1.0:
        raise ValueError(f"acc={acc}: expected an accuracy in [0, 1]")
    err = 1.0 - acc
    return 2.0 * (1.0 - 2.0 * err)


def plot_latent(embedding: Any, domains: Sequence[Any], *, ax: Any = None, title: str | None = None) -> Any:
    """Scatter plot of a 2D embedding, one colour per domain.

    Args:
        embedding: ``(N, 2)`` coordinates, e.g. from :func:`embed_pca` or :func:`embed_tsne`.
        domains: ``N`` domain labels; the legend lists them in order of first appearance.
        ax: Matplotlib axes to draw into; None makes a new figure.
        title: Axes title.

    Returns:
        The matplotlib ``Axes``.

    Raises:
        ValueError: If ``embedding`` is not ``(N, 2)`` or ``domains`` has another length.

    Examples:
        >>> ax = plot_latent(np.zeros((4, 2)), ["ct", "ct", "mri", "mri"], title="bottleneck")
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['ct', 'mri']
    """
    points = np.asarray(embedding, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"embedding: expected coordinates (N, 2), got shape {points.shape}")
    labels = np.asarray(domains)
    if labels.shape != (len(points),):
        raise ValueError(f"domains: expected {len(points)} labels, got shape {labels.shape}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(4.5, 4))
    markers = "osD^v<>ph"
    order = list(dict.fromkeys(labels.tolist()))
    for i, name in enumerate(order):
        mask = labels == name
        ax.scatter(
            points[mask, 0],
            points[mask, 1],
            s=22,
            alpha=0.75,
            marker=markers[i % len(markers)],
            label=str(name),
        )
    ax.legend(title="domain", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
