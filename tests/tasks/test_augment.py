"""Synthetic datasets: what lands on disk, determinism, and bad requests that write nothing."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from pydantic import ValidationError

from genzoo.models import DataSpec
from genzoo.tasks.augment import (
    VARIETY_FLOOR,
    AugmentRequest,
    _Filters,
    best_choice,
    collapsed,
    generate,
    left_out_by_best,
    load_dataset,
    mix,
    real_dataset,
    request,
    resolve_families,
    variety,
)
from genzoo.tasks.config import ParamsError, validate
from genzoo.tasks.errors import ModelNotFound
from genzoo.tasks.formats import MissingExtra, render_card
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("augment")
    raw = tiny_params(tmp, steps=5, families=["gan", "vae", "pixelcnn"])
    raw["evaluate"]["evaluator"].update(steps=200, channels=16, feature_dim=32, lr=5e-3)
    raw["models"]["vae"]["train"].update(steps=300, lr=3e-3)  # class-conditional enough to filter
    raw["recipes"] = {"plain": {}, "teacher": {"teacher": True, "teacher_confidence": 0.3, "agree": False},
                      "near": {"mode": "perturb", "strength": 0.3},
                      "vote": {"teacher": True, "teachers": 2, "teacher_confidence": 0.3,
                               "agree": False},
                      "vote_mix": {"teacher": True, "teachers": 2, "teacher_confidence": 0.3,
                                   "agree": False, "soft_weight": 0.5}}  # fmt: skip
    raw["usefulness"]["cnn"].update(steps=150, channels=16, feature_dim=32)  # the teacher's budget
    params = validate(raw)
    prepare(params)
    for fam in ("gan", "vae"):  # pixelcnn stays untrained
        train_family(params, fam, progress=False)
    return tmp, params


@pytest.fixture(scope="module")
def evaluated(trained):
    from genzoo.tasks.evaluate import evaluate_family, evaluator_stage

    tmp, params = trained
    evaluator_stage(params)
    fd = {f: evaluate_family(params, f)["fd"] for f in ("gan", "vae")}
    return tmp, params, fd


def test_a_family_collapsed_to_a_few_images_per_class_is_a_warning_in_the_dataset(trained, caplog):
    """A model that draws the same image again and again in each class (a GAN collapsed on a
    user's 32x32 shapes: `best` chose it, 252 near-copies written without a word): each class's
    spread against the real images' is in the manifest, and under half of it is a warning, in the
    log, the manifest and the card. Real images score about 1."""
    from genzoo.tasks.data import load_split

    tmp, params = trained
    x, y, _ = load_split(params.data.prepared_dir, "train")
    first = torch.cat([torch.nonzero(y == c)[:30, 0] for c in range(10)])  # 30 real images per class
    one = torch.cat([x[torch.nonzero(y == c)[0, 0]].expand(30, *x.shape[1:]) for c in range(10)])
    src = np.array(["vae"] * 300 + ["gan"] * 300)  # vae draws real images, gan one image per class
    names = list("0123456789")
    got = variety(params, torch.cat([x[first], one]), torch.cat([y[first], y[first]]), src, names)
    assert set(got) == {"vae", "gan"} and all(0.8 < v < 1.2 for v in got["vae"].values()), got
    assert got["gan"] == {str(c): 0.0 for c in range(10)}
    with caplog.at_level("WARNING", logger="genzoo.augment"):
        (line,) = collapsed(params, got)
    assert line.startswith("gan's images vary far less than the real ones in 10 of 10 classes (0 0.00, 1 0.")
    assert (
        f"look at {tmp / 'runs' / 'gan' / 'samples.png'} before" in line and f"augment: {line}" in caplog.text
    )
    assert collapsed(params, {"vae": got["vae"], "pixelcnn": {}}) == []
    here = os.getcwd()
    os.chdir(tmp)  # the project's folder, as a run hands its stages absolute paths: the card names it so
    try:
        (line,) = collapsed(params, got)
    finally:
        os.chdir(here)
    assert "look at runs/gan/samples.png before" in line, line
    # lifts of another recipe than the dataset's (its own not measured): the warning says whose
    from genzoo.tasks.augment import _harmful_measured

    lift = {"1.0": {"cnn": {"mean": -0.1, "ci95": 0.2}, "logistic": {"mean": -0.02, "ci95": 0.1}}}
    measured = {"vae": {"usefulness": {"file": "u.json", "recipe": "plain", "lift": lift}}, "gan": {}}
    (said,) = _harmful_measured(measured, "teacher")
    assert said.startswith("vae: adding its images lowered") and said.endswith(
        "(u.json, with recipe plain: this dataset's, teacher, was not measured)"
    )
    assert _harmful_measured(measured, "plain")[0].endswith("classifier worse (u.json)")
    # a dataset: its figures in the manifest, a warning where a class falls under the floor
    req = AugmentRequest(families=["gan", "vae"], per_class=6, out_dir=str(tmp / "aug-spread"), name="spread")
    made = generate(params, req)
    m = json.loads((made / "manifest.json").read_text())
    assert set(m["variety"]) == {"gan", "vae"} and all(set(v) == set(names) for v in m["variety"].values())
    for family, per in m["variety"].items():
        low = any(v < VARIETY_FLOOR for v in per.values())
        warned = [w for w in m.get("warnings", []) if w.startswith(f"{family}'s images vary far less")]
        card = (made / "README.md").read_text()
        assert len(warned) == low and all(f"> **Warning:** {w}" in card for w in warned)


def test_dataset_holds_labelled_images_from_each_family_and_a_manifest(trained):
    tmp, params = trained
    req = AugmentRequest(families=["gan", "vae"], per_class=3, seed=1, out_dir=str(tmp / "aug"))
    path = generate(params, req)
    assert path == (tmp / "aug" / "synthetic").resolve()
    with np.load(path / "images.npz") as z:
        images, labels, source = z["images"], z["labels"], z["source"]
    assert images.dtype == np.uint8 and images.shape == (60, 1, 8, 8) and images.max() <= 16
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [6] * 10
    assert sorted(set(source.tolist())) == ["gan", "vae"] and (source == "gan").sum() == 30
    m = json.loads((path / "manifest.json").read_text())
    assert m["sha256"] == hashlib.sha256((path / "images.npz").read_bytes()).hexdigest()
    assert m["counts_per_class"] == [6] * 10 and m["levels"] == 17 and m["request"]["seed"] == 1
    assert set(m["families"]) == {"gan", "vae"} and all(
        len(v["sha256"]) == 64 for v in m["families"].values()
    )
    assert m["filters"]["reject_copies"] and m["filters"]["kept"] == 60
    assert m["filters"]["drawn"] == 60 + sum(m["filters"]["rejected"].values())
    assert len(m["params_hash"]) == 64 and m["seed"] == 1
    # the default formats, the card, what made it
    assert m["formats"] == ["npz", "imagefolder"] and not m["soft_labels"]
    assert sorted(p.name for p in path.iterdir()) == ["README.md", "images", "images.npz", "manifest.json"]
    assert sorted(p.name for p in (path / "images").iterdir()) == [f"{c:02d}_{c}" for c in range(10)]
    assert m["recipe"]["families"] == ["gan", "vae"] and m["recipe"]["per_class"] == 3
    assert m["data"]["source"] == "digits" and len(m["data"]["sha256"]) == 64
    assert m["filters"]["copy_radius"] > 0 and m["counts_per_source"] == {"gan": 30, "vae": 30}
    assert m["measured"] == {f: {"quality": None, "usefulness": None} for f in ("gan", "vae")}
    card = (path / "README.md").read_text()
    assert m["data"]["sha256"] in card and m["params_hash"] in card and "CC BY 4.0" in card
    assert (
        "Usefulness: not measured" in card
        and f"Rejected as copies: {m['filters']['rejected']['copies']}" in card
    )

    again = generate(params, req)  # same request: same bytes; the old version replaced whole
    assert json.loads((again / "manifest.json").read_text())["sha256"] == m["sha256"]
    other = generate(params, req.model_copy(update={"seed": 2}))
    assert json.loads((other / "manifest.json").read_text())["sha256"] != m["sha256"]
    assert sorted(p.name for p in (tmp / "aug").iterdir()) == ["synthetic"]  # no temp or old folders
    # made under a profile (a quick run's first look): the manifest and the card say so, and the
    # card's advice carries it
    quick = params.model_copy()
    quick._profile = "quick"
    path = generate(quick, req.model_copy(update={"name": "quick"}))
    card = (path / "README.md").read_text()
    assert json.loads((path / "manifest.json").read_text())["profile"] == "quick"
    assert "**Made with the `quick` profile** of its params file" in card
    assert "run `genzoo usefulness --families gan --profile quick`" in card


def test_the_params_fingerprint_changes_with_the_recipes_settings_not_only_its_name(trained):
    """Two datasets of one request whose recipe of the same name was set otherwise (another
    temperature, k, teacher) are not of the same params: their fingerprints differ."""
    tmp, params = trained
    req = AugmentRequest(families=["gan"], per_class=1, seed=1, out_dir=str(tmp / "aug"), name="fp")
    first = json.loads((generate(params, req) / "manifest.json").read_text())["params_hash"]
    assert json.loads((generate(params, req) / "manifest.json").read_text())["params_hash"] == first
    raw = params.model_dump(mode="json")
    raw["recipes"]["plain"] = {"synthetic_per_real": 4}
    other = validate(raw)
    assert json.loads((generate(other, req) / "manifest.json").read_text())["params_hash"] != first


def test_a_family_trained_with_other_params_is_drawn_from_with_a_warning(trained, caplog):
    """A model the current params would retrain (here: another EMA decay; after a quick
    run, the default params) still makes the dataset asked for, and the log says it is stale."""
    import logging

    tmp, params = trained
    raw = params.model_dump(mode="json")
    raw["models"]["gan"]["train"]["ema_decay"] = 0.8
    req = AugmentRequest(
        families=["gan"], per_class=1, seed=0, out_dir=str(tmp / "stale"), reject_copies=False
    )
    with caplog.at_level(logging.WARNING, logger="genzoo.augment"):
        path = generate(params, req)
        assert "stale" not in caplog.text
        assert json.loads((path / "manifest.json").read_text())["families"]["gan"]["up_to_date"] is True
        assert "not up to date with the settings" not in (path / "README.md").read_text()
        path = generate(validate(raw), req)
    # the dataset says so too, for whoever receives it (the console's warning stays on this machine)
    assert json.loads((path / "manifest.json").read_text())["families"]["gan"]["up_to_date"] is False
    assert "; **not up to date with the settings this dataset was made with** (trained with other " in (
        (path / "README.md").read_text()
    )
    assert (
        "gan: trained with other params, data or code than these (stale, see `genzoo status`)" in caplog.text
    )
    # a family whose images mostly miss their label (its evaluation's class accuracy), drawn with the
    # model's own labels: said (a quick run's DDPM gave a dataset 88% mislabelled without a word)
    from genzoo.models.base import sha256_file

    quality = tmp / "runs" / "evaluation" / "gan" / "quality.json"
    quality.parent.mkdir(parents=True, exist_ok=True)
    saved = quality.read_text() if quality.exists() else None  # (the fixture has none: kept if it had)
    sha = sha256_file(tmp / "runs" / "gan" / "model.safetensors")
    quality.write_text(json.dumps({"class_accuracy": 0.124, "model_sha256": sha}))
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="genzoo.augment"):
            made = generate(params, req)
        said = "gan's images follow their label 12% of the time (class_accuracy in its evaluation)"
        assert f"augment: {said}" in caplog.text
        # and in the files whoever pulls the dataset reads (no console there): manifest and card
        (warned,) = json.loads((made / "manifest.json").read_text())["warnings"]
        assert (
            warned.startswith(said) and f"\n\n> **Warning:** {warned}\n" in (made / "README.md").read_text()
        )
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="genzoo.augment"):
            made = generate(params, req.model_copy(update={"recipe": "teacher", "name": "relabelled"}))
        assert "follow their label" not in caplog.text  # a teacher relabels them
        assert "warnings" not in json.loads((made / "manifest.json").read_text())
        assert "**Warning:**" not in (made / "README.md").read_text()
        vae_quality = quality.parent.parent / "vae" / "quality.json"
        vae_quality.parent.mkdir(parents=True, exist_ok=True)
        vae_saved = vae_quality.read_text() if vae_quality.exists() else None
        vae_sha = sha256_file(tmp / "runs" / "vae" / "model.safetensors")
        vae_quality.write_text(json.dumps({"class_accuracy": 0.124, "model_sha256": vae_sha}))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="genzoo.augment"):  # each image starts from a real one
            generate(params, req.model_copy(update={"families": ["vae"], "recipe": "near", "name": "near"}))
        assert "follow their label" not in caplog.text
        vae_quality.write_text(vae_saved) if vae_saved is not None else vae_quality.unlink()
    finally:
        quality.write_text(saved) if saved is not None else quality.unlink()
    stale = validate(raw)
    stale._profile = "quick"  # the status command it names is the one that says why: with the profile
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="genzoo.augment"):
        generate(stale, req)
    assert "(stale, see `genzoo status --profile quick`)" in caplog.text
    weights = tmp / "runs" / "gan" / "model.safetensors"  # gone: said as such (was [Errno 2])
    weights.rename(weights.with_suffix(".bak"))
    try:
        with pytest.raises(ModelNotFound, match=r"gan: model.safetensors missing in .* incomplete"):
            generate(params, AugmentRequest(families=["gan"], per_class=1, seed=0, out_dir=str(tmp / "gone")))
    finally:
        weights.with_suffix(".bak").rename(weights)
    assert not (tmp / "gone").exists()


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"families": ["nope"]}, "augment.families: nope is not a family"),
        ({"families": ["gan"], "class_ratios": {12: 1.0}}, "classes \\[12\\] do not exist"),
        ({"families": ["gan"], "class_ratios": {1: -1.0}}, "class_ratios"),
        ({"families": ["gan"], "class_ratios": {c: 0.0 for c in range(10)}}, "every class has a count of 0"),
        ({"families": ["gan"], "min_confidence": 1.5}, "min_confidence"),
        ({"families": ["pixelcnn"]}, "pixelcnn is not trained"),
        ({"families": ["gan", "pixelcnn"]}, "pixelcnn is not trained"),
        ({"families": ["gan"], "per_class": 0}, "per_class"),
        ({"families": ["gan"], "per_class": -5}, "per_class"),
        ({"families": []}, "families"),
        ({"families": ["gan"], "name": "../escape"}, "name"),
        ({"families": ["gan"], "name": "/abs"}, "name"),
        ({"families": ["gan"], "recipe": "nope"}, "augment.recipe: no recipe 'nope' under recipes"),
        ({"families": ["gan"], "recipe": "near"}, "'near' perturbs real images, which gan cannot"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(trained, bad, error):
    tmp, params = trained
    out = tmp / "bad-out"
    with pytest.raises((ValueError, FileNotFoundError, ValidationError), match=error):
        generate(params, AugmentRequest(out_dir=str(out), **bad))
    assert not out.exists()
    assert not (tmp / "escape").exists()


def test_best_family_quality_figures_class_ratios_and_pngs(evaluated):
    tmp, params, fd = evaluated
    req = request(params, families=["best"], per_class=4, class_ratios={0: 2.0, 9: 0.0}, png=True,
                  out_dir=str(tmp / "aug"), name="best")  # fmt: skip
    path = generate(params, req)
    m = json.loads((path / "manifest.json").read_text())
    # best by mean rank of Fréchet distance over every judge's space, among the families measured
    # for usefulness once one is (another test here measures the GAN's; tests may run in either order)
    spaces = {
        f: json.loads((tmp / "runs" / "evaluation" / f / "quality.json").read_text())["spaces"] for f in fd
    }
    names = set.intersection(*(set(v) for v in spaces.values()))
    assert {"cnn", "pca", "lenet"} <= names
    rank = {
        f: sum(sorted(spaces[g][s]["fd"] for g in fd).index(spaces[f][s]["fd"]) + 1 for s in names)
        / len(names)
        for f in fd
    }  # fmt: skip  (no ties in these figures)
    measured = [f for f in fd if (tmp / "runs" / "evaluation" / f / "usefulness.json").exists()]
    assert list(m["families"]) == [min(measured or fd, key=rank.get)]
    # the manifest says why: the figures `best` compared, and what it chose among
    assert m["best"]["family"] == list(m["families"])[0] and m["best"]["metric"] == "fd_rank"
    assert m["best"]["figures"] == pytest.approx(rank) and set(m["best"]["measured"]) == set(measured)
    assert "| chosen as `best` | by fd_rank, from the families " in (path / "README.md").read_text()
    assert m["profile"] is None and "profile** of its params file" not in (path / "README.md").read_text()
    assert m["counts_per_class"] == [8, 4, 4, 4, 4, 4, 4, 4, 4, 0]
    assert m["quality"]["fd"] > 0 and 0 <= m["quality"]["class_accuracy"] <= 1
    pngs = sorted((path / "images").rglob("*.png"))  # png: true, as before: the image folders
    assert len(pngs) == 40 and {p.parent.name for p in pngs} == {f"{c:02d}_{c}" for c in range(9)}
    best = list(m["families"])[0]
    quality = json.loads((tmp / "runs" / "evaluation" / best / "quality.json").read_text())
    assert m["measured"][best]["quality"]["figures"]["fd"]["mean"] == quality["fd"]  # quoted, not made up
    card = (path / "README.md").read_text()
    assert f"fd {quality['fd']:.4g}" in card
    assert (
        f"over real held-out images' {m['quality']['memorization']['ratio']:.4g}" in card
    )  # this draw's own
    by_precision = request(
        params, families=["best"], metric="precision", out_dir=str(tmp / "aug"), name="p", per_class=1
    )
    assert len(json.loads((generate(params, by_precision) / "manifest.json").read_text())["families"]) == 1


def test_best_is_the_best_measured_for_usefulness_when_any_was(tmp_path, caplog):
    """`best` picks the family a pulled dataset can quote a measured lift for: the best by the
    metric among families with a usefulness.json, else among every evaluated family."""
    params = validate(tiny_params(tmp_path, families=["pixelcnn", "realnvp", "gan"]))
    folder = tmp_path / "runs" / "evaluation"
    for f, fd, precision in (("pixelcnn", 0.152, 0.93), ("realnvp", 0.147, 0.94), ("gan", 0.153, 0.95)):
        (folder / f).mkdir(parents=True)
        (folder / f / "quality.json").write_text(json.dumps({"fd": fd, "precision": precision}))

    def pick(metric: str) -> str:
        return best_choice(params, metric)["family"]

    with caplog.at_level("INFO", logger="genzoo.augment"):
        assert pick("fd") == "realnvp" and pick("precision") == "gan"
    assert "`best` is realnvp, the best by fd among the evaluated families\n" in caplog.text
    (folder / "pixelcnn" / "usefulness.json").write_text("{}")
    with caplog.at_level("INFO", logger="genzoo.augment"):
        assert pick("fd") == "pixelcnn"  # realnvp is ahead by 0.005, unmeasured
    assert (
        "`best` is pixelcnn, the best by fd among the families measured for usefulness (realnvp: not "
        "measured)" in caplog.text
    )
    assert best_choice(params, "fd") == {
        "family": "pixelcnn", "metric": "fd", "among": "measured for usefulness", "measured": ["pixelcnn"],
        "figures": {"pixelcnn": 0.152, "realnvp": 0.147, "gan": 0.153}, "ahead_not_measured": ["realnvp"],
        "other_reference": [], "unfit": {},
    }  # fmt: skip
    assert left_out_by_best({"best": best_choice(params, "fd")}) == (
        "`best` is pixelcnn, the best of the families measured for usefulness; realnvp scored better by "
        "fd but was not measured (usefulness.families)"
    )  # what `genzoo run` logs from the dataset's manifest
    assert pick("precision") == "pixelcnn"
    (folder / "gan" / "usefulness.json").write_text("{}")
    assert pick("fd") == "pixelcnn" and pick("precision") == "gan"
    assert left_out_by_best({"best": best_choice(params, "precision")}) is None  # none ahead of gan
    # a family scored by another evaluator (its features are not the others') is not chosen
    # from, nor named as ahead: the report leaves it out too
    (folder / "evaluator").mkdir()
    (folder / "evaluator" / "evaluator.json").write_text(json.dumps({"sha256": "current"}))
    stamped = {"fd": 0.152, "precision": 0.93, "evaluator_sha256": "current"}
    (folder / "pixelcnn" / "quality.json").write_text(json.dumps(stamped))
    (folder / "realnvp" / "quality.json").write_text(json.dumps({"fd": 0.147, "evaluator_sha256": "older"}))
    assert best_choice(params, "fd")["ahead_not_measured"] == []
    assert "realnvp" not in best_choice(params, "fd")["figures"]
    # figures of another model of the family (trained again since it was evaluated) are left out
    (tmp_path / "runs" / "gan").mkdir(parents=True)
    (tmp_path / "runs" / "gan" / "model.safetensors").write_bytes(b"trained again")
    again = {"fd": 0.153, "precision": 0.99, "evaluator_sha256": "current", "model_sha256": "0" * 64}
    (folder / "gan" / "quality.json").write_text(json.dumps(again))
    with caplog.at_level("WARNING", logger="genzoo.augment"):
        assert pick("precision") == "pixelcnn"
    assert "gan's quality.json measured another model than " in caplog.text
    assert "`genzoo evaluate --family gan` measures it" in caplog.text
    # usefulness measured against other real-data rows than these settings make (a README example's
    # -o, which also rewrote reference.json): not chosen from, as the report leaves it out
    from genzoo.tasks.layout import usefulness_key

    prepare(params)
    now = usefulness_key(params)
    (folder / "usefulness").mkdir()
    (folder / "usefulness" / "reference.json").write_text(json.dumps({"key": "the -o run's"}))
    (folder / "pixelcnn" / "usefulness.json").write_text(json.dumps({"reference_key": "the -o run's"}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="genzoo.augment"):
        choice = best_choice(params, "fd")
    assert choice["measured"] == [] and choice["other_reference"] == ["pixelcnn"]
    assert "pixelcnn's usefulness.json was measured against another reference than the current one" in (
        caplog.text
    )
    (folder / "gan" / "usefulness.json").write_text(json.dumps({"reference_key": now}))
    (folder / "gan" / "quality.json").write_text(json.dumps({**stamped, "precision": 0.9}))
    choice = best_choice(params, "precision")  # pixelcnn (0.93) is ahead, measured under other settings
    assert choice["family"] == "gan" and choice["ahead_not_measured"] == ["pixelcnn"]
    assert left_out_by_best({"best": choice}) == (
        "`best` is gan, the best of the families measured for usefulness; pixelcnn scored better by "
        "precision but was measured under other settings (`genzoo usefulness --families pixelcnn`)"
    )
    assert left_out_by_best({"best": choice, "profile": "quick"}).endswith(
        "(`genzoo usefulness --families pixelcnn --profile quick`)"
    )
    (folder / "pixelcnn" / "usefulness.json").write_text(json.dumps({"reference_key": now}))
    assert best_choice(params, "fd")["measured"] == ["pixelcnn", "gan"]


def test_best_passes_over_a_family_measured_harmful_or_whose_labels_are_mostly_wrong(tmp_path, caplog):
    """A quick run's DDPM, measured for usefulness as the card advises, is ahead by Fréchet
    distance but its images lowered every classifier's accuracy, or follow their label 12% of the
    time: `best` keeps the family that is fit, and says why; with none fit it chooses as before."""
    params = validate(tiny_params(tmp_path, families=["vae", "ddpm"]))
    assert params.augment.recipe == "plain"
    folder = tmp_path / "runs" / "evaluation"
    for f, fd in (("vae", 0.3), ("ddpm", 0.1)):
        (folder / f).mkdir(parents=True)
        (folder / f / "quality.json").write_text(json.dumps({"fd": fd, "class_accuracy": 0.9}))
    (folder / "vae" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": 0.002}}))
    (folder / "ddpm" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": -0.067}}))
    with caplog.at_level("INFO", logger="genzoo.augment"):
        choice = best_choice(params, "fd")
    harm = "adding its images lowered every classifier's mean accuracy (-6.7 to -6.7 points)"
    assert choice["family"] == "vae" and choice["unfit"] == {"ddpm": harm}
    assert choice["ahead_not_measured"] == []
    said = f"`best` is vae, the best by fd among the families measured for usefulness; ddpm left out: {harm}"
    assert said in caplog.text
    assert left_out_by_best({"best": choice}) == (
        f"`best` is vae, the best of the families measured for usefulness; ddpm was passed over: {harm}"
    )
    (folder / "vae" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": -0.038}}))
    choice = best_choice(params, "fd")  # both harmful: neither passed over for it
    assert choice["family"] == "ddpm" and choice["unfit"] == {}
    (folder / "ddpm" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": 0.004}}))
    assert best_choice(params, "fd")["family"] == "ddpm"  # helpful: the better distance wins again
    (folder / "ddpm" / "quality.json").write_text(json.dumps({"fd": 0.1, "class_accuracy": 0.124}))
    (folder / "ddpm" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": -0.067}}))
    choice = best_choice(params, "fd")  # the walk's quick run: both harmful, DDPM's labels mostly wrong
    assert choice["family"] == "vae"
    assert choice["unfit"] == {"ddpm": "its images follow their label 12% of the time (class_accuracy)"}
    # the labels do not come from the model: a teacher relabels, or only images the evaluator is sure
    # of are kept (both harmful, and no figures of the teacher recipe: no verdict on either)
    relabelled = best_choice(params, "fd", "teacher")
    assert relabelled["family"] == "ddpm" and relabelled["unfit"] == {}
    assert best_choice(params, "fd", "plain", min_confidence=0.9)["family"] == "ddpm"
    (folder / "vae" / "usefulness.json").unlink()
    (folder / "ddpm" / "usefulness.json").unlink()  # none measured: the evaluated families, the same rule
    assert best_choice(params, "fd")["family"] == "vae" and best_choice(params, "fd")["among"] == "evaluated"
    (folder / "vae" / "quality.json").write_text(json.dumps({"fd": 0.3, "class_accuracy": 0.2}))
    choice = best_choice(params, "fd")  # none fit: chosen among them all, as before
    assert choice["family"] == "ddpm" and choice["unfit"] == {}


def test_best_and_the_family_it_picks_named_together_give_its_images_once_and_say_so(tmp_path, caplog):
    params = validate(tiny_params(tmp_path, families=["vae", "gan"]))
    with caplog.at_level("WARNING", logger="genzoo.augment"):
        assert resolve_families(params, request(params, families=["best", "gan"]), {"family": "vae"}) == [
            "vae", "gan"
        ]  # fmt: skip
        assert caplog.text == ""
        assert resolve_families(params, request(params, families=["best", "vae"]), {"family": "vae"}) == [
            "vae"
        ]
    assert "`best` is vae, named too: the dataset holds vae's images once" in caplog.text


def _usefulness_json(lifts: dict[str, dict[str, float]], classifiers=("cnn", "logistic")) -> str:
    """usefulness.json's shape: recipe -> fraction -> each classifier's lift (the same figure)."""
    return json.dumps({"recipes": {r: {"augmentation": {p: {c: {"lift": {"mean": v, "ci95": 0.005}}
                                                         for c in classifiers} for p, v in by_p.items()}}
                                   for r, by_p in lifts.items()}})  # fmt: skip


def test_best_by_lift_is_the_family_whose_images_helped_the_classifier_most(tmp_path, caplog):
    """`metric: lift`: among the families measured for usefulness, the one whose images, made by
    the dataset's recipe, lifted the CNN most at the smallest real fraction measured, whatever
    their Fréchet distances; a family without that recipe measured is not compared, and with none
    the request fails naming the key, before any sampling."""
    params = validate(tiny_params(tmp_path, families=["pixelcnn", "realnvp", "vae"]))
    folder = tmp_path / "runs" / "evaluation"
    for f in ("pixelcnn", "realnvp", "vae"):
        (folder / f).mkdir(parents=True)
        (folder / f / "quality.json").write_text(
            json.dumps({"fd": {"pixelcnn": 0.1, "realnvp": 0.2}.get(f, 0.3)})
        )
    with pytest.raises(FileNotFoundError, match="augment.metric: lift needs a family measured for usefulness "
                                                "with recipe 'plain'"):  # fmt: skip
        best_choice(params, "lift")
    # the command it names measures that recipe under these settings and the params' profile (an -o
    # would measure it against other settings' real-data rows, which `best` leaves out)
    quick = params.model_copy(
        update={"usefulness": params.usefulness.model_copy(update={"recipes": ["plain"]})}
    )
    quick._profile = "quick"
    with pytest.raises(FileNotFoundError) as e:
        best_choice(quick, "lift", "teacher")
    assert (
        "add teacher to usefulness.recipes in the params file, then run `genzoo usefulness --profile quick`"
        in str(e.value)
    )
    (folder / "pixelcnn" / "usefulness.json").write_text(
        _usefulness_json({"plain": {"0.1": 0.000, "1.0": 0.004}, "teacher": {"0.1": 0.009, "1.0": -0.001}})
    )
    (folder / "realnvp" / "usefulness.json").write_text(
        _usefulness_json({"plain": {"0.1": 0.005, "1.0": 0.000}, "teacher": {"0.1": 0.003, "1.0": 0.002}})
    )
    with caplog.at_level("INFO", logger="genzoo.augment"):
        choice = best_choice(params, "lift")  # augment.recipe: plain; 10% decides, not 100%
    assert "`best` is realnvp, the largest measured lift with recipe plain" in caplog.text
    assert choice == {"family": "realnvp", "metric": "lift", "figures": {"pixelcnn": 0.0, "realnvp": 0.005},
                      "measured": ["pixelcnn", "realnvp"], "among": "measured for usefulness",
                      "recipe": "plain", "chosen_on": "test", "validation_figures": None}  # fmt: skip
    assert best_choice(params, "fd")["family"] == "pixelcnn"  # the quality figure would pick the other
    assert best_choice(params, "lift", "teacher")["family"] == "pixelcnn"  # the recipe the dataset is made by
    (folder / "vae" / "usefulness.json").write_text(  # the CNN decides, not the logistic regression
        json.dumps({"recipes": {"plain": {"augmentation": {"0.1": {"logistic": {"lift": {"mean": 0.03}},
                                                                   "cnn": {"lift": {"mean": 0.001}}}}}}})
    )  # fmt: skip
    assert best_choice(params, "lift")["figures"]["vae"] == 0.001
    with pytest.raises(FileNotFoundError, match="recipe 'distil'"):
        best_choice(params, "lift", "distil")
    (folder / "vae" / "usefulness.json").write_text(_usefulness_json({"plain": {"1.0": 0.02}}, ("logistic",)))
    assert best_choice(params, "lift")["family"] == "vae"  # measured with all the data alone, by logistic
    for f in ("pixelcnn", "realnvp", "vae"):  # no family helped: the largest lift said as the harm it is
        (folder / f / "usefulness.json").write_text(_usefulness_json({"plain": {"0.1": -0.035}}))
    caplog.clear()
    with caplog.at_level("INFO", logger="genzoo.augment"):
        best_choice(params, "lift")
    assert (
        "lift with recipe plain (chosen on the test split; a harm: -3.5 points, no family measured helped)"
        in (caplog.text)
    )
    assert validate(tiny_params(tmp_path, augment={"metric": "lift"})).augment.metric == "lift"


def test_best_by_fd_rank_is_the_verdict_of_every_judge_not_of_one(tmp_path):
    """`metric: fd_rank`: each family's mean rank by Fréchet distance over every judge's space
    (quality.json's `spaces`), ties sharing their places; the evaluator's space alone (`fd`)
    would pick a family the other judges put behind."""
    params = validate(tiny_params(tmp_path, families=["pixelcnn", "realnvp", "gan"]))
    folder = tmp_path / "runs" / "evaluation"
    fds = {  # cnn (the evaluator), pca, lenet
        "pixelcnn": (0.152, 0.104, 0.80),
        "realnvp": (0.147, 0.130, 0.95),
        "gan": (0.160, 0.104, 0.90),
    }
    for f, (cnn, pca, lenet) in fds.items():
        spaces = {"cnn": {"fd": cnn}, "pca": {"fd": pca}, "lenet": {"fd": lenet, "class_accuracy": 0.9}}
        (folder / f).mkdir(parents=True)
        (folder / f / "quality.json").write_text(json.dumps({"fd": cnn, "spaces": spaces}))
    assert best_choice(params, "fd")["family"] == "realnvp"
    choice = best_choice(params, "fd_rank")
    # pixelcnn: 2, 1.5 (tied with the gan), 1; realnvp: 1, 3, 3; gan: 3, 1.5, 2
    assert choice["family"] == "pixelcnn" and choice["metric"] == "fd_rank"
    assert choice["figures"] == pytest.approx({"pixelcnn": 4.5 / 3, "realnvp": 7 / 3, "gan": 6.5 / 3})
    (folder / "gan" / "usefulness.json").write_text("{}")
    assert best_choice(params, "fd_rank")["family"] == "gan"  # the one measured, ranked among all
    (folder / "realnvp" / "quality.json").write_text(
        json.dumps({"fd": 0.147, "spaces": {"pca": {"fd": 0.1}}})
    )
    (folder / "gan" / "usefulness.json").unlink()
    assert best_choice(params, "fd_rank")["figures"] == {
        "pixelcnn": 2.5,
        "realnvp": 1.0,
        "gan": 2.5,
    }  # pca only
    with pytest.raises(
        ParamsError,
        match="augment.metric: .*'fd_rank' or 'lift'; did you mean fd_rank\\? \\(got 'fd_ranks'\\)",
    ):
        validate(tiny_params(tmp_path, augment={"metric": "fd_ranks"}))


def test_a_datasets_own_quality_is_scored_on_as_many_images_as_an_evaluation_and_never_fails_it(
    evaluated, monkeypatch
):
    """A large dataset is scored on a seeded draw of the evaluation's size (diversity and the
    neighbour radii are quadratic in the images scored: 200,000 images never finished); one of no
    more images than evaluate.k says so instead of failing the dataset at its end."""
    from genzoo.tasks import augment

    tmp, params, _ = evaluated
    spec = DataSpec(1, 8, 8, 17, 10)
    cap = params.evaluate.per_class(spec) * 10  # 4 a class in the tests' params
    seen = []
    real_scores = augment.scores
    monkeypatch.setattr(
        augment, "scores", lambda p, f, *a, **k: seen.append(len(f)) or real_scores(p, f, *a, **k)
    )
    x, y = torch.rand(3 * cap, 1, 8, 8), torch.arange(3 * cap) % 10
    q = augment._quality(params, x, y, spec)
    assert seen == [cap] and q["scored"] == f"{cap} of its {3 * cap} images drawn at random"
    assert augment._quality(params, x, y, spec)["fd"] == q["fd"]  # the same draw
    assert augment._quality(params, x[:cap], y[:cap], spec)["scored"] == "all its images"
    few = augment._quality(params, x[:5], y[:5], spec)
    assert few == {"not_measured": "5 images, too few for evaluate.k=5 neighbours"}
    req = request(params, families=["gan"], per_class=1, class_ratios={c: 0.0 for c in range(5, 10)},
                  out_dir=str(tmp / "aug"), name="five")  # fmt: skip
    path = generate(params, req)
    assert json.loads((path / "manifest.json").read_text())["quality"] == few
    assert (
        "This draw's own quality: not measured (5 images, too few for evaluate.k=5"
        in (path / "README.md").read_text()
    )


def test_card_and_manifest_quote_the_evaluations_own_files(evaluated):
    """The figures the card quotes are read from what tasks/evaluate.py and tasks/usefulness.py
    wrote (a change in their files' structure shows here, not as a silent "not measured")."""
    from genzoo.tasks import usefulness

    tmp, params, _ = evaluated
    # the whole training split and the pulled dataset's recipe only: no generator retrained on a
    # subset, no teacher trained, classifiers of a few steps (the figures' form is the same)
    assert params.augment.recipe == "plain"
    u = params.usefulness
    update = {"fractions": [1.0], "recipes": ["plain"], "cnn": u.cnn.model_copy(update={"steps": 20})}
    params = params.model_copy(update={"usefulness": u.model_copy(update=update)})
    usefulness.reference(params)
    measured = usefulness.measure_family(params, "gan")
    quality = json.loads((tmp / "runs" / "evaluation" / "gan" / "quality.json").read_text())
    req = request(params, families=["gan", "vae"], per_class=2, out_dir=str(tmp / "aug"), name="quoted")
    m = json.loads((generate(params, req) / "manifest.json").read_text())
    gan = m["measured"]["gan"]
    assert gan["quality"]["figures"]["fd"] == {"mean": quality["fd"], "ci95": quality["ci95"]["fd"]}
    assert gan["quality"]["memorization"]["ratio"]["mean"] == quality["memorization"]["ratio"]
    for c, s in measured["tstr"].items():
        assert gan["usefulness"]["tstr"][c]["synthetic"] == {"mean": s["mean"], "ci95": s["ci95"]}
        assert gan["usefulness"]["tstr"][c]["real"] is not None
    assert (
        gan["usefulness"]["lift"]["1.0"]["cnn"]["mean"]
        == measured["augmentation"]["1.0"]["cnn"]["lift"]["mean"]
    )
    assert m["measured"]["vae"]["usefulness"] is None and m["measured"]["vae"]["quality"] is not None
    card = (tmp / "aug" / "quoted" / "README.md").read_text()
    tstr = measured["tstr"]["logistic"]
    assert f"| logistic | {100 * tstr['mean']:.1f}% ± {100 * tstr['ci95']:.1f} |" in card
    assert "With recipe `plain`, adding 1 synthetic image(s) per real one to 100% of the real" in card
    vae = card.split("### vae")[1].split("## Memorization")[0]
    assert "Usefulness: not measured" in vae and f"fd {quality['fd']:.4g}" in card.split("### vae")[0]
    # the draw's own figures are the two families' together: a section of their own, not vae's
    assert "This draw's own quality" in card.split("### This dataset (gan + vae)")[1]
    assert "This draw's own quality" not in vae.split("### This dataset")[0]
    # images that lowered every classifier's mean accuracy: a warning in the manifest and the card
    lifts = [v["mean"] for per in gan["usefulness"]["lift"].values() for v in per.values()]
    warned = [w for w in m.get("warnings", []) if w.startswith("gan: adding its images lowered")]
    assert len(warned) == (max(lifts) < -0.005) and all(f"> **Warning:** {w}" in card for w in warned)
    # `best` by the measured lift itself: the one family measured, its figure from usefulness.json
    by_lift = request(
        params, families=["best"], metric="lift", per_class=1, out_dir=str(tmp / "aug"), name="lift"
    )
    m = json.loads((generate(params, by_lift) / "manifest.json").read_text())
    lift = measured["recipes"]["plain"]["augmentation"]["1.0"]["cnn"]["lift"]["mean"]
    assert list(m["families"]) == ["gan"] and m["best"]["figures"] == {"gan": lift}
    assert m["best"]["metric"] == "lift" and m["best"]["recipe"] == "plain"
    card = (tmp / "aug" / "lift" / "README.md").read_text()
    chosen = (
        "by lift, from the families measured for usefulness (gan); every measured family's figure: "
        f"gan {100 * lift:+.1f} points |"
    )
    assert f"| chosen as `best` | {chosen}" in card
    # of several, chosen on the validation split: the card quotes the test lifts and says so
    two = m | {
        "best": m["best"]
        | {
            "figures": {"gan": 0.012, "vae": 0.004},
            "measured": ["gan", "vae"],
            "chosen_on": "validation",
            "validation_figures": {"gan": -0.002, "vae": 0.006},
        }
    }
    assert ("gan +1.2 points, vae +0.4 points (test-split lifts; chosen by the lift on the validation split: "
            "gan -0.2 points, vae +0.6 points; the same classifiers scored both splits, so the winner's test "
            "lift may still lean a little high) |") in render_card(two)  # fmt: skip
    older = two | {
        "best": {k: v for k, v in two["best"].items() if k not in ("chosen_on", "validation_figures")}
    }
    assert (
        "(chosen by the same test-split figures the card quotes: the winner's lift leans high)"
        in render_card(older)
    )
    passed = two | {  # a family `best` passed over (labels_mostly_wrong): the card says why
        "best": two["best"]
        | {"metric": "fd_rank", "figures": {"gan": 1.5, "vae": 1.0},
           "unfit": {"vae": "its images follow their label 12% of the time (class_accuracy)"}}
    }  # fmt: skip
    said = "gan 1.5, vae 1 (passed over: its images follow their label 12% of the time (class_accuracy)) |"
    assert said in render_card(passed)
    # two sampling seeds (the quick profile's): the card says how wide their intervals are, as the report
    assert "over the classifier seeds (an interval of two values, a quick run's, spans 12.7" in (
        card.replace("\n", " ")
    )
    # the classifiers it describes are those measured (cnn and logistic here, not cnn_plain)
    assert "(`cnn`: a small CNN with classical augmentation" in card
    assert "`logistic`: a logistic regression on pixels)." in card and "cnn_plain" not in card
    # both files name the model they measured; measured of an earlier model of the family
    # (trained again since), they are quoted by no card and chosen from by no `best`
    from genzoo.models.base import sha256_file

    gan_dir = tmp / "runs" / "evaluation" / "gan"
    model_sha = sha256_file(tmp / "runs" / "gan" / "model.safetensors")
    kept = {f: (gan_dir / f).read_text() for f in ("quality.json", "usefulness.json")}
    for f, text in kept.items():
        assert json.loads(text)["model_sha256"] == model_sha, f
        (gan_dir / f).write_text(json.dumps({**json.loads(text), "model_sha256": "0" * 64}))
    try:
        again = request(params, families=["gan"], per_class=1, out_dir=str(tmp / "aug"), name="retrained")
        m = json.loads((generate(params, again) / "manifest.json").read_text())
        assert m["measured"]["gan"]["quality"] is None and m["measured"]["gan"]["usefulness"] is None
        card = (tmp / "aug" / "retrained" / "README.md").read_text()
        assert "Quality: not measured for this model (" in card and f"{quality['fd']:.4g}" not in card
        with pytest.raises(FileNotFoundError, match="augment.metric: lift needs a family measured"):
            generate(params, by_lift.model_copy(update={"name": "lift-again"}))
    finally:
        for f, text in kept.items():
            (gan_dir / f).write_text(text)
    # measured against other real-data rows than the current reference: quoted by no card, chosen by no `best`
    (gan_dir / "usefulness.json").write_text(json.dumps({**json.loads(kept["usefulness.json"]),
                                                         "reference_key": "other settings"}))  # fmt: skip
    try:
        again = request(params, families=["gan"], per_class=1, out_dir=str(tmp / "aug"), name="other-ref")
        m = json.loads((generate(params, again) / "manifest.json").read_text())
        assert m["measured"]["gan"]["quality"] is not None and m["measured"]["gan"]["usefulness"] is None
        assert m["measured"]["gan"]["other_reference"].endswith("gan/usefulness.json")
        card = (tmp / "aug" / "other-ref" / "README.md").read_text()
        assert "Usefulness: not measured against the current reference rows (`" in card
        with pytest.raises(FileNotFoundError, match="augment.metric: lift needs a family measured"):
            generate(params, by_lift.model_copy(update={"name": "lift-other-ref"}))
    finally:
        (gan_dir / "usefulness.json").write_text(kept["usefulness.json"])


def test_confidence_filter_keeps_only_confident_images_or_fails_clearly(evaluated):
    from genzoo.models.evaluator import load_evaluator

    tmp, params, _ = evaluated
    req = request(params, families=["vae"], per_class=3, min_confidence=0.3, out_dir=str(tmp / "aug"),
                  name="confident", max_draws=50)  # fmt: skip
    path = generate(params, req)
    m = json.loads((path / "manifest.json").read_text())
    net = load_evaluator(tmp / "runs" / "evaluation" / "evaluator" / "evaluator.json")
    ds = load_dataset(path)
    _, probs = net.embed(ds.images)
    assert (probs[torch.arange(len(ds)), ds.labels] >= 0.3).all()
    assert m["filters"]["drawn"] >= m["n"] and m["filters"]["min_confidence"] == 0.3
    # the evaluator chose the images: its class accuracy is said not to measure them; judges trained
    # apart from it score the draw's labels and distance
    q = m["quality"]
    assert q["class_accuracy_chosen"] is True and set(q["spaces"]) == {"pca", "mlp", "lenet", "random_cnn"}
    assert 0 <= q["spaces"]["lenet"]["class_accuracy"] <= 1 and "class_accuracy" not in q["spaces"]["pca"]
    card = (path / "README.md").read_text()
    assert "so it leans high, not a measure" in card and "lenet fd " in card  # (0.3: not 1 by construction)
    assert "class_accuracy_chosen" not in card  # the flag, not a figure
    assert "the other judges' class accuracy is" in card
    impossible = req.model_copy(update={"min_confidence": 0.999999, "max_draws": 1, "name": "none"})
    with pytest.raises(ValueError, match="passed the filters.*min_confidence"):
        generate(params, impossible)
    assert not (tmp / "aug" / "none").exists()


def test_the_hf_format_without_its_extra_fails_before_sampling(trained, monkeypatch):
    tmp, params = trained
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `pip install genzoo[hf]` had not run
    req = AugmentRequest(families=["gan"], formats=["npz", "hf"], out_dir=str(tmp / "no-hf"))
    with pytest.raises(MissingExtra, match=r"augment.formats: the hf format .* pip install 'genzoo\[hf\]'"):
        generate(params, req)
    assert not (tmp / "no-hf").exists()


def test_a_class_the_data_lacks_fails_before_the_filters_and_teachers_are_made(trained, monkeypatch):
    """`class_ratios` naming a class the data lacks was found after the teachers trained (ten CNNs
    under the distil recipe)."""
    import genzoo.tasks.augment as A

    tmp, params = trained

    def made(*args, **kwargs):
        raise AssertionError("the filters or teachers were made before the request was checked")

    monkeypatch.setattr(A._Filters, "__init__", made)
    monkeypatch.setattr(A._Teacher, "__init__", made)
    req = request(params, families=["gan"], class_ratios={12: 1.0}, out_dir=str(tmp / "twelve"))
    with pytest.raises(ValueError, match=r"augment.class_ratios: classes \[12\] do not exist"):
        generate(params, req)
    assert not (tmp / "twelve").exists()


def test_copy_filter_rejects_training_images_and_keeps_fresh_ones(trained):
    tmp, params = trained
    f = _Filters(params, request(params, families=["gan"], min_confidence=0.0, reject_copies=True))
    train = real_dataset(params.data.prepared_dir, "train").tensors[0][:20]
    assert not f.keep(train, torch.zeros(20, dtype=torch.long)).any()
    assert f.rejected["copies"] == 20
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 17, (20, 1, 8, 8), generator=g).float() / 16
    assert f.keep(noise, torch.zeros(20, dtype=torch.long)).all()


def test_loader_checks_the_hash_and_mix_adds_synthetic_at_a_ratio(trained):
    tmp, params = trained
    path = generate(
        params, AugmentRequest(families=["gan"], per_class=5, out_dir=str(tmp / "aug"), name="mixme")
    )
    ds = load_dataset("mixme", root=tmp / "aug")
    x, y = ds[3]
    assert len(ds) == 50 and x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)
    real = real_dataset(params.data.prepared_dir, "train")
    mixed = mix(real, ds, ratio=0.02)
    assert len(mixed) == len(real) + round(0.02 * len(real))
    assert isinstance(real[0][1], int)  # the item format of the synthetic set: they batch together
    xb, yb = next(iter(torch.utils.data.DataLoader(mixed, batch_size=len(mixed))))
    assert xb.shape == (len(mixed), 1, 8, 8) and yb.dtype == torch.int64
    assert len(mix(real, ds, 0.0)) == len(real)
    with pytest.raises(ValueError, match="needs .* synthetic images"):
        mix(real, ds, ratio=1.0)
    with np.load(path / "images.npz") as z:
        parts = {k: z[k] for k in z.files}
    parts["labels"][0] = (parts["labels"][0] + 1) % 10  # one label changed behind the manifest's back
    np.savez_compressed(path / "images.npz", **parts)
    with pytest.raises(ValueError, match="does not match manifest.json"):
        load_dataset(path)
    with pytest.raises(FileNotFoundError, match="not a genzoo synthetic dataset"):
        load_dataset(tmp)  # a folder, not a dataset's
    # a relative path from elsewhere: both places looked at named (it said data/augment/data/augment/x)
    with pytest.raises(FileNotFoundError, match=r"data/augment/x: no such dataset: neither a folder \(from "):
        load_dataset("data/augment/x", root=tmp / "nowhere")
    with pytest.raises(ValueError, match=r"the prepared real data .* genzoo.real_dataset\("):
        load_dataset(params.data.prepared_dir)  # (its loader is another)


# ----------------------------------------------------------------------------- what augment may replace


def _augment_cli(tmp, params, *args):
    """The real command line, in its own process: `genzoo augment ...` on the trained models."""
    pfile = tmp / "params-cli.yaml"
    pfile.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    cmd = [str(BIN / "genzoo"), "augment", "-q", "--params", str(pfile), "--families", "gan",
           "--per-class", "2", "--no-reject-copies", *args]  # fmt: skip
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)


def test_augment_refuses_a_folder_it_did_not_write_and_keeps_it(trained):
    tmp, params = trained
    out = tmp / "cli-out"
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "notes.txt").write_text("my notes")
    r = _augment_cli(tmp, params, "-o", f"augment.out_dir={out}", "--name", "notes")
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"genzoo augment: error: {out.resolve() / 'notes'}: not a genzoo synthetic-dataset"
    ), last
    assert (out / "notes" / "notes.txt").read_text() == "my notes"
    assert [p.name for p in out.iterdir()] == ["notes"] and [p.name for p in (out / "notes").iterdir()] == [
        "notes.txt"
    ]
    # its own dataset it replaces, and one written before the mark (a manifest of the old form)
    r = _augment_cli(tmp, params, "-o", f"augment.out_dir={out}", "--name", "mine")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "mine" / "manifest.json").read_text())
    assert (m["made_by"], m["kind"]) == ("genzoo", "synthetic-dataset")
    legacy = {
        k: v
        for k, v in m.items()
        if k not in ("made_by", "kind", "version", "card_sha256", "manifest_sha256")
    }
    (out / "mine" / "manifest.json").write_text(json.dumps(legacy))
    req = AugmentRequest(families=["gan"], per_class=2, reject_copies=False, out_dir=str(out), name="mine")
    assert json.loads((generate(params, req) / "manifest.json").read_text())["made_by"] == "genzoo"


def test_links_in_the_export_path_are_refused_and_nothing_is_written(trained):
    tmp, params = trained
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    link = tmp / "linked-out"
    link.symlink_to(elsewhere, target_is_directory=True)
    req = AugmentRequest(families=["gan"], per_class=2, reject_copies=False, out_dir=str(link), name="ds")
    with pytest.raises(ValueError, match=f"augment.out_dir {link}: is a symbolic link"):
        generate(params, req)
    assert list(elsewhere.iterdir()) == []
    # the dataset's own folder a link to somewhere else
    out = tmp / "named-out"
    out.mkdir()
    (out / "ds").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ValueError, match=f"{out.resolve() / 'ds'}: is a symbolic link"):
        generate(params, req.model_copy(update={"out_dir": str(out)}))
    assert list(elsewhere.iterdir()) == [] and (out / "ds").is_symlink()
    assert [p.name for p in out.iterdir()] == ["ds"]


def test_a_teacher_recipe_writes_soft_labels_and_counts_what_it_dropped(trained):
    """The dataset a user pulls, made with the teacher recipe: a teacher trained on the real
    split drops images it is unsure of (its agreement filter is tested on the measurement's
    side, tests/tasks/test_usefulness.py, with the same code), the kept ones carry its soft
    labels, and the manifest names the recipe, the teacher's hash and the counts."""
    tmp, params = trained
    req = AugmentRequest(families=["vae"], per_class=4, seed=2, recipe="teacher", out_dir=str(tmp / "taught"))
    path = generate(params, req)
    m = json.loads((path / "manifest.json").read_text())
    assert m["recipe"]["name"] == "teacher" and m["recipe"]["teacher"] is True
    assert m["recipe"]["teacher_confidence"] == 0.3 and m["recipe"]["min_confidence"] == 0.0  # each its own
    assert len(m["recipe"]["teacher_model"]["sha256"]) == 64 and m["soft_labels"] is True
    f = m["filters"]
    assert f["drawn"] == f["kept"] + sum(f["rejected"].values()) and f["kept"] == 40
    assert f["rejected"]["teacher_unsure"] > 0 and "teacher_disagrees" not in f["rejected"]  # agree: false
    card = (path / "README.md").read_text()  # every reason an image was dropped, not only copies
    assert f"Also dropped: {f['rejected']['teacher_unsure']} below the teacher's confidence of 0.3.\n" in card
    assert f"Kept: 40 of {f['drawn']} drawn." in card
    ds = load_dataset(path)
    soft = ds.soft_labels.numpy()
    assert soft.shape == (40, 10) and np.allclose(soft.sum(1), 1, atol=1e-4)
    assert (soft.argmax(1) == np.asarray(ds.labels)).mean() > 0.5  # the teacher mostly agrees
    plain = generate(
        params, AugmentRequest(families=["vae"], per_class=4, seed=2, out_dir=str(tmp / "plain"))
    )
    assert load_dataset(plain).soft_labels is None
    # two teachers voting (seeds TEACHER_SEED and twice it): the manifest names both seeds and
    # hashes both networks, and every kept image carries the vote's soft label
    vote = generate(params, req.model_copy(update={"recipe": "vote", "out_dir": str(tmp / "vote")}))
    v = json.loads((vote / "manifest.json").read_text())["recipe"]
    assert v["teachers"] == 2 and v["teacher_model"]["seed"] == [10_000, 20_000]
    assert m["recipe"]["teacher_model"]["seed"] == 10_000
    assert v["teacher_model"]["sha256"] != m["recipe"]["teacher_model"]["sha256"]
    voted_ds = load_dataset(vote)
    voted = voted_ds.soft_labels.numpy()
    assert voted.shape[1] == 10 and np.allclose(voted.sum(1), 1, atol=1e-4)
    # soft_weight 0.5: the same images (same draws, same filters), labels half the vote's, half one-hot
    mix = load_dataset(
        generate(params, req.model_copy(update={"recipe": "vote_mix", "out_dir": str(tmp / "mix")}))
    )
    assert np.array_equal(np.asarray(mix.images), np.asarray(voted_ds.images))
    one_hot = np.eye(10)[np.asarray(mix.labels)]
    assert np.allclose(mix.soft_labels.numpy(), 0.5 * voted + 0.5 * one_hot, atol=1e-6)
    # items with soft targets, as the measured recipe trains: the dataset's soft labels, the real
    # split's one-hot (and a plain dataset's), mixed in one DataLoader; mixing kinds is refused
    from genzoo.tasks.augment import mix as mix_

    taught = load_dataset(path, targets="soft")
    assert load_dataset(path.name, root=path.parent, targets="soft")[0][1].shape == (10,)  # by name too
    assert torch.equal(taught[3][1], ds.soft_labels[3].float()) and taught[3][0].shape == (1, 8, 8)
    assert torch.equal(load_dataset(plain, targets="soft")[0][1], torch.eye(10)[load_dataset(plain)[0][1]])
    real = real_dataset(params.data.prepared_dir, "train", targets="soft")
    assert real[0][1].shape == (10,) and real[0][1].sum() == 1
    both = mix_(real, taught, 0.02)
    images, targets = next(iter(torch.utils.data.DataLoader(both, batch_size=100, shuffle=False)))
    assert images.shape == (100, 1, 8, 8) and targets.shape == (100, 10) and targets.dtype == torch.float32
    with pytest.raises(ValueError, match="load both with the same targets"):
        mix_(real_dataset(params.data.prepared_dir, "train"), taught, 0.02)
    with pytest.raises(ValueError, match="targets: expected one of label, soft, got 'probs'"):
        load_dataset(path, targets="probs")
    # the card's snippets name the folder from the project's folder it was written from
    card = (path / "README.md").read_text()
    here = Path.cwd().resolve()
    assert f'root = "{path.relative_to(here) if path.is_relative_to(here) else path.name}"' in card
    assert (
        'soft = genzoo.load_dataset(root, targets="soft")' in card and "at the recipe's temperature" in card
    )


def test_a_perturb_recipe_makes_variations_of_real_images(trained):
    from genzoo.tasks.data import load_split

    tmp, params = trained
    path = generate(params, AugmentRequest(families=["vae"], per_class=3, seed=0, recipe="near",
                                           reject_copies=False, out_dir=str(tmp / "near")))  # fmt: skip
    m = json.loads((path / "manifest.json").read_text())
    assert m["recipe"]["mode"] == "perturb" and m["recipe"]["strength"] == 0.3 and m["n"] == 30
    again = generate(params, AugmentRequest(families=["vae"], per_class=3, seed=0, recipe="near",
                                            reject_copies=False, out_dir=str(tmp / "near2")))  # fmt: skip
    assert json.loads((again / "manifest.json").read_text())["sha256"] == m["sha256"]  # seeded
    x, _, _ = load_split(params.data.prepared_dir, "train")
    with np.load(path / "images.npz") as z:
        images = torch.from_numpy(z["images"]).float() / 16
    nearest = torch.cdist(images.flatten(1), x.flatten(1)).min(1).values
    fresh = generate(params, AugmentRequest(families=["vae"], per_class=3, seed=0, reject_copies=False,
                                            out_dir=str(tmp / "fresh")))  # fmt: skip
    with np.load(fresh / "images.npz") as z:
        sampled = torch.from_numpy(z["images"]).float() / 16
    assert nearest.mean() < torch.cdist(sampled.flatten(1), x.flatten(1)).min(1).values.mean()


def test_nearest_train_in_blocks_equals_the_whole_matrix(monkeypatch):
    """The near-copy check takes distances a block of rows at a time (a whole training set
    against itself grows with its square); a few rows per block give the same distances, and
    the copy radius comes from every image of a small set, a seeded sample of a large one."""
    import genzoo.tasks.sample as aug  # the augment stage's and the usefulness measurement's test

    g = torch.Generator().manual_seed(0)
    train, x = torch.rand(500, 64, generator=g).double(), torch.rand(90, 64, generator=g).double()
    whole = torch.cdist(train, train)
    whole.fill_diagonal_(float("inf"))
    monkeypatch.setattr(aug, "BLOCK_BYTES", 8 * 500 * 7)  # 7 rows at a time
    assert torch.equal(aug.nearest_train(train, train, torch.arange(500)), whole.min(1).values)
    assert torch.equal(aug.nearest_train(x, train), torch.cdist(x, train).min(1).values)
    assert aug.copy_radius(train) == float(torch.quantile(whole.min(1).values, 0.01))  # all 500 rows
    monkeypatch.setattr(aug, "COPY_RADIUS_ROWS", 200)
    sampled = aug.copy_radius(train)
    assert sampled == aug.copy_radius(train) and sampled != float(torch.quantile(whole.min(1).values, 0.01))
    assert abs(sampled / float(torch.quantile(whole.min(1).values, 0.01)) - 1) < 0.25


def test_a_class_left_out_of_a_models_training_gets_none_of_its_images_and_the_card_says_so(
    trained, monkeypatch
):
    """A family trained with exclude_classes (a held-out class) has weights that never saw the
    class: its images for it were drawn and labelled as that class without a word."""
    import genzoo.tasks.augment as aug

    tmp, params = trained
    load = aug.models.load

    def held_out_3(path, *a, **k):
        net = load(path, *a, **k)
        if net.family == "gan":
            net.log_class_prior[3] = float("-inf")  # as training with exclude_classes: [3] leaves it
        return net

    monkeypatch.setattr(aug.models, "load", held_out_3)
    req = AugmentRequest(families=["gan", "vae"], per_class=2, seed=1, out_dir=str(tmp / "aug"), name="held")
    path = generate(params, req)
    with np.load(path / "images.npz") as z:
        labels, source = z["labels"], z["source"]
    assert not ((source == "gan") & (labels == 3)).any() and ((source == "vae") & (labels == 3)).sum() == 2
    m = json.loads((path / "manifest.json").read_text())
    assert m["counts_per_class"][3] == 2 and m["counts_per_source"] == {"gan": 18, "vae": 20}
    assert any("gan was trained without classes 3" in w for w in m["warnings"])
    assert "gan was trained without classes 3" in (path / "README.md").read_text()
    only = AugmentRequest(families=["gan"], per_class=2, class_ratios={c: 0.0 for c in range(10) if c != 3},
                          out_dir=str(tmp / "aug"), name="only-3")  # fmt: skip
    with pytest.raises(ValueError, match=r"every class asked for was left out of the training of gan \("):
        generate(params, only)
    assert not (tmp / "aug" / "only-3").exists()
    # beside a family that saw it, the class comes from that family alone
    both = only.model_copy(update={"families": ["gan", "vae"], "name": "both-3"})
    m = json.loads((generate(params, both) / "manifest.json").read_text())
    assert m["counts_per_source"] == {"vae": 2} and m["counts_per_class"][3] == 2


def test_best_by_lift_chooses_on_the_validation_split_and_quotes_the_test_lift(tmp_path, caplog):
    """The family with the largest test lift of several is the maximum of noisy figures (its lift
    leans high): where every family's lift was measured on the validation split too, `best` is
    chosen there, and the test lifts stay what is quoted; one family without it: chosen on test."""
    params = validate(tiny_params(tmp_path, families=["pixelcnn", "realnvp"]))
    folder = tmp_path / "runs" / "evaluation"

    def useful(test: float, val: float | None) -> str:
        cnn = {"lift": {"mean": test, "ci95": 0.005}} | (
            {"val_lift": {"mean": val}} if val is not None else {}
        )
        return json.dumps({"recipes": {"plain": {"augmentation": {"0.1": {"cnn": cnn}}}}})

    for f, test, val in (("pixelcnn", 0.012, -0.002), ("realnvp", 0.004, 0.006)):
        (folder / f).mkdir(parents=True)
        (folder / f / "usefulness.json").write_text(useful(test, val))
    with caplog.at_level("INFO", logger="genzoo.augment"):
        choice = best_choice(params, "lift")
    assert choice["family"] == "realnvp" and choice["chosen_on"] == "validation"
    assert choice["figures"] == {"pixelcnn": 0.012, "realnvp": 0.004}  # the test lifts, quoted
    assert choice["validation_figures"] == {"pixelcnn": -0.002, "realnvp": 0.006}
    assert (
        "`best` is realnvp, the largest measured lift with recipe plain (chosen on the validation split)"
        in (caplog.text)
    )
    (folder / "pixelcnn" / "usefulness.json").write_text(useful(0.012, None))  # measured before val lifts
    choice = best_choice(params, "lift")
    assert (choice["family"], choice["chosen_on"], choice["validation_figures"]) == ("pixelcnn", "test", None)


def test_best_by_lift_passes_over_a_lift_of_pools_the_filters_emptied():
    """Every pool emptied by the filters: a lift of 0 by construction, which beat a family's
    measured -0.5 points for `best`."""
    from genzoo.tasks.augment import emptied_lift, measured_lift

    def useful(lift, filters):
        return {"recipes": {"distil": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": lift}}}},
                                       "filters": {"0.1": filters}}}}  # fmt: skip

    assert measured_lift(useful(-0.005, {"empty_pools": 0, "emptied": []}), "distil") == -0.005
    emptied = useful(0.0, {"empty_pools": 3, "emptied": []})
    assert measured_lift(emptied, "distil") is None
    assert emptied_lift(emptied, "distil") == "the filters left 3 pool(s) without a synthetic image"
    assert measured_lift(useful(0.01, {"empty_pools": 0, "emptied": [2]}), "distil") is None
    assert emptied_lift({"recipes": {}}, "distil") is None


def test_the_stage_prints_the_dataset_folder_relative_to_the_project(trained, monkeypatch, capsys):
    """`dvc repro` shows each stage's output between its log lines: augment's was the absolute
    path of this machine, detect's a path in the project."""
    import genzoo.tasks.augment as aug

    tmp, params = trained
    monkeypatch.chdir(tmp)
    req = params.augment.model_copy(update={"families": ["gan"], "per_class": 2, "name": "printed",
                                            "out_dir": str(tmp / "aug")})  # fmt: skip
    monkeypatch.setattr(aug, "stage_args", lambda *a, **k: (params.model_copy(update={"augment": req}), None))
    capsys.readouterr()
    aug.main([])
    assert capsys.readouterr().out == "aug/printed\n"


def test_exact_duplicates_in_the_training_set_leave_the_copy_radius_and_floor_above_zero():
    """A training set where 5% of the images appear twice: their distance 0 no longer sets the
    1st percentile, so the radius stays that of distinct images, an exact copy of a training
    image is rejected as one, and the memorization floor counts it."""
    from genzoo.metrics.quality import copy_floor, memorization
    from genzoo.tasks.sample import Recipe, copy_radius, synthesize

    g = torch.Generator().manual_seed(0)
    distinct = torch.rand(400, 64, generator=g).double()
    train = torch.cat([distinct, distinct[:20]])  # 20 exact duplicates: 40 rows at distance 0
    radius = copy_radius(train)
    assert radius > 0 and abs(radius / copy_radius(distinct) - 1) < 0.1  # (its 40 twins left out)
    assert abs(copy_floor(train.numpy()) / copy_floor(distinct.numpy()) - 1) < 0.1
    x, y = train.float().view(-1, 1, 8, 8), torch.zeros(len(train), dtype=torch.long)
    copy = lambda labels, seed: x[: len(labels)]  # noqa: E731  (a copier of the training images)
    made = synthesize(copy, Recipe(synthetic_per_real=0.1), (x, y), 1, seed=0, copies_within=radius)
    assert made.counts["kept"] == 0 and made.counts["rejected"]["copies"] == made.counts["drawn"] > 0
    mem = memorization(train[:30].numpy(), train.numpy(), torch.rand(30, 64, generator=g).double().numpy())
    assert mem["copies"] == 1.0
    # MNIST-sized images on the 256-level grid: cdist's distance between twins is rounding, not 0
    big = torch.randint(0, 256, (400, 784), generator=g).double() / 255
    twins = torch.cat([big, big[:20]])
    assert abs(copy_radius(twins) / copy_radius(big) - 1) < 0.1
    assert abs(copy_floor(twins.float().numpy()) / copy_floor(big.float().numpy()) - 1) < 0.1


def test_a_dataset_its_filters_cannot_fill_says_what_to_change_for_the_filter_that_rejected_most():
    from genzoo.tasks.augment import _too_few

    msg = _too_few(
        "ddpm", 1, 80, 200, 2053, {"low_confidence": 0, "copies": 3, "teacher_disagrees": 12683}, 10
    )
    assert msg.startswith(
        "augment: class 1 of ddpm: only 80 of 200 images passed the filters after 2,053 draws"
    )
    assert "12,683 teacher disagrees, 3 copies" in msg and "--recipe plain" in msg
    assert "min_confidence" not in msg and msg.endswith("raise augment.max_draws (-o augment.max_draws=N)")
    assert "turn off augment.reject_copies" in _too_few(
        "gan", 0, 0, 5, 50, {"low_confidence": 1, "copies": 49}, 10
    )


def test_a_class_its_pass_rate_cannot_fill_fails_after_one_round_and_a_slow_one_is_filled():
    """A barely trained model whose class 1 passes 1 draw in 25 fails after the first 200 draws of
    it, not after its whole budget of 2,000; a class that passes 1 in 4 is drawn until filled."""
    from types import SimpleNamespace

    from genzoo.tasks.augment import _draw

    net = SimpleNamespace(family="toy", spec=SimpleNamespace(levels=17))
    asked = []

    def make(yb):
        asked.append(len(yb))
        return torch.rand(len(yb), 1, 8, 8)

    class Filters:  # class 0 always passes; class 1 one draw in ``every``
        def __init__(self, every):
            self.every, self.rejected, self.seen = every, {"teacher_disagrees": 0}, 0

        def keep(self, x, y):
            ok = (y == 0) | ((self.seen + torch.arange(len(y))) % self.every == 0)
            self.seen += len(y)
            self.rejected["teacher_disagrees"] += int((~ok).sum())
            return ok

    rate = r"after 200 draws of it, at which rate its budget \(2,000 draws\) would keep about 80 "
    with pytest.raises(ValueError, match=rf"class 1 of toy: only 8 of 200 images passed the filters {rate}"):
        _draw(net, make, np.array([200, 200]), Filters(25), max_draws=10, batch=500)
    assert sum(asked) == 400  # one round
    x, y, n = _draw(net, make, np.array([200, 200]), Filters(4), max_draws=10, batch=500)
    assert (y == 1).sum() == 200 and 200 + 600 <= n <= 200 + 2000


def test_a_per_class_count_capped_by_sample_pixels_is_said(caplog):
    """Under the quick profile `--per-class 3000` gave 800 images per class without a word."""
    from genzoo.models.base import DataSpec
    from genzoo.tasks.augment import class_counts
    from genzoo.tasks.config import AugmentParams

    spec = DataSpec(1, 8, 8, 17, 10)
    assert list(class_counts(AugmentParams(per_class=3000), spec)) == [3000] * 10
    assert "augment:" not in caplog.text
    counts = class_counts(AugmentParams(per_class=3000, sample_pixels=51200), spec)
    assert list(counts) == [800] * 10
    assert (
        "augment: 800 images per class, not 3000: augment.sample_pixels=51200 caps a draw of 1x8x8"
        in caplog.text
    )


def test_best_before_any_evaluation_names_the_commands_with_the_profile(tmp_path):
    """`genzoo augment --profile quick` before any run said to run `genzoo run` or `genzoo
    evaluate` first: without the profile, those would train and evaluate at the default settings."""
    from genzoo.tasks.augment import best_choice
    from genzoo.tasks.config import validate
    from tests.conftest import tiny_params

    params = validate(tiny_params(tmp_path, families=["vae"]))
    params._profile = "quick"
    with pytest.raises(
        FileNotFoundError, match=r"run `genzoo run --profile quick` or `genzoo evaluate --profile quick`"
    ):
        best_choice(params, "fd_rank")


def test_each_dropped_image_is_counted_once_under_the_first_filter_that_dropped_it():
    """The confidence filter counted the images the teacher had already dropped: the manifest's
    rejections and the kept images added up to more than were drawn."""
    from types import SimpleNamespace

    from genzoo.tasks.augment import _Filters

    x, y = torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    f = object.__new__(_Filters)
    f.min_confidence, f.train, f.rejected = 0.9, None, {"low_confidence": 0, "copies": 0}
    f.teacher = SimpleNamespace(rejects=lambda x, y: {"teacher_disagrees": torch.tensor([1, 1, 0, 0]).bool()})
    f.net = SimpleNamespace(embed=lambda x: (None, torch.full((4, 4), 0.25)))  # every image unsure
    kept = f.keep(x, y)
    assert int(kept.sum()) == 0 and f.rejected == {"teacher_disagrees": 2, "low_confidence": 2, "copies": 0}


def test_a_dataset_inside_the_runs_folder_is_refused_and_a_missing_npz_is_said(trained):
    """A dataset written into runs/vae/ would be removed by the next training, `dvc repro` or
    `dvc checkout` of train@vae: refused before any work. A dataset whose images.npz went
    missing says so (a bare FileNotFoundError before)."""
    import shutil

    from genzoo.tasks.data import DataError

    tmp, params = trained
    for inside in (Path(params.run.runs_dir) / "vae", Path(params.run.checkpoints_dir)):
        req = AugmentRequest(families=["gan"], per_class=1, out_dir=str(inside), name="mine")
        with pytest.raises(ValueError, match="inside run.(runs|checkpoints)_dir .* choose a folder outside"):
            generate(params, req)
        assert not (inside / "mine").exists()
    path = generate(params, AugmentRequest(families=["gan"], per_class=1, out_dir=str(tmp / "gone")))
    copy = tmp / "gone-copy"
    shutil.copytree(path, copy)
    (copy / "images.npz").unlink()
    with pytest.raises(DataError, match="images.npz: missing \\(the dataset is incomplete\\)"):
        load_dataset(copy)
