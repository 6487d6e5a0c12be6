"""Does synthetic data help a classifier: subsets, the leak-free generator (trained on the
subset only), paired lifts, train-on-synthetic, caching, and the figures' sanity on real data."""

import json

import numpy as np
import pytest
import torch

from genzoo.tasks import layout
from genzoo.tasks import usefulness as U
from genzoo.tasks.config import ParamsError, validate
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
    labels = U.synthetic_labels(y, 2.0, 4)
    assert torch.bincount(labels, minlength=4).tolist() == [4, 2, 6, 0]


def test_bad_usefulness_params_fail_clearly(tmp_path):
    for block, key in [
        ({"fractions": [0.0, 1.0]}, "usefulness.fractions"),
        ({"families": ["nope"]}, "usefulness.families"),
        ({"train": {"stepz": 3}}, "usefulness.train"),
        ({"seeds": 1}, "usefulness.seeds"),
        ({"classifiers": ["svm"]}, "usefulness.classifiers"),
    ]:
        raw = tiny_params(tmp_path, families=["gan"])
        raw["usefulness"] = {**raw["usefulness"], **block}
        with pytest.raises(ParamsError, match=key):
            validate(raw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("usefulness")
    params = validate(tiny_params(tmp, steps=20, families=["gan"]))
    prepare(params)
    train_family(params, "gan", progress=False)
    return params


def test_real_figures_are_meaningful_and_noise_teaches_nothing(trained):
    train, test, spec, _ = U._splits(trained)
    real = U.accuracies(trained, train, test, spec)
    assert np.mean(real["logistic"]) > 0.9  # digits, pixels, logistic regression
    noise = U.accuracies(trained, train, test, spec, lambda y, s: torch.rand(len(y), *spec.shape), k=1.0,
                         only_synthetic=True)  # fmt: skip
    assert np.mean(noise["logistic"]) < 0.3  # trained on noise: about chance


def test_generator_is_trained_on_the_subset_only_and_lifts_are_paired(trained, monkeypatch):
    seen = []
    real_fit = layout.fit  # every model variant trains through tasks/layout.py train_variant

    def recording_fit(model, x, y, cfg, **kw):
        seen.append((x.clone(), y.clone()))
        return real_fit(model, x, y, cfg, **kw)

    monkeypatch.setattr(layout, "fit", recording_fit)
    ref = U.reference(trained)
    result = U.measure_family(trained, "gan")
    train, _, _, _ = U._splits(trained)
    idx = U.subset(train[1], 0.2, trained.usefulness.subset_seed)
    assert len(seen) == 1  # one generator retrained (for 20%); 100% uses the pipeline's model
    assert torch.equal(seen[0][0], train[0][idx]) and torch.equal(seen[0][1], train[1][idx])
    assert len(idx) < 0.3 * len(train[1])
    assert result["generators"]["0.2"]["n_real"] == len(idx)
    assert result["generators"]["1.0"]["subset"] is False
    for p in ("0.2", "1.0"):
        for c in ("cnn", "logistic"):
            aug = result["augmentation"][p][c]
            lifts = np.array(aug["augmented"]["per_seed"]) - np.array(ref["real"][p][c]["per_seed"])
            assert np.allclose(aug["lift"]["per_seed"], lifts)
            assert len(aug["lift"]["per_seed"]) == trained.usefulness.seeds
            assert all(0 <= a <= 1 for a in aug["augmented"]["per_seed"])
    assert set(result["tstr"]) == {"cnn", "logistic"} and 0 <= result["tstr"]["logistic"]["mean"] <= 1
    assert set(ref["pca_kde"]["augmentation"]) == {"0.2", "1.0"}
    on_disk = json.loads((U.evaluation_dir(trained) / "gan" / "usefulness.json").read_text())
    assert on_disk == json.loads(json.dumps(result))

    # cached: same params, data, model and code -> nothing retrained or re-measured
    seen.clear()
    assert U.measure_family(trained, "gan")["key"] == result["key"]
    assert seen == []
    # the subset generator is the same whatever ran before in the process (seeded initial weights)
    stored = (U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2.json").read_text()
    torch.rand(1000)  # move the global RNG, as other work in a reused worker would
    train_, _, spec, manifest = U._splits(trained)
    (U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2.json").unlink()
    U.subset_generator(trained, "gan", 0.2, train_, spec, manifest)
    again_meta = json.loads((U.evaluation_dir(trained) / "gan" / "subsets" / "p0.2.json").read_text())
    assert again_meta["sha256"] == json.loads(stored)["sha256"]
    seen.clear()
    # without the stored figures, the stored subset generator is reused and the figures agree
    (U.evaluation_dir(trained) / "gan" / "usefulness.json").unlink()
    again = U.measure_family(trained, "gan")
    assert seen == [] and again["augmentation"] == result["augmentation"] and again["tstr"] == result["tstr"]


def test_family_needs_the_reference_and_a_trained_model(tmp_path):
    params = validate(tiny_params(tmp_path, families=["gan"]))
    with pytest.raises(FileNotFoundError, match="reference"):
        U.measure_family(params, "gan")


def test_command_line_prints_the_figures_and_rejects_untrained_families(trained, tmp_path, capsys):
    from genzoo.flows.cli import main

    pfile = tmp_path / "params.yaml"
    pfile.write_text(json.dumps(trained.model_dump(mode="json")))
    assert main(["usefulness", "--params", str(pfile)]) == 0
    out = capsys.readouterr().out
    assert "real 20%" in out and "gan: train on synthetic" in out and "lift at 20% real" in out
    assert main(["usefulness", "--params", str(pfile), "--families", "vae"]) == 2
    assert "genzoo usefulness: error: --families: vae" in capsys.readouterr().err
