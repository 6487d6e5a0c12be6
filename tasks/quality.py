"""Judging images (ground floor): the figures in the evaluator's feature space that every
stage judging samples reports (``evaluate@<family>``, the reference rows, ``augment``) with
the real features they are judged against (``runs/evaluation/evaluator/features.npz``, written
by the ``evaluator`` stage), and the same core figures in the other judges' feature spaces
(``models/judges.py``; real features under ``<judge>.train`` / ``<judge>.test`` there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genzoo.metrics.quality import (
    MEMORIZATION_ROWS,
    copy_floor,
    diversity,
    frechet_distance,
    inception_score,
    kid,
    kth_nn_radius,
    mean_ci,
    memorization,
    nearest,
    prdc,
)
from genzoo.tasks.config import Params, flatten, nest


def real_features(folder: Path) -> dict[str, Any] | None:
    """The evaluator's features of the real splits (``train``, ``test`` (N, D), ``test_labels``
    (N,), ``levels``) from ``folder``/features.npz; None before the evaluator stage."""
    try:
        with np.load(folder / "features.npz") as z:
            real = {k: z[k] for k in z.files}
    except OSError:
        return None
    real["levels"] = int(real["levels"])
    return real


def _radii(real: dict, key: str, k: int) -> np.ndarray:
    """The k-NN radii of ``real[key]``, computed once per ``real`` (every seed and family scored
    against it reuses them: on a large test split they cost more than the fake side)."""
    name = f"{key}.radii.k{k}"
    if name not in real:
        real[name] = kth_nn_radius(real[key], k)
    return real[name]


def _rows(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows of ``x`` drawn with ``seed`` (in their order), or all of them: a draw's images come
    sorted by class (a folder's training split too), so its first ``n`` rows would be its first classes."""
    if len(x) <= n:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), n, replace=False))]


def _memorization(real: dict, fake: np.ndarray, seed: int, drawn: np.ndarray | None) -> dict[str, Any]:
    """Memorization of (a seeded draw of up to MEMORIZATION_ROWS of) ``fake`` against the whole
    training split, beside as many real test images; ``drawn``: rows of the training split that
    ``fake`` is (the floor's real images), left out of the training images they are measured
    against. The copy radius and the test images' distances are computed once per ``real``."""
    test, train = real["test"], real["train"]
    if drawn is not None:  # (a training image's nearest training image is itself)
        # at most half the drawn images, measured against the training split without them: the
        # rest of the draw at least (a draw of every training image left none to measure against)
        pick = _rows(np.arange(len(fake)), max(2, min(len(test), MEMORIZATION_ROWS, len(fake) // 2)), seed)
        mine, held = fake[pick], _rows(test, len(pick), seed)
        return {**memorization(mine, np.delete(train, drawn[pick], axis=0), held), "images": len(mine)}
    mine = _rows(fake, min(len(test), MEMORIZATION_ROWS), seed)
    held = _rows(test, len(mine), seed)
    if "train.copy_floor" not in real:
        real["train.copy_floor"] = copy_floor(train)
    name = f"test.nn_train.{seed}.{len(held)}"
    if name not in real:
        real[name] = nearest(held, train)
    m = memorization(mine, train, held, floor=real["train.copy_floor"], held_out_nn=real[name])
    return {**m, "images": len(mine)}


def scores(params: Params, fake: np.ndarray, probs: np.ndarray | None, labels: np.ndarray | None,
           real: dict, seed: int = 0, drawn: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """Every quality figure of one feature set against the real test features (``drawn``: the
    rows of the training split ``fake`` is, for the real-vs-real floor)."""
    e = params.evaluate
    test = real["test"]
    kid_mean, kid_std = kid(fake, test, e.kid_subsets, e.kid_subset_size, seed=seed)
    out: dict[str, Any] = {
        "fd": frechet_distance(fake, test),
        "kid": kid_mean,
        "kid_std": kid_std,
        **prdc(test, fake, k=e.k, real_radii=_radii(real, "test", e.k)),
        "diversity": diversity(fake),
        "memorization": _memorization(real, fake, seed, drawn),
    }
    if probs is not None:
        out["inception_score"], out["inception_score_std"] = inception_score(probs, seed=seed)
    if labels is not None and probs is not None:
        out["class_accuracy"] = float((probs.argmax(1) == labels).mean())
    if labels is not None:  # (the floor's too: per-class distances of so few images sit well above 0)
        per = {}
        for c in np.unique(labels):
            f, r = fake[labels == c], test[real["test_labels"] == c]
            if len(f) > 2 and len(r) > 2:
                per[str(int(c))] = frechet_distance(f, r)
        out["fd_per_class"] = per
        if per:
            out["fd_per_class_mean"] = float(np.mean(list(per.values())))
    return out


# the figures measured in every feature space (the evaluator's ``cnn`` and each judge's)
SPACE_FIGURES = ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy")


def space_scores(
    params: Params,
    spaces: dict[str, tuple[np.ndarray, np.ndarray | None]],
    labels: np.ndarray | None,
    real: dict,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """The core figures of one image set in each judge's space: ``spaces`` maps a judge to the
    set's features (N, D) and, for a classifier, its probabilities (N, K) (or None), scored
    against that judge's real test features. Class accuracy where the judge classifies and
    the labels are given. No pairwise work beyond prdc's (the k-NN balls)."""
    e = params.evaluate
    out = {}
    for name, (fake, probs) in spaces.items():
        test = real[f"{name}.test"]
        r = {"fd": frechet_distance(fake, test),
             "kid": kid(fake, test, e.kid_subsets, e.kid_subset_size, seed=seed)[0],
             **prdc(test, fake, k=e.k, real_radii=_radii(real, f"{name}.test", e.k))}  # fmt: skip
        if probs is not None and labels is not None:
            r["class_accuracy"] = float((probs.argmax(1) == labels).mean())
        out[name] = r
    return out


def in_spaces(cnn: dict[str, Any], others: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Every space's core figures: the evaluator's (``cnn``, picked from ``scores``) first."""
    return {"cnn": {k: cnn[k] for k in SPACE_FIGURES if k in cnn}, **others}


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-seed figures -> their means (same nesting), ``ci95`` (half-widths of the 95%
    Student-t interval) and the per-seed values themselves."""
    flats = [flatten(r) for r in per_seed]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    stats = {k: mean_ci([f[k] for f in flats]) for k in keys}
    return {
        **nest({k: m for k, (m, _) in stats.items()}),
        "ci95": nest({k: h for k, (_, h) in stats.items()}),
        "per_seed": per_seed,
    }
