"""Anomaly detection by likelihood: the ranking figures on known answers, and the real
scoring, thresholding, input reading and benchmark on a (tiny) trained family."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genzoo import models
from genzoo.metrics.anomaly import detection, typicality
from genzoo.tasks.config import ParamsError, validate
from genzoo.tasks.data import read_manifest
from genzoo.tasks.detect import (
    benchmark,
    benchmark_path,
    conformal_threshold,
    detect,
    holdout_model,
    photo_patches,
    read_images,
    run_benchmark,
    score,
)
from genzoo.tasks.prepare import load_split, prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params

rng = np.random.default_rng(0)


def test_detection_figures_on_known_answers():
    perfect = detection([0.1, 0.2, 0.3], [1.0, 2.0])
    assert perfect == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}
    assert detection([1.0, 2.0], [0.1, 0.2, 0.3])["auroc"] == 0.0  # reversed: anomalies look normal
    same = detection(rng.normal(size=4000), rng.normal(size=4000))
    assert abs(same["auroc"] - 0.5) < 0.03 and abs(same["fpr_at_95_tpr"] - 0.95) < 0.03
    with pytest.raises(ValueError, match="NaN"):
        detection([0.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        detection([], [1.0])
    assert typicality([1.0, 3.0], [2.0, 2.0]).tolist() == [1.0, 1.0]
    # the threshold catches at least 95% of the anomalies, the highest that does (an interpolated
    # quantile of 36 fell between two scores: 34 caught, FPR measured at 94.4% recall)
    assert detection([0.5, 1.5], np.arange(36.0))["fpr_at_95_tpr"] == 0.5  # may miss 1: threshold 1
    assert detection([0.5], np.arange(20.0))["fpr_at_95_tpr"] == 0.0  # may miss 1 of 20
    assert detection([0.5], np.arange(19.0))["fpr_at_95_tpr"] == 1.0  # none of 19: threshold 0


def test_corruptions_of_images_that_are_not_square_keep_their_shape():
    """A quarter turn of 8x12 images made 12x8 ones: the benchmark of a family trained on
    images that are not square failed after scoring the sets before it."""
    from genzoo.tasks.detect import corruptions

    square = corruptions(torch.rand(3, 1, 8, 8), 17)
    wide = corruptions(torch.rand(3, 1, 8, 12), 17)
    assert set(square) - set(wide) == {"rotated_90"}
    assert {tuple(x.shape) for x in wide.values()} == {(3, 1, 8, 12)}


def test_photo_patches_are_cut_at_the_datas_size_not_enlarged(monkeypatch):
    """Patches were 64x64 whatever the data: for 96x96 images every patch was enlarged, smoother
    than the data and flagged for that alone."""
    from genzoo.models.base import DataSpec
    from genzoo.tasks import detect as detect_task

    cut = []
    real = detect_task.to_spec
    monkeypatch.setattr(detect_task, "to_spec", lambda x, *a, **k: cut.append(x.shape) or real(x, *a, **k))
    for side, made in ((8, 64), (96, 96), (1000, 426)):  # the photos are 427 x 640
        x = photo_patches(DataSpec(3, side, side, 256, 2), 2)
        assert cut[-1] == (2, made, made, 3) and x.shape == (2, 3, side, side)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect")
    raw = tiny_params(tmp, steps=60, families=["pixelcnn", "gan"], detect=True)
    raw["models"]["pixelcnn"]["train"]["lr"] = 3e-3
    params = validate(raw)
    prepare(params)
    for fam in ("pixelcnn", "gan"):
        train_family(params, fam, progress=False)
    return tmp, params


def test_benchmark_writes_figures_for_every_set_and_catches_noise(trained):
    tmp, params = trained
    r = run_benchmark(params, "pixelcnn")
    assert json.loads(benchmark_path(params, "pixelcnn").read_text()) == json.loads(json.dumps(r))
    assert r["estimator"] == "exact" and r["normal"]["n"] == len(
        load_split(params.data.prepared_dir, "test")[0]
    )
    expected = {
        "gaussian_noise",
        "inverted",
        "rotated_90",
        "rotated_180",
        "blurred",
        "blank",
        "photo_patches",
    }
    assert set(r["sets"]) == expected
    for st in r["sets"].values():
        for kind in ("likelihood", "typicality", "likelihood_ratio"):
            assert 0 <= st[kind]["auroc"] <= 1 and 0 <= st[kind]["fpr_at_95_tpr"] <= 1
    assert r["background"]["test_mean_bits_per_dim"] > 0
    assert r["sets"]["gaussian_noise"]["likelihood"]["auroc"] > 0.9
    assert r["sets"]["gaussian_noise"]["mean_bits_per_dim"] > r["normal"]["mean_bits_per_dim"]


def test_detect_reads_npz_and_folders_in_any_size_and_flags_noise(trained, tmp_path):
    from PIL import Image

    tmp, params = trained
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    noise = np.random.default_rng(1).random((10, 8, 8)).astype(np.float32)
    npz = tmp_path / "mixed.npz"
    np.savez(npz, images=np.concatenate([xt[:30, 0].numpy(), noise]))  # (N, H, W) floats in [0, 1]
    r = detect(params, "pixelcnn", npz, quantile=0.95)
    flags = [row["anomaly"] for row in r["images"]]
    assert r["n"] == 40 and r["estimator"] == "exact" and r["quantile"] == 0.95
    assert sum(flags[30:]) >= 9 and sum(flags[:30]) <= 6  # noise flagged, digits mostly not
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):  # 32x32 RGB files: converted to the model's 8x8 gray levels
        arr = (np.random.default_rng(i).random((32, 32, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / "sub" / f"{i}.png")
    spec = models.load(tmp / "runs" / "pixelcnn" / "model.json").spec
    x, names = read_images(folder, spec)
    assert x.shape == (3, 1, 8, 8) and names == ["sub/0.png", "sub/1.png", "sub/2.png"]
    assert torch.allclose(x * 16, (x * 16).round())
    assert detect(params, "pixelcnn", folder)["n"] == 3
    one, one_names = read_images(folder / "sub" / "1.png", spec)  # a single file: as in its folder
    assert one_names == ["1.png"] and torch.equal(one, x[1:2])
    assert detect(params, "pixelcnn", folder / "sub" / "1.png")["images"][0]["name"] == "1.png"


def test_detect_out_replaces_its_own_scores_and_no_users_file(trained, tmp_path, capsys, restore_logging):
    """`genzoo detect --out params.yaml` wrote its JSON over the project's params (and over a
    user's dataset .npz) without a word: only an earlier detect's scores are replaced."""
    import yaml

    from genzoo.flows.cli import main

    tmp, params = trained
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    npz = tmp_path / "some.npz"
    np.savez(npz, images=xt[:5, 0].numpy())
    cmd = ["detect", "--params", str(pfile), "--family", "pixelcnn", str(npz), "-q"]
    out = tmp_path / "scores.json"
    assert main([*cmd, "--out", str(out)]) == 0 and main([*cmd, "--out", str(out)]) == 0  # its own: replaced
    assert json.loads(out.read_text())["n"] == 5
    capsys.readouterr()
    for theirs in (pfile, npz):
        before = theirs.read_bytes()
        assert main([*cmd, "--out", str(theirs)]) == 2
        assert f"--out {theirs}: exists and is not scores of genzoo detect" in capsys.readouterr().err
        assert theirs.read_bytes() == before


def test_images_at_another_size_are_sized_as_prepare_sizes_a_folder(tmp_path):
    """Real digits saved as 8x8 files, enlarged 4x (nearest neighbour) or as 32x24 (another
    aspect): `detect` reads each back to the model's 8x8 exactly as `prepare` sizes a folder's
    images (a box filter when shrinking: the 32x32 copies come back identical; bilinear blurred
    them, and blur is what the likelihood flags), the aspect kept and the rest padded; image
    files and npz arrays alike."""
    from PIL import Image

    from genzoo.models.base import DataSpec
    from genzoo.tasks.data import fit_image
    from genzoo.tasks.prepare import load_digits_source

    digits = load_digits_source().images[:6, 0]  # levels 0..16
    spec = DataSpec(channels=1, height=8, width=8, num_classes=10, levels=17)
    small, large, wide = (tmp_path / n for n in ("small", "large", "wide"))
    for folder in (small, large, wide):
        folder.mkdir()
    for i, d in enumerate(digits):
        img = Image.fromarray(np.rint(d.astype(float) * 255 / 16).astype(np.uint8), "L")
        img.save(small / f"{i}.png")
        img.resize((32, 32), Image.Resampling.NEAREST).save(large / f"{i}.png")
        img.resize((32, 24), Image.Resampling.NEAREST).save(wide / f"{i}.png")
    x_small, x_large = read_images(small, spec)[0], read_images(large, spec)[0]
    assert torch.equal(x_small, x_large) and np.array_equal((x_small * 16).round().squeeze(1).numpy(), digits)
    x_wide = read_images(wide, spec)[0]
    expected = np.stack([np.asarray(fit_image(Image.open(wide / f"{i}.png"), (8, 8))) for i in range(6)])
    assert torch.equal(x_wide.squeeze(1), torch.from_numpy(np.rint(expected / 255 * 16) / 16).float())
    assert (x_wide[:, :, :1] == 0).all() and (x_wide[:, :, -1:] == 0).all()  # 32x24 -> 8x6, padded
    # the same images as arrays (uint8, floats, RGB) are sized alike: a 4x npz of digits came back
    # blurred by a bilinear shrink, and 56 of 60 were flagged where their PNGs were not
    for folder, x in ((large, x_large), (wide, x_wide)):
        arrays = np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(6)])
        for images in (arrays, arrays.astype(np.float32) / 255, np.repeat(arrays[..., None], 3, axis=3)):
            np.savez(tmp_path / "as.npz", images=images)
            assert torch.equal(read_images(tmp_path / "as.npz", spec)[0], x), (folder.name, images.dtype)


def test_images_enlarged_to_the_model_are_said_to_be(tmp_path):
    """8x8 digits scored by a model of 24x24 images were all flagged, with no word that they had
    been enlarged 3x; images of the model's size or larger (shrunk as prepare shrinks), or less than
    2x smaller, say nothing; nor do the photo patches the benchmark makes."""
    import logging.handlers

    from PIL import Image

    from genzoo.models.base import DataSpec
    from genzoo.tasks.prepare import load_digits_source

    digits = np.rint(load_digits_source().images[:4, 0].astype(float) * 255 / 16).astype(np.uint8)
    (tmp_path / "files").mkdir()
    for i, d in enumerate(digits):
        Image.fromarray(d, "L").save(tmp_path / "files" / f"{i}.png")
    np.savez(tmp_path / "small.npz", images=digits)
    said = logging.handlers.BufferingHandler(100)
    logging.getLogger("genzoo.detect").addHandler(said)
    try:
        for path in (tmp_path / "files", tmp_path / "small.npz"):
            said.buffer.clear()
            read_images(path, DataSpec(1, 24, 24, 17, 10))
            lines = [r.getMessage() for r in said.buffer]
            assert len(lines) == 1 and "4 of 4 image(s) at most half the model's 24x24 (e.g. 8x8)" in lines[0]
            said.buffer.clear()
            read_images(path, DataSpec(1, 8, 8, 17, 10))
            read_images(path, DataSpec(1, 4, 4, 17, 10))
            read_images(path, DataSpec(1, 15, 15, 17, 10))  # (prepare enlarges a folder's images alike)
            assert said.buffer == [], path
        photo_patches(DataSpec(1, 160, 160, 17, 10), 2)  # 64x64 patches for a model of 160 px
        assert said.buffer == []
    finally:
        logging.getLogger("genzoo.detect").removeHandler(said)


def test_bad_requests_fail_clearly(trained, tmp_path):
    tmp, params = trained
    with pytest.raises(
        ValueError, match=r"gan has no likelihood to score with \(use ddpm, pixelcnn, realnvp, vae\)"
    ):
        detect(params, "gan", tmp_path)
    with pytest.raises(ValueError, match="not in params"):
        detect(params, "vae", tmp_path)
    with pytest.raises(ValueError, match=r"missing: not found"):
        detect(params, "pixelcnn", tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes.txt: not an .npz file, an image file"):
        detect(params, "pixelcnn", tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="quantile"):
        detect(params, "pixelcnn", tmp_path, quantile=1.5)
    bad = tmp_path / "bad.npz"
    np.savez(bad, pictures=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="no 'images' key"):
        detect(params, "pixelcnn", bad)
    # the threshold comes from detect.quantile unless one is given
    quantile_half = params.model_copy(update={"detect": params.detect.model_copy(update={"quantile": 0.5})})
    np.savez(tmp_path / "few.npz", images=np.zeros((2, 8, 8), np.float32))
    assert detect(quantile_half, "pixelcnn", tmp_path / "few.npz")["quantile"] == 0.5
    # a model trained on other data than is prepared: its threshold would come from other images
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(tmp / "runs" / "pixelcnn", runs / "pixelcnn")
    meta = json.loads((runs / "pixelcnn" / "model.json").read_text())
    (runs / "pixelcnn" / "model.json").write_text(json.dumps({**meta, "data_sha256": "f" * 64}))
    elsewhere = params.model_copy(update={"run": params.run.model_copy(update={"runs_dir": str(runs)})})
    with pytest.raises(ValueError, match=r"pixelcnn: trained on other data \(ffffffffffff\) than .* holds"):
        detect(elsewhere, "pixelcnn", tmp_path / "few.npz")


def test_scores_are_bits_per_dim_and_deterministic(trained):
    tmp, params = trained
    net = models.load(tmp / "runs" / "pixelcnn" / "model.json")
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    s = score(net, xt[:20])
    assert s.shape == (20,) and np.isfinite(s).all() and (s > 0).all()
    assert np.array_equal(s, score(net, xt[:20]))
    # the mean equals the marginal test bits/dim the training stage reports (same estimator)
    from genzoo.models.base import log_likelihoods

    ll = log_likelihoods(net, xt[:20]).mean().item()
    assert s.mean() == pytest.approx(-ll / (64 * np.log(2)), rel=1e-6)


def test_background_model_scores_each_image(trained):
    _, params = trained
    x, _, manifest = load_split(params.data.prepared_dir, "train")
    from genzoo.models.classical import Background
    from genzoo.tasks.prepare import data_spec

    spec = data_spec(manifest)
    bg = Background(spec)
    with pytest.raises(RuntimeError, match="fit"):
        bg.bits_per_dim(x[:2])
    bg.fit(x)
    s = bg.bits_per_dim(x[:50])
    assert s.shape == (50,) and np.isfinite(s).all()
    # a histogram of levels: the cost of an image is the sum of its pixels' level costs,
    # whatever their positions; blank images are the cheapest there are
    shuffled = x[:50].flatten(1)[:, torch.randperm(spec.dims)].view_as(x[:50])
    assert np.allclose(bg.bits_per_dim(shuffled), s)
    assert bg.bits_per_dim(torch.zeros(1, *spec.shape))[0] < s.min()
    noise = torch.randint(0, 17, (50, 1, 8, 8)).float() / 16
    assert bg.bits_per_dim(noise).mean() > s.mean()


def test_benchmark_scores_at_most_likelihood_pixels_of_each_set(trained):
    """detect.likelihood_pixels (the quick profile's cap for large images, where each of the nine
    sets cost PixelCNN 10 passes per image) draws that many pixels' worth of each set, never fewer
    than 100 images, the same draw every run; the rest of the figures are unchanged in kind."""
    _, params = trained
    xt = load_split(params.data.prepared_dir, "test")[0]
    xv = load_split(params.data.prepared_dir, "val")[0]
    assert len(xt) > 120 and len(xv) > 120
    raw = params.model_dump(mode="json")
    for pixels, n in ((120 * 64, 120), (64, 100)):  # 8x8 images: 120 of them; then the floor of 100
        raw["detect"] = {**raw["detect"], "likelihood_pixels": pixels, "holdout_classes": [0],
                         "holdout_train": {"steps": 20}}  # fmt: skip
        r = benchmark(validate(raw), "pixelcnn")
        assert (r["normal"]["n"], r["normal"]["of"], r["normal"]["val_n"]) == (n, len(xt), n)
        assert {st["n"] for k, st in r["sets"].items() if not k.startswith("held_out")} == {n}
        held = r["sets"]["held_out_class_0"]  # its sets too (all of them, whatever the cap, before)
        assert held["normal_n"] == n and held["val_n"] == n and held["n"] == min(n, 100, held["of"])
        assert benchmark(validate(raw), "pixelcnn")["threshold"] == r["threshold"]  # a seeded draw
    whole = benchmark(params, "pixelcnn")
    assert (whole["normal"]["n"], whole["normal"]["val_n"]) == (len(xt), len(xv))


def test_held_out_class_benchmark_retrains_without_it(trained):
    _, params = trained
    raw = params.model_dump(mode="json")
    raw["detect"] = {**raw["detect"], "holdout_classes": [0], "holdout_train": {"steps": 20}}
    p = validate(raw)
    r = benchmark(p, "pixelcnn")
    st = r["sets"]["held_out_class_0"]
    _, yt, _ = load_split(p.data.prepared_dir, "test")
    assert st["n"] == int((yt == 0).sum()) and st["steps"] == 20
    name = read_manifest(p.data.prepared_dir)["class_names"][0]  # said by name, as --holdout takes it
    assert (st["class_name"], st["label"]) == (name, f"held out {name}")
    for kind in ("likelihood", "typicality", "likelihood_ratio"):
        assert 0 <= st[kind]["auroc"] <= 1
    held, meta = holdout_model(p, "pixelcnn", 0)
    assert meta["held_out"] == 0 and held.log_class_prior[0] == float("-inf")
    assert holdout_model(p, "pixelcnn", 0)[1]["key"] == meta["key"]  # cached
    stored = benchmark_path(p, "pixelcnn").parent / "holdout" / "class0.json"
    stored.unlink()
    torch.rand(1000)  # whatever ran before in the process, the retraining is the same
    assert holdout_model(p, "pixelcnn", 0)[1]["sha256"] == meta["sha256"]
    raw["detect"]["holdout_classes"] = [99]
    with pytest.raises(ValueError, match="not a class"):
        holdout_model(validate(raw), "pixelcnn", 99)
    raw["detect"]["holdout_classes"] = [-1]
    with pytest.raises(ParamsError, match="holdout_classes"):
        validate(raw)


def test_likelihood_ratio_flags_simple_images_raw_likelihood_calls_normal():
    from genzoo.tasks.detect import _figures

    normal, bg_normal = np.array([2.0, 2.1, 1.9, 2.2]), np.array([3.0, 3.1, 2.9, 3.2])  # digits
    blank, bg_blank = np.array([1.0, 1.1]), np.array([0.2, 0.25])  # cheap for both models
    f = _figures(normal, blank, normal, bg_normal, bg_blank, threshold=2.15)
    assert f["likelihood"]["auroc"] == 0.0  # raw bits/dim: blank looks *more* normal
    assert f["likelihood_ratio"]["auroc"] == 1.0  # against the background it stands out
    assert f["flagged"] == 0.0 and f["n"] == 2


def test_an_8_bit_image_is_binned_into_a_models_fewer_levels_as_prepare_binned_its_data(tmp_path):
    """data.max_levels bins 8-bit pixels k -> floor(k M / 256); detect, for a model whose levels
    are those bins, must do the same, or its threshold, calibrated on prepare's binning, is
    applied to images binned otherwise (rounding put a quarter of a folder's pixels on another
    level). Every 8-bit value, one constant image each, through both. A model of data with
    fewer levels of its own (digits' 17) reads 8-bit pixels at its nearest level; floats in
    [0, 1] (a model's own samples) go straight onto its grid, at any number of levels; colour
    becomes grey by luma, as prepare makes it."""
    from genzoo.models.base import DataSpec
    from genzoo.tasks.detect import read_images

    values = np.repeat(np.arange(256, dtype=np.uint8), 2)
    images = np.broadcast_to(values[:, None, None], (512, 8, 8)).copy()
    np.savez(tmp_path / "all.npz", images=images, labels=np.arange(512) % 2)
    raw = {"models": {"vae": {}}, "data": {"source": f"npz:{tmp_path / 'all.npz'}", "max_levels": 32,
                                          "prepared_dir": str(tmp_path / "prepared")}}  # fmt: skip
    manifest = prepare(validate(raw))
    prepared = torch.cat([load_split(tmp_path / "prepared", s)[0] for s in ("train", "val", "test")])
    assert manifest["levels"] == 32 and len(prepared) == 512
    scored, _ = read_images(tmp_path / "all.npz", DataSpec(1, 8, 8, 32, 2), binned=True)
    assert sorted((prepared[:, 0, 0, 0] * 31).round().tolist()) == sorted(
        (scored[:, 0, 0, 0] * 31).round().tolist()
    )
    assert (scored[:, 0, 0, 0] * 31).round().tolist()[::2] == (np.arange(256) * 32 // 256).tolist()
    np.savez(tmp_path / "floats.npz", images=images.astype(np.float32) / 255)  # the same, as floats
    assert torch.equal(read_images(tmp_path / "floats.npz", DataSpec(1, 8, 8, 32, 2), binned=True)[0], scored)
    nearest, _ = read_images(tmp_path / "all.npz", DataSpec(1, 8, 8, 17, 2))
    assert (nearest[::2, 0, 0, 0] * 16).round().tolist() == np.rint(np.arange(256) * 16 / 255).tolist()
    for levels in (17, 32, 100, 255):
        grid = np.arange(levels, dtype=np.float32) / (levels - 1)
        np.savez(tmp_path / "own.npz", images=np.broadcast_to(grid[:, None, None], (levels, 8, 8)).copy())
        for binned in (False, True):
            back, _ = read_images(tmp_path / "own.npz", DataSpec(1, 8, 8, levels, 2), binned=binned)
            assert torch.equal(back[:, 0, 0, 0], torch.from_numpy(grid)), (levels, binned)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb)
    grey, _ = read_images(tmp_path / "rgb.npz", DataSpec(1, 8, 8, 256, 2))
    luma = np.round((rgb * np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(1, keepdims=True))
    assert torch.equal((grey * 255).round(), torch.from_numpy(luma).float())


def test_a_model_of_binned_data_scores_8_bit_images_alike_with_or_without_its_params(tmp_path, caplog):
    """The quick profile bins an 8-bit folder into 32 levels (data.max_levels); `genzoo detect`
    typed as README shows it, without the profile, read the images at the nearest of the
    model's levels instead of in prepare's bins, and flagged 71 of 80 images of a training
    class (3 with the flag). The binning is the prepared data's, which the model was trained
    on, whatever the command's params say; prepared data made before recording it is told by
    its source. A folder's files that are not images are named, not skipped without a word."""
    import logging

    from PIL import Image

    from genzoo.tasks.detect import levels_binned
    from genzoo.tasks.sample import load_model

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mine.npz", images=rng.integers(0, 256, (120, 8, 8), dtype=np.uint8),
             labels=np.arange(120) % 2)  # fmt: skip
    raw = tiny_params(tmp_path, steps=2, families=["vae"])
    raw["data"].update(source=f"npz:{tmp_path / 'mine.npz'}", max_levels=32)
    quick = validate(raw)
    manifest = prepare(quick)
    assert manifest["levels"] == 32 and manifest["source_levels"] == 256
    train_family(quick, "vae", progress=False)
    del raw["data"]["max_levels"]
    plain = validate(raw)  # the command without the profile
    net = load_model("vae", quick.run.runs_dir)
    assert levels_binned(plain, net) and levels_binned(quick, net)
    assert detect(plain, "vae", tmp_path / "mine.npz") == detect(quick, "vae", tmp_path / "mine.npz")

    path = tmp_path / "prepared" / "manifest.json"
    older = {k: v for k, v in manifest.items() if k != "source_levels"}
    for source, binned in (("folder:/x", True), ("mnist", True), ("digits", False)):
        path.write_text(json.dumps({**older, "source": source}))  # as prepare wrote it before
        assert levels_binned(plain, net) is binned and levels_binned(quick, net) is binned, source
    path.write_text(json.dumps(older))  # an npz's, before: data.max_levels, as it was told
    assert levels_binned(quick, net) and not levels_binned(plain, net)
    path.write_text(json.dumps(manifest))

    # an npz of 32 levels of its own, prepared under the profile: nothing binned, with or without it
    np.savez(tmp_path / "own.npz", images=rng.integers(0, 32, (120, 8, 8), dtype=np.uint8),
             labels=np.arange(120) % 2, levels=32)  # fmt: skip
    own = {**raw["data"], "source": f"npz:{tmp_path / 'own.npz'}", "prepared_dir": str(tmp_path / "own")}
    made = prepare(validate({**raw, "data": {**own, "max_levels": 32}}))
    assert made["levels"] == made["source_levels"] == 32
    for data in (own, {**own, "max_levels": 32}):
        assert not levels_binned(validate({**raw, "data": data}), net)
    # digits, the default: its manifest as it was (no key: DVC's stages after prepare stay current)
    assert "source_levels" not in prepare(validate({**raw, "data": {"prepared_dir": str(tmp_path / "d")}}))

    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING, logger="genzoo.detect"):
        assert [r["name"] for r in detect(plain, "vae", folder)["images"]] == ["a.png"]
    assert "1 file(s) not scored, not images" in caplog.text and "notes.txt" in caplog.text
    assert "an .npz in a folder" not in caplog.text
    np.savez(folder / "batch.npz", images=np.zeros((2, 8, 8), np.uint8))  # a documented input, not here
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genzoo.detect"):
        detect(plain, "vae", folder)
    assert "2 file(s) not scored" in caplog.text
    said = f"(an .npz in a folder is not read: give it as PATH itself, e.g. {folder / 'batch.npz'})"
    assert said in caplog.text


def test_an_npz_of_the_models_own_levels_is_read_as_it_means_or_said(tmp_path):
    """The digits as floats 0..16 with levels=17 were read as [0, 1] and clipped (every ink pixel
    white), and as integers 0..16 without `levels` read as 8-bit (near black): both scored
    without a word. Whole levels stored as floats read as the integers; other floats out of [0,
    1] refused; integers within the model's fewer levels read as 8-bit, with a warning naming the
    fix."""
    import logging.handlers

    from genzoo.models.base import DataSpec
    from genzoo.tasks.data import DataError
    from genzoo.tasks.prepare import load_digits_source

    spec = DataSpec(1, 8, 8, 17, 10)
    digits = load_digits_source().images[:6]  # (6, 1, 8, 8) levels 0..16
    np.savez(tmp_path / "int.npz", images=digits, levels=17)
    np.savez(tmp_path / "float.npz", images=digits.astype(np.float32), levels=17)
    expected, _ = read_images(tmp_path / "int.npz", spec)
    assert torch.equal(read_images(tmp_path / "float.npz", spec)[0], expected)
    assert torch.equal(expected * 16, torch.from_numpy(digits).float())
    np.savez(tmp_path / "half.npz", images=digits.astype(np.float32) + 0.5, levels=17)
    with pytest.raises(DataError, match=r"float images must lie in \[0, 1\] or hold whole levels 0..16"):
        read_images(tmp_path / "half.npz", spec)
    np.savez(tmp_path / "nokey.npz", images=digits.astype(np.float32))  # the fix named
    with pytest.raises(
        DataError, match=r"got \[0, 16\] \(whole levels 0..L-1 stored as floats: an npz `levels` key"
    ):
        read_images(tmp_path / "nokey.npz", spec)
    np.savez(tmp_path / "bare.npz", images=digits)  # no levels: 8-bit, said
    said = logging.handlers.BufferingHandler(100)
    logging.getLogger("genzoo.detect").addHandler(said)
    try:
        x, _ = read_images(tmp_path / "bare.npz", spec)
        lines = [r.getMessage() for r in said.buffer]
        assert any("integer pixels up to 16 read as 8-bit" in m and "levels=17" in m for m in lines), lines
        assert x.max() <= 1 / 16  # (read as it said: dark)
        said.buffer.clear()
        read_images(tmp_path / "int.npz", spec)
        assert said.buffer == []
    finally:
        logging.getLogger("genzoo.detect").removeHandler(said)


def test_a_damaged_file_of_a_folder_is_skipped_and_converted_images_are_said(tmp_path):
    """One truncated PNG among a folder's scans stopped the whole folder (nothing scored); a
    16-bit PNG was scaled without the warning README promises."""
    import logging.handlers

    from PIL import Image

    from genzoo.models.base import DataSpec
    from genzoo.tasks.data import DataError

    spec = DataSpec(1, 8, 8, 17, 10)
    folder = tmp_path / "scans"
    folder.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(folder / "b16.png")
    (folder / "broken.png").write_bytes((folder / "a.png").read_bytes()[:30])
    said = logging.handlers.BufferingHandler(100)
    logging.getLogger("genzoo.detect").addHandler(said)
    try:
        x, names = read_images(folder, spec)
        lines = [r.getMessage() for r in said.buffer]
    finally:
        logging.getLogger("genzoo.detect").removeHandler(said)
    assert names == ["a.png", "b16.png"] and len(x) == 2
    assert any("1 unreadable image file(s) not scored: broken.png" in m for m in lines), lines
    assert any("1 16-bit image(s) converted to 8 bits" in m for m in lines), lines
    for good in ("a.png", "b16.png"):
        (folder / good).unlink()
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        read_images(folder, spec)


def test_the_threshold_flags_at_most_one_minus_the_quantile_of_normal_images():
    """The 0.99 quantile of 180 validation scores (digits) flagged 1.5% of new normal images, of
    100 scores 2%: the ceil((n + 1) q)-th smallest flags at most 1% (split conformal), and says
    how many it flags where fewer images cannot promise that."""
    rng = np.random.default_rng(0)
    for n in (100, 180, 1000):
        val, new = rng.normal(size=(4000, n)), rng.normal(size=(4000, 200))
        t = np.array([conformal_threshold(v, 0.99)[0] for v in val])
        rate = conformal_threshold(val[0], 0.99)[1]
        flagged = (new > t[:, None]).mean()  # (4,000 thresholds: within +-0.0005 of the rate)
        assert rate <= 0.01 and flagged == pytest.approx(rate, abs=0.0005)
        old = np.quantile(val, 0.99, axis=1)  # what the threshold was: 1.95% and 1.5% for 100 and 180
        assert n == 1000 or (new > old[:, None]).mean() > 0.0135
    assert conformal_threshold(np.arange(180.0), 0.99) == (179.0, 1 / 181)  # the largest: k = 180
    assert conformal_threshold(np.arange(99.0), 0.99) == (98.0, 1 / 100)  # k = ceil(100 x 0.99) = 99
    assert conformal_threshold(np.arange(50.0), 0.99) == (49.0, 1 / 51)  # too few to keep 1%: 2% said


def test_images_too_likely_are_flagged_atypical_beside_the_likelihoods_flag(trained, tmp_path, capsys):
    """A blank page scored 0.59 bits/dim against the digits' 2.05 and was printed `ok`: its
    typicality, written to --out alone, had no threshold. Its threshold is the same quantile of
    the validation images' distances from their mean; rows and the printed flag follow it."""
    import yaml

    from genzoo.flows.cli import main

    tmp, params = trained
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    npz = tmp_path / "mixed.npz"
    np.savez(npz, images=np.concatenate([xt[:20, 0].numpy(), np.zeros((3, 8, 8), np.float32)]))
    r = detect(params, "pixelcnn", npz, quantile=0.9)
    xv, _, _ = load_split(params.data.prepared_dir, "val")
    net = models.load(tmp / "runs" / "pixelcnn" / "model.json")
    val = score(net, xv)
    assert r["typicality_threshold"] == pytest.approx(conformal_threshold(typicality(val, val), 0.9)[0])
    assert all(row["atypical"] == (row["typicality"] > r["typicality_threshold"]) for row in r["images"])
    assert r["atypical"] == sum(row["atypical"] for row in r["images"])
    blanks = r["images"][-3:]  # far too likely: below the threshold of bits/dim, atypical
    assert all(row["atypical"] and not row["anomaly"] for row in blanks), blanks
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    out = tmp_path / "s.json"
    assert main(["detect", "--params", str(pfile), "--family", "pixelcnn", str(npz), "--quantile", "0.9",
                 "--out", str(out), "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr()
    flags = [line.split("\t")[2] for line in printed.out.splitlines()]
    rows = json.loads(out.read_text())["images"]
    assert flags == ["ANOMALY" if w["anomaly"] else "ATYPICAL" if w["atypical"] else "ok" for w in rows]
    more = sum(w["atypical"] and not w["anomaly"] for w in rows)
    assert f"; {more} more ATYPICAL: further than" in printed.err
    assert "on average over validation splits)" in printed.err  # 0.9 is kept: nothing more said
    # a quantile the validation images cannot keep (0.1% needs 999 of them): said
    assert main(["detect", "--params", str(pfile), "--family", "pixelcnn", str(npz), "--quantile", "0.999",
                 "-q"]) == 0  # fmt: skip
    n_val = len(load_split(params.data.prepared_dir, "val")[1])
    assert f"on average over validation splits; {n_val} validation images cannot keep 0.1%)" in (
        capsys.readouterr().err
    )


def test_genzoos_own_npz_files_are_read_at_the_levels_their_manifest_records(trained, tmp_path):
    """The prepared splits and a synthetic dataset's images.npz hold levels 0..L-1 with no
    `levels` key: `genzoo detect` read them as 8-bit, near-black, and flagged none of 1,000
    generated digits, of which it flags 698 as PNGs. The manifest beside them says L, for the
    files it lists."""
    import logging.handlers
    import shutil

    from genzoo.tasks.data import levels_beside

    tmp, params = trained
    test_npz = Path(params.data.prepared_dir) / "test.npz"
    assert levels_beside(test_npz) == 17
    r = detect(params, "pixelcnn", test_npz)
    xt, _, _ = load_split(params.data.prepared_dir, "test")
    net = models.load(tmp / "runs" / "pixelcnn" / "model.json")
    assert [row["bits_per_dim"] for row in r["images"]] == pytest.approx(score(net, xt).tolist())
    shutil.copy(test_npz, tmp_path / "test.npz")  # alone, no manifest: read as 8-bit, said
    said = logging.handlers.BufferingHandler(100)  # (caplog's handler: gone once Prefect is imported)
    logging.getLogger("genzoo.detect").addHandler(said)
    try:
        alone = detect(params, "pixelcnn", tmp_path / "test.npz")
    finally:
        logging.getLogger("genzoo.detect").removeHandler(said)
    assert any("read as 8-bit" in r.getMessage() for r in said.buffer)
    assert [row["bits_per_dim"] for row in alone["images"]] != pytest.approx(
        [row["bits_per_dim"] for row in r["images"]]
    )
    (tmp_path / "manifest.json").write_text(json.dumps({"levels": 17}))  # lists no such file: not taken
    assert levels_beside(tmp_path / "test.npz") is None
    # a user's own npz dropped beside the prepared splits is no split of theirs; a dataset's is its npz
    assert levels_beside(Path(params.data.prepared_dir) / "mine.npz") is None
    (tmp_path / "manifest.json").write_text(json.dumps({"levels": 17, "files": {"npz": "images.npz"}}))
    assert levels_beside(tmp_path / "images.npz") == 17 and levels_beside(tmp_path / "test.npz") is None


def test_the_benchmark_command_prints_its_threshold_and_false_alarm_rate(trained, tmp_path, capsys):
    import yaml

    from genzoo.flows.cli import main

    _, params = trained
    r = run_benchmark(params, "pixelcnn")  # (the benchmark test's, cached, or made here)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    assert main(["detect", "--params", str(pfile), "--family", "pixelcnn", "--benchmark", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"threshold {r['threshold']:.4f} (quantile {r['quantile']}: a normal image above it" in out
    assert f"% of the time at most, from {r['normal']['val_n']} validation images)" in out
