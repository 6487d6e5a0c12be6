"""The evaluator: a small CNN classifier trained on the real training split. Its penultimate
features are the space in which genzoo measures sample quality (Fréchet distance, KID,
precision/recall, ...) when Inception-v3 does not fit the data (8x8 digits), and its class
predictions score class-conditional samples."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from genzoo.models.base import DataSpec, NetConfig, read_weights, save_weights


class EvaluatorConfig(NetConfig):
    channels: int = Field(32, gt=0)
    feature_dim: int = Field(128, gt=0, description="size of the feature space the metrics use")
    dropout: float = Field(0.3, ge=0, lt=1)
    steps: int = Field(800, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-3, gt=0, le=10)
    shift: int = Field(1, ge=0, description="random translation (pixels) as augmentation")


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


def _shift(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    if k == 0:
        return x
    padded = F.pad(x, (k, k, k, k))
    dy, dx = torch.randint(0, 2 * k + 1, (2,), generator=gen).tolist()
    return padded[..., dy : dy + x.shape[-2], dx : dx + x.shape[-1]]


def train_evaluator(
    x: Tensor, y: Tensor, spec: DataSpec, cfg: EvaluatorConfig | None = None, seed: int = 0
) -> Evaluator:
    """Train on (x in [0, 1], y); seeded, so the same data gives the same evaluator (CPU)."""
    cfg = cfg or EvaluatorConfig()
    torch.manual_seed(seed)
    net = Evaluator(spec, cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(cfg.steps):
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=gen)
        loss = F.cross_entropy(net(_shift(x[idx], cfg.shift, gen)), y[idx], label_smoothing=0.05)
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
