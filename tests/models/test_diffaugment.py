"""DiffAugment in the GAN (Zhao et al. 2020): what each augmentation does to an image, that
gradients pass through it, and that D sees augmented images only when the policy asks; and the
truncation trick on the latent it samples from."""

import pytest
import torch
from pydantic import ValidationError

from genzoo.models.base import DataSpec
from genzoo.models.gan import GAN, GANConfig, diffaugment


def test_translation_moves_each_image_by_at_most_one_eighth_and_shifts_in_zeros():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # one lit pixel per image
    out = diffaugment(x, ["translation"])
    assert out.shape == x.shape
    assert torch.all(out.sum(dim=(1, 2, 3)) == 1)  # moved, never lost (2 px from the centre of 16)
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2  # 16 / 8
    assert len(set(zip(dy.tolist(), dx.tolist(), strict=True))) > 5  # each image its own shift
    edge = torch.ones(256, 1, 8, 8)
    moved = diffaugment(edge, ["translation"])
    assert (moved == 0).any() and set(moved.unique().tolist()) <= {0.0, 1.0}  # zeros shifted in


def test_cutout_zeroes_a_half_side_square_within_the_image():
    torch.manual_seed(0)
    out = diffaugment(torch.ones(200, 3, 8, 8), ["cutout"])
    zeros = (out == 0).all(1).flatten(1).sum(1)  # per image, pixels zero in every channel
    assert zeros.max() == 16 and zeros.min() >= 4  # a 4 x 4 square, clipped at the border
    assert ((out == 0) | (out == 1)).all()


def test_color_changes_brightness_and_contrast_and_keeps_the_batch_shape():
    torch.manual_seed(0)
    x = torch.rand(32, 3, 8, 8)
    out = diffaugment(x, ["color"])
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_gradients_reach_the_images_through_every_augmentation():
    x = torch.rand(8, 1, 8, 8, requires_grad=True)
    diffaugment(x, ["color", "translation", "cutout"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_the_discriminator_sees_augmented_images_only_with_a_policy():
    spec = DataSpec(channels=1, height=8, width=8, num_classes=10, levels=17)
    torch.manual_seed(0)
    plain = GAN(spec, GANConfig(latent_dim=8, hidden=8))
    torch.manual_seed(0)
    aug = GAN(spec, GANConfig(latent_dim=8, hidden=8, diffaugment=["translation", "cutout"]))
    x = torch.rand(16, 1, 8, 8)
    assert torch.equal(plain._augment(x), x)
    assert not torch.equal(aug._augment(x), x)
    y = torch.arange(16) % 10
    torch.manual_seed(1)
    a = plain.training_step(x, y, "disc").loss
    torch.manual_seed(1)
    b = aug.training_step(x, y, "disc").loss
    assert torch.isfinite(b) and not torch.isclose(a, b)  # same weights and noise, augmented views


def test_truncation_redraws_every_latent_value_beyond_the_threshold_and_stays_seeded():
    spec = DataSpec(channels=1, height=8, width=8, levels=17, num_classes=10)
    gan = GAN(spec, GANConfig(latent_dim=8, hidden=8, truncation=0.5)).eval()
    seen = []
    gan.gen.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    labels = torch.arange(10).repeat(20)
    a = gan.sample(200, labels, generator=torch.Generator().manual_seed(3))
    b = gan.sample(200, labels, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)  # the redraws come from the same generator
    z = seen[0]
    assert z.shape == (200, 8) and z.abs().max() <= 0.5 and z.std() > 0.2  # truncated, not collapsed
    gan.cfg = gan.cfg.model_copy(update={"truncation": 0.0})
    gan.sample(200, labels, generator=torch.Generator().manual_seed(3))
    assert seen[-1].abs().max() > 2  # off: plain N(0, I)


def test_truncation_close_to_zero_is_refused_before_sampling():
    with pytest.raises(ValidationError, match="truncation"):
        GANConfig(truncation=0.01)
