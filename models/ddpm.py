"""Denoising diffusion (Ho et al. 2020, arXiv:2006.11239) with a small UNet, cosine noise
schedule (Nichol & Dhariwal 2021, arXiv:2102.09672), classifier-free guidance (Ho & Salimans
2022, arXiv:2207.12598) and DDIM sampling / inversion (Song et al. 2021, arXiv:2010.02502).

The network (``UNet``) is separate from the process (``DDPM``): the UNet predicts noise, the
DDPM owns the schedule, the loss, the samplers and the variational bound. The bound follows
Ho et al.: L_T + sum_t KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) - log p(x_0|x_1), with a
discretised Gaussian decoder over the data's levels, so it bounds the discrete likelihood.
The trainer keeps an EMA copy of the weights; saved models are the EMA weights.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from genzoo.models.base import DataSpec, GenerativeModel, NetConfig, StepOutput, register
from genzoo.models.layers import (
    LabelEmbedding,
    ResBlock,
    auto_levels,
    drop_labels,
    group_norm,
    ladder,
    sinusoidal,
)


class DDPMConfig(NetConfig):
    hidden: int = Field(64, gt=0, description="UNet channels at full resolution")
    down: int = Field(0, ge=0, description="UNet levels; 0 = as many as the size allows")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    timesteps: int = Field(1000, ge=2)
    schedule: Literal["cosine", "linear"] = "cosine"
    min_noise: float | None = Field(
        None, gt=0.0, lt=1.0, description="noise std of the first step; None: a third of a level's half-width"
    )
    label_dropout: float = Field(0.1, ge=0.0, le=1.0, description="null-label rate (CFG)")
    guidance: float = Field(1.0, ge=0.0, description="1 = conditional, >1 = stronger guidance")
    sample_steps: int = Field(50, ge=1, description="DDIM steps for sample/encode/decode")
    eta: float = Field(0.0, ge=0.0, description="DDIM stochasticity (0 = deterministic)")
    bound_terms: int = Field(0, ge=0, description="KL terms evaluated by elbo; 0 = all T")


class UNet(nn.Module):
    """eps_theta(x_t, t, y): one residual block per level down and up, skip connections."""

    def __init__(self, spec: DataSpec, cfg: DDPMConfig):
        super().__init__()
        n = cfg.down or auto_levels(spec.height, spec.width)
        self.sizes = ladder(spec.height, spec.width, n)
        chs = [cfg.hidden * min(2**i, 4) for i in range(n + 1)]
        cond = 4 * cfg.hidden
        self.t_dim = cfg.hidden
        self.t_mlp = nn.Sequential(nn.Linear(cfg.hidden, cond), nn.SiLU(), nn.Linear(cond, cond))
        self.label = LabelEmbedding(spec.num_classes, cond)
        self.inp = nn.Conv2d(spec.channels, chs[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(ResBlock(chs[i], chs[i], cond, cfg.dropout) for i in range(n + 1))
        self.downsample = nn.ModuleList(
            nn.Conv2d(chs[i], chs[i + 1], 3, stride=2, padding=1) for i in range(n)
        )
        self.mid = ResBlock(chs[-1], chs[-1], cond, cfg.dropout)
        self.up_blocks = nn.ModuleList(ResBlock(2 * chs[i], chs[i], cond, cfg.dropout) for i in range(n + 1))
        self.upsample = nn.ModuleList(nn.Conv2d(chs[i + 1], chs[i], 3, padding=1) for i in range(n))
        self.norm = group_norm(chs[0])
        self.out = nn.Conv2d(chs[0], spec.channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        c = self.t_mlp(sinusoidal(t, self.t_dim)) + self.label(y)
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, c)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        h = self.mid(h, c)
        for i in reversed(range(len(self.up_blocks))):
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, size=self.sizes[i], mode="nearest"))
            h = self.up_blocks[i](torch.cat([h, skips[i]], 1), c)
        return self.out(F.silu(self.norm(h)))


def make_betas(kind: str, steps: int, min_noise: float, min_signal: float = 1e-4) -> Tensor:
    """Noise schedule. ``cosine`` (Nichol & Dhariwal 2021) is truncated at both ends: the
    first step already has noise std ``min_noise`` and the last keeps ``alpha_bar =
    min_signal``. Discrete data make noise far below the bin width pointless (the denoiser
    would have to snap to the level grid, and those steps dominate the bound) and the
    untruncated last step has beta -> 1, which blows up its bound term."""
    if kind == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
    s = 0.008
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    f0 = f(torch.tensor(0.0, dtype=torch.float64))
    u_of = lambda abar: torch.arccos(torch.sqrt(f0 * abar)) * 2 / math.pi * (1 + s) - s  # noqa: E731
    u0, u1 = (
        u_of(torch.tensor(1 - min_noise**2, dtype=torch.float64)),
        u_of(torch.tensor(min_signal, dtype=torch.float64)),
    )
    abar = f(u0 + (u1 - u0) * torch.linspace(0, 1, steps, dtype=torch.float64)) / f0
    prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return 1 - abar / prev


def normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * (1 + torch.erf(x / math.sqrt(2)))


@register
class DDPM(GenerativeModel):
    family = "ddpm"
    Config = DDPMConfig
    wants_ema = True

    def __init__(self, spec: DataSpec, cfg: DDPMConfig):
        super().__init__(spec, cfg)
        self.net = UNet(spec, cfg)
        half_bin = 1.0 / (spec.levels - 1)  # data live in [-1, 1]: bins are 2 / (L - 1) wide
        betas = make_betas(cfg.schedule, cfg.timesteps, cfg.min_noise or half_bin / 3)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        for name, v in {
            "betas": betas,
            "alphas_bar": abar,
            "alphas_bar_prev": abar_prev,
            "post_var": betas * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, v.float(), persistent=False)

    # -- the noise model, with guidance
    def eps(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float = 1.0) -> Tensor:
        null = torch.full((x.shape[0],), self.net.label.null, device=x.device, dtype=torch.long)
        if y is None:
            return self.net(x, t, null)
        if guidance == 1.0:
            return self.net(x, t, y)
        e = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
        e_c, e_u = e.chunk(2)
        return e_u + guidance * (e_c - e_u)

    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        x0 = x * 2 - 1
        b = x.shape[0]
        t = torch.randint(0, self.cfg.timesteps, (b,), device=x.device)
        noise = torch.randn_like(x0)
        ab = self.alphas_bar[t].view(b, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        if y is None:
            y = torch.full((b,), self.net.label.null, device=x.device, dtype=torch.long)
        elif self.training:
            y = drop_labels(y, self.cfg.label_dropout, self.net.label.null)
        loss = F.mse_loss(self.net(xt, t, y), noise)
        return StepOutput(loss, {"mse": loss.item()})

    # -- DDIM
    def _timesteps(self, steps: int) -> list[int]:
        ts = torch.linspace(0, self.cfg.timesteps - 1, min(steps, self.cfg.timesteps))
        return sorted({int(round(v)) for v in ts.tolist()})

    def _ddim(self, x: Tensor, y: Tensor | None, guidance: float, generator=None) -> Tensor:
        ts = self._timesteps(self.cfg.sample_steps)[::-1]
        for i, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            ab = self.alphas_bar[t]
            ab_prev = self.alphas_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            e = self.eps(x, tt, y, guidance)
            x0 = ((x - (1 - ab).sqrt() * e) / ab.sqrt()).clamp(-1, 1)
            e = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            sigma = self.cfg.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * e
            if self.cfg.eta > 0 and i + 1 < len(ts):
                x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        return x

    def _to_image(self, x0: Tensor) -> Tensor:
        return self.from_levels(self.to_levels((x0 + 1) / 2))

    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        x = torch.randn(n, *self.spec.shape, generator=generator).to(self.device)
        return self._to_image(self._ddim(x, y, self.cfg.guidance, generator))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """DDIM inversion: image -> x_T (B, C, H, W), deterministic, no guidance."""
        ts = self._timesteps(self.cfg.sample_steps)
        h = x * 2 - 1
        ab_prev = torch.tensor(1.0, device=x.device)
        for i, t in enumerate(ts):
            t_model = ts[max(i - 1, 0)]  # eps at the current noise level (first step: t_0)
            tt = torch.full((x.shape[0],), t_model, device=x.device, dtype=torch.long)
            e = self.eps(h, tt, y)
            x0 = (h - (1 - ab_prev).sqrt() * e) / ab_prev.sqrt()
            ab = self.alphas_bar[t]
            h = ab.sqrt() * x0 + (1 - ab).sqrt() * e
            ab_prev = ab
        return h

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_T -> image by deterministic DDIM (no guidance): the inverse of ``encode``."""
        return self._to_image(self._ddim(z, y, 1.0))

    # -- variational bound
    def elbo(self, x: Tensor, y: Tensor | None = None, *, generator=None) -> Tensor:
        """Lower bound on log p(x | y) in nats, (B,); y=None bounds the unconditional
        (null-label) model. With ``bound_terms`` = K < T the T - 1 KL terms are estimated
        without bias from K stratified timesteps (one per stratum, weighted (T - 1) / K); the
        decoder term L_0 and the prior term L_T are always exact. One noise draw per term."""
        x0 = x * 2 - 1
        b = x.shape[0]
        dims = (1, 2, 3)
        ab_T = self.alphas_bar[-1]
        # L_T: KL(q(x_T | x_0) || N(0, I))
        mean_T, var_T = ab_T.sqrt() * x0, 1 - ab_T
        total = (0.5 * (var_T + mean_T**2 - 1 - torch.log(var_T))).sum(dims)
        T = self.cfg.timesteps
        K = self.cfg.bound_terms if 0 < self.cfg.bound_terms < T - 1 else T - 1
        g = generator or torch.Generator().manual_seed(0)
        edges = torch.linspace(1, T, K + 1)
        picks = [int(edges[i] + torch.rand((), generator=g) * (edges[i + 1] - edges[i])) for i in range(K)]
        weight = (T - 1) / K
        for t in [0, *picks]:
            tt = torch.full((b,), t, device=x.device, dtype=torch.long)
            ab, ab_prev, beta = self.alphas_bar[t], self.alphas_bar_prev[t], self.betas[t]
            noise = torch.randn(x0.shape, generator=g).to(x0.device)
            xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
            e = self.eps(xt, tt, y)
            mean_model = (xt - beta / (1 - ab).sqrt() * e) / (1 - beta).sqrt()
            if t == 0:  # L_0: discretised Gaussian decoder over the levels
                total = total - self._decoder_log_prob(x0, mean_model, beta.sqrt())
            else:
                coef0 = ab_prev.sqrt() * beta / (1 - ab)
                coeft = (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab)
                mean_post = coef0 * x0 + coeft * xt
                kl = ((mean_post - mean_model) ** 2 / (2 * self.post_var[t])).sum(dims)
                total = total + weight * kl
        return -total

    def _decoder_log_prob(self, x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        half = 1.0 / (self.spec.levels - 1)
        upper = torch.where(x0 > 1 - half / 2, torch.ones_like(x0), normal_cdf((x0 + half - mean) / std))
        lower = torch.where(x0 < -1 + half / 2, torch.zeros_like(x0), normal_cdf((x0 - half - mean) / std))
        return torch.log((upper - lower).clamp(min=1e-12)).sum((1, 2, 3))
