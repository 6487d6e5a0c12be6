"""Synthetic datasets: what lands on disk, determinism, and bad requests that write nothing."""

import hashlib
import json

import numpy as np
import pytest
from pydantic import ValidationError

from tasks.augment import AugmentRequest, generate
from tasks.config import validate
from tasks.prepare import prepare
from tasks.train import train_family
from tests.conftest import tiny_params


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("augment")
    params = validate(tiny_params(tmp, steps=5, families=["gan", "vae", "pixelcnn"]))
    prepare(params)
    for fam in ("gan", "vae"):  # pixelcnn stays untrained
        train_family(params, fam, progress=False)
    return tmp, params


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

    again = generate(params, req)  # same request: same bytes; the old version replaced whole
    assert json.loads((again / "manifest.json").read_text())["sha256"] == m["sha256"]
    other = generate(params, req.model_copy(update={"seed": 2}))
    assert json.loads((other / "manifest.json").read_text())["sha256"] != m["sha256"]
    assert sorted(p.name for p in (tmp / "aug").iterdir()) == ["synthetic"]  # no temp or old folders


@pytest.mark.parametrize(
    "bad, error",
    [
        ({"families": ["nope"]}, "augment.families: nope is not a family"),
        ({"families": ["pixelcnn"]}, "pixelcnn is not trained"),
        ({"families": ["gan", "pixelcnn"]}, "pixelcnn is not trained"),
        ({"families": ["gan"], "per_class": 0}, "per_class"),
        ({"families": ["gan"], "per_class": -5}, "per_class"),
        ({"families": []}, "families"),
        ({"families": ["gan"], "name": "../escape"}, "name"),
        ({"families": ["gan"], "name": "/abs"}, "name"),
    ],
)
def test_bad_requests_fail_clearly_and_write_nothing(trained, bad, error):
    tmp, params = trained
    out = tmp / "bad-out"
    with pytest.raises((ValueError, FileNotFoundError, ValidationError), match=error):
        generate(params, AugmentRequest(out_dir=str(out), **bad))
    assert not out.exists()
    assert not (tmp / "escape").exists()
