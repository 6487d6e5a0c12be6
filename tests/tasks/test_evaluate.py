"""The evaluation stages on real (tiny) trained models: what they write, reference rows that
order as they must, and caching on unchanged inputs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from genzoo.metrics.quality import frechet_distance
from genzoo.models.base import sha256_file
from genzoo.tasks.config import validate
from genzoo.tasks.data import load_split
from genzoo.tasks.evaluate import _seeds, evaluate_family, evaluator_stage, floor_draw
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[2]
SPACES = ("cnn", "pca", "mlp", "lenet", "random_cnn")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    raw = tiny_params(tmp, steps=5, families=["gan", "vae", "ddpm"])
    # an evaluator strong enough for the reference rows to order
    raw["evaluate"]["evaluator"].update(steps=200, channels=16, feature_dim=32, lr=5e-3)
    params = validate(raw)
    prepare(params)
    for fam in ("gan", "vae"):  # ddpm stays untrained
        train_family(params, fam, progress=False)
    return tmp, raw, params


def test_evaluator_stage_writes_the_classifier_features_and_reference_rows(trained):
    tmp, _, params = trained
    m = evaluator_stage(params)
    folder = tmp / "runs" / "evaluation" / "evaluator"
    names = ("evaluator.json", "evaluator.safetensors", "features.npz", "reference.json", "metrics.json",
             "pca_kde_samples.npz", "gmm_samples.npz", "judges.npz")  # fmt: skip
    for name in names:
        assert (folder / name).exists(), name
    assert 0.5 < m["test_accuracy"] <= 1.0
    ref = json.loads((folder / "reference.json").read_text())
    floor, noise = ref["real_train_vs_test"], ref["uniform_noise"]
    assert floor["fd"] < noise["fd"] and floor["precision"] > noise["precision"]
    assert floor["recall"] > noise["recall"]
    for name in ("pca_kde", "gmm"):  # the classical baselines sit between real data and noise
        assert floor["fd"] < ref[name]["fd"] < noise["fd"], name
        assert len(ref[name]["per_seed"]) == 2 and ref[name]["ci95"]["fd"] > 0
        assert ref[name]["fit_seconds"] > 0 and ref[name]["images_per_second"] > 0
    assert 1.0 < ref["gmm"]["test_bpd"] < 4.09  # below uniform over 17 levels
    assert ref["protocol"]["seeds"] == 2 and "penultimate" in ref["protocol"]["extractor"]
    # every reference row in every space; noise ranks last among them in each
    for s in SPACES:
        fds = {name: ref[name]["spaces"][s]["fd"] for name in ("real_train_vs_test", "pca_kde", "gmm")}
        assert max(fds.values()) < ref["uniform_noise"]["spaces"][s]["fd"], (s, fds)
        assert ref["real_train_vs_test"]["spaces"][s]["fd"] < ref["pca_kde"]["spaces"][s]["fd"], s
    assert ref["real_train_vs_test"]["spaces"]["cnn"]["fd"] == ref["real_train_vs_test"]["fd"]
    # the floor is a draw of real training images of a family's size, one per seed
    n, per_class = ref["protocol"]["samples_per_seed"], ref["protocol"]["samples_per_class"]
    _, y, _ = load_split(params.data.prepared_dir, "train")
    assert [r["n"] for r in floor["per_seed"]] == [n, n] and n < len(y)
    e = params.evaluate  # KID's subsets as drawn
    assert ref["protocol"]["kid"] == f"{e.kid_subsets} subsets of {min(e.kid_subset_size, n)}"
    with np.load(folder / "features.npz") as z:
        for r, seed in zip(floor["per_seed"], _seeds(params), strict=True):
            i = floor_draw(y.numpy(), per_class, seed)
            assert r["fd"] == pytest.approx(frechet_distance(z["train"][i], z["test"]))
            mlp = frechet_distance(z["mlp.train"][i], z["mlp.test"])
            assert r["spaces"]["mlp"]["fd"] == pytest.approx(mlp)
    assert set(ref["pca_kde"]["spaces"]) == set(SPACES) and set(ref["protocol"]["spaces"]) == set(SPACES)
    assert set(m["judges"]["test_accuracy"]) == {"mlp", "lenet"}
    assert all(0.5 < a <= 1 for a in m["judges"]["test_accuracy"].values())
    with np.load(folder / "features.npz") as z:  # real features in every judge's space
        assert (
            z["pca.test"].shape[1] == 10 and z["mlp.train"].shape[1] == 32 and z["lenet.test"].shape[1] == 64
        )
    before = (folder / "evaluator.safetensors").stat().st_mtime_ns
    judges_before = (folder / "judges.npz").stat().st_mtime_ns
    assert evaluator_stage(params)["key"] == m["key"]  # unchanged inputs: reused, not retrained
    assert (folder / "evaluator.safetensors").stat().st_mtime_ns == before
    assert (folder / "judges.npz").stat().st_mtime_ns == judges_before


def test_kids_subsets_are_said_as_drawn_not_as_asked(trained):
    """A subset holds as many images as the smaller side has: 500 asked of a family's 40 images
    is 40 (the whole draw each time), of 30 test images 30 (the whole split), and the protocol says
    so, and which side's spread the ± is; it said 500."""
    from genzoo.models import DataSpec
    from genzoo.tasks.evaluate import _protocol

    _, raw, _ = trained
    params = validate({**raw, "evaluate": {**raw["evaluate"], "kid_subset_size": 500}})
    spec = DataSpec(1, 8, 8, 17, 10)
    assert params.evaluate.per_class(spec) * 10 == 40  # a family's images per seed
    draw = "5 subsets of 40: the whole draw each time (the ± is the test split's spread alone)"
    assert _protocol(params, "0" * 64, 72, spec)["kid"] == draw
    whole = "5 subsets of 30: the whole test split each time (the ± is the samples' spread alone)"
    assert _protocol(params, "0" * 64, 30, spec)["kid"] == whole
    both = "5 subsets of 40: the whole test split and the whole draw each time (the ± is 0)"
    assert _protocol(params, "0" * 64, 40, spec)["kid"] == both
    fewer = validate({**raw, "evaluate": {**raw["evaluate"], "kid_subset_size": 20}})
    assert _protocol(fewer, "0" * 64, 72, spec)["kid"] == "5 subsets of 20"  # (tiny's: both sides drawn)


def test_the_floor_draws_a_familys_size_and_class_balance_from_the_training_split():
    labels = np.repeat(np.arange(3), [10, 5, 2])
    i = floor_draw(labels, 4, seed=1)
    assert np.bincount(labels[i]).tolist() == [4, 4, 2]  # a class with fewer gives all it has
    assert len(set(i.tolist())) == len(i)  # without replacement
    assert np.array_equal(i, floor_draw(labels, 4, seed=1))
    assert not np.array_equal(i, floor_draw(labels, 4, seed=2))


def test_family_quality_is_measured_and_cached(trained):
    tmp, raw, params = trained
    evaluator_stage(params)
    q = evaluate_family(params, "vae")
    saved = json.loads((tmp / "runs" / "evaluation" / "vae" / "quality.json").read_text())
    assert saved == json.loads(json.dumps(q))
    assert q["n"] == 40 and q["fd"] > 0 and q["kid_std"] >= 0
    # several seeds: the mean of the per-seed values, with an interval
    assert len(q["per_seed"]) == 2
    assert q["fd"] == pytest.approx(sum(r["fd"] for r in q["per_seed"]) / 2)
    assert q["ci95"]["fd"] > 0 and q["per_seed"][0]["fd"] != q["per_seed"][1]["fd"]
    assert q["images_per_second"] > 0 and q["latency_ms"] > 0 and q["sharpness"] > 0
    assert q["training"]["steps"] == 5 and q["training"]["bpd_estimator"] == "bound"
    assert q["training"]["curve"]["step"]  # the loss curve travels with the evaluation
    # the model measured, by its weights' hash (a dataset card quotes only its own model's figures)
    assert q["model_sha256"] == sha256_file(tmp / "runs" / "vae" / "model.safetensors")
    with np.load(tmp / "runs" / "evaluation" / "vae" / "samples.npz") as z:
        assert z["images"].shape == (40, 1, 8, 8) and z["images"].dtype == np.uint8
        assert z["images"].max() <= 16 and sorted(set(z["labels"].tolist())) == list(range(10))
    for k in ("precision", "recall", "density", "coverage", "class_accuracy"):
        assert 0 <= q[k] <= (10 if k == "density" else 1), k
    assert len(q["fd_per_class"]) == 10 and q["memorization"]["nn_real"] > 0
    # every feature space, with today's top-level figures kept and equal to the evaluator's space
    assert list(saved["spaces"]) == list(SPACES)
    for key in ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy"):
        assert saved["spaces"]["cnn"][key] == q[key], key
    for s in SPACES:
        sp = q["spaces"][s]
        assert sp["fd"] > 0 and q["ci95"]["spaces"][s]["fd"] > 0, s
        assert 0 <= sp["precision"] <= 1 and 0 <= sp["coverage"] <= 1, s
        assert ("class_accuracy" in sp) == (s in ("cnn", "mlp", "lenet")), s  # classifiers only
    assert len({q["spaces"][s]["fd"] for s in SPACES}) == len(SPACES)  # different judges, different numbers
    assert evaluate_family(params, "vae")["key"] == q["key"]
    # samples of another evaluation (one cut short after its first seed) beside the figures: redone
    from genzoo.tasks.layout import npz_key

    samples = tmp / "runs" / "evaluation" / "vae" / "samples.npz"
    assert npz_key(samples) == q["key"]
    with np.load(samples) as z:
        np.savez(samples, **{**dict(z), "key": np.array("0" * 16)})
    assert evaluate_family(params, "vae")["key"] == q["key"] and npz_key(samples) == q["key"]
    assert q["latent"]["pairs"] == 10  # the latent strips: evaluate.latent_pairs same-class test pairs
    with np.load(tmp / "runs" / "evaluation" / "vae" / "latent.npz") as z:
        assert z["linear"].shape == (10, 11, 1, 8, 8)  # real, 9 steps, real
    raw2 = {**raw, "evaluate": {**raw["evaluate"], "samples_per_class": 6, "latent_pairs": 3}}
    q2 = evaluate_family(validate(raw2), "vae")
    assert q2["n"] == 60 and q2["latent"]["pairs"] == 3  # another budget: measured again
    with np.load(tmp / "runs" / "evaluation" / "vae" / "latent.npz") as z:
        assert z["spherical"].shape == (3, 11, 1, 8, 8)
    with pytest.raises(FileNotFoundError, match="ddpm is not trained"):
        evaluate_family(params, "ddpm")
    # the real features scored against changed (an image of the test split edited): measured again
    feats = tmp / "runs" / "evaluation" / "evaluator" / "features.npz"
    kept = feats.read_bytes()
    with np.load(feats) as z:
        real = dict(z)
    real["test"] = real["test"] + 0.5
    np.savez(feats, **real)
    try:
        assert evaluate_family(params, "vae")["fd"] != q["fd"]
        # an evaluator stage cut short (its new evaluator beside the old run's metrics.json): said
        metrics = tmp / "runs" / "evaluation" / "evaluator" / "metrics.json"
        done = metrics.read_text()
        metrics.write_text(json.dumps({**json.loads(done), "key": "another run's"}))
        with pytest.raises(FileNotFoundError, match="the evaluator's stage did not finish"):
            evaluate_family(params, "vae")
        metrics.write_text(done)
    finally:
        feats.write_bytes(kept)
    assert evaluate_family(params, "vae")["fd"] == q["fd"]  # (measured again: the same seeds, figures)
    # evaluate.k above the images: one line before any work
    with pytest.raises(ValueError, match="evaluate.k=100: 40 images drawn a seed"):
        evaluate_family(validate({**raw, "evaluate": {**raw["evaluate"], "k": 100}}), "vae")
    with pytest.raises(ValueError, match="evaluate.k=100000: the test split holds"):
        evaluator_stage(validate({**raw, "evaluate": {**raw["evaluate"], "k": 100000}}))


def test_bench_floor_prints_the_floor_of_a_familys_size_in_every_space(trained):
    tmp, _, params = trained
    evaluator_stage(params)
    r = subprocess.run(
        [sys.executable, "bench/floor.py", "--runs", str(tmp / "runs"),
         "--prepared", params.data.prepared_dir, "--draws", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [line.split("|")[1:-1] for line in r.stdout.splitlines() if line.startswith("| ")][1:]
    assert [c[0].strip() for c in rows] == list(SPACES)
    for _, whole, drawn, ratio in rows:  # 40 images (4 per class) score well above all 1,259 of the split
        assert float(ratio) == pytest.approx(float(drawn.split("±")[0]) / float(whole), rel=0.01)
        assert float(ratio) > 1


def test_bench_retrain_scores_each_training_seed_and_setting_as_the_evaluation_does(
    trained, tmp_path, monkeypatch, capsys
):
    import torch

    from tests.conftest import load_bench

    tmp, raw, params = trained
    evaluator_stage(params)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    script = load_bench("retrain")  # its main() in this process: six interpreters' imports saved

    def retrain(*args: str) -> tuple[object, str]:
        """bench/retrain.py with ``args``: its exit (None when it ends normally) and its stdout."""
        argv = ["retrain.py", "--run", str(tmp), "--params", str(tmp_path / "params.yaml"),
                "--threads", str(torch.get_num_threads()), *args]  # fmt: skip
        monkeypatch.setattr(sys, "argv", argv)
        capsys.readouterr()
        try:
            script.main()
            code = None
        except SystemExit as stop:
            code = stop.code
        return code, capsys.readouterr().out

    code, out = retrain("--family", "vae", "--set", "train.weight_decay=0,0.5", "--seeds", "0,1",
                        "--work", str(tmp_path / "w"))  # fmt: skip
    assert code is None, code
    tables = [[line.split("|")[1:-1] for line in block.splitlines() if line.startswith("| ")][1:]
              for block in out.split("\n\n") if block.startswith("| ")]  # fmt: skip
    runs, summary = tables
    pairs = [("0", "0"), ("0", "1"), ("0.5", "0"), ("0.5", "1")]
    assert [(c[0].strip(), c[1].strip()) for c in runs] == pairs
    fd = {(c[0].strip(), c[1].strip()): float(c[2].split("(")[0]) for c in runs}
    # weight decay 0 and seed 0 is the run's own VAE (the same training), scored as its evaluation was
    assert fd["0", "0"] == pytest.approx(evaluate_family(params, "vae")["spaces"]["cnn"]["fd"], abs=1e-3)
    assert fd["0", "0"] != fd["0", "1"] and fd["0", "0"] != fd["0.5", "0"]  # seed and setting both count
    assert [c[0].strip() for c in summary] == ["0", "0.5"]
    mean = float(summary[0][1].split("±")[0])
    assert mean == pytest.approx((fd["0", "0"] + fd["0", "1"]) / 2, abs=2e-3)
    code, _ = retrain("--family", "vae", "--set", "train.weight_decay=-1", "--work", str(tmp_path / "w2"))
    assert code and "weight_decay" in str(code) and not (tmp_path / "w2").exists()
    # --sweep: each trained model scored at each sampling setting, without retraining
    code, out = retrain("--family", "vae", "--sweep", "temperature=1,0.5", "--seeds", "0",
                        "--work", str(tmp_path / "w3"))  # fmt: skip
    assert code is None, code
    rows = [line.split("|")[1:-1] for line in out.split("\n\n")[1].splitlines()[2:]]
    assert [(c[0].strip(), c[1].strip()) for c in rows] == [("0", "1"), ("0", "0.5")]  # one training
    assert len(list((tmp_path / "w3").iterdir())) == 1
    sfd = {c[1].strip(): float(c[2].split("(")[0]) for c in rows}
    assert sfd["1"] == pytest.approx(fd["0", "0"], abs=1e-3) and sfd["0.5"] != sfd["1"]
    # a bad value; a key that changes the network; a family the run did not train
    cases = [("vae", "temperature=-1", "temperature"), ("vae", "hidden=4", "hidden"),
             ("ddpm", "guidance=1.2", "trained no ddpm")]  # fmt: skip
    for family, sweep, key in cases:
        code, _ = retrain("--family", family, "--sweep", sweep, "--work", str(tmp_path / "w4"))
        assert code and key in str(code) and not (tmp_path / "w4").exists(), code
    # the script itself, as a user starts it: a refusal, one line on stderr
    bad = subprocess.run(
        [sys.executable, "bench/retrain.py", "--run", str(tmp), "--params", str(tmp_path / "params.yaml"),
         "--family", "vae", "--set", "train.weight_decay=-1", "--work", str(tmp_path / "w5")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0 and "weight_decay" in bad.stderr and "Traceback" not in bad.stderr


def test_the_evaluator_stage_computes_on_its_params_threads_blas_included(tmp_path, monkeypatch):
    """`genzoo evaluate` in a 2-core process fitted another MLP judge (scikit-learn's L-BFGS on
    numpy's BLAS threads) than the pipeline's one-CPU Ray task: the stage sets torch's threads
    and the BLAS / OpenMP pools to its params' count before it computes anything."""
    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    import genzoo.tasks.evaluate as E

    params = validate(tiny_params(tmp_path, steps=2, families=["gan"]))
    prepare(params)
    seen = {}

    class Stop(Exception):
        pass

    def first_compute(*args, **kwargs):  # the evaluator's training, the stage's first work
        seen.update(blas={p["num_threads"] for p in threadpool_info()}, torch=torch.get_num_threads())
        raise Stop

    monkeypatch.setattr(E, "train_evaluator", first_compute)
    before = torch.get_num_threads()
    try:
        with threadpool_limits(limits=2):  # what a 2-core process computes on
            torch.set_num_threads(2)
            with pytest.raises(Stop):
                evaluator_stage(params)
    finally:
        torch.set_num_threads(before)
    want = params.threads("evaluator")
    assert want == 1 and seen == {"blas": {want}, "torch": want}, seen


def test_pools_loaded_after_the_thread_count_is_set_compute_on_it_too():
    """threadpoolctl limits the pools loaded when it is called; scikit-learn's own OpenMP and
    SciPy's OpenBLAS (PCA, the judges, the GMM's k-means) load later, when a stage first needs
    them, and took every core: a 1-thread DVC stage's PCA ran on 2 BLAS threads."""
    code = (
        "import os\n"
        "for v in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'): os.environ.pop(v, None)\n"
        "from genzoo.tasks.layout import use_threads\n"
        "use_threads(1)\n"
        "import numpy as np, scipy.linalg, sklearn.cluster\n"
        "from sklearn.decomposition import PCA\n"
        "PCA(3).fit(np.random.default_rng(0).random((50, 10)))\n"
        "from threadpoolctl import threadpool_info\n"
        "print(sorted({(p['internal_api'], p['num_threads']) for p in threadpool_info()}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    pools = eval(out.stdout)  # noqa: S307 (our own printout)
    assert {api for api, _ in pools} >= {"openmp", "openblas"} and {n for _, n in pools} == {1}, pools


def test_memorization_is_measured_on_images_drawn_from_the_whole_set():
    """A draw comes sorted by class (a folder's training split too): the figure took its first
    rows, as many as the test split holds, so the later classes were never checked for copies."""
    from genzoo.tasks.quality import scores

    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(100, 6)), rng.normal(size=(100, 6))
    real = {"train": train, "test": test, "test_labels": np.zeros(100, dtype=int)}
    # the first half fresh, the second half (the "later classes") copies of training images
    fake = np.concatenate([rng.normal(size=(100, 6)) + 5, train + 1e-9])
    params = validate(tiny_params(Path("/nonexistent")))
    m = scores(params, fake, None, None, real, seed=3)["memorization"]
    assert m["images"] == 100 and 0.3 < m["copies"] < 0.7, m
    assert m == scores(params, fake, None, None, real, seed=3)["memorization"]  # seeded
    # as many fake rows as test rows (or fewer): every one, as before
    assert scores(params, fake[-100:], None, None, real)["memorization"]["copies"] == 1.0


def test_a_missing_real_features_file_is_one_line_naming_the_stage_to_run(trained):
    """features.npz gone (the evaluator's folder half copied): a TypeError from deep in the scoring."""
    tmp, _, params = trained
    evaluator_stage(params)  # reused when made
    features = tmp / "runs" / "evaluation" / "evaluator" / "features.npz"
    features.rename(features.with_suffix(".aside"))
    try:
        with pytest.raises(FileNotFoundError, match="features.npz missing: the evaluator is not trained"):
            evaluate_family(params, "gan")
    finally:
        features.with_suffix(".aside").rename(features)


def test_the_real_test_splits_inception_score_is_taken_over_parts_of_a_familys_part_size():
    """The real test split's 360 images were scored in ten parts of 36, each family's 1,000 in
    parts of 100: the plug-in entropy of a small part's class marginal is biased low, and the
    real reference sat 5-7% below a family of the very same class probabilities."""
    from pathlib import Path

    from genzoo.metrics.quality import inception_score
    from genzoo.models.base import DataSpec
    from genzoo.tasks.config import load_params
    from genzoo.tasks.evaluate import _is_parts

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    spec = DataSpec(1, 8, 8, 17, 10)  # 100 a class: a family's parts hold 100 images
    assert (_is_parts(params, spec, 360), _is_parts(params, spec, 1000), _is_parts(params, spec, 30)) == (
        4,
        10,
        1,
    )
    g = np.random.default_rng(0)

    def draw(n):  # confident class probabilities of n images, classes at random
        p = np.full((n, 10), 0.02)
        p[np.arange(n), g.integers(0, 10, n)] = 0.82
        return p

    mean = lambda n, splits: np.mean([inception_score(draw(n), splits=splits, seed=s)[0] for s in range(30)])  # noqa: E731
    family = mean(1000, 10)
    assert abs(mean(360, _is_parts(params, spec, 360)) / family - 1) < 0.02 < abs(mean(360, 10) / family - 1)
