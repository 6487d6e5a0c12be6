"""Anomaly-detection figures from scores where higher means "more anomalous". Pure functions;
the ranking statistics are scikit-learn's."""

from __future__ import annotations

import numpy as np


def detection(normal, anomalous) -> dict[str, float]:
    """AUROC, AUPR (anomalies as the positive class) and the false-positive rate on normal
    data at the threshold that catches 95% of the anomalies."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    n, a = np.asarray(normal, dtype=np.float64), np.asarray(anomalous, dtype=np.float64)
    if n.ndim != 1 or a.ndim != 1 or len(n) == 0 or len(a) == 0:
        raise ValueError("expected two non-empty 1-d score arrays")
    if not (np.isfinite(n).all() and np.isfinite(a).all()):
        raise ValueError("scores contain NaN or inf")
    y = np.r_[np.zeros(len(n)), np.ones(len(a))]
    s = np.r_[n, a]
    # the highest threshold that catches at least 95% of the anomalies: the sorted scores' element
    # past the 5% it may miss (an interpolated quantile fell between two scores: 34 of 36 caught)
    threshold = np.sort(a)[len(a) * 5 // 100]
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr": float(average_precision_score(y, s)),
        "fpr_at_95_tpr": float((n >= threshold).mean()),
    }


def typicality(scores, reference) -> np.ndarray:
    """Distance of each score from the reference set's mean score (Nalisnick et al. 2019,
    arXiv:1906.02994): flags inputs that are *too likely* as well as too unlikely."""
    return np.abs(np.asarray(scores, dtype=np.float64) - float(np.mean(reference)))
