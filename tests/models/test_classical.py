"""The classical reference generators: real fits on the digits, samples on the data's level
grid, one class per request, seeded, and a density whose bits/dim make sense."""

import math

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

from genzoo.models.base import DataSpec
from genzoo.models.classical import BASELINES, PCAKDE, ClassicalConfig, GaussianMixtureBaseline, _dequantize


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images[:, None] / 16.0).float()
    y = torch.from_numpy(d.target).long()
    return x[:1200], y[:1200], x[1200:], y[1200:], DataSpec(1, 8, 8, 17, 10)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_samples_lie_on_the_level_grid_with_the_asked_classes_and_are_seeded(digits, name):
    x, y, _, _, spec = digits
    model = BASELINES[name](spec).fit(x, y, seed=0)
    labels = torch.arange(10).repeat_interleave(20)
    a = model.sample(len(labels), labels, seed=3)
    assert a.shape == (200, 1, 8, 8) and a.min() >= 0 and a.max() <= 1
    k = a * 16
    assert torch.allclose(k, k.round(), atol=1e-5)  # on the 17-level grid
    assert torch.equal(a, model.sample(len(labels), labels, seed=3))
    assert not torch.equal(a, model.sample(len(labels), labels, seed=4))
    # each class's samples resemble that class: nearest real class mean is the asked class
    means = torch.stack([x[y == c].mean(0).flatten() for c in range(10)])
    nearest = torch.cdist(a.flatten(1), means).argmin(1)
    assert (nearest == labels).float().mean() > 0.8


def test_gmm_bits_per_dim_beat_uniform_and_worsen_on_scrambled_images(digits):
    x, y, xt, yt, spec = digits
    gmm = GaussianMixtureBaseline(spec).fit(x, y, seed=0)
    bpd = gmm.bits_per_dim(xt)
    assert 1.0 < bpd < math.log2(17)
    scrambled = xt.flatten(1)[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))]
    assert gmm.bits_per_dim(scrambled.reshape(xt.shape)) > bpd + 1
    # the labels marginalised, as the families' test bits/dim are (it was given the true labels):
    # log p(x) = log sum_c p(c) p(x | c), p(c) the training labels' add-one smoothed frequencies
    z = _dequantize(xt, spec, np.random.default_rng(0))
    prior = (np.bincount(y.numpy(), minlength=10) + 1) / (len(y) + 10)
    dens = np.stack([gmm.per_class[c].score_samples(z) for c in range(10)], 1)
    ll = np.log((np.exp(dens - dens.max(1, keepdims=True)) * prior).sum(1)) + dens.max(1)
    want = -(ll - 64 * math.log(17)).mean() / (64 * math.log(2))
    assert bpd == pytest.approx(want, rel=1e-9)


def test_kde_bandwidth_comes_from_cross_validation_inside_the_grid(digits):
    x, y, _, _, spec = digits
    kde = PCAKDE(spec, ClassicalConfig(pca_components=10)).fit(x, y, seed=0)
    assert kde.pca.n_components_ == 10
    bw = np.array([k.bandwidth for k in kde.per_class.values()])
    assert len(set(bw.round(6))) > 1  # chosen per class, not one fixed value


def test_a_class_with_too_few_images_is_a_clear_error(digits):
    x, y, _, _, spec = digits
    keep = (y != 3) | (torch.arange(len(y)) < 60)
    few = keep & ~((y == 3) & (torch.cumsum((y == 3).long(), 0) > 2))
    with pytest.raises(ValueError, match="class 3 has fewer than 5"):
        PCAKDE(spec).fit(x[few], y[few])


def test_kde_bandwidth_from_a_subset_keeps_every_image_and_is_identical_when_the_class_fits(digits):
    x, y, _, _, spec = digits
    whole = PCAKDE(spec, ClassicalConfig(pca_components=10, kde_bandwidths=5)).fit(x, y, seed=0)
    z = whole.pca.transform(_dequantize(x, spec, np.random.default_rng(0)))[y.numpy() == 0]
    scale = z.std(0).mean()
    grid = {"bandwidth": scale * np.logspace(-1.5, 0.5, 5)}
    plain = GridSearchCV(KernelDensity(), grid, cv=5).fit(z).best_params_["bandwidth"]
    assert whole.per_class[0].bandwidth == plain  # every class under kde_cv_images: the plain CV

    cfg = ClassicalConfig(pca_components=10, kde_bandwidths=5, kde_cv_images=40)
    part = PCAKDE(spec, cfg).fit(x, y, seed=0)
    kde = part.per_class[0]
    assert kde.tree_.data.shape[0] == len(z)  # the density keeps every image
    m, n = 40, len(z)
    sub = z[np.random.default_rng(0).choice(n, m, replace=False)]
    grid = {"bandwidth": sub.std(0).mean() * np.logspace(-1.5, 0.5, 5)}
    chosen = GridSearchCV(KernelDensity(), grid, cv=5).fit(sub).best_params_["bandwidth"]
    assert kde.bandwidth == pytest.approx(chosen * (m / n) ** (1 / 14))


def test_gmm_covariances_are_full_on_small_images_and_diagonal_on_large_ones(digits):
    x, y, xt, yt, spec = digits
    assert GaussianMixtureBaseline(spec).fit(x, y).per_class[0].covariance_type == "full"  # 64 values
    small = GaussianMixtureBaseline(spec, ClassicalConfig(gmm_full_max_dims=32)).fit(x, y, seed=0)
    assert {g.covariance_type for g in small.per_class.values()} == {"diag"}
    labels = torch.arange(10).repeat_interleave(3)
    assert small.sample(30, labels, seed=1).shape == (30, 1, 8, 8)
    assert 1.0 < small.bits_per_dim(xt) < math.log2(17)
