"""The evaluator: a small CNN classifier trained on the real training split. Its penultimate
features are the space in which genzoo measures sample quality (Fréchet distance, KID,
precision/recall, ...) when Inception-v3 does not fit the data (8x8 digits), and its class
predictions score class-conditional samples."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from genzoo.models.base import DataSpec, NetConfig, by_pixels, read_weights, save_weights


class EvaluatorConfig(NetConfig):
    channels: int = Field(32, gt=0, multiple_of=8, description="a multiple of 8 (its GroupNorm's groups)")
    feature_dim: int = Field(128, gt=0, description="size of the feature space the metrics use")
    dropout: float = Field(0.3, ge=0, lt=1)
    steps: int = Field(800, gt=0)
    batch_size: int = Field(128, gt=0)
    batch_pixels: int | None = Field(
        None, gt=0, description="at most this many pixels per batch (images x H x W; at least 8 images)"
    )
    lr: float = Field(2e-3, gt=0, le=10)
    shift: int = Field(1, ge=0, description="random translation (pixels) as augmentation")
    rotate: float = Field(0.0, ge=0, le=45, description="degrees; > 0: classical augmentation, each image "
                          "shifted by up to `shift` pixels and rotated by up to this angle")  # fmt: skip
    scale: float = Field(0.0, ge=0, lt=1, description="classical augmentation too: each axis of each image "
                         "scaled by a factor in [1 - scale, 1 + scale]")  # fmt: skip
    shear: float = Field(0.0, ge=0, le=1, description="classical augmentation too: each image sheared "
                         "horizontally by a factor in [-shear, shear]")  # fmt: skip


@dataclass(frozen=True)
class Synthetic:
    """Synthetic training images beside the real ones: ``x`` (M, C, H, W) in [0, 1], ``targets``
    (M, K) class probabilities (one-hot for hard labels), the share of real images in each
    batch and the weight of the synthetic images' loss."""

    x: Tensor
    targets: Tensor
    real_share: float = 0.5
    weight: float = 1.0


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
    )  # fmt: skip


class Evaluator(nn.Module):
    def __init__(self, spec: DataSpec, cfg: EvaluatorConfig | None = None):
        super().__init__()
        self.spec, self.cfg = spec, cfg or EvaluatorConfig()
        c = self.cfg.channels
        self.body = nn.Sequential(_block(spec.channels, c), nn.MaxPool2d(2), _block(c, 2 * c))
        self.feature = nn.Sequential(nn.Linear(2 * c, self.cfg.feature_dim), nn.SiLU())
        self.head = nn.Sequential(
            nn.Dropout(self.cfg.dropout), nn.Linear(self.cfg.feature_dim, spec.num_classes)
        )

    def features(self, x: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] -> (N, feature_dim)."""
        h = self.body(x * 2 - 1)  # (N, 2c, H/2, W/2)
        return self.feature(h.mean((2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (N, K) logits

    @torch.inference_mode()
    def embed(self, x: Tensor, batch: int = 1024) -> tuple[Tensor, Tensor]:
        """Features and class probabilities of a whole set, in eval mode."""
        was = self.training
        self.eval()
        feats, probs = [], []
        for xb in x.split(batch):
            f = self.features(xb)
            feats.append(f)
            probs.append(self.head(f).softmax(-1))
        self.train(was)
        return torch.cat(feats), torch.cat(probs)


class Ensemble(nn.Module):
    """Classifiers that vote together: their logits are the mean of the members' log-probabilities
    (a normalised geometric mean of their predictions). Surer and more often right than one
    member, which is what a teacher that relabels synthetic images needs."""

    def __init__(self, members: list[Evaluator]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x).log_softmax(-1) for m in self.members]).mean(0)  # (N, K)


def _shift(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """The whole batch translated by one random offset of up to ``k`` pixels."""
    if k == 0:
        return x
    padded = F.pad(x, (k, k, k, k))
    dy, dx = torch.randint(0, 2 * k + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def classical_augment(x: Tensor, shift: int, rotate: float, gen: torch.Generator, scale: float = 0.0,
                      shear: float = 0.0) -> Tensor:  # fmt: skip
    """Each image shifted by a whole number of pixels in [-shift, shift] on each axis and
    rotated by an angle in [-rotate, rotate] degrees; with ``scale``, each axis also scaled by a
    factor in [1 - scale, 1 + scale], with ``shear`` sheared horizontally by a factor in [-shear,
    shear] (one bilinear resampling, zeros outside): the classical augmentation a practitioner
    applies to digits. (N, C, H, W) -> same."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(rotate)  # (N,)
    offset = torch.randint(-shift, shift + 1, (n, 2), generator=gen).float()  # (N, 2) pixels (x, y)
    offset = offset * 2 / torch.tensor([w, h], dtype=torch.float)  # in affine_grid's [-1, 1] units
    cos, sin = angle.cos(), angle.sin()
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (N, 2, 2)
    if scale > 0 or shear > 0:  # drawn only when asked for: shift and rotation alone draw as before
        factors = 1 + (torch.rand(n, 2, generator=gen) * 2 - 1) * scale  # (N, 2): x, y
        sheared = (torch.rand(n, generator=gen) * 2 - 1) * shear  # (N,)
        zeros = torch.zeros(n)
        stretch = torch.stack([torch.stack([factors[:, 0], sheared], 1),
                               torch.stack([zeros, factors[:, 1]], 1)], 1)  # (N, 2, 2)  # fmt: skip
        linear = linear @ stretch
    theta = torch.cat([linear, offset[:, :, None]], 2)  # (N, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(x: Tensor, cfg: EvaluatorConfig, gen: torch.Generator) -> Tensor:
    """The training augmentation of ``cfg``: classical (per image) when ``rotate``, ``scale`` or
    ``shear`` is above 0, else the batch shift."""
    if cfg.rotate > 0 or cfg.scale > 0 or cfg.shear > 0:
        return classical_augment(x, cfg.shift, cfg.rotate, gen, cfg.scale, cfg.shear)
    return _shift(x, cfg.shift, gen)


LABEL_SMOOTHING = 0.05


def mixed_loss(
    real_logits: Tensor, y: Tensor, synthetic_logits: Tensor, targets: Tensor, weight: float
) -> Tensor:
    """The loss of a batch of real images (labels ``y``, smoothed) and synthetic ones (class
    probabilities ``targets``): every image counts alike, a synthetic one times ``weight``,
    normalised by the real images (at half real, half synthetic: the real mean plus ``weight``
    times the synthetic mean)."""
    real = F.cross_entropy(real_logits, y, label_smoothing=LABEL_SMOOTHING)
    soft = -(targets * synthetic_logits.log_softmax(-1)).sum(-1).mean()
    per_real = len(synthetic_logits) / len(real_logits)  # 1 at half real, half synthetic
    return real + weight * per_real * soft


def batch_split(n: int, spec: DataSpec, cfg: EvaluatorConfig, real_share: float | None) -> tuple[int, int]:
    """(real, synthetic) images in each training batch of ``cfg`` on ``n`` real images, with
    ``real_share`` of the batch real (None: real images alone, as many as there are up to a batch)."""
    batch = by_pixels(cfg.batch_size, cfg.batch_pixels, spec, 8)
    if real_share is None:
        return min(batch, n), 0
    n_real = max(1, min(batch, n, round(batch * real_share)))
    return n_real, batch - n_real


def train_evaluator(
    x: Tensor,
    y: Tensor,
    spec: DataSpec,
    cfg: EvaluatorConfig | None = None,
    seed: int = 0,
    synthetic: Synthetic | None = None,
) -> Evaluator:
    """Train on (x in [0, 1], y); seeded, so the same data gives the same evaluator (CPU).

    With ``synthetic``, every batch holds ``real_share`` real images (hard labels) and the rest
    synthetic ones with their (soft) targets; every image counts alike in the loss, a synthetic
    one times ``weight`` (so ``real_share`` is also the real images' share of the loss at weight 1)."""
    cfg = cfg or EvaluatorConfig()
    torch.manual_seed(seed)
    net = Evaluator(spec, cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    gen = torch.Generator().manual_seed(seed)
    share = synthetic.real_share if synthetic is not None else None
    n_real, n_synthetic = batch_split(len(x), spec, cfg, share)
    for _ in range(cfg.steps):
        idx = torch.randint(len(x), (n_real,), generator=gen)
        logits = net(augment(x[idx], cfg, gen))
        if synthetic is not None and n_synthetic:
            j = torch.randint(len(synthetic.x), (n_synthetic,), generator=gen)
            loss = mixed_loss(logits, y[idx], net(augment(synthetic.x[j], cfg, gen)), synthetic.targets[j],
                              synthetic.weight)  # fmt: skip
        else:
            loss = F.cross_entropy(logits, y[idx], label_smoothing=LABEL_SMOOTHING)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.inference_mode()
def accuracy(net: Evaluator, x: Tensor, y: Tensor) -> float:
    _, probs = net.embed(x)
    return float((probs.argmax(-1) == y).float().mean())


def save_evaluator(net: Evaluator, path: str | Path, extra: dict | None = None) -> Path:
    """``<path>.json`` (data spec, config) + ``<path>.safetensors``, as models are saved."""
    return save_weights(net, path, {"spec": asdict(net.spec), "net": net.cfg.model_dump()}, extra)


def load_evaluator(path: str | Path) -> Evaluator:
    meta, state = read_weights(path)
    net = Evaluator(DataSpec(**meta["spec"]), EvaluatorConfig(**meta["net"]))
    net.load_state_dict(state)
    return net.eval()
