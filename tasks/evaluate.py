"""Evaluation (DVC stages ``evaluator`` and ``evaluate@<family>``; the pipeline's stage after
training). Everything lands in ``runs/evaluation/``.

``evaluator``: a CNN classifier trained on the real training split (``evaluator/evaluator.
{json,safetensors}``, test accuracy in ``metrics.json``), the other judges (``judges.npz``:
pixel PCA, an MLP, a LeNet-style CNN, a random CNN; ``models/judges.py``), the real train/test
features in every judge's space (cached, ``features.npz``) and the reference rows measured by
the same code (``reference.json``): real train vs real test (the floor: per seed a draw of
real training images of a family's size), uniform noise, and the classical baselines (PCA +
KDE, a Gaussian mixture; ``models/classical.py``), with their samples for the report.

``evaluate@<family>``: over ``evaluate.seeds`` sampling seeds, ``samples_per_class`` images per
class from the trained family, timed and embedded by the evaluator, scored against the real
test split: Fréchet distance (overall and per class), KID, precision/recall/density/coverage,
accuracy of the class-conditional samples, an Inception-Score analogue, memorization,
diversity, sharpness, images/s; plus single-image latency. The core figures (FD, KID,
precision/recall/density/coverage, class accuracy for classifier judges) again in every judge's
space, under ``spaces`` (``cnn`` is the evaluator's, equal to the top-level figures). Means, 95%
intervals and per-seed values go to ``<family>/quality.json`` (with the protocol and the
family's training figures) and the family's MLflow run. Both stages are skipped when their
inputs are unchanged.
"""

from __future__ import annotations

import io
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
from genzoo.metrics.quality import inception_score, sharpness
from genzoo.models.base import DataSpec, atomic_write, atomic_write_text, sha256_file
from genzoo.models.classical import BASELINES
from genzoo.models.evaluator import accuracy, load_evaluator, save_evaluator, train_evaluator
from genzoo.models.judges import NAMES as JUDGES
from genzoo.models.judges import Judges, load_judges, save_judges, train_judges
from genzoo.models.judges import accuracies as judge_accuracies
from genzoo.tasks import latent, tracking
from genzoo.tasks.config import Params, fingerprint, stage_args
from genzoo.tasks.data import DataError, data_hash, data_spec, load_split, read_manifest
from genzoo.tasks.errors import exit_code
from genzoo.tasks.layout import (
    code_hash,
    evaluation_dir,
    evaluator_dir,
    exclusive,
    family_dir,
    npz_key,
    read_json,
    use_threads,
)
from genzoo.tasks.quality import in_spaces, real_features, scores, space_scores, summarize
from genzoo.tasks.sample import draw as draw_images

log = logging.getLogger("genzoo.evaluate")


def training_figures(params: Params, family: str) -> dict[str, Any]:
    """What the report needs of the family's training: its metrics and loss curve."""
    src = family_dir(params, family)
    m = read_json(src / "metrics.json") or {}
    keep = (
        "steps",
        "train_seconds",
        "bad_steps",
        "parameters",
        "test_bpd",
        "val_bpd",
        "bpd_estimator",
        "device",
    )
    out: dict[str, Any] = {k: m[k] for k in keep if k in m}
    if "mlflow" in m:
        out["mlflow_run_id"] = m["mlflow"]["run_id"]
    try:
        lines = (src / "curve.csv").read_text().splitlines()
        rows = [r.split(",") for r in lines[1:] if r]
        out["curve"] = {
            "step": [int(r[0]) for r in rows if r[1]],
            "loss": [float(r[1]) for r in rows if r[1]],
        }
    except (OSError, ValueError, IndexError):
        out["curve"] = {"step": [], "loss": []}
    return out


def _labels(params: Params, spec: DataSpec) -> torch.Tensor:
    """The class of every image drawn per seed: ``evaluate.per_class(spec)`` of each."""
    return torch.arange(spec.num_classes).repeat_interleave(params.evaluate.per_class(spec))


def _seeds(params: Params) -> list[int]:
    return [params.seed + 1 + s for s in range(params.evaluate.seeds)]


def _measure(params: Params, net, judges: Judges, real: dict,
             draw: Callable[[torch.Tensor, int], torch.Tensor], spec: DataSpec, samples_path: Path | None,
             fit: Callable[[int], dict[str, float]] | None = None,
             key: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Per evaluation seed: ``fit(seed)`` when given (untimed; its figures join the seed's),
    then draw ``samples_per_class`` images per class (timed) and score them in the evaluator's
    space and (``spaces``) every judge's. The first draw is saved to ``samples_path`` (uint8
    levels, labels, and the evaluation's ``key``: the report shows only the samples of the
    figures beside them) for the report."""
    labels = _labels(params, spec)
    runs = []
    for i, seed in enumerate(_seeds(params)):
        extra = fit(seed) if fit else {}
        t0 = time.perf_counter()
        images = draw(labels, seed).float().cpu()
        seconds = time.perf_counter() - t0
        feats, probs = net.embed(images)
        r = scores(params, feats.numpy(), probs.numpy(), labels.numpy(), real, seed=seed)
        r["spaces"] = in_spaces(
            r, space_scores(params, judges.embed(images), labels.numpy(), real, seed=seed)
        )
        r.update(extra, sharpness=sharpness(images.numpy()), images_per_second=len(labels) / seconds)
        runs.append(r)
        if i == 0 and samples_path is not None:
            _save_samples(samples_path, images, labels, real["levels"], key)
    return summarize(runs)


def _save_samples(
    path: Path, images: torch.Tensor, labels: torch.Tensor, levels: int, key: str | None = None
) -> None:
    buf = io.BytesIO()
    dtype = np.uint8 if levels <= 256 else np.uint16  # (as the prepared data: 12-bit images wrapped)
    np.savez_compressed(buf, images=np.rint(images.numpy() * (levels - 1)).astype(dtype),
                        labels=labels.numpy().astype(np.int64), levels=levels,
                        **({"key": np.array(key)} if key else {}))  # fmt: skip
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def _kid_protocol(subsets: int, asked: int, n_test: int, n_fake: int) -> str:
    """KID's subsets as drawn: as many images as the smaller side has, up to the size asked for;
    a side taken whole each time adds nothing to the ± (both whole: no spread at all)."""
    size = min(asked, n_test, n_fake)
    said = f"{subsets} subsets of {size}"
    if size == n_test == n_fake:
        return f"{said}: the whole test split and the whole draw each time (the ± is 0)"
    if size == n_test:
        return f"{said}: the whole test split each time (the ± is the samples' spread alone)"
    if size == n_fake:
        return f"{said}: the whole draw each time (the ± is the test split's spread alone)"
    return said


def _protocol(params: Params, ev_sha: str, n_test: int, spec: DataSpec) -> dict[str, Any]:
    e = params.evaluate
    return {
        "extractor": f"genzoo evaluator: {e.evaluator.feature_dim}-d penultimate CNN features"
        f" (sha256 {ev_sha[:12]})",
        "samples_per_seed": e.per_class(spec) * spec.num_classes,
        "samples_per_class": e.per_class(spec),
        "reference": f"real test split ({n_test} images)",
        "floor": f"per seed, up to {e.per_class(spec)} real training images per class (a family's draw)"
        " against the same test split",
        "seeds": e.seeds,
        "interval": "95% Student-t over seeds",
        "k": e.k,
        "kid": _kid_protocol(
            e.kid_subsets, e.kid_subset_size, n_test, e.per_class(spec) * spec.num_classes
        ),  # fmt: skip
        "spaces": {
            "cnn": "the evaluator above",
            "pca": f"pixels on the real training split's first {e.judges.pca_components} principal"
            " components",
            "mlp": f"scikit-learn MLPClassifier's {e.judges.mlp_hidden} hidden ReLU units (pixels in)",
            "lenet": "LeNet-style CNN (5x5 conv, tanh, average pooling): its 64-d penultimate layer",
            "random_cnn": f"untrained CNN, random seeded weights: {8 * e.judges.random_channels}-d",
        },
    }


def _is_parts(params: Params, spec: DataSpec, n: int) -> int:
    """The parts the inception score of ``n`` real images is taken over: as many images a part
    as a family's ten parts of one seed's draw hold."""
    part = params.evaluate.per_class(spec) * spec.num_classes / 10
    return max(1, round(n / part))


def floor_draw(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Indices of the real training images the floor is measured on at ``seed``: per class,
    ``per_class`` of them without replacement (a class with fewer gives all it has), so the
    floor is a draw of a family's size and class balance. A Fréchet distance estimated from n
    images is biased upward by terms of order 1/n: measured on the whole training split (1,259
    digits against a family's 1,000), the floor sat 6-8% below what 1,000 of those very
    images score (``bench/floor.py``)."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def reference_rows(params: Params, net, judges: Judges, real: dict, train: tuple, test: tuple,
                   spec, key: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Rows measured by the same code as the families: real train vs test (the floor: per seed,
    as many training images as a family draws, ``floor_draw``), uniform noise, and the
    classical baselines (fitted on the training split once per seed; the Gaussian mixture also
    gets test bits/dim)."""
    x, y = train
    floor = []
    for s in _seeds(params):
        i = floor_draw(y.numpy(), params.evaluate.per_class(spec), seed=s)
        r = scores(params, real["train"][i], None, y.numpy()[i], real, seed=s, drawn=i)
        r.update(n=len(i), sharpness=sharpness(x[i].numpy()))
        trains = {n: (real[f"{n}.train"][i], None) for n in JUDGES}
        floor.append(r | {"spaces": in_spaces(r, space_scores(params, trains, None, real, seed=s))})
    folder = evaluator_dir(params)

    def noise(labels, seed):
        g = torch.Generator().manual_seed(seed)
        k = torch.randint(0, spec.levels, (len(labels), *spec.shape), generator=g)
        return k.float() / (spec.levels - 1)

    rows = {
        "real_train_vs_test": summarize(floor),
        "uniform_noise": _measure(params, net, judges, real, noise, spec, None),
    }
    for name, cls in BASELINES.items():
        fitted: dict[int, Any] = {}

        def fit(seed, cls=cls, fitted=fitted):
            t0 = time.perf_counter()
            fitted[seed] = model = cls(spec, params.evaluate.baselines).fit(x, y, seed=seed)
            out = {"fit_seconds": time.perf_counter() - t0}
            if hasattr(model, "bits_per_dim"):
                out["test_bpd"] = model.bits_per_dim(test[0], seed=seed)  # labels marginalised
            return out

        def draw(labels, seed, fitted=fitted):
            return fitted[seed].sample(len(labels), labels, seed=seed)

        rows[name] = _measure(params, net, judges, real, draw, spec, folder / f"{name}_samples.npz", fit, key)
    return rows


# what the evaluator's stage writes (metrics.json last: a stage cut short is redone)
EVALUATOR_FILES = ("evaluator.json", "evaluator.safetensors", "judges.npz", "features.npz", "reference.json")


def evaluator_stage(params: Params) -> dict[str, Any]:
    """Train (or reuse) the evaluator; cache real features; measure the reference rows."""
    folder = evaluator_dir(params)
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    key = fingerprint(
        {"cfg": params.evaluate.model_dump(mode="json"), "seed": params.seed,
         "threads": params.threads("evaluator"), "data": data_hash(manifest), "code": code_hash("evaluate")}
    )[:16]  # fmt: skip
    done = read_json(folder / "metrics.json")
    if done and done.get("key") == key and all((folder / n).exists() for n in EVALUATOR_FILES):
        return done
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    if len(yt) <= params.evaluate.k:  # before any training (it failed deep in numpy, after it)
        raise ValueError(
            f"evaluate.k={params.evaluate.k}: the test split holds {len(yt)} images; precision and recall "
            "need more than k (lower evaluate.k, or raise data.test_fraction)"
        )
    use_threads(params.threads("evaluator"))
    spec = data_spec(manifest)
    t0 = time.perf_counter()
    net = train_evaluator(x, y, spec, params.evaluate.evaluator, seed=params.seed)
    train_seconds = time.perf_counter() - t0
    ev_meta = read_json(save_evaluator(net, folder / "evaluator", extra={"key": key}))
    t0 = time.perf_counter()
    judges = train_judges(x, y, spec, params.evaluate.judges, seed=params.seed)
    judges_seconds = time.perf_counter() - t0
    save_judges(judges, folder / "judges.npz")
    with torch.inference_mode():
        f_train, _ = net.embed(x)
        f_test, p_test = net.embed(xt)
    real = {"train": f_train.numpy(), "test": f_test.numpy(), "test_labels": yt.numpy()}
    e_train, e_test = judges.embed(x), judges.embed(xt)
    for name in JUDGES:  # every judge's real features: (N, D_judge)
        real[f"{name}.train"], real[f"{name}.test"] = e_train[name][0], e_test[name][0]
    real["levels"] = spec.levels
    buf = io.BytesIO()
    np.savez(buf, **real)
    atomic_write(folder / "features.npz", lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    with torch.inference_mode():
        rows = reference_rows(params, net, judges, real, (x, y), (xt, yt), spec, key)
    reference = {
        "protocol": _protocol(params, ev_meta["sha256"], len(xt), spec),
        "real_test": {
            # in parts of the families' part size (a tenth of a seed's draw): the plug-in entropy of
            # a part's class marginal is biased low by ~(K - 1) / 2n, so 36-image parts of the test
            # split scored 5-7% below 100-image parts of the same images
            "inception_score": inception_score(p_test.numpy(), splits=_is_parts(params, spec, len(xt)))[0],
            "sharpness": sharpness(xt.numpy()),
        },
        **rows,
    }
    atomic_write_text(folder / "reference.json", json.dumps(reference, indent=2))
    metrics = {
        "key": key,
        "test_accuracy": accuracy(net, xt, yt),
        "features": int(f_test.shape[1]),
        "train_seconds": round(train_seconds, 2),
        "judges": {
            "test_accuracy": judge_accuracies(judges, xt, yt),
            "train_seconds": round(judges_seconds, 2),
        },
    }
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=2))
    log.info("evaluator: test accuracy %.4f", metrics["test_accuracy"])
    return metrics


def _latency_ms(gen, label: torch.Tensor, repeats: int, seed: int) -> float:
    """Median wall time of drawing one image (after one untimed warm-up call)."""
    g = torch.Generator().manual_seed(seed)
    gen.sample(1, label, generator=g)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen.sample(1, label, generator=g)
        if gen.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


@torch.inference_mode()
def evaluate_family(params: Params, family: str) -> dict[str, Any]:
    """Score ``family``'s samples in the evaluator's feature space over the evaluation seeds
    -> runs/evaluation/<family>/quality.json (means, ``ci95``, ``per_seed``, speed, protocol,
    the training figures) and ``samples.npz`` (the first seed's images)."""
    params.require(family)
    trained = family_dir(params, family)
    out = evaluation_dir(params) / family
    folder = evaluator_dir(params)
    model_path = trained / "model.json"
    if not model_path.exists():
        raise FileNotFoundError(f"{model_path}: {family} is not trained")
    meta = read_json(model_path)  # its config's spec: no load before the cache check
    try:  # an unreadable or edited config: models.load names what is wrong with it, below
        made = DataSpec(**meta["spec"])
    except (TypeError, KeyError):
        made = None
    data = data_spec(read_manifest(params.data.prepared_dir))
    if made and (made.shape, made.num_classes) != (data.shape, data.num_classes):  # nothing to compare
        raise DataError(
            f"{family}: trained on images of shape {'x'.join(map(str, made.shape))} in "
            f"{made.num_classes} classes, {params.data.prepared_dir} holds "
            f"{'x'.join(map(str, data.shape))} in {data.num_classes}: its samples cannot be scored against "
            f"them; train it again (`{params.command(f'train --family {family}')}`) or prepare the data it "
            "was trained on"
        )
    gen = models.load(model_path)  # before the cache: a model.json edited since no longer passes
    ev_meta = read_json(folder / "evaluator.json")
    missing = [n for n in ("evaluator.json", "judges.npz", "features.npz") if not (folder / n).exists()]
    if ev_meta is None or missing:
        raise FileNotFoundError(
            f"{folder / (missing or ['evaluator.json'])[0]} missing: the evaluator is not trained "
            f"(`{params.command('evaluate')}` trains it, or `dvc repro evaluator`)"
        )
    finished = read_json(folder / "metrics.json") or {}
    if ev_meta.get("key") and finished.get("key") != ev_meta["key"]:  # (metrics.json: the stage's last file)
        raise FileNotFoundError(
            f"{folder / 'metrics.json'}: the evaluator's stage did not finish (its files are of two runs): "
            f"`{params.command('evaluate')}` ends it"
        )
    per_class = params.evaluate.per_class(gen.spec)
    if per_class * gen.spec.num_classes <= params.evaluate.k:
        raise ValueError(
            f"evaluate.k={params.evaluate.k}: {per_class * gen.spec.num_classes} images drawn a seed "
            f"({per_class} a class, evaluate.samples_per_class); precision and recall need more than k"
        )
    training = training_figures(params, family)
    model_sha = sha256_file(trained / "model.safetensors")
    key = fingerprint(
        {"evaluate": params.evaluate.model_dump(mode="json"), "seed": params.seed,
         "threads": params.threads(family), "model": model_sha,
         "training": training,
         "evaluator": ev_meta["sha256"], "judges": sha256_file(folder / "judges.npz"),
         "real": sha256_file(folder / "features.npz"),  # the test split scored against (data edited: others)
         "code": code_hash("evaluate", family)}
    )[:16]  # fmt: skip
    done = read_json(out / "quality.json")
    if done and done.get("key") == key and npz_key(out / "samples.npz") == npz_key(out / "latent.npz") == key:
        return done
    use_threads(params.threads(family))
    net = load_evaluator(folder / "evaluator.json")
    judges = load_judges(folder / "judges.npz")
    real = real_features(folder)

    def draw(labels, seed):  # (N, C, H, W) on the CPU: .cpu() waits for the GPU, so the timing is whole
        return draw_images(gen, len(labels), labels=labels, seed=seed, batch=500)[0]

    summary = _measure(params, net, judges, real, draw, gen.spec, out / "samples.npz", key=key)
    latency = _latency_ms(gen, torch.zeros(1, dtype=torch.long, device=gen.device),
                          params.evaluate.latency_repeats, params.seed)  # fmt: skip
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    why = None
    try:
        lat, strips = latent.figures(
            gen, net, xt, yt, real["test"], pairs=params.evaluate.latent_pairs, seed=params.seed
        )
    except latent.NoPairs as e:  # the rest of the evaluation stands
        lat, strips, why = None, {}, f"{family}: no latent figures ({e})"
        log.warning("%s", why)
    why = why or (None if lat else f"{family}: no latent space (no encode or decode)")
    latent.save_strips(out / "latent.npz", strips, why, key=key)
    result = {
        "family": family,
        "key": key,
        "model_sha256": model_sha,  # the model measured: a dataset card quotes only its own model's figures
        "n": len(_labels(params, gen.spec)),
        "latency_ms": latency,
        "threads": params.threads(family),
        "device": str(gen.device),
        "protocol": _protocol(params, ev_meta["sha256"], len(real["test"]), gen.spec),
        "evaluator_sha256": ev_meta["sha256"],  # the report compares only families one evaluator scored
        "training": training,
        **summary,
        "latent": lat,
    }
    atomic_write_text(out / "quality.json", json.dumps(result, indent=2))
    numbers = {k: v for k, v in result.items() if k not in ("family", "key", "per_seed", "training")}
    tracking.log_stage(params, family, numbers, prefix="quality.", artifact=out / "quality.json")
    return result


def main(argv: list[str] | None = None) -> None:
    params, family = stage_args(
        argv, "Evaluation stages: `evaluator`, or one family's samples.", "family",
        "a family, or 'evaluator' for the classifier and the reference rows",
    )  # fmt: skip
    with exclusive(params.run.runs_dir):
        if family == "evaluator":
            evaluator_stage(params)
        else:  # (genzoo evaluate and the pipeline print their own line of these)
            q = evaluate_family(params, family)
            log.info("%s: FD %.3f ± %.3f, precision %.3f, recall %.3f", family, q["fd"], q["ci95"]["fd"],
                     q["precision"], q["recall"])  # fmt: skip


if __name__ == "__main__":
    sys.exit(exit_code(main, "evaluate"))
