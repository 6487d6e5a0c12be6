"""Feature-space metrics on known answers, and on the same features as independent
implementations: Naeem et al.'s ``prdc`` package and torchmetrics' KID and FID."""

import numpy as np
import pytest
import torch

from genzoo.metrics.quality import (
    diversity,
    frechet_distance,
    frechet_from_stats,
    inception_score,
    kid,
    mean_ci,
    memorization,
    prdc,
    rank_agreement,
    ranks,
    sharpness,
)

rng = np.random.default_rng(0)


def test_frechet_is_zero_for_identical_sets_and_matches_the_closed_form():
    x = rng.normal(size=(500, 8))
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    mu1, mu2 = np.zeros(3), np.array([1.0, -2.0, 0.5])
    s1, s2 = np.array([1.0, 2.0, 0.5]), np.array([4.0, 0.5, 0.5])
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_from_stats(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    a = rng.normal(mu1, np.sqrt(s1), size=(20000, 3))
    b = rng.normal(mu2, np.sqrt(s2), size=(20000, 3))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)


def test_frechet_of_fewer_samples_than_dimensions_is_finite_and_quiet():
    """A singular covariance product (few samples, as a quick run's per-class figures have) is
    regularised; scipy's warning about it printed seven times in `genzoo evaluate`'s console."""
    import warnings

    a = np.zeros((5, 8))
    a[:, 0] = np.arange(5)  # rank 1: the product of the covariances is singular
    b = np.random.default_rng(1).normal(size=(2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(frechet_distance(a, a)) and np.isfinite(frechet_distance(b, b[::-1] + 1))


def test_kid_is_unbiased_around_zero_for_one_distribution_and_positive_otherwise():
    a, b = rng.normal(size=(1000, 16)), rng.normal(size=(1000, 16))
    mean, std = kid(a, b, subsets=30, subset_size=300)
    assert abs(mean) < 3 * std + 1e-3
    far, _ = kid(a, rng.normal(0.7, 1, size=(1000, 16)), subsets=30, subset_size=300)
    assert far > 10 * max(std, 1e-4)


def test_inception_score_bounds():
    k = 10
    uniform = np.full((1000, k), 1 / k)
    assert inception_score(uniform)[0] == pytest.approx(1.0)
    onehot = np.eye(k)[np.arange(1000) % k]
    assert inception_score(onehot, splits=5)[0] == pytest.approx(k, rel=0.05)  # parts drawn at random
    with pytest.raises(ValueError):
        inception_score(np.ones((5, 3)))
    # class-conditional samples come in class order: parts of one class each scored 1 whatever
    # the images (the report's IS analogue was 1.00 for every family)
    ordered = np.repeat(np.eye(k), 200, axis=0)
    assert inception_score(ordered)[0] > 0.95 * k
    assert inception_score(ordered, seed=1) == inception_score(ordered, seed=1)
    few = inception_score(np.eye(4)[[0, 1, 2, 3, 0, 1]])  # fewer rows than parts: no empty part, no NaN
    assert np.isfinite(few).all()


def test_prdc_identical_sets_and_disjoint_sets():
    x = rng.normal(size=(300, 4))
    same = prdc(x, x, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == 1.0  # each open ball holds its centre and k - 1 neighbours
    far = prdc(x, x + 100.0, k=5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # a generator covering half the modes: precision stays high, recall/coverage drop
    modes = np.concatenate([rng.normal(c, 0.1, size=(100, 2)) for c in ([0, 0], [5, 5], [0, 5], [5, 0])])
    half = np.concatenate([rng.normal(c, 0.1, size=(200, 2)) for c in ([0, 0], [5, 5])])
    m = prdc(modes, half, k=5)
    assert m["precision"] > 0.9 and m["recall"] < 0.6 and m["coverage"] < 0.6


def test_memorization_flags_copies_and_not_fresh_samples():
    train, test = rng.normal(size=(400, 6)), rng.normal(size=(400, 6))
    copies = memorization(train[:200] + 1e-6, train, test)
    assert copies["ratio"] < 0.05 and copies["copies"] == 1.0
    fresh = memorization(rng.normal(size=(200, 6)), train, test)
    assert 0.8 < fresh["ratio"] < 1.2 and fresh["copies"] < 0.05


def test_memorization_sees_a_copy_of_any_training_image_and_real_images_score_as_new():
    """Measured against a draw of the training split the test split's size (360 of 1,259 digits),
    a copier of every training image scored a ratio of 0.7 and 30% copies, and so did the real
    floor row's own training images: the column could not tell copying from real data."""
    from pathlib import Path

    from genzoo.tasks.config import load_params
    from genzoo.tasks.quality import scores

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    g = np.random.default_rng(1)
    centres = g.normal(scale=3, size=(10, 16))
    draw = lambda n: centres[np.arange(n) % 10] + g.normal(size=(n, 16))  # noqa: E731
    real = {"train": draw(1259), "test": draw(360), "test_labels": np.arange(360) % 10}
    copier = real["train"][g.choice(1259, 1000, replace=False)]
    m = scores(params, copier, None, None, real, seed=0)["memorization"]
    assert m["ratio"] < 0.01 and m["copies"] == 1.0 and m["images"] == 360
    assert 0.85 < scores(params, draw(1000), None, None, real, seed=0)["memorization"]["ratio"] < 1.15
    i = np.sort(g.choice(1259, 1000, replace=False))  # the floor: real training images, themselves left out
    floor = scores(params, real["train"][i], None, np.arange(1259)[i] % 10, real, seed=0, drawn=i)
    assert 0.85 < floor["memorization"]["ratio"] < 1.15 and floor["memorization"]["copies"] < 0.05
    assert len(floor["fd_per_class"]) == 10  # (the floor's per-class distances, beside the families')
    # a folder of few images: the floor draws every training image (100 a class): half of them
    # measured against the rest (it had no training image left to measure against)
    small = {"train": draw(40), "test": draw(30), "test_labels": np.arange(30) % 10}
    every = np.arange(40)
    m = scores(params, small["train"], None, every % 10, small, seed=0, drawn=every)["memorization"]
    assert m["images"] == 20 and 0.5 < m["ratio"] < 1.5


def test_diversity_and_bad_input():
    assert diversity(np.ones((10, 3))) == 0.0
    assert diversity(rng.normal(size=(200, 2))) == pytest.approx(
        np.sqrt(np.pi), rel=0.1
    )  # E|x-y|, 2-D N(0, I)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((5, 2), np.nan), np.ones((5, 2)))
    with pytest.raises(ValueError, match="shape"):
        diversity(np.ones(5))


def test_sharpness_is_zero_on_flat_images_and_drops_with_blur():
    assert sharpness(np.full((3, 1, 8, 8), 0.7)) == pytest.approx(0, abs=1e-12)
    checker = (np.indices((8, 8)).sum(0) % 2).astype(float)[None, None]
    assert sharpness(checker) == pytest.approx(4.0)  # every interior pixel: |4 * 1 - 0| or |0 - 4|
    img = np.zeros((1, 1, 9, 9))
    img[..., 4, :] = 1.0  # a stroke
    blurred = (img + np.roll(img, 1, 2) + np.roll(img, -1, 2)) / 3
    assert sharpness(blurred) < sharpness(img)
    with pytest.raises(ValueError, match="N, C, H, W"):
        sharpness(np.zeros((8, 8)))


def test_mean_ci_matches_the_student_t_interval():
    assert mean_ci([2.5]) == (2.5, 0.0)
    m, h = mean_ci([1.0, 2.0, 3.0])
    # t_{0.975, 2} = 4.302653; sd = 1; n = 3
    assert m == pytest.approx(2.0) and h == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)
    covered = 0
    for _ in range(400):  # a 95% interval covers the true mean about 95% of the time
        m, h = mean_ci(rng.normal(1.0, 2.0, size=5))
        covered += abs(m - 1.0) <= h
    assert 0.91 < covered / 400 < 0.99
    with pytest.raises(ValueError):
        mean_ci([])


def test_prdc_balls_on_a_hand_computed_line():
    """1-D points with exact distances, k = 1. Real radii: 0 -> 1, 1 -> 1, 3 -> 2, 7 -> 4; fake
    radii: -1 -> 6, 5 -> 6, 20 -> 15. The fake at -1 lies *on* the sphere of the real 0 and
    the fake at 5 on that of the real 3: closed balls (precision, recall) count them, open
    balls (density, coverage) do not."""
    real = np.array([[0.0], [1.0], [3.0], [7.0]])
    fake = np.array([[-1.0], [5.0], [20.0]])
    got = prdc(real, fake, k=1)
    assert got["precision"] == pytest.approx(2 / 3)  # -1 (on 0's sphere) and 5; not 20
    assert got["recall"] == 1.0  # every real is within 6 of -1 or 5
    assert got["density"] == pytest.approx(1 / 3)  # only 5 lies strictly inside a ball (7's)
    assert got["coverage"] == 0.25  # only 7's ball holds a fake strictly inside


# ----------------------------------------------------------------------------- parity
# The same features through genzoo and through references written by others.


def _overlapping_sets(seed: int, n_real: int = 400, n_fake: int = 300, d: int = 16):
    """Real N(0, I) and a shifted, narrower, sheared fake set: they overlap in part, so no
    score sits at 0 or 1 where a wrong formula could still agree."""
    g = np.random.default_rng(seed)
    real = g.normal(size=(n_real, d))
    shear = np.eye(d) + 0.3 * g.normal(size=(d, d)) / np.sqrt(d)
    return real, g.normal(0.4, 0.8, size=(n_fake, d)) @ shear


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_prdc_matches_the_prdc_package(k):
    """Naeem et al.'s own code on continuous features (no distance ties, where only the
    closed vs open ball convention could differ): identical to the last bit."""
    from prdc import compute_prdc

    real, fake = _overlapping_sets(k)
    ours = prdc(real, fake, k=k)
    ref = {m: float(v) for m, v in compute_prdc(real, fake, nearest_k=k).items()}
    assert all(0 < v < 1 for m, v in ours.items() if m != "density"), ours
    assert ours == pytest.approx(ref, abs=1e-12)
    x = real[:200]  # a set against itself: the package's figures, density exactly 1 included
    assert prdc(x, x, k=k) == {m: float(v) for m, v in compute_prdc(x, x, nearest_k=k).items()}


class _Identity(torch.nn.Module):
    """torchmetrics' 'feature extractor': the features are already computed."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, x):
        return x


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save all extracted features")
@pytest.mark.parametrize("seed", [0, 1])
def test_kid_matches_torchmetrics(seed):
    """torchmetrics' KID (unbiased MMD^2, cubic kernel (x.y / D + 1)^3) on the same float64
    features. Subsets as large as the sets make every subset the whole set in some order, so
    the two random subset draws cannot differ; MMD^2 does not depend on the order."""
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = _overlapping_sets(seed, n_real=300, n_fake=300)
    ref = KernelInceptionDistance(feature=_Identity(16), subsets=3, subset_size=300)
    ref.update(torch.from_numpy(real), real=True)
    ref.update(torch.from_numpy(fake), real=False)
    ref_mean, ref_std = (v.item() for v in ref.compute())
    mean, std = kid(real, fake, subsets=3, subset_size=300)
    assert ref_mean > 0.05  # far from 0: a relative tolerance means something
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert std == pytest.approx(ref_std, abs=1e-12)
    same_mean, _ = kid(real, real[::-1].copy(), subsets=1, subset_size=300)
    assert same_mean == pytest.approx(-2 / 300 * _cubic_kernel_trace_gap(real), abs=1e-12)


def _cubic_kernel_trace_gap(x):
    """For Y a permutation of X, unbiased MMD^2 = -2/m (mean of k(x_i, x_i) - mean over i != j):
    the diagonal the unbiased within-set terms leave out and the cross term keeps."""
    kxx = (x @ x.T / x.shape[1] + 1) ** 3
    m = len(x)
    return np.trace(kxx) / m - (kxx.sum() - np.trace(kxx)) / (m * (m - 1))


@pytest.mark.parametrize("seed", [0, 1])
def test_frechet_matches_torchmetrics(seed):
    """torchmetrics' FID from the same features: its own running mean and covariance and
    sqrt(C1 C2) through eigenvalues, where genzoo uses numpy's covariance and scipy's sqrtm."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = _overlapping_sets(seed)
    ref = FrechetInceptionDistance(feature=_Identity(16))
    ref.update(torch.from_numpy(real), real=True)
    ref.update(torch.from_numpy(fake), real=False)
    expected = ref.compute().item()
    assert expected > 1.0
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-12)


def test_ranks_share_ties():
    assert ranks({"x": 0.2, "y": 0.2, "z": 0.1, "w": 0.5}) == {"x": 2.5, "y": 2.5, "z": 1.0, "w": 4.0}


def test_rank_agreement_on_a_hand_made_ranking():
    by_space = {
        "a": {"m1": 1.0, "m2": 2.0, "m3": 3.0, "m4": 4.0},
        "b": {"m1": 10.0, "m2": 30.0, "m3": 20.0, "m4": 40.0},  # m2 and m3 swapped: 1 of 6 pairs
        "c": {"m1": 4.0, "m2": 3.0, "m3": 2.0, "m4": 1.0, "extra": 9.0},  # reversed; extra only here
    }
    out = rank_agreement(by_space)
    assert out["models"] == ["m1", "m2", "m3", "m4"]  # the models every space scored
    assert out["ranks"]["b"] == {"m1": 1.0, "m2": 3.0, "m3": 2.0, "m4": 4.0}
    assert out["ranks"]["c"] == {"m1": 4.0, "m2": 3.0, "m3": 2.0, "m4": 1.0}
    taus = out["kendall_tau"]
    assert list(taus) == ["a|b", "a|c", "b|c"]
    assert taus["a|b"] == pytest.approx(2 / 3)  # (5 concordant - 1 discordant) / 6
    assert taus["a|c"] == pytest.approx(-1.0)
    assert taus["b|c"] == pytest.approx(-2 / 3)


def test_neighbour_figures_in_small_blocks_equal_the_whole_matrix(monkeypatch):
    """prdc, memorization and diversity take distances a block of rows at a time (memory flat
    as sets grow); blocks of a few rows give the figures of one whole matrix."""
    import genzoo.metrics.quality as q

    rng = np.random.default_rng(0)
    real, test = rng.normal(size=(300, 6)), rng.normal(size=(150, 6))
    fake = rng.normal(0.3, 1.1, size=(200, 6))
    fake[:20] = real[:20]  # exact copies: distances equal to radii, where <= and < differ
    whole = {"prdc": prdc(real, fake, k=5), "mem": memorization(fake, real, test), "div": diversity(fake)}
    seen, blocks = [], q._row_blocks

    def seven_rows(a, b):
        for rows, d in blocks(a, b, block_bytes=8 * len(b) * 7):
            seen.append(d.shape[0])
            yield rows, d

    monkeypatch.setattr(q, "_row_blocks", seven_rows)
    small = {"prdc": prdc(real, fake, k=5), "mem": memorization(fake, real, test), "div": diversity(fake)}
    assert max(seen) == 7 and len(seen) > 40
    assert small["prdc"] == whole["prdc"] and small["mem"] == whole["mem"]
    assert small["div"] == pytest.approx(whole["div"], rel=1e-12)
    # and the blocks are what they claim: 7 rows of 300 at a time
    assert [d.shape for _, d in blocks(real, real, block_bytes=8 * 300 * 7)][:2] == [(7, 300), (7, 300)]
