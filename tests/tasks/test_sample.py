"""Sampling a trained model by class (tasks/sample.py)."""

import pytest
import torch

from genzoo import models
from genzoo.models import DataSpec
from genzoo.tasks.sample import resolve_class


def test_a_class_left_out_of_training_is_drawn_when_asked_with_a_warning(caplog, tiny):
    """exclude_classes gives a class no prior mass (never drawn unasked); asked for by index
    or name, it is drawn, with a warning that the weights never saw one."""
    model = models.build("vae", DataSpec(1, 8, 8, 17, 3), tiny["vae"])
    model.log_class_prior.copy_(torch.tensor([0.0, float("-inf"), 0.0]).log_softmax(0))
    names = ["cat", "dog", "owl"]
    with caplog.at_level("WARNING", "genzoo.sample"):
        assert resolve_class(model, "0", None) == 0 and resolve_class(model, "owl", names) == 2
        assert not caplog.messages
        assert resolve_class(model, 1, None) == 1 and resolve_class(model, "dog", names) == 1
    assert caplog.messages == [
        "--class 1: left out of this model's training (exclude_classes): its images come from weights "
        "that never saw one",
        "--class dog: left out of this model's training (exclude_classes): its images come from weights "
        "that never saw one",
    ]
    with pytest.raises(ValueError, match=r"--class 3: out of range \[0, 3\)"):
        resolve_class(model, 3, None)


def test_a_class_name_is_the_models_own_not_that_of_other_prepared_data(tmp_path, caplog, tiny):
    """A model trained on other data than data.prepared_dir holds (its model.json's data hash)
    is asked by class index: the prepared data's names are not its classes (`--class square` drew
    digit 1s from a digits model while a folder of shapes was prepared)."""
    import numpy as np

    from genzoo.tasks.config import validate
    from genzoo.tasks.data import data_hash
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.sample import class_names, load_model

    f = tmp_path / "shapes.npz"
    np.savez(f, images=np.zeros((30, 8, 8), np.uint8), labels=np.array(["circle", "square", "triangle"] * 10))
    prepared = tmp_path / "prepared"
    manifest = prepare(
        validate({"models": {"vae": {}}, "data": {"prepared_dir": str(prepared), "source": f"npz:{f}"}})
    )
    model = models.build("vae", DataSpec(1, 8, 8, 256, 3), tiny["vae"])
    models.save(model, tmp_path / "same" / "model", {"data_sha256": data_hash(manifest)})
    models.save(model, tmp_path / "other" / "model", {"data_sha256": "0123456789abcdef" * 4})

    same = load_model(tmp_path / "same")
    assert same.data_sha256 == data_hash(manifest)
    assert resolve_class(same, "square", class_names(prepared, same)) == 1
    other = load_model(tmp_path / "other")
    with caplog.at_level("WARNING", "genzoo.sample"):
        names = class_names(prepared, other)
    assert names is None and "trained on other data (0123456789ab)" in caplog.text
    with pytest.raises(ValueError, match="--class 'square': not a class name or index"):
        resolve_class(other, "square", names)
    assert resolve_class(other, 2, names) == 2
    # a model trained since keeps its classes' names: asked by name whatever data is prepared
    models.save(model, tmp_path / "named" / "model",
                {"data_sha256": "0123456789abcdef" * 4, "class_names": ["cat", "dog", "owl"]})  # fmt: skip
    named = load_model(tmp_path / "named")
    caplog.clear()
    assert resolve_class(named, "dog", class_names(prepared, named)) == 1 and not caplog.text


def test_a_family_added_with_an_encoder_and_a_decoder_can_perturb(monkeypatch):
    """Recipes in perturb mode ask the model classes, not a list of names: a family added to the
    registry (README, "Adding a family") with encode/decode perturbs; one without does not."""
    from genzoo.tasks.sample import perturbable

    assert perturbable() == ["ddpm", "realnvp", "vae"]
    monkeypatch.setitem(models.REGISTRY, "toyvae", models.REGISTRY["vae"])
    monkeypatch.setitem(models.REGISTRY, "toygan", models.REGISTRY["gan"])
    assert "toyvae" in perturbable() and "toygan" not in perturbable()


def test_the_sampling_bar_is_drawn_on_a_terminal_only(tiny, capsys, monkeypatch):
    """`genzoo sample ... 2> log` wrote tqdm's carriage-return fragments into the file (training
    writes lines there): the bar only where there is a terminal to draw it on."""
    import sys

    from genzoo.tasks.sample import draw

    model = models.build("gan", DataSpec(1, 8, 8, 17, 3), tiny["gan"])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    draw(model, 4, progress=True)
    assert "sampling gan" not in capsys.readouterr().err
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    draw(model, 4, progress=True)
    assert "sampling gan" in capsys.readouterr().err


def test_the_png_of_more_than_400_samples_shows_the_first_400_of_every_class(tiny, tmp_path, monkeypatch):
    """`genzoo sample --n 1000` sorted all 1,000 by class and kept 400: the PNG showed classes 0-3."""
    import numpy as np

    from genzoo.tasks import sample as sample_task

    model = models.build("gan", DataSpec(1, 8, 8, 17, 10), tiny["gan"]).eval()
    shown = []
    real = sample_task.grid
    monkeypatch.setattr(sample_task, "grid", lambda x, **k: shown.append(x) or real(x, **k))
    npz, _ = sample_task.sample_to_file(model, 1000, tmp_path / "s", seed=0, progress=False)
    with np.load(npz) as z:
        images, labels = z["images"], z["labels"]
    assert len(set(labels[:400])) == 10 and len(shown) == 1
    assert torch.equal(shown[0], torch.from_numpy(images[np.argsort(labels[:400], kind="stable")]))
