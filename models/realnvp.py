"""Multi-scale affine-coupling flow: RealNVP (Dinh et al. 2017, arXiv:1605.08803) with Glow's
actnorm and optional invertible 1x1 convolutions (Kingma & Dhariwal 2018, arXiv:1807.03039).

Discrete levels k are uniformly dequantised, ``x = (k + u) / L`` with ``u ~ U[0, 1)``,
then logit-transformed. ``log_prob`` is the exact log-density of the dequantised point, moved
to the discrete scale (``- D log L``): in expectation over ``u`` a lower bound on log P(k),
the standard "bits/dim under uniform dequantisation". Each scale runs checkerboard couplings,
squeezes (2x2 space -> channels), runs channel couplings and factors out half the channels
with a learned conditional Gaussian prior. Sizes that cannot be squeezed (odd sides) end the
ladder early, so any H x W works.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from genzoo.models.base import DataSpec, GenerativeModel, NetConfig, StepOutput, needs_labels, register
from genzoo.models.layers import LabelEmbedding, ResBlock, group_norm


class RealNVPConfig(NetConfig):
    scales: int = Field(3, ge=1, description="max number of scales (fewer if sides get odd)")
    couplings: int = Field(3, ge=1, description="couplings per half-scale")
    hidden: int = Field(64, gt=0, description="channels of each coupling network")
    blocks: int = Field(2, ge=1, description="residual blocks per coupling network")
    invconv: bool = Field(False, description="Glow 1x1 invertible conv before each coupling")
    alpha: float = Field(0.05, gt=0.0, lt=0.5, description="logit transform margin")
    temperature: float = Field(1.0, gt=0.0, description="prior std multiplier when sampling")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


def squeeze(x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, 4C, H/2, W/2)
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:  # (B, 4C, H, W) -> (B, C, 2H, 2W), the inverse of squeeze
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


def gaussian_log_prob(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:  # (B, ...) -> (B,)
    lp = -0.5 * (((z - mean) * torch.exp(-log_std)) ** 2 + 2 * log_std + math.log(2 * math.pi))
    return lp.flatten(1).sum(1)


# ----------------------------------------------------------------------------- invertible steps


class ActNorm(nn.Module):
    """Per-channel affine with data-dependent initialisation (zero mean, unit variance)."""

    def __init__(self, ch: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self.initialized:
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = x.std(dim=(0, 2, 3), keepdim=True)
                self.bias.copy_(-mean)
                self.log_scale.copy_(-torch.log(std + 1e-6))
                self.initialized.fill_(1)
        y = (x + self.bias) * torch.exp(self.log_scale)  # (B, C, H, W)
        return y, self.log_scale.sum() * x.shape[2] * x.shape[3]  # log|det| = H W sum(log s) (Glow table 1)

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-self.log_scale) - self.bias


class InvConv1x1(nn.Module):
    """Glow's invertible 1x1 convolution: a learned channel permutation, started orthogonal."""

    def __init__(self, ch: int):
        super().__init__()
        self.weight = nn.Parameter(torch.linalg.qr(torch.randn(ch, ch))[0])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ld = torch.linalg.slogdet(self.weight)[1] * x.shape[2] * x.shape[3]  # H W log|det W| (Glow table 1)
        return F.conv2d(x, self.weight[:, :, None, None]), ld

    def inverse(self, y: Tensor) -> Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight)[:, :, None, None])


class CouplingNet(nn.Module):
    def __init__(self, cin: int, cout: int, hidden: int, blocks: int, cond: int, dropout: float):
        super().__init__()
        self.inp = nn.Conv2d(cin, hidden, 3, padding=1)
        self.blocks = nn.ModuleList(ResBlock(hidden, hidden, cond, dropout) for _ in range(blocks))
        self.norm = group_norm(hidden)
        self.out = nn.Conv2d(hidden, cout, 3, padding=1)
        nn.init.zeros_(self.out.weight)  # every coupling starts as the identity
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, c)
        return self.out(F.silu(self.norm(h)))


class AffineCoupling(nn.Module):
    """y_b = x_b * exp(s(x_a)) + t(x_a) on the half ``b`` chosen by a checkerboard or a
    channel mask; log|det| = sum(s).

    Dinh et al.: the coupling of eqs. 4-5 (``channel``: x_a the first channels) and its masked
    form, eq. 9, y = b x + (1 - b)(x exp(s(b x)) + t(b x)) (``checker``). The Jacobian is
    triangular with diagonal exp(s) (eq. 6), hence log|det| = sum(s); inverting needs s and t
    only at x_a, which passes unchanged. s = scale * tanh(.) keeps early steps bounded."""

    def __init__(self, ch: int, kind: str, parity: int, cfg: RealNVPConfig, cond: int):
        super().__init__()
        self.kind, self.parity, self.ch = kind, parity, ch
        if kind == "checker":
            cin, cout = ch + 1, 2 * ch
        else:
            self.na = ch // 2 if parity == 0 else ch - ch // 2
            cin, cout = self.na, 2 * (ch - self.na)
        self.net = CouplingNet(cin, cout, cfg.hidden, cfg.blocks, cond, cfg.dropout)
        self.scale = nn.Parameter(torch.ones(1, cout // 2, 1, 1))

    def _mask(self, x: Tensor) -> Tensor:  # b (1, 1, H, W): 1 where the net may look
        h, w = x.shape[2:]
        ii = torch.arange(h, device=x.device)[:, None] + torch.arange(w, device=x.device)[None]
        return ((ii + self.parity) % 2).to(x.dtype).view(1, 1, h, w)

    def _st(self, xa: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:  # s, t: (B, C_b, H, W) each
        raw_s, t = self.net(xa, c).chunk(2, dim=1)
        return self.scale * torch.tanh(raw_s), t

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:  # -> y (B, C, H, W), log|det| (B,)
        if self.kind == "checker":
            m = self._mask(x)  # (1, 1, H, W)
            # the net reads b x and b itself (B, C + 1, H, W)
            s, t = self._st(torch.cat([x * m, m.expand(x.shape[0], -1, -1, -1)], 1), c)  # (B, C, H, W) each
            s, t = s * (1 - m), t * (1 - m)  # zero on b: that half passes unchanged
            return x * torch.exp(s) + t, s.flatten(1).sum(1)  # eq. 9; eq. 6
        xa, xb = x[:, : self.na], x[:, self.na :]  # (B, na, H, W), (B, C - na, H, W)
        s, t = self._st(xa, c)  # (B, C - na, H, W) each
        return torch.cat([xa, xb * torch.exp(s) + t], 1), s.flatten(1).sum(1)  # eqs. 4-5; eq. 6

    def inverse(self, y: Tensor, c: Tensor) -> Tensor:  # (B, C, H, W) -> x (B, C, H, W)
        if self.kind == "checker":
            m = self._mask(y)
            s, t = self._st(torch.cat([y * m, m.expand(y.shape[0], -1, -1, -1)], 1), c)  # b y = b x
            return y * m + (1 - m) * (y - t) * torch.exp(-s)  # x_b = (y_b - t) exp(-s)
        ya, yb = y[:, : self.na], y[:, self.na :]
        s, t = self._st(ya, c)  # y_a = x_a
        return torch.cat([ya, (yb - t) * torch.exp(-s)], 1)


class FlowStep(nn.Module):
    """actnorm -> [1x1 conv] -> affine coupling."""

    def __init__(self, ch: int, kind: str, parity: int, cfg: RealNVPConfig, cond: int):
        super().__init__()
        self.norm = ActNorm(ch)
        self.conv = InvConv1x1(ch) if cfg.invconv else None
        self.coupling = AffineCoupling(ch, kind, parity, cfg, cond)

    def forward(self, x: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        x, ld = self.norm(x)
        if self.conv is not None:
            x, ld2 = self.conv(x)
            ld = ld + ld2
        x, ld3 = self.coupling(x, c)
        return x, ld + ld3

    def inverse(self, y: Tensor, c: Tensor) -> Tensor:
        y = self.coupling.inverse(y, c)
        if self.conv is not None:
            y = self.conv.inverse(y)
        return self.norm.inverse(y)


class Scale(nn.Module):
    """Couplings at one resolution; unless final, squeeze + channel couplings + split: one
    level of Dinh et al.'s multi-scale architecture (section 3.6), half the dimensions
    factored out as latents z with a Gaussian prior conditioned on the half that carries on."""

    def __init__(self, ch: int, final: bool, cfg: RealNVPConfig, cond: int):
        super().__init__()
        self.final = final
        n_pre = cfg.couplings + (1 if final else 0)
        self.pre = nn.ModuleList(FlowStep(ch, "checker", i % 2, cfg, cond) for i in range(n_pre))
        self.post = nn.ModuleList()
        if not final:
            self.post.extend(FlowStep(4 * ch, "channel", i % 2, cfg, cond) for i in range(cfg.couplings))
            self.z_ch = 2 * ch  # factored out; 2 * ch carry on
            self.prior = nn.Conv2d(4 * ch - self.z_ch, 2 * self.z_ch, 3, padding=1)
            self.prior_label = nn.Linear(cond, 2 * self.z_ch)
            for layer in (self.prior, self.prior_label):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def split_prior(self, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """p(z | h, y): h (B, 2ch, H/2, W/2) -> mean, log_std of z, (B, 2ch, H/2, W/2) each."""
        p = self.prior(h) + self.prior_label(c)[:, :, None, None]  # (B, 4ch, H/2, W/2)
        return p.chunk(2, dim=1)  # mean, log_std

    def forward(self, x: Tensor, c: Tensor):
        """x (B, ch, H, W) -> h carried on, z factored out (B, 2ch, H/2, W/2) each, log|det| (B,);
        the final scale returns x itself as h and no z."""
        ld = x.new_zeros(x.shape[0])  # (B,)
        for step in self.pre:
            x, ld_step = step(x, c)  # checkerboard couplings: (B, ch, H, W)
            ld = ld + ld_step
        if self.final:
            return x, None, ld
        x = squeeze(x)  # (B, 4ch, H/2, W/2)
        for step in self.post:
            x, ld_step = step(x, c)  # channel couplings
            ld = ld + ld_step
        h, z = x[:, : -self.z_ch], x[:, -self.z_ch :]
        return h, z, ld

    def inverse(self, h: Tensor, z: Tensor | None, c: Tensor) -> Tensor:  # -> x (B, ch, H, W)
        x = h if self.final else torch.cat([h, z], 1)  # (B, 4ch, H/2, W/2)
        if not self.final:
            for step in reversed(self.post):
                x = step.inverse(x, c)
            x = unsqueeze(x)
        for step in reversed(self.pre):
            x = step.inverse(x, c)
        return x


# ----------------------------------------------------------------------------- the flow


@register
class RealNVP(GenerativeModel):
    family = "realnvp"
    Config = RealNVPConfig

    def __init__(self, spec: DataSpec, cfg: RealNVPConfig):
        super().__init__(spec, cfg)
        cond = cfg.hidden
        self.embed = LabelEmbedding(spec.num_classes, cond)
        ch, h, w = spec.shape
        self.shapes = []  # shape entering each scale
        self.scales = nn.ModuleList()
        for i in range(cfg.scales):
            final = i == cfg.scales - 1 or h % 2 or w % 2 or min(h, w) < 4
            self.shapes.append((ch, h, w))
            self.scales.append(Scale(ch, final, cfg, cond))
            if final:
                break
            ch, h, w = 2 * ch, h // 2, w // 2
        self.top_shape = (ch, h, w)
        self.top_prior = nn.Linear(cond, 2 * ch * h * w)
        nn.init.zeros_(self.top_prior.weight)
        nn.init.zeros_(self.top_prior.bias)

    # -- pieces
    def _preprocess(self, x01: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1) -> logit space, with log|det|: y = logit(a + (1 - 2a) x), Dinh et al.'s
        section 4.1 transform with the margin on both sides; dy/dx = (1 - 2a) / (v (1 - v))."""
        a = self.cfg.alpha
        v = a + (1 - 2 * a) * x01  # (B, C, H, W) in [a, 1 - a)
        y = torch.log(v) - torch.log1p(-v)
        ld = (math.log(1 - 2 * a) - torch.log(v) - torch.log1p(-v)).flatten(1).sum(1)  # (B,)
        return y, ld

    def _postprocess(self, y: Tensor) -> Tensor:
        a = self.cfg.alpha
        return ((torch.sigmoid(y) - a) / (1 - 2 * a)).clamp(0.0, 1.0 - 1e-6)

    def _top_prior(self, c: Tensor) -> tuple[Tensor, Tensor]:
        """p(z_L | y), the last scale's latent: mean, log_std (B, *top_shape) each."""
        mean, log_std = self.top_prior(c).chunk(2, dim=1)  # (B, D_top) each
        shape = (c.shape[0], *self.top_shape)
        return mean.reshape(shape), log_std.reshape(shape)

    def _forward(self, x01: Tensor, y: Tensor | None):
        """x in [0, 1) -> per-scale (z, mean, log_std) and log|det dz/dx| (B,): the flow
        f(x) = z = (z_1, ..., z_L) of the multi-scale architecture (section 3.6)."""
        c = self.embed(y, x01.shape[0])  # (B, hidden)
        h, ld = self._preprocess(x01)  # (B, C, H, W), (B,)
        parts = []
        for scale in self.scales:
            h, z, ld_scale = scale(h, c)  # h, z: (B, 2ch, H/2, W/2) at this scale's ch, H, W
            ld = ld + ld_scale
            if z is not None:
                parts.append((z, *scale.split_prior(h, c)))
        parts.append((h, *self._top_prior(c)))
        return parts, ld

    def _dequantize(self, x: Tensor, u: Tensor) -> Tensor:  # levels k, u in [0, 1) -> (k + u) / L
        return (self.to_levels(x).float() + u) / self.spec.levels

    def _log_density(self, x01: Tensor, y: Tensor | None) -> Tensor:
        """log-density of x in [0, 1)^D, moved to the discrete scale (- D log L).

        Change of variables (section 3.1): log p(x) = log p_Z(f(x)) + log|det df/dx|, with
        p_Z the product of the per-scale conditional Gaussians; a bin of the level grid has
        volume L^-D, hence - D log L."""
        parts, ld = self._forward(x01, y)
        lp = sum(gaussian_log_prob(z, m, s) for z, m, s in parts)  # (B,)
        return lp + ld - self.spec.dims * math.log(self.spec.levels)

    # -- interface
    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        x01 = self._dequantize(x, torch.rand_like(x))
        nll = -self._log_density(x01, y).mean()
        bpd = nll / (self.spec.dims * math.log(2))
        return StepOutput(nll / self.spec.dims, {"nll": nll.item(), "bpd": bpd.item()})

    def log_prob(self, x: Tensor, y: Tensor | None = None, *, u: Tensor | None = None) -> Tensor:
        """Exact log-density (nats, (B,)) of ``x`` dequantised with noise ``u``; by default each
        image's own draw (:meth:`image_noise`), so an image scores the same in any batch.
        y=None: sum_y p(y) p(x | y)."""
        self.check_inputs(x, y)
        if u is None:
            u = self.image_noise(x, tuple(x.shape[1:]), uniform=True)
        x01 = self._dequantize(x, u)
        if y is None:
            return self.marginal(self._log_density, x01)
        return self._log_density(x01, y)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Image -> standardised latent (B, D) (bin centres, no dequantisation noise); ``y``
        required (see :func:`needs_labels`)."""
        self.check_inputs(x, y)
        needs_labels(self, y, "encode")
        parts, _ = self._forward(self._dequantize(x, torch.full_like(x, 0.5)), y)
        return torch.cat([((z - m) * torch.exp(-s)).flatten(1) for z, m, s in parts], 1)

    def decode(self, eps: Tensor, y: Tensor | None = None) -> Tensor:
        """Standardised latent (B, D) -> image in [0, 1] on the level grid: x = f^-1(z), the
        scales undone from the coarsest, each z drawn from its prior given the scale above; ``y``
        required."""
        needs_labels(self, y, "decode")
        b = eps.shape[0]
        c = self.embed(y, b)  # (B, hidden)
        # 1. split eps into each scale's share (a non-final scale factors out half its dims)
        sizes = [2 * ch * hh * ww // 4 for ch, hh, ww in self.shapes[:-1]] + [math.prod(self.top_shape)]
        chunks = list(eps.split(sizes, dim=1))
        # 2. z_L = mean + std * eps_L under the top prior p(z_L | y)
        mean, log_std = self._top_prior(c)
        h = mean + torch.exp(log_std) * chunks[-1].view_as(mean)  # (B, *top_shape)
        # 3. coarse to fine: z_i = mean + std * eps_i under p(z_i | h, y), then undo the scale
        for i in reversed(range(len(self.scales))):
            scale = self.scales[i]
            z = None
            if not scale.final:
                m, s = scale.split_prior(h, c)
                z = m + torch.exp(s) * chunks[i].view_as(m)  # same shape as h
            h = scale.inverse(h, z, c)  # (B, *self.shapes[i])
        # 4. back from logit space, and to the level whose bin holds the point
        k = (self._postprocess(h) * self.spec.levels).floor().clamp(0, self.spec.levels - 1)  # (B, C, H, W)
        return k / (self.spec.levels - 1)

    def _sample(self, n: int, y: Tensor, generator: torch.Generator | None) -> Tensor:
        eps = torch.randn(n, self.spec.dims, generator=generator).to(self.device)  # (n, D)
        return self.decode(eps * self.cfg.temperature, y)
