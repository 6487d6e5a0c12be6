"""Does synthetic data help a downstream classifier? Measured without leaks (DVC stages
``usefulness-reference`` and ``usefulness@<family>``; the pipeline runs them after evaluation).

Three classifiers, each accuracy on the real test split over ``usefulness.seeds`` seeds and
``usefulness.subset_seeds`` subsets, as mean and 95% Student-t interval: the small CNN with
classical augmentation (random shifts and rotations: the baseline a practitioner already
has, ``cnn``), the same CNN without it (``cnn_plain``), and a logistic regression on pixels.

- **Train on synthetic, test on real** (TSTR): a classifier trained only on as many synthetic
  images as the real training split holds, from the family trained on the whole split.
- **Augmentation**: a classifier trained on a fraction p of the real training split (stratified
  subsets), with and without synthetic images made by each **recipe** (``recipes`` in params:
  k per real image, sampled or perturbed from the real images, optionally relabelled and
  filtered by a teacher trained on the same subset, a real share per batch and a loss weight)
  from a generator trained on **that same subset only** (trained here for p < 1, the
  pipeline's model for p = 1): a generator trained on all the data would smuggle the other
  images into the small setting. The lift is the paired difference (same subset and seed);
  below 100% also on the validation split (``val_lift``), where a choice between families and
  recipes is made (the report's targets, ``augment.metric: lift``) so the test lift is not
  what picks the figure quoted.

The reference rows come from the same code: real data alone, and a class-conditional PCA +
kernel-density generator fitted on the same subsets, through the same sample-mode recipes
(``runs/evaluation/usefulness/reference.json``). A family's figures go to
``runs/evaluation/<family>/usefulness.json`` (``augmentation``: the recipe the augment stage
uses, ``augment.recipe``; ``recipes``: every one) and its MLflow run; the generators trained on
subsets to ``runs/evaluation/<family>/subsets/``. Cached: a second call with the same params,
data, models and code returns the stored figures.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from genzoo import models
from genzoo.metrics.likelihood import bits_per_dim
from genzoo.metrics.quality import mean_ci
from genzoo.models.base import (
    DataSpec,
    ExactLikelihood,
    LikelihoodBound,
    atomic_write_text,
    log_likelihoods,
    sha256_file,
)
from genzoo.models.classical import PCAKDE
from genzoo.models.evaluator import EvaluatorConfig, Synthetic, accuracy, batch_split, train_evaluator
from genzoo.models.trainer import TrainConfig
from genzoo.tasks import tracking
from genzoo.tasks.config import Params, Recipe, fingerprint, stage_args
from genzoo.tasks.data import data_spec, load_split
from genzoo.tasks.errors import exit_code
from genzoo.tasks.layout import (
    cached_variant,
    code_hash,
    evaluation_dir,
    exclusive,
    family_dir,
    read_json,
    shown,
    train_variant,
    training_device,
    unmeasured,
    use_threads,
    usefulness_key,
    variant_key,
)
from genzoo.tasks.sample import (
    Synthesis,
    Teachers,
    balanced_labels,
    copy_radius,
    on_levels,
    perturbable,
    synthesize,
    teacher_cache,
)
from genzoo.tasks.sample import draw as draw_images

log = logging.getLogger("genzoo.usefulness")

Generate = Callable[[torch.Tensor, int], torch.Tensor]  # (labels, seed) -> images in [0, 1]
Data = tuple[torch.Tensor, torch.Tensor]
Make = Callable[[int], Synthesis]  # seed -> synthetic images by a recipe


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


def subsets(params: Params, fraction: float) -> list[int]:
    """The subset seeds measured at ``fraction`` (one: the whole split at 1)."""
    return [0] if fraction >= 1 else list(params.usefulness.subset_seeds)


def recipes(params: Params) -> list[str]:
    """The recipes measured: ``usefulness.recipes``, with ``augment.recipe`` (the one the
    pulled dataset is made with) always among them."""
    names = list(params.usefulness.recipes)
    return names if params.augment.recipe in names else [*names, params.augment.recipe]


def teachers(params: Params, part: Data, spec: DataSpec, subset_seed: int) -> Teachers:
    """The recipes' teachers for a real subset: the usefulness CNN (classical augmentation)
    trained on that subset alone, with seeds none of the measured classifiers uses (``1000 x
    subset + j`` stays below the first teacher's 10,000 for subset seeds under 10; as many
    as the recipes ask for, trained when first asked)."""
    return Teachers(*part, spec, params.usefulness.cnn, base=subset_seed, cache=teacher_cache(params))


def classifier_accuracy(
    kind: str,
    train: Data,
    test: Data,
    spec: DataSpec,
    params: Params,
    seed: int,
    synthetic: Synthesis | None = None,
    recipe: Recipe | None = None,
) -> float:
    """Accuracy on ``test`` of a ``kind`` classifier ("cnn": classical augmentation, "cnn_plain":
    none, "logistic" on pixels) trained on ``train``, plus ``synthetic`` images used as
    ``recipe`` says (a real share per batch and a loss weight; the logistic regression takes
    the targets' argmax, weighted)."""
    return classifier_accuracies(kind, train, [test], spec, params, seed, synthetic, recipe)[0]


def classifier_accuracies(
    kind: str,
    train: Data,
    sets: list[Data],
    spec: DataSpec,
    params: Params,
    seed: int,
    synthetic: Synthesis | None = None,
    recipe: Recipe | None = None,
) -> list[float]:
    """:func:`classifier_accuracy` on each of ``sets`` (one classifier trained once)."""
    x, y = train
    if kind in ("cnn", "cnn_plain"):
        cfg = params.usefulness.cnn
        if kind == "cnn_plain":
            cfg = cfg.model_copy(update={"shift": 0, "rotate": 0.0, "scale": 0.0, "shear": 0.0})
        extra = None
        if synthetic is not None and len(synthetic.y):
            recipe = recipe or Recipe()
            extra = Synthetic(synthetic.x, synthetic.targets, recipe.real_share, recipe.synthetic_weight)
        net = train_evaluator(x, y, spec, cfg, seed=seed, synthetic=extra)
        return [accuracy(net, *s) for s in sets]
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        weight = np.ones(len(y))
        if synthetic is not None and len(synthetic.y):
            w = (recipe or Recipe()).synthetic_weight
            x, y = torch.cat([x, synthetic.x]), torch.cat([y, synthetic.targets.argmax(-1)])
            weight = np.concatenate([weight, np.full(len(synthetic.y), w)])
        clf = LogisticRegression(C=params.usefulness.logistic_c, max_iter=5000, random_state=seed)
        clf.fit(x.flatten(1).numpy(), y.numpy(), sample_weight=weight)
        return [float((clf.predict(sx.flatten(1).numpy()) == sy.numpy()).mean()) for sx, sy in sets]
    raise ValueError(f"usefulness.classifiers: unknown classifier {kind!r} (cnn, cnn_plain, logistic)")


@torch.inference_mode()
def vote_accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy on (x, y) of a classifier or of several voting (a recipe's teacher), eval mode."""
    pred = torch.cat([net(xb).argmax(-1) for xb in x.split(1024)])
    return float((pred == y).float().mean())


def stats(values: list[float], per_subset: int | None = None) -> dict[str, Any]:
    """Mean and 95% interval of ``values``, laid out subset by subset, ``per_subset`` each (the
    classifier seeds). Over several subsets the interval is the Student-t one of the subsets' means
    (subsets - 1 degrees of freedom): a subset's seeds share its real images, generator and teacher,
    and pooled as if independent they gave an interval too narrow wherever the subsets differ more
    than the seeds do. Otherwise over the values (one subset: the interval holds for the subset
    drawn)."""
    values = [float(v) for v in values]
    if per_subset and len(values) > per_subset:
        if len(values) % per_subset:
            raise ValueError(f"{len(values)} values are not subsets of {per_subset} seeds each")
        means = [float(np.mean(values[i : i + per_subset])) for i in range(0, len(values), per_subset)]
        return {"mean": float(np.mean(values)), "ci95": mean_ci(means)[1], "over": "subsets",
                "per_subset": means, "per_seed": values}  # fmt: skip
    mean, half = mean_ci(values)
    return {"mean": mean, "ci95": half, "per_seed": values}


class Runs(NamedTuple):
    """Per classifier, each seed's accuracy on the real test split (``test``) and on the validation
    split (``val``: what a choice between families and recipes is made on, so the test images'
    own luck does not pick the figure quoted; the classifiers' and generators' luck, shared by
    both splits, still can; empty where it is not measured); and each seed's filter counts."""

    test: dict[str, list[float]]
    counts: list
    val: dict[str, list[float]]


def accuracies(
    params: Params,
    train: Data,
    test: Data,
    spec: DataSpec,
    make: Make | None = None,
    recipe: Recipe | None = None,
    base: int = 0,
    val: Data | None = None,
) -> Runs:
    """Per classifier, the accuracy for each seed on ``test`` (and on ``val``, when given and not
    empty): trained on ``train`` plus the synthetic images ``make(seed)`` returns (used as
    ``recipe`` says); and each seed's filter counts. The classifiers' seeds are ``base + seed``
    (``base``: the subset's, so no two subsets' classifiers share initial weights and batch
    order, and the interval over subsets sees their spread whole; the same for a subset's
    real-only and augmented runs, which pair)."""
    sets = [test] + ([val] if val is not None and len(val[1]) else [])
    out: dict[str, list[float]] = {c: [] for c in params.usefulness.classifiers}
    out_val: dict[str, list[float]] = {c: [] for c in out} if len(sets) > 1 else {}
    counts = []
    for seed in range(params.usefulness.seeds):
        synthetic = make(seed) if make is not None else None
        if synthetic is not None:
            counts.append(synthetic.counts)
        for c in params.usefulness.classifiers:
            got = classifier_accuracies(c, train, sets, spec, params, base + seed, synthetic, recipe)
            out[c].append(got[0])
            if out_val:
                out_val[c].append(got[1])
    return Runs(out, counts, out_val)


def tstr_accuracies(params: Params, train: Data, test: Data, spec: DataSpec, generate: Generate) -> dict:
    """Train on synthetic, test on real: per classifier and seed, a classifier trained only on as
    many synthetic images as ``train`` holds (its class balance, the model's own labels)."""
    out: dict[str, list[float]] = {c: [] for c in params.usefulness.classifiers}
    for seed in range(params.usefulness.seeds):
        ys = balanced_labels(train[1], 1.0, spec.num_classes)
        xs = generate(ys, seed).float().cpu()
        for c in params.usefulness.classifiers:
            out[c].append(classifier_accuracy(c, (xs, ys), test, spec, params, seed))
    return {c: stats(v) for c, v in out.items()}


def _lift(aug: Runs, real: Runs, seeds: int) -> dict[str, Any]:
    """Accuracy with synthetic data and its paired lift over real alone (same subset and seed);
    ``val_augmented`` and ``val_lift``: the same on the validation split, where both were
    measured on one (the real fractions below 1)."""
    out = {
        c: {
            "augmented": stats(v, seeds),
            "lift": stats([a - r for a, r in zip(v, real.test[c], strict=True)], seeds),
        }
        for c, v in aug.test.items()
    }
    for c, v in aug.val.items():
        if c in real.val:
            out[c]["val_augmented"] = stats(v, seeds)
            out[c]["val_lift"] = stats([a - r for a, r in zip(v, real.val[c], strict=True)], seeds)
    return out


def _filters(counts: list[dict]) -> dict[str, Any]:
    """Filter counts summed over seeds and subsets; ``empty_pools``: the pools (a subset and
    seed's synthetic images) the filters left empty, whose classifier trained on real data alone
    (a lift of 0 by construction, no measure of the family), and ``emptied``: the classes some
    pool lost every image of."""
    total: dict[str, Any] = {"drawn": 0, "kept": 0, "rejected": {}, "empty_pools": 0, "emptied": []}
    for c in counts:
        total["drawn"] += c["drawn"]
        total["kept"] += c["kept"]
        total["empty_pools"] += int(c["drawn"] > 0 and c["kept"] == 0)
        total["emptied"] = sorted(set(total["emptied"]) | set(c.get("emptied", [])))
        for k, v in c["rejected"].items():
            total["rejected"][k] = total["rejected"].get(k, 0) + v
    return total


def model_draw(model) -> Generate:
    """``model``'s images for ``labels``, on the data's level grid (as a dataset stores them)."""
    return lambda labels, seed: on_levels(
        draw_images(model, len(labels), labels=labels, seed=seed, batch=500)[0], model.spec.levels
    )


def pca_kde_draw(params: Params, train: Data, spec: DataSpec) -> Generate:
    fitted = PCAKDE(spec, params.evaluate.baselines).fit(*train, seed=params.seed)
    return lambda labels, seed: fitted.sample(len(labels), labels, seed=seed)


def held_out_draw(train: Data, idx: torch.Tensor, num_classes: int) -> Generate:
    """A perfect generator's images for the subset ``idx`` of ``train``: real training images
    outside the subset, drawn for each label from its class (seeded, with replacement)."""
    rest = torch.ones(len(train[1]), dtype=torch.bool)
    rest[idx] = False
    x, y = train[0][rest], train[1][rest]
    by_class = [torch.nonzero(y == c).flatten() for c in range(num_classes)]
    if empty := [c for c in range(num_classes) if not len(by_class[c])]:
        raise ValueError(f"usefulness.held_out: classes {empty} have no training image outside the subset; "
                         "a fraction below 1 that leaves some, or held_out: false")  # fmt: skip

    def draw(labels: torch.Tensor, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        pick = torch.empty(len(labels), dtype=torch.long)
        for c in labels.unique().tolist():
            where = torch.nonzero(labels == c).flatten()
            pick[where] = by_class[c][torch.randint(len(by_class[c]), (len(where),), generator=gen)]
        return x[pick]

    return draw


def _splits(params: Params) -> tuple[Data, Data, DataSpec, dict]:
    x, y, manifest = load_split(params.data.prepared_dir, "train")
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    return (x, y), (xt, yt), data_spec(manifest), manifest


def _val(params: Params) -> Data | None:
    """The validation split (None: there is none, ``data.val_fraction: 0``): the lifts are
    measured on it too, and a choice between families or recipes is made on it."""
    x, y, _ = load_split(params.data.prepared_dir, "val")
    return (x, y) if len(y) else None


def _val_at(val: Data | None, fraction: float) -> Data | None:
    """The validation split where a choice may be made on it: below 1 (a generator trained on a
    subset validates on a slice of that subset). At 1 the pipeline's models chose their weights
    on the validation split (validation bits/dim), so a lift there would favour them: none."""
    return val if fraction < 1 else None


def augmentation_words(cfg: EvaluatorConfig) -> str:
    """The classical augmentation of the usefulness CNN, in words (report, dataset card)."""
    words = [f"shifts of up to {cfg.shift} pixel{'s' * (cfg.shift != 1)}"] if cfg.shift else []
    words += [f"rotations of up to {cfg.rotate:g}°"] if cfg.rotate else []
    words += [f"scaling of each axis by up to {100 * cfg.scale:g}%"] if cfg.scale else []
    words += [f"shearing by up to {cfg.shear:g}"] if cfg.shear else []
    return ", ".join(words) or "none"


def _protocol(params: Params, n_train: int, n_test: int, n_val: int = 0) -> dict[str, Any]:
    u = params.usefulness
    augmentation = augmentation_words(u.cnn)
    return {
        "fractions": u.fractions,
        "recipes": {name: params.recipe(name).model_dump(mode="json") for name in recipes(params)},
        "primary_recipe": params.augment.recipe,
        "reject_copies": params.augment.reject_copies,  # near-copies of the real images dropped
        "seeds": u.seeds,
        "subset_seeds": u.subset_seeds,
        "classifiers": u.classifiers,
        "cnn": u.cnn.model_dump(mode="json"),
        "n_train": n_train,
        "n_test": n_test,
        "test": "real test split",
        "n_val": n_val,  # lifts below 100% also on the validation split: the best is chosen there
        "augmentation": augmentation,
        "baseline": f"cnn: the same CNN with classical augmentation ({augmentation}) on real data alone",
        "interval": "95% Student-t over the subsets' means where several subsets are measured (each with "
        "its own generator and teacher; a subset's classifier seeds averaged), over the classifier seeds "
        "where one is; lifts paired by subset and seed",
    }


def _parts(params: Params, train: Data, fraction: float) -> list[tuple[int, Data]]:
    return [(s, tuple(t[subset(train[1], fraction, s)] for t in train)) for s in subsets(params, fraction)]


def _measure(params: Params, part: Data, test: Data, spec: DataSpec, generate: Generate, model, t: Teachers,
             name: str, seed_base: int, val: Data | None = None) -> Runs:  # fmt: skip
    """Accuracies with recipe ``name``'s synthetic data around the real ``part``."""
    recipe = pool_capped(params.recipe(name), len(part[1]), spec, params.usefulness.cnn)
    source = model if model is not None else generate
    teacher = t(recipe)
    # near-copies of the real images dropped, as from the pulled dataset (the radius once per real set)
    radius = copy_radius(part[0].flatten(1).double()) if params.augment.reject_copies else None

    def make(seed: int) -> Synthesis:
        return synthesize(source, recipe, part, spec.num_classes, seed_base + seed, teacher=teacher,
                          copies_within=radius)  # fmt: skip

    return accuracies(params, part, test, spec, make, recipe, base=seed_base, val=val)


def used_k(params: Params, name: str, n_real: int, spec: DataSpec) -> float:
    """The synthetic images per real one that recipe ``name`` adds to ``n_real`` real images as
    measured: its k, lowered by :func:`pool_capped`; whole copies in mode ``perturb``."""
    recipe = pool_capped(params.recipe(name), n_real, spec, params.usefulness.cnn)
    k = recipe.synthetic_per_real
    return float(max(1, round(k))) if recipe.mode == "perturb" else k


def pool_capped(recipe: Recipe, n_real: int, spec: DataSpec, cfg: EvaluatorConfig) -> Recipe:
    """``recipe`` with k lowered, where needed, so the synthetic pool holds no more images than
    the CNN draws from it in training (steps x synthetic images per batch): a larger pool costs
    samples the classifier never looks at (k = 10 on 42,000 MNIST images: 420,000 per seed
    against 19,200 drawn). The shipped recipes on digits stay under it (12,590 at 100%)."""
    views = cfg.steps * batch_split(n_real, spec, cfg, recipe.real_share)[1]
    if recipe.synthetic_per_real * n_real <= views:
        return recipe
    return recipe.model_copy(update={"synthetic_per_real": max(views, 1) / n_real})


def _pooled(per_subset: list[Runs]) -> Runs:
    """The subsets' runs one after another (counts left out: :func:`_filters` sums them)."""

    def joined(part: str) -> dict[str, list[float]]:
        return {c: [v for r in per_subset for v in getattr(r, part)[c]] for c in getattr(per_subset[0], part)}

    return Runs(joined("test"), [], joined("val"))


# ----------------------------------------------------------------------------- stages


def reference(params: Params) -> dict[str, Any]:
    """Real data alone at every fraction and subset, and PCA + KDE fitted on the same subsets
    (TSTR, and augmentation by every sample-mode recipe) -> runs/evaluation/usefulness/reference.json."""
    train, test, spec, manifest = _splits(params)
    val = _val(params)
    u = params.usefulness
    key = usefulness_key(params, manifest)
    out = folder(params) / "reference.json"
    done = read_json(out)
    if done and done.get("key") == key:
        return done
    if u.held_out:  # a class with no image left outside a subset: refused before any training
        for p in (p for p in u.fractions if p < 1):
            for s in subsets(params, p):
                held_out_draw(train, subset(train[1], p, s), spec.num_classes)
    use_threads(params.threads("evaluator"))
    t0 = time.perf_counter()
    real: dict[str, Any] = {}
    sampled = [name for name in recipes(params) if params.recipe(name).mode == "sample"]  # no encoder here
    pca_kde: dict[str, dict[str, Any]] = {name: {} for name in recipes(params)}
    held_out: dict[str, dict[str, Any]] = {name: {} for name in recipes(params)}
    kept: dict[str, dict[str, dict[str, Any]]] = {"pca_kde": {}, "held_out": {}}  # filter counts
    for p in u.fractions:
        real_runs = []
        runs: dict[str, list] = {name: [] for name in sampled}
        held: dict[str, list] = {name: [] for name in sampled}
        v = _val_at(val, p)
        for s, part in _parts(params, train, p):
            real_runs.append(accuracies(params, part, test, spec, base=1000 * s, val=v))
            gen, t = pca_kde_draw(params, part, spec), teachers(params, part, spec, s)
            for name in sampled:
                runs[name].append(_measure(params, part, test, spec, gen, None, t, name, 1000 * s, v))
            if u.held_out and p < 1:
                rest = held_out_draw(train, subset(train[1], p, s), spec.num_classes)
                for name in sampled:
                    held[name].append(_measure(params, part, test, spec, rest, None, t, name, 1000 * s, v))
        for row, got in (("pca_kde", runs), ("held_out", held)):
            for name, per_subset in got.items():
                if per_subset:
                    counts = _filters([c for r in per_subset for c in r.counts])
                    kept[row].setdefault(name, {})[str(p)] = counts
        real_p = _pooled(real_runs)
        real[str(p)] = {c: stats(v, u.seeds) for c, v in real_p.test.items()}
        for c, v in real_p.val.items():  # what each family's validation lift pairs with
            real[str(p)][c]["val"] = stats(v, u.seeds)
        for name in sampled:
            pca_kde[name][str(p)] = _lift(_pooled(runs[name]), real_p, u.seeds)
            if held[name]:
                held_out[name][str(p)] = _lift(_pooled(held[name]), real_p, u.seeds)
        log.info(
            "usefulness reference %.2f: real %s", p, {c: round(r["mean"], 4) for c, r in real[str(p)].items()}
        )
    tstr = tstr_accuracies(params, train, test, spec, pca_kde_draw(params, train, spec))
    result = {
        "key": key,
        "protocol": _protocol(params, len(train[1]), len(test[1]), len(val[1]) if val else 0),
        "real": real,  # train on real (the whole split at 1.0: TSTR's reference)
        "pca_kde": {
            "tstr": tstr,
            "augmentation": pca_kde.get(params.augment.recipe, {}),
            "recipes": {
                n: {"augmentation": a, "filters": kept["pca_kde"].get(n, {})} for n, a in pca_kde.items() if a
            },
        },  # fmt: skip
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if u.held_out:  # real images outside each subset through the same recipes (no TSTR: nothing is held out)
        result["held_out"] = {"recipes": {n: {"augmentation": a, "filters": kept["held_out"].get(n, {})}
                                          for n, a in held_out.items() if a}}  # fmt: skip
    atomic_write_text(out, json.dumps(result, indent=2))
    return result


def subset_generator(params: Params, family: str, fraction: float, train: Data, spec: DataSpec,
                     manifest: dict, subset_seed: int = 0):  # fmt: skip
    """``family`` trained on the ``fraction`` subset ``subset_seed`` only (cached in
    runs/evaluation/<family>/subsets/); the pipeline's model for fraction 1."""
    device = training_device(params, family)
    if fraction >= 1:
        path = family_dir(params, family) / "model.json"
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: {family} is not trained; run `{params.command(f'run --families {family}')}`"
            )
        return models.load(path, device), {"model": shown(path), "subset": False}  # (no machine's path)
    idx = subset(train[1], fraction, subset_seed)
    x, y = train[0][idx], train[1][idx]
    cfg = TrainConfig(**{**params.train_config(family).model_dump(), **params.usefulness.train})
    # model selection as the pipeline's training does (validation bits/dim, train.patience), on a
    # slice of the subset itself: nothing outside the subset is seen
    validates = issubclass(models.REGISTRY[family], ExactLikelihood | LikelihoodBound) and cfg.eval_every
    share = params.usefulness.val_share if validates else 0.0
    val_fn = None
    if share:
        fit_rows, val_rows = held_out_slice(y, share, subset_seed)
        x_val, y_val = x[val_rows], y[val_rows]
        val_fn = lambda m: bits_per_dim(log_likelihoods(m, x_val, y_val).mean().item(), spec.dims)  # noqa: E731
        x, y = x[fit_rows], y[fit_rows]
    seed = params.seed + subset_seed  # each subset's generator its own initial weights and batches
    key = variant_key(params, family, cfg, manifest, "usefulness", subset=idx.tolist(), val_share=share,
                      seed=seed)  # fmt: skip
    path = evaluation_dir(params) / family / "subsets" / f"p{fraction:g}-s{subset_seed}.json"
    info_keys = ("n_real", "steps", "train_seconds")
    if cached := cached_variant(path, key, device):
        model, meta = cached
        return model, {k: meta[k] for k in info_keys}
    model, result = train_variant(
        params, family, x, y, spec, cfg, path,
        lambda r: {"key": key, "fraction": fraction, "subset_seed": subset_seed, "n_real": len(idx),
                   "steps": r.steps, "train_seconds": round(r.seconds, 1)},
        seed=seed, val_fn=val_fn,
    )  # fmt: skip
    log.info(
        "%s: trained on %d real images (%.0f%%, subset %d; %d held out to validate) for %d steps in %.1f s",
        family, len(y), 100 * fraction, subset_seed, len(idx) - len(y), result.steps, result.seconds,
    )  # fmt: skip
    info = {"n_real": len(idx), "steps": result.steps, "train_seconds": round(result.seconds, 1)}
    return model.eval(), info


def held_out_slice(y: torch.Tensor, share: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit rows, validation rows) of labels ``y``: ``share`` of each class held out, at least one
    and never the class's last image; seeded, sorted."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in torch.unique(y).tolist():
        rows = rng.permutation(np.flatnonzero(y.numpy() == c))
        k = min(len(rows) - 1, max(1, round(share * len(rows))))
        val.append(rows[:k])
        fit.append(rows[k:])
    return torch.from_numpy(np.sort(np.concatenate(fit))), torch.from_numpy(np.sort(np.concatenate(val)))


def train_subsets(params: Params, family: str) -> dict[str, Any]:
    """Train (or reuse) ``family`` on every real subset (fractions below 1, every subset seed):
    the pipeline runs this beside the main trainings, since it needs no trained model."""
    params.require(family)
    use_threads(params.threads(family))
    train, _, spec, manifest = _splits(params)
    return {
        f"{p}/{s}": subset_generator(params, family, p, train, spec, manifest, s)[1]
        for p in params.usefulness.fractions
        if p < 1
        for s in params.usefulness.subset_seeds
    }


def measure_family(params: Params, family: str) -> dict[str, Any]:
    """TSTR and the augmentation lift of ``family`` by every recipe -> runs/evaluation/<family>/
    usefulness.json (needs the reference: :func:`reference`)."""
    ref = read_json(folder(params) / "reference.json")
    if ref is None:
        raise FileNotFoundError(f"{folder(params) / 'reference.json'}: run the usefulness reference first")
    if ref.get("key") != usefulness_key(params):  # its real-data rows are what each lift is paired with
        raise FileNotFoundError(
            f"{folder(params) / 'reference.json'}: made with other usefulness settings or data than these "
            "params; run `python -m genzoo.tasks.usefulness reference` first (`genzoo usefulness` and "
            "`dvc repro` run it)"
        )
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
    for name in recipes(params):  # before any training: a perturb recipe needs an encoder
        if params.recipe(name).mode == "perturb" and family not in perturbable():
            key = "usefulness.recipes" if name in u.recipes else "augment.recipe"
            raise ValueError(f"{key}: {name!r} perturbs real images, which {family} cannot "
                             f"(no encoder; families that can: {', '.join(perturbable())})")  # fmt: skip
    use_threads(params.threads(family))
    train, test, spec, manifest = _splits(params)
    val = _val(params)
    (out.parent / "subsets").mkdir(parents=True, exist_ok=True)  # DVC's output, also with fractions [1.0]
    t0 = time.perf_counter()
    by_recipe: dict[str, dict[str, Any]] = {
        name: {"augmentation": {}, "filters": {}} for name in recipes(params)
    }
    generators: dict[str, Any] = {}
    for p in u.fractions:
        runs: dict[str, list] = {name: [] for name in by_recipe}
        counts: dict[str, list] = {name: [] for name in by_recipe}
        taught: dict[str, list] = {name: [] for name in by_recipe}  # the teacher's own test accuracy
        for s, part in _parts(params, train, p):
            model, generators[f"{p}/{s}"] = subset_generator(params, family, p, train, spec, manifest, s)
            t = teachers(params, part, spec, s)
            for name in by_recipe:
                got = _measure(params, part, test, spec, model_draw(model), model, t, name, 1000 * s,
                               _val_at(val, p))  # fmt: skip
                runs[name].append(got)
                counts[name].extend(got.counts)
                if (teacher := t(params.recipe(name))) is not None:
                    taught[name].append(vote_accuracy(teacher, *test))
        row = ref["real"][str(p)]
        real_p = Runs({c: row[c]["per_seed"] for c in u.classifiers}, [],
                      {c: row[c]["val"]["per_seed"] for c in u.classifiers if "val" in row[c]})  # fmt: skip
        n_real = len(subset(train[1], p, u.subset_seeds[0]))
        for name in by_recipe:
            by_recipe[name]["augmentation"][str(p)] = _lift(_pooled(runs[name]), real_p, u.seeds)
            # k as measured: lowered where the pool would outgrow what the classifier draws
            by_recipe[name].setdefault("synthetic_per_real", {})[str(p)] = used_k(params, name, n_real, spec)
            by_recipe[name]["filters"][str(p)] = kept = _filters(counts[name])
            if why := unmeasured(kept):
                log.warning("usefulness: %s, recipe %s at %g%% real data: %s; its lift measures nothing "
                            "of the family (the report leaves it out of the targets)", family, name, 100 * p,
                            why)  # fmt: skip
            if taught[name]:  # over subsets: what the student could learn from at most
                by_recipe[name].setdefault("teacher_accuracy", {})[str(p)] = stats(taught[name])
        log.info("%s at %.2f: lift %s", family, p, {
            name: {c: round(v["lift"]["mean"], 4) for c, v in r["augmentation"][str(p)].items()}
            for name, r in by_recipe.items()})  # fmt: skip
    full, _ = subset_generator(params, family, 1.0, train, spec, manifest)
    primary = by_recipe[params.augment.recipe]
    result = {
        "family": family,
        "key": key,
        "model_sha256": sha256_file(model_path),
        "reference_key": ref["key"],  # the real-data rows its lifts are against (the report checks)
        "protocol": ref["protocol"],
        "tstr": tstr_accuracies(params, train, test, spec, model_draw(full)),
        "recipe": params.augment.recipe,
        "augmentation": primary["augmentation"],  # the recipe the pulled dataset is made with
        "synthetic_per_real": primary["synthetic_per_real"],  # its k at each fraction, as measured
        "recipes": by_recipe,
        "generators": generators,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    atomic_write_text(out, json.dumps(result, indent=2))
    numbers = {f"tstr.{c}": s["mean"] for c, s in result["tstr"].items()}
    for name, r in [(None, primary), *by_recipe.items()]:  # lift.p0.1.cnn: the pulled dataset's recipe
        for p, per in r["augmentation"].items():
            for c, s in per.items():
                tag = f"lift.{name}.p{p}.{c}" if name else f"lift.p{p}.{c}"
                numbers |= {tag: s["lift"]["mean"], f"{tag}.ci95": s["lift"]["ci95"]}
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
