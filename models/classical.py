"""Classical reference generators, measured by the same evaluation code as the deep families so
users see where each deep family stands.

- ``PCAKDE``: class-conditional kernel density in a PCA space, as in scikit-learn's digits
  example (PCA to a few components, Gaussian KDE whose bandwidth is chosen by cross-validated
  likelihood, samples mapped back to pixels).
- ``GaussianMixtureBaseline``: a Gaussian mixture per class in pixel space, the number of
  components chosen by BIC; full covariances up to ``gmm_full_max_dims`` values per image
  (digits: 64), diagonal ones above. It is a density, so it also gets test bits/dim (under uniform
  dequantisation, the same estimator the flow uses).

Both work on the dequantised scale ``(k + u) / L`` of the discrete levels ``k`` and map
samples back to levels, so their images lie on the same grid as the data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field
from torch import Tensor

from genzoo.models.base import DataSpec, NetConfig

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture
    from sklearn.neighbors import KernelDensity


class ClassicalConfig(NetConfig):
    pca_components: int = Field(15, gt=0, description="PCA + KDE: components (scikit-learn's example: 15)")
    kde_bandwidths: int = Field(20, gt=1, description="PCA + KDE: bandwidths tried by 5-fold CV")
    kde_cv_images: int = Field(
        2000, ge=10, description="PCA + KDE: at most this many images per class choose the bandwidth"
    )
    gmm_components: list[int] = Field([1, 2, 4, 8], min_length=1, description="GMM: sizes tried, BIC picks")
    gmm_reg_covar: float = Field(1e-3, gt=0, description="GMM: added to covariance diagonals")
    gmm_full_max_dims: int = Field(
        256, gt=0, description="GMM: full covariances up to this many values per image, diagonal above"
    )


def _dequantize(x: Tensor, spec: DataSpec, rng: np.random.Generator) -> np.ndarray:
    k = np.rint(x.reshape(len(x), -1).double().numpy() * (spec.levels - 1))
    return (k + rng.random(k.shape)) / spec.levels


def _to_images(y: np.ndarray, spec: DataSpec) -> Tensor:
    k = np.clip(np.floor(y * spec.levels), 0, spec.levels - 1)
    return torch.from_numpy(k / (spec.levels - 1)).float().reshape(len(y), *spec.shape)


class _PerClass:
    name = ""

    def __init__(self, spec: DataSpec, cfg: ClassicalConfig | None = None):
        self.spec, self.cfg = spec, cfg or ClassicalConfig()
        self.per_class: dict[int, object] = {}

    def fit(self, x: Tensor, y: Tensor, seed: int = 0):
        rng = np.random.default_rng(seed)
        z = self._prepare(_dequantize(x, self.spec, rng), seed)
        labels = y.numpy()
        for c in range(self.spec.num_classes):
            if (labels == c).sum() < 5:
                raise ValueError(f"{self.name}: class {c} has fewer than 5 training images")
            self.per_class[c] = self._fit_class(z[labels == c], seed)
        counts = np.bincount(labels, minlength=self.spec.num_classes) + 1.0  # add-one, as the families'
        self.log_prior = np.log(counts / counts.sum())
        return self

    def sample(self, n: int, y: Tensor, *, seed: int = 0) -> Tensor:
        """``n`` images of classes ``y`` (n,), in [0, 1] on the data's level grid."""
        labels = y.numpy()
        out = np.zeros((n, self.spec.dims))
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            out[idx] = self._sample_class(self.per_class[int(c)], len(idx), seed * 1000 + int(c))
        return _to_images(out, self.spec)


class PCAKDE(_PerClass):
    name = "pca_kde"

    def _prepare(self, z: np.ndarray, seed: int) -> np.ndarray:
        from sklearn.decomposition import PCA  # scikit-learn on use: every stage imports this module

        self.pca = PCA(n_components=min(self.cfg.pca_components, z.shape[1]), random_state=seed).fit(z)
        return self.pca.transform(z)

    def _fit_class(self, z: np.ndarray, seed: int) -> KernelDensity:
        """A Gaussian KDE on every image of the class; its bandwidth chosen by 5-fold CV on at
        most ``kde_cv_images`` of them (scoring is quadratic in the images), then narrowed by
        Scott's rate (m / n)^(1 / (d + 4)) from the m images that chose it to the n it keeps."""
        from sklearn.model_selection import GridSearchCV
        from sklearn.neighbors import KernelDensity

        n, m = len(z), min(len(z), self.cfg.kde_cv_images)
        chosen = z if m == n else z[np.random.default_rng(seed).choice(n, m, replace=False)]
        scale = chosen.std(0).mean()  # bandwidths relative to the data's spread
        grid = {"bandwidth": scale * np.logspace(-1.5, 0.5, self.cfg.kde_bandwidths)}
        bandwidth = GridSearchCV(KernelDensity(), grid, cv=min(5, m)).fit(chosen).best_params_["bandwidth"]
        bandwidth *= (m / n) ** (1 / (z.shape[1] + 4))
        return KernelDensity(bandwidth=bandwidth).fit(z)

    def _sample_class(self, kde: KernelDensity, n: int, seed: int) -> np.ndarray:
        return self.pca.inverse_transform(kde.sample(n, random_state=seed))


class GaussianMixtureBaseline(_PerClass):
    name = "gmm"

    def _prepare(self, z: np.ndarray, seed: int) -> np.ndarray:
        return z  # pixel space

    def _fit_class(self, z: np.ndarray, seed: int) -> GaussianMixture:
        from sklearn.mixture import GaussianMixture

        # a full covariance has d(d + 1)/2 entries per component: at 32x32x3 that is 4.7 million
        # from a few hundred images, and each draw decomposes the 3,072 x 3,072 matrix
        kind = "full" if z.shape[1] <= self.cfg.gmm_full_max_dims else "diag"
        fits = [
            GaussianMixture(k, covariance_type=kind, reg_covar=self.cfg.gmm_reg_covar, random_state=seed).fit(
                z
            )
            for k in self.cfg.gmm_components
            if k <= len(z) // 2
        ]
        if not fits:
            raise ValueError(f"gmm: too few images per class for {self.cfg.gmm_components} components")
        return min(fits, key=lambda g: g.bic(z))

    def _sample_class(self, gmm: GaussianMixture, n: int, seed: int) -> np.ndarray:
        gmm.random_state = seed
        return gmm.sample(n)[0]

    def bits_per_dim(self, x: Tensor, seed: int = 0) -> float:
        """Test bits/dim of log p(x) = log sum_c p(c) p(x | c), the labels marginalised as the
        families' test bits/dim are, under uniform dequantisation (an upper bound on the discrete
        model's bits/dim, as for the flow)."""
        from scipy.special import logsumexp

        z = _dequantize(x, self.spec, np.random.default_rng(seed))
        per_class = np.stack([self.per_class[c].score_samples(z) for c in range(self.spec.num_classes)], 1)
        ll = logsumexp(per_class + self.log_prior, axis=1)
        nats = -(ll - self.spec.dims * math.log(self.spec.levels)).mean()
        return float(nats / (self.spec.dims * math.log(2)))


class Background:
    """A background model for likelihood ratios: one categorical distribution over the pixel
    levels, shared by every pixel (position-free: a histogram of ink), fitted on the training
    images with add-one smoothing. It knows how much ink and which levels digits use, not where
    they go: what an image costs a simple coder. A family's bits/dim minus the background's
    discounts the image's plain complexity, which dominates raw likelihood (a blank image is
    cheap for every model), and keeps what the family knows about shapes (Serrà et al. 2020,
    arXiv:1909.11480; the ratio form as in Ren et al. 2019, arXiv:1906.02845)."""

    def __init__(self, spec: DataSpec):
        self.spec = spec
        self.log_p: np.ndarray | None = None

    def _levels(self, x: Tensor) -> np.ndarray:
        return np.rint(x.reshape(len(x), -1).double().numpy() * (self.spec.levels - 1)).astype(np.int64)

    def fit(self, x: Tensor) -> Background:
        counts = np.bincount(self._levels(x).ravel(), minlength=self.spec.levels) + 1.0
        self.log_p = np.log(counts / counts.sum())
        return self

    def bits_per_dim(self, x: Tensor) -> np.ndarray:
        """Bits/dim of each image (N,) (exact: the model is discrete)."""
        if self.log_p is None:
            raise RuntimeError("background: fit() first")
        return -self.log_p[self._levels(x)].sum(1) / (self.spec.dims * math.log(2))


BASELINES = {cls.name: cls for cls in (PCAKDE, GaussianMixtureBaseline)}
