"""One trained family, sampled with other sampling settings, in every judge's feature space.

    python bench/sample_sweep.py --run <folder of a finished `genzoo run`> --family ddpm --set guidance=1,2,3
    python bench/sample_sweep.py --run <folder> --family vae --set prior=standard,ex_post \
        --set temperature=0.8,1
    python bench/sample_sweep.py --run <folder> --family pixelcnn --own-posterior 0.5,0.9,0.99

The run's weights, rebuilt with each combination of the ``--set`` values (keys of the family's
``net`` block; ``after_training`` refitted, e.g. the VAE's ex-post prior), so only the sampling
differs. Each combination is scored as the evaluate stage scores a family (its seeds and samples
per class): Fréchet distance and the classifier judges' class accuracy in every space, precision
and recall in the evaluator's. bench/families.py leaves a run to read (--out, default
/tmp/genzoo-bench/run0).

``--own-posterior TAU,...`` (families with a likelihood) then scores, for each TAU, the run's
network drawing three images per one wanted and keeping, per label, those its own Bayes rule
(p(y | x) from its log p(x | y) and class prior) gives their label at least TAU, then the most
confident of the rest: whether a family's off-class samples are ones it knows to be ambiguous.
It first prints that Bayes rule's accuracy on the test images.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo import models  # noqa: E402
from genzoo.models.base import ExactLikelihood, LikelihoodBound, log_likelihoods  # noqa: E402
from genzoo.models.evaluator import load_evaluator  # noqa: E402
from genzoo.models.judges import load_judges  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.data import load_split  # noqa: E402
from genzoo.tasks.evaluate import _measure  # noqa: E402
from genzoo.tasks.layout import evaluator_dir, family_dir  # noqa: E402
from genzoo.tasks.quality import real_features  # noqa: E402
from genzoo.tasks.sample import draw  # noqa: E402

SPACES = ("cnn", "pca", "mlp", "lenet", "random_cnn")


def settings(pairs: list[str]) -> list[dict]:
    """``["guidance=1,2", "x=a"]`` -> every combination, values read as YAML: [{guidance: 1, x: a}, ...];
    a value may be a list itself (``rows=[0,4],[2,8]``: commas inside brackets do not split)."""
    keys, values = [], []
    for pair in pairs:
        key, sep, vals = pair.partition("=")
        if not sep or not key or not vals:
            raise SystemExit(f"--set {pair!r}: expected key=value[,value...]")
        keys.append(key)
        values.append(yaml.safe_load(f"[{vals}]"))
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (runs/ and prepared/ under it)")
    ap.add_argument("--family", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2", help="net keys to sweep")
    ap.add_argument("--own-posterior", metavar="TAU,...", default="",
                    help="keep only samples whose label the model's own p(y | x) gives >= TAU")  # fmt: skip
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    run = Path(args.run)
    folders = [f"run.runs_dir={run}/runs", f"data.prepared_dir={run}/prepared"]
    params = load_params(ROOT / "params.yaml", folders)
    torch.set_num_threads(args.threads)
    judging = load_judging(params)
    trained = models.load(family_dir(params, args.family) / "model.json")
    combos = settings(args.set) or [{}]
    taus = [float(v) for v in args.own_posterior.split(",") if v]
    if taus and not isinstance(trained, ExactLikelihood | LikelihoodBound):
        raise SystemExit(f"--own-posterior: {args.family} has no likelihood to classify by")
    nets = [resampled(trained, args.family, update) for update in combos]  # all checked before sampling
    x, y, _ = load_split(params.data.prepared_dir, "train")
    e, n_test = params.evaluate, len(judging[2]["test"])
    print(f"machine: {machine()}\n{args.family} of {run}: {e.seeds} seeds x {e.samples_per_class} images per "
          f"class against the {n_test} test images; FD (class accuracy) per space\n")  # fmt: skip
    keys = list(combos[0])
    print("| " + " | ".join(keys + list(SPACES)) + " | precision | recall | seconds |")
    print("|---" * (len(keys) + len(SPACES) + 3) + "|")
    for update, model in zip(combos, nets, strict=True):
        model.eval().after_training(x, y)
        t0 = time.perf_counter()
        s = judge(params, judging, model, trained.spec)
        cells = [f"{update[k]}" for k in keys] + cells_of(s)
        print("| " + " | ".join(cells + [f"{time.perf_counter() - t0:.0f}"]) + " |", flush=True)
    if taus:
        trained.eval().after_training(x, y)  # as each setting above: its own buffers refitted
        by_own_posterior(params, judging, trained, taus)


OVER = 3  # images drawn per image kept, for --own-posterior


def by_own_posterior(params, judging: tuple, model, taus: list[float]) -> None:
    """The run's network (its own sampling settings, ready to sample), its draws kept by its own
    posterior at each of ``taus``."""
    xt, yt, _ = load_split(params.data.prepared_dir, "test")
    right = (own_posterior(model, xt).argmax(1) == yt).double().mean()
    print(f"\nits own Bayes rule on the {len(yt)} test images: {100 * right:.1f}% right\n")
    print("| own p(y given x) >= | " + " | ".join(SPACES) + " | precision | recall | passed | seconds |")
    print("|---" * (len(SPACES) + 5) + "|")
    for tau in taus:
        t0, passed = time.perf_counter(), []

        def pick(images, labels, tau=tau, passed=passed):
            conf = own_posterior(model, images)[torch.arange(len(images)), labels.repeat(OVER)]
            passed.append((conf >= tau).double().mean().item())
            return images[keep(conf, labels, tau)]

        s = judge(params, judging, model, model.spec, pick)
        cells = [f"{tau}"] + cells_of(s) + [f"{sum(passed) / len(passed):.3f}"]
        print("| " + " | ".join(cells + [f"{time.perf_counter() - t0:.0f}"]) + " |", flush=True)


def own_posterior(model, x: torch.Tensor) -> torch.Tensor:
    """p(y | x) by Bayes' rule on the model's own log p(x | y) (exact, or its bound) and class
    prior: (N, K) float64."""
    lp = torch.stack(
        [log_likelihoods(model, x, torch.full((len(x),), c)) for c in range(model.spec.num_classes)], dim=1
    )  # (N, K)
    return torch.softmax(lp + model.log_class_prior.double().cpu(), dim=1)


def keep(conf: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
    """Which of ``len(conf)`` draws (``labels`` repeated, ``conf`` each draw's own posterior of
    its label) stand in for ``labels``, one index each: per label, the draws that pass
    (``conf >= tau``) in the order drawn, then the others most confident first."""
    drawn = labels.repeat(len(conf) // len(labels))
    index = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique():
        slots, cand = (labels == c).nonzero().squeeze(1), (drawn == c).nonzero().squeeze(1)
        ok = conf[cand] >= tau
        rest = cand[~ok][conf[cand[~ok]].argsort(descending=True, stable=True)]
        index[slots] = torch.cat([cand[ok], rest])[: len(slots)]
    return index


def resampled(trained, family: str, update: dict, flag: str = "--set"):
    """``trained``'s weights in a network rebuilt with ``update`` (keys of its ``net`` block), so
    only the sampling differs; call ``after_training`` on it for a setting's own buffers (the
    VAE's ex-post prior). Exits naming the setting where a value is bad or the weights do not fit."""
    try:
        cfg = type(trained.cfg).model_validate({**trained.cfg.model_dump(), **update})
        model = models.build(family, trained.spec, cfg)
        # one whose weights the run lacks (a wider net, more layers) is a different model:
        # retrain it, do not sample it untrained
        loaded = model.load_state_dict(trained.state_dict(), strict=False)
        if untrained := set(loaded.missing_keys) & {n for n, _ in model.named_parameters()}:
            raise RuntimeError(f"not the run's network (retrain it): no {sorted(untrained)[:3]}")
    except (ValueError, RuntimeError) as err:  # a bad value; a size mismatch
        raise SystemExit(f"{flag} {update}: {str(err)[:300]}") from None
    return model


def load_judging(params) -> tuple:
    """The run's evaluator, its judges and the real images' features in every space."""
    folder = evaluator_dir(params)
    return (
        load_evaluator(folder / "evaluator.json"),
        load_judges(folder / "judges.npz"),
        real_features(folder),
    )


def judge(params, judging: tuple, model, spec, pick=None) -> dict:
    """``model`` (ready to sample) scored as the evaluate stage scores a family; with ``pick``,
    ``OVER`` images are drawn per one wanted and ``pick(images, labels)`` keeps one per label."""

    def sample(labels, seed):
        if pick is None:
            return draw(model, len(labels), labels=labels, seed=seed, batch=500)[0]
        drawn = draw(model, OVER * len(labels), labels=labels.repeat(OVER), seed=seed, batch=500)[0]
        return pick(drawn, labels)

    return _measure(params, *judging, sample, spec, None)


def cells_of(s: dict) -> list[str]:
    """FD (class accuracy) per space, then precision and recall, as table cells."""
    cells = []
    for name in SPACES:
        r = s["spaces"][name]
        acc = f" ({100 * r['class_accuracy']:.1f}%)" if "class_accuracy" in r else ""
        cells.append(f"{r['fd']:.3f}{acc}")
    return cells + [f"{s['precision']:.3f}", f"{s['recall']:.3f}"]


if __name__ == "__main__":
    main()
