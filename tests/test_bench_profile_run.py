"""bench/profile_run.py --against: beside the other revision's run, whether the two trained the
same weights (by tensor contents, whatever the file's metadata or name)."""

import pytest
import torch
from safetensors.torch import save_file

from tests.conftest import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("profile_run")


def test_weights_digest_reads_tensors_not_metadata(bench, tmp_path):
    w = {"a.weight": torch.arange(6.0).view(2, 3), "b.mask": torch.tensor([True, False])}
    save_file(w, tmp_path / "one.safetensors", metadata={"written": "monday"})
    save_file(w, tmp_path / "two.safetensors", metadata={"written": "tuesday"})
    moved = {**w, "a.weight": w["a.weight"].clone()}
    moved["a.weight"][1, 2] = torch.nextafter(moved["a.weight"][1, 2], torch.tensor(10.0))  # one ulp
    save_file(moved, tmp_path / "three.safetensors")
    one, two, three = (bench.tensors_digest(tmp_path / f"{n}.safetensors") for n in ("one", "two", "three"))
    assert one == two and one != three


def test_compare_counts_the_pairs_of_runs_that_trained_the_same_weights(bench, capsys):
    def run(wall: float, weights: list[str]) -> dict:
        return {"wall_s": wall, "startup_s": 1.0, "flow_s": wall - 2, "shutdown_s": 1.0, "weights": weights}

    bench.compare(
        "abc123", [run(100, ["x", "y"]), run(110, ["x", "y"])], [run(90, ["x", "y"]), run(95, ["x", "z"])]
    )
    out = capsys.readouterr().out
    assert "**0.88x**" in out  # medians 92.5 / 105
    assert "weights files (2 per run) identical to abc123's in 1 of 2 pair(s) of runs" in out
