"""Exactness checks: flow log-determinants, PixelCNN causality, likelihoods that sum to one."""

import itertools

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec
from genzoo.models.base import ExactLikelihood, LikelihoodBound, families_with, log_likelihoods
from genzoo.models.pixelcnn import SHIFTS, shift_images


def test_pixelcnn_is_causal():
    torch.manual_seed(0)
    spec = DataSpec(2, 5, 5, 4, 3)
    model = models.build("pixelcnn", spec, {"channels": 8, "layers": 4}).eval()
    x = torch.randint(0, 4, (1, *spec.shape)).float() / 3
    y = torch.tensor([1])
    base = model.params(x, y)
    h, w = spec.height, spec.width
    for i in range(h * w):
        xi = x.clone()
        xi[0, :, i // w, i % w] = 1 - xi[0, :, i // w, i % w]  # change pixel i, all channels
        diff = (model.params(xi, y) - base).abs().amax(dim=1)[0].flatten()  # per position
        assert diff[: i + 1].max() == 0, f"pixel {i} leaked into outputs at or before it"
        if i + 1 < h * w:
            assert diff[i + 1] > 0, "the next pixel must see pixel i"


@pytest.mark.parametrize(
    ("kernel", "guidance", "distaug", "interval"),
    [
        (3, 1.0, 0.0, (0, 1)),
        (5, 1.0, 0.0, (0, 1)),
        (3, 1.6, 0.0, (0, 1)),
        (3, 1.6, 0.0, (0.3, 0.7)),
        (3, 1.0, 0.5, (0, 1)),
    ],
)
def test_pixelcnn_sees_only_its_window_and_the_fast_samplers_draw_the_same_images(
    kernel, guidance, distaug, interval
):
    """The window sampler runs each pass on the pixel's window (``reach`` rows above, ``reach``
    columns either side): every input a pixel's output depends on lies inside it (gradients
    are zero outside). It, and the cached sampler (every layer's activations kept: a row of the
    vertical stack per row, a column of the horizontal stack per pixel), draw the very images of
    full-image passes, seed for seed, with classifier-free guidance (on every row, or on an
    interval of rows) and with DistAug's shift condition too; the cached sampler also with three
    layers, where a middle layer's residual feeds the next."""
    torch.manual_seed(0)
    spec = DataSpec(2, 17, 19, 5, 3)
    net = {"channels": 4, "layers": 2, "kernel": kernel, "guidance": guidance, "label_dropout": 0.1,
           "distaug": distaug, "guidance_interval": interval}  # fmt: skip
    model = models.build("pixelcnn", spec, net).eval()
    r = model.reach
    assert r <= 17 // 2  # the window is smaller than the image
    x = torch.rand(1, *spec.shape, requires_grad=True)
    rows, cols = torch.meshgrid(torch.arange(17), torch.arange(19), indexing="ij")
    for i, j in [(16, 9), (12, 0), (15, 18), (r + 1, r + 1)]:
        (grad,) = torch.autograd.grad(model.params(x, torch.tensor([2]))[0, :, i, j].sum(), x)
        seen = grad[0].abs().amax(0) > 0  # (H, W)
        window = (rows >= i - r) & (rows <= i) & (cols >= j - r) & (cols <= j + r)
        assert seen.any() and not (seen & ~window).any(), (i, j)
    y = torch.tensor([0, 2])
    with torch.no_grad():
        full, window, cached = (model._sample(2, y, torch.Generator().manual_seed(7), mode=m)
                                for m in ("full", "window", "cached"))  # fmt: skip
    assert torch.equal(full, window) and torch.equal(full, cached)
    assert torch.equal(model.sample(2, y, generator=torch.Generator().manual_seed(7)), cached)  # the default
    deeper = models.build("pixelcnn", spec, {**net, "layers": 3}).eval()
    with torch.no_grad():
        full, cached = (
            deeper._sample(2, y, torch.Generator().manual_seed(7), mode=m) for m in ("full", "cached")
        )
    assert torch.equal(full, cached)


@pytest.mark.parametrize("output", ["categorical", "logistic"])
def test_pixelcnn_guidance_draws_each_pixel_from_conditional_times_unconditional(output):
    """Classifier-free guidance g: each pixel from p(x_i | y)^g p(x_i)^(1 - g), renormalised (the
    null label's model is p(x_i)). g = 0 draws the null label's images, seed for seed; g = 1 the
    conditional ones; a large g is surer of the label's most likely level than g = 1."""
    torch.manual_seed(0)
    spec = DataSpec(1, 6, 6, 5, 3)
    net = {"channels": 8, "layers": 2, "output": output, "label_dropout": 0.1}
    model = _off_init(models.build("pixelcnn", spec, net))
    y, null = torch.tensor([0, 1, 2, 1]), torch.full((4,), 3)
    draw = lambda m, labels: m._sample(4, labels, torch.Generator().manual_seed(3))  # noqa: E731
    with torch.no_grad():
        plain = draw(model, y)
        guided = lambda g: models.build("pixelcnn", spec, {**net, "guidance": g}).eval()  # noqa: E731
        for g in (0.0, 1.0, 2.5):
            m = guided(g)
            m.load_state_dict(model.state_dict())
            if g == 0.0:
                assert torch.equal(draw(m, y), draw(model, null))  # the unconditional model
                assert not torch.equal(draw(m, y), plain)
            elif g == 1.0:
                assert torch.equal(draw(m, y), plain)  # the conditional model, one pass per pixel
            else:  # the pixel's guided log-probabilities, as the sampler computes them
                params = torch.randn(8, model.dist.out_channels, 1, 1)
                lc, lu = model.dist.level_log_probs(params).chunk(2)
                want = torch.log_softmax(lu + g * (lc - lu), dim=2)
                k = model.dist.sample_levels(want, torch.Generator().manual_seed(5))
                got = m._draw(params, torch.Generator().manual_seed(5), row=0)
                assert torch.equal(got, model.from_levels(k)[:, :, 0, 0].repeat(2, 1))
                assert (want.amax(2) > lc.amax(2)).float().mean() > 0.5  # surer than the conditional
                # guidance on the middle third of the 6 rows (rows 2 and 3): the others conditional
                m.cfg = m.cfg.model_copy(update={"guidance_interval": (1 / 3, 2 / 3)})
                k = model.dist.sample_levels(torch.log_softmax(lc, dim=2), torch.Generator().manual_seed(5))
                conditional = model.from_levels(k)[:, :, 0, 0].repeat(2, 1)
                for row, want_draw in [(1, conditional), (2, got), (3, got), (4, conditional)]:
                    assert torch.equal(m._draw(params, torch.Generator().manual_seed(5), row=row), want_draw)
                assert not torch.equal(got, conditional)
    with pytest.raises(ValueError, match="needs label_dropout > 0"):
        models.build("pixelcnn", spec, {"channels": 8, "layers": 2, "guidance": 2.0})
    with pytest.raises(ValueError, match="guidance_interval"):
        models.build("pixelcnn", spec, {**net, "guidance": 2.0, "guidance_interval": (0.5, 0.5)})


def test_pixelcnn_label_dropout_nulls_labels_in_training_only():
    """With label dropout the training loss is, for the dropped images, the null label's
    likelihood (the unconditional model guidance needs); evaluation keeps every label."""
    torch.manual_seed(0)
    spec = DataSpec(1, 5, 5, 4, 3)
    model = _off_init(models.build("pixelcnn", spec, {"channels": 8, "layers": 2, "label_dropout": 0.9999}))
    x, y = torch.randint(0, 4, (6, *spec.shape)).float() / 3, torch.tensor([0, 1, 2, 0, 1, 2])
    nll = lambda labels: -model.dist.log_prob(model.params(x, labels), model.to_levels(x)).mean()  # noqa: E731
    with torch.no_grad():
        assert torch.allclose(model.training_step(x, y).loss, nll(y) / spec.dims)  # eval mode: labels kept
        model.train()
        torch.manual_seed(1)
        assert torch.allclose(model.training_step(x, y).loss, nll(None) / spec.dims)  # all dropped


def test_distaug_shifts_a_share_of_training_images_and_conditions_on_the_shift():
    """DistAug: each image moved a pixel by its shift (the edge repeated into the gap); in
    training, a share of the batch is shifted and the loss is that of the shifted images given
    their shift; in evaluation every image is scored as it is, given shift 0 (the identity)."""
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(5, 1, 1, 1)
    moved = shift_images(x, torch.arange(5))
    assert torch.equal(moved[0], x[0])
    assert torch.equal(
        moved[1, 0], torch.tensor([[0.0, 1, 2, 3], [0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])
    )
    assert torch.equal(moved[2, 0, :3], x[0, 0, 1:]) and torch.equal(moved[2, 0, 3], x[0, 0, 3])
    assert torch.equal(moved[3, 0, :, 1:], x[0, 0, :, :3]) and torch.equal(moved[4, 0, :, :3], x[0, 0, :, 1:])

    torch.manual_seed(0)
    spec = DataSpec(1, 6, 6, 4, 3)
    model = _off_init(models.build("pixelcnn", spec, {"channels": 8, "layers": 2, "distaug": 0.5}))
    x, y = torch.randint(0, 4, (8, *spec.shape)).float() / 3, torch.arange(8) % 3

    def nll(images, shift):
        return (
            -model.dist.log_prob(model.params(images, y, shift), model.to_levels(images)).mean() / spec.dims
        )

    with torch.no_grad():
        assert torch.allclose(model.training_step(x, y).loss, nll(x, None))  # eval mode: as they are
        assert not torch.allclose(nll(x, None), nll(x, torch.ones(8, dtype=torch.long)))  # the shift is seen
        model.train()
        torch.manual_seed(1)
        loss = model.training_step(x, y).loss
        torch.manual_seed(1)
        shift = torch.where(torch.rand(8) < 0.5, torch.randint(1, len(SHIFTS), (8,)), 0)
        assert 0 < (shift > 0).sum() < 8
        model.eval()  # nll() then draws no shift of its own (no dropout: the same network)
        assert torch.allclose(loss, nll(shift_images(x, shift), shift))


@pytest.mark.parametrize("output", ["categorical", "logistic"])
def test_pixelcnn_probabilities_sum_to_one(output):
    torch.manual_seed(0)
    spec = DataSpec(1, 2, 2, 4, 2)
    model = models.build("pixelcnn", spec, {"channels": 8, "layers": 2, "output": output}).eval()
    grid = torch.tensor(list(itertools.product(range(4), repeat=4)), dtype=torch.float32)
    x = (grid / 3).view(256, 1, 2, 2)
    with torch.no_grad():
        for y in (torch.zeros(256, dtype=torch.long), None):
            total = model.log_prob(x, y).exp().sum().item()
            assert abs(total - 1) < 1e-4, total


@pytest.mark.parametrize("output", ["categorical", "logistic"])
def test_pixel_sampling_temperature_sharpens_toward_the_most_likely_level(output):
    """p^(1/T) renormalised: T = 1 draws what the plain sampler draws, seed for seed; a small T
    draws the most likely level; a lower T misses it less often than T = 1."""
    torch.manual_seed(0)
    dist = models.layers.PixelLikelihood(output, levels=9, channels=2)
    params = 2 * torch.randn(16, dist.out_channels, 6, 6)
    draw = lambda t: dist.sample(params, torch.Generator().manual_seed(1), temperature=t)  # noqa: E731
    assert torch.equal(draw(1.0), dist.sample(params, torch.Generator().manual_seed(1)))
    lp = dist.level_log_probs(params)  # (B, C, L, H, W)
    best = lp.argmax(2)  # (B, C, H, W)
    drawn = lp.gather(2, draw(1e-5).unsqueeze(2)).squeeze(2)
    assert torch.allclose(drawn, lp.amax(2), atol=1e-4)  # the most likely level (or one tied with it)
    hot, cold = draw(1.0), draw(0.5)
    assert (hot != best).float().mean() > (cold != best).float().mean() > 0


@pytest.mark.parametrize("channels", [1, 3])
def test_pixel_sampling_draws_a_single_image(channels):
    """One image of one channel too (its level probabilities are then no view of a contiguous
    block: a VAE drawing pixels, ``sample_mode: sample``, failed at ``genzoo sample --n 1``)."""
    dist = models.layers.PixelLikelihood("categorical", levels=17, channels=channels)
    params = torch.randn(1, dist.out_channels, 8, 8)
    k = dist.sample(params, torch.Generator().manual_seed(0))
    assert k.shape == (1, channels, 8, 8) and 0 <= int(k.min()) <= int(k.max()) < 17
    vae = models.build(
        "vae", DataSpec(1, 8, 8, 17, 10), {"latent_dim": 4, "hidden": 8, "sample_mode": "sample"}
    )
    assert vae.eval().sample(1, torch.tensor([3])).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("family", families_with(ExactLikelihood | LikelihoodBound))
def test_an_image_scores_the_same_in_any_batch_and_beside_any_images(family, tiny):
    """What `genzoo detect` flags must not depend on the other files of a folder: an estimate
    that samples (dequantisation, posterior draws, noised images) draws each image's noise from
    its own levels, so scoring it alone, first or last, in batches of any size gives one figure
    (the draws were a batch's)."""
    spec = DataSpec(1, 8, 8, 17, 10)
    torch.manual_seed(0)
    model = _off_init(models.build(family, spec, tiny[family]))
    x = torch.randint(0, 17, (12, 1, 8, 8)).float() / 16
    whole = log_likelihoods(model, x)
    # (to float32's rounding in batches of another size, ~1e-4 of a figure of ~600 nats; another
    # image's draw moves a figure by nats)
    for batch in (1, 5):
        assert torch.allclose(log_likelihoods(model, x, batch=batch), whole, rtol=0, atol=1e-3), batch
    flipped = log_likelihoods(model, x.flip(0)).flip(0)
    assert torch.allclose(flipped, whole, rtol=0, atol=1e-3)
    y = torch.arange(12) % 10
    assert torch.allclose(log_likelihoods(model, x[:3], y[:3], batch=2), log_likelihoods(model, x, y)[:3],
                          rtol=0, atol=1e-3)  # fmt: skip
    twins = log_likelihoods(model, torch.cat([x[:1], x[:1]]))  # the same image, the same draw
    assert twins[0] == twins[1]


def _off_init(model):
    """Every parameter moved a little off its initial value (a flow's couplings start as the
    identity, a zero-initialised output layer as zero), in eval mode."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def _perturbed_flow(spec, **net):
    torch.manual_seed(0)
    return _off_init(
        models.build("realnvp", spec, {"hidden": 8, "couplings": 2, "blocks": 1, **net})
    ).double()


@pytest.mark.parametrize("invconv", [False, True])
def test_flow_log_det_matches_autograd_jacobian(invconv):
    spec = DataSpec(1, 4, 4, 17, 3)
    model = _perturbed_flow(spec, invconv=invconv)
    y = torch.tensor([2])
    x01 = torch.rand(1, *spec.shape, dtype=torch.float64) * 0.9 + 0.05

    def f(flat):
        parts, _ = model._forward(flat.view(1, *spec.shape), y)
        return torch.cat([z.flatten() for z, _, _ in parts])

    jac = torch.autograd.functional.jacobian(f, x01.flatten())
    _, ld = model._forward(x01, y)
    assert torch.allclose(torch.linalg.slogdet(jac)[1], ld[0], atol=1e-6)


def test_flow_is_invertible():
    spec = DataSpec(3, 8, 8, 256, 4)
    model = _perturbed_flow(spec, invconv=True)
    x = torch.randint(0, 256, (3, *spec.shape)).double() / 255
    y = torch.tensor([0, 1, 3])
    with torch.no_grad():
        z = model.encode(x, y)
        assert z.shape == (3, spec.dims)
        assert torch.equal(model.decode(z, y), x)  # bin centres decode to the same levels
        c = model.embed(y)
        h = torch.rand(3, *spec.shape, dtype=torch.float64)
        for scale in model.scales:  # each scale's inverse undoes its forward
            out, zz, _ = scale(h, c)
            assert torch.allclose(scale.inverse(out, zz, c), h, atol=1e-9)
            h = out


def test_marginal_is_the_class_mixture():
    spec = DataSpec(1, 4, 4, 5, 3)
    torch.manual_seed(0)
    model = models.build("pixelcnn", spec, {"channels": 8, "layers": 2}).eval()
    model.log_class_prior.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))
    x = torch.randint(0, 5, (4, *spec.shape)).float() / 4
    with torch.no_grad():
        per = torch.stack([model.log_prob(x, torch.full((4,), k)) for k in range(3)], 1)
        expect = torch.logsumexp(per + model.log_class_prior, 1)
        assert torch.allclose(model.log_prob(x), expect, atol=1e-5)


def test_vae_iwae_bound_tightens_with_k():
    spec = DataSpec(1, 8, 8, 17, 2)
    torch.manual_seed(0)
    model = models.build("vae", spec, {"latent_dim": 4, "hidden": 8}).eval()
    x = torch.randint(0, 17, (8, *spec.shape)).float() / 16
    y = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        torch.manual_seed(1)
        elbo = torch.stack([model.elbo(x, y, k=1) for _ in range(20)]).mean()
        torch.manual_seed(1)
        iwae = model.elbo(x, y, k=64).mean()
    assert iwae > elbo


def test_ddpm_bound_with_every_term_equals_the_full_sum():
    """bound_terms = T - 1 gives one stratum per timestep: exactly the full sum (0)."""
    spec = DataSpec(1, 4, 4, 5, 2)
    torch.manual_seed(0)
    full = _off_init(models.build("ddpm", spec, {"hidden": 8, "timesteps": 12, "bound_terms": 0}))
    every = models.build("ddpm", spec, {"hidden": 8, "timesteps": 12, "bound_terms": 11}).eval()
    every.load_state_dict(full.state_dict())
    part = models.build("ddpm", spec, {"hidden": 8, "timesteps": 12, "bound_terms": 3}).eval()
    part.load_state_dict(full.state_dict())
    x = torch.randint(0, 5, (16, *spec.shape)).float() / 4
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.no_grad():
        a, b, c = full.elbo(x, generator=g()), every.elbo(x, generator=g()), part.elbo(x, generator=g())
    assert torch.equal(a, b)
    assert torch.isfinite(c).all() and not torch.equal(a, c)


def test_ddpm_bound_strata_cover_every_timestep_once_log_ones_start_one_timestep_each():
    from genzoo.models.ddpm import bound_strata

    for T, K in [(1000, 1), (1000, 10), (1000, 50), (1000, 100), (1000, 999), (12, 3), (12, 11), (100, 99)]:
        for spacing in ("log", "linear"):
            e = bound_strata(T, K, spacing)
            assert len(e) == K + 1 and e[0] == 1 and e[-1] == T, (T, K, spacing)
            assert all(b > a for a, b in itertools.pairwise(e)), (T, K, spacing)  # no empty stratum
    log = bound_strata(1000, 50)
    assert log[:13] == list(range(1, 14))  # the largest terms, one timestep each
    widths = [b - a for a, b in itertools.pairwise(log)]
    assert widths == sorted(widths) and widths[-1] > 50  # widening toward the small terms
    assert bound_strata(1000, 10, "linear") == [1, 101, 201, 301, 401, 501, 600, 700, 800, 900, 1000]
    for bad in (0, 1000):
        with pytest.raises(ValueError, match="bound_terms"):
            bound_strata(1000, bad)


def test_ddpm_bound_from_a_few_strata_is_unbiased():
    """One timestep per stratum, weighted by the stratum's width: for terms that fall as 1 / t
    (as a trained model's KL terms do), the draws average to the sum of every term; log strata
    scatter a fraction of what equal ones do."""
    from genzoo.models.ddpm import bound_timesteps

    T, K, n = 1000, 10, 2000
    g = torch.Generator().manual_seed(0)
    full = sum(1 / t for t in range(1, T))
    spread = {}
    for spacing in ("log", "linear"):
        est = torch.tensor([sum(w / t for t, w in bound_timesteps(T, K, spacing, g)) for _ in range(n)])
        spread[spacing] = est.std()
        assert abs(est.mean() - full) < 4 * est.std() / n**0.5, (spacing, est.mean(), full)
    assert spread["log"] < spread["linear"] / 10
    for t, w in bound_timesteps(T, K, "log", g):
        assert 1 <= t < T and w >= 1


def test_ddpm_guidance_moves_the_noise_estimate_along_conditional_minus_unconditional():
    """Classifier-free guidance: g = 1 is the conditional estimate, g = 0 the null label's, and
    any g extrapolates linearly, in one batched pass that matches separate ones."""
    spec = DataSpec(1, 8, 8, 5, 3)
    torch.manual_seed(0)
    m = _off_init(models.build("ddpm", spec, {"hidden": 8, "timesteps": 20, "sample_steps": 5}))
    with torch.no_grad():
        x, t, y = torch.randn(6, *spec.shape), torch.randint(0, 20, (6,)), torch.tensor([0, 1, 2, 0, 1, 2])
        cond, uncond = m.eps(x, t, y), m.eps(x, t, None)
        assert not torch.allclose(cond, uncond)
        torch.testing.assert_close(m.eps(x, t, y, guidance=0.0), uncond, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            m.eps(x, t, y, guidance=1.35), uncond + 1.35 * (cond - uncond), atol=1e-5, rtol=1e-4
        )
        a = m.sample(6, y, generator=torch.Generator().manual_seed(0))
        m.cfg = m.cfg.model_copy(update={"guidance": 2.0})
        assert not torch.equal(
            a, m.sample(6, y, generator=torch.Generator().manual_seed(0))
        )  # sampling uses it
        # guidance_interval: the DDIM steps at noise levels t / T inside it are guided, the others not
        seen, eps = [], m.eps
        m.eps = lambda x, t, y, guidance=1.0: seen.append((int(t[0]), guidance)) or eps(x, t, y, guidance)
        for interval, guided in [((0.0, 1.0), {0, 5, 10, 14, 19}), ((0.25, 0.75), {5, 10, 14})]:
            seen.clear()
            m.cfg = m.cfg.model_copy(update={"guidance_interval": interval})
            m.sample(6, y, generator=torch.Generator().manual_seed(0))
            assert seen == [(t, 2.0 if t in guided else 1.0) for t in (19, 14, 10, 5, 0)], interval
    with pytest.raises(ValueError, match="guidance_interval"):
        models.build("ddpm", spec, {"hidden": 8, "guidance_interval": (0.6, 0.2)})


def test_ddim_with_one_step_denoises_and_decoding_is_deterministic_whatever_eta():
    """`sample_steps: 1` took its one step at the lowest noise level: x_T read as a clean image, the
    samples noise. With eta > 0, decode drew fresh noise on every call: the latent strips and
    smoothness changed from run to run, their ends no longer the encoded images."""
    spec = DataSpec(1, 8, 8, 17, 3)
    torch.manual_seed(0)
    m = _off_init(models.build("ddpm", spec, {"hidden": 8, "timesteps": 20, "sample_steps": 1})).eval()
    assert m._timesteps(1) == [19] and m._timesteps(2) == [0, 19]
    y = torch.tensor([0, 1, 2])
    x_t = torch.randn(3, *spec.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        drawn = m.sample(3, y, generator=torch.Generator().manual_seed(0))
        assert (drawn - m._to_image(x_t.clamp(-1, 1))).abs().mean() > 0.2  # not x_T read as an image
        m.cfg = m.cfg.model_copy(update={"eta": 0.5, "sample_steps": 5})
        z = m.encode(torch.rand(3, *spec.shape), y)
        torch.manual_seed(1)
        first = m.decode(z, y)
        torch.manual_seed(2)
        assert torch.equal(first, m.decode(z, y))
        # sampling keeps the config's eta: the generator's noise on every step but the last
        a = m.sample(3, y, generator=torch.Generator().manual_seed(0))
        m.cfg = m.cfg.model_copy(update={"eta": 0.0})
        assert not torch.equal(a, m.sample(3, y, generator=torch.Generator().manual_seed(0)))


def test_ddpm_cosine_schedule_is_truncated_for_discrete_data():
    """First step's noise is a third of a level's half-width, the last keeps alpha_bar = 1e-4,
    and no step has beta near 1 (an untruncated cosine ends with beta = 0.999)."""
    for levels in (17, 256):
        m = models.build("ddpm", DataSpec(1, 8, 8, levels, 2), {"hidden": 8})
        half_bin = 1 / (levels - 1)
        # buffers are float32: 1 - alpha_bar near 1e-6 keeps about two significant digits
        assert torch.isclose((1 - m.alphas_bar[0]).sqrt(), torch.tensor(half_bin / 3), rtol=2e-2)
        assert torch.isclose(m.alphas_bar[-1], torch.tensor(1e-4), rtol=1e-3)
        assert (m.betas > 0).all() and m.betas.max() < 0.3
        assert (m.alphas_bar[1:] < m.alphas_bar[:-1]).all()


def test_ddpm_linear_schedule_with_few_timesteps_keeps_a_finite_bound():
    """Ho et al.'s linear betas rescaled to T = 10 end at 2 (a NaN bound), at T = 20 at 1 (abar_T 0,
    a bound of -inf): clipped at 0.999, as Nichol & Dhariwal do."""
    spec = DataSpec(1, 4, 4, 17, 2)
    x = torch.randint(0, 17, (3, *spec.shape)).float() / 16
    for steps in (10, 20, 1000):
        m = models.build("ddpm", spec, {"hidden": 8, "schedule": "linear", "timesteps": steps}).eval()
        assert m.betas.max() <= 0.999 and (m.alphas_bar > 0).all(), steps
        assert torch.isfinite(log_likelihoods(m, x)).all(), steps


def test_likelihoods_of_large_images_run_in_smaller_batches_with_the_same_figures(monkeypatch):
    """``log_likelihoods`` holds at most LIKELIHOOD_BATCH_VALUES values per pass (a bound's
    samples x classes x image would not fit in memory at 64x64x3 in batches of 512)."""
    from genzoo.models import base

    torch.manual_seed(0)
    spec = DataSpec(1, 6, 6, 4, 3)
    model = models.build("pixelcnn", spec, {"channels": 8, "layers": 2}).eval()  # exact, nothing drawn
    x = torch.randint(0, 4, (10, *spec.shape)).float() / 3
    whole = base.log_likelihoods(model, x)
    seen = []
    real = model.log_prob
    monkeypatch.setattr(model, "log_prob", lambda xb, yb: seen.append(len(xb)) or real(xb, yb))
    monkeypatch.setattr(base, "LIKELIHOOD_BATCH_VALUES", 3 * spec.dims)
    assert torch.allclose(base.log_likelihoods(model, x), whole, rtol=1e-5)
    assert seen == [3, 3, 3, 1]


def test_ddpm_bound_with_the_true_noise_has_no_kl_left_at_256_levels():
    """A network that predicts the noise exactly makes every KL term of DDPM's bound zero. At 256
    levels 1 - abar_1 is ~1.7e-6: coefficients taken from a float32 abar were 1% off there and left
    ~1.25 nats an image (0.009 bits/dim on 3x8x8) that no network could remove."""
    from genzoo.models.ddpm import make_betas

    torch.manual_seed(0)
    spec = DataSpec(3, 8, 8, 256, 10)
    model = models.build("ddpm", spec, {"hidden": 8, "timesteps": 1000}).eval()
    x = torch.randint(0, 256, (4, 3, 8, 8)).float() / 255
    x0 = (x * 2 - 1).double()
    abar = torch.cumprod(1 - make_betas("cosine", 1000, (1 / 255) / 3), 0)  # float64, as the model makes it

    def true_eps(xt, t, y, guidance=1.0):
        a = abar[t].view(-1, 1, 1, 1)
        return ((xt.double() - a.sqrt() * x0) / (1 - a).sqrt()).float()

    model.eps = true_eps
    model._decoder_log_prob = lambda x0, mean, std: torch.zeros(len(x0))  # L_0 aside
    last = abar[-1]
    prior = (0.5 * ((1 - last) + last * x0**2 - 1 - torch.log(1 - last))).sum((1, 2, 3))  # L_T
    with torch.no_grad():
        kl = -model.elbo(x).double() - prior
    assert kl.abs().max() < 1e-4, kl


def test_ddpm_refuses_a_label_dropout_that_leaves_its_unconditional_model_untrained():
    from genzoo.models.ddpm import DDPMConfig

    with pytest.raises(ValueError, match="label_dropout 0 leaves the unconditional"):
        DDPMConfig(label_dropout=0.0, guidance=1.2)
    with pytest.raises(ValueError, match="label_dropout"):
        DDPMConfig(label_dropout=1.0)


@pytest.mark.parametrize("family", ["vae", "realnvp"])
def test_latent_calls_of_a_family_trained_on_labels_only_need_the_labels(family, tiny):
    """The VAE and RealNVP never drop labels in training: their no-label embedding stays at its
    random start, and encode / decode without labels would run on it. They ask for the labels."""
    spec = DataSpec(1, 8, 8, 17, 10)
    model = models.build(family, spec, tiny[family]).eval()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 4])
    z = model.encode(x, y)
    for call in (lambda: model.encode(x), lambda: model.decode(z)):
        with pytest.raises(ValueError, match=f"{family}.(en|de)code needs the images' labels"):
            call()
    assert model.decode(z, y).shape == x.shape
