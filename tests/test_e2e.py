"""End to end on the embedded digits: real training, the real CLI, a real DVC repository."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from genzoo.tasks.config import validate
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Every family trained for a short real run on digits, through the DVC-stage function."""
    tmp = tmp_path_factory.mktemp("e2e")
    raw = tiny_params(tmp, steps=80)
    for fam, block in raw["models"].items():
        block["train"]["lr"] = 3e-3 if fam != "gan" else 1e-3
        block["train"]["log_every"] = 10
    raw["models"]["realnvp"]["train"]["likelihood_images"] = 50  # the others: the whole test split
    raw["models"]["pixelcnn"]["train"]["likelihood_pixels"] = 120 * 64  # but PixelCNN: 120 8x8 images
    raw["models"]["ddpm"]["net"]["bound_terms"] = 0  # every term: the bound itself, not an estimate of it
    params = validate(raw)
    prepare(params)
    return tmp, params, {f: train_family(params, f, progress=False) for f in params.families}


FAMILIES = ["pixelcnn", "realnvp", "vae", "gan", "ddpm"]
LOSS = {"pixelcnn": "nll", "realnvp": "nll", "vae": "neg_elbo", "gan": "d_loss", "ddpm": "mse"}


@pytest.mark.parametrize("family", FAMILIES)
def test_short_training_learns_and_writes_its_outputs(trained, family):
    tmp, params, metrics = trained
    out = tmp / "runs" / family
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = [r for r in rows if LOSS[family] in r]
    first, last = rows[0][LOSS[family]], rows[-1][LOSS[family]]
    assert last < first, f"{family}: {LOSS[family]} went {first:.3f} -> {last:.3f}"
    for name in ("model.json", "model.safetensors", "samples.png", "loss.png", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 80 and m["samples_per_second"] > 0
    if family == "gan":
        assert "test_bpd" not in m
    else:
        assert m["bpd_estimator"] == ("exact" if family in ("pixelcnn", "realnvp") else "bound")
        # within 1.5 bits of a uniform code over the 17 levels; a DDPM's bound stays loose until it
        # has trained long: after these 80 steps all its terms sum to 6.7 bits/dim
        assert 0 < m["test_bpd"] < np.log2(17) + (1.5 if family != "ddpm" else 4.0)
        from genzoo.tasks.data import load_split

        whole = len(load_split(params.data.prepared_dir, "test")[0])
        assert m["test_images"] == {"realnvp": 50, "pixelcnn": 120}.get(family, whole) and whole > 120
    import torch

    from genzoo import models

    model = models.load(out / "model.json")
    x = model.sample(20, torch.arange(20) % 10, generator=torch.Generator().manual_seed(0))
    assert x.std(0).mean() > 0.02, "samples are (nearly) constant"


def test_resume_after_interruption_matches(tmp_path, caplog):
    """A stage killed mid-training resumes from its checkpoint, says so, and ends where a straight
    run ends (same data, params and code -> same fingerprint -> same checkpoint folder)."""
    raw = tiny_params(tmp_path, steps=20, families=["vae"])
    params = validate(raw)
    prepare(params)
    train_family(params, "vae", progress=False, stop_at=10)
    assert not (tmp_path / "runs" / "vae" / "model.json").exists()
    from genzoo.tasks.status import family_status  # it said "not trained" alone

    assert family_status(params, "vae")["state"] == (
        "not trained (a training stopped at step 10: genzoo train or genzoo run resumes it)"
    )
    with caplog.at_level("INFO", "genzoo.trainer"):
        resumed = train_family(params, "vae", progress=False)
    assert resumed["resumed_from"] == 10
    assert "vae: resuming from its checkpoint at step 10" in caplog.messages  # as `genzoo run` says it
    first = (tmp_path / "runs" / "vae" / "model.safetensors").read_bytes()
    shutil.rmtree(tmp_path / "ckpt")
    straight = train_family(params, "vae", progress=False)
    assert straight["resumed_from"] is None
    assert first == (tmp_path / "runs" / "vae" / "model.safetensors").read_bytes()
    # its outputs removed (`dvc repro` removes a stage's before running it; then failing on a typo
    # in params.yaml): "a training stopped at step 20", of a training that had finished
    shutil.rmtree(tmp_path / "runs" / "vae")
    state = family_status(params, "vae")["state"]
    assert state.startswith("not trained: its outputs are missing, its checkpoint at step 20 is a finished")
    assert "`dvc checkout train@vae` restores the recorded ones" in state
    again = train_family(params, "vae", progress=False)  # as the message says: from the checkpoint
    assert (
        again["resumed_from"] == 20
        and first == (tmp_path / "runs" / "vae" / "model.safetensors").read_bytes()
    )


def _seeded_run(root: Path, seed: int) -> tuple[dict, dict]:
    """Prepare and train the VAE and the GAN under ``root`` with ``seed``; returns each family's
    metrics (less the clock: seconds, sampling speed, the stage's span) and sha256 of its
    samples (``samples.png`` and 32 images drawn from the saved model with a fixed generator)."""
    import hashlib

    import torch

    from genzoo.models import load

    raw = tiny_params(root, steps=12, families=["vae", "gan"])
    raw["seed"] = seed
    params = validate(raw)
    prepare(params)
    metrics, hashes = {}, {}
    for family in ("vae", "gan"):
        m = train_family(params, family, progress=False)
        clock = ("train_seconds", "samples_per_second", "span")
        metrics[family] = {k: v for k, v in m.items() if k not in clock}
        out = root / "runs" / family
        drawn = load(out / "model.json").sample(32, generator=torch.Generator().manual_seed(7))
        hashes[family] = (
            hashlib.sha256((out / "samples.png").read_bytes()).hexdigest(),
            hashlib.sha256(drawn.numpy().tobytes()).hexdigest(),
        )
    return metrics, hashes


def test_same_seed_gives_identical_metrics_and_sample_hashes_another_seed_differs(tmp_path):
    """Case 6: two runs with seed 0 in separate folders agree on every metric (losses, test
    bits/dim) and every sample hash; seed 1 changes them all."""
    a = _seeded_run(tmp_path / "a", 0)
    b = _seeded_run(tmp_path / "b", 0)
    c = _seeded_run(tmp_path / "c", 1)
    assert a == b
    assert a[0]["vae"]["final"] and "test_bpd" in a[0]["vae"] and a[0]["gan"]["final"]["g_loss"]
    for family in ("vae", "gan"):
        assert a[0][family]["final"] != c[0][family]["final"], family
        assert a[1][family][0] != c[1][family][0] and a[1][family][1] != c[1][family][1], family
    assert a[0]["vae"]["test_bpd"] != c[0]["vae"]["test_bpd"]


def test_same_source_path_with_other_content_is_not_a_stale_hit(tmp_path):
    """Case 13: an npz source rewritten in place (same path, same size, same mtime, params
    untouched) changes the prepared data's hash, so the trained GAN is no longer up to date
    and re-trains on the new content; before the rewrite it was a cache hit."""
    from sklearn.datasets import load_digits

    from genzoo.tasks.layout import read_json, up_to_date

    digits = load_digits()
    images, labels = digits.images[:300].astype(np.uint8), digits.target[:300]
    source = tmp_path / "digits.npz"
    np.savez(source, images=images, labels=labels, levels=17)
    raw = tiny_params(tmp_path, steps=6, families=["gan"])
    raw["data"]["source"] = f"npz:{source}"
    params = validate(raw)
    first = prepare(params)
    train_family(params, "gan", progress=False)
    assert up_to_date(params, "gan") is not None  # the cache hit the flow would take
    model = tmp_path / "runs" / "gan" / "model.json"
    before = read_json(model)["data_sha256"]

    stat = source.stat()
    np.savez(source, images=images[::-1].copy(), labels=labels[::-1].copy(), levels=17)  # same shapes
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert source.stat().st_size == stat.st_size and source.stat().st_mtime_ns == stat.st_mtime_ns
    second = prepare(params)  # the flow prepares on every run
    assert second["splits"]["train"]["sha256"] != first["splits"]["train"]["sha256"]
    assert up_to_date(params, "gan") is None  # no stale hit: the GAN must re-train
    again = train_family(params, "gan", progress=False)
    assert again["resumed_from"] is None  # not from the old data's checkpoints either
    assert read_json(model)["data_sha256"] != before and up_to_date(params, "gan") is not None


def _cli(*args, cwd, check=True):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    r = subprocess.run(
        [str(BIN / "genzoo"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and r.returncode != 0:
        raise AssertionError(f"genzoo {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def test_cli_sample_writes_npz_and_png(trained, tmp_path):
    tmp, _, _ = trained
    pfile = tmp / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp)))
    out = tmp_path / "threes"
    common = ["--params", str(pfile), "--n", "12", "--class", "3", "--out", str(out), "--seed", "5", "-q"]
    r = _cli("sample", "--family", "vae", *common, cwd=tmp)
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 12
    # trained with other params than these (as after a quick run, sampled without its profile): said
    assert "vae: trained with other params, data or code than these (stale" in r.stderr, r.stderr
    assert "sampled as it is" in r.stderr
    with np.load(f"{out}.npz") as z:
        assert z["images"].dtype == np.float32 and z["images"].shape == (12, 1, 8, 8)
        assert z["labels"].dtype == np.int64 and (z["labels"] == 3).all()
        assert z["images"].min() >= 0 and z["images"].max() <= 1
        first = z["images"]
    assert Path(f"{out}.png").stat().st_size > 0
    # an override of the model's settings changes nothing, and says so (-q keeps warnings)
    over = "models.vae.net.sample_mode=sample"
    r = _cli("sample", "--model", str(tmp / "runs" / "vae" / "model.json"), *common, "-o", over, cwd=tmp)
    assert f"-o {over} does not change the images: a trained model samples with the settings" in r.stderr, (
        r.stderr
    )
    with np.load(f"{out}.npz") as z:
        assert np.array_equal(z["images"], first)  # same seed, same images
    # with --family, the data keys say which data it is checked against (a folder of one's own,
    # repeated on every command): no word of them; a key of nothing sampling reads still said
    overrides = ["-o", "data.val_fraction=0.15", "-o", "augment.per_class=3"]
    r = _cli("sample", "--family", "vae", *common, *overrides, cwd=tmp)
    assert "-o augment.per_class=3 does not change the images" in r.stderr
    assert "-o data.val_fraction=0.15 does not change" not in r.stderr


def test_cli_evaluate_scores_every_trained_family_then_reports(trained, tmp_path):
    tmp, params, _ = trained
    pfile = tmp / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp)))
    r = _cli("evaluate", "--params", str(pfile), cwd=tmp)
    for fam in FAMILIES:
        assert f"{fam}: FD " in r.stdout and f"{fam}: FD " not in r.stderr, r.stderr  # once, not logged too
        assert (tmp / "runs" / "evaluation" / fam / "quality.json").exists()
        # the models were trained with other params than these (80 steps, other rates): said
        assert f"{fam}: trained with other params, data or code than these (stale" in r.stderr, r.stderr
    assert "report: " in r.stdout and "real-vs-real floor" in r.stdout
    assert (r.stdout + r.stderr).count("report: ") == 1  # (the report's own log line said it again)
    summary = json.loads((tmp / "runs" / "report" / "summary.json").read_text())
    assert sorted(summary["families"]) == sorted(params.families)  # the shipped five and any added
    before = (tmp / "runs" / "report" / "index.html").stat().st_mtime_ns
    assert "report: " in _cli("report", "--params", str(pfile), cwd=tmp).stdout
    assert (tmp / "runs" / "report" / "index.html").stat().st_mtime_ns > before
    # the best evaluated family by the evaluator's Fréchet distance (--metric fd; the default,
    # fd_rank over every judge: tests/tasks/test_augment.py), as a synthetic dataset with PNGs
    best = min(summary["families"], key=lambda f: summary["families"][f]["fd"])
    r = _cli("augment", "--params", str(pfile), "--families", "best", "--metric", "fd", "--per-class", "2",
             "--name", "cli", "--no-reject-copies", "--png", cwd=tmp)  # fmt: skip
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["families"] == [best] and out["n"] == 20 and out["filters"]["reject_copies"] is False
    assert len(list(Path(out["path"], "images").rglob("*.png"))) == 20  # --png: the image folders
    assert out["formats"] == ["npz", "imagefolder"]
    r = _cli("evaluate", "--params", str(pfile), "--family", "nope", cwd=tmp, check=False)
    assert r.returncode == 2 and "--family: nope not in params" in r.stderr
    empty = tmp_path / "params.yaml"
    empty.write_text(yaml.safe_dump(tiny_params(tmp_path)))
    r = _cli("evaluate", "--params", str(empty), cwd=tmp_path, check=False)
    assert r.returncode == 2 and "nothing to evaluate" in r.stderr
    assert not (tmp_path / "runs" / "evaluation").exists()


def test_cli_run_prepares_and_trains_through_the_console_script(tmp_path):
    """Also case 10: the whole pipeline on a local Ray of 2 CPUs, the smallest object store
    Ray allows (75 MB, genzoo's least too) and no dashboard."""
    pfile = tmp_path / "params.yaml"
    raw = tiny_params(tmp_path, steps=4)
    raw["ray"] = {"num_cpus": 2, "object_store_mb": 75}
    pfile.write_text(yaml.safe_dump(raw))
    r = _cli("run", "--params", str(pfile), "--families", "realnvp,gan", "--json", cwd=tmp_path)
    # the console: each stage's start and end, no HTTP request lines of Prefect's client
    assert re.search(r"^\d\d:\d\d:\d\d train-gan +started$", r.stderr, re.M), r.stderr
    assert re.search(r"^\d\d:\d\d:\d\d train-gan +done in [\d.]+ s$", r.stderr, re.M), r.stderr
    assert "HTTP Request" not in r.stderr and "Finished in state Completed" not in r.stderr
    started = re.search(r"^\d\d:\d\d:\d\d cluster +started a local Ray .*", r.stderr, re.M)
    assert started and "'CPU': 2.0" in started[0], r.stderr
    assert f"'object_store_memory': {75 * 2**20}.0" in started[0], started[0]
    assert len(re.findall(r"prepared digits", r.stderr)) == 1, r.stderr  # the stage's line, once
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(summary["families"]) == ["gan", "realnvp"]
    assert summary["families"]["realnvp"]["steps"] == 4 and not summary["families"]["gan"]["cached"]
    assert summary["pipeline_seconds"] > 0
    assert summary["families"]["gan"]["fd"] > 0 and summary["report"].endswith("index.html")
    assert (tmp_path / "prepared" / "manifest.json").exists()
    assert (tmp_path / "runs" / "gan" / "samples.png").exists()
    assert not (tmp_path / "runs" / "vae").exists()


def test_cli_help_and_clear_errors(tmp_path, monkeypatch, capsys, restore_logging):
    from genzoo.flows import cli

    assert "usage: genzoo" in _cli("--help", cwd=ROOT).stdout  # the console script, as installed
    monkeypatch.chdir(ROOT)

    def here(*args: str) -> tuple[int, str, str]:  # the same main() in this process: no start-up
        capsys.readouterr()
        try:
            code = cli.main(list(args))
        except SystemExit as stop:  # --help
            code = stop.code
        return (code, *capsys.readouterr())

    for cmd in (["prepare"], ["train"], ["sample"], ["run"]):
        code, out, _ = here(*cmd, "--help")
        assert code == 0 and "usage: genzoo" in out
    assert "--profile" in here("run", "--help")[1]
    code, _, err = here(
        "prepare", "-o", "models.vae.train.lr=-1", "-o", f"data.prepared_dir={tmp_path / 'p'}"
    )
    assert code == 2 and "models.vae.train.lr" in err
    assert not (tmp_path / "p").exists()
    code, _, err = here("train", "--family", "nope")
    assert code != 0 and "nope" in err
    code, _, err = here("run", "--families", "vae,nope")
    assert code == 2 and "--families: nope not in params" in err


# `dvc repro` from scratch, then doing nothing, then one stale family: tests/flows/test_dvc.py
