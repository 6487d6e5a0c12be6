"""Does synthetic data help a downstream classifier? Measured without leaks (DVC stages
``usefulness-reference`` and ``usefulness@<family>``; the pipeline runs them after evaluation).

Two questions, answered with a small CNN (the evaluator's architecture, its own budget) and a
logistic regression on pixels as a second opinion, each accuracy on the real test split, over
``usefulness.seeds`` seeds (classifier initialisation and synthetic draw), as mean and 95%
Student-t interval:

- **Train on synthetic, test on real** (TSTR): a classifier trained only on as many synthetic
  images as the real training split holds, from the family trained on the whole split, against
  the same classifier trained on the real split.
- **Augmentation**: a classifier trained on a fraction p of the real training split (stratified,
  ``usefulness.subset_seed``), with and without k synthetic images per real one
  (``synthetic_per_real``) from a generator trained on **that same subset only** (trained here
  for p < 1, the pipeline's model for p = 1): a generator trained on all the data would smuggle
  the other images into the small setting. The lift is the paired difference (same seed).

The reference rows come from the same code: real data alone, and a class-conditional PCA +
kernel-density generator fitted on the same subset (``runs/evaluation/usefulness/reference.
json``). A family's figures go to ``runs/evaluation/<family>/usefulness.json`` and its MLflow
run; the generators trained on subsets to ``runs/evaluation/<family>/subsets/``. Cached: a
second call with the same params, data, models and code returns the stored figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genzoo import models
from genzoo.metrics.quality import mean_ci
from genzoo.models.base import DataSpec, atomic_write_text, sha256_file
from genzoo.models.classical import PCAKDE
from genzoo.models.evaluator import accuracy, train_evaluator
from genzoo.models.trainer import TrainConfig
from genzoo.tasks import tracking
from genzoo.tasks.config import Params, fingerprint, stage_args
from genzoo.tasks.data import data_hash, data_spec, load_split
from genzoo.tasks.errors import exit_code
from genzoo.tasks.layout import (
    cached_variant,
    code_hash,
    evaluation_dir,
    exclusive,
    family_dir,
    read_json,
    resolve_device,
    train_variant,
    variant_key,
)
from genzoo.tasks.sample import draw as draw_images

log = logging.getLogger("genzoo.usefulness")

Draw = Callable[[torch.Tensor, int], torch.Tensor]  # (labels, seed) -> images in [0, 1]
Data = tuple[torch.Tensor, torch.Tensor]


def folder(params: Params) -> Path:
    return evaluation_dir(params) / "usefulness"


def families(params: Params) -> list[str]:
    """The families measured: ``usefulness.families`` that are in ``models``."""
    return [f for f in params.usefulness.families if f in params.models]


# ----------------------------------------------------------------------------- pieces


def subset(y: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a stratified ``fraction`` of ``y`` (at least 5 per class, so every class is
    there and PCA + KDE can be fitted), sorted; the whole set for fraction 1."""
    if fraction >= 1:
        return torch.arange(len(y))
    rng = np.random.default_rng(seed)
    labels = y.numpy()
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = min(len(idx), max(5, round(fraction * len(idx))))
        keep.append(rng.choice(idx, n, replace=False))
    return torch.from_numpy(np.sort(np.concatenate(keep)))


def synthetic_labels(y: torch.Tensor, k: float, num_classes: int) -> torch.Tensor:
    """k synthetic labels per real one, class by class (the real subset's class balance)."""
    counts = torch.bincount(y, minlength=num_classes).double() * k
    return torch.arange(num_classes).repeat_interleave(counts.round().long())


def classifier_accuracy(
    kind: str, train: Data, test: Data, spec: DataSpec, params: Params, seed: int
) -> float:
    """Accuracy on ``test`` of a ``kind`` classifier ("cnn" | "logistic") trained on ``train``."""
    x, y = train
    if kind == "cnn":
        return accuracy(train_evaluator(x, y, spec, params.usefulness.cnn, seed=seed), *test)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=params.usefulness.logistic_c, max_iter=5000, random_state=seed)
        clf.fit(x.flatten(1).numpy(), y.numpy())
        return float((clf.predict(test[0].flatten(1).numpy()) == test[1].numpy()).mean())
    raise ValueError(f"usefulness.classifiers: unknown classifier {kind!r} (cnn, logistic)")


def stats(values: list[float]) -> dict[str, Any]:
    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half, "per_seed": list(values)}


def accuracies(params: Params, train: Data, test: Data, spec: DataSpec, draw: Draw | None = None,
               k: float | None = None, only_synthetic: bool = False) -> dict[str, list[float]]:  # fmt: skip
    """Per classifier, the test accuracy for each seed: trained on ``train``, plus (or, with
    ``only_synthetic``, instead) k synthetic images per real one from ``draw``."""
    u = params.usefulness
    out: dict[str, list[float]] = {c: [] for c in u.classifiers}
    for seed in range(u.seeds):
        x, y = train
        if draw is not None:
            ys = synthetic_labels(y, u.synthetic_per_real if k is None else k, spec.num_classes)
            xs = draw(ys, seed).float().cpu()
            x, y = (xs, ys) if only_synthetic else (torch.cat([x, xs]), torch.cat([y, ys]))
        for c in u.classifiers:
            out[c].append(classifier_accuracy(c, (x, y), test, spec, params, seed))
    return out


def _lift(aug: dict[str, list[float]], real: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        c: {
            "augmented": stats(v),
            "lift": stats([a - r for a, r in zip(v, real[c]["per_seed"], strict=True)]),
        }
        for c, v in aug.items()
    }


def model_draw(model) -> Draw:
    return lambda labels, seed: draw_images(model, len(labels), labels=labels, seed=seed, batch=500)[0]


def pca_kde_draw(params: Params, train: Data, spec: DataSpec) -> Draw:
    fitted = PCAKDE(spec, params.evaluate.baselines).fit(*train, seed=params.seed)
    return lambda labels, seed: fitted.sample(len(labels), labels, seed=seed)


def _splits(params: Params) -> tuple[Data, Data, DataSpec, dict]:
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    return (x, y), (xt, yt), data_spec(manifest), manifest


def _protocol(params: Params, n_train: int, n_test: int) -> dict[str, Any]:
    u = params.usefulness
    return {
        "fractions": u.fractions,
        "synthetic_per_real": u.synthetic_per_real,
        "seeds": u.seeds,
        "subset_seed": u.subset_seed,
        "classifiers": u.classifiers,
        "cnn_steps": u.cnn.steps,
        "n_train": n_train,
        "n_test": n_test,
        "test": "real test split",
        "interval": "95% Student-t over classifier and sampling seeds; one subset and generator per fraction",
    }


# ----------------------------------------------------------------------------- stages


def reference(params: Params) -> dict[str, Any]:
    """Real data alone at every fraction, and PCA + KDE fitted on the same subsets (TSTR and
    augmentation) -> runs/evaluation/usefulness/reference.json."""
    train, test, spec, manifest = _splits(params)
    u = params.usefulness
    key = fingerprint(
        {"u": u.model_dump(mode="json", exclude={"families", "train"}), "seed": params.seed,
         "baselines": params.evaluate.baselines.model_dump(mode="json"),
         "threads": params.threads("evaluator"), "data": data_hash(manifest), "code": code_hash("usefulness")}
    )[:16]  # fmt: skip
    out = folder(params) / "reference.json"
    done = read_json(out)
    if done and done.get("key") == key:
        return done
    torch.set_num_threads(params.threads("evaluator"))
    t0 = time.perf_counter()
    real, pca_kde = {}, {}
    for p in u.fractions:
        part = tuple(t[subset(train[1], p, u.subset_seed)] for t in train)
        real[str(p)] = {c: stats(v) for c, v in accuracies(params, part, test, spec).items()}
        draw = pca_kde_draw(params, part, spec)
        pca_kde[str(p)] = _lift(accuracies(params, part, test, spec, draw), real[str(p)])
        log.info(
            "usefulness reference %.2f: real %s", p, {c: round(r["mean"], 4) for c, r in real[str(p)].items()}
        )
    tstr = accuracies(
        params, train, test, spec, pca_kde_draw(params, train, spec), k=1.0, only_synthetic=True
    )
    result = {
        "key": key,
        "protocol": _protocol(params, len(train[1]), len(test[1])),
        "real": real,  # train on real (the whole split at 1.0: TSTR's reference)
        "pca_kde": {"tstr": {c: stats(v) for c, v in tstr.items()}, "augmentation": pca_kde},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out, json.dumps(result, indent=2))
    return result


def subset_generator(
    params: Params, family: str, fraction: float, train: Data, spec: DataSpec, manifest: dict
):
    """``family`` trained on the ``fraction`` subset only (cached in
    runs/evaluation/<family>/subsets/); the pipeline's model for fraction 1."""
    device = resolve_device(params.run.device)
    if fraction >= 1:
        path = family_dir(params, family) / "model.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: {family} is not trained; run `genzoo run --families {family}`")
        return models.load(path, device), {"model": str(path), "subset": False}
    idx = subset(train[1], fraction, params.usefulness.subset_seed)
    x, y = train[0][idx], train[1][idx]
    cfg = TrainConfig(**{**params.train_config(family).model_dump(), **params.usefulness.train})
    key = variant_key(params, family, cfg, manifest, "usefulness", subset=idx.tolist())
    path = evaluation_dir(params) / family / "subsets" / f"p{fraction:g}.json"
    info_keys = ("n_real", "steps", "train_seconds")
    if cached := cached_variant(path, key, device):
        model, meta = cached
        return model, {k: meta[k] for k in info_keys}
    model, result = train_variant(
        params, family, x, y, spec, cfg, path,
        lambda r: {"key": key, "fraction": fraction, "n_real": len(y), "steps": r.steps,
                   "train_seconds": round(r.seconds, 1)},
    )  # fmt: skip
    log.info(
        "%s: trained on %d real images (%.0f%%) in %.1f s", family, len(y), 100 * fraction, result.seconds
    )
    return model.eval(), {"n_real": len(y), "steps": result.steps, "train_seconds": round(result.seconds, 1)}


def train_subsets(params: Params, family: str) -> dict[str, Any]:
    """Train (or reuse) ``family`` on every real subset (fractions below 1): the pipeline runs
    this beside the main trainings, since it needs no trained model."""
    params.require(family)
    torch.set_num_threads(params.threads(family))
    train, _, spec, manifest = _splits(params)
    return {
        str(p): subset_generator(params, family, p, train, spec, manifest)[1]
        for p in params.usefulness.fractions
        if p < 1
    }


def measure_family(params: Params, family: str) -> dict[str, Any]:
    """TSTR and the augmentation lift of ``family`` -> runs/evaluation/<family>/usefulness.json
    (needs the reference: :func:`reference`)."""
    ref = read_json(folder(params) / "reference.json")
    if ref is None:
        raise FileNotFoundError(f"{folder(params) / 'reference.json'}: run the usefulness reference first")
    params.require(family)
    model_path = family_dir(params, family) / "model.safetensors"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: {family} is not trained")
    u = params.usefulness
    key = fingerprint(
        {"reference": ref["key"], "model": sha256_file(model_path), "u_train": u.train,
         "family": params.family_block(family), "code": code_hash("usefulness", family)}
    )[:16]  # fmt: skip
    out = evaluation_dir(params) / family / "usefulness.json"
    done = read_json(out)
    if done and done.get("key") == key:
        return done
    torch.set_num_threads(params.threads(family))
    train, test, spec, manifest = _splits(params)
    (out.parent / "subsets").mkdir(parents=True, exist_ok=True)  # DVC's output, also with fractions [1.0]
    t0 = time.perf_counter()
    augmentation, generators = {}, {}
    for p in u.fractions:
        part = tuple(t[subset(train[1], p, u.subset_seed)] for t in train)
        model, generators[str(p)] = subset_generator(params, family, p, train, spec, manifest)
        augmentation[str(p)] = _lift(
            accuracies(params, part, test, spec, model_draw(model)), ref["real"][str(p)]
        )
        log.info("%s at %.2f: lift %s", family, p,
                 {c: round(v["lift"]["mean"], 4) for c, v in augmentation[str(p)].items()})  # fmt: skip
    full, _ = subset_generator(params, family, 1.0, train, spec, manifest)
    tstr = accuracies(params, train, test, spec, model_draw(full), k=1.0, only_synthetic=True)
    result = {
        "family": family,
        "key": key,
        "protocol": ref["protocol"],
        "tstr": {c: stats(v) for c, v in tstr.items()},
        "augmentation": augmentation,
        "generators": generators,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out, json.dumps(result, indent=2))
    numbers = {f"tstr.{c}": s["mean"] for c, s in result["tstr"].items()}
    for p, per in result["augmentation"].items():
        for c, s in per.items():
            numbers |= {f"lift.p{p}.{c}": s["lift"]["mean"], f"lift.p{p}.{c}.ci95": s["lift"]["ci95"]}
    tracking.log_stage(params, family, numbers, prefix="usefulness.", artifact=out)
    return result


def main(argv: list[str] | None = None) -> None:
    params, what = stage_args(
        argv, "Usefulness of synthetic data (DVC stages)", "what", "`reference`, or a family"
    )
    with exclusive(params.run.runs_dir):
        if what == "reference":
            reference(params)
        else:
            measure_family(params, what)


if __name__ == "__main__":
    sys.exit(exit_code(main, "usefulness"))
