"""How far apart the two domains sit in the network's feature space.

Domain adaptation aims at features that look the same for source and target images. These tools measure that
on the encoder bottleneck of a trained :class:`~lmisa_lite.networks.LMISANet`:

- :func:`bottleneck_features`: one feature vector per prepared 2D image (pooled globally or inside a mask);
- :func:`embed_pca` and :func:`embed_tsne` map those vectors to 2D for a scatter plot (:func:`plot_latent`);
- :func:`domain_classifier_accuracy` trains a linear classifier to tell the domains apart: cross-validated
  accuracy near 0.5 means aligned features, near 1.0 separable ones. :func:`proxy_a_distance` turns that
  accuracy into the proxy A-distance of Ben-David et al. (0 = aligned, 2 = separable);
- :func:`linear_cka` compares the features of the *same subjects* in both domains (a phantom renders one
  anatomy as CT and as MRI): 1 when the subjects are arranged alike in both, about 0 when unrelated;
- :func:`foreground_shift`: how far the target's organ features sit from the source's, in units of the
  source's organ-to-background distance; :func:`domain_alignment` computes every measure for one model.

A classifier easily separates two modalities that differ in noise and texture, even for a model that segments
both well, so its accuracy is often 1.0 for every model; the paired measures still rank them. The forward pass
runs in torch; PCA, t-SNE and the classifier come from scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lmisa_lite.preprocessing import model_input


def _as_stack(images: Any, what: str = "images") -> np.ndarray:
    """``(N, X, Y)`` float32 from an array ``(X, Y)``, ``(N, X, Y)``, ``(N, 1, X, Y)``, a tensor or a list."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if isinstance(images, (list, tuple)):
        shapes = {np.shape(im) for im in images}
        if len(shapes) != 1:
            raise ValueError(f"{what}: expected arrays of one shape, got shapes {sorted(shapes)}")
        images = np.stack([np.asarray(im) for im in images])
    stack = np.asarray(images, dtype=np.float32)
    if stack.ndim == 2:
        stack = stack[None]
    elif stack.ndim == 4 and stack.shape[1] == 1:
        stack = stack[:, 0]
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise ValueError(f"{what}: expected 2D arrays (N, X, Y) or (N, 1, X, Y), got shape {stack.shape}")
    if not np.isfinite(stack).all():
        raise ValueError(f"{what}: contains NaN or infinite values")
    return stack


def bottleneck_features(model: torch.nn.Module, images: Any, *, device: str | torch.device = "auto",
                        pool: str = "mean", batch_size: int = 16, masks: Any = None) -> np.ndarray:
    """Encoder bottleneck features of prepared 2D images, one vector per image.

    Images are padded (with each image's minimum, the background of a prepared input, as in training) to a
    multiple of ``2**(depth-1)``, encoded with ``model.encode`` and pooled over space. With ``masks``, the
    mean is taken inside each image's mask: a mask is averaged over the blocks of ``2**(depth-1)`` pixels that
    make one bottleneck position, and those fractions weight the positions.

    Args:
        model: A 2D :class:`~lmisa_lite.networks.LMISANet` (anything with ``encode`` and ``depth``).
        images: Network inputs (see :func:`lmisa_lite.preprocessing.model_input`): ``(N, X, Y)``,
            ``(N, 1, X, Y)``, one ``(X, Y)`` image, a list of equally shaped ``(X, Y)`` arrays, or a tensor.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        pool: ``"mean"`` (global average pooling) or ``"max"`` (global max pooling).
        batch_size: Images per forward pass.
        masks: None, or one mask per image in the layouts ``images`` accepts (booleans or weights in
            [0, 1], e.g. ``label > 0`` for the foreground); only with ``pool="mean"``.

    Returns:
        float32 ``(N, F)``, ``F = base_filters * 2**depth`` channels of the bottleneck (256 by default).

    Raises:
        ValueError: If ``images`` is not a stack of 2D images, the model is not 2D, ``pool`` or
            ``batch_size`` is invalid, or a mask has another shape than its image or is empty.

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
    if masks is not None and pool != "mean":
        raise ValueError(f"masks: pooling inside a mask needs pool='mean', got pool={pool!r}")
    stack = _as_stack(images)
    divisor = 2 ** (int(getattr(model, "depth", 1)) - 1)
    size = tuple(-(-s // divisor) * divisor for s in stack.shape[1:])
    pad = [((s - n) // 2, s - n - (s - n) // 2) for n, s in zip(stack.shape[1:], size)]
    weights = None if masks is None else _block_weights(masks, stack.shape, pad, divisor)
    if size != stack.shape[1:]:  # centred, like the padding of training and inference
        stack = np.stack([np.pad(im, pad, constant_values=im.min()) for im in stack])

    out = []
    with evaluation_mode(model, device) as target:
        for start in range(0, len(stack), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(stack[start : start + batch_size]))[:, None].to(target)
            h = model.encode(x).float().flatten(2).cpu().numpy()  # (B, F, X' * Y')
            if weights is not None:
                w = weights[start : start + batch_size]
                out.append(np.einsum("bfp,bp->bf", h, w) / w.sum(1, keepdims=True))
            else:
                out.append(h.mean(2) if pool == "mean" else h.max(2))
    return np.concatenate(out).astype(np.float32)


def _block_weights(masks: Any, shape: tuple[int, ...], pad: list[tuple[int, int]], block: int) -> np.ndarray:
    """``(N, X' * Y')`` weights: each mask padded like its image and averaged over ``block``-pixel squares."""
    stack = _as_stack(masks, "masks")
    if stack.shape != shape:
        raise ValueError(f"masks: expected one mask per image, of shape {shape}, got {stack.shape}")
    stack = np.stack([np.pad(m, pad) for m in stack]).astype(np.float64)
    n, x, y = stack.shape
    w = stack.reshape(n, x // block, block, y // block, block).mean((2, 4)).reshape(n, -1)
    empty = np.flatnonzero(w.sum(1) <= 0)
    if empty.size:
        raise ValueError(f"masks: mask {int(empty[0])} is empty; every image needs some of its region")
    return w


def _as_features(features: Any, *, min_rows: int = 1) -> np.ndarray:
    """``(N, F)`` float64 from array-like features, checked to be finite with ``N >= min_rows``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"features: expected a 2D array (N, F) with N >= {min_rows}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features: contains NaN or infinite values")
    return x


def embed_pca(features: Any, n: int = 2, *,
              return_variance: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
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


def embed_tsne(features: Any, n: int = 2, *, perplexity: float = 15.0, steps: int = 1000, seed: int = 0,
               learning_rate: float | None = None) -> np.ndarray:
    """t-SNE embedding (:class:`sklearn.manifold.TSNE`, exact gradients; for a few hundred points).

    Features are reduced to at most 50 principal components first (:func:`embed_pca`); the map starts from
    their PCA and is optimised as in van der Maaten & Hinton (2008): 250 steps of early exaggeration (x12),
    then plain steps with adaptive gains, stopping once 300 steps bring no progress. Read a t-SNE map for its
    clusters, not for their sizes or the gaps between them.

    Args:
        features: ``(N, F)`` with ``N >= 4``.
        n: Output dimensions.
        perplexity: Effective number of neighbours, clipped to ``(N - 1) / 3``.
        steps: Most gradient steps (``max_iter``), at least 250 (the exaggeration phase).
        seed: ``random_state`` of the initialisation (random where ``n > min(N, F)``): same seed, same map.
        learning_rate: Step size; None: scikit-learn's ``"auto"``, ``max(N / 48, 50)`` in its units (4 times
            those of the original paper's gradient).

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
        raise ValueError(f"n={n}, perplexity={perplexity}, steps={steps}: expected n >= 1, perplexity > 0, "
                         "steps >= 250")
    if x.shape[1] > 50:
        x = embed_pca(x, min(50, len(x)))
    tsne = TSNE(n_components=n, perplexity=min(perplexity, (len(x) - 1) / 3),
                learning_rate="auto" if learning_rate is None else float(learning_rate), max_iter=int(steps),
                init="pca" if n <= min(x.shape) else "random", method="exact", random_state=seed)
    y = tsne.fit_transform(x).astype(np.float64)
    return y - y.mean(0)


def domain_classifier_accuracy(features: Any, domains: Sequence[Any], *, folds: int = 5, seed: int = 0,
                               l2: float = 1.0) -> float:
    """Cross-validated accuracy of a linear classifier that tells two domains apart from their features.

    A scikit-learn pipeline of :class:`~sklearn.preprocessing.StandardScaler` (fit on each training part;
    constant features left unscaled) and an L2-regularised :class:`~sklearn.linear_model.LogisticRegression`
    with ``C = 1 / l2`` (penalty ``l2 / 2 * ||w||^2`` on the summed log-loss, bias not penalised), scored over
    :class:`~sklearn.model_selection.StratifiedKFold` folds shuffled with ``random_state=seed``. The penalty
    matters: with more channels than images any two sets of points are linearly separable.

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
        raise ValueError(f"domains: expected {len(x)} labels (one per row of features), got {labels.shape}")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) != 2:
        raise ValueError(f"domains: expected exactly two distinct domains, got {names.tolist()}")
    smallest = int(counts.min())
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= smallest:
        raise ValueError(f"folds={folds!r}: expected an integer in [2, {smallest}] (the smaller domain)")
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
    return 2.0 * (2.0 * acc - 1.0)  # 2 * (1 - 2 * err) with err = 1 - acc


def linear_cka(x: Any, y: Any, *, debiased: bool = True) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) of two feature sets of the same samples.

    Row ``i`` of ``x`` and of ``y`` describe one sample, e.g. one subject's source and target image. With
    centred features, ``CKA = ||y.T @ x||_F**2 / (||x.T @ x||_F * ||y.T @ y||_F)``: how alike the two
    sample-by-sample similarity (Gram) matrices are. An orthogonal transform, an isotropic scaling or a shift
    of either set leaves it unchanged, so it asks whether the samples are *arranged* alike, not whether the
    features coincide. With about as many channels as samples the plain estimate is biased upwards (unrelated
    random features: about 0.7 for 24 samples and 64 channels); ``debiased`` uses the unbiased HSIC estimator
    (Song et al., 2012), about 0 for unrelated features and possibly slightly negative.

    Args:
        x: ``(N, F)`` features.
        y: ``(N, G)`` features of the same ``N`` samples, in the same order.
        debiased: Use the unbiased estimator (needs ``N >= 4``).

    Returns:
        The CKA: 1.0 for features equal up to rotation and scale; 0.0 when either set has no variance.

    Raises:
        ValueError: If the inputs are not finite 2D arrays with the same number of rows (at least 4 when
            ``debiased``, else 2).

    Examples:
        >>> x = np.random.default_rng(0).normal(size=(20, 5))
        >>> round(linear_cka(x, 3.0 * x[:, ::-1]), 6)
        1.0
    """
    rows = 4 if debiased else 2
    a, b = _as_features(x, min_rows=rows), _as_features(y, min_rows=rows)
    if len(a) != len(b):
        raise ValueError(f"x, y: expected the same samples (rows) in both, got {len(a)} and {len(b)} rows")
    a, b = a - a.mean(0), b - b.mean(0)
    k, lg = a @ a.T, b @ b.T
    if debiased:
        scale = np.sqrt(max(_unbiased_hsic(k, k), 0.0) * max(_unbiased_hsic(lg, lg), 0.0))
        return float(_unbiased_hsic(k, lg) / scale) if scale > 0 else 0.0
    scale = np.linalg.norm(k) * np.linalg.norm(lg)
    return float((k * lg).sum() / scale) if scale > 0 else 0.0


def _unbiased_hsic(k: np.ndarray, lg: np.ndarray) -> float:
    """The unbiased HSIC estimator (Song et al., 2012) from two ``(N, N)`` Gram matrices, ``N >= 4``."""
    n = len(k)
    k, lg = k - np.diag(np.diag(k)), lg - np.diag(np.diag(lg))
    value = (k * lg).sum() + k.sum() * lg.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * k.sum(0) @ lg.sum(0)
    return float(value / (n * (n - 3)))


def foreground_shift(source_foreground: Any, target_foreground: Any, source_background: Any) -> float:
    """How far the target's organ features sit from the source's, relative to organ against background.

    ``|mean(target_fg) - mean(source_fg)| / |mean(source_fg) - mean(source_bg)|`` for features pooled inside
    each image's foreground and background (:func:`bottleneck_features` with ``masks``). The segmentation head
    learnt to tell source organ from source background: at 0 the target's organ features sit where it learnt
    them, at 1 they have moved as far as the background is. It needs target labels: for analysis only, never
    for training or model selection.

    Args:
        source_foreground: ``(N, F)`` foreground features of source images.
        target_foreground: ``(M, F)`` foreground features of target images.
        source_background: ``(K, F)`` background features of source images.

    Returns:
        The shift, >= 0 (0 when both centroid distances are 0; infinite when only the source's is).

    Raises:
        ValueError: If an input is not a finite 2D array or the channel counts differ.

    Examples:
        >>> fg, bg = np.array([[2.0, 0.0], [4.0, 0.0]]), np.zeros((2, 2))
        >>> foreground_shift(fg, fg + [0.0, 1.5], bg)
        0.5
    """
    fg, tg, bg = (_as_features(v) for v in (source_foreground, target_foreground, source_background))
    if not fg.shape[1] == tg.shape[1] == bg.shape[1]:
        raise ValueError(f"features: expected one channel count, got {[v.shape[1] for v in (fg, tg, bg)]}")
    moved = float(np.linalg.norm(tg.mean(0) - fg.mean(0)))
    scale = float(np.linalg.norm(fg.mean(0) - bg.mean(0)))
    return moved / scale if scale > 0 else (0.0 if moved == 0 else float("inf"))


@dataclass
class LatentAlignment:
    """What :func:`domain_alignment` returns.

    Attributes:
        scores: ``domain_accuracy``, ``proxy_a_distance``, ``cka`` (debiased linear CKA of the paired
            whole-image features) and ``foreground_shift``.
        features: ``(2N, F)`` whole-image features: ``N`` source rows, then the target rows.
        domains: ``2N`` domain names, one per row of ``features``.
    """

    scores: dict[str, float]
    features: np.ndarray
    domains: list[str]


def domain_alignment(model: torch.nn.Module, source: Sequence[Any], target: Sequence[Any], *,
                     names: tuple[str, str] = ("source", "target"), folds: int = 5, seed: int = 0,
                     device: str | torch.device = "auto") -> LatentAlignment:
    """Every latent-space measure of this module for one 2D model and the same subjects in two domains.

    Each case is prepared as the model was trained (:func:`lmisa_lite.preprocessing.model_input`) and
    encoded once per pooling: over the whole image, inside its foreground (``label > 0``, all classes) and,
    for the source, inside its background.

    Args:
        model: A trained 2D :class:`~lmisa_lite.networks.LMISANet`.
        source: At least 4 cases with ``image`` ``(X, Y)`` and a ``label`` holding some foreground, e.g.
            ``make_phantom(..., seed=k)`` for subjects whose slice cuts the organ.
        target: The same subjects in the target domain, in the same order.
        names: Domain names for :attr:`LatentAlignment.domains`.
        folds: Cross-validation folds of the domain classifier, at most ``len(source)``.
        seed: Seeds the folds.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...

    Returns:
        A :class:`LatentAlignment`.

    Raises:
        ValueError: If the two lists differ in length or hold fewer than 4 cases, or a case has no foreground
            or no background.

    Examples:
        >>> from data_utils.phantoms import make_phantom
        >>> from lmisa_lite.networks import LMISANet
        >>> ct, mri = ([make_phantom("kidney", m, dims=2, shape=(32, 32), seed=k) for k in range(4)]
        ...            for m in ("ct", "mri"))
        >>> sorted(domain_alignment(LMISANet(base_filters=4), ct, mri, folds=2, device="cpu").scores)
        ['cka', 'domain_accuracy', 'foreground_shift', 'proxy_a_distance']
    """
    if len(source) != len(target) or len(source) < 4:
        raise ValueError(f"source, target: expected the same >= 4 subjects, got {len(source)}, {len(target)}")

    def encode(cases: Sequence[Any], region: str | None = None) -> np.ndarray:
        images = [model_input(model, c.image) for c in cases]
        masks = None if region is None else [(c.label > 0) == (region == "fg") for c in cases]
        return bottleneck_features(model, images, masks=masks, device=device)

    xs, xt = encode(source), encode(target)
    shift = foreground_shift(encode(source, "fg"), encode(target, "fg"), encode(source, "bg"))
    features = np.concatenate([xs, xt])
    domains = [names[0]] * len(xs) + [names[1]] * len(xt)
    accuracy = domain_classifier_accuracy(features, domains, folds=min(folds, len(xs)), seed=seed)
    scores = {"domain_accuracy": accuracy, "proxy_a_distance": proxy_a_distance(accuracy),
              "cka": linear_cka(xs, xt), "foreground_shift": shift}
    return LatentAlignment(scores=scores, features=features, domains=domains)


def plot_latent(embedding: Any, domains: Sequence[Any], *, ax: Any = None, title: str | None = None,
                paired: bool = False) -> Any:
    """Scatter plot of a 2D embedding, one colour per domain.

    Args:
        embedding: ``(N, 2)`` coordinates, e.g. from :func:`embed_pca` or :func:`embed_tsne`.
        domains: ``N`` domain labels; the legend lists them in order of first appearance.
        ax: Matplotlib axes to draw into; None makes a new figure.
        title: Axes title.
        paired: Row ``i`` of the first half and row ``i`` of the second half show the same subject (as in
            :attr:`LatentAlignment.features`): join each pair with a thin grey line.

    Returns:
        The matplotlib ``Axes``.

    Raises:
        ValueError: If ``embedding`` is not ``(N, 2)``, ``domains`` has another length, or ``paired`` is
            set for an odd ``N``.

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
    if paired and len(points) % 2:
        raise ValueError(f"paired: expected an even number of points (two halves), got {len(points)}")
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(4.5, 4))
    if paired:
        for a, b in zip(points[: len(points) // 2], points[len(points) // 2 :]):
            ax.plot([a[0], b[0]], [a[1], b[1]], color="0.75", lw=0.6, zorder=0)
    markers = "osD^v<>ph"
    order = list(dict.fromkeys(labels.tolist()))
    for i, name in enumerate(order):
        mask = labels == name
        ax.scatter(points[mask, 0], points[mask, 1], s=22, alpha=0.75, marker=markers[i % len(markers)],
                   label=str(name))
    ax.legend(title="domain", frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return ax
