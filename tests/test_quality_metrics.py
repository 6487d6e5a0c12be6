"""Feature-space metrics on known answers."""

import numpy as np
import pytest

from genzoo.metrics.quality import (
    diversity,
    frechet_distance,
    frechet_from_stats,
    inception_score,
    kid,
    mean_ci,
    memorization,
    prdc,
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
    assert inception_score(onehot, splits=5)[0] == pytest.approx(k, rel=1e-6)
    with pytest.raises(ValueError):
        inception_score(np.ones((5, 3)))


def test_prdc_identical_sets_and_disjoint_sets():
    x = rng.normal(size=(300, 4))
    same = prdc(x, x, k=5)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    assert same["density"] == pytest.approx(1.0, abs=0.25)
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
