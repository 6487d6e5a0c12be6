"""Convolutional conditional VAE (Kingma & Welling 2014, arXiv:1312.6114) with an
importance-weighted bound (Burda et al. 2016, arXiv:1509.00519).

Likelihood choice: the decoder outputs a distribution over each sub-pixel's *discrete*
levels (a categorical over the data's levels by default, a discretized logistic for 8-bit
data), so the ELBO and the IWAE bound are bounds on the same discrete log-likelihood that
PixelCNN computes exactly, and their bits/dim compare directly. A Gaussian or Bernoulli
decoder would give a density on a different space. Samples show the decoder's expected
pixel values (``sample_mode: mean``), the usual way to look at a VAE; ``sample`` draws pixels.
``temperature`` < 1 scales the prior's noise when sampling (reduced-temperature sampling, as in
Glow and NVAE): latent codes from the prior's low-density regions that no training image
encodes to decode to blends; the bound is unaffected. ``prior: ex_post`` goes further and
samples from where the training images' codes actually lie: after training, a Gaussian per
class is fitted to the posterior means (ex-post density estimation, Ghosh et al. 2020,
arXiv:1903.12436, section 4; the two-stage VAE's point, Dai & Wipf 2019, arXiv:1903.05789:
the aggregate posterior is not N(0, I)). Sampling only: the bound keeps N(0, I).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from genzoo.models.base import DataSpec, GenerativeModel, NetConfig, StepOutput, needs_labels, register
from genzoo.models.layers import LabelEmbedding, PixelLikelihood, ResBlock, auto_levels, group_norm, ladder


class VAEConfig(NetConfig):
    latent_dim: int = Field(16, gt=0)
    hidden: int = Field(64, gt=0, description="channels at full resolution")
    down: int = Field(0, ge=0, description="stride-2 levels; 0 = as many as the size allows")
    likelihood: Literal["categorical", "logistic"] = "categorical"
    iwae_k: int = Field(64, gt=0, description="importance samples for the IWAE bound")
    kl_warmup_steps: int = Field(500, ge=0, description="linear KL weight warm-up")
    free_bits: float = Field(0.0, ge=0.0, description="min KL nats per latent dim (training)")
    sample_mode: Literal["mean", "sample"] = "mean"
    temperature: float = Field(1.0, gt=0.0, description="prior std multiplier when sampling (<1: fewer "
                               "samples from the prior's holes, higher precision, lower recall)")  # fmt: skip
    prior: Literal["standard", "ex_post"] = Field(
        "standard",
        description="what sampling draws codes from: N(0, I), or (ex_post) a Gaussian per class fitted "
        "after training to the training images' posterior means",
    )


def class_gaussians(z: Tensor, y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """A Gaussian per class over codes z (N, d) with labels y (N,): means (K, d) and Cholesky
    factors (K, d, d) of covariances shrunk toward the pooled within-class one by d
    pseudo-observations (a class with few images gets mostly the pooled shape, never a
    singular one; a class with none the overall mean and the pooled covariance)."""
    z, d = z.double(), z.shape[1]
    present = [c for c in range(num_classes) if (y == c).any()]
    means = z.mean(0).repeat(num_classes, 1)  # (K, d)
    for c in present:
        means[c] = z[y == c].mean(0)
    centred = z - means[y]  # (N, d)
    pooled = centred.T @ centred / max(1, len(z) - len(present))  # (d, d)
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    covs = pooled.repeat(num_classes, 1, 1)  # (K, d, d)
    for c in present:
        zc = centred[y == c]  # (n_c, d)
        covs[c] = (zc.T @ zc + d * pooled) / (len(zc) + d)
    trace = covs.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-12).view(-1, 1, 1)
    tril = torch.linalg.cholesky(covs + 1e-6 * trace * eye)
    return means.float(), tril.float()


@register
class VAE(GenerativeModel):
    family = "vae"
    Config = VAEConfig

    def __init__(self, spec: DataSpec, cfg: VAEConfig):
        super().__init__(spec, cfg)
        n = cfg.down or auto_levels(spec.height, spec.width)
        self.sizes = ladder(spec.height, spec.width, n)
        chs = [cfg.hidden * min(2**i, 4) for i in range(n + 1)]
        cond = cfg.hidden
        self.embed = LabelEmbedding(spec.num_classes, cond)
        # encoder: (B, C, H, W) -> (B, 2 * latent)
        self.enc_in = nn.Conv2d(spec.channels, chs[0], 3, padding=1)
        self.enc_blocks = nn.ModuleList(ResBlock(chs[i], chs[i], cond) for i in range(n + 1))
        self.enc_down = nn.ModuleList(nn.Conv2d(chs[i], chs[i + 1], 3, stride=2, padding=1) for i in range(n))
        h, w = self.sizes[-1]
        self.top = (chs[-1], h, w)
        self.enc_out = nn.Linear(chs[-1] * h * w, 2 * cfg.latent_dim)
        # decoder: (B, latent) -> pixel distribution parameters
        self.dec_in = nn.Linear(cfg.latent_dim + cond, chs[-1] * h * w)
        self.dec_blocks = nn.ModuleList(ResBlock(chs[i], chs[i], cond) for i in range(n + 1))
        self.dec_up = nn.ModuleList(nn.Conv2d(chs[i + 1], chs[i], 3, padding=1) for i in range(n))
        self.dist = PixelLikelihood(cfg.likelihood, spec.levels, spec.channels)
        self.dec_norm = group_norm(chs[0])
        self.dec_out = nn.Conv2d(chs[0], self.dist.out_channels, 3, padding=1)
        self.register_buffer("steps_seen", torch.tensor(0, dtype=torch.long))
        if cfg.prior == "ex_post":  # fitted by after_training; N(0, I) until then
            self.register_buffer("prior_loc", torch.zeros(spec.num_classes, cfg.latent_dim))
            self.register_buffer("prior_tril", torch.eye(cfg.latent_dim).repeat(spec.num_classes, 1, 1))

    # -- networks
    def posterior(self, x: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
        """q(z | x, y) = N(mean, diag(exp(log_var))): x (B, C, H, W) -> mean, log_var (B, d)."""
        c = self.embed(y, x.shape[0])  # (B, hidden)
        h = self.enc_in(x * 2 - 1)  # (B, chs[0], H, W)
        for i, block in enumerate(self.enc_blocks):
            h = block(h, c)  # (B, chs[i], *sizes[i])
            if i < len(self.enc_down):
                h = self.enc_down[i](F.silu(h))  # (B, chs[i + 1], *sizes[i + 1])
        mean, log_var = self.enc_out(F.silu(h).flatten(1)).chunk(2, dim=1)  # (B, d) each
        return mean, log_var.clamp(-12.0, 8.0)  # a bounded variance: no exp overflow, no collapse to 0

    def decoder_params(self, z: Tensor, y: Tensor | None) -> Tensor:
        """p(x | z, y): z (B, d) -> the pixel distribution's parameters (B, C * P, H, W)."""
        c = self.embed(y, z.shape[0])  # (B, hidden)
        h = self.dec_in(torch.cat([z, c], 1)).view(z.shape[0], *self.top)  # (B, chs[-1], *sizes[-1])
        n = len(self.dec_up)
        for i in reversed(range(n + 1)):
            h = self.dec_blocks[i](h, c)  # (B, chs[i], *sizes[i])
            if i > 0:
                h = F.interpolate(h, size=self.sizes[i - 1], mode="nearest")
                h = self.dec_up[i - 1](h)  # (B, chs[i - 1], *sizes[i - 1])
        return self.dec_out(F.silu(self.dec_norm(h)))  # (B, C * P, H, W)

    # -- bounds
    def _terms(self, x: Tensor, y: Tensor | None, k: int, eps: Tensor):
        """log p(x|z), log p(z), log q(z|x) for k posterior samples, ``eps`` (k, B, d) their
        standard-normal draws: each (k, B)."""
        mean, log_var = self.posterior(x, y)  # (B, d) each
        std = torch.exp(0.5 * log_var)
        # 1. z_i ~ q(z | x), i = 1..k, reparameterised (Kingma & Welling section 2.4): z = mean + std * eps
        z = mean + std * eps  # (k, B, d)
        flat = z.reshape(-1, z.shape[-1])  # (k B, d), sample-major: row i B + b is sample i of image b
        yk = None if y is None else y.repeat(k)  # (k B,), in the same order
        # 2. log p(x | z_i): the decoder's discrete likelihood of the image's levels
        params = self.decoder_params(flat, yk)  # (k B, C * P, H, W)
        levels = self.to_levels(x).repeat(k, 1, 1, 1)  # (k B, C, H, W)
        log_px = self.dist.log_prob(params, levels).view(k, -1)  # (k, B)
        # 3. log p(z_i) = log N(z_i; 0, I); log q(z_i | x) = log N(z_i; mean, std^2), (z - mean) / std = eps
        log_pz = (-0.5 * (z**2 + math.log(2 * math.pi))).sum(-1)  # (k, B)
        log_qz = (-0.5 * (eps**2 + log_var + math.log(2 * math.pi))).sum(-1)  # (k, B)
        return log_px, log_pz, log_qz

    def _bound(self, x: Tensor, y: Tensor | None, k: int, eps: Tensor) -> Tensor:
        """Burda et al.'s L_k (section 3): log (1/k) sum_i w_i, w_i = p(x, z_i) / q(z_i | x),
        (B,); L_1 is the ELBO and log p(x) >= L_{k+1} >= L_k (their Theorem 1)."""
        log_px, log_pz, log_qz = self._terms(x, y, k, eps)  # (k, B) each
        # log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x); the mean of the w_i in log space
        return torch.logsumexp(log_px + log_pz - log_qz, dim=0) - math.log(k)

    def elbo(self, x: Tensor, y: Tensor | None = None, k: int | None = None) -> Tensor:
        """IWAE bound with k importance samples (k=1: the ELBO; default ``iwae_k``), nats
        (B,), each image's samples its own (:meth:`image_noise`). y=None: log sum_y p(y)
        exp(bound(x, y)), still a lower bound on log p(x)."""
        self.check_inputs(x, y)
        k = k or self.cfg.iwae_k
        # each image's own posterior draws (the same for every class: common random numbers)
        eps = self.image_noise(x, (k, self.cfg.latent_dim)).transpose(0, 1)  # (k, B, d)
        if y is None:
            return self.marginal(lambda xx, yy: self._bound(xx, yy, k, eps), x)
        return self._bound(x, y, k, eps)

    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        """Minimises -ELBO = -E_q[log p(x | z)] + KL(q(z | x) || p(z)) (Kingma & Welling eq. 3)
        per dimension, one z per image; the KL weight warms up from 0 and ``free_bits`` floors
        each latent's batch-mean KL (training only: the logged ``neg_elbo`` is the true one)."""
        # 1. z ~ q(z | x) by reparameterisation
        mean, log_var = self.posterior(x, y)  # (B, d) each
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)  # (B, d)
        # 2. reconstruction term log p(x | z)
        rec = self.dist.log_prob(self.decoder_params(z, y), self.to_levels(x))  # (B,)
        # 3. KL(N(mean, var) || N(0, I)) in closed form (Kingma & Welling appendix B), per latent dim
        kl_dims = 0.5 * (mean**2 + log_var.exp() - 1 - log_var)  # (B, d)
        kl = kl_dims.sum(1)  # (B,)
        kl_train = kl_dims.mean(0).clamp(min=self.cfg.free_bits).sum() if self.cfg.free_bits else kl.mean()
        if self.training:
            self.steps_seen += 1
        warm = self.cfg.kl_warmup_steps
        beta = min(1.0, self.steps_seen.item() / warm) if warm else 1.0
        loss = (-rec.mean() + beta * kl_train) / self.spec.dims
        neg_elbo = (-rec + kl).mean()
        return StepOutput(
            loss,
            {
                "neg_elbo": neg_elbo.item(),
                "bpd_elbo": neg_elbo.item() / (self.spec.dims * math.log(2)),
                "kl": kl.mean().item(),
                "beta": beta,
            },
        )

    # -- latent space
    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Posterior mean, (B, latent_dim); ``y`` required (see :func:`needs_labels`)."""
        self.check_inputs(x, y)
        needs_labels(self, y, "encode")
        return self.posterior(x, y)[0]

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Expected image under p(x | z, y), in [0, 1]; ``y`` required."""
        return self.dist.mean(self.decoder_params(z, needs_labels(self, y, "decode")))

    @torch.no_grad()
    def after_training(self, x: Tensor, y: Tensor) -> None:
        """With ``prior: ex_post``, fit the sampling prior to the training images' codes."""
        if self.cfg.prior != "ex_post":
            return
        was = self.training
        self.eval()
        z = torch.cat([self.posterior(xb, yb)[0] for xb, yb in zip(x.split(512), y.split(512), strict=True)])
        self.train(was)
        loc, tril = class_gaussians(z, y, self.spec.num_classes)
        self.prior_loc.copy_(loc)
        self.prior_tril.copy_(tril)

    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        # ancestral: z ~ N(0, temperature^2 I) (n, d) (ex_post: N(loc_y, temperature^2 L_y L_y^T)),
        # then x ~ p(x | z, y) (or its mean)
        z = torch.randn(n, self.cfg.latent_dim, generator=generator).to(self.device) * self.cfg.temperature
        if self.cfg.prior == "ex_post":
            z = self.prior_loc[y] + (self.prior_tril[y] @ z.unsqueeze(-1)).squeeze(-1)  # (n, d)
        params = self.decoder_params(z, y)  # (n, C * P, H, W)
        if self.cfg.sample_mode == "mean":
            return self.dist.mean(params)
        return self.from_levels(self.dist.sample(params, generator))
