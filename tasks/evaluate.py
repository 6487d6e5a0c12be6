"""Evaluation (DVC stages ``evaluator`` and ``evaluate@<family>``; the pipeline's stage after
training).

``evaluator``: a CNN classifier trained on the real training split
(``runs/evaluator/evaluator.{json,safetensors}``), its test accuracy, the real train/test
features (cached, ``features.npz``) and the reference rows measured by the same code —
real train vs real test (the floor) and uniform noise (``reference.json``).

``evaluate@<family>``: ``evaluate.samples_per_class`` images per class from the trained
family, embedded by the evaluator, scored against the real test split: Fréchet distance
(overall and per class), KID, precision/recall/density/coverage, accuracy of the
class-conditional samples, an Inception-Score analogue, memorization, diversity
(``runs/<family>/quality.json``, also logged to the family's MLflow run). Both are skipped
when their inputs (params, data, models, code) are unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import models
from metrics.quality import diversity, frechet_distance, inception_score, kid, memorization, prdc
from models.base import atomic_write, atomic_write_text, sha256_file
from models.evaluator import accuracy, load_evaluator, save_evaluator, train_evaluator
from tasks.config import Params, fingerprint, load_params
from tasks.prepare import data_spec, load_split
from tasks.train import ROOT, data_hash

log = logging.getLogger("genzoo.evaluate")
EVALUATOR_CODE = ("models/evaluator.py", "models/base.py", "tasks/evaluate.py", "metrics/quality.py")


def _code() -> str:
    return fingerprint({f: (ROOT / f).read_bytes().hex() for f in EVALUATOR_CODE})[:16]


def _threads(params: Params) -> int:
    return params.run.threads or 1


def _folder(params: Params) -> Path:
    return Path(params.run.runs_dir) / "evaluator"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def scores(params: Params, fake: np.ndarray, probs: np.ndarray | None, labels: np.ndarray | None, real: dict):
    """Every quality figure of one feature set against the real test features."""
    e = params.evaluate
    test, train = real["test"], real["train"]
    kid_mean, kid_std = kid(fake, test, e.kid_subsets, e.kid_subset_size, seed=params.seed)
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
                per[int(c)] = frechet_distance(f, r)
        out["fd_per_class"] = per
        out["fd_per_class_mean"] = float(np.mean(list(per.values())))
    return out


def evaluator_stage(params: Params) -> dict[str, Any]:
    """Train (or reuse) the evaluator; cache real features; measure the reference rows."""
    folder = _folder(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    key = fingerprint(
        {"cfg": params.evaluate.model_dump(mode="json"), "seed": params.seed, "threads": _threads(params),
         "data": data_hash(manifest), "code": _code()}
    )[:16]  # fmt: skip
    done = _read(folder / "metrics.json")
    if done and done.get("key") == key and (folder / "features.npz").exists():
        return done
    torch.set_num_threads(_threads(params))
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    net = train_evaluator(x, y, data_spec(manifest), params.evaluate.evaluator, seed=params.seed)
    save_evaluator(net, folder / "evaluator", extra={"key": key})
    f_train, _ = net.embed(x)
    f_test, p_test = net.embed(xt)
    real = {"train": f_train.numpy(), "test": f_test.numpy(), "test_labels": yt.numpy()}
    buf = io.BytesIO()
    np.savez(buf, **real)
    atomic_write(folder / "features.npz", lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    levels = manifest["levels"]
    noise = torch.randint(0, levels, x[: len(xt)].shape, generator=torch.Generator().manual_seed(params.seed))
    f_noise, p_noise = net.embed(noise.float() / (levels - 1))
    reference = {
        "real_train_vs_test": scores(params, real["train"], None, None, real),
        "uniform_noise": scores(params, f_noise.numpy(), p_noise.numpy(), None, real),
        "real_test_inception_score": inception_score(p_test.numpy())[0],
    }
    atomic_write_text(folder / "reference.json", json.dumps(reference, indent=2))
    metrics = {"key": key, "test_accuracy": accuracy(net, xt, yt), "features": int(f_test.shape[1])}
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    log.info("evaluator: test accuracy %.4f", metrics["test_accuracy"])
    return metrics


@torch.inference_mode()
def evaluate_family(params: Params, family: str) -> dict[str, Any]:
    """Score ``family``'s samples in the evaluator's feature space -> runs/<family>/quality.json."""
    out = Path(params.run.runs_dir) / family
    folder = _folder(params)
    model_path = out / "model.json"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: {family} is not trained")
    ev_meta = _read(folder / "evaluator.json")
    if ev_meta is None:
        raise FileNotFoundError(f"{folder / 'evaluator.json'}: run the evaluator stage first")
    key = fingerprint(
        {"evaluate": params.evaluate.model_dump(mode="json"), "seed": params.seed,
         "threads": params.threads(family), "model": sha256_file(out / "model.safetensors"),
         "evaluator": ev_meta["sha256"], "code": _code()}
    )[:16]  # fmt: skip
    done = _read(out / "quality.json")
    if done and done.get("key") == key:
        return done
    torch.set_num_threads(params.threads(family))
    net = load_evaluator(folder / "evaluator.json")
    with np.load(folder / "features.npz") as z:
        real = {k: z[k] for k in z.files}
    gen = models.load(model_path)
    k = gen.spec.num_classes
    labels = torch.arange(k).repeat_interleave(params.evaluate.samples_per_class)
    g = torch.Generator().manual_seed(params.seed + 1)
    images = torch.cat([gen.sample(len(yb), yb, generator=g).float().cpu() for yb in labels.split(500)])
    feats, probs = net.embed(images)
    result = {"family": family, "key": key, "n": len(labels)}
    result.update(scores(params, feats.numpy(), probs.numpy(), labels.numpy(), real))
    atomic_write_text(out / "quality.json", json.dumps(result, indent=2))
    _log_to_mlflow(params, family, result)
    log.info(
        "%s: FD %.3f, precision %.3f, recall %.3f",
        family,
        result["fd"],
        result["precision"],
        result["recall"],
    )
    return result


def _log_to_mlflow(params: Params, family: str, result: dict[str, Any]) -> None:
    metrics = _read(Path(params.run.runs_dir) / family / "metrics.json") or {}
    if not params.run.track or "mlflow" not in metrics:
        return
    from tasks import tracking

    numbers = {k: v for k, v in result.items() if k not in ("family", "key")}
    tracking.log_numbers(tracking.client(), metrics["mlflow"]["run_id"], numbers, prefix="quality.")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Evaluation stages: `evaluator`, or one family's samples.")
    ap.add_argument("family", help="a family, or 'evaluator' for the classifier and the reference rows")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    if args.family == "evaluator":
        evaluator_stage(params)
    else:
        evaluate_family(params, args.family)


if __name__ == "__main__":
    main()
