"""The train stage's figures scale their sample counts with the image size."""

from genzoo import models
from genzoo.models import DataSpec
from genzoo.tasks.train import sampling_speed


def test_sampling_speed_draws_fewer_large_images(monkeypatch):
    drawn = []
    for spec, n in (
        (DataSpec(1, 8, 8, 17, 10), 100),
        (DataSpec(3, 32, 32, 32, 2), 8),
        (DataSpec(1, 16, 16, 4, 2), 25),
    ):
        model = models.build("gan", spec, {"latent_dim": 4, "hidden": 4})
        real = model.sample
        monkeypatch.setattr(model, "sample", lambda k, real=real, **kw: drawn.append(k) or real(k, **kw))
        assert sampling_speed(model) > 0
        assert drawn[-1] == n
    assert sampling_speed(model, n=3) > 0 and drawn[-1] == 3
