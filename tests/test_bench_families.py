"""bench/families.py prints the report's usefulness targets under its tables."""

from tests.conftest import load_bench


def test_the_usefulness_targets_are_printed_with_how_the_best_was_chosen(capsys):
    families = load_bench("families")
    cell = {"mean": 0.9, "ci95": 0.01}
    lift = {"augmented": cell, "lift": {"mean": 0.004, "ci95": 0.006}}
    run = {
        "usefulness_reference": {
            "protocol": {"classifiers": ["cnn"], "primary_recipe": "distil", "seeds": 5,
                         "recipes": {"distil": {"synthetic_per_real": 1.0}}},
            "real": {"0.1": {"cnn": cell}},
            "pca_kde": {"tstr": {"cnn": cell}, "augmentation": {"0.1": {"cnn": lift}}},
        },
        "usefulness": {"gan": {"tstr": {"cnn": cell}, "augmentation": {"0.1": {"cnn": lift}}}},
        "summary": {"usefulness": {"rows": [
            {"target": "lift at 10% real data ≥ +1.0 points, interval above 0", "met": False, "family": "gan",
             "recipe": "distil", "value": 0.004, "ci95": 0.006, "of": 5, "chosen_on": "validation"},
            {"target": "train on synthetic ≥ PCA + KDE's (90.0%) and ≥ 97%", "met": True, "family": "gan",
             "recipe": None, "value": 0.975, "ci95": None},
        ]}},
    }  # fmt: skip
    families.extras(run)
    out = capsys.readouterr().out
    assert (
        "target missed: lift at 10% real data ≥ +1.0 points, interval above 0: gan (distil) "
        "+0.4 ± 0.6 points, best of 5 on the validation split\n" in out
    )
    assert "target met: train on synthetic ≥ PCA + KDE's (90.0%) and ≥ 97%: gan 97.5%\n" in out
