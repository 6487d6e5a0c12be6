"""Does synthetic data help a classifier: subsets, the leak-free generator (trained on the
subset only), paired lifts, train-on-synthetic, caching, and the figures' sanity on real data."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from genzoo.tasks import layout
from genzoo.tasks import usefulness as U
from genzoo.tasks.config import ParamsError, load_params, validate
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params


def test_subsets_are_stratified_seeded_and_keep_every_class():
    y = torch.arange(10).repeat_interleave(torch.tensor([120, 130, 125, 128, 122, 127, 126, 124, 129, 121]))
    idx = U.subset(y, 0.1, seed=0)
    counts = torch.bincount(y[idx], minlength=10)
    assert ((counts - torch.bincount(y) * 0.1).abs() <= 0.5).all()
    assert idx.tolist() == sorted(set(idx.tolist()))
    assert torch.equal(idx, U.subset(y, 0.1, seed=0)) and not torch.equal(idx, U.subset(y, 0.1, seed=1))
    assert (torch.bincount(y[U.subset(y, 0.01, seed=0)]) == 5).all()  # at least 5 per class
    assert torch.equal(U.subset(y, 1.0, seed=3), torch.arange(len(y)))


def test_synthetic_labels_follow_the_subsets_class_balance():
    y = torch.tensor([0, 0, 1, 2, 2, 2])
    labels = U.balanced_labels(y, 2.0, 4)
    assert torch.bincount(labels, minlength=4).tolist() == [4, 2, 6, 0]


def test_the_synthetic_pool_holds_no_more_images_than_the_classifier_draws():
    """k is lowered where k x the real images would exceed the synthetic images the CNN draws in
    training (steps x synthetic per batch), so a large dataset is not sampled for nothing; a pool
    under that bound (every shipped recipe on digits) keeps its k."""
    from genzoo.models.base import DataSpec
    from genzoo.models.evaluator import EvaluatorConfig
    from genzoo.tasks.config import Recipe

    spec, cfg = DataSpec(1, 8, 8, 17, 10), EvaluatorConfig(steps=10, batch_size=64)
    big = U.pool_capped(Recipe(synthetic_per_real=10), 1000, spec, cfg)  # 10,000 against 10 x 32 draws
    assert big.synthetic_per_real * 1000 == pytest.approx(320)
    assert torch.bincount(U.balanced_labels(torch.arange(1000) % 10, big.synthetic_per_real, 10)).sum() == 320
    quarter = U.pool_capped(Recipe(synthetic_per_real=10, real_share=0.75), 1000, spec, cfg)
    assert quarter.synthetic_per_real * 1000 == pytest.approx(160)  # 16 synthetic images per batch
    small = Recipe(synthetic_per_real=10)
    assert U.pool_capped(small, 30, spec, cfg) is small  # 300 <= 320: unchanged
    assert U.pool_capped(small, 1259, spec, EvaluatorConfig(steps=600, batch_size=64)) is small  # digits


def test_near_copies_of_the_real_images_are_dropped_as_in_the_pulled_dataset():
    """With ``augment.reject_copies`` (on by default) the measurement drops synthetic images
    nearer a real image of the subset than 99% of those are to another, as the augment stage
    drops them from the dataset a user pulls; counted under ``copies``."""
    from genzoo.tasks.config import Recipe
    from genzoo.tasks.sample import copy_radius, synthesize

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8, generator=g), torch.arange(40) % 4

    def draw(labels, seed):  # the first half copies of real images, the rest new ones
        fresh = torch.rand(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(seed))
        return torch.cat([x[: len(labels) // 2], fresh[len(labels) // 2 :]])

    kept = synthesize(draw, Recipe(), (x, y), 4, seed=1)
    dropped = synthesize(draw, Recipe(), (x, y), 4, seed=1, copies_within=copy_radius(x.flatten(1).double()))
    assert len(kept.y) == 40 and kept.rejected == {}
    assert dropped.rejected == {"copies": 20} and torch.equal(dropped.x, kept.x[20:])
    # (its labels class by class: every image of classes 0 and 1 a copy)
    assert dropped.counts == {"drawn": 40, "kept": 20, "rejected": {"copies": 20}, "emptied": [0, 1]}
    assert load_params("params.yaml").augment.reject_copies  # the default: measured the way it is pulled


def test_bad_usefulness_params_fail_clearly(tmp_path):
    for block, key in [
        ({"fractions": [0.0, 1.0]}, "usefulness.fractions"),
        ({"families": ["nope"]}, "usefulness.families"),
        ({"train": {"stepz": 3}}, "usefulness.train"),
        ({"seeds": 1}, "usefulness.seeds"),
        ({"classifiers": ["svm"]}, "usefulness.classifiers"),
        ({"recipes": ["plain", "nope"]}, r"usefulness.recipes\[1\]: no recipe 'nope'"),
        ({"subset_seeds": []}, "usefulness.subset_seeds"),
    ]:
        raw = tiny_params(tmp_path, families=["gan"], useful=True)
        raw["usefulness"] = {**raw["usefulness"], **block}
        with pytest.raises(ParamsError, match=key):
            validate(raw)
    for recipe, key in [
        ({"teachers": 0}, "recipes.mine.teachers"),
        ({"teachers": 2.5}, "recipes.mine.teachers"),
        ({"synthetic_per_real": 0}, "recipes.mine.synthetic_per_real"),
        ({"teachr": True}, "recipes.mine.teachr"),
    ]:
        raw = tiny_params(tmp_path, families=["gan"], useful=True)
        raw["recipes"] = {**raw["recipes"], "mine": {"teacher": True, **recipe}}
        with pytest.raises(ParamsError, match=key):
            validate(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("usefulness")
    params = validate(tiny_params(tmp, steps=20, families=["gan"], useful=True))
    prepare(params)
    train_family(params, "gan", progress=False)
    return params


def test_real_figures_are_meaningful_and_noise_teaches_nothing(trained):
    train, test, spec, _ = U._splits(trained)
    real, counts, val = U.accuracies(trained, train, test, spec, val=U._val(trained))
    assert np.mean(real["logistic"]) > 0.9 and counts == []  # digits, pixels, logistic regression
    # the same classifiers on the validation split (what a choice between families is made on)
    assert len(val["logistic"]) == trained.usefulness.seeds and np.mean(val["logistic"]) > 0.9
    assert val["logistic"] != real["logistic"]  # another split, other figures
    assert U.accuracies(trained, train, test, spec).val == {}  # none asked for: none measured
    noise = U.tstr_accuracies(trained, train, test, spec, lambda y, s: torch.rand(len(y), *spec.shape))
    assert noise["logistic"]["mean"] < 0.3  # trained on noise: about chance


def test_generator_is_trained_on_the_subset_only_and_lifts_are_paired(trained, monkeypatch):
    seen = []
    real_fit = layout.fit  # every model variant trains through tasks/layout.py train_variant

    def recording_fit(model, x, y, cfg, **kw):
        seen.append((x.clone(), y.clone()))
        return real_fit(model, x, y, cfg, **kw)

    monkeypatch.setattr(layout, "fit", recording_fit)
    ref = U.reference(trained)
    # its key is what the settings make (the report, `best` and the card judge figures by it)
    assert ref["key"] == layout.usefulness_key(trained)
    other = trained.model_copy(update={"usefulness": trained.usefulness.model_copy(update={"seeds": 3})})
    assert layout.usefulness_key(other) != ref["key"]
    result = U.measure_family(trained, "gan")
    train, _, _, _ = U._splits(trained)
    idx = U.subset(train[1], 0.2, 0)
    assert len(seen) == 1  # one generator retrained (for 20%); 100% uses the pipeline's model
    assert torch.equal(seen[0][0], train[0][idx]) and torch.equal(seen[0][1], train[1][idx])
    assert len(idx) < 0.3 * len(train[1])
    assert result["generators"]["0.2/0"]["n_real"] == len(idx)
    assert result["generators"]["1.0/0"]["subset"] is False
    assert (
        result["recipe"] == "plain" and result["augmentation"] == result["recipes"]["plain"]["augmentation"]
    )
    for name in ("plain", "teacher"):
        for p in ("0.2", "1.0"):
            for c in ("cnn", "logistic"):
                aug = result["recipes"][name]["augmentation"][p][c]
                lifts = np.array(aug["augmented"]["per_seed"]) - np.array(ref["real"][p][c]["per_seed"])
                assert np.allclose(aug["lift"]["per_seed"], lifts)
                assert len(aug["lift"]["per_seed"]) == trained.usefulness.seeds
                if p == "0.2":  # the validation split, where the best is chosen: paired the same way
                    val = np.array(aug["val_augmented"]["per_seed"]) - np.array(
                        ref["real"][p][c]["val"]["per_seed"]
                    )
                    assert (
                        np.allclose(aug["val_lift"]["per_seed"], val) and len(val) == trained.usefulness.seeds
                    )
                else:  # at 100% the pipeline's model chose its weights on that split: no choice made there
                    assert "val_lift" not in aug and "val" not in ref["real"][p][c]
                assert all(0 <= a <= 1 for a in aug["augmented"]["per_seed"])
            f = result["recipes"][name]["filters"][p]
            assert f["drawn"] >= f["kept"] and f["drawn"] - f["kept"] == sum(f["rejected"].values())
    assert (
        result["recipes"]["plain"]["filters"]["0.2"]["drawn"]
        == result["recipes"]["plain"]["filters"]["0.2"]["kept"]
    )
    for name in ("plain", "teacher"):  # PCA + KDE's pools counted as a family's (the report checks them)
        for p in ("0.2", "1.0"):
            f = ref["pca_kde"]["recipes"][name]["filters"][p]
            assert f["drawn"] > 0 and f["drawn"] - f["kept"] == sum(f["rejected"].values())
    # the whole split (1,259 images, k = 1) is more than the 10 steps x 64 synthetic images (half a
    # batch of 128) the CNN draws: the pool holds about those 640 per seed (class balance rounded)
    views = trained.usefulness.cnn.steps * trained.usefulness.cnn.batch_size // 2
    assert len(train[1]) > views
    pool = len(U.balanced_labels(train[1], views / len(train[1]), 10))
    assert abs(pool - views) <= 5
    assert result["recipes"]["plain"]["filters"]["1.0"]["drawn"] == trained.usefulness.seeds * pool
    # the k measured, as the card quotes it: lowered at 100%, the recipe's own at 20%
    k = result["recipes"]["plain"]["synthetic_per_real"]
    assert k == {"0.2": trained.recipe("plain").synthetic_per_real, "1.0": views / len(train[1])}
    assert result["synthetic_per_real"] == k  # the primary recipe's, beside its augmentation figures
    # the teacher's own accuracy, per fraction over subsets; plain has no teacher
    taught = result["recipes"]["teacher"]["teacher_accuracy"]
    assert set(taught) == {"0.2", "1.0"} and all(len(taught[p]["per_seed"]) == 1 for p in taught)
    (x, y), test, spec, _ = U._splits(trained)
    again = U.teachers(trained, (x, y), spec, 0)(trained.recipe("teacher"))  # 100%: the whole split
    assert taught["1.0"]["per_seed"] == [U.vote_accuracy(again, *test)]
    assert "teacher_accuracy" not in result["recipes"]["plain"]
    assert set(result["tstr"]) == {"cnn", "logistic"} and 0 <= result["tstr"]["logistic"]["mean"] <= 1
    assert set(ref["pca_kde"]["augmentation"]) == {"0.2", "1.0"}
    assert set(ref["pca_kde"]["recipes"]) == {"plain", "teacher"}
    on_disk = json.loads((U.evaluation_dir(trained) / "gan" / "usefulness.json").read_text())
    assert on_disk == json.loads(json.dumps(result))

    # cached: same params, data, model and code -> nothing retrained or re-measured
    seen.clear()
    assert U.measure_family(trained, "gan")["key"] == result["key"]
    assert seen == []
    # the subset generator is the same whatever ran before in the process (seeded initial weights)
    stored = (U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2-s0.json").read_text()
    torch.rand(1000)  # move the global RNG, as other work in a reused worker would
    train_, _, spec, manifest = U._splits(trained)
    (U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2-s0.json").unlink()
    U.subset_generator(trained, "gan", 0.2, train_, spec, manifest)
    again_meta = json.loads((U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2-s0.json").read_text())
    assert again_meta["sha256"] == json.loads(stored)["sha256"]
    seen.clear()
    # without the stored figures, the stored subset generator is reused and the figures agree
    (U.evaluation_dir(trained) / "gan" / "usefulness.json").unlink()
    monkeypatch.chdir(Path(trained.run.runs_dir).parent)  # the project's folder, as commands run
    again = U.measure_family(trained, "gan")
    assert seen == [] and again["augmentation"] == result["augmentation"] and again["tstr"] == result["tstr"]
    assert again["generators"]["1.0/0"]["model"] == "runs/gan/model.json"  # no machine's path in a DVC metric


def test_held_out_slice_keeps_every_class_on_both_sides():
    y = torch.tensor([0] * 12 + [1] * 5 + [2] * 2 + [3])
    fit, val = U.held_out_slice(y, 0.2, seed=0)
    assert sorted(fit.tolist() + val.tolist()) == list(range(len(y)))  # disjoint, nothing lost
    assert torch.bincount(y[val], minlength=4).tolist() == [2, 1, 1, 0]  # a fifth, at least one
    assert torch.bincount(y[fit], minlength=4).tolist() == [10, 4, 1, 1]  # never a class's last image
    assert torch.equal(val, U.held_out_slice(y, 0.2, seed=0)[1])
    assert not torch.equal(val, U.held_out_slice(y, 0.2, seed=1)[1])


def test_a_likelihood_familys_subset_generator_is_validated_on_a_slice_of_its_subset(
    trained, tmp_path, monkeypatch
):
    """A family with a likelihood, retrained on a subset, trains on all of it but
    ``usefulness.val_share`` and is validated (bits/dim, best weights kept, train.patience) on
    that share; nothing outside the subset is seen. val_share 0: the whole subset, no
    validation. The GAN (no likelihood) trains on the whole subset either way."""
    seen = []
    real_fit = layout.fit

    def recording_fit(model, x, y, cfg, **kw):
        seen.append((x.clone(), y.clone(), kw.get("val_fn")))
        return real_fit(model, x, y, cfg, **kw)

    monkeypatch.setattr(layout, "fit", recording_fit)
    raw = tiny_params(tmp_path, steps=20, families=["vae", "gan"], useful=True)
    raw["data"]["prepared_dir"] = trained.data.prepared_dir  # the digits prepared once
    raw["models"]["vae"]["train"].update(eval_every=5, patience=1)
    params = validate(raw)
    train, _, spec, manifest = U._splits(params)
    idx = U.subset(train[1], 0.2, 0)
    fit_rows, val_rows = U.held_out_slice(train[1][idx], 0.2, 0)
    _, info = U.subset_generator(params, "vae", 0.2, train, spec, manifest)
    x, y, val_fn = seen[-1]
    assert torch.equal(x, train[0][idx][fit_rows]) and torch.equal(y, train[1][idx][fit_rows])
    assert val_fn is not None and info["n_real"] == len(idx)
    model = U.models.load(U.evaluation_dir(params) / "vae" / "subsets" / "p0.2-s0.json")
    x_val, y_val = train[0][idx][val_rows], train[1][idx][val_rows]
    held = U.bits_per_dim(U.log_likelihoods(model, x_val, y_val).mean().item(), spec.dims)
    assert val_fn(model) == pytest.approx(held)  # bits/dim on the held-out slice, not the rows it fit

    raw["usefulness"]["val_share"] = 0
    U.subset_generator(validate(raw), "vae", 0.2, train, spec, manifest)
    x, _, val_fn = seen[-1]
    assert torch.equal(x, train[0][idx]) and val_fn is None  # a new key: retrained on the whole subset
    U.subset_generator(params, "gan", 0.2, train, spec, manifest)
    x, _, val_fn = seen[-1]
    assert torch.equal(x, train[0][idx]) and val_fn is None


def test_family_needs_the_reference_and_a_trained_model(tmp_path):
    params = validate(tiny_params(tmp_path, families=["gan"], useful=True))
    with pytest.raises(FileNotFoundError, match="reference"):
        U.measure_family(params, "gan")


def test_command_line_prints_the_figures_and_rejects_untrained_families(trained, tmp_path, capsys):
    from genzoo.flows.cli import main

    pfile = tmp_path / "params.yaml"
    pfile.write_text(json.dumps(trained.model_dump(mode="json")))
    assert main(["usefulness", "--params", str(pfile)]) == 0
    out = capsys.readouterr().out
    assert "real 20%" in out and "gan: train on synthetic" in out and "lift at 20% real" in out
    # every recipe measured has its own lines, named (the summary showed one, unnamed)
    assert "lift at 20% real (plain): " in out and "lift at 20% real (teacher): " in out
    assert main(["usefulness", "--params", str(pfile), "--families", "vae"]) == 2
    assert "genzoo usefulness: error: --families: vae" in capsys.readouterr().err
    # the stage alone, after the settings changed: the lifts were paired with the old rows (or a traceback)
    raw = trained.model_dump(mode="json")
    other = validate({**raw, "usefulness": {**raw["usefulness"], "seeds": raw["usefulness"]["seeds"] + 1}})
    with pytest.raises(FileNotFoundError, match="reference.json: made with other usefulness settings"):
        U.measure_family(other, "gan")


# ----------------------------------------------------------------------------- recipes


def test_the_teacher_relabels_softly_and_drops_what_it_disagrees_with(trained):
    """A generator that draws the wrong class for half its labels: the teacher (trained on the
    real split) rejects those as disagreeing; its targets are probabilities, softer at a higher
    temperature; without a teacher the targets are the labels one-hot and nothing is dropped."""
    from genzoo.models.evaluator import train_evaluator
    from genzoo.tasks.config import Recipe

    train, _, spec, _ = U._splits(trained)
    x, y = train
    by_class = {c: x[y == c] for c in range(spec.num_classes)}

    def wrong_half(labels, seed):  # real images; odd positions of another class
        drawn = [c if i % 2 == 0 else (c + 3) % spec.num_classes for i, c in enumerate(labels.tolist())]
        return torch.stack([by_class[c][i % len(by_class[c])] for i, c in enumerate(drawn)])

    cfg = trained.usefulness.cnn.model_copy(update={"steps": 300, "channels": 16, "feature_dim": 32})
    teacher = train_evaluator(x, y, spec, cfg, seed=1)
    part = (x[:100], y[:100])
    hot = U.synthesize(wrong_half, Recipe(teacher=True, temperature=1.0), part, spec.num_classes, 0, teacher)
    soft = U.synthesize(wrong_half, Recipe(teacher=True, temperature=4.0), part, spec.num_classes, 0, teacher)
    assert hot.drawn == 100 and 45 <= hot.rejected["teacher_disagrees"] <= 65, hot.counts  # 50 drawn wrong
    assert len(hot.y) == hot.drawn - sum(hot.rejected.values())
    assert (hot.targets.argmax(-1) == hot.y).all()  # kept: the teacher agrees
    assert torch.allclose(hot.targets.sum(-1), torch.ones(len(hot.y)), atol=1e-5)
    assert soft.targets.max(-1).values.mean() < hot.targets.max(-1).values.mean()  # softer
    # soft_weight: the teacher's probabilities mixed with the label the image was made for; 0: hard labels,
    # the same images kept (the teacher still filters)
    for w in (0.0, 0.5):
        mixed = U.synthesize(wrong_half, Recipe(teacher=True, temperature=4.0, soft_weight=w), part,
                             spec.num_classes, 0, teacher)  # fmt: skip
        hard = torch.nn.functional.one_hot(mixed.y, spec.num_classes).float()
        assert torch.equal(mixed.y, soft.y)
        assert torch.allclose(mixed.targets, w * soft.targets + (1 - w) * hard)
    sure = U.synthesize(
        wrong_half, Recipe(teacher=True, teacher_confidence=0.99), part, spec.num_classes, 0, teacher
    )
    assert sure.rejected["teacher_unsure"] > 0 and len(sure.y) < len(hot.y)
    plain = U.synthesize(wrong_half, Recipe(), part, spec.num_classes, 0, teacher)
    assert plain.counts == {"drawn": 100, "kept": 100, "rejected": {}, "emptied": []}
    assert torch.equal(plain.targets, torch.nn.functional.one_hot(plain.y, spec.num_classes).float())


def test_an_ensemble_teacher_votes_with_seeded_members_that_recipes_share(trained):
    """Recipe ``teachers: n`` relabels with n CNNs voting together (seeds (i + 1) x TEACHER_SEED +
    the subset's seed): member 0 is the single teacher, members are trained once per subset and
    shared by recipes, and the vote's logits are the mean of the members' log-probabilities."""
    from genzoo.models.evaluator import Ensemble
    from genzoo.tasks.config import Recipe
    from genzoo.tasks.sample import TEACHER_SEED, Teachers, train_teacher

    (x, y), _, spec, _ = U._splits(trained)
    cfg = trained.usefulness.cnn.model_copy(update={"steps": 30, "channels": 8, "feature_dim": 16})
    pool = Teachers(x[:200], y[:200], spec, cfg, base=2)
    assert pool(Recipe()) is None and pool.members == []  # no teacher asked for, none trained
    one = pool(Recipe(teacher=True))
    xs = x[200:260]
    alone = train_teacher(x[:200], y[:200], spec, cfg, TEACHER_SEED + 2)  # (one thread, as members train)
    with torch.no_grad():
        assert torch.equal(one(xs), alone(xs))
    three = pool(Recipe(teacher=True, teachers=3))
    assert isinstance(three, Ensemble) and three.members[0] is one and len(pool.members) == 3
    assert pool.seeds(3) == [TEACHER_SEED + 2, 2 * TEACHER_SEED + 2, 3 * TEACHER_SEED + 2]
    two = pool(Recipe(teacher=True, teachers=2))
    assert len(pool.members) == 3 and list(two.members) == pool.members[:2]  # shared, not retrained
    with torch.no_grad():
        votes = torch.stack([m(xs).log_softmax(-1) for m in pool.members])
        assert torch.allclose(three(xs), votes.mean(0))
        assert not torch.allclose(votes[0], votes[1])  # the seeds make different members
    recipe = Recipe(teacher=True, teachers=3, agree=False, temperature=2.0)
    first = lambda labels, seed: x[: len(labels)]  # noqa: E731
    made = U.synthesize(first, recipe, (x[:20], y[:20]), spec.num_classes, 0, three)
    with torch.no_grad():  # nothing dropped (no filter on): every image carries the vote's soft label
        assert made.counts["kept"] == 20 and torch.allclose(made.targets, (three(x[:20]) / 2.0).softmax(-1))


def test_teachers_are_kept_by_key_and_the_next_stage_reuses_them(trained, tmp_path, monkeypatch):
    """With a cache folder, each member is stored by a key of its data, config, seed and code;
    a later pool on the same data loads it (nothing trained, the same network), one on other
    data trains its own. Members train on one thread whatever the process's count (restored)."""
    import genzoo.tasks.sample as sample
    from genzoo.tasks.config import Recipe

    (x, y), _, spec, _ = U._splits(trained)
    cfg = trained.usefulness.cnn.model_copy(update={"steps": 20, "channels": 8, "feature_dim": 16})
    vote = Recipe(teacher=True, teachers=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    first = sample.Teachers(x[:150], y[:150], spec, cfg, cache=tmp_path / "teachers")(vote)
    assert torch.get_num_threads() == 2 and len(list((tmp_path / "teachers").glob("*.safetensors"))) == 2
    torch.set_num_threads(1)
    uncached = sample.Teachers(x[:150], y[:150], spec, cfg)(vote)  # trained again, on one thread too
    monkeypatch.setattr(sample, "train_evaluator", lambda *a, **k: pytest.fail("trained again"))
    again = sample.Teachers(x[:150], y[:150], spec, cfg, cache=tmp_path / "teachers")(vote)
    xs = x[150:200]
    with torch.no_grad():
        assert torch.equal(again(xs), first(xs)) and torch.equal(uncached(xs), first(xs))
    with pytest.raises(pytest.fail.Exception, match="trained again"):  # other data: its own key
        sample.Teachers(x[:140], y[:140], spec, cfg, cache=tmp_path / "teachers")(vote)
    torch.set_num_threads(threads)


def test_perturb_moves_a_real_image_by_its_strength_and_needs_an_encoder(trained):
    from genzoo import models
    from genzoo.tasks.sample import perturb
    from tests.conftest import TINY

    train, _, spec, _ = U._splits(trained)
    x, y = train[0][:16], train[1][:16]
    torch.manual_seed(0)
    vae = models.build("vae", spec, TINY["vae"]).eval()
    with torch.inference_mode():
        rec = vae.decode(vae.encode(x, y), y)
    near, far = perturb(vae, x, y, 1e-4, seed=0), perturb(vae, x, y, 1.0, seed=0)
    assert torch.allclose(near, rec, atol=1e-3)  # strength 0: the image's own reconstruction
    assert (far - rec).abs().mean() > 10 * (near - rec).abs().mean()
    assert torch.equal(perturb(vae, x, y, 0.5, seed=3), perturb(vae, x, y, 0.5, seed=3))  # seeded
    gan = models.build("gan", spec, TINY["gan"])
    with pytest.raises(ValueError, match="gan has no encoder"):
        perturb(gan, x, y, 0.5, seed=0)


def test_what_is_measured_is_on_the_datasets_level_grid_and_an_empty_pool_is_no_error(trained):
    """A network's images (the GAN's sigmoid, the VAE's decoder means) are rounded to the data's
    levels before the teacher, the copy filter and the classifier see them, as the dataset a user
    pulls stores them; a recipe whose pool rounds to no image (real_share 1, a tiny k) measures
    the classifier on real data alone instead of failing every family."""
    from genzoo import models
    from genzoo.tasks.config import Recipe
    from tests.conftest import TINY

    train, _, spec, _ = U._splits(trained)
    part = train[0][:40], train[1][:40]
    torch.manual_seed(0)
    for family, recipe in (("gan", Recipe()), ("vae", Recipe(mode="perturb", strength=0.3))):
        model = models.build(family, spec, TINY[family]).eval()
        made = U.synthesize(model, recipe, part, spec.num_classes, seed=0)
        grid = made.x * (spec.levels - 1)
        assert len(made.y) and torch.equal(grid, grid.round()), family
        drawn = U.model_draw(model)(part[1], 0) * (spec.levels - 1)  # train on synthetic, too
        assert torch.equal(drawn, drawn.round()), family
    none = U.synthesize(model, Recipe(synthetic_per_real=0.01), part, spec.num_classes, seed=0)
    assert none.x.shape == (0, *part[0].shape[1:]) and none.counts["drawn"] == 0
    gan = models.build("gan", spec, TINY["gan"]).eval()
    capped = U.pool_capped(Recipe(real_share=1.0), 200, spec, trained.usefulness.cnn)
    assert len(U.synthesize(gan, capped, part, spec.num_classes, seed=0).y) == 0


def test_a_perturb_recipe_for_a_family_without_an_encoder_fails_before_training(trained):
    raw = trained.model_dump(mode="json")
    raw["recipes"] = {"plain": {}, "near": {"mode": "perturb", "strength": 0.3}}
    raw["usefulness"]["recipes"] = ["near"]
    params = validate(raw)
    U.reference(params)
    with pytest.raises(
        ValueError, match="^usefulness.recipes: 'near' perturbs real images, which gan cannot"
    ):
        U.measure_family(params, "gan")
    raw["usefulness"]["recipes"], raw["augment"]["recipe"] = ["plain"], "near"  # the dataset's recipe
    params = validate(raw)
    U.reference(params)
    with pytest.raises(ValueError, match="^augment.recipe: 'near' perturbs real images, which gan cannot"):
        U.measure_family(params, "gan")


def test_the_baseline_cnn_uses_classical_augmentation_and_cnn_plain_none(trained, monkeypatch):
    seen = []
    real = U.train_evaluator

    def spy(x, y, spec, cfg, seed=0, synthetic=None):
        seen.append((cfg.shift, cfg.rotate, cfg.scale, cfg.shear, synthetic is not None))
        return real(x, y, spec, cfg.model_copy(update={"steps": 2}), seed, synthetic)

    monkeypatch.setattr(U, "train_evaluator", spy)
    train, test, spec, _ = U._splits(trained)
    params = validate({**trained.model_dump(mode="json"),
                       "usefulness": {**trained.usefulness.model_dump(mode="json"),
                                      "classifiers": ["cnn", "cnn_plain"],
                                      "cnn": {"steps": 2, "channels": 8, "feature_dim": 16, "shift": 1,
                                              "rotate": 10, "scale": 0.15, "shear": 0.2}}})  # fmt: skip
    U.classifier_accuracy("cnn", train, test, spec, params, 0)
    U.classifier_accuracy("cnn_plain", train, test, spec, params, 0)
    assert seen == [(1, 10.0, 0.15, 0.2, False), (0, 0.0, 0.0, 0.0, False)]


def test_the_protocol_says_the_baselines_augmentation_in_words(trained):
    cnn = trained.usefulness.cnn.model_copy(update={"shift": 1, "rotate": 10.0, "scale": 0.15, "shear": 0.2})
    assert U.augmentation_words(cnn) == (
        "shifts of up to 1 pixel, rotations of up to 10°, scaling of each axis by up to 15%, "
        "shearing by up to 0.2"
    )
    plain = cnn.model_copy(update={"shift": 0, "rotate": 0.0, "scale": 0.0, "shear": 0.0})
    assert U.augmentation_words(plain) == "none"
    protocol = U._protocol(trained, 10, 10)
    assert protocol["augmentation"] == U.augmentation_words(trained.usefulness.cnn)
    assert protocol["augmentation"] in protocol["baseline"]


def test_held_out_real_images_are_a_perfect_generators_reference_row(trained):
    """``usefulness.held_out``: real training images outside each subset, drawn by label (seeded),
    through the same recipes as PCA + KDE: the ceiling of what synthetic images could add. Only
    below 100% (nothing is held out of the whole split), lifts paired with real alone."""
    (x, y), _, spec, _ = U._splits(trained)
    idx = U.subset(y, 0.2, 0)
    draw = U.held_out_draw((x, y), idx, spec.num_classes)
    labels = torch.tensor([0, 0, 3, 7, 3, 9])
    drawn = draw(labels, 5)
    assert torch.equal(drawn, draw(labels, 5)) and not torch.equal(drawn, draw(labels, 6))  # seeded
    outside = torch.ones(len(y), dtype=torch.bool)
    outside[idx] = False
    for image, label in zip(drawn, labels, strict=True):
        same = (x.flatten(1) == image.flatten()).all(1)
        assert (same & outside & (y == label)).any()  # a real image of its class, not in the subset

    raw = trained.model_dump(mode="json")
    raw["usefulness"].update(held_out=True, fractions=[0.2, 1.0], classifiers=["logistic"])  # cheap
    ref = U.reference(validate(raw))
    held = ref["held_out"]["recipes"]
    assert set(held) == {"plain", "teacher"} and all(set(r["augmentation"]) == {"0.2"} for r in held.values())
    aug = held["plain"]["augmentation"]["0.2"]["logistic"]
    lifts = np.array(aug["augmented"]["per_seed"]) - np.array(ref["real"]["0.2"]["logistic"]["per_seed"])
    assert np.allclose(aug["lift"]["per_seed"], lifts)
    raw["usefulness"]["held_out"] = False  # the default
    assert "held_out" not in U.reference(validate(raw)) and not trained.usefulness.held_out
    # two subsets: every interval below 100% over the two subsets' means
    two = U.reference(validate({**raw, "usefulness": {**raw["usefulness"], "subset_seeds": [0, 1]}}))
    seeds = trained.usefulness.seeds
    for st in (two["real"]["0.2"]["logistic"], two["pca_kde"]["augmentation"]["0.2"]["logistic"]["lift"]):
        assert st["over"] == "subsets" and len(st["per_subset"]) == 2 and len(st["per_seed"]) == 2 * seeds
    assert "over" not in two["real"]["1.0"]["logistic"]  # the whole split: one subset
    # a subset that leaves a class no image outside it: one line, before any classifier trains (a
    # traceback after the real-only ones)
    raw["usefulness"].update(held_out=True, fractions=[0.999])
    with pytest.raises(
        ValueError, match=r"usefulness.held_out: classes \[.*\] have no training image outside"
    ):
        U.reference(validate(raw))


def test_intervals_over_several_subsets_are_over_the_subsets_means():
    """A subset's classifier seeds share its real images, generator and teacher: pooled as 15
    independent values they gave an interval too narrow for the mean over subsets."""
    from genzoo.metrics.quality import mean_ci

    per_subset = [
        [0.90, 0.91, 0.90, 0.91, 0.90],
        [0.95, 0.96, 0.95, 0.96, 0.95],
        [0.92, 0.93, 0.92, 0.93, 0.92],
    ]
    values = [v for s in per_subset for v in s]
    st = U.stats(values, 5)
    means = [float(np.mean(s)) for s in per_subset]
    assert st["over"] == "subsets" and st["per_subset"] == pytest.approx(means) and st["per_seed"] == values
    assert st["mean"] == pytest.approx(np.mean(values)) and st["ci95"] == pytest.approx(mean_ci(means)[1])
    assert st["ci95"] > 2 * mean_ci(values)[1]  # the pooled interval, several times too narrow here
    one = U.stats(per_subset[0], 5)  # one subset: over its seeds (the interval holds for that subset)
    assert "over" not in one and one["ci95"] == pytest.approx(mean_ci(per_subset[0])[1])
    with pytest.raises(ValueError, match="14 values are not subsets of 5 seeds"):
        U.stats(values[:14], 5)


def test_a_pool_the_filters_empty_is_counted_with_the_classes_they_emptied():
    from genzoo.tasks.layout import unmeasured
    from genzoo.tasks.sample import Recipe, synthesize
    from genzoo.tasks.usefulness import _filters

    x, y = torch.rand(40, 1, 8, 8), torch.arange(4).repeat(10)
    copier = lambda labels, seed: x[: len(labels)]  # noqa: E731
    none_kept = synthesize(copier, Recipe(synthetic_per_real=0.5), (x, y), 4, seed=0, copies_within=1e9)
    assert none_kept.counts["kept"] == 0 and none_kept.counts["emptied"] == [0, 1, 2, 3]
    some = synthesize(copier, Recipe(synthetic_per_real=0.5), (x, y), 4, seed=0, copies_within=None)
    total = _filters([none_kept.counts, some.counts])
    assert total["empty_pools"] == 1 and total["emptied"] == [0, 1, 2, 3]
    assert unmeasured(total) == "the filters left 1 pool(s) without a synthetic image"
    assert unmeasured(_filters([some.counts])) is None


def test_without_a_validation_split_no_validation_lift_is_measured_and_the_best_is_chosen_on_test(
    tmp_path, monkeypatch
):
    """`data.val_fraction: 0`: the prepared validation split is empty; the reference and a family
    measure their test lifts alone, and the report's targets choose on them, saying so."""
    from genzoo.tasks.report import usefulness_targets

    raw = tiny_params(tmp_path, steps=2, families=["gan"], useful=True)
    raw["data"]["val_fraction"] = 0.0
    raw["usefulness"] |= {"fractions": [0.2], "recipes": ["plain"]}
    params = validate(raw)
    prepare(params)
    train_family(params, "gan", progress=False)
    assert U._val(params) is None
    monkeypatch.setattr(U, "classifier_accuracies", lambda kind, train, sets, *a, **k: [0.5] * len(sets))
    ref = U.reference(params)
    assert ref["protocol"]["n_val"] == 0 and "val" not in ref["real"]["0.2"]["cnn"]
    gan = U.measure_family(params, "gan")
    assert "val_lift" not in gan["augmentation"]["0.2"]["cnn"]
    u = {"families": {"gan": gan}, "reference": ref}
    ref["real"]["0.1"] = ref["real"].pop("0.2")  # a 10% target row, of two recipes
    gan["recipes"] = {n: {"augmentation": {"0.1": gan["augmentation"]["0.2"]}} for n in ("plain", "other")}
    assert usefulness_targets(u)["rows"][0]["chosen_on"] == "test"


def test_each_subsets_classifiers_and_generator_have_their_own_seeds_paired_within_the_subset(
    trained, tmp_path, monkeypatch
):
    """Two subsets' classifiers started from the same weights and batch order (seeds 0..n-1 in
    each) and their generators from the same initial weights: a shared component the interval
    over the subsets' means never saw. Now each subset its own seeds; within a subset the
    real-only and augmented runs share them (the lift is paired)."""
    two = {"subset_seeds": [0, 1], "fractions": [0.2], "recipes": ["plain"], "held_out": False}
    u = trained.usefulness.model_copy(update=two)
    params = trained.model_copy(update={"usefulness": u, "run": trained.run.model_copy(
        update={"runs_dir": str(tmp_path / "runs")})})  # fmt: skip
    calls = []

    def record(kind, train, sets, spec, params, seed, synthetic=None, recipe=None):
        calls.append((len(train[1]), seed, synthetic is None))
        return [0.5, 0.25 + seed / 1e4 + 0.125 * (synthetic is not None)][: len(sets)]  # (test, validation)

    monkeypatch.setattr(U, "classifier_accuracies", record)
    ref = U.reference(params)
    # the validation split measured by the same classifiers, its lift paired the same way
    assert ref["protocol"]["n_val"] == len(U._val(params)[1]) > 0
    seeds = trained.usefulness.seeds
    real_val = [0.25 + (1000 * s + j) / 1e4 for s in (0, 1) for j in range(seeds)]  # subset by subset
    assert ref["real"]["0.2"]["cnn"]["mean"] == 0.5
    assert ref["real"]["0.2"]["cnn"]["val"]["per_seed"] == pytest.approx(real_val)
    kde = ref["pca_kde"]["augmentation"]["0.2"]["cnn"]
    assert kde["lift"]["mean"] == 0.0  # each augmented run against the real-only run of its subset and seed:
    assert kde["val_lift"]["per_seed"] == pytest.approx([0.125] * 2 * seeds)  # another pairing gives others
    assert len(kde["val_lift"]["per_subset"]) == 2  # its interval over the subsets, as the test lift's
    train, _, spec, manifest = U._splits(params)
    n = len(U.subset(train[1], 0.2, 0))
    runs = len(trained.usefulness.classifiers) * trained.usefulness.seeds  # a subset's real-only runs
    on_subsets = [c for c in calls if c[0] < len(train[1])]  # (then train-on-synthetic, on the whole split)
    assert len(on_subsets) == 2 * 2 * runs and {c[0] for c in on_subsets} == {n}  # real + PCA + KDE, x 2
    first, second = on_subsets[: 2 * runs], on_subsets[2 * runs :]  # subset 0's calls, then subset 1's
    assert {s for _, s, real in first if real} == set(range(trained.usefulness.seeds))
    assert {s for _, s, real in second if real} == {1000 + j for j in range(trained.usefulness.seeds)}
    for part in (first, second):  # PCA + KDE's augmented runs: the seeds of the subset's real-only ones
        assert sorted(s for _, s, real in part if real) == sorted(s for _, s, real in part if not real)
    fitted = []
    real_fit = layout.fit
    monkeypatch.setattr(layout, "fit", lambda *a, **k: fitted.append(k["seed"]) or real_fit(*a, **k))
    for s in (0, 1):
        U.subset_generator(params, "gan", 0.2, train, spec, manifest, s)
    assert fitted == [params.seed, params.seed + 1]
