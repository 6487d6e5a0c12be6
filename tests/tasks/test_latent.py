"""Latent space: slerp and lerp, paths that start where the image is (exact for the flow),
class arithmetic, the smoothness figure on known answers, and clear errors without a latent."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from genzoo.models.evaluator import train_evaluator
from genzoo.tasks import latent as L
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import data_spec, load_split, prepare
from genzoo.tasks.sample import load_model
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params


def test_slerp_keeps_the_norm_lerp_shortens_it_and_both_hit_the_ends():
    a, b = torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    for mix in (L.lerp, L.slerp):
        assert torch.allclose(mix(a, b, 0.0), a) and torch.allclose(mix(a, b, 1.0), b)
    assert torch.allclose(L.slerp(a, b, 0.5).norm(), torch.tensor(3.0))
    assert torch.allclose(L.lerp(a, b, 0.5).norm(), torch.tensor(3.0 / 2**0.5))
    assert torch.allclose(L.slerp(a, 2 * a, 0.5), L.lerp(a, 2 * a, 0.5))  # parallel: linear
    img = torch.randn(2, 1, 8, 8)
    assert L.slerp(img[:1], img[1:], 0.3).shape == (1, 1, 8, 8)


class _Identity(torch.nn.Module):
    """Features = the flattened image: the smoothness figure's known answers."""

    def embed(self, x):
        return x.flatten(1), None


def test_smoothness_on_known_answers():
    straight = torch.linspace(0, 1, 5)[:, None, None, None].expand(5, 1, 2, 2).contiguous()
    s = L.smoothness(_Identity(), [straight])
    assert s["path_ratio"] == pytest.approx(1.0) and s["max_step_ratio"] == pytest.approx(1.0)
    assert s["mean_step"] == pytest.approx(0.5)  # 4 equal steps of 0.25 in 4 pixels: norm 0.5
    jump = torch.cat([torch.zeros(3, 1, 2, 2), torch.ones(1, 1, 2, 2)])
    assert L.smoothness(_Identity(), [jump])["max_step_ratio"] == pytest.approx(3.0)
    detour = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2), torch.zeros(1, 2, 2) + 0.5])
    assert L.smoothness(_Identity(), [detour])["path_ratio"] == pytest.approx(3.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("latent")
    fams = ["realnvp", "vae", "gan", "pixelcnn", "ddpm"]
    params = validate(tiny_params(tmp, steps=20, families=fams))
    prepare(params)
    for f in fams:
        train_family(params, f, progress=False)
    x, y, manifest = load_split(params.data.prepared_dir, "test")
    net = train_evaluator(x, y, data_spec(manifest), params.evaluate.evaluator)
    return params, x, y, net, tmp


def test_flow_paths_start_at_the_image_itself(trained):
    params, x, y, _, _ = trained
    model = load_model("realnvp", params.run.runs_dir)
    same = torch.nonzero(y == y[0]).flatten()
    a, b = int(same[0]), int(same[1])
    for mode in L.MODES:
        p = L.interpolate(model, (x[a], int(y[a])), (x[b], int(y[b])), steps=5, mode=mode)
        assert p.shape == (5, 1, 8, 8)
        assert torch.equal(p[0], x[a]) and torch.equal(p[-1], x[b])  # the flow inverts exactly


def test_vae_arithmetic_starts_at_the_reconstruction_and_covers_every_label(trained):
    params, x, y, _, _ = trained
    model = load_model("vae", params.run.runs_dir)
    means = L.class_means(model, x, y)
    r = L.arithmetic(model, x[0], int(y[0]), (int(y[0]) + 1) % 10, means, steps=4)
    with torch.inference_mode():
        recon = model.decode(model.encode(x[:1], y[:1]), y[:1])
    assert torch.allclose(r["toward"][0], recon[0], atol=1e-6)
    assert r["toward"].shape == (4, 1, 8, 8) and r["every_label"].shape == (10, 1, 8, 8)
    with pytest.raises(ValueError, match="not among the classes"):
        L.arithmetic(model, x[0], int(y[0]), 42, means)


def test_models_without_a_latent_or_an_encoder_fail_clearly(trained):
    params, x, y, net, _ = trained
    pixelcnn = load_model("pixelcnn", params.run.runs_dir)
    gan = load_model("gan", params.run.runs_dir)
    assert L.latent_kind(pixelcnn) is None and L.latent_kind(gan) == "decoder"
    with pytest.raises(ValueError, match=r"pixelcnn: a latent space \(ddpm, gan, realnvp, vae\) is needed"):
        L.interpolate(pixelcnn, (x[0], 0), (x[1], 0))
    with pytest.raises(ValueError, match="encoder"):
        L.class_means(gan, x, y)
    assert L.figures(pixelcnn, net, x, y, None) == (None, {})
    with pytest.raises(ValueError, match="steps"):
        L.interpolate(gan, None, None, steps=1)


def test_evaluation_figures_for_every_kind(trained):
    params, x, y, net, _ = trained
    feats = net.embed(x)[0].numpy()
    for family, kind in [("realnvp", "encoder"), ("ddpm", "encoder"), ("gan", "decoder")]:
        model = load_model(family, params.run.runs_dir)
        summary, strips = L.figures(model, net, x, y, feats, pairs=3, steps=5)
        assert summary["kind"] == kind
        for mode in L.MODES:
            s = summary["smoothness"][mode]
            assert s["path_ratio"] >= 1 - 1e-6 and s["max_step_ratio"] >= 1 - 1e-6 and s["mean_step"] > 0
            assert s["mean_step_over_real_nn"] == pytest.approx(s["mean_step"] / s["real_nn_distance"])
            assert strips[mode].shape == ((3, 7) if kind == "encoder" else (3, 5)) + (1, 8, 8)
        if kind == "encoder":
            assert strips["arithmetic"].shape == (10, 6, 1, 8, 8)
            assert strips["every_label"].shape == (10, 11, 1, 8, 8)
        assert all(np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1 for v in strips.values())


def test_command_line_writes_strips_and_rejects_bad_indices(trained, capsys):
    from genzoo.flows.cli import main

    params, x, y, _, tmp = trained
    pfile = tmp / "params.yaml"
    pfile.write_text(json.dumps(params.model_dump(mode="json")))
    out = tmp / "strip"
    assert main(["interpolate", "--params", str(pfile), "--family", "vae", "--a", "0", "--b", "5",
                 "--steps", "6", "--out", str(out)]) == 0  # fmt: skip
    r = json.loads(capsys.readouterr().out)
    assert r["a"] == 0 and r["b"] == 5 and r["modes"] == ["linear", "spherical"]
    with np.load(r["npz"]) as z:
        assert z["strips"].shape == (2, 8, 1, 8, 8)  # 2 modes x (real, 6 steps, real)
        assert z["rows"].tolist() == ["linear", "spherical"] and z["lengths"].tolist() == [8, 8]
    assert (tmp / "strip.png").stat().st_size > 0
    # an earlier strip is replaced; a user's files of that name (or a link) are not, before any work
    args = ["interpolate", "--params", str(pfile), "--family", "vae", "--a", "0", "--b", "5", "--steps", "6"]
    assert main([*args, "--out", str(out)]) == 0
    capsys.readouterr()
    mine = tmp / "mine"
    for name, data in (("mine.npz", b"a user's archive"), ("mine.png", b"a user's picture")):
        (tmp / name).write_bytes(data)
        for cmd in (
            args,
            ["arithmetic", "--params", str(pfile), "--family", "vae", "--index", "1", "--to", "2"],
        ):
            assert main([*cmd, "--out", str(mine)]) == 2
            err = capsys.readouterr().err
            assert f"--out {tmp / name}: exists and is not a strip of genzoo" in err
            if name == "mine.png":  # no strip's npz beside it: none named as if it were there
                assert "(no mine.npz beside it says it is one)" in err
        assert (tmp / name).read_bytes() == data
        (tmp / name).unlink()
    (tmp / "mine.npz").symlink_to(r["npz"])  # a link, even to a strip
    assert main([*args, "--out", str(mine)]) == 2 and "exists and is not a strip" in capsys.readouterr().err
    (tmp / "mine.npz").unlink()
    # an earlier strip's .npz beside a user's own .png: the png is not the one the strip records
    (tmp / "mine.npz").write_bytes(Path(r["npz"]).read_bytes())
    (tmp / "mine.png").write_bytes(b"a user's picture")
    assert main([*args, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert (
        "mine.png: exists and is not a strip of genzoo interpolate or arithmetic (the .png its mine.npz"
        in err
    )
    assert (tmp / "mine.png").read_bytes() == b"a user's picture"
    (tmp / "mine.png").write_bytes(Path(r["png"]).read_bytes())  # the strip's own png: replaced
    assert main([*args, "--out", str(mine)]) == 0
    capsys.readouterr()
    np.savez(tmp / "mine.npz", strips=np.zeros((1, 2, 1, 8, 8)))  # a user's npz named like a strip's
    (tmp / "mine.png").write_bytes(b"a user's picture")
    assert main([*args, "--out", str(mine)]) == 2
    assert "mine.npz: exists and is not a strip" in capsys.readouterr().err
    assert main(["interpolate", "--params", str(pfile), "--family", "gan", "--class", "3",
                 "--out", str(tmp / "g")]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["labels"] == [3, 3]
    assert main(["arithmetic", "--params", str(pfile), "--family", "realnvp", "--index", "2", "--to", "7",
                 "--out", str(tmp / "arith")]) == 0  # fmt: skip
    with np.load(json.loads(capsys.readouterr().out)["npz"]) as z:
        assert z["strips"].shape == (2, 11, 1, 8, 8)  # toward (1 + 7, padded) and every label (1 + 10)
        assert z["rows"].tolist() == ["toward", "every_label"] and z["lengths"].tolist() == [8, 11]
    assert main(["interpolate", "--params", str(pfile), "--family", "vae", "--a", "0", "--b", "99999"]) != 0
    assert "99999" in capsys.readouterr().err
    assert main(["arithmetic", "--params", str(pfile), "--family", "gan", "--index", "0", "--to", "1"]) != 0
    assert "gan has a decoder only (codes -> images), no encoder" in capsys.readouterr().err
    assert main(["interpolate", "--params", str(pfile), "--family", "vae", "--class", "11"]) != 0
    assert "--class 11: out of range [0, 10)" in capsys.readouterr().err
    assert main(["interpolate", "--params", str(pfile), "--family", "vae", "--steps", "1"]) == 2
    assert (
        "--steps 1: at least 2 (the decoded path's two ends: the two images' codes (the GAN's: two prior"
        in (capsys.readouterr().err)
    )
    assert main(["arithmetic", "--params", str(pfile), "--family", "vae", "--index", "0", "--to", "1",
                 "--steps", "1"]) == 2  # fmt: skip
    assert "--steps 1: at least 2 (the two ends of the path toward the class)" in capsys.readouterr().err
    for cmd in (
        ["interpolate", "--family", "vae"],
        ["arithmetic", "--family", "vae", "--index", "0", "--to", "1"],
    ):
        # 100,000 wrote a PNG Pillow refuses to open (a decompression bomb to it)
        assert main([*cmd, "--params", str(pfile), "--steps", "100000", "--out", str(tmp / "long")]) == 2
        assert (
            "--steps 100000: at most 1000 (rows of about 100,000 images make a PNG" in capsys.readouterr().err
        )
        assert not (tmp / "long.png").exists()
    # a class by name, as `sample --class` takes it (digits' names are their digits)
    for cmd in (["interpolate", "--family", "vae", "--class", "square"],
                ["arithmetic", "--family", "vae", "--index", "0", "--to", "square"]):  # fmt: skip
        assert main([*cmd, "--params", str(pfile)]) == 2
        flag = "--class" if "--class" in cmd else "--to"
        assert f"{flag} 'square': not a class name or index; classes: ['0', '1'," in capsys.readouterr().err
    # arguments that would be ignored are refused: the GAN encodes no image, --a/--b set the class
    assert main(["interpolate", "--params", str(pfile), "--family", "gan", "--a", "3", "--b", "5"]) != 0
    assert "--a/--b: gan has no encoder (ddpm, realnvp, vae have one)" in capsys.readouterr().err
    assert main(["interpolate", "--params", str(pfile), "--family", "vae", "--a", "3", "--b", "5",
                 "--class", "4"]) != 0  # fmt: skip
    assert "--class picks the pair drawn without --a and --b" in capsys.readouterr().err
    assert (
        main(["sample", "--params", str(pfile), "--family", "dppm", "--n", "2", "--out", str(tmp / "s")]) != 0
    )
    assert (
        "--family: no family dppm (ddpm, gan, pixelcnn, realnvp, vae; did you mean ddpm?)"
        in capsys.readouterr().err
    )
    # other data of the same shape prepared where the models' was: their strips would run between
    # images they never saw (they were written without a word)
    rng = np.random.default_rng(0)
    np.savez(tmp / "other.npz", images=rng.integers(0, 17, (200, 8, 8), dtype=np.uint8),
             labels=np.arange(200) % 10, levels=17)  # fmt: skip
    other = params.model_copy(deep=True)
    other.data.source, other.data.prepared_dir = f"npz:{tmp / 'other.npz'}", str(tmp / "other")
    prepare(other)
    pfile.write_text(json.dumps(other.model_dump(mode="json")))
    for cmd in (["interpolate", "--family", "vae", "--a", "3", "--b", "17"],
                ["arithmetic", "--family", "realnvp", "--index", "5", "--to", "8"]):  # fmt: skip
        assert main([*cmd, "--params", str(pfile), "--out", str(tmp / "no")]) == 2
        assert "trained on other data" in capsys.readouterr().err
    assert not list(tmp.glob("no*"))
    # the GAN's strip runs between codes of its prior: no prepared image is used, nothing to refuse
    assert main(["interpolate", "--params", str(pfile), "--family", "gan", "--out", str(tmp / "g2")]) == 0


def _count(model, method: str) -> list[int]:
    """Images per call of ``model.<method>`` from now on (the instance's method wrapped)."""
    calls, inner = [], getattr(model, method)

    def counted(z, y=None):
        calls.append(len(z))
        return inner(z, y)

    setattr(model, method, counted)
    return calls


def test_figures_encode_each_image_once_decode_each_mode_in_one_batch_and_match_one_path_at_a_time(trained):
    params, x, y, net, _ = trained
    for family in ("vae", "gan"):
        model = load_model(family, params.run.runs_dir)
        encoded = _count(model, "encode") if family == "vae" else []
        decoded = _count(model, "decode")
        _, strips = L.figures(model, net, x, y, None, pairs=3, steps=5, seed=1)
        model = load_model(family, params.run.runs_dir)  # uncounted, for the one-at-a-time paths
        pairs = L.same_class_pairs(y, 3, 1)
        firsts = [int(np.flatnonzero(y.numpy() == c)[0]) for c in range(10)]
        if family == "vae":
            need = set(L.mean_images(y)) | {i for p in pairs for i in p} | set(firsts)
            assert sum(encoded) == len(need) and len(encoded) == -(-len(need) // 256)  # each image once
            assert decoded == [3 * 5, 3 * 5, 10 * 5, 10 * 10]  # two modes, toward, every label
            means = L.class_means(model, x, y)
            for c in (0, 7):
                r = L.arithmetic(model, x[firsts[c]], c, (c + 1) % 10, means, steps=5)
                for name, key in (("arithmetic", "toward"), ("every_label", "every_label")):
                    assert torch.allclose(torch.from_numpy(strips[name][c, 1:]), r[key], atol=1e-5), name
        else:
            assert decoded == [3 * 5, 3 * 5]
        for mode in L.MODES:
            for i, (a, b) in enumerate(pairs):  # the batched strips are the one-path-at-a-time ones
                if family == "vae":
                    one = L.interpolate(model, (x[a], int(y[a])), (x[b], int(y[b])), 5, mode)
                    assert torch.equal(torch.from_numpy(strips[mode][i, 0]), x[a])
                    got = strips[mode][i, 1:-1]
                else:
                    one = L.interpolate(model, None, None, 5, mode, seed=1 + i, labels=(int(y[a]),) * 2)
                    got = strips[mode][i]
                assert torch.allclose(torch.from_numpy(got), one, atol=1e-5), (family, mode, i)


def test_class_means_take_at_most_the_first_hundred_images_of_each_class(trained):
    params, x, y, _, _ = trained
    many = torch.tensor([0] * 150 + [1] * 7 + [0] * 3)
    idx = L.mean_images(many)
    assert list(idx) == list(range(100)) + list(range(150, 157))  # the first 100 zeros, every one
    assert list(L.mean_images(y)) == list(range(len(y)))  # digits' test split: every image
    model = load_model("vae", params.run.runs_dir)
    xs = x[:1].repeat(160, 1, 1, 1)
    xs[100:150] = 1.0  # images past a class's first hundred change nothing
    means = L.class_means(model, xs, many)
    with torch.inference_mode():
        first = model.encode(xs[:100], many[:100]).mean(0)
    assert torch.allclose(means[0][0], first, atol=1e-5)


def test_steps_are_bounded_by_the_pngs_pixels_for_large_images():
    """1,000 steps of 512x512 images made a PNG of 528 million pixels, which Pillow refuses to open."""
    from PIL import Image

    from genzoo.tasks.figures import grid, grid_pixels
    from genzoo.tasks.latent import _check_png

    for shape, n, nrow in (((1, 8, 8), 7, 3), ((3, 28, 28), 5, 5), ((3, 300, 300), 2, 1)):
        made = grid(torch.rand(n, *shape), nrow=nrow)
        assert made.width * made.height == grid_pixels(-(-n // nrow), nrow, *shape[1:])
    _check_png(1000, 2, 3, (1, 8, 8))  # digits: the count's own bound is the only one
    _check_png(1000, 1, 2, (1, 28, 28))
    with pytest.raises(ValueError, match=r"--steps 1000: at most (\d+) for images of 512x512") as e:
        _check_png(1000, 2, 2, (3, 512, 512))  # both modes' rows
    most = int(re.search(r"at most (\d+)", str(e.value)).group(1))
    limit = 2 * Image.MAX_IMAGE_PIXELS  # Pillow refuses a larger file as a decompression bomb
    assert grid_pixels(2, most + 2, 512, 512) <= limit < grid_pixels(2, most + 3, 512, 512)
    _check_png(most, 2, 2, (3, 512, 512))
    _check_png(1000, 2, 1, (3, 300, 300))  # one mode's row: within the limit
    # arithmetic's row under every label: 400 classes of 512x512 passed as a row of steps + 1
    with pytest.raises(ValueError, match="images of 512x512 in 400 classes: the row under every label"):
        _check_png(7, 1, 2, (3, 512, 512), wide=401)
    _check_png(7, 1, 2, (1, 8, 8), wide=401)
    with pytest.raises(ValueError, match="images of 20000x20000: even a strip of 2 steps"):
        _check_png(3, 1, 2, (3, 20000, 20000))  # (it raised a bare StopIteration)


def test_pairs_skip_classes_of_one_image_and_the_seed_picks_the_class():
    """A class with one test image (7 images a class at test_fraction 0.2) failed the whole
    evaluation; the default pair of `genzoo interpolate` was class 0's whatever --seed."""
    y = torch.tensor([0, 1, 1, 2, 2, 2, 3])
    for seed in range(20):
        for a, b in L.same_class_pairs(y, 4, seed):
            assert a != b and int(y[a]) == int(y[b]) in (1, 2)
    assert {int(y[L.same_class_pairs(y, 1, s)[0][0]]) for s in range(20)} == {1, 2}
    with pytest.raises(L.NoPairs, match="no class has two images in the split"):
        L.same_class_pairs(torch.tensor([0, 1, 2]), 1, 0)


def test_the_default_strip_is_of_a_class_the_seed_picks(trained, tmp_path):
    """Without --class, the strip was class 0's whatever --seed (the GAN's and the encoders')."""
    params = trained[0]
    for family in ("gan", "vae"):
        labels = {
            L.interpolate_to_file(params, family, tmp_path / f"{family}-{s}", steps=2, seed=s)["labels"][0]
            for s in range(6)
        }
        assert len(labels) > 1, (family, labels)


def test_the_seeded_class_is_never_one_left_out_of_training():
    from genzoo import models
    from genzoo.models import DataSpec

    gan = models.build("gan", DataSpec(1, 8, 8, 17, 10), {"latent_dim": 8})
    gan.log_class_prior.copy_(torch.tensor([0.0 if c in (3, 7) else float("-inf") for c in range(10)]))
    assert {L.seeded_class(gan, s) for s in range(30)} == {3, 7}


def test_the_gans_strips_run_between_codes_its_samples_have():
    """With `truncation: 0.5` the strips and smoothness came from codes beyond 0.5, which the
    sampler never draws."""
    from genzoo import models
    from genzoo.models import DataSpec

    gan = models.build("gan", DataSpec(1, 8, 8, 17, 3), {"truncation": 0.5, "latent_dim": 64})
    za, zb = L.prior_pair(gan, 0)
    assert za.abs().max() <= 0.5 and zb.abs().max() <= 0.5 and za.shape == (1, 64)
    assert torch.equal(L.prior_pair(gan, 0)[0], za) and not torch.equal(za, zb)
