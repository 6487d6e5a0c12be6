"""Judging images (ground floor): the figures in the evaluator's feature space that every
stage judging samples reports (``evaluate@<family>``, the reference rows, ``augment``) with
the real features they are judged against (``runs/evaluation/evaluator/features.npz``, written
by the ``evaluator`` stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genzoo.metrics.quality import (
    diversity,
    frechet_distance,
    inception_score,
    kid,
    mean_ci,
    memorization,
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


def scores(params: Params, fake: np.ndarray, probs: np.ndarray | None, labels: np.ndarray | None,
           real: dict, seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """Every quality figure of one feature set against the real test features."""
    e = params.evaluate
    test, train = real["test"], real["train"]
    kid_mean, kid_std = kid(fake, test, e.kid_subsets, e.kid_subset_size, seed=seed)
    out: dict[str, Any] = {
        "fd": frechet_distance(fake, test),
        "kid": kid_mean,
        "kid_std": kid_std,
        **prdc(test, fake, k=e.k),
        "diversity": diversity(fake),
        "memorization": memorization(fake[: len(test)], train[: len(test)], test),
    }
    if probs is not None:
        out["inception_score"], out["inception_score_std"] = inception_score(probs)
    if labels is not None and probs is not None:
        out["class_accuracy"] = float((probs.argmax(1) == labels).mean())
        per = {}
        for c in np.unique(labels):
            f, r = fake[labels == c], test[real["test_labels"] == c]
            if len(f) > 2 and len(r) > 2:
                per[str(int(c))] = frechet_distance(f, r)
        out["fd_per_class"] = per
        if per:
            out["fd_per_class_mean"] = float(np.mean(list(per.values())))
    return out


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
