"""Does the student learn more of the teachers' vote when it is taught on the very image it sees?

    python bench/teaching.py                               # 10% subsets 0 1 2, 5 student seeds
    python bench/teaching.py --ways distil online --seeds 3
    python bench/teaching.py --subset-seeds 3 4 5 --ways distil online likelihood

At a small real fraction the `distil` recipe's student ends short of its ten teachers voting
(README, "Does synthetic data help a classifier?"). Its targets are the vote's on each synthetic
image as drawn, while the student trains on that image shifted and rotated (classical
augmentation): the label may not be the vote's on what the student sees. Beyer et al. 2022
("Knowledge distillation: a good teacher is patient and consistent", arXiv 2106.05237) find
distillation works best when the teacher labels the student's own view, on mixed-up images
(function matching). On each stratified 10% subset (drawn as tasks/usefulness.py draws them),
with PCA + KDE's images made and filtered by the recipe, this trains CNN students (the
usefulness CNN, seeds 1000 x subset + j, as the measurement trains them) taught five ways:

- ``distil``: as shipped (tasks/usefulness.py): the vote's targets on the image as drawn;
- ``views``: each kept image in ``--views`` fixed shifted-and-rotated views, each labelled by the
  vote on that view, which the student then takes as they are (a dataset could ship them);
- ``online``: the vote labels the student's augmented view, at every step (consistent teaching);
- ``mixup``: as ``online``, on pairs of augmented synthetic images mixed with a uniform weight
  (function matching);
- ``likelihood``: as ``online``, by a better vote: the ten teachers plus PixelCNN retrained on the
  subset (as the usefulness measurement retrains it) classifying by its exact likelihood, its
  log-posterior at temperature ``--tau`` added to the vote's (bench/vote.py). The images are
  filtered by that vote too.

Prints each way's lift over the same CNN on the real subset alone, paired by subset and seed,
± 95%. Teachers are cached under --out (runs/teachers), as the pipeline caches them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from families import ROOT, machine  # noqa: E402
from vote import WithLikelihood, subset_arguments  # noqa: E402

from genzoo.models.evaluator import (  # noqa: E402
    Evaluator,
    Synthetic,
    accuracy,
    augment,
    batch_split,
    classical_augment,
    mixed_loss,
    train_evaluator,
)
from genzoo.tasks.config import load_params  # noqa: E402
from genzoo.tasks.prepare import prepare  # noqa: E402
from genzoo.tasks.sample import copy_radius, synthesize, teacher_targets  # noqa: E402
from genzoo.tasks.usefulness import (  # noqa: E402
    _splits,
    pca_kde_draw,
    pool_capped,
    stats,
    subset,
    subset_generator,
    teachers,
)

WAYS = ("distil", "views", "online", "mixup", "likelihood")


def taught(
    part, spec, cfg, recipe, seed: int, x_syn, label, fresh: bool = True, mix: bool = False
) -> Evaluator:
    """The usefulness CNN on ``part`` plus synthetic images ``x_syn`` whose targets
    ``label(views, j)`` gives on the very views the student trains on (``j``: their rows of
    ``x_syn``; ``fresh``: each view shifted and rotated anew, else taken as it is; ``mix``: views
    mixed in pairs with a uniform weight); otherwise as train_evaluator trains it (same
    optimiser, schedule, real-image loss, and the recipe's real share and synthetic weight)."""
    torch.manual_seed(seed)
    net = Evaluator(spec, cfg).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    gen = torch.Generator().manual_seed(seed)
    x, y = part
    n_real, n_syn = batch_split(len(x), spec, cfg, recipe.real_share)
    for _ in range(cfg.steps):
        idx = torch.randint(len(x), (n_real,), generator=gen)
        j = torch.randint(len(x_syn), (n_syn,), generator=gen)
        views = augment(x_syn[j], cfg, gen) if fresh else x_syn[j]
        if mix:
            lam = torch.rand(n_syn, 1, 1, 1, generator=gen)
            views = lam * views + (1 - lam) * views[torch.randperm(n_syn, generator=gen)]
        with torch.no_grad():
            targets = label(views, j)
        loss = mixed_loss(
            net(augment(x[idx], cfg, gen)), y[idx], net(views), targets, recipe.synthetic_weight
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subset_arguments(ap)
    ap.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    ap.add_argument("--views", type=int, default=8, help="views per image for the `views` way")
    ap.add_argument("--tau", type=float, default=10.0, help="PixelCNN's temperature in the `likelihood` vote")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="genzoo-teaching-"))
    base = [f"run.runs_dir={out}/runs", f"data.prepared_dir={out}/prepared", "run.track=false",
            f"run.threads={args.threads}"]  # fmt: skip
    params = load_params(ROOT / "params.yaml", base)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    prepare(params)
    train, test, spec, manifest = _splits(params)
    cfg = params.usefulness.cnn
    print(f"machine: {machine()}")
    print(
        f"{100 * args.fraction:g}% real subsets {args.subset_seeds}, recipe {args.recipe}, PCA + KDE's "
        f"images, {args.seeds} student seeds; test accuracy in % on the {len(test[1])} real test images\n"
    )
    print("| subset | seed | real only | " + " | ".join(args.ways) + " |")
    print("|---" * (3 + len(args.ways)) + "|", flush=True)
    lifts: dict[str, list[float]] = {w: [] for w in args.ways}
    for s in args.subset_seeds:
        idx = subset(train[1], args.fraction, s)
        part = (train[0][idx], train[1][idx])
        recipe = pool_capped(params.recipe(args.recipe), len(idx), spec, cfg)
        if not recipe.teacher or recipe.soft_weight != 1:
            raise SystemExit(
                f"--recipe {args.recipe}: needs a teacher and soft_weight 1 (the vote's own targets)"
            )
        vote = teachers(params, part, spec, s)(recipe)
        hybrid = None
        if "likelihood" in args.ways:
            model, _ = subset_generator(params, "pixelcnn", args.fraction, train, spec, manifest, s)
            hybrid = WithLikelihood(vote, model, spec.num_classes, args.tau)
        gen = pca_kde_draw(params, part, spec)
        radius = copy_radius(part[0].flatten(1).double()) if params.augment.reject_copies else None
        for seed in range(args.seeds):
            cs = 1000 * s + seed  # the classifiers' seed, the measurement's (each subset its own)
            syn = synthesize(
                gen, recipe, part, spec.num_classes, 1000 * s + seed, teacher=vote, copies_within=radius
            )
            real = accuracy(train_evaluator(*part, spec, cfg, seed=cs), *test)
            accs = []
            for way in args.ways:
                if way == "distil":
                    extra = Synthetic(syn.x, syn.targets, recipe.real_share, recipe.synthetic_weight)
                    net = train_evaluator(*part, spec, cfg, seed=cs, synthetic=extra)
                elif way == "views":
                    g = torch.Generator().manual_seed(cs)
                    x_v = classical_augment(
                        syn.x.repeat(args.views, 1, 1, 1), cfg.shift, cfg.rotate, g, cfg.scale, cfg.shear
                    )
                    with torch.no_grad():
                        logits = torch.cat([vote(b) for b in x_v.split(1024)])
                    targets = teacher_targets(logits, syn.y.repeat(args.views), recipe)
                    net = taught(part, spec, cfg, recipe, cs, x_v, lambda v, j, t=targets: t[j], fresh=False)
                elif way == "likelihood":  # the images the better vote keeps, taught by it on each view
                    kept = synthesize(gen, recipe, part, spec.num_classes, 1000 * s + seed, teacher=hybrid,
                                      copies_within=radius)  # fmt: skip
                    label = lambda v, j, by=hybrid, ys=kept.y, r=recipe: teacher_targets(by(v), ys[j], r)  # noqa: E731
                    net = taught(part, spec, cfg, recipe, cs, kept.x, label)
                else:  # the recipe's targets, by the vote on the very view (soft_weight 1: the vote's alone)
                    label = lambda v, j, by=vote, ys=syn.y, r=recipe: teacher_targets(by(v), ys[j], r)  # noqa: E731
                    net = taught(part, spec, cfg, recipe, cs, syn.x, label, mix=way == "mixup")
                accs.append(accuracy(net, *test))
                lifts[way].append(accs[-1] - real)
            cells = " | ".join(f"{100 * a:.1f}" for a in accs)
            print(f"| {s} | {seed} | {100 * real:.1f} | {cells} |", flush=True)
    print(
        f"\nlift over the CNN on the real subset alone, {args.seeds} seeds x {len(args.subset_seeds)} "
        "subsets, paired, ± 95%:"
    )
    for way, v in lifts.items():
        st = stats(v, args.seeds)  # over the subsets' means where several
        print(f"- {way}: {100 * st['mean']:+.1f} ± {100 * st['ci95']:.1f} points")
        if way != "distil" and "distil" in lifts:  # against the recipe as shipped, same subset and seed
            d = stats([a - b for a, b in zip(v, lifts["distil"], strict=True)], args.seeds)
            print(f"  against distil: {100 * d['mean']:+.1f} ± {100 * d['ci95']:.1f}")
    print(f"\n{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
