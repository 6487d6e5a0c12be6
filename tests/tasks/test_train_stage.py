"""The train stage: its figures scale their sample counts with the image size; it says when it
replaces a model of other data."""

import json

from genzoo import models
from genzoo.models import DataSpec
from genzoo.tasks.train import sampling_speed


def test_sampling_speed_draws_fewer_large_images(monkeypatch):
    drawn = []
    for spec, n in (
        (DataSpec(1, 8, 8, 17, 10), 100),
        (DataSpec(3, 32, 32, 32, 2), 8),
        (DataSpec(1, 16, 16, 4, 2), 25),
    ):
        model = models.build("gan", spec, {"latent_dim": 4, "hidden": 4})
        real = model.sample
        monkeypatch.setattr(model, "sample", lambda k, real=real, **kw: drawn.append(k) or real(k, **kw))
        assert sampling_speed(model) > 0
        assert drawn[-1] == n
    assert sampling_speed(model, n=3) > 0 and drawn[-1] == 3


def test_training_on_other_data_says_it_replaces_the_earlier_model(tmp_path, caplog):
    """A run on another image folder replaced runs/<family>/ trained on the first one without a
    word: it now says so, and where the earlier model stays."""
    import logging

    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import prepared_other_data, tiny_params

    params = validate(tiny_params(tmp_path, steps=2, families=["gan"]))
    prepare(params)
    with caplog.at_level(logging.WARNING, logger="genzoo.train"):
        train_family(params, "gan", progress=False)
    assert "replacing" not in caplog.text  # nothing there before
    other = prepared_other_data(params, tmp_path)
    with caplog.at_level(logging.WARNING, logger="genzoo.train"):
        train_family(other, "gan", progress=False)
    assert (
        f"gan: replacing {tmp_path / 'runs' / 'gan'}, trained on other data than the prepared data (now from "
        "npz:" in caplog.text
    ) and "another source, or its images changed since)" in caplog.text
    assert (
        "no MLflow run is recorded for it: to keep it, stop now (Ctrl+C) and copy the folder" in caplog.text
    )


def test_a_training_asked_to_checkpoint_more_often_resumes_from_its_checkpoint(tmp_path):
    """A long training stopped to checkpoint more often started again from step 0 (the setting
    named its checkpoint folder): it resumes from its last checkpoint and ends on the same
    weights; the model is made again (its key keeps the setting, as dvc.yaml's train@ does)."""
    from genzoo.models.base import sha256_file
    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import logged, tiny_params

    raw = tiny_params(tmp_path, steps=12, families=["gan"])
    params = validate(raw)
    prepare(params)
    train_family(params, "gan", progress=False, stop_at=10)  # stopped at its checkpoint at step 10
    more = validate({**raw, "train": {**raw["train"], "checkpoint_every": 4, "keep_checkpoints": 3}})
    with logged("genzoo") as lines:
        train_family(more, "gan", progress=False)
    assert any("resuming from its checkpoint at step 10" in m for m in lines), lines
    resumed = sha256_file(tmp_path / "runs" / "gan" / "model.safetensors")
    straight = validate({**raw, "run": {**raw["run"], "runs_dir": str(tmp_path / "r2"),
                                        "checkpoints_dir": str(tmp_path / "c2")}})  # fmt: skip
    train_family(straight, "gan", progress=False)
    assert sha256_file(tmp_path / "r2" / "gan" / "model.safetensors") == resumed


def test_a_retraining_stopped_before_its_end_leaves_the_former_model_whole(tmp_path, monkeypatch):
    """Cancelling a retraining (the UI's Cancel, Ctrl+C, a failure) left the former complete
    model `incomplete` for status, the report and `sample`: the training removed its
    metrics.json as it started, and replaced its log.jsonl. Both now go only as the new weights
    replace the old; a training stopped after that is incomplete, never the new weights with
    the former figures."""
    import pytest

    from genzoo.tasks import train
    from genzoo.tasks.config import validate
    from genzoo.tasks.layout import FAMILY_OUTPUTS, up_to_date
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.status import family_status
    from genzoo.tasks.train import train_family
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=10, families=["gan"])
    raw["train"]["log_every"] = 2
    params = validate(raw)
    prepare(params)
    train_family(params, "gan", progress=False)
    out = tmp_path / "runs" / "gan"
    before = {f: (out / f).read_bytes() for f in (*FAMILY_OUTPUTS, "log.key")}
    longer = validate({**raw, "train": {**raw["train"], "steps": 16}})
    train_family(longer, "gan", progress=False, stop_at=4)  # stopped at step 4 of 16
    assert {f: (out / f).read_bytes() for f in before} == before
    assert family_status(params, "gan")["state"] == "up to date"
    assert family_status(longer, "gan")["state"].startswith("stale")
    # stopped between its weights and its figures (killed, a failure): incomplete, not up to date
    monkeypatch.setattr(train, "save_png", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        train_family(longer, "gan", progress=False)
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert not (out / "metrics.json").exists() and up_to_date(longer, "gan") is None
    assert family_status(longer, "gan")["state"].startswith("incomplete (metrics.json missing")
    assert [json.loads(r)["step"] for r in (out / "log.jsonl").read_text().splitlines()][-1] == 16
    monkeypatch.undo()
    train_family(longer, "gan", progress=False)  # the retraining finished: its own metrics
    assert (out / "model.safetensors").read_bytes() != before["model.safetensors"]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 16
    assert family_status(longer, "gan")["state"] == "up to date"
