"""The evaluation stages on real (tiny) trained models: what they write, reference rows that
order as they must, and caching on unchanged inputs."""

import json

import pytest

from tasks.config import validate
from tasks.evaluate import evaluate_family, evaluator_stage
from tasks.prepare import prepare
from tasks.train import train_family
from tests.conftest import tiny_params


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
    folder = tmp / "runs" / "evaluator"
    for name in ("evaluator.json", "evaluator.safetensors", "features.npz", "reference.json", "metrics.json"):
        assert (folder / name).exists(), name
    assert 0.5 < m["test_accuracy"] <= 1.0
    ref = json.loads((folder / "reference.json").read_text())
    floor, noise = ref["real_train_vs_test"], ref["uniform_noise"]
    assert floor["fd"] < noise["fd"] and floor["precision"] > noise["precision"]
    assert floor["recall"] > noise["recall"]
    before = (folder / "evaluator.safetensors").stat().st_mtime_ns
    assert evaluator_stage(params)["key"] == m["key"]  # unchanged inputs: reused, not retrained
    assert (folder / "evaluator.safetensors").stat().st_mtime_ns == before


def test_family_quality_is_measured_and_cached(trained):
    tmp, raw, params = trained
    evaluator_stage(params)
    q = evaluate_family(params, "vae")
    saved = json.loads((tmp / "runs" / "vae" / "quality.json").read_text())
    assert saved == json.loads(json.dumps(q))
    assert q["n"] == 40 and q["fd"] > 0 and q["kid_std"] >= 0
    for k in ("precision", "recall", "density", "coverage", "class_accuracy"):
        assert 0 <= q[k] <= (10 if k == "density" else 1), k
    assert len(q["fd_per_class"]) == 10 and q["memorization"]["nn_test"] > 0
    assert evaluate_family(params, "vae")["key"] == q["key"]
    raw2 = {**raw, "evaluate": {**raw["evaluate"], "samples_per_class": 6}}
    assert evaluate_family(validate(raw2), "vae")["n"] == 60  # another budget: measured again
    with pytest.raises(FileNotFoundError, match="ddpm is not trained"):
        evaluate_family(params, "ddpm")
