"""Can the teachers' vote on a small real subset be made better, without outside data?

    python bench/vote.py                                  # 10% subsets 0 1 2, 5 student seeds
    python bench/vote.py --fraction 0.25 --subset-seeds 0 --seeds 3

At a small real fraction the `distil` recipe's student ends about where its ten teachers voting
stand (README, "Does synthetic data help a classifier?"): a larger lift needs a better vote. On
each stratified subset of the real training split (drawn as tasks/usefulness.py draws them),
this scores the recipe's vote on the real test split beside three published ways to improve it,
each using the subset alone:

- **test-time augmentation**: each teacher's log-probabilities averaged over the image and its
  eight shifts by one pixel;
- **a generative classifier in the vote**: PixelCNN retrained on the subset (as the usefulness
  measurement retrains it, validated on a fifth of it) classifies by its exact likelihood,
  p(y | x) proportional to p(x | y); its log-posterior at temperature tau is added to the vote's
  (tau 3, 10 and 30 all shown: chosen on the test split, so only a diagnostic). With
  ``--likelihoods pixelcnn realnvp vae`` each of those families in turn (the VAE by its IWAE
  bound, DDPM by its variational bound), and all of them together;
- **born-again teachers** (Furlanello et al. 2018, arXiv 1805.04770): ten students of the vote,
  each trained on the subset plus synthetic images it relabelled (the `distil` recipe, seeds of
  the teachers), vote in its place.

Then the students (classifier seeds 1000 x subset + j, the subset plus synthetic images by the recipe: PCA +
KDE's, or with ``--images pixelcnn`` the subset PixelCNN's own) of the first vote, of the born-again
vote and of the vote with the first ``--likelihoods`` family's posterior at ``--tau``, as lifts
over the CNN on real data alone, paired (``--seeds 0``: the votes only).

Prints Markdown tables; teachers are cached under --out (runs/teachers), as the pipeline caches them.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402

from genzoo.models.base import log_likelihoods  # noqa: E402
from genzoo.models.evaluator import Ensemble, Synthetic, accuracy, train_evaluator  # noqa: E402
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import prepare  # noqa: E402
from genzoo.tasks.sample import TEACHER_SEED, copy_radius, synthesize  # noqa: E402
from genzoo.tasks.usefulness import (  # noqa: E402
    _splits,
    model_draw,
    pca_kde_draw,
    pool_capped,
    stats,
    subset,
    subset_generator,
    teachers,
)

TAUS = (3, 10, 30)
LIKELIHOODS = ("pixelcnn", "realnvp", "vae", "ddpm")


def shifts(x: torch.Tensor) -> list[torch.Tensor]:
    """The image and its eight shifts by one pixel (zeros come in at the border)."""
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return [padded[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def right(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def class_log_likelihoods(model, x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log p(x | y) of every image under every class y: (N, K)."""
    labels = [torch.full((len(x),), c, dtype=torch.long) for c in range(num_classes)]
    return torch.stack([log_likelihoods(model, x, y) for y in labels], 1).float()


class WithLikelihood(torch.nn.Module):
    """The vote plus a generative classifier: the vote's log-probabilities plus log p(y | x) of a
    model with a likelihood (uniform class prior) at temperature ``tau``, log-softmaxed."""

    def __init__(self, vote: torch.nn.Module, model, num_classes: int, tau: float):
        super().__init__()
        self.vote, self.model, self.num_classes, self.tau = vote, model, num_classes, tau

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ll = class_log_likelihoods(self.model, x, self.num_classes)
        return self.vote(x) + (ll / self.tau).log_softmax(-1)


def student(part, spec, cfg, recipe, gen, radius, seed: int, pool_seed: int, teacher):
    """A CNN trained on the real ``part`` plus ``gen``'s images made and relabelled by ``recipe``
    with ``teacher`` (the pool drawn with ``pool_seed``), as the usefulness measurement trains one."""
    syn = synthesize(gen, recipe, part, spec.num_classes, pool_seed, teacher=teacher, copies_within=radius)
    extra = Synthetic(syn.x, syn.targets, recipe.real_share, recipe.synthetic_weight)
    return train_evaluator(*part, spec, cfg, seed=seed, synthetic=extra)


def subset_arguments(ap: argparse.ArgumentParser) -> None:
    """The arguments of a bench whose students learn a recipe's vote on real subsets (this one and
    bench/teaching.py): the subsets, the students, the recipe, threads and the working folder."""
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--subset-seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, default=5, help="student seeds per subset")
    ap.add_argument("--recipe", default="distil")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="working folder (teachers, subset models cached here); default: a temp dir")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subset_arguments(ap)
    ap.add_argument("--tau", type=float, default=10.0, help="the posterior's temperature in their vote")
    ap.add_argument("--likelihoods", nargs="+", default=["pixelcnn"], choices=LIKELIHOODS,
                    help="families retrained on each subset whose class posterior joins the vote (the "
                         "first: the students' vote too)")  # fmt: skip
    ap.add_argument("--images", choices=["pca_kde", "pixelcnn"], default="pca_kde",
                    help="the students' synthetic images: PCA + KDE's or the subset PixelCNN's")  # fmt: skip
    ap.add_argument("--no-born-again", action="store_true", help="skip the born-again teachers and students")
    ap.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="genzoo-vote-"))
    base = [f"run.runs_dir={out}/runs", f"data.prepared_dir={out}/prepared", "run.track=false",
            f"run.threads={args.threads}", *args.overrides]  # fmt: skip
    params = load_params(ROOT / "params.yaml", base)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    prepare(params)
    train, (xt, yt), spec, manifest = _splits(params)
    cfg = params.usefulness.cnn
    print(f"machine: {machine()}")
    print(f"{100 * args.fraction:g}% real subsets {args.subset_seeds}; recipe {args.recipe}; "
          f"test accuracy in % on the {len(yt)} real test images\n")  # fmt: skip
    fams = args.likelihoods
    columns = ["subset", "one teacher", "the vote", "vote, 9 shifts"]
    for f in fams:
        columns += [f"{f} alone", *(f"vote + {f} (tau {t})" for t in TAUS)]
    columns += [f"vote + {' + '.join(fams)} (tau {t})" for t in TAUS] if len(fams) > 1 else []
    columns += ["born-again vote"]
    print("| " + " | ".join(columns) + " |\n" + "|---" * len(columns) + "|", flush=True)
    born_again = not args.no_born_again
    names = ["first vote's students", *(["born-again vote's students"] if born_again else []),
             f"students of the vote + {fams[0]} (tau {args.tau:g})"]  # fmt: skip
    lifts: dict[str, list[float]] = {name: [] for name in names}
    for s in args.subset_seeds:
        idx = subset(train[1], args.fraction, s)
        part = (train[0][idx], train[1][idx])
        recipe = pool_capped(params.recipe(args.recipe), len(idx), spec, cfg)
        t = teachers(params, part, spec, s)
        vote = t(recipe)
        with torch.inference_mode():
            logits = vote(xt)
            one = right(t.members[0](xt), yt)
            tta = torch.stack([vote(v) for v in shifts(xt)]).mean(0)
        # the generative classifiers: each family retrained on this subset, log p(x | y) for every class y
        fitted, ll = {}, {}
        for f in dict.fromkeys([*fams, *(["pixelcnn"] if args.images == "pixelcnn" else [])]):
            fitted[f], _ = subset_generator(params, f, args.fraction, train, spec, manifest, s)
            if f in fams:
                with torch.inference_mode():
                    ll[f] = class_log_likelihoods(fitted[f], xt, spec.num_classes)
        # born-again: ten students of the vote, each on its own pool, as the next vote
        gen = pca_kde_draw(params, part, spec) if args.images == "pca_kde" else model_draw(fitted["pixelcnn"])
        radius = copy_radius(part[0].flatten(1).double()) if params.augment.reject_copies else None
        make = functools.partial(student, part, spec, cfg, recipe, gen, radius)
        reborn, reborn_acc = None, float("nan")
        if born_again:
            seeds = [(i + 1) * TEACHER_SEED + s for i in range(10)]
            reborn = Ensemble([make(sd, 500_000 + sd, vote) for sd in seeds]).eval()
            with torch.inference_mode():
                reborn_acc = right(reborn(xt), yt)
        hybrid = WithLikelihood(vote, fitted[fams[0]], spec.num_classes, args.tau)
        for seed in range(args.seeds):
            cs = 1000 * s + seed  # the students' seed, the measurement's (each subset its own)
            real = accuracy(train_evaluator(*part, spec, cfg, seed=cs), xt, yt)
            lifts["first vote's students"].append(accuracy(make(cs, 1000 * s + seed, vote), xt, yt) - real)
            if reborn is not None:
                lifts["born-again vote's students"].append(
                    accuracy(make(cs, 1000 * s + seed, reborn), xt, yt) - real
                )
            lifts[names[-1]].append(accuracy(make(cs, 1000 * s + seed, hybrid), xt, yt) - real)
        cells = [one, right(logits, yt), right(tta, yt)]
        post = {f: {tau: (ll[f] / tau).log_softmax(-1) for tau in TAUS} for f in fams}  # log p(y | x) at tau
        for f in fams:
            cells += [right(ll[f], yt), *(right(logits + post[f][tau], yt) for tau in TAUS)]
        if len(fams) > 1:
            cells += [right(logits + sum(post[f][tau] for f in fams), yt) for tau in TAUS]
        cells.append(reborn_acc)
        print(
            f"| {s} | " + " | ".join("–" if math.isnan(c) else f"{100 * c:.1f}" for c in cells) + " |",
            flush=True,
        )
    if args.seeds:
        setting = f"{args.seeds} seeds x {len(args.subset_seeds)} subsets"
        print(f"\nstudents of each vote ({args.recipe}, {args.images} images), lift over the CNN on "
              f"real data alone, {setting}, paired, ± 95%:")  # fmt: skip
        for name, v in lifts.items():
            st = stats(v, args.seeds)  # over the subsets' means where several
            print(f"- {name}: {100 * st['mean']:+.1f} ± {100 * st['ci95']:.1f} points")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
