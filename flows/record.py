"""``python -m genzoo.flows.record STAGE ...``: ``dvc commit --force`` of the stages a pipeline run
made, in order, reading ``dvc.yaml`` and ``dvc.lock`` once and writing ``dvc.lock`` once.

``dvc commit`` takes its targets one at a time, each parsing ``dvc.yaml`` and ``dvc.lock`` anew and
writing ``dvc.lock`` again (about 0.5 s a stage on 2 cores, most of a run with nothing to do); and
it stops at the first stage it refuses (a params key ``dvc.yaml`` lists, missing from
``params.yaml``). Here every stage is saved and committed as ``dvc commit --force`` does it
(``Stage.save``, ``Stage.commit``), a refused one is left out with DVC's reason, and so is every
stage that depends on a refused one (its record would pair new outputs with that stage's old
record). Prints ``{"recorded": [...], "refused": {stage: reason}}`` as JSON; exits 1, with DVC's
error, where ``dvc.yaml`` itself cannot be read (a ``${key}`` it reads missing)."""

from __future__ import annotations

import json
import sys
import traceback


def record(names: list[str]) -> dict[str, object]:
    """Commit ``names`` (DVC stage addresses, each after those it depends on) in the project of the
    current folder; the recorded and the refused (with why)."""
    from dvc.repo import Repo, lock_repo

    with Repo(".") as repo, lock_repo(repo):
        graph = repo.index.graph  # an edge from a stage to the stage whose output it reads
        by_name = {stage.addressing: stage for stage in graph.nodes}
        refused: dict[str, str] = {}
        done = []
        for name in names:
            if (stage := by_name.get(name)) is None:
                refused[name] = f"no stage {name} in dvc.yaml"
                continue
            upstream, todo = set(), [stage]
            while todo:
                for up in graph.successors(todo.pop()):
                    if up not in upstream:
                        upstream.add(up)
                        todo.append(up)
            if bad := sorted({up.addressing for up in upstream} & set(refused)):
                refused[name] = f"depends on {bad[0]}"
                continue
            try:
                stage.save()
                stage.commit()
            except Exception as err:  # DVC's refusal; an output unreadable or gone: that stage alone
                refused[name] = str(err).strip() or type(err).__name__
                continue
            done.append(stage)
        files: dict[str, tuple] = {}
        for stage in done:
            files.setdefault(stage.dvcfile.path, (stage.dvcfile, []))[1].append(stage)
        for dvcfile, stages in files.values():
            dvcfile.dump_stages(stages, update_pipeline=False)
    return {"recorded": [stage.addressing for stage in done], "refused": refused}


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    try:
        result = record(names)
    except Exception as err:  # dvc.yaml unreadable, the repository's lock held: nothing recorded
        traceback.print_exc(file=sys.stderr)  # (the last line, DVC's error, is what the run says)
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
