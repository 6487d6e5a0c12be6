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

import itertools
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from genzoo.models.base import DataSpec, GenerativeModel, Interval, NetConfig, StepOutput, register
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
    label_dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="null-label rate: trains the unconditional model (guidance, test bits/dim)",
    )
    guidance: float = Field(1.0, ge=0.0, description="1 = conditional, >1 = stronger guidance")
    guidance_interval: Interval = Field(
        (0.0, 1.0),
        description="sampling: guidance at noise levels t / T in [start, end) only; elsewhere g = 1",
    )
    sample_steps: int = Field(50, ge=1, description="DDIM steps for sample/encode/decode")
    eta: float = Field(0.0, ge=0.0, description="DDIM stochasticity (0 = deterministic)")
    bound_terms: int = Field(0, ge=0, description="KL terms evaluated by elbo; 0 = all T")
    bound_spacing: Literal["log", "linear"] = Field(
        "log",
        description="elbo's strata of timesteps (bound_terms < T - 1): log, narrow where the KL terms are "
        "large (the first timesteps one each); linear, equal widths",
    )

    @model_validator(mode="after")
    def _the_null_label_is_trained(self) -> DDPMConfig:
        if self.label_dropout == 0.0:
            raise ValueError(
                "label_dropout 0 leaves the unconditional (null-label) model untrained, and guidance and the "
                "test bits/dim (labels unknown) use it: set it above 0 (default 0.1)"
            )
        return self


def bound_strata(timesteps: int, terms: int, spacing: str = "log") -> list[int]:
    """``terms`` + 1 integer edges 1 = e_0 < ... < e_K = T: stratum i holds the timesteps
    [e_i, e_i+1) (0-based, the paper's t = 2..T). ``log``: each stratum's edges in a constant
    ratio, recomputed from the last edge (a stratum holds at least one timestep): the KL terms
    fall roughly as 1 / t, so the first timesteps, whose terms are largest, come one per stratum
    and the estimate's spread is a fraction of equal strata's. ``linear``: equal widths."""
    T, K = timesteps, terms
    if not 1 <= K <= T - 1:
        raise ValueError(f"bound_terms: between 1 and timesteps - 1 ({T - 1}), got {K}")
    if spacing == "linear":
        return [math.floor(1 + i * (T - 1) / K + 0.5) for i in range(K + 1)]
    edges = [1]
    for i in range(K - 1):
        left, e = K - i, edges[-1]  # strata still to place, the current edge
        edges.append(min(max(math.floor(e * (T / e) ** (1 / left) + 0.5), e + 1), T - left + 1))
    return [*edges, T]


def bound_timesteps(
    timesteps: int, terms: int, spacing: str, generator: torch.Generator
) -> list[tuple[int, int]]:
    """(t, weight) for each stratum of :func:`bound_strata`: t drawn uniformly in it, weighted by its
    width, so that sum(weight * L_t) is an unbiased estimate of the sum of every L_t."""
    edges = bound_strata(timesteps, terms, spacing)
    return [
        (lo + int(torch.rand((), generator=generator) * (hi - lo)), hi - lo)
        for lo, hi in itertools.pairwise(edges)
    ]


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
        """x_t (B, C, H, W), t (B,) 0-based, y (B,) -> predicted noise (B, C, H, W)."""
        c = self.t_mlp(sinusoidal(t, self.t_dim)) + self.label(y)  # (B, 4 hidden)
        h = self.inp(x)  # (B, chs[0], H, W)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, c)  # (B, chs[i], *sizes[i])
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)  # (B, chs[i + 1], *sizes[i + 1])
        h = self.mid(h, c)  # (B, chs[-1], *sizes[-1])
        for i in reversed(range(len(self.up_blocks))):
            if i < len(self.upsample):  # (B, chs[i + 1], *sizes[i + 1]) -> (B, chs[i], *sizes[i])
                h = self.upsample[i](F.interpolate(h, size=self.sizes[i], mode="nearest"))
            h = self.up_blocks[i](torch.cat([h, skips[i]], 1), c)  # (B, 2 chs[i], ...) -> (B, chs[i], ...)
        return self.out(F.silu(self.norm(h)))  # (B, C, H, W)


def make_betas(kind: str, steps: int, min_noise: float, min_signal: float = 1e-4) -> Tensor:
    """Noise schedule. ``cosine`` (Nichol & Dhariwal 2021) is truncated at both ends: the
    first step already has noise std ``min_noise`` and the last keeps ``alpha_bar =
    min_signal``. Discrete data make noise far below the bin width pointless (the denoiser
    would have to snap to the level grid, and those steps dominate the bound) and the
    untruncated last step has beta -> 1, which blows up its bound term.

    Cosine: abar(u) = f(u) / f(0), f(u) = cos^2((u + s) / (1 + s) * pi / 2) (Nichol & Dhariwal
    eq. 17), on u in [u0, u1] instead of [0, 1]; beta_t = 1 - abar_t / abar_{t-1}. Returns
    float64 betas (T,). Linear: Ho et al.'s 1e-4 .. 0.02 for T = 1000, rescaled for other T, at most
    0.999 (as Nichol & Dhariwal clip: from T = 20 down the rescaled ends reach 1, abar_T 0)."""
    if kind == "linear":
        scale = 1000 / steps
        return torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64).clamp(max=0.999)
    s = 0.008
    f = lambda u: torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    f0 = f(torch.tensor(0.0, dtype=torch.float64))
    u_of = lambda abar: torch.arccos(torch.sqrt(f0 * abar)) * 2 / math.pi * (1 + s) - s  # noqa: E731  (f^-1)
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

    def __init__(self, spec: DataSpec, cfg: DDPMConfig):
        super().__init__(spec, cfg)
        self.net = UNet(spec, cfg)
        half_bin = 1.0 / (spec.levels - 1)  # data live in [-1, 1]: bins are 2 / (L - 1) wide
        betas = make_betas(cfg.schedule, cfg.timesteps, cfg.min_noise or half_bin / 3)
        # abar_t = prod_{s <= t} (1 - beta_s) (Ho et al. eq. 4); buffers are (T,), index t = the paper's t + 1
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])  # abar_0 = 1
        # every coefficient computed in float64, then stored in float32: 1 - abar_1 (~1.7e-6 at 256
        # levels) taken from a float32 abar is 1% off, and the bound's first KL terms never vanish
        for name, v in {
            "betas": betas,
            "alphas_bar": abar,
            "alphas_bar_prev": abar_prev,
            "post_var": betas * (1 - abar_prev) / (1 - abar),  # beta~_t, the posterior's variance (eq. 7)
            "sqrt_ab": abar.sqrt(),  # q(x_t | x_0)'s mean scale (eq. 4)
            "sqrt_1m_ab": (1 - abar).sqrt(),  # and its std
            "eps_coef": betas / (1 - abar).sqrt(),  # mu_theta = (x_t - eps_coef eps) / sqrt(alpha_t) (eq. 11)
            "sqrt_alpha": (1 - betas).sqrt(),
            "post_coef0": abar_prev.sqrt() * betas / (1 - abar),  # mu~_t's weights on x_0 and x_t (eq. 7)
            "post_coeft": (1 - betas).sqrt() * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, v.float(), persistent=False)

    # -- the noise model, with guidance
    def eps(self, x: Tensor, t: Tensor, y: Tensor | None, guidance: float = 1.0) -> Tensor:
        """eps_theta(x_t, t, y) (B, C, H, W). With guidance g != 1, classifier-free guidance
        (Ho & Salimans eq. 6): (1 + w) eps(x_t, y) - w eps(x_t), with w = g - 1."""
        null = torch.full((x.shape[0],), self.net.label.null, device=x.device, dtype=torch.long)
        if y is None:
            return self.net(x, t, null)
        if guidance == 1.0:
            return self.net(x, t, y)
        e = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))  # (2B, C, H, W): one pass
        e_c, e_u = e.chunk(2)  # conditional, unconditional: (B, C, H, W) each
        return e_u + guidance * (e_c - e_u)

    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        """Ho et al. Algorithm 1 with L_simple (eq. 14); labels dropped at ``label_dropout``
        so that one network also learns the unconditional eps (classifier-free guidance)."""
        # 1. x_0 ~ q(x_0), scaled to [-1, 1]
        x0 = x * 2 - 1  # (B, C, H, W)
        b = x.shape[0]
        # 2. t ~ Uniform({1, ..., T}) (0-based here)
        t = torch.randint(0, self.cfg.timesteps, (b,), device=x.device)  # (B,)
        # 3. eps ~ N(0, I)
        noise = torch.randn_like(x0)  # (B, C, H, W)
        # 4. x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, a draw from q(x_t | x_0) (eq. 4)
        xt = (
            self.sqrt_ab[t].view(b, 1, 1, 1) * x0 + self.sqrt_1m_ab[t].view(b, 1, 1, 1) * noise
        )  # (B, C, H, W)
        if y is None:
            y = torch.full((b,), self.net.label.null, device=x.device, dtype=torch.long)
        elif self.training:
            y = drop_labels(y, self.cfg.label_dropout, self.net.label.null)
        # 5. gradient step on || eps - eps_theta(x_t, t) ||^2
        loss = F.mse_loss(self.net(xt, t, y), noise)
        return StepOutput(loss, {"mse": loss.item()})

    # -- DDIM
    def _timesteps(self, steps: int) -> list[int]:
        """``steps`` levels evenly from the lowest to the highest noise, both included; one step is
        the highest alone (it was the lowest: x_T taken for a clean image, the samples noise)."""
        if steps == 1:
            return [self.cfg.timesteps - 1]
        ts = torch.linspace(0, self.cfg.timesteps - 1, min(steps, self.cfg.timesteps))
        return sorted({int(round(v)) for v in ts.tolist()})

    def _ddim(
        self, x: Tensor, y: Tensor | None, guidance: float, generator=None, eta: float | None = None
    ) -> Tensor:
        """x_T (B, C, H, W) -> x_0 (B, C, H, W) in [-1, 1] by Song et al. eq. 12 on a
        sub-sequence tau_S > ... > tau_1 of the T steps (their section 4.2). Their alpha_t is
        Ho et al.'s abar_t. eta = 0: deterministic; eta = 1 on every step: Ho et al.'s
        Algorithm 2 with sigma_t^2 = beta~_t (but x_0 clipped). ``eta``: the config's unless given."""
        eta = self.cfg.eta if eta is None else eta
        ts = self._timesteps(self.cfg.sample_steps)[::-1]  # tau_S, ..., tau_1 (0-based)
        for i, t in enumerate(ts):
            tt = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)  # (B,)
            ab = self.alphas_bar[t]  # alpha_t
            # alpha_{t-1}: the next, lower level of the sub-sequence; 1 after the last (x_0 itself)
            ab_prev = self.alphas_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            # 1. eps_theta(x_t, t)
            start, end = self.cfg.guidance_interval
            e = self.eps(x, tt, y, guidance if start <= t / self.cfg.timesteps < end else 1.0)  # (B, C, H, W)
            # 2. "predicted x_0" (eq. 9): (x_t - sqrt(1 - alpha_t) eps) / sqrt(alpha_t), clipped to [-1, 1]
            x0 = ((x - (1 - ab).sqrt() * e) / ab.sqrt()).clamp(-1, 1)  # (B, C, H, W)
            # 3. the eps that the clipped x_0 implies, so that x_t, x_0 and eps stay consistent
            e = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            # 4. eq. 16: sigma_t = eta sqrt((1 - alpha_{t-1}) / (1 - alpha_t) (1 - alpha_t / alpha_{t-1}))
            sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
            # 5. eq. 12: sqrt(alpha_{t-1}) x_0 + sqrt(1 - alpha_{t-1} - sigma_t^2) eps ("direction to x_t")
            x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * e
            # 6. + sigma_t z, z ~ N(0, I); none on the last step (as Algorithm 2 has z = 0 at t = 1)
            if eta > 0 and i + 1 < len(ts):
                x = x + sigma * torch.randn(x.shape, generator=generator).to(x.device)
        return x

    def _to_image(self, x0: Tensor) -> Tensor:  # (B, C, H, W) in [-1, 1] -> on the level grid in [0, 1]
        top = self.spec.levels - 1  # in floats: NaN stays NaN (as a long it would be -2**63)
        return ((x0 + 1) / 2 * top).round().clamp(0, top) / top

    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        # x_T ~ N(0, I): (n, C, H, W)
        x = torch.randn(n, *self.spec.shape, generator=generator).to(self.device)
        return self._to_image(self._ddim(x, y, self.cfg.guidance, generator))

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """DDIM inversion: image -> x_T (B, C, H, W), deterministic, no guidance. Eq. 12 with
        eta = 0 run upwards, tau_1 < ... < tau_S (the ODE view of Song et al. section 4.3, eq.
        13; encoding as in their section 5.4); eps is taken at the current, lower noise level,
        the usual approximation (the exact step would need it at the level being moved to)."""
        self.check_inputs(x, y)
        ts = self._timesteps(self.cfg.sample_steps)  # tau_1, ..., tau_S (0-based)
        h = x * 2 - 1  # x_0 in [-1, 1]: (B, C, H, W)
        ab_prev = torch.tensor(1.0, device=x.device)  # alpha of the current level (x_0: 1)
        for i, t in enumerate(ts):
            t_model = ts[max(i - 1, 0)]  # eps at the current noise level (first step: t_0)
            tt = torch.full((x.shape[0],), t_model, device=x.device, dtype=torch.long)  # (B,)
            e = self.eps(h, tt, y)  # (B, C, H, W)
            x0 = (h - (1 - ab_prev).sqrt() * e) / ab_prev.sqrt()  # "predicted x_0" (eq. 9)
            ab = self.alphas_bar[t]
            h = ab.sqrt() * x0 + (1 - ab).sqrt() * e  # eq. 12, eta = 0, one level up
            ab_prev = ab
        return h

    @property
    def code_shape(self) -> tuple[int, ...]:
        """A code is x_T: the image's shape (C, H, W)."""
        return tuple(self.spec.shape)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_T -> image by deterministic DDIM (eta = 0 whatever the config's, no guidance): the
        inverse of ``encode`` (with the config's eta > 0 each decode drew fresh noise)."""
        return self._to_image(self._ddim(z, y, 1.0, eta=0.0))

    # -- variational bound
    def elbo(self, x: Tensor, y: Tensor | None = None, *, generator=None) -> Tensor:
        """Lower bound on log p(x | y) in nats, (B,); y=None bounds the unconditional
        (null-label) model. With ``bound_terms`` = K < T the T - 1 KL terms are estimated
        without bias from K stratified timesteps (one per stratum of :func:`bound_strata`,
        weighted by its width); the decoder term L_0 and the prior term L_T are always exact.
        One noise draw per term, each image's own (:meth:`image_noise`; from ``generator`` when
        given, which also draws the timesteps).

        Ho et al. eq. 5: -log p(x_0) <= L_T + sum_{t>1} L_{t-1} + L_0, with
        L_T = KL(q(x_T|x_0) || p(x_T)), L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)),
        L_0 = -log p(x_0|x_1); the reverse process has variance sigma_t^2 = beta~_t."""
        self.check_inputs(x, y)
        x0 = x * 2 - 1  # (B, C, H, W)
        b = x.shape[0]
        dims = (1, 2, 3)  # C, H, W: one figure per image
        ab_T = self.alphas_bar[-1]
        # 1. L_T = KL(q(x_T | x_0) || N(0, I)), closed form; q(x_T | x_0) = N(sqrt(abar_T) x_0, 1 - abar_T)
        mean_T, var_T = ab_T.sqrt() * x0, 1 - ab_T
        total = (0.5 * (var_T + mean_T**2 - 1 - torch.log(var_T))).sum(dims)  # (B,)
        T = self.cfg.timesteps
        # 2. which L_{t-1} to evaluate: one t drawn uniformly in each of K strata of [1, T) (0-based:
        #    the paper's t = 2..T), weighted by its stratum's width, so their sum is unbiased
        K = self.cfg.bound_terms if 0 < self.cfg.bound_terms < T - 1 else T - 1
        g = generator or torch.Generator().manual_seed(0)  # the timesteps: the same for every image
        seeds = self.image_seeds(x) if generator is None else None  # each image's noise: its own
        for j, (t, weight) in enumerate([(0, 0), *bound_timesteps(T, K, self.cfg.bound_spacing, g)]):
            tt = torch.full((b,), t, device=x.device, dtype=torch.long)  # (B,)
            # 3. x_t ~ q(x_t | x_0) (eq. 4)
            if seeds is not None:  # (image_noise: an image's figure is the same in any batch)
                noise = self.image_noise(x, tuple(x0.shape[1:]), stream=j, seeds=seeds)  # (B, C, H, W)
            else:
                noise = torch.randn(x0.shape, generator=g).to(x0.device)
            xt = self.sqrt_ab[t] * x0 + self.sqrt_1m_ab[t] * noise
            # 4. mu_theta(x_t, t) = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) (eq. 11)
            e = self.eps(xt, tt, y)
            mean_model = (xt - self.eps_coef[t] * e) / self.sqrt_alpha[t]  # (B, C, H, W)
            if t == 0:  # 5. L_0: discretised Gaussian decoder over the levels, std sqrt(beta_1) (eq. 13)
                total = total - self._decoder_log_prob(x0, mean_model, self.betas[t].sqrt())
            else:
                # 6. the posterior mean mu~_t(x_t, x_0) of q(x_{t-1} | x_t, x_0) (eqs. 6-7)
                mean_post = self.post_coef0[t] * x0 + self.post_coeft[t] * xt  # (B, C, H, W)
                # 7. L_{t-1} = ||mu~_t - mu_theta||^2 / (2 sigma_t^2) (eq. 8; C = 0: equal variances)
                kl = ((mean_post - mean_model) ** 2 / (2 * self.post_var[t])).sum(dims)  # (B,)
                total = total + weight * kl
        return -total  # (B,)

    def _decoder_log_prob(self, x0: Tensor, mean: Tensor, std: Tensor) -> Tensor:
        """log p(x_0 | x_1) (B,): each value's bin [x - 1/(L-1), x + 1/(L-1)] under N(mean, std^2),
        the edge bins open to -inf / +inf (Ho et al. eq. 13)."""
        half = 1.0 / (self.spec.levels - 1)
        upper = torch.where(x0 > 1 - half / 2, torch.ones_like(x0), normal_cdf((x0 + half - mean) / std))
        lower = torch.where(x0 < -1 + half / 2, torch.zeros_like(x0), normal_cdf((x0 - half - mean) / std))
        return torch.log((upper - lower).clamp(min=1e-12)).sum((1, 2, 3))
