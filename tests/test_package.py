"""genzoo as a downstream project meets it: the wheel installed into a fresh venv outside the
repository, used from a project that has its own ``models/``, ``tasks.py``, ``metrics.py`` and
``flows/`` (which genzoo must never import), through the command line and the public API.

The fresh venv gets genzoo only from the wheel; its dependencies come from the test's own
environment through a path entry (installing torch, Ray, Prefect, MLflow and DVC afresh would
take minutes), and ``pip check`` proves the wheel's declared requirements hold there.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

import genzoo
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("genzoo", "models", "metrics", "tasks", "flows")

USER_SCRIPT = """
import json, sys
import torch
import genzoo

ds = genzoo.load_dataset("synthetic", root="data/augment")
image, label = ds[0]
model = genzoo.load_model("gan", runs_dir="runs")
x, y = genzoo.sample(model, 6, label=3, seed=1)
x2, _ = genzoo.sample(model, 6, label=3, seed=1)
mixed = genzoo.mix(genzoo.real_dataset("data/prepared"), ds, ratio=0.01)
try:
    genzoo.bits_per_dim(model, x)
    refused = ""
except ValueError as e:
    refused = str(e)
codes = torch.randn(2, model.cfg.latent_dim, generator=torch.Generator().manual_seed(0))
strip = genzoo.interpolate(model, codes[0], codes[1], labels=(3, 5), steps=4)
print(json.dumps({
    "genzoo": genzoo.__file__,
    "version": genzoo.__version__,
    "families": list(genzoo.families()),
    "n": len(ds), "image": list(image.shape), "label": label,
    "shape": list(x.shape), "labels": y.tolist(), "same": bool(torch.equal(x, x2)),
    "in_range": bool(x.min() >= 0 and x.max() <= 1),
    "mixed": len(mixed), "refused": refused, "strip": list(strip.shape),
    "ends": bool(torch.allclose(strip[[0, -1]], genzoo.decode(model, codes, [3, 5]), atol=1e-5)),
    "bare": sorted(m for m in ("models", "tasks", "metrics", "flows") if m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    from filelock import FileLock

    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist)]
    # one build at a time: setuptools builds in the checkout's build/, which two test workers share
    with FileLock(tmp_path_factory.getbasetemp().parent / "genzoo-wheel.lock"):
        subprocess.run([*cmd, str(ROOT)], check=True, capture_output=True, timeout=300)
    (whl,) = dist.glob("genzoo-*.whl")
    return whl


def test_wheel_holds_one_genzoo_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"genzoo", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for sub in ("models/vae.py", "tasks/train.py", "metrics/quality.py", "flows/cli.py"):
        assert f"genzoo/{sub}" in names
    assert "genzoo/py.typed" in names and "genzoo/tasks/report.html.j2" in names
    assert "genzoo/flows/judge.html.j2" in names and "genzoo/flows/judge.js" in names  # the rating page
    assert "genzoo/tasks/dataset_card.md.j2" in names  # the synthetic dataset's card
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "genzoo = genzoo.flows.cli:main" in entry


def _third_party_imports() -> set[str]:
    """Top-level names of the non-standard-library modules genzoo's code imports."""
    names: set[str] = set()
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("genzoo", "__future__")}


def test_every_imported_distribution_is_declared(wheel):
    meta = zipfile.ZipFile(wheel)
    text = meta.read(next(n for n in meta.namelist() if n.endswith("METADATA"))).decode()
    required = {
        line.split(":", 1)[1].split(";")[0].strip().split(" ")[0].split(">")[0].split("=")[0].split("<")[0]
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    extras = {
        line.split(":", 1)[1].split(";")[0].strip().split(" ")[0].split(">")[0].split("=")[0].split("<")[0]
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" in line
    }
    dists = packages_distributions()
    missing = {}
    for name in _third_party_imports():
        owners = {d.lower().replace("_", "-") for d in dists.get(name, [name])}
        declared = {r.lower().replace("_", "-") for r in required | extras}
        if not owners & declared:
            missing[name] = sorted(owners)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert "scipy" in required  # imported by the metrics, once forgotten


@pytest.fixture(scope="module")
def user_env(wheel, tmp_path_factory):
    """A fresh venv with the wheel installed, and a user's project beside it."""
    tmp = tmp_path_factory.mktemp("user")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # the dependencies: this environment's site-packages as a plain path entry (its .pth files,
    # among them an editable genzoo's finder, are not run from there)
    Path(site, "genzoo-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(py)]
    subprocess.run([*pip, "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=300)

    proj = tmp / "project"
    for pkg in ("models", "flows"):
        (proj / pkg).mkdir(parents=True)
        (proj / pkg / "__init__.py").write_text(
            f"raise ImportError('the user project\\'s {pkg} was imported')\n"
        )
    for mod in ("tasks", "metrics"):
        (proj / f"{mod}.py").write_text(f"raise ImportError('the user project\\'s {mod}.py was imported')\n")
    raw = tiny_params(Path("."), steps=5, families=["gan"])
    raw["data"]["prepared_dir"] = "data/prepared"
    raw["run"].update(runs_dir="runs", checkpoints_dir="checkpoints")
    raw["augment"]["out_dir"] = "data/augment"
    (proj / "params.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}:/usr/bin:/bin"

    def sh(*cmd: str) -> str:
        r = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{' '.join(cmd)}:\n{r.stdout}\n{r.stderr}"
        return r.stdout

    return venv, proj, sh, check


def test_declared_requirements_hold_in_the_fresh_venv(user_env):
    *_, check = user_env
    assert check.returncode == 0, check.stdout + check.stderr


def test_cli_and_public_api_from_a_project_with_its_own_models_and_tasks(user_env):
    venv, proj, sh, _ = user_env
    assert "usage: genzoo" in sh("genzoo", "--help")
    sh("genzoo", "prepare")
    sh("genzoo", "train", "--family", "gan", "-q")
    sh("genzoo", "augment", "--families", "gan", "--per-class", "2", "--no-reject-copies")
    out = json.loads(sh(str(venv / "bin" / "python"), "-c", USER_SCRIPT).strip().splitlines()[-1])
    assert Path(out["genzoo"]).is_relative_to(venv), out["genzoo"]  # the wheel, not the checkout
    assert out["version"] != "0+unknown" and "gan" in out["families"]
    assert out["n"] == 20 and out["image"] == [1, 8, 8] and 0 <= out["label"] < 10
    assert out["shape"] == [6, 1, 8, 8] and out["labels"] == [3] * 6 and out["same"] and out["in_range"]
    n_train = len(genzoo.real_dataset(proj / "data" / "prepared"))
    assert out["mixed"] == n_train + round(0.01 * n_train)
    assert out["refused"].startswith("gan has no likelihood")  # bits_per_dim, from the wheel
    assert out["strip"] == [4, 1, 8, 8] and out["ends"]  # interpolate and decode, from the wheel
    assert out["bare"] == []  # nothing of the user's project was imported
    dataset = proj / "data" / "augment" / "synthetic"  # the card's template came with the wheel
    assert "## Licence" in (dataset / "README.md").read_text() and (dataset / "images" / "03_3").is_dir()


def test_the_public_api_and_the_progress_board_load_nothing_heavy():
    """``import genzoo`` stays cheap (torch loads on the first call), and the progress board's
    module, all that its Ray actor's process imports, loads neither torch nor Ray nor Prefect."""
    heavy = ("torch", "ray", "prefect", "mlflow", "sklearn")
    code = f"import sys, genzoo, genzoo.flows.board\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _tiny(family: str):
    """A tiny untrained model of ``family`` on 8x8 digits' spec, its weights off their zero
    initialisation (so labels and codes matter)."""
    import torch

    from genzoo.models import build
    from genzoo.models.base import DataSpec
    from tests.conftest import TINY

    torch.manual_seed(0)
    model = build(family, DataSpec(1, 8, 8, 17, 10), TINY[family]).eval()
    with torch.no_grad():
        for w in model.parameters():
            w.add_(0.05 * torch.randn_like(w))
    return model


@pytest.mark.parametrize("family", ["pixelcnn", "realnvp", "vae", "ddpm"])
def test_bits_per_dim_are_the_figures_genzoo_detect_scores_by(family):
    """``genzoo.bits_per_dim`` gives, from Python, the numbers ``genzoo detect`` flags images by
    (labels marginalised), per class with labels, and refuses what it cannot score."""
    import math

    import torch

    from genzoo.tasks.detect import score

    model = _tiny(family)  # off the zero-initialised layers, so the label matters
    x = (torch.rand(5, 1, 8, 8) * 16).round() / 16  # on the 17 levels of the model
    bpd = genzoo.bits_per_dim(model, x)
    assert bpd.dtype == torch.float64 and bpd.shape == (5,) and torch.isfinite(bpd).all()
    assert torch.equal(bpd, torch.from_numpy(score(model, x)))
    assert torch.equal(genzoo.bits_per_dim(model, x), bpd)  # seeded: the same images, the same numbers
    # off the grid by less than half a level: read at the nearest level, by every family alike
    # (PixelCNN's network read the raw values: its figure moved)
    assert torch.equal(genzoo.bits_per_dim(model, (x + 0.02).clamp(0, 1)), bpd)
    given = genzoo.bits_per_dim(model, x, [3, 3, 3, 3, 3])  # -log2 p(x | y=3) / dims
    assert torch.isfinite(given).all() and not torch.equal(given, bpd)
    assert torch.equal(genzoo.bits_per_dim(model, x, 3), given)  # one int for all, as encode takes
    assert torch.equal(genzoo.bits_per_dim(model, x, torch.full((5,), 3, dtype=torch.uint8)), given)
    if family in ("pixelcnn", "realnvp"):  # exact: p(x) >= p(y=3) p(x | y=3), the prior uniform
        assert (bpd <= given + math.log2(10) / 64 + 1e-9).all(), (bpd, given)
    with pytest.raises(ValueError, match=r"class indices in \[0, 10\), got 12$"):  # the bad label named
        genzoo.bits_per_dim(model, x, [3, 3, 12, 3, 3])
    x[2, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"1 of 5 images hold NaN or inf pixels \(the first: image 2\)"):
        genzoo.bits_per_dim(model, x)


def test_bits_per_dim_of_a_gan_is_refused():
    said = (
        r"gan has no likelihood \(an implicit model\); bits/dim come from pixelcnn, realnvp \(exact\), ddpm"
    )
    with pytest.raises(ValueError, match=said):  # the families that have one: the registry's, a new one too
        genzoo.bits_per_dim(_tiny("gan"), [[[[0.5] * 8] * 8]])


@pytest.mark.parametrize(
    ("family", "shape"),
    [("vae", (5, "latent_dim")), ("realnvp", (5, 64)), ("ddpm", (5, 1, 8, 8)), ("gan", None)],
)
def test_encode_decode_and_interpolate_walk_a_latent_space_from_python(family, shape):
    """``genzoo.encode``/``decode``/``interpolate``: codes of the shape each family has, the
    flow's decode inverting its encode exactly, a strip that starts at ``decode(start)`` and ends
    at ``decode(end)`` under their labels, and a GAN walked from prior codes."""
    import torch

    model = _tiny(family)
    x = torch.randint(0, 17, (5, 1, 8, 8)) / 16  # on the 17-level grid
    y = torch.tensor([0, 1, 2, 3, 3])
    if family == "gan":
        with pytest.raises(ValueError, match="gan: an encoder"):
            genzoo.encode(model, x, y)
        z = torch.randn(5, model.cfg.latent_dim)
    else:
        z = genzoo.encode(model, x, y)
        shape = tuple(getattr(model.cfg, d) if isinstance(d, str) else d for d in shape)
        assert z.shape == shape and z.dtype == torch.float32
        assert torch.allclose(genzoo.encode(model, x, y, batch=2), z, atol=1e-5)  # batches: same codes
        assert torch.equal(genzoo.encode(model, x, 3), genzoo.encode(model, x, [3] * 5))
    images = genzoo.decode(model, z, y)
    assert images.shape == (5, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    if family == "realnvp":  # an exact inverse, back to the level grid
        assert torch.allclose(images, x, atol=1e-4), (images - x).abs().max()
    strip = genzoo.interpolate(model, z[0], z[1:2], labels=(0, 1), steps=5)
    assert strip.shape == (5, 1, 8, 8)
    assert torch.allclose(strip[0], images[0], atol=1e-5) and torch.allclose(strip[-1], images[1], atol=1e-5)
    linear = genzoo.interpolate(model, z[0], z[1], labels=4, steps=3, mode="linear")
    assert torch.allclose(linear[1], genzoo.decode(model, (z[0] + z[1])[None] / 2, 4)[0], atol=1e-5)

    bad = z.clone()
    bad[1].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=f"{family}: codes hold NaN or inf"):
        genzoo.decode(model, bad, y)
    with pytest.raises(ValueError, match=rf"{family}: codes must have shape \(N, "):
        genzoo.decode(model, z[:, :-1], y)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\), got 10$"):
        genzoo.decode(model, z, [0, 1, 2, 3, 10])  # the value named (it said "got shape (5,)")
    with pytest.raises(ValueError, match=r"labels must be one class index in \[0, 10\) per code, got shape"):
        genzoo.decode(model, z, [0, 1])
    far = z.clone()
    far[3] = 1e30  # overflows every family's network but the GAN's (its tanh saturates)
    if family != "gan":
        with pytest.raises(ValueError, match=rf"{family}: 1 of 5 codes decode to no image .* code 3, its"):
            genzoo.decode(model, far, y)
    with pytest.raises(ValueError, match="start: one code of shape"):
        genzoo.interpolate(model, z[:2], z[2], labels=0)
    with pytest.raises(ValueError, match="steps: at least 2"):
        genzoo.interpolate(model, z[0], z[1], labels=0, steps=1)


def test_a_model_without_a_latent_space_is_refused_by_name():
    import torch

    model = _tiny("pixelcnn")
    # the families that have one, from the registry (a family a user adds is named too)
    with pytest.raises(ValueError, match=r"pixelcnn: a latent space \(ddpm, gan, realnvp, vae\) is needed; "
                                         r"pixelcnn has none \(no encode or decode\)"):  # fmt: skip
        genzoo.decode(model, torch.zeros(2, 64), 0)
    with pytest.raises(ValueError, match=r"pixelcnn: an encoder \(ddpm, realnvp, vae\) is needed"):
        genzoo.encode(model, torch.zeros(2, 1, 8, 8), 0)
    vae = _tiny("vae")
    with pytest.raises(ValueError, match=r"1 of 2 images hold NaN or inf pixels \(the first: image 1\)"):
        genzoo.encode(vae, torch.tensor([[[[0.5]]], [[[float("nan")]]]]).expand(2, 1, 8, 8), 0)


def test_the_public_api_refuses_images_and_labels_it_would_misread():
    """Integer pixels or values outside [0, 1] would be clamped into plausible but wrong
    likelihoods and codes: refused with the scaling to use. A label that is no int (a string,
    7.5) and a split that does not exist are refused by name, not by a torch error."""
    import torch

    model = _tiny("vae")
    x = torch.rand(3, 1, 8, 8)
    levels = (x * 16).round()  # digits' levels 0..16 as floats
    for call in (lambda im: genzoo.bits_per_dim(model, im), lambda im: genzoo.encode(model, im, 0)):
        with pytest.raises(ValueError, match=r"images are torch.uint8: give floats in \[0, 1\] \(uint8"):
            call(levels.to(torch.uint8))
        with pytest.raises(ValueError, match=r"images must lie in \[0, 1\], got \[0, 16\]"):
            call(levels)
        with pytest.raises(ValueError, match=r"images must lie in \[0, 1\], got \[-0.9"):
            call(-x.clamp(min=0.01))
        assert call(levels / 16).shape[0] == 3  # scaled as the message says: accepted
    for label in ("7", 7.5, torch.tensor(2.0), True):
        with pytest.raises(ValueError, match="label: a class index"):
            genzoo.sample(model, 2, label=label)
    assert genzoo.sample(model, 2, label=torch.tensor(3))[1].tolist() == [3, 3]
    for bad, message in [(dict(n=2.0), "n: an int, got 2.0"), (dict(n="4"), "n: an int, got '4'"),
                         (dict(n=2, batch=0), "batch: at least 1, got 0"),
                         (dict(n=2, seed=1.5), "seed: an int, got 1.5")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            genzoo.sample(model, **bad)
    assert genzoo.sample(model, 2, seed=-1)[0].shape == (2, 1, 8, 8)  # any int seeds, as torch takes
    for call in (lambda y: genzoo.bits_per_dim(model, x, y), lambda y: genzoo.encode(model, x, y)):
        with pytest.raises(ValueError, match=r"labels are torch.float32: give integer class indices"):
            call(torch.tensor([1.0, 2.0, 3.0]))  # in range, but no index
    # an empty batch with its empty list of labels: an empty answer ([] is a float tensor to torch,
    # and was told to give integer class indices)
    assert genzoo.encode(model, x[:0], []).shape == (0, model.cfg.latent_dim)
    code = genzoo.encode(model, x, 1)
    with pytest.raises(ValueError, match="steps: an int, got 2.5"):
        genzoo.interpolate(model, code[0], code[1], labels=1, steps=2.5)
    with pytest.raises(ValueError, match=r"labels: give each image's class \(N,\), or one int for all"):
        genzoo.encode(model, x, None)
    with pytest.raises(ValueError, match="split: 'training', expected one of 'train', 'val', 'test'"):
        genzoo.real_dataset("data/prepared", "training")
    # a class by name where an index is due, and a name where a model is: said as such
    import numpy as np

    for call in (lambda y: genzoo.bits_per_dim(model, x, y), lambda y: genzoo.encode(model, x, y),
                 lambda y: genzoo.interpolate(model, code[0], code[1], labels=y)):  # fmt: skip
        for names in ("circle", ["circle", "square"], np.array(["circle", "square"])):
            with pytest.raises(ValueError, match=r"labels: class indices \(ints\), got .*model.class_names"):
                call(names)
    for call in (lambda m: genzoo.sample(m, 2), lambda m: genzoo.bits_per_dim(m, x),
                 lambda m: genzoo.encode(m, x, 0), lambda m: genzoo.decode(m, code, 0),
                 lambda m: genzoo.interpolate(m, code[0], code[1], labels=1)):  # fmt: skip
        with pytest.raises(TypeError, match=r"model: a model from genzoo.load_model\(...\), got str 'vae' "
                                            r"\(genzoo.load_model\('vae'\) loads it\)"):  # fmt: skip
            call("vae")
    with pytest.raises(TypeError, match="ref: a family name, a model.json path or models:/..., got VAE"):
        genzoo.load_model(model)


def test_a_script_run_from_another_folder_is_told_where_relative_paths_were_read(tmp_path, monkeypatch):
    """From another folder than the project's, load_model("vae") and real_dataset() said only to
    train or prepare again: they say the working directory the relative paths were read from."""
    from genzoo.tasks.data import DataError
    from genzoo.tasks.errors import ModelNotFound

    monkeypatch.chdir(tmp_path)
    here = re.escape(f"relative paths are read from the working directory, {tmp_path}")
    with pytest.raises(
        ModelNotFound, match=rf"runs/vae/model.json: no trained model; .*{here}: give runs_dir="
    ):
        genzoo.load_model("vae")
    with pytest.raises(DataError, match=rf"not found or unreadable; .*{here}: give prepared_dir="):
        genzoo.real_dataset()
    with pytest.raises(ModelNotFound, match=rf"my/vae/model.json: no trained model \({here}: give ref="):
        genzoo.load_model("my/vae/model.json")
    with pytest.raises(
        ModelNotFound, match=r"did you mean vae\?\), nor a model.json or a folder holding one$"
    ):
        genzoo.load_model("vea")  # a misspelt family: no word of folders
    with pytest.raises(ModelNotFound, match=r"model.json: no trained model$"):
        genzoo.load_model(tmp_path / "vae" / "model.json")  # an absolute path: as it was
    with pytest.raises(
        ModelNotFound, match=r"vae/modle.json: no such file \(give a model.json, or the folder"
    ):
        genzoo.load_model(tmp_path / "vae" / "modle.json")  # a misspelt file: not "no trained model"
    # a registered version, from a folder with no MLflow store: said, and no empty store made there
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(
        ModelNotFound, match=r"models:/gan/1: no MLflow store at sqlite:///.*mlflow.db to read"
    ):
        genzoo.load_model("models:/gan/1")
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "params.yaml").write_text("models: {}\n")  # a project's folder: its own runs/ is meant
    with pytest.raises(ModelNotFound, match=r"run `genzoo train --family vae` first$"):
        genzoo.load_model("vae")
