"""The report: the trade-off rules and targets on known inputs, and the real page built from
real (tiny) trained and evaluated families, opened in headless Chromium."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from genzoo.models.base import sha256_file
from genzoo.tasks.config import validate
from genzoo.tasks.detect import run_benchmark
from genzoo.tasks.evaluate import evaluate_family, evaluator_stage
from genzoo.tasks.prepare import prepare
from genzoo.tasks.report import (
    build_report,
    judges,
    judges_table,
    log_axis_interval,
    targets,
    tradeoff,
    usefulness_targets,
)
from genzoo.tasks.train import train_family
from genzoo.tasks.usefulness import augmentation_words, measure_family, reference
from tests.conftest import tiny_params


def _fam(fd, recall, ips, train_s, sharp, estimator=None, bpd=None):
    m = {"train_seconds": train_s, "steps": 100, "bad_steps": 0}
    if estimator:
        m |= {"bpd_estimator": estimator, "test_bpd": bpd}
    q = {"fd": fd, "ci95": {"fd": 0.01}, "recall": recall, "coverage": recall, "images_per_second": ips,
         "latency_ms": 1.0, "sharpness": sharp}  # fmt: skip
    return {"metrics": m, "quality": q}


def test_tradeoff_verdicts_follow_the_stated_rules():
    fams = {
        "pixelcnn": _fam(0.10, 0.9, 50, 300, 0.30, "exact", 1.7),  # best, slow to sample and train
        "realnvp": _fam(0.30, 0.5, 5000, 100, 0.25, "exact", 2.0),
        "vae": _fam(0.50, 0.8, 9000, 90, 0.10, "bound", 1.9),  # blurriest
        "gan": _fam(0.40, 0.2, 8000, 120, 0.35),  # lowest recall, sharpest
    }
    rows = {r["family"]: r for r in tradeoff(fams)}
    assert rows["pixelcnn"]["quality"]["verdict"] == "partly"  # claimed Good, measured Excellent (rank 1)
    assert "rank 1 of 4" in rows["pixelcnn"]["quality"]["measured"]
    assert rows["pixelcnn"]["sampling"]["verdict"] == "agrees"  # claimed Slow: 50 images/s
    assert rows["pixelcnn"]["training"]["verdict"] == "agrees"  # claimed Slow: the longest
    assert rows["gan"]["quality"]["verdict"] == "disagrees"  # claimed Excellent, rank 3 of 4 = Medium
    assert rows["gan"]["diversity"]["verdict"] == "agrees"  # mode-collapse risk: recall below median
    assert rows["gan"]["density"]["verdict"] == "agrees"  # None
    assert rows["gan"]["density"]["claim"] == "No likelihood"  # read as a leaked Python None
    assert rows["gan"]["training"]["verdict"] == "not a speed claim"
    assert rows["gan"]["sharpness"]["verdict"] == "agrees"
    assert rows["vae"]["sharpness"]["verdict"] == "agrees" and rows["vae"]["density"]["verdict"] == "agrees"
    assert "1.900 bits/dim" in rows["vae"]["density"]["measured"]
    assert (
        rows["realnvp"]["quality"]["verdict"] == "disagrees"
        or rows["realnvp"]["quality"]["verdict"] == "partly"
    )
    fams["vae"]["quality"]["sharpness"] = 0.5  # now the sharpest: the blurry claim disagrees
    assert {r["family"]: r for r in tradeoff(fams)}["vae"]["sharpness"]["verdict"] == "disagrees"
    # one family (`genzoo run --families vae`): its figures, no tier (it was rank 1 of 1: Excellent,
    # the blurriest and the sharpest at once, and at the median of its own speeds)
    (alone,) = tradeoff({"vae": fams["vae"]})
    for col in ("quality", "training", "diversity", "sampling", "sharpness"):
        assert alone[col]["verdict"] == "one family: none to compare it with", col
    assert alone["quality"]["measured"] == "rank 1 of 1 (FD 0.500 ± 0.010)"
    assert alone["training"]["measured"] == "90 s for 100 steps"
    assert alone["sharpness"]["measured"] == "mean |Laplacian| 0.500"
    assert alone["density"]["verdict"] == "agrees"  # exact, a bound or none: no other family needed
    (gan,) = tradeoff({"gan": fams["gan"]})  # its training claim is on stability: said, with no tier
    assert gan["training"] == {"claim": "Tricky", "verdict": "one family: none to compare it with",
                               "measured": "120 s for 100 steps; 0 non-finite steps skipped"}  # fmt: skip
    untimed = dict(fams)  # three of four with no time recorded (metrics.json missing): pixelcnn's alone
    for f in ("realnvp", "vae", "gan"):
        untimed[f] = {**fams[f], "metrics": {"steps": 100, "bad_steps": 0}}
    rows = {r["family"]: r for r in tradeoff(untimed)}
    assert rows["pixelcnn"]["training"]["verdict"] == "one family: none to compare it with"
    assert rows["pixelcnn"]["training"]["measured"] == "300 s for 100 steps"
    assert rows["pixelcnn"]["quality"]["verdict"] == "partly"  # four families: ranked as before


def test_an_interval_reaching_zero_stays_on_the_log_axis_of_quality_vs_speed():
    assert log_axis_interval(10.0, 2.0) == (2.0, 2.0)  # drawn whole
    assert log_axis_interval(10.0, 6.0) == (6.0, 6.0)  # its lower end above 0: whole too
    below, above = log_axis_interval(3.0, 5.0)  # 3 ± 5: cut below, whole above
    assert 0 < 3.0 - below < 3.0 and above == 5.0


def test_targets_report_margins():
    fams = {"a": _fam(0.12, 1, 1, 1, 1), "b": _fam(0.30, 1, 1, 1, 1)}
    ref = {"pca_kde": {"fd": 0.25}, "real_train_vs_test": {"fd": 0.10}}
    t = targets(fams, ref)
    assert t["best_family"] == "a" and t["best_ratio_to_floor"] == pytest.approx(1.2) and t["best_met"]
    assert not t["all_below_pca_kde"] and t["below_pca_kde"]["b"]["ratio"] == pytest.approx(1.2)
    assert t["below_pca_kde"]["a"]["met"] and not t["below_pca_kde"]["b"]["met"]


def _spaces(fd: dict[str, float], acc: dict[str, float] | None = None) -> dict:
    """quality.json's ``spaces`` for two spaces: ``cnn`` (a classifier) and ``pca`` (not)."""
    out = {s: {"fd": v} for s, v in fd.items()}
    for s, a in (acc or {}).items():
        out[s]["class_accuracy"] = a
    return {"spaces": out}


def test_judges_rank_agree_and_report_targets_per_space():
    fams = {
        "a": {"quality": _spaces({"cnn": 0.11, "pca": 3.0}, {"cnn": 0.99})},
        "b": {"quality": _spaces({"cnn": 0.20, "pca": 1.5}, {"cnn": 0.95})},
        "c": {"quality": _spaces({"cnn": 0.90, "pca": 9.0}, {"cnn": 0.98})},
    }
    ref = {
        "real_train_vs_test": _spaces({"cnn": 0.10, "pca": 1.0}),
        "pca_kde": _spaces({"cnn": 0.50, "pca": 2.0}, {"cnn": 0.97}),
        "gmm": _spaces({"cnn": 0.40, "pca": 4.0}, {"cnn": 0.96}),
        "uniform_noise": _spaces({"cnn": 5.0, "pca": 50.0}),
    }
    j = judges(fams, ref, {"test_accuracy": 0.985})
    assert (
        j["spaces"] == ["cnn", "pca"]
        and j["families"] == ["a", "b", "c"]
        and j["baselines"] == ["pca_kde", "gmm"]
    )
    # cnn: a b gmm pca_kde c; pca: b pca_kde a gmm c
    assert j["ranks"]["cnn"] == {"a": 1, "b": 2, "c": 5, "pca_kde": 4, "gmm": 3}
    assert j["ranks"]["pca"] == {"a": 3, "b": 1, "c": 5, "pca_kde": 2, "gmm": 4}
    # of the 10 pairs, 3 are ordered unlike (a-b, a-pca_kde, pca_kde-gmm): tau = (7 - 3) / 10
    assert j["kendall_tau"] == {"cnn|pca": pytest.approx(0.4)}
    cnn, pca = j["per_space"]["cnn"], j["per_space"]["pca"]
    assert (
        cnn["best_family"] == "a"
        and cnn["best_ratio_to_floor"] == pytest.approx(1.1)
        and cnn["best_within_floor"]
    )
    assert pca["best_family"] == "b" and pca["best_ratio_to_floor"] == pytest.approx(1.5)
    assert not pca["best_within_floor"]
    assert cnn["worst_family"] == "c" and cnn["worst_ratio_to_pca_kde"] == pytest.approx(1.8)
    assert pca["worst_ratio_to_pca_kde"] == pytest.approx(4.5) and not pca["below_pca_kde"]
    assert cnn["noise_fd"] == 5.0
    t = j["targets"]
    assert (
        not t["every_family_below_pca_kde"]["met"] and t["every_family_below_pca_kde"]["worst_space"] == "pca"
    )
    assert (
        t["every_family_below_pca_kde"]["verdict"] == "missed by 4.50x (pca: c at 4.50x PCA + KDE's distance)"
    )
    assert t["best_within_floor"]["verdict"] == "missed by 1.15x (pca: best is b at 1.50x the floor)"
    assert list(j["accuracy"]) == ["cnn"]  # pca is no classifier
    assert j["accuracy"]["cnn"]["worst_family"] == "b" and j["accuracy"]["cnn"]["real_test"] == 0.985
    assert t["class_accuracy"]["verdict"] == "missed by 2.0 points (b: 95.0% by cnn)"
    rows = judges_table(j)
    assert [r["name"] for r in rows] == ["a", "b", "c", "PCA + KDE", "Gaussian mixture",
                                         "real train vs test (floor)", "uniform noise"]  # fmt: skip
    assert rows[0]["cells"] == ["1 (0.11)", "3 (3)"]
    # every target met: c and a improve, b's samples are classified right
    fams["c"]["quality"] = _spaces({"cnn": 0.3, "pca": 1.2}, {"cnn": 0.98})
    fams["b"]["quality"]["spaces"]["cnn"]["class_accuracy"] = 0.97
    fams["b"]["quality"]["spaces"]["pca"]["fd"] = 1.25
    fams["a"]["quality"]["spaces"]["pca"]["fd"] = 1.9
    j = judges(fams, ref)
    assert {k: g["verdict"] for k, g in j["targets"].items()} == dict.fromkeys(
        ("every_family_below_pca_kde", "best_within_floor", "class_accuracy"), "met"
    )
    assert judges({"a": {"quality": {"fd": 1.0}}}, ref) is None  # an evaluation from before the spaces


def _usefulness(lifts: dict, tstr: dict, kde_tstr: float) -> dict:
    """usefulness.json's shape: per family the CNN's lift at 10% real data (mean, 95%
    half-width) and its train-on-synthetic accuracy; the real-only and PCA + KDE references."""
    fams = {
        f: {
            "augmentation": {"0.1": {"cnn": {"lift": {"mean": m, "ci95": h}}}},
            "tstr": {"cnn": {"mean": tstr[f]}},
        }
        for f, (m, h) in lifts.items()
    }
    ref = {
        "real": {"0.1": {"cnn": {"mean": 0.85}}, "1.0": {"cnn": {"mean": 0.97}}},
        "pca_kde": {
            "tstr": {"cnn": {"mean": kde_tstr}},
            "augmentation": {"0.1": {"cnn": {"lift": {"mean": 0.005, "ci95": 0.01}}}},
        },
    }
    return {"families": fams, "reference": ref}


@pytest.mark.parametrize(
    ("lifts", "best", "met", "short"),
    [
        ({"gan": (0.031, 0.012), "vae": (0.015, 0.004)}, "gan", True, 0.0),  # 3.1 points, 1.9 to 4.3
        ({"gan": (0.031, 0.035), "vae": (0.015, 0.004)}, "gan", False, 0.004),  # interval reaches -0.4
        ({"gan": (0.008, 0.002), "vae": (0.005, 0.004)}, "gan", False, 0.002),  # sure, but under 1 point
        ({"gan": (0.010, 0.005), "vae": (0.005, 0.004)}, "gan", True, 0.0),  # exactly 1 point, 0.5 to 1.5
        # the best mean is judged, not the best interval: vae's 2.5 +- 0.1 would pass
        ({"gan": (0.030, 0.040), "vae": (0.025, 0.001)}, "gan", False, 0.01),
    ],
)
def test_usefulness_lift_verdict_on_known_inputs(lifts, best, met, short):
    t = usefulness_targets(_usefulness(lifts, {"gan": 0.82, "vae": 0.78}, kde_tstr=0.80))
    lift, tstr = t["rows"]  # no family measured at 25% or 100% here: those rows are left out
    assert lift["family"] == best and lift["recipe"] == "plain" and lift["met"] is met
    assert lift["value"] == lifts[best][0] and lift["ci95"] == lifts[best][1]
    assert lift["short"] == pytest.approx(short) and lift["pca_kde"] == 0.005
    assert t["classifier"] == "cnn" and t["real_accuracy"] == 0.97
    # train on synthetic: gan's 82% is above PCA + KDE's 80% but below 97%
    assert tstr["family"] == "gan" and tstr["met"] is False and tstr["short"] == pytest.approx(0.15)
    good = usefulness_targets(_usefulness(lifts, {"gan": 0.975, "vae": 0.78}, kde_tstr=0.96))["rows"][-1]
    assert good["met"] is True
    beaten = usefulness_targets(_usefulness(lifts, {"gan": 0.975, "vae": 0.78}, kde_tstr=0.98))["rows"][-1]
    assert beaten["met"] is False and beaten["short"] == pytest.approx(0.005)


def test_usefulness_targets_pick_the_best_recipe_and_judge_harm_with_all_the_data():
    u = _usefulness({"gan": (0.002, 0.001)}, {"gan": 0.9}, kde_tstr=0.9)
    u["families"]["gan"]["recipes"] = {
        "plain": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": 0.002, "ci95": 0.001}}},
                                   "1.0": {"cnn": {"lift": {"mean": -0.001, "ci95": 0.001}}}}},
        "teacher": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": 0.012, "ci95": 0.004}}},
                                     "1.0": {"cnn": {"lift": {"mean": 0.001, "ci95": 0.005}}}}},
    }  # fmt: skip
    ten, full, _ = usefulness_targets(u)["rows"]
    assert (ten["recipe"], ten["met"]) == ("teacher", True)
    # with all the data: teacher's +0.1 +- 0.5 reaches -0.4 < -0.3: missed by 0.1 points
    assert (full["recipe"], full["met"]) == ("teacher", False) and full["short"] == pytest.approx(0.001)
    u["families"]["gan"]["recipes"]["teacher"]["augmentation"]["1.0"]["cnn"]["lift"]["ci95"] = 0.002
    assert usefulness_targets(u)["rows"][1]["met"] is True


def test_usefulness_targets_choose_the_best_on_the_validation_split_and_quote_its_test_lift():
    """The largest of several test lifts leans high (each is noisy): where every pair was measured
    on the validation split too, the best is chosen there and its test lift judged; one without
    (a usefulness.json from before): chosen on the test split, as the page then says."""
    u = _usefulness({"gan": (0.031, 0.012), "vae": (0.015, 0.004)}, {"gan": 0.82, "vae": 0.78}, kde_tstr=0.80)
    u["families"]["gan"]["augmentation"]["0.1"]["cnn"]["val_lift"] = {"mean": 0.001}
    u["families"]["vae"]["augmentation"]["0.1"]["cnn"]["val_lift"] = {"mean": 0.02}
    lift = usefulness_targets(u)["rows"][0]
    assert (lift["family"], lift["chosen_on"], lift["of"]) == ("vae", "validation", 2)
    assert (lift["value"], lift["ci95"], lift["met"]) == (0.015, 0.004, True)  # vae's test lift, judged
    del u["families"]["gan"]["augmentation"]["0.1"]["cnn"]["val_lift"]
    lift = usefulness_targets(u)["rows"][0]
    assert (lift["family"], lift["chosen_on"], lift["value"]) == ("gan", "test", 0.031)


def test_pca_kde_beside_the_best_lift_is_by_its_recipe_and_left_out_where_its_pools_were_emptied():
    """The best pair's lift was set beside PCA + KDE's by the dataset's recipe whatever the pair's
    (a teacher's lift against plain sampling), and beside a PCA + KDE lift of emptied pools."""
    u = _usefulness({"gan": (0.012, 0.004)}, {"gan": 0.9}, kde_tstr=0.9)
    u["families"]["gan"]["recipes"] = {"teacher": {"augmentation": u["families"]["gan"]["augmentation"]}}
    ref = u["reference"]
    ref["protocol"] = {"primary_recipe": "plain"}
    ref["pca_kde"]["recipes"] = {
        "plain": {"augmentation": ref["pca_kde"]["augmentation"], "filters": {}},
        "teacher": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": -0.002, "ci95": 0.01}}}},
                    "filters": {"0.1": {"empty_pools": 0, "emptied": []}}},
    }  # fmt: skip
    row = usefulness_targets(u)["rows"][0]
    assert (row["recipe"], row["pca_kde"], row["pca_kde_recipe"]) == ("teacher", -0.002, "teacher")  # not 0.5
    ref["pca_kde"]["recipes"]["teacher"]["filters"]["0.1"]["empty_pools"] = 2
    t = usefulness_targets(u)
    assert t["rows"][0]["pca_kde"] is None and t["left_out"] == [
        "PCA + KDE with recipe teacher at 10% real data "
        "(the filters left 2 pool(s) without a synthetic image)"
    ]
    del ref["pca_kde"]["recipes"]["teacher"]  # (a recipe that perturbs: PCA + KDE is not measured by it)
    row = usefulness_targets(u)["rows"][0]
    assert (row["pca_kde"], row["pca_kde_recipe"]) == (0.005, "plain")
    ref["pca_kde"]["recipes"]["plain"]["filters"] = {"0.1": {"empty_pools": 1, "emptied": []}}  # the fallback
    t = usefulness_targets(u)
    assert t["rows"][0]["pca_kde"] is None and "PCA + KDE with recipe plain at 10%" in t["left_out"][0]


def test_a_lift_whose_pools_the_filters_emptied_is_left_out_of_the_targets_and_named():
    """Every synthetic image of a pool rejected, the classifier trained on real data alone: a
    lift of 0 by construction met "no harm"; a class emptied changed the pool's balance. Both
    are left out of the targets, said, and the best of several pairs says it was chosen."""
    u = _usefulness({"gan": (0.002, 0.001)}, {"gan": 0.9}, kde_tstr=0.9)
    u["families"]["gan"]["recipes"] = {
        "plain": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": 0.002, "ci95": 0.001}}},
                                   "1.0": {"cnn": {"lift": {"mean": -0.001, "ci95": 0.001}}}},
                  "filters": {"0.1": {"empty_pools": 0, "emptied": []}}},
        "teacher": {"augmentation": {"0.1": {"cnn": {"lift": {"mean": 0.012, "ci95": 0.004}}},
                                     "1.0": {"cnn": {"lift": {"mean": 0.0, "ci95": 0.0}}}},
                    "filters": {"0.1": {"empty_pools": 0, "emptied": [4]}, "1.0": {"empty_pools": 3}}},
    }  # fmt: skip
    t = usefulness_targets(u)
    ten, full, _ = t["rows"]
    assert (ten["recipe"], ten["met"], ten["of"]) == ("plain", False, 1)
    assert (full["recipe"], full["met"]) == ("plain", False)  # teacher's 0.0 +- 0.0 would have met it
    assert t["left_out"] == [
        "gan with recipe teacher at 10% real data (the filters left classes 4 without a synthetic image)",
        "gan with recipe teacher at 100% real data (the filters left 3 pool(s) without a synthetic image)",
    ]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    raw = tiny_params(tmp, steps=5, families=["pixelcnn", "vae", "gan"])
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))  # for the commands
    params = validate(raw)
    prepare(params)
    for fam in ("pixelcnn", "vae", "gan"):
        train_family(params, fam, progress=False)
    evaluator_stage(params)
    for fam in ("pixelcnn", "vae", "gan"):
        evaluate_family(params, fam)
    run_benchmark(params, "pixelcnn")  # the anomaly-detection table
    reference(params)  # does synthetic data help: the table, the targets and the curve
    measure_family(params, "gan")
    return tmp, params


def test_the_page_says_when_noise_scores_a_high_precision(evaluated):
    """A quick run's report gave uniform noise a precision of 0.776 with no word of what that means
    for the families' precision: above LOOSE_PRECISION the page says precision is loose in these
    features and what to read instead; below it, nothing."""
    from genzoo.tasks.report import LOOSE_PRECISION, collect, render

    _, params = evaluated
    data = collect(params)
    for precision, said in ((0.776, True), (LOOSE_PRECISION - 0.01, False)):
        data["reference"]["uniform_noise"]["precision"] = precision
        html, _ = render(params, data)
        assert ("Uniform noise, as far from every image" in html) is said
        assert (f"scores precision {precision:.3f} here" in html) is said
        # (the judges' section, when the page has one, comes before the metrics)
        assert ("and the ranks under every judge above tell" in html) is (
            said and "Quality under every judge" in html
        )


def test_a_held_out_class_is_headed_by_its_name(evaluated):
    """`--holdout zero` on classes sorted one, two, zero: the column said held_out_class_2."""
    from genzoo.tasks.report import collect, render

    _, params = evaluated
    data = collect(params)
    sets = data["anomaly"]["pixelcnn"]["sets"]
    sets["held_out_class_2"] = {**next(iter(sets.values())), "class_name": "zero", "label": "held out zero"}
    html, _ = render(params, data)
    assert "<th>held out zero</th>" in html and "held_out_class_2" not in html


def test_anomaly_columns_keep_the_benchmarks_order_and_each_familys_quantile_is_said(evaluated):
    """Columns sorted by name put blank first and held-out class 10 before 2; the caption gave the
    first family's quantile for every family; an evaluator without its metrics.json failed the page."""
    from genzoo.tasks.report import anomaly_sets, collect, render

    _, params = evaluated
    data = collect(params)
    a = data["anomaly"]["pixelcnn"]
    some = next(iter(a["sets"].values()))
    made = list(a["sets"])
    a["sets"] |= {
        "held_out_class_10": {**some, "label": "held out 10"},
        "held_out_class_2": {**some, "label": "held out 2"},
    }
    assert anomaly_sets(data["anomaly"]) == [*made, "held_out_class_2", "held_out_class_10"]
    assert made[:2] == ["gaussian_noise", "inverted"]  # the benchmark's order: obvious to subtle
    html, _ = render(params, data)
    heads = re.findall(r"<th>(held out [0-9]+)</th>", html)
    assert heads == ["held out 2", "held out 10"]
    assert f"above the validation split's threshold for quantile {a['quantile']}, which flags" in html
    data["anomaly"]["vae"] = {**a, "estimator": "bound", "quantile": 0.9}
    html, _ = render(params, data)
    assert f"threshold for each quantile: pixelcnn {a['quantile']}, vae 0.9, which flags" in html
    data["evaluator"] = {}
    html, _ = render(params, data)
    assert "evaluator test accuracy not recorded" in html


def test_grids_keep_a_row_per_class_where_a_class_has_few_images_or_none(evaluated, monkeypatch):
    """A source with three images of one class and none of another slid every row after them
    into the next class's (and the per-class grids took a source's rows by position)."""
    import numpy as np
    import torch

    from genzoo.tasks import report

    _, params = evaluated
    labels = np.array([c for c in range(10) if c != 5 for _ in range(3 if c == 1 else 10)])
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 8, 8) / 1000
    monkeypatch.setattr(report, "_samples", lambda path, key=None: (images, labels))
    drawn = []
    real = report.grid
    monkeypatch.setattr(report, "grid", lambda x, **k: drawn.append(x) or real(x, **k))
    out = report.sample_grids(params, {"gan": {"quality": {}}})
    by_source = dict(zip(out["row_labels"], drawn, strict=False))
    gan = by_source["gan"]
    assert gan.shape[0] == 100  # ten rows of ten
    assert torch.equal(gan[20:30, 0, 0, 0], images[13:23, 0, 0, 0])  # row 2: class 2's images
    assert (gan[13:20] == 0.5).all() and (gan[50:60] == 0.5).all()  # class 1's short row, class 5's
    per_class = drawn[len(out["row_labels"]) :]
    assert len(per_class) == 10 and all(len(g) == 10 * len(out["row_labels"]) for g in per_class)


def test_grids_of_large_images_are_not_enlarged_past_the_grid_scale(evaluated, monkeypatch):
    """Every grid was drawn at 4x: at 128x128 one grid was a 5164 px square (6 MB of PNG), some
    sixteen of them inlined in the page; digits are drawn at 4x as before."""
    import torch

    from genzoo.tasks import report

    _, params = evaluated
    scales = []
    monkeypatch.setattr(report, "_png", lambda img: "")
    monkeypatch.setattr(report, "grid", lambda x, nrow, scale: scales.append(scale))
    monkeypatch.setattr(report, "_samples", lambda *a: None)  # the real test images alone
    report.sample_grids(params, {})
    assert set(scales) == {4}  # 8x8 digits
    x, y, manifest = report.load_split(params.data.prepared_dir, "test")
    big = torch.zeros(len(y), 3, 128, 128)
    monkeypatch.setattr(report, "load_split", lambda *a: (big, y, manifest))
    scales.clear()
    report.sample_grids(params, {})
    assert set(scales) == {1}


def test_a_partial_or_older_evaluation_still_makes_a_page_that_says_what_it_lacks(evaluated):
    """The page failed on an evaluation a user can have: a model whose metrics.json a training
    started again had removed (no training time: KeyError), no family with a loss curve (the
    template's StrictUndefined), a usefulness.json from before recipes; and it claimed intervals
    over one sampling seed, labelled a 20% subset's accuracy "train on real"."""
    from genzoo.tasks.report import collect, metric_rows, render

    _, params = evaluated
    data = collect(params)
    fams = data["families"]
    del fams["gan"]["metrics"]["train_seconds"]
    for d in fams.values():
        d["metrics"]["curve"] = {"step": [], "loss": []}
    u = data["usefulness"]["families"]["gan"]
    name, first = next(iter(u.pop("recipes").items()))
    u |= {"recipe": name, "augmentation": first["augmentation"]}  # the file's older shape
    html, extra = render(params, data)
    gan = next(r for r in extra["tradeoff"] if r["family"] == "gan")
    assert gan["training"]["verdict"] == "not measured" and "not recorded" in gan["training"]["measured"]
    assert all(r["training"]["verdict"] != "not measured" for r in extra["tradeoff"] if r["family"] != "gan")
    assert next(r for r in metric_rows(data) if r["name"] == "gan")["train"] == "—"
    assert "Training curves" not in html and "Figures are means ± 95% intervals over 2 sampling seeds" in html
    assert '<td rowspan="1">gan</td><td>plain</td>' in html  # the older file's one recipe
    # one sampling seed: no interval claimed, none printed
    data["reference"]["protocol"]["seeds"] = 1
    for d in fams.values():
        d["quality"]["ci95"]["fd"] = 0.0
    del data["usefulness"]["reference"]["real"]["1.0"]  # usefulness.fractions without 1.0
    fams["vae"]["quality"]["ci95"]["images_per_second"] = 500.0  # a speed's spread: the machine's load
    data["human"] = {
        "study": "one", "raters": {"included": 1, "excluded_attention": 0, "total": 1, "answered": 1},
        "families": {"vae": {"error": 0.4, "ci95": None, "fake_error": 0.3}}, "real": {"error": 0.5},
        "agreement": {"krippendorff_alpha": None}, "answers": 24, "protocol": {}, "pairwise": None,
    }  # fmt: skip
    html, extra = render(params, data)
    assert "Figures are of one sampling seed" in html and "intervals over 1 sampling" not in html
    assert "One rater counted: no interval" in html and "95% bootstrap interval over raters" not in html
    assert "24 real-or-generated answers" in html and "40.0% (one rater: no interval)" in html
    assert "±" not in next(r for r in metric_rows(data) if r["name"] == "vae")["cells"][-1]
    assert all("±" not in r["quality"]["measured"] for r in extra["tradeoff"])
    assert "Train on 20% of the real data:" in html and "train on 20% of the real data)" in html


def test_the_page_says_on_which_split_the_best_lift_was_chosen(evaluated):
    """Below 100% real data the best family and recipe pair is chosen on the validation split and
    its test lift judged; at 100% (the pipeline's models chose their weights on that split) on
    the test lifts, which the page says lean optimistic."""
    from genzoo.tasks.report import collect, render

    _, params = evaluated
    data = collect(params)
    u = data["usefulness"]
    u["reference"]["real"]["0.1"] = u["reference"]["real"].pop("0.2")  # the 20% subset as the 10% target's
    for block in u["families"]["gan"]["recipes"].values():
        block["augmentation"]["0.1"] = block["augmentation"].pop("0.2")
        block["filters"] = {}  # (a tiny model's teacher may empty a pool: both recipes measured here)
    html, extra = render(params, data)
    ten, full, _ = extra["usefulness"]["rows"]
    assert (ten["chosen_on"], ten["of"], full["chosen_on"], full["of"]) == ("validation", 2, "test", 2)
    n_val = u["reference"]["protocol"]["n_val"]
    text = " ".join(html.split())
    assert (
        f"below 100% real data the best is chosen by its lift on the validation split, {n_val} images" in text
    )
    assert (
        "(the best of 2 family and recipe pairs on the validation split, its test lift here; it may " in text
    )
    assert "(the best of 2 family and recipe pairs on this test lift: its interval does not allow" in text


def test_pictures_of_an_evaluation_cut_short_are_not_shown_beside_older_figures(evaluated):
    """An evaluation of a model trained again, stopped after its first seed, left the new model's
    samples.npz (and a latent.npz) beside the old quality.json: the page showed the new model's
    pictures under the old model's figures. Each npz carries its evaluation's key."""
    import numpy as np

    from genzoo.tasks.layout import npz_key
    from genzoo.tasks.report import collect, render

    tmp, params = evaluated
    folder = tmp / "runs" / "evaluation"
    data = collect(params)
    assert npz_key(folder / "vae" / "samples.npz") == data["families"]["vae"]["quality"]["key"]
    assert npz_key(folder / "vae" / "latent.npz") == data["families"]["vae"]["quality"]["key"]
    assert npz_key(folder / "evaluator" / "pca_kde_samples.npz") == data["evaluator"]["key"]
    html, _ = render(params, data)
    assert 'alt="samples of vae"' in html and "vae: spherical interpolation" in html
    assert "Samples not shown" not in html
    saved = {n: (folder / n).read_bytes() for n in ("vae/samples.npz", "vae/latent.npz")}
    try:
        for n in saved:
            with np.load(folder / n) as z:
                np.savez(folder / n, **{**dict(z), "key": np.array("0" * 16)})  # another evaluation's
        html, _ = render(params, data)
        assert 'alt="samples of vae"' not in html and "vae: spherical interpolation" not in html
        assert (
            "Samples not shown: vae (its samples of an evaluation cut short: genzoo evaluate --family vae)"
            in html
        )
        assert 'alt="samples of gan"' in html  # the others as they were
    finally:
        for n, b in saved.items():
            (folder / n).write_bytes(b)


def test_a_family_evaluated_before_the_judges_is_named_and_decides_no_every_family_target():
    """A family whose quality.json predates the judges' spaces was dropped from the section
    without a word, and "every family below PCA + KDE" said met with it (FD 5x PCA + KDE's) left out."""
    fams = {
        "a": {"quality": _spaces({"cnn": 0.11, "pca": 1.1}, {"cnn": 0.99})},
        "b": {"quality": {"fd": 5.0}},  # evaluated before the spaces
    }
    ref = {
        "real_train_vs_test": _spaces({"cnn": 0.10, "pca": 1.0}),
        "pca_kde": _spaces({"cnn": 0.50, "pca": 2.0}, {"cnn": 0.97}),
    }
    j = judges(fams, ref)
    assert j["families"] == ["a"] and j["unjudged"] == ["b"]
    every = j["targets"]["every_family_below_pca_kde"]
    assert not every["met"] and every["verdict"] == "not decided: b not judged in these spaces"
    assert not j["targets"]["class_accuracy"]["met"]
    assert j["targets"]["best_within_floor"]["met"]  # a, judged, is within 1.3x: met whatever b is
    fams["a"]["quality"]["spaces"]["pca"]["fd"] = 3.0
    assert judges(fams, ref)["targets"]["every_family_below_pca_kde"]["verdict"] == (
        "missed by 1.50x (pca: a at 1.50x PCA + KDE's distance) (b not judged in these spaces)"
    )  # missed by a judged family: missed, whatever b scores


def test_report_files_and_summary(evaluated):
    tmp, params = evaluated
    summary = build_report(params)
    out = tmp / "runs" / "report"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert set(summary["families"]) == {"pixelcnn", "vae", "gan"}
    assert "test_bpd" in summary["families"]["vae"] and "test_bpd" not in summary["families"]["gan"]
    useful = summary["usefulness"]
    assert useful["classifier"] == "cnn"
    lift_all, tstr = useful["rows"]  # measured at 20% and 100%: the 100% row (no harm) and TSTR
    assert lift_all["family"] == "gan" and lift_all["recipe"] in ("plain", "teacher")
    assert lift_all["target"].startswith("with all the real data")
    # at 100% the pipeline's model chose its weights on the validation split: the choice is made on test
    assert lift_all["chosen_on"] == "test" and "val_lift" not in lift_all
    assert tstr["target"].startswith("train on synthetic")
    assert all(isinstance(r["met"], bool) for r in useful["rows"])  # rules: see above
    spaces = summary["spaces"]  # ranks per space, the taus, the targets' verdicts
    assert set(spaces["ranks"]) == {"cnn", "pca", "mlp", "lenet", "random_cnn"}
    assert set(spaces["ranks"]["pca"]) == {"pixelcnn", "vae", "gan", "pca_kde", "gmm"}
    assert len(spaces["kendall_tau"]) == 10 and all(-1 <= t <= 1 for t in spaces["kendall_tau"].values())
    assert set(spaces["targets"]) == {"every_family_below_pca_kde", "best_within_floor", "class_accuracy"}
    for goal in spaces["targets"].values():
        assert goal["verdict"] == "met" if goal["met"] else goal["verdict"].startswith("missed by")
    lines = (out / "families.csv").read_text().splitlines()
    assert lines[0].startswith("name,kind,fd,") and len(lines) == 1 + 3 + 4  # families + 4 reference rows
    html = (out / "index.html").read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: nothing fetched
    # two sampling seeds (the quick profile's): the page says how wide their intervals are
    assert "with two seeds\nan interval spans 12.7 standard errors each side" in html
    assert f"({augmentation_words(params.usefulness.cnn)}: the baseline to beat)" in html
    # the usefulness table: real data's row says its columns are trained on real; a generator's
    # train-on-synthetic figure is one cell beside its recipes' rows, not repeated on each
    assert "<td>real data alone (its columns: train on real)</td>" in html
    gan = json.loads((tmp / "runs" / "evaluation" / "gan" / "usefulness.json").read_text())
    cell = "{:.1f} ± {:.1f}".format(100 * gan["tstr"]["cnn"]["mean"], 100 * gan["tstr"]["cnn"]["ci95"])
    assert html.count(f'<td rowspan="{len(gan["recipes"])}">{cell}</td>') == 1 and len(gan["recipes"]) == 2
    assert f'<td rowspan="{len(gan["recipes"])}">gan</td>' in html
    assert (
        gan["protocol"]["n_val"] > 0 and "below 100% real data the best is chosen" not in html
    )  # no target there
    for text in (
        "Trade-offs",
        "PCA + KDE",
        "Gaussian mixture",
        "real train vs test",
        "real training images per class (a family&#39;s draw)",  # how the floor is measured (escaped)
        "Targets",
        "pixelcnn (exact)",
        "Does synthetic data help a classifier?",
        "train on synthetic, logistic",
        "Latent space",
        "vae: spherical interpolation (real images at the ends)",
        "gan: spherical interpolation between two prior codes",  # no real ends: a prior's codes
        "vae: class arithmetic",
        "gan (prior codes)",
        "No latent space: pixelcnn (no code to encode an image to or decode one from",
        "Quality under every judge",
        "Kendall",
        "random_cnn",
    ):
        assert text in html, text
    assert "gan: spherical interpolation (real" not in html
    assert "profile" not in summary and "A first look at the" not in html
    # made under a profile (`make run PROFILE=quick`): the page and the summary say so first
    quick = params.model_copy()
    quick._profile = "quick"
    assert build_report(quick)["profile"] == "quick"
    html = (out / "index.html").read_text()
    banner = html[html.index('<p class="profile">') : html.index("<h2>Targets</h2>")]
    assert "<code>quick</code> profile" in banner and "pixelcnn 5, vae 5, gan 5 training steps" in banner
    assert "A first look at the" in banner


def test_a_report_of_an_evaluation_made_before_the_floor_said_how_it_is_drawn(evaluated):
    """An evaluator stage run by an older genzoo wrote no ``protocol.floor``: `genzoo report` on
    that folder still renders, without the sentence."""
    tmp, params = evaluated
    path = tmp / "runs" / "evaluation" / "evaluator" / "reference.json"
    saved = path.read_text()
    old = json.loads(saved)
    del old["protocol"]["floor"]
    path.write_text(json.dumps(old))
    try:
        build_report(params)
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "real-vs-real floor" in html and "a family&#39;s draw" not in html
    finally:
        path.write_text(saved)


def test_a_family_scored_by_another_evaluator_is_left_out_of_the_comparison(
    evaluated, capsys, restore_logging
):
    """After the data or the evaluator changed, a family whose evaluation was not re-run holds
    figures in another feature space: the report leaves it out of every table and ranking and
    names it, instead of ranking it beside the others."""
    tmp, params = evaluated
    path = tmp / "runs" / "evaluation" / "gan" / "quality.json"
    saved = path.read_text()
    old = json.loads(saved)
    assert len(old["evaluator_sha256"]) == 64  # the evaluation records its scorer
    path.write_text(json.dumps({**old, "evaluator_sha256": "0" * 64}))
    try:
        summary = build_report(params)
        assert set(summary["families"]) == {"pixelcnn", "vae"}
        assert set(summary["spaces"]["ranks"]["pca"]) == {"pixelcnn", "vae", "pca_kde", "gmm"}
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "gan (scored by another evaluator: genzoo evaluate --family gan)" in html
        assert summary["left_out"] == ["gan (scored by another evaluator: genzoo evaluate --family gan)"]
        from genzoo.flows import cli  # the command says so too, not only the page

        assert cli.main(["report", "--params", str(tmp / "params.yaml"), "-q"]) == 0
        out = capsys.readouterr().out
        again = f"genzoo evaluate --family gan --params {tmp / 'params.yaml'}"  # (the command's own --params)
        assert f"left out: gan (scored by another evaluator: {again})\n" in out
        # a model trained on other data (32x32 images, the data now 16x16): evaluating it cannot
        # work (it stopped on a numpy broadcast error); its training is the command
        model = tmp / "runs" / "gan" / "model.json"
        kept = model.read_text()
        model.write_text(json.dumps({**json.loads(kept), "data_sha256": "1" * 64}))
        try:
            left = build_report(params)["left_out"]
            assert left == ["gan (trained on other data than the prepared data: genzoo train --family gan)"]
        finally:
            model.write_text(kept)
    finally:
        path.write_text(saved)
    assert "gan" in build_report(params)["families"]
    path.rename(path.with_suffix(".bak"))  # trained, not evaluated: the command that scores it
    try:
        assert build_report(params)["left_out"] == ["gan (not evaluated yet: genzoo evaluate --family gan)"]
    finally:
        path.with_suffix(".bak").rename(path)


def test_a_model_made_with_other_settings_than_the_reports_is_named(evaluated):
    """A family trained with other params (a run's -o, say) and evaluated, then a report under
    params.yaml's: its figures are shown, and the page and summary.json say they are of a model
    made with other settings (it was ranked beside the others without a word)."""
    from genzoo.tasks.config import validate

    tmp, params = evaluated
    assert "trained_with_other_settings" not in build_report(params)
    raw = params.model_dump(mode="json")
    raw["models"]["gan"].setdefault("train", {})["steps"] = 7
    summary = build_report(validate(raw))
    assert summary["trained_with_other_settings"] == ["gan (`genzoo status` says why)"]
    assert "gan" in summary["families"]  # shown all the same
    html = (tmp / "runs" / "report" / "index.html").read_text()
    assert "Not up to date with this report's params, data and code (trained with other settings, or " in html
    # trained again since its evaluation, with other settings than the report's: both said at once
    # (the first alone hid the second, whose fix the first's hint would have skipped)
    weights = tmp / "runs" / "gan" / "model.safetensors"
    kept = weights.read_bytes()
    try:
        weights.write_bytes(kept + b" ")
        both = build_report(validate(raw))
    finally:
        weights.write_bytes(kept)
    assert both["of_an_earlier_model"] == [  # (its evaluation now would measure the stale model)
        "gan (trained again since its evaluation: genzoo train --family gan, then "
        "genzoo evaluate --family gan)"
    ]
    assert both["trained_with_other_settings"] == ["gan (`genzoo status` says why)"]
    # a human study beside it (here of weights runs/ no longer holds: left out) changes nothing of
    # that list (the study's families took its place)
    human = tmp / "runs" / "evaluation" / "human"
    made = not human.exists()
    human.mkdir(parents=True, exist_ok=True)
    study = {
        "study": "s",
        "families": {"vae": {}},
        "answers": 0,
        "created": "2026-12-06",
        "models": {"vae": "0" * 64},
    }
    (human / "s.json").write_text(json.dumps(study))
    try:
        assert build_report(validate(raw))["trained_with_other_settings"] == [
            "gan (`genzoo status` says why)"
        ]
    finally:
        (human / "s.json").unlink()  # only what this test wrote: other studies of the fixture stay
        if made:
            human.rmdir()
    build_report(params)


def test_usefulness_measured_against_another_reference_is_left_out(evaluated):
    """`genzoo usefulness` with other settings rewrites the reference rows (real data alone); a
    family's lifts measured against the old ones are not set beside them (the report showed a
    quick run's lift under the default run's reference)."""
    tmp, params = evaluated
    path = tmp / "runs" / "evaluation" / "gan" / "usefulness.json"
    saved = path.read_text()
    ref = json.loads((tmp / "runs" / "evaluation" / "usefulness" / "reference.json").read_text())
    assert json.loads(saved)["reference_key"] == ref["key"]  # the family records its reference
    path.write_text(json.dumps({**json.loads(saved), "reference_key": "another"}))
    try:
        assert "usefulness" not in build_report(params)
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "gan (usefulness measured against another reference: genzoo usefulness --families gan)" in html
        quick = params.model_copy()
        quick._profile = "quick"  # the command it names measures it under the run's profile
        build_report(quick)
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "another reference: genzoo usefulness --families gan --profile quick)" in html
    finally:
        path.write_text(saved)
    assert "usefulness" in build_report(params)
    # a `genzoo usefulness -o ...` rewrote the real-data rows and measured gan against them: a report
    # under these settings (no -o) shows neither (they were left in as the current ones)
    ref_path = tmp / "runs" / "evaluation" / "usefulness" / "reference.json"
    saved_ref = ref_path.read_text()
    ref_path.write_text(json.dumps({**ref, "key": "the -o run's"}))
    path.write_text(json.dumps({**json.loads(saved), "reference_key": "the -o run's"}))
    try:
        assert "usefulness" not in build_report(params)
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "usefulness (its real-data rows were measured under other settings: genzoo usefulness)" in html
        assert "gan (usefulness measured against another reference: genzoo usefulness --families gan)" in html
    finally:
        path.write_text(saved)
        ref_path.write_text(saved_ref)
    assert "usefulness" in build_report(params)


def _chromium() -> str:
    exe = os.environ.get("GENZOO_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if exe is None:
        pytest.fail(
            "the report test needs Chromium (`make test` installs Debian's chromium; or set GENZOO_CHROMIUM)"
        )
    return exe


def test_report_renders_in_headless_chromium(evaluated):
    from playwright.sync_api import sync_playwright

    tmp, params = evaluated
    build_report(params)
    page_path = tmp / "runs" / "report" / "index.html"
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_chromium(), args=flags)
        try:
            page = browser.new_page()
            errors, failed = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
            )
            tables = page.locator("table").count()
            headers = page.locator("h2").all_inner_texts()
            verdicts = page.locator("td.agrees, td.disagrees, td.partly").count()
        finally:
            browser.close()
    assert errors == [] and failed == []
    # per-family grids (real + 3 families + 2 baselines), 10 per-class grids, latent strips (vae: 4,
    # gan: 2; pixelcnn has none), usefulness, 2 plots, curves
    assert len(images) == 6 + 10 + 6 + 1 + 3, [i[0] for i in images]
    broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert broken == []
    assert tables == 8 and verdicts >= 3  # 3 of them: the ranks, the taus, the targets per space
    assert headers == ["Targets", "Quality under every judge", "Samples", "Metrics",
                       "Trade-offs: measured vs the textbook", "Latent space",
                       "Does synthetic data help a classifier?", "Anomaly detection by likelihood",
                       "Plots"]  # fmt: skip


def test_an_anomaly_benchmark_and_a_usefulness_measure_rebuild_the_report(
    evaluated, capsys, restore_logging, monkeypatch
):
    """`genzoo detect --benchmark` and `genzoo usefulness` build the report again where there is
    one, as `judge results` does (they left it without their figures, and said nothing)."""
    from genzoo.flows import cli

    tmp, params = evaluated
    pfile = tmp / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp, steps=5, families=["pixelcnn", "vae", "gan"])))
    report = tmp / "runs" / "report" / "index.html"
    build_report(params)
    for argv in (["detect", "--family", "pixelcnn", "--benchmark"], ["usefulness", "--families", "gan"]):
        report.write_text("the report before")
        capsys.readouterr()
        assert cli.main([*argv, "--params", str(pfile)]) == 0  # (both measured already: cached)
        assert f"report: {report}" in capsys.readouterr().out, argv
        assert "Anomaly detection by likelihood" in report.read_text(), argv
    import genzoo.tasks.report as R

    def cannot(params):  # a report that cannot be built: the measurement done and said stays done
        raise FileNotFoundError("reference.json missing")

    monkeypatch.setattr(R, "build_report", cannot)
    assert cli.main(["usefulness", "--families", "gan", "--params", str(pfile)]) == 0
    out, err = capsys.readouterr()
    assert "train on synthetic" in out and "report not rebuilt: reference.json missing" in err


def test_judge_results_rebuild_the_report_in_json_any_parser_reads(evaluated, capsys, restore_logging):
    """`genzoo judge results` builds the report again (it left the old one, without the study);
    a study whose every rater failed an attention check writes JSON a strict parser reads
    (Krippendorff's alpha undefined: null, not NaN) and says where its answers went."""
    from genzoo.flows import cli
    from genzoo.tasks import judge

    tmp, params = evaluated
    pfile = tmp / "params.yaml"
    pfile.write_text(yaml.safe_dump(tiny_params(tmp, steps=5, families=["pixelcnn", "vae", "gan"])))
    build_report(params)
    url = f"sqlite:///{tmp / 'studies.db'}"
    req = judge.request(params, url, name="careless", families=["gan"], per_family=2, attention=1, raters=1)
    (token,) = [r["token"] for r in judge.create(params, url, req)["raters"]]
    eng = judge.engine(url)
    rater = judge.rater_for(eng, token)
    while trial := judge.progress(eng, rater)["trial"]:  # everything called real, noise included
        judge.answer(eng, rater, trial["id"], "real" if trial["mode"] == "single" else "left", 700)
    path = tmp / "runs" / "evaluation" / "human" / "careless.json"
    try:
        assert (
            cli.main(["judge", "results", "careless", "--reps", "50", "--params", str(pfile), "--db", url])
            == 0
        )
        out = capsys.readouterr().out
        assert re.search(
            r"0 raters counted, 1 left out \(attention checks\), 0 real-or-generated answers "
            r"\(4 more from those",
            out,
        )
        assert "gan: no answers from a rater counted" in out and "too few ratings" in out
        assert f"report: {tmp / 'runs' / 'report' / 'index.html'}" in out

        def refuse(name):
            raise ValueError(f"{name} in {path}")

        figures = json.loads(path.read_text(), parse_constant=refuse)
        assert figures["agreement"]["krippendorff_alpha"] is None and figures["answers_left_out"] == 4
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "<h2>Human evaluation</h2>" in html and "<code>careless</code>" in html
        assert "Krippendorff&#39;s alpha): —." in html or "Krippendorff's alpha): —." in html
    finally:
        path.unlink(missing_ok=True)
        build_report(params)


def test_a_human_study_sits_beside_the_metrics(evaluated):
    """A study's results (runs/evaluation/human/<name>.json) in the report: each family's HYPE
    error beside its Fréchet distance and precision/recall, and Kendall's tau between the
    rankings (here the human order is the FD order reversed: tau -1)."""
    from genzoo.tasks.report import collect, human_table

    tmp, params = evaluated
    fd = {f: d["quality"]["fd"] for f, d in collect(params)["families"].items()}
    order = sorted(fd, key=fd.get)  # best FD first
    fams = {f: {"error": 0.1 + 0.1 * i, "ci95": [0.05 * i, 0.2 + 0.1 * i], "fake_error": 0.2}
            for i, f in enumerate(order)}  # fmt: skip
    fams[order[0]] |= {"n_fake": 12, "n_real": 11, "raters": 3}  # the others: a study from before the counts
    raters = {"included": 3, "excluded_attention": 1, "total": 5, "answered": 4}  # one not started
    human = {"study": "s<1>", "families": fams, "raters": raters,
             "real": {"error": 0.1, "n": 30}, "agreement": {"krippendorff_alpha": 0.42}, "answers": 90,
             "protocol": {}, "pairwise": None}  # fmt: skip
    path = tmp / "runs" / "evaluation" / "human" / "s1.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(human))
    try:
        table = human_table(human, collect(params)["families"])
        assert table["tau"]["fd"] == pytest.approx(-1.0)
        assert [r["family"] for r in table["rows"]] == order and [r["rank"] for r in table["rows"]] == [
            3,
            2,
            1,
        ]
        assert [r["fd_rank"] for r in table["rows"]] == [1, 2, 3]
        tied = {
            **human,
            "families": {f: {**d, "error": 0.5 if f != order[0] else 0.7} for f, d in fams.items()},
        }
        assert [r["rank"] for r in human_table(tied, collect(params)["families"])["rows"]] == [1, 2, 2]
        summary = build_report(params)
        assert summary["human"]["study"] == "s<1>"
        assert summary["human"]["kendall_tau"]["fd"] == pytest.approx(-1)
        assert summary["human"]["error"] == {f: d["error"] for f, d in fams.items()}
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert "<h2>Human evaluation</h2>" in html and "s&lt;1&gt;" in html and "s<1>" not in html
        counted = "3 raters counted\n(1 left out for failing the attention checks; 1 with no answer yet)"
        assert f"{counted}, 90 real-or-generated answers" in html
        assert "Krippendorff&#39;s alpha): 0.420" in html or "Krippendorff's alpha): 0.420" in html
        assert "Fréchet-distance ranking\n-1.00" in html
        counts = "<td>12 on its images, 11 on real ones; 3 raters</td>"  # the answers behind each error
        assert f"<td>{order[0]}</td><td>10.0% (0.0–20.0)</td>\n{counts}" in html
        assert f"<td>{order[1]}</td><td>20.0% (5.0–30.0)</td>\n<td>—</td>" in html  # (no counts: none said)
        # a study whose images came from other weights (a family trained again, or on other data,
        # since) is not these models' figures: left out, and named (it sat beside them)
        made = {f: sha256_file(tmp / "runs" / f / "model.safetensors") for f in fams}
        path.write_text(json.dumps({**human, "models": made}))
        assert build_report(params)["human"]["study"] == "s<1>"  # the same weights: shown
        path.write_text(json.dumps({**human, "models": {**made, order[0]: "0" * 64}, "created": 2.0}))
        older = path.with_name("s0.json")  # a study from before studies recorded their models
        older.write_text(json.dumps({**human, "study": "s0", "created": 1.0}))
        try:
            summary = build_report(params)
        finally:
            older.unlink()
        assert "human" not in summary  # and the older one of unknown models does not stand in
        assert (
            f"human study s<1> (drew from weights of {order[0]} that runs/ no longer holds: genzoo judge "
            "create makes a study of the models there now)" in "; ".join(summary["left_out"])
        )
        assert "<h2>Human evaluation</h2>" not in (tmp / "runs" / "report" / "index.html").read_text()
        # the study of the weights in runs/, one family's evaluation of its earlier weights: that
        # family's figures are not the study's model's (no FD beside its error, none in the tau)
        fams_now = collect(params)["families"]
        old = {**fams_now, order[0]: {**fams_now[order[0]], "quality": {
            **fams_now[order[0]]["quality"], "model_sha256": "1" * 64}}}  # fmt: skip
        table = human_table({**human, "models": made}, old)
        assert table["earlier"] == [order[0]] and table["rows"][0]["fd"] is None
        assert table["tau"]["fd"] == pytest.approx(-1.0)  # the other two, still reversed
        assert human_table({**human, "models": made}, fams_now)["earlier"] == []
        # tied errors: Kendall's tau undefined, null in summary.json (a strict parser reads it)
        tied = {f: {**d, "error": 0.3} for f, d in fams.items()}
        path.write_text(json.dumps({**human, "models": made, "families": tied}))
        build_report(params)
        text = (tmp / "runs" / "report" / "summary.json").read_text()
        strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in summary.json"))
        assert strict["human"]["kendall_tau"]["fd"] is None
    finally:
        path.unlink()
        build_report(params)


def test_the_report_shows_the_newest_study_with_answers_whatever_was_scored_last(tmp_path):
    """`genzoo judge results` on an older study, or on one nobody has rated yet, does not take
    the report's human-evaluation section from the newest study with answers."""
    import os

    from genzoo.tasks.report import latest_study

    def scored(name: str, created: float | None, answers: int, at: float) -> None:
        path = tmp_path / f"{name}.json"
        body = {"study": name, "families": {}, "answers": answers} | ({"created": created} if created else {})
        path.write_text(json.dumps(body))
        os.utime(path, (at, at))

    assert latest_study(tmp_path) is None
    scored("old", None, 40, at=100.0)  # results from before studies recorded their creation
    assert latest_study(tmp_path)["study"] == "old"
    scored("s1", 200.0, 90, at=300.0)
    scored("s0", 150.0, 60, at=400.0)  # an older study, scored last
    scored("s2", 250.0, 0, at=500.0)  # the newest, no answers yet
    assert latest_study(tmp_path)["study"] == "s1"
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a study's results
    scored("s2", 250.0, 12, at=600.0)  # rated now
    assert latest_study(tmp_path)["study"] == "s2"
    # a newer study whose one rater failed the attention checks: no answer counted, yet rated;
    # its section (0 raters counted, 1 left out) is shown, not an older study's without a word
    path = tmp_path / "s3.json"
    raters = {"answered": 1, "included": 0, "excluded_attention": 1}
    path.write_text(
        json.dumps({"study": "s3", "families": {}, "answers": 0, "created": 260.0, "raters": raters})
    )
    assert latest_study(tmp_path)["study"] == "s3"


def test_anomaly_figures_of_another_data_or_a_family_left_out_are_not_shown(evaluated):
    """After a run on other data, the report's anomaly table kept the family's figures of the
    earlier data beside the others (and of a family the page left out)."""
    tmp, params = evaluated
    path = tmp / "runs" / "evaluation" / "pixelcnn" / "anomaly.json"
    saved = path.read_text()
    assert len(json.loads(saved)["data_sha256"]) == 64  # the benchmark records its data
    row = "<tr><td>pixelcnn (exact)</td>"
    try:
        build_report(params)
        assert row in (tmp / "runs" / "report" / "index.html").read_text()
        path.write_text(json.dumps({**json.loads(saved), "data_sha256": "0" * 64}))
        build_report(params)
        assert "Anomaly detection by likelihood" not in (tmp / "runs" / "report" / "index.html").read_text()
        left_out = json.loads((tmp / "runs" / "report" / "summary.json").read_text())["left_out"]
        assert any(x.startswith("pixelcnn anomaly figures (made on other data: ") for x in left_out), left_out
        path.write_text(saved)
        quality = tmp / "runs" / "evaluation" / "pixelcnn" / "quality.json"
        good = quality.read_text()
        quality.write_text(json.dumps({**json.loads(good), "evaluator_sha256": "0" * 64}))
        try:  # pixelcnn left out of the comparison: its anomaly row too
            build_report(params)
            assert row not in (tmp / "runs" / "report" / "index.html").read_text()
        finally:
            quality.write_text(good)
    finally:
        path.write_text(saved)
        build_report(params)


def test_figures_of_a_model_trained_again_since_its_evaluation_are_marked(evaluated):
    """After `genzoo train` retrained a family, the report showed its earlier model's quality and
    anomaly figures as the model's in runs/, without a word."""
    tmp, params = evaluated
    weights = tmp / "runs" / "pixelcnn" / "model.safetensors"
    anomaly = tmp / "runs" / "evaluation" / "pixelcnn" / "anomaly.json"
    assert json.loads(anomaly.read_text())["model_sha256"] == sha256_file(weights)  # recorded
    saved = weights.read_bytes()
    meta = weights.with_suffix(".json")
    meta_saved = meta.read_text()
    row = "<tr><td>pixelcnn (exact)</td>"
    try:
        summary = build_report(params)
        assert "of_an_earlier_model" not in summary and "left_out" not in summary
        assert row in (tmp / "runs" / "report" / "index.html").read_text()
        weights.write_bytes(
            saved + b" "
        )  # other weights than the ones evaluated, recorded as a training does
        meta.write_text(json.dumps({**json.loads(meta_saved), "sha256": sha256_file(weights)}))
        summary = build_report(params)
        html = (tmp / "runs" / "report" / "index.html").read_text()
        assert summary["of_an_earlier_model"] == [
            "pixelcnn (trained again since its evaluation: genzoo evaluate --family pixelcnn)"
        ]
        assert "trained_with_other_settings" not in summary  # up to date: its evaluation is the step
        assert "Figures of an earlier model: pixelcnn" in html and "pixelcnn" in summary["families"]
        assert row not in html  # its anomaly figures left out, and said so
        assert summary["left_out"] == [
            "pixelcnn anomaly figures (of an earlier model: genzoo detect --family pixelcnn --benchmark)"
        ]
        weights.write_bytes(saved)
        meta.write_text(meta_saved)
        gan = tmp / "runs" / "gan" / "model.safetensors"  # usefulness measured of the gan before
        kept = gan.read_bytes()
        try:
            gan.write_bytes(kept + b" ")  # (model.json left as it was: not up to date, trained first)
            summary = build_report(params)
            assert (
                "gan usefulness (of an earlier model: genzoo train --family gan, then genzoo usefulness "
                "--families gan)" in summary["left_out"]
            ), summary["left_out"]
            assert "usefulness" not in summary  # gan's was the only family measured
        finally:
            gan.write_bytes(kept)
    finally:
        weights.write_bytes(saved)
        meta.write_text(meta_saved)
        build_report(params)


def test_evaluating_a_model_of_other_image_shapes_says_so(evaluated):
    """`genzoo evaluate --family gan` on a model trained on 32x32 images, the data now 16x16,
    stopped on `operands could not be broadcast together with shapes (75,3072) (768,)`."""
    tmp, params = evaluated
    manifest = Path(params.data.prepared_dir) / "manifest.json"
    kept = manifest.read_text()
    manifest.write_text(json.dumps({**json.loads(kept), "shape": [3, 16, 16]}))
    try:
        with pytest.raises(ValueError, match=r"gan: trained on images of shape 1x8x8 in 10 classes, .* holds "
                           r"3x16x16 in 10: .* \(`genzoo train --family gan`\)"):  # fmt: skip
            evaluate_family(params, "gan")
    finally:
        manifest.write_text(kept)


def test_samples_of_more_than_256_levels_are_kept_whole_for_the_grids(tmp_path):
    """12-bit data (prepare keeps up to 65,536 levels): the samples' uint8 cast wrapped, and every
    grid of the report came out dark noise."""
    import torch

    from genzoo.tasks.evaluate import _save_samples
    from genzoo.tasks.report import _samples

    images = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).view(5, 1, 1, 1)
    for levels in (17, 4096):
        _save_samples(tmp_path / "s.npz", images, torch.arange(5), levels)
        back, labels = _samples(tmp_path / "s.npz")
        assert torch.allclose(back, images, atol=0.5 / (levels - 1)) and labels.tolist() == [0, 1, 2, 3, 4]


def test_the_page_names_a_data_folder_inside_the_project_relative_to_it(tmp_path, monkeypatch):
    """The page printed `folder:/home/alice/project/imgs`: a page people share named the machine's
    folders. Inside the working directory: relative to it; elsewhere and by name: as given."""
    from genzoo.tasks.report import _source

    monkeypatch.chdir(tmp_path)
    assert _source(f"folder:{tmp_path / 'imgs'}") == "folder:imgs"
    assert _source("npz:/elsewhere/x.npz") == "npz:/elsewhere/x.npz" and _source("digits") == "digits"
