"""How far apart the two domains sit in the network's feature space.

Domain adaptation aims at features that look the same for source and target images. Three tools measure that
on the encoder bottleneck of a trained :class:`~lmisa_lite.networks.LMISANet`:

- :func:`bottleneck_features` turns prepared 2D images into one feature vector each (global pooling);
- :func:`embed_pca` and :func:`embed_tsne` map those vectors to 2D for a scatter plot (:func:`plot_latent`);
- :func:`domain_classifier_accuracy` trains a linear classifier to tell the domains apart: cross-validated
  accuracy near 0.5 means aligned features, near 1.0 separable ones. :func:`proxy_a_distance` turns that
  accuracy into the proxy A-distance of Ben-David et al. (0 = aligned, 2 = separable).

Everything runs on NumPy (and torch for the forward pass); no machine-learning library is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


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
        images: Network inputs (MLNGM + z-score, see :func:`data_utils.prepare.network_input`): ``(N, X, Y)``,
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
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"features: expected a 2D array (N, F) with N >= {min_rows}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: contains NaN or infinite values")
    return x


def _thin_svd(a: np.ndarray, *, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U * S, S, Vt)`` of ``a`` for its non-negligible singular values, largest first.

    Computed from the eigenvectors of the smaller Gram matrix (``a a^T`` or ``a^T a``): for the wide, short
    feature matrices here that is a small symmetric problem, and it avoids LAPACK's SVD driver, which is
    slow when its threads compete for a busy CPU.
    """
    wide = a.shape[1] > a.shape[0]
    evals, vecs = np.linalg.eigh(a @ a.T if wide else a.T @ a)
    order = np.argsort(evals)[::-1]
    evals, vecs = np.clip(evals[order], 0, None), vecs[:, order]
    keep = evals > rtol * max(float(evals[0]), 1e-300) if len(evals) else evals > 0
    if not keep.any():
        keep[:1] = True
    s = np.sqrt(evals[keep])
    safe = np.where(s > 0, s, 1.0)
    if wide:
        u = vecs[:, keep]
        return u * s, s, (a.T @ u / safe).T
    v = vecs[:, keep]
    return a @ v, s, v.T


def embed_pca(
    features: Any, n: int = 2, *, return_variance: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Project features onto their ``n`` principal components (centred, by singular value decomposition).

    Each component's sign is fixed so that its largest loading is positive, which makes the picture
    reproducible across runs and platforms.

    Args:
        features: ``(N, F)``.
        n: Number of components, at most ``min(N, F)``.
        return_variance: Also return the fraction of the total variance each component explains.

    Returns:
        ``(N, n)`` float64 coordinates, or ``(coordinates, explained_variance_ratio (n,))``.

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
    centred = x - x.mean(0)
    coords, s, vt = _thin_svd(centred)
    signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])
    signs[signs == 0] = 1
    coords = (coords * signs)[:, :n]
    coords = np.pad(coords, ((0, 0), (0, n - coords.shape[1])))  # directions without variance are 0
    if not return_variance:
        return coords
    total = float((s**2).sum())
    ratio = np.pad(s**2 / total if total > 0 else np.zeros(len(s)), (0, n))[:n]
    return coords, ratio


def _conditional_probabilities(sq_dist: np.ndarray, perplexity: float) -> np.ndarray:
    """Row-wise Gaussian affinities whose entropy matches ``log(perplexity)`` (bisection on the precision)."""
    n = len(sq_dist)
    p = np.zeros((n, n))
    target = np.log(perplexity)
    for i in range(n):
        d = np.delete(sq_dist[i], i)
        d = d - d.min()  # shift for stability; normalisation cancels it
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(100):
            w = np.exp(-d * beta)
            total = w.sum()
            entropy = np.log(total) + beta * (d * w).sum() / total
            if abs(entropy - target) < 1e-5:
                break
            if entropy > target:  # too flat: sharpen
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = (beta + lo) / 2
        p[i, np.arange(n) != i] = w / total
    return p


def embed_tsne(
    features: Any,
    n: int = 2,
    *,
    perplexity: float = 15.0,
    steps: int = 1000,
    seed: int = 0,
    learning_rate: float | None = None,
) -> np.ndarray:
    """t-SNE embedding (exact gradients; for a few hundred points, as in the tutorial's test sets).

    Features are reduced to at most 50 principal components first. The optimisation follows van der Maaten &
    Hinton (2008): early exaggeration (x12) for the first quarter of the steps (at most 250), momentum 0.5
    during it and 0.8 after, and per-coordinate adaptive gains. Read a t-SNE map for its clusters, not for
    their sizes or the gaps between them.

    Args:
        features: ``(N, F)`` with ``N >= 4``.
        n: Output dimensions.
        perplexity: Effective number of neighbours, clipped to ``(N - 1) / 3``.
        steps: Gradient steps.
        seed: Seeds the random initialisation.
        learning_rate: Step size; None uses ``max(N / 12, 50)``.

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
    if n < 1 or perplexity <= 0 or steps < 1:
        raise ValueError(f"n={n}, perplexity={perplexity}, steps={steps}: expected positive values")
    m = len(x)
    if x.shape[1] > 50:
        x = embed_pca(x, min(50, m))
    sq = np.square(x[:, None, :] - x[None, :, :]).sum(-1)
    p = _conditional_probabilities(sq, min(perplexity, (m - 1) / 3))
    p = np.maximum((p + p.T) / (2 * m), 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-4, (m, n))
    velocity, gains = np.zeros_like(y), np.ones_like(y)
    lr = max(m / 12, 50.0) if learning_rate is None else float(learning_rate)
    early = min(250, steps // 4)
    for step in range(steps):
        exaggeration, momentum = (12.0, 0.5) if step < early else (1.0, 0.8)
        diff = y[:, None, :] - y[None, :, :]
        kernel = 1.0 / (1.0 + np.square(diff).sum(-1))  # Student-t with one degree of freedom
        np.fill_diagonal(kernel, 0.0)
        q = np.maximum(kernel / kernel.sum(), 1e-12)
        grad = 4.0 * (((exaggeration * p - q) * kernel)[:, :, None] * diff).sum(1)
        same_direction = np.sign(grad) == np.sign(velocity)
        gains = np.maximum(np.where(same_direction, gains * 0.8, gains + 0.2), 0.01)
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(0)
    return y


def _stratified_folds(classes: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """Fold index of every sample: each class is shuffled and dealt round-robin over the folds."""
    fold = np.empty(len(classes), dtype=np.int64)
    offset = 0
    for c in np.unique(classes):
        idx = rng.permutation(np.flatnonzero(classes == c))
        fold[idx] = (np.arange(len(idx)) + offset) % folds
        offset += len(idx)  # keeps fold sizes balanced across classes
    return fold


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iterations: int = 50) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by Newton's method; the bias is not penalised."""
    n, f = x.shape
    design = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(f + 1, l2)
    penalty[-1] = 0.0
    w = np.zeros(f + 1)
    for _ in range(iterations):
        z = np.clip(design @ w, -30, 30)
        p = 1.0 / (1.0 + np.exp(-z))
        grad = design.T @ (p - y) + penalty * w
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(f + 1)
        step = np.linalg.solve(hessian, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1], float(w[-1])


def domain_classifier_accuracy(
    features: Any, domains: Sequence[Any], *, folds: int = 5, seed: int = 0, l2: float = 1.0
) -> float:
    """Cross-validated accuracy of a linear classifier that tells two domains apart from their features.

    Per fold, features are standardised with the training part's mean and standard deviation, and an
    L2-regularised logistic regression (penalty ``l2 / 2 * ||w||^2`` on the summed log-loss, like
    scikit-learn's ``C = 1 / l2``) is fit by Newton's method. Folds are stratified by domain and drawn with
    ``seed``. The regularisation matters: with more feature channels than images, any two sets of points
    are linearly separable, and only a penalised classifier measures a real difference.

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
    names, classes = np.unique(labels, return_inverse=True)
    if len(names) != 2:
        raise ValueError(f"domains: expected exactly two distinct domains, got {names.tolist()}")
    smallest = int(np.bincount(classes).min())
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= smallest:
        raise ValueError(
            f"folds={folds!r}: expected an integer in [2, {smallest}] (the smaller domain's size)"
        )
    if not l2 > 0:
        raise ValueError(f"l2={l2}: expected a positive penalty")
    fold = _stratified_folds(classes, int(folds), np.random.default_rng(seed))
    accuracies = []
    for k in range(int(folds)):
        train, test = fold != k, fold == k
        mean, std = x[train].mean(0), x[train].std(0)
        std[std < 1e-12] = 1.0  # a constant feature carries no information either way
        z_train, z_test = (x[train] - mean) / std, (x[test] - mean) / std
        if z_train.shape[1] > z_train.shape[0]:
            # With more features than images, the weights that matter lie in the span of the training rows
            # (the rest only adds penalty), so fitting in that basis gives the same classifier, faster.
            _, _, axes = _thin_svd(z_train)
            z_train, z_test = z_train @ axes.T, z_test @ axes.T
        w, b = _fit_logistic(z_train, classes[train].astype(np.float64), l2)
        predicted = (z_test @ w + b) > 0
        accuracies.append(float((predicted == classes[test].astype(bool)).mean()))
    return float(np.mean(accuracies))


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
