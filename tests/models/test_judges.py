"""The other judges (models/judges.py) on the real digits: classifiers that work, seeded fits,
a save -> load that gives the same features, and the order every judge must agree on."""

import numpy as np
import pytest
import torch

from genzoo.metrics.quality import frechet_distance, rank_agreement
from genzoo.models.base import DataSpec
from genzoo.models.judges import (
    NAMES,
    JudgesConfig,
    RandomCNN,
    accuracies,
    load_judges,
    save_judges,
    train_judges,
)
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import data_spec, load_split, prepare


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny nets gain nothing from threads; on a shared 2-core machine two threads only contend
    (as the evaluator stage runs them: ``ray.resources.evaluator``, default 1 CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    params = validate(
        {"data": {"prepared_dir": str(tmp_path_factory.mktemp("judges") / "p")}, "models": {"vae": {}}}
    )
    prepare(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    return x, y, xt, yt, data_spec(manifest)


@pytest.fixture(scope="module")
def judges(digits):
    x, y, _, _, spec = digits
    return train_judges(x, y, spec, JudgesConfig(), seed=0)


def test_classifier_judges_classify_real_digits(digits, judges):
    _, _, xt, yt, _ = digits
    acc = accuracies(judges, xt, yt)
    assert set(acc) == {"mlp", "lenet"}  # pca and random_cnn are embeddings, not classifiers
    # the MLP fitted on the whole split (L-BFGS, L2): early stopping on a tenth of it gave 93%
    assert acc["mlp"] >= 0.96 and acc["lenet"] >= 0.95, acc


def test_the_mlp_judge_classifies_two_classes(digits):
    """With two classes scikit-learn's MLP has one logistic output: its softmax was 1 for class 0
    on every image, and the judge's class accuracy 50%."""
    x, y, xt, yt, spec = digits
    keep, keep_t = (y == 0) | (y == 1), (yt == 0) | (yt == 1)
    two = DataSpec(spec.channels, spec.height, spec.width, spec.levels, 2)
    judges = train_judges(x[keep], y[keep], two, JudgesConfig(mlp_max_iter=50), seed=0)
    acc = accuracies(judges, xt[keep_t], yt[keep_t])
    assert acc["mlp"] >= 0.95 and acc["lenet"] >= 0.9, acc
    probs = judges.embed(xt[keep_t][:5])["mlp"][1]
    assert probs.shape == (5, 2) and np.allclose(probs.sum(1), 1)


def test_every_space_has_its_shape(digits, judges):
    _, _, xt, _, spec = digits
    e = judges.embed(xt[:50])
    assert list(e) == list(NAMES)
    cfg = judges.cfg
    dims = {
        "pca": cfg.pca_components,
        "mlp": cfg.mlp_hidden,
        "lenet": 64,
        "random_cnn": 8 * cfg.random_channels,
    }
    for name, (feats, probs) in e.items():
        assert feats.shape == (50, dims[name]) and np.isfinite(feats).all(), name
        if probs is not None:
            assert probs.shape == (50, spec.num_classes) and np.allclose(probs.sum(1), 1), name
    # in batches (a whole MNIST split at once held GBs of activations): the same features
    parts = judges.embed(xt[:50], batch=16)
    for name, (feats, probs) in e.items():
        assert np.allclose(parts[name][0], feats, atol=1e-6), name
        assert (probs is None) == (parts[name][1] is None) and (
            probs is None or np.allclose(parts[name][1], probs)
        )


def test_same_seed_same_judges_and_save_load_gives_the_same_features(digits, judges, tmp_path):
    x, y, xt, _, spec = digits
    again = train_judges(x, y, spec, JudgesConfig(), seed=0)
    assert judges.arrays.keys() == again.arrays.keys()
    assert all(np.array_equal(judges.arrays[k], again.arrays[k]) for k in judges.arrays)
    other = train_judges(x, y, spec, JudgesConfig(), seed=1)
    assert not np.array_equal(judges.arrays["lenet.fc.weight"], other.arrays["lenet.fc.weight"])
    loaded = load_judges(save_judges(judges, tmp_path / "judges.npz"))
    a, b = judges.embed(xt[:30]), loaded.embed(xt[:30])
    for name in NAMES:
        assert np.array_equal(a[name][0], b[name][0]), name


def test_the_random_cnn_is_untrained(digits, judges):
    *_, spec = digits
    torch.manual_seed(303)  # the run's seed (0) plus the random judge's offset
    fresh = RandomCNN(spec, judges.cfg.random_channels)
    for k, v in fresh.state_dict().items():
        assert np.array_equal(judges.arrays[f"random_cnn.{k}"], v.numpy()), k


def test_noise_ranks_last_in_every_space(digits, judges):
    """Real held-out digits, the same digits with a tenth of their pixels replaced by noise,
    uniform noise: every judge puts noise last and real first, and their rankings agree (tau 1)."""
    x, _, xt, _, spec = digits
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, spec.levels, xt.shape, generator=g).float() / (spec.levels - 1)
    speckled = torch.where(torch.rand(xt.shape, generator=g) < 0.1, noise, xt)
    sets = {"real": judges.embed(xt), "speckled": judges.embed(speckled), "noise": judges.embed(noise)}
    ref = judges.embed(x)
    fd = {s: {name: frechet_distance(e[s][0], ref[s][0]) for name, e in sets.items()} for s in NAMES}
    agree = rank_agreement(fd)
    for s in NAMES:
        assert agree["ranks"][s] == {"real": 1.0, "speckled": 2.0, "noise": 3.0}, (s, fd[s])
    assert all(t == pytest.approx(1.0) for t in agree["kendall_tau"].values())
