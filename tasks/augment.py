"""Labelled synthetic datasets (DVC stage ``augment``; the pipeline's stage after evaluation;
``genzoo augment``): ``<out_dir>/<name>/`` holds, in the formats of ``augment.formats``
(``tasks/formats.py`` writes them)

- ``images.npz``: ``images`` uint8 levels (N, C, H, W) like the prepared data, ``labels``
  int64, ``source`` the family of each image, ``is_synthetic``;
- ``images/<NN>_<class>/<i>.png`` (``imagefolder``), ``hf/`` (``hf``: Hugging Face ``datasets``);
- ``README.md``: the dataset card (what made it, how to load it, its measured usefulness and
  quality, the memorization check, the licence);
- ``manifest.json``: the request and recipe, each source family's model hash, MLflow run and
  registered version, the params hash, the source data's hash, counts per class, what the
  filters drew and rejected, the dataset's own quality figures (evaluator features vs the real
  test split), the figures the card quotes, the formats and the sha256 of ``images.npz``.

Families are named or ``best`` (the best evaluated family by ``metric``; among the families
measured for usefulness when any was, so the card quotes a measured lift; ``metric: lift`` picks
by that lift itself). Optional filters:
``min_confidence`` (the evaluator must give an image its label at least this probability) and
``reject_copies`` (drop images nearer a training image, in pixel space, than 99% of training
images are to their nearest other training image). Filtered images are replaced by new draws,
up to ``max_draws`` times the count. The request is checked before any sampling, and the
folder is replaced as a whole: an existing version is never half-overwritten, and a folder
genzoo did not write (or a link) is refused, not replaced (``layout.replacing_dir``).

Using a dataset: ``load_dataset(path)`` is a PyTorch ``Dataset`` of (image in [0, 1], label),
checked against its manifest's hash; ``mix(real, synthetic, ratio)`` adds ``ratio`` synthetic
images per real one; ``real_dataset(prepared_dir, split)`` wraps a prepared split.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset

from genzoo import models
from genzoo.metrics.quality import diversity, ranks
from genzoo.models.base import DataSpec, by_pixels, sha256_file
from genzoo.tasks.config import (
    LOWER_IS_BETTER,
    AugmentParams,
    Params,
    ParamsError,
    did_you_mean,
    fingerprint,
    format_error,
    readable,
    stage_args,
)
from genzoo.tasks.data import DataError, check_levels, data_hash, data_spec, load_split, read_manifest
from genzoo.tasks.errors import check_output_dir, exit_code
from genzoo.tasks.formats import (
    REAL,
    DatasetContent,
    check_formats,
    measured_figures,
    of_model,
    source_data,
    write_dataset,
)
from genzoo.tasks.layout import (
    check_outside_source,
    check_replaceable,
    evaluation_dir,
    evaluator_dir,
    exclusive,
    family_dir,
    measure_again,
    model_sha,
    of_reference,
    on_other_data,
    read_json,
    scored_by_another_evaluator,
    shown,
    unmeasured,
    up_to_date,
    use_threads,
    usefulness_key,
    warn_if_stale,
)
from genzoo.tasks.quality import _rows, real_features, scores, space_scores
from genzoo.tasks.sample import (
    Teachers,
    copy_radius,
    nearest_train,
    on_levels,
    perturb,
    perturbable,
    teacher_cache,
    teacher_rejects,
    teacher_targets,
)

log = logging.getLogger("genzoo.augment")
AugmentRequest = AugmentParams  # the params block is the request
# the request's keys that decide which images are drawn (the manifest's ``recipe``)
RECIPE_KEYS = ("families", "metric", "per_class", "sample_pixels", "class_ratios", "seed", "min_confidence",
               "reject_copies", "max_draws")  # fmt: skip


# ---------------------------------------------------------------------------- the request


def request(params: Params, **given: Any) -> AugmentParams:
    """The params' ``augment`` block with the given values (None: not given) replaced, validated."""
    try:
        req = AugmentParams(
            **{**params.augment.model_dump(), **{k: v for k, v in given.items() if v is not None}}
        )
    except ValidationError as e:
        raise ParamsError(
            "; ".join(format_error("augment", x) for x in readable(e.errors(), AugmentParams))
        ) from None
    return _known_recipe(params, req)


def _known_recipe(params: Params, req: AugmentParams) -> AugmentParams:
    if req.recipe not in params.recipes:
        have = sorted(params.recipes)
        near = did_you_mean([req.recipe], have)
        raise ParamsError(f"augment.recipe: no recipe {req.recipe!r} under recipes (have {have}{near})")
    return req


def resolve_families(params: Params, req: AugmentParams, choice: dict[str, Any] | None) -> list[str]:
    """Named families, with ``best`` replaced by ``choice``'s family (:func:`best_choice`)."""
    out = []
    for f in dict.fromkeys(req.families):
        if f == "best":
            f = choice["family"]
        elif f not in params.models:
            raise ValueError(
                f"augment.families: {f} is not a family in params ({', '.join(params.families)}) nor `best`"
                f"{did_you_mean([f], params.families)}"
            )
        if f not in out:
            out.append(f)
        elif "best" in req.families:  # `best,vae` where best is vae: one family's images, said
            log.warning("augment.families: `best` is %s, named too: the dataset holds %s's images once", f, f)
    return out


def best_choice(
    params: Params, metric: str, recipe: str | None = None, min_confidence: float = 0.0
) -> dict[str, Any]:
    """The evaluated family with the best ``metric`` (``fd_rank``: the best mean rank by Fréchet
    distance over every judge's feature space), among those whose usefulness was measured
    (a ``usefulness.json`` beside its ``quality.json``) when any was: the dataset a user pulls
    then carries its measured lift, rather than going to a family a hair ahead on one figure
    whose usefulness nobody measured. ``lift``: the measured family whose images, made by
    ``recipe`` (default ``augment.recipe``), lifted the classifier most (:func:`measured_lift`).
    By a quality figure, families :func:`labels_mostly_wrong` (where the dataset keeps the
    model's labels: ``recipe`` samples with no teacher, no ``min_confidence`` filter), then
    :func:`measured_harmful` ones, are passed over while any other is left (``unfit``).
    Returns the pick with what it was picked from (the manifest keeps it: ``best``)."""
    if metric == "lift":
        return _best_by_lift(params, recipe or params.augment.recipe)
    judged, measured, against, useful = {}, [], [], {}  # family -> its quality.json (usefulness.json)
    key = usefulness_key(params)  # the real-data rows these settings make
    for f in params.models:
        quality = read_json(evaluation_dir(params) / f / "quality.json") or {}
        if scored_by_another_evaluator(params, quality):  # not comparable (the report leaves it out)
            why = ("was trained on other data than the prepared data" if on_other_data(params, f)
                   else "was scored by another evaluator than the current one")  # fmt: skip
            log.warning("augment: %s %s: left out (%s)", f, why, measure_again(params, f))
            continue
        if (metric if metric != "fd_rank" else "fd") not in quality:
            continue
        if not of_model(quality, sha := model_sha(params, f)):
            _other_model(params, f, "quality.json")
            continue
        judged[f] = quality
        usefulness = read_json(evaluation_dir(params) / f / "usefulness.json")
        if usefulness is not None and not of_model(usefulness, sha):  # of an earlier model: not its lift
            _other_model(params, f, "usefulness.json")
        elif usefulness is not None and not of_reference(usefulness, key):
            _other_reference(params, f)
            against.append(f)
        elif usefulness is not None:
            measured.append(f)
            useful[f] = usefulness
    if not judged:
        raise FileNotFoundError(
            f"augment.families: `best` needs evaluated families (none in {evaluation_dir(params)});"
            f" run `{params.command('run')}` or `{params.command('evaluate')}` first"
        )
    figures = mean_fd_ranks(judged) if metric == "fd_rank" else {f: q[metric] for f, q in judged.items()}
    pool = measured or list(figures)
    recipe = recipe or params.augment.recipe
    keeps = recipe in params.recipes and keeps_model_labels(params.recipe(recipe), min_confidence)
    rules = [labels_mostly_wrong] if keeps else []  # (as the dataset's own warning has it)
    unfit: dict[str, str] = {}
    for rule in [*rules, measured_harmful]:  # the worse flaw first; while any family is left
        if len(out := {f: why for f in pool if (why := rule(judged[f], useful.get(f), recipe))}) < len(pool):
            unfit |= out
            pool = [f for f in pool if f not in out]
    sign = 1 if metric in LOWER_IS_BETTER else -1
    best = min(pool, key=lambda f: sign * figures[f])
    ahead = [f for f in figures if sign * figures[f] < sign * figures[best] and f not in unfit]
    among = "the families measured for usefulness" if measured else "the evaluated families"
    by = "mean rank by Fréchet distance over every judge's space" if metric == "fd_rank" else metric
    log.info("augment: `best` is %s, the best by %s among %s%s%s", best, by, among,
             f" ({', '.join(ahead)}: not measured)" if ahead else "",
             "".join(f"; {f} left out: {why}" for f, why in unfit.items()))  # fmt: skip
    return {"family": best, "metric": metric, "figures": figures, "measured": measured,
            "among": "measured for usefulness" if measured else "evaluated",
            "ahead_not_measured": ahead, "other_reference": against, "unfit": unfit}  # fmt: skip


def labels_mostly_wrong(quality: dict[str, Any], _usefulness: Any, _recipe: str) -> str | None:
    """Why `best` passes over a family while another one is spared (None: no reason): its images
    follow their label less than half the time (its evaluation's class_accuracy: a quick run's
    DDPM, 12%), where the dataset keeps the model's labels. A family a hair ahead by Fréchet
    distance would otherwise make a dataset that :func:`_say_if_labels_mostly_wrong` warns of."""
    if (acc := labels_followed_below_half(quality)) is not None:
        return f"its images follow their label {100 * acc:.0f}% of the time (class_accuracy)"
    return None


def measured_harmful(quality: dict[str, Any], usefulness: dict[str, Any] | None, recipe: str) -> str | None:
    """Why `best` passes over a family while another one is spared (None: no reason): adding its
    images lowered every classifier's mean accuracy by more than half a point at every real share
    measured (its ``usefulness.json``: ``recipe``'s figures, else its primary recipe's;
    :func:`harmful`'s rule)."""
    try:
        span = lowered(lift_means(usefulness or {}, recipe))
    except (AttributeError, KeyError, TypeError, ValueError):  # (an older or partial file: no verdict)
        return None
    if span is None:
        return None
    lo, hi = span
    return f"adding its images lowered every classifier's mean accuracy ({lo:+.1f} to {hi:+.1f} points)"


def left_out_by_best(manifest: dict[str, Any]) -> str | None:
    """The line naming the families that score better than the one `best` chose (a dataset's
    manifest) but were not measured for usefulness, so were not chosen from, and those passed
    over (:func:`labels_mostly_wrong`, :func:`measured_harmful`); None if none."""
    best = manifest.get("best") or {}
    ahead, unfit = best.get("ahead_not_measured") or [], best.get("unfit") or {}
    if not ahead and not unfit:
        return None
    other = set(best.get("other_reference") or [])  # measured, but under other settings
    said = [f"{f} was passed over: {why}" for f, why in unfit.items()]
    for group, why in (
        ([f for f in ahead if f not in other], "not measured (usefulness.families)"),
        (
            [f for f in ahead if f in other],
            "measured under other settings (`genzoo usefulness --families {}"
            + (f" --profile {manifest['profile']}" if manifest.get("profile") else "")
            + "`)",
        ),
    ):
        if group:
            was, named = "were" if len(group) > 1 else "was", ",".join(group)
            said.append(f"{', '.join(group)} scored better by {best['metric']} but {was} {why.format(named)}")
    among = "measured for usefulness" if best.get("measured") else "evaluated"
    return f"`best` is {best['family']}, the best of the families {among}; " + "; ".join(said)


def measured_lift(usefulness: dict[str, Any], recipe: str, split: str = "test") -> float | None:
    """A family's lift (test accuracy gained, as a fraction) from its ``usefulness.json`` with
    images made by ``recipe``: on the CNN with classical augmentation (the baseline the targets
    are decided on; else the first classifier measured), at the smallest real fraction measured,
    where synthetic data has the most to give (``split="val"``: on the validation split). None
    when that recipe was not measured (on that split), or its filters left a pool there without
    a synthetic image (its lift: real data alone's)."""
    aug = usefulness.get("recipes", {}).get(recipe, {}).get("augmentation") or {}
    if not aug or emptied_lift(usefulness, recipe):
        return None
    per = aug[min(aug, key=float)]
    got = per["cnn" if "cnn" in per else next(iter(per))].get("val_lift" if split == "val" else "lift")
    return got["mean"] if got else None


def emptied_lift(usefulness: dict[str, Any], recipe: str) -> str | None:
    """Why ``recipe``'s lift at the smallest real fraction measures nothing of the family (its
    filters left a pool without a synthetic image, or a class without one), or None."""
    block = usefulness.get("recipes", {}).get(recipe, {})
    aug = block.get("augmentation") or {}
    return unmeasured((block.get("filters") or {}).get(min(aug, key=float)) or {}) if aug else None


def _other_model(params: Params, family: str, what: str) -> None:
    again = (measure_again(params, family) if what == "quality.json"
             else params.command(f"usefulness --families {family}"))  # fmt: skip
    log.warning("augment: %s's %s measured another model than %s (trained again since?): left out of "
                "what `best` chooses by; `%s` measures it", family, what,
                shown(family_dir(params, family) / "model.safetensors"), again)  # fmt: skip


LABELS_FOLLOWED = 0.5  # below this class accuracy (its evaluation's), most of a family's labels are wrong


def labels_followed_below_half(quality: Any) -> float | None:
    """A ``quality.json``'s class_accuracy where it is under :data:`LABELS_FOLLOWED`, else None."""
    acc = quality.get("class_accuracy") if isinstance(quality, dict) else None
    return acc if isinstance(acc, int | float) and acc < LABELS_FOLLOWED else None


def keeps_model_labels(recipe: Any, min_confidence: float) -> bool:
    """Whether a dataset made by ``recipe`` labels its images as the model drew them: sampled, no
    teacher relabelling them, no ``min_confidence`` filter keeping only those the evaluator agrees with."""
    return recipe.mode == "sample" and not recipe.teacher and not min_confidence


def _say_if_labels_mostly_wrong(params: Params, family: str, recipe: str) -> str | None:
    """Warn when ``family``'s evaluation found its images follow their label less than half the
    time (class_accuracy, the evaluator's verdict on each image) and the dataset keeps the
    model's labels (a quick run's DDPM: 12%): most of its labels would be wrong. Returns the
    warning (the manifest and the card keep it: whoever pulls the dataset reads no console)."""
    quality = read_json(evaluation_dir(params) / family / "quality.json")
    if (acc := labels_followed_below_half(quality)) is None or not of_model(
        quality, model_sha(params, family)
    ):
        return None
    line = (
        f"{family}'s images follow their label {100 * acc:.0f}% of the time (class_accuracy in its "
        f"evaluation), and recipe {recipe} keeps the model's labels: most of its labels are likely wrong; a "
        "recipe with a teacher relabels them (augment.recipe, --recipe); augment.min_confidence "
        "(--min-confidence) filters them out"
    )
    log.warning("augment: %s", line)
    return line


def _other_reference(params: Params, family: str) -> None:
    log.warning("augment: %s's usefulness.json was measured against another reference than the current one "
                "(other settings since): left out of what `best` chooses by; `%s` measures it", family,
                params.command(f"usefulness --families {family}"))  # fmt: skip


def _best_by_lift(params: Params, recipe: str) -> dict[str, Any]:
    figures, on_val = {}, {}  # test lifts (quoted), validation lifts (chosen by, where every family has one)
    key = usefulness_key(params)  # the real-data rows these settings make
    for f in params.models:
        usefulness = read_json(evaluation_dir(params) / f / "usefulness.json") or {}
        lift = measured_lift(usefulness, recipe)
        if why := emptied_lift(usefulness, recipe):
            log.warning("augment: %s with recipe %s: %s, so its lift measures nothing of it: left out of "
                        "what `best` chooses by", f, recipe, why)  # fmt: skip
        elif lift is not None and not of_model(usefulness, model_sha(params, f)):
            _other_model(params, f, "usefulness.json")
        elif lift is not None and not of_reference(usefulness, key):
            _other_reference(params, f)
        elif lift is not None:
            figures[f] = lift
            on_val[f] = measured_lift(usefulness, recipe, "val")
    if not figures:
        # measured with an -o, the figures would be of other settings than these: in the params file
        measured = recipe in params.usefulness.recipes or recipe == params.augment.recipe
        also = "" if measured else f"add {recipe} to usefulness.recipes in the params file, then "
        raise FileNotFoundError(
            f"augment.metric: lift needs a family measured for usefulness with recipe {recipe!r} under these "
            f"settings (none in {evaluation_dir(params)}); {also}run `{params.command('usefulness')}` "
            "(usefulness.families says which families) first, or choose `best` by a quality figure "
            "(augment.metric: fd_rank)"
        )
    chosen_on = "validation" if all(v is not None for v in on_val.values()) else "test"
    best = max(figures, key=on_val.get if chosen_on == "validation" else figures.get)
    harm = ""
    if max(figures.values()) < 0:
        harm = f"; a harm: {100 * figures[best]:+.1f} points, no family measured helped"
    elif figures[best] < 0:  # chosen on the validation split, harmful on the test split
        harm = f"; on the test split a harm: {100 * figures[best]:+.1f} points"
    log.info("augment: `best` is %s, the largest measured lift with recipe %s (chosen on the %s split%s)",
             best, recipe, chosen_on, harm)  # fmt: skip
    return {"family": best, "metric": "lift", "figures": figures, "measured": list(figures),
            "among": "measured for usefulness", "recipe": recipe, "chosen_on": chosen_on,
            "validation_figures": on_val if chosen_on == "validation" else None}  # fmt: skip


def mean_fd_ranks(quality: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Each family's mean rank (1: closest to real data; ties share their mean place) by Fréchet
    distance over the feature spaces every family was judged in (``quality``: family -> its
    quality.json; one evaluated before the other judges existed counts by its evaluator's FD)."""
    spaces = {f: {s: v["fd"] for s, v in q.get("spaces", {}).items() if "fd" in v} or {"cnn": q["fd"]}
              for f, q in quality.items()}  # fmt: skip
    common = sorted(set.intersection(*(set(v) for v in spaces.values())))
    if not common:
        raise ValueError("augment.metric: fd_rank needs a feature space every evaluated family was judged in")
    per_space = [ranks({f: spaces[f][s] for f in spaces}) for s in common]
    return {f: sum(r[f] for r in per_space) / len(common) for f in spaces}


def _model_info(params: Params, family: str) -> tuple[Path, dict[str, Any]]:
    path = family_dir(params, family) / "model.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: {family} is not trained; run `{params.command(f'run --families {family}')}` first"
        )
    info: dict[str, Any] = {"model": shown(path), "sha256": sha256_file(path.with_suffix(".safetensors"))}
    m = read_json(path.with_name("metrics.json")) or {}
    info.update({k: m["mlflow"][k] for k in ("run_id", "model_uri")} if "mlflow" in m else {})
    if read_manifest(params.data.prepared_dir, required=False):  # with these settings (the card says)
        info["up_to_date"] = up_to_date(params, family) is not None  # (no prepared data: unknown, unsaid)
    return path, info


def class_counts(req: AugmentParams, spec: DataSpec, asked: bool = True) -> np.ndarray:
    """Images per class: ``per_class`` (fewer for large images with ``sample_pixels``) times
    each class's ratio. A cap on a count a command ``asked`` for is a warning; on the pipeline's
    own dataset (the quick profile's on large images, by design) an info line."""
    ratios, num_classes = req.class_ratios or {}, spec.num_classes
    unknown = [c for c in ratios if c >= num_classes]
    if unknown:
        raise ValueError(f"augment.class_ratios: classes {unknown} do not exist (the data has {num_classes})")
    per_class = by_pixels(req.per_class, req.sample_pixels, spec, 10)
    if per_class < req.per_class:  # the quick profile's cap: said, not silent
        log.log(
            logging.WARNING if asked else logging.INFO,
            "augment: %d images per class, not %d: augment.sample_pixels=%d caps a draw of %dx%dx%d images "
            "(-o augment.sample_pixels=null lifts it)", per_class, req.per_class, req.sample_pixels,
            *spec.shape,
        )  # fmt: skip
    counts = np.array([round(per_class * ratios.get(c, 1.0)) for c in range(num_classes)])
    if counts.sum() == 0:
        raise ValueError("augment.class_ratios: every class has a count of 0")
    return counts


# ---------------------------------------------------------------------------- the filters


class _Filters:
    """The evaluator's confidence and the near-copy test, as asked for; both need the
    evaluation stage's outputs, so a request for them without it fails before sampling."""

    def __init__(self, params: Params, req: AugmentParams):
        self.min_confidence, self.reject_copies = req.min_confidence, req.reject_copies
        self.net, self.train, self.copy_radius = None, None, None
        folder = evaluator_dir(params)
        if self.min_confidence > 0:
            if not (folder / "evaluator.json").exists():
                raise FileNotFoundError(
                    f"{folder / 'evaluator.json'}: augment.min_confidence needs the evaluator;"
                    " run `genzoo evaluate` (or set min_confidence: 0)"
                )
            from genzoo.models.evaluator import load_evaluator

            self.net = load_evaluator(folder / "evaluator.json")
        if self.reject_copies:
            x, _, _ = load_split(params.data.prepared_dir, "train")
            self.train = x.flatten(1).double()
            self.copy_radius = copy_radius(self.train)
        self.rejected = {"low_confidence": 0, "copies": 0}
        self.teacher: _Teacher | None = None

    def keep(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ok = torch.ones(len(x), dtype=torch.bool)
        if self.teacher is not None:
            for reason, bad in self.teacher.rejects(x, y).items():
                self.rejected[reason] = self.rejected.get(reason, 0) + int((bad & ok).sum())
                ok &= ~bad
        if self.net is not None:
            _, probs = self.net.embed(x)
            conf = probs[torch.arange(len(y)), y]
            low = conf < self.min_confidence
            self.rejected["low_confidence"] += int((low & ok).sum())
            ok &= ~low
        if self.train is not None:
            near = nearest_train(x.flatten(1).double(), self.train) < self.copy_radius
            self.rejected["copies"] += int((near & ok).sum())
            ok &= ~near
        return ok


class _Teacher:
    """The recipe's teacher for a pulled dataset: the usefulness CNN (classical augmentation)
    trained on the whole real training split (``teachers`` of them voting together), as the
    measurement trains them on each subset. It drops images it disagrees with or is unsure of
    and gives the kept ones soft labels."""

    def __init__(self, params: Params, recipe):
        self.recipe, self.cfg = recipe, params.usefulness.cnn
        x, y, manifest = load_split(params.data.prepared_dir, "train")
        pool = Teachers(x, y, data_spec(manifest), self.cfg, cache=teacher_cache(params))
        self.net, self.seeds = pool(recipe), pool.seeds(recipe.teachers)
        self.data = data_hash(manifest)

    @torch.inference_mode()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(xb) for xb in x.split(1024)])

    def rejects(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return teacher_rejects(self._logits(x), y, self.recipe)

    def targets(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N, K) the recipe's targets: class probabilities at its temperature (mixed with the
        one-hot labels ``y`` by its ``soft_weight``)."""
        return teacher_targets(self._logits(x), y, self.recipe)

    def describe(self) -> dict[str, Any]:
        weights = b"".join(t.detach().numpy().tobytes() for t in self.net.state_dict().values())
        seeds = self.seeds[0] if len(self.seeds) == 1 else self.seeds
        return {"sha256": hashlib.sha256(weights).hexdigest(), "trained_on": f"real train split {self.data}",
                "seed": seeds, "cnn": self.cfg.model_dump(mode="json")}  # fmt: skip


# ---------------------------------------------------------------------------- generation


def _sampled(net, gen: torch.Generator):
    """Images of the labels asked for, sampled from ``net``."""
    return lambda yb: net.sample(len(yb), yb.to(net.device), generator=gen).float().cpu()


def _perturbed(params: Params, net, recipe, gen: torch.Generator):
    """Images of the labels asked for, each a real training image of that class (drawn at
    random) moved by the recipe's ``strength`` through the model's latent space."""
    x, y, _ = load_split(params.data.prepared_dir, "train")
    by_class = {c: x[y == c] for c in range(net.spec.num_classes)}

    def make(yb: torch.Tensor) -> torch.Tensor:
        real = torch.stack([by_class[c][int(torch.randint(len(by_class[c]), (1,), generator=gen))]
                            for c in yb.tolist()])  # fmt: skip
        seed = int(torch.randint(2**31 - 1, (1,), generator=gen))
        return perturb(net, real, yb, recipe.strength, seed)

    return make


# what to change when a filter rejects most draws
_ADVICE = {
    "teacher_disagrees": "the recipe's teacher, a classifier of the real images, gives most draws another"
    " class: train the family longer (a quick-profile model is barely trained), take another family, or"
    " a recipe without a teacher (`--recipe plain`)",
    "teacher_unsure": "lower the recipe's teacher_confidence",
    "low_confidence": "lower augment.min_confidence (--min-confidence)",
    "copies": "turn off augment.reject_copies",
}


def _too_few(
    family: str, c: int, kept: int, count: int, drawn: int, rejected: dict[str, int], max_draws: int
) -> str:
    """Why a class could not be filled, and what to change: first for the filter that rejected most."""
    most = sorted(((n, reason) for reason, n in rejected.items() if n), reverse=True)
    why = ", ".join(f"{n:,} {reason.replace('_', ' ')}" for n, reason in most)
    worst = most[0][1] if most else None
    advice = [_ADVICE[worst]] if worst in _ADVICE else []
    budget = max_draws * count
    rate = f", at which rate its budget ({budget:,} draws) would keep about {round(kept * budget / drawn)}"
    return (
        f"augment: class {c} of {family}: only {kept} of {count} images passed the filters after {drawn:,}"
        f" draws of it{rate if drawn < budget else ''} (rejected, every class: {why or 'none'}); "
        + "; or ".join([*advice, "raise augment.max_draws (-o augment.max_draws=N)"])
    )


def _hopeless(kept: int, drawn: int, count: int, max_draws: int) -> bool:
    """After ``drawn`` draws of a class (at least its count, and 50), ``kept`` of them passing:
    at that rate its whole budget (``max_draws`` x its count) would not fill even half of it."""
    return drawn >= max(count, 50) and kept * max_draws < drawn / 2


def _draw(net, make, counts: np.ndarray, filters: _Filters, max_draws: int, batch: int):
    """Make images (``make(labels)``) until every class has its count that pass the filters;
    fails once a class has used its budget, or as soon as its pass rate says the budget cannot
    fill it (a barely trained model: minutes saved)."""
    levels = net.spec.levels
    got: dict[int, list[torch.Tensor]] = {c: [] for c in range(len(counts))}
    need = counts.copy()
    drawn = np.zeros_like(counts)
    while need.sum() > 0:
        over = [c for c in range(len(counts)) if need[c] > 0 and (
            drawn[c] >= max_draws * counts[c]
            or _hopeless(counts[c] - need[c], drawn[c], counts[c], max_draws)
        )]  # fmt: skip
        if over:
            c = over[0]
            kept = counts[c] - need[c]
            raise ValueError(_too_few(net.family, c, kept, counts[c], drawn[c], filters.rejected, max_draws))
        ask = torch.from_numpy(np.repeat(np.arange(len(counts)), need))
        for yb in ask.split(batch):
            x = make(yb)
            x = on_levels(x, levels)  # on the data's level grid, as stored
            ok = filters.keep(x, yb)
            for c in yb.unique().tolist():
                drawn[c] += int((yb == c).sum())
                got[c].append(x[ok & (yb == c)])
        for c in range(len(counts)):
            have = sum(len(t) for t in got[c])
            need[c] = max(0, counts[c] - have)
    images = torch.cat([torch.cat(got[c])[: counts[c]] for c in range(len(counts)) if counts[c] > 0])
    labels = torch.cat([torch.full((int(counts[c]),), c) for c in range(len(counts)) if counts[c] > 0])
    return images, labels, int(drawn.sum())


def _quality(
    params: Params,
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: DataSpec,
    chosen_by_evaluator: bool = False,
) -> dict[str, Any] | None:
    """The dataset's own figures against the real test split, when the evaluator exists (None
    otherwise): on at most as many images as the evaluation draws of a family, a seeded draw;
    FD and class accuracy in the other judges' spaces too (``spaces``). ``chosen_by_evaluator``
    (augment.min_confidence): the evaluator kept only images it gives their label with that
    confidence, so its class accuracy leans high (1 by construction above 0.5); the judges',
    trained apart from it, are the measure."""
    folder = evaluator_dir(params)
    real = real_features(folder)
    if real is None:
        return None
    from genzoo.models.evaluator import load_evaluator

    # as many images as the evaluation scores a family on (a seeded draw): the figures compare, and
    # their pairwise parts (diversity, precision/recall's radii) stay small for a large dataset
    cap, of = params.evaluate.per_class(spec) * spec.num_classes, "all its images"
    if len(labels) > cap:
        of = f"{cap} of its {len(labels)} images drawn at random"
        keep = _rows(np.arange(len(labels)), cap, params.seed)  # the evaluation's seeded draw of rows
        images, labels = images[keep], labels[keep]
    if len(labels) <= params.evaluate.k:  # precision/recall's k nearest neighbours need more
        return {
            "not_measured": f"{len(labels)} images, too few for evaluate.k={params.evaluate.k} neighbours"
        }
    net = load_evaluator(folder / "evaluator.json")
    feats, probs = net.embed(images)
    s = scores(params, feats.numpy(), probs.numpy(), labels.numpy(), real, seed=params.seed)
    keys = ("fd", "kid", "precision", "recall", "density", "coverage", "class_accuracy", "memorization")
    out = {k: s[k] for k in keys} | {"reference": "real test split, genzoo evaluator features", "scored": of}
    if (folder / "judges.npz").exists():  # (an evaluator folder from before the judges: the evaluator's only)
        from genzoo.models.judges import load_judges

        judges = load_judges(folder / "judges.npz").embed(images)
        judged = {n: v for n, v in judges.items() if f"{n}.test" in real}
        spaces = space_scores(params, judged, labels.numpy(), real, seed=params.seed)
        out["spaces"] = {n: {k: r[k] for k in ("fd", "class_accuracy") if k in r} for n, r in spaces.items()}
    if chosen_by_evaluator:
        out["class_accuracy_chosen"] = True
    return out


VARIETY_FLOOR = 0.5  # a family's images of a class, as varied as the real ones: about 1 (digits' PixelCNN)
HARM_FLOOR = 0.005  # a lift, as a fraction, that every classifier's mean must fall below to be a warning


def variety(params: Params, x: torch.Tensor, y: torch.Tensor, src: np.ndarray, names: list[str]) -> dict:
    """Per family and class, how much its images vary against the real training images of
    that class: the mean pixel distance between two of its images over that between two real
    ones (:func:`metrics.quality.diversity`, at most 200 images of each side, the real ones a
    seeded draw; classes with fewer than 5 on either side left out). About 1 for a model that
    draws the variety of its data; a model collapsed to a few images per class (a GAN's known
    failure), or one that draws blurred averages, scores far below."""
    rx, ry, _ = load_split(params.data.prepared_dir, "train")
    order = torch.randperm(len(ry), generator=torch.Generator().manual_seed(params.seed))  # (indices only)
    shuffled, real = ry[order], {}  # class -> its real images' spread
    for c in range(len(names)):
        if len(rows := order[shuffled == c][:200]) >= 5:
            real[c] = diversity(rx[rows].flatten(1).double().numpy())
    out: dict[str, dict[str, float]] = {}
    for family in dict.fromkeys(src.tolist()):
        mine = torch.from_numpy(src == family)
        for c, name in enumerate(names):
            if c in real and len(f := x[mine & (y == c)][:200]) >= 5:
                ratio = diversity(f.flatten(1).double().numpy()) / real[c] if real[c] > 0 else 1.0
                out.setdefault(family, {})[name] = round(ratio, 3)
    return out


def collapsed(params: Params, varieties: dict[str, dict[str, float]]) -> list[str]:
    """A warning for each family with classes under :data:`VARIETY_FLOOR` (the card keeps it)."""
    out = []
    for family, per in varieties.items():
        if low := {name: v for name, v in per.items() if v < VARIETY_FLOOR}:
            which = ", ".join(f"{name} {v:.2f}" for name, v in low.items())
            grid = shown(family_dir(params, family) / "samples.png")  # (the card's: no path of this machine)
            out.append(
                f"{family}'s images vary far less than the real ones in {len(low)} of {len(per)} classes "
                f"({which}: the mean distance between two of its images of a class, over that between two "
                f"real ones): its model may have collapsed to a few images per class, or draw blurred "
                f"averages; look at {grid} before training on them"
            )
            log.warning("augment: %s", out[-1])
    return out


def lift_means(usefulness: dict[str, Any], recipe: str | None = None) -> dict[str, dict[str, float]]:
    """share -> classifier -> mean lift, from a ``usefulness.json``'s augmentation block: its
    ``recipe``'s where that was measured, else its primary recipe's; as :func:`harmful` reads them."""
    block = ((usefulness.get("recipes") or {}).get(recipe) or {}).get("augmentation") if recipe else None
    block = block or usefulness["augmentation"]
    return {p: {c: v["lift"]["mean"] for c, v in per.items()} for p, per in block.items()}


def lowered(lifts: dict[str, dict[str, float]]) -> tuple[float, float] | None:
    """The lowest and highest mean lift, in points, where every classifier's mean at every real
    share measured is below -:data:`HARM_FLOOR` (``lifts``: :func:`lift_means`); else None."""
    means = [m for per in lifts.values() for m in per.values()]
    if not means or not np.isfinite(means).all() or max(means) >= -HARM_FLOOR:
        return None
    return 100 * min(means), 100 * max(means)


def harmful(family: str, lifts: dict[str, dict[str, float]], where: Path | str) -> str | None:
    """A warning where adding ``family``'s images lowered every classifier's mean accuracy, by
    more than half a point, at every real share measured (``lifts``: share -> classifier ->
    mean lift, a fraction). A wide interval over few seeds hides it in the figures: a quick
    run's -31.9 ± 105.9 points over 2 seeds read as no verdict where both seeds lost 24 and 40."""
    if (span := lowered(lifts)) is None:
        return None
    return (
        f"{family}: adding its images lowered every classifier's mean accuracy by more than half a point "
        f"at every real share measured ({span[0]:+.1f} to {span[1]:+.1f} points): a "
        f"dataset of them may make a classifier worse ({where})"
    )


def _harmful_measured(measured: dict[str, Any], recipe: str) -> list[str]:
    """:func:`harmful` of each family whose usefulness the dataset's manifest quotes (measured
    with another recipe than the dataset's ``recipe``, where its own was not: said)."""
    out = []
    for family, figures in measured.items():
        useful = (figures or {}).get("usefulness") or {}
        lifts = {
            p: {c: v["mean"] for c, v in per.items() if isinstance((v or {}).get("mean"), int | float)}
            for p, per in (useful.get("lift") or {}).items()
        }
        where = useful.get("file", f"{family}'s usefulness.json")
        if (other := useful.get("recipe")) and other != recipe:
            where = f"{where}, with recipe {other}: this dataset's, {recipe}, was not measured"
        if said := harmful(family, lifts, where):
            log.warning("augment: %s", said)
            out.append(said)
    return out


def _unseen_classes(net, counts: np.ndarray, names: list[str]) -> str | None:
    """Classes ``net`` was trained without (``train.exclude_classes``: a held-out class) get
    no images (their images would come from weights that never saw one, labelled as that
    class): ``counts`` set to 0 there, and the warning returned (the card keeps it)."""
    unseen = [c for c in range(len(counts)) if counts[c] > 0 and not torch.isfinite(net.log_class_prior[c])]
    if not unseen:
        return None
    counts[unseen] = 0
    which = ", ".join(f"{c} ({names[c]})" if names[c] != str(c) else str(c) for c in unseen)
    line = (
        f"{net.family} was trained without classes {which} (train.exclude_classes): none of its images "
        "are drawn for them (they would come from weights that never saw one)"
    )
    log.warning("augment: %s", line)
    return line


def class_names(params: Params, num_classes: int) -> list[str]:
    """The prepared data's class names (the index as a name where it records none)."""
    names = (read_manifest(params.data.prepared_dir, required=False) or {}).get("class_names")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(c) for c in range(num_classes)]


def _outside_runs(params: Params, out_dir: str | Path) -> None:
    """Refuse a dataset folder inside the runs or checkpoints folder: its family folders are DVC
    outputs (``dvc repro`` and ``dvc checkout`` remove what they do not record) and a training
    replaces them whole."""
    where = Path(out_dir).resolve()
    for key, folder in (
        ("run.runs_dir", params.run.runs_dir),
        ("run.checkpoints_dir", params.run.checkpoints_dir),
    ):
        top = Path(folder).resolve()
        if where == top or top in where.parents:
            raise ValueError(
                f"augment.out_dir {out_dir}: inside {key} ({folder}), whose folders a training, `dvc repro` "
                "and `dvc checkout` replace whole; choose a folder outside it (default data/augment)"
            )


def check_target(out_dir: str | Path, name: str) -> Path:
    """The dataset's folder ``out_dir/name``, refused before any work where the stage could not
    write it: ``out_dir`` a link (the datasets would land wherever it points), a file, or not
    writable (the dataset is written beside its old version, inside it); ``name`` a folder
    genzoo did not write, or a link."""
    if Path(out_dir).is_symlink():
        raise ValueError(f"augment.out_dir {out_dir}: is a symbolic link; give the folder it points to")
    root = Path(out_dir).resolve()
    target = root / name
    if target.parent != root:  # the name pattern already forbids it; keep the invariant explicit
        raise ValueError(f"augment name {name!r}: must stay inside {root}")
    check_output_dir(root, "augment.out_dir", into=True)
    check_replaceable(target, "synthetic-dataset")  # a link, or a folder genzoo did not write: refused
    return target


@torch.inference_mode()
def generate(params: Params, req: AugmentParams | None = None, batch: int = 500) -> Path:
    """Write the dataset ``req`` (default: the params' ``augment`` block) -> its folder."""
    asked = req is not None  # a command's request: a cap on its count is a warning (the run's: info)
    req = _known_recipe(params, req or params.augment)
    check_outside_source(params, req.out_dir)  # its class folders would become the user's images
    _outside_runs(params, req.out_dir)
    target = check_target(req.out_dir, req.name)
    formats = check_formats(req.formats)  # the hf extra missing: fails here, before sampling
    choice = (
        best_choice(params, req.metric, req.recipe, req.min_confidence) if "best" in req.families else None
    )
    families = resolve_families(params, req, choice)
    recipe = params.recipe(req.recipe)
    if recipe.mode == "perturb":
        cannot = [f for f in families if f not in perturbable()]
        if cannot:
            can = ", ".join(perturbable())
            raise ValueError(f"augment.recipe {req.recipe!r} perturbs real images, which {', '.join(cannot)} "
                             f"cannot (no encoder; families that can: {can})")  # fmt: skip
    for f in families:  # e.g. quick-run models read with the default params; missing weights refused
        warn_if_stale(params, f, "the dataset is drawn from it", log)
    warnings = []
    if keeps_model_labels(recipe, req.min_confidence):  # the model's labels, as drawn
        warnings = [w for f in families if (w := _say_if_labels_mostly_wrong(params, f, req.recipe))]
    chosen = [_model_info(params, f) for f in families]  # all checked before any sampling
    nets = [models.load(path) for path, _ in chosen]
    # every family's counts (class_ratios against its classes) before the teachers train
    counts_of = [class_counts(req, net.spec, asked=asked) for net in nets]
    names = class_names(params, nets[0].spec.num_classes)
    for net, counts in zip(nets, counts_of, strict=True):
        if line := _unseen_classes(net, counts, names):
            warnings.append(line)
    if not any(counts.sum() for counts in counts_of):
        raise ValueError(
            f"augment: every class asked for was left out of the training of {', '.join(families)} "
            "(train.exclude_classes); train on every class, or ask for others (class_ratios)"
        )
    if drop := [i for i, counts in enumerate(counts_of) if not counts.sum()]:  # it can draw none of them
        chosen, nets, counts_of = (
            [v for i, v in enumerate(vs) if i not in drop] for vs in (chosen, nets, counts_of)
        )
    use_threads(params.threads(families[0]))  # before any compute (the filters' copy radius)
    filters = _Filters(params, req)
    teacher = _Teacher(params, recipe) if recipe.teacher else None
    if teacher is not None:
        filters.teacher = teacher
    xs, ys, src, sources, drawn = [], [], [], {}, 0
    for i, ((_, info), net, counts) in enumerate(zip(chosen, nets, counts_of, strict=True)):
        gen = torch.Generator().manual_seed(req.seed * 1000 + i)
        make = _perturbed(params, net, recipe, gen) if recipe.mode == "perturb" else _sampled(net, gen)
        x, y, n = _draw(net, make, counts, filters, req.max_draws, batch)
        xs.append(x)
        ys.append(y)
        src.append(np.full(len(y), net.family))
        sources[net.family] = info
        drawn += n
    levels = net.spec.levels
    x, y = torch.cat(xs), torch.cat(ys)
    varieties = variety(params, x, y, np.concatenate(src), names)
    warnings += collapsed(params, varieties)
    images = torch.round(x * (levels - 1)).to(torch.uint8).numpy()
    soft = teacher.targets(x, y).numpy() if teacher is not None else None
    content = DatasetContent(images, y.numpy().astype(np.int64), np.concatenate(src), levels,
                             class_names(params, net.spec.num_classes), soft_labels=soft)  # fmt: skip
    request_dump = req.model_dump(mode="json")
    # what made the images: the augment keys that decide the draw and the recipe's block
    made_by = (
        {k: request_dump[k] for k in RECIPE_KEYS}
        | {"families": list(sources)}
        | {"name": req.recipe, **recipe.model_dump(mode="json")}
        | ({"teacher_model": teacher.describe()} if teacher is not None else {})
    )
    data = source_data(read_manifest(params.data.prepared_dir, required=False), params.data.prepared_dir)
    info = {
        "name": req.name,
        "request": request_dump,
        "recipe": made_by,
        "families": sources,
        "profile": params.profile,  # a first look (the card says so), or None
        # everything that decides the images and labels: the request, the recipe's settings and
        # teacher (not only its name), the models and the data they were drawn around
        "params_hash": fingerprint(
            {
                "request": req.model_dump(),
                "models": {f: i["sha256"] for f, i in sources.items()},
                "recipe": made_by,
                "data": data.get("sha256"),
            }
        ),  # fmt: skip
        "seed": req.seed,
        "data": data,
        "filters": {
            "min_confidence": req.min_confidence,
            "reject_copies": req.reject_copies,
            "copy_radius": filters.copy_radius,
            "drawn": drawn,
            "rejected": filters.rejected,
            "kept": len(content.labels),
        },
        "quality": _quality(params, x, y, net.spec, chosen_by_evaluator=req.min_confidence > 0),
        "variety": varieties,  # per family and class: its images' spread over the real images' (1: as varied)
        "measured": measured_figures(
            evaluation_dir(params),
            list(sources),
            {f: i["sha256"] for f, i in sources.items()},
            usefulness_key(params),
            req.recipe,  # the lift of the recipe that made these images, where it was measured
        ),  # fmt: skip
    }
    if choice is not None:  # why that family: the figures `best` chose it from
        info["best"] = choice
    warnings += _harmful_measured(info["measured"], req.recipe)
    if warnings:
        info["warnings"] = warnings
    write_dataset(target, content, formats=formats, info=info)
    labels = content.labels
    dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in filters.rejected.items()) or "none"
    log.info("%s: %d images from %s; draws dropped: %s", target, len(labels), ", ".join(sources), dropped)
    return target


# ---------------------------------------------------------------------------- using a dataset


TARGETS = ("label", "soft")  # what an item's second half is: the class index, or class probabilities


def _targets(targets: str) -> str:
    if targets not in TARGETS:
        raise ValueError(f"targets: expected one of {', '.join(TARGETS)}, got {targets!r}")
    return targets


class SyntheticDataset(Dataset):
    """A genzoo synthetic dataset: items are (image float32 (C, H, W) in [0, 1], label), or
    with ``targets="soft"`` (image, float32 (K,) class probabilities: the recipe's soft labels,
    one-hot where the dataset has none), what a recipe with a teacher trains on.
    ``.source`` (family or ``real``) and ``.is_synthetic`` per image, ``.soft_labels`` (N, K)
    or None, ``.class_names``, ``.manifest``. Reads ``images.npz``, which every version of the
    dataset holds (also those with ``png/<class>/`` folders, before ``imagefolder``)."""

    def __init__(self, path: str | Path, verify: bool = True, targets: str = "label"):
        self.path, self.targets = Path(path), _targets(targets)
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise FileNotFoundError(f"{self.path}: not a genzoo synthetic dataset ({e})") from None
        data = self.path / "images.npz"
        where = str(self.path / "manifest.json")
        if isinstance(self.manifest, dict) and self.manifest.get("kind") == "prepared-data":
            raise DataError(
                f"{self.path}: the prepared real data (genzoo prepare), not a synthetic dataset: "
                f"genzoo.real_dataset({str(self.path)!r}, split) loads it"
            )
        if verify and "sha256" not in self.manifest:
            raise DataError(
                f"{where}: no sha256 to check images.npz against; "
                "write the dataset again (genzoo augment) or load it with verify=False"
            )
        if not data.is_file():
            raise DataError(
                f"{data}: missing (the dataset is incomplete): write it again (genzoo augment) or pull it"
            )
        if verify and sha256_file(data) != self.manifest["sha256"]:
            raise DataError(
                f"{data}: content does not match manifest.json's sha256 (changed or partial copy)"
            )
        with np.load(data, allow_pickle=False) as z:
            images = z["images"]
            levels = check_levels(images, self.manifest.get("levels"), where)
            self.images = torch.from_numpy(images.astype(np.float32) / (levels - 1))
            self.labels = torch.from_numpy(z["labels"].astype(np.int64))
            self.source = z["source"].astype(str)
            # datasets written before these existed: every image synthetic, no soft labels
            self.is_synthetic = (
                z["is_synthetic"].astype(bool) if "is_synthetic" in z.files else self.source != REAL
            )
            self.soft_labels = torch.from_numpy(z["soft_labels"]) if "soft_labels" in z.files else None
        k = self.manifest.get("num_classes") or (int(self.labels.max()) + 1 if len(self.labels) else 0)
        self.class_names = [str(c) for c in self.manifest.get("class_names") or range(k)]
        if self.targets == "soft":
            hard = torch.nn.functional.one_hot(self.labels, k).float()
            self._soft = hard if self.soft_labels is None else self.soft_labels.float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        return self.images[i], (self._soft[i] if self.targets == "soft" else int(self.labels[i]))


def load_dataset(
    name_or_path: str | Path, root: str | Path = "data/augment", verify: bool = True, targets: str = "label"
) -> SyntheticDataset:
    """The dataset at ``name_or_path`` (a folder, or a name under ``root``); ``targets="soft"``:
    items carry class probabilities (:class:`SyntheticDataset`)."""
    p = Path(name_or_path)
    if p.is_dir():
        return SyntheticDataset(p, verify=verify, targets=targets)
    if not (Path(root) / p).is_dir():  # neither: say both places looked at, not root/path alone
        raise FileNotFoundError(
            f"{name_or_path}: no such dataset: neither a folder (from {Path.cwd()}) nor a name under "
            f"root={root} ({Path(root).resolve()}); relative paths are read from the working directory"
        )
    return SyntheticDataset(Path(root) / p, verify=verify, targets=targets)


class RealDataset(TensorDataset):
    """A prepared split: items ``(image in [0, 1], label as int)``, as a ``SyntheticDataset``'s and
    torchvision's, so the two mix in one batch (``default_collate`` refuses ints beside tensors);
    with soft targets, ``(image, one-hot float32 (K,))``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int | None = None):
        super().__init__(x, y)
        self.targets = "label" if num_classes is None else "soft"  # as SyntheticDataset's
        self.onehot = None if num_classes is None else torch.nn.functional.one_hot(y, num_classes).float()

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int | torch.Tensor]:
        x, y = self.tensors
        return x[i], (int(y[i]) if self.onehot is None else self.onehot[i])


def real_dataset(prepared_dir: str | Path, split: str = "train", targets: str = "label") -> RealDataset:
    """A prepared split as a dataset of (image in [0, 1], label); ``targets="soft"``: one-hot class
    probabilities, to mix with a synthetic dataset's soft labels."""
    x, y, manifest = load_split(prepared_dir, split)
    return RealDataset(x, y, int(manifest["num_classes"]) if _targets(targets) == "soft" else None)


def mix(real: Dataset, synthetic: Dataset, ratio: float, seed: int = 0) -> Dataset:
    """``real`` plus ``round(ratio * len(real))`` synthetic items drawn without replacement
    (ratio 1.0: as many synthetic as real images). Both of one kind of target (label, or soft)."""
    if len({d.targets for d in (real, synthetic) if isinstance(d, SyntheticDataset | RealDataset)}) > 1:
        raise ValueError("mix: one dataset's items carry labels, the other's soft labels: load both with "
                         'the same targets (targets="soft" for both)')  # fmt: skip
    if ratio < 0:
        raise ValueError(f"mix ratio must be >= 0, got {ratio}")
    n = round(ratio * len(real))
    if n > len(synthetic):
        raise ValueError(f"mix ratio {ratio}: needs {n} synthetic images, the dataset has {len(synthetic)}")
    idx = torch.randperm(len(synthetic), generator=torch.Generator().manual_seed(seed))[:n]
    return ConcatDataset([real, Subset(synthetic, idx.tolist())])


def main(argv: list[str] | None = None) -> None:
    params, _ = stage_args(argv, "Write the labelled synthetic dataset of params.yaml's augment block.")
    with exclusive(params.run.runs_dir):
        print(shown(generate(params)))  # (relative to the project, as the other stages print theirs)


if __name__ == "__main__":
    sys.exit(exit_code(main, "augment"))
