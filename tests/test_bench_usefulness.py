"""bench/usefulness.py --against: another run's accuracies (other settings, the same subsets and
seeds) subtracted seed by seed, against its real-only classifier and against the same row."""

import pytest

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("usefulness")


def run(real: list[float], distil: list[float]) -> dict:
    aug = {"0.1": {"cnn": {"augmented": {"per_seed": distil}}}}
    return {"reference": {"real": {"0.1": {"cnn": {"per_seed": real}}},
                          "pca_kde": {"recipes": {"distil": {"augmentation": aug}}}},
            "families": {}}  # fmt: skip


def test_against_pairs_every_row_with_the_other_runs_real_only_and_same_row(bench, capsys):
    other = run([0.90, 0.92, 0.94], [0.91, 0.93, 0.95])
    this = run([0.91, 0.93, 0.95], [0.93, 0.95, 0.97])
    bench.print_against(this, other, ["distil"], ["0.1"], ["cnn"])
    out = capsys.readouterr().out
    assert "| real only | 10 | +1.0 ± 0.0 | +1.0 ± 0.0 |" in out
    assert "| + PCA + KDE, distil | 10 | +3.0 ± 0.0 | +2.0 ± 0.0 |" in out


def test_against_refuses_runs_on_other_seeds(bench):
    with pytest.raises(SystemExit, match="same data, subsets and seeds"):
        bench.print_against(run([0.9, 0.9], [0.9, 0.9]), run([0.9, 0.9, 0.9], [0.9] * 3), ["distil"], ["0.1"],
                            ["cnn"])  # fmt: skip


def test_against_refuses_runs_of_another_layout_of_as_many_values(bench):
    """5 seeds x 3 subsets against 3 seeds x 5 subsets: as many values, paired wrongly."""
    this, other = run([0.9] * 15, [0.9] * 15), run([0.9] * 15, [0.9] * 15)
    this["reference"]["protocol"] = {"seeds": 5, "subset_seeds": [0, 1, 2]}
    other["reference"]["protocol"] = {"seeds": 3, "subset_seeds": [0, 1, 2, 3, 4]}
    with pytest.raises(SystemExit, match="same data, subsets and seeds"):
        bench.print_against(this, other, ["distil"], ["0.1"], ["cnn"])


def test_against_refuses_runs_on_another_split(bench):
    """The same seeds of another data split (another folder, other fractions of test): the
    subsets drawn at the same seed are other images, and pairing them pairs nothing."""
    this, other = run([0.9] * 3, [0.9] * 3), run([0.9] * 3, [0.9] * 3)
    this["reference"]["protocol"] = {"seeds": 3, "subset_seeds": [0], "n_train": 1259, "n_test": 360}
    other["reference"]["protocol"] = {"seeds": 3, "subset_seeds": [0], "n_train": 1077, "n_test": 540}
    with pytest.raises(SystemExit, match="same data, subsets and seeds"):
        bench.print_against(this, other, ["distil"], ["0.1"], ["cnn"])


def test_against_says_when_the_runs_share_no_fraction(bench, capsys):
    bench.print_against(run([0.9], [0.9]), run([0.9], [0.9]), ["distil"], ["0.25"], ["cnn"])
    assert "the other run has no fraction of this one (0.25) for cnn" in capsys.readouterr().out


def test_generators_are_compared_with_each_other_paired_the_better_first(bench, capsys):
    u = run([0.90, 0.92, 0.94], [0.91, 0.93, 0.95])
    aug = {"0.1": {"cnn": {"augmented": {"per_seed": [0.93, 0.93, 0.97]}}},
           "1.0": {"cnn": {"augmented": {"per_seed": [0.99, 0.99, 0.99]}}}}  # fmt: skip
    u["families"]["vae"] = {"recipes": {"distil": {"augmentation": aug}}}
    bench.print_between(u, ["distil"], ["0.1", "1.0"], ["cnn"])
    out = capsys.readouterr().out
    assert "**cnn at 10% real, generator against generator**" in out and "at 100% real" not in out
    assert "| + vae, distil | + PCA + KDE, distil | +1.3 ± 2.9 |" in out  # (2, 0, 2) points, paired (t, 2 df)
    bench.print_between(run([0.9], [0.9]), ["distil"], ["0.1"], ["cnn"])  # one generator: nothing to compare
    assert capsys.readouterr().out == ""


def test_train_on_synthetic_is_set_beside_the_whole_real_split_or_nothing(bench, capsys):
    """The real-only row's "train on synthetic" cell is real data's accuracy on the whole split
    (what the synthetic set stands in for), not that of the largest fraction asked for."""
    u = run([0.90, 0.92, 0.94], [0.91, 0.93, 0.95])
    stat = lambda m: {"mean": m, "ci95": 0.01}  # noqa: E731
    u["reference"]["real"]["0.1"]["cnn"].update(stat(0.92))
    aug = u["reference"]["pca_kde"]["recipes"]["distil"]["augmentation"]["0.1"]["cnn"]
    aug.update(augmented=stat(0.93), lift=stat(0.01))
    u["reference"]["pca_kde"]["tstr"] = {"cnn": stat(0.95)}
    bench.print_tables(u, ["distil"], ["0.1"], ["cnn"])
    out = capsys.readouterr().out
    assert "| real only | | 92.0 ± 1.0 | – (100% not measured) |" in out, out
    assert "| + PCA + KDE | distil | 93.0 ± 1.0 (+1.0 ± 1.0) | 95.0 ± 1.0 |" in out, out
    u["reference"]["real"]["1.0"] = {"cnn": stat(0.98)}
    bench.print_tables(u, ["distil"], ["0.1"], ["cnn"])
    assert "| real only | | 92.0 ± 1.0 | 98.0 ± 1.0 (real) |" in capsys.readouterr().out


def test_over_several_subsets_the_interval_is_over_the_subsets_means(bench, capsys):
    """2 subsets x 2 seeds, differences (3, 3 | 1, 1) points: over the subsets' means (3, 1) the
    interval is t(1 df) x 1.0 = 12.7, where pooling the four as independent said 1.8."""
    u = run([0.90, 0.92, 0.90, 0.92], [0.93, 0.95, 0.91, 0.93])
    u["reference"]["protocol"] = {"seeds": 2}
    vae = {"0.1": {"cnn": {"augmented": {"per_seed": [0.90, 0.92, 0.90, 0.92]}}}}
    u["families"]["vae"] = {"recipes": {"distil": {"augmentation": vae}}}
    bench.print_between(u, ["distil"], ["0.1"], ["cnn"])
    assert "| + PCA + KDE, distil | + vae, distil | +2.0 ± 12.7 |" in capsys.readouterr().out
