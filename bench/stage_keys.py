"""The code part of every stage's cache key (:func:`genzoo.tasks.layout.code_hash`), as a fresh
process computes it: a Ray worker, a DVC stage or a command asks for the keys of its stages
before any work, and a rerun with nothing to do is mostly these checks.

    python bench/stage_keys.py               # median of 5
    python bench/stage_keys.py --repeats 9

Each repeat computes the keys of every stage and family from cold (no list of files, no
parse kept), once parsing each file's imports once per content (today's code) and once
parsing them again for every stage that reads the file (before: each stage walked its files
anew). The two take turns at going first; the figures are medians, the ratio the median of each
repeat's own ratio. Both give the same keys (checked).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genzoo import models  # noqa: E402
from genzoo.tasks import layout  # noqa: E402

STAGES = ("train", "evaluate", "usefulness", "detect")  # per family; then the stages of none


def keys() -> dict[str, str]:
    out = {f"{s}@{f}": layout.code_hash(s, f) for s in STAGES for f in models.REGISTRY}
    return out | {s: layout.code_hash(s) for s in ("prepare", "evaluate", "usefulness", "augment", "report")}


def cold(reparse: bool) -> tuple[float, dict[str, str]]:
    layout.code_files.cache_clear()
    layout._imported_names.cache_clear()
    real = layout._imported_names
    if reparse:  # each call parses again, as every stage's walk did
        layout._imported_names = lambda source, filename: real.__wrapped__(source, filename)
    try:
        t0 = time.perf_counter()
        got = keys()
        return time.perf_counter() - t0, got
    finally:
        layout._imported_names = real


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    now, before, ratios = [], [], []
    for r in range(args.repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        t = {}
        for reparse in order:
            t[reparse], got = cold(reparse)
            t.setdefault("keys", got)
            assert got == t["keys"], "the two ways gave other keys"
        now.append(t[False])
        before.append(t[True])
        ratios.append(t[False] / t[True])
    n = len(keys())
    print(f"every stage's code key from cold ({n} stages and families), median of {args.repeats}:")
    print(f"| parsed | seconds |\n|---|---|\n| each file once per content | {statistics.median(now):.3f} |")
    print(f"| each file again for every stage | {statistics.median(before):.3f} |")
    print(f"ratio (once / again): {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
