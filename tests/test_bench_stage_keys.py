"""bench/stage_keys.py: both ways give the same keys, the figures printed."""

import sys

from genzoo.tasks import layout
from tests.conftest import load_bench


def test_the_bench_times_both_ways_to_the_same_keys_and_leaves_the_parser_as_it_was(monkeypatch, capsys):
    bench = load_bench("stage_keys")
    real = layout._imported_names
    monkeypatch.setattr(sys, "argv", ["stage_keys.py", "--repeats", "1"])
    bench.main()
    out = capsys.readouterr().out
    assert "| each file once per content |" in out and "| each file again for every stage |" in out
    assert "ratio (once / again):" in out
    assert layout._imported_names is real  # the slow way put back
    assert bench.keys()["train@vae"] == layout.code_hash("train", "vae")
