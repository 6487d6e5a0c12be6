"""The VAE's ex-post prior (Ghosh et al. 2020): fitted after training to the training codes,
sampled from per class, saved with the model; the standard prior is left exactly as it was."""

import torch

from genzoo import models
from genzoo.models.base import DataSpec
from genzoo.models.trainer import TrainConfig, fit
from genzoo.models.vae import VAEConfig, class_gaussians

SPEC = DataSpec(1, 8, 8, 17, 3)


def test_class_gaussians_recover_each_class_and_stay_positive_definite_with_few_images():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(torch.tensor([2000, 2000, 3]))  # class 2: 3 images in 4-d
    centres = torch.tensor([[5.0, 0, 0, 0], [0, -5.0, 0, 0], [0, 0, 3.0, 0]])
    scales = torch.tensor([[1.0, 0.1, 0.1, 0.1], [0.1, 2.0, 0.1, 0.1], [0.5, 0.5, 0.5, 0.5]])
    z = centres[y] + scales[y] * torch.randn(len(y), 4, generator=g)
    loc, tril = class_gaussians(z, y, num_classes=4)  # class 3: no images
    assert torch.allclose(loc[:2], centres[:2], atol=0.1)
    cov = tril @ tril.transpose(1, 2)
    assert abs(cov[0, 0, 0] - 1.0) < 0.1 and abs(cov[1, 1, 1] - 4.0) < 0.3  # each class its own shape
    assert torch.all(torch.linalg.eigvalsh(cov) > 0)  # a 3-image class shrunk toward the pooled one
    assert torch.allclose(loc[3], z.mean(0), atol=1e-5)  # a class with no images: the overall mean


def _data(n=60):
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    x = torch.zeros(n, 1, 8, 8)
    for c in range(3):  # each class a bright bar in its own rows, with noise
        x[y == c, :, 2 * c : 2 * c + 2] = 1.0
    x = (x + 0.1 * torch.rand(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return (x * 16).round() / 16, y


def _fit(prior: str):
    cfg = VAEConfig(latent_dim=4, hidden=8, iwae_k=2, kl_warmup_steps=0, prior=prior)
    torch.manual_seed(0)
    model = models.build("vae", SPEC, cfg)
    x, y = _data()
    return fit(model, x, y, TrainConfig(steps=20, batch_size=16, eval_every=0), progress=False)[0], x, y


def test_training_fits_the_ex_post_prior_to_the_posterior_means_and_sampling_uses_it(tmp_path):
    model, x, y = _fit("ex_post")
    with torch.no_grad():
        z = model.encode(x, y)
    for c in range(3):
        assert torch.allclose(model.prior_loc[c], z[y == c].mean(0), atol=1e-5)
    assert not torch.equal(model.prior_tril[0], torch.eye(4))
    loaded = models.load(models.save(model, tmp_path / "m"))  # the fitted prior travels with the weights
    assert torch.equal(loaded.prior_loc, model.prior_loc) and torch.equal(loaded.prior_tril, model.prior_tril)
    labels = torch.tensor([0, 1, 2] * 4)
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    assert torch.equal(model.sample(12, labels, generator=g()), loaded.sample(12, labels, generator=g()))
    model.prior_loc.zero_()
    model.prior_tril.copy_(torch.eye(4).repeat(3, 1, 1))  # back to N(0, I): other images
    assert not torch.equal(model.sample(12, labels, generator=g()), loaded.sample(12, labels, generator=g()))


def test_the_standard_prior_has_no_extra_state_and_its_bound_ignores_the_ex_post_fit():
    standard, x, y = _fit("standard")
    ex_post, _, _ = _fit("ex_post")
    assert "prior_loc" not in standard.state_dict()  # models saved before the option load as they did
    torch.manual_seed(0)
    a = standard.elbo(x, y, k=4)
    torch.manual_seed(0)
    b = ex_post.elbo(x, y, k=4)
    assert torch.equal(a, b)  # same training; the bound uses N(0, I) either way
