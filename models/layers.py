"""Blocks shared by several families: label embeddings, pixel likelihoods over discrete
levels, resolution ladders for any image size, and a conditioned residual block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ----------------------------------------------------------------------------- labels


class LabelEmbedding(nn.Embedding):
    """Class embedding with one extra "no label" row (index ``num_classes``), used when
    ``y`` is None and for label dropout (classifier-free guidance)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__(num_classes + 1, dim)
        self.null = num_classes
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, y: Tensor | None, batch: int | None = None) -> Tensor:  # (B, dim)
        if y is None:
            y = torch.full((batch,), self.null, dtype=torch.long, device=self.weight.device)
        return super().forward(y)


def drop_labels(y: Tensor, p: float, null: int) -> Tensor:
    """Replace each label by the null index with probability p (training only)."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, device=y.device) < p
    return torch.where(drop, torch.full_like(y, null), y)


# ----------------------------------------------------------------------------- sizes


def ladder(h: int, w: int, n: int) -> list[tuple[int, int]]:
    """Spatial sizes for n stride-2 levels, rounding up: 25 -> 13 -> 7 -> 4."""
    sizes = [(h, w)]
    for _ in range(n):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def auto_levels(h: int, w: int, min_size: int = 2, max_levels: int = 3) -> int:
    """How many halvings keep both sides >= min_size (8x8 -> 2, 28x28 -> 3)."""
    n = 0
    while n < max_levels and min((h + 1) // 2, (w + 1) // 2) >= min_size and min(h, w) > min_size:
        h, w = (h + 1) // 2, (w + 1) // 2
        n += 1
    return n


# ----------------------------------------------------------------------------- blocks


def group_norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """Pre-activation residual block whose features are shifted by a conditioning vector
    (label and/or time embedding)."""

    def __init__(self, cin: int, cout: int, cond_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.cond = nn.Linear(cond_dim, cout)
        self.norm2 = group_norm(cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.cond(c)[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


def sinusoidal(t: Tensor, dim: int) -> Tensor:
    """Transformer-style embedding of (possibly fractional) timesteps, (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


# ----------------------------------------------------------------------------- pixel likelihoods


class PixelLikelihood(nn.Module):
    """A distribution over each sub-pixel's discrete level, given per-pixel parameters.

    * ``categorical``: one logit per level (exact for any number of levels; the natural
      choice for few levels, e.g. 17 for digits).
    * ``logistic``: a discretized logistic (Salimans et al. 2017, arXiv:1701.05517) with a
      mean and a log-scale per sub-pixel; two parameters however many levels (8-bit data).

    Parameters arrive as ``(B, C * P, H, W)``; levels as long ``(B, C, H, W)``.
    """

    def __init__(self, kind: str, levels: int, channels: int):
        super().__init__()
        if kind not in ("categorical", "logistic"):
            raise ValueError(f"unknown pixel likelihood {kind!r}")
        self.kind, self.levels, self.channels = kind, levels, channels
        self.params_per_channel = levels if kind == "categorical" else 2

    @property
    def out_channels(self) -> int:
        return self.channels * self.params_per_channel

    def _split(self, params: Tensor) -> Tensor:  # (B, C, P, H, W)
        b, _, h, w = params.shape
        return params.view(b, self.channels, self.params_per_channel, h, w)

    def _logistic_log_probs(self, p: Tensor) -> Tensor:
        """log P(level = k) for every k: (B, C, L, H, W)."""
        mean, log_scale = p[:, :, 0], p[:, :, 1].clamp(min=-7.0)
        centers = torch.linspace(-1, 1, self.levels, device=p.device).view(1, 1, -1, 1, 1)
        half = 1.0 / (self.levels - 1)
        inv_s = torch.exp(-log_scale).unsqueeze(2)
        mean = mean.unsqueeze(2)
        plus = inv_s * (centers + half - mean)
        minus = inv_s * (centers - half - mean)
        log_cdf_plus = F.logsigmoid(plus)  # log F(upper edge)
        log_one_minus_cdf_min = -F.softplus(minus)  # log (1 - F(lower edge))
        # log(F(plus) - F(minus)), stable: F(a)-F(b) = sigmoid(a) - sigmoid(b)
        mid = torch.log((torch.sigmoid(plus) - torch.sigmoid(minus)).clamp(min=1e-12))
        k = torch.arange(self.levels, device=p.device).view(1, 1, -1, 1, 1)
        out = torch.where(k == 0, log_cdf_plus, mid)
        return torch.where(k == self.levels - 1, log_one_minus_cdf_min, out)

    def level_log_probs(self, params: Tensor) -> Tensor:  # (B, C, L, H, W), normalised over L
        p = self._split(params)
        if self.kind == "categorical":
            return F.log_softmax(p, dim=2)
        return torch.log_softmax(self._logistic_log_probs(p), dim=2)

    def log_prob(self, params: Tensor, k: Tensor) -> Tensor:  # (B,) nats
        lp = self.level_log_probs(params)
        return lp.gather(2, k.unsqueeze(2)).squeeze(2).flatten(1).sum(1)

    def sample(
        self, params: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """A level per sub-pixel, long (B, C, H, W), from p(level)^(1/T) renormalised: T < 1 sharpens."""
        return self.sample_levels(self.level_log_probs(params), generator, temperature)

    @staticmethod
    def sample_levels(
        lp: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """:meth:`sample` from level log-probabilities ``lp`` (B, C, L, H, W) already computed."""
        if temperature != 1.0:
            lp = F.log_softmax(lp / temperature, dim=2)
        b, c, L, h, w = lp.shape
        probs = lp.permute(0, 1, 3, 4, 2).reshape(-1, L).exp().cpu()
        bad = ~torch.isfinite(probs.reshape(b, -1)).all(1)  # (one grey image: not a view)
        if bad.any():  # torch.multinomial would say only "probability tensor contains either inf, nan"
            raise FloatingPointError(
                f"{int(bad.sum())} of {b} sampled images hold NaN or inf pixels "
                f"(the first: image {int(bad.nonzero()[0])}): the network overflowed"
            )
        k = torch.multinomial(probs, 1, generator=generator).to(lp.device)
        return k.view(b, c, h, w)

    def mean(self, params: Tensor) -> Tensor:  # expected level / (L - 1), in [0, 1]
        lp = self.level_log_probs(params)
        grid = torch.linspace(0, 1, self.levels, device=params.device).view(1, 1, -1, 1, 1)
        return (lp.exp() * grid).sum(2)


def ema_update(target: nn.Module, source: nn.Module, decay: float) -> None:
    """target <- decay * target + (1 - decay) * source, parameter by parameter in one fused
    call (``torch._foreach_lerp_``, as timm's EMA does); buffers are copied."""
    with torch.no_grad():
        t, s = list(target.parameters()), list(source.parameters())
        if len(t) != len(s):
            raise ValueError(f"EMA: {len(t)} parameters against {len(s)}")
        torch._foreach_lerp_(t, s, 1.0 - decay)
        for tb, sb in zip(target.buffers(), source.buffers(), strict=True):
            tb.copy_(sb)
