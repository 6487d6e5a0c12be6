"""bench/variety.py: each trained family's spread against the real images, class by class."""

import yaml

from genzoo.tasks.augment import VARIETY_FLOOR
from genzoo.tasks.config import validate
from genzoo.tasks.prepare import prepare
from genzoo.tasks.train import train_family
from tests.conftest import load_bench, tiny_params


def test_the_bench_prints_each_trained_familys_spread_as_the_dataset_measures_it(tmp_path, capsys):
    raw = tiny_params(tmp_path, steps=3, families=["gan", "vae"])
    pfile = tmp_path / "params.yaml"
    pfile.write_text(yaml.safe_dump(raw))
    params = validate(raw)
    prepare(params)
    train_family(params, "gan", progress=False)  # the vae untrained: left out by default
    bench = load_bench("variety")
    got = bench.measure(params, ["gan"], 5)
    assert set(got) == {"gan"} and set(got["gan"]) == {str(c) for c in range(10)}
    assert all(v >= 0 for v in got["gan"].values())
    assert bench.main(["--params", str(pfile), "--per-class", "5"]) == 0
    out = capsys.readouterr().out
    (row,) = [line for line in out.splitlines() if line.startswith("| gan |")]
    low = [c for c, v in got["gan"].items() if v < VARIETY_FLOOR]
    assert row.endswith(f"| {', '.join(low) or 'none'} |") and "| vae |" not in out, out
    assert f"the dataset warns under {VARIETY_FLOOR}" in out
    assert bench.main(["--params", str(pfile), "--per-class", "3"]) == 2
    assert "--per-class 3: give 5 to 200" in capsys.readouterr().err
    (tmp_path / "runs" / "gan" / "model.json").rename(tmp_path / "model.json")  # nothing trained now
    assert bench.main(["--params", str(pfile)]) == 2
    assert f"no trained family under {tmp_path / 'runs'}" in capsys.readouterr().err
