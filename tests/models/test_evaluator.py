"""The evaluator whose features the quality metrics use: strong on digits, seeded, safe to load."""

import pytest
import torch

from genzoo.models.evaluator import EvaluatorConfig, accuracy, load_evaluator, save_evaluator, train_evaluator
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import data_spec, load_split, prepare


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    params = validate(
        {"data": {"prepared_dir": str(tmp_path_factory.mktemp("ev") / "p")}, "models": {"vae": {}}}
    )
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    return x, y, xt, yt, data_spec(manifest)


def test_evaluator_is_strong_on_digits_and_gives_features(digits):
    x, y, xt, yt, spec = digits
    net = train_evaluator(x, y, spec, EvaluatorConfig(steps=600))
    assert accuracy(net, xt, yt) >= 0.97
    feats, probs = net.embed(xt)
    assert feats.shape == (len(xt), 128) and torch.isfinite(feats).all()
    assert torch.allclose(probs.sum(-1), torch.ones(len(xt)), atol=1e-5)


def test_evaluator_is_seeded_and_round_trips(digits, tmp_path):
    x, y, _, _, spec = digits
    cfg = EvaluatorConfig(steps=20, channels=8, feature_dim=16)
    a, b = train_evaluator(x, y, spec, cfg, seed=3), train_evaluator(x, y, spec, cfg, seed=3)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    path = save_evaluator(a, tmp_path / "evaluator")
    loaded = load_evaluator(path)
    assert torch.equal(loaded.embed(x[:50])[0], a.embed(x[:50])[0])
    weights = tmp_path / "evaluator.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="sha256 does not match"):
        load_evaluator(path)


def test_batch_values_gives_the_classifier_smaller_batches_on_large_images(digits, monkeypatch):
    """``batch_values`` caps the images per step by their size (digits: 64 values each)."""
    import genzoo.models.evaluator as ev

    x, y, _, _, spec = digits
    seen, augment = [], ev.augment
    monkeypatch.setattr(ev, "augment", lambda xb, cfg, gen: seen.append(len(xb)) or augment(xb, cfg, gen))
    train_evaluator(x, y, spec, EvaluatorConfig(steps=2, batch_values=64 * 40))
    train_evaluator(x, y, spec, EvaluatorConfig(steps=2))
    assert seen == [40, 40, 128, 128]


def test_mixed_loss_counts_every_image_alike_whatever_the_real_share():
    """A batch of n real and m synthetic images: the synthetic images' loss is not a second mean
    beside the real one (which would give m synthetic images the weight of n real ones at any
    share) but each image's own, times ``weight``, over n; at half and half, the two means."""
    from genzoo.models.evaluator import LABEL_SMOOTHING, mixed_loss

    torch.manual_seed(0)
    real, y = torch.randn(12, 10), torch.randint(10, (12,))
    per_image = torch.nn.functional.cross_entropy(real, y, label_smoothing=LABEL_SMOOTHING, reduction="none")
    smoothed = torch.nn.functional.one_hot(y, 10) * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 10
    for m, w in ((4, 1.0), (12, 1.0), (6, 0.3)):  # the first m real images again, as synthetic
        loss = mixed_loss(real, y, real[:m], smoothed[:m], w)
        assert torch.allclose(loss, (per_image.sum() + w * per_image[:m].sum()) / 12, atol=1e-6)
    assert torch.allclose(mixed_loss(real, y, real, smoothed, 1.0), 2 * per_image.mean(), atol=1e-6)
