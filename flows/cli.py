"""The ``genzoo`` command line."""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import difflib
import json
import logging
import os
import re
import signal
import sys
import threading
from pathlib import Path

from genzoo.tasks.errors import ModelNotFound, UsageError, check_output_files, user_error

EPILOG = """examples:
  genzoo prepare                                  # data/prepared from params.yaml (digits)
  genzoo train --family vae                       # runs/vae/: model, samples.png, loss.png
  genzoo train --family ddpm -o models.ddpm.train.steps=200
  genzoo sample --family pixelcnn --n 64 --class 3 --out samples/threes
  genzoo run --profile quick                      # the pipeline (Prefect + Ray), every family
  genzoo status                                   # what is trained, current or stale, MLflow run
  genzoo serve                                    # Prefect UI on http://127.0.0.1:4200 + deployments
  genzoo augment --families ddpm,vae --per-class 50 --name mix   # data/augment/mix/images.npz
  genzoo augment --families best --min-confidence 0.9 --formats npz,imagefolder,hf  # filtered; + Hugging Face
  genzoo evaluate                                 # sample quality of what is trained + the report
  genzoo report                                   # runs/report/index.html from the evaluation
  genzoo detect --family pixelcnn images/         # flag unlikely images (.npz or folder)
  genzoo usefulness --families gan,vae            # does synthetic data help a classifier?
  genzoo interpolate --family vae --a 3 --b 17    # latent paths, linear and spherical (PNG + npz)
  genzoo arithmetic --family realnvp --index 5 --to 8   # a digit's code moved toward class 8
  genzoo judge create --name s1 --raters 3        # a human study: real vs generated, a link per rater
  genzoo judge serve                              # the rating pages on http://127.0.0.1:8400
  genzoo judge results s1                         # HYPE error per family -> runs/evaluation/human/s1.json
"""


def _common(p: argparse.ArgumentParser, settings: bool = True) -> None:
    """The options every command takes; ``settings=False``: --profile and -o left out of its help
    (parsed still, for the command to refuse them saying where they go instead)."""
    p.add_argument("--params", type=_path, default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument(
        "--profile",
        help="named override set from the params file's `profiles` block, e.g. quick"
        if settings
        else argparse.SUPPRESS,
    )
    p.add_argument(
        "-o",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param by its dotted path (repeatable), e.g. -o models.vae.net.latent_dim=8"
        if settings
        else argparse.SUPPRESS,
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="also the HTTP requests of Prefect's client and the like"
    )


def _params(args):
    """The params of ``args`` (file, profile, -o's); an override a family's own key shadows is said
    for the family the command uses (``--family``), not for every one."""
    from genzoo.tasks.config import load_params

    family = getattr(args, "family", None)
    families = [family] if family and args.command != "sample" else None
    # sample says of every -o that it changes nothing there; run's flow says it (of --families)
    warn = args.command not in ("sample", "run")
    added = getattr(args, "added_overrides", [])  # (--holdout's): not the user's to repeat in a hint
    params = load_params(args.params, args.overrides, args.profile, warn=warn, families=families,
                         hinted=[o for o in args.overrides or [] if o not in added])  # fmt: skip
    if _IN_MAIN.get():  # the hints of checks that know no params (the prepared data's) repeat these
        params.advising()
        _read_elsewhere(Path(args.params), params)
    return params


def _check_source(params) -> None:
    """An ``npz:`` or ``folder:`` source that is not there, or a folder holding what the prepare
    stage refuses (a file that is no image in a class folder, a link into another class), fails
    with the error that stage would give, naming ``data.source``. The folder is listed, no image
    is opened: those the stage cannot read it names all at once."""
    from genzoo.tasks.data import DataError, folder_images, require_npz

    kind, _, path = params.data.source.partition(":")
    where = Path(os.path.expanduser(path))  # as the stage reads it (tasks/prepare.py: load_source)
    try:
        if kind == "npz":
            require_npz(where)
        elif kind == "folder":
            folder_images(where, say=False)
    except DataError as e:
        raise DataError(f"data.source: {e}") from None


def _read_elsewhere(pfile: Path, params) -> None:
    """Warn where a params file from another folder names relative folders that its own folder
    holds and the current one does not: they are read from the current folder (as DVC and
    ``dvc.yaml`` read them), so its data and models would look missing, or be made again here."""
    here, there = Path.cwd(), Path(os.path.abspath(pfile.expanduser())).parent  # (a link: where it is)
    if there.resolve() == here.resolve():
        return
    folders = (params.data.prepared_dir, params.run.runs_dir, params.run.checkpoints_dir)
    held = [
        f for f in folders if not Path(f).is_absolute() and (there / f).exists() and not (here / f).exists()
    ]
    if held:
        logging.getLogger("genzoo").warning(
            "%s's folders are read from the current folder, %s; they are in %s (%s): to use them, "
            "run genzoo there (cd %s)", pfile, here, there, ", ".join(held), there,
        )  # fmt: skip


def _holding(params):
    """The run lock on ``run.runs_dir`` (``tasks/layout.py: exclusive``), which `genzoo run` and
    every DVC stage hold too: a command that writes there fails at once, naming the holder,
    while another run writes the same folder."""
    from genzoo.tasks.layout import exclusive

    return exclusive(params.run.runs_dir)


def cmd_prepare(args) -> int:
    from genzoo.tasks.prepare import prepare

    params = _params(args)
    with _holding(params):
        m = prepare(params)
    print(
        json.dumps(
            {
                "source": m["source"],
                "shape": m["shape"],
                "levels": m["levels"],
                "splits": {s: v["n"] for s, v in m["splits"].items()},
            }
        )
    )
    return 0


def _seed(text: str) -> int:
    """A ``--seed``: an integer in [0, 2**31 - 1], as params.yaml's seeds (-1 and 2**32 - 1 drew
    the same images)."""
    from genzoo.tasks.config import MAX_SEED

    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{seed} is not in [0, {MAX_SEED}]")
    return seed


def _train(params, families, quiet, parent_run_id=None) -> int:
    from genzoo.tasks.train import check_data, close_stale_runs, train_family, up_to_date

    for fam in families:  # every family's, before any MLflow or training work
        check_data(params, fam)
    close_stale_runs(params)  # the caller holds the run lock
    for fam in families:
        if (m := up_to_date(params, fam, loads=True)) is not None:  # as `genzoo run` and `dvc repro` skip it
            logging.getLogger("genzoo.train").warning(
                "%s: up to date (same params, data and code), not retrained (to train it anew, delete %s "
                "and its checkpoints, %s: a run resumes from them)",
                fam, Path(params.run.runs_dir) / fam, Path(params.run.checkpoints_dir) / fam,
            )  # fmt: skip
        else:
            m = train_family(params, fam, progress=not quiet, parent_run_id=parent_run_id)
        shown = {
            k: m[k]
            for k in ("family", "steps", "train_seconds", "test_bpd", "bpd_estimator", "samples_per_second")
            if k in m
        }
        if "mlflow" in m:
            shown["model_uri"] = m["mlflow"]["model_uri"]
        print(json.dumps(shown))
    return 0


def _check_device(params, families: list[str] | None = None) -> None:
    """``run.device`` names a device this machine has, and each of ``families`` (default: all)
    asks for a GPU only where there is one (else a ParamsError naming the key)."""
    from genzoo.tasks.layout import resolve_device, training_device

    resolve_device(params.run.device)
    for family in params.families if families is None else families:
        training_device(params, family)


def cmd_train(args) -> int:
    params = _params(args)
    families = params.families if args.all else [args.family]
    if not args.all:
        params.require(args.family)
    _check_device(params, families)  # before an MLflow run or a folder is made
    from genzoo.tasks.train import check_outputs

    check_outputs(params)  # where it writes, before the lock and the data: not "run genzoo prepare" first
    with _holding(params), sigterm_stops():
        return _train(params, families, args.quiet)


@contextlib.contextmanager
def sigterm_stops():
    """SIGTERM (`kill`, a service manager, a CI's timeout) stops like Ctrl+C, for the block's time:
    `genzoo train`'s MLflow run is marked KILLED and its last checkpoint kept, said in one line (it
    ended the process at once, its run left RUNNING until the next training); `genzoo serve` stops
    its Prefect server. A SIGTERM the caller ignores stays ignored."""
    if threading.current_thread() is not threading.main_thread():  # (signals: main thread only)
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        if previous is not signal.SIG_IGN:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def cmd_run(args) -> int:
    """The whole pipeline as the Prefect flow (Ray fan-out, MLflow, dvc commit): its stages and
    each family's progress in the log, then the table of figures (or ``--json``)."""
    from genzoo.tasks.config import did_you_mean

    params = _params(args)  # a bad params file or override fails here, before Prefect starts
    families = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    families = None if families is None else list(dict.fromkeys(families))  # each once
    unknown = [f for f in families or [] if f not in params.models]
    if families == []:
        raise UsageError(f"--families: none given (families: {', '.join(params.families)})")
    if unknown:
        raise UsageError(
            f"--families: {', '.join(unknown)} not in params (families: {', '.join(params.families)}"
            f"{did_you_mean(unknown, params.families)})"
        )
    with _holding(params):  # a run holds the folder already: one line now, not a failed flow run
        pass
    from genzoo.tasks.augment import check_target
    from genzoo.tasks.errors import check_output_dir
    from genzoo.tasks.formats import check_formats
    from genzoo.tasks.layout import check_outside_source

    # every folder the run writes, as its stage will check it: one line now, not a failed stage
    check_output_dir(params.data.prepared_dir, "data.prepared_dir")  # (replaced whole)
    check_outside_source(params)  # genzoo's files in the image folder: said before what it holds
    _check_source(params)  # the run's first stage reads it: a typo fails now, not after Prefect and Ray
    check_output_dir(params.run.checkpoints_dir, "run.checkpoints_dir", into=True)
    check_target(params.augment.out_dir, params.augment.name)  # (the dataset's folder, the last stage)
    check_formats(params.augment.formats)  # (its formats' extras: hf needs datasets)
    from genzoo.flows.serve import temporary_server

    # no Ray call may start or join a Ray by itself (ray's auto-init): a stage's thread still
    # waiting as an interrupted run shuts its Ray down would join a stale one, or hang
    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
    prefect_ready = temporary_server()  # starts while the imports and checks below run
    from genzoo.flows.pipeline import pipeline

    if address := (args.ray_address or params.ray.address or os.environ.get("RAY_ADDRESS") or "").strip():
        from genzoo.flows.cluster import check_reachable

        check_reachable(address)  # the flow checks it too; here it fails before Prefect starts
    else:
        _check_device(params, families)  # a local Ray trains here; a cluster's workers have their own devices
    if params.run.track:  # the flow checks it too; here it fails before Prefect and Ray start
        from genzoo.tasks import tracking

        tracking.preflight()
    if not args.no_dvc:  # the same for the DVC remote, when the run will be recorded in DVC
        from genzoo.flows.pipeline import _dvc_matches, dvc_remote_preflight

        if _dvc_matches(params, args.params, list(args.overrides or []), args.profile):
            dvc_remote_preflight()
    if not args.verbose:  # the flow's stages tell what the stage modules do; keep one line of each
        logging.getLogger("genzoo").setLevel(logging.WARNING)
        if not args.quiet:
            logging.getLogger("genzoo.cluster").setLevel(logging.INFO)  # where the families run
    if prefect_ready() is None:  # the user's Prefect server (PREFECT_API_URL, a profile), if any, answers
        from genzoo.flows.serve import check_api

        check_api()
    from genzoo.flows import cluster

    def interrupt(signum, frame):  # Ctrl-C: the Ray tasks cancelled, the waits on them ended
        first = not cluster.STOP.is_set()
        cluster.interrupt()
        if first:  # a second Ctrl-C must not cut short the unwinding (the waits ending, Ray's shutdown)
            signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        # checked above against the params file given, whose profiles may not be the project's
        # (the flow's pick list): Prefect need not check the parameters again
        result = pipeline.with_options(validate_parameters=False)(
            params_file=args.params,
            families=families,
            overrides=args.overrides,
            profile=args.profile,
            ray_address=args.ray_address,
            record_dvc=not args.no_dvc,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
        cluster.STOP.clear()
    print(json.dumps(run_summary(result)) if args.json else format_run(result))
    return 0


def run_summary(result: dict) -> dict:
    """The machine-readable summary of a pipeline run (``genzoo run --json``)."""
    keep = ("steps", "train_seconds", "test_bpd", "bpd_estimator", "cached", "host", "ray_node")
    summary = {f: {k: m[k] for k in keep if k in m} for f, m in result["trained"].items()}
    for f, q in result.get("evaluate", {}).items():
        summary[f].update(fd=q["fd"], fd_ci95=q["fd_ci95"], precision=q["precision"], recall=q["recall"])
        if "class_accuracy" in q:
            summary[f]["class_accuracy"] = q["class_accuracy"]
    out = {"pipeline_seconds": result["pipeline_seconds"], "families": summary}
    if "report" in result:
        out["report"] = result["report_path"]
        out["targets"] = result["report"]["targets"]
        if "usefulness" in result["report"]:
            out["usefulness"] = result["report"]["usefulness"]
    out |= {k: result[k] for k in ("mlflow_run_id", "mlflow_url") if k in result}
    return out


def format_run(result: dict) -> str:
    """The figures of a pipeline run as a person reads them: one row per family, then where
    the report and the MLflow run are."""
    from genzoo.flows.pipeline import figure_cells, run_places

    header = f"{'family':<10} {'steps':>6} {'train s':>8} {'FD ± 95%':>17} {'precision':>9} {'recall':>7}"
    header += f" {'class acc':>9}  bits/dim"
    lines = [header, "-" * len(header)]
    for f, (steps, train_s, fd, precision, recall, acc, bpd) in figure_cells(result).items():
        cached = "" if not result["trained"][f].get("cached") else "  (up to date)"
        cells = f"{f:<10} {steps:>6} {train_s:>8} {fd:>17} {precision:>9} {recall:>7} {acc:>9}"
        lines.append(f"{cells}  {bpd}{cached}")
    lines += ["", *(f"{k + ':':<11} {v}" for k, v in run_places(result))]
    return "\n".join(lines)


def cmd_sample(args) -> int:
    from genzoo.tasks.layout import resolve_device
    from genzoo.tasks.sample import check_request, class_names, load_model, resolve_class, sample_to_file

    params = _params(args)
    if not args.family and not args.model:
        raise UsageError("give --family F (the model in runs/F) or --model PATH/model.json")
    _a_family_name(args, model_flag=True)
    check_request(args.n, args.out)  # bad input said alone, before any warning about the model
    device = resolve_device(args.device, "--device") if args.device else None  # one line, not a traceback
    current = (
        "; it says whether the model is current with these params" if args.family and not args.model else ""
    )
    for o in args.overrides or []:  # sampling reads where models and data are, nothing else
        key = o.partition("=")[0].strip()
        if key == "run.device":
            logging.getLogger("genzoo.sample").warning(
                "-o %s changes nothing here: --device DEVICE samples on it", o
            )
        elif key not in ("run.runs_dir", "data.prepared_dir") and not (
            current and key.startswith("data.")  # the data the model is checked against: a folder's own
        ):  # (with --family: whether it is current)
            logging.getLogger("genzoo.sample").warning(
                "-o %s does not change the images: a trained model samples with the settings it was "
                "trained with (its model.json; bench/sample_sweep.py samples it with other net settings)%s",
                o, current,
            )  # fmt: skip
    if args.family and not args.model:  # its training command with this command's profile
        from genzoo.tasks.layout import require_trained

        require_trained(params, args.family)
    model = load_model(args.model or args.family, params.run.runs_dir, allow_unhashed=args.allow_unhashed)
    names = class_names(params.data.prepared_dir, model) if args.cls is not None else None
    cls = resolve_class(model, args.cls, names)
    if args.family and not args.model and args.family in params.models:  # as evaluate and augment say it
        from genzoo.tasks.data import read_manifest
        from genzoo.tasks.layout import family_dir, warn_if_stale

        # only where there is something to compare: prepared data (a `dvc pull train@F` brings none)
        # and a finished training (metrics.json: none from a training's saving its weights to its end)
        if (
            read_manifest(params.data.prepared_dir, required=False)
            and (family_dir(params, args.family) / "metrics.json").is_file()
        ):
            warn_if_stale(params, args.family, "sampled", logging.getLogger("genzoo.sample"),
                          _other_profiles(args, params))  # fmt: skip
    if device is not None:
        model = model.to(device)
    npz, png = sample_to_file(model, args.n, args.out, cls=cls, seed=args.seed, progress=not args.quiet)
    print(json.dumps({"npz": str(npz), "png": str(png), "n": args.n}))
    return 0


def cmd_serve(args) -> int:
    from genzoo.flows.serve import serve

    if args.profile or args.overrides:  # each run's form has its own (the served flows load the file)
        flag = "--profile" if args.profile else "-o"
        raise UsageError(
            f"genzoo serve takes no {flag}: each run chooses its profile and overrides in its form in the "
            "Prefect UI (Profile, Overrides), or `prefect deployment run ... -p profile=quick`"
        )
    _params(args)  # fail on a bad params file before starting anything
    serve(host=args.host, port=args.port, params_file=args.params)
    return 0


def _other_profiles(args, params) -> dict[str | None, object]:
    """The params file as each of its other profiles than this command's makes it (see
    :func:`layout.other_profiles`)."""
    from genzoo.tasks.layout import other_profiles

    return other_profiles(params, args.params, args.overrides, args.profile)


def _same_profile(args, params, families: list[str], doing: str, **because: str) -> None:
    """Refuse, before any work, to ``doing`` models made under another profile (see
    :func:`layout.same_profile`)."""
    from genzoo.tasks.layout import same_profile

    same_profile(params, families, doing, args.params, args.overrides, args.profile, **because)


def cmd_status(args) -> int:
    from genzoo.tasks.status import format_status, status

    params = _params(args)
    others = {f"--profile {n}" if n else "no --profile": p for n, p in _other_profiles(args, params).items()}
    st = status(params, others)
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return 0


def _listed(text: str, flag: str, choices: str = "") -> list[str]:
    """A comma-separated option's items, blanks around them dropped (``"npz, imagefolder"``); none
    at all is refused, naming ``flag``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"{flag}: none given" + (f" ({choices})" if choices else ""))
    return items


def cmd_augment(args) -> int:
    from genzoo.tasks import layout
    from genzoo.tasks.augment import generate, request

    params = _params(args)
    families = (
        None
        if args.families is None
        else _listed(args.families, "--families", f"families: {', '.join(params.families)}, or best")
    )
    formats = None if args.formats is None else _listed(args.formats, "--formats", "npz, imagefolder, hf")
    req = request(params, families=families, name=args.name, per_class=args.per_class, seed=args.seed,
                  metric=args.metric, min_confidence=args.min_confidence, reject_copies=args.reject_copies,
                  png=args.png, formats=formats,
                  recipe=args.recipe)  # fmt: skip
    # models of another profile (a quick run, then this without --profile): the dataset and its card
    # would say nothing of it, and replace the quick run's own dataset
    named = [f for f in req.families if f != "best"]
    _same_profile(
        args,
        params,
        params.families if "best" in req.families else named,
        "draw a dataset from {it}",
        because=layout.DATASET_BECAUSE,
    )
    with _holding(params):
        path = generate(params, req)
    m = json.loads((path / "manifest.json").read_text())
    print(json.dumps({"path": str(path), "n": m["n"], "families": list(m["families"]),
                      "counts_per_class": m["counts_per_class"], "filters": m["filters"],
                      "formats": m["formats"], "recipe": m["recipe"]["name"]}))  # fmt: skip
    return 0


def cmd_evaluate(args) -> int:
    """The evaluator, then every trained family (or --family), then the report; no Prefect."""
    from genzoo.tasks.evaluate import evaluate_family, evaluator_stage
    from genzoo.tasks.layout import warn_if_stale

    params = _params(args)
    if args.family:
        params.require(args.family)
    families = [args.family] if args.family else params.families
    trained = [f for f in families if (Path(params.run.runs_dir) / f / "model.json").exists()]
    if not trained and args.family:
        raise ModelNotFound(
            f"{Path(params.run.runs_dir) / args.family / 'model.json'}: {args.family} is not trained "
            f"({params.command(f'train --family {args.family}')})"
        )
    if not trained:
        raise ModelNotFound(
            f"nothing to evaluate: no trained family in {params.run.runs_dir} ({params.command('run')})"
        )
    _same_profile(args, params, params.families, "evaluate {it}")  # the evaluator serves every family
    with _holding(params):
        for f in trained:
            warn_if_stale(params, f, "evaluated", logging.getLogger("genzoo.evaluate"))
        ev = evaluator_stage(params)
        print(f"evaluator: test accuracy {ev['test_accuracy']:.4f}")
        for f in trained:
            q = evaluate_family(params, f)
            print(f"{f:>10}: FD {q['fd']:.3f} ± {q['ci95']['fd']:.3f}  precision {q['precision']:.3f}  "
                  f"recall {q['recall']:.3f}  {q['images_per_second']:.0f} images/s")  # fmt: skip
    if not args.no_report:
        return cmd_report(args)
    return 0


def _holdout_indices(args) -> list[int]:
    """``--holdout``'s classes (names of the prepared data's classes, or indices) as indices."""
    from genzoo.tasks.config import did_you_mean, load_params
    from genzoo.tasks.data import read_manifest

    params = load_params(args.params, args.overrides, args.profile, warn=False)
    manifest = read_manifest(params.data.prepared_dir, required=False) or {}
    names, k = manifest.get("class_names"), manifest.get("num_classes")
    out = []
    for given in args.holdout:
        if names and given in names:
            out.append(names.index(given))
            continue
        try:
            index = int(given)  # (as --class reads an index)
        except ValueError:
            index = None
        if index is not None:
            if isinstance(k, int) and not 0 <= index < k:  # now: not after a wait for a busy folder
                raise UsageError(f"--holdout: {given} is not a class of the data (classes 0-{k - 1})")
            out.append(index)
        elif names:
            raise UsageError(f"--holdout {given}: not a class name or index; classes: {', '.join(names)}"
                             f"{did_you_mean([given], names)}")  # fmt: skip
        else:
            raise UsageError(
                f"--holdout {given}: a class name, but no prepared data in {params.data.prepared_dir} names "
                f"its classes ({params.command('prepare')}, or give the class's index)"
            )
    return out


def cmd_detect(args) -> int:
    """Score images by likelihood (flag those above the validation split's threshold), or --benchmark."""
    from genzoo.tasks.detect import check_scorable, detect, run_benchmark

    if args.holdout:
        if not args.benchmark:
            raise UsageError("--holdout needs --benchmark")
        indices = _holdout_indices(args)
        args.added_overrides = [f"detect.holdout_classes={indices}"]
        args.overrides = [*args.overrides, *args.added_overrides]
    scoring = {"PATH": args.path, "--out": args.out, "--quantile": args.quantile}  # your images'
    if args.benchmark and (given := [o for o, v in scoring.items() if v is not None]):
        raise UsageError(
            f"--benchmark scores the test split and the outlier sets it makes (into anomaly.json beside "
            f"the family's quality.json): {', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
            "scoring images of your own, without --benchmark"
        )
    params = _params(args)
    check_scorable(params.require(args.family))
    if args.benchmark:  # anomaly.json beside the run's other figures: only at the run's settings
        from genzoo.tasks.layout import ANOMALY_BECAUSE

        _same_profile(args, params, [args.family], "benchmark {it}", because=ANOMALY_BECAUSE)
        with _holding(params):
            r = run_benchmark(params, args.family)
        _said_if_stale(args, params, "benchmarked", "genzoo.detect")  # a model stale under every profile
        normal, rate = r["normal"], 100 * r["false_alarm_rate"]
        print(f"{args.family} ({r['estimator']} bits/dim): test split {normal['mean_bits_per_dim']:.3f}; "
              f"threshold {r['threshold']:.4f} (quantile {r['quantile']}: a normal image above it "
              f"{rate:.2g}% of the time at most, from {normal['val_n']} validation images)")  # fmt: skip
        for name, st in r["sets"].items():
            print(f"{st.get('label', name):>20}: {st['mean_bits_per_dim']:.3f} bits/dim, AUROC likelihood "
                  f"{st['likelihood']['auroc']:.3f}, typicality {st['typicality']['auroc']:.3f}, "
                  f"likelihood ratio {st['likelihood_ratio']['auroc']:.3f}")  # fmt: skip
        _report_again(args, params)  # its anomaly table
        return 0
    if not args.path:
        raise UsageError("give a PATH (.npz, image file or image folder) or --benchmark")
    if args.out:  # an earlier detect's scores are replaced; a user's file of that name is not
        check_output_files([Path(args.out)], _detect_scores(Path(args.out)), "scores of genzoo detect (JSON)")
    r = detect(params, args.family, args.path, args.quantile)
    _said_if_stale(args, params, "images scored with it", "genzoo.detect")
    if args.out:
        from genzoo.models.base import atomic_write_text

        atomic_write_text(args.out, json.dumps(r, indent=2))
    for row in r["images"]:
        flag = "ANOMALY" if row["anomaly"] else "ATYPICAL" if row["atypical"] else "ok"
        print(f"{row['name']}\t{row['bits_per_dim']:.4f}\t{flag}")
    more = sum(row["atypical"] and not row["anomaly"] for row in r["images"])
    rate = 100 * r["false_alarm_rate"]
    kept = (
        ""
        if r["false_alarm_rate"] <= 1 - r["quantile"] + 1e-12
        else (f"; {r['val_n']} validation images cannot keep {100 * (1 - r['quantile']):.2g}%")
    )
    print(f"# {r['flagged']} of {r['n']} above {r['threshold']:.4f} bits/dim ({r['estimator']}; from the "
          f"validation split for quantile {r['quantile']}: a normal image above it {rate:.2g}% of the time "
          f"at most, on average over validation splits{kept}); {more} more ATYPICAL: further than "
          f"{r['typicality_threshold']:.4f} bits/dim from its mean {r['val_mean_bits_per_dim']:.4f} "
          "(the same rule on its images' distances, about as many again: catches some images too "
          "likely to be the training images' kind, such as blank pages for some families)",
          file=sys.stderr)  # fmt: skip
    return 0


def _detect_scores(path: Path) -> bool:
    """``path`` holds what `genzoo detect --out` writes: a JSON object of a family's scores."""
    try:
        if not path.is_file() or path.is_symlink():
            return False
        with open(path, "rb") as f:  # a JSON object's first byte, before reading a file of any size
            if f.read(64).lstrip()[:1] != b"{":
                return False
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(r, dict) and {"family", "estimator", "threshold", "images"} <= r.keys()


def cmd_usefulness(args) -> int:
    """Does synthetic data help a classifier? The reference rows, then each family (trained
    first on every real subset); figures in runs/evaluation/<family>/usefulness.json."""
    from genzoo.tasks.layout import trained_families, warn_if_stale
    from genzoo.tasks.usefulness import measure_family, reference

    params = _params(args)
    families = trained_families(
        params,
        [f for f in params.usefulness.families if f in params.models]
        if args.families is None
        else args.families,
    )  # (--families "": none given, said)
    _same_profile(args, params, families, "measure {it}")
    if any(p < 1 for p in params.usefulness.fractions):  # generators trained on subsets: where each trains
        _check_device(params, families)
    clfs = params.usefulness.classifiers

    def cell(s: dict) -> str:
        return f"{100 * s['mean']:5.1f} ± {100 * s['ci95']:.1f}"

    with _holding(params):  # a run holding the folder: its one line, before any warning
        for f in families:
            warn_if_stale(params, f, "measured", logging.getLogger("genzoo.usefulness"))
        ref = reference(params)
        for p, per in ref["real"].items():
            print(f"real {100 * float(p):g}%: " + ", ".join(f"{c} {cell(per[c])}" for c in clfs))
        rows = [("pca_kde", ref["pca_kde"])] + [(f, measure_family(params, f)) for f in families]
    for name, r in rows:
        print(f"{name:>10}: train on synthetic " + ", ".join(f"{c} {cell(r['tstr'][c])}" for c in clfs))
        recipes = r.get("recipes") or {params.augment.recipe: r}  # (a file from before recipes)
        for recipe, block in recipes.items():
            named = f" ({recipe})" if len(recipes) > 1 else ""
            for p, per in (block.get("augmentation") or {}).items():
                lifts = ", ".join(
                    f"{c} {100 * per[c]['lift']['mean']:+.1f} ± {100 * per[c]['lift']['ci95']:.1f}"
                    for c in clfs
                )
                print(f"{'':>10}  lift at {100 * float(p):g}% real{named}: {lifts} points")
    from genzoo.tasks.augment import harmful, lift_means
    from genzoo.tasks.layout import evaluation_dir

    for name, r in rows[1:]:  # the dataset's recipe: what a dataset drawn from the family is made with
        if said := harmful(name, lift_means(r), evaluation_dir(params) / name / "usefulness.json"):
            logging.getLogger("genzoo.usefulness").warning("%s", said)
    _report_again(args, params)  # its usefulness table and curve
    return 0


def _a_family_name(args, model_flag: bool = False) -> None:
    """``--family`` names a family (its model in runs/<family>/): a path there was loaded as a
    model with no word of its settings (``--family runs/vae`` skipped the stale warning)."""
    f = args.family
    if f and ("/" in f or os.sep in f or f.endswith(".json") or f in (".", "..")):
        how = (
            "give a model's folder or model.json with --model"
            if model_flag
            else "its model is runs/<family>/"
        )
        raise UsageError(f"--family {f}: a family's name (vae, gan, ...), not a path; {how}")


def cmd_interpolate(args) -> int:
    """Strips along latent paths (linear and spherical) between two test images."""
    from genzoo.tasks.latent import MODES, interpolate_to_file

    _a_family_name(args)
    params = _params(args)
    modes = MODES if args.mode == "both" else (args.mode,)
    out = args.out or f"samples/{args.family}-interpolation"
    r = interpolate_to_file(params, args.family, out, a=args.a, b=args.b, cls=args.cls, steps=args.steps,
                            modes=modes, seed=args.seed)  # fmt: skip
    _said_if_stale(args, params, "its strips drawn", "genzoo.latent")
    print(json.dumps(r))
    return 0


def cmd_arithmetic(args) -> int:
    """A test image's code moved toward another class's mean, and under every label."""
    from genzoo.tasks.latent import arithmetic_to_file

    _a_family_name(args)
    params = _params(args)
    out = args.out or f"samples/{args.family}-arithmetic"
    r = arithmetic_to_file(params, args.family, args.index, args.to, out, steps=args.steps)
    _said_if_stale(args, params, "its strips drawn", "genzoo.latent")
    print(json.dumps(r))
    return 0


def _said_if_stale(args, params, doing: str, logger: str) -> None:
    """After a command that reads ``args.family``'s model did its work (its bad input said alone):
    the model's stale warning, naming the profile it is current under."""
    from genzoo.tasks.data import read_manifest
    from genzoo.tasks.layout import warn_if_stale

    # a family of genzoo's but not of params (its folder kept): nothing to compare it with, as no data
    if args.family in params.models and read_manifest(params.data.prepared_dir, required=False):
        warn_if_stale(params, args.family, doing, logging.getLogger(logger), _other_profiles(args, params))


def cmd_report(args) -> int:
    from genzoo.tasks.report import build_report

    params = _params(args)
    from genzoo.tasks.layout import REPORT_BECAUSE

    _same_profile(args, params, params.families, "report on {it}", because=REPORT_BECAUSE)  # banner, settings
    with _holding(params):
        summary = build_report(params)
    t = summary["targets"]
    print(f"report: {Path(params.run.runs_dir) / 'report' / 'index.html'}")
    if summary.get("left_out"):
        print(f"left out: {'; '.join(summary['left_out'])}")
    if summary.get("of_an_earlier_model"):
        print(f"figures of an earlier model: {'; '.join(summary['of_an_earlier_model'])}")
    if summary.get("trained_with_other_settings"):
        print(f"not up to date with these settings: {'; '.join(summary['trained_with_other_settings'])}")
    print(f"closest to real data by the evaluator's Fréchet distance: {t['best_family']}, "
          f"{t['best_ratio_to_floor']:.2f}x the real-vs-real floor; "
          f"every family below PCA + KDE: {'yes' if t['all_below_pca_kde'] else 'no'}")  # fmt: skip
    return 0


def _judge_url(args, params) -> str:
    from genzoo.tasks.judge import default_url

    return args.db or default_url(params)


def _links(base: str, made: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"rater": r["name"], "link": f"{base}/r/{r['token']}"} for r in made]


def cmd_judge(args) -> int:
    """Human evaluation: create a study, add raters, serve the rating pages, score the answers."""
    from genzoo.tasks import judge, layout

    params = _params(args)
    url = _judge_url(args, params)
    base = f"http://127.0.0.1:{args.port}" if getattr(args, "port", None) else "http://127.0.0.1:8400"
    if args.judge == "create":  # the profile first: request() makes the study database
        named = params.families if args.families in (None, "all") else str(args.families).split(",")
        _same_profile(
            args,
            params,
            [f.strip() for f in named if f.strip() in params.models],
            "draw {it} for a study",
            because=layout.STUDY_BECAUSE,
        )
        req = judge.request(
            params,
            url,
            name=args.name,
            families=args.families,
            per_family=args.per_family,
            reals=args.reals,
            attention=args.attention,
            pairs=args.pairs,
            seed=args.seed,
            raters=args.raters,
        )
        made = judge.create(params, url, req, port=args.port)
        links = _links(base, made["raters"])
        print(json.dumps({"study": made["study"], "images": made["items"], "raters": links}, indent=2))
        if links:
            print("each link is its rater's password: send it to that rater only", file=sys.stderr)
        else:
            add = params.command(f"judge add-rater {made['study']}")
            if args.db:  # (a URL with a password is not printed: said instead)
                add += "` (with the same --db)" if "@" in args.db else f" --db {args.db}`"
            else:
                add += "`"
            print(f"no rater yet: `{add} makes a link", file=sys.stderr)
    elif args.judge == "add-rater":
        if not 1 <= args.n <= judge.LIMITS["--raters"]:
            raise judge.StudyError(
                f"--n: expected an integer from 1 to {judge.LIMITS['--raters']}, got {args.n}"
            )
        made = [judge.add_rater(url, args.study, args.rater_name) for _ in range(args.n)]
        if args.port is None:  # the port the study's links point at, as create was given it
            base = f"http://127.0.0.1:{made[0]['port'] or 8400}"
        print(json.dumps({"study": args.study, "raters": _links(base, made)}, indent=2))
    elif args.judge == "serve":
        from genzoo.flows.judge import serve

        serve(url, host=args.host, port=args.port, allow_remote=args.allow_remote)
    else:
        r = judge.results(params, url, args.study, reps=args.reps)
        path = judge.results_path(params, r["study"])
        n = r["raters"]
        left_out = r.get("answers_left_out", 0)
        silent = n["total"] - n["answered"]
        print(
            f"study {r['study']}: {n['included']} rater{'' if n['included'] == 1 else 's'} counted, "
            f"{n['excluded_attention']} left out (attention checks)"
            + (f", {silent} with no answer yet" if silent > 0 else "")
            + f", {r['answers']} real-or-generated answers"
            + (f" ({left_out} more from those left out)" if left_out else "")
        )
        for f, d in r["families"].items():
            if d.get("error") is None:
                print(f"{f:>10}: " + ("no answers from a rater counted" if left_out else "no answers yet"))
                continue
            ci = (
                f"95% {100 * d['ci95'][0]:.1f} to {100 * d['ci95'][1]:.1f}"
                if d["ci95"]
                else "one rater: no interval"
            )
            fake = 100 * d["fake_error"]
            print(f"{f:>10}: HYPE error {100 * d['error']:.1f}% ({ci}), generated called real {fake:.1f}%")
        if r["real"]["error"] is not None:
            print(f"{'real':>10}: called generated {100 * r['real']['error']:.1f}%")
        alpha = r["agreement"]["krippendorff_alpha"]
        agree = (
            f"Krippendorff's alpha {alpha:.3f}" if alpha is not None and alpha == alpha else "too few ratings"
        )
        print(f"agreement: {agree}")
        if r["pairwise"]:
            pw = r["pairwise"]
            groups = pw.get("groups") or [[f for f, v in pw["families"].items() if v["theta"] is not None]]
            line = " | ".join(ordered({f: pw["families"][f]["theta"] for f in g}) for g in groups)
            one = " (one rater answered the pairs: no interval)" if pw.get("raters") == 1 else ""
            apart = " (groups never compared with each other: | between them)" if len(groups) > 1 else ""
            never = [f for f, v in pw["families"].items() if v["theta"] is None]
            print(
                f"pairwise (Bradley-Terry): {line}{one}{apart}"
                + (f"; not compared: {', '.join(never)}" if never else "")
            )
        print(f"results: {path}")
        _report_again(args, params)  # its "Human evaluation" section shows the latest study
    return 0


def _report_again(args, params) -> None:
    """The report built again where there is one, with the figures a command just wrote (a
    study's results, an anomaly benchmark, usefulness); a report of another profile's models is
    left alone, and said so."""
    report = Path(params.run.runs_dir) / "report" / "index.html"
    if not report.exists():
        return
    from genzoo.tasks.layout import REPORT_BECAUSE
    from genzoo.tasks.report import build_report

    try:  # as `genzoo report` would: not over a report of another profile's models
        _same_profile(args, params, params.families, "report on {it}", because=REPORT_BECAUSE)
        with _holding(params):
            build_report(params)
    except Exception as e:  # the command's own work is done and said: not failed by the report's
        if (line := user_error(e)) is None:
            raise
        print(f"report not rebuilt: {as_given(line, args)}", file=sys.stderr)
        return
    print(f"report: {report}")


def ordered(strengths: dict[str, float]) -> str:
    """``a +0.44 = b +0.44 > c +0.01``: strongest first, ``=`` between strengths equal as shown."""
    ranked = sorted(strengths.items(), key=lambda kv: -kv[1])
    line = ""
    for i, (name, theta) in enumerate(ranked):
        if i:
            line += " = " if f"{theta:+.2f}" == f"{ranked[i - 1][1]:+.2f}" else " > "
        line += f"{name} {theta:+.2f}"
    return line


def cmd_families(args) -> int:
    from genzoo import models

    for name, cls in models.REGISTRY.items():  # its module's first sentence (lines wrap mid-phrase)
        paragraph = " ".join((sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0].split())
        sentence = re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph)[0]
        print(f"{name:10s} phases={','.join(cls.phases):9s} {sentence}")
    return 0


# ----------------------------------------------------------------------------- the parser, by command


def _path(text: str) -> str:
    """A path option as given, ``~`` expanded (``--out=~/x``: no shell expands it after ``=``)."""
    return os.path.expanduser(text)


def port(text: str) -> int:
    """A TCP port for ``--port``: 1 to 65535 (argparse names the option and exits 2 otherwise)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {n}")
    return n


def _prepare_parser(sub) -> None:
    p = sub.add_parser("prepare", help="read, validate and split the data named in params.yaml (data.*)")
    _common(p)
    p.set_defaults(fn=cmd_prepare)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train one family (or --all) on the prepared data")
    _common(p)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--family", help="family to train (genzoo families lists them)")
    g.add_argument("--all", action="store_true", help="train every family in params.yaml, one after another")
    p.set_defaults(fn=cmd_train)


def _run_parser(sub) -> None:
    p = sub.add_parser(
        "run", help="the pipeline (Prefect flow): prepare, train every family in parallel on Ray"
    )
    _common(p)
    p.add_argument("--families", help="comma-separated subset of the families in params.yaml")
    p.add_argument(
        "--ray-address", help="Ray cluster to join (default: ray.address, else RAY_ADDRESS, else local)"
    )
    p.add_argument("--no-dvc", action="store_true", help="do not dvc commit the outputs")
    p.add_argument("--json", action="store_true", help="print the summary as JSON instead of a table")
    p.set_defaults(fn=cmd_run)


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="draw images from a trained model into PATH.npz + PATH.png")
    _common(p)
    which = p.add_mutually_exclusive_group()  # one model: argparse refuses both in one line
    which.add_argument("--family", help="use the model trained in runs/<family>/")
    which.add_argument(
        "--model",
        help="a saved model's model.json, or a registered MLflow version models:/<family>/<version> "
        "(or /latest, or @<alias>) (instead of --family)",
    )
    p.add_argument(
        "--allow-unhashed",
        action="store_true",
        help="load a model.json that records no sha256 of its weights (refused by default)",
    )
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument(
        "--class",
        dest="cls",
        help="class name or index to condition on (default: drawn from the label prior)",
    )
    p.add_argument(
        "--out", type=_path, required=True, help="output path without suffix: writes PATH.npz and PATH.png"
    )
    p.add_argument("--seed", type=_seed, default=0, help="sampling seed: same seed, same images (default 0)")
    p.add_argument("--device", help="cpu, cuda, ... (default: where the model loads, cpu)")
    p.set_defaults(fn=cmd_sample)


def _augment_parser(sub) -> None:
    p = sub.add_parser(
        "augment", help="a labelled synthetic dataset from trained families -> data/augment/NAME/"
    )
    _common(p)
    p.add_argument("--families", help="comma-separated trained families, or best (default: params' augment)")
    p.add_argument(
        "--metric",
        help="what `best` means: fd_rank (mean FD rank over every judge), lift (the measured usefulness of "
        "the recipe's images), fd, kid, precision, ...",
    )
    p.add_argument("--per-class", type=int, help="images per class from each family")
    p.add_argument("--name", help="dataset name: data/augment/NAME/")
    p.add_argument("--seed", type=_seed, help="same seed, same dataset")
    p.add_argument(
        "--min-confidence", type=float, help="keep images the evaluator labels this surely (0 to below 1)"
    )
    p.add_argument("--reject-copies", action=argparse.BooleanOptionalAction, default=None,
                   help="drop near-copies of training images")  # fmt: skip
    p.add_argument(
        "--formats", help="comma-separated: npz (always), imagefolder, hf (default: params' augment)"
    )
    p.add_argument("--recipe", help="how the images are made and labelled: a name under params' recipes "
                   "(plain, teacher, ...; default: augment.recipe)")  # fmt: skip
    p.add_argument(
        "--png", action="store_true", default=None, help="deprecated: adds imagefolder to the formats"
    )
    p.set_defaults(fn=cmd_augment)


def _serve_parser(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="Prefect server + UI on 127.0.0.1:4200 and the genzoo deployments",
        description="Each run chooses its profile and overrides in its form in the Prefect UI.",
    )
    _common(p, settings=False)
    p.add_argument("--host", default="127.0.0.1", help="address the Prefect server binds (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=4200, help="Prefect server port (default 4200)")
    p.set_defaults(fn=cmd_serve)


def _status_parser(sub) -> None:
    p = sub.add_parser("status", help="what is trained, with which data and params, and its MLflow run")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(fn=cmd_status)


def _evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="score the trained families' samples (and the references), then report"
    )
    _common(p)
    p.add_argument("--family", help="only this family (default: every trained family)")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(fn=cmd_evaluate)


def _detect_parser(sub) -> None:
    p = sub.add_parser("detect", help="flag anomalous images by likelihood under a trained family")
    _common(p)
    p.add_argument(
        "path", type=_path, nargs="?", help="an .npz (key images), an image file or a folder of images"
    )
    p.add_argument(
        "--family", required=True, help="a family with a likelihood, exact or a bound (genzoo families)"
    )
    p.add_argument("--quantile", type=float, default=None,
                   help="threshold from the validation scores that flags at most 1 - Q of normal images "
                   "(split conformal; default: detect.quantile, 0.99)")  # fmt: skip
    p.add_argument("--out", type=_path, help="also write every score as JSON here")
    p.add_argument("--benchmark", action="store_true",
                   help="AUROC vs corrupted images, photos: runs/evaluation/F/anomaly.json")  # fmt: skip
    p.add_argument("--holdout", nargs="+", metavar="CLASS",
                   help="with --benchmark: retrain without each CLASS (name or index), score it as "
                   "anomalous")  # fmt: skip
    p.set_defaults(fn=cmd_detect)


def _usefulness_parser(sub) -> None:
    p = sub.add_parser(
        "usefulness", help="does synthetic data help a classifier? train-on-synthetic and augmentation lift"
    )
    _common(p)
    p.add_argument("--families", help="comma-separated trained families (default: usefulness.families)")
    p.set_defaults(fn=cmd_usefulness)


def _interpolate_parser(sub) -> None:
    p = sub.add_parser(
        "interpolate", help="latent interpolation strips between two test images (PATH.png/.npz)"
    )
    _common(p)
    p.add_argument("--family", required=True, help="vae, realnvp, ddpm (encoded images) or gan (prior codes)")
    p.add_argument("--a", type=int, help="index of the first test image (default: a same-class pair)")
    p.add_argument("--b", type=int, help="index of the second test image")
    p.add_argument(
        "--class", dest="cls", help="draw the pair from this class, by name or index (the GAN's label)"
    )
    p.add_argument(
        "--steps", type=int, default=9, help="decoded images along the path, ends included: 2 to 1000 "
        "(default 9); a row between two test images adds them at either end (steps + 2 images)"
    )  # fmt: skip
    p.add_argument("--mode", choices=["linear", "spherical", "both"], default="both",
                   help="the path: a straight line, an arc keeping codes at a typical norm, or a row of each "
                        "(default both)")  # fmt: skip
    p.add_argument(
        "--seed", type=_seed, default=0, help="picks the pair (no --a/--b) and the GAN's codes (default 0)"
    )
    p.add_argument(
        "--out", type=_path, help="output path without suffix (default: samples/<family>-interpolation)"
    )
    p.set_defaults(fn=cmd_interpolate)


def _arithmetic_parser(sub) -> None:
    p = sub.add_parser("arithmetic", help="move a test image's code toward another class (PATH.png/.npz)")
    _common(p)
    p.add_argument("--family", required=True, help="vae, realnvp or ddpm (an encoder is needed)")
    p.add_argument("--index", type=int, required=True, help="index of the test image")
    p.add_argument("--to", required=True, help="the target class, by name or index")
    p.add_argument("--steps", type=int, default=7, help="images along the move: 2 to 1000 (default 7)")
    p.add_argument(
        "--out", type=_path, help="output path without suffix (default: samples/<family>-arithmetic)"
    )
    p.set_defaults(fn=cmd_arithmetic)


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="the HTML report of what is evaluated: runs/report/index.html")
    _common(p)
    p.set_defaults(fn=cmd_report)


def _judge_parser(sub) -> None:
    p = sub.add_parser("judge", help="human evaluation: do people take the samples for real? (a web study)")
    jsub = p.add_subparsers(dest="judge", required=True, metavar="ACTION")
    db = "study database, any SQLAlchemy URL (default: GENZOO_JUDGE_DB, else <runs_dir>/human/studies.db)"

    c = jsub.add_parser("create", help="a study: real test images, trained families' samples, noise checks")
    _common(c)
    c.add_argument("--families", default="all", help="comma-separated trained families, or all (default)")
    c.add_argument("--per-family", type=int, default=20, help="generated images per family (default 20)")
    c.add_argument("--reals", type=int, help="real test images (default: as many as --per-family)")
    c.add_argument("--attention", type=int, default=3, help="attention checks: noise nobody should call real")
    c.add_argument(
        "--pairs",
        type=int,
        default=5,
        help="'which looks more real?' pairs per rater and pair of families (default 5; 0: none)",
    )
    c.add_argument("--raters", type=int, default=1, help="raters to create with the study (default 1)")
    c.add_argument("--seed", type=_seed, default=0, help="same seed, same images and orders")
    c.add_argument("--name", help="the study's name (default: study-<date>-<time>)")
    c.add_argument("--port", type=port, default=8400, help="port the printed links use (default 8400)")
    c.add_argument("--db", help=db)

    a = jsub.add_parser("add-rater", help="new raters of a study, each with a secret link")
    _common(a)
    a.add_argument("study", help="the study's name")
    a.add_argument("--n", type=int, default=1, help="how many raters (default 1)")
    a.add_argument("--rater-name", help="a name shown on the rater's page")
    a.add_argument("--port", type=port, help="port the printed links use (default: create's --port)")
    a.add_argument("--db", help=db)

    s = jsub.add_parser("serve", help="the rating pages on http://127.0.0.1:8400/r/<token>")
    _common(s)
    s.add_argument("--port", type=port, default=8400, help="port (default 8400)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other machines reach (serve behind HTTPS: links are passwords)",
    )
    s.add_argument("--db", help=db)

    r = jsub.add_parser("results", help="HYPE error per family, agreement, pairwise ranking -> JSON + MLflow")
    _common(r)
    r.add_argument("study", nargs="?", help="the study's name (default: the latest)")
    r.add_argument("--reps", type=int, default=2000, help="bootstrap replicates (default 2000)")
    r.add_argument("--db", help=db)
    p.set_defaults(fn=cmd_judge)


def _families_parser(sub) -> None:
    p = sub.add_parser("families", help="list the registered families")
    p.set_defaults(fn=cmd_families, quiet=False, verbose=False)


# in the order `genzoo --help` lists them
COMMANDS = [
    _prepare_parser, _train_parser, _run_parser, _sample_parser, _augment_parser, _serve_parser,
    _status_parser, _evaluate_parser, _detect_parser, _usefulness_parser, _interpolate_parser,
    _arithmetic_parser, _report_parser, _judge_parser, _families_parser,
]  # fmt: skip


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "the following arguments are required" names the option meant
    when one given is near it (``--familly vae`` for ``--family``), as unknown options are."""

    given: list[str] | None = None  # the arguments this parser was given (a subcommand: its own)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        self.given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[override]
        missing = message.startswith(("the following arguments are required", "one of the arguments"))
        if missing and self.given:
            options = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            before = (
                self.given[: self.given.index("--")] if "--" in self.given else self.given
            )  # after: values
            for given in (x.split("=", 1)[0] for x in before if x.startswith("--")):
                if any(o.startswith(given) for o in options):  # an option, or argparse's abbreviation of one
                    continue
                if near := difflib.get_close_matches(given, options, n=1, cutoff=0.7):
                    message += f"; {given}: did you mean {near[0]}?"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="genzoo",
        description="Train, sample and compare deep generative models (PixelCNN, RealNVP, VAE, GAN, DDPM).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return ap


# ----------------------------------------------------------------------------- the console

# clients whose every request is logged at INFO: shown only with --verbose
CHATTY = (
    "httpx",
    "httpcore",
    "prefect.client",
    "prefect.events",
    "urllib3",
    "alembic",
    "mlflow.store",
    "docket",
)


class ConsoleFormatter(logging.Formatter):
    """``12:01:02 train-vae        vae: step 150/600 (25%) ...``: the stage a line comes from
    (the Prefect task run, else the flow, else the logger) in front, the level only when it
    is a warning or worse; the traceback of a bug, not of a user's mistake (a bad address, a
    missing file: the command's last line says it, as for errors raised before the flow)."""

    def format(self, record: logging.LogRecord) -> str:
        where = getattr(record, "task_run_name", None) or getattr(record, "flow_name", None)
        if where == "<unknown>":  # Prefect's name for a line of no known flow (a deployment's start)
            where = None
        where = where or record.name.removeprefix("genzoo.")
        level = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        text = f"{self.formatTime(record, '%H:%M:%S')} {where:<22} {level}{record.getMessage()}"
        if record.exc_info and user_error(record.exc_info[1]) is None:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _not_prefect_completed(record: logging.LogRecord) -> bool:
    """Prefect's own "Finished in state Completed()": each stage already logged its end."""
    return not (
        record.name.startswith("prefect.") and record.getMessage().startswith("Finished in state Completed")
    )


def setup_logging(quiet: bool = False, verbose: bool = False) -> None:
    """The console a person reads: genzoo's and Prefect's run logs (stage starts and ends,
    each family's progress), third-party request logs only when ``verbose``."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormatter())
    handler.addFilter(_not_prefect_completed)
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, handlers=[handler], force=True)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)
    if quiet:  # MLflow prints each run's and model's link to stdout (a tracking server only)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        os.environ.setdefault("MLFLOW_PRINT_MODEL_URLS_ON_CREATION", "false")


PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # a served run queued behind another of its deployment (concurrency limit 1) is tried again
    # this often, not every 30 s: it starts within seconds of the one before it
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "5",
}


# what an interrupted command leaves (training checkpoints every train.checkpoint_every steps)
INTERRUPTED = {
    "run": "; the families already trained and the others' last checkpoints are kept: the same command "
    "resumes from them",
    "train": "; its last checkpoint is kept: the same command resumes from it",
}


def left_by(args) -> str:
    """What an interrupted command leaves (``INTERRUPTED``); for one family's training, the step
    of the checkpoint it resumes from, that it has none yet and starts again, or that its model
    is whole and current (stopped as it was found up to date, or after its last file)."""
    if args.command != "train" or args.all:
        return INTERRUPTED.get(args.command, "")
    try:
        from genzoo.tasks.config import load_params
        from genzoo.tasks.layout import newest_checkpoint, up_to_date

        params = load_params(args.params, args.overrides, args.profile, warn=False)
        if up_to_date(params, args.family, loads=True) is not None:  # (as the training decides)
            return f"; {args.family} is trained and up to date: the same command does nothing"
        step = newest_checkpoint(params, args.family)
        every = params.train_config(args.family).checkpoint_every
    except (Exception, KeyboardInterrupt):  # (a second Ctrl+C, files half written: the plain line)
        return INTERRUPTED["train"]
    if step is None:
        return f"; no checkpoint yet (one every {every} steps): the same command starts it again"
    return f"; its last checkpoint (step {step}) is kept: the same command resumes from it"


# options a command takes under another name than a user would reach for (sample's --out)
AUGMENT_OUT = (
    "the dataset goes to <augment.out_dir>/<--name> (data/augment/synthetic by default): give --name NAME, "
    "and -o augment.out_dir=DIR for the folder above it"
)
OTHER_WORDS = {("augment", "--out"): AUGMENT_OUT}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments; an option no command takes is refused by the command's own
    parser (its usage, not genzoo's), with the option meant where one is near (``--familly``)."""
    ap = build_parser()
    args, extra = ap.parse_known_args(argv)
    if not extra:
        return args
    parser = ap
    while subs := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
        chosen = getattr(args, subs[0].dest, None)
        if chosen not in subs[0].choices:
            break
        parser = subs[0].choices[chosen]
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    options_given = extra[: extra.index("--")] if "--" in extra else extra  # after --: values
    for given in (x.split("=", 1)[0] for x in options_given if x.startswith("--")):
        if hint := OTHER_WORDS.get((getattr(args, "command", None), given)):
            hints.append(f"{given}: {hint}")
        elif near := difflib.get_close_matches(given, options, n=1, cutoff=0.7):
            hints.append(f"{given}: did you mean {near[0]}?")
    parser.error(f"unrecognized arguments: {' '.join(extra)}" + "".join(f"; {h}" for h in hints))


# the params block a command's own flags override (``--per-class`` is augment.per_class), and
# keys a flag of another name sets
FLAG_BLOCKS = {"augment": "augment"}
FLAG_KEYS = {"detect": {"detect.holdout_classes": "holdout"}}


def as_given(line: str, args) -> str:
    """``line`` (an error naming params keys) naming the flags the user gave instead where a flag
    set the key: ``--per-class: ...``, not ``augment.per_class: ...``; ``--family: foo not in
    params``, not ``models.foo: ...``."""
    if getattr(args, "out", None) and line.startswith("out="):  # sample's check, shared with the UI's form
        line = "--out " + line.removeprefix("out=")
    family = getattr(args, "family", None)
    if family and line.startswith(f"models.{family}: not in params"):
        line = f"--family: {family} " + line.removeprefix(f"models.{family}: ")
    elif family and (
        m := re.fullmatch(rf"{re.escape(family)}: no such family \((.*)\), nor a model\.json.*", line)
    ):
        line = f"--family: no family {family} ({m.group(1)})"  # (--family takes no path: --model does)
    if block := FLAG_BLOCKS.get(args.command):  # each bad key of the block: one row, or "; " between

        def flag(m: re.Match) -> str:
            given = getattr(args, m.group(2), None) is not None
            return f"{m.group(1)}--{m.group(2).replace('_', '-')}:" if given else m.group(0)

        line = re.sub(rf"(^|; |\n\s*){block}\.(\w+)(?:\.\d+)*:", flag, line)  # (.1: a list's item)
    for key, attr in FLAG_KEYS.get(args.command, {}).items():
        if getattr(args, attr, None) is not None:
            line = re.sub(
                rf"(^|; |\n\s*)(invalid params: )?{re.escape(key)}(?:\.\d+)*:",
                rf"\1--{attr.replace('_', '-')}:",
                line,
            )
    return line


_IN_MAIN = contextvars.ContextVar("genzoo_in_main", default=False)


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (poll says POLLERR)."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file descriptor (replaced), no poll
        return False


def main(argv: list[str] | None = None) -> int:
    # in a context of its own: the params a command sets for hints (Params.advising) end with it
    return contextvars.copy_context().run(_main, argv)


def _main(argv: list[str] | None) -> int:
    _IN_MAIN.set(True)
    args = parse(argv)
    # the temporary Prefect server a run starts (unless the user set these): no telemetry, and
    # time to build its database on a first run (Prefect waits 20 s: too short on a 2-core machine)
    for key, value in PREFECT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # MLflow's "View run ... at" line for every run it ends, amid the stages' lines: the pipeline's
    # run link comes once, in the last lines of `genzoo run`
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if args.quiet or not sys.stderr.isatty():  # MLflow's own download bar (a registered model's
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # weights): not in a log
    setup_logging(args.quiet, args.verbose)
    command = f"judge {args.judge}" if args.command == "judge" else args.command  # its action too
    try:
        code = args.fn(args)
        sys.stdout.flush()  # a reader that is gone fails it here, not in Python's exit
        return code
    except KeyboardInterrupt:  # Ctrl-C: one line, not the traceback of wherever it landed
        print(f"genzoo {command}: interrupted{left_by(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `genzoo detect ... | head`: the reader is gone, as for any Unix tool
        if not _stdout_gone():  # another pipe (a server's, a subprocess's): an error like any other
            raise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python's flush at exit)
        return 141  # 128 + SIGPIPE, a shell's status for it
    except Exception as e:
        line = user_error(e)
        if line is None:
            raise  # a bug: its traceback is what is needed
        print(f"genzoo {command}: error: {as_given(line, args)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
