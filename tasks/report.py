"""The report (DVC stage ``report``; the pipeline's last stage): one self-contained HTML page
(``runs/report/index.html``, images inlined) that people look at, plus the numbers for tools.

- Sample grids per family and per class (real test images beside every family and baseline),
  training curves, the metrics table (mean ± 95% interval over the evaluation seeds), the
  reference rows, the trade-off table measured beside the textbook claims, plots of quality vs
  sampling speed and precision vs recall, and genzoo's targets with their margins.
- Quality under every judge: each family's and baseline's rank by Fréchet distance in each
  feature space (the evaluator's and the other judges', ``quality.json``'s ``spaces``), Kendall's
  tau between the spaces' rankings, and issue 13's targets per space (met / missed by how much).
- ``summary.json`` for ``dvc metrics show``; ``families.csv`` (one row per family and
  reference) for ``dvc plots``. The page is logged to each family's MLflow run.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo.metrics.human import kendall_tau
from genzoo.metrics.quality import rank_agreement
from genzoo.models.base import atomic_write_text
from genzoo.tasks.config import Params, stage_args
from genzoo.tasks.data import data_hash, load_split, read_manifest
from genzoo.tasks.errors import exit_code
from genzoo.tasks.figures import grid, grid_scale
from genzoo.tasks.layout import (
    evaluation_dir,
    exclusive,
    json_safe,
    measure_again,
    model_sha,
    npz_key,
    of_reference,
    on_other_data,
    other_models,
    read_json,
    scored_by_another_evaluator,
    shown,
    unmeasured,
    up_to_date,
    usefulness_key,
)

log = logging.getLogger("genzoo.report")

# The textbook trade-off table ("Trade-offs Among Approaches"); sampling speed and the DDPM row
# are the textbook view stated in prose or left out of that table.
CLAIMS: dict[str, dict[str, str]] = {
    "pixelcnn": {"quality": "Good", "density": "Exact", "training": "Slow", "diversity": "High",
                 "sampling": "Slow"},
    "realnvp": {"quality": "Medium", "density": "Exact", "training": "Fast", "diversity": "Medium",
                "sampling": "Fast"},
    "vae": {"quality": "Medium", "density": "Approximate", "training": "Fast", "diversity": "High",
            "sampling": "Fast", "sharpness": "Blurry"},
    "gan": {"quality": "Excellent", "density": "No likelihood", "training": "Tricky",
            "diversity": "Mode collapse risk", "sampling": "Fast", "sharpness": "Sharpest"},
    "ddpm": {"quality": "Excellent", "density": "Approximate", "training": "Slow", "diversity": "High",
             "sampling": "Slow"},
}  # fmt: skip
QUALITY_TIERS = ("Excellent", "Good", "Medium")
BASELINE_NAMES = {"pca_kde": "PCA + KDE", "gmm": "Gaussian mixture"}
TARGET_RATIO = 1.5  # best family's Fréchet distance within this many times the real-vs-real floor
# issue 13, in every feature space: every family below PCA + KDE, the best within 1.3x the floor,
# and every family's class-conditional samples classified right by every real-data classifier
SPACES_FLOOR_RATIO = 1.3
SPACES_ACCURACY = 0.97


def latest_study(folder: Path) -> dict[str, Any] | None:
    """The results of the newest study in ``folder`` (by when it was created; results scored
    before studies recorded that: by when they were scored), one a rater answered first: scoring
    an older study, or one nobody has rated yet, does not take the report's section from it (a
    study whose every rater failed the attention checks does: its section says so; ranked by the
    answers counted, an older study stood in for it without a word)."""
    found = []
    for p in folder.glob("*.json"):
        h = read_json(p)
        if isinstance(h, dict) and "families" in h:
            raters = h.get("raters") if isinstance(h.get("raters"), dict) else {}
            rated = raters.get("answered", h.get("answers", 0)) > 0
            found.append((rated, h.get("created") or p.stat().st_mtime, h))
    return max(found, key=lambda t: t[:2])[2] if found else None


def collect(params: Params) -> dict[str, Any]:
    """What the evaluation wrote (runs/evaluation/): evaluator, reference rows, each family."""
    folder = evaluation_dir(params)
    reference = read_json(folder / "evaluator" / "reference.json")
    if reference is None:
        raise FileNotFoundError(
            f"{folder / 'evaluator' / 'reference.json'} missing: nothing evaluated yet "
            f"(`{params.command('evaluate')}`, or `{params.command('run')}` trains and evaluates)"
        )
    families, missing, anomaly, earlier, other = {}, [], {}, [], []
    stale_models: set[str] = set()  # not up to date with these settings: measured again, it is still stale

    def remeasure(f: str, command: str) -> str:
        """``command`` measuring ``f`` again: its training first when its model is stale."""
        if f in stale_models:
            return f"{params.command(f'train --family {f}')}, then {params.command(command)}"
        return params.command(command)

    manifest = read_manifest(params.data.prepared_dir, required=False)
    data = data_hash(manifest) if manifest else None
    shas = {f: model_sha(params, f) for f in params.models}  # the models in runs/ now
    for f in params.models:
        quality = read_json(folder / f / "quality.json")
        if scored_by_another_evaluator(params, quality):  # other features: not comparable
            again = measure_again(params, f)
            if on_other_data(params, f):  # the cause, not only what follows from it
                log.warning("%s: trained on other data than the prepared data; left out (%s)", f, again)
                missing.append(f"{f} (trained on other data than the prepared data: {again})")
            else:
                log.warning("%s: scored by another evaluator than the current one; left out (%s)", f, again)
                missing.append(f"{f} (scored by another evaluator: {again})")
        elif quality:
            families[f] = {"metrics": quality["training"], "quality": quality}
            # its model (trained again since or not): other settings, or incomplete; both are said
            gone = shas[f] is None and quality.get("model_sha256") is not None  # said below, as deleted
            stale = bool(manifest) and not gone and up_to_date(params, f) is None
            if stale:
                stale_models.add(f)
            if quality.get("model_sha256") not in (None, shas[f]):
                # a stale model's evaluation would rank it again: its training (these settings) first
                why = (
                    "its model deleted since its evaluation"
                    if shas[f] is None
                    else f"trained again since its evaluation: {remeasure(f, f'evaluate --family {f}')}"
                )
                log.warning("%s: figures of an earlier model (%s)", f, why)
                earlier.append(f"{f} ({why})")
            if stale:
                why = f"`{params.command('status')}` says why"
                log.warning("%s: not up to date with this report's params, data and code (%s)", f, why)
                other.append(f"{f} ({why})")
        elif (Path(params.run.runs_dir) / f / "model.json").exists():
            missing.append(f"{f} (not evaluated yet: {measure_again(params, f)})")
        else:
            missing.append(f"{f} (not trained)")
        a = read_json(folder / f / "anomaly.json")
        if a and data not in (None, a.get("data_sha256", data)):  # made on other data: not comparable
            why = f"made on other data: {params.command(f'detect --family {f} --benchmark')}"
            log.warning("%s: anomaly figures left out (%s)", f, why)
            missing.append(f"{f} anomaly figures ({why})")
        elif a and shas[f] is not None and a.get("model_sha256") not in (None, shas[f]):  # trained again
            why = f"of an earlier model: {remeasure(f, f'detect --family {f} --benchmark')}"
            log.warning("%s: anomaly figures left out (%s)", f, why)
            missing.append(f"{f} anomaly figures ({why})")
        elif a and f in families:  # (a family left off the page: its rows too)
            anomaly[f] = a
    if not families:
        raise FileNotFoundError(f"no evaluated family under {folder} (run training and evaluation first)")
    useful = {f: u for f in params.models if (u := read_json(folder / f / "usefulness.json"))}
    u_ref = read_json(folder / "usefulness" / "reference.json")
    # the real-data rows these settings make (no prepared data to work it out: the rows on disk)
    key = usefulness_key(params, manifest) or (u_ref or {}).get("key")
    if u_ref and key and u_ref.get("key") != key:  # rows of other settings (a `genzoo usefulness -o ...`)
        again = params.command("usefulness")
        log.warning("usefulness: its real-data rows were measured under other settings than these; "
                    "left out (%s)", again)  # fmt: skip
        missing.append(f"usefulness (its real-data rows were measured under other settings: {again})")
        u_ref = None
    for f, u in list(useful.items()):  # measured against other real-data rows: not comparable
        if not of_reference(u, key):
            again = params.command(f"usefulness --families {f}")
            log.warning("%s: usefulness measured against another reference than the current one; left out "
                        "(%s)", f, again)  # fmt: skip
            missing.append(f"{f} (usefulness measured against another reference: {again})")
            del useful[f]
        elif shas[f] is not None and u.get("model_sha256") not in (None, shas[f]):  # trained again since
            why = f"of an earlier model: {remeasure(f, f'usefulness --families {f}')}"
            log.warning("%s: usefulness figures left out (%s)", f, why)
            missing.append(f"{f} usefulness ({why})")
            del useful[f]
    # a study of other models (a family trained again, or on other data, since): not these models'
    # figures, and no older study stands in for it (one made before studies recorded their models
    # could be of any)
    human = latest_study(folder / "human")
    if human is not None and (unheld := other_models(params, human, shas)):
        log.warning("human study %s: drew from weights of %s that runs/ no longer holds; left out",
                    human["study"], ", ".join(unheld))  # fmt: skip
        missing.append(
            f"human study {human['study']} (drew from weights of {', '.join(unheld)} that runs/ no longer "
            f"holds: {params.command('judge create')} makes a study of the models there now)"
        )
        human = None
    return {
        "usefulness": {"reference": u_ref, "families": useful} if u_ref and useful else None,
        "evaluator": read_json(folder / "evaluator" / "metrics.json") or {},
        "reference": reference,
        "families": families,
        "missing": missing,
        "earlier": earlier,
        "other_settings": other,
        "anomaly": anomaly,
        "human": human,
    }


# ---------------------------------------------------------------- the trade-off table


def _median_split(values: dict[str, float], high: str, low: str) -> dict[str, str]:
    med = float(np.median(list(values.values())))
    return {k: high if v >= med else low for k, v in values.items()}


def _verdict(claim: str | None, measured: str, order: tuple[str, ...] | None = None) -> str:
    if claim is None:
        return "no claim"
    if claim == measured:
        return "agrees"
    if (
        order
        and claim in order
        and measured in order
        and abs(order.index(claim) - order.index(measured)) == 1
    ):
        return "partly"
    return "disagrees"


TRADEOFF_RULES = (
    "quality = rank by Fréchet distance (1st: Excellent, the better half, the middle rank included: "
    "Good, else Medium); "
    "training/sampling = at or above the families' median speed: Fast, else Slow; "
    "diversity = recall at or above the median: High, else Medium (a mode-collapse risk agrees with Medium); "
    "density = the estimator the family has; "
    "sharpness = the lowest (blurriest) or highest mean |Laplacian| among the families."
)


ALONE = "one family: none to compare it with"  # a tier of a report of one family


def tradeoff(families: dict[str, Any]) -> list[dict[str, Any]]:
    """Each family's measured tiers beside its textbook claims, by ``TRADEOFF_RULES`` (tiers
    rank a family among the others: with one family, its figures and no verdict)."""
    q = {f: d["quality"] for f, d in families.items()}
    m = {f: d["metrics"] for f, d in families.items()}
    n = len(families)
    rank = {f: i + 1 for i, f in enumerate(sorted(q, key=lambda f: q[f]["fd"]))}
    # (a model whose metrics.json is missing, evaluated as it is: no time)
    timed = {f: -m[f]["train_seconds"] for f in m if m[f].get("train_seconds") is not None}
    train_speed = _median_split(timed, "Fast", "Slow") if timed else {}
    sample_speed = _median_split({f: q[f]["images_per_second"] for f in q}, "Fast", "Slow")
    diversity = _median_split({f: q[f]["recall"] for f in q}, "High", "Medium")
    sharp = {f: q[f]["sharpness"] for f in q}
    # every tier but density's ranks a family against the others' figures (training's against those
    # with a recorded time): with none to compare, the figure and no tier
    alone = {"quality", "diversity", "sampling"} if n < 2 else set()
    alone |= {"training"} if len(timed) < 2 else set()
    rows = []
    for f in families:
        claims = CLAIMS.get(f, {})
        tier = "Excellent" if rank[f] == 1 else "Good" if rank[f] <= math.ceil(n / 2) else "Medium"
        estimator = m[f].get("bpd_estimator")
        density = {"exact": "Exact", "bound": "Approximate"}.get(estimator, "No likelihood")
        bpd = m[f].get("test_bpd")
        ci = q[f]["ci95"]["fd"]
        cells = {
            "quality": (f"rank {rank[f]} of {n} (FD {q[f]['fd']:.3f}" + (f" ± {ci:.3f}" if ci else "") +
                        f"): {tier}", tier, QUALITY_TIERS),
            "density": (f"{density}" + (f" ({bpd:.3f} bits/dim)" if bpd is not None else ""), density, None),
            "training": (f"{m[f]['train_seconds']:.0f} s for {m[f]['steps']} steps: {train_speed[f]}",
                         train_speed[f], None) if f in train_speed else
                        ("not recorded (its metrics.json missing: a training of it stopped after saving "
                         "its weights?)", None, None),
            "diversity": (f"recall {q[f]['recall']:.2f}, coverage {q[f]['coverage']:.2f}: {diversity[f]}",
                          diversity[f], None),
            "sampling": (f"{q[f]['images_per_second']:.0f} images/s, {q[f]['latency_ms']:.1f} ms/image: "
                         f"{sample_speed[f]}", sample_speed[f], None),
        }  # fmt: skip
        row: dict[str, Any] = {"family": f}
        for col, (text, measured, order) in cells.items():
            claim = claims.get(col)
            if measured is None:
                verdict = "not measured"
            elif col in alone:  # a tier against no other family's figure: the figure alone
                text, verdict = text.rsplit(": ", 1)[0], ALONE
                if claim == "Tricky":
                    text += f"; {m[f].get('bad_steps', 0)} non-finite steps skipped"
            elif claim == "Tricky":  # a claim on stability, not speed: report what happened
                text += f"; {m[f].get('bad_steps', 0)} non-finite steps skipped"
                verdict = "not a speed claim"
            elif claim == "Mode collapse risk":
                verdict = "agrees" if measured == "Medium" else "disagrees"
            else:
                verdict = _verdict(claim, measured, order)
            row[col] = {"claim": claim or "—", "measured": text, "verdict": verdict}
        if "sharpness" in claims and n < 2:
            row["sharpness"] = {"claim": claims["sharpness"], "measured": f"mean |Laplacian| {sharp[f]:.3f}",
                                "verdict": ALONE}  # fmt: skip
        elif "sharpness" in claims:
            extreme = (
                min(sharp, key=sharp.get) if claims["sharpness"] == "Blurry" else max(sharp, key=sharp.get)
            )
            row["sharpness"] = {
                "claim": claims["sharpness"],
                "measured": f"mean |Laplacian| {sharp[f]:.3f} (blurriest: {min(sharp, key=sharp.get)}, "
                f"sharpest: {max(sharp, key=sharp.get)})",
                "verdict": "agrees" if extreme == f else "disagrees",
            }
        rows.append(row)
    return rows


def targets(families: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The digits targets: every family's FD below PCA + KDE's; the best within 1.5x the floor."""
    kde = reference["pca_kde"]["fd"]
    floor = reference["real_train_vs_test"]["fd"]
    fd = {f: d["quality"]["fd"] for f, d in families.items()}
    best = min(fd, key=fd.get)
    return {
        "pca_kde_fd": kde,
        "floor_fd": floor,
        "below_pca_kde": {f: {"fd": v, "ratio": v / kde, "met": v < kde} for f, v in fd.items()},
        "all_below_pca_kde": all(v < kde for v in fd.values()),
        "best_family": best,
        "best_ratio_to_floor": fd[best] / floor,
        "best_within": TARGET_RATIO,
        "best_met": fd[best] <= TARGET_RATIO * floor,
    }


def judges(families: dict[str, Any], reference: dict[str, Any],
           evaluator: dict[str, Any] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Quality under every judge (quality.json's ``spaces``): per space each model's Fréchet
    distance and rank (families and the classical baselines; the floor and noise as anchors),
    Kendall's tau between every pair of spaces' rankings, and issue 13's targets per space with
    their margins; beside each classifier's accuracy target, its own accuracy on the real test
    split (from the evaluator stage's ``evaluator`` metrics: a judge's ceiling). None when the
    evaluation predates the spaces."""
    fams = {f: d["quality"]["spaces"] for f, d in families.items() if "spaces" in d["quality"]}
    # evaluated before the spaces (an upgrade, then `genzoo evaluate --family` of another): not
    # ranked here, and a target on every family not decided without them
    unjudged = [f for f in families if f not in fams]
    anchors = ("real_train_vs_test", "pca_kde")
    if not fams or any("spaces" not in reference.get(k, {}) for k in anchors):
        return None
    spaces = [s for s in next(iter(fams.values())) if all(s in v for v in fams.values())]
    base = {k: reference[k]["spaces"] for k in BASELINE_NAMES if "spaces" in reference.get(k, {})}
    models = {**fams, **base}
    fd = {s: {m: v[s]["fd"] for m, v in models.items()} for s in spaces}
    agree = rank_agreement(fd)
    floor, kde = reference["real_train_vs_test"]["spaces"], base["pca_kde"]
    noise = reference.get("uniform_noise", {}).get("spaces", {})
    per_space = {}
    for s in spaces:
        fam_fd = {f: fd[s][f] for f in fams}
        best, worst = min(fam_fd, key=fam_fd.get), max(fam_fd, key=fam_fd.get)
        per_space[s] = {
            "floor_fd": floor[s]["fd"], "pca_kde_fd": kde[s]["fd"],
            "noise_fd": noise[s]["fd"] if s in noise else None,
            "worst_family": worst, "worst_ratio_to_pca_kde": fam_fd[worst] / kde[s]["fd"],
            "below_pca_kde": all(v < kde[s]["fd"] for v in fam_fd.values()),
            "best_family": best, "best_ratio_to_floor": fam_fd[best] / floor[s]["fd"],
            "best_within_floor": fam_fd[best] <= SPACES_FLOOR_RATIO * floor[s]["fd"],
        }  # fmt: skip
    classifiers = [s for s in spaces if all("class_accuracy" in v[s] for v in fams.values())]
    ev = evaluator or {}
    real_acc = {"cnn": ev.get("test_accuracy"), **ev.get("judges", {}).get("test_accuracy", {})}
    accuracy = {}
    for s in classifiers:
        acc = {f: v[s]["class_accuracy"] for f, v in fams.items()}
        worst = min(acc, key=acc.get)
        accuracy[s] = {"worst_family": worst, "worst": acc[worst], "met": acc[worst] >= SPACES_ACCURACY,
                       "families": acc, "real_test": real_acc.get(s)}  # fmt: skip
    below = max(spaces, key=lambda s: per_space[s]["worst_ratio_to_pca_kde"])
    near = max(spaces, key=lambda s: per_space[s]["best_ratio_to_floor"])
    acc_space = min(classifiers, key=lambda s: accuracy[s]["worst"]) if classifiers else None
    goals = {
        "every_family_below_pca_kde": {
            "met": all(per_space[s]["below_pca_kde"] for s in spaces),
            "worst_space": below, "worst_family": per_space[below]["worst_family"],
            "worst_ratio": per_space[below]["worst_ratio_to_pca_kde"], "needed": "< 1",
        },
        "best_within_floor": {
            "met": all(per_space[s]["best_within_floor"] for s in spaces),
            "worst_space": near, "best_family": per_space[near]["best_family"],
            "worst_ratio": per_space[near]["best_ratio_to_floor"], "needed": f"<= {SPACES_FLOOR_RATIO}",
        },
    }  # fmt: skip
    if acc_space is not None:
        goals["class_accuracy"] = {
            "met": all(a["met"] for a in accuracy.values()), "worst_space": acc_space,
            "worst_family": accuracy[acc_space]["worst_family"], "worst": accuracy[acc_space]["worst"],
            "needed": f">= {SPACES_ACCURACY}",
        }  # fmt: skip
    for name, g in goals.items():
        g["verdict"] = _goal_verdict(g)
        if unjudged and g["met"] and name != "best_within_floor":  # (a best judged: met all the same)
            g["met"] = False  # met by the judged families: the unjudged may miss it
            g["verdict"] = f"not decided: {', '.join(unjudged)} not judged in these spaces"
        elif unjudged and not g["met"]:  # missed by the judged: missed, whatever the others score
            g["verdict"] += f" ({', '.join(unjudged)} not judged in these spaces)"
    return {
        "spaces": spaces, "families": list(fams), "unjudged": unjudged, "baselines": list(base), "fd": fd,
        "ranks": agree["ranks"], "kendall_tau": agree["kendall_tau"], "per_space": per_space,
        "accuracy": accuracy, "targets": goals,
    }  # fmt: skip


def _goal_verdict(g: dict[str, Any]) -> str:
    """ "met", or "missed by ..." naming the worst space and how far it is from the target."""
    if g["met"]:
        return "met"
    if "worst" in g:  # class accuracy
        short = 100 * (SPACES_ACCURACY - g["worst"])
        who = f"{g['worst_family']}: {100 * g['worst']:.1f}% by {g['worst_space']}"
        return f"missed by {short:.1f} points ({who})"
    if "best_family" in g:
        return (f"missed by {g['worst_ratio'] / SPACES_FLOOR_RATIO:.2f}x ({g['worst_space']}: best is "
                f"{g['best_family']} at {g['worst_ratio']:.2f}x the floor)")  # fmt: skip
    return (f"missed by {g['worst_ratio']:.2f}x ({g['worst_space']}: {g['worst_family']} at "
            f"{g['worst_ratio']:.2f}x PCA + KDE's distance)")  # fmt: skip


def judges_table(j: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the rank table: per model, per space ``rank (FD)``."""
    rows = []
    for m in j["families"] + j["baselines"]:
        cells = [f"{j['ranks'][s][m]:g} ({j['fd'][s][m]:.3g})" for s in j["spaces"]]
        kind = "family" if m in j["families"] else "reference"
        rows.append({"name": BASELINE_NAMES.get(m, m), "kind": kind, "cells": cells})
    rows.append({"name": "real train vs test (floor)", "kind": "reference",
                 "cells": [f"— ({j['per_space'][s]['floor_fd']:.3g})" for s in j["spaces"]]})  # fmt: skip
    if all(j["per_space"][s]["noise_fd"] is not None for s in j["spaces"]):
        rows.append({"name": "uniform noise", "kind": "reference",
                     "cells": [f"— ({j['per_space'][s]['noise_fd']:.3g})" for s in j["spaces"]]})  # fmt: skip
    return rows


# uniform noise with at least this precision: precision (k nearest neighbours of real images) is loose
# in these features, and the page says so under the metrics
LOOSE_PRECISION = 0.2

LIFT_TARGETS = {"0.1": 0.01, "0.25": 0.005}  # real fraction -> lift needed (points / 100), interval above 0
NEVER_HURTS = -0.003  # with all the real data: mean lift >= 0 and the interval's lower end above -0.3 points
TSTR_TARGET = 0.97  # train on synthetic, test on real: at least this, and at least PCA + KDE's


def _recipe_lifts(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A usefulness.json's augmentation per recipe (older files: their one recipe, "plain")."""
    if d.get("recipes"):
        return {name: r["augmentation"] for name, r in d["recipes"].items()}
    return {d.get("recipe", "plain"): d["augmentation"]}


def _pca_kde_lift(ref: dict[str, Any], recipe: str, p: str, clf: str, left_out: list[str]) -> tuple:
    """PCA + KDE's lift at real fraction ``p`` beside a family's with ``recipe``: by the same
    recipe where PCA + KDE was measured with it (a sample-mode one), else by the dataset's
    recipe; None where its filters emptied a pool (named in ``left_out``). Returns (lift, recipe)."""
    measured = ref["pca_kde"].get("recipes") or {}
    name = recipe if recipe in measured else ref.get("protocol", {}).get("primary_recipe", recipe)
    block = measured.get(name) or {}
    aug = block.get("augmentation") or ref["pca_kde"]["augmentation"]
    if why := unmeasured((block.get("filters") or {}).get(p) or {}):
        said = f"PCA + KDE with recipe {name} at {100 * float(p):g}% real data ({why})"
        if said not in left_out:
            left_out.append(said)
        return None, name
    return aug.get(p, {}).get(clf, {}).get("lift", {}).get("mean"), name


def usefulness_targets(u: dict[str, Any]) -> dict[str, Any]:
    """Does synthetic data help? Decided on the CNN with classical augmentation (the baseline a
    practitioner has), over every family and recipe: the best lift at 10% real data >= +1.0
    point with its 95% interval above zero, at 25% >= +0.5 (also with the interval above zero),
    at 100% never hurting (mean >= 0, lower end above -0.3 points); the best train-on-synthetic
    accuracy >= PCA + KDE's and >= 97%. Each target: met or missed, by how much."""
    fams, ref = u["families"], u["reference"]
    clf = "cnn" if "cnn" in ref["pca_kde"]["tstr"] else next(iter(ref["pca_kde"]["tstr"]))
    lifts = {(f, r): aug for f, d in fams.items() for r, aug in _recipe_lifts(d).items()}
    rows, left_out = [], []
    for (f, r), aug in lifts.items():  # a pool the filters emptied: a lift of real data alone, no measure
        filters = ((fams[f].get("recipes") or {}).get(r) or {}).get("filters") or {}
        for p in list(aug):
            if why := unmeasured(filters.get(p) or {}):
                left_out.append(f"{f} with recipe {r} at {100 * float(p):g}% real data ({why})")
                aug = lifts[f, r] = {q: v for q, v in aug.items() if q != p}
    goals = [(p, need) for p, need in LIFT_TARGETS.items() if p in ref["real"]]
    if "1.0" in ref["real"]:
        goals.append(("1.0", 0.0))
    for p, need in goals:
        got = {k: aug[p][clf] for k, aug in lifts.items() if p in aug}
        if not got:
            continue
        # chosen on the validation split where every pair was measured on one: the test images' own
        # luck does not pick the lift quoted (the training's, shared by both splits, still can);
        # else the best of len(got) on the test lifts themselves: leans optimistic
        by = "val_lift" if all("val_lift" in v for v in got.values()) else "lift"
        (f, r) = best = max(got, key=lambda k: got[k][by]["mean"])
        mean, half = got[best]["lift"]["mean"], got[best]["lift"]["ci95"]
        floor = NEVER_HURTS if p == "1.0" else 0.0
        met = mean >= need and mean - half > floor
        kde, kde_recipe = _pca_kde_lift(ref, r, p, clf, left_out)
        text = f"lift at {100 * float(p):g}% real data ≥ +{100 * need:.1f} points, interval above 0"
        if p == "1.0":
            text = "with all the real data, no harm: lift ≥ 0, interval above −0.3 points"
        rows.append({
            "target": text,
            "met": met, "family": f, "recipe": r, "value": mean, "ci95": half, "pca_kde": kde,
            "pca_kde_recipe": kde_recipe,
            "short": max(need - mean, floor - (mean - half), 0.0), "of": len(got),
            "chosen_on": "validation" if by == "val_lift" else "test",
        })  # fmt: skip
    tstr = {f: d["tstr"][clf]["mean"] for f, d in fams.items()}
    best_t = max(tstr, key=tstr.get)
    kde_t = ref["pca_kde"]["tstr"][clf]["mean"]
    need_t = max(kde_t, TSTR_TARGET)
    rows.append({
        "target": f"train on synthetic ≥ PCA + KDE's ({100 * kde_t:.1f}%) and ≥ {100 * TSTR_TARGET:.0f}%",
        "met": tstr[best_t] >= need_t, "family": best_t, "recipe": None, "value": tstr[best_t], "ci95": None,
        "pca_kde": kde_t, "short": max(need_t - tstr[best_t], 0.0),
    })  # fmt: skip
    largest = max(ref["real"], key=float)  # (usefulness.fractions need not hold 1.0)
    return {"classifier": clf, "rows": rows, "real_accuracy": ref["real"][largest][clf]["mean"],
            "real_fraction": largest, "left_out": left_out,
            "on_validation": any(r.get("chosen_on") == "validation" for r in rows)}  # fmt: skip


def usefulness_plot(u: dict[str, Any]) -> str:
    """Test accuracy against the real fraction: real alone (band: 95% interval), each family's
    and PCA + KDE's augmentation by every recipe; one panel per classifier (``cnn``: with
    classical augmentation, the baseline)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = u["reference"]
    fracs = sorted(ref["real"], key=float)
    clfs = list(ref["real"][fracs[0]])
    fig, axes = plt.subplots(1, len(clfs), figsize=(4.6 * len(clfs), 3.6), squeeze=False)
    x = [100 * float(p) for p in fracs]
    for ax, c in zip(axes[0], clfs, strict=True):
        m = np.array([ref["real"][p][c]["mean"] for p in fracs])
        h = np.array([ref["real"][p][c]["ci95"] for p in fracs])
        ax.plot(x, 100 * m, "k-o", ms=4, label="real only")
        ax.fill_between(x, 100 * (m - h), 100 * (m + h), color="k", alpha=0.12)
        ax.errorbar(x, 100 * m, yerr=100 * h, fmt="none", ecolor="k", capsize=3)  # seen at a lone fraction
        rows = [(f"PCA + KDE, {r}", aug) for r, aug in _recipe_lifts(ref["pca_kde"]).items()]
        rows += [(f"{f}, {r}", aug) for f, d in u["families"].items() for r, aug in _recipe_lifts(d).items()]
        for i, (name, aug) in enumerate(rows):
            ps = [p for p in fracs if p in aug]
            dodge = 1.05 ** ((i // 2 + 1) * (-1) ** i)  # beside real only, alternately right and left
            ax.errorbar([100 * float(p) * dodge for p in ps],
                        [100 * aug[p][c]["augmented"]["mean"] for p in ps],
                        yerr=[100 * aug[p][c]["augmented"]["ci95"] for p in ps],
                        fmt="s--" if name.startswith("PCA") else "o-", ms=4, capsize=3,
                        label=f"+ {name}")  # fmt: skip
        ax.set(xscale="log", xlabel="real training data (%, log)", ylabel="test accuracy (%)", title=c,
               xlim=(min(x) / 1.6, max(x) * 1.6))  # fmt: skip
        ax.set_xticks(x, [f"{v:g}" for v in x])
        ax.set_xticks([], minor=True)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    proto = ref["protocol"]
    name = proto.get("primary_recipe", "plain")
    k = proto.get("recipes", {}).get(name, {}).get("synthetic_per_real", proto.get("synthetic_per_real", 1))
    fig.suptitle(
        f"Real data with and without synthetic images (recipe {name}: up to {k:g} per real one)", fontsize=10
    )
    fig.tight_layout()
    return _fig(fig)


# ---------------------------------------------------------------- human evaluation


def human_table(human: dict[str, Any], families: dict[str, Any]) -> dict[str, Any]:
    """A human study's HYPE error per family beside the Fréchet distance and precision/recall,
    with each ranking's rank and Kendall's tau between the human ranking (a higher error is
    better: more generated images taken for real) and each metric's. A family whose figures are
    of another model than the one the study drew from (trained again, the study made of the new
    model, its evaluation not redone) has no metrics here (``earlier``), as `genzoo judge results`
    leaves it out of its tau."""
    scored = [f for f, d in human["families"].items() if d.get("error") is not None]
    drawn = human.get("models") or {}
    earlier = [
        f for f in scored
        if f in families and f in drawn and families[f]["quality"].get("model_sha256") not in (None, drawn[f])
    ]  # fmt: skip
    both = [f for f in scored if f in families and f not in earlier]
    q = {f: families[f]["quality"] for f in both}
    err = {f: human["families"][f]["error"] for f in scored}
    # ties share a rank (1, 2, 2, 4): three families at 66.7% are not 2nd, 3rd and 4th by name
    rank = {
        f: 1 + sum(err[g] > err[f] + 1e-12 for g in scored) for f in sorted(scored, key=lambda f: -err[f])
    }
    fd_rank = {f: 1 + sum(q[g]["fd"] < q[f]["fd"] - 1e-12 for g in both) for f in both}
    bt = (human.get("pairwise") or {}).get("families", {})
    rows = []
    for f in scored:
        d = human["families"][f]
        rows.append({
            "family": f, "error": d["error"], "ci95": d["ci95"], "fake_error": d["fake_error"],
            "rank": rank[f], "fd": q[f]["fd"] if f in q else None, "fd_rank": fd_rank.get(f),
            "precision": q[f]["precision"] if f in q else None, "recall": q[f]["recall"] if f in q else None,
            "theta": bt[f]["theta"] if f in bt else None, "theta_ci95": bt[f]["ci95"] if f in bt else None,
            "n_fake": d.get("n_fake"), "n_real": d.get("n_real"), "raters": d.get("raters"),
        })  # fmt: skip
    tau = {}
    if len(both) >= 2:
        tau = {
            "fd": kendall_tau([err[f] for f in both], [-q[f]["fd"] for f in both]),
            "precision": kendall_tau([err[f] for f in both], [q[f]["precision"] for f in both]),
        }
    return {"study": human["study"], "rows": rows, "tau": tau, "raters": human["raters"], "earlier": earlier,
            "groups": (human.get("pairwise") or {}).get("groups"),
            "real": human["real"], "agreement": human["agreement"], "answers": human["answers"],
            "protocol": human["protocol"]}  # fmt: skip


# ---------------------------------------------------------------- pictures


def _png(img) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fig(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _samples(path: Path, key: str | None = None) -> tuple[torch.Tensor, np.ndarray] | None:
    """An evaluation's samples, as images in [0, 1] and labels; None when missing, unreadable or
    (``key``: the figures' evaluation key) written by another evaluation than the figures' (one
    cut short after its first seed: newer pictures beside older numbers)."""
    try:
        with np.load(path) as z:
            if key is not None and "key" in z.files and str(z["key"]) != key:
                return None
            return torch.from_numpy(z["images"].astype(np.float32) / (int(z["levels"]) - 1)), z["labels"]
    except (OSError, KeyError, ValueError):
        return None


def _per_class(images: torch.Tensor, labels: np.ndarray, per: int, classes: int) -> list[torch.Tensor]:
    """The first ``per`` images of each class, by class number (a class with none: no image, its
    row kept: the classes present alone shifted every row after a missing one)."""
    return [images[np.flatnonzero(labels == c)[:per]] for c in range(classes)]


def sample_grids(
    params: Params, families: dict[str, Any], evaluator_key: str | None = None
) -> dict[str, Any]:
    """Grids: one per family (a row per class) and one per class (a row per source), each of the
    evaluation whose figures the page shows (``not_shown``: the sources whose samples are of
    another, with the command that measures them again)."""
    folder = evaluation_dir(params)
    xt, yt, manifest = load_split(params.data.prepared_dir, "test")
    sources = {"real (test)": (xt, yt.numpy())}
    not_shown = []
    drawn = [(f, folder / f / "samples.npz", d["quality"].get("key"), f"evaluate --family {f}")
             for f, d in families.items()]  # fmt: skip
    drawn += [(title, folder / "evaluator" / f"{name}_samples.npz", evaluator_key, "evaluate")
              for name, title in BASELINE_NAMES.items()]  # fmt: skip
    for title, path, key, command in drawn:
        s = _samples(path, key)
        if s is not None:
            sources[title] = s
        elif path.exists():
            why = "of an evaluation cut short" if npz_key(path) else "unreadable"
            not_shown.append(f"{title} (its samples {why}: {params.command(command)})")
    per = 10
    classes = int(manifest["num_classes"])
    split = {k: _per_class(*v, per, classes) for k, v in sources.items()}

    def padded(rows: list[torch.Tensor]) -> torch.Tensor:  # each row ``per`` wide (grey where short)
        return torch.cat([torch.cat([r, torch.full((per - len(r), *r.shape[1:]), 0.5)]) for r in rows])

    # a row per class even where a class has fewer than ``per`` images (rows slid into the next);
    # large images not enlarged past figures.grid_scale (a 128x128 grid at 4x: 6 MB of PNG)
    scale = min(4, grid_scale(*xt.shape[-2:]))
    by_source = {k: _png(grid(padded(v), nrow=per, scale=scale)) for k, v in split.items()}
    names = manifest.get("class_names") or [str(c) for c in range(classes)]
    by_class = []
    for c, name in enumerate(names):
        rows = [v[c] for v in split.values()]
        by_class.append({"name": name, "img": _png(grid(padded(rows), nrow=per, scale=scale))})
    return {"by_source": by_source, "by_class": by_class, "row_labels": list(split), "not_shown": not_shown}


LATENT_STRIPS = {  # latent.npz key -> caption ({ends}: what the path joins, by the latent's kind)
    "spherical": "spherical interpolation {ends}",
    "linear": "linear interpolation {ends}",
    "arithmetic": "class arithmetic: real, then its code moved from its class mean to the next class's",
    "every_label": "real, then its code decoded under every label",
}


def anomaly_sets(anomaly: dict[str, Any]) -> list[str]:
    """The anomaly table's columns: the sets in the order the benchmark scores them (obvious to
    subtle, photo patches), then the held-out classes by number (sorted by name, held_out_class_10
    came before held_out_class_2 and blank first)."""
    order: list[str] = []
    for a in anomaly.values():
        order += [k for k in a["sets"] if k not in order]
    held = re.compile(r"held_out_class_([0-9]+)")
    return sorted(
        order, key=lambda k: (1, int(m[1]), 0) if (m := held.fullmatch(k)) else (0, 0, order.index(k))
    )


def latent_strips(params: Params, families: dict[str, Any], rows: int = 5) -> list[dict[str, Any]]:
    """Per family with a latent space: its smoothness figures and the strips (first ``rows``)."""
    out = []
    for f, d in families.items():
        lat = d["quality"].get("latent")
        if not lat:
            continue
        path = evaluation_dir(params) / f / "latent.npz"
        if npz_key(path) not in (None, d["quality"].get("key")):  # of an evaluation cut short
            continue
        try:
            with np.load(path) as z:
                strips = {k: z[k] for k in LATENT_STRIPS if k in z.files}
        except OSError:
            continue
        imgs = []
        # an encoder's paths join two real images, shown at the ends; a decoder's two prior codes
        ends = "(real images at the ends)" if lat["kind"] == "encoder" else "between two prior codes"
        for key, caption in LATENT_STRIPS.items():
            if key in strips:
                s = torch.from_numpy(strips[key][:rows]).float()
                scale = min(4, grid_scale(*s.shape[-2:]))
                imgs.append(
                    {
                        "caption": caption.format(ends=ends),
                        "img": _png(grid(s.flatten(0, 1), nrow=s.shape[1], scale=scale)),
                    }
                )
        out.append({"family": f, "kind": lat["kind"], "smoothness": lat["smoothness"], "strips": imgs})
    return out


def no_latent(families: dict[str, Any]) -> list[str]:
    """The evaluated families whose models have no latent space (neither encode nor decode: PixelCNN,
    autoregressive), named in the report's latent section rather than left out of it silently."""
    from genzoo import models
    from genzoo.models.base import Decoder, Encoder

    return [
        f for f in families if f in models.REGISTRY and not issubclass(models.REGISTRY[f], Encoder | Decoder)
    ]


def log_axis_interval(value: float, ci: float) -> tuple[float, float]:
    """The error bar's (below, above) lengths of ``value ± ci`` on a log axis: an interval reaching
    0 or below has no end there (matplotlib drops the bar or stretches the axis by decades), so its
    lower part stops at half the value."""
    return (ci if ci < value else value / 2), ci


def plots(params: Params, data: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams, ref = data["families"], data["reference"]
    baselines = {BASELINE_NAMES[k]: ref[k] for k in BASELINE_NAMES if k in ref}
    out: dict[str, str | None] = {"curves": None}  # (no family with a loss curve: none)

    fig, ax = plt.subplots(figsize=(5.5, 4))
    cut = False
    for name, q in [*((f, d["quality"]) for f, d in fams.items()), *baselines.items()]:
        marker = "o" if name in fams else "s"
        low, high = log_axis_interval(q["fd"], q["ci95"]["fd"])
        line = ax.errorbar(q["images_per_second"], q["fd"], yerr=[[low], [high]], fmt=marker, capsize=3,
                           label=name)  # fmt: skip
        if low < high:  # cut: a mark at the end drawn
            ax.plot(q["images_per_second"], q["fd"] - low, "v", ms=4, c=line[0].get_color())
            cut = True
        ax.annotate(
            name, (q["images_per_second"], q["fd"]), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    ax.axhline(ref["real_train_vs_test"]["fd"], ls="--", c="gray", lw=1, label="real train vs test (floor)")
    if cut:
        ax.plot([], [], "v", ms=4, c="gray", label="interval reaching 0 (cut)")
    ax.set(xscale="log", yscale="log", xlabel="sampling speed (images/s, log)",
           ylabel="Fréchet distance (lower is better, log)",
           title="Sample quality vs sampling speed")  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)  # beside the points
    out["quality_vs_speed"] = _fig(fig)

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    rows = [*((f, d["quality"]) for f, d in fams.items()), *baselines.items(),
            ("real train vs test", ref["real_train_vs_test"])]  # fmt: skip
    for name, q in rows:
        marker = "o" if name in fams else "s" if name in baselines else "x"
        ax.errorbar(q["recall"], q["precision"], xerr=q["ci95"]["recall"], yerr=q["ci95"]["precision"],
                    fmt=marker, capsize=2, label=name)  # fmt: skip
    low = min(min(q["recall"], q["precision"]) for _, q in rows) - 0.05
    ax.set(xlim=(low, 1.005), ylim=(low, 1.005), xlabel="recall (diversity)", ylabel="precision (fidelity)",
           title="Precision vs recall")  # fmt: skip
    noise = ref["uniform_noise"]
    if min(noise["recall"], noise["precision"]) >= low:  # within the chart: drawn as the others
        ax.plot(noise["recall"], noise["precision"], "+", c="gray", ms=8, label="uniform noise")
    else:
        note = (
            f"uniform noise (off the chart): precision {noise['precision']:.2f}, recall {noise['recall']:.2f}"
        )
        ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="gray")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    ax.grid(alpha=0.3)
    out["precision_recall"] = _fig(fig)

    curves = {f: (d["metrics"]["curve"]["step"], d["metrics"]["curve"]["loss"]) for f, d in fams.items()}
    curves = {f: c for f, c in curves.items() if c[0]}
    if curves:
        fig, axes = plt.subplots(1, len(curves), figsize=(3 * len(curves), 2.6), squeeze=False)
        for ax, (f, (steps, loss)) in zip(axes[0], curves.items(), strict=True):
            ax.plot(steps, loss, lw=1.2)
            ax.set_title(f, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        fig.suptitle("Training loss (each family's own objective)", fontsize=10)
        fig.tight_layout()
        out["curves"] = _fig(fig)
    return out


# ---------------------------------------------------------------- the page

METRIC_COLUMNS = [  # (key, label, better, digits)
    ("fd", "Fréchet distance", "lower", 3),
    ("fd_per_class_mean", "per-class FD", "lower", 3),
    ("kid", "KID", "lower", 4),
    ("precision", "precision", "higher", 3),
    ("recall", "recall", "higher", 3),
    ("density", "density", "≈1", 3),
    ("coverage", "coverage", "higher", 3),
    ("class_accuracy", "class accuracy", "higher", 3),
    ("inception_score", "IS analogue", "higher", 2),
    ("diversity", "diversity", "≈real", 2),
    ("memorization.ratio", "NN to train, vs real", "≈1", 3),
    ("sharpness", "sharpness", "≈real", 3),
    ("images_per_second", "images/s", "higher", 0),
]


UNTIMED_CI = {"images_per_second"}


def _get(d: dict[str, Any], dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _cell(q: dict[str, Any], key: str, digits: int) -> str:
    v = _get(q, key)
    if v is None:
        return "—"
    ci = _get(q.get("ci95", {}), key)
    # (a speed's spread over seeds is the machine's load, not the seeds': no interval)
    return f"{v:.{digits}f}" + (f" ± {ci:.{digits}f}" if ci and key not in UNTIMED_CI else "")


def metric_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for f, d in data["families"].items():
        m = d["metrics"]
        bpd = m.get("test_bpd")
        rows.append({
            "name": f, "kind": "family",
            "bpd": f"{bpd:.3f} ({m.get('bpd_estimator')})" if bpd is not None else "none",
            "train": f"{m['train_seconds']:.0f} s" if m.get("train_seconds") is not None else "—",
            "latency": f"{d['quality']['latency_ms']:.1f} ms",
            "cells": [_cell(d["quality"], k, n) for k, _, _, n in METRIC_COLUMNS],
        })  # fmt: skip
    ref = data["reference"]
    for key, title in [("real_train_vs_test", "real train vs test (floor)"), *BASELINE_NAMES.items(),
                       ("uniform_noise", "uniform noise")]:  # fmt: skip
        if key not in ref:
            continue
        q = ref[key]
        bpd = q.get("test_bpd")
        rows.append({
            "name": BASELINE_NAMES.get(key, title), "kind": "reference",
            "bpd": f"{bpd:.3f} (dequantised)" if bpd is not None else "—",
            "train": f"{q['fit_seconds']:.1f} s fit" if "fit_seconds" in q else "—", "latency": "—",
            "cells": [_cell(q, k, n) for k, _, _, n in METRIC_COLUMNS],
        })  # fmt: skip
    return rows


TEMPLATE = Path(__file__).with_name("report.html.j2")  # Jinja2, autoescaped


def _source(source: str) -> str:
    """``data.source`` as the page names it: a folder or file inside the project relative to it
    (the page is shared; the machine's home folder need not be)."""
    kind, sep, path = source.partition(":")
    return f"{kind}:{shown(path)}" if sep and path else source


def render(params: Params, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    import jinja2

    table = tradeoff(data["families"])
    goal = targets(data["families"], data["reference"])
    spaces = judges(data["families"], data["reference"], data["evaluator"])
    useful = usefulness_targets(data["usefulness"]) if data["usefulness"] else None
    human = human_table(data["human"], data["families"]) if data.get("human") else None
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    html = env.from_string(TEMPLATE.read_text()).render(
        data_source=_source(params.data.source),
        profile=params.profile,
        steps={f: d["metrics"].get("steps") for f, d in data["families"].items()},
        evaluator=data["evaluator"],
        protocol=data["reference"]["protocol"],
        real_test=data["reference"]["real_test"],
        missing=data["missing"],
        earlier=data["earlier"],
        other_settings=data["other_settings"],
        targets=goal,
        judges=spaces,
        judges_rows=judges_table(spaces) if spaces else [],
        spaces_floor_ratio=SPACES_FLOOR_RATIO,
        spaces_accuracy=SPACES_ACCURACY,
        grids=sample_grids(params, data["families"], data["evaluator"].get("key")),
        evaluate_again=params.command("evaluate"),
        columns=METRIC_COLUMNS,
        metric_rows=metric_rows(data),
        noise=data["reference"].get("uniform_noise"),
        loose_precision=LOOSE_PRECISION,
        latency_repeats=params.evaluate.latency_repeats,
        tradeoff=table,
        tradeoff_columns=["quality", "density", "training", "sampling", "diversity", "sharpness"],
        tradeoff_rules=TRADEOFF_RULES,
        plots=plots(params, data),
        latent=latent_strips(params, data["families"]),
        no_latent=no_latent(data["families"]),
        usefulness=data["usefulness"],
        usefulness_targets=useful,
        usefulness_plot=usefulness_plot(data["usefulness"]) if data["usefulness"] else None,
        anomaly=data["anomaly"],
        human=human,
        anomaly_sets=anomaly_sets(data["anomaly"]),
        anomaly_quantiles=sorted({a.get("quantile") for a in data["anomaly"].values()}, key=str),
        # a held-out class by its name (held_out_class_2 is zero where the classes sort one, two, zero)
        anomaly_labels={
            k: st["label"] for a in data["anomaly"].values() for k, st in a["sets"].items() if "label" in st
        },  # fmt: skip
    )
    return html, {"targets": goal, "tradeoff": table, "usefulness": useful, "human": human, "judges": spaces}


def _csv_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    keys = ("fd", "kid", "precision", "recall", "density", "coverage", "images_per_second")
    rows = [
        {"name": f, "kind": "family", **{k: d["quality"][k] for k in keys}}
        for f, d in data["families"].items()
    ]
    for k in ("real_train_vs_test", *BASELINE_NAMES, "uniform_noise"):
        if k in data["reference"]:
            q = data["reference"][k]
            rows.append({"name": k, "kind": "reference", **{c: q.get(c, "") for c in keys}})
    return rows


def build_report(params: Params) -> dict[str, Any]:
    """Write runs/report/{index.html, summary.json, families.csv}; returns the summary."""
    data = collect(params)
    html, extra = render(params, data)
    out = Path(params.run.runs_dir) / "report"
    summary = {
        "families": {
            f: {
                "fd": d["quality"]["fd"],
                "fd_ci95": d["quality"]["ci95"]["fd"],
                "precision": d["quality"]["precision"],
                "recall": d["quality"]["recall"],
                "coverage": d["quality"]["coverage"],
                "images_per_second": d["quality"]["images_per_second"],
                **(
                    {"test_bpd": d["metrics"]["test_bpd"]} if d["metrics"].get("test_bpd") is not None else {}
                ),
            }
            for f, d in data["families"].items()
        },
        "targets": {k: v for k, v in extra["targets"].items() if k != "below_pca_kde"},
        "evaluator_test_accuracy": data["evaluator"].get("test_accuracy"),
    }
    if params.profile:
        summary["profile"] = params.profile
    if data["missing"]:  # what the page leaves out, each with why
        summary["left_out"] = data["missing"]
    if data["earlier"]:  # shown, but of a model trained before the one in runs/
        summary["of_an_earlier_model"] = data["earlier"]
    if data["other_settings"]:  # shown, of a model made with other params, data or code than these
        summary["trained_with_other_settings"] = data["other_settings"]
    if extra["usefulness"]:
        summary["usefulness"] = extra["usefulness"]
    if extra["human"]:  # the latest human study, for `dvc metrics show`
        h = extra["human"]
        summary["human"] = {"study": h["study"], "kendall_tau": h["tau"],
                            "error": {r["family"]: r["error"] for r in h["rows"]}}  # fmt: skip
    if extra["judges"]:
        j = extra["judges"]
        summary["spaces"] = {k: j[k] for k in ("fd", "ranks", "kendall_tau", "per_space", "targets")}
    buf = io.StringIO()
    rows = _csv_rows(data)
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "families.csv", buf.getvalue())
    atomic_write_text(out / "summary.json", json.dumps(json_safe(summary), indent=2, allow_nan=False))
    atomic_write_text(out / "index.html", html)
    return summary


def main(argv: list[str] | None = None) -> None:
    params, _ = stage_args(argv, "The HTML report of the trained and evaluated families.")
    with exclusive(params.run.runs_dir):
        build_report(params)
    log.info(
        "report: %s", Path(params.run.runs_dir) / "report" / "index.html"
    )  # (the CLI and flow say it their way)


if __name__ == "__main__":
    sys.exit(exit_code(main, "report"))
