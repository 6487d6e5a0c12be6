"""The `genzoo` command line: what a person reads on the console, and the parser by command."""

import http.server
import logging
import re
import threading
from pathlib import Path

import httpx
import pytest
import yaml

from genzoo.flows import cli


@pytest.fixture
def http_server():
    """A real HTTP server on loopback for a real httpx client to talk to."""

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.mark.parametrize("verbose", [False, True])
def test_http_requests_are_shown_only_with_verbose(verbose, http_server, restore_logging, capsys):
    cli.setup_logging(quiet=False, verbose=verbose)
    httpx.get(f"{http_server}/api/health")
    logging.getLogger("genzoo.test").info("vae: step 5/10", extra={"task_run_name": "train-vae"})
    err = capsys.readouterr().err
    assert ("HTTP Request: GET" in err) is verbose, err
    assert re.search(r"^\d\d:\d\d:\d\d train-vae +vae: step 5/10$", err, re.M), err


def test_the_console_names_the_stage_and_drops_prefects_completed_lines(restore_logging, capsys):
    cli.setup_logging()
    runs = logging.getLogger("prefect.test")  # as Prefect's run loggers, without their API handler
    runs.info("started", extra={"task_run_name": "evaluate-gan"})
    runs.info("Finished in state Completed()", extra={"task_run_name": "evaluate-gan"})
    runs.error("Finished in state Failed('boom')", extra={"task_run_name": "evaluate-gan"})
    logging.getLogger("prefect.test").info("pipeline done", extra={"flow_name": "genzoo-pipeline"})
    logging.getLogger("genzoo.cluster").warning("no GPU")
    lines = [line.split(" ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert [re.sub(r" +", " ", line) for line in lines] == [
        "evaluate-gan started",
        "evaluate-gan ERROR Finished in state Failed('boom')",
        "genzoo-pipeline pipeline done",
        "cluster WARNING no GPU",
    ]


RESULT = {
    "trained": {
        "vae": {"steps": 600, "train_seconds": 41.26, "test_bpd": 2.3175, "bpd_estimator": "bound",
                "cached": False, "host": "vm", "ray_node": "n1"},
        "gan": {"steps": 800, "train_seconds": 30.0, "cached": True, "host": "vm", "ray_node": "n1"},
    },
    "evaluate": {
        "vae": {"fd": 0.00103, "fd_ci95": 0.00013, "precision": 0.9375, "recall": 0.8677,
                "class_accuracy": 0.9213},
        "gan": {"fd": 0.00203, "fd_ci95": 0.00074, "precision": 0.975, "recall": 0.6337},
    },
    "report": {"targets": {"best_family": "vae"}},
    "report_path": "/p/runs/report/index.html",
    "mlflow_run_id": "abc123",
    "pipeline_seconds": 48.5,
}  # fmt: skip


def test_the_run_ends_with_a_table_of_figures_and_where_the_report_is():
    from genzoo.flows.pipeline import figures

    text = cli.format_run({**RESULT, "figures": figures(RESULT)})
    rows = [re.sub(r" +", " ", line) for line in text.splitlines()]
    assert rows[0] == "family steps train s FD ± 95% precision recall class acc bits/dim"
    assert rows[2] == "vae 600 41.3 0.0010 ± 0.0001 0.938 0.868 92.1% 2.317 (bound)"
    assert rows[3] == "gan 800 30.0 0.0020 ± 0.0007 0.975 0.634 - - (up to date)"  # (no class accuracy)
    assert "report: /p/runs/report/index.html" in rows and "MLflow run: abc123" in rows
    assert rows[-1] == "pipeline: 48.5 s"
    # with an MLflow server, the run's page (MLflow's own "View run" lines are kept off the console)
    url = "http://127.0.0.1:5000/#/experiments/1/runs/abc123"
    assert f"MLflow run: {url}" in cli.format_run({**RESULT, "figures": figures(RESULT), "mlflow_url": url})


def test_json_summary_keeps_every_family_and_the_report():
    out = cli.run_summary(RESULT)
    assert out["families"]["vae"] == {
        **RESULT["trained"]["vae"],
        **{
            k: RESULT["evaluate"]["vae"][k]
            for k in ("fd", "fd_ci95", "precision", "recall", "class_accuracy")
        },
    }
    assert "class_accuracy" not in out["families"]["gan"]
    assert out["report"] == "/p/runs/report/index.html" and out["mlflow_run_id"] == "abc123"


def test_every_command_parses_and_run_takes_verbose_and_json():
    ap = cli.build_parser()
    commands = ap._subparsers._group_actions[0].choices
    assert set(commands) == {
        "prepare", "train", "run", "sample", "augment", "serve", "status", "evaluate", "detect",
        "usefulness", "interpolate", "arithmetic", "report", "judge", "families",
    }  # fmt: skip
    judge = commands["judge"]._subparsers._group_actions[0].choices
    assert set(judge) == {"create", "add-rater", "serve", "results"}
    args = ap.parse_args(["judge", "create", "--families", "gan,vae", "--per-family", "4", "--raters", "2"])
    assert args.fn is cli.cmd_judge and args.judge == "create" and args.per_family == 4 and args.raters == 2
    args = ap.parse_args(["judge", "serve"])
    assert args.host == "127.0.0.1" and args.port == 8400 and not args.allow_remote
    args = ap.parse_args(["run", "--families", "vae,gan", "--verbose", "--json", "--profile", "quick"])
    assert args.fn is cli.cmd_run and args.verbose and args.json and args.families == "vae,gan"
    assert ap.parse_args(["train", "--family", "vae"]).fn is cli.cmd_train
    assert not ap.parse_args(["families"]).verbose
    with pytest.raises(SystemExit):
        ap.parse_args(["train"])  # --family or --all


def test_sample_refuses_a_model_json_without_sha256_unless_allow_unhashed(tmp_path):
    """`genzoo sample --model PATH` on a model.json that records no hash of its weights: an
    error naming the file, nothing written; with --allow-unhashed it samples."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import torch
    import yaml

    from genzoo import models

    torch.manual_seed(0)
    path = models.save(models.build("vae", models.DataSpec(1, 8, 8, 17, 10), {"latent_dim": 4, "hidden": 8}),
                       tmp_path / "model")  # fmt: skip
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": {"vae": {}}}))
    cmd = [str(Path(sys.executable).parent / "genzoo"), "sample", "-q", "--model", str(path), "--n", "4",
           "--out", str(tmp_path / "s")]  # fmt: skip
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"genzoo sample: error: {path}: records no sha256")
    assert "--allow-unhashed" in r.stderr and not (tmp_path / "s.npz").exists()
    r = subprocess.run([*cmd, "--allow-unhashed"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 4 and (tmp_path / "s.npz").exists()


def test_detect_after_a_quick_run_benchmarks_only_at_its_settings_and_scores_with_a_warning(tmp_path, capsys):
    """`genzoo detect --benchmark` without the run's profile replaced its anomaly.json with figures
    at other settings; scoring images with the model says which profile it is current under,
    after the input is read (bad input alone)."""
    import numpy as np
    import yaml

    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=4, families=["vae"])
    raw["profiles"] = {"short": {"models.vae.train.steps": 3}}
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    base = ["--params", str(pfile)]
    assert cli.main(["prepare", *base]) == 0
    assert cli.main(["train", "--family", "vae", "--profile", "short", "-q", *base]) == 0
    capsys.readouterr()
    assert cli.main(["detect", "--family", "vae", "--benchmark", *base]) == 2
    err = capsys.readouterr().err
    assert "add --profile short to benchmark it as it was made (these params would benchmark it at " in err, (
        err
    )
    holdout = ["detect", "--family", "vae", "--benchmark", "--profile", "short", "--holdout", "12", *base]
    assert cli.main(holdout) == 2  # said before any set is scored
    assert "--holdout: 12 is not a class of the data (classes 0-9)" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "evaluation").exists()
    assert cli.main(["detect", "--family", "vae", str(tmp_path / "nowhere.npz"), *base]) == 2
    assert "trained with" not in capsys.readouterr().err  # the missing file alone
    images = tmp_path / "some.npz"
    np.savez(images, images=np.zeros((3, 1, 8, 8), np.float32))
    assert cli.main(["detect", "--family", "vae", str(images), *base]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 3 and (
        "vae: trained with --profile short, not these params; images scored with it as it is (run this with "
        "--profile short" in err
    ), err
    assert (
        cli.main(["interpolate", "--family", "vae", "--steps", "3", "--out", str(tmp_path / "strip"), *base])
        == 0
    )
    assert (
        "vae: trained with --profile short, not these params; its strips drawn as it is"
        in capsys.readouterr().err
    )


def test_status_says_when_a_command_is_writing_the_folder(tmp_path, capsys):
    """`genzoo status` during a run said `not trained` for the families being trained, with no word
    of the run: it names the command holding the runs folder (its pid and start), and nothing once
    it is gone, or where a killed (-9) one left its holder file behind."""
    import json
    import os
    import subprocess
    import sys

    from genzoo.tasks.layout import exclusive
    from tests.conftest import tiny_params

    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    base = ["status", "--params", str(pfile)]
    with exclusive(tmp_path / "runs"):
        assert cli.main(base) == 0
        out = capsys.readouterr().out.splitlines()
        busy = f"busy      a genzoo command writes the runs folder (pid {os.getpid()} since "
        assert out[0].startswith(busy) and out[0].endswith("): states as of now")
    with exclusive(tmp_path / "runs", "Prefect flow run 'crafty-fox' (1234)"):  # a pipeline's flow run
        assert cli.main(base) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith(busy) and out[0].endswith(
            ", Prefect flow run 'crafty-fox' (1234)): states as of now"
        )
        assert out[1] == "data      not prepared" and out[2].startswith("gan       not trained")
        assert cli.main([*base, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["run"].startswith(f"pid {os.getpid()} since ")
    assert cli.main(base) == 0
    assert capsys.readouterr().out.splitlines()[0] == "data      not prepared"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (tmp_path / "runs").mkdir()  # (the lock's folder, made for it, went with it)
    (tmp_path / "runs" / ".pipeline.holder").write_text(f"pid {int(gone.stdout)} since 2026-01-01 00:00:00")
    assert cli.main([*base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] is None
    # a live process of that pid, started after the holder was written: the pid reused, no run
    (tmp_path / "runs" / ".pipeline.holder").write_text(f"pid {os.getpid()} since 2000-01-01 00:00:00")
    assert cli.main([*base, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] is None


def test_a_params_file_from_another_folder_says_where_its_folders_are_read(
    tmp_path, monkeypatch, capsys, restore_logging
):
    """`genzoo status --params ../proj/params.yaml` from another folder said every family `not
    trained`, with no word that it had looked for them in the current folder (relative folders
    are read from there, as by DVC): it says where it read them and where they are."""
    from tests.conftest import tiny_params

    proj, other = tmp_path / "proj", tmp_path / "other"
    for folder in (proj / "runs", proj / "prepared", other):  # (tiny params: prepared/, runs/, ckpt/)
        folder.mkdir(parents=True)
    (proj / "params.yaml").write_text(yaml.safe_dump(tiny_params(Path("."), families=["gan"])))
    base = ["status", "--params", str(proj / "params.yaml")]
    monkeypatch.chdir(other)
    assert cli.main(base) == 0
    err = capsys.readouterr().err
    said = f"folders are read from the current folder, {other}; they are in {proj} (prepared, runs)"
    assert said in err and f"(cd {proj})" in err, err
    monkeypatch.chdir(proj)  # in its own folder; or where the current one has them too: nothing said
    assert cli.main(["status", "--params", "params.yaml"]) == 0 and "read from" not in capsys.readouterr().err
    (other / "params.yaml").symlink_to(proj / "params.yaml")  # a link here to it: its folders are here
    monkeypatch.chdir(other)
    assert cli.main(["status", "--params", "params.yaml"]) == 0 and "read from" not in capsys.readouterr().err
    (other / "runs").mkdir()
    (other / "prepared").mkdir()
    assert cli.main(base) == 0 and "read from" not in capsys.readouterr().err


def test_status_says_when_the_users_images_changed_after_they_were_prepared(tmp_path):
    """An image added to the user's folder after a run: `genzoo status` called every family up
    to date, as they are against the prepared data, and said nothing of the folder. It compares
    the images prepare would read (paths and sizes) with the manifest's listing of them."""
    import numpy as np
    import yaml
    from PIL import Image

    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.status import status
    from tests.conftest import tiny_params

    root = tmp_path / "mine"
    for c in ("cats", "dogs"):
        (root / c).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(np.full((6, 6), 30 * i, np.uint8)).save(root / c / f"{i}.png")
    raw = tiny_params(tmp_path, families=["gan"])
    raw["data"].update(source=f"folder:{root}", image_size=6)
    params = validate(yaml.safe_load(yaml.safe_dump(raw)))
    prepare(params)
    assert status(params)["data"]["state"] == "prepared"
    for quiet in (root / ".DS_Store", root / "cats" / "Thumbs.db", root / "cats" / ".~lock"):
        quiet.write_bytes(b"x")  # what a file manager or an editor leaves: prepare passes them over
    (root / "cats" / "0.png").touch()  # the same image, a newer time
    assert status(params)["data"]["state"] == "prepared"
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(root / "cats" / "new.png")
    said = status(params)["data"]["state"]
    assert said.startswith(f"prepared, but folder:{root} changed since (its images are not those prepared")
    (root / "cats" / "new.png").unlink()
    assert status(params)["data"]["state"] == "prepared"
    (root / "dogs" / "7.png").unlink()  # one removed
    assert "its images are not those prepared" in status(params)["data"]["state"]
    (root / "dogs" / "notes.txt").write_text("x")  # a file prepare refuses: said, not a traceback
    assert "it no longer reads as prepared data: " in status(params)["data"]["state"]
    root.rename(tmp_path / "elsewhere")  # not there (a clone that pulled the prepared data alone)
    assert status(params)["data"]["state"] == "prepared"


def test_status_says_why_a_family_is_stale(tmp_path, capsys):
    """`genzoo status` after a run with a profile: up to date under that profile, and without it
    the profile that would make it current; other params (each key, old -> new), other code or
    other data are named as such."""
    import json
    import os
    import shutil
    import time
    from pathlib import Path

    import torch
    import yaml

    from genzoo.models.base import sha256_file
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=4, families=["gan", "vae"])
    raw["profiles"] = {"short": {"models.gan.train.steps": 3}, "broken": {"train.steps": -1}}  # never used
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    base = ["--params", str(pfile)]
    assert cli.main(["status", *base]) == 0  # a fresh clone: nothing to say after the state
    assert capsys.readouterr().out.splitlines()[0] == "data      not prepared"
    # a first command before any run: the command to run first, with its profile
    for cmd, line in (
        # (with the params file given: a hint without it would read ./params.yaml)
        (["evaluate", "--profile", "short"], f"runs (genzoo run --profile short --params {pfile})"),
        (
            ["report"],
            f"reference.json missing: nothing evaluated yet (`genzoo evaluate --params {pfile}`, or ",
        ),
    ):
        assert cli.main([*cmd, *base]) == 2
        assert line in capsys.readouterr().err
    assert cli.main(["prepare", *base]) == 0
    assert cli.main(["train", "--family", "gan", "--profile", "short", "-q", *base]) == 0
    capsys.readouterr()

    def gan_state(*args: str) -> str:
        assert cli.main(["status", *base, *args]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(line.startswith("vae       not trained") for line in lines), lines
        return next(line for line in lines if line.startswith("gan")).split(" | ")[0][10:]

    assert gan_state("--profile", "short") == "up to date"
    assert gan_state() == "stale for these params; up to date with --profile short"
    # the commands that measure a model refuse it under other settings than it was made with
    # (after `make run PROFILE=quick`, `genzoo evaluate` replaced the quick run's evaluator)
    for cmd, doing in (("evaluate", "evaluate it"), ("report", "report on it")):
        assert cli.main([cmd, *base]) == 2
        err = capsys.readouterr().err
        assert f"gan: trained with --profile short; add --profile short to {doing} as it was made" in err, err
        assert ("measure" not in err) == (cmd == "report"), err  # a report measures nothing: its own reason
    assert not (tmp_path / "runs" / "evaluation").exists()  # refused before any work
    assert cli.main(["usefulness", "--families", "gan", *base]) == 2
    assert "add --profile short to measure it" in capsys.readouterr().err
    # a dataset drawn from them would be labelled as of no profile, and replace the run's own
    aug = ["augment", "--families", "gan", "--per-class", "1", "--recipe", "plain", *base]
    assert cli.main([*aug, "-o", f"augment.out_dir={tmp_path / 'aug'}"]) == 2
    err = capsys.readouterr().err
    assert "add --profile short to draw a dataset from it as it was made (these params would filter " in err
    assert "replace the run's dataset)" in err and "measure" not in err, err  # its own reason
    # a family with no likelihood is said first (not "add --profile short", which cannot help)
    assert cli.main(["detect", "--family", "gan", "--benchmark", *base]) == 2
    assert "gan has no likelihood to score with (use " in capsys.readouterr().err
    assert not (tmp_path / "runs" / "evaluation").exists()
    # an untrained family: the command that trains it, with the profile given (it left it out)
    assert (
        cli.main(
            [
                "sample",
                "--family",
                "vae",
                "--n",
                "2",
                "--out",
                str(tmp_path / "v"),
                "--profile",
                "short",
                *base,
            ]
        )
        == 2
    )
    assert (
        f"no trained model; run `genzoo train --family vae --profile short --params {pfile}` first"
        in capsys.readouterr().err
    )
    # drawing images is the user's own: a warning naming the profile
    draw = ["sample", "--family", "gan", "-q", "--out", str(tmp_path / "drawn"), *base]
    assert cli.main([*draw, "--n", "0"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # the bad input alone, no warning before it
    assert cli.main([*draw, "--n", "2"]) == 0
    assert (
        "gan: trained with --profile short, not these params; sampled as it is (run this with --profile short"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "aug").exists()
    # their deployments (the UI's forms) alike, and with the profile given they draw
    from genzoo.flows.pipeline import augment, judge_study
    from genzoo.tasks.errors import UsageError

    kw = {"families": ["gan"], "params_file": str(pfile)}
    with pytest.raises(UsageError, match="add --profile short to draw a dataset from it"):
        augment.fn(**kw, per_class=1, recipe="plain", out_dir=str(tmp_path / "aug"))
    with pytest.raises(UsageError, match="add --profile short to draw it for a study"):
        judge_study.fn(**kw, per_family=2, raters=0, name="ui")
    assert not (tmp_path / "aug").exists() and not (tmp_path / "runs" / "human").exists()
    # the sample deployment draws as `genzoo sample` does: the warning naming the profile without
    # it (its log, the UI's run page), none with it
    from genzoo.flows.pipeline import sample

    capsys.readouterr()
    sample.fn(family="gan", n=2, out=str(tmp_path / "ui"), params_file=str(pfile))
    err = capsys.readouterr().err
    assert "gan: trained with --profile short, not these params; sampled as it is" in err
    assert "(replacing the draw there)" not in err
    from tests.conftest import logged

    with logged("genzoo.sample") as lines:
        sample.fn(family="gan", n=2, out=str(tmp_path / "ui"), params_file=str(pfile), profile="short")
    assert "sampled as it is" not in capsys.readouterr().err and (tmp_path / "ui.npz").is_file()
    # a second draw to the same file: said, not silent
    assert f"2 images from runs/gan -> {tmp_path / 'ui.npz'} (replacing the draw there)" in lines, lines
    with logged("genzoo.sample") as lines:  # the file named with its suffix, as a user may
        sample.fn(family="gan", n=3, out=str(tmp_path / "ui.npz"), params_file=str(pfile), profile="short")
    assert f"3 images from runs/gan -> {tmp_path / 'ui.npz'} (replacing the draw there)" in lines, lines
    with pytest.raises(ValueError, match="^label 'eleven': not a class name or index"):  # the form's field
        sample.fn(
            family="gan",
            n=2,
            label="eleven",
            out=str(tmp_path / "ui"),
            params_file=str(pfile),
            profile="short",
        )
    from genzoo.tasks.errors import ModelNotFound

    with pytest.raises(
        ModelNotFound, match=re.escape(f"`genzoo train --family vae --profile short --params {pfile}`")
    ):
        sample.fn(family="vae", n=2, out=str(tmp_path / "v"), params_file=str(pfile), profile="short")
    made = augment.fn(**kw, per_class=1, recipe="plain", reject_copies=False, out_dir=str(tmp_path / "aug"),
                      profile="short")  # fmt: skip
    assert json.loads((Path(made["path"]) / "manifest.json").read_text())["profile"] == "short"
    shutil.rmtree(tmp_path / "aug")
    db = ["--db", f"sqlite:///{tmp_path / 'studies.db'}"]  # a study draws at the settings it was made with
    judge = ["judge", "create", "--families", "gan", "--per-family", "2", "-q", *db, *base]
    assert cli.main([*judge, "--name", "s"]) == 2
    assert "add --profile short to draw it for a study as it was made" in capsys.readouterr().err
    assert not (tmp_path / "studies.db").exists()  # refused before the study database is made
    assert cli.main([*judge, "--name", "s", "--profile", "short"]) == 0
    assert "send it to that rater only" in capsys.readouterr().err
    assert cli.main([*judge, "--name", "none-yet", "--raters", "0", "--profile", "short"]) == 0
    # the next command as this one was given (it dropped --profile: add-rater then refused the study)
    err = capsys.readouterr().err
    assert "no rater yet: `genzoo judge add-rater none-yet --profile short --params " in err
    assert f"--db sqlite:///{tmp_path / 'studies.db'}` makes a link" in err
    report = tmp_path / "runs" / "report" / "index.html"
    report.parent.mkdir(parents=True)
    report.write_text("a report of the short run")  # results rebuild it: not under other settings
    assert cli.main(["judge", "results", "s", *db, *base]) == 0
    out, err = capsys.readouterr()
    assert (
        "study s: 0 raters counted, 0 left out (attention checks), 1 with no answer yet," in out
        and "report not rebuilt: gan: trained with --profile short" in err
    )
    assert report.read_text() == "a report of the short run"
    short = ("--profile", "short")
    assert gan_state(*short, "-o", "seed=1") == "stale (trained with other params: seed: 0 -> 1)"
    several = ["-o", "seed=1", "-o", "train.batch_size=16", "-o", "models.gan.net.hidden=4"]
    several += ["-o", "run.threads=2"]
    assert gan_state(*short, *several) == (
        "stale (trained with other params: models.gan.net.hidden: 8 -> 4, seed: 0 -> 1, run.threads: 1 -> 2, "
        "train.batch_size: 32 -> 16)"
    )
    # a train key the family's own block sets is named there (it said train.steps, hidden after four)
    assert gan_state(*short, "-o", "models.gan.train.steps=2").startswith(
        "stale (trained with other params: models.gan.train.steps: 3 -> 2"
    )
    # made by other code (here: a model.json as an earlier genzoo would have stamped it)
    meta_file = tmp_path / "runs" / "gan" / "model.json"
    meta = json.loads(meta_file.read_text())
    older = {**meta, "fingerprint": "0" * 16, "made_with": {**meta["made_with"], "code": "0"}}
    meta_file.write_text(json.dumps(older))
    assert gan_state(*short) == "stale (genzoo's code for it changed since)"
    assert gan_state(*short, "-o", "seed=1") == (
        "stale (trained with other params: seed: 0 -> 1; genzoo's code for it changed since)"
    )
    meta_file.write_text(json.dumps(meta))
    # outputs missing or weights that are not model.json's: said as such, not as changed params
    curve = tmp_path / "runs" / "gan" / "loss.png"
    curve.rename(curve.with_suffix(".bak"))
    assert gan_state(*short).startswith("incomplete (loss.png missing")
    curve.with_suffix(".bak").rename(curve)
    # a retraining stopped after its weights were saved, before its metrics: incomplete, not "not trained"
    metrics_file = tmp_path / "runs" / "gan" / "metrics.json"
    kept_metrics = metrics_file.read_text()
    metrics_file.unlink()
    assert gan_state(*short).startswith("incomplete (metrics.json missing or unreadable: a training of it")
    from genzoo.tasks.config import load_params
    from genzoo.tasks.layout import warn_if_stale

    said = []  # and a stage drawing from it says the same, not "trained with other params"
    logger = logging.getLogger("genzoo.test-incomplete")
    logger.addHandler(
        type("Keep", (logging.Handler,), {"emit": lambda self, r: said.append(r.getMessage())})()
    )
    warn_if_stale(load_params(pfile, None, "short"), "gan", "evaluated", logger)
    assert said and "metrics.json missing or unreadable" in said[0] and "(stale" not in said[0], said
    assert cli.main(["sample", *base, "--family", "gan", "--n", "2", "--out", str(tmp_path / "inc")]) == 0
    assert "gan: metrics.json missing in" in capsys.readouterr().err  # drawn from, said as it is
    metrics_file.write_text(kept_metrics)
    # when it was trained: metrics.json's record, not model.json's time (a `dvc checkout`'s)
    os.utime(meta_file, (0, 0))
    assert cli.main(["status", "--json", *base, *short]) == 0
    (row,) = [r for r in json.loads(capsys.readouterr().out)["families"] if r["family"] == "gan"]
    end = json.loads(kept_metrics)["span"]["end"]
    assert row["trained"] == time.strftime("%Y-%m-%d %H:%M", time.localtime(end))
    weights = tmp_path / "runs" / "gan" / "model.safetensors"
    weights.rename(weights.with_suffix(".bak"))  # no weights: said as such, before any work
    assert cli.main(["evaluate", "--family", "gan", *short, *base]) == 2
    assert (
        f"gan: model.safetensors missing in {tmp_path / 'runs' / 'gan'} (`genzoo status`: incomplete): "
        f"`genzoo train --family gan --profile short --params {pfile}` makes it again"
        in capsys.readouterr().err
    )
    assert cli.main(["sample", "--family", "gan", "--out", str(tmp_path / "s"), *short, *base]) == 2
    assert f"no weights at {weights} (model.json names them)" in capsys.readouterr().err
    weights.with_suffix(".bak").rename(weights)
    good = weights.read_bytes()
    weights.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    assert gan_state(*short).startswith("damaged (model.safetensors does not match the sha256")
    weights.write_bytes(good)
    # an edited model.json: status says damaged (it said "not trained" beside the weights), and a
    # command loading it refuses in one line (tracebacks of JSON, torch or pydantic, exit 1)
    config = meta_file.read_text()
    meta_file.write_text("[" + config[1:])
    assert gan_state(*short) == "damaged (model.json cannot be read as a model config: train it again)"
    out = ["--out", str(tmp_path / "s")]
    assert cli.main(["sample", *base, "--family", "gan", "--n", "2", *out]) == 2
    assert f"{meta_file}: not a model config, unreadable as JSON" in capsys.readouterr().err
    built = "its spec or net do not build the network its weights are of (size mismatch for "
    edited = {("spec", "num_classes", 3): built, ("net", "hidden", 16): built,
              ("net", "latent_dim", -1): "its spec or net is not a gan model's (latent_dim",
              ("family", None, "nosuch"): "family 'nosuch' is not one of ddpm, gan, "}  # fmt: skip
    for (key, sub, value), said in edited.items():
        meta_file.write_text(json.dumps({**meta, key: {**meta[key], sub: value} if sub else value}))
        assert cli.main(["sample", *base, "--family", "gan", "--n", "2", *out]) == 2, key
        err = capsys.readouterr().err
        assert err.startswith(f"genzoo sample: error: {meta_file}: {said}"), err
        assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.npz").exists(), err
        # and status says so (it said "up to date": the fingerprint and the weights' hash hold)
        state = gan_state(*short)
        assert state.startswith(f"damaged (model.json: {said.split(' (')[0]}"), (key, state)
        assert state.endswith(": train it again)"), (key, state)
        assert gan_state().endswith(": train it again with --profile short)")  # not a default training
    # weights that are a pickle, their sha256 recorded again: no safetensors file, said so
    torch.save({"w": torch.zeros(1)}, tmp_path / "s.pt")
    meta_file.write_text(json.dumps({**meta, "sha256": sha256_file(tmp_path / "s.pt")}))
    weights.rename(weights.with_suffix(".bak"))
    (tmp_path / "s.pt").rename(weights)
    state = gan_state(*short)
    assert state.startswith("damaged (model.safetensors is not a safetensors file: "), state
    assert state.endswith(": train it again)"), state
    # as it says: genzoo train loads it before taking it for current (it said "up to date, not
    # retrained" and kept it damaged), and makes it anew
    assert cli.main(["train", *base, "--family", "gan", *short]) == 0
    assert "gan: damaged (model.safetensors is not a safetensors file: " in capsys.readouterr().err
    assert gan_state(*short) == "up to date"
    del_sha = {k: v for k, v in json.loads(meta_file.read_text()).items() if k != "sha256"}
    kept_config = meta_file.read_text()
    meta_file.write_text(json.dumps(del_sha))  # no hash recorded: said so (it said "does not match")
    assert gan_state(*short) == "damaged (model.json records no sha256 of its weights: train it again)"
    meta_file.write_text(kept_config)
    weights.with_suffix(".bak").replace(weights)
    meta_file.write_text("[]")  # JSON, not a config: the skip logic too (an AttributeError traceback)
    assert gan_state(*short).startswith("damaged")
    meta_file.write_text(config)
    # no prepared data (a clone that pulled the models only): said so, not "params or code changed"
    prepared = tmp_path / "prepared"
    prepared.rename(tmp_path / "prepared.bak")
    assert gan_state("--profile", "short") == (
        f"not checked: no prepared data in {prepared} to check it against "
        "(genzoo prepare, or dvc pull prepare)"
    )
    (tmp_path / "prepared.bak").rename(prepared)
    assert cli.main(["prepare", *base, "-o", "data.val_fraction=0.2"]) == 0  # other splits: other data
    capsys.readouterr()
    assert gan_state("--profile", "short") == "stale (trained on other data than the prepared data)"
    # params that name another source than the prepared data's: the data line says so first
    assert cli.main(["status", *base, "-o", "data.source=folder:elsewhere"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "data      prepared from another source than data.source (folder:elsewhere; the next run prepares "
        "that, and retrains what it changes): digits"
    ), out
    # other data params than the prepared data's: said, and `genzoo train` refuses them (it said "up to
    # date (same params, data and code)" and trained nothing, or trained on the data that was there)
    assert cli.main(["status", *base]) == 0
    out = capsys.readouterr().out
    assert "data      prepared with other data params (data.val_fraction: 0.2 -> 0.1; the next run" in out, (
        out
    )
    assert cli.main(["train", "--family", "gan", *base]) == 2
    err = capsys.readouterr().err
    assert (
        "holds data prepared otherwise than these params ask (data.val_fraction: 0.2 -> 0.1); prepare it "
        in err
    )
    assert "first: `genzoo prepare --params" in err, err


@pytest.mark.parametrize("user_value, seen", [(None, "180"), ("7", "7")])
def test_a_first_run_gives_prefects_temporary_server_time_to_build_its_database(tmp_path, user_value, seen):
    """A fresh Prefect home's first temporary server outlasted Prefect's 20 s wait on a 2-core
    machine: every `genzoo` command leaves it 180 s (and no telemetry) unless the
    user set their own, as Prefect itself reads it."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_SERVER_")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    if user_value:
        env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = user_value
    code = (
        "import sys\nfrom genzoo.flows import cli\n"
        "cli.main(['status', '--params', sys.argv[1]])\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings().server\n"
        "print(s.ephemeral.startup_timeout_seconds, s.analytics_enabled)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "params.yaml"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == f"{seen} False"


def test_commands_that_write_the_runs_folder_fail_at_once_while_a_run_holds_it(tmp_path, capsys):
    """Case 15 for the command line: `genzoo run` and every DVC stage hold runs/.pipeline.lock,
    and so does each command that writes there; while another process holds it, each fails at
    once (exit 2, one line naming the folder and the holder's pid) and writes nothing."""
    import yaml

    from genzoo.tasks.config import validate
    from genzoo.tasks.prepare import prepare
    from genzoo.tasks.train import train_family
    from tests.conftest import lock_held, tiny_params

    raw = tiny_params(tmp_path, steps=3, families=["gan", "vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    params = validate(raw)
    prepare(params)
    for f in ("gan", "vae"):  # trained, so that evaluate, usefulness and detect get as far as the lock
        train_family(params, f, progress=False)
    runs = tmp_path / "runs"
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with lock_held(runs) as holder:
        held = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
        busy = (
            rf"{re.escape(str(runs))}: another genzoo pipeline is running on this folder \(pid {holder.pid} "
        )
        commands = (
            ["prepare"], ["train", "--family", "gan"], ["evaluate"], ["augment", "--families", "gan"],
            ["usefulness", "--families", "gan"], ["report"], ["detect", "--family", "vae", "--benchmark"],
            ["run", "--no-dvc"],  # before Prefect starts: no failed flow run, no engine traceback
            # a model stale under these params: the lock's one line, without the stale warning first
            ["usefulness", "--families", "gan", "-o", "models.gan.train.lr=0.0001"],
            ["evaluate", "-o", "models.gan.train.lr=0.0001"],
            ["detect", "--family", "vae", "--benchmark", "-o", "models.vae.train.lr=0.0001"],
        )  # fmt: skip
        for argv in commands:
            assert cli.main([*argv, "--params", str(pfile), "-q"]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and re.fullmatch(
                rf"genzoo {argv[0]}: error: {busy}since [\d-]+ [\d:]+\); .+", err[0]
            ), err
        assert sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == held
    assert {p for p, _ in held} - {p for p, _ in before} == {
        runs.relative_to(tmp_path) / ".pipeline.holder",
        runs.relative_to(tmp_path) / ".pipeline.lock",
    }
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0  # once it is gone


def test_a_tracked_command_fails_at_once_when_the_tracking_server_does_not_answer(
    tmp_path, capsys, monkeypatch
):
    """Case 17 outside `genzoo run`: `genzoo train` (and every stage that logs to MLflow: their
    first client asks once per process) with a tracking server that does not answer exits 2 with
    one line naming it, before any training, instead of MLflow retrying each call for minutes."""
    import yaml

    from genzoo.tasks import tracking
    from tests.conftest import tiny_params
    from tests.test_services import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    raw = tiny_params(tmp_path, steps=3, families=["gan"])
    raw["run"]["track"] = True
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    assert cli.main(["prepare", "--params", str(pfile), "-q"]) == 0  # prepare logs nothing to MLflow
    capsys.readouterr()
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"genzoo train: error: MLflow tracking server {uri} is unreachable"
    )
    assert not (tmp_path / "runs" / "gan").exists() and not (tmp_path / "ckpt").exists()
    with pytest.raises(ConnectionError, match="is unreachable"):  # asked again: a failure is not remembered
        tracking.client()
    # a scheme MLflow has no store for (htp://, a typo): one line too, in train and in sample
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.replace("http", "htp"))
    for argv in (
        ["train", "--family", "gan"],
        ["sample", "--model", "models:/gan/1", "--out", str(tmp_path / "s")],
    ):
        assert cli.main([*argv, "--params", str(pfile), "-q"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        said = f"error: MLFLOW_TRACKING_URI={uri.replace('http', 'htp')}: MLflow has no store for htp:// URIs"
        assert len(err) == 1 and said in err[0], err


@pytest.mark.parametrize("command", ["train", "sample"])
def test_ctrl_c_is_one_line_and_exit_130_not_a_traceback(
    command, tmp_path, monkeypatch, capsys, restore_logging
):
    from tests.conftest import tiny_params

    def interrupted(args):
        raise KeyboardInterrupt

    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp_path, families=["vae"])))
    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    out = ["--out", "x"] if command == "sample" else []
    argv = [command, "--family", "vae", "--params", str(pfile), *out]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    left = {  # (no checkpoint made: none to name)
        "train": "; no checkpoint yet (one every 10 steps): the same command starts it again",
        "sample": "",
    }
    assert err.strip() == f"genzoo {command}: interrupted" + left[command]
    # a params file that does not load (so no checkpoint to name): the plain line still comes
    assert cli.main([*argv[:3], "--params", str(tmp_path / "missing.yaml"), *argv[5:]]) == 130
    plain = f"genzoo {command}: interrupted" + cli.INTERRUPTED.get(command, "")
    assert capsys.readouterr().err.strip() == plain


def test_families_describes_each_in_a_whole_sentence(capsys):
    """`genzoo families`: one line per family, its model file's first sentence whole (the first
    line of a wrapped docstring stopped mid-phrase: "... with a projection")."""
    assert cli.main(["families"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert {"ddpm", "gan", "pixelcnn", "realnvp", "vae"} <= {line.split()[0] for line in lines}
    assert all(line.endswith(".") for line in lines), lines
    gan = next(line for line in lines if line.startswith("gan"))
    assert "projection discriminator" in gan and gan.endswith("and the hinge loss.")


def test_sample_takes_one_model(capsys):
    """`--family` and `--model` together: refused by argparse (the model was silently --model's),
    and by the `sample` flow (its deployment's form) before anything is loaded."""
    from genzoo.flows.pipeline import sample

    for both in ({"family": "vae", "model": "models:/vae/1"}, {}):
        with pytest.raises(ValueError, match=r"give family .* or model .*, one"):
            sample.fn(**both)
    with pytest.raises(SystemExit) as e:
        cli.main(["sample", "--family", "vae", "--model", "x/model.json"])
    assert e.value.code == 2
    assert "argument --model: not allowed with argument --family" in capsys.readouterr().err


def test_an_unknown_option_is_refused_by_its_commands_parser_with_the_option_meant(capsys):
    """`genzoo evaluate --familly vae` printed genzoo's top-level usage and no hint: now the
    command's (the judge action's) usage and the nearest option, exit 2, before any work."""
    for argv, usage, line in (
        (["evaluate", "--familly", "vae"], "usage: genzoo evaluate",
         "genzoo evaluate: error: unrecognized arguments: --familly vae; --familly: did you mean --family?"),
        (["evaluate", "--no-reprt", "-q"], "usage: genzoo evaluate",
         "unrecognized arguments: --no-reprt; --no-reprt: did you mean --no-report?"),
        (["judge", "results", "s", "--repz=3"], "usage: genzoo judge results",
         "unrecognized arguments: --repz=3; --repz: did you mean --reps?"),
        (["status", "--bogus", "x"], "usage: genzoo status",
         "genzoo status: error: unrecognized arguments: --bogus x"),
        (["augment", "--out", "mine"], "usage: genzoo augment",  # sample's word: where augment's goes
         "give --name NAME, and -o augment.out_dir=DIR for the folder above it"),
        # where --family is required, argparse said only that it is missing
        (["interpolate", "--familly", "vae"], "usage: genzoo interpolate",
         "the following arguments are required: --family; --familly: did you mean --family?"),
        (["train", "--familly=vae"], "usage: genzoo train",
         "one of the arguments --family --all is required; --familly: did you mean --family?"),
        (["interpolate"], "usage: genzoo interpolate",
         "genzoo interpolate: error: the following arguments are required: --family"),
        (["interpolate", "--", "--familly"], "usage: genzoo interpolate",  # after --: a value
         "genzoo interpolate: error: the following arguments are required: --family"),
        (["arithmetic", "--ind", "3", "--to", "2"], "usage: genzoo arithmetic",  # --index, abbreviated
         "genzoo arithmetic: error: the following arguments are required: --family"),
    ):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(usage) and err.strip().endswith(line), err


def test_a_ranking_shows_ties_as_ties():
    """`judge results` printed "pixelcnn +0.44 > realnvp +0.44": equal strengths as shown are '='."""
    line = cli.ordered({"gan": 0.011, "pixelcnn": 0.441, "realnvp": 0.438, "ddpm": 0.012})
    assert line == "pixelcnn +0.44 = realnvp +0.44 > ddpm +0.01 = gan +0.01"
    assert cli.ordered({"vae": -0.2}) == "vae -0.20"


def test_after_a_double_dash_nothing_is_taken_for_a_misspelt_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["status", "--", "--jsn"])
    assert capsys.readouterr().err.strip().endswith("unrecognized arguments: -- --jsn")


def test_holdout_takes_class_names_as_class_does(tmp_path, capsys):
    """`detect --benchmark --holdout` took indices only, where `sample --class` takes the data's class
    names too: a name of the prepared data's classes is its index; a name it lacks is said with the
    classes (and the near one); a name before any prepare says where the names come from."""
    import json
    from argparse import Namespace

    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, families=["vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))

    def indices(*given: str) -> list[int]:
        return cli._holdout_indices(
            Namespace(params=str(pfile), overrides=[], profile=None, holdout=list(given))
        )

    with pytest.raises(
        cli.UsageError, match=r"--holdout cat: a class name, but no prepared data in .* names"
    ):
        indices("cat")
    assert indices("3", "0", "+1") == [3, 0, 1]  # indices need no names
    with pytest.raises(cli.UsageError, match="--holdout ²: a class name"):  # (a digit int() does not read)
        indices("²")
    prepared = Path(raw["data"]["prepared_dir"])
    prepared.mkdir(parents=True)
    (prepared / "manifest.json").write_text(json.dumps({"class_names": ["cat", "dog", "7"]}))
    assert indices("dog", "0", "7") == [1, 0, 2]  # a name first, as --class reads it
    (prepared / "manifest.json").write_text(
        json.dumps({"class_names": ["cat", "dog", "7"], "num_classes": 3})
    )
    for bad in ("3", "-1"):  # out of range: said before the busy folder's lock is even tried
        with pytest.raises(
            cli.UsageError, match=rf"--holdout: {bad} is not a class of the data \(classes 0-2\)"
        ):
            indices(bad)
    from genzoo.tasks.layout import exclusive

    with exclusive(tmp_path / "runs"):  # a pipeline writing the folder: the bad class first, not "busy"
        argv = ["detect", "--family", "vae", "--benchmark", "--holdout", "12", "--params", str(pfile)]
        assert cli.main(argv) == 2
    assert (
        "genzoo detect: error: --holdout: 12 is not a class of the data (classes 0-2)"
        in capsys.readouterr().err
    )
    near = r"--holdout Dog: not a class name or index; classes: cat, dog, 7; did you mean dog\?"
    with pytest.raises(cli.UsageError, match=near):
        indices("Dog")


def test_an_error_names_the_flag_that_set_the_key():
    """`genzoo detect --benchmark --holdout 12` said `detect.holdout_classes: 12 is not a class`: the
    key the flag sets, which the user never typed. A key set by -o (no flag given) stays named."""
    from argparse import Namespace

    line = "detect.holdout_classes: 12 is not a class of the data (classes 0-9)"
    assert cli.as_given(line, Namespace(command="detect", holdout=[12])) == (
        "--holdout: 12 is not a class of the data (classes 0-9)"
    )
    assert cli.as_given(f"invalid params: {line}", Namespace(command="detect", holdout=[12])).startswith(
        "--holdout: 12 is not"
    )
    assert cli.as_given(line, Namespace(command="detect", holdout=None)) == line
    mine = "out=x: x.npz exists and is not a draw of genzoo sample"  # the UI form's word: its parameter
    assert (
        cli.as_given(mine, Namespace(command="sample", out="x"))
        == "--out x: x.npz exists and is not a draw of genzoo sample"
    )
    rows = "invalid params:\n  detect.holdout_classes.0: Input should be >= 0\n  seed: bad"  # rows, an item
    assert cli.as_given(rows, Namespace(command="detect", holdout=[-1])) == (
        "invalid params:\n  --holdout: Input should be >= 0\n  seed: bad"
    )
    formats = "augment.formats.1: Input should be 'npz', 'imagefolder' or 'hf' (got 'zip')"
    assert cli.as_given(formats, Namespace(command="augment", formats="npz,zip")).startswith(
        "--formats: Input"
    )
    aug = "augment.per_class: Input should be greater than 0 (got 0); augment.seed: bad"
    assert cli.as_given(aug, Namespace(command="augment", per_class=0, seed=None)) == (
        "--per-class: Input should be greater than 0 (got 0); augment.seed: bad"
    )


def test_sigterm_stops_genzoo_train_as_ctrl_c_does(tmp_path, monkeypatch, capsys, restore_logging):
    """`kill` on a `genzoo train` ended it at once, without a line, its MLflow run left RUNNING
    until the next training: it stops as Ctrl+C does (the training's KeyboardInterrupt marks its
    run KILLED and keeps the last checkpoint), one line, exit 130; the handler is put back."""
    import os
    import signal
    import time

    import yaml

    from tests.conftest import tiny_params

    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp_path, families=["gan"])))
    reached = []

    def killed(*args, **kwargs):
        reached.append(signal.getsignal(signal.SIGTERM))
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # (the signal's KeyboardInterrupt ends this at once)
        return 0

    monkeypatch.setattr(cli, "_train", killed)
    monkeypatch.setattr("genzoo.tasks.train.check_outputs", lambda params: None)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--family", "gan", "--params", str(pfile), "-q"]) == 130
    assert capsys.readouterr().err.strip() == (  # (no data prepared: no checkpoint could be made)
        "genzoo train: interrupted; no checkpoint yet (one every 10 steps): the same command starts it again"
    )
    assert reached and reached[0] is not before and signal.getsignal(signal.SIGTERM) is before


def test_a_judge_actions_error_names_the_action(tmp_path, capsys, restore_logging):
    """`genzoo judge results` said `genzoo judge: error: ...`; argparse's own errors name the action
    (`genzoo judge results: error:`), and README's rule is `genzoo <command>: error:`."""
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert cli.main(["judge", "results", "s1", "--db", missing]) == 2
    assert capsys.readouterr().err.startswith("genzoo judge results: error: no study database at ")
    assert not (tmp_path / "none.db").exists()


def test_a_hint_repeats_the_users_params_file_and_overrides_not_those_a_command_adds(tmp_path):
    """A hint naming a command keeps the command's --params and -o's (quoted for the shell); an -o
    the command adds itself (`detect --holdout zero`'s detect.holdout_classes) is not repeated: a
    `genzoo run` with it would train without that class."""
    import argparse

    import yaml

    from tests.conftest import tiny_params

    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp_path, families=["vae"])))
    added = ["detect.holdout_classes=[2]"]
    args = argparse.Namespace(
        params=pfile,
        overrides=["seed=1", "usefulness.recipes=[plain]", *added],
        added_overrides=added,
        profile=None,
        command="detect",
        family="vae",
    )
    params = cli._params(args)
    assert params.detect.holdout_classes == [2] and params.seed == 1
    assert params.command("run") == f"genzoo run --params {pfile} -o seed=1 -o 'usefulness.recipes=[plain]'"


def test_status_reads_damaged_and_half_written_outputs_without_a_traceback(tmp_path, capsys):
    """`genzoo status` on files edited into another shape (valid JSON that is not a record), a
    model.json removed beside its weights, a family whose block left params, a run in progress
    beside a checkpoint: a state each, with a one-word ``code`` and strict JSON (no NaN)."""
    import json
    import math
    import shutil

    from genzoo.tasks.layout import exclusive
    from tests.conftest import tiny_params

    raw = tiny_params(tmp_path, steps=3, families=["gan", "vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    base = ["--params", str(pfile)]
    assert cli.main(["prepare", "-q", *base]) == 0
    assert cli.main(["train", "--family", "gan", "-q", *base]) == 0
    capsys.readouterr()
    gan = tmp_path / "runs" / "gan"
    good = {p.name: p.read_bytes() for p in gan.iterdir()}

    def status(params=base) -> dict:
        assert cli.main(["status", "--json", *params]) == 0
        out = capsys.readouterr().out

        def no_nan(name):
            raise AssertionError(f"not strict JSON: {name}")

        return json.loads(out, parse_constant=no_nan)

    def row(st: dict, family: str = "gan") -> tuple[str, str]:
        (r,) = [r for r in st["families"] if r["family"] == family]
        return r["code"], r["state"]

    assert row(status()) == ("up_to_date", "up to date") and row(status(), "vae")[0] == "not_trained"
    (gan / "metrics.json").write_text(json.dumps({**json.loads(good["metrics.json"]), "test_bpd": "n/a"}))
    assert cli.main(["status", *base]) == 0 and "gan       up to date" in capsys.readouterr().out
    metrics = json.loads(good["metrics.json"])
    (gan / "metrics.json").write_text(json.dumps({**metrics, "test_bpd": math.nan, "mlflow": None}))
    assert row(status())[0] == "up_to_date"  # NaN -> null, no MLflow record: none shown
    assert cli.main(["status", *base]) == 0 and "mlflow run" not in capsys.readouterr().out
    (gan / "metrics.json").write_text("[]")
    code, state = row(status())
    assert code == "incomplete" and state.startswith("incomplete (metrics.json missing or unreadable")
    (gan / "metrics.json").write_bytes(good["metrics.json"])
    (gan / "model.json").unlink()
    code, state = row(status())
    assert code == "incomplete" and state.startswith("incomplete (model.json missing, model.safetensors")
    (gan / "model.json").write_text("[]")
    assert row(status()) == (
        "damaged",
        "damaged (model.json cannot be read as a model config: train it again)",
    )
    (gan / "model.json").write_bytes(good["model.json"])
    # its block removed from params: still listed, as not in params
    alone = tmp_path / "vae-only.yaml"
    alone.write_text(yaml.safe_dump({**raw, "models": {"vae": raw["models"]["vae"]}}))
    code, state = row(status(["--params", str(alone)]))
    assert code == "not_in_params" and "runs/gan holds a model of it: add a models.gan block" in state
    # the prepared data's manifest edited into another shape: said, every family not checked
    manifest = tmp_path / "prepared" / "manifest.json"
    kept = manifest.read_bytes()
    for bad in ('{"source": "digits"}', "[]"):
        manifest.write_text(bad)
        st = status()
        assert st["data"]["state"].startswith("damaged (manifest.json is not a prepared folder's")
        assert row(st)[0] == "not_checked" and row(st, "vae")[0] in ("not_checked", "not_trained"), st
    manifest.write_bytes(kept)
    # outputs gone, the finished training's checkpoint kept; then a command holding the folder
    shutil.rmtree(gan)
    assert row(status())[1].startswith("not trained: its outputs are missing, its checkpoint at step 3")
    with exclusive(tmp_path / "runs"):
        assert row(status()) == (
            "not_trained",
            "not trained yet (the command running now may be training it: its last checkpoint is at step 3)",
        )
    checkpoints = list((tmp_path / "ckpt").rglob("step-*.pt"))
    for pt in checkpoints:  # an index naming files that are gone
        pt.unlink()
    assert checkpoints
    assert row(status()) == ("not_trained", "not trained")


def test_options_take_home_paths_lists_with_blanks_and_refuse_what_would_be_ignored(
    tmp_path, capsys, monkeypatch
):
    """`--out=~/x` and `-o run.runs_dir=~/runs` (no shell expands `~` after `=`) are the home
    folder's; `--formats "npz, imagefolder"` reads two formats; an empty `--families` is refused
    as for every command; `serve --profile` (each run's form chooses) and `judge results --reps 0`
    are refused before anything; `evaluate --family vae` with vae untrained names it."""
    import subprocess
    import sys

    from tests.conftest import tiny_params

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    raw = tiny_params(tmp_path, steps=3, families=["gan", "vae"])
    (tmp_path / "home" / "params.yaml").write_text(yaml.safe_dump(raw))
    base = ["--params=~/params.yaml"]
    assert cli.main(["prepare", "-q", *base]) == 0
    assert cli.main(["train", "--family", "gan", "-q", *base, "-o", "run.runs_dir=~/runs"]) == 0
    assert (tmp_path / "home" / "runs" / "gan" / "model.json").is_file()
    drawn = ["sample", "--family", "gan", "--n", "2", "-q", *base, "-o", "run.runs_dir=~/runs"]
    assert cli.main([*drawn, "--out=~/drawn"]) == 0
    assert (tmp_path / "home" / "drawn.npz").is_file() and not Path("~").exists()
    assert cli._listed(" npz, imagefolder ,", "--formats") == ["npz", "imagefolder"]
    for argv, said in (
        (["augment", "--families", "gan", "--formats", " , "], "--formats: none given"),
        (["usefulness", "--families", ""], "--families: none given"),
        (["serve", "--profile", "quick"], "genzoo serve takes no --profile: each run chooses its profile"),
        (["serve", "-o", "train.steps=5"], "genzoo serve takes no -o:"),
        (["judge", "results", "--reps", "0"], "--reps: expected bootstrap replicates from 10 to"),
        (["evaluate", "--family", "vae", "-o", "run.runs_dir=~/runs"],
         f"{tmp_path / 'home' / 'runs' / 'vae' / 'model.json'}: vae is not trained (genzoo train --family "),
    ):  # fmt: skip
        assert cli.main([*argv, *base]) == 2, argv
        assert said in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):  # nor does its help offer them
        cli.main(["serve", "--help"])
    shown = capsys.readouterr().out
    assert "--port" in shown and "--profile" not in shown and "KEY=VALUE" not in shown
    assert "in its form in the Prefect UI" in shown

    # a broken pipe of something else (a server's socket), stdout fine: an error, not a silent 141
    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "cmd_families", broken)
    with pytest.raises(BrokenPipeError):
        cli.main(["families"])
    monkeypatch.undo()
    # a reader that goes away (`| head`): exit 141, as for any Unix tool, no traceback
    genzoo = Path(sys.executable).parent / "genzoo"
    p = subprocess.Popen([str(genzoo), "families"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait() == 141 and "Traceback" not in err and "Exception" not in err, err
