"""The evaluator whose features the quality metrics use: strong on digits, seeded, safe to load."""

import pytest
import torch

from genzoo.models.evaluator import (
    EvaluatorConfig,
    accuracy,
    classical_augment,
    load_evaluator,
    save_evaluator,
    train_evaluator,
)
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


def test_batch_pixels_gives_the_classifier_smaller_batches_on_large_images(digits, monkeypatch):
    """``batch_pixels`` caps the images per step by their size (digits: 64 pixels each)."""
    import genzoo.models.evaluator as ev

    x, y, _, _, spec = digits
    seen, augment = [], ev.augment
    monkeypatch.setattr(ev, "augment", lambda xb, cfg, gen: seen.append(len(xb)) or augment(xb, cfg, gen))
    train_evaluator(x, y, spec, EvaluatorConfig(steps=2, batch_pixels=64 * 40))
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


def test_classical_augmentation_scales_and_shears_only_when_asked():
    """``scale`` stretches each axis by a factor in [1 - scale, 1 + scale] and ``shear`` slants
    each image; at 0 they draw nothing, so shift and rotation alone give the images they gave
    before these were added, and nothing at all leaves an image as it was."""
    square = torch.zeros(400, 1, 16, 16)
    square[..., 6:10, 6:10] = 1.0  # 4x4, centred
    g = torch.Generator().manual_seed(0)
    assert torch.equal(classical_augment(square, 0, 0.0, g), square)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert torch.equal(classical_augment(square, 1, 10.0, a), classical_augment(square, 1, 10.0, b, 0.0, 0.0))
    assert torch.equal(a.get_state(), b.get_state())  # no draws for a scale or shear of 0
    # an axis scaled by f in affine_grid's sampling shows the square 1/f as wide: area 16 / (fx fy)
    mass = classical_augment(square, 0, 0.0, torch.Generator().manual_seed(2), scale=0.5).sum((1, 2, 3))
    assert mass.min() > 16 / 1.5**2 * 0.9 and mass.max() < 16 / 0.5**2 * 1.1
    assert mass.max() / mass.min() > 4  # the factors spread over their range
    assert torch.equal(classical_augment(square, 0, 0.0, torch.Generator().manual_seed(2)), square)
    line = torch.zeros(400, 1, 16, 16)
    line[..., 7:9] = 1.0  # a vertical bar
    cols = torch.arange(16.0)
    slanted = classical_augment(line, 0, 0.0, torch.Generator().manual_seed(3), shear=0.5)
    top, bottom = ((r * cols).sum(-1) / r.sum(-1) for r in (slanted[:, 0, 2], slanted[:, 0, 13]))
    lean = top - bottom  # (N,) columns the bar moved between rows 2 and 13
    assert lean.abs().max() > 3 and (lean > 1).any() and (lean < -1).any()
    assert lean.abs().max() <= 0.5 * 11 + 0.5


def test_evaluator_channels_a_multiple_of_its_group_norms_groups():
    from pydantic import ValidationError

    from genzoo.models.evaluator import EvaluatorConfig

    with pytest.raises(ValidationError, match="multiple of 8"):
        EvaluatorConfig(channels=12)
    assert EvaluatorConfig(channels=16).channels == 16
