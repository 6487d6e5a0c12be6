"""Sample quality and diversity in a feature space: pure functions on (N, D) arrays.

- ``frechet_distance``: Fréchet distance between Gaussians fitted to two feature sets
  (Heusel et al. 2017, arXiv:1706.08500; FID when the features are Inception-v3's).
- ``kid``: unbiased squared MMD with the cubic polynomial kernel, mean and std over subsets
  (Bińkowski et al. 2018, arXiv:1801.01401).
- ``inception_score``: exp E[KL(p(y|x) || p(y))] of a classifier's probabilities
  (Salimans et al. 2016, arXiv:1606.03498), mean and std over splits.
- ``prdc``: precision and recall (Kynkäänniemi et al. 2019, arXiv:1904.06991), density and
  coverage (Naeem et al. 2020, arXiv:2002.09797) from k-nearest-neighbour balls.
- ``memorization``: samples' nearest-neighbour distances to the training set against held-out
  real images' distances to it.
- ``diversity``: mean pairwise distance within a set.
- ``rank_agreement``: each feature space's ranking of the models and Kendall's tau between
  every pair of spaces' rankings (do the judges agree?).

Features are computed once by the caller (the evaluator's penultimate layer) and passed in,
so the real set's statistics are cached rather than recomputed per family.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy import linalg


def _as2d(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or len(a) < 2:
        raise ValueError(f"expected features of shape (N >= 2, D), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("features contain NaN or inf")
    return a


def gaussian_stats(x) -> tuple[np.ndarray, np.ndarray]:
    a = _as2d(x)
    return a.mean(0), np.cov(a, rowvar=False)


def frechet_from_stats(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))."""
    with warnings.catch_warnings():  # a singular product (fewer samples than dimensions) is handled
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # below: not the user's to read
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():  # singular product: regularise, as the reference FID code does
            offset = np.eye(len(cov1)) * eps
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean), 0.0))


def frechet_distance(a, b) -> float:
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def kid(a, b, subsets: int = 50, subset_size: int = 500, seed: int = 0) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / D + 1)^3; (mean, std) over random subsets."""
    x, y = _as2d(a), _as2d(b)
    m = min(subset_size, len(x), len(y))
    rng = np.random.default_rng(seed)
    d = x.shape[1]
    vals = []
    for _ in range(subsets):
        xs = x[rng.choice(len(x), m, replace=False)]
        ys = y[rng.choice(len(y), m, replace=False)]
        kxx, kyy, kxy = ((xs @ xs.T) / d + 1) ** 3, ((ys @ ys.T) / d + 1) ** 3, ((xs @ ys.T) / d + 1) ** 3
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        vals.append(off - 2 * kxy.mean())
    return float(np.mean(vals)), float(np.std(vals))


def inception_score(probs, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """exp(E KL(p(y|x) || p(y))), its mean and spread over ``splits`` parts of the rows, drawn at
    random (``seed``): class-conditional samples come in class order, and a part holding one class
    alone scores 1 whatever the images (torchmetrics' InceptionScore shuffles them too)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or (p < 0).any() or not np.allclose(p.sum(1), 1, atol=1e-4):
        raise ValueError("expected class probabilities of shape (N, K), rows summing to 1")
    p = p[np.random.default_rng(seed).permutation(len(p))]
    scores = []
    for part in np.array_split(p, max(1, min(splits, len(p)))):  # (no empty part: NaN)
        py = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + 1e-12) - np.log(py + 1e-12))).sum(1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


BLOCK_BYTES = 64 * 2**20  # the most a distance block may hold: memory stays flat as sets grow


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0))


def _row_blocks(a: np.ndarray, b: np.ndarray, block_bytes: int = BLOCK_BYTES):
    """``(rows, D)`` for consecutive row slices of ``a``: ``D`` the distances of those rows to
    every row of ``b``, at most ``block_bytes`` at a time (never the whole ``len(a) x len(b)``)."""
    rows = max(1, block_bytes // (8 * max(len(b), 1)))
    for start in range(0, len(a), rows):
        yield slice(start, start + rows), _pairwise(a[start : start + rows], b)


def nearest(a: np.ndarray, b: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Each row of ``a``'s distance to its nearest row of ``b`` (``b`` is ``a``: pass
    ``exclude_self`` to skip each row itself), block by block."""
    a, b = _as2d(a), _as2d(b)
    out = np.empty(len(a))
    for rows, d in _row_blocks(a, b):
        if exclude_self:
            d[np.arange(d.shape[0]), np.arange(rows.start, rows.start + d.shape[0])] = np.inf
        out[rows] = d.min(1)
    return out


def kth_nn_radius(a, k: int) -> np.ndarray:
    """Each row's distance to its k-th nearest other row (the k-NN ball radii of ``prdc``)."""
    a = _as2d(a)
    out = np.empty(len(a))
    for rows, d in _row_blocks(a, a):
        out[rows] = np.partition(d, k, axis=1)[:, k]  # column 0 is the point itself (distance 0)
    return out


def prdc(real, fake, k: int = 5, real_radii: np.ndarray | None = None) -> dict[str, float]:
    """Precision: share of fake samples inside some real k-NN ball; recall: share of real
    inside some fake ball; density: mean count of real balls holding each fake, over k;
    coverage: share of real balls holding at least one fake.

    Each pair follows its authors' definition and code: precision and recall use closed
    balls (``distance <= radius``, Kynkäänniemi et al.), density and coverage open ones
    (``<``, Naeem et al.'s ``prdc`` package). The two differ only where a distance equals a
    radius exactly, as when samples copy real points: open balls hold their centre and k - 1
    neighbours, so a set scored against itself has density exactly 1 (closed: (k + 1) / k).

    Distances are taken a block of real rows at a time: memory grows with the larger set,
    not with their product. ``real_radii`` (``kth_nn_radius(real, k)``) saves recomputing the
    real balls when one real set judges many fake ones."""
    r, f = _as2d(real), _as2d(fake)
    if min(len(r), len(f)) <= k:
        raise ValueError(f"prdc needs more than k={k} samples in each set")
    r_rad = kth_nn_radius(r, k) if real_radii is None else np.asarray(real_radii, dtype=np.float64)  # (R,)
    f_rad = kth_nn_radius(f, k)  # (F,)
    in_real = np.zeros(len(f), dtype=bool)  # per fake: inside some real ball
    balls = np.zeros(len(f), dtype=np.int64)  # per fake: real (open) balls holding it
    recalled, covered = np.zeros(len(r), dtype=bool), np.zeros(len(r), dtype=bool)
    for rows, d in _row_blocks(r, f):  # d: (rows, F)
        rad = r_rad[rows, None]
        in_real |= (d <= rad).any(0)
        balls += (d < rad).sum(0)
        recalled[rows] = (d <= f_rad[None, :]).any(1)
        covered[rows] = d.min(1) < r_rad[rows]
    return {
        "precision": float(in_real.mean()),
        "recall": float(recalled.mean()),
        "density": float(balls.mean() / k),
        "coverage": float(covered.mean()),
    }


MEMORIZATION_ROWS = 2000  # training images whose nearest other one sets the copy radius (the rest: drawn)


def copy_floor(train, rows: int = MEMORIZATION_ROWS, seed: int = 0) -> float:
    """The 1st percentile of training images' distances to their nearest other training image,
    from at most ``rows`` of them (a seeded draw), each against the whole set; rows with an exact
    twin in the set left out (their distance is rounding, not 0), as the augment's near-copy
    radius leaves them."""
    tr = _as2d(train)
    idx = np.arange(len(tr))
    if len(tr) > rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(tr), rows, replace=False))
    out = np.empty(len(idx))
    for block, d in _row_blocks(tr[idx], tr):
        d[np.arange(d.shape[0]), idx[block]] = np.inf  # each image's distance to itself
        out[block] = d.min(1)
    _, which, counts = np.unique(tr, axis=0, return_inverse=True, return_counts=True)
    out = out[counts[which.reshape(-1)[idx]] == 1]
    return float(np.percentile(out, 1)) if len(out) else 0.0


def memorization(samples, train, held_out, floor: float | None = None,
                 held_out_nn: np.ndarray | None = None) -> dict[str, float]:  # fmt: skip
    """Do the samples sit nearer the training images than new images of the same distribution
    do? The mean distance of each sample to its nearest image of the whole training set
    (``nn_train``) over that of ``held_out`` real images, never trained on (``nn_real``;
    ``held_out_nn``: their distances, where computed before): about 1 for a generator of new
    images, well below 1 for one that copies (0 for a copier of its training set). ``copies``:
    the share of samples at most ``floor`` (:func:`copy_floor`) from a training image. (Measured
    against a training subset the size of the test split, a copy of an image the subset left
    out went unseen: a copier of every training image scored a ratio of 0.7, as real images do.)"""
    s, tr = _as2d(samples), _as2d(train)
    to_train = nearest(s, tr)
    real = nearest(_as2d(held_out), tr) if held_out_nn is None else np.asarray(held_out_nn)
    floor = copy_floor(tr) if floor is None else floor
    return {
        "nn_train": float(to_train.mean()),
        "nn_real": float(real.mean()),
        "ratio": float(to_train.mean() / max(real.mean(), 1e-12)),
        "copies": float((to_train <= floor).mean()),
    }


def diversity(x) -> float:
    """Mean pairwise Euclidean distance within a set."""
    a = _as2d(x)
    total = sum(float(d.sum()) for _, d in _row_blocks(a, a))
    return total / (len(a) * (len(a) - 1))


def sharpness(images) -> float:
    """Mean absolute 4-neighbour Laplacian of (N, C, H, W) images in [0, 1]: edges and strokes
    score high, blur scores low. Compare against the real images' value."""
    a = np.asarray(images, dtype=np.float64)
    if a.ndim != 4:
        raise ValueError(f"expected images of shape (N, C, H, W), got {a.shape}")
    lap = 4 * a[..., 1:-1, 1:-1] - a[..., :-2, 1:-1] - a[..., 2:, 1:-1] - a[..., 1:-1, :-2] - a[..., 1:-1, 2:]
    return float(np.abs(lap).mean())


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (0 for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError("expected a non-empty 1-d sequence")
    if len(v) == 1:
        return float(v[0]), 0.0
    from scipy import stats

    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean()), float(half)


def ranks(values: dict[str, float]) -> dict[str, float]:
    """Rank 1 = lowest value; ties share their mean rank."""
    from scipy import stats

    names = list(values)
    r = stats.rankdata([values[n] for n in names], method="average")
    return {n: float(v) for n, v in zip(names, r, strict=True)}


def rank_agreement(by_space: dict[str, dict[str, float]]) -> dict[str, Any]:
    """How far feature spaces agree on an ordering: ``by_space`` maps each space to a figure per
    model (lower is better, e.g. Fréchet distance). Returns each space's ranks of the models all
    spaces share, and Kendall's tau-b (scipy) for every pair of spaces (``"a|b"``; 1: the same
    order, -1: reversed; NaN when a ranking is constant or fewer than 2 models)."""
    from scipy import stats

    spaces = list(by_space)
    shared = [m for m in next(iter(by_space.values()), {}) if all(m in by_space[s] for s in spaces)]
    r = {s: ranks({m: by_space[s][m] for m in shared}) for s in spaces}
    taus = {}
    for i, a in enumerate(spaces):
        for b in spaces[i + 1 :]:
            tau = stats.kendalltau([r[a][m] for m in shared], [r[b][m] for m in shared]).statistic
            taus[f"{a}|{b}"] = float(tau)
    return {"models": shared, "ranks": r, "kendall_tau": taus}
