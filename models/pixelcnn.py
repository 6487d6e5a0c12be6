"""Gated PixelCNN (van den Oord et al. 2016, arXiv:1606.05328), class-conditional.

A vertical stack sees every row above the current pixel and a horizontal stack sees the
pixels to its left on the same row, so the receptive field has no blind spot. The output at
pixel i parameterises p(x_i | x_<i, y) for all channels of pixel i (channels of one pixel are
conditionally independent given the past), over the data's discrete levels: an exact,
normalised likelihood. Sampling draws one pixel at a time, every layer's activations kept: one
row of the vertical stack per row, one column of the horizontal stack per pixel (``_sample``).

Distribution augmentation (``distaug``; Jun et al. 2020, "Distribution Augmentation for
Generative Modeling", ICML): in training, that share of images is shifted by one pixel and the
network is told which shift (a second embedding beside the label's), so it learns p(x | y, shift)
from more images without learning shifted digits as digits; likelihoods and samples are those of
the unshifted images, shift 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from genzoo.models.base import DataSpec, GenerativeModel, Interval, NetConfig, StepOutput, register
from genzoo.models.layers import LabelEmbedding, PixelLikelihood, drop_labels


class PixelCNNConfig(NetConfig):
    channels: int = Field(64, gt=0, description="feature maps per stack")
    layers: int = Field(8, gt=0, description="gated layers")
    kernel: int = Field(3, ge=3, description="odd kernel width")
    output: Literal["categorical", "logistic"] = "categorical"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    temperature: float = Field(1.0, gt=0.0, description="sampling: each pixel from p^(1/T); < 1 sharpens")
    label_dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="training: null-label rate, so one network also learns p(x) (CFG)"
    )
    guidance: float = Field(
        1.0, ge=0.0, description="sampling: each pixel from p(x_i | y)^g p(x_i)^(1-g) (needs label_dropout)"
    )
    guidance_interval: Interval = Field(
        (0.0, 1.0),
        description="sampling: guidance on this share of the rows only, [start, end); the rest at g = 1",
    )
    distaug: float = Field(
        0.0, ge=0.0, lt=1.0, description="training: share of images shifted a pixel, the shift a condition"
    )

    @model_validator(mode="after")
    def _guidance_needs_the_null_label(self) -> PixelCNNConfig:
        if self.guidance != 1.0 and self.label_dropout == 0.0:
            raise ValueError(
                f"guidance {self.guidance} needs label_dropout > 0: the unconditional model it guides "
                "against is learnt only from labels dropped in training"
            )
        return self


# DistAug's transforms, (rows down, columns right); index 0, the identity, is what the model samples
SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def shift_images(x: Tensor, t: Tensor) -> Tensor:
    """Each image of x (B, C, H, W) moved by ``SHIFTS[t]`` one pixel, its edge repeated into
    the gap it leaves (a background of any colour stays that colour)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H + 2, W + 2)
    out = x.clone()
    for k, (dy, dx) in enumerate(SHIFTS[1:], start=1):
        idx = (t == k).nonzero(as_tuple=True)[0]
        out[idx] = padded[idx, :, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
    return out


class GatedLayer(nn.Module):
    """One gated layer (van den Oord et al. figure 2): a vertical stack over the rows above,
    a horizontal stack over the pixels to the left that also reads the vertical stack shifted
    down one row, gated activations on both, a residual on the horizontal stack."""

    def __init__(self, p: int, k: int, cond_dim: int, first: bool, dropout: float):
        super().__init__()
        self.first, self.k = first, k
        self.v_conv = nn.Conv2d(p, 2 * p, (k // 2 + 1, k))  # rows i-k//2 .. i
        self.v_to_h = nn.Conv2d(2 * p, 2 * p, 1)
        self.h_conv = nn.Conv2d(p, 2 * p, (1, k // 2 + 1))  # cols j-k//2 .. j
        self.h_out = nn.Conv2d(p, p, 1)
        self.skip = nn.Conv2d(p, p, 1)
        self.cond = nn.Linear(cond_dim, 4 * p)  # label shifts for both gates of both stacks
        self.drop = nn.Dropout(dropout)

    @staticmethod
    def gate(a: Tensor, c: Tensor) -> Tensor:
        """Conditional gated activation (eq. 4): tanh(W_f * x + V_f h) . sigmoid(W_g * x + V_g h);
        a = the convolutions (B, 2p, H, W), c = the label's shifts V h (B, 2p) -> (B, p, H, W)."""
        f, g = (a + c[:, :, None, None]).chunk(2, dim=1)  # (B, p, H, W) each
        return torch.tanh(f) * torch.sigmoid(g)

    def forward(self, v: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """v, h (B, p, H, W), c (B, p) -> new v, new h, skip: (B, p, H, W) each."""
        cv, ch = self.cond(c).chunk(2, dim=1)  # (B, 2p) each: the vertical and horizontal gates' shifts
        v_pre = self.vertical(v)  # (B, 2p, H, W)
        # shift down one row: the horizontal stack may only see rows strictly above
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # (B, 2p, H, W)
        h_new, skip = self.horizontal(h, self.v_to_h(v_down), ch)
        return self.gate(v_pre, cv), h_new, skip

    def vertical(self, v: Tensor) -> Tensor:
        """The vertical stack's convolution, before its gate: (B, p, R, W) -> (B, 2p, R, W); pads
        top and sides only, so output row i sees input rows i - k//2 .. i."""
        k = self.k
        return self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))

    def horizontal(self, h: Tensor, v_term: Tensor, ch: Tensor) -> tuple[Tensor, Tensor]:
        """The horizontal stack given the vertical stack's term ``v_term`` (``v_to_h`` of the
        vertical stack shifted down a row) and its gate's label shift ``ch`` (B, 2p): h (B, p, R, W)
        -> new h, skip (B, p, R, W). Pads left only: column j sees columns j - k//2 .. j of its row."""
        h_in = F.pad(h, (1, 0))[..., :-1] if self.first else h  # mask A: exclude pixel i
        h_pre = self.h_conv(F.pad(h_in, (self.k // 2, 0))) + v_term  # (B, 2p, R, W)
        gated = self.drop(self.gate(h_pre, ch))  # (B, p, R, W)
        h_new = self.h_out(gated) if self.first else h + self.h_out(gated)  # residual after the first layer
        return h_new, self.skip(gated)


@register
class PixelCNN(GenerativeModel):
    family = "pixelcnn"
    Config = PixelCNNConfig

    def __init__(self, spec: DataSpec, cfg: PixelCNNConfig):
        super().__init__(spec, cfg)
        if cfg.kernel % 2 == 0:
            raise ValueError("models.pixelcnn.net.kernel: must be odd")
        p = cfg.channels
        self.embed = LabelEmbedding(spec.num_classes, p)
        self.shift_embed = None  # DistAug's condition, only where it trains (saved models stay as they were)
        if cfg.distaug > 0:
            self.shift_embed = nn.Embedding(len(SHIFTS), p)
            nn.init.normal_(self.shift_embed.weight, std=0.02)
        self.inp = nn.Conv2d(spec.channels, p, 1)
        self.layers = nn.ModuleList(
            GatedLayer(p, cfg.kernel, p, first=(i == 0), dropout=cfg.dropout) for i in range(cfg.layers)
        )
        self.dist = PixelLikelihood(cfg.output, spec.levels, spec.channels)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Conv2d(p, 2 * p, 1), nn.ReLU(), nn.Conv2d(2 * p, self.dist.out_channels, 1)
        )

    def condition(self, y: Tensor | None, n: int, shift: Tensor | None = None) -> Tensor:
        """What every gate is conditioned on, (n, p): the label's embedding, plus with DistAug
        the shift's (``shift`` None: the identity, as likelihoods and samples use)."""
        c = self.embed(y, n)
        if self.shift_embed is None:
            return c
        if shift is None:
            shift = torch.zeros(n, dtype=torch.long, device=c.device)
        return c + self.shift_embed(shift)

    def params(self, x: Tensor, y: Tensor | None, shift: Tensor | None = None) -> Tensor:
        """Distribution parameters at every pixel, (B, C * P, H, W); pixel i sees x_<i."""
        c = self.condition(y, x.shape[0], shift)  # (B, p)
        h = self.inp(x * 2 - 1)  # (B, p, H, W); 1x1: no spatial mixing, so causality is kept
        v, skips = h, 0
        for layer in self.layers:
            v, h, s = layer(v, h, c)  # (B, p, H, W) each
            skips = skips + s
        return self.head(skips + h)  # skip connections plus the final horizontal stack: (B, C * P, H, W)

    def _log_prob_given(self, x: Tensor, y: Tensor) -> Tensor:
        return self.dist.log_prob(self.params(x, y), self.to_levels(x))

    def log_prob(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """Exact log p(x | y) in nats, (B,); y=None gives sum_y p(y) p(x | y). The
        autoregressive factorisation (eq. 1) log p(x | y) = sum_i log p(x_i | x_<i, y), every
        factor from one forward pass since pixel i's output sees only x_<i."""
        self.check_inputs(x, y)
        if y is None:
            return self.marginal(self._log_prob_given, x)
        return self._log_prob_given(x, y)

    def training_step(self, x: Tensor, y: Tensor | None, phase: str = "main") -> StepOutput:
        if y is not None and self.training:  # a share of labels nulled: the unconditional model too
            y = drop_labels(y, self.cfg.label_dropout, self.embed.null)
        shift = None
        if self.shift_embed is not None and self.training:  # DistAug: a share of images shifted
            moved = torch.rand(len(x), device=x.device) < self.cfg.distaug
            shift = torch.where(moved, torch.randint_like(moved, 1, len(SHIFTS), dtype=torch.long), 0)
            x = shift_images(x, shift)
        nll = -self.dist.log_prob(self.params(x, y, shift), self.to_levels(x)).mean()
        bpd = nll / (self.spec.dims * 0.6931471805599453)
        return StepOutput(nll / self.spec.dims, {"nll": nll.item(), "bpd": bpd.item()})

    @property
    def reach(self) -> int:
        """How far (in rows up, and columns either side) a pixel's output can see: each layer
        widens the vertical stack by kernel // 2, the horizontal stack's shift adds one."""
        return (self.cfg.layers + 1) * (self.cfg.kernel // 2) + 1

    def _sample(
        self,
        n: int,
        y: Tensor,
        generator: torch.Generator | None,
        mode: Literal["cached", "window", "full"] = "cached",
    ) -> Tensor:
        """Ancestral sampling in raster order, one pixel (all its channels) at a time, the same
        images in every ``mode``:

        - ``full``: a forward pass over the whole image per pixel (the textbook loop);
        - ``window``: each pass only on the pixels the current one can see (``reach`` rows
          above, ``reach`` columns either side, nothing below);
        - ``cached`` (default): every layer's activations kept as they are computed, so each new
          row costs one row of each layer's vertical stack and each pixel one column of each
          layer's horizontal stack."""
        y, copies = self._guided_labels(y)
        if mode == "cached":
            return self._sample_cached(y, generator)[:n]
        c, h, w = self.spec.shape
        x = torch.zeros(copies * n, c, h, w, device=self.device)  # (n, C, H, W) per copy; not yet drawn: 0
        r = self.reach if mode == "window" else max(h, w)
        for i in range(h):
            top = max(0, i - r)
            for j in range(w):
                left, right = max(0, j - r), min(w, j + r + 1)
                # 1. p(x_ij | x_<ij, y): the parameters at pixel (i, j) given the pixels drawn so far
                crop = x[:, :, top : i + 1, left:right]  # (n, C, <= r + 1, <= 2r + 1)
                params = self.params(crop, y)[:, :, i - top : i - top + 1, j - left : j - left + 1]
                # 2. draw it and write it into the canvas the next pass conditions on
                x[:, :, i, j] = self._draw(params, generator, i)  # (copies * n, C)
        return x[:n]

    def _guided_labels(self, y: Tensor) -> tuple[Tensor, int]:
        """The labels a sampler runs with, and how many copies of the canvas: with guidance
        (``guidance`` != 1), each image twice, with its label and with the null label."""
        if self.cfg.guidance == 1.0:
            return y, 1
        return torch.cat([y, torch.full_like(y, self.embed.null)]), 2

    def _draw(self, params: Tensor, generator: torch.Generator | None, row: int) -> Tensor:
        """Pixel values (copies * n, C) drawn from one pixel's parameters (copies * n, C * P, 1, 1).
        With guidance g (two copies: conditional, then unconditional), classifier-free guidance
        on the level log-probabilities (Ho & Salimans 2022, arXiv:2207.12598, as autoregressive
        image models apply it): log p_c + (g - 1)(log p_c - log p_u), renormalised; both copies
        get the pixel drawn, so both condition the next pixel on the same image. Rows outside
        ``guidance_interval`` (shares of the image's height) are drawn at g = 1, the conditional
        model alone: guidance in a limited interval (Kynkäänniemi et al. 2024, arXiv:2404.07724,
        over diffusion's noise levels; here over the rows of the raster order)."""
        g = self.cfg.guidance
        if g == 1.0:
            k = self.dist.sample(params, generator, self.cfg.temperature)  # (n, C, 1, 1) levels
            return self.from_levels(k)[:, :, 0, 0]
        lc, lu = self.dist.level_log_probs(params).chunk(2)  # (n, C, L, 1, 1) each
        start, end = self.cfg.guidance_interval
        if not start <= row / self.spec.shape[1] < end:
            lp = torch.log_softmax(lc, dim=2)  # a row outside the interval: the conditional model alone
        else:
            lp = torch.log_softmax(lu + g * (lc - lu), dim=2)
        k = self.dist.sample_levels(lp, generator, self.cfg.temperature)  # (n, C, 1, 1)
        return self.from_levels(k)[:, :, 0, 0].repeat(2, 1)

    def _sample_cached(self, y: Tensor, generator: torch.Generator | None) -> Tensor:
        """The ``cached`` sampler (the idea of Ramachandran et al. 2017, "Fast generation for
        convolutional autoregressive models", arXiv:1704.06001): what :meth:`params` computes at
        pixel (i, j), each layer's output computed once, where it is first needed.

        - Vertical stack: ``vin[k]`` holds layer k's input, zero-padded as :meth:`GatedLayer.vertical`
          pads it (``half`` rows on top, ``half`` columns either side). When row i starts, each
          layer computes its row i - 1 alone (its kernel's ``half + 1`` input rows), which row i's
          horizontal stack reads shifted down, and writes the gated row into the next layer's input.
        - Horizontal stack: ``hin[k]`` holds layer k's input on the current row, ``half`` zero
          columns on the left; layer 0's is the image's row shifted right a pixel (mask A). Each
          pixel computes one column per layer from the ``half + 1`` columns its kernel spans."""
        c, h, w = self.spec.shape
        p, half, layers = self.cfg.channels, self.cfg.kernel // 2, self.layers
        n, dev = len(y), self.device  # images on the canvas: with guidance, each twice
        x = torch.zeros(n, c, h, w, device=dev)  # (n, C, H, W)
        cond = self.condition(y, n)  # (n, p)
        shifts = [layer.cond(cond).chunk(2, dim=1) for layer in layers]  # per layer: (n, 2p) x 2
        vin = [torch.zeros(n, p, half + h, w + 2 * half, device=dev) for _ in layers]  # row r at half + r
        for i in range(h):
            if i == 0:  # nothing above: the vertical stack shifted down reads zero padding
                v_to_h = [layer.v_to_h(torch.zeros(n, 2 * p, 1, w, device=dev)) for layer in layers]
            else:  # row i - 1 of every layer's vertical stack, from the rows above it
                vin[0][:, :, half + i - 1, half : half + w] = self.inp(x[:, :, i - 1 : i] * 2 - 1)[:, :, 0]
                v_to_h = []
                for k, (layer, (cv, _)) in enumerate(zip(layers, shifts, strict=True)):
                    v_pre = layer.v_conv(vin[k][:, :, i - 1 : i + half])  # (n, 2p, 1, W): row i - 1
                    v_to_h.append(layer.v_to_h(v_pre))  # what row i's horizontal stack reads
                    if k + 1 < len(layers):
                        vin[k + 1][:, :, half + i - 1, half : half + w] = layer.gate(v_pre, cv)[:, :, 0]
            hin = [torch.zeros(n, p, 1, half + w, device=dev) for _ in layers]  # column j at half + j
            for j in range(w):
                if j > 0:  # mask A: layer 0 sees the pixels left of (i, j), not (i, j) itself
                    hin[0][..., half + j] = self.inp(x[:, :, i : i + 1, j - 1 : j] * 2 - 1)[..., 0]
                skips = 0
                for k, (layer, (_, ch), vh) in enumerate(zip(layers, shifts, v_to_h, strict=True)):
                    a = layer.h_conv(hin[k][..., j : j + half + 1]) + vh[..., j : j + 1]  # (n, 2p, 1, 1)
                    gated = layer.drop(layer.gate(a, ch))  # (n, p, 1, 1)
                    out = layer.h_out(gated)  # (n, p, 1, 1); after the first layer, plus the residual
                    if not layer.first:
                        out = hin[k][..., half + j : half + j + 1] + out
                    skips = skips + layer.skip(gated)
                    if k + 1 < len(layers):
                        hin[k + 1][..., half + j : half + j + 1] = out
                params = self.head(skips + out)  # (n, C * P, 1, 1): pixel (i, j)
                x[:, :, i, j] = self._draw(params, generator, i)
        return x
