"""Bad input and a bad environment through the `genzoo` command line: exit code 2, one line
naming the problem and the key or file, nothing written, no traceback; and the data that used
to pass silently (README, "Reliability": bad input, paths, model integrity, a full disk)."""

import errno
import hashlib
import json
import logging
import os
import pickle
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genzoo.flows import cli
from tests.conftest import TINY, tiny_params


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def files_under(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a hash of its content ("dir" for folders)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or p.is_dir():
            out[str(p)] = "dir"
        else:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def untrained_model(runs: Path, family: str = "vae") -> Path:
    """A model saved as training saves it (model.json + model.safetensors), without training."""
    from genzoo import models
    from genzoo.models.base import DataSpec

    net = models.build(family, DataSpec(1, 8, 8, 17, 10), TINY[family])
    (runs / family).mkdir(parents=True, exist_ok=True)
    return models.save(net, runs / family / "model")


class Payload:
    """Unpickling this writes a marker file: the proof a pickle ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("the payload ran",))


# ----------------------------------------------------------------------------- the inputs


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Inputs under ROOT/in (params files, bad datasets, a sqlite tracking store, a model
    whose weights are a pickle); every output path of the params under ROOT/out. Made once
    for the module: every test that reads them checks it changed nothing under ROOT."""
    root = tmp_path_factory.mktemp("errors")
    inp, out = root / "in", root / "out"
    inp.mkdir()
    raw = tiny_params(out, families=["vae"])
    raw["profiles"] = {"quick": {"seed": 1}}
    (inp / "params.yaml").write_text(yaml.safe_dump(raw))
    (inp / "list.yaml").write_text("- seed: 1\n- models: {}\n")
    (inp / "empty.yaml").write_text("# only a comment\n")
    raw_seed = {**raw, "seed": 1.0e23}  # a float YAML reads as such (1e23 alone is a string)
    (inp / "seed.yaml").write_text(yaml.safe_dump(raw_seed))
    eight = np.zeros((20, 8, 8), np.uint8)
    _npz(inp / "levels.npz", images=eight, labels=np.arange(20) % 2, levels=np.array([17, 17]))
    _npz(inp / "levels1.npz", images=eight, labels=np.arange(20) % 2, levels=np.array(1))
    (inp / "notzip.npz").write_bytes(pickle.dumps({"images": eight}))
    _npz(inp / "names.npz", images=eight, labels=np.arange(20) % 3, class_names=np.array(["a", "b"]))
    _npz(inp / "one.npz", images=np.zeros((3, 8, 8), np.uint8), labels=np.arange(3))
    _npz(
        inp / "lonely.npz", images=np.zeros((21, 8, 8), np.uint8), labels=np.array(["cat"] * 20 + ["lonely"])
    )
    _npz(inp / "pixel.npz", images=np.zeros((40, 1, 1), np.uint8), labels=np.arange(40) % 2)
    _npz(inp / "empty.npz", images=np.zeros((0, 8, 8), np.uint8), labels=np.zeros(0, np.int64))
    loop = inp / "folder"
    for c in ("a", "b"):
        (loop / c).mkdir(parents=True)
        from PIL import Image

        for i in range(5):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(loop / c / f"{i}.png")
    (loop / "c").symlink_to(loop)  # a class folder that is its own parent
    (inp / "empty-class").mkdir()
    for c in ("a", "b"):
        (inp / "empty-class" / c).mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(inp / "empty-class" / "a" / "0.png")
    # a model whose weights file is a pickle, its model.json updated to match (an attacker
    # holding both files): the hash passes, the format must not
    pickled = untrained_model(inp / "pickled").with_suffix(".safetensors")
    pickled.write_bytes(pickle.dumps(Payload(str(inp / "payload-ran"))))
    meta = json.loads(pickled.with_suffix(".json").read_text())
    meta["sha256"] = hashlib.sha256(pickled.read_bytes()).hexdigest()
    pickled.with_suffix(".json").write_text(json.dumps(meta))
    swapped = untrained_model(inp / "swapped").with_suffix(".safetensors")
    swapped.write_bytes(pickle.dumps(Payload(str(inp / "payload-ran"))))  # model.json left as was
    from genzoo.tasks.tracking import client

    uri = f"sqlite:///{inp / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        client(uri).search_registered_models()  # the store exists (its tables), with no model in it
    return {"root": root, "in": inp, "out": out, "params": str(inp / "params.yaml"), "mlflow": uri}


@pytest.fixture
def world(inputs, monkeypatch):
    """The inputs, run from their root folder with their tracking store."""
    monkeypatch.chdir(inputs["root"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", inputs["mlflow"])
    return inputs


def _p(w, *more):
    return ["--params", w["params"], *more]


def _src(w, name):
    return ["-o", f"data.source=npz:{w['in'] / name}"]


# case id -> (argv from the inputs, a fragment the one line must hold)
CASES = {
    # 3. params
    "params-list": (lambda w: ["prepare", "--params", str(w["in"] / "list.yaml")], "not a list"),
    "ray-num-gpus-fraction": (  # Ray refused it mid-start: "Resource quantities must all be whole numbers"
        lambda w: ["prepare", *_p(w, "-o", "ray.num_gpus=0.5")],
        "ray.num_gpus: Input should be a valid integer",
    ),
    "params-empty": (  # it said "models: at least one family is required"
        lambda w: ["prepare", "--params", str(w["in"] / "empty.yaml")],
        "empty.yaml: the file is empty; a params file holds the whole configuration",
    ),
    "params-list-profile": (
        lambda w: ["prepare", "--params", str(w["in"] / "list.yaml"), "--profile", "quick"],
        "list.yaml: the file must hold a mapping",
    ),
    "params-list-override": (
        lambda w: ["prepare", "--params", str(w["in"] / "list.yaml"), "-o", "seed=1"],
        "list.yaml: the file must hold a mapping",
    ),
    "override-not-yaml": (
        lambda w: ["prepare", *_p(w, "-o", "seed=[1")],
        "override 'seed=[1': the value is not valid YAML",
    ),
    "override-mapping-without-spaces": (  # YAML reads 12:2.0 as 722.0 (base 60), with no value
        lambda w: ["prepare", *_p(w, "-o", "augment.class_ratios={12:2.0}")],
        "put a space after ':' in a mapping ({12: 2.0}): YAML reads 12:2.0 as one key with no value",
    ),
    "augment-family-twice": (  # it gave per_class images, not twice as many, without a word
        lambda w: ["prepare", *_p(w, "-o", "augment.families=[vae,vae]")],
        "augment.families: vae named twice; each family gives per_class images per class",
    ),
    "usefulness-subset-twice": (  # its values counted twice: an interval narrower than measured
        lambda w: ["prepare", *_p(w, "-o", "usefulness.subset_seeds=[0,0,1]")],
        "usefulness.subset_seeds: 0 named twice; each is measured once",
    ),
    "usefulness-classifier-twice": (
        lambda w: ["prepare", *_p(w, "-o", "usefulness.classifiers=[cnn,cnn]")],
        "usefulness.classifiers: cnn named twice; each is measured once",
    ),
    "prepared-dir-under-a-file": (
        lambda w: ["prepare", *_p(w, "-o", "data.prepared_dir=/dev/null/x")],
        "data.prepared_dir=/dev/null/x: /dev/null exists and is not a folder",
    ),
    "image-size-bound": (
        lambda w: ["prepare", *_p(w, "-o", "data.image_size=[100000,100000]")],
        "data.image_size: sides must be in [2, 4096]",
    ),
    "image-size-memory": (  # 1797 digits at 4096x4096: 360 GiB before a byte is allocated
        lambda w: ["prepare", *_p(w, "-o", "data.image_size=4096")],
        "data.image_size=[4096, 4096]: 1797 images of that size need",
    ),
    "lr-bound": (
        lambda w: ["prepare", *_p(w, "-o", "train.lr=1e39")],
        "train.lr: Input should be less than or equal to 10",
    ),
    "family-lr-bound": (
        lambda w: ["prepare", *_p(w, "-o", "models.vae.train.lr=1.0e+39")],
        "models.vae.train.lr: Input should be less than or equal to 10",
    ),
    "seed-string": (
        lambda w: ["prepare", *_p(w, "-o", "seed=1e23")],
        "seed: Input should be a valid integer",
    ),
    "seed-bound": (
        lambda w: ["prepare", *_p(w, "-o", "seed=4294967296")],
        "seed: Input should be less than or equal to 2147483647",
    ),
    "seed-float": (
        lambda w: ["prepare", "--params", str(w["in"] / "seed.yaml")],
        "invalid params: seed: ",
    ),
    "npz-levels-array": (
        lambda w: ["prepare", *_p(w, *_src(w, "levels.npz"))],
        "levels.npz['levels']: expected one integer",
    ),
    "npz-levels-1": (
        lambda w: ["prepare", *_p(w, *_src(w, "levels1.npz"))],
        "levels1.npz['levels']: expected one integer >= 2",
    ),
    "npz-not-zip": (lambda w: ["prepare", *_p(w, *_src(w, "notzip.npz"))], "notzip.npz: not an npz file"),
    "models-uri-missing-version": (
        lambda w: ["sample", *_p(w, "--model", "models:/vae/7", "--out", str(w["out"] / "s"))],
        "models:/vae/7: no such registered model version in sqlite:///",
    ),
    "train-device-absent": (
        lambda w: ["train", *_p(w, "--family", "vae", "-o", "run.device=cuda:99")],
        "run.device=cuda:99",
    ),
    "run-device-absent": (
        lambda w: ["run", *_p(w, "--families", "vae", "-o", "run.device=cuda:99")],
        "run.device=cuda:99",
    ),
    "sample-device-absent": (  # a traceback (torch's AssertionError) before
        lambda w: ["sample", *_p(w, "--family", "vae", "--device", "cuda:99", "--out", str(w["out"] / "s"))],
        "--device=cuda:99",
    ),
    "sample-device-not-a-device": (  # a traceback (torch's RuntimeError) before
        lambda w: ["sample", *_p(w, "--family", "vae", "--device", "gpu", "--out", str(w["out"] / "s"))],
        "--device=gpu: not a device genzoo runs on (auto, cpu, cuda, cuda:N or mps)",
    ),
    "sample-device-genzoo-does-not-run-on": (
        lambda w: ["sample", *_p(w, "--family", "vae", "--device", "meta", "--out", str(w["out"] / "s"))],
        "--device=meta: not a device genzoo runs on",
    ),
    "ray-address-nothing-there": (  # ray.init waited for minutes, printing only Ray's warnings
        lambda w: ["run", *_p(w, "--families", "vae", "--ray-address", f"127.0.0.1:{free_port()}")],
        ": nothing answers there (Connection refused); start it (`ray start --head`",
    ),
    "safetensors-is-a-pickle": (
        lambda w: [
            "sample",
            *_p(
                w,
                "--family",
                "vae",
                "-o",
                f"run.runs_dir={w['in'] / 'pickled'}",
                "--out",
                str(w["out"] / "s"),
            ),
        ],  # fmt: skip
        "model.safetensors: not a safetensors file",
    ),
    "safetensors-swapped-for-a-pickle": (
        lambda w: [
            "sample",
            *_p(
                w,
                "--family",
                "vae",
                "-o",
                f"run.runs_dir={w['in'] / 'swapped'}",
                "--out",
                str(w["out"] / "s"),
            ),
        ],  # fmt: skip
        "...): truncated, corrupted or replaced; not loaded",  # (its file named first: model.safetensors)
    ),
    # 4. data that passed silently
    "class-names-short": (
        lambda w: ["prepare", *_p(w, *_src(w, "names.npz"))],
        "names.npz['class_names']: 2 names for 3 classes",
    ),
    "one-image-per-class": (
        lambda w: ["prepare", *_p(w, *_src(w, "one.npz"))],
        "class 0 has 1 image(s), none left for the train split",
    ),
    "one-image-in-a-named-class": (  # named as the data names it, not by the label it sorts to
        lambda w: ["prepare", *_p(w, *_src(w, "lonely.npz"))],
        "lonely.npz: class 'lonely' (label 1) has 1 image(s), none left for the train split",
    ),
    "1x1-images": (lambda w: ["prepare", *_p(w, *_src(w, "pixel.npz"))], "images are 1x1; at least 2x2"),
    "no-images": (lambda w: ["prepare", *_p(w, *_src(w, "empty.npz"))], "empty.npz['images']: no images"),
    "class-folder-links-to-its-parent": (
        lambda w: ["prepare", *_p(w, "-o", f"data.source=folder:{w['in'] / 'folder'}")],
        "folder/c: a symbolic link to",
    ),
    # options that do not fit the params or each other
    "unknown-family": (lambda w: ["train", *_p(w), "--family", "nope"], "--family: nope not in params"),
    "misspelt-family": (
        lambda w: ["evaluate", *_p(w), "--family", "vea"],
        "--family: vea not in params (families: vae; did you mean vae?)",
    ),
    "family-in-capitals": (  # --family takes no path: not "nor a model.json or a folder holding one"
        lambda w: ["interpolate", *_p(w), "--family", "VAE"],
        "--family: no family VAE (ddpm, gan, pixelcnn, realnvp, vae; did you mean vae?)",
    ),
    "family-given-a-path": (  # it loaded the folder as a model, with no word of its settings
        lambda w: ["sample", *_p(w), "--family", "runs/vae", "--out", str(w["out"] / "s")],
        "--family runs/vae: a family's name (vae, gan, ...), not a path; give a model's folder or",
    ),
    "interpolate-family-given-a-path": (
        lambda w: ["interpolate", *_p(w), "--family", "./runs/vae/"],
        "--family ./runs/vae/: a family's name (vae, gan, ...), not a path; its model is runs/<family>/",
    ),
    # a flag's bad value named by the flag the user typed, not the params key it sets
    "augment-bad-flags": (
        lambda w: ["augment", *_p(w), "--per-class", "0", "--min-confidence", "2"],
        "--per-class: Input should be greater than 0 (got 0); --min-confidence: Input should be less than 1",
    ),
    "augment-unknown-recipe-flag": (
        lambda w: ["augment", *_p(w), "--recipe", "nope"],
        "--recipe: no recipe 'nope' under recipes",
    ),
    "augment-recipe-in-capitals": (  # the recipe meant, as a misspelt family gets it
        lambda w: ["augment", *_p(w), "--recipe", "Plain"],
        "no recipe 'Plain' under recipes (have ['plain', 'teacher']; did you mean plain?)",
    ),
    "augment-misspelt-metric": (  # a choice of a fixed list: the near one
        lambda w: ["augment", *_p(w), "--metric", "fdd"],
        "or 'lift'; did you mean fd? (got 'fdd')",
    ),
    "augment-format-by-its-file-type": (  # the deprecated --png's name: the format that writes PNGs
        lambda w: ["augment", *_p(w), "--formats", "npz,png"],
        "or 'hf'; image files (PNG) in class folders are imagefolder (got 'png')",
    ),
    "augment-no-formats": (  # not the params' formats without a word
        lambda w: ["augment", *_p(w), "--formats", ""],
        "--formats: none given (npz, imagefolder, hf)",
    ),
    "augment-bad-key-by-override": (  # an -o names the key it set
        lambda w: ["augment", *_p(w, "-o", "augment.per_class=0")],
        "augment.per_class: Input should be greater than 0 (got 0)",
    ),
    "no-families": (lambda w: ["run", *_p(w), "--families", ","], "--families: none given (families: vae)"),
    "no-families-to-draw": (
        lambda w: ["augment", *_p(w), "--families", ","],
        "--families: none given (families: vae, or best)",
    ),
    "no-families-to-measure": (
        lambda w: ["usefulness", *_p(w), "--families", " ,"],
        "--families: none given (families: vae)",
    ),
    "misspelt-families": (
        lambda w: ["run", *_p(w), "--families", "vea"],
        "vea not in params (families: vae; ",
    ),
    "detect-without-path": (lambda w: ["detect", *_p(w), "--family", "vae"], "give a PATH"),
    "detect-benchmark-given-a-path": (
        lambda w: ["detect", *_p(w), "--family", "vae", "--benchmark", str(w["in"])],
        "the family's quality.json): PATH is for scoring images of your own, without --benchmark",
    ),
    "usefulness-unknown-family": (
        lambda w: ["usefulness", *_p(w), "--families", "vae,nope"],
        "--families: nope not in params",
    ),
    "prepared-dir-inside-the-image-folder": (  # its files became a class of the next prepare
        lambda w: [
            "prepare",
            *_p(
                w,
                "-o",
                f"data.source=folder:{w['in'] / 'folder'}",
                "-o",
                f"data.prepared_dir={w['in'] / 'folder/new'}",
            ),
        ],
        "/folder/new is inside the image folder data.source=folder:",
    ),
    "a-dataset-into-the-image-folder": (
        lambda w: [
            "augment",
            *_p(
                w,
                "-o",
                f"data.source=folder:{w['in'] / 'folder'}",
                "-o",
                f"augment.out_dir={w['in'] / 'folder'}",
            ),
            "--families",
            "vae",
        ],
        "augment.out_dir=",
    ),
    "runs-dir-inside-the-image-folder": (  # before Ray, Prefect or MLflow start
        lambda w: [
            "run",
            *_p(
                w,
                "-o",
                f"data.source=folder:{w['in'] / 'folder'}",
                "-o",
                f"run.runs_dir={w['in'] / 'folder/r'}",
            ),
        ],
        "is inside the image folder data.source=folder:",
    ),
    "train-into-the-image-folder-before-any-prepare": (  # not "run genzoo prepare" first
        lambda w: [
            "train",
            *_p(
                w,
                "-o",
                f"data.source=folder:{w['in'] / 'folder'}",
                "-o",
                f"data.prepared_dir={w['root'] / 'never-prepared'}",
                "-o",
                f"run.runs_dir={w['in'] / 'folder/r'}",
            ),
            "--family",
            "vae",
        ],
        "is inside the image folder data.source=folder:",
    ),
    "class-folder-empty": (
        lambda w: ["prepare", *_p(w, "-o", f"data.source=folder:{w['in'] / 'empty-class'}")],
        "empty-class/b: a class folder with no images",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, world, capsys, restore_logging):
    argv, fragment = CASES[case]
    argv = argv(world)
    before = files_under(world["root"])
    rc = cli.main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("genzoo ")]
    assert rc == 2, err
    assert len(lines) == 1 and fragment in lines[0], err
    assert lines[0].startswith(f"genzoo {argv[0]}: error: ") and "\n" not in lines[0].strip()
    assert "Traceback" not in err
    assert files_under(world["root"]) == before  # nothing written, nothing changed
    assert not (world["in"] / "payload-ran").exists()  # no pickle ever ran


def test_an_unreachable_tracking_server_is_one_line_with_its_uri(world, monkeypatch, capsys, restore_logging):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = files_under(world["root"])
    rc = cli.main(["run", "--params", world["params"], "--families", "vae", "-o", "run.track=true"])
    err = capsys.readouterr().err
    assert rc == 2 and f"genzoo run: error: MLflow tracking server {uri} is unreachable" in err, err
    assert "Traceback" not in err and len([x for x in err.splitlines() if x.startswith("genzoo")]) == 1
    assert files_under(world["root"]) == before


def test_a_bug_keeps_its_traceback(world, monkeypatch, restore_logging):
    """Only genzoo's own errors become a line: an unexpected exception still raises."""
    from genzoo.tasks import prepare

    def broken(*a, **k):
        raise KeyError("a bug")

    monkeypatch.setattr(prepare, "load_source", broken)
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["prepare", "--params", world["params"]])

    def deep(*a, **k):  # a ValueError from outside genzoo's checks is a bug too
        return np.zeros(3).reshape(2, 2)

    monkeypatch.setattr(prepare, "load_source", deep)
    with pytest.raises(ValueError, match="reshape"):
        cli.main(["prepare", "--params", world["params"]])


# ----------------------------------------------------------------------------- a full disk


def _full_after(nbytes: int):
    """A write that stores ``nbytes`` then finds the disk full, as ENOSPC arrives mid-file."""

    def write(f, *args, **kwargs):
        f.write(b"\0" * nbytes)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return write


def test_a_full_disk_while_preparing_names_what_and_where_and_keeps_the_previous_data(
    tmp_path, monkeypatch, capsys, restore_logging
):
    from genzoo.tasks import prepare
    from genzoo.tasks.data import load_split

    raw = tiny_params(tmp_path, families=["vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0
    prepared = tmp_path / "prepared"
    before = files_under(tmp_path)
    monkeypatch.setattr(prepare.np, "savez", _full_after(4096))  # the real write call of each split
    rc = cli.main(["prepare", "--params", str(pfile), "-q", "-o", "seed=3"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert (
        f"genzoo prepare: error: {prepared}: no space left on the device while writing the prepared data"
        in err
    )
    assert "Traceback" not in err
    monkeypatch.undo()
    assert files_under(tmp_path) == before  # the previous version whole, no partial folder beside it
    x, y, m = load_split(prepared, "train")  # and loadable (its hashes checked)
    assert m["seed"] == 0 and len(x) == m["splits"]["train"]["n"]


def test_a_full_disk_while_writing_a_dataset_keeps_the_previous_version(tmp_path, monkeypatch, capsys,
                                                                        restore_logging):  # fmt: skip
    """A full disk (ENOSPC) at the dataset's write; the message says what ran out
    and where; the previous version loads, hash checked."""
    from genzoo.tasks.augment import load_dataset

    raw = tiny_params(tmp_path, families=["vae"])
    raw["augment"].update(reject_copies=False, per_class=2)
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0
    untrained_model(tmp_path / "runs")
    assert cli.main(["augment", "--params", str(pfile), "--families", "vae", "-q"]) == 0
    target = tmp_path / "augment" / "synthetic"
    first = load_dataset(target)
    before = files_under(tmp_path)
    real_write_bytes = Path.write_bytes

    def full(self, data):
        if self.name == "images.npz":  # the dataset's write: the disk fills half way
            with open(self, "wb") as f:
                return _full_after(len(data) // 2)(f)
        return real_write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    rc = cli.main(["augment", "--params", str(pfile), "--families", "vae", "--seed", "5", "-q"])
    err = capsys.readouterr().err
    monkeypatch.undo()
    assert rc == 2, err
    assert (
        f"genzoo augment: error: {target}: no space left on the device while writing dataset 'synthetic' "
        "(No space left on device)" in err
    )
    assert files_under(tmp_path) == before
    again = load_dataset(target)  # verified against its sha256
    assert again.manifest == first.manifest and bool((again.images == first.images).all())


# ----------------------------------------------------------------------------- data that passed silently


def test_a_dataset_manifest_with_levels_1_or_2_or_no_sha256_is_refused(tmp_path, monkeypatch):
    from genzoo.tasks.augment import load_dataset
    from genzoo.tasks.data import DataError

    d = tmp_path / "ds"
    d.mkdir()
    np.savez(d / "images.npz", images=np.array([[[[0, 16]]]], np.uint8), labels=np.array([0]),
             source=np.array(["vae"]))  # fmt: skip
    good = {"levels": 17, "sha256": hashlib.sha256((d / "images.npz").read_bytes()).hexdigest()}
    (d / "manifest.json").write_text(json.dumps(good))
    x, _ = load_dataset(d)[0]
    assert float(x.max()) == 1.0  # level 16 of 17
    refused = {
        1: "levels must be an integer >= 2, got 1",
        2: "pixel level 16 is not below levels=2",
        "17": "levels must be an integer >= 2, got '17'",
    }
    for levels, msg in refused.items():
        (d / "manifest.json").write_text(json.dumps({**good, "levels": levels}))
        with pytest.raises(DataError, match=msg):
            load_dataset(d)
    (d / "manifest.json").write_text(json.dumps({"levels": 17}))
    with pytest.raises(DataError, match="manifest.json: no sha256 to check images.npz against"):
        load_dataset(d)
    assert len(load_dataset(d, verify=False)) == 1  # asked for: loads unverified


def test_prepared_data_whose_manifest_levels_is_edited_is_refused(tmp_path):
    from genzoo.tasks.config import validate
    from genzoo.tasks.data import DataError, load_split
    from genzoo.tasks.prepare import prepare

    params = validate(tiny_params(tmp_path, families=["vae"]))
    prepare(params)
    path = tmp_path / "prepared" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "levels": 2}))
    with pytest.raises(DataError, match="manifest.json: pixel level 16 is not below levels=2"):
        load_split(tmp_path / "prepared", "train")
    del m["splits"]["val"]["sha256"]
    path.write_text(json.dumps(m))
    with pytest.raises(DataError, match="manifest.json: no sha256 for split val"):
        load_split(tmp_path / "prepared", "val")


def test_a_damaged_prepared_split_is_one_line_and_found_before_training(tmp_path, capsys, monkeypatch):
    """A flipped byte or a truncated .npz of the prepared data: one line naming the file (it was
    a BadZipFile traceback, exit 1), and a damaged test split stops `genzoo train` before it
    trains (it was read after the whole training, whose outputs were written first). Bad output
    folders for training are one line before anything is written, an empty path a bad key."""
    monkeypatch.chdir(tmp_path)  # run.runs_dir="" would be here
    raw = tiny_params(tmp_path, steps=3, families=["vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    base = ["--params", str(pfile)]
    assert cli.main(["prepare", *base]) == 0
    train, test = tmp_path / "prepared" / "train.npz", tmp_path / "prepared" / "test.npz"
    good, whole = train.read_bytes(), test.read_bytes()
    train.write_bytes(good[:200] + bytes([good[200] ^ 1]) + good[201:])
    capsys.readouterr()
    assert cli.main(["train", "--family", "vae", "-q", *base]) == 2
    assert f"genzoo train: error: {train}: unreadable (Bad CRC-32" in capsys.readouterr().err
    train.write_bytes(good)
    test.write_bytes(whole[: len(whole) // 2])
    assert cli.main(["train", "--family", "vae", "-q", *base]) == 2
    assert f"genzoo train: error: {test}: unreadable (File is not a zip file)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "vae").exists() and not (tmp_path / "ckpt").exists()  # before training
    test.write_bytes(whole)

    (tmp_path / "afile").write_text("mine")
    for override, said in (
        (f"run.checkpoints_dir={tmp_path / 'afile'}", "run.checkpoints_dir="),
        (f"run.runs_dir={tmp_path / 'afile' / 'sub'}", f"{tmp_path / 'afile'} exists and is not a folder"),
        ('run.runs_dir=""', "run.runs_dir: String should have at least 1 character"),
    ):
        assert cli.main(["train", "--family", "vae", "-q", *base, "-o", override]) == 2, override
        assert said in capsys.readouterr().err, override
        assert not (tmp_path / "runs").exists() and not (tmp_path / "vae").exists(), override
    # every folder a `genzoo run` writes, before Prefect starts (augment.out_dir failed at the
    # last stage, after the training and evaluation)
    afile = tmp_path / "afile"
    for override, said in (
        (f"augment.out_dir={afile}", f"augment.out_dir={afile}: exists and is not a folder"),
        (f"data.prepared_dir={afile / 'p'}", f"{afile} exists and is not a folder"),
        (f"run.checkpoints_dir={afile / 'c'}", f"{afile} exists and is not a folder"),
    ):
        assert cli.main(["run", "-q", *base, "-o", override]) == 2, override
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    with monkeypatch.context() as m:  # the hf format without its extra: it failed at the last stage
        m.setitem(sys.modules, "datasets", None)
        assert cli.main(["run", "-q", *base, "-o", "augment.formats=[npz, hf]"]) == 2
        err = capsys.readouterr().err
        assert "augment.formats: the hf format" in err and err.count("\n") == 1, err
    # data.source mistyped, or a class folder holding a file that is no image: it took a Prefect
    # server, a local Ray and three failed task runs (17 s) to say, without the key
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("mine")
    for source, said in (
        (f"folder:{tmp_path / 'imgz'}", f"data.source: {tmp_path / 'imgz'}: folder not found"),
        (f"npz:{tmp_path / 'x.npz'}", f"data.source: {tmp_path / 'x.npz'}: npz file not found"),
        (f"folder:{tmp_path / 'imgs'}", f"data.source: {tmp_path / 'imgs' / 'a' / 'notes.txt'}: not an"),
    ):
        assert cli.main(["run", "-q", *base, "-o", f"data.source={source}"]) == 2, source
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    # a user's folder given as the runs folder: its report/ and <family>/ files were replaced
    mine = tmp_path / "mystuff"
    (mine / "report").mkdir(parents=True)
    (mine / "report" / "index.html").write_text("my page")
    (mine / "thesis.tex").write_text("my thesis")
    for cmd in (["train", "--family", "vae"], ["report"]):
        assert cli.main([*cmd, "-q", *base, "-o", f"run.runs_dir={mine}"]) == 2
        assert f"run.runs_dir={mine}: holds thesis.tex, which genzoo does not write there" in (
            capsys.readouterr().err
        )
    assert (mine / "report" / "index.html").read_text() == "my page"
    assert sorted(p.name for p in mine.iterdir()) == ["report", "thesis.tex"]  # nothing added
    # a folder of the runs folder that links elsewhere: written through before
    (mine / "thesis.tex").unlink()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "report").symlink_to(mine / "report")
    assert cli.main(["report", "-q", *base]) == 2
    assert f"{tmp_path / 'runs' / 'report'}: a symbolic link to" in capsys.readouterr().err
    assert (mine / "report" / "index.html").read_text() == "my page"
    (tmp_path / "runs" / "report").unlink()
    (tmp_path / "runs").rmdir()
    # a folder genzoo used may hold more (checkpoints placed inside it); a volume's lost+found
    from genzoo.tasks.layout import check_runs_folder

    used = tmp_path / "used"
    (used / "checkpoints").mkdir(parents=True)
    (used / ".pipeline.lock").touch()
    check_runs_folder(used)
    (tmp_path / "volume" / "lost+found").mkdir(parents=True)
    check_runs_folder(tmp_path / "volume")
    (tmp_path / "volume" / "report").symlink_to(tmp_path / "volume" / "report")  # a loop: no traceback
    check_runs_folder(tmp_path / "volume")
    # a runs folder written into needs to be writable itself, whatever its parent allows (a
    # volume mounted under a read-only folder); one that is not writable is said before any work
    from genzoo.tasks import errors

    runs = tmp_path / "ro" / "runs"
    runs.mkdir(parents=True)
    real = os.access
    monkeypatch.setattr(errors.os, "access", lambda p, mode: Path(p) != runs.parent and real(p, mode))
    errors.check_output_dir(runs, "run.runs_dir", into=True)
    with pytest.raises(errors.GenzooError, match="ro: is not writable|ro is not writable"):
        errors.check_output_dir(runs, "run.runs_dir")  # a folder replaced whole: its parent's matter
    monkeypatch.setattr(errors.os, "access", lambda p, mode: Path(p) != runs and real(p, mode))
    with pytest.raises(errors.GenzooError, match=f"run.runs_dir={runs}: not writable"):
        errors.check_output_dir(runs, "run.runs_dir", into=True)


def test_16_bit_pngs_are_scaled_to_8_bits_with_a_warning(tmp_path, caplog):
    """Documented handling: 16-bit grayscale keeps its contrast (v * 255 / 65535), not clipped
    at 255 as Pillow's convert does; a warning says so."""
    from PIL import Image

    from genzoo.tasks.prepare import load_folder_source

    levels = [0, 1000, 30000, 65535]
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i, v in enumerate(levels):
            Image.fromarray(np.full((4, 4), v, np.uint16)).save(tmp_path / c / f"{i}.png")
    with Image.open(tmp_path / "a" / "3.png") as im:
        assert im.mode.startswith("I")  # really 16 bits on disk
    with caplog.at_level(logging.WARNING, logger="genzoo.prepare"):
        ds = load_folder_source(tmp_path, None)
    assert ds.levels == 256
    assert ds.images[:4, 0, 0, 0].tolist() == [0, 4, 117, 255]  # scaled; clipping gave [0, 255, 255, 255]
    assert "16-bit images" in caplog.text and "reduced to 8 bits" in caplog.text


def test_detect_reads_no_pickle_and_no_array_of_levels(tmp_path):
    from genzoo.models.base import DataSpec
    from genzoo.tasks.data import DataError
    from genzoo.tasks.detect import read_images

    spec = DataSpec(1, 8, 8, 17, 10)
    (tmp_path / "notzip.npz").write_bytes(pickle.dumps(Payload(str(tmp_path / "payload-ran"))))
    with pytest.raises(DataError, match="notzip.npz: not an npz file"):
        read_images(tmp_path / "notzip.npz", spec)
    assert not (tmp_path / "payload-ran").exists()
    np.savez(tmp_path / "levels.npz", images=np.zeros((2, 8, 8), np.uint8), levels=np.array([17, 17]))
    with pytest.raises(DataError, match=r"levels.npz\['levels'\]: expected one integer"):
        read_images(tmp_path / "levels.npz", spec)


def test_an_empty_val_split_is_a_warning_and_detection_refuses_it(tmp_path, caplog):
    """Documented handling: 4 images a class give no val image at val_fraction 0.1; prepare
    warns and writes, and detection (which calibrates on val) says why it cannot."""
    from genzoo.tasks.config import validate
    from genzoo.tasks.data import DataError
    from genzoo.tasks.detect import calibrate
    from genzoo.tasks.prepare import prepare

    src = _npz(tmp_path / "four.npz", images=np.arange(8 * 16).reshape(8, 4, 4) % 7, labels=np.arange(8) % 2)
    raw = tiny_params(tmp_path, families=["vae"])
    raw["data"].update(source=f"npz:{src}", val_fraction=0.1)
    params = validate(raw)
    with caplog.at_level(logging.WARNING, logger="genzoo.prepare"):
        m = prepare(params)
    assert {s: v["n"] for s, v in m["splits"].items()} == {"train": 6, "val": 0, "test": 2}
    assert "the val split comes out empty (val_fraction=0.1 of 4-4 images per class)" in caplog.text
    with pytest.raises(DataError, match="the val split is empty; detection calibrates"):
        calibrate(None, params, 0.99)


def test_a_class_left_with_no_val_image_is_named_in_a_warning(tmp_path):
    """A tiny folder (5 and 15 images) prepared with val images of one class only: validation
    figures (model selection, detection thresholds) left the other class out without a word."""
    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from tests.conftest import logged

    labels = np.array([0] * 5 + [1] * 15)
    src = _npz(tmp_path / "few.npz", images=np.arange(20 * 16).reshape(20, 4, 4) % 7, labels=labels)
    raw = tiny_params(tmp_path, families=["vae"])
    raw["data"].update(source=f"npz:{src}", val_fraction=0.1)
    with logged("genzoo.prepare") as lines:
        m = prepare(validate(raw))
    assert m["splits"]["val"]["n"] == 2  # class 1's: round(15 * 0.1); class 0's round(5 * 0.1) = 0
    said = [x for x in lines if "no val image" in x]
    assert len(said) == 1 and "class 0 has no val image (val_fraction=0.1 of 5 image(s))" in said[0], lines
    assert "add images or raise data.val_fraction" in said[0]
    even = _npz(
        tmp_path / "even.npz", images=np.arange(40 * 16).reshape(40, 4, 4) % 7, labels=np.arange(40) % 2
    )
    raw["data"]["source"] = f"npz:{even}"  # 20 a class: 2 val images each, nothing said
    raw["data"]["prepared_dir"] = str(tmp_path / "prepared2")
    with logged("genzoo.prepare") as lines:
        prepare(validate(raw))
    assert not [x for x in lines if "no val image" in x], lines


def test_run_device_names_the_key_where_the_device_is_absent():
    import torch

    from genzoo.tasks.config import ParamsError
    from genzoo.tasks.layout import resolve_device

    if torch.cuda.is_available():  # this machine has one: it resolves
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(
            ParamsError, match=r"^run.device=cuda: no CUDA device is available on this machine"
        ):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


def test_only_a_full_disk_becomes_disk_full(tmp_path):
    """ENOSPC and EDQUOT say what and where (and stay OSErrors with their errno, so the
    pipeline does not retry them); any other OSError passes through untouched."""
    from genzoo.tasks.errors import DiskFull, writing

    for code in (errno.ENOSPC, errno.EDQUOT):
        with pytest.raises(DiskFull) as e, writing("the prepared data", tmp_path / "p"):
            raise OSError(code, os.strerror(code))
        assert e.value.errno == code and isinstance(e.value, OSError)
        assert str(e.value).startswith(
            f"{tmp_path / 'p'}: no space left on the device while writing the prepared data"
        )
    eio = OSError(errno.EIO, "I/O error")
    with pytest.raises(OSError) as e, writing("x", tmp_path):
        raise eio
    assert e.value is eio
    # what the command line says of an OSError: a full disk anywhere, a path it names; else a bug
    from genzoo.tasks.errors import describe_os_error

    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == (
        "a write: no space left on the device (No space left on device)"
    )
    assert (
        describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/x")) == "/x: Permission denied"
    )
    assert describe_os_error(eio) is None
    assert describe_os_error(OSError(errno.EIO, "I/O error", "/x")) is None


def test_a_failed_atomic_write_names_the_file_it_was_writing_not_its_temp_file(tmp_path, monkeypatch):
    """A disk that fills during a checkpoint's write said "a write: no space left": the error
    names the destination (the temp file is gone, the previous file whole); so does a folder
    that refuses the temp file (a read-only mount named the invented ``.x.npz.r4wivp_t.tmp``)."""
    from genzoo.models.base import atomic_write, atomic_write_text
    from genzoo.tasks.errors import describe_os_error

    target = tmp_path / "step-00000008.pt"
    target.write_bytes(b"previous")

    def full(tmp):
        Path(tmp).write_bytes(b"\0" * 64)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as e:
        atomic_write(target, full)
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    full_disk = os.strerror(errno.ENOSPC)
    assert describe_os_error(e.value) == f"{target}: no space left on the device ({full_disk})"
    assert target.read_bytes() == b"previous" and sorted(tmp_path.iterdir()) == [target]

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / ".x.npz.r4wivp_t.tmp"))

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(PermissionError) as e:  # the same exception, its type kept for those who catch it
        atomic_write_text(tmp_path / "x.npz", "")
    assert e.value.filename == str(tmp_path / "x.npz") and e.value.errno == errno.EACCES
    assert describe_os_error(e.value) == f"{tmp_path / 'x.npz'}: {os.strerror(errno.EACCES)}"
    monkeypatch.undo()

    def not_a_png(tmp):  # an OSError without an errno (PIL's): passed on as it was
        raise OSError("cannot write mode CMYK as PNG")

    with pytest.raises(OSError, match="^cannot write mode CMYK as PNG$"):
        atomic_write(tmp_path / "x.png", not_a_png)


def test_a_file_system_that_cannot_fsync_a_folder_still_takes_atomic_writes(tmp_path, monkeypatch):
    """Some FUSE and CIFS mounts answer a folder's fsync with EINVAL: every checkpoint, manifest and
    figure written there raised after the file was in place. Taken at its word, as a replaced
    folder's sync already did; a file's own fsync failing is still an error."""
    import stat

    from genzoo.models import base

    fsync = os.fsync

    def no_folder_sync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        return fsync(fd)

    monkeypatch.setattr(base.os, "fsync", no_folder_sync)
    base.atomic_write_text(tmp_path / "manifest.json", "{}")
    assert (tmp_path / "manifest.json").read_text() == "{}"

    def broken_disk(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(base.os, "fsync", broken_disk)
    with pytest.raises(OSError) as e:
        base.atomic_write_text(tmp_path / "manifest.json", "[]")
    assert e.value.errno == errno.EIO and (tmp_path / "manifest.json").read_text() == "{}"


def test_sampling_into_a_folder_that_cannot_be_one_is_refused_before_any_sampling(tmp_path, monkeypatch):
    from genzoo.tasks import sample as sample_task
    from genzoo.tasks.errors import GenzooError, describe_os_error

    def no_draw(*args, **kwargs):
        raise AssertionError("sampled before checking where the samples go")

    monkeypatch.setattr(sample_task, "draw", no_draw)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(GenzooError, match=re.escape(f"{blocker} exists and is not a folder")):
        sample_task.sample_to_file(None, 4, blocker / "samples" / "out")
    for suffix in (".npz", ".png"):  # a folder where either file goes: nothing sampled, nothing written
        (tmp_path / f"shots{suffix}").mkdir()
        with pytest.raises(GenzooError, match=re.escape(f"{tmp_path / f'shots{suffix}'} is a folder")):
            sample_task.sample_to_file(None, 4, tmp_path / "shots")
        (tmp_path / f"shots{suffix}").rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert describe_os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/x.npz")) == (
        "/x.npz: a folder, not a file (Is a directory)"
    )
    # the disk fills while the .png is written: the .npz of an earlier draw is kept, not replaced
    # by one the .png beside it does not show (the new .npz was left beside the failed .png)
    monkeypatch.setattr(sample_task, "draw", lambda *a, **k: (torch.rand(4, 1, 8, 8), torch.arange(4)))
    np.savez(tmp_path / "shots.npz", images=np.zeros((2, 1, 8, 8), np.float32), labels=np.arange(2))
    earlier = (tmp_path / "shots.npz").read_bytes()

    def full(img, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as m:
        m.setattr(sample_task, "save_png", full)
        with pytest.raises(OSError, match="No space left"):
            sample_task.sample_to_file(None, 4, tmp_path / "shots")
    assert (tmp_path / "shots.npz").read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "shots.npz"]  # no temp file left
    sample_task.sample_to_file(None, 4, tmp_path / "shots")  # an earlier draw is replaced
    assert (tmp_path / "shots.npz").read_bytes() != earlier and (tmp_path / "shots.png").exists()
    # a user's own files of those names are not: an npz of other arrays, a .png with no draw beside it
    np.savez(tmp_path / "mine.npz", x=np.zeros(3))
    (tmp_path / "notes.png").write_text("my notes")
    np.savez(tmp_path / "data.npz", images=np.zeros((2, 1, 8, 8), np.uint8), labels=np.arange(2))  # a dataset
    for name in ("mine", "notes", "data"):
        before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
        with pytest.raises(GenzooError, match="exists and is not a draw of genzoo sample"):
            sample_task.sample_to_file(None, 4, tmp_path / name)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_serve_against_an_unreachable_prefect_api_is_one_line(world, monkeypatch, capsys, restore_logging):
    api = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    before = files_under(world["root"])
    rc = cli.main(["serve", "--params", world["params"]])
    err = capsys.readouterr().err
    assert (
        rc == 2 and f"genzoo serve: error: PREFECT_API_URL={api}: no healthy Prefect server there" in err
    ), err
    assert "Traceback" not in err and files_under(world["root"]) == before


def test_run_against_a_stopped_prefect_server_is_one_line(world, monkeypatch, capsys, restore_logging):
    """PREFECT_API_URL set as README's Prefect UI section shows, its server since stopped: one
    line before any work (was a 110-line traceback from inside Prefect's engine, exit 1)."""
    api = f"http://127.0.0.1:{free_port()}/api"
    monkeypatch.setenv("PREFECT_API_URL", api)
    before = files_under(world["root"])
    rc = cli.main(["run", *_p(world, "--families", "vae")])
    err = capsys.readouterr().err
    assert rc == 2 and f"run: error: PREFECT_API_URL={api}: no Prefect server answers there" in err, err
    assert "Traceback" not in err and files_under(world["root"]) == before


def test_serve_on_a_port_another_program_holds_is_one_line(world, monkeypatch, capsys, restore_logging):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        rc = cli.main(["serve", *_p(world, "--port", str(port))])
    err = capsys.readouterr().err
    assert rc == 2 and f"port {port} on 127.0.0.1 is in use by another program" in err, err
    assert "PREFECT_PORT=N" in err and "Traceback" not in err


STAGES = {"prepare": [], "train": ["vae"], "evaluate": ["vae"], "detect": ["pixelcnn"],
          "usefulness": ["reference"], "augment": [], "report": []}  # fmt: skip


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_dvc_stage_turns_bad_input_into_one_line_and_exit_2(stage, tmp_path):
    """What `dvc repro` shows: each stage's command (python -m genzoo.tasks.X, as in dvc.yaml)
    with a params file that is a list ends with one line naming the file, no traceback."""
    import subprocess
    import sys

    bad = tmp_path / "params.yaml"
    bad.write_text("- 1\n- 2\n")
    cmd = [sys.executable, "-m", f"genzoo.tasks.{stage}", *STAGES[stage], "--params", str(bad)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"genzoo {stage}: error: "), done.stderr
    assert str(bad) in lines[0] and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


def test_ctrl_c_in_a_dvc_stage_is_one_line_and_exit_130(capsys):
    """Ctrl-C during `dvc repro` printed the traceback of wherever it landed (the trainer's
    backward pass); the console script said one line. Each stage's command now does too."""
    from genzoo.tasks.errors import exit_code

    def training():
        raise KeyboardInterrupt

    assert exit_code(training, "train") == 130
    assert capsys.readouterr().err == "genzoo train: interrupted\n"


def test_a_folder_of_grey_and_rgb_images_reads_them_as_rgb_unless_data_channels_says_grey(tmp_path):
    """Mixed grey and RGB images stopped the load (README's own-folder command failed on a folder
    with one grey image): the grey ones are read as RGB (repeated, nothing lost), said once with
    the key that trains them all grey; with `data.channels` every image is converted as it is
    read (RGB to grey by ITU-R 601 luma, grey to RGB by repeating)."""
    from PIL import Image

    from genzoo.tasks.prepare import load_folder_source
    from tests.conftest import logged

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.full((4, 4), 100, np.uint8)).save(tmp_path / c / "grey.png")
        Image.fromarray(np.full((4, 4, 3), (200, 100, 0), np.uint8)).save(tmp_path / c / "rgb.png")
    with logged("genzoo.prepare") as lines:
        mixed = load_folder_source(tmp_path, None)
    assert any("2 grayscale image(s) among 2 RGB" in m and "data.channels: 1" in m for m in lines), lines
    assert mixed.images.shape == (4, 3, 4, 4)
    assert mixed.images[:2, :, 0, 0].tolist() == [[100] * 3, [200, 100, 0]]
    grey = load_folder_source(tmp_path, None, channels=1)
    assert grey.images.shape == (4, 1, 4, 4)
    assert grey.images[:2, 0, 0, 0].tolist() == [100, round(0.299 * 200 + 0.587 * 100)]
    rgb = load_folder_source(tmp_path, None, channels=3)
    assert rgb.images.shape == (4, 3, 4, 4) and rgb.images[:2, :, 0, 0].tolist() == [[100] * 3, [200, 100, 0]]


def test_a_cluster_that_refuses_this_client_is_one_error_saying_what_it_needs(monkeypatch, capsys, tmp_path):
    """Ray's own failure to join a cluster with token authentication (20 s of InvalidAuthToken
    warnings, then "Failed to connect to Ray cluster at <its address>" and a traceback) is one
    error naming the address and RAY_AUTH_MODE=token; the console shows no traceback for it."""
    import ray

    from genzoo.flows import cluster
    from genzoo.tasks.errors import Unreachable

    def refused(**kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6395")

    with socket.socket() as listening:  # something answers at the address: the join itself fails
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        monkeypatch.setattr(ray, "init", refused)
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with pytest.raises(Unreachable) as e:
            cluster._join(address)
    said = str(e.value)
    assert said.startswith(f"Ray cluster at {address}: could not join (Failed to connect to Ray cluster at ")
    assert "admits only clients with RAY_AUTH_MODE=token and its token" in said

    # `--ray-address auto` with no cluster on this machine: no token hint, which does not apply
    def none_here(**kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to")

    monkeypatch.setattr(ray, "init", none_here)
    import ray._private.services as services

    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)  # (none left here)
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    with pytest.raises(Unreachable) as e:
        cluster._join("auto")
    assert "start one (`ray start --head`) or give its address" in str(e.value)
    assert "RAY_AUTH_MODE" not in str(e.value)
    monkeypatch.setattr(ray, "init", refused)
    with socket.socket() as listening:  # with token mode on: the token is the likely cause
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-clusters")
        with pytest.raises(Unreachable, match=r"is the token in RAY_AUTH_TOKEN the cluster's"):
            cluster._join(f"127.0.0.1:{listening.getsockname()[1]}")
        monkeypatch.delenv("RAY_AUTH_TOKEN")  # a file named by RAY_AUTH_TOKEN_PATH: that file named
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "their-token"))
        (tmp_path / "their-token").write_text("not-the-clusters")
        their = re.escape(str(tmp_path / "their-token"))
        with pytest.raises(Unreachable, match=rf"is the token in {their} the cluster's"):
            cluster._join(f"127.0.0.1:{listening.getsockname()[1]}")
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    # token mode with no token where Ray looks: Ray's AuthenticationError, raised before it
    # connects (it went through as two tracebacks and exit 1). A real ray.init in a process of its
    # own: Ray reads RAY_AUTH_MODE once per process, as a user's shell sets it before genzoo starts
    code = ("import sys\nfrom genzoo.flows import cluster\ntry:\n    cluster._join(sys.argv[1])\n"
            "except Exception as e:\n    print(type(e).__name__, e)")  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(tmp_path / "no-token")}
    env.pop("RAY_AUTH_TOKEN", None)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True,
                             timeout=120).stdout  # fmt: skip
    assert out.startswith(f"Unreachable Ray cluster at {address}: not joined, no token (RAY_AUTH_TOKEN_PATH "
                          "is set but file cannot be opened or is empty: "), out  # fmt: skip
    assert out.rstrip().endswith(
        f"put the cluster's token (its head's ~/.ray/auth_token) in {tmp_path / 'no-token'}"
    )
    record = logging.LogRecord("prefect.flow_runs", logging.ERROR, "", 0, "Encountered exception", None,
                               (Unreachable, e.value, e.value.__traceback__))  # fmt: skip
    assert "Traceback" not in cli.ConsoleFormatter().format(record)
    try:
        raise KeyError("a bug")
    except KeyError as bug:
        record.exc_info = (KeyError, bug, bug.__traceback__)
    assert "Traceback" in cli.ConsoleFormatter().format(record)  # a bug's traceback is still shown


def test_no_params_file_here_says_where_genzoo_looked(tmp_path, monkeypatch, capsys, restore_logging):
    monkeypatch.chdir(tmp_path)  # not the project's folder
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert f"params.yaml: params file not found in {tmp_path} (run genzoo in the project's folder, or " in err
    assert (
        "the folders a params file names are read from where genzoo runs)" in err
    )  # (--params alone: not enough)


@pytest.mark.parametrize("seed", ["-1", "4294967295"])
def test_a_seed_out_of_range_is_refused(seed, capsys):
    """-1 and 2**32 - 1 drew the same images: every --seed takes what params.yaml's seeds take."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["sample", "--family", "vae", "--seed", seed])
    assert stop.value.code == 2
    assert f"argument --seed: {seed} is not in [0, 2147483647]" in capsys.readouterr().err
