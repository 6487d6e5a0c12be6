"""CUDA paths (AMP, device placement). Skipped cleanly where no CUDA device exists."""

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec
from genzoo.models.trainer import TrainConfig, fit
from tests.conftest import TINY

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("family", list(TINY))
def test_family_trains_with_amp_and_samples_on_cuda(family, tmp_path):
    spec = DataSpec(1, 8, 8, 17, 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (64, 1, 8, 8), generator=g).float() / 16
    y = torch.randint(0, 10, (64,), generator=g)
    model = models.build(family, spec, TINY[family])
    cfg = TrainConfig(steps=10, batch_size=32, amp=True, ema_decay=0.9, checkpoint_every=5)
    trained, result = fit(model, x, y, cfg, device="cuda", checkpoint_dir=tmp_path, progress=False)
    assert result.bad_steps == 0
    s = trained.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.is_cuda and s.shape == (4, 1, 8, 8) and torch.isfinite(s).all()


def test_scoring_and_validating_leave_the_gpus_random_draws_alone():
    """log_likelihoods seeds its own draws inside a fork of the RNG: the fork kept only the CPU's,
    and torch.manual_seed reseeds every CUDA device, so every validation sent training's GPU draws
    back to the same state."""
    from genzoo.models.base import log_likelihoods

    model = models.build("vae", DataSpec(1, 8, 8, 17, 10), TINY["vae"]).to("cuda")
    x = torch.rand(4, 1, 8, 8)
    torch.cuda.manual_seed(123)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(123)
    log_likelihoods(model, x)
    assert torch.equal(torch.rand(3, device="cuda"), expected)


def test_a_training_resumes_on_cuda_as_a_straight_run_ends(tmp_path, monkeypatch):
    """The checkpoint was loaded onto the GPU, its CPU RNG states too: every resume on CUDA raised
    "RNG state must be a torch.ByteTensor", and kept raising until the checkpoints were deleted."""
    spec = DataSpec(1, 8, 8, 17, 10)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 17, (64, 1, 8, 8), generator=g).float() / 16
    y = torch.randint(0, 10, (64,), generator=g)
    cfg = TrainConfig(steps=8, batch_size=16, checkpoint_every=4, log_every=2)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)  # (cuDNN's atomics otherwise)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)

    def run(folder, stop_at=None):
        torch.manual_seed(0)
        model = models.build("vae", spec, TINY["vae"])
        return fit(model, x, y, cfg, device="cuda", checkpoint_dir=folder, progress=False, stop_at=stop_at)

    straight, _ = run(tmp_path / "a")
    run(tmp_path / "b", stop_at=4)
    resumed, result = run(tmp_path / "b")
    assert result.resumed_from == 4
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
