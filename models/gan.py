"""Conditional DCGAN-class GAN (Radford et al. 2016, arXiv:1511.06434) with a projection
discriminator (Miyato & Koyama 2018, arXiv:1802.05637), spectral normalisation (Miyato et al.
2018, arXiv:1802.05957) and the hinge loss. Two phases, each with its own optimizer:
``disc`` then ``gen``. No likelihood: the GAN only samples and decodes. With ``diffaugment``,
the discriminator sees real and generated images through the same random, differentiable
augmentations (DiffAugment, Zhao et al. 2020, arXiv:2006.10738), so it cannot memorise a
small training set.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from genzoo.models.base import DataSpec, GenerativeModel, NetConfig, StepOutput, register
from genzoo.models.layers import auto_levels, ladder


class GANConfig(NetConfig):
    latent_dim: int = Field(64, gt=0)
    hidden: int = Field(64, gt=0, description="channels at full resolution")
    up: int = Field(0, ge=0, description="upsampling levels; 0 = as many as the size allows")
    loss: Literal["hinge", "nonsaturating"] = "hinge"
    diffaugment: list[Literal["translation", "cutout", "color"]] = Field(
        default_factory=list,
        description="DiffAugment policy: augmentations applied to every image D sees, real and generated "
        "(translation by up to 1/8 of the side, a cutout of half the side, brightness/saturation/contrast)",
    )
    truncation: float = Field(
        0.0,
        ge=0.0,
        description="when sampling, latent values beyond +-truncation are redrawn (BigGAN's truncation "
        "trick; 0: off): fewer unlikely latents, less diversity",
    )

    @field_validator("truncation")
    @classmethod
    def _reachable(cls, t: float) -> float:
        if 0 < t < 0.1:  # P(|z| < t) < 8%: redrawing would barely end
            raise ValueError(f"truncation {t} redraws almost every latent value: 0 (off) or at least 0.1")
        return t


# ----------------------------------------------------------------------------- DiffAugment
# Zhao et al. 2020 (arXiv:2006.10738), their reference policy; images in [0, 1], so translation
# and cutout fill with 0 (the background of digits and MNIST) rather than mid-grey.


def _translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape  # (B, C, H, W): each image moved by its own (dy, dx), zeros shifted in
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sy).expand(b, h, w)  # in the padded image
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sx).expand(b, h, w)
    padded = F.pad(x, [sx, sx, sy, sy])  # (B, C, H + 2sy, W + 2sx)
    flat = (rows * (w + 2 * sx) + cols).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, flat).view_as(x)


def _cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape  # a (h/2, w/2) square at a random centre set to 0 in each image
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    ys, xs = torch.arange(h, device=x.device).view(1, h, 1), torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)  # (B, 1, H, W) mask over every channel


def _color(x: Tensor) -> Tensor:
    b = x.shape[0]  # brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5] (theirs, on [-1, 1]: halved)
    x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5) * 0.5
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean


DIFFAUGMENT = {"color": _color, "translation": _translation, "cutout": _cutout}


def diffaugment(x: Tensor, policy: list[str]) -> Tensor:
    """x (B, C, H, W) through every augmentation of ``policy`` in the paper's order (color,
    translation, cutout); differentiable in x, random per image (torch's global generator)."""
    for name in DIFFAUGMENT:
        if name in policy:
            x = DIFFAUGMENT[name](x)
    return x


class Generator(nn.Module):
    def __init__(self, spec: DataSpec, cfg: GANConfig, sizes, chs):
        super().__init__()
        self.sizes, self.top = sizes, (chs[-1], *sizes[-1])
        self.embed = nn.Embedding(spec.num_classes, cfg.latent_dim)
        self.fc = nn.Linear(2 * cfg.latent_dim, chs[-1] * sizes[-1][0] * sizes[-1][1])
        self.bn0 = nn.BatchNorm2d(chs[-1])
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chs[i + 1], chs[i], 3, padding=1), nn.BatchNorm2d(chs[i]), nn.ReLU())
            for i in range(len(sizes) - 1)
        )
        self.out = nn.Conv2d(chs[0], spec.channels, 3, padding=1)

    def forward(self, z: Tensor, y: Tensor) -> Tensor:  # z (B, latent), y (B,) -> (B, C, H, W) in [0, 1]
        h = self.fc(torch.cat([z, self.embed(y)], 1)).view(z.shape[0], *self.top)  # (B, chs[-1], *sizes[-1])
        h = F.relu(self.bn0(h))
        for i in reversed(range(len(self.ups))):
            h = F.interpolate(h, size=self.sizes[i], mode="nearest")
            h = self.ups[i](h)  # (B, chs[i], *sizes[i])
        return torch.sigmoid(self.out(h))


def minibatch_std(h: Tensor, group: int = 4) -> Tensor:
    """Mean feature std over groups of the batch, as one extra channel (Karras et al. 2018,
    arXiv:1710.10196): a generator that ignores its noise is easy to spot."""
    b, c, hh, ww = h.shape  # h (B, c, H', W') -> (B, 1, H', W')
    g = next(k for k in range(min(group, b), 0, -1) if b % k == 0)  # the largest group size dividing B
    if g < 2:
        return h.new_zeros(b, 1, hh, ww)
    std = h.view(g, b // g, c, hh, ww).var(0, unbiased=False).add(1e-8).sqrt().mean(dim=(1, 2, 3))  # (B / g,)
    return std.view(b // g, 1, 1, 1).repeat(g, 1, hh, ww)


class Discriminator(nn.Module):
    def __init__(self, spec: DataSpec, cfg: GANConfig, chs):
        super().__init__()
        self.inp = spectral_norm(nn.Conv2d(spec.channels, chs[0], 3, padding=1))
        self.downs = nn.ModuleList(
            spectral_norm(nn.Conv2d(chs[i], chs[i + 1], 4, stride=2, padding=1)) for i in range(len(chs) - 1)
        )
        self.mid = spectral_norm(nn.Conv2d(chs[-1] + 1, chs[-1], 3, padding=1))
        self.linear = spectral_norm(nn.Linear(chs[-1], 1))
        self.embed = spectral_norm(nn.Embedding(spec.num_classes, chs[-1]))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # x (B, C, H, W), y (B,) -> (B,) realness logits
        h = F.leaky_relu(self.inp(x * 2 - 1), 0.2)  # (B, chs[0], H, W)
        for down in self.downs:
            h = F.leaky_relu(down(h), 0.2)  # stride 2: (B, chs[i + 1], ...)
        h = torch.cat([h, minibatch_std(h)], 1)  # lets D see a collapsed batch: (B, chs[-1] + 1, H', W')
        h = F.leaky_relu(self.mid(h), 0.2).sum(dim=(2, 3))  # phi(x): (B, ch)
        # projection (Miyato & Koyama section 3): psi(phi(x)) + embed(y) . phi(x)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


@register
class GAN(GenerativeModel):
    family = "gan"
    Config = GANConfig
    phases = ("disc", "gen")

    def __init__(self, spec: DataSpec, cfg: GANConfig):
        super().__init__(spec, cfg)
        n = cfg.up or auto_levels(spec.height, spec.width)
        sizes = ladder(spec.height, spec.width, n)
        chs = [cfg.hidden * min(2**i, 4) for i in range(n + 1)]
        self.gen = Generator(spec, cfg, sizes, chs)
        self.disc = Discriminator(spec, cfg, chs)

    def phase_parameters(self, phase: str) -> list[nn.Parameter]:
        net = {"disc": self.disc, "gen": self.gen}[phase]
        return list(net.parameters())

    def _fake(self, n: int, y: Tensor) -> Tensor:  # G(z, y), z ~ N(0, I): (n, C, H, W)
        z = torch.randn(n, self.cfg.latent_dim, device=self.device)
        return self.gen(z, y)

    def _augment(self, x: Tensor) -> Tensor:  # what D sees in training: DiffAugment, when asked for
        return diffaugment(x, self.cfg.diffaugment) if self.cfg.diffaugment else x

    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        """One phase of the alternating game on the batch x (B, C, H, W), with D's logits d:

        - ``nonsaturating``: Goodfellow et al.'s value (eq. 1) E log D(x) + E log(1 - D(G(z))),
          D = sigmoid(d): D minimises softplus(-d_real) + softplus(d_fake); G maximises
          log D(G(z)) instead of minimising log(1 - D(G(z))) (their section 3), softplus(-d_fake).
        - ``hinge`` (Lim & Ye 2017, arXiv:1705.02894; Miyato et al. 2018): D minimises
          relu(1 - d_real) + relu(1 + d_fake); G minimises -d_fake.
        """
        if y is None:
            y = self.fill_labels(x.shape[0], None, None)
        hinge = self.cfg.loss == "hinge"
        if phase == "disc":
            with torch.no_grad():  # G is held fixed in D's step
                fake = self._fake(x.shape[0], y)  # (B, C, H, W)
            d_real, d_fake = self.disc(self._augment(x), y), self.disc(self._augment(fake), y)  # (B,) each
            if hinge:
                loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            else:  # -log sigmoid(d) = softplus(-d), -log(1 - sigmoid(d)) = softplus(d)
                loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            logs = {"d_loss": loss.item(), "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}
            return StepOutput(loss, logs)
        if phase == "gen":
            d_fake = self.disc(self._augment(self._fake(x.shape[0], y)), y)  # (B,); reach G through D
            loss = -d_fake.mean() if hinge else F.softplus(-d_fake).mean()
            return StepOutput(loss, {"g_loss": loss.item()})
        raise ValueError(f"gan has phases {self.phases}, not {phase!r}")

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """Latent (B, latent_dim) -> image in [0, 1]; y=None draws labels from the prior."""
        y = self.fill_labels(z.shape[0], y, None)
        return self.gen(z, y)

    def prior_codes(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` codes (n, latent_dim) on the CPU as sampling draws them: N(0, I), each value beyond
        ``truncation`` drawn again (Brock et al. 2019, arXiv:1809.11096, section 3.1)."""
        z = torch.randn(n, self.cfg.latent_dim, generator=generator)
        if t := self.cfg.truncation:
            while (far := z.abs() > t).any():
                z[far] = torch.randn(int(far.sum()), generator=generator)
        return z

    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        return self.gen(self.prior_codes(n, generator).to(self.device), y)
