"""Human evaluation statistics (pure NumPy/SciPy, no I/O): the HYPE-infinity error rate with a
bootstrap over raters and images, agreement between raters (Krippendorff's alpha), a
Bradley-Terry ranking of pairwise "which looks more real?" answers, and Kendall's tau between
two rankings.

HYPE-infinity (Zhou et al. 2019, arXiv 1904.01121): the share of images a person judges
wrongly (a generated image called real, a real image called generated) over a set of half
real, half generated images; 50% means the generated images cannot be told from real ones,
0% that every one is spotted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# ----------------------------------------------------------------------------- HYPE-infinity


def hype_error(wrong_fake: np.ndarray, wrong_real: np.ndarray, w_fake=None, w_real=None) -> float:
    """The balanced HYPE-infinity error: the mean of the error on generated images (called
    real) and the error on real images (called generated), so a set with unequal numbers of
    real and generated answers is scored as HYPE's 50/50 set would be. ``w_*``: answer weights
    (bootstrap counts)."""
    wf = np.ones(len(wrong_fake)) if w_fake is None else w_fake
    wr = np.ones(len(wrong_real)) if w_real is None else w_real
    if wf.sum() <= 0 or wr.sum() <= 0:
        return float("nan")
    return float(0.5 * (wf @ wrong_fake) / wf.sum() + 0.5 * (wr @ wrong_real) / wr.sum())


def bootstrap_hype(
    rater: np.ndarray,
    item: np.ndarray,
    wrong: np.ndarray,
    is_fake: np.ndarray,
    reps: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Point estimate and percentile ``level`` interval of :func:`hype_error` over the answers
    (``rater`` and ``item`` integer ids, ``wrong`` 0/1, ``is_fake`` bool; one row per answer),
    resampling raters and images at once (two-way bootstrap: each replicate draws raters with
    replacement and, independently, the real and the generated images with replacement; an
    answer counts as often as its rater times its image was drawn)."""
    wrong = np.asarray(wrong, dtype=float)
    is_fake = np.asarray(is_fake, dtype=bool)
    point = hype_error(wrong[is_fake], wrong[~is_fake])
    raters, r_idx = np.unique(rater, return_inverse=True)
    items, i_idx = np.unique(item, return_inverse=True)
    fake_items = np.zeros(len(items), dtype=bool)
    fake_items[i_idx[is_fake]] = True
    rng = np.random.default_rng(seed)
    fakes, reals = np.flatnonzero(fake_items), np.flatnonzero(~fake_items)
    values = np.empty(reps)
    for b in range(reps):
        rw = np.bincount(rng.integers(0, len(raters), len(raters)), minlength=len(raters))
        iw = np.zeros(len(items))
        iw[fakes] = np.bincount(rng.choice(fakes, len(fakes)), minlength=len(items))[fakes]
        iw[reals] = np.bincount(rng.choice(reals, len(reals)), minlength=len(items))[reals]
        w = rw[r_idx] * iw[i_idx]
        values[b] = hype_error(wrong[is_fake], wrong[~is_fake], w[is_fake], w[~is_fake])
    values = values[np.isfinite(values)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (float("nan"),) * 2
    return point, float(lo), float(hi)


# ----------------------------------------------------------------------------- agreement


def krippendorff_alpha(units: Sequence[Sequence[int]]) -> float:
    """Krippendorff's alpha for nominal answers (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability"): ``units`` holds, per image, the answers of the raters who judged it
    (any number; images judged by fewer than two are left out). 1: perfect agreement, 0:
    agreement as by chance, below 0: systematic disagreement; nan when nothing varies."""
    values = sorted({v for u in units for v in u})
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))  # coincidence matrix
    for u in units:
        m = len(u)
        if m < 2:
            continue
        counts = np.bincount([index[v] for v in u], minlength=len(values)).astype(float)
        o += (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    observed = o.sum() - np.trace(o)
    expected = (n_c.sum() ** 2 - (n_c**2).sum()) / (n - 1)
    if expected == 0:
        return float("nan")
    return float(1 - observed / expected)


# ----------------------------------------------------------------------------- pairwise ranking

PSEUDO_WINS = 0.5  # per compared pair and direction: finite strengths when one side never loses


def bradley_terry(
    wins: np.ndarray, pseudo: float = PSEUDO_WINS, iters: int = 10_000, tol: float = 1e-10
) -> np.ndarray:
    """Bradley-Terry log-strengths ``theta`` (P(i beats j) = sigmoid(theta_i - theta_j), mean 0)
    from ``wins[i, j]`` = times i was preferred over j, by Hunter's MM algorithm (Hunter 2004,
    Ann. Statist. 32(1)). ``pseudo`` wins are added each way to every pair that was compared,
    so a family that never lost still gets a finite strength (a mild pull towards equal). A
    family never compared has no strength (nan); where the compared families fall into groups
    with no comparison between them (:func:`compared_groups`), each group's strengths have mean 0
    and compare within the group only (the MM fit left their offset to its normalisation)."""
    w = np.asarray(wins, dtype=float)
    k = len(w)
    compared = (w + w.T) > 0
    w = w + pseudo * compared
    n = w + w.T
    total = w.sum(axis=1)
    p = np.ones(k)
    for _ in range(iters):
        denom = (n / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, total / np.where(denom > 0, denom, 1), p)
        new = new / np.exp(np.log(new).mean())
        done = np.max(np.abs(new - p)) < tol
        p = new
        if done:
            break
    theta = np.full(k, np.nan)
    for group in compared_groups(w):  # (each group's strengths: mean 0; nothing links two groups)
        theta[group] = np.log(p[group]) - np.log(p[group]).mean()
    return theta


def compared_groups(wins: np.ndarray) -> list[list[int]]:
    """The families linked by comparisons (connected components of the compared pairs), each a
    sorted list of indices; families never compared are in none."""
    w = np.asarray(wins, dtype=float)
    linked = (w + w.T) > 0
    left, groups = set(np.flatnonzero(linked.any(axis=1)).tolist()), []
    while left:
        todo, group = [min(left)], set()
        while todo:
            i = todo.pop()
            if i in group:
                continue
            group.add(i)
            todo += [j for j in np.flatnonzero(linked[i]).tolist() if j not in group]
        left -= group
        groups.append(sorted(group))
    return groups


def bootstrap_bradley_terry(
    comparisons: Sequence[tuple[int, int, int]],
    k: int,
    reps: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bradley-Terry strengths from ``comparisons`` (rater, winner, loser), with a percentile
    interval from resampling raters with replacement (a rater's comparisons move together).
    Returns (theta, lower, upper), each (k,). The interval is over the replicates whose
    comparisons link the families into the same groups as all of them do (strengths centred alike:
    a replicate that split a group centred each part on its own mean); nan where none does."""
    comp = np.asarray(comparisons, dtype=int).reshape(-1, 3)

    def wins_of(rows: np.ndarray) -> np.ndarray:
        wins = np.zeros((k, k))
        np.add.at(wins, (rows[:, 1], rows[:, 2]), 1)
        return wins

    theta = bradley_terry(wins_of(comp))
    groups = compared_groups(wins_of(comp))
    raters = np.unique(comp[:, 0])
    by_rater = [comp[comp[:, 0] == r] for r in raters]
    rng = np.random.default_rng(seed)
    draws = np.full((1, k), np.nan)
    if len(raters):  # a replicate linking the families otherwise is no draw of these strengths
        rows = [
            np.concatenate([by_rater[i] for i in rng.integers(0, len(raters), len(raters))])
            for _ in range(reps)
        ]
        wins = [wins_of(r) for r in rows]
        draws = np.array(
            [bradley_terry(w) if compared_groups(w) == groups else np.full(k, np.nan) for w in wins]
        )
    alpha = (1 - level) / 2
    lo, hi = np.full(k, np.nan), np.full(k, np.nan)
    for i in range(k):
        d = draws[:, i][np.isfinite(draws[:, i])]
        if len(d):
            lo[i], hi[i] = np.quantile(d, [alpha, 1 - alpha])
    return theta, lo, hi


# ----------------------------------------------------------------------------- rankings


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b between two scorings of the same items (1: the same order, -1: reversed);
    nan for fewer than two items or a constant scoring."""
    if len(a) < 2:
        return float("nan")
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)
