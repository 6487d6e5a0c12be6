"""The contract every family signs, checked on tiny configs over the whole registry."""

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec, capabilities
from genzoo.models.base import Decoder, Encoder, ExactLikelihood, LikelihoodBound, families_with
from genzoo.tasks.latent import code_shape

FAMILIES = list(models.REGISTRY)
# the families with a likelihood, a bound or an encoder: what scores an image or encodes it
SCORED = sorted(set(families_with(ExactLikelihood | LikelihoodBound)) | set(families_with(Encoder)))
SPECS = [DataSpec(1, 8, 8, 17, 10), DataSpec(3, 7, 9, 256, 3)]


def make(family, spec, tiny):
    """``family`` at its tiny size (tests/conftest.py ``TINY``); a family added without one is
    built with its defaults, so the contract covers it before it has a tiny size."""
    torch.manual_seed(0)
    return models.build(family, spec, tiny.get(family, {}))


def batch(spec, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, spec.levels, (n, *spec.shape), generator=g).float() / (spec.levels - 1)
    y = torch.randint(0, spec.num_classes, (n,), generator=g)
    return x, y


def test_registry_holds_the_five_shipped_families():
    assert {"pixelcnn", "realnvp", "vae", "gan", "ddpm"} <= set(FAMILIES)  # and any a user adds


@pytest.mark.parametrize("spec", SPECS, ids=["digits8x8", "rgb7x9"])
@pytest.mark.parametrize("family", FAMILIES)
def test_loss_finite_and_every_parameter_gets_a_gradient(family, spec, tiny):
    model = make(family, spec, tiny).train()
    x, y = batch(spec)
    for phase in model.phases:
        model.zero_grad(set_to_none=True)
        out = model.training_step(x, y, phase)
        assert out.loss.ndim == 0 and torch.isfinite(out.loss)
        assert all(isinstance(v, float) for v in out.logs.values())
        out.loss.backward()
        params = dict(model.named_parameters())
        phase_ids = {id(p) for p in model.phase_parameters(phase)}
        missing = [
            n
            for n, p in params.items()
            if id(p) in phase_ids and (p.grad is None or not torch.isfinite(p.grad).all())
        ]
        assert not missing, f"{family}/{phase}: no finite gradient for {missing[:5]}"
    covered = set().union(*({id(p) for p in model.phase_parameters(ph)} for ph in model.phases))
    assert covered == {id(p) for p in model.parameters()}, "every parameter belongs to a phase"


@pytest.mark.parametrize("spec", SPECS, ids=["digits8x8", "rgb7x9"])
@pytest.mark.parametrize("family", FAMILIES)
def test_sample_shape_range_and_determinism(family, spec, tiny):
    model = make(family, spec, tiny).eval()
    y = torch.arange(4) % spec.num_classes
    a = model.sample(4, y, generator=torch.Generator().manual_seed(1))
    b = model.sample(4, y, generator=torch.Generator().manual_seed(1))
    c = model.sample(4, generator=torch.Generator().manual_seed(1))
    assert a.shape == (4, *spec.shape) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b)
    assert c.shape == a.shape
    # one image (the evaluation's sampling-time probe draws one)
    assert model.sample(1, y[:1], generator=torch.Generator().manual_seed(1)).shape == (1, *spec.shape)


@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_roundtrip_gives_identical_outputs(family, tiny, tmp_path):
    spec = SPECS[0]
    model = make(family, spec, tiny)
    x, y = batch(spec)
    model.train()
    model.training_step(x, y, model.phases[0])  # data-dependent inits (actnorm) happen here
    model.eval()
    path = models.save(model, tmp_path / "m")
    loaded = models.load(path)
    assert type(loaded) is type(model) and loaded.cfg == model.cfg
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert torch.equal(model.sample(5, generator=g()), loaded.sample(5, generator=g()))
    if isinstance(model, ExactLikelihood):
        assert torch.equal(model.log_prob(x, y), loaded.log_prob(x, y))
    if isinstance(model, Encoder):
        torch.manual_seed(0)
        a = model.encode(x, y)
        torch.manual_seed(0)
        assert torch.equal(a, loaded.encode(x, y))


@pytest.mark.parametrize("spec", SPECS, ids=["digits8x8", "rgb7x9"])
@pytest.mark.parametrize("family", FAMILIES)
def test_capability_shapes(family, spec, tiny):
    model = make(family, spec, tiny).eval()
    x, y = batch(spec, n=3)
    caps = capabilities(model)
    shipped = {
        "pixelcnn": ["log_prob"],
        "realnvp": ["log_prob", "encode", "decode"],
        "vae": ["elbo", "encode", "decode"],
        "gan": ["decode"],
        "ddpm": ["elbo", "encode", "decode"],
    }
    assert caps == shipped.get(family, caps)  # an added family: whatever it offers, checked below
    with torch.no_grad():
        if isinstance(model, ExactLikelihood):
            for yy in (y, None):
                lp = model.log_prob(x, yy)
                assert lp.shape == (3,) and torch.isfinite(lp).all() and (lp < 0).all()
        if isinstance(model, LikelihoodBound):
            for yy in (y, None):
                b = model.elbo(x, yy)
                assert b.shape == (3,) and torch.isfinite(b).all() and (b < 0).all()
        if isinstance(model, Decoder):
            z = model.encode(x, y) if isinstance(model, Encoder) else torch.randn(3, *code_shape(model))
            assert z.shape[0] == 3
            out = model.decode(z, y)
            assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hw", [(8, 8), (28, 28), (32, 32), (25, 25)])
def test_adapts_to_image_size(family, hw, tiny):
    spec = DataSpec(1 if hw != (32, 32) else 3, *hw, 256, 10)
    model = make(family, spec, tiny)
    x, y = batch(spec, n=2)
    out = model.train().training_step(x, y, model.phases[0])
    assert torch.isfinite(out.loss)
    if family != "pixelcnn":  # one pass per pixel: covered at 8x8 above
        assert model.eval().sample(2, y).shape == (2, *spec.shape)


@pytest.mark.parametrize("family", ["realnvp", "vae"])
def test_extreme_inputs_give_finite_outputs(family, tiny):
    spec = SPECS[0]
    model = make(family, spec, tiny).eval()
    y = torch.zeros(3, dtype=torch.long)
    x = torch.stack([torch.zeros(spec.shape), torch.ones(spec.shape), torch.full(spec.shape, 7.0)])
    with torch.no_grad():
        score = model.log_prob(x, y) if family == "realnvp" else model.elbo(x, y)
    assert torch.isfinite(score).all()


@pytest.mark.parametrize("family", SCORED)
def test_images_a_model_cannot_score_are_refused_naming_what_is_wrong(family, tiny):
    """NaN or inf pixels, the wrong shape or labels out of range: a ValueError that says so from
    every likelihood and encoder method (before: NaN scores, or an index error from deep inside)."""
    spec = SPECS[0]
    model = make(family, spec, tiny).eval()
    methods = [getattr(model, m) for m in ("log_prob", "elbo", "encode") if hasattr(model, m)]
    x, y = torch.rand(3, *spec.shape), torch.tensor([0, 1, 2])
    nan, inf = x.clone(), x.clone()
    nan[1, 0, 2, 3], inf[2, 0, 0, 0] = float("nan"), float("inf")
    grey = spec.shape[0] == 1
    wrong = torch.rand(3, 3 if grey else 1, *spec.shape[1:])
    with torch.no_grad():
        for fn in methods:
            first = r"^1 of 3 images hold NaN or inf pixels \(the first: image 1\)"
            with pytest.raises(ValueError, match=first):
                fn(nan, y)
            with pytest.raises(ValueError, match=r"image 2\)"):
                fn(inf)
            with pytest.raises(ValueError, match=rf"images must have shape \(B, {spec.shape[0]}, "):
                fn(wrong, y)
            with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\)"):
                fn(x, torch.tensor([0, 1, 10]))
            assert torch.isfinite(fn(x, y)).all()  # what is fine still scores


def test_bad_labels_are_refused(tiny):
    model = make("vae", SPECS[0], tiny).eval()
    with pytest.raises(ValueError, match="labels must lie"):
        model.sample(2, torch.tensor([0, 10]))
    with pytest.raises(KeyError, match="unknown family"):
        models.build("nope", SPECS[0])


def test_a_model_json_without_a_sha256_loads_only_when_allowed(tiny, tmp_path):
    """Tampered weights behind a model.json that records no hash are refused by default."""
    import json

    model = make("vae", SPECS[0], tiny)
    path = models.save(model, tmp_path / "m")
    meta = json.loads(path.read_text())
    assert len(meta["sha256"]) == 64  # every model genzoo writes records its hash
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"{path}: records no sha256 for m.safetensors.*allow_unhashed"):
        models.load(path)
    assert isinstance(models.load(path, allow_unhashed=True), type(model))
    # the weights file it names must sit beside it
    meta["weights"] = "../m.safetensors"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="is not a file beside it"):
        models.load(path, allow_unhashed=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_network_that_overflows_while_sampling_is_an_error_not_nan_pixels(family, tiny):
    """NaN out of the network is refused by name; DDPM's level grid once turned it into black
    pixels (NaN as a long is -2**63) that went on as if they were images."""
    model = make(family, SPECS[0], tiny).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="3 of 3 sampled images hold NaN or inf pixels"):
        model.sample(3, torch.tensor([0, 1, 2]))


def test_a_family_is_registered_under_a_name_of_its_own_that_its_file_bears():
    """A family named as one of genzoo's own folders or keys (``usefulness``: runs/evaluation/
    usefulness/ holds the reference rows) or unlike its file (dvc.yaml's train@<family> stage
    depends on models/<family>.py) is refused as it registers, naming why."""
    from genzoo.models.base import RESERVED_NAMES, register

    def family(name, module="tests.models.test_contract"):
        return type("Family", (), {"family": name, "__module__": module})

    for name, why in (("usefulness", "a name genzoo uses for its own"), ("Vae2", "lowercase identifier"),
                      ("my-vae", "lowercase identifier"), ("vae", "registered twice"),
                      ("classical", "one of genzoo's shared modules")):  # fmt: skip
        with pytest.raises(ValueError, match=why):
            register(family(name))
    with pytest.raises(ValueError, match=r"defined in models/vae2\.py: a family's file is models/vae3\.py"):
        register(family("vae3", "genzoo.models.vae2"))
    assert "vae3" not in models.REGISTRY and not set(models.REGISTRY) & RESERVED_NAMES


def test_the_latent_tools_take_a_familys_own_code_shape(tiny):
    """A code's shape is the model's ``code_shape`` where it says one (DDPM's x_T), its
    ``latent_dim`` otherwise: a family added with spatial codes is not refused its own codes."""
    assert code_shape(make("ddpm", SPECS[0], tiny)) == (1, 8, 8)
    vae = make("vae", SPECS[0], tiny)
    assert code_shape(vae) == (tiny["vae"]["latent_dim"],)

    class Spatial(type(vae)):  # (not registered: a subclass)
        code_shape = (2, 2, 2)

    assert code_shape(Spatial(vae.spec, vae.cfg)) == (2, 2, 2)

    class Said(type(vae)):  # as a method
        def code_shape(self):
            return (4, 1)

    assert code_shape(Said(vae.spec, vae.cfg)) == (4, 1)
